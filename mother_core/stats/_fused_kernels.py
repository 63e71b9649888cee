"""The compiled kernels behind :mod:`mother_core.stats.fused` (imported on first use: needs numba).

Each driver widens one block of :data:`~mother_core.stats.fused.KERNEL_BLOCK` columns of the stored
chunk (given as its raw bits) into a float32 scratch block and hands it to the block routine. Drivers
take concrete array types only (no function arguments), so numba's on-disk cache serves every later
process.

``fastmath`` lets LLVM split the fp32 block reductions over SIMD lanes (a cascade of partial sums,
more accurate than one serial sum). Non-finite weights make that tensor's statistics non-finite
either way, so the NaN/Inf assumptions it also makes cost nothing.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, fastmath=True, cache=True, boundscheck=False)


@_jit
def _widen(raw, shift, j0, w, xs):  # pragma: no cover - compiled
    # ``raw`` holds the bits: uint16 for bfloat16 (the top half of a float32: shift 16), uint32 for
    # float32 (shift 0). One routine, compiled once per bit width.
    bits = xs.view(np.uint32)
    for r in range(raw.shape[0]):
        src = raw[r, j0 : j0 + w]  # index a slice by c >= 0: a computed index (j0 + c) would need
        dst = bits[r]  # numba's negative-index check, which keeps LLVM from vectorising (7x slower)
        for c in range(w):
            dst[c] = np.uint32(src[c]) << shift


@_jit
def _block_stats(xs, w, k, want_gram, y, colmean, means, sums, gram):  # pragma: no cover - compiled
    """Row means and sums of d..d^4 of block ``k`` (in ``xs[:, :w]``), and its column-centred Gram."""
    m = xs.shape[0]
    for c in range(w):
        colmean[c] = 0
    for r in range(m):
        xr = xs[r]
        total = 0.0  # float64: the block mean is the origin of the sums below
        for c in range(w):
            total += xr[c]
            colmean[c] += xr[c]
        mu = np.float32(total / w)
        s1 = np.float32(0)
        s2 = np.float32(0)
        s3 = np.float32(0)
        s4 = np.float32(0)
        for c in range(w):
            d = xr[c] - mu
            d2 = d * d
            s1 += d
            s2 += d2
            s3 += d2 * d
            s4 += d2 * d2
        means[k, r] = mu
        sums[k, 0, r] = s1
        sums[k, 1, r] = s2
        sums[k, 2, r] = s3
        sums[k, 3, r] = s4
    if not want_gram:
        return
    inv_m = np.float32(1.0 / m)
    for c in range(w):
        colmean[c] *= inv_m
    for r in range(m):
        xr = xs[r]
        yr = y[r]
        for c in range(w):
            yr[c] = xr[c] - colmean[c]
    _gram_add(y, w, gram)


@_jit
def _gram_add(y, w, gram):  # pragma: no cover - compiled
    """Add the Gram matrix of ``y[:, :w]`` to the upper triangle of ``gram`` (fp32 here, float64 there).

    Rows go in 4 x 4 tiles: each column's 8 loads feed 16 multiply-adds held in registers, against
    2 loads per multiply-add for one dot product at a time (2.5x faster at 8 models). Rows left over
    past a multiple of 4 are paired one dot product at a time.
    """
    m = y.shape[0]
    m4 = m - m % 4
    for r0 in range(0, m4, 4):
        a0, a1, a2, a3 = y[r0], y[r0 + 1], y[r0 + 2], y[r0 + 3]
        for s0 in range(r0, m4, 4):
            b0, b1, b2, b3 = y[s0], y[s0 + 1], y[s0 + 2], y[s0 + 3]
            g00 = g01 = g02 = g03 = g10 = g11 = g12 = g13 = np.float32(0)
            g20 = g21 = g22 = g23 = g30 = g31 = g32 = g33 = np.float32(0)
            for c in range(w):
                x0, x1, x2, x3 = a0[c], a1[c], a2[c], a3[c]
                z0, z1, z2, z3 = b0[c], b1[c], b2[c], b3[c]
                g00 += x0 * z0
                g01 += x0 * z1
                g02 += x0 * z2
                g03 += x0 * z3
                g10 += x1 * z0
                g11 += x1 * z1
                g12 += x1 * z2
                g13 += x1 * z3
                g20 += x2 * z0
                g21 += x2 * z1
                g22 += x2 * z2
                g23 += x2 * z3
                g30 += x3 * z0
                g31 += x3 * z1
                g32 += x3 * z2
                g33 += x3 * z3
            tile = ((g00, g01, g02, g03), (g10, g11, g12, g13), (g20, g21, g22, g23), (g30, g31, g32, g33))
            for i in range(4):
                for j in range(4):
                    if r0 + i <= s0 + j:  # diagonal tiles: the upper triangle only
                        gram[r0 + i, s0 + j] += tile[i][j]
    for r in range(m):
        yr = y[r]
        for s in range(max(r, m4), m):
            ys = y[s]
            g = np.float32(0)
            for c in range(w):
                g += yr[c] * ys[c]
            gram[r, s] += g


@_jit
def _pair_block(xs, w, i, j, out):  # pragma: no cover - compiled
    for p in range(len(i)):
        a = xs[i[p]]
        b = xs[j[p]]
        acc = np.float32(0)
        for c in range(w):
            d = a[c] - b[c]
            acc += d * d
        out[p] += acc


@_jit
def reduce_blocks(raw, shift, block, want_gram, means, sums, gram):  # pragma: no cover - compiled
    """Block statistics of ``raw`` (M, n) float bits; see :func:`fused.reduce_chunk`."""
    m, n = raw.shape
    xs = np.empty((m, block), np.float32)
    y = np.empty((m, block), np.float32)
    colmean = np.empty(block, np.float32)
    for k, j0 in enumerate(range(0, n, block)):
        w = min(n, j0 + block) - j0
        _widen(raw, shift, j0, w, xs)
        _block_stats(xs, w, k, want_gram, y, colmean, means, sums, gram)


@_jit
def combine_blocks(n, block, means, sums, out):  # pragma: no cover - compiled
    """Mean and central sums M2..M4 per row (``out`` (4, M) float64) from the blocks of ``reduce_blocks``.

    Each block's sums are about its fp32 mean; their residual first sum and the shift to the grand mean
    are folded in exactly, in float64 (Pébay 2008, as ``moments._combine_blocks``).
    """
    nblocks, m = means.shape
    for r in range(m):
        total = 0.0
        for k in range(nblocks):
            cnt = min(block, n - k * block)
            total += np.float64(means[k, r]) * cnt + sums[k, 0, r]
        mean = total / n
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for k in range(nblocks):
            cnt = min(block, n - k * block)
            d = np.float64(means[k, r]) - mean
            s1 = np.float64(sums[k, 0, r])
            s2 = np.float64(sums[k, 1, r])
            s3 = np.float64(sums[k, 2, r])
            s4 = np.float64(sums[k, 3, r])
            m2 += s2 + 2 * d * s1 + cnt * d * d
            m3 += s3 + 3 * d * s2 + 3 * d * d * s1 + cnt * d * d * d
            m4 += s4 + 4 * d * s3 + 6 * d * d * s2 + 4 * d * d * d * s1 + cnt * d * d * d * d
        # A constant row leaves only rounding residue: see moments._combine_blocks.
        if m2 <= n * (abs(mean) * 2.0**-24) ** 2 * 1e-3:
            m2 = 0.0
            m3 = 0.0
            m4 = 0.0
        out[0, r] = mean
        out[1, r] = m2
        out[2, r] = m3
        out[3, r] = m4


@_jit
def pair_blocks(raw, shift, block, i, j, out):  # pragma: no cover - compiled
    """Explicit squared distances of row pairs (i, j) of ``raw`` (float bits); see :func:`fused.pair_sq_dists`."""
    m, n = raw.shape
    xs = np.empty((m, block), np.float32)
    for j0 in range(0, n, block):
        w = min(n, j0 + block) - j0
        _widen(raw, shift, j0, w, xs)
        _pair_block(xs, w, i, j, out)
