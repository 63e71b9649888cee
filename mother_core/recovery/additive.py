"""Tree refinement by additivity: fine-tuning steps add nearly orthogonal updates.

If every fine-tune adds an update nearly orthogonal to what came before (the premise of the norm-growth
direction cue, :func:`mother_core.recovery.recover.direction_evidence`), then squared Euclidean
distances add up along the paths of the true tree: for a chain p -> s -> c,
||c - p||^2 ~ ||s - p||^2 + ||c - s||^2, while two siblings s, c of p sit at ||s - p||^2 + ||c - p||^2.
Measured on the zoo's trees, the cosine between consecutive steps of a true chain is ~0 (5-95%:
-0.2..0.2) and between sibling updates seen from one of them it is ~-0.7: the squared distances of a
family form a tree metric on its models.

The arborescence (:mod:`.arborescence`) looks at one pair at a time. Siblings trained on similar data
move in similar directions, so a sibling (or the grandparent, when a child partly undoes its
parent's update) can sit slightly closer to a child than its parent does: most of the errors left on
full fine-tuning trees. :func:`refine_topology` fixes such errors with the whole tree in view: it
moves single attachments while that makes the tree's path sums fit all measured squared distances
better (least squares on log distances: a tree metric fit, as in phylogenetics' Fitch-Margoliash).
:func:`orient` then picks the root the direction cues prefer. Trees placed by the rank distance
(merged LoRA) are left as solved: there the placement already uses sharper evidence.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np


#: Candidate new parents per model: its nearest relatives by squared distance.
CANDIDATES = 6
#: Larger trees keep the arborescence's answer (the local search is cubic in the tree's size).
MAX_TREE = 400


def squared_distances(rms: np.ndarray, numel: np.ndarray, members: np.ndarray) -> np.ndarray | None:
    """Squared Euclidean distances between ``members`` over the layers every pair of them keeps.

    ``rms`` is :attr:`PairEvidence.rms` (per selected layer, the RMS difference of each pair, NaN where
    the layer is set aside for that pair, e.g. a re-initialised head) and ``numel`` the layers' sizes. A
    layer set aside anywhere in the tree is left out for every pair: it is not part of any fine-tuning
    step. ``None`` when no layer is left. One layer at a time: (members x members) memory.
    """
    sub = np.ix_(members, members)
    off = ~np.eye(len(members), dtype=bool)
    total = np.zeros((len(members), len(members)))
    used = 0
    for layer_rms, size in zip(rms, numel):
        r = layer_rms[sub]
        if np.isfinite(r[off]).all():
            total += r ** 2 * float(size)
            used += 1
    if not used:
        return None
    np.fill_diagonal(total, 0.0)
    return total


def _adjacency(parent: np.ndarray) -> list[set[int]]:
    adj: list[set[int]] = [set() for _ in range(len(parent))]
    for c, p in enumerate(parent):
        if p >= 0:
            adj[c].add(int(p))
            adj[int(p)].add(c)
    return adj


def _path_sums(adj: list[set[int]], s: np.ndarray) -> np.ndarray:
    m = len(adj)
    out = np.zeros((m, m))
    for start in range(m):
        stack = [(start, -1, 0.0)]
        while stack:
            v, came_from, acc = stack.pop()
            out[start, v] = acc
            stack.extend((w, v, acc + s[v, w]) for w in adj[v] if w != came_from)
    return out


def _side(adj: list[set[int]], start: int, cut: int) -> np.ndarray:
    """Nodes reachable from ``start`` without crossing the edge ``start - cut``."""
    seen = {start}
    stack = [w for w in adj[start] if w != cut]
    while stack:
        v = stack.pop()
        if v not in seen:
            seen.add(v)
            stack.extend(w for w in adj[v] if w not in seen)
    return np.fromiter(seen, dtype=int)


def refine_topology(parent: np.ndarray, s: np.ndarray, keep: Collection[frozenset[int]] = frozenset(),
                    candidates: int = CANDIDATES) -> tuple[list[set[int]], int]:
    """Move attachments while the tree's path sums fit the squared distances ``s`` better.

    Parameters
    ----------
    parent : ndarray of int
        A spanning tree of the models (``-1`` for the root), e.g. the arborescence's.
    s : ndarray (m, m)
        Squared distances (:func:`squared_distances`).
    keep : set of frozenset
        Undirected edges that must stay (forced by the user).
    candidates : int
        New parents considered per model: its nearest relatives.

    Returns
    -------
    adjacency, number of moves
        The refined tree, undirected (see :func:`orient`).

    Notes
    -----
    The fit is sum over pairs (log s(x, y) - log P(x, y))^2, with P the sum of ``s`` over the edges of
    the path from x to y. A move cuts the edge between a model c and a neighbour and re-attaches c's
    side at one of c's nearest relatives on the other side; only pairs across the cut change. The
    best improving move is applied until none improves.
    """
    m = len(parent)
    floor = max(float(s.max()) * 1e-12, 1e-300)  # identical models: keep the logs finite
    s = np.maximum(s, floor)
    np.fill_diagonal(s, 0.0)
    adj = _adjacency(parent)
    log_s = np.log(np.where(np.eye(m, dtype=bool), 1.0, s))
    paths = _path_sums(adj, s)
    near = np.argsort(np.where(np.eye(m, dtype=bool), np.inf, s), axis=1)[:, :candidates]
    moves = 0
    for _ in range(2 * m):
        best: tuple[float, Any] = (-1e-12, None)
        for c in range(m):
            for cut in adj[c]:
                if frozenset((c, cut)) in keep:
                    continue
                side = _side(adj, c, cut)
                inside = np.zeros(m, dtype=bool)
                inside[side] = True
                rest = np.flatnonzero(~inside)
                target = log_s[np.ix_(side, rest)]
                before = ((target - np.log(paths[np.ix_(side, rest)])) ** 2).sum()
                for q in near[c]:
                    if inside[q] or q == cut:
                        continue
                    after_paths = paths[side, c][:, None] + s[c, q] + paths[q, rest][None, :]
                    change = ((target - np.log(after_paths)) ** 2).sum() - before
                    if change < best[0]:
                        best = (change, (c, cut, int(q), side, rest, after_paths))
        if best[1] is None:
            break
        c, cut, q, side, rest, after_paths = best[1]
        adj[c].discard(cut)
        adj[cut].discard(c)
        adj[c].add(q)
        adj[q].add(c)
        paths[np.ix_(side, rest)] = after_paths
        paths[np.ix_(rest, side)] = after_paths.T
        moves += 1
    return adj, moves


def orient(adj: list[set[int]], cost: np.ndarray, *, roots: list[int] | None = None,
           forced: Sequence[tuple[int, int]] = (), forbidden: Sequence[tuple[int, int]] = ()) -> np.ndarray | None:
    """Root an undirected tree where its directed edges cost least (``cost[p, c]``: the solver's
    cost, whose direction penalty carries the kurtosis and norm-growth cues).

    ``roots`` (at most one per tree), ``forced`` (p, c) and ``forbidden`` (p, c) edges are honoured;
    ``None`` when no root satisfies them.
    """
    m = len(adj)
    best: tuple[float, np.ndarray] | None = None
    for r in (roots if roots else range(m)):
        parent = np.full(m, -1)
        total, stack, seen = 0.0, [r], {r}
        while stack:
            v = stack.pop()
            for w in adj[v]:
                if w not in seen:
                    seen.add(w)
                    parent[w] = v
                    total += cost[v, w]
                    stack.append(w)
        if len(seen) < m or any(parent[c] != p for p, c in forced) or any(parent[c] == p for p, c in forbidden):
            continue
        if best is None or total < best[0]:
            best = (total, parent)
    return None if best is None else best[1]
