"""A compiled decoder of HQQ's codes packed down the rows (:mod:`mother_core.io.hqq_quantized`).

HQQ packs the codes of a grouped weight down its rows (row ``i`` of the grouped matrix sits in one slot of
row ``i % P`` of ``W_q``), so the compiled decoder of codes packed along a row
(:mod:`mother_core.io.compressed_fast`) does not apply. In torch, ``(code - zero) * scale`` in the compute
dtype is a shift, a mask, a widening, two rounded operations and a copy per value, and a chunk's small
torch operations also wait on torch's thread pool whenever the machine is busy. This numba kernel makes
one pass with the GIL released: each code is shifted out of its stored word, and its value is
``round(round(code - zero) * scale)``, each operation in float32 and rounded to the compute dtype, as
torch's CPU and CUDA kernels compute bfloat16 and float16 arithmetic (in float32, then rounded to nearest
even). The roundings are integer operations on the float's bits, written with selects so that each row's
loop is vectorised. With one scale and zero a grouped row (HQQ's default ``axis`` 1) and codes of 4 bits
or fewer, a row's 16 possible values are computed once (one vector) and each 16 codes pick theirs with
one AVX-512 ``vpermps`` (:mod:`.permute16`), where the CPU has it. The values are the torch path's (and
the library's), bit for bit: ``tests/test_hqq_quantized.py`` compares both, with and without the
lookups, with ``HQQLinear.dequantize``. On a 4-bit layer the kernel runs at 0.24-0.26 ns a value against
1.3 ns for the former scalar one (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNEL: Callable[..., None] | None = None

#: How a value is rounded after each operation: not (float32 compute dtype), to bfloat16, to float16.
ROUND_NONE, ROUND_BF16, ROUND_F16 = 0, 1, 2


def _build(permuted: bool = True) -> Callable[..., None]:
    """The kernel (see :func:`decode`); ``permuted=False``: without the AVX-512 lookups, as on CPUs that
    lack them (for tests)."""
    from numba import njit

    from mother_core.io.permute16 import intrinsics

    helpers = intrinsics()
    bits, single = helpers["bits"], helpers["single"]
    pick = helpers.get("pick") if permuted else None
    u32 = np.uint32

    # The roundings are written on the float's bits with selects, not branches, so that the compiler
    # vectorises the loops that call them (the former scalar version went through a scratch array and ran
    # one value at a time: 1.3-1.5 ns a value against 0.2-0.6 now, ``benchmarks/RESULTS.md``).
    @njit(cache=True, nogil=True, inline="always")
    def _bf16(x: np.float32) -> np.float32:  # pragma: no cover - compiled
        """``x`` rounded to bfloat16 (nearest even), as torch's conversion rounds it; NaN kept."""
        u = bits(x)
        r = u32(u32(u + u32(0x7FFF)) + u32(u32(u >> u32(16)) & u32(1))) & u32(0xFFFF0000)
        return x if u32(u & u32(0x7FFFFFFF)) > u32(0x7F800000) else single(r)

    @njit(cache=True, nogil=True, inline="always")
    def _f16(x: np.float32) -> np.float32:  # pragma: no cover - compiled
        """``x`` rounded to float16 (nearest even), as a float32: infinity beyond float16's largest value,
        subnormals to multiples of 2 ** -24, infinity and NaN kept."""
        u = bits(x)
        mag = u32(u & u32(0x7FFFFFFF))
        sign = u32(u & u32(0x80000000))
        r = u32(sign | u32(u32(u32(mag + u32(0x0FFF)) + u32(u32(mag >> u32(13)) & u32(1))) & u32(0xFFFFE000)))
        r = u32(sign | u32(0x7F800000)) if mag >= u32(0x477FF000) else r  # 65520 and above: infinity
        r = u if mag >= u32(0x7F800000) else r
        # a float16 subnormal (below 2 ** -14): a multiple of 2 ** -24; the scalings by powers of two are exact
        q = np.float32(np.rint(abs(x) * np.float32(16777216.0)) * np.float32(5.9604645e-08))
        return single(u32(bits(q) | sign)) if mag < u32(0x38800000) else single(r)

    @njit(cache=True, nogil=True, inline="always")
    def _value(code: np.float32, z: np.float32, sc: np.float32, mode: int) -> np.float32:  # pragma: no cover
        """``round(round(code - z) * sc)`` in the compute dtype (``mode``)."""
        if mode == 1:
            return _bf16(_bf16(code - z) * sc)
        if mode == 2:
            return _f16(_f16(code - z) * sc)
        return (code - z) * sc

    @njit(cache=True, nogil=True, inline="always")
    def _row(w: np.ndarray, s: np.int32, m: np.int32, z: np.ndarray, sc: np.ndarray, per_column: bool,
             dst: np.ndarray, mode: int) -> None:  # pragma: no cover - compiled
        """One grouped row's codes ``w`` (shift ``s``, mask ``m``) into ``dst``, one value a code. A loop
        per case, each with one compute dtype, so that each is vectorised (no branch inside)."""
        n = dst.shape[0]
        if per_column:
            if mode == 1:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z[k], sc[k], 1)
            elif mode == 2:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z[k], sc[k], 2)
            else:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z[k], sc[k], 0)
        else:
            z0, s0 = z[0], sc[0]
            if mode == 1:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z0, s0, 1)
            elif mode == 2:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z0, s0, 2)
            else:
                for k in range(n):
                    dst[k] = _value(np.float32(np.int32(np.int32(w[k]) >> s) & m), z0, s0, 0)

    @njit(cache=True, nogil=True, inline="always")
    def _table(table: np.ndarray, z: np.float32, sc: np.float32, mode: int) -> None:  # pragma: no cover
        """The 16 values of codes 0..15 for zero ``z`` and scale ``sc`` (one vector of 16 lanes)."""
        if mode == 1:
            for k in range(16):
                table[k] = _value(np.float32(k), z, sc, 1)
        elif mode == 2:
            for k in range(16):
                table[k] = _value(np.float32(k), z, sc, 2)
        else:
            for k in range(16):
                table[k] = _value(np.float32(k), z, sc, 0)

    use_pick = pick is not None

    @njit(cache=True, nogil=True)
    def decode(words: np.ndarray, shift: int, mask: int, zero: np.ndarray, scale: np.ndarray, per_column: bool,
               mode: int, offset: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
        rows = words.shape[0]
        cols = words.shape[1]
        n = out.shape[0]
        m = np.int32(mask)
        s = np.int32(shift)
        table = np.zeros(16, np.float32)
        # with one zero and scale a grouped row and at most 16 codes (4 bits or fewer), each row's values
        # are made once (16 lanes) and 16 codes at a time pick theirs with one vpermps (AVX-512)
        permuted = use_pick and not per_column and mask < 16
        for i in range(rows):
            base = i * cols - offset  # the flat position of this grouped row's first code in ``out``
            j0 = max(0, -base)
            j1 = min(cols, n - base)
            if j1 <= j0:
                continue
            w = words[i]
            if permuted:
                _table(table, zero[i], scale[i], mode)
                j = j0
                while j + 16 <= j1:
                    pick(out, base + j, table, 0, w, j, s, m)  # type: ignore[misc]
                    j += 16
                for k in range(j, j1):  # the row's last codes (fewer than 16)
                    out[base + k] = table[np.int32(np.int32(w[k]) >> s) & m]
            elif per_column:
                _row(w[j0:j1], s, m, zero[j0:j1], scale[j0:j1], True, out[base + j0:base + j1], mode)
            else:
                _row(w[j0:j1], s, m, zero[i:i + 1], scale[i:i + 1], False, out[base + j0:base + j1], mode)

    return decode


def decode(words: np.ndarray, shift: int, bits: int, zero: np.ndarray, scale: np.ndarray, per_column: bool,
           mode: int, offset: int, out: np.ndarray) -> np.ndarray:
    """``out[i * C + j - offset] = round(round(code(i, j) - zero) * scale)`` for the positions that fall in
    ``out`` (threads may fill disjoint rows of one ``out`` at once), with
    ``code(i, j) = (words[i, j] >> shift) & (2 ** bits - 1)``.

    Parameters
    ----------
    words : numpy.ndarray
        uint8 or int32 (rows, C): packed rows of one slot, one grouped row each (a piece of ``W_q``).
    shift : int
        The right shift of the slot's codes in their words.
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
    # checked here, not in the kernel, which trusts its shapes; a few cheap tests (this runs a piece)
    groups = words.shape[1] if per_column else words.shape[0]
    rows = words.shape[0]
    if words.ndim != 2 or words.dtype not in (np.uint8, np.int32) or not 0 <= shift <= 31 - bits \
            or zero.shape != (groups,) or scale.shape != (groups,) or zero.dtype != np.float32 \
            or scale.dtype != np.float32 or out.dtype != np.float32 or out.ndim != 1 \
            or not out.flags.c_contiguous or mode not in (ROUND_NONE, ROUND_BF16, ROUND_F16) or not 1 <= bits <= 8:
        raise ValueError(f"hqq decode: words {words.dtype}{words.shape}, zero {zero.dtype}{zero.shape}, "
                         f"out {out.dtype}{out.shape} do not fit {rows} rows of {bits}-bit codes")
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    _KERNEL(np.ascontiguousarray(words), int(shift), (1 << bits) - 1, np.ascontiguousarray(zero),
            np.ascontiguousarray(scale), per_column, mode, offset, out)
    return out
