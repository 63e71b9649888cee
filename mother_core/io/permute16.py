"""Sixteen codes looked up in a sixteen-value table with one AVX-512 ``vpermps`` (compiled helpers).

A group of 4-bit (or narrower) codes takes only 16 values, so the table decoders (:mod:`.hqq_fast`,
:mod:`.compressed_fast`) compute them once per group and look each code up. A scalar lookup is a byte load,
a shift, a mask, a load from the table and a store per value; as a vector, 16 codes are one load, a widen,
a shift and a mask, and ``vpermps`` (``llvm.x86.avx512.permvar.sf.512``) picks their 16 values from the
table held in one register. Compilers do not emit it for ``table[code]`` (they emit a gather, several times
slower on this machine), so it is written here as numba intrinsics, as the Q4_K kernel does
(:mod:`.gguf_fast`). The values are the table's, bit for bit: nothing is computed, only moved.

The lookups are built only where numba compiles for this machine's own CPU and it has AVX-512F
(:func:`available`); the decoders keep their portable loops otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_BUILT: dict[str, Any] | None = None
_LOCK = threading.Lock()


def available() -> bool:
    """Whether numba compiles for this machine's own CPU and that CPU has AVX-512F (``vpermps`` on 16
    floats). A CPU name or feature list forced through numba's environment (portable caches) keeps the
    portable loops: the intrinsic would not compile for another target."""
    try:
        from llvmlite import binding
        from numba.core import config

        if getattr(config, "CPU_NAME", None) or getattr(config, "CPU_FEATURES", None):
            return False
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # noqa: BLE001 - no feature list: the portable loops
        return False


def intrinsics() -> dict[str, Callable[..., Any]]:
    """The compiled helpers by name (empty where numba or llvmlite refuses them; the ``pick`` ones only
    where :func:`available`).

    * ``bits(x)`` / ``single(u)``: a float32's bits as a uint32 and back (one ``bitcast``, portable: for
      roundings written on the bits that the compiler can still vectorise);
    * ``pick(out, o, table, t, src, p, shift, mask)``: ``out[o + k] = table[t + (src[p + k] >> shift) & mask]``
      for ``k < 16`` (``src`` uint8 or int32, one code a stored element, as HQQ packs down the rows);
    * ``pick_packed4(out, o, table, t, src, p)``: 16 values from the 8 bytes ``src[p:p + 8]``, two 4-bit
      codes a byte, the low one first (compressed-tensors' and MLX's packing along a row);
    * ``pick_packed2(out, o, table, t, src, p)``: 16 values from 4 bytes, four 2-bit codes a byte, lowest
      first.

    ``table[t:t + 16]`` (float32) is the table (entries no code can reach are never read into ``out``);
    ``out`` is float32. The tables should be written well before they are picked from (a row's or a
    piece's tables first, then its codes): a 16-float load right after the scalar stores that wrote it
    waits for them (measured: 0.45 against 0.24 ns a value).
    """
    global _BUILT
    with _LOCK:
        if _BUILT is None:
            _BUILT = _build(available())
    return _BUILT


def _build(lookups: bool) -> dict[str, Any]:
    """The intrinsics (see :func:`intrinsics`); an empty dict where this numba / llvmlite refuses them."""
    try:
        from llvmlite import ir
        from numba import types
        from numba.core import cgutils
        from numba.extending import intrinsic
    except ImportError:
        return {}
    i32 = ir.IntType(32)
    v16i32, v16f = ir.VectorType(i32, 16), ir.VectorType(ir.FloatType(), 16)

    @intrinsic
    def bits(typingctx, x):  # type: ignore[no-untyped-def]
        if x != types.float32:
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.bitcast(args[0], i32)

        return types.uint32(types.float32), codegen

    @intrinsic
    def single(typingctx, x):  # type: ignore[no-untyped-def]
        if not isinstance(x, types.Integer):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            v = args[0]  # numba widens uint32 arithmetic to 64 bits: the low 32 are the float's
            return builder.bitcast(builder.trunc(v, i32) if x.bitwidth > 32 else v, ir.FloatType())

        return types.float32(x), codegen

    def store_picked(context, builder, signature, args, idx):  # type: ignore[no-untyped-def]
        """``out[o:o + 16] = permute(table[0:16], idx)``."""
        out_p = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        table_p = builder.gep(context.make_array(signature.args[2])(context, builder, args[2]).data, [args[3]])
        table = builder.load(builder.bitcast(table_p, v16f.as_pointer()), align=4)
        permute = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v16f, [v16f, v16i32]), "llvm.x86.avx512.permvar.sf.512")
        builder.store(builder.call(permute, [table, idx]), builder.bitcast(out_p, v16f.as_pointer()), align=4)
        return context.get_dummy_value()

    def splat(builder, x):  # type: ignore[no-untyped-def]
        x = builder.trunc(x, i32) if x.type.width > 32 else builder.zext(x, i32) if x.type.width < 32 else x
        v = builder.insert_element(ir.Constant(v16i32, ir.Undefined), x, ir.Constant(i32, 0))
        return builder.shuffle_vector(v, ir.Constant(v16i32, ir.Undefined), ir.Constant(v16i32, [0] * 16))

    @intrinsic
    def pick(typingctx, out, o, table, t, src, p, shift, mask):  # type: ignore[no-untyped-def]
        sig = types.void(out, o, table, t, src, p, shift, mask)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            src_p = builder.gep(context.make_array(signature.args[4])(context, builder, args[4]).data, [args[5]])
            width = signature.args[4].dtype.bitwidth
            stored = builder.load(builder.bitcast(src_p, ir.VectorType(ir.IntType(width), 16).as_pointer()),
                                  align=width // 8)
            codes = builder.zext(stored, v16i32) if width < 32 else stored
            idx = builder.and_(builder.lshr(codes, splat(builder, args[6])), splat(builder, args[7]))
            return store_picked(context, builder, signature, args, idx)

        return sig, codegen

    def packed(bits_: int) -> Any:
        per_byte = 8 // bits_
        nbytes = 16 // per_byte

        @intrinsic
        def pick_packed(typingctx, out, o, table, t, src, p):  # type: ignore[no-untyped-def]
            sig = types.void(out, o, table, t, src, p)

            def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
                src_p = builder.gep(context.make_array(signature.args[4])(context, builder, args[4]).data, [args[5]])
                v8 = ir.VectorType(ir.IntType(8), nbytes)
                stored = builder.zext(builder.load(builder.bitcast(src_p, v8.as_pointer()), align=1),
                                      ir.VectorType(i32, nbytes))
                spread = builder.shuffle_vector(stored, ir.Constant(stored.type, ir.Undefined),
                                                ir.Constant(v16i32, [k // per_byte for k in range(16)]))
                shifts = ir.Constant(v16i32, [bits_ * (k % per_byte) for k in range(16)])
                idx = builder.and_(builder.lshr(spread, shifts), ir.Constant(v16i32, [(1 << bits_) - 1] * 16))
                return store_picked(context, builder, signature, args, idx)

            return sig, codegen

        return pick_packed

    built: dict[str, Any] = {"bits": bits, "single": single}
    if lookups:
        built.update(pick=pick, pick_packed4=packed(4), pick_packed2=packed(2))
    return built
