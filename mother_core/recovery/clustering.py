"""Split models into trees without knowing how many there are (method.md, "Forest").

Two small helpers, both O(N^2) time and at most O(N * block) temporary memory (no N^3 linkage
bookkeeping, no condensed copies):

- :func:`largest_gap_threshold` finds the gap between "related" distances (within a tree) and
  "unrelated" ones (across trees) in log-space;
- :func:`connected_components_below` cuts the single-linkage dendrogram at that threshold, which is the
  same as taking connected components of the graph of pairs closer than it (Gower & Ross 1969: the
  single-linkage clusters at height t are the components of the minimum spanning tree's edges <= t).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mother_core.errors import InputError

__all__ = ["connected_components_below", "largest_gap_threshold"]


def connected_components_below(dist: np.ndarray, threshold: float, *, block_rows: int = 1024) -> np.ndarray:
    """Labels of the single-linkage clusters of ``dist`` cut at ``threshold``.

    Models i and j are linked when ``min(dist[i, j], dist[j, i]) <= threshold`` (the same ``<=`` as
    ``scipy.cluster.hierarchy.fcluster(..., criterion="distance")``); clusters are the connected
    components of those links (Gower & Ross 1969), found with ``scipy.sparse.csgraph``. NaN and ``+inf``
    entries never link; the diagonal is ignored.

    Parameters
    ----------
    dist : ndarray, shape (N, N)
        Pairwise distances (need not be symmetric: the smaller direction counts).
    threshold : float
        Largest distance that still links two models.
    block_rows : int, optional
        Rows compared at a time; bounds the temporary memory to ``block_rows * N`` booleans.

    Returns
    -------
    labels : ndarray of int64, shape (N,)
        Cluster label of each model, ``0..K-1`` numbered in order of each cluster's first model.

    Examples
    --------
    >>> d = np.array([[0, 1, 9], [1, 0, 9], [9, 9, 0]])
    >>> connected_components_below(d, 2.0).tolist()
    [0, 0, 1]
    """
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise InputError(f"The distance matrix must be square (N, N); got shape {d.shape}.")
    n = d.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    rows, cols = [], []
    for start in range(0, n, max(1, block_rows)):
        stop = min(n, start + max(1, block_rows))
        near = np.fmin(d[start:stop], d[:, start:stop].T) <= threshold  # (B, N); NaN compares False
        r, c = np.nonzero(near)
        rows.append(r + start)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return _first_appearance_order(labels)


def _first_appearance_order(labels: np.ndarray) -> np.ndarray:
    _, first = np.unique(labels, return_index=True)
    remap = np.empty(first.size, dtype=np.int64)
    remap[np.argsort(first)] = np.arange(first.size)
    return remap[labels]


def largest_gap_threshold(values: np.ndarray, *, min_ratio: float = 2.0) -> float | None:
    """A distance that separates a low "related" mode from a high "unrelated" mode, or None.

    Rule (documented because the forest step depends on it):

    1. Keep the finite, strictly positive values (zeros are duplicates: related whatever the split).
    2. Sort their logarithms and take the largest gap between neighbours; log-space because distances
       inside a tree vary by small factors while distances across trees are larger by a factor, at any
       scale.
    3. The gap is "clear" when the smallest value above it is at least ``min_ratio`` times the largest
       value below it (default 2: within-tree distances grow roughly like the square root of the
       number of edges between two models, so one tree rarely has a jump of 2x between neighbouring
       distances). Otherwise there is no evidence for more than one mode: return None.
    4. The threshold is the geometric midpoint of the gap.

    When several gaps pass, the largest wins; with fewer than two positive values the answer is None.

    Parameters
    ----------
    values : ndarray
        Distances of any shape, e.g. the upper triangle of the distance matrix.
    min_ratio : float, optional
        Smallest ratio (high / low across the gap) counted as a clear gap; must be > 1.

    Returns
    -------
    float or None
        The threshold (to pass to :func:`connected_components_below`), or None for "one mode".

    Examples
    --------
    >>> round(largest_gap_threshold(np.array([1.0, 1.2, 1.5, 40.0, 50.0])), 3)
    7.746
    >>> largest_gap_threshold(np.array([1.0, 1.2, 1.5, 1.9])) is None
    True
    """
    if not min_ratio > 1.0:
        raise InputError(f"min_ratio must be greater than 1; got {min_ratio}.")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 2:
        return None
    x = np.sort(np.log(v))
    gaps = np.diff(x)
    i = int(np.argmax(gaps))
    if gaps[i] < np.log(min_ratio):
        return None
    return float(np.exp((x[i] + x[i + 1]) / 2))
