"""Splitting a set of models into trees without being told how many there are.

Rule (documented in README, tested in tests/test_recovery.py). Work on the scale-free relative
distance R (features.PairEvidence.relative): R ~ 0.01-0.3 for models related by fine-tuning and
R ~ sqrt(2) for independently initialised weights of the same shapes; models that share no selected
layer (different architectures) have R = inf.

1. Build the minimum spanning tree of R (single linkage). Two models belong to the same tree only if
   a chain of small-R steps joins them.
2. Cut every MST edge with R >= ``unrelated`` (0.8): nothing that far apart is one fine-tune from
   the other (continued pre-training moves weights by a fraction of their norm, not by all of it).
3. Among the remaining edges, look for a clear gap between a "related" and an "unrelated" mode:
   sort the edge weights, take the largest ratio between consecutive weights whose upper value is
   at least ``min_unrelated`` (0.25); if the ratio is at least ``min_gap_ratio`` (2.5x) cut every
   edge above the gap.
4. The connected components are the trees.

With ``n_trees`` given (the paper's setting) the MST is instead cut at its ``n_trees - 1`` largest
edges, which equals single-linkage clustering into that many clusters.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from mother_core.errors import InputError

#: Rule step 2: an MST edge this far apart (relative distance) is always cut; fine-tunes sit at ~0.01-0.3,
#: independent weights at ~1.41.
UNRELATED = 0.8
#: Rule step 3: a gap counts only if its upper side is at least this far (below it, all read as relatives).
MIN_UNRELATED = 0.25
#: Rule step 3: the least ratio between consecutive MST edge weights that reads as a gap.
MIN_GAP_RATIO = 2.5


def split_into_trees(
    relative: np.ndarray,
    n_trees: int | None = None,
    *,
    unrelated: float = UNRELATED,
    min_unrelated: float = MIN_UNRELATED,
    min_gap_ratio: float = MIN_GAP_RATIO,
) -> tuple[np.ndarray, float]:
    """Label each model with its tree.

    Parameters
    ----------
    relative : ndarray (N, N)
        Symmetric relative distances; ``inf`` where two models share nothing.
    n_trees : int, optional
        The number of trees, if known.

    Returns
    -------
    labels : ndarray of int (N,)
        Tree index per model, numbered by first appearance.
    threshold : float
        The relative distance above which models were judged unrelated.
    """
    n = relative.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int), unrelated
    w = np.where(np.isfinite(relative), relative, 0.0)
    # csgraph treats 0 as "no edge": shift related-by-identity pairs (R == 0) to a tiny positive value.
    w = np.where(np.isfinite(relative) & (w <= 0), 1e-300, w)
    np.fill_diagonal(w, 0.0)
    return _split_mst(minimum_spanning_tree(csr_matrix(w)).tocoo(), n, n_trees, unrelated, min_unrelated,
                      min_gap_ratio)


def split_graph_into_trees(
    n: int,
    pairs: np.ndarray,
    relative: np.ndarray,
    n_trees: int | None = None,
    *,
    unrelated: float = UNRELATED,
    min_unrelated: float = MIN_UNRELATED,
    min_gap_ratio: float = MIN_GAP_RATIO,
) -> tuple[np.ndarray, float]:
    """:func:`split_into_trees` on a sparse graph: ``relative[e]`` of the pair ``pairs[e]`` (E, 2).

    Same rule on the minimum spanning forest of the given pairs only (the candidate graph of
    :mod:`mother_core.recovery.candidates`); pairs not given count as unrelated. When the graph holds
    every edge of the dense minimum spanning tree, the labels equal :func:`split_into_trees`'s.
    """
    if n == 0:
        return np.zeros(0, dtype=int), unrelated
    ok = np.isfinite(relative)
    w = np.where(relative[ok] <= 0, 1e-300, relative[ok])
    g = csr_matrix((w, (pairs[ok, 0], pairs[ok, 1])), shape=(n, n))
    return _split_mst(minimum_spanning_tree(g).tocoo(), n, n_trees, unrelated, min_unrelated, min_gap_ratio)


def _split_mst(mst, n: int, n_trees: int | None, unrelated: float, min_unrelated: float,
               min_gap_ratio: float) -> tuple[np.ndarray, float]:
    weights = mst.data
    if n_trees is not None:
        if not 1 <= n_trees <= n:
            raise InputError(f"n_trees must be between 1 and the number of models ({n}); got {n_trees}.")
        n_components_now = connected_components(mst, directed=False)[0]
        extra_cuts = max(0, n_trees - n_components_now)
        order = np.argsort(weights)[::-1]
        keep = np.ones(len(weights), dtype=bool)
        keep[order[:extra_cuts]] = False
        threshold = float(weights[order[extra_cuts - 1]]) if extra_cuts > 0 else unrelated
    else:
        threshold = _gap_threshold(weights, unrelated, min_unrelated, min_gap_ratio)
        keep = weights < threshold
    graph = csr_matrix((np.ones(int(keep.sum())), (mst.row[keep], mst.col[keep])), shape=(n, n))
    _, raw = connected_components(graph, directed=False)
    # Renumber by first appearance so labels are stable and readable.
    first: dict[int, int] = {}
    labels = np.array([first.setdefault(int(c), len(first)) for c in raw], dtype=int)
    return labels, threshold


def _gap_threshold(weights: np.ndarray, unrelated: float, min_unrelated: float, min_gap_ratio: float) -> float:
    """Rule step 3; without a clear gap (or with one MST edge only) the absolute ``unrelated`` cut."""
    w = np.sort(weights[weights < unrelated])
    best_ratio, threshold = min_gap_ratio, unrelated
    for lo, hi in zip(w[:-1], w[1:]):
        if hi < min_unrelated:
            continue
        ratio = hi / max(lo, 1e-12)
        if ratio >= best_ratio:
            best_ratio, threshold = ratio, float(np.sqrt(max(lo, 1e-12) * hi))
    return threshold
