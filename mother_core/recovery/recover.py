"""From weight statistics to a :class:`Recovery`: trees, regimes, arborescences, confidence.

Method (docs/METHOD.md; Horwitz, Shul & Hoshen 2024, "On the Origin of Llamas", sec. 4), with our changes
marked (+); ``RecoverySettings(method="paper")`` turns every (+) off for comparison:

1. Distances: l_FT(i, j) = mean over shared selected layers of RMS(W_i - W_j) (paper, v2), over all
   weight matrices (+), setting aside per pair the layers that were re-initialised (+, a new head).
   In a tree whose models differ at low rank (merged LoRA) the paper's l_LoRA places edges instead:
   the rank of the differences, read from streamed skeletons (+, automatic, ``use_rank``).
2. Trees: split by the median relative distance without being told how many (+, :mod:`.forest`).
3. Direction: K[p, c] in [0, 1] from the evidence that c descends from p: the magnitude-weighted
   per-layer kurtosis vote read under the tree's regime, plus norm growth (+): a fine-tune adds a
   nearly orthogonal update, so ||child||^2 ~ ||parent||^2 + ||child - parent||^2, plus scale (+): the
   child is the parent rescaled by one factor in every layer (1 without weight decay) plus updates
   orthogonal to it. The paper's K is the sign of the summed kurtosis change alone.
4. Cost M = D + lambda * mean(D) * K and a minimum spanning arborescence per tree (lambda = 0.3).
5. Regime ``auto`` (+): solve the tree under both regimes and keep the cheaper; a tree whose kurtosis
   moves monotonically away from some root is cheap under one regime only.
6. Refinement (+): attachments move while squared distances add up better along the tree's paths
   (fine-tuning steps add nearly orthogonal updates, :mod:`.additive`); the root is then the one the
   direction cues prefer. Not in trees placed by the rank distance.
6b. Near-tied parents (+): in trees whose updates read platykurtic (Adam-like), a child whose candidate
   parents the layers cannot tell apart takes the one whose difference to it is the most platykurtic
   (:mod:`.ties`): what tells a star of siblings that share a drift from a chain.
7. Confidence per edge (+): placement from how consistently the layers prefer the chosen parent over
   the best alternative (:func:`layer_margins`), direction from the tree's reading and the edge's
   evidence (:mod:`.confidence`; docs/METHOD.md, "Confidence").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Set as AbstractSet
from dataclasses import replace

import numpy as np

from mother_core.errors import ConstraintError, InputError, TooFewModelsError
from mother_core.recovery.additive import MAX_TREE, squared_distances
from mother_core.recovery.twins import ordered_cost, twin_groups
from mother_core.recovery.arborescence import minimum_spanning_arborescence, tree_cost
from mother_core.recovery.chain_ties import chain_ties_capped
from mother_core.recovery.corrections import is_extension, local_edit
from mother_core.recovery.direction import Reading, architecture_key, choose_readings
from mother_core.recovery.features import (
    PairEvidence,
    spectral_trends,
    subspace_pairs,
    pair_evidence,
    rank_evidence,
    select_layers,
)
from mother_core.recovery.forest import split_into_trees
from mother_core.recovery.confidence import (
    LAYER_CANDIDATES, capped, layer_effect, rank_placed, related_confidence, sole_child_edges, tree_radial_share,
    within_calibration,
)
from mother_core.recovery.problem import (
    LayerMargins,
    edge_label_key,
    ModelFacts,
    RecoveryProblem,
    TieKurtosis,
    TieSpectrum,
    TreeReading,
)
from mother_core.recovery.result import Constraints, LayerInfo, Recovery, RecoverySettings
from mother_core.recovery.solve import assemble, model_indices, solve
from mother_core.recovery.ties import TieChoice, tree_tie_kurtosis, tree_tie_spectra
from mother_core.settings import METHODS, REGIMES
from mother_core.recovery.typed import (
    apply_relations,
    block_leaves,
    join_linked_trees,
    links_of,
    lora_without_its_update,
    refinement_core,
    solver_constraints,
)
from mother_core.relations.detect import DETECTORS, OPTIONAL_DETECTORS, detect_relations, label_edge
from mother_core.relations.evidence import TypedFindings, pair_layers
from mother_core.relations.prune import grown_vocabulary, narrow_to_wide
from mother_core.relations.stack import LayerReads, shallower_than, stacked, unrelated_by_name
from mother_core.relations.untrained import trained_to_untrained
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: The effective-rank cue's vote is computed for display on sets up to this size (N x N votes from the
#: subspace cue's SVDs), and always when the cue is enabled.
ERANK_SHOWN_UP_TO = 400


#: Every direction cue :func:`direction_evidence` knows.
CUES = ("kurtosis", "norm", "erank", "scale", "subspace")


def direction_evidence(ev: PairEvidence, regime: str, cues: str = "kurtosis+norm+scale+subspace",
                       norm_sign: float = 1.0) -> np.ndarray:
    """E[p, c] in [-n, n] for n enabled cues: evidence that p is the parent of c rather than the reverse
    (antisymmetric).

    Sum of the enabled cues, each in [-1, 1]:

    - ``kurtosis``: the magnitude-weighted vote of per-layer kurtosis changes, read under the regime
      (specialization: falling kurtosis points parent -> child; generalization: rising);
    - ``norm``: norm growth: a fine-tune adds a nearly orthogonal update, so the child's squared norm
      exceeds the parent's by about the squared distance (:attr:`PairEvidence.norm_growth`).
      ``norm_sign = -1`` reads it the other way, for trees trained with enough weight decay that
      norms shrink from parent to child;
    - ``scale``: the child is the parent rescaled by one factor in every layer plus updates
      orthogonal to it (:func:`.features.scale_fit`): growth (factor 1) and decoupled weight decay
      (factor < 1) alike, so it has no sign to read and is the same under every reading;
    - ``subspace``: the update W_c - W_p lies more in the child's own top singular directions than in
      the parent's (:func:`.features.subspace_trend`); sign-free like ``scale``;
    - ``erank``: the effective rank rises from parent to child (off by default; on the fitting
      collections it falls along 70% of the true edges: benchmarks/RESULTS.md, issue 12).
    """
    sign = -1.0 if regime == "specialization" else 1.0
    e = np.zeros_like(ev.distance)
    if "kurtosis" in cues:
        e = e + sign * ev.kurtosis_trend
    if "norm" in cues:
        e = e + norm_sign * ev.norm_growth
    if "erank" in cues and ev.effective_rank_trend is not None:
        e = e + ev.effective_rank_trend
    if "scale" in cues and ev.scale_fit is not None:
        e = e + ev.scale_fit
    if "subspace" in cues and ev.subspace_trend is not None:
        e = e + ev.subspace_trend
    return e


def cue_votes(ev: PairEvidence, regime: str, norm_sign: float) -> dict[str, np.ndarray]:
    """Each cue's vote in [-1, 1] for p -> c (positive: p is the parent), read under the tree's
    reading, whether or not the cue is enabled: what the Edge page shows beside the fused evidence."""
    votes = {"kurtosis": (-1.0 if regime == "specialization" else 1.0) * ev.kurtosis_trend,
             "norm": norm_sign * ev.norm_growth}
    if ev.effective_rank_trend is not None:
        votes["effective_rank"] = ev.effective_rank_trend
    if ev.scale_fit is not None:
        votes["scale"] = ev.scale_fit
    if ev.subspace_trend is not None:
        votes["subspace"] = ev.subspace_trend
    return votes


def direction_penalty(ev: PairEvidence, regime: str, method: str = "mother+",
                      cues: str = "kurtosis+norm+scale+subspace", norm_sign: float = 1.0) -> np.ndarray:
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
    n_cues = max(1, sum(c in cues for c in CUES))
    return (1.0 - direction_evidence(ev, regime, cues, norm_sign) / n_cues) / 2.0


#: The cost matrix of a tree read on the prior (:func:`prior_cues`), beside its readings' (regime, sign).
PRIOR_KEY = ("prior", 1.0)


def prior_cues(cues: str) -> str:
    """The cues a tree uses when nothing tells its reading (``basis="prior"``): without the kurtosis
    trend, whose sign is the regime nobody could tell (it points the true way on about half of the
    fitting collections' edges under one global regime, norm growth on 82%: benchmarks/RESULTS.md,
    "Generalisation"). A base with one child then points the way its norm grows, as when it chose
    whichever regime agreed with that (issue 12: the prior's kurtosis sign reversed fit-mixed's
    families). Unchanged when no other cue is left.
    """
    kept = "+".join(c for c in cues.split("+") if c and c != "kurtosis")
    return kept if kept else cues


def reading_cues(cues: str) -> str:
    """The cues a tree's reading (regime, norm sign) is chosen on: those with a sign to read. A
    sign-free cue such as ``scale`` (:func:`.features.scale_fit`) would break the tie between a chain
    and its mirror by its own vote alone, which a chain of continued pre-training reverses (fitting
    collections: fit-vit-continued 2/3 -> 0/3 directed); it orients edges under the reading chosen.
    Unchanged when no cue with a sign is left."""
    kept = "+".join(c for c in cues.split("+") if c in ("kurtosis", "norm"))
    return kept if kept else cues


def cost_matrix(distance: np.ndarray, penalty: np.ndarray, lambda_: float) -> np.ndarray:
    """M = D + lambda * mean(D) * K with an infinite diagonal (docs/METHOD.md, "Cost and tree")."""
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
    from mother_core.relations.lowrank import remembered_rescales
    from mother_core.stats.skeleton import remembered_differences  # torch: imported when first needed

    # Skeleton differences are measured for the rank cue and again for the edges' labels, and a pair's
    # row-scale refits for a QLoRA, an edge label and the tie gate: once is enough.
    with remembered_differences(), remembered_rescales():
        try:
            return _recover(stats, settings, constraints)
        except ConstraintError as e:
            if constraints != Constraints() or settings.relations == "none":
                raise  # the user's constraints contradict each other: the message says which
            # The typed links left a tree that no spanning tree honours. No such case is known since
            # typed.join_linked_trees (profile C seed 65 was one). Solve the fine-tune forest without
            # the relations rather than fail the whole set, and say so.
            fallback = _recover(stats, replace(settings, relations="none"), constraints)
            note = {"path": "(the whole set)",
                    "message": f"The typed relations could not be joined into one forest ({e}); the tree is "
                               "recovered without them (relations: none), so every edge reads as a fine-tune. "
                               "Please report this set."}
            return replace(fallback, problems=list(fallback.problems) + [note])


def _recover(stats: WeightStatistics, settings: RecoverySettings, constraints: Constraints) -> Recovery:
    """:func:`recover`'s body: check the settings, split into trees and find the typed relations, read
    the direction cues, build and read each tree's cost, forbid impossible edges, solve."""
    _check_settings(stats, settings)
    mask = select_layers(stats, settings.layers, settings.name_pattern)
    ev = pair_evidence(stats, mask, drop_reinitialised=settings.method != "paper")
    detectors = _detectors(settings)
    labels, threshold, findings = _split_and_type(stats, settings, ev, detectors)
    if settings.method != "paper":
        # The subspace cue within trees only, each model's nearest tree-mates (linear cost); the
        # effective-rank cue from the same SVDs, shown on sets up to ERANK_SHOWN_UP_TO models.
        spectral = spectral_trends(stats, mask, subspace_pairs(ev.distance, labels), effective_rank=(
            "erank" in settings.direction_cues or stats.n_models <= ERANK_SHOWN_UP_TO))
        ev = replace(ev, effective_rank_trend=spectral.effective_rank, subspace_trend=spectral.subspace)
    _, _, leaves = solver_constraints(list(findings.links), set())
    # A merged LoRA's link (relations/detect.lora_links) decides its own parent only: it stays a member
    # of the fine-tune skeleton for placing the others (placement distance, near ties, radial share), as
    # it can be a fine-tune's parent or a merge's input. Left out as other typed children are, it moved
    # undetected merges with a LoRA among their inputs from the LoRA to another input (profile C seed 13,
    # reachability 0.843 -> 0.829). The refinement leaves it out through ``findings.partial``. A pruned
    # child's link (relations/prune.py, relations/depth.py) likewise: it can parent its own fine-tunes (the
    # refinement leaves it out by its narrower or shallower layout, :func:`.typed.refinement_core`).
    typed_children = {link.child for link in findings.links
                      if link.relation not in (Relation.LORA, Relation.PRUNE, Relation.DISTILL)}

    n = stats.n_models
    cost = np.full((n, n), np.inf)
    evidence = np.zeros((n, n))
    readings: dict[int, TreeReading] = {}
    squared = np.full((n, n), np.nan)  # for the refinement, within trees it applies to
    solved: dict[int, list[Reading]] = {}
    matrices: dict[int, dict[tuple[str, float], np.ndarray]] = {}
    scales: dict[int, float] = {}
    groups: dict[int, bytes] = {}
    rank_used: dict[int, bool] = {}
    for t in range(labels.max() + 1):
        members = np.flatnonzero(labels == t)
        if len(members) == 1:
            readings[t] = TreeReading("specialization" if settings.regime == "auto" else settings.regime, 0.5)
            continue
        sub = np.ix_(members, members)
        placement = _placement_distance(stats, mask, ev, members, settings, typed_children)
        rank_used[t] = placement is not None
        solved[t], matrices[t], scales[t] = _solve_readings(ev, members, settings, placement)
        groups[t] = architecture_key(stats.present[members[0]])
        if settings.refine and settings.method != "paper" and placement is None and 3 <= len(members) <= MAX_TREE:
            core = refinement_core(stats, members, typed_children, findings.partial)
            s = squared_distances(ev.rms, stats.numel[ev.layer_index], core) if len(core) >= 3 else None
            if s is not None:
                squared[np.ix_(core, core)] = s
    # Each tree's reading: its own evidence, its architecture's pooled evidence, norm growth, or the prior.
    votes: dict[str, np.ndarray] = {}
    for t, chosen in choose_readings(solved, scales, groups).items():
        members = np.flatnonzero(labels == t)
        sub = np.ix_(members, members)
        conf, note, beyond = chosen.confidence, chosen.note, False
        if chosen.basis != "fixed":  # a reading the user set is the user's
            untyped = np.array([g for g in members if g not in typed_children])
            share = tree_radial_share(stats.norm, stats.sq_dist, ev.layer_index, ev.distance, untyped)
            conf, note, beyond = within_calibration(conf, note, share)
        readings[t] = TreeReading(chosen.regime, conf, rank_distance_used=rank_used[t],
                                  norm_sign=chosen.norm_sign, basis=chosen.basis, note=note, beyond_domain=beyond)
        on_prior = chosen.basis == "prior" and PRIOR_KEY in matrices[t]
        cost[sub] = block_leaves(matrices[t][PRIOR_KEY if on_prior else (chosen.regime, chosen.norm_sign)],
                                 {k for k, g in enumerate(members) if g in leaves})
        cues = prior_cues(settings.direction_cues) if on_prior else settings.direction_cues
        evidence[sub] = direction_evidence(ev, chosen.regime, cues, chosen.norm_sign)[sub]
        for name, vote in cue_votes(ev, chosen.regime, chosen.norm_sign).items():
            votes.setdefault(name, np.zeros((n, n)))[sub] = vote[sub]
    _forbid_impossible_edges(cost, stats, settings, ev, labels, findings, detectors)
    # Models identical on every selected layer (a BitFit child and its parent) tie on every cue: ordered by the
    # tensors that differ, never by input order (:mod:`.twins`).
    twins = twin_groups(stats, ev.layer_index, labels, typed_children) if settings.method != "paper" else []
    cost = ordered_cost(cost, labels, twins)
    layer_kurtosis = stats.kurtosis[:, ev.layer_index].copy()
    margins = {} if settings.method == "paper" else layer_margins(ev.rms, cost)
    ties, spectra = _near_ties(stats, settings, ev, labels, typed_children, rank_used, margins)
    problem = RecoveryProblem(
        ids=tuple(stats.model_ids), distance=ev.distance.copy(), relative=ev.relative, cost=cost,
        tree_of=labels, threshold=float(threshold), evidence=evidence, votes_up=ev.votes_up, shared=ev.shared,
        kurtosis=np.nansum(layer_kurtosis, axis=1), readings=readings,
        models=tuple(ModelFacts(m.path, m.format, m.declared_parent, int((stats.numel * stats.present[i]).sum()))
                     for i, m in enumerate(stats.models)),
        squared=squared if np.isfinite(squared).any() else None,
        method=settings.method, refine=settings.refine, cue_votes=votes,
        links=tuple(link.to_dict() for link in findings.links),
        layer_margins=margins, tie_kurtosis=ties, twins=tuple(twins), tie_spectra=spectra,
    )
    base = Recovery(
        models=[], edges=[], trees=[], settings=settings, constraints=constraints,
        problems=[{"path": p.path, "message": p.message} for p in stats.problems]
        + [{"path": stats.models[i].path, "message": msg} for i, msg in findings.notes],
        layers=[LayerInfo(stats.tensors[i].name, stats.tensors[i].shape, stats.tensors[i].kind)
                for i in ev.layer_index],
        layer_kurtosis=layer_kurtosis, problem=problem,
    )
    # Per-layer distances go into each edge; the full (L, N, N) tensor stays out of the result.
    rms = ev.rms
    recovery = solve(problem, constraints, layer_distance=lambda p, c: tuple(float(x) for x in rms[:, p, c]))
    return _capped(_with_votes(_carried(base, apply_relations(_label_forest_edges(recovery, stats, detectors))), base))


def _check_settings(stats: WeightStatistics, settings: RecoverySettings) -> None:
    """Raise :class:`TooFewModelsError` or :class:`InputError` where the set or the settings cannot be recovered."""
    if stats.n_models < 2:
        raise TooFewModelsError("Recovery needs at least two models.")
    if settings.regime not in REGIMES:
        raise InputError(f"Unknown regime {settings.regime!r}: use one of {', '.join(REGIMES)}.")
    if settings.method not in METHODS:
        raise InputError(f"Unknown method {settings.method!r}: use one of {', '.join(METHODS)}.")
    if not settings.lambda_ >= 0:
        raise InputError(f"lambda must be >= 0, got {settings.lambda_}.")


def _split_and_type(stats: WeightStatistics, settings: RecoverySettings, ev: PairEvidence,
                    detectors: tuple[str, ...]) -> tuple[np.ndarray, float, TypedFindings]:
    """The trees (labels, the unrelated threshold) and the typed relations found in them.

    Typed relations come first (near-exact: copies, quantizations, adapters, merges); the forest is solved
    on the rest (:mod:`mother_core.relations.detect`, :mod:`.typed`). A stack's by-name distances or a
    source found in another tree change the split, and the relations are found again on the new one.
    """
    labels, threshold = split_into_trees(ev.relative, settings.n_trees)
    # The reruns below read the same layers again (stacks, depth-pruned children): read once per recovery.
    reads = LayerReads(stats)
    findings = detect_relations(stats, labels, detectors, reads) if detectors else TypedFindings()
    if any(stacked(link) for link in findings.links):  # split again without a stack's by-name distances
        labels, threshold = split_into_trees(unrelated_by_name(stats, list(findings.links), ev.relative),
                                             settings.n_trees)
        findings = detect_relations(stats, labels, detectors, reads)
    joined = join_linked_trees(labels, findings.links)
    if not np.array_equal(joined, labels):  # a source found in another tree: one tree (merges are found per tree)
        labels = joined
        findings = detect_relations(stats, labels, detectors, reads)
        labels = join_linked_trees(labels, findings.links)
    return labels, threshold, findings


def _forbid_impossible_edges(cost: np.ndarray, stats: WeightStatistics, settings: RecoverySettings,
                             ev: PairEvidence, labels: np.ndarray, findings: TypedFindings,
                             detectors: tuple[str, ...]) -> None:
    """Set ``cost[a, b]`` to inf (in place) where a cannot be b's parent whatever the distances say."""
    if "shape" in detectors:  # a pruned model never parents one holding the neurons it lost (relations/prune.py)
        for a, b in narrow_to_wide(stats):
            cost[a, b] = np.inf
        for a, b in grown_vocabulary(stats):  # nor does a model with added tokens parent one without them
            cost[a, b] = np.inf
    for a, b in shallower_than(stats, list(findings.links), ev.relative):  # a stack parents only models of its layout
        cost[a, b] = np.inf
    # A merged LoRA parents only models that carry its update: nearer it than its base (.typed).
    linked = {link.child for link in findings.links}
    for a, b in lora_without_its_update(list(findings.links), ev.distance, linked):
        if labels[a] == labels[b]:
            cost[a, b] = np.inf
    if settings.method != "paper":  # a model at its initialisation is no trained model's child (relations/untrained)
        for a, b in trained_to_untrained(stats):
            cost[a, b] = np.inf


def _near_ties(stats: WeightStatistics, settings: RecoverySettings, ev: PairEvidence, labels: np.ndarray,
               typed_children: set[int], rank_used: dict[int, bool], margins: dict[int, LayerMargins],
               ) -> tuple[dict[int, TieKurtosis], dict[int, TieSpectrum]]:
    """Per child of a tree placed by distance (not rank) of 3 to MAX_TREE fine-tuned models, the kurtosis
    and the spectrum of its differences to near-tied candidate parents (:mod:`.ties`); empty when
    ``kurtosis_ties`` is off or for the paper's method."""
    ties: dict[int, TieKurtosis] = {}
    spectra: dict[int, TieSpectrum] = {}
    if settings.kurtosis_ties and settings.method != "paper":
        layers_once = functools.cache(functools.partial(pair_layers, stats))  # for the first tree that needs it
        for t, used in rank_used.items():
            members = np.array([g for g in np.flatnonzero(labels == t) if g not in typed_children], dtype=int)
            if not used and 3 <= len(members) <= MAX_TREE:
                ties.update(tree_tie_kurtosis(stats, ev, members, margins, layers_once))
                spectra.update(tree_tie_spectra(stats, ev, members, margins, layers_once))
    return ties, spectra


def layer_margins(rms: np.ndarray, cost: np.ndarray, k: int = LAYER_CANDIDATES) -> dict[int, LayerMargins]:
    """Per child, its ``k`` cheapest candidate parents and the layers' effect size for each over each
    other (:func:`.confidence.layer_effect`; docs/METHOD.md, "Confidence")."""
    out: dict[int, LayerMargins] = {}
    for c in range(cost.shape[0]):
        finite = np.flatnonzero(np.isfinite(cost[:, c]))
        if len(finite) < 2:
            continue
        cand = tuple(int(q) for q in finite[np.argsort(cost[finite, c], kind="stable")][:k])
        eff = np.zeros((len(cand), len(cand)))
        for i, a in enumerate(cand):
            for j in range(i + 1, len(cand)):
                e = layer_effect(rms[:, a, c], rms[:, cand[j], c])
                eff[i, j], eff[j, i] = e, -e
        out[c] = LayerMargins(cand, eff)
    return out


def _detectors(settings: RecoverySettings) -> tuple[str, ...]:
    """The relation detectors ``settings.relations`` names (none under the paper's method)."""
    if settings.method == "paper" or settings.relations == "none":
        return ()
    if settings.relations == "all":
        return DETECTORS
    chosen = tuple(d.strip() for d in settings.relations.split(",") if d.strip())
    unknown = [d for d in chosen if d not in DETECTORS + OPTIONAL_DETECTORS]
    if unknown:
        raise InputError(f"Unknown relation detector {unknown[0]!r}: use all, none or a list of "
                         f"{', '.join(DETECTORS + OPTIONAL_DETECTORS)}.")
    return chosen


def _label_forest_edges(recovery: Recovery, stats: WeightStatistics, detectors: tuple[str, ...]) -> Recovery:
    """Type the forest's own edges (lora, prune, distill, finetune) from the weights; kept in the
    problem so that a re-solve keeps them."""
    if not detectors or recovery.problem is None:
        return recovery
    pl = pair_layers(stats)
    index = {m: i for i, m in enumerate(stats.model_ids)}
    linked = {link.child for link in links_of(recovery.problem)}
    labels = {}
    for e in recovery.edges:
        p, c = index[e.parent], index[e.child]
        if c in linked:
            continue
        label = label_edge(stats, pl, p, c, detectors)
        labels[edge_label_key(e.parent, e.child)] = [label.relation.value, label.detail,
                                           None if math.isnan(label.confidence) else label.confidence]
    return replace(recovery, problem=replace(recovery.problem, edge_labels=labels))


def resolve(recovery: Recovery, constraints: Constraints) -> Recovery:
    """Re-solve ``recovery`` under new constraints from its recovery problem (no weights are read).

    Forcing an edge between two trees joins them. Raises :class:`ConstraintError` if the
    constraints contradict each other.
    """
    if recovery.problem is None:
        raise InputError("This result has no cost matrix to re-solve from; run recovery again.")
    edited = _edited_locally(recovery, constraints)
    if edited is not None:
        return _capped(_with_votes(edited, recovery))
    known = {(e.parent, e.child): e.layer_distance for e in recovery.edges}
    ids = recovery.problem.ids
    solved = solve(recovery.problem, constraints, layer_distance=lambda p, c: known.get((ids[p], ids[c]), ()))
    return _capped(_with_votes(_carried(recovery, apply_relations(solved)), recovery))


def _capped(recovery: Recovery) -> Recovery:
    """A merged LoRA's own edges read their counted placement (:func:`rank_placed_edges`), then the confidence caps
    no single edge's evidence sees, applied to every result: a root's only child
    (:func:`sole_child_capped`) and fine-tune chains whose two orders tie (:func:`.chain_ties.chain_ties_capped`)."""
    return chain_ties_capped(sole_child_capped(rank_placed_edges(recovery)))


def rank_placed_edges(recovery: Recovery) -> Recovery:
    """Every forest edge typed ``lora`` (a merged LoRA's own edge, not a typed relation's child) with its
    placement read as the counted share of such fitting edges placed right (:func:`.confidence.rank_placed`),
    before the caps. Left as they are: a parent the near-tie rule chose (a count of its own), a parent told from a
    twin (its support is the evidence), the paper method, and results without a recovery problem (the sparse
    path)."""
    problem = recovery.problem
    if problem is None or problem.method == "paper" or not problem.edge_labels:
        return recovery
    index = {m: i for i, m in enumerate(problem.ids)}
    edges = []
    for e in recovery.edges:
        label = problem.edge_label(e.parent, e.child)
        p, c = index.get(e.parent), index.get(e.child)
        if (label and label[0] == Relation.LORA.value and p is not None and c is not None and not e.chosen_by_tie
                and problem.twin_support(p) is None):
            place = rank_placed(e.placement_confidence, e.direction_confidence,
                                related_confidence(float(problem.relative[p, c]), problem.threshold))
            e = replace(e, confidence=place * e.direction_confidence, placement_confidence=place)
        edges.append(e)
    return replace(recovery, edges=edges)


def sole_child_capped(recovery: Recovery) -> Recovery:
    """Every edge from a root to its only child capped at :data:`.confidence.SOLE_CHILD_CONFIDENCE`
    (docs/METHOD.md, "Confidence"): read from the solved graph, so any solve or local edit gets it, and
    the sparse path (:func:`.sparse.recover_sparse`) too."""
    which = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in recovery.edges])
    if not which:
        return recovery
    edges = []
    for e in recovery.edges:
        if (e.parent, e.child) in which:
            conf, place, direction = capped(e.confidence, e.placement_confidence, e.direction_confidence)
            e = replace(e, confidence=conf, placement_confidence=place, direction_confidence=direction)
        edges.append(e)
    return replace(recovery, edges=edges)


def _with_votes(recovery: Recovery, before: Recovery) -> Recovery:
    """Every edge with its per-layer votes (:func:`layer_votes`); a flipped pair keeps its layers (the
    set-aside rule is symmetric), a pair first joined by a correction has none to show."""
    if recovery.layer_kurtosis is None:
        return recovery
    index = {m: i for i, m in enumerate(recovery.model_ids)}
    known = {(e.parent, e.child): e.layer_distance for e in before.edges}
    tree_of = {m.id: m.tree for m in recovery.models}
    regime = {t.id: t.regime for t in recovery.trees}
    edges = []
    for e in recovery.edges:
        kept = e.layer_distance or known.get((e.child, e.parent), ())
        spec = regime.get(tree_of.get(e.child, -1), "specialization") != "generalization"
        edges.append(replace(e, layer_votes=layer_votes(recovery.layer_kurtosis, index[e.parent], index[e.child],
                                                        kept, spec)))
    return replace(recovery, edges=edges)


def _carried(recovery: Recovery, solved: Recovery) -> Recovery:
    """``solved``'s graph, constraints and problem with what ``recovery`` carries (settings, layers,
    problems, run time)."""
    return replace(recovery, models=solved.models, edges=solved.edges, trees=solved.trees,
                   constraints=solved.constraints, problem=solved.problem)


def layer_votes(layer_kurtosis: np.ndarray | None, p: int, c: int, kept_distance: tuple[float, ...],
                specialization: bool) -> tuple[int, ...]:
    """Each layer's kurtosis vote on the edge ``p -> c``: +1 for this direction, -1 against, 0 for a
    layer that does not vote (not shared by the pair, or set aside as re-initialised).

    The engine's own rule (:func:`.features.pair_evidence` counts ``votes_up``, oriented by the tree's
    regime; docs/ARCHITECTURE.md, "Direction"), exported per layer so that a chart draws the votes
    the engine counted instead of recomputing them: the +1s sum to ``Edge.layers_voting_forward``.
    A layer votes where its per-pair distance is finite (``Edge.layer_distance``).
    """
    if layer_kurtosis is None or not len(kept_distance) or len(kept_distance) != layer_kurtosis.shape[1]:
        return ()
    kept = np.isfinite(np.asarray(kept_distance, dtype=np.float64))
    layer_kurtosis = np.asarray(layer_kurtosis, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        up = (layer_kurtosis[c] - layer_kurtosis[p]) > 0
    forward = ~up if specialization else up
    return tuple(int(v) for v in np.where(kept, np.where(forward, 1, -1), 0))


def use_parent(recovery: Recovery, child: str, parent: str) -> Recovery:
    """``recovery`` with ``child`` moved under ``parent`` (its subtree with it), everything else kept.

    The engine call behind "use this parent" for a ranked alternative: the edge is forced and re-solved
    locally (:mod:`.corrections`). As on the Edge page, the later choice wins: it replaces an earlier
    forced parent of ``child``, lifts a forbid of this edge and un-fixes ``child`` as a root
    (:meth:`.Constraints.with_parent`).
    """
    return resolve(recovery, recovery.constraints.with_parent(parent, child))


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
    problem = recovery.problem
    assert problem is not None  # resolve checked
    parent = np.full(len(ids), -1)
    for e in recovery.edges:
        if parent[index[e.child]] < 0:  # a merge's first edge is its forest edge
            parent[index[e.child]] = index[e.parent]
    forced, forbidden, _ = model_indices(problem, constraints)
    cost = problem.cost.copy()
    dist = problem.distance
    for p, c in forced:
        if not np.isfinite(cost[p, c]):  # across trees: priced like solve does
            cost[p, c] = dist[p, c] if np.isfinite(dist[p, c]) else 1.0
    edited = local_edit(parent, problem.tree_of.copy(), cost, forced, forbidden)
    if edited is None:
        return None
    known = {(e.parent, e.child): e.layer_distance for e in recovery.edges}
    # An edge the edit leaves in place keeps what its parent was chosen by (a near-tie's kurtosis).
    ties = {index[e.child]: TieChoice(index[e.tie_displaced], tuple(index[m] for m in e.tie_kurtosis),
                                      tuple(e.tie_kurtosis.values()), e.tie_lifted, e.tie_spectral)
            for e in recovery.edges if e.tie_kurtosis and e.tie_displaced in index
            and all(m in index for m in e.tie_kurtosis)}
    solved = assemble(problem.with_trees(edited[1], cost), edited[0], constraints, set(forced),
                      lambda p, c: known.get((ids[p], ids[c]), ()), ties)
    return _carried(recovery, apply_relations(solved))


def _placement_distance(stats: WeightStatistics, mask: np.ndarray, ev: PairEvidence, members: np.ndarray,
                        settings: RecoverySettings, typed: AbstractSet[int] = frozenset()) -> np.ndarray | None:
    """The rank distance of one tree when its models differ at low rank (merged LoRA), else None.

    docs/METHOD.md's l_LoRA: parent -> child differ by B @ A of rank r, siblings by about r1 + r2 and
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


def _solve_readings(ev: PairEvidence, members: np.ndarray, settings: RecoverySettings,
                    placement: np.ndarray | None = None
                    ) -> tuple[list[Reading], dict[tuple[str, float], np.ndarray], float]:
    """Solve one tree under each reading of its direction cues (:mod:`.direction` picks one).

    Readings: the kurtosis regime (specialization or generalization; only the one set unless
    ``regime="auto"``) and, with ``norm_direction="auto"``, the sign of the norm cue (growth, or
    shrinkage under strong weight decay), in order of prior preference.

    Returns
    -------
    readings, cost matrix per reading, the cost of one unit of direction penalty (lambda * mean(D))
    """
    sub = np.ix_(members, members)
    d = ev.distance[sub] if placement is None else placement
    lam = settings.lambda_
    regimes = ["specialization", "generalization"] if settings.regime == "auto" else [settings.regime]
    free_norm = (settings.norm_direction == "auto" and "norm" in settings.direction_cues
                 and settings.method != "paper")
    signs = [1.0, -1.0] if free_norm else [1.0]
    options = [(r, sgn) for sgn in signs for r in regimes]  # in order of prior preference
    # The readings are told apart by the cues they read (kurtosis, norm); a sign-free cue (scale,
    # erank) orients edges under the reading chosen but does not choose it (reading_cues).
    told_by = reading_cues(settings.direction_cues)
    readings, matrices = [], {}
    for rank_of_prior, (regime, sgn) in enumerate(options):
        k = direction_penalty(ev, regime, settings.method, told_by, sgn)[sub]
        m = cost_matrix(d, k, lam)
        parent = minimum_spanning_arborescence(m)
        penalty = float(sum(k[parent[c], c] for c in range(len(parent)) if parent[c] >= 0))
        readings.append(Reading(regime, sgn, tree_cost(m, parent), penalty, rank_of_prior))
        if told_by != settings.direction_cues:
            m = cost_matrix(d, direction_penalty(ev, regime, settings.method, settings.direction_cues, sgn)[sub], lam)
        matrices[(regime, sgn)] = m
    cues = prior_cues(settings.direction_cues)
    if len(options) > 1 and cues != settings.direction_cues:
        regime, sgn = options[0]
        matrices[PRIOR_KEY] = cost_matrix(d, direction_penalty(ev, regime, settings.method, cues, sgn)[sub], lam)
    off = ~np.eye(len(members), dtype=bool) & np.isfinite(d)
    scale = lam * float(d[off].mean()) if off.any() else 0.0
    return readings, matrices, scale
