"""The compiled kernels behind :mod:`mother_core.stats.fused` (imported on first use: needs numba).

``reduce_blocks`` widens one block of :data:`~mother_core.stats.fused.KERNEL_BLOCK` columns of the
stored data (given as its raw bits) at a time into a float32 scratch block, takes its moments and adds
its pairwise squared distances and counts of exactly equal entries; ``combine_blocks`` turns the
per-block moments into central moments; ``equal_counts_*`` count equal entries alone (the chunk path).
They take concrete array types only (no function arguments), so numba's on-disk cache serves every
later process.

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
def reduce_blocks(raw, shift, block, k0, want_dist, counts, means, sums, dist, eq):  # pragma: no cover - compiled
    """Statistics of ``raw`` (M, n) float bits, block by block from block index ``k0``; returns the next
    free block index. Per block k: ``counts[k]`` its width, ``means[k]`` each row's fp32 mean (the origin
    of that block's sums), ``sums[k]`` the sums of d, d^2, d^3, d^4 about it; and, with ``want_dist``,
    the block's squared distances added to ``dist`` and its counts of exactly equal entries to ``eq``
    (float64, i < j)."""
    m, n = raw.shape
    xs = np.empty((m, block), np.float32)
    k = k0
    for j0 in range(0, n, block):
        w = min(n, j0 + block) - j0
        _widen(raw, shift, j0, w, xs)
        counts[k] = w
        _block_moments(xs, w, k, means, sums)
        if want_dist:
            _pair_sq_add(xs, w, dist)
            if shift == 16:
                _pair_eq_bits(raw, j0, w, eq)
            else:
                _pair_eq_add(xs, 0, w, eq)
        k += 1
    return k


@_jit
def _block_moments(xs, w, k, means, sums):  # pragma: no cover - compiled
    for r in range(xs.shape[0]):
        xr = xs[r]
        total = 0.0  # float64: the block mean is the origin of the sums below
        for c in range(w):
            total += xr[c]
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


@_jit
def _pair_sq_add(xs, w, dist):  # pragma: no cover - compiled
    """Add sum((x_i - x_j)^2) over the block's ``w`` columns to ``dist[i, j]`` for i < j.

    From explicit differences: a difference of two nearly equal floats is exact (Sterbenz), so a light
    fine-tune or a frozen layer loses nothing to cancellation (no Gram identity, nothing recomputed).
    Rows go in 4 x 4 tiles: each column's 8 loads feed 16 subtract-square-adds held in registers
    (2.5x faster here than centring the block and adding its Gram). fp32 within a block, float64 across.
    """
    m = xs.shape[0]
    m4 = m - m % 4
    for r0 in range(0, m4, 4):
        a0, a1, a2, a3 = xs[r0], xs[r0 + 1], xs[r0 + 2], xs[r0 + 3]
        for s0 in range(r0, m4, 4):
            b0, b1, b2, b3 = xs[s0], xs[s0 + 1], xs[s0 + 2], xs[s0 + 3]
            g00 = g01 = g02 = g03 = g10 = g11 = g12 = g13 = np.float32(0)
            g20 = g21 = g22 = g23 = g30 = g31 = g32 = g33 = np.float32(0)
            for c in range(w):
                x0, x1, x2, x3 = a0[c], a1[c], a2[c], a3[c]
                z0, z1, z2, z3 = b0[c], b1[c], b2[c], b3[c]
                d00, d01, d02, d03 = x0 - z0, x0 - z1, x0 - z2, x0 - z3
                d10, d11, d12, d13 = x1 - z0, x1 - z1, x1 - z2, x1 - z3
                d20, d21, d22, d23 = x2 - z0, x2 - z1, x2 - z2, x2 - z3
                d30, d31, d32, d33 = x3 - z0, x3 - z1, x3 - z2, x3 - z3
                g00 += d00 * d00
                g01 += d01 * d01
                g02 += d02 * d02
                g03 += d03 * d03
                g10 += d10 * d10
                g11 += d11 * d11
                g12 += d12 * d12
                g13 += d13 * d13
                g20 += d20 * d20
                g21 += d21 * d21
                g22 += d22 * d22
                g23 += d23 * d23
                g30 += d30 * d30
                g31 += d31 * d31
                g32 += d32 * d32
                g33 += d33 * d33
            tile = ((g00, g01, g02, g03), (g10, g11, g12, g13), (g20, g21, g22, g23), (g30, g31, g32, g33))
            for i in range(4):
                for j in range(4):
                    if r0 + i < s0 + j:  # diagonal tiles: above the diagonal only
                        dist[r0 + i, s0 + j] += tile[i][j]
    for r in range(m):  # pairs with a row past the last full tile
        xr = xs[r]
        for s in range(max(r + 1, m4), m):
            xq = xs[s]
            g = np.float32(0)
            for c in range(w):
                d = xr[c] - xq[c]
                g += d * d
            dist[r, s] += g


@_jit
def _pair_eq_add(xs, j0, w, eq):  # pragma: no cover - compiled
    """Add the number of columns ``j0 : j0 + w`` of ``xs`` where x_i == x_j exactly to ``eq[i, j]``, for i < j.

    A TIES / DARE merge keeps many of its inputs' values as they were (docs/RELATIONS.md); every other
    relation changes nearly every entry. Widening is exact, so equal stored values are equal here.
    A loop of its own, in 4 x 4 tiles like :func:`_pair_sq_add`: folded into that loop, the 16 extra
    accumulators spill its registers (2.4x slower); apart, each column's 8 loads feed 16 compares and
    masked adds. Counts are exact in fp32 (a block is far below 2^24 columns).
    """
    one = np.float32(1)
    zero = np.float32(0)
    m = xs.shape[0]
    m4 = m - m % 4
    for r0 in range(0, m4, 4):
        a0, a1 = xs[r0, j0 : j0 + w], xs[r0 + 1, j0 : j0 + w]
        a2, a3 = xs[r0 + 2, j0 : j0 + w], xs[r0 + 3, j0 : j0 + w]
        for s0 in range(r0, m4, 4):
            b0, b1 = xs[s0, j0 : j0 + w], xs[s0 + 1, j0 : j0 + w]
            b2, b3 = xs[s0 + 2, j0 : j0 + w], xs[s0 + 3, j0 : j0 + w]
            e00 = e01 = e02 = e03 = e10 = e11 = e12 = e13 = np.float32(0)
            e20 = e21 = e22 = e23 = e30 = e31 = e32 = e33 = np.float32(0)
            for c in range(w):
                x0, x1, x2, x3 = a0[c], a1[c], a2[c], a3[c]
                z0, z1, z2, z3 = b0[c], b1[c], b2[c], b3[c]
                e00 += one if x0 == z0 else zero
                e01 += one if x0 == z1 else zero
                e02 += one if x0 == z2 else zero
                e03 += one if x0 == z3 else zero
                e10 += one if x1 == z0 else zero
                e11 += one if x1 == z1 else zero
                e12 += one if x1 == z2 else zero
                e13 += one if x1 == z3 else zero
                e20 += one if x2 == z0 else zero
                e21 += one if x2 == z1 else zero
                e22 += one if x2 == z2 else zero
                e23 += one if x2 == z3 else zero
                e30 += one if x3 == z0 else zero
                e31 += one if x3 == z1 else zero
                e32 += one if x3 == z2 else zero
                e33 += one if x3 == z3 else zero
            same = ((e00, e01, e02, e03), (e10, e11, e12, e13), (e20, e21, e22, e23), (e30, e31, e32, e33))
            for i in range(4):
                for j in range(4):
                    if r0 + i < s0 + j:  # diagonal tiles: above the diagonal only
                        eq[r0 + i, s0 + j] += same[i][j]
    for r in range(m):  # pairs with a row past the last full tile
        xr = xs[r, j0 : j0 + w]
        for s in range(max(r + 1, m4), m):
            xq = xs[s, j0 : j0 + w]
            e = np.float32(0)
            for c in range(w):
                e += one if xr[c] == xq[c] else zero
            eq[r, s] += e


@_jit
def _pair_eq_bits(raw, j0, w, eq):  # pragma: no cover - compiled
    """:func:`_pair_eq_add` on bfloat16 as stored (``raw`` uint16 bits, columns ``j0 : j0 + w``): twice the
    values per vector and 16-bit counters (a block's columns fit), ~1.7x faster than on the widened block.
    Equal bits are equal values (a +0 / -0 pair, which the widened compare calls equal, is not: rare)."""
    m = raw.shape[0]
    m4 = m - m % 4
    for r0 in range(0, m4, 4):
        a0, a1 = raw[r0, j0 : j0 + w], raw[r0 + 1, j0 : j0 + w]
        a2, a3 = raw[r0 + 2, j0 : j0 + w], raw[r0 + 3, j0 : j0 + w]
        for s0 in range(r0, m4, 4):
            b0, b1 = raw[s0, j0 : j0 + w], raw[s0 + 1, j0 : j0 + w]
            b2, b3 = raw[s0 + 2, j0 : j0 + w], raw[s0 + 3, j0 : j0 + w]
            e00 = e01 = e02 = e03 = e10 = e11 = e12 = e13 = np.int16(0)
            e20 = e21 = e22 = e23 = e30 = e31 = e32 = e33 = np.int16(0)
            for c in range(w):
                x0, x1, x2, x3 = a0[c], a1[c], a2[c], a3[c]
                z0, z1, z2, z3 = b0[c], b1[c], b2[c], b3[c]
                e00 = np.int16(e00 + np.int16(x0 == z0))
                e01 = np.int16(e01 + np.int16(x0 == z1))
                e02 = np.int16(e02 + np.int16(x0 == z2))
                e03 = np.int16(e03 + np.int16(x0 == z3))
                e10 = np.int16(e10 + np.int16(x1 == z0))
                e11 = np.int16(e11 + np.int16(x1 == z1))
                e12 = np.int16(e12 + np.int16(x1 == z2))
                e13 = np.int16(e13 + np.int16(x1 == z3))
                e20 = np.int16(e20 + np.int16(x2 == z0))
                e21 = np.int16(e21 + np.int16(x2 == z1))
                e22 = np.int16(e22 + np.int16(x2 == z2))
                e23 = np.int16(e23 + np.int16(x2 == z3))
                e30 = np.int16(e30 + np.int16(x3 == z0))
                e31 = np.int16(e31 + np.int16(x3 == z1))
                e32 = np.int16(e32 + np.int16(x3 == z2))
                e33 = np.int16(e33 + np.int16(x3 == z3))
            same = ((e00, e01, e02, e03), (e10, e11, e12, e13), (e20, e21, e22, e23), (e30, e31, e32, e33))
            for i in range(4):
                for j in range(4):
                    if r0 + i < s0 + j:  # diagonal tiles: above the diagonal only
                        eq[r0 + i, s0 + j] += same[i][j]
    for r in range(m):  # pairs with a row past the last full tile
        xr = raw[r, j0 : j0 + w]
        for s in range(max(r + 1, m4), m):
            xq = raw[s, j0 : j0 + w]
            e = np.int16(0)
            for c in range(w):
                e = np.int16(e + np.int16(xr[c] == xq[c]))
            eq[r, s] += e


@_jit
def equal_counts_bits(raw, block, eq):  # pragma: no cover - compiled
    """Counts of exactly equal entries of every pair of rows of ``raw`` (M, n) bfloat16 bits, added to
    ``eq`` (i < j), block by block (the chunk path's rows, when the moments went another way)."""
    n = raw.shape[1]
    for j0 in range(0, n, block):
        _pair_eq_bits(raw, j0, min(n, j0 + block) - j0, eq)


@_jit
def equal_counts_float(x, block, eq):  # pragma: no cover - compiled
    """As :func:`equal_counts_bits`, for float32 rows ``x`` (M, n)."""
    n = x.shape[1]
    for j0 in range(0, n, block):
        _pair_eq_add(x, j0, min(n, j0 + block) - j0, eq)


@_jit
def combine_blocks(counts, nblocks, means, sums, out):  # pragma: no cover - compiled
    """Mean and central sums M2..M4 per row (``out`` (4, M) float64) from the first ``nblocks`` blocks
    written by ``reduce_blocks`` (``counts``: their widths).

    Each block's sums are about its fp32 mean; their residual first sum and the shift to the grand mean
    are folded in exactly, in float64 (Pébay 2008, as ``moments._combine_blocks``).
    """
    m = means.shape[1]
    n = 0.0
    for k in range(nblocks):
        n += counts[k]
    for r in range(m):
        total = 0.0
        for k in range(nblocks):
            total += np.float64(means[k, r]) * counts[k] + sums[k, 0, r]
        mean = total / n
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for k in range(nblocks):
            cnt = counts[k]
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
