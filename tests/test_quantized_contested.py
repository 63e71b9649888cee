"""A quantized copy of a merged LoRA whose update lies within bf16 rounding of its base (typed profile D seed 222: the
LoRA read as a ``convert`` copy of its base, copies were never a quantized model's source, and its Q4_0 GGUF was
attached to the base at 0.988), and a quantized model whose two nearest candidate sources fit within the detector's
tolerance (mother_core/relations/copies.py, ``_copies_as_sources`` and ``_contested``).

Real training and real tools (the typed zoo's ops, peft, the gguf package): a Qwen3 root, a fine-tune of it stored
in fp16, a LoRA (rank 4) trained a few small steps on that, merged and stored in bf16, a sibling fine-tune, and a
GGUF Q4_0 of the merged LoRA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from typed_family import qwen3_node

pytestmark = pytest.mark.xdist_group("quantized-contested")


@pytest.fixture(scope="module")
def family(tmp_path_factory: Any) -> Path:
    pytest.importorskip("peft")
    pytest.importorskip("gguf")
    pytest.importorskip("mergekit")  # (the zoo's typed ops import it)
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.archs import ArchSize
    from mother_zoo.typed.quant import write_gguf

    out = tmp_path_factory.mktemp("quantized-contested")

    def task(k: int) -> SequenceTask:
        return SequenceTask(SEQUENCE_TASKS[k:k + 2], 64, task_seed=2 + k)

    size = ArchSize(vocab=64, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)
    ops.make_root(qwen3_node(0, "root", None, (), 1, size=size, task=SequenceTask(SEQUENCE_TASKS, 64, task_seed=1),
                             steps=40, lr=3e-3), out / "m-root")
    ops.make_finetune(qwen3_node(1, "finetune", "finetune", (0,), 11, task=task(0), steps=14, lr=1e-3,
                                 store="float16"), out / "m-root", out / "m-base")
    ops.make_finetune(qwen3_node(2, "finetune", "finetune", (0,), 12, task=task(2), steps=14, lr=1e-3,
                                 store="float16"), out / "m-root", out / "m-sib")
    # A LoRA whose merged update is about bf16's rounding: the conversion test reads it as a cast of its base; a Q8_0
    # GGUF of it sits far nearer it than its base (8-bit rounding is smaller than the LoRA's update).
    ops.make_adapter(qwen3_node(3, "lora", "lora", (1,), 13, task=task(4), steps=2, lr=2e-4, rank=4, alpha=4.0,
                                store="bfloat16"), out / "m-base", out / "m-lora", "", merged=True)
    (out / "m-q8").mkdir()
    write_gguf("qwen3", out / "m-lora", out / "m-q8" / "ggml-model-Q8_0.gguf", "Q8_0", "Qwen3 Tiny", [])
    # A LoRA a little larger (no conversion) with a Q4_0 GGUF: 4-bit rounding buries its update, so its base fits the
    # GGUF within 10% of it in squared distance.
    ops.make_adapter(qwen3_node(4, "lora", "lora", (1,), 14, task=task(6), steps=6, lr=1e-3, rank=4, alpha=4.0,
                                store="bfloat16"), out / "m-base", out / "m-lora2", "", merged=True)
    (out / "m-q4").mkdir()
    write_gguf("qwen3", out / "m-lora2", out / "m-q4" / "ggml-model-Q4_0.gguf", "Q4_0", "Qwen3 Tiny", [])
    return out


def _links(family: Path) -> dict[str, Any]:
    import numpy as np

    from mother_core import compute_statistics, discover
    from mother_core.relations.detect import detect_relations

    stats = compute_statistics(discover([family]), device="cpu")
    found = detect_relations(stats, np.zeros(stats.n_models, dtype=int))
    return {stats.model_ids[link.child]: (stats.model_ids[link.parents[0]], link) for link in found.links}


def test_a_gguf_of_a_near_copy_merged_lora_takes_the_lora_as_its_source(family: Path) -> None:
    """Before: the LoRA was a ``convert`` copy of its base, copies were no quantized model's source, and the Q8_0
    GGUF went to the base at 0.988."""
    links = _links(family)
    assert links["m-lora"][0] == "m-base" and links["m-lora"][1].relation.value == "convert"
    parent, link = links["m-q8"]
    assert (parent, link.relation.value) == ("m-lora", "quantized")


def test_a_quantized_model_whose_sources_tie_reads_contested(family: Path) -> None:
    """Before: the Q4_0 GGUF read the quantized kind's 0.988 whatever the margin to the next candidate."""
    from mother_core.relations.calibration import CONTESTED_SOURCE_KIND, counted_rate, kind_of

    parent, link = _links(family)["m-q4"]
    assert parent == "m-lora2"
    assert kind_of("quantized", link.detail, link.evidence) == CONTESTED_SOURCE_KIND
    assert "m-base" in link.evidence  # the other candidate, named
    assert link.confidence == pytest.approx(min(0.988, counted_rate(CONTESTED_SOURCE_KIND))) and link.confidence < 0.9
