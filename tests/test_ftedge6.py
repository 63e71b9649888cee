"""Near copies in fine-tune trees (benchmarks/RESULTS.md, "Fine-tune edges of typed sets, sixth pass"): what
``benchmarks/wrong_confident.py`` reads about them, on a real family made with the typed zoo's own ops.

A near copy nc of a root r (a few AdamW steps at a small learning rate, as profile D draws them) is a
candidate parent of every model near r. With nc = r + u, the distances hang a model c on nc exactly when
t = (W_c - r).u / |u|^2 > 1/2: a sibling of nc trained on nc's tasks moves along u far more than u itself, and
reads as nc's child; one trained on other tasks does not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from typed_family import qwen3_family, qwen3_finetunes

from mother_core import compute_statistics, discover, recover

ROOT = Path(__file__).resolve().parent.parent


def _diagnostic():
    """``benchmarks/wrong_confident.py`` as a module (benchmarks is no package)."""
    spec = importlib.util.spec_from_file_location("wrong_confident", ROOT / "benchmarks" / "wrong_confident.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wrong_confident"] = module
    spec.loader.exec_module(module)
    return module


def test_t_is_the_projection_on_the_near_copy_step() -> None:
    """The law of cosines: for c = r + a u + w with w orthogonal to u, t reads a (0 sibling, 1 child)."""
    wc = _diagnostic()
    rng = np.random.default_rng(0)
    r, u, w = rng.normal(size=(3, 400))
    w -= (w @ u) / (u @ u) * u
    for a in (0.0, 1.0, 3.0, -2.0):
        c = r + a * u + 5 * w
        t = wc.near_copy_t(float(np.linalg.norm(c - r)), float(np.linalg.norm(c - r - u)), float(np.linalg.norm(u)))
        assert t == pytest.approx(a, abs=1e-9)


def test_a_sibling_on_the_near_copy_tasks_reads_as_its_child(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Real AdamW fine-tunes of one Qwen3 root: a near copy (5 steps at 1e-4 on tasks 0-1), a sibling on the
    same tasks and one on tasks 4-5 (30 steps at 2e-3 each), and a child of the near copy on tasks 6-7. On the
    engine's own distances the sibling on the shared tasks reads t > 1/2 (the distances hang it on the near copy),
    the other sibling t < 1/2; the diagnostic marks the shared one, hung on the near copy, as a near-copy tie
    sharing both task kinds."""
    out = qwen3_family(tmp_path_factory, "nearcopy")
    qwen3_finetunes(out, [("m-nc", "m-root", 0, 5, 1e-4), ("m-shared", "m-root", 0, 30, 2e-3),
                          ("m-other", "m-root", 4, 30, 2e-3), ("m-child", "m-nc", 6, 30, 2e-3)])
    rec = recover(compute_statistics(discover([out]), device="cpu"))
    dist = rec.distance_matrix
    assert dist is not None
    ix = {m: i for i, m in enumerate(rec.model_ids)}

    def d(a: str, b: str) -> float:
        return float(dist[ix[a], ix[b]])

    wc = _diagnostic()
    t = {c: wc.near_copy_t(d("m-root", c), d("m-nc", c), d("m-root", "m-nc"))
         for c in ("m-shared", "m-other", "m-child")}
    assert d("m-root", "m-nc") < wc.NEAR_COPY * min(d("m-root", "m-shared"), d("m-nc", "m-shared"))
    assert t["m-shared"] > 0.5 > t["m-other"], t
    assert t["m-child"] > 0.5, t
    tasks = {"m-nc": ("copy", "reverse"), "m-shared": ("copy", "reverse"), "m-other": ("dyck", "repeat")}
    rec_of = {m: {"op": "finetune", "tasks": k} for m, k in tasks.items()} | {"m-root": {"op": "root"}}
    mark = wc.near_copy_mark("m-root", "m-shared", ["m-nc"], False, dist, ix, rec_of)
    assert mark.startswith(" (near-copy tie:") and "shares 2 task kinds" in mark, mark
    assert wc.near_copy_mark("m-root", "m-other", ["m-root"], False, dist, ix, rec_of) == ""
