"""Solving a :class:`RecoveryProblem` under user constraints into a :class:`Recovery`.

Steps 4, 6 and 7 of :mod:`mother_core.recovery.recover` (docs/METHOD.md, "Cost and tree"): a minimum
spanning arborescence per tree of the cost M, the additivity refinement, near-tied parents re-chosen by
the difference kurtosis (:mod:`.ties`), then the evidence and
confidence of every edge. :func:`mother_core.recovery.recover.recover` calls it on a fresh problem and
:func:`~mother_core.recovery.recover.resolve` on the problem a result carries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mother_core.errors import ConstraintError
from mother_core.recovery.additive import orient, refine_topology
from mother_core.recovery.arborescence import minimum_spanning_arborescence
from mother_core.recovery.confidence import (
    ConfidenceParts, direction_confidence, evidence_confidence, near_tied, placement_confidence,
    recounted, tie_placement_confidence,
)
from mother_core.recovery.problem import RecoveryProblem
from mother_core.recovery.ties import TieChoice, choose_among_ties, lift_by_spectrum, lift_siblings
from mother_core.recovery.typed import links_of, solver_constraints
from mother_core.recovery.result import (
    Alternative, Constraints, Edge, ModelNode, Recovery, RecoverySettings, TreeInfo,
)
from mother_core.walk import Forest

#: Alternative parents kept per edge, cheapest first (the Edge page's ranked list).
MAX_ALTERNATIVES = 5

#: Per-layer distances of the edge (p, c) by model index, in the order of ``Recovery.layers``.
LayerDistance = Callable[[int, int], tuple[float, ...]]

ADVICE = "Remove or change one of these constraints."


def solve(problem: RecoveryProblem, constraints: Constraints = Constraints(), *,
          layer_distance: LayerDistance | None = None) -> Recovery:
    """The recovered graph of ``problem`` under ``constraints``.

    Parameters
    ----------
    problem : RecoveryProblem
        The matrices and readings (never modified).
    constraints : Constraints
        Forced/forbidden edges and fixed roots, by model id. Forcing an edge between two trees joins
        them.
    layer_distance : callable, optional
        Per-layer distances of an edge, for the result's edges (none when omitted).

    Returns
    -------
    Recovery
        The graph (models, edges, trees), ``constraints``, and ``problem`` with the trees joined by
        forced edges; the caller adds what it carries (settings, layers, problems).

    Raises
    ------
    ConstraintError
        The constraints name an unknown model or contradict each other; the error's ``models`` are
        model indices and its message names the models by id.
    """
    ids = list(problem.ids)
    user_forced, forbidden, fixed_roots = model_indices(problem, constraints)
    # Typed relations (decided before the forest, :mod:`.typed`) yield to the user's constraints.
    typed_forced, typed_forbidden, leaves = solver_constraints(
        links_of(problem), {c for _, c in user_forced} | set(fixed_roots))
    forced = user_forced + [e for e in typed_forced if e not in forbidden]
    forbidden = forbidden + [e for e in typed_forbidden if e not in user_forced]
    squared = problem.squared if problem.refine else None
    labels, cost = joined_trees(problem, forced)
    for p, c in typed_forced:  # a typed parent may itself be a typed leaf (a quantized copy of a merge)
        if not np.isfinite(cost[p, c]):
            cost[p, c] = problem.distance[p, c] if np.isfinite(problem.distance[p, c]) else 1.0
    parent = np.full(len(ids), -1)
    tie_choices: dict[int, TieChoice] = {}
    for t in np.unique(labels):
        members = np.flatnonzero(labels == t)
        if len(members) == 1:
            if any(c == members[0] for _, c in forced):
                raise ConstraintError.about("Cannot force a parent for {model}: nothing links it.",
                                            model=int(members[0])).named(ids)
            continue
        local = {int(g): k for k, g in enumerate(members)}
        sub = cost[np.ix_(members, members)]
        try:
            sol = minimum_spanning_arborescence(
                sub,
                forced=[(local[p], local[c]) for p, c in forced if p in local and c in local],
                forbidden=[(local[p], local[c]) for p, c in forbidden if p in local and c in local],
                roots=[local[r] for r in fixed_roots if r in local] or None,
            )
        except ConstraintError as e:
            # The solver speaks in indices of this tree's members; users know models by id.
            raise e.named(ids, [int(g) for g in members], advice=ADVICE) from e
        if squared is not None:
            sol = _refined_core(sol, members, squared, sub, forced, forbidden, fixed_roots, leaves)
        if problem.tie_kurtosis or problem.tie_spectra:
            sol, moved = _ties_broken(sol, members, problem, forced, forbidden, leaves)
            tie_choices.update(moved)
        for k, pk in enumerate(sol):
            parent[members[k]] = members[pk] if pk >= 0 else -1
    return assemble(problem.with_trees(labels, cost), parent, constraints, set(user_forced), layer_distance,
                    tie_choices)


def _refined_core(sol: np.ndarray, members: np.ndarray, squared: np.ndarray, sub: np.ndarray,
                  forced: list[tuple[int, int]], forbidden: list[tuple[int, int]], fixed_roots: list[int],
                  leaves: set[int]) -> np.ndarray:
    """:func:`_refined` on the tree without its typed leaves (copies, quantized models, adapters and
    merges keep the parents their detectors gave them; the refinement moves the fine-tune forest)."""
    # The refinement's models: those with squared distances (:func:`.typed.refinement_core`).
    known = np.isfinite(squared[np.ix_(members, members)]).sum(axis=1) > 1
    core = np.array([k for k, g in enumerate(members) if g not in leaves and known[k]], dtype=int)
    if len(core) < 3:
        return sol
    pos = {int(k): j for j, k in enumerate(core)}
    if any(sol[k] >= 0 and int(sol[k]) not in pos for k in core):
        return sol  # a core model hangs under a leaf (only a user's constraint does that): leave it
    core_sol = np.array([pos[int(sol[k])] if sol[k] >= 0 else -1 for k in core])
    g = members[core]
    local = {int(x): j for j, x in enumerate(g)}
    new = _refined(core_sol, squared[np.ix_(g, g)], sub[np.ix_(core, core)], local, forced, forbidden, fixed_roots)
    out = sol.copy()
    for j, k in enumerate(core):
        out[k] = core[new[j]] if new[j] >= 0 else -1
    return out


def _ties_broken(sol: np.ndarray, members: np.ndarray, problem: RecoveryProblem, forced: list[tuple[int, int]],
                 forbidden: list[tuple[int, int]], leaves: set[int]) -> tuple[np.ndarray, dict[int, TieChoice]]:
    """``sol`` (one tree's arborescence, local indices) with near-tied parents re-chosen by the difference
    kurtosis (:func:`.ties.choose_among_ties`), after the refinement; forced edges and typed relations stay,
    forbidden edges are not taken. Also, per child that moved (model index), how it was chosen: the
    result tells the user (``Edge.tie_kurtosis``)."""
    parent = np.full(problem.n_models, -1)
    parent[members] = [members[pk] if pk >= 0 else -1 for pk in sol]
    pinned, banned = {c for _, c in forced} | leaves, set(forbidden)
    new, moved = choose_among_ties(parent, members, problem.layer_margins, problem.tie_kurtosis,
                                   pinned=pinned, banned=banned, no_children=leaves)
    # Then children read as a chain whose difference kurtosis says siblings (:func:`.ties.lift_siblings`).
    new, lifted = lift_siblings(new, members, problem.tie_kurtosis, pinned=pinned, banned=banned,
                                no_children=leaves, choices=moved)
    moved.update(lifted)
    # Then chains whose differences' spectra say siblings (:func:`.ties.lift_by_spectrum`).
    new, lifted = lift_by_spectrum(new, members, problem.tie_spectra, problem.tie_kurtosis, pinned=pinned,
                                   banned=banned, no_children=leaves, choices=moved)
    moved.update(lifted)
    if np.array_equal(new[members], parent[members]):
        return sol, {}
    local = {int(g): k for k, g in enumerate(members)}
    return np.array([local[int(new[g])] if new[g] >= 0 else -1 for g in members]), moved


def model_indices(problem: RecoveryProblem, constraints: Constraints
                  ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], list[int]]:
    """Forced edges, forbidden edges and fixed roots of ``constraints`` as model indices.

    Raises :class:`ConstraintError` for a model id the problem does not have.
    """
    index = {m: i for i, m in enumerate(problem.ids)}

    def idx(model_id: str) -> int:
        if model_id not in index:
            raise ConstraintError(f"Constraint names unknown model {model_id!r}.")
        return index[model_id]

    return ([(idx(p), idx(c)) for p, c in constraints.forced],
            [(idx(p), idx(c)) for p, c in constraints.forbidden],
            [idx(r) for r in constraints.roots])


def joined_trees(problem: RecoveryProblem, forced: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Tree labels and costs after forced edges across trees joined them (copies).

    A forced edge between two trees makes them one (union-find over labels); its cost, infinite
    across trees, becomes the pair's distance (1.0 when they share nothing).
    """
    labels = problem.tree_of.copy()
    cost = problem.cost.copy()
    dist = problem.distance
    for p, c in forced:
        if labels[p] != labels[c]:
            old, new = labels[c], labels[p]
            labels[labels == old] = new
            if not np.isfinite(cost[p, c]):
                cost[p, c] = dist[p, c] if np.isfinite(dist[p, c]) else 1.0
    return labels, cost


def assemble(problem: RecoveryProblem, parent: np.ndarray, constraints: Constraints,
             forced: set[tuple[int, int]], layer_distance: LayerDistance | None = None,
             tie_choices: Mapping[int, TieChoice] | None = None) -> Recovery:
    """The :class:`Recovery` of the forest ``parent`` (model indices, ``-1`` for roots) of ``problem``.

    Every edge gets its alternatives and confidence; ``forced`` (index pairs) marks the edges the
    user set; ``tie_choices`` (by child index) the parents re-chosen among near-ties by the difference
    kurtosis (:mod:`.ties`), told on their edges (``Edge.tie_kurtosis``). Settings, layers and problems
    are the caller's to add.
    """
    models, edges, trees = _graph(problem, parent, forced, layer_distance, tie_choices or {})
    return Recovery(models=models, edges=edges, trees=trees, constraints=constraints, problem=problem,
                    settings=RecoverySettings(method=problem.method, refine=problem.refine))


def _refined(sol: np.ndarray, squared: np.ndarray, cost: np.ndarray, local: dict[int, int],
             forced: list[tuple[int, int]], forbidden: list[tuple[int, int]], fixed_roots: list[int]) -> np.ndarray:
    """The arborescence ``sol`` of one tree after :func:`refine_topology`, under the constraints
    (forced edges stay, forbidden ones are not used, a fixed root stays the root); ``sol`` itself
    when the tree has no squared distances (a rank-placed tree, one joined by a forced edge) or
    nothing moved."""
    m = len(sol)
    if not np.isfinite(squared[~np.eye(m, dtype=bool)]).all():
        return sol
    pin = [(local[p], local[c]) for p, c in forced if p in local and c in local]
    adj, moves = refine_topology(sol, squared, keep={frozenset(e) for e in pin})
    if not moves:
        return sol
    oriented = orient(adj, cost, roots=[local[r] for r in fixed_roots if r in local] or None, forced=pin,
                      forbidden=[(local[p], local[c]) for p, c in forbidden if p in local and c in local])
    return sol if oriented is None else oriented


def _graph(problem: RecoveryProblem, parent: np.ndarray, forced: set[tuple[int, int]],
           layer_distance: LayerDistance | None, tie_choices: Mapping[int, TieChoice]
           ) -> tuple[list[ModelNode], list[Edge], list[TreeInfo]]:
    """Models, edges (with alternatives and confidence) and trees of the parent array ``parent``."""
    ids = list(problem.ids)
    n = len(ids)
    labels, cost, dist = problem.tree_of, problem.cost, problem.distance
    ku_model = problem.kurtosis

    # Descendants, to rule out alternative parents that would create a cycle.
    descendants = Forest.from_parent_array(parent).descendants

    edges: list[Edge] = []
    nodes: list[ModelNode] = []
    for c in range(n):
        members = np.flatnonzero(labels == labels[c])
        p = int(parent[c])
        # A child's alternatives exclude its descendants (a cycle); a root's are every other member
        # of its tree: re-rooting there is what choosing one would mean.
        banned = {c} if p < 0 else descendants(c) | {c}
        cand = [int(q) for q in members if q not in banned and np.isfinite(cost[q, c])]
        cand.sort(key=lambda q: cost[q, c])
        alternatives = tuple(Alternative(ids[q], float(cost[q, c]), float(dist[q, c]))
                             for q in cand if q != p)[:MAX_ALTERNATIVES]
        if p >= 0:
            choice = tie_choices.get(c)
            edges.append(_edge(problem, p, c, alternatives, (p, c) in forced, layer_distance,
                               choice if choice is not None and choice.candidates[0] == p else None))
        facts = problem.models[c]
        nodes.append(ModelNode(
            id=ids[c], path=facts.path, tree=int(labels[c]), kurtosis=float(ku_model[c]),
            is_root=p < 0, declared_parent=facts.declared_parent, format=facts.format,
            n_params=int(facts.n_params), alternatives=alternatives,
        ))
    trees = []
    for t in np.unique(labels):
        members = np.flatnonzero(labels == t)
        roots = [ids[i] for i in members if parent[i] < 0]
        reading = problem.reading(int(t))
        trees.append(TreeInfo(int(t), tuple(ids[i] for i in members), roots[0] if roots else "",
                              reading.regime, reading.confidence, direction_basis=reading.basis,
                              direction_note=reading.note))
    return nodes, edges, trees


def _edge(problem: RecoveryProblem, p: int, c: int, alternatives: tuple[Alternative, ...], constrained: bool,
          layer_distance: LayerDistance | None, tie: TieChoice | None = None) -> Edge:
    """The edge p -> c with its confidence (docs/METHOD.md, "Confidence") and, where ``tie`` says its
    parent was re-chosen among near-ties by the difference kurtosis, the kurtosis of each contender."""
    ids = problem.ids
    alt_cost = alternatives[0].cost if alternatives else math.inf
    reading = problem.reading(int(problem.tree_of[c]))
    up = int(problem.votes_up[p, c])
    total = int(problem.shared[p, c])
    forward = (total - up) if reading.regime == "specialization" else up
    if problem.method == "paper":
        p_dir = direction_confidence(forward, total, reading.confidence)
    else:
        # A reading that is itself uncertain (a coin-flip regime) makes the direction uncertain.
        scale = problem.cue_votes.get("scale")
        # A tree on the prior or beyond the calibrated radial share: its reading's confidence is a counted
        # share of such edges (trees) directed right.
        p_dir = evidence_confidence(float(problem.evidence[p, c]), reading.confidence,
                                    float(scale[p, c]) if scale is not None else 0.0,
                                    counted=reading.counted)
    # The layers as replicates: candidates whose margin they disagree on are inside the noise.
    # Not measured at all (the paper method; a result re-read without them): the margin alone.
    # An edge without an alternative has no candidate to be near-tied with: the layered form, whether or not
    # any other child of the set had its layers compared (a set of base + one child pairs has none).
    m = problem.layer_margins.get(c)
    near: int | None = None if not problem.layer_margins and alternatives else 0
    if m is not None and p in m.candidates:
        near = near_tied(m.effect[m.candidates.index(p)], m.candidates.index(p))
    if tie is not None:
        # Chosen by the near-tie rule against the distance: its negative margin is the rule's premise, not
        # evidence against it; such parents are counted (confidence.TIE_PLACEMENT).
        p_place = tie_placement_confidence(float(problem.relative[p, c]), problem.threshold)
    else:
        p_place = placement_confidence(float(problem.cost[p, c]), alt_cost, float(problem.relative[p, c]),
                                       problem.threshold, near)
    if problem.method != "paper" and tie is None and not reading.counted:
        # The fitted maps' edges read their counted share (confidence.recounted); counted readings, a near-tie
        # parent's count and the paper method's votes are left as they are.
        p_place, p_dir = recounted(p_place, p_dir)
    support = problem.twin_support(p)
    if support is not None:
        # The parent was told from a twin (identical on every selected layer) by the other tensors alone: the
        # order's support is all the evidence there is, for the direction inside the group and for the
        # placement of a child its twin would have parented at the same cost (:mod:`.twins`).
        alt = alternatives[0].parent if alternatives else None
        if _twins(problem, p, c):
            p_dir = min(p_dir, support)
        elif alt is not None and _twins(problem, p, ids.index(alt)):
            p_place = min(p_place, support)
    parts = ConfidenceParts(p_place, p_dir)
    return Edge(
        parent=ids[p], child=ids[c], distance=float(problem.distance[p, c]),
        confidence=parts.combined, placement_confidence=parts.placement,
        direction_confidence=parts.direction,
        kurtosis_parent=float(problem.kurtosis[p]), kurtosis_child=float(problem.kurtosis[c]),
        layers_voting_forward=forward, layers_voting_backward=total - forward,
        constrained=constrained, alternatives=alternatives,
        layer_distance=layer_distance(p, c) if layer_distance is not None else (),
        cues={k: float(v[p, c]) for k, v in problem.cue_votes.items()},
        tie_kurtosis={} if tie is None else {ids[q]: k for q, k in zip(tie.candidates, tie.kurtosis)},
        tie_displaced=None if tie is None else ids[tie.displaced],
        tie_lifted=tie is not None and tie.lifted,
        tie_spectral=tie is not None and tie.spectral,
    )


def _twins(problem: RecoveryProblem, a: int, b: int) -> bool:
    """Whether ``a`` and ``b`` are in one group of models identical on the selected layers."""
    return any(a in g.members and b in g.members for g in problem.twins)
