"""Per-tensor sketches: a seeded random projection of each tensor to a few hundred numbers.

A sketch lets recovery estimate the squared distance between two models' tensors without reading
either again, so that exact statistics are computed only for the pairs the sketches say are close
(:mod:`mother_core.recovery.candidates`, docs/SCALE.md).

Projection
----------
CountSketch (Charikar, Chen & Farach-Colton 2002), i.e. the sparse Johnson-Lindenstrauss transform
with one non-zero per column (Kane & Nelson 2014): element ``i`` of a tensor with ``n`` elements is
added, with a random sign ``g(i)``, to bucket ``h(i)`` of ``d`` buckets::

    S x = sum_i g(i) x_i e_{h(i)}           (d numbers; O(n) work, no d x n matrix)

``h`` and ``g`` depend only on the seed, the tensor slot (name and shape) and ``i``, never on the
model: every model gets the same projection, so sketches of different models are comparable, and
because ``S`` is linear, ``S a - S b = S (a - b)``. Tensors with at most ``d`` elements are kept
exactly (their "sketch" is the tensor itself, zero-padded).

Error bound
-----------
With fully random ``h`` and ``g`` (they are: drawn from a seeded generator per block of elements),
for any fixed difference ``x = a - b``::

    E ||S x||^2 = ||x||^2,     Var ||S x||^2 = (2 / d) (||x||^4 - ||x||_4^4) <= 2 ||x||^4 / d

so the relative standard error of one tensor's squared distance is at most ``sqrt(2 / d)`` (8.8 % at
``d = 256``), and by Chebyshev ``P(| ||Sx||^2 - ||x||^2 | >= eps ||x||^2) <= 2 / (d eps^2)``: the
Johnson-Lindenstrauss guarantee of a sparse JL transform with sparsity 1 (Kane & Nelson 2014, sec. 1;
Gaussian projections reach the exponential tail ``2 exp(-d eps^2 / 8)`` at ``d`` dense rows, at
``d`` times the cost). Tensors are sketched independently, so a model-level sum of ``T`` comparable
per-tensor terms has its relative error shrink roughly as ``1 / sqrt(T)``. Sketches only choose
candidate pairs; every distance recovery uses is then computed exactly.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from types import ModuleType

import numpy as np

#: Numbers per tensor sketch. Candidate recall on the scale benchmark: see benchmarks/RESULTS.md.
SKETCH_DIM = 256
#: The one seed every model is sketched with (sketches are comparable only under the same seed).
SKETCH_SEED = 20240611
#: Elements per block of the hash tables: tables are generated per block, so a sketch can be
#: accumulated from any row range, and blocks are shared by every model holding the slot.
HASH_BLOCK = 1 << 16
_TABLE_CACHE_BYTES = 256 << 20


@dataclass(frozen=True)
class SketchSpec:
    """How sketches are made; two sketches are comparable only under equal specs."""

    dim: int = SKETCH_DIM
    seed: int = SKETCH_SEED

    def width(self, numel: int) -> int:
        """Length of the sketch of a tensor with ``numel`` elements (exact below ``dim``)."""
        return min(self.dim, max(1, numel))


class _Tables:
    """Bucket and sign tables per (slot, block), generated on demand and kept while they fit."""

    def __init__(self, limit_bytes: int = _TABLE_CACHE_BYTES) -> None:
        self._lru: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._limit = limit_bytes

    def block(self, spec: SketchSpec, slot: str, b: int) -> tuple[np.ndarray, np.ndarray]:
        key = (spec.dim, spec.seed, slot, b)
        hit = self._lru.get(key)
        if hit is not None:
            self._lru.move_to_end(key)
            return hit
        digest = hashlib.sha256(f"{spec.seed}|{slot}".encode()).digest()
        rng = np.random.default_rng([int.from_bytes(digest[:8], "little"), b])
        buckets = rng.integers(0, spec.dim, HASH_BLOCK, dtype=np.int32)
        signs = rng.integers(0, 2, HASH_BLOCK, dtype=np.int8).astype(np.float32) * 2.0 - 1.0
        self._lru[key] = (buckets, signs)
        self._bytes += buckets.nbytes + signs.nbytes
        while self._bytes > self._limit and len(self._lru) > 1:
            _, (ob, os_) = self._lru.popitem(last=False)
            self._bytes -= ob.nbytes + os_.nbytes
        return buckets, signs


_TABLES = _Tables()
_KERNELS: ModuleType | None = None


def kernels() -> ModuleType | None:
    """The compiled kernels of the per-model pass and the pairs' second read
    (:mod:`mother_core.stats._sketch_kernels`), or None where numba is missing or switched off
    (``MOTHER_FUSED_KERNEL=0``, as for :mod:`mother_core.stats.fused`): then numpy computes the same
    values (equal up to float64 rounding of the sums)."""
    global _KERNELS
    from mother_core.stats import fused

    if not fused.enabled():
        return None
    if _KERNELS is None:
        _KERNELS = fused.compiled("_sketch_kernels")
    return _KERNELS


def sketch_into(out: np.ndarray, values: np.ndarray, start: int, numel: int, slot: str,
                spec: SketchSpec = SketchSpec()) -> None:
    """Add the sketch of ``values`` (elements ``[start, start + len(values))`` of a flattened tensor of
    ``numel`` elements in slot ``slot``) to ``out`` (float64, length ``spec.width(numel)``).

    Chunks of one tensor may come in any order: the sketch of the whole is the sum of its chunks'.
    """
    v = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if numel <= spec.dim:  # small tensors are kept exactly
        out[start:start + len(v)] += v
        return
    k = kernels()
    pos = 0
    while pos < len(v):
        i = start + pos
        b, off = divmod(i, HASH_BLOCK)
        take = min(len(v) - pos, HASH_BLOCK - off)
        buckets, signs = _TABLES.block(spec, slot, b)
        if k is not None:
            k.sketch_add(out, v, pos, buckets, signs, off, take)
        else:
            out += np.bincount(buckets[off:off + take], weights=signs[off:off + take] * v[pos:pos + take],
                               minlength=spec.dim)
        pos += take


def sketch(values: np.ndarray, slot: str, spec: SketchSpec = SketchSpec()) -> np.ndarray:
    """The sketch of one whole tensor (float32, length ``spec.width(values.size)``)."""
    v = np.asarray(values).reshape(-1)
    out = np.zeros(spec.width(v.size), dtype=np.float64)
    sketch_into(out, v, 0, v.size, slot, spec)
    return out.astype(np.float32)


def slot_numel(slot: str) -> int:
    """Element count of a slot key ``name|d0,d1,...`` (:func:`mother_core.stats.cache.slot_key`)."""
    shape = slot.rsplit("|", 1)[1]
    return int(np.prod([int(d) for d in shape.split(",") if d], dtype=np.int64)) if shape else 1
