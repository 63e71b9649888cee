"""Models the selected layers cannot tell apart: ties broken by the tensors that differ, never by input order.

A BitFit fine-tune trains only biases and norm weights: every weight matrix is its parent's, bit for bit.
With ``layers="matrices"`` (the default) the two are at distance 0 on every layer the forest reads, with
equal kurtosis, norms and difference shapes, so every cue ties and so does every other child between them:
the cost matrix holds two identical rows, and the solver's ``argmin`` took the first in input order. On the
stress set of benchmarks/elsewhere_set.py the same bytes under other ids hung the root's three other
children under its BitFit child at confidence 0.80 (benchmarks/RESULTS.md, "A stress set made without our
generator"; "Exact ties between candidate parents").

The statistics pass measures every float tensor, not only the selected ones, so the tie is broken by the
tensors that differ (:func:`twin_groups`): the member nearest (relative squared distance over those tensors)
to the rest of its tree is the original, the others its fine-tunes (the rest of the tree reaches the group
through its original: a sibling trained its own biases away from the root's, the BitFit child moved its
own, and the two moves add). Where nothing differs the group is ordered by model id: the trees so made are
the same up to renaming identical models. The choice enters the cost as an offset far below any distance
(:func:`ordered_cost`), so every later step (refinement, near ties) sees the order, and its confidence is the
share of differing tensors that agree with it (Laplace's rule of succession: 0.5 where none differ), which
caps the edges it decides (:func:`mother_core.recovery.solve._edge`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from mother_core.recovery.problem import Twins
from mother_core.stats.result import WeightStatistics
from mother_core.walk import components

#: Two models are twins when their squared distance over the selected layers is at most this share of their
#: squared norms there: exact up to float64 summation (identical tensors give exactly 0).
EXACT = 1e-12
#: The cost offset per rank inside a group, as a share of the tree's median finite cost: far below any
#: distance between different models, above float noise.
OFFSET = 1e-9


def twin_groups(stats: WeightStatistics, layer_index: np.ndarray, labels: np.ndarray,
                typed: Collection[int] = ()) -> list[Twins]:
    """The groups of two or more models of one tree (``labels``) identical on every selected layer
    (``layer_index``, slots of the statistics) they hold, each ordered by the other tensors.

    Models in ``typed`` (children whose relation a detector decided: a lossless conversion is identical to
    its source on every tensor) take no part: their parent is their link's, not the forest's."""
    selected = np.asarray(layer_index, dtype=int)
    other = np.setdiff1d(np.arange(stats.sq_dist.shape[0]), selected)
    groups: list[Twins] = []
    for t in np.unique(labels):
        members = np.array([g for g in np.flatnonzero(labels == t) if int(g) not in typed], dtype=int)
        if len(members) < 2:
            continue
        found = _identical(stats, selected, members)
        for group in found:
            outside = np.array([g for g in members if g not in set(group)], dtype=int)
            groups.append(_ordered(stats, other, group, outside))
    return groups


def _identical(stats: WeightStatistics, selected: np.ndarray, members: np.ndarray) -> list[list[int]]:
    """Connected groups of ``members`` at (numerically) zero distance over the selected slots."""
    pairs: list[tuple[int, int]] = []
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            if not np.array_equal(stats.present[a, selected], stats.present[b, selected]):
                continue
            held = selected[stats.present[a, selected]]
            if held.size == 0:
                continue
            sq = stats.sq_dist[held, a, b]
            scale = float((stats.norm[a, held] ** 2 + stats.norm[b, held] ** 2).sum())
            if np.isfinite(sq).all() and float(sq.sum()) <= EXACT * max(scale, 1e-300):
                pairs.append((int(a), int(b)))
    out: dict[int, list[int]] = {}
    for g, comp in components([int(g) for g in members], pairs).items():
        out.setdefault(comp, []).append(g)
    return [sorted(v) for v in out.values() if len(v) > 1]


def _ordered(stats: WeightStatistics, other: np.ndarray, group: list[int], outside: np.ndarray) -> Twins:
    """``group`` ordered by its relative squared distance to ``outside`` over the ``other`` slots (nearest
    first; model id on equal readings), with the support of the first over the second."""
    ids = stats.model_ids
    if outside.size == 0 or other.size == 0:
        return Twins(tuple(sorted(group, key=lambda g: ids[g])), 0.5)
    # (slots, group, outside): each differing tensor's squared distance over its scale, a replicate
    g = np.array(group, dtype=int)
    sq = stats.sq_dist[np.ix_(other, g, outside)]
    n2 = stats.norm[:, other].T ** 2  # (slots, N)
    scale = (n2[:, g][:, :, None] + n2[:, outside][:, None, :]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, sq / scale, np.nan)  # (slots, group, outside); NaN where not shared
        counted = np.isfinite(rel).sum(axis=2)
        per_slot = np.where(counted > 0, np.nansum(rel, axis=2) / np.maximum(counted, 1), np.nan)
    # slots where the group's members differ among themselves: the only ones that can tell them apart
    differ = np.array([np.nansum(stats.sq_dist[s][np.ix_(g, g)]) > 0 for s in other])
    score = np.nansum(per_slot[differ], axis=0) if differ.any() else np.zeros(len(group))
    order = sorted(range(len(group)), key=lambda k: (round(float(score[k]), 12), ids[group[k]]))
    if not differ.any() or score[order[0]] == score[order[1]]:
        return Twins(tuple(group[k] for k in order), 0.5)
    first, second = per_slot[differ][:, order[0]], per_slot[differ][:, order[1]]
    voting = np.isfinite(first) & np.isfinite(second) & (first != second)
    agree = int((first[voting] < second[voting]).sum())
    return Twins(tuple(group[k] for k in order), (agree + 1) / (int(voting.sum()) + 2))


def ordered_cost(cost: np.ndarray, labels: np.ndarray, groups: list[Twins]) -> np.ndarray:
    """``cost`` with each group's rows offset by rank (:data:`OFFSET` of the tree's median finite cost per
    rank): the identical rows of twins no longer tie, and the original parents the rest."""
    out = cost.copy()
    for group in groups:
        members = np.flatnonzero(labels == labels[group.members[0]])
        block = cost[np.ix_(members, members)]
        finite = block[np.isfinite(block) & (block > 0)]
        step = OFFSET * (float(np.median(finite)) if finite.size else 1.0)
        for rank, g in enumerate(group.members):
            row = np.isfinite(out[g])
            out[g, row] += step * rank
    return out
