"""A 5-bit GGUF of a bf16 merged LoRA is that LoRA's quantized copy, not the base of a QLoRA (issue 11; profile D
seed 204: the GGUF was given the LoRA base's near-copy fine-tune as its source and the LoRA read as a QLoRA on
the GGUF file, both at >= 0.98; mother_core/relations/copies.py, ``ROUNDING_VISIBLE``).

Real training and real tools (the typed zoo's ops, peft, the gguf package), in the shapes of that family: an
OLMo2 root (hidden 96, 2 layers), a float32 fine-tune of it, a LoRA (rank 8) trained on that, merged and stored
in bf16, a near-copy fine-tune of the same base (float32, 17 steps at 1.2e-4), and a GGUF Q5_0 of the merged
LoRA; and a QLoRA on 5 bits: a GGUF Q5_0 of the base with a LoRA trained on its dequantized weights, merged,
stored in bf16. Before the change the Q5_0 rounding of the bf16 LoRA (8 bf16 roundoffs) read as a low-rank update, so
the LoRA was taken for a QLoRA made from its own GGUF copy and the GGUF for a quantized copy of the base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from typed_family import qwen3_node


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("gguf-of-merged-lora")

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
    # A QLoRA on a 5-bit model: a GGUF Q5_0 of the base, a LoRA trained on its dequantized weights (read back from
    # the file) and merged into them, stored in bf16 as the merged LoRA above.
    (out / "m-base-q5").mkdir()
    write_gguf("olmo2", out / "m-base", out / "m-base-q5" / "ggml-model-Q5_0.gguf", "Q5_0", "Olmo2 Tiny", [])
    dequantized = tmp_path_factory.mktemp("dequantized")
    _dequantized_copy(out / "m-base", out / "m-base-q5", dequantized)
    ops.make_adapter(node(4, "lora", "lora", task=task(6), steps=11, lr=5e-3, rank=8, alpha=8.0, store="bfloat16"),
                     dequantized, out / "m-qlora", "", merged=True)
    return out


def _dequantized_copy(float_folder: Path, gguf_folder: Path, out: Path) -> None:
    """``float_folder`` copied to ``out`` with every tensor the GGUF in ``gguf_folder`` holds replaced by its
    dequantized values (the GGUF reader names tensors without the ``model.`` prefix)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from mother_core import discover
    from mother_core.io.readers import open_model

    shutil.copytree(float_folder, out, dirs_exist_ok=True)
    (weights,) = out.glob("*.safetensors")
    state = load_file(weights)
    with open_model(discover([gguf_folder]).models[0]) as reader:
        for name in state:
            state[name] = reader.read(name.removeprefix("model.")).to(state[name].dtype).reshape(state[name].shape)
    save_file(state, weights, metadata={"format": "pt"})


def test_a_gguf_of_a_merged_lora_is_its_quantized_copy(family: Path) -> None:
    from mother_core import compute_statistics, discover, recover

    rec = recover(compute_statistics(discover([family]), device="cpu"))
    edges = {e.child: (e.parent, e.relation) for e in rec.edges}
    assert edges["m-q5"] == ("m-lora", "quantized")
    assert edges["m-lora"] == ("m-base", "lora")


def test_a_qlora_on_a_5_bit_model_is_made_from_it_and_the_gguf_is_its_sources_copy(family: Path) -> None:
    """The other side of the same bar: a LoRA merged on a Q5_0 model's dequantized weights, stored in bf16, reads
    low rank against it exactly as the bf16 LoRA's own Q5_0 copy does; the grid tells them apart (its values sit on
    the GGUF's grid points plus the update, where the source's fill the cells). With the rank test barred from 5
    bits (``ROUNDING_VISIBLE`` 16) the GGUF of the base read as a fine-tune of the base."""
    from mother_core import compute_statistics, discover, recover

    stats = compute_statistics(discover([family]), device="cpu")
    rec = recover(stats)
    edges = {e.child: (e.parent, e.relation, e.relation_detail) for e in rec.edges}
    assert edges["m-base-q5"][:2] == ("m-base", "quantized")
    assert edges["m-qlora"] == ("m-base-q5", "lora", "on dequantized weights")
    assert edges["m-q5"][:2] == ("m-lora", "quantized") and edges["m-lora"][:2] == ("m-base", "lora")
    from mother_core.relations.grid import read_grid

    i = stats.model_ids.index
    made_from, source = read_grid(stats, i("m-base-q5"), i("m-qlora")), read_grid(stats, i("m-q5"), i("m-lora"))
    assert source.rounding and 0.2 < source.mean_steps < 0.3  # uniform over the cell: a quarter step
    assert not made_from.rounding and made_from.past_half > 0.05
