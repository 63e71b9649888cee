"""Recovery on the sparse candidate graph: every step O(N k), nothing N x N (docs/SCALE.md).

The same method as :mod:`mother_core.recovery.recover` (docs/METHOD.md), read on candidate pairs only:

1. per pair, per selected layer, RMS and relative difference from exact squared distances; layers
   at the level of unrelated weights are set aside while others are close (a re-initialised head);
   distance l_FT = mean RMS, relative = median relative difference;
2. trees: the gap rule of :mod:`.forest` on the minimum spanning forest of the candidate graph;
3. direction evidence E = kurtosis trend (under the tree's regime) + norm growth, K = (1 - E / 2) / 2;
4. per tree, cost M = D + lambda * mean(D) * K on its candidate edges, a minimum spanning
   arborescence under each regime, the cheaper kept (regime ``auto``);
5. placement and direction confidence from the same calibrated maps (:mod:`.confidence`), with the
   same honesty rules: a tree whose radial share (from the norms and the candidate pairs' squared
   distances) exceeds the calibrated domain reads its direction at the counted share of such fitting
   trees read right (:func:`.confidence.within_calibration`), and a root's only child is capped
   (:func:`mother_core.recovery.recover.sole_child_capped`).

Not done here (they need dense matrices or the skeletons): the additive refinement, pooled readings
across trees, the rank distance of merged-LoRA trees, typed relations, re-solving under constraints,
and near-tied parents re-chosen by the kurtosis of the weight difference (:mod:`.ties`: its cue is the
entries of W_child - W_candidate, read from the skeletons the dense statistics keep; the fingerprints
keep moments and random-projection sketches, whose entries are sums of many weights and read Gaussian
whatever the update's shape). A result that would have used the rule says so in
:attr:`~mother_core.recovery.result.Recovery.notes` (:data:`SPARSE_TIES_NOTE`). The dense path
(:func:`mother_core.recovery.recover.recover`) keeps them for sets up to
:data:`mother_core.pipeline.SPARSE_ABOVE` models.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import islice
from typing import cast

import networkx as nx
import numpy as np

from mother_core.errors import InputError, TooFewModelsError
from mother_core.io.base import ModelRef, Problem
from mother_core.io.names import layer_kind
from mother_core.recovery.arborescence import minimum_spanning_arborescence
from mother_core.recovery.confidence import (
    evidence_confidence, median_radial_share, placement_confidence, within_calibration,
)
from mother_core.recovery.features import REINITIALISED, select_layers
from mother_core.recovery.forest import split_graph_into_trees
from mother_core.recovery.json_numbers import to_json_number
from mother_core.recovery.recover import sole_child_capped
from mother_core.recovery.result import Alternative, Edge, LayerInfo, ModelNode, Recovery, RecoverySettings, TreeInfo
from mother_core.settings import REGIMES
from mother_core.stats.fingerprint import Fingerprint
from mother_core.stats.result import TensorMeta, WeightStatistics
from mother_core.stats.running_moments import summarise_moments
from mother_core.stats.sketch_store import shared_slots

#: Trees up to this size are solved with the dense arborescence (their m x m block); larger ones with
#: networkx's sparse Edmonds on their candidate edges.
DENSE_TREE_UP_TO = 3000
#: Alternatives kept per model (the candidate parents it did not take), cheapest first.
ALTERNATIVES = 3
#: Every sparse tree's direction note (a tree beyond the calibrated domain adds why it reads its count).
SPARSE_NOTE = "Read on this tree's candidate pairs (sparse path)."
#: The result's note when the ``kurtosis_ties`` setting is on: the sparse path cannot apply the rule.
SPARSE_TIES_NOTE = ("Near-tied parents were not re-chosen by the shape of the weight difference (the "
                    "kurtosis_ties setting): the sparse path keeps no skeletons of the weights to read it from, "
                    "so parents are chosen by distance alone and a tree whose updates read Adam-like can be "
                    "placed differently than on the dense path (docs/SCALE.md).")


@dataclass(frozen=True, eq=False)
class SparseStatistics:
    """Per-model moments (N x T) and exact squared distances of candidate pairs only (P x T).

    Attributes
    ----------
    models : tuple of ModelRef
    tensors : tuple of TensorMeta
        The union of the models' slots, sorted by name then shape.
    present, mean, var, kurtosis, norm : ndarray (N, T)
        As in :class:`~mother_core.stats.result.WeightStatistics`.
    pairs : ndarray (P, 2) of int
        Candidate pairs ``i < j``.
    pair_sq : ndarray (P, T)
        Squared distance per shared slot; NaN where the pair does not share it.
    problems : tuple of Problem
    settings : dict
        Provenance (k, sketch size, bytes read, ...).
    """

    models: tuple[ModelRef, ...]
    tensors: tuple[TensorMeta, ...]
    present: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    kurtosis: np.ndarray
    norm: np.ndarray
    pairs: np.ndarray
    pair_sq: np.ndarray
    problems: tuple[Problem, ...] = ()
    settings: dict = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def numel(self) -> np.ndarray:
        return np.array([t.numel for t in self.tensors], dtype=np.int64)

    @classmethod
    def assemble(cls, refs: list[ModelRef], fps: list[Fingerprint], pairs: np.ndarray,
                 values: dict[int, np.ndarray], problems: list[Problem], settings: dict) -> "SparseStatistics":
        """From fingerprints and the exact values of candidate pairs (pairs without values are dropped)."""
        keys = sorted({s for fp in fps for s in fp.slots}, key=lambda s: (s.rsplit("|", 1)[0], _shape(s)))
        where = {s: t for t, s in enumerate(keys)}
        n, t = len(refs), len(keys)
        mom = np.full((5, n, t), np.nan)
        for m, fp in enumerate(fps):
            cols = [where[s] for s in fp.slots]
            mom[:, m, cols] = fp.moments.T
        present = ~np.isnan(mom[0])
        cnt, mean, m2, _, m4 = mom
        var, kurt, norm = summarise_moments(cnt, mean, m2, m4, present)
        kept = sorted(values)
        pair_sq = np.full((len(kept), t), np.nan)
        for row, p in enumerate(kept):
            a, b = pairs[p]
            pair_sq[row, [where[s] for s in shared_slots(fps[a], fps[b])]] = values[p]
        tensors = tuple(TensorMeta(s.rsplit("|", 1)[0], _shape(s), layer_kind(s.rsplit("|", 1)[0], _shape(s)))
                        for s in keys)
        return cls(tuple(refs), tensors, present, mean, var, kurt, norm,
                   pairs[kept].reshape(-1, 2).astype(np.int64), pair_sq, tuple(problems), dict(settings))


def _shape(slot: str) -> tuple[int, ...]:
    text = slot.rsplit("|", 1)[1]
    return tuple(int(d) for d in text.split(",") if d)


@dataclass(frozen=True)
class PairTable:
    """Per candidate pair (a, b): the evidence of :class:`~.features.PairEvidence`, read a -> b."""

    rms: np.ndarray        # (P, L) NaN where not shared or set aside
    distance: np.ndarray   # (P,)
    relative: np.ndarray   # (P,)
    kurtosis_trend: np.ndarray  # (P,) in [-1, 1], + when kurtosis rises from a to b
    kurtosis_delta: np.ndarray  # (P,)
    norm_growth: np.ndarray     # (P,) in [-1, 1], + when b's norm exceeds a's by the squared distance
    votes_up: np.ndarray   # (P,) layers whose kurtosis rises a -> b
    votes_down: np.ndarray  # (P,)


def pair_table(stats: SparseStatistics, mask: np.ndarray) -> PairTable:
    """:func:`mother_core.recovery.features.pair_evidence`'s formulas on the candidate pairs."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        raise InputError("The layer selection matches no tensor of these models; choose another selection.")
    a, b = stats.pairs[:, 0], stats.pairs[:, 1]
    numel = stats.numel[idx].astype(np.float64)
    sq = stats.pair_sq[:, idx]
    shared_any = ~np.isnan(sq)
    n2 = stats.norm[:, idx] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(sq / numel)
        scale = np.sqrt((n2[a] + n2[b]) / 2)
        rel = np.where(scale > 0, np.sqrt(sq) / scale, 0.0)
    close = shared_any & (rel < REINITIALISED)
    keep = np.where(close.any(axis=1)[:, None], close, shared_any)
    shared = keep.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        distance = np.where(shared > 0, np.where(keep, rms, 0.0).sum(axis=1) / shared, np.inf)
        relative = np.nanmedian(np.where(shared_any, rel, np.nan), axis=1)
        relative = np.where(shared_any.any(axis=1), relative, np.inf)
        ku = stats.kurtosis[:, idx]
        delta = np.where(keep, ku[b] - ku[a], 0.0)
        kd = delta.sum(axis=1)
        absd = np.abs(delta).sum(axis=1)
        trend = np.where(absd > 0, kd / absd, 0.0)
        growth = np.where(keep, n2[b] - n2[a], 0.0).sum(axis=1)
        moved = np.where(keep, sq, 0.0).sum(axis=1)
        ng = np.clip(np.where(moved > 0, growth / moved, 0.0), -1.0, 1.0)
    return PairTable(np.where(keep, rms, np.nan), distance, relative, trend, kd, ng,
                     (delta > 0).sum(axis=1), (delta < 0).sum(axis=1))


def recover_sparse(stats: SparseStatistics, settings: RecoverySettings = RecoverySettings()) -> Recovery:
    """Recover the Model Graph from candidate pairs only (see the module docstring).

    Parameters
    ----------
    stats : SparseStatistics
        From :func:`mother_core.fingerprinting.sparse_statistics`.
    settings : RecoverySettings
        ``regime``, ``lambda_``, ``layers``, ``name_pattern``, ``n_trees``, ``direction_cues``,
        ``norm_direction`` and ``method`` are honoured; ``refine``, ``kurtosis_ties`` and the relation
        detectors need the dense path (a result made with ``kurtosis_ties`` on says so in its notes).

    Returns
    -------
    Recovery
        Without a dense problem (``problem`` is None: no N x N matrices); the candidate graph is kept
        in :attr:`Recovery.candidate_graph`.
    """
    n = stats.n_models
    if n < 2:
        raise TooFewModelsError("Recovery needs at least two models.")
    if settings.regime not in REGIMES:
        raise InputError(f"Unknown regime {settings.regime!r}: use one of {', '.join(REGIMES)}.")
    mask = select_layers(cast(WeightStatistics, stats), settings.layers, settings.name_pattern)
    tab = pair_table(stats, mask)
    labels, threshold = split_graph_into_trees(n, stats.pairs, tab.relative, settings.n_trees)
    layer_idx = np.flatnonzero(mask)
    kurt_sum = np.nansum(stats.kurtosis[:, layer_idx], axis=1)
    parent = np.full(n, -1, dtype=np.int64)
    edge_of: dict[int, tuple[int, bool]] = {}  # child -> (pair row, forward a -> b)
    regimes: dict[int, tuple[str, float, float]] = {}
    notes: dict[int, str] = {}
    beyond: dict[int, bool] = {}  # trees beyond the calibrated radial share (their reading is counted)
    cost_in: dict[int, list[tuple[float, int, int, bool]]] = {}  # child -> [(cost, parent, row, fwd)]
    a_all, b_all = stats.pairs[:, 0], stats.pairs[:, 1]
    in_tree = labels[a_all] == labels[b_all]
    for t in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == t)
        if len(members) == 1:
            regimes[t] = ("specialization" if settings.regime == "auto" else settings.regime, 0.5, 1.0)
            continue
        rows = np.flatnonzero(in_tree & (labels[a_all] == t))
        finite = np.isfinite(tab.distance[rows])
        mean_d = float(tab.distance[rows][finite].mean()) if finite.any() else 0.0
        options = ("specialization", "generalization") if settings.regime == "auto" else (settings.regime,)
        solved = []
        for regime in options:
            for norm_sign in ((1.0, -1.0) if settings.norm_direction == "auto" else (1.0,)):
                fwd, back = _edge_costs(tab, rows, regime, settings, mean_d, norm_sign)
                par, total = _arborescence(members, a_all[rows], b_all[rows], fwd, back)
                solved.append((total, regime, norm_sign, par, fwd, back))
        solved.sort(key=lambda s: s[0])
        total, regime, norm_sign, par, fwd, back = solved[0]
        other = next((s[0] for s in solved[1:] if s[1] != regime or s[2] != norm_sign), math.inf)
        conf = 0.5 if not math.isfinite(other) or other <= 0 else 0.5 + 0.5 * min(1.0, (other - total) / other)
        if len(solved) > 1:  # a reading the user set is the user's (as on the dense path)
            share = _tree_radial_share(stats, tab, rows, layer_idx)
            conf, notes[t], beyond[t] = within_calibration(conf, SPARSE_NOTE, share)
        regimes[t] = (regime, conf, norm_sign)
        parent[members] = par
        for r, cf, cb in zip(rows, fwd, back):
            a, b = int(a_all[r]), int(b_all[r])
            cost_in.setdefault(b, []).append((float(cf), a, int(r), True))
            cost_in.setdefault(a, []).append((float(cb), b, int(r), False))
        for c in members:
            p = int(parent[c])
            if p >= 0:
                for _, q, row, forward in cost_in[int(c)]:
                    if q == p:
                        edge_of[int(c)] = (row, forward)
    return sole_child_capped(_assemble(stats, settings, tab, labels, threshold, parent, edge_of, regimes, cost_in,
                                       kurt_sum, layer_idx, notes, beyond))


def _tree_radial_share(stats: SparseStatistics, tab: PairTable, rows: np.ndarray, layer_idx: np.ndarray) -> float:
    """A tree's radial share (:func:`.confidence.median_radial_share`) on its candidate pairs ``rows``:
    each member paired with its nearest candidate in the tree. The dense path pairs it with its nearest
    member of all; the candidates are each model's nearest neighbours, so the two agree unless the
    nearest member was missed by the sketches (docs/SCALE.md, candidate recall)."""
    d = tab.distance[rows]
    ends = np.concatenate([stats.pairs[rows, 0], stats.pairs[rows, 1]])
    dist = np.concatenate([d, d])
    row_of = np.concatenate([rows, rows])
    ok = np.isfinite(dist)
    ends, dist, row_of = ends[ok], dist[ok], row_of[ok]
    order = np.lexsort((dist, ends))  # by member, nearest first
    first = np.ones(len(order), dtype=bool)
    first[1:] = ends[order][1:] != ends[order][:-1]
    nearest = row_of[order][first]
    n2 = stats.norm[:, layer_idx] ** 2
    return median_radial_share((n2[stats.pairs[r]], stats.pair_sq[r, layer_idx]) for r in nearest)


def _edge_costs(tab: PairTable, rows: np.ndarray, regime: str, settings: RecoverySettings,
                mean_d: float, norm_sign: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Costs of a -> b and b -> a for the pairs ``rows``: D + lambda * mean(D) * K."""
    d = tab.distance[rows]
    if settings.method == "paper":
        rising = regime == "generalization"
        kd = tab.kurtosis_delta[rows]
        k_fwd = (kd < 0 if rising else kd > 0).astype(np.float64)
        k_back = (-kd < 0 if rising else -kd > 0).astype(np.float64)
    else:
        e = _evidence(tab, rows, regime, settings.direction_cues, norm_sign)
        n_cues = max(1, sum(c in settings.direction_cues for c in ("kurtosis", "norm")))
        k_fwd, k_back = (1.0 - e / n_cues) / 2.0, (1.0 + e / n_cues) / 2.0
    return d + settings.lambda_ * mean_d * k_fwd, d + settings.lambda_ * mean_d * k_back


def _evidence(tab: PairTable, rows: np.ndarray, regime: str, cues: str, norm_sign: float = 1.0) -> np.ndarray:
    """E(a -> b) in [-2, 2] (:func:`mother_core.recovery.recover.direction_evidence`); E(b -> a) = -E."""
    sign = -1.0 if regime == "specialization" else 1.0
    e = np.zeros(len(rows))
    if "kurtosis" in cues:
        e = e + sign * tab.kurtosis_trend[rows]
    if "norm" in cues:
        e = e + norm_sign * tab.norm_growth[rows]
    return e


def _arborescence(members: np.ndarray, a: np.ndarray, b: np.ndarray, fwd: np.ndarray, back: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Parents (global indices, -1 for the root) of ``members`` and the total cost."""
    local = {int(g): i for i, g in enumerate(members)}
    la = np.array([local[int(x)] for x in a], dtype=np.int64)
    lb = np.array([local[int(x)] for x in b], dtype=np.int64)
    m = len(members)
    if m <= DENSE_TREE_UP_TO:
        cost = np.full((m, m), np.inf)
        cost[la, lb] = fwd
        cost[lb, la] = back
        par = minimum_spanning_arborescence(cost)
    else:
        g = nx.DiGraph()
        g.add_nodes_from(range(m))
        g.add_weighted_edges_from(zip(la.tolist(), lb.tolist(), fwd.tolist()))
        g.add_weighted_edges_from(zip(lb.tolist(), la.tolist(), back.tolist()))
        tree = nx.minimum_spanning_arborescence(g, attr="weight", preserve_attrs=False)
        par = np.full(m, -1, dtype=np.int64)
        for p, c in tree.edges():
            par[c] = p
    cost_of = {(int(x), int(y)): float(v) for x, y, v in zip(la, lb, fwd)}
    cost_of.update({(int(y), int(x)): float(v) for x, y, v in zip(la, lb, back)})
    total = sum(cost_of[(int(par[c]), c)] for c in range(m) if par[c] >= 0)
    return np.where(par >= 0, members[np.maximum(par, 0)], -1), total


def _assemble(stats: SparseStatistics, settings: RecoverySettings, tab: PairTable, labels: np.ndarray,
              threshold: float, parent: np.ndarray, edge_of: dict[int, tuple[int, bool]],
              regimes: dict[int, tuple[str, float, float]], cost_in: dict[int, list[tuple[float, int, int, bool]]],
              kurt_sum: np.ndarray, layer_idx: np.ndarray, notes: dict[int, str],
              beyond: dict[int, bool]) -> Recovery:
    ids = [m.id for m in stats.models]
    edges: list[Edge] = []
    alternatives: dict[int, tuple[Alternative, ...]] = {}
    for c in range(stats.n_models):
        options = sorted(cost_in.get(c, []))
        p = int(parent[c])
        # Only the cheapest few are kept: building every option's Alternative was most of this loop.
        alts = tuple(Alternative(ids[q], cst, float(tab.distance[r]))
                     for cst, q, r, _ in islice((o for o in options if o[1] != p), ALTERNATIVES))
        alternatives[c] = alts
        if p < 0:
            continue
        r, forward = edge_of[c]
        chosen = next(cst for cst, q, _, _ in options if q == p)
        best_alt = alts[0].cost if alts else math.inf
        regime, reading_conf, norm_sign = regimes[int(labels[c])]
        ev = float(_evidence(tab, np.array([r]), regime, settings.direction_cues, norm_sign)[0])
        ev = ev if forward else -ev
        place = placement_confidence(chosen, best_alt, float(tab.relative[r]), threshold)
        direction = evidence_confidence(ev, reading_conf, counted=beyond.get(int(labels[c]), False))
        up, down = int(tab.votes_up[r]), int(tab.votes_down[r])
        edges.append(Edge(
            parent=ids[p], child=ids[c], distance=float(tab.distance[r]), confidence=place * direction,
            placement_confidence=place, direction_confidence=direction,
            kurtosis_parent=float(kurt_sum[p]), kurtosis_child=float(kurt_sum[c]),
            layers_voting_forward=up if forward else down, layers_voting_backward=down if forward else up,
            alternatives=alternatives[c], layer_distance=tuple(float(x) for x in tab.rms[r]),
        ))
    numel = stats.numel  # a property that builds the array: once, not once per model
    models = [ModelNode(id=ids[m], path=ref.path, tree=int(labels[m]), kurtosis=float(kurt_sum[m]),
                        is_root=bool(parent[m] < 0), declared_parent=ref.declared_parent, format=ref.format,
                        n_params=int(numel[stats.present[m]].sum()), alternatives=alternatives[m])
              for m, ref in enumerate(stats.models)]
    trees = []
    for t in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == t)
        root = next((int(m) for m in members if parent[m] < 0), int(members[0]))
        regime, conf, _ = regimes[t]
        trees.append(TreeInfo(id=t, members=tuple(ids[m] for m in members), root=ids[root], regime=regime,
                              regime_confidence=conf, direction_basis="own",
                              direction_note=notes.get(t, SPARSE_NOTE)))
    layers = [LayerInfo(stats.tensors[s].name, stats.tensors[s].shape, stats.tensors[s].kind) for s in layer_idx]
    graph = {
        "pairs": stats.pairs.tolist(),
        "distance": [to_json_number(float(x)) for x in tab.distance],
        "relative": [to_json_number(float(x)) for x in tab.relative],
        "threshold": to_json_number(float(threshold)),
        **{k: v for k, v in stats.settings.items() if k in ("k", "sketch_dim", "sketch_seed")},
    }
    # The dense path applies the rule only outside the paper's method and in trees of 3 or more.
    skipped_ties = settings.kurtosis_ties and settings.method != "paper" and \
        any(len(t.members) >= 3 for t in trees)
    return Recovery(models=models, edges=edges, trees=trees, settings=settings,
                    problems=[{"path": p.path, "message": p.message} for p in stats.problems],
                    layers=layers, layer_kurtosis=stats.kurtosis[:, layer_idx].copy(), problem=None,
                    candidate_graph=graph, notes=[SPARSE_TIES_NOTE] if skipped_ties else [])

