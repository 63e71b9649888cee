"""A compiled decoder of HQQ's codes packed down the rows (:mod:`mother_core.io.hqq_quantized`).

HQQ packs the codes of a grouped weight down its rows (row ``i`` of the grouped matrix sits in one slot of
row ``i % P`` of ``W_q``), so the compiled decoder of codes packed along a row
(:mod:`mother_core.io.compressed_fast`) does not apply. In torch, ``(code - zero) * scale`` in the compute
dtype is a shift, a mask, a widening, two rounded operations and a copy per value, and a chunk's small
torch operations also wait on torch's thread pool whenever the machine is busy. This numba kernel makes
one pass with the GIL released: each code is shifted out of its stored word, and its value is
``round(round(code - zero) * scale)``, each operation in float32 and rounded to the compute dtype, as
torch's CPU and CUDA kernels compute bfloat16 and float16 arithmetic (in float32, then rounded to nearest
even). With one scale and zero a grouped row (HQQ's default ``axis`` 1) a row's ``2 ** bits`` values are
computed once into a small table that its codes look up. The values are the torch path's (and the
library's), bit for bit: ``tests/test_hqq_quantized.py`` compares both with ``HQQLinear.dequantize``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNEL: Callable[..., None] | None = None

#: How a value is rounded after each operation: not (float32 compute dtype), to bfloat16, to float16.
ROUND_NONE, ROUND_BF16, ROUND_F16 = 0, 1, 2


def _build() -> Callable[..., None]:
    from numba import njit

    @njit(cache=True, nogil=True, inline="always")
    def _rounded(x: np.float32, mode: int, f: np.ndarray, u: np.ndarray) -> np.float32:  # pragma: no cover
        """``x`` rounded to nearest even in the compute dtype, as a float32 (``f`` / ``u``: one float32 and
        its bits, a scratch pair)."""
        if mode == 0:
            return x
        f[0] = x
        bits = u[0]
        sign = bits & np.uint32(0x80000000)
        mag = bits & np.uint32(0x7FFFFFFF)
        if mag >= np.uint32(0x7F800000):  # infinity or NaN: kept
            return x
        if mode == 1:  # bfloat16: the top 16 bits, as torch's conversion rounds them
            u[0] = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
            return f[0]
        if mag >= np.uint32(0x477FF000):  # 65520 and above: beyond float16's largest value, infinity
            u[0] = sign | np.uint32(0x7F800000)
            return f[0]
        if mag >= np.uint32(0x38800000):  # a normal float16 (>= 2 ** -14): 10 bits of mantissa kept
            u[0] = sign | ((mag + np.uint32(0x0FFF) + ((mag >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000))
            return f[0]
        # a float16 subnormal: a multiple of 2 ** -24; the scalings by powers of two are exact in float32
        q = np.float32(np.rint(abs(x) * np.float32(16777216.0)) * np.float32(5.9604645e-08))
        return -q if sign else q

    @njit(cache=True, nogil=True)
    def decode(words: np.ndarray, source_row: np.ndarray, shift: np.ndarray, mask: int, zero: np.ndarray,
               scale: np.ndarray, per_column: bool, mode: int, offset: int,
               out: np.ndarray) -> None:  # pragma: no cover - compiled
        rows = source_row.shape[0]
        cols = words.shape[1]
        n = out.shape[0]
        f = np.empty(1, np.float32)
        u = f.view(np.uint32)
        levels = mask + 1
        table = np.empty(levels, np.float32)
        use_table = not per_column and 2 * levels <= cols
        for i in range(rows):
            base = i * cols - offset  # the flat position of this grouped row's first code in ``out``
            j0 = max(0, -base)
            j1 = min(cols, n - base)
            if j1 <= j0:
                continue
            w = words[source_row[i]]
            s = shift[i]
            if use_table:  # one zero and scale a row: its 2 ** bits values once
                z, sc = zero[i], scale[i]
                for k in range(levels):
                    table[k] = _rounded(_rounded(np.float32(k) - z, mode, f, u) * sc, mode, f, u)
                for j in range(j0, j1):
                    out[base + j] = table[(np.int64(w[j]) >> s) & mask]
            else:
                for j in range(j0, j1):
                    g = j if per_column else i
                    code = np.float32((np.int64(w[j]) >> s) & mask)
                    out[base + j] = _rounded(_rounded(code - zero[g], mode, f, u) * scale[g], mode, f, u)

    return decode


def decode(words: np.ndarray, source_row: np.ndarray, shift: np.ndarray, bits: int, zero: np.ndarray,
           scale: np.ndarray, per_column: bool, mode: int, offset: int, out: np.ndarray) -> np.ndarray:
    """``out[i * C + j - offset] = round(round(code(i, j) - zero) * scale)`` for the positions that fall in
    ``out`` (threads may fill disjoint rows of one ``out`` at once), with
    ``code(i, j) = (words[source_row[i], j] >> shift[i]) & (2 ** bits - 1)``.

    Parameters
    ----------
    words : numpy.ndarray
        uint8 or int32 (stored rows, C): the packed rows a chunk needs.
    source_row, shift : numpy.ndarray
        int64 (rows,): for each grouped row of the chunk, its row in ``words`` and the shift of its slot.
    bits : int
        Bits a code.
    zero, scale : numpy.ndarray
        float32, the compute dtype's values: one a grouped row (rows,), or with ``per_column`` one a column
        (C,).
    per_column : bool
        The zero and scale are one a column (HQQ's ``axis`` 0).
    mode : int
        :data:`ROUND_NONE`, :data:`ROUND_BF16` or :data:`ROUND_F16`: the compute dtype.
    offset : int
        Flat position of ``out[0]`` from the first grouped row's first code (negative: the rows start
        inside ``out``).
    out : numpy.ndarray
        float32, 1-D, contiguous: the positions that the rows cover are written, the others left.
    """
    rows = source_row.shape[0]
    groups = words.shape[1] if per_column else rows
    if words.ndim != 2 or words.dtype not in (np.uint8, np.int32) or shift.shape != (rows,) \
            or zero.shape != (groups,) or scale.shape != (groups,) or zero.dtype != np.float32 \
            or scale.dtype != np.float32 or out.dtype != np.float32 or out.ndim != 1 \
            or not out.flags.c_contiguous or mode not in (ROUND_NONE, ROUND_BF16, ROUND_F16) \
            or (rows and (source_row.min() < 0 or source_row.max() >= words.shape[0])) or not 1 <= bits <= 8:
        raise ValueError(f"hqq decode: words {words.dtype}{words.shape}, zero {zero.dtype}{zero.shape}, "
                         f"out {out.dtype}{out.shape} do not fit {rows} rows of {bits}-bit codes")
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    _KERNEL(np.ascontiguousarray(words), np.ascontiguousarray(source_row, dtype=np.int64),
            np.ascontiguousarray(shift, dtype=np.int64), (1 << bits) - 1, np.ascontiguousarray(zero),
            np.ascontiguousarray(scale), per_column, mode, offset, out)
    return out
