"""What the detectors hand to recovery: typed links with their evidence, and the pairwise numbers they
share (per-layer relative distances, element coverage, storage precision) from the one streaming pass.

All detectors read :class:`~mother_core.stats.result.WeightStatistics` only: per-model moments and
per-pair, per-layer squared distances. Dot products follow from them (<a, b> = (|a|^2 + |b|^2 -
|a - b|^2) / 2), and an affine combination's residual needs squared distances alone
(:mod:`mother_core.relations.merge`), so the pass stays single and its memory bounded.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics
from mother_core.stats.skeleton import UNIT_ROUNDOFF

#: Median per-layer relative difference, in units of the coarser dtype's unit roundoff, for a conversion
#: (:mod:`.copies`), and what a layer a LoRA left untouched may differ by between dtypes (:mod:`.lowrank`).
#: Round-to-nearest leaves ~0.4 u (RMS) per layer; fine-tunes sit at 1e-2 and more.
CONVERT_TOL = 1.5

#: Float schemes a ``format`` string may name that are plain dtypes (a conversion, not a quantization).
FLOAT_SCHEMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "FP32": "float32",
                 "FP16": "float16", "FLOAT32": "float32", "FLOAT16": "float16", "BFLOAT16": "bfloat16"}


@dataclass(frozen=True)
class TypedLink:
    """One typed lineage decision: ``child`` was made from ``parents`` by ``relation``.

    Attributes
    ----------
    child : int
        Model index.
    parents : tuple of int
        Parent indices, the skeleton parent first (for a merge: largest weight first).
    relation : Relation
    detail : str
        What was estimated ("Q4_0", "bf16 -> fp16", "linear 0.60/0.40").
    confidence : float
        Calibrated probability that the relation and its parents are right.
    weights : tuple of float or None
        Merge coefficients, one per parent.
    evidence : str
        One sentence a person can check.
    parent_confidence : tuple of float or None
        For a merge, each parent's own confidence, in the order of ``parents``: that this parent is one of
        the child's (:func:`mother_core.relations.merge.contest_parents`); ``confidence`` stays the merge's
        own (that the child is a merge at all). None: ``confidence`` for every parent (links written
        before it, and every other relation).
    parent_notes : tuple of str
        For a merge, per parent, what puts it in doubt (a relative that explains the child as well in its
        place); ``""`` where nothing does; ``()`` where not assessed.
    """

    child: int
    parents: tuple[int, ...]
    relation: Relation
    detail: str
    confidence: float
    weights: tuple[float, ...] | None = None
    evidence: str = ""
    parent_confidence: tuple[float, ...] | None = None
    parent_notes: tuple[str, ...] = ()

    def confidence_of(self, k: int) -> float:
        """The confidence of the edge from ``parents[k]``: its own where assessed, else the link's."""
        if self.parent_confidence is not None and k < len(self.parent_confidence):
            return self.parent_confidence[k]
        return self.confidence

    def note_of(self, k: int) -> str:
        """What puts ``parents[k]`` in doubt (:attr:`parent_notes`); ``""`` where nothing does or not assessed."""
        return self.parent_notes[k] if k < len(self.parent_notes) else ""

    def to_dict(self) -> dict:
        return {"child": self.child, "parents": list(self.parents), "relation": self.relation.value,
                "detail": self.detail, "confidence": self.confidence,
                "weights": None if self.weights is None else list(self.weights), "evidence": self.evidence,
                "parent_confidence": None if self.parent_confidence is None else list(self.parent_confidence),
                "parent_notes": list(self.parent_notes)}

    @classmethod
    def from_dict(cls, d: dict) -> TypedLink:
        w = d.get("weights")
        pc = d.get("parent_confidence")
        return cls(int(d["child"]), tuple(int(p) for p in d["parents"]), Relation(d["relation"]), d.get("detail", ""),
                   float(d.get("confidence", math.nan)), None if w is None else tuple(float(x) for x in w),
                   d.get("evidence", ""), None if pc is None else tuple(float(x) for x in pc),
                   tuple(str(x) for x in d.get("parent_notes") or ()))


@dataclass(frozen=True)
class TypedFindings:
    """Everything the detectors decided, before the fine-tune forest is solved.

    ``links`` fix a child's parent(s) (copies, quantizations, merges, adapters); ``labels`` type an
    edge the forest may choose ((parent, child) -> (relation, detail, confidence)); ``notes`` are
    per-model messages (an adapter whose base is absent). ``partial`` are the models that differ from
    a relative on part of their layers only, at low rank (merged LoRAs: the forest places them, the
    additivity refinement leaves them where it did, :func:`mother_core.recovery.typed.refinement_core`).
    """

    links: tuple[TypedLink, ...] = ()
    labels: dict[tuple[int, int], tuple[Relation, str, float]] = field(default_factory=dict)
    notes: tuple[tuple[int, str], ...] = ()
    partial: frozenset[int] = frozenset()


def split_format(fmt: str) -> tuple[str, str | None]:
    """``"gguf:Q4_0"`` -> ``("gguf", "Q4_0")``; ``"safetensors"`` -> ``("safetensors", None)``."""
    container, _, scheme = (fmt or "").partition(":")
    return container, (scheme or None)


def float_scheme(scheme: str | None) -> str | None:
    """The torch dtype name a plain-float scheme names (``F16``, ``MOSTLY_BF16``), else None."""
    if scheme is None:
        return None
    s = scheme.upper()
    for prefix in ("MOSTLY_", "ALL_"):
        s = s.removeprefix(prefix)
    return FLOAT_SCHEMES.get(s)


#: Schemes that name a layout of float weights, not a quantization (a Stable Diffusion, Flux or SD3 single-file
#: checkpoint), and containers whose scheme is the file's layout (Stable Diffusion LoRA files) or the
#: adapter's type (PEFT LoHa, LoKr, IA3: ``peft-lora:loha``).
LAYOUT_SCHEMES = frozenset({"sd-single-file", "flux-single-file", "sd3-single-file"})
LAYOUT_CONTAINERS = frozenset({"sd-lora", "peft-lora"})


def quantization_scheme(fmt: str) -> str | None:
    """The quantization scheme a model's format string names (``gguf:Q4_0`` -> ``Q4_0``,
    ``safetensors:bnb-nf4`` -> ``bnb-nf4``), or None for float weights (no scheme, a float one, or a layout:
    ``safetensors:sd-single-file``, ``sd-lora:kohya``, ``peft-lora:loha``)."""
    container, scheme = split_format(fmt)
    if scheme is None or float_scheme(scheme) is not None or scheme in LAYOUT_SCHEMES \
            or container in LAYOUT_CONTAINERS:
        return None
    return scheme


def storage_roundoff(stats: WeightStatistics) -> np.ndarray:
    """Unit roundoff of each model's values as stored: the pass's coarsest dtype, or the float type a
    format names (a GGUF F16 file is read as float32 but holds fp16 values)."""
    u = np.full(stats.n_models, UNIT_ROUNDOFF["float32"]) if stats.roundoff is None else stats.roundoff.copy()
    for i, m in enumerate(stats.models):
        dtype = float_scheme(split_format(m.format)[1])
        if dtype is not None:
            u[i] = max(u[i], UNIT_ROUNDOFF[dtype])
    return u


def dtype_name(u: float) -> str:
    """The float type of a unit roundoff ("fp32", "bf16", ...)."""
    names = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
    best = min(UNIT_ROUNDOFF, key=lambda k: abs(math.log(UNIT_ROUNDOFF[k]) - math.log(max(u, 1e-300))))
    return names[best]


def file_times(stats: WeightStatistics) -> list[tuple[int, int]]:
    """(latest mtime, latest ctime) in ns of each model's weight files; (0, 0) when unknown.

    A copy made later has a later ctime even when its mtime was preserved (``cp -p``, ``shutil.copy2``).
    """
    out = []
    for m in stats.models:
        try:
            st = [os.stat(f) for f in m.files]
            out.append((max(s.st_mtime_ns for s in st), max(s.st_ctime_ns for s in st)))
        except (OSError, ValueError):
            out.append((0, 0))
    return out


@dataclass(frozen=True)
class PairLayers:
    """Per-layer pairwise numbers over every float slot (not only the recovery's selection).

    ``rel[l, i, j]``: ||W_i - W_j|| / sqrt((||W_i||^2 + ||W_j||^2) / 2) where both hold slot l, else NaN.
    ``sq[l, i, j]``: squared distance (NaN where not shared). ``scale2[l, i, j]``: the denominator squared.
    ``own[i]``: elements model i holds; ``shared[i, j]``: elements both hold.
    ``equal_share[i, j]``: :func:`equal_share` (NaN where not known); ``equal_counted``: the shares as
    counted where ``equal_share`` was rescaled to a bar (:func:`mother_core.relations.merge.find_merges`).
    """

    rel: np.ndarray
    sq: np.ndarray
    scale2: np.ndarray
    own: np.ndarray
    shared: np.ndarray
    equal_share: np.ndarray
    equal_counted: np.ndarray | None = None

    def relative_sq(self, a: int, b: int, slots: list[int] | None = None) -> float:
        """Squared relative distance of models ``a`` and ``b`` over the tensors (of ``slots``, or all) both
        hold: summed squared distance over summed ``scale2``; inf where they share none."""
        sq = self.sq[:, a, b] if slots is None else self.sq[slots, a, b]
        sc = self.scale2[:, a, b] if slots is None else self.scale2[slots, a, b]
        ok = np.isfinite(sq) & np.isfinite(sc)
        return float(sq[ok].sum() / max(float(sc[ok].sum()), 1e-300)) if ok.any() else np.inf


def pair_layers(stats: WeightStatistics) -> PairLayers:
    """:class:`PairLayers` of every float slot of ``stats`` (one (T, N, N) array each; no weights read)."""
    sq = stats.sq_dist
    norm2 = stats.norm.T ** 2  # (T, N)
    scale2 = (norm2[:, :, None] + norm2[:, None, :]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale2 > 0, np.sqrt(np.maximum(sq, 0)) / np.sqrt(scale2), np.where(np.isnan(sq), np.nan, 0.0))
    shared = stats.shared_numel()
    return PairLayers(rel, sq, scale2, np.diag(shared).copy(), shared, equal_share(stats))


def equal_share(stats: WeightStatistics) -> np.ndarray:
    """(N, N): per pair, the median over the tensors both hold of the share of entries that are exactly
    equal (``WeightStatistics.equal``); NaN where no tensor counts.

    Tensors equal in full (a frozen or copied layer, a layer a LoRA left alone) and tensors not shared
    (another shape, absent, not counted) are left out: they say nothing about how the rest was made.
    The median over tensors is robust to the few small ones (norms, biases) that keep values for other
    reasons. A TIES or DARE merge keeps its base's value wherever every input's task-vector entry was
    trimmed or dropped (Yadav et al. 2023; Yu et al. 2023): 0.32-0.56 of its entries equal to its base
    on the typed zoo's fitting set (seed 0; held-out seeds 1 and 3: 0.24-0.34), while fine-tunes,
    adapters and conversions share none beyond chance and quantized copies at most 0.031 (held-out:
    0.047) with their source (docs/RELATIONS.md, "Sparse merges").
    """
    n = stats.n_models
    if stats.equal is None or not len(stats.tensors):
        return np.full((n, n), np.nan)
    numel = stats.numel.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = stats.equal / numel[:, None, None]
    share = np.where(share < 1.0, share, np.nan)  # NaN stays NaN; fully equal tensors drop out
    counted = np.isfinite(share).any(axis=0)
    out = np.full((n, n), np.nan)
    if counted.any():
        i, j = np.nonzero(counted)
        out[i, j] = np.nanmedian(share[:, i, j], axis=0)
    return out
