"""Forests keep strangers apart (issue 12, item 6): a model initialised independently of a family, of
the same architecture and trained on the family root's own task, stands as its own tree; it is never
made the parent (or the child) of a family member. Real training of tiny models
(:mod:`mother_zoo.variety`), no synthetic weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mother_core import compute_statistics, discover, recover
from mother_core.evaluate import evaluate, load_truth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mother_zoo.variety import Collection, Recipe, generate_collection

    # Two families of one architecture (a root and two children each) and, for each, a stranger
    # pre-trained from its own random initialisation on that family root's task.
    tree = Recipe("stranger-test", "llama", hidden=32, layers=2, method="fft", root_steps=60,
                  child_steps=(10, 20), lr=(1e-3, 3e-3), shape=(2,))
    c = Collection("strangers", ((tree, 1), (tree, 2)), strangers=(0, 1))
    return generate_collection(c, tmp_path_factory.mktemp("strangers"))


def test_strangers_stand_alone(forest: Path) -> None:
    meta = json.loads((forest / "truth.json").read_text())["meta"]
    strangers = {t["root"] for t in meta["trees"] if t["singleton"]}
    assert len(strangers) == 2
    rec = recover(compute_statistics(discover([forest]), device="cpu"))
    for s in strangers:
        assert rec.parent_of(s) is None, f"stranger {s} given a parent"
        assert not [e for e in rec.edges if e.parent == s], f"stranger {s} made a parent"
        tree = next(t for t in rec.trees if s in t.members)
        assert tree.members == (s,)
    # The families themselves come out whole and apart (each its own tree).
    ev = evaluate(rec, load_truth(forest / "truth.json"))
    assert ev.adjusted_rand_index == 1.0
    assert ev.undirected_accuracy == 1.0
