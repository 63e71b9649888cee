"""A compiled decoder of 2-, 4- and 8-bit codes with a scale per group (compressed-tensors, MLX, NVFP4).

In torch, ``(q - zero) * scale`` rounded to the scale's dtype is five or six passes over a float32 chunk
(unpack, widen, subtract, multiply, round, widen again) and costs tens of times the read of the packed
bytes. This numba kernel makes one: a group of codes takes only ``2 ** bits`` values, computed once per group
into a small table, and each code then reads its value from the table (one byte read, one float write),
with the GIL released so both pass workers decode at once. Each table entry is the torch path's float32
operations on the same operands (for integer codes ``q - zero`` is a small integer, exact in float32), and
the bfloat16 rounding is round-to-nearest-even on the float32 bits, as torch's conversion does. So the
values are bit-identical (``tests/test_compressed_tensors.py``, ``tests/test_mlx_quantized.py``). With 2-
and 4-bit codes, groups of a multiple of 16 codes and AVX-512, a row's tables are made first and then 16
codes at a time pick their values with one ``vpermps`` (:mod:`.permute16`): 0.26 against 0.48 ns a value
for the scalar lookups on a W4A16 layer (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNEL: Callable[..., None] | None = None


def available() -> bool:
    """Whether numba is there to compile the kernel."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _build(permuted: bool = True) -> Callable[..., None]:
    """The kernel (see :func:`decode_codes`); ``permuted=False``: without the AVX-512 lookups, as on CPUs
    that lack them (for tests)."""
    from numba import njit

    from mother_core.io.permute16 import intrinsics

    helpers = intrinsics()
    pick4 = helpers.get("pick_packed4") if permuted else None
    pick2 = helpers.get("pick_packed2") if permuted else None
    use_pick = pick4 is not None and pick2 is not None

    @njit(cache=True, nogil=True, inline="always")
    def _round_bf16(u: np.uint32) -> np.uint32:  # pragma: no cover - compiled
        """Round-to-nearest-even of float32 bits to their top 16 (bfloat16), as torch's ``.to(bfloat16)``."""
        return (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)

    @njit(cache=True, nogil=True, inline="always")
    def _table(lut: np.ndarray, lut_bits: np.ndarray, t: int, levels: np.ndarray, s: np.float32, z: np.float32,
               round_bf16: bool, affine: bool) -> None:  # pragma: no cover - compiled
        """The group's value of every code into ``lut[t:]``."""
        for k in range(levels.shape[0]):
            if affine:  # MLX: q * scale + bias, each operation rounded to the scale's dtype
                lut[t + k] = levels[k] * s
                if round_bf16:
                    lut_bits[t + k] = _round_bf16(lut_bits[t + k])
                lut[t + k] += z
            else:
                lut[t + k] = (levels[k] - z) * s
            if round_bf16:
                lut_bits[t + k] = _round_bf16(lut_bits[t + k])

    @njit(cache=True, nogil=True)
    def decode_codes(codes: np.ndarray, bits: int, levels: np.ndarray, scale: np.ndarray, zero: np.ndarray,
                     round_bf16: bool, affine: bool, out: np.ndarray) -> None:  # pragma: no cover - compiled
        rows, cols = out.shape
        groups = scale.shape[1]
        size = cols // groups
        # A group has only 2 ** bits distinct values: computed (and rounded) once, then each code looks
        # its value up, so the loop over the codes is a byte read and a float write. With 2- and 4-bit
        # codes and AVX-512, 16 codes at a time with one vpermps (:mod:`.permute16`), from tables made
        # for the whole row first (a table picked from right after it was written stalls the load).
        vectors = use_pick and bits != 8 and size % 16 == 0
        width = 16 if vectors else levels.shape[0]  # a table's place in ``lut``: 16 floats for the vectors
        lut = np.zeros(width * (groups if vectors else 1), np.float32)
        lut_bits = lut.view(np.uint32)
        per_byte = 8 // bits
        step = 16 // per_byte  # bytes of 16 codes
        for r in range(rows):
            src = codes[r]
            dst = out[r]
            if vectors:
                for g in range(groups):
                    _table(lut, lut_bits, g * 16, levels, scale[r, g], zero[r, g], round_bf16, affine)
                for g in range(groups):
                    c0 = g * size
                    if bits == 4:
                        for j in range(c0 // 2, (c0 + size) // 2, step):
                            pick4(dst, 2 * j, lut, g * 16, src, j)  # type: ignore[misc]
                    else:
                        for j in range(c0 // 4, (c0 + size) // 4, step):
                            pick2(dst, 4 * j, lut, g * 16, src, j)  # type: ignore[misc]
                continue
            for g in range(groups):
                _table(lut, lut_bits, 0, levels, scale[r, g], zero[r, g], round_bf16, affine)
                c0 = g * size
                if bits == 8:
                    for c in range(c0, c0 + size):
                        dst[c] = lut[src[c]]
                elif bits == 4:
                    for j in range(c0 // 2, (c0 + size) // 2):
                        b = src[j]
                        dst[2 * j] = lut[b & 15]
                        dst[2 * j + 1] = lut[b >> 4]
                else:
                    for j in range(c0 // 4, (c0 + size) // 4):
                        b = src[j]
                        dst[4 * j] = lut[b & 3]
                        dst[4 * j + 1] = lut[(b >> 2) & 3]
                        dst[4 * j + 2] = lut[(b >> 4) & 3]
                        dst[4 * j + 3] = lut[b >> 6]

    return decode_codes


def integer_levels(bits: int, signed: bool = False, offset: bool = True) -> np.ndarray:
    """The value of each ``bits``-bit code as float32: ``code - 2 ** (bits - 1)`` for offset codes
    (compressed-tensors' packing), two's complement for ``signed`` int8, the code itself otherwise (MLX)."""
    codes = np.arange(1 << bits, dtype=np.int64)
    if signed:
        codes = np.where(codes >= 1 << (bits - 1), codes - (1 << bits), codes)
    elif offset:
        codes = codes - (1 << (bits - 1))
    return codes.astype(np.float32)


def decode_codes(codes: np.ndarray, bits: int, levels: np.ndarray, scale: np.ndarray, zero: np.ndarray | None,
                 round_bf16: bool, out: np.ndarray, affine: bool = False) -> np.ndarray:
    """``out[r, c] = (levels[code(r, c)] - zero[r, g]) * scale[r, g]`` with ``g`` the column's group, in one
    pass (with ``affine``: ``levels[code] * scale + zero``, MLX's form, ``zero`` its biases).

    Parameters
    ----------
    codes : numpy.ndarray
        uint8 (rows, bytes): ``8 // bits`` codes a byte, lowest bits first (the little-endian bytes of
        int32 words packed that way, or int8 codes viewed as uint8).
    bits : int
        2, 4 or 8.
    levels : numpy.ndarray
        float32 (2 ** bits,): the value each code stands for (:func:`integer_levels`, or FP4's E2M1 values).
    scale : numpy.ndarray
        float32 (rows, groups); the groups split the columns evenly, in whole bytes of codes.
    zero : numpy.ndarray, optional
        float32 (rows, groups) zero points (MLX: biases); None for none.
    round_bf16 : bool
        Round each value to bfloat16 (the library computes in a bfloat16 scale's dtype); with ``affine``,
        the product and the sum each, as bfloat16 arithmetic does.
    out : numpy.ndarray
        float32 (rows, cols), contiguous; filled in place and returned.
    """
    rows, cols = out.shape
    if bits not in (2, 4, 8) or codes.dtype != np.uint8 or codes.shape[0] != rows \
            or codes.shape[1] * (8 // bits) < cols or scale.dtype != np.float32 or scale.shape[0] != rows \
            or cols % scale.shape[1] or (cols // scale.shape[1]) % (8 // bits) \
            or out.dtype != np.float32 or not out.flags.c_contiguous or levels.shape != (1 << bits,) \
            or (zero is not None and zero.shape != scale.shape):
        raise ValueError(f"decode_codes: codes {codes.dtype}{codes.shape}, scale {scale.dtype}{scale.shape}, "
                         f"out {out.dtype}{out.shape} do not fit {bits}-bit codes")
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    zeros = np.zeros_like(scale) if zero is None else np.ascontiguousarray(zero, dtype=np.float32)
    _KERNEL(np.ascontiguousarray(codes), bits, np.ascontiguousarray(levels, dtype=np.float32),
            np.ascontiguousarray(scale), zeros, round_bf16, affine, out)
    return out
