"""A 5-bit GGUF of a bf16 merged LoRA is that LoRA's quantized copy, not the base of a QLoRA (issue 11; profile D
seed 204: the GGUF was given the LoRA base's near-copy fine-tune as its source and the LoRA read as a QLoRA on
the GGUF file, both at >= 0.98; mother_core/relations/copies.py, ``ROUNDING_VISIBLE``).

Real training and real tools (the typed zoo's ops, peft, the gguf package), in the shapes of that family: an
OLMo2 root (hidden 96, 2 layers), a float32 fine-tune of it, a LoRA (rank 8) trained on that, merged and stored
in bf16, a near-copy fine-tune of the same base (float32, 17 steps at 1.2e-4), and a GGUF Q5_0 of the merged
LoRA. Before the change the Q5_0 rounding of the bf16 LoRA (8 bf16 roundoffs) read as a low-rank update, so
the LoRA was taken for a QLoRA made from its own GGUF copy and the GGUF for a quantized copy of the base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from typed_family import qwen3_node


@pytest.fixture(scope="module")
def family(tmp_path_factory: Any) -> Path:
    pytest.importorskip("peft")
    pytest.importorskip("gguf")
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.quant import write_gguf

    from dataclasses import replace

    from mother_zoo.typed.archs import ArchSize

    pytest.importorskip("mergekit")  # (the zoo's typed ops import it)
    out = tmp_path_factory.mktemp("gguf-of-lora")

    def node(index: int, op: str, relation: str | None, **params: Any) -> Any:
        return replace(qwen3_node(index, op, relation, (), 10 + index, **params), arch="olmo2")

    def task(k: int) -> SequenceTask:
        return SequenceTask(SEQUENCE_TASKS[k:k + 2], 96, task_seed=2 + k)

    size = ArchSize(vocab=96, hidden=96, intermediate=224, layers=2, heads=6, kv_heads=2)
    ops.make_root(node(0, "root", None, size=size, task=SequenceTask(SEQUENCE_TASKS, 96, task_seed=1), steps=50,
                       lr=2e-3, store="bfloat16"), out / "m-root")
    ops.make_finetune(node(1, "finetune", "finetune", task=task(0), steps=14, lr=1e-4, store="float32"),
                      out / "m-root", out / "m-base")
    ops.make_adapter(node(2, "lora", "lora", task=task(2), steps=11, lr=5e-3, rank=8, alpha=8.0, store="bfloat16"),
                     out / "m-base", out / "m-lora", "", merged=True)
    ops.make_finetune(node(3, "finetune", "finetune", task=task(4), steps=17, lr=1.2e-4, store="float32"),
                      out / "m-base", out / "m-near")
    (out / "m-q5").mkdir()
    write_gguf("olmo2", out / "m-lora", out / "m-q5" / "ggml-model-Q5_0.gguf", "Q5_0", "Olmo2 Tiny", [])
    return out


def test_a_gguf_of_a_merged_lora_is_its_quantized_copy(family: Path) -> None:
    from mother_core import compute_statistics, discover, recover

    rec = recover(compute_statistics(discover([family]), device="cpu"))
    edges = {e.child: (e.parent, e.relation) for e in rec.edges}
    assert edges["m-q5"] == ("m-lora", "quantized")
    assert edges["m-lora"] == ("m-base", "lora")
