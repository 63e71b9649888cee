"""The recovery problem: everything the tree step needs, computed once from the weight statistics.

:func:`mother_core.recovery.recover.recover` reads the statistics into a :class:`RecoveryProblem`;
:func:`mother_core.recovery.solve.solve` turns a problem and the user's constraints into a
:class:`~mother_core.recovery.result.Recovery`, and re-solving under new constraints
(:func:`~mother_core.recovery.recover.resolve`) is the same call on the problem a result carries. No
weights are read after the problem is built.

In ``result.json`` the problem is written under the key ``"extra"`` (its historical name; the keys are
those of :meth:`RecoveryProblem.to_json`), next to ``distance_matrix`` and ``cost_matrix``; results
written before some of its fields existed load with neutral readings for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mother_core.recovery.json_numbers import from_json_number, matrix_from_json


@dataclass(frozen=True)
class TreeReading:
    """How one tree's direction cues were read when its cost was built.

    Attributes
    ----------
    regime : str
        ``"specialization"`` (kurtosis falls parent -> child) or ``"generalization"`` (it rises).
    confidence : float
        In [0.5, 1]: how much cheaper the chosen reading was than the next (0.5: a tie kept the prior).
    rank_distance_used : bool
        Whether edges of this tree are placed by the rank of weight differences (merged LoRA).
    norm_sign : float
        ``+1``: norms grow from parent to child; ``-1``: they shrink (strong weight decay).
    basis, note : str
        What the reading rests on (``"own"``, ``"pooled"``, ``"growth"``, ``"prior"``, ``"fixed"``; see
        :mod:`mother_core.recovery.direction`) and a sentence saying so for the user.
    beyond_domain : bool
        The tree lies beyond the radial share the confidence was calibrated on
        (:func:`mother_core.recovery.confidence.within_calibration`): ``confidence`` is then the counted
        share of such fitting trees read right, and its edges take it as their direction confidence.
    """

    regime: str = "specialization"
    confidence: float = 0.5
    rank_distance_used: bool = False
    norm_sign: float = 1.0
    basis: str = ""
    note: str = ""
    beyond_domain: bool = False

    @property
    def counted(self) -> bool:
        """Whether the reading's confidence is a counted share of edges directed right that each edge takes
        as it stands (a tree on the prior, or beyond the calibrated radial share), not mixed with its cues."""
        return self.basis == "prior" or self.beyond_domain


@dataclass(frozen=True)
class ModelFacts:
    """What the result says about a model besides its place in the graph."""

    path: str = ""
    format: str = ""
    declared_parent: str | None = None
    n_params: int = 0


@dataclass(frozen=True)
class Twins:
    """A group (:mod:`.twins`) of models identical on the selected layers, in the order the tie was broken.

    Attributes
    ----------
    members : tuple of int
        Model indices, the original first (the nearest to the rest of its tree on the other tensors).
    support : float
        The share of the other tensors that differ within the group and put the original nearer the rest
        of the tree than the runner-up, by Laplace's rule ((agree + 1) / (differing + 2)): 0.5 where none
        differ or nothing else is in the tree.
    """

    members: tuple[int, ...]
    support: float


@dataclass(frozen=True, eq=False)
class LayerMargins:
    """One child's cheapest candidate parents (model indices) and ``effect[i, j]``: how consistently its
    layers put candidate ``i`` nearer than candidate ``j`` (antisymmetric, see
    :func:`mother_core.recovery.confidence.layer_effect`)."""

    candidates: tuple[int, ...]
    effect: np.ndarray


@dataclass(frozen=True, eq=False)
class TieKurtosis:
    """One child's candidate parents (those of its :class:`LayerMargins` in its tree, cheapest first) and
    the mean over layers of the excess kurtosis of the entries of W_child - W_candidate (NaN where no
    layer measured it): the cue that re-chooses among near-tied parents (:mod:`.ties`). ``layers``
    (candidates x layers, NaN where a layer did not measure a pair) is the same per layer: the sign test
    that tells a chain from siblings reads it (:func:`.ties.lift_siblings`); None in problems saved
    before it existed (no child is lifted then)."""

    candidates: tuple[int, ...]
    kurtosis: np.ndarray
    layers: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class TieSpectrum:
    """One child's candidate parents (those of its :class:`LayerMargins` in its tree, cheapest first) and
    the log effective rank of the skeleton of W_child - W_candidate per selected layer (candidates x
    layers, NaN where a layer did not measure a pair): the cue that tells a chain from siblings by the
    spectrum of the difference (:func:`.ties.lift_by_spectrum`)."""

    candidates: tuple[int, ...]
    layers: np.ndarray


def edge_label_key(parent: str, child: str) -> str:
    """The key of :attr:`RecoveryProblem.edge_labels` for the edge ``parent -> child`` (as result.json stores it:
    JSON object keys are strings)."""
    return f"{parent}\t{child}"


@dataclass(frozen=True, eq=False)
class RecoveryProblem:
    """The matrices, labels, direction cues and per-tree readings of one recovery.

    All matrices are (N, N) over ``ids``; ``[p, c]`` is about the edge p -> c where that matters.
    Arrays are not copied on construction: treat them as read-only (the solver does).

    Attributes
    ----------
    ids : tuple of str
        Model ids, in model-index order.
    distance : ndarray (N, N)
        The pairwise distance l_FT (inf where two models share nothing).
    relative : ndarray (N, N)
        The scale-free relative distance the forest split uses (docs/METHOD.md, "Trees").
    cost : ndarray (N, N)
        What the arborescence minimises, M = D + lambda * mean(D) * K within each tree; inf across
        trees and on the diagonal.
    tree_of : ndarray (N,) of int
        Tree label of each model.
    threshold : float
        The relative distance above which two models were put in different trees.
    evidence : ndarray (N, N)
        Direction evidence E[p, c] in [-2, 2] under each tree's reading (antisymmetric).
    votes_up : ndarray (N, N) of int
        Number of shared layers whose kurtosis rises from p to c.
    shared : ndarray (N, N) of int
        Number of layers each pair shares.
    kurtosis : ndarray (N,)
        Each model's summed per-layer kurtosis.
    readings : mapping of int to TreeReading
        Per tree label.
    models : tuple of ModelFacts
        Per model.
    squared : ndarray (N, N) or None
        Squared distances for the refinement, NaN outside the trees it applies to; None when no tree
        is refined.
    method : str
        ``"mother+"`` or ``"paper"``: how direction confidence is read.
    refine : bool
        Whether the solver refines each tree after the arborescence.
    cue_votes : mapping of str to ndarray (N, N)
        Each direction cue's vote in [-1, 1] for p -> c under the tree's reading
        (:func:`mother_core.recovery.recover.cue_votes`), shown per edge.
    links : tuple of dict
        Typed relations decided before the forest (:class:`mother_core.relations.evidence.TypedLink`
        as dicts): each child's parents, relation, detail, confidence (:mod:`.typed`).
    edge_labels : mapping of str to list
        Relation of the forest's own edges (``"parent\tchild"`` -> [relation, detail, confidence]).
    layer_margins : mapping of int to LayerMargins
        Per child, how consistently its layers prefer each of its cheapest candidate parents over
        another (:func:`mother_core.recovery.confidence.layer_effect`): the noise between candidate
        parents that placement confidence reads.
    tie_kurtosis : mapping of int to TieKurtosis
        Per child of a tree whose updates read platykurtic (Adam-like), the difference kurtosis to each
        candidate parent; the solver re-chooses near-tied parents by it (:mod:`.ties`). Empty when the
        ``kurtosis_ties`` setting is off.
    tie_spectra : mapping of int to TieSpectrum
        Per full fine-tune child of a tree placed by distance, the spectrum of its difference to each
        candidate parent; the solver lifts chains read as siblings by it (:mod:`.ties`). Empty when the
        ``kurtosis_ties`` setting is off, and in problems saved before it existed.
    """

    ids: tuple[str, ...]
    distance: np.ndarray
    relative: np.ndarray
    cost: np.ndarray
    tree_of: np.ndarray
    threshold: float
    evidence: np.ndarray
    votes_up: np.ndarray
    shared: np.ndarray
    kurtosis: np.ndarray
    readings: Mapping[int, TreeReading] = field(default_factory=dict)
    models: tuple[ModelFacts, ...] = ()
    squared: np.ndarray | None = None
    method: str = "mother+"
    refine: bool = True
    cue_votes: Mapping[str, np.ndarray] = field(default_factory=dict)
    links: tuple[Mapping[str, Any], ...] = ()
    edge_labels: Mapping[str, Any] = field(default_factory=dict)
    layer_margins: Mapping[int, LayerMargins] = field(default_factory=dict)
    tie_kurtosis: Mapping[int, TieKurtosis] = field(default_factory=dict)
    twins: tuple[Twins, ...] = ()
    tie_spectra: Mapping[int, TieSpectrum] = field(default_factory=dict)

    def edge_label(self, parent: str, child: str) -> list | None:
        """The relation a detector gave the forest's edge ``parent -> child`` (``[relation, detail,
        confidence]``, :attr:`edge_labels`), or None where it has none."""
        return self.edge_labels.get(edge_label_key(parent, child))

    def twin_support(self, model: int) -> float | None:
        """The support of the order that broke the tie of the twin group holding ``model`` (:mod:`.twins`),
        or None when no group holds it."""
        for group in self.twins:
            if model in group.members:
                return group.support
        return None

    def layer_margin(self, parent: int, alternative: int, child: int) -> float | None:
        """The layers' effect size for ``parent`` over ``alternative`` as the parent of ``child``
        (positive: the layers prefer ``parent``); None when either is not among the measured
        candidates."""
        m = self.layer_margins.get(int(child))
        if m is None or parent not in m.candidates or alternative not in m.candidates:
            return None
        value = float(m.effect[m.candidates.index(parent), m.candidates.index(alternative)])
        return value if math.isfinite(value) else None

    @property
    def n_models(self) -> int:
        return len(self.ids)

    def reading(self, tree: int) -> TreeReading:
        """The reading of tree ``tree`` (the neutral prior when it has none, e.g. a joined tree)."""
        return self.readings.get(int(tree), TreeReading())

    def with_trees(self, tree_of: np.ndarray, cost: np.ndarray) -> RecoveryProblem:
        """The same problem after constraints joined trees (new labels, costs across the join)."""
        return replace(self, tree_of=tree_of, cost=cost)

    # --- JSON (the "extra" object of result.json) ---------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The problem's fields beyond ``distance_matrix`` and ``cost_matrix``, as JSON values."""
        out: dict[str, Any] = {
            "threshold": float(self.threshold),
            "relative_distance": self.relative.tolist(),
            "tree_of": [int(t) for t in self.tree_of],
            "regimes": {str(k): [r.regime, float(r.confidence)] for k, r in self.readings.items()},
            "rank_distance_used": {str(k): bool(r.rank_distance_used) for k, r in self.readings.items()},
            "norm_sign": {str(k): float(r.norm_sign) for k, r in self.readings.items()},
            "direction_basis": {str(k): [r.basis, r.note] for k, r in self.readings.items()},
            "beyond_domain": {str(k): bool(r.beyond_domain) for k, r in self.readings.items()},
            "cue_votes": {k: np.asarray(v).tolist() for k, v in self.cue_votes.items()},
            "votes_up": np.asarray(self.votes_up).tolist(),
            "direction_evidence": self.evidence.tolist(),
            "shared_layers": np.asarray(self.shared).tolist(),
            "model_paths": [m.path for m in self.models],
            "model_formats": [m.format for m in self.models],
            "declared_parents": [m.declared_parent for m in self.models],
            "n_params": [int(m.n_params) for m in self.models],
        }
        if self.squared is not None:
            out["squared_distance"] = self.squared.tolist()
        out["typed_links"] = [dict(link) for link in self.links]
        out["edge_labels"] = dict(self.edge_labels)
        out["layer_margins"] = {str(c): [list(m.candidates), np.asarray(m.effect).tolist()]
                                for c, m in self.layer_margins.items()}
        if self.tie_kurtosis:
            out["tie_kurtosis"] = {str(c): [list(t.candidates), np.asarray(t.kurtosis).tolist(),
                                            *([] if t.layers is None else [np.asarray(t.layers).tolist()])]
                                   for c, t in self.tie_kurtosis.items()}
        if self.twins:
            out["twins"] = [[list(g.members), float(g.support)] for g in self.twins]
        if self.tie_spectra:
            out["tie_spectra"] = {str(c): [list(t.candidates), np.asarray(t.layers).tolist()]
                                  for c, t in self.tie_spectra.items()}
        return out

    @classmethod
    def from_json(cls, extra: Mapping[str, Any], *, ids: Sequence[str], distance: np.ndarray, cost: np.ndarray,
                  layer_kurtosis: np.ndarray | None, models: Sequence[ModelFacts], tree_of: Sequence[int],
                  method: str, refine: bool) -> RecoveryProblem:
        """Read the problem back from a result file's ``extra`` and matrices.

        ``models`` and ``tree_of`` (from the result's model list) stand in for fields that older
        files lack; missing cue matrices read as no evidence.
        """
        n = len(ids)

        def matrix(key: str, fill: float, dtype: type = np.float64) -> np.ndarray:
            v = extra.get(key)
            if v is None:  # zeros are calloc'd: pages no one reads cost no memory (an old file of 2,000 models: 96 MB)
                return np.zeros((n, n), dtype=dtype) if fill == 0 else np.full((n, n), fill, dtype=dtype)
            return matrix_from_json(v, dtype)

        readings: dict[int, TreeReading] = {}
        for k, v in (extra.get("regimes") or {}).items():
            readings[int(k)] = TreeReading(
                regime=str(v[0]), confidence=from_json_number(v[1]),
                rank_distance_used=bool((extra.get("rank_distance_used") or {}).get(k, False)),
                norm_sign=from_json_number((extra.get("norm_sign") or {}).get(k, 1.0)),
                basis=str(((extra.get("direction_basis") or {}).get(k) or ["", ""])[0]),
                note=str(((extra.get("direction_basis") or {}).get(k) or ["", ""])[1]),
                beyond_domain=bool((extra.get("beyond_domain") or {}).get(k, False)),
            )
        facts = tuple(models)
        if "model_paths" in extra:
            facts = tuple(ModelFacts(path, fmt, declared, int(size)) for path, fmt, declared, size in zip(
                extra["model_paths"], extra.get("model_formats") or [m.format for m in facts],
                extra.get("declared_parents") or [m.declared_parent for m in facts],
                extra.get("n_params") or [m.n_params for m in facts]))
        squared = extra.get("squared_distance")
        lk = layer_kurtosis
        return cls(
            ids=tuple(ids), distance=distance, cost=cost,
            relative=matrix("relative_distance", math.nan),
            tree_of=np.array(extra.get("tree_of", list(tree_of)), dtype=int),
            threshold=from_json_number(extra.get("threshold", math.nan)),
            evidence=matrix("direction_evidence", 0.0),
            votes_up=matrix("votes_up", 0, np.int64),
            shared=matrix("shared_layers", 0, np.int64),
            kurtosis=np.nansum(lk, axis=1) if lk is not None and lk.size else np.zeros(n),
            readings=readings, models=facts,
            squared=None if squared is None else matrix_from_json(squared),
            method=method, refine=refine,
            cue_votes={k: matrix_from_json(v) for k, v in (extra.get("cue_votes") or {}).items()},
            links=tuple(extra.get("typed_links") or ()), edge_labels=dict(extra.get("edge_labels") or {}),
            layer_margins={int(c): LayerMargins(tuple(int(x) for x in v[0]), matrix_from_json(v[1]))
                           for c, v in (extra.get("layer_margins") or {}).items()},
            tie_kurtosis={int(c): TieKurtosis(tuple(int(x) for x in v[0]),
                                              np.array([from_json_number(x) for x in v[1]]),
                                              matrix_from_json(v[2]).reshape(len(v[0]), -1) if len(v) > 2 else None)
                          for c, v in (extra.get("tie_kurtosis") or {}).items()},
            twins=tuple(Twins(tuple(int(x) for x in v[0]), from_json_number(v[1])) for v in extra.get("twins") or ()),
            tie_spectra={int(c): TieSpectrum(tuple(int(x) for x in v[0]), matrix_from_json(v[1]).reshape(len(v[0]), -1))
                         for c, v in (extra.get("tie_spectra") or {}).items()},
        )
