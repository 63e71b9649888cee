"""Tests of the forest helpers: single-linkage cut by connected components, and the log-gap threshold."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from mother_core.errors import InputError
from mother_core.recovery.clustering import connected_components_below, largest_gap_threshold


def three_trees(rng: np.random.Generator, sizes=(5, 7, 4)) -> tuple[np.ndarray, np.ndarray]:
    """Points in three far-apart blobs; returns (distance matrix, true labels)."""
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    pts = np.concatenate([c + rng.normal(size=(k, 2)) for c, k in zip(centres, sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)), labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs_a = a[:, None] == a[None]
    return bool((pairs_a == (b[:, None] == b[None])).all())


# --- connected_components_below -------------------------------------------------------------------
def test_components_of_three_blobs():
    d, truth = three_trees(np.random.default_rng(0))
    labels = connected_components_below(d, 20.0)
    assert same_partition(labels, truth)
    assert labels.tolist()[:5] == [0] * 5 and labels.max() == 2  # numbered by first appearance


def test_matches_scipy_single_linkage_cut():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.random((30, 2))
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        t = float(rng.uniform(0.05, 0.3))
        ref = fcluster(linkage(squareform(d, checks=False), "single"), t, criterion="distance")
        assert same_partition(connected_components_below(d, t, block_rows=7), ref)


def test_threshold_is_inclusive_and_asymmetric_uses_smaller_direction():
    d = np.array([[0.0, 2.0, 9.0], [5.0, 0.0, 9.0], [9.0, 9.0, 0.0]])
    assert connected_components_below(d, 2.0).tolist() == [0, 0, 1]
    assert connected_components_below(d, 1.999).tolist() == [0, 1, 2]


def test_nan_and_inf_never_link():
    d = np.array([[0.0, np.nan, np.inf], [np.nan, 0.0, 1.0], [np.inf, 1.0, 0.0]])
    assert connected_components_below(d, 1e300).tolist() == [0, 1, 1]


def test_components_edge_cases():
    assert connected_components_below(np.zeros((0, 0)), 1.0).shape == (0,)
    assert connected_components_below(np.zeros((1, 1)), 1.0).tolist() == [0]
    with pytest.raises(InputError):
        connected_components_below(np.zeros((2, 3)), 1.0)


# --- largest_gap_threshold ------------------------------------------------------------------------
def test_gap_between_related_and_unrelated():
    d, truth = three_trees(np.random.default_rng(2))
    iu = np.triu_indices(len(d), 1)
    t = largest_gap_threshold(d[iu])
    assert t is not None
    within = d[iu][(truth[:, None] == truth[None])[iu]]
    across = d[iu][(truth[:, None] != truth[None])[iu]]
    assert within.max() < t < across.min()
    assert same_partition(connected_components_below(d, t), truth)


def test_no_gap_in_one_tree_or_all_unrelated():
    rng = np.random.default_rng(3)
    assert largest_gap_threshold(rng.uniform(1.0, 1.8, 500)) is None  # one tree: spread < 2x
    assert largest_gap_threshold(rng.uniform(50.0, 60.0, 100)) is None  # all unrelated


def test_gap_is_scale_free():
    v = np.array([1.0, 1.3, 1.1, 30.0, 35.0])
    t = largest_gap_threshold(v)
    assert largest_gap_threshold(v * 1e-6) == pytest.approx(t * 1e-6)


def test_gap_rule_details():
    assert largest_gap_threshold(np.array([1.0, 4.0])) == pytest.approx(2.0)  # geometric midpoint
    assert largest_gap_threshold(np.array([1.0, 1.9])) is None  # below min_ratio
    assert largest_gap_threshold(np.array([1.0, 1.9]), min_ratio=1.5) == pytest.approx(1.9**0.5)
    # zeros (duplicates), NaN and inf are ignored rather than creating an infinite log-gap
    assert largest_gap_threshold(np.array([0.0, 0.0, 1.0, 1.2, np.nan, np.inf])) is None
    assert largest_gap_threshold(np.array([5.0])) is None
    assert largest_gap_threshold(np.array([])) is None
    # several clear gaps: the largest one wins
    assert 2.0 < largest_gap_threshold(np.array([1.0, 2.0, 20.0, 60.0])) < 20.0
    with pytest.raises(InputError):
        largest_gap_threshold(np.array([1.0, 3.0]), min_ratio=1.0)
