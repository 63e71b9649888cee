"""Accuracy on the shipped demo sets (real fine-tunes, assets/demo): a regression guard.

The vit-tree demo is one ViT backbone fine-tuned for several tasks, each with its own classification
head (a tensor of another shape). The additivity refinement must fit the whole tree, not only the
largest group of models that share a head (docs/METHOD.md, "Cost and tree"; a whole-layout match
once left it 5 of 13 models and the tree fell from 11 to 10 right edges of 12).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mother_core import compute_statistics, discover, recover
from mother_core.evaluate import evaluate, load_truth
from mother_core.recovery.typed import refinement_core

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("demo-accuracy")

VIT_TREE = Path(__file__).resolve().parent.parent / "assets" / "demo" / "vit-tree"


@pytest.fixture(scope="module")
def vit_tree():
    return compute_statistics(discover([VIT_TREE]), device="cpu"), load_truth(VIT_TREE / "truth.json")


def test_refinement_fits_fine_tunes_with_different_heads(vit_tree):
    stats, _ = vit_tree
    heads = {stats.present[i].tobytes() for i in range(stats.n_models)}
    assert len(heads) > 1, "the demo's models carry heads of different shapes"
    everyone = np.arange(stats.n_models)
    assert list(refinement_core(stats, everyone, set())) == list(everyone)
    # A typed child stays out of the fit, whatever its layout.
    assert 3 not in refinement_core(stats, everyone, {3})
    # One merged LoRA among fine-tunes stays out; a tree of merged LoRAs is fitted whole.
    assert 3 not in refinement_core(stats, everyone, set(), frozenset({3}))
    assert list(refinement_core(stats, everyone, set(), frozenset(everyone.tolist()))) == list(everyone)


def test_vit_tree_default_accuracy(vit_tree):
    stats, truth = vit_tree
    ev = evaluate(recover(stats), truth)
    assert ev.directed_accuracy >= 11 / 12
