"""From weight statistics to a :class:`Recovery`: trees, regimes, arborescences, confidence.

Method (method.md; Horwitz, Shul & Hoshen 2024, "On the Origin of Llamas", sec. 4), with our changes
marked (+); ``RecoverySettings(method="paper")`` turns every (+) off for comparison:

1. Distances: l_FT(i, j) = mean over shared selected layers of RMS(W_i - W_j) (paper, v2), over all
   weight matrices (+), setting aside per pair the layers that were re-initialised (+, a new head).
   In a tree whose models differ at low rank (merged LoRA) the paper's l_LoRA places edges instead:
   the rank of the differences, read from streamed skeletons (+, automatic, ``use_rank``).
2. Trees: split by the median relative distance without being told how many (+, :mod:`.forest`).
3. Direction: K[p, c] in [0, 1] from the evidence that c descends from p: the magnitude-weighted
   per-layer kurtosis vote read under the tree's regime, plus norm growth (+): a fine-tune adds a
   nearly orthogonal update, so ||child||^2 ~ ||parent||^2 + ||child - parent||^2. The paper's K is
   the sign of the summed kurtosis change alone.
4. Cost M = D + lambda * mean(D) * K and a minimum spanning arborescence per tree (lambda = 0.3).
5. Regime ``auto`` (+): solve the tree under both regimes and keep the cheaper; a tree whose kurtosis
   moves monotonically away from some root is cheap under one regime only.
6. Refinement (+): attachments move while squared distances add up better along the tree's paths
   (fine-tuning steps add nearly orthogonal updates, :mod:`.additive`); the root is then the one the
   direction cues prefer. Not in trees placed by the rank distance.
7. Confidence per edge (+) from its margin over the best alternative parent and its direction
   evidence (:mod:`.confidence`). An edge the refinement chose over a cheaper parent is contested: its
   placement confidence is the held-out rate at which such edges are right.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np

from mother_core.errors import ConstraintError, InputError, TooFewModelsError
from mother_core.recovery.additive import MAX_TREE, orient, refine_topology, squared_distances
from mother_core.recovery.arborescence import minimum_spanning_arborescence, tree_cost
from mother_core.recovery.confidence import (
    ConfidenceParts, direction_confidence, evidence_confidence, placement_confidence,
)
from mother_core.recovery.corrections import is_extension, local_edit
from mother_core.recovery.features import PairEvidence, pair_evidence, rank_evidence, select_layers
from mother_core.recovery.forest import split_into_trees
from mother_core.recovery.result import (
    Alternative, Constraints, Edge, LayerInfo, ModelNode, Recovery, RecoverySettings, TreeInfo,
)
from mother_core.recovery.typed import apply_relations, block_leaves, links_of, solver_constraints
from mother_core.relations.detect import DETECTORS, detect_relations, label_edge
from mother_core.relations.evidence import TypedFindings, pair_layers
from mother_core.stats.result import WeightStatistics

REGIMES = ("auto", "specialization", "generalization")
METHODS = ("mother+", "paper")

MAX_ALTERNATIVES = 5


def direction_evidence(ev: PairEvidence, regime: str, cues: str = "kurtosis+norm",
                       norm_sign: float = 1.0) -> np.ndarray:
    """E[p, c] in [-2, 2]: evidence that p is the parent of c rather than the reverse (antisymmetric).

    Sum of the enabled cues, each in [-1, 1]:

    - ``kurtosis``: the magnitude-weighted vote of per-layer kurtosis changes, read under the regime
      (specialization: falling kurtosis points parent -> child; generalization: rising);
    - ``norm``: norm growth: a fine-tune adds a nearly orthogonal update, so the child's squared norm
      exceeds the parent's by about the squared distance (:attr:`PairEvidence.norm_growth`).
      ``norm_sign = -1`` reads it the other way, for trees trained with enough weight decay that
      norms shrink from parent to child.
    """
    sign = -1.0 if regime == "specialization" else 1.0
    e = np.zeros_like(ev.distance)
    if "kurtosis" in cues:
        e = e + sign * ev.kurtosis_trend
    if "norm" in cues:
        e = e + norm_sign * ev.norm_growth
    return e


def direction_penalty(ev: PairEvidence, regime: str, method: str = "mother+",
                      cues: str = "kurtosis+norm", norm_sign: float = 1.0) -> np.ndarray:
    """K[p, c] in [0, 1]: how much the edge p -> c goes against the direction evidence.

    ``"paper"``: 1 when the summed kurtosis change over shared layers has the wrong sign for the
    regime (specialization expects kurtosis to fall, generalization to rise), else 0.
    ``"mother+"``: (1 - E / n_cues) / 2 for the evidence E of :func:`direction_evidence`: 0 when all
    cues agree with p -> c, 1 when all point back.
    """
    if regime not in ("specialization", "generalization"):
        raise InputError(f"Unknown regime {regime!r}: use one of {', '.join(REGIMES)}.")
    if method == "paper":
        rising = regime == "generalization"
        return (ev.kurtosis_delta < 0 if rising else ev.kurtosis_delta > 0).astype(np.float64)
    n_cues = max(1, sum(c in cues for c in ("kurtosis", "norm")))
    return (1.0 - direction_evidence(ev, regime, cues, norm_sign) / n_cues) / 2.0


def cost_matrix(distance: np.ndarray, penalty: np.ndarray, lambda_: float) -> np.ndarray:
    """M = D + lambda * mean(D) * K with an infinite diagonal (method.md, "Cost and tree")."""
    n = distance.shape[0]
    off = ~np.eye(n, dtype=bool)
    finite = off & np.isfinite(distance)
    mean_d = float(distance[finite].mean()) if finite.any() else 0.0
    m = distance + lambda_ * mean_d * penalty
    m[~off] = np.inf
    return m


def recover(
    stats: WeightStatistics,
    settings: RecoverySettings = RecoverySettings(),
    constraints: Constraints = Constraints(),
) -> Recovery:
    """Recover the Model Graph of the models in ``stats``.

    Parameters
    ----------
    stats : WeightStatistics
        Output of :func:`mother_core.compute_statistics` (or loaded from disk).
    settings : RecoverySettings
        Regime, lambda, layer selection, number of trees (None: found from the data).
    constraints : Constraints
        Forced/forbidden edges and fixed roots, by model id.

    Returns
    -------
    Recovery
    """
    if stats.n_models < 2:
        raise TooFewModelsError("Recovery needs at least two models.")
    if settings.regime not in REGIMES:
        raise InputError(f"Unknown regime {settings.regime!r}: use one of {', '.join(REGIMES)}.")
    if settings.method not in METHODS:
        raise InputError(f"Unknown method {settings.method!r}: use one of {', '.join(METHODS)}.")
    if not settings.lambda_ >= 0:
        raise InputError(f"lambda must be >= 0, got {settings.lambda_}.")
    mask = select_layers(stats, settings.layers, settings.name_pattern)
    ev = pair_evidence(stats, mask, drop_reinitialised=settings.method != "paper")
    labels, threshold = split_into_trees(ev.relative, settings.n_trees)
    detectors = _detectors(settings)
    findings = detect_relations(stats, labels, detectors) if detectors else TypedFindings()
    _, _, leaves = solver_constraints(list(findings.links), set())
    typed_children = {link.child for link in findings.links}

    n = stats.n_models
    cost = np.full((n, n), np.inf)
    evidence = np.zeros((n, n))
    regimes: dict[int, tuple[str, float]] = {}
    rank_used: dict[int, bool] = {}
    norm_signs: dict[int, float] = {}
    squared = np.full((n, n), np.nan)  # for the refinement, within trees it applies to
    for t in range(labels.max() + 1):
        members = np.flatnonzero(labels == t)
        if len(members) == 1:
            regimes[t] = ("specialization" if settings.regime == "auto" else settings.regime, 0.5)
            continue
        sub = np.ix_(members, members)
        placement = _placement_distance(stats, mask, ev, members, settings, typed_children)
        rank_used[t] = placement is not None
        regime, conf, sub_cost, norm_sign = _choose_regime(ev, members, settings, placement)
        regimes[t] = (regime, conf)
        norm_signs[t] = norm_sign
        cost[sub] = block_leaves(sub_cost, {k for k, g in enumerate(members) if g in leaves})
        evidence[sub] = direction_evidence(ev, regime, settings.direction_cues, norm_sign)[sub]
        if settings.refine and settings.method != "paper" and placement is None and 3 <= len(members) <= MAX_TREE:
            s = squared_distances(ev.rms, stats.numel[ev.layer_index], members)
            if s is not None:
                squared[sub] = s
    recovery = Recovery(
        models=[], edges=[], trees=[], settings=settings, constraints=constraints,
        problems=[{"path": p.path, "message": p.message} for p in stats.problems]
        + [{"path": stats.models[i].path, "message": msg} for i, msg in findings.notes],
        layers=[LayerInfo(stats.tensors[i].name, stats.tensors[i].shape, stats.tensors[i].kind)
                for i in ev.layer_index],
        layer_kurtosis=stats.kurtosis[:, ev.layer_index].copy(),
        distance_matrix=ev.distance.copy(),
        cost_matrix=cost,
        extra={
            "threshold": threshold,
            "relative_distance": ev.relative.tolist(),
            "tree_of": labels.tolist(),
            "regimes": {str(k): list(v) for k, v in regimes.items()},
            "rank_distance_used": {str(k): v for k, v in rank_used.items()},
            "norm_sign": {str(k): v for k, v in norm_signs.items()},
            "votes_up": ev.votes_up.tolist(),
            "direction_evidence": evidence.tolist(),
            "shared_layers": ev.shared.tolist(),
            "model_paths": [m.path for m in stats.models],
            "model_formats": [m.format for m in stats.models],
            "declared_parents": [m.declared_parent for m in stats.models],
            "n_params": [int((stats.numel * stats.present[i]).sum()) for i in range(n)],
            **({"squared_distance": squared} if np.isfinite(squared).any() else {}),
            "typed_links": [link.to_dict() for link in findings.links],
        },
    )
    # Per-layer distances go into each edge; the full (L, N, N) tensor stays out of the result.
    solved = _solve(recovery, constraints, ids=stats.model_ids, layer_rms=ev.rms)
    return apply_relations(_label_forest_edges(solved, stats, detectors))


def _detectors(settings: RecoverySettings) -> tuple[str, ...]:
    """The relation detectors ``settings.relations`` names (none under the paper's method)."""
    if settings.method == "paper" or settings.relations == "none":
        return ()
    if settings.relations == "all":
        return DETECTORS
    chosen = tuple(d.strip() for d in settings.relations.split(",") if d.strip())
    unknown = [d for d in chosen if d not in DETECTORS]
    if unknown:
        raise InputError(f"Unknown relation detector {unknown[0]!r}: use all, none or a list of "
                         f"{', '.join(DETECTORS)}.")
    return chosen


def _label_forest_edges(recovery: Recovery, stats: WeightStatistics, detectors: tuple[str, ...]) -> Recovery:
    """Type the forest's own edges (lora, prune, distill, finetune) from the weights; stored so that
    a re-solve keeps them."""
    if not detectors:
        return recovery
    pl = pair_layers(stats)
    index = {m: i for i, m in enumerate(stats.model_ids)}
    linked = {link.child for link in links_of(recovery)}
    labels = {}
    for e in recovery.edges:
        p, c = index[e.parent], index[e.child]
        if c in linked:
            continue
        rel, detail, conf, _ = label_edge(stats, pl, p, c, detectors)
        labels[f"{e.parent}\t{e.child}"] = [rel.value, detail, None if math.isnan(conf) else conf]
    recovery.extra["edge_labels"] = labels
    return recovery


def resolve(recovery: Recovery, constraints: Constraints) -> Recovery:
    """Re-solve ``recovery`` under new constraints from its cached matrices (no weights are read).

    Forcing an edge between two trees joins them. Raises :class:`ConstraintError` if the
    constraints contradict each other.
    """
    if recovery.cost_matrix is None or "tree_of" not in recovery.extra:
        raise InputError("This result has no cost matrix to re-solve from; run recovery again.")
    edited = _edited_locally(recovery, constraints)
    if edited is not None:
        return apply_relations(edited)
    return apply_relations(_solve(recovery, constraints, ids=recovery.model_ids, layer_rms=None))


def use_parent(recovery: Recovery, child: str, parent: str) -> Recovery:
    """``recovery`` with ``child`` moved under ``parent`` (its subtree with it), everything else kept.

    The engine call behind "use this parent" for a ranked alternative: the edge is forced (replacing
    any earlier forced parent of ``child``) and re-solved locally (:mod:`.corrections`).
    """
    c = recovery.constraints
    forced = tuple(e for e in c.forced if e[1] != child) + ((parent, child),)
    return resolve(recovery, Constraints(forced=forced, forbidden=c.forbidden, roots=c.roots))


def _edited_locally(recovery: Recovery, constraints: Constraints) -> Recovery | None:
    """Constraints that only add forced/forbidden edges to the result's own: edit its tree locally
    (:func:`.corrections.local_edit`); None when that cannot honour them."""
    before = recovery.constraints
    replaced = {c for _, c in constraints.forced}
    kept_forced = tuple(e for e in before.forced if e[1] not in replaced or e in constraints.forced)
    if not is_extension(replace(before, forced=kept_forced), constraints) or constraints.roots:
        return None
    ids = recovery.model_ids
    index = {m: i for i, m in enumerate(ids)}
    if any(m not in index for e in constraints.forced + constraints.forbidden for m in e):
        return None  # the global path names the unknown model
    parent = np.full(len(ids), -1)
    for e in recovery.edges:
        if parent[index[e.child]] < 0:  # a merge's first edge is its forest edge
            parent[index[e.child]] = index[e.parent]
    labels = np.array(recovery.extra["tree_of"], dtype=int)
    forced = [(index[p], index[c]) for p, c in constraints.forced]
    forbidden = [(index[p], index[c]) for p, c in constraints.forbidden]
    cost = recovery.cost_matrix.copy()
    dist = recovery.distance_matrix
    for p, c in forced:
        if not np.isfinite(cost[p, c]):  # across trees: priced like _solve does
            cost[p, c] = dist[p, c] if np.isfinite(dist[p, c]) else 1.0
    edited = local_edit(parent, labels, cost, forced, forbidden)
    if edited is None:
        return None
    return _build(recovery, ids, edited[0], edited[1], cost, constraints, set(forced), None)


def _placement_distance(stats: WeightStatistics, mask: np.ndarray, ev: PairEvidence, members: np.ndarray,
                        settings: RecoverySettings, typed: set[int] = frozenset()) -> np.ndarray | None:
    """The rank distance of one tree when its models differ at low rank (merged LoRA), else None.

    method.md's l_LoRA: parent -> child differ by B @ A of rank r, siblings by about r1 + r2 and
    grandparents likewise, so the rank of the difference places edges where a Frobenius distance
    confuses siblings with parents. Candidates are each model's nearest relatives by distance; other
    pairs cost more than any candidate. Ties are broken by the (normalised) distance. Whether the tree
    is low-rank is judged without its typed children (``typed``: copies differ at rank 0, merges
    anyhow), which keep the parents their detectors gave them.
    """
    if settings.use_rank == "never" or settings.method == "paper":
        return None
    core = np.array([g for g in members if g not in typed], dtype=int)
    if settings.use_rank != "always" and len(core) < len(members):
        judged = rank_evidence(stats, mask, ev.distance, core) if len(core) >= 2 else None
        if judged is None or not judged.low_rank:
            return None
    found = rank_evidence(stats, mask, ev.distance, members)
    if found is None or not (found.low_rank or settings.use_rank == "always"):
        return None
    d = ev.distance[np.ix_(members, members)]
    finite = np.isfinite(d) & (d > 0)
    scale = float(d[finite].max()) if finite.any() else 1.0
    tie_break = 1e-3 * np.where(np.isfinite(d), d, scale) / scale
    return np.where(np.isnan(found.rank), 2.0, found.rank) + tie_break


def _choose_regime(ev: PairEvidence, members: np.ndarray, settings: RecoverySettings,
                   placement: np.ndarray | None = None) -> tuple[str, float, np.ndarray, float]:
    """Solve one tree under each reading of its direction cues and keep the cheapest (``auto``).

    Readings: the kurtosis regime (specialization or generalization) and, with ``norm_direction``
    ``"auto"``, the sign of the norm cue (growth, or shrinkage under strong weight decay). A family
    tree branches: a tree whose cues move monotonically away from one root is cheap under one
    reading only. A chain reads equally well forwards and backwards; ties keep the prior
    (specialization, growth) with confidence 0.5. Confidence grows with the difference in direction
    penalty between the best and the next reading, in units of edges: sigmoid(2 * difference).

    Returns
    -------
    regime, confidence, cost matrix, norm sign
    """
    sub = np.ix_(members, members)
    d = ev.distance[sub] if placement is None else placement
    lam = settings.lambda_
    regimes = ["specialization", "generalization"] if settings.regime == "auto" else [settings.regime]
    free_norm = (settings.norm_direction == "auto" and "norm" in settings.direction_cues
                 and settings.method != "paper")
    signs = [1.0, -1.0] if free_norm else [1.0]
    options = [(r, sgn) for sgn in signs for r in regimes]  # in order of prior preference
    solved = []
    for rank_of_prior, (regime, sgn) in enumerate(options):
        k = direction_penalty(ev, regime, settings.method, settings.direction_cues, sgn)[sub]
        m = cost_matrix(d, k, lam)
        parent = minimum_spanning_arborescence(m)
        penalty = float(sum(k[parent[c], c] for c in range(len(parent)) if parent[c] >= 0))
        solved.append((tree_cost(m, parent), rank_of_prior, penalty, regime, m, sgn))
    best = min(solved, key=lambda x: x[0])
    tied = [x for x in solved if abs(x[0] - best[0]) <= 1e-12 * max(abs(best[0]), 1e-300)]
    chosen = min(tied, key=lambda x: x[1])  # among equally good readings, the prior's
    if len(solved) == 1:
        return chosen[3], 1.0, chosen[4], chosen[5]
    others = [x[2] for x in solved if x is not chosen and x not in tied]
    margin = (min(others) - chosen[2]) if others and len(tied) == 1 else 0.0
    return chosen[3], 1.0 / (1.0 + math.exp(-2.0 * margin)), chosen[4], chosen[5]


def _solve(recovery: Recovery, constraints: Constraints, ids: list[str], layer_rms: np.ndarray | None) -> Recovery:
    index = {m: i for i, m in enumerate(ids)}
    n = len(ids)

    def idx(model_id: str) -> int:
        if model_id not in index:
            raise ConstraintError(f"Constraint names unknown model {model_id!r}.")
        return index[model_id]

    user_forced = [(idx(p), idx(c)) for p, c in constraints.forced]
    forbidden = [(idx(p), idx(c)) for p, c in constraints.forbidden]
    fixed_roots = [idx(r) for r in constraints.roots]
    # Typed relations (decided before the forest, :mod:`.typed`) yield to the user's constraints.
    typed_forced, typed_forbidden, leaves = solver_constraints(
        links_of(recovery), {c for _, c in user_forced} | set(fixed_roots))
    forced = user_forced + [e for e in typed_forced if e not in forbidden]
    forbidden = forbidden + [e for e in typed_forbidden if e not in user_forced]
    labels = np.array(recovery.extra["tree_of"], dtype=int)
    squared = recovery.extra.get("squared_distance") if recovery.settings.refine else None
    squared = None if squared is None else np.asarray(squared, dtype=np.float64)
    cost = recovery.cost_matrix.copy()
    dist = recovery.distance_matrix
    # Forcing an edge across trees joins the two trees (union-find over tree labels).
    for p, c in forced:
        if labels[p] != labels[c]:
            old, new = labels[c], labels[p]
            labels[labels == old] = new
            if not np.isfinite(cost[p, c]):
                cost[p, c] = dist[p, c] if np.isfinite(dist[p, c]) else 1.0
    parent = np.full(n, -1)
    for t in np.unique(labels):
        members = np.flatnonzero(labels == t)
        if len(members) == 1:
            if any(c == members[0] for _, c in forced):
                raise ConstraintError(f"Cannot force a parent for {ids[members[0]]}: nothing links it.")
            continue
        local = {g: k for k, g in enumerate(members)}
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
            named = re.sub(r"\b\d+\b", lambda m: ids[members[int(m.group())]]
                           if int(m.group()) < len(members) else m.group(), str(e))
            raise ConstraintError(named + " Remove or change one of these constraints.") from e
        if squared is not None:
            sol = _refined_core(sol, members, squared, sub, forced, forbidden, fixed_roots, leaves)
        for k, pk in enumerate(sol):
            parent[members[k]] = members[pk] if pk >= 0 else -1
    return _build(recovery, ids, parent, labels, cost, constraints, set(user_forced), layer_rms)


def _refined_core(sol: np.ndarray, members: np.ndarray, squared: np.ndarray, sub: np.ndarray,
                  forced: list[tuple[int, int]], forbidden: list[tuple[int, int]], fixed_roots: list[int],
                  leaves: set[int]) -> np.ndarray:
    """:func:`_refined` on the tree without its typed leaves (copies, quantized models, adapters keep
    the parent their detector gave them; the refinement moves the fine-tune forest only)."""
    core = np.array([k for k, g in enumerate(members) if g not in leaves], dtype=int)
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


def _build(recovery: Recovery, ids: list[str], parent: np.ndarray, labels: np.ndarray, cost: np.ndarray,
           constraints: Constraints, forced: set[tuple[int, int]], layer_rms: np.ndarray | None) -> Recovery:
    extra = recovery.extra
    n = len(ids)
    dist = recovery.distance_matrix
    rel = np.array(extra["relative_distance"], dtype=np.float64)
    votes_up = np.array(extra["votes_up"])
    shared = np.array(extra["shared_layers"])
    threshold = float(extra["threshold"])
    regimes = {int(k): (v[0], float(v[1])) for k, v in extra["regimes"].items()}
    evidence = np.array(extra["direction_evidence"], dtype=np.float64)
    method = recovery.settings.method
    lk = recovery.layer_kurtosis
    ku_model = np.nansum(lk, axis=1) if lk is not None else np.zeros(n)

    # Descendants, to rule out alternative parents that would create a cycle.
    children: dict[int, list[int]] = {i: [] for i in range(n)}
    for c, p in enumerate(parent):
        if p >= 0:
            children[int(p)].append(c)

    def descendants(i: int) -> set[int]:
        out, stack = set(), [i]
        while stack:
            for ch in children[stack.pop()]:
                if ch not in out:
                    out.add(ch)
                    stack.append(ch)
        return out

    old_edges = {(e.parent, e.child): e for e in recovery.edges}
    edges: list[Edge] = []
    nodes: list[ModelNode] = []
    for c in range(n):
        members = np.flatnonzero(labels == labels[c])
        p = int(parent[c])
        # A child's alternatives exclude its descendants (a cycle); a root's are every other member
        # of its tree: re-rooting there is what choosing one would mean.
        banned = {c} if p < 0 else descendants(c) | {c}
        cand = [q for q in members if q not in banned and np.isfinite(cost[q, c])]
        cand.sort(key=lambda q: cost[q, c])
        alternatives = tuple(Alternative(ids[q], float(cost[q, c]), float(dist[q, c]))
                             for q in cand if q != p)[:MAX_ALTERNATIVES]
        if p >= 0:
            alt_cost = alternatives[0].cost if alternatives else math.inf
            regime, regime_conf = regimes.get(int(labels[c]), ("specialization", 0.5))
            up = int(votes_up[p, c])
            total = int(shared[p, c])
            forward = (total - up) if regime == "specialization" else up
            if method == "paper":
                p_dir = direction_confidence(forward, total, regime_conf)
            else:
                p_dir = evidence_confidence(float(evidence[p, c]))
            parts = ConfidenceParts(
                placement_confidence(float(cost[p, c]), alt_cost, float(rel[p, c]), threshold), p_dir)
            if layer_rms is not None:
                layer_distance = tuple(float(x) for x in layer_rms[:, p, c])
            elif (ids[p], ids[c]) in old_edges:
                layer_distance = old_edges[(ids[p], ids[c])].layer_distance
            else:
                layer_distance = ()
            edges.append(Edge(
                parent=ids[p], child=ids[c], distance=float(dist[p, c]),
                confidence=parts.combined, placement_confidence=parts.placement,
                direction_confidence=parts.direction,
                kurtosis_parent=float(ku_model[p]), kurtosis_child=float(ku_model[c]),
                layers_voting_forward=forward, layers_voting_backward=total - forward,
                constrained=(p, c) in forced, alternatives=alternatives, layer_distance=layer_distance,
            ))
        nodes.append(ModelNode(
            id=ids[c], path=extra["model_paths"][c], tree=int(labels[c]), kurtosis=float(ku_model[c]),
            is_root=p < 0, declared_parent=extra["declared_parents"][c], format=extra["model_formats"][c],
            n_params=int(extra["n_params"][c]), alternatives=alternatives,
        ))
    trees = []
    for t in np.unique(labels):
        members = np.flatnonzero(labels == t)
        roots = [ids[i] for i in members if parent[i] < 0]
        regime, conf = regimes.get(int(t), ("specialization", 0.5))
        trees.append(TreeInfo(int(t), tuple(ids[i] for i in members), roots[0] if roots else "", regime, conf))
    new_extra = dict(extra)
    new_extra["tree_of"] = labels.tolist()
    return replace(recovery, models=nodes, edges=edges, trees=trees, constraints=constraints,
                   cost_matrix=cost, extra=new_extra)
