"""The :class:`Recovery` value object and its stable JSON contract (``result.json``).

Contract (fields may be added, never removed or renamed)::

    {"format": "mother-recovery", "version": 1,
     "models": [{"id", "path", "tree", "kurtosis", "is_root", "declared_parent", ...}],
     "edges":  [{"parent", "child", "relation", "relation_detail", "relation_confidence",
                 "merge_weight", "parent_note", "distance", "confidence", "placement_confidence",
                 "direction_confidence", "alternatives": [...],
                 "tie_kurtosis": {candidate: excess kurtosis, ...}, "tie_displaced", ...}],
     "trees":  [{"id", "members", "root", "regime", "regime_confidence"}],
     "settings": {...}, "problems": [...],
     "layers": [{"name", "shape", "kind"}], "layer_kurtosis": [[...] per model],
     "distance_matrix": [[...]], "cost_matrix": [[...]],
     "extra": {...}, "notes": ["...", ...]}

``extra`` holds the rest of the :class:`~mother_core.recovery.problem.RecoveryProblem` (tree labels,
direction cues, per-tree readings), what re-solving under new constraints needs.

Roots are the models with no incoming edge. Every edge carries a ``relation``, one of the words of
:class:`mother_core.relations.Relation` (docs/RELATIONS.md). A ``merge`` child has one edge per
parent; every other model has at most one parent. The edges whose relation is not ``merge`` form the
fine-tune skeleton: a forest of directed trees (the paper's Model Graph). Results written before
relations existed load with every edge a ``finetune`` of unassessed confidence (NaN). An edge whose
parent was re-chosen among near-tied candidates by the kurtosis of the weight difference
(:mod:`mother_core.recovery.ties`) carries ``tie_kurtosis`` (the chosen parent first) and
``tie_displaced`` (the parent distance had chosen); files written before them load with neither. Where
the parent was instead lifted from a chain to siblings (``ties.lift_siblings``: the child's recovered
parent's parent, by the layers' sign test, not a near tie) ``tie_lifted`` is true; where that lift was
read from the spectrum of the differences (``ties.lift_by_spectrum``) ``tie_spectral`` is true as well.
A ``merge`` edge's ``confidence`` is its parent's own (that this parent is one of the child's), its
``relation_confidence`` the merge's (that the child is a merge); ``parent_note`` says what puts the parent
in doubt (a relative that explains the child as well in its place), ``""`` where nothing does. Files
written before it carry the merge's confidence on every parent edge and load with ``parent_note`` empty.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mother_core.atomic import write_text_atomic
from mother_core.errors import ResultFormatError
from mother_core.io.filekind import read_bytes_file
from mother_core.recovery.json_numbers import from_json_number, loads_result, matrix_from_json, to_json_number
from mother_core.recovery.problem import ModelFacts, RecoveryProblem
from mother_core.recovery.schema import check_result
from mother_core.relations.vocabulary import Relation, parse_relation
from mother_core.settings import RecoverySettings

#: Largest result file read (a dense result of 1,500 models, the most written without --candidates, is
#: ~0.2 GB). A file of a result's name may be anything: a link to /dev/zero, a FIFO, a huge download.
MAX_RESULT_BYTES = 1 << 30

__all__ = ["Alternative", "Constraints", "Edge", "LayerInfo", "ModelNode", "Recovery", "RecoverySettings",
           "TreeInfo", "is_result_head"]

FORMAT_NAME = "mother-recovery"
FORMAT_VERSION = 1

#: How much of a file :func:`is_result_head` reads: the writer puts the marker first (``to_dict``'s first
#: key), so a result says what it is in its first few dozen bytes, whatever its size.
RESULT_HEAD_BYTES = 4096
_MARKER = re.compile(rb'^\s*\{\s*"format"\s*:\s*"' + re.escape(FORMAT_NAME.encode())
                     + rb'"\s*,\s*"version"\s*:\s*\d+')


def is_result_head(head: bytes) -> bool:
    """Whether ``head`` (a file's first :data:`RESULT_HEAD_BYTES` bytes) opens a saved result.

    A result file opens with ``{"format": "mother-recovery", "version": N`` (as :meth:`Recovery.save` and
    ``mother recover --out`` write it, any indentation, a UTF-8 byte-order mark allowed): a cheap, bounded
    test of what a file *is*, where its name may say anything. A result rewritten with its keys sorted
    (``format`` after the matrices) is not recognised: it still loads as an upload.

    Examples
    --------
    >>> is_result_head(b'{ "format": "mother-recovery", "version": 1, "models": []')
    True
    >>> is_result_head(b'{"models": [], "edges": []}')
    False
    """
    return bool(_MARKER.match(head.removeprefix(b"\xef\xbb\xbf")))


@dataclass(frozen=True)
class Alternative:
    """A candidate parent for a model, ranked by cost; ``parent=None`` means "no parent" (a root)."""

    parent: str | None
    cost: float
    distance: float


@dataclass(frozen=True)
class Edge:
    """A recovered edge parent -> child with its evidence.

    ``relation`` says how the child was made from this parent (a :class:`Relation` word, stored as
    its string so the JSON and the Python object hold the same value); ``relation_detail`` the
    specifics a detector estimated ("Q4_0", "bf16 -> fp16", "slerp t=0.40", "linear 0.50/0.50",
    "ties"); ``relation_confidence`` how sure the detector is of the relation (NaN: not assessed).
    For a merge, one edge per parent with ``merge_weight`` its estimated coefficient; its ``confidence``
    (and ``placement_confidence``) is that parent's own, lower than ``relation_confidence`` (that the child
    is a merge) where another relative could take its place, which ``parent_note`` names.
    """

    parent: str
    child: str
    distance: float
    confidence: float
    placement_confidence: float
    direction_confidence: float
    kurtosis_parent: float = math.nan
    kurtosis_child: float = math.nan
    layers_voting_forward: int = 0
    layers_voting_backward: int = 0
    constrained: bool = False
    alternatives: tuple[Alternative, ...] = ()
    layer_distance: tuple[float, ...] = ()  # per-layer distance, same order as Recovery.layers
    # Each direction cue's vote in [-1, 1] for parent -> child under the tree's reading (positive:
    # supports this direction): "kurtosis", "norm", "scale", "effective_rank" (recover.cue_votes).
    cues: dict[str, float] = field(default_factory=dict)
    # Per-layer kurtosis vote (+1 for this direction, -1 against, 0 not voting), as the engine counted
    # them (recover.layer_votes); same order as Recovery.layers, () when not computed.
    layer_votes: tuple[int, ...] = ()
    relation: str = Relation.FINETUNE.value
    relation_detail: str = ""
    relation_confidence: float = math.nan
    merge_weight: float | None = None
    parent_note: str = ""
    # Where the parent was re-chosen among near-tied candidates by the shape of the weight difference
    # (Adam-like trees; mother_core.recovery.ties), not by distance: the excess kurtosis of
    # W_child - W_candidate for the chosen parent (first) and each candidate it was tied with, and the
    # parent distance had chosen. Empty / None where distance chose the parent (and in older files).
    tie_kurtosis: dict[str, float] = field(default_factory=dict)
    tie_displaced: str | None = None
    # True where the parent is not a near tie's winner but the child was lifted from a chain p -> s -> c to
    # a sibling of s (the layers' sign test on the same kurtosis; mother_core.recovery.ties.lift_siblings).
    tie_lifted: bool = False
    # True where that lift was read from the spectrum of the differences (their effective rank), not their
    # kurtosis (mother_core.recovery.ties.lift_by_spectrum); tie_kurtosis is then only told.
    tie_spectral: bool = False

    @property
    def chosen_by_tie(self) -> bool:
        """Whether the parent was re-chosen among near-ties by the difference kurtosis, not by distance."""
        return bool(self.tie_kurtosis)

    def __post_init__(self) -> None:
        # Validate and normalise the word once, here, so every consumer can trust it.
        object.__setattr__(self, "relation", parse_relation(self.relation).value)


@dataclass(frozen=True)
class ModelNode:
    """A model in the recovered graph."""

    id: str
    path: str
    tree: int
    kurtosis: float
    is_root: bool
    declared_parent: str | None = None
    format: str = ""
    n_params: int = 0
    # Ranked candidate parents (the chosen one excluded), for roots too: what else could it descend from.
    alternatives: tuple[Alternative, ...] = ()


@dataclass(frozen=True)
class TreeInfo:
    """One recovered tree (connected component)."""

    id: int
    members: tuple[str, ...]
    root: str
    regime: str
    regime_confidence: float
    # What the direction rests on: "own" evidence, "pooled" over the architecture's trees, "growth" (norms
    # taken to grow, the regime read given that), the "prior", or "fixed" by the user
    # (mother_core/recovery/direction.py), and a sentence saying so.
    direction_basis: str = ""
    direction_note: str = ""


@dataclass(frozen=True)
class LayerInfo:
    """A layer the recovery compared: its tensor name, shape and kind (:func:`mother_core.io.names.layer_kind`),
    in the order of the per-layer columns (``Edge.layer_distance``, ``Recovery.layer_kurtosis``)."""

    name: str
    shape: tuple[int, ...]
    kind: str


@dataclass(frozen=True)
class Constraints:
    """User constraints for re-solving: forced and forbidden edges (parent, child), fixed roots."""

    forced: tuple[tuple[str, str], ...] = ()
    forbidden: tuple[tuple[str, str], ...] = ()
    roots: tuple[str, ...] = ()

    # Each control's latest click wins over an earlier constraint on the same pair or child: "use this
    # parent" after forbidding it, a flip undone by flipping back, forbidding a forced edge. Appending
    # alone left both (forced and forbidden), which ``resolve`` refuses: the page undid the click with
    # "These constraints cannot all hold" (found browsing the Edge page, benchmarks/RESULTS.md).
    def flipped(self, parent: str, child: str) -> "Constraints":
        """Constraints with the edge parent -> child replaced by child -> parent: :meth:`with_parent` (so a
        forbid of child -> parent, from an earlier flip the other way, is lifted), then :meth:`forbidding`."""
        return self.with_parent(child, parent).forbidding(parent, child)

    def with_parent(self, parent: str, child: str) -> "Constraints":
        """Constraints with ``parent -> child`` forced, replacing an earlier forced parent of ``child``; a child
        fixed as a root no longer is, and a forbid of this very edge is lifted (the Edge page's "use this
        parent" and its force form). Forcing the reverse of a forced edge (``child -> parent``) lifts that one too:
        kept, the two made a cycle that ``resolve`` refused (the Edge page undid the click)."""
        return self._added(forced=(parent, child))

    def forbidding(self, parent: str, child: str) -> "Constraints":
        """Constraints with ``parent -> child`` forbidden (no longer forced, if it was)."""
        return self._added(forbidden=(parent, child))

    def with_root(self, model: str) -> "Constraints":
        """Constraints with ``model`` fixed as a root (a forced parent of it dropped)."""
        return self._added(root=model)

    def _added(self, forced: tuple[str, str] | None = None, forbidden: tuple[str, str] | None = None,
               root: str | None = None) -> "Constraints":
        """These constraints plus one more, which lifts every earlier one it contradicts (the one place the
        "later click wins" rules live): a forced edge lifts the other forced parent of its child, a forbid of
        the same edge, its reverse and the child fixed as a root; a forbidden edge lifts forcing it; a root lifts a
        forced parent of it. The new one goes last (an earlier copy of it is dropped)."""
        edge = forced or forbidden
        reverse = (forced[1], forced[0]) if forced else None
        freed = {m for m in (forced[1] if forced else None, root) if m is not None}  # children that lose a parent

        def one(x):  # the new constraint, where it is of this kind
            return () if x is None else (x,)

        return Constraints(
            forced=tuple(e for e in self.forced if e[1] not in freed and e != edge and e != reverse) + one(forced),
            forbidden=tuple(e for e in self.forbidden if e != edge) + one(forbidden),
            roots=tuple(r for r in self.roots if r not in freed) + one(root),
        )


@dataclass
class Recovery:
    """The recovered Model Graph with per-edge evidence, ready for display, evaluation and export."""

    models: list[ModelNode]
    edges: list[Edge]
    trees: list[TreeInfo]
    settings: RecoverySettings = field(default_factory=RecoverySettings)
    constraints: Constraints = field(default_factory=Constraints)
    problems: list[dict[str, str]] = field(default_factory=list)
    layers: list[LayerInfo] = field(default_factory=list)
    layer_kurtosis: np.ndarray | None = None  # (N, L), NaN where absent
    # What the solver worked from; re-solving under new constraints reuses it (None: cannot re-solve).
    problem: RecoveryProblem | None = None
    run_seconds: float = math.nan  # wall time of the recovery (reading + solving), NaN if unknown
    # Sets recovered on the sparse candidate graph (mother_core/recovery/sparse.py, docs/SCALE.md): the
    # candidate pairs (model indices) with their distances, instead of N x N matrices; None otherwise.
    candidate_graph: dict[str, Any] | None = None
    # What the user should know about how the whole result was made that no edge or tree says (e.g. a
    # placement rule the path taken could not apply: the sparse path's near-ties, docs/SCALE.md).
    notes: list[str] = field(default_factory=list)

    # --- lookups -----------------------------------------------------------------------------
    @property
    def distance_matrix(self) -> np.ndarray | None:
        """(N, N) pairwise distances, in the order of :attr:`model_ids`."""
        return None if self.problem is None else self.problem.distance

    @property
    def cost_matrix(self) -> np.ndarray | None:
        """(N, N) what the arborescence minimised; inf = not allowed."""
        return None if self.problem is None else self.problem.cost

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    @property
    def roots(self) -> list[str]:
        children = {e.child for e in self.edges}
        return [m.id for m in self.models if m.id not in children]

    def parent_of(self, model_id: str) -> str | None:
        """The model's one parent in the fine-tune skeleton; for a merge, its first parent (the
        edge listed first, which recovery writes with the largest weight); ``None`` for a root."""
        for e in self.edges:
            if e.child == model_id:
                return e.parent
        return None

    def parents_of(self, model_id: str) -> list[str]:
        """Every parent of the model, in edge order (several only for a merge)."""
        return [e.parent for e in self.edges if e.child == model_id]

    def edges_into(self, model_id: str) -> list[Edge]:
        """The edges whose child is ``model_id`` (several only for a merge)."""
        return [e for e in self.edges if e.child == model_id]

    def relation_of(self, model_id: str) -> str | None:
        """How the model was made from its parent(s) (a :class:`Relation` word), ``None`` for a root."""
        into = self.edges_into(model_id)
        return into[0].relation if into else None

    def edge(self, parent: str, child: str) -> Edge | None:
        for e in self.edges:
            if e.parent == parent and e.child == child:
                return e
        return None

    def model(self, model_id: str) -> ModelNode:
        for m in self.models:
            if m.id == model_id:
                return m
        raise ResultFormatError(f"No model with id {model_id!r} in this result.")

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def matrix(a: np.ndarray | None) -> list | None:
            if a is None:
                return None
            return [[to_json_number(x) for x in row] for row in np.asarray(a, dtype=np.float64).tolist()]

        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "models": [_plain(m) for m in self.models],
            "edges": [_plain(e) for e in self.edges],
            "roots": self.roots,
            "trees": [_plain(t) for t in self.trees],
            "settings": asdict(self.settings),
            "constraints": asdict(self.constraints),
            "problems": list(self.problems),
            "layers": [_plain(layer) for layer in self.layers],
            "layer_kurtosis": matrix(self.layer_kurtosis),
            "distance_matrix": matrix(self.distance_matrix),
            "cost_matrix": matrix(self.cost_matrix),
            "extra": {} if self.problem is None else _clean(self.problem.to_json()),
            "run_seconds": to_json_number(self.run_seconds),
        } | ({} if self.candidate_graph is None else {"candidate_graph": self.candidate_graph}) \
          | ({"notes": list(self.notes)} if self.notes else {})

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recovery":
        if not isinstance(d, dict) or "models" not in d or "edges" not in d:
            raise ResultFormatError(
                "This is not a MoTHer result: expected a JSON object with 'models' and 'edges' "
                "(as written by `mother recover --out result.json`)."
            )
        check_result(d)  # types, ids, edges to known models, no cycle (recovery/schema.py)
        try:
            models = [_build(ModelNode, {**m, "alternatives": tuple(
                _build(Alternative, a) for a in m.get("alternatives", ()))}) for m in d["models"]]
            edges = []
            for e in d["edges"]:
                alts = tuple(_build(Alternative, a) for a in e.get("alternatives", ()))
                edges.append(_build(Edge, {**e, "alternatives": alts,
                                           "layer_distance": tuple(from_json_number(x)
                                                                   for x in e.get("layer_distance", ())),
                                           "layer_votes": tuple(int(x) for x in e.get("layer_votes", ())),
                                           "tie_kurtosis": {str(k): from_json_number(v) for k, v in
                                                            (e.get("tie_kurtosis") or {}).items()}}))
            trees = [_build(TreeInfo, {**t, "members": tuple(t["members"])}) for t in d.get("trees", [])]
            c = d.get("constraints") or {}
            constraints = Constraints(
                forced=tuple(tuple(e) for e in c.get("forced", ())),
                forbidden=tuple(tuple(e) for e in c.get("forbidden", ())),
                roots=tuple(c.get("roots", ())),
            )
            layers = [LayerInfo(x["name"], tuple(x["shape"]), x["kind"]) for x in d.get("layers") or []]
            layer_kurtosis, distance, cost = (None if d.get(k) is None else matrix_from_json(d[k])
                                              for k in ("layer_kurtosis", "distance_matrix", "cost_matrix"))
            run_seconds = from_json_number(d.get("run_seconds"))
        except (KeyError, TypeError, ValueError, OverflowError) as e:  # OverflowError: an int past float's range
            raise ResultFormatError(f"Malformed result file: {e!r}. Re-create it with `mother recover`.") from e

        settings = _build(RecoverySettings, d.get("settings") or {})
        problem = None
        if distance is not None and cost is not None:
            try:
                problem = RecoveryProblem.from_json(
                    d.get("extra") or {}, ids=[m.id for m in models], distance=distance, cost=cost,
                    layer_kurtosis=layer_kurtosis,
                    models=[ModelFacts(m.path, m.format, m.declared_parent, m.n_params) for m in models],
                    tree_of=[m.tree for m in models], method=settings.method, refine=settings.refine)
            except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
                raise ResultFormatError(f"Malformed result file: {e!r}. Re-create it with `mother recover`.") from e
        return cls(
            models=models, edges=edges, trees=trees, settings=settings,
            constraints=constraints, problems=list(d.get("problems") or []), layers=layers,
            layer_kurtosis=layer_kurtosis, problem=problem, run_seconds=run_seconds,
            candidate_graph=d.get("candidate_graph") if isinstance(d.get("candidate_graph"), dict) else None,
            notes=[str(x) for x in d.get("notes") or []],
        )

    @classmethod
    def load(cls, path: str | Path) -> "Recovery":
        try:
            # The matrices as arrays, row by row (json_numbers.loads_result): about 2 bytes of memory per byte
            # of file at the peak (the bytes and their text, briefly), where lists of floats took 9.
            text = read_bytes_file(path, MAX_RESULT_BYTES).decode("utf-8")
            d = loads_result(text)
            del text
        except FileNotFoundError:
            raise ResultFormatError(f"Result file {path} does not exist.", path) from None
        except (OSError, ValueError) as e:  # UnicodeDecodeError, JSONDecodeError and loads' own are ValueErrors
            raise ResultFormatError(f"Cannot read result file {path}: {str(e)[:200]}. Is it a result.json?",
                                    path) from None
        try:
            return cls.from_dict(d)
        except ResultFormatError as e:
            raise ResultFormatError(f"{path}: {e.message}", path) from None


# Dataclasses to JSON-ready values (numbers as :mod:`.json_numbers` writes them) and back.
_FIELDS: dict[type, tuple[str, ...]] = {}
_PLAIN_LEAVES = (str, int, bool, type(None))


def _plain(obj: Any) -> Any:
    """``_clean(asdict(obj))`` in one pass without ``asdict``'s deep copies (a third of writing the
    result of 10,000 models): dataclasses to dicts, tuples to lists, numpy scalars to Python numbers,
    NaN/inf to null/strings."""
    if type(obj) in _PLAIN_LEAVES:
        return obj
    if isinstance(obj, float):
        return to_json_number(obj)
    names = _FIELDS.get(type(obj))
    if names is None and is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELDS.setdefault(type(obj), tuple(f.name for f in fields(obj)))
    if names is not None:
        return {name: _plain(getattr(obj, name)) for name in names}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return _clean(obj)


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    return to_json_number(obj)


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in d.items():
        if k not in names:
            continue  # fields added by newer versions are ignored, not fatal
        if names[k].type in ("float",) and (v is None or isinstance(v, str)):
            v = from_json_number(v)
        kwargs[k] = v
    return cls(**kwargs)
