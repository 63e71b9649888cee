"""Compiled kernels of the per-model pass and the candidate pairs' second read (docs/SCALE.md).

Imported on first use by :mod:`mother_core.stats.fingerprint_kernels` (needs numba). Each replaces a
chain of numpy calls that each made a temporary array, on tensors of a few thousand to a few million
elements where call overhead and memory traffic, not arithmetic, set the time:

* ``chunk_moments``: the mean and the central sums M2, M3, M4 of a float32 chunk in float64 (two
  passes, no temporaries; numpy made a float64 copy and three products);
* ``sketch_add``: the CountSketch of :mod:`mother_core.stats.sketch` added into its float64 buckets
  (``np.bincount`` with a weights array made per call);
* ``segment_sq``: per shared tensor of two models, ``||a - b||^2`` in float64 over their flat float32
  vectors (one call per pair instead of four numpy calls per tensor).

They take concrete array types only, so numba's on-disk cache serves every later process.
``fastmath`` lets LLVM split the float64 reductions over SIMD lanes (partial sums: at least as accurate
as one serial sum); non-finite weights make that tensor's values non-finite either way, and the
callers drop such tensors, so the NaN/Inf assumptions it also makes cost nothing.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, fastmath=True, cache=True, boundscheck=False)


@_jit
def chunk_moments(x):  # pragma: no cover - compiled
    """(mean, M2, M3, M4) of the float32 vector ``x`` in float64 (central sums about the mean)."""
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += np.float64(x[i])
    mean = s / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for i in range(n):
        d = np.float64(x[i]) - mean
        d2 = d * d
        m2 += d2
        m3 += d2 * d
        m4 += d2 * d2
    return mean, m2, m3, m4


@_jit
def sketch_add(out, x, pos, buckets, signs, off, take):  # pragma: no cover - compiled
    """``out[buckets[off + i]] += signs[off + i] * x[pos + i]`` for ``i < take`` (float64 buckets)."""
    for i in range(take):
        out[buckets[off + i]] += np.float64(signs[off + i] * x[pos + i])


@_jit
def segment_sq(a, a_start, b, b_start, length, out):  # pragma: no cover - compiled
    """``out[s] = sum((a[a_start[s] + i] - b[b_start[s] + i])^2 for i < length[s])``: each difference
    taken in float32 (exact to rounding, as the reference), squared and summed in float64."""
    for s in range(length.shape[0]):
        sa = a[a_start[s] : a_start[s] + length[s]]  # slices: a computed index would need numba's
        sb = b[b_start[s] : b_start[s] + length[s]]  # negative-index check, which blocks SIMD
        acc = 0.0
        for i in range(length[s]):
            d = np.float64(sa[i] - sb[i])
            acc += d * d
        out[s] = acc
