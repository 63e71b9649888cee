"""Compiled dequantizers for the common GGUF types, bit-identical to ``gguf``'s.

:func:`gguf.quants.dequantize` is written with numpy over groups of 16 rows: correct for every type, but
it makes several full-size temporaries per block and runs at a few hundred million values a second, ten
times slower than reading the bytes. These numba kernels decode one block at a time straight into the
output (one pass over the bytes, no temporaries, the GIL released so both pass workers decode at once).
The f16 block scales are widened inside the kernels through a 65,536-entry table (exact: every f16 bit
pattern's float32 value, made once by numpy), so no strided copy of the scales precedes a chunk. The
Q8_0, Q4_0, Q4_1, Q4_K and Q6_K kernels load eight codes before storing their eight values and are
compiled with LLVM's SLP vectorizer on (:func:`slp_vectorised`), so each group of eight becomes a few AVX2
instructions instead of eight scalar conversions (Q8_0 about 4x, Q6_K about 5x faster on one core).

They follow the block layouts of ggml (``ggml-common.h``: ``block_q8_0``, ``block_q4_0``, ``block_q4_1``,
``block_q5_0``, ``block_q5_1``, ``block_q4_K``, ``block_q5_K``, ``block_q6_K``; bf16) exactly as the
package's numpy code reads them (the same float32 operations in the same order), and
``tests/test_formats.py`` checks they agree with it bit for bit on real and random blocks. These are the
types of the files people download (``Q4_K_M`` holds Q4_K and Q6_K tensors, ``Q5_K_M`` Q5_K and Q6_K);
every other type goes through the package.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from mother_core.io import permute16

Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
_KERNELS: dict[str, Kernel] | None = None
_BUILD_LOCK = threading.Lock()  # the pass's two workers may ask for the kernels at once
_F16: np.ndarray | None = None  # f16 bits -> float32

#: bytes and values of one block per type.
_LAYOUT: dict[str, tuple[int, int]] = {
    "Q8_0": (34, 32), "Q4_0": (18, 32), "Q4_1": (20, 32), "Q5_0": (22, 32), "Q5_1": (24, 32),
    "Q4_K": (144, 256), "Q5_K": (176, 256), "Q6_K": (210, 256), "BF16": (2, 1),
}

#: Types the pass may read at half width (bfloat16: the float32 decode rounded to nearest even, as
#: ``torch``'s conversion rounds), when every model of a tensor holds it so (``stats/execute.py``): 4- to
#: 6-bit codes, whose grid error (0.03-0.12 of a weight's spread for Q4, about 0.015 for Q6_K) is 10-70x
#: bfloat16's rounding (0.0016). Q8_0 (0.005) stays float32: bfloat16 would be a third of its grid error.
#: A Q4_K byte decodes to 7.1 bytes of float32; at half width the decoder stores half of that
#: (``benchmarks/RESULTS.md``, "Q4_K at half width").
HALF_TYPES = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"})

HalfKernel = Callable[[np.ndarray, np.ndarray, np.ndarray], None]  # (blocks, f16 table, uint16 out)
_HALF: dict[str, HalfKernel] | None = None
#: Blocks of a type decoded to float32 at a time before they are rounded to bfloat16 (the generic half
#: path): 64 blocks of 256 values are a 64 KiB float32 scratch, which stays in the core's L1/L2.
_HALF_STEP_VALUES = 1 << 14
_SCRATCH = threading.local()  # per-thread float32 scratch of the generic half path


def _build() -> dict[str, Kernel]:  # noqa: C901 - one small kernel per type
    from numba import njit

    sig = "void(uint8[::1], float32[::1], float32[::1])"  # compiled now, inside _slp_vectorised()

    @njit(cache=True, nogil=True, inline="always")
    def h(src: np.ndarray, f16: np.ndarray, p: int) -> np.float32:  # pragma: no cover - compiled
        return f16[np.int64(src[p]) | (np.int64(src[p + 1]) << 8)]

    # Eight codes are loaded before any of their eight values is stored: LLVM cannot prove that ``out``
    # does not overlap ``src``, so a load after a store stays scalar; with all loads first the SLP
    # vectorizer turns each group into one 8-byte load, conversions and one 32-byte store (AVX2).
    @njit(cache=True, nogil=True, inline="always")
    def load8(a: np.ndarray, p: int) -> tuple:  # pragma: no cover - compiled
        return (a[p], a[p + 1], a[p + 2], a[p + 3], a[p + 4], a[p + 5], a[p + 6], a[p + 7])

    @njit(cache=True, nogil=True, inline="always")
    def scaled8(out: np.ndarray, o: int, a: tuple, d: np.float32) -> None:  # pragma: no cover - compiled
        """``out[o + j] = float32(a[j]) * d`` (Q8_0's order of operations)."""
        out[o] = np.float32(np.int32(a[0])) * d
        out[o + 1] = np.float32(np.int32(a[1])) * d
        out[o + 2] = np.float32(np.int32(a[2])) * d
        out[o + 3] = np.float32(np.int32(a[3])) * d
        out[o + 4] = np.float32(np.int32(a[4])) * d
        out[o + 5] = np.float32(np.int32(a[5])) * d
        out[o + 6] = np.float32(np.int32(a[6])) * d
        out[o + 7] = np.float32(np.int32(a[7])) * d

    @njit(cache=True, nogil=True, inline="always")
    def nib8(out: np.ndarray, o: int, a: tuple, shift: int, off: int, s: np.float32,
             m: np.float32) -> None:  # pragma: no cover - compiled
        """``out[o + j] = s * float32(nibble - off) - m`` (Q4_0: off 8, m 0; Q4_1: m = -min; Q4_K)."""
        for j in range(8):  # unrolled by LLVM; every load is already done
            out[o + j] = s * np.float32(np.int32((a[j] >> shift) & 0x0F) - off) - m

    @njit(sig, cache=True, nogil=True)
    def q8_0(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        q = src.view(np.int8)
        for b in range(out.shape[0] // 32):
            p = b * 34
            d = h(src, f16, p)
            for g in range(0, 32, 8):
                scaled8(out, b * 32 + g, load8(q, p + 2 + g), d)

    @njit(sig, cache=True, nogil=True)
    def q4_0(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        zero = np.float32(0.0)  # x - 0 is x, bit for bit: the package's d * (q - 8)
        for b in range(out.shape[0] // 32):
            d = h(src, f16, b * 18)
            for g in range(0, 16, 8):
                a = load8(src, b * 18 + 2 + g)
                nib8(out, b * 32 + g, a, 0, 8, d, zero)
                nib8(out, b * 32 + 16 + g, a, 4, 8, d, zero)

    @njit(sig, cache=True, nogil=True)
    def q4_1(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(out.shape[0] // 32):
            d = h(src, f16, b * 20)
            m = -h(src, f16, b * 20 + 2)  # x - (-m) is x + m, bit for bit
            for g in range(0, 16, 8):
                a = load8(src, b * 20 + 4 + g)
                nib8(out, b * 32 + g, a, 0, 0, d, m)
                nib8(out, b * 32 + 16 + g, a, 4, 0, d, m)

    @njit(sig, cache=True, nogil=True)
    def q5_0(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(out.shape[0] // 32):
            p = b * 22
            d = h(src, f16, p)
            qh = (np.uint32(src[p + 2]) | (np.uint32(src[p + 3]) << 8) | (np.uint32(src[p + 4]) << 16)
                  | (np.uint32(src[p + 5]) << 24))
            o = b * 32
            for i in range(16):
                q = src[p + 6 + i]
                lo = np.int32(q & 0x0F) | (np.int32((qh >> i) & 1) << 4)
                hi = np.int32(q >> 4) | (np.int32((qh >> (i + 16)) & 1) << 4)
                out[o + i] = d * np.float32(lo - 16)
                out[o + 16 + i] = d * np.float32(hi - 16)

    @njit(sig, cache=True, nogil=True)
    def q5_1(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(out.shape[0] // 32):
            p = b * 24
            d = h(src, f16, p)
            m = h(src, f16, p + 2)
            qh = (np.uint32(src[p + 4]) | (np.uint32(src[p + 5]) << 8) | (np.uint32(src[p + 6]) << 16)
                  | (np.uint32(src[p + 7]) << 24))
            o = b * 32
            for i in range(16):
                q = src[p + 8 + i]
                lo = np.int32(q & 0x0F) | (np.int32((qh >> i) & 1) << 4)
                hi = np.int32(q >> 4) | (np.int32((qh >> (i + 16)) & 1) << 4)
                out[o + i] = d * np.float32(lo) + m
                out[o + 16 + i] = d * np.float32(hi) + m

    @njit(cache=True, nogil=True, inline="always")
    def k_scales(src: np.ndarray, s: int, d: np.float32, dmin: np.float32, sc: np.ndarray,
                 mn: np.ndarray) -> None:  # pragma: no cover - compiled
        """The 8 sub-block scales and mins of a Q4_K / Q5_K block (12 bytes of 6-bit values at ``s``)."""
        for j in range(4):
            lo = src[s + j]
            mid = src[s + 4 + j]
            hi = src[s + 8 + j]
            sc[j] = d * np.float32(lo & 0x3F)
            mn[j] = dmin * np.float32(mid & 0x3F)
            sc[4 + j] = d * np.float32((hi & 0x0F) | ((lo >> 2) & 0x30))
            mn[4 + j] = dmin * np.float32((hi >> 4) | ((mid >> 2) & 0x30))

    @njit(sig, cache=True, nogil=True)
    def q4_k(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        sc = np.empty(8, dtype=np.float32)
        mn = np.empty(8, dtype=np.float32)
        for b in range(out.shape[0] // 256):
            p = b * 144
            k_scales(src, p + 4, h(src, f16, p), h(src, f16, p + 2), sc, mn)
            qs = p + 16
            o = b * 256
            for c in range(4):
                s0, m0, s1, m1 = sc[2 * c], mn[2 * c], sc[2 * c + 1], mn[2 * c + 1]
                for g in range(0, 32, 8):
                    a = load8(src, qs + c * 32 + g)
                    nib8(out, o + (2 * c) * 32 + g, a, 0, 0, s0, m0)
                    nib8(out, o + (2 * c + 1) * 32 + g, a, 4, 0, s1, m1)

    @njit(sig, cache=True, nogil=True)
    def q5_k(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        sc = np.empty(8, dtype=np.float32)
        mn = np.empty(8, dtype=np.float32)
        for b in range(out.shape[0] // 256):
            p = b * 176
            k_scales(src, p + 4, h(src, f16, p), h(src, f16, p + 2), sc, mn)
            qh = p + 16
            qs = p + 48
            o = b * 256
            for c in range(4):
                s0, m0, s1, m1 = sc[2 * c], mn[2 * c], sc[2 * c + 1], mn[2 * c + 1]
                for i in range(32):
                    q = src[qs + c * 32 + i]
                    hb = src[qh + i]
                    lo = np.int32(q & 0x0F) | (np.int32((hb >> (2 * c)) & 1) << 4)
                    hi = np.int32(q >> 4) | (np.int32((hb >> (2 * c + 1)) & 1) << 4)
                    out[o + (2 * c) * 32 + i] = s0 * np.float32(lo) - m0
                    out[o + (2 * c + 1) * 32 + i] = s1 * np.float32(hi) - m1

    @njit(sig, cache=True, nogil=True)
    def q6_k(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        sc = np.empty(16, dtype=np.float32)
        signed = src.view(np.int8)
        for b in range(out.shape[0] // 256):
            p = b * 210  # ql[128], qh[64], scales[16] (int8), d (f16)
            d = h(src, f16, p + 208)
            for j in range(16):
                sc[j] = d * np.float32(signed[p + 192 + j])
            o = b * 256
            # value v = 128 * half + 32 * k + i: low nibble of ql[64 * half + 32 * (k & 1) + i] (upper nibble
            # for k >= 2), two high bits from qh[32 * half + i] >> 2k; 16 values per scale.
            for half in range(2):
                for k in range(4):
                    for g in range(0, 32, 8):
                        lo = load8(src, p + 64 * half + 32 * (k & 1) + g)
                        hi = load8(src, p + 128 + 32 * half + g)
                        v0 = 128 * half + 32 * k + g
                        s = sc[v0 >> 4]
                        for j in range(8):
                            q = np.int32((lo[j] >> (4 * (k >> 1))) & 0x0F) | (np.int32((hi[j] >> (2 * k)) & 0x03) << 4)
                            out[o + v0 + j] = s * np.float32(q - 32)

    @njit(sig, cache=True, nogil=True)
    def bf16(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        bits = out.view(np.uint32)
        for i in range(out.shape[0]):
            bits[i] = (np.uint32(src[2 * i]) | (np.uint32(src[2 * i + 1]) << 8)) << 16

    table: dict[str, Kernel] = {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "Q4_K": q4_k,
                               "Q5_K": q5_k, "Q6_K": q6_k, "BF16": bf16}
    permuted = _q4_k_permuted(njit, sig, h) if permute16.available() else None
    if permuted is not None:  # the portable one stays, under another name, for the tests
        table["Q4_K"], table["Q4_K/portable"] = permuted, q4_k
    return table


def _q4_k_permuted(njit: Callable, sig: str, h: Callable, rounded: bool = False) -> Kernel | None:
    """Q4_K with each sub-block's 16 possible values made once and picked by the codes (AVX-512).

    A Q4_K value is ``scale * q - min`` with ``q`` a 4-bit code: each 32-value sub-block has only 16
    possible values. They are computed once per sub-block (the same float32 multiply and subtract as the
    package, so bit for bit its values) into a 16-float register, and each group of 16 codes selects its
    values with one ``vpermps`` (``llvm.x86.avx512.permvar.sf.512``), instead of a convert, a multiply and
    a subtract per value: 1.3x faster where the output stays in cache, and the GGUF reader's Q4_K read
    took 1.3x fewer CPU seconds at low load; with a 16 MiB output both kernels are bound by the stores
    (``benchmarks/RESULTS.md``, ``benchmarks/q4k_kernel.py``). None where it does not compile: the
    portable kernel is used.

    ``rounded``: each table is rounded to bfloat16 first (float32 values whose low 16 bits are zero,
    :func:`_q4_k_half`'s values widened): the float32 reads of a tensor the pass may read at half width.
    """
    try:
        from llvmlite import ir
        from numba import types
        from numba.core import cgutils
        from numba.extending import intrinsic

        @intrinsic
        def two_sub_blocks(typingctx, out, o, src, qs, s0, m0, s1, m1):  # type: ignore[no-untyped-def]
            """``out[o:o+32] = s0 * lo(src[qs:qs+32]) - m0``, ``out[o+32:o+64] = s1 * hi(...) - m1``."""
            sig_ = types.void(out, o, src, qs, s0, m0, s1, m1)

            def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
                out_p, src_p, q_v, o_v, low, high = _sub_block_tables(context, builder, signature, args)
                v16i8, v16i32 = ir.VectorType(ir.IntType(8), 16), ir.VectorType(ir.IntType(32), 16)
                v16f = ir.VectorType(ir.FloatType(), 16)
                if rounded:
                    low, high = _bf16_table(builder, low), _bf16_table(builder, high)
                permute = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v16f, [v16f, v16i32]), "llvm.x86.avx512.permvar.sf.512")
                for half in range(2):
                    at = builder.gep(src_p, [builder.add(q_v, ir.Constant(q_v.type, 16 * half))])
                    codes = builder.zext(builder.load(builder.bitcast(at, v16i8.as_pointer()), align=1), v16i32)
                    for idx, values, off in ((builder.and_(codes, ir.Constant(v16i32, [15] * 16)), low, 16 * half),
                                             (builder.lshr(codes, ir.Constant(v16i32, [4] * 16)), high,
                                              32 + 16 * half)):
                        dst = builder.gep(out_p, [ir.Constant(o_v.type, off)])
                        builder.store(builder.call(permute, [values, idx]), builder.bitcast(dst, v16f.as_pointer()),
                                      align=4)
                return context.get_dummy_value()

            return sig_, codegen

        return _q4_k_blocks(njit, sig, h, two_sub_blocks, cache=not rounded)
    except Exception:  # noqa: BLE001 - an older numba / llvmlite, or the target refuses it: portable kernel
        return None


def _sub_block_tables(context, builder, signature, args):  # type: ignore[no-untyped-def]
    """LLVM IR shared by the Q4_K intrinsics (arguments ``out, o, src, qs, s0, m0, s1, m1``): the output's
    pointer at ``o``, the source's data pointer, ``qs``, ``o``, and the two sub-blocks' 16 possible values
    ``s * k - m`` (k = 0..15) as float32 vectors, with the package's multiply then subtract (no fusing: its
    values bit for bit)."""
    from llvmlite import ir

    out_v, o_v, src_v, q_v, s0v, m0v, s1v, m1v = args
    out_p = builder.gep(context.make_array(signature.args[0])(context, builder, out_v).data, [o_v])
    src_p = context.make_array(signature.args[2])(context, builder, src_v).data
    i32 = ir.IntType(32)
    v16i32, v16f = ir.VectorType(i32, 16), ir.VectorType(ir.FloatType(), 16)

    def splat(x):  # type: ignore[no-untyped-def]
        v = builder.insert_element(ir.Constant(v16f, ir.Undefined), x, ir.Constant(i32, 0))
        return builder.shuffle_vector(v, ir.Constant(v16f, ir.Undefined), ir.Constant(v16i32, [0] * 16))

    codes_k = ir.Constant(v16f, [float(k) for k in range(16)])
    low = builder.fsub(builder.fmul(splat(s0v), codes_k), splat(m0v))
    high = builder.fsub(builder.fmul(splat(s1v), codes_k), splat(m1v))
    return out_p, src_p, q_v, o_v, low, high


def _bf16_bits(builder, values):  # type: ignore[no-untyped-def]
    """LLVM IR: 16 float32 ``values`` rounded to nearest even at bfloat16 (torch's ``round_to_nearest_even``;
    a NaN becomes ``0x7FC0``, as torch makes it), as 16 x i32 holding the bfloat16 bits in their low half."""
    from llvmlite import ir

    v16i32 = ir.VectorType(ir.IntType(32), 16)
    bits = builder.bitcast(values, v16i32)
    lsb = builder.and_(builder.lshr(bits, ir.Constant(v16i32, [16] * 16)), ir.Constant(v16i32, [1] * 16))
    top = builder.lshr(builder.add(builder.add(bits, ir.Constant(v16i32, [0x7FFF] * 16)), lsb),
                       ir.Constant(v16i32, [16] * 16))
    return builder.select(builder.fcmp_unordered("uno", values, values), ir.Constant(v16i32, [0x7FC0] * 16), top)


def _bf16_table(builder, values):  # type: ignore[no-untyped-def]
    """LLVM IR: :func:`_bf16_bits` widened back to float32 (the bits in the top half, the rest zero)."""
    from llvmlite import ir

    v16i32 = ir.VectorType(ir.IntType(32), 16)
    wide = builder.shl(_bf16_bits(builder, values), ir.Constant(v16i32, [16] * 16))
    return builder.bitcast(wide, values.type)


def _q4_k_half(njit: Callable, sig: str, h: Callable) -> HalfKernel | None:
    """Q4_K to bfloat16 bits, 32 values a ``vpermw`` (AVX-512BW).

    As :func:`_q4_k_permuted`, each 32-value sub-block's 16 possible values are made once with the
    package's float32 multiply and subtract; here they are rounded to bfloat16 (nearest even on the bits,
    torch's rounding; a NaN becomes ``0x7FC0``, as torch makes it) into a 32-lane table of 16-bit values
    (the 16 repeated), and the sub-block's 32 codes pick their values with one
    ``llvm.x86.avx512.permvar.hi.512``: a 64-byte store of 32 values, half the bytes of the float32
    kernel's two stores, and one permute where it needs two. Bit for bit the float32 decode rounded
    (``tests/test_formats.py``). None where it does not compile (the generic half path is used).
    """
    try:
        from llvmlite import binding, ir
        from numba import types
        from numba.core import cgutils
        from numba.extending import intrinsic

        if not binding.get_host_cpu_features().get("avx512bw", False):
            return None

        @intrinsic
        def two_sub_blocks_bf16(typingctx, out, o, src, qs, s0, m0, s1, m1):  # type: ignore[no-untyped-def]
            """``out[o:o+32] = bf16(s0 * lo(src[qs:qs+32]) - m0)``, ``out[o+32:o+64] = bf16(s1 * hi(...) - m1)``."""
            sig_ = types.void(out, o, src, qs, s0, m0, s1, m1)

            def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
                out_p, src_p, q_v, o_v, low, high = _sub_block_tables(context, builder, signature, args)
                i32, i16 = ir.IntType(32), ir.IntType(16)
                v16i16, v32i16 = ir.VectorType(i16, 16), ir.VectorType(i16, 32)
                v32i8 = ir.VectorType(ir.IntType(8), 32)

                def rounded(values):  # type: ignore[no-untyped-def]
                    """16 float32 values as bfloat16 bits (nearest even; NaN 0x7FC0), twice: 32 lanes."""
                    narrow = builder.trunc(_bf16_bits(builder, values), v16i16)
                    twice = ir.Constant(ir.VectorType(i32, 32), list(range(16)) * 2)
                    return builder.shuffle_vector(narrow, narrow, twice)

                low, high = rounded(low), rounded(high)
                permute = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v32i16, [v32i16, v32i16]), "llvm.x86.avx512.permvar.hi.512")
                at = builder.gep(src_p, [q_v])
                codes = builder.zext(builder.load(builder.bitcast(at, v32i8.as_pointer()), align=1), v32i16)
                for idx, values, off in ((builder.and_(codes, ir.Constant(v32i16, [15] * 32)), low, 0),
                                         (builder.lshr(codes, ir.Constant(v32i16, [4] * 32)), high, 32)):
                    dst = builder.gep(out_p, [ir.Constant(o_v.type, off)])
                    builder.store(builder.call(permute, [values, idx]), builder.bitcast(dst, v32i16.as_pointer()),
                                  align=2)
                return context.get_dummy_value()

            return sig_, codegen

        return _q4_k_blocks(njit, sig, h, two_sub_blocks_bf16)
    except Exception:  # noqa: BLE001 - an older numba / llvmlite, or the target refuses it: generic path
        return None


def _q4_k_blocks(njit: Callable, sig: str, h: Callable, pick: Callable, cache: bool = True) -> Kernel:
    """The Q4_K block loop shared by the ``vpermps`` / ``vpermw`` kernels: per block its f16 scale and min,
    per pair of sub-blocks their 6-bit scales and mins unpacked (``k_scales``' unpacking) and handed with the
    codes to ``pick``, the intrinsic that makes their values and stores them. ``cache``: off for a second
    kernel of the same signature (the rounded float32 one), which numba's cache would not tell apart."""
    with slp_vectorised():
        @njit(sig, cache=cache, nogil=True)
        def q4_k_blocks(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
            for b in range(out.shape[0] // 256):
                p = b * 144
                d = h(src, f16, p)
                dmin = h(src, f16, p + 2)
                s = p + 4  # 12 bytes of 6-bit scales and mins (k_scales' unpacking, per sub-block pair)
                for c in range(4):
                    j0, j1 = 2 * c, 2 * c + 1
                    if c < 2:
                        s0 = d * np.float32(src[s + j0] & 0x3F)
                        m0 = dmin * np.float32(src[s + 4 + j0] & 0x3F)
                        s1 = d * np.float32(src[s + j1] & 0x3F)
                        m1 = dmin * np.float32(src[s + 4 + j1] & 0x3F)
                    else:
                        k0, k1 = j0 - 4, j1 - 4
                        s0 = d * np.float32((src[s + 8 + k0] & 0x0F) | ((src[s + k0] >> 2) & 0x30))
                        m0 = dmin * np.float32((src[s + 8 + k0] >> 4) | ((src[s + 4 + k0] >> 2) & 0x30))
                        s1 = d * np.float32((src[s + 8 + k1] & 0x0F) | ((src[s + k1] >> 2) & 0x30))
                        m1 = dmin * np.float32((src[s + 8 + k1] >> 4) | ((src[s + 4 + k1] >> 2) & 0x30))
                    pick(out, b * 256 + 64 * c, src, p + 16 + 32 * c, s0, m0, s1, m1)

    return q4_k_blocks


@contextmanager
def slp_vectorised() -> Iterator[None]:
    """Compile with LLVM's SLP (straight-line) vectorizer on, for these kernels only.

    Numba turns it off by default since 0.57 (``NUMBA_SLP_VECTORIZE``, numba issue #8705: one miscompiled
    pattern elsewhere) and reads the setting when it builds each function's pass pipeline, so it is set
    around the eager (signature-given) compilation of the kernels below and put back after; the kernels'
    bit-identity with ``gguf.quants`` is what ``tests/test_formats.py`` checks. Without it the decoders run
    one scalar conversion per value (about twice as slow on Q8_0).
    """
    from numba.core import config

    old = getattr(config, "SLP_VECTORIZE", 0)
    setattr(config, "SLP_VECTORIZE", 1)  # noqa: B010 - set at run time by numba's config module
    try:
        yield
    finally:
        setattr(config, "SLP_VECTORIZE", old)  # noqa: B010


def _build_half() -> dict[str, HalfKernel]:
    """The kernels that round to bfloat16, by type name: ``"<type>"`` writes the bfloat16 bits (``uint16``),
    ``"<type>@float32"`` the same values widened (float32 whose low 16 bits are zero), each a dedicated
    kernel where one compiles (Q4_K: :func:`_q4_k_half` and :func:`_q4_k_permuted` with rounded tables) or
    the generic path (``"<type>/generic"``, ``"<type>@float32/generic"``): blocks decoded to float32 by the
    type's kernel into a small per-thread scratch that stays in cache, then rounded. All give the float32
    decode rounded to nearest even, bit for bit (``tests/test_formats.py``)."""
    from numba import njit

    table = kernels()
    to_bits, to_float = _roundings(njit)
    half: dict[str, HalfKernel] = {}
    for name in HALF_TYPES:
        half[f"{name}/generic"] = _generic_half(table[name], to_bits, *_LAYOUT[name])
        half[f"{name}@float32/generic"] = _generic_half(table[name], to_float, *_LAYOUT[name])
    if permute16.available():

        @njit(cache=True, nogil=True, inline="always")
        def h(src: np.ndarray, f16: np.ndarray, p: int) -> np.float32:  # pragma: no cover - compiled
            return f16[np.int64(src[p]) | (np.int64(src[p + 1]) << 8)]

        with slp_vectorised():
            bits = _q4_k_half(njit, "void(uint8[::1], float32[::1], uint16[::1])", h)
            wide = _q4_k_permuted(njit, "void(uint8[::1], float32[::1], float32[::1])", h, rounded=True)
        if bits is not None:
            half["Q4_K"] = bits
        if wide is not None:
            half["Q4_K@float32"] = wide
    return half


def _roundings(njit: Callable) -> tuple[Callable[[np.ndarray, np.ndarray], None], ...]:
    """Compiled roundings of float32 to nearest even at bfloat16 (torch's ``round_to_nearest_even``, a NaN
    as ``0x7FC0``), written on the bits so that they vectorise: ``(x, out uint16)`` the bfloat16 bits,
    ``(x, out float32)`` those values as float32 (may be ``x`` itself)."""

    @njit(cache=True, nogil=True, inline="always")
    def top(b: np.uint32) -> np.uint32:  # pragma: no cover - compiled
        r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        return np.uint32(0x7FC0) if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else r

    @njit("void(float32[::1], uint16[::1])", cache=True, nogil=True)
    def to_bits(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        bits = x.view(np.uint32)
        for i in range(out.shape[0]):
            out[i] = np.uint16(top(bits[i]))

    @njit("void(float32[::1], float32[::1])", cache=True, nogil=True)
    def to_float(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        bits = x.view(np.uint32)
        wide = out.view(np.uint32)
        for i in range(out.shape[0]):
            wide[i] = top(bits[i]) << np.uint32(16)

    return to_bits, to_float


def _generic_half(kernel: Kernel, rounding: Callable[[np.ndarray, np.ndarray], None], nbytes: int,
                  nvalues: int) -> HalfKernel:
    """``kernel``'s values rounded by ``rounding``, :data:`_HALF_STEP_VALUES` at a time through a per-thread
    float32 scratch (so the float32 stores stay in cache and only the rounded output leaves it)."""
    step = max(1, _HALF_STEP_VALUES // nvalues)  # blocks per step

    def generic(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:
        scratch = getattr(_SCRATCH, "buf", None)
        if scratch is None:
            scratch = _SCRATCH.buf = np.empty(max(_HALF_STEP_VALUES, nvalues), dtype=np.float32)
        blocks = out.shape[0] // nvalues
        for b0 in range(0, blocks, step):
            b1 = min(blocks, b0 + step)
            part = scratch[: (b1 - b0) * nvalues]
            kernel(src[b0 * nbytes: b1 * nbytes], f16, part)
            rounding(part, out[b0 * nvalues: b1 * nvalues])

    return generic


def half_kernels() -> dict[str, HalfKernel]:
    """The rounding kernels by name (:func:`_build_half`), built on first use."""
    global _HALF
    if _HALF is None:
        table = _build_half()  # takes kernels()'s lock itself
        with _BUILD_LOCK:
            _HALF = _HALF or table
    return _HALF


def half_width(qtype_name: str) -> bool:
    """Whether blocks of this type may be decoded to bfloat16 (:data:`HALF_TYPES`, a compiled kernel)."""
    return qtype_name in HALF_TYPES and supports(qtype_name)


def kernels() -> dict[str, Kernel]:
    """The compiled kernels by type name (compiled, or loaded from numba's cache, on first use)."""
    global _KERNELS, _F16
    with _BUILD_LOCK:
        if _KERNELS is None:
            with slp_vectorised():
                _KERNELS = _build()
        if _F16 is None:
            _F16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    return _KERNELS


def block_layout(qtype_name: str) -> tuple[int, int]:
    """Bytes and values of one block of ``qtype_name`` (a type with a compiled kernel)."""
    return _LAYOUT[qtype_name]


_HALF_BITS: dict[str, HalfKernel] = {}


def half_bits_kernel(qtype_name: str) -> HalfKernel:
    """A compiled ``(blocks, f16 table, uint16 out)`` of a :data:`HALF_TYPES` type writing the bfloat16 bits of
    its float32 decode rounded to nearest even, callable from other numba code (``stats/fused_codes.py``
    decodes into its own cache-sized scratch with it): Q4_K's ``vpermw`` kernel where it compiled, else the
    type's float32 kernel into a scratch of the call's size, then the rounding (the generic half path's
    values, without its Python loop)."""
    if qtype_name not in HALF_TYPES:
        raise ValueError(f"{qtype_name} is not rounded to bfloat16 (only {', '.join(sorted(HALF_TYPES))})")
    dedicated = half_kernels().get(qtype_name)
    if dedicated is not None:
        return dedicated
    with _BUILD_LOCK:
        kernel = _HALF_BITS.get(qtype_name)
        if kernel is None:
            from numba import njit

            assert _KERNELS is not None  # half_kernels() built the table
            decode = _KERNELS[qtype_name]
            to_bits, _ = _roundings(njit)

            @njit("void(uint8[::1], float32[::1], uint16[::1])", nogil=True)
            def bits(src: np.ndarray, f16: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
                wide = np.empty(out.shape[0], dtype=np.float32)
                decode(src, f16, wide)
                to_bits(wide, out)

            kernel = _HALF_BITS[qtype_name] = bits
    return kernel


def f16_table() -> np.ndarray:
    """Every f16 bit pattern's float32 value (65,536 entries), the table the kernels widen block scales with."""
    kernels()
    assert _F16 is not None  # made by kernels()
    return _F16


def supports(qtype_name: str) -> bool:
    """Whether a compiled kernel decodes this type (and numba is there to compile it)."""
    if qtype_name not in _LAYOUT:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def warm_up() -> None:
    """Load (or compile, the first time on a machine) every kernel now rather than inside a timed pass."""
    for name, (nbytes, nvalues) in _LAYOUT.items():
        dequantize(np.zeros(nbytes, dtype=np.uint8), name)
        if name in HALF_TYPES:
            dequantize(np.zeros(nbytes, dtype=np.uint8), name, np.empty(nvalues, dtype=np.uint16))


def _decoder(qtype_name: str, half: bool = False, rounded: bool = False) -> tuple[Kernel, np.ndarray]:
    """The compiled kernel of ``qtype_name`` and the f16 table it reads (built on first use; afterwards
    without taking the build lock): ``half``, the one writing bfloat16 bits; ``rounded``, the one writing
    float32 values rounded to bfloat16 (:func:`_build_half`)."""
    table = kernels() if _KERNELS is None or _F16 is None else _KERNELS
    f16 = _F16
    assert f16 is not None  # made by kernels()
    if half or rounded:
        if qtype_name not in HALF_TYPES:
            raise ValueError(f"{qtype_name} is not rounded to bfloat16 (only {', '.join(sorted(HALF_TYPES))})")
        halves = half_kernels() if _HALF is None else _HALF
        key = qtype_name if half else f"{qtype_name}@float32"
        return halves.get(key) or halves[f"{key}/generic"], f16
    return table[qtype_name], f16


def _output(out: np.ndarray) -> bool:
    """Whether ``out`` is a bfloat16 (``uint16`` bits) output; raises for a dtype no kernel writes."""
    if out.dtype == np.uint16:
        return True
    if out.dtype == np.float32:
        return False
    raise ValueError(f"an output of {out.dtype}: the decoders write float32, or bfloat16 as uint16 bits")


def dequantize_file(handle: io.FileIO, start: int, stop: int, qtype_name: str, out: np.ndarray,
                    threads: int | None = None, rounded: bool = False) -> np.ndarray:
    """Decode the blocks in bytes ``[start, stop)`` of an open file into ``out`` (contiguous float32, exactly
    as many values; or ``uint16``: bfloat16 bits, for :data:`HALF_TYPES`), read in cache-sized pieces, each
    decoded as soon as it has arrived, by up to ``threads`` threads (default:
    :func:`mother_core.io.staged.decode_threads`; see :func:`mother_core.io.staged.decode`). ``rounded``:
    float32 values rounded to bfloat16 (as a ``uint16`` output is), for :data:`HALF_TYPES`.

    Raises
    ------
    mother_core.io.staged.ShortRead
        The file ends before ``stop``.
    ValueError
        Not whole blocks, or ``out`` does not fit them.
    """
    from mother_core.io.staged import decode

    kernel, f16 = _decoder(qtype_name, _output(out), rounded)
    nbytes, nvalues = _LAYOUT[qtype_name]
    n = (stop - start) // nbytes * nvalues
    if (stop - start) % nbytes or out.size != n or not out.flags.c_contiguous:
        raise ValueError(f"{stop - start} bytes of {qtype_name} blocks do not fit an output of {out.size} {out.dtype}")
    flat = out.reshape(-1)

    def piece_into(first: int, piece: np.ndarray) -> None:
        v0 = first * nvalues
        kernel(piece, f16, flat[v0 : v0 + piece.size // nbytes * nvalues])

    decode(handle, start, stop, nbytes, piece_into, threads)
    return out


def dequantize(data: np.ndarray, qtype_name: str, out: np.ndarray | None = None, rounded: bool = False) -> np.ndarray:
    """Decode whole blocks of ``qtype_name`` (``data``: uint8, a multiple of the block size) to float32.

    ``out``, when given, is a contiguous float32 array of exactly that many values, filled in place (the
    pass's chunk buffer: no intermediate copy); or ``uint16`` for :data:`HALF_TYPES`: bfloat16 bits, the
    float32 values rounded to nearest even. ``rounded``: float32 values rounded so (:data:`HALF_TYPES`).

    Returns
    -------
    numpy.ndarray
        1-D float32, ``len(data) / block_bytes * block_values`` values, as :func:`gguf.quants.dequantize`.
    """
    kernel, f16 = _decoder(qtype_name, out is not None and _output(out), rounded)
    nbytes, nvalues = _LAYOUT[qtype_name]
    src = np.ascontiguousarray(data).reshape(-1)
    if src.dtype != np.uint8:
        src = src.view(np.uint8)
    if src.size % nbytes:
        raise ValueError(f"{src.size} bytes are not whole {qtype_name} blocks of {nbytes} bytes")
    n = src.size // nbytes * nvalues
    if out is None:
        out = np.empty(n, dtype=np.float32)
    elif out.size != n or not out.flags.c_contiguous:
        raise ValueError(f"output buffer of {out.size} {out.dtype} does not fit {n} values")
    out = out.reshape(-1)
    kernel(src, f16, out)
    return out
