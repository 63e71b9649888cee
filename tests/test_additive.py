"""Additivity refinement: squared distances of orthogonal fine-tuning steps form a tree metric."""

from __future__ import annotations

import numpy as np
import pytest

from mother_core import Constraints, RecoverySettings, compute_statistics, discover, recover, resolve
from mother_core.evaluate import evaluate, load_truth
from mother_core.recovery.additive import orient, refine_topology

pytestmark = pytest.mark.xdist_group("zoo")  # shares the session's trained small zoo


def _family(seed: int = 0, dim: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """A 1 -> 3 -> 9 family whose every step adds an independent random update (nearly orthogonal
    in high dimension) of its own size; returns (true parents, squared distances)."""
    rng = np.random.default_rng(seed)
    parent = np.array([-1, 0, 0, 0] + [1 + i // 3 for i in range(9)])
    x = np.zeros((len(parent), dim))
    x[0] = rng.normal(size=dim)
    for c in range(1, len(parent)):
        x[c] = x[parent[c]] + rng.normal(scale=rng.uniform(0.05, 0.2), size=dim)
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return parent, sq


def _undirected(parent) -> set[frozenset[int]]:
    return {frozenset((c, int(p))) for c, p in enumerate(parent) if p >= 0}


def _as_parent(adj) -> np.ndarray:
    return orient(adj, np.zeros((len(adj), len(adj))), roots=[0])


def test_refinement_restores_a_tree_from_sibling_and_grandparent_mistakes():
    truth, sq = _family()
    wrong = truth.copy()
    wrong[5] = 4  # a sibling as parent
    wrong[10] = 0  # the grandparent as parent
    wrong[7] = 4  # a cousin as parent
    adj, moves = refine_topology(wrong, sq)
    assert moves >= 3 and _undirected(_as_parent(adj)) == _undirected(truth)
    same, none = refine_topology(truth, sq)
    assert none == 0 and _undirected(_as_parent(same)) == _undirected(truth)  # a right tree stays


def test_refinement_keeps_pinned_edges():
    truth, sq = _family(seed=1)
    wrong = truth.copy()
    wrong[5] = 4
    adj, _ = refine_topology(wrong, sq, keep={frozenset((5, 4))})
    assert 4 in adj[5]  # forced by the user: stays, whatever the distances say


def test_orient_picks_the_cheapest_root_within_the_constraints():
    adj = [{1}, {0, 2}, {1}]  # a chain 0 - 1 - 2
    cost = np.array([[0, 1, 9], [5, 0, 1], [9, 5, 0]], dtype=float)  # 0 -> 1 -> 2 is cheap
    assert orient(adj, cost).tolist() == [-1, 0, 1]
    assert orient(adj, cost, roots=[2]).tolist() == [1, 2, -1]
    assert orient(adj, cost, forced=[(2, 1)]).tolist() == [1, 2, -1]
    assert orient(adj, cost, forbidden=[(0, 1)]).tolist() in ([1, -1, 1], [1, 2, -1])
    assert orient(adj, cost, roots=[0], forbidden=[(0, 1)]) is None  # cannot hold together


@pytest.fixture(scope="module")
def fft_stats(small_zoo):
    return compute_statistics(discover([small_zoo["fft"]]), device="cpu")


def test_refinement_on_trained_trees_and_under_constraints(small_zoo, fft_stats):
    truth = load_truth(small_zoo["fft"] / "truth.json")
    refined = recover(fft_stats)
    plain = recover(fft_stats, RecoverySettings(refine=False))
    assert refined.problem.squared is not None
    assert evaluate(refined, truth).undirected_accuracy >= evaluate(plain, truth).undirected_accuracy
    # Constraints are honoured on the refined tree: a forced edge, a forbidden edge, a fixed root.
    child = refined.edges[0].child
    other_root = next(m for m in refined.model_ids if m not in refined.roots and m != child)
    cons = Constraints(forbidden=((refined.edges[0].parent, child),), roots=(other_root,))
    again = resolve(refined, cons)
    assert again.edge(refined.edges[0].parent, child) is None and other_root in again.roots
    forced = (other_root, child) if other_root != child else None
    if forced:
        assert resolve(refined, Constraints(forced=(forced,))).edge(*forced) is not None


def test_cli_can_turn_the_refinement_off(small_zoo, tmp_path):
    from mother_core.cli import main as cli_main
    from mother_core.recovery.result import Recovery

    out = tmp_path / "plain.json"
    cli_main(["recover", str(small_zoo["fft"]), "--no-refine", "--out", str(out)])
    plain = Recovery.load(out)
    assert plain.settings.refine is False and plain.problem.squared is None


def test_an_edge_kept_over_a_cheaper_parent_is_reported_as_contested():
    from mother_core.recovery.confidence import CONTESTED_PLACEMENT, placement_confidence

    clear = placement_confidence(1.0, 1.5, relative=0.01, threshold=0.5)
    narrow = placement_confidence(1.0, 1.01, relative=0.01, threshold=0.5)
    contested = placement_confidence(1.0, 0.99, relative=0.01, threshold=0.5)
    assert clear > narrow > contested
    assert contested == pytest.approx(CONTESTED_PLACEMENT, abs=1e-3)  # the related term is ~1 here
