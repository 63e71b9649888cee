"""Chains of fine-tunes whose two orders fit the distances alike: their edges' confidence capped at the
counted share right (docs/METHOD.md, "Confidence"; benchmarks/RESULTS.md, "Wrong fine-tune edges in typed
sets").

A recovered chain p -> x -> y (each with one parent) has one alternative that no per-edge confidence
sees: the same three models in the other order, p -> y -> x. Placement compares x's candidate parents,
but y is x's descendant, so it is never one; direction reads the cues of the x-y difference under the
tree's reading. With steps orthogonal to each other, squared distances add along the chain, and

    h = (D(p, y)^2 - D(p, x)^2) / D(x, y)^2

is +1 when the chain runs as read and -1 when it runs the other way; near 0 the distances do not tell
the two orders apart. That is where a small second step sits that partly undoes the first one (a few
steps at a tiny learning rate, weight decay pulling back): which of x and y came first is then left to
the direction cues of a tiny difference, which the `nearcopy` study found unreliable, and no rule that
re-orders such chains held on every fitting collection. So the order stays as solved, and both edges
read the share of such edges that were right on the fitting collections, as a root's only child does
(:data:`.confidence.SOLE_CHILD_CONFIDENCE`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mother_core.recovery.result import Edge, Recovery
from mother_core.relations.vocabulary import Relation

#: h (module docstring) below which a chain's two orders are a tie (the midpoint of the two readings' +1
#: and -1 is 0). Chosen on the fitting collections only (``benchmarks/ftedge_diag.py --chains``, 305
#: recovered chains): of 0, 1/4 and 1/2, the zone whose caps take the most wrong edges at >= 0.8 below 0.8
#: (4, 7, 7), the smaller of two that tie (it lowers 5 right edges at >= 0.8 against 1/2's 10).
CHAIN_TIE_ZONE = 0.25
#: Confidence caps of the two edges of a chain in the tie zone: the share right, (right + 1) / (n + 2), among
#: the zone's edges the cap lowers (those whose own confidence is above it; a cap is a fixed point of that
#: count, iterated from the share over every zone edge), on the fitting collections: typed profile C seeds
#: 5-23 and 53-57, D 200-208, and the generalise fitting collections fit-*, fit2-*, fitw, fitx-0..2, counted
#: on two draws of them (``benchmarks/ftedge_diag.py --chains``; 37 zone chains). The second edge (x -> y:
#: the swap reverses it) is right 20 times of the 28 above 0.640, the first (p -> x: the swap gives x another
#: parent) 11 of the 24 above 0.409. The zone's edges below a cap keep their own, lower confidence and were
#: right less often, so the share over every zone edge (19 of 31, 12 of 31 on the first draw: 0.606 / 0.394,
#: the caps before) read the edges the caps lower low (benchmarks/RESULTS.md, "Confidence sources counted",
#: branch confcal).
CHAIN_TIE_SECOND = 0.640
CHAIN_TIE_FIRST = 0.409


def fine_tune_chains(edges: list[Edge]) -> list[tuple[Edge, Edge]]:
    """(first edge p -> x, second edge x -> y) of every recovered chain of fine-tunes p -> x -> y: each of x
    and y with one parent, both edges fine-tunes the user did not set."""
    parents: dict[str, int] = {}
    for e in edges:
        parents[e.child] = parents.get(e.child, 0) + 1
    chain = {e.child: e for e in edges
             if e.relation == Relation.FINETUNE.value and not e.constrained and parents[e.child] == 1}
    return [(chain[e.parent], e) for e in chain.values() if e.parent in chain]


def chain_h(distance: np.ndarray, p: int, x: int, y: int) -> float:
    """h = (D(p, y)^2 - D(p, x)^2) / D(x, y)^2 of the chain p -> x -> y (module docstring); NaN where a
    distance is not finite or x and y do not differ."""
    d_px, d_py, d_xy = float(distance[p, x]), float(distance[p, y]), float(distance[x, y])
    if not (np.isfinite([d_px, d_py, d_xy]).all() and d_xy > 0):
        return float("nan")
    return (d_py ** 2 - d_px ** 2) / d_xy ** 2


def chain_tie_edges(edges: list[Edge], distance: np.ndarray, ids: list[str]
                    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(first edges, second edges) of the recovered fine-tune chains (:func:`fine_tune_chains`) in the tie
    zone (:data:`CHAIN_TIE_ZONE`). ``distance``: the recovery's pairwise distance (l_FT), ``ids`` its models'
    order."""
    index = {m: i for i, m in enumerate(ids)}
    first, second = set(), set()
    for up, e in fine_tune_chains(edges):
        if chain_h(distance, index[up.parent], index[e.parent], index[e.child]) < CHAIN_TIE_ZONE:
            first.add((up.parent, up.child))
            second.add((e.parent, e.child))
    return first, second


def chain_ties_capped(recovery: Recovery) -> Recovery:
    """Both edges of every fine-tune chain in the tie zone capped (module docstring): the second at
    :data:`CHAIN_TIE_SECOND` through its direction (the other order reverses it), the first at
    :data:`CHAIN_TIE_FIRST` through its placement (the other order gives its child another parent). A result
    without a dense distance matrix (the sparse path) is returned as it is."""
    dist = recovery.distance_matrix
    if dist is None or not recovery.edges:
        return recovery
    first, second = chain_tie_edges(list(recovery.edges), np.asarray(dist), list(recovery.model_ids))
    if not first:
        return recovery
    edges = []
    for e in recovery.edges:
        key = (e.parent, e.child)
        if key in second and e.confidence > CHAIN_TIE_SECOND:
            direction = min(e.direction_confidence, CHAIN_TIE_SECOND / max(e.placement_confidence, 1e-12))
            e = replace(e, confidence=min(e.confidence, e.placement_confidence * direction),
                        direction_confidence=direction)
        if key in first and e.confidence > CHAIN_TIE_FIRST:
            placement = min(e.placement_confidence, CHAIN_TIE_FIRST / max(e.direction_confidence, 1e-12))
            e = replace(e, confidence=min(e.confidence, placement * e.direction_confidence),
                        placement_confidence=placement)
        edges.append(e)
    return replace(recovery, edges=edges)
