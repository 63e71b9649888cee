"""The value object the streaming pass produces and recovery, plots and exports consume."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mother_core.errors import ResultFormatError
from mother_core.io.base import ModelRef, Problem
from mother_core.io.names import ATTENTION_KINDS


@dataclass(frozen=True)
class TensorMeta:
    """One tensor slot: a (normalised name, shape) pair that one or more models hold.

    ``kind`` is the inferred layer kind: one of :data:`mother_core.io.names.LAYER_KINDS`.
    """

    name: str
    shape: tuple[int, ...]
    kind: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_square_attention(self) -> bool:
        """The paper's layer choice: square q/k/v/o attention matrices."""
        return (
            len(self.shape) == 2
            and self.shape[0] == self.shape[1]
            and self.kind in ATTENTION_KINDS
        )


@dataclass
class WeightStatistics:
    """Per-model per-tensor statistics and per-pair per-tensor distances.

    N models, T tensor slots. Arrays hold NaN where a model lacks a slot (or a pair does not share it).

    Attributes
    ----------
    models : list of ModelRef
        The models, in index order.
    tensors : list of TensorMeta
        The tensor slots, in a stable order (sorted by name, then shape).
    present : ndarray of bool, shape (N, T)
    mean, var, kurtosis, norm : ndarray of float64, shape (N, T)
        Population moments of the flattened tensor; ``kurtosis`` is excess kurtosis m4 / m2**2 - 3
        (docs/METHOD.md, "Signals" 2); ``norm`` is the Frobenius norm.
    sq_dist : ndarray of float64, shape (T, N, N)
        Squared L2 distance ||W_i - W_j||^2 of each shared slot; symmetric, zero diagonal.
    equal : ndarray of float64, shape (T, N, N), or None
        How many entries of each shared slot are exactly equal in models i and j (stored values, both
        read in one dtype); symmetric, the slot's size on the diagonal; NaN where not shared or not
        counted (more than ``fused.MAX_EQUAL_MODELS`` models in a slot). None: statistics made before
        the count existed, or by a path that does not take it (the sketch path at scale). A TIES / DARE
        merge keeps a share of its inputs' entries exactly (docs/RELATIONS.md, "Sparse merges").
    skeletons : dict of int -> ndarray (N, k1, k2) float32
        For 2-D slots: each model's fixed random k1 x k2 submatrix (NaN if it lacks the slot), from which
        recovery reads the rank of weight differences (:mod:`mother_core.stats.skeleton`).
    roundoff : ndarray (N,)
        Unit roundoff of each model's coarsest stored float dtype (rank thresholds depend on it).
    finer : ndarray (N, T) of bool, optional
        Slots a model stores in a float dtype finer than its coarsest (a cast that kept some modules in
        float32, as transformers' ``_keep_in_fp32_modules`` does); None when not known.
    problems : list of Problem
        Inputs that were skipped, with the reason.
    settings : dict
        The settings the pass ran with (device, chunking, ...), for provenance.
    """

    models: list[ModelRef]
    tensors: list[TensorMeta]
    present: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    kurtosis: np.ndarray
    norm: np.ndarray
    sq_dist: np.ndarray
    equal: np.ndarray | None = None
    skeletons: dict[int, np.ndarray] = field(default_factory=dict)
    roundoff: np.ndarray | None = None
    finer: np.ndarray | None = None
    problems: list[Problem] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def numel(self) -> np.ndarray:
        """Element count per slot, shape (T,)."""
        return np.array([t.numel for t in self.tensors], dtype=np.int64)

    def shared_numel(self) -> np.ndarray:
        """Number of elements each pair of models shares (same name and shape), shape (N, N)."""
        p = self.present.astype(np.float64)
        return (p * self.numel[None, :]) @ p.T

    def coverage(self) -> np.ndarray:
        """Fraction of model i's float elements that it shares with model j, shape (N, N)."""
        shared = self.shared_numel()
        own = np.diag(shared).copy()
        own[own == 0] = 1
        return shared / own[:, None]

    def index(self, model_id: str) -> int:
        try:
            return self.model_ids.index(model_id)
        except ValueError:
            raise ResultFormatError(f"No model with id {model_id!r} in these statistics.") from None

    # --- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write to ``path`` (.npz with a JSON header); no pickles."""
        header = {
            "models": [asdict(m) for m in self.models],
            "tensors": [asdict(t) for t in self.tensors],
            "problems": [asdict(p) for p in self.problems],
            "settings": self.settings,
        }
        arrays = dict(
            present=self.present, mean=self.mean, var=self.var, kurtosis=self.kurtosis,
            norm=self.norm, sq_dist=self.sq_dist,
        )
        if self.equal is not None:
            arrays["equal"] = self.equal
        if self.roundoff is not None:
            arrays["roundoff"] = self.roundoff
        if self.finer is not None:
            arrays["finer"] = self.finer
        for slot, sk in self.skeletons.items():
            arrays[f"skeleton_{slot}"] = sk
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        np.savez(path, allow_pickle=False, **arrays)  # plain arrays only: loading never needs pickle

    @classmethod
    def load(cls, path: str | Path) -> "WeightStatistics":
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                arrays = {k: z[k] for k in z.files if k != "header"}
        except (OSError, ValueError, KeyError) as e:
            raise ResultFormatError(
                f"Cannot read statistics file {path}: {e}. Delete it and run the pass again.", path
            ) from e
        models = [ModelRef(**{**m, "files": tuple(m["files"]), "adapter_kinds": tuple(m.get("adapter_kinds", ()))})
                  for m in header["models"]]
        tensors = [TensorMeta(t["name"], tuple(t["shape"]), t["kind"]) for t in header["tensors"]]
        skeletons = {int(k.split("_", 1)[1]): arrays.pop(k) for k in list(arrays) if k.startswith("skeleton_")}
        return cls(
            models=models, tensors=tensors, problems=[Problem(**p) for p in header["problems"]],
            settings=header["settings"],
            roundoff=arrays.pop("roundoff", None), finer=arrays.pop("finer", None), skeletons=skeletons, **arrays,
        )
