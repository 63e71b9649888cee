"""What the fifth stress set (``benchmarks/elsewhere5_set.py``) found, on real files made by the real tools.

llama.cpp's converter permutes the q / k rows of every model it converts through ``LlamaModel``'s tensor
handling, not only of ``llama`` files: Arcee (``ArceeModel(LlamaModel)``) among them. Read without undoing it,
an Arcee GGUF's q / k matrices sit at the distance of permuted rows from their source, and no GGUF of such a
model found its source (the stress set: both Arcee GGUFs reported "its source model is not in the set").
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mother_core import discover
from mother_core.io.readers import open_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def _arcee(folder: Path) -> None:
    """A small Arcee trained 20 steps by the stress set's own loop, saved by transformers."""
    import elsewhere5_set as es

    torch.manual_seed(3)
    model = es.model_class("arcee")(es.make_config("arcee"))
    es.fit(model, "arcee", [1, 2], seed=3, steps=20, lr=3e-3)
    model.save_pretrained(str(folder))


def test_arcee_gguf_qk_rows_read_in_their_source_order(tmp_path: Path) -> None:
    """An Arcee Q8_0 GGUF written as llama.cpp's converter writes it (q / k rows permuted per head) reads back at
    Q8_0 noise from its source on q_proj and k_proj, not at the distance of permuted rows."""
    import elsewhere5_set as es

    _arcee(tmp_path / "src")
    (tmp_path / "q8").mkdir()
    es.arcee_gguf(tmp_path / "src", tmp_path / "q8" / "model-q8_0.gguf", "Q8_0")
    found = discover([tmp_path])
    assert not found.problems
    refs = {m.id: m for m in found.models}
    src, q8 = open_model(refs["src"]), open_model(refs["q8"])
    qk = [n for n in src.tensor_infos() if n.endswith(("q_proj.weight", "k_proj.weight"))]
    assert len(qk) == 4 and set(qk) <= set(q8.tensor_infos())
    for n in qk:
        a, b = src.read(n).double(), q8.read(n).double()
        rel = float((a - b).norm() / a.norm())
        assert rel < 0.01, (n, rel)  # Q8_0's noise is ~0.4%; permuted rows read ~140% away


def test_quantized_model_merged_after_dequantizing_keeps_its_source(tmp_path: Path) -> None:
    """A Q4_0 GGUF of a fine-tune, read back and merged 0.5 / 0.5 with a sibling by mergekit: the merge holds half
    the GGUF's rounding and sits nearer it than its float source, which then looked "missing" (the GGUF was left
    without a source). Made from the GGUF's values, the merge is no source of it: the GGUF is its source's
    quantized copy, and the merge takes the GGUF and the sibling."""
    import elsewhere5_set as es

    from mother_core import RecoverySettings, compute_statistics, recover

    _arcee(tmp_path / "root")
    for name, task in (("a", 21), ("b", 22)):
        model = es.model_class("arcee").from_pretrained(str(tmp_path / "root"))
        es.fit(model, "arcee", [task], seed=task, steps=25, lr=8e-4, optim="radam")
        model.save_pretrained(str(tmp_path / name))
    (tmp_path / "a_q4").mkdir()
    es.arcee_gguf(tmp_path / "a", tmp_path / "a_q4" / "model-q4_0.gguf", "Q4_0")
    es.dequantized_arcee(tmp_path / "a_q4" / "model-q4_0.gguf", tmp_path / "a", tmp_path.parent / "deq")
    es.run_mergekit("linear_half", [str(tmp_path.parent / "deq"), str(tmp_path / "b")], tmp_path / "merge")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"), RecoverySettings())
    parents: dict[str, set[tuple[str, str]]] = {}
    for e in rec.edges:
        parents.setdefault(e.child, set()).add((e.parent, e.relation))
    assert parents["a_q4"] == {("a", "quantized")}, parents
    assert parents["merge"] == {("a_q4", "merge"), ("b", "merge")}, parents
