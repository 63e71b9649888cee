"""Issue 12 rules that are cheap to check directly: the layers' effect size (placement confidence),
the merge detector's off-path test (a tree junction is not a merge of its descendants), and the cues
a tree on the prior reads."""

from __future__ import annotations

import numpy as np
import pytest

from mother_core.recovery.confidence import layer_effect
from mother_core.recovery.recover import prior_cues
from mother_core.relations.calibration import CONFIDENCE
from mother_core.relations.merge import CALIBRATED_RESIDUAL, OFF_PATH, RESIDUAL_MAX, _off_path, merge_confidence


def test_layer_effect_reads_agreement_not_size() -> None:
    rng = np.random.default_rng(0)
    parent = rng.uniform(1.0, 2.0, 30)
    # Every layer puts the parent 10% nearer: consistent, however small the summed margin.
    assert layer_effect(parent, parent * 1.1) > 5
    # Half the layers prefer one, half the other, by a lot: the margin is noise.
    other = parent * np.where(np.arange(30) % 2 == 0, 3.0, 1 / 2.5)
    assert abs(layer_effect(parent, other)) < 0.5
    assert layer_effect(parent, other) == pytest.approx(-layer_effect(other, parent))
    # Too few layers to tell: unknown.
    assert np.isnan(layer_effect(parent[:2], parent[:2] * 2))


def _sq(points: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.array([[float(((points[a] - points[b]) ** 2).sum()) for b in names] for a in names])


def test_a_junction_is_not_a_sparse_merge_of_its_descendants() -> None:
    rng = np.random.default_rng(1)
    dim = 4000
    root = rng.normal(size=dim)
    a = root + 0.3 * rng.normal(size=dim)  # two subtrees under the root, orthogonal updates
    a1 = a + 0.1 * rng.normal(size=dim)
    b = root + 0.3 * rng.normal(size=dim)
    # The root read as a "merge" of a1 (as its base) and b: it lies on the path between them.
    names = ["a1", "b"]
    pts = {"root": root, "a1": a1, "b": b}
    dp = _sq(pts, names)
    dc = np.array([float(((root - pts[n]) ** 2).sum()) for n in names])
    assert _off_path(dc, dp, 0) < 0.05 < OFF_PATH
    # A TIES-like merge on base B of two task vectors, each trimmed to its larger half: off the path.
    base = rng.normal(size=dim)
    t1, t2 = 0.3 * rng.normal(size=dim), 0.3 * rng.normal(size=dim)

    def trim(t: np.ndarray) -> np.ndarray:
        return np.where(np.abs(t) >= np.median(np.abs(t)), t, 0.0)

    merged = base + trim(t1) + trim(t2)
    pts = {"base": base, "p1": base + t1, "p2": base + t2}
    names = ["base", "p1", "p2"]
    dp = _sq(pts, names)
    dc = np.array([float(((merged - pts[n]) ** 2).sum()) for n in names])
    assert _off_path(dc, dp, 0) > 2 * OFF_PATH


def test_a_tree_on_the_prior_reads_without_the_kurtosis_cue() -> None:
    assert prior_cues("kurtosis+norm") == "norm"
    assert prior_cues("kurtosis+norm+erank") == "norm+erank"
    assert prior_cues("kurtosis") == "kurtosis"  # nothing else to read


def test_a_sparse_merge_beyond_the_calibrated_residuals_keeps_the_detectors_confidence() -> None:
    # Within the residuals the calibrated rate was measured on: that rate.
    assert merge_confidence("merge: sparse", 0.4) == CONFIDENCE["merge: sparse"]
    # Beyond them (a fine-tune tree's correlated updates read as a sparse merge): the detector's own,
    # falling with the residual, far from the calibrated 0.99.
    beyond = [merge_confidence("merge: sparse", r) for r in (CALIBRATED_RESIDUAL + 0.01, 0.55, RESIDUAL_MAX)]
    assert beyond == sorted(beyond, reverse=True) and beyond[0] < 0.7 and beyond[-1] == pytest.approx(0.55)
    # Exact merges (linear, SLERP, task arithmetic) are untouched.
    assert merge_confidence("merge: exact", 1e-6) == CONFIDENCE["merge: exact"]


def test_a_roots_only_child_is_capped() -> None:
    from mother_core.recovery.confidence import SOLE_CHILD_CONFIDENCE, capped, sole_child_edges

    # r -> a -> {b, c}: r's only child a has no alternative parent (the others are its descendants),
    # yet r and a swapped is the tree's likeliest error.
    chain = [("r", "a", "finetune", False), ("a", "b", "finetune", False), ("a", "c", "lora", False)]
    assert sole_child_edges(chain) == {("r", "a")}
    # Not for a two-model tree, an edge the user set, a root with two children, or typed children.
    assert sole_child_edges([("r", "a", "finetune", False)]) == set()
    assert sole_child_edges([("r", "a", "finetune", True), *chain[1:]]) == set()
    assert sole_child_edges([*chain, ("r", "d", "finetune", False)]) == set()
    assert sole_child_edges([("r", "a", "finetune", False), ("a", "q", "quantized", False),
                             ("a", "m", "merge", False)]) == set()
    conf, place, direction = capped(0.95, 1.0, 0.95)
    assert conf == pytest.approx(SOLE_CHILD_CONFIDENCE) and place == 1.0 and conf == pytest.approx(place * direction)
    assert capped(0.2, 0.5, 0.4) == (0.2, 0.5, 0.4)
