"""GGUF 4- to 6-bit blocks decoded inside the fused statistics pass: no chunk of values leaves the core's cache.

The pass reads a slot whose every model holds GGUF 4- to 6-bit codes at half width (``stats/execute.py``):
each model's rows were decoded into a bfloat16 piece (:data:`~mother_core.stats.execute.PIECE_BYTES`
across models, 4 MiB: out to the L3 cache), which :class:`~mother_core.stats.fused.StreamReduction` then
read back, block of :data:`~mother_core.stats.fused.KERNEL_BLOCK` columns by block. Here the piece's stored
blocks themselves are read (0.56 bytes per value for Q4_K, against the piece's 2) and one compiled kernel
walks them: a few blocks of columns at a time (:data:`SCRATCH_BYTES` across models: stays in L2), each
model's blocks are decoded to bfloat16 bits into a scratch by ``gguf_fast``'s decoders (Q4_K's ``vpermw``
kernel; the other types' float32 kernel, then the rounding), and the scratch goes through the fused
kernel's own ``reduce_blocks``, called through its address: **the same machine code** the bfloat16 path
runs (a copy compiled into this kernel would be optimised again, and ``fastmath`` may then sum a block's
powers in another order: last bits differ). The scratch is cut at multiples of the kernel's block inside
each piece, and the pieces are cut as the bfloat16 pieces are, so the blocks are the same: every statistic,
and the skeletons (their rows decoded apart, rounded alike), is bit for bit the bfloat16 path's
(``tests/test_fused_codes.py``).

The kernel calls decoders compiled at run time (``gguf_fast``'s intrinsics are closures), so numba's
on-disk cache does not serve it: each process compiles it once (:func:`warm_up`, on a background thread
of the pass); until it is ready the pass takes the bfloat16 path, with the same results.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable

import numpy as np

from mother_core.stats import fused
from mother_core.stats.running_moments import Moments

#: Block types the kernel decodes, in the order of their codes (``kinds``) inside it.
TYPES: tuple[str, ...] = ("Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1")

#: Bytes of bfloat16 values decoded across models before they are reduced: a quarter of a core's L2 here,
#: so the reduction reads them from there (as :data:`mother_core.io.staged.PIECE_BYTES`).
SCRATCH_BYTES = 256 << 10

#: Values of one block type in a pass from which compiling its kernel is worth it: the Q4_K kernel costs
#: ~0.4 CPU s to compile (Q6_K's ~1 s) and saves ~0.34 CPU s per 1e9 Q4_K values (one thread, 2 GB Q4_K
#: pair: 3.75 -> 2.53 CPU s for 3.56e9 values; ``benchmarks/RESULTS.md``, "Q4_K decoded inside the
#: statistics kernel"); on two busy cores the compile is not hidden. Smaller passes read those slots as
#: bfloat16 pieces (the same results); a process that has compiled it (the app) uses it in every pass.
WORTH_COMPILING_VALUES = 1.5e9

_KERNELS: dict[str, Callable[..., int]] = {}  # by block type
_LOCK = threading.Lock()


def enabled() -> bool:
    """Whether the coded path may be used: the fused kernel is (numba, not switched off), and numba's
    first-class functions are there to call it by address."""
    if not fused.enabled():
        return False
    try:
        from numba.core.types import FunctionType  # noqa: F401
    except ImportError:
        return False
    return True


def ready(qtype: str) -> bool:
    """Whether the kernel of ``qtype`` blocks is compiled in this process (until then the pass reads bfloat16
    pieces of them, with the same results)."""
    return qtype in _KERNELS


def warm_up(types: Iterable[str]) -> None:
    """Compile the kernels of these block types (blocking; the pass runs it on a background thread: about 1-2
    CPU s per type), each then :func:`ready`."""
    for qtype in types:
        _kernel(qtype)


def warm_up_quietly(types: Iterable[str]) -> None:
    """:func:`warm_up` on the pass's background thread: a kernel that does not compile here (an older numba,
    another CPU) leaves its type on the bfloat16 path, which gives the same results."""
    try:
        warm_up(types)
    except Exception:  # noqa: BLE001 - the bfloat16 path is always there
        pass


def _kernel(qtype: str) -> Callable[..., int]:
    kernel = _KERNELS.get(qtype)
    if kernel is None:
        with _LOCK:
            kernel = _KERNELS.get(qtype) or _build(qtype)
            _KERNELS[qtype] = kernel
    return kernel


def _reduce_blocks() -> tuple[Callable[..., int], Any]:
    """The fused kernel's ``reduce_blocks`` for bfloat16 bits, compiled (or loaded) as the bfloat16 path
    calls it, and its signature as a numba function type (a call through it is a call by address)."""
    import numba
    from numba.core import types

    import torch

    fused.load(torch.bfloat16)  # the overload the bfloat16 path uses
    reduce_blocks = fused.compiled("_fused_kernels").reduce_blocks
    sig = [s for s in reduce_blocks.signatures if s[0] == numba.typeof(np.zeros((2, 2), np.uint16))][0]
    return reduce_blocks, types.FunctionType(reduce_blocks.overloads[sig].signature)


def _build(qtype: str) -> Callable[..., int]:
    """The kernel of ``qtype`` blocks (see :class:`CodedReduction`): one type per kernel, since each decoder
    inlined costs its compile time (a slot whose models hold different types is read as bfloat16 pieces)."""
    import numba
    from numba import njit

    from mother_core.io import gguf_fast

    reduce_blocks, fn_type = _reduce_blocks()
    decode = gguf_fast.half_bits_kernel(qtype)
    nbytes, nvalues = gguf_fast.block_layout(qtype)

    def reduce_codes(reduce, raw, f16, n, step, block, k0, want_dist, counts, means, sums, dist, eq,
                     scratch):  # pragma: no cover - compiled
        m = raw.shape[0]
        k = k0
        for j0 in range(0, n, step):
            w = min(n, j0 + step) - j0
            piece = scratch[: m * w].reshape(m, w)
            b0 = j0 // nvalues * nbytes
            for r in range(m):  # each model's blocks of these columns, as bfloat16 bits
                decode(raw[r, b0 : b0 + w // nvalues * nbytes], f16, piece[r])
            k = reduce(piece, 16, block, k, want_dist, counts, means, sums, dist, eq)
        return k

    arr, i64 = numba.typeof, numba.types.int64
    sig = i64(fn_type, arr(np.zeros((1, 1), np.uint8)), arr(np.zeros(1, np.float32)), i64, i64, i64, i64,
              numba.types.boolean, arr(np.zeros(1)), arr(np.zeros((1, 1), np.float32)),
              arr(np.zeros((1, 1, 1), np.float32)), arr(np.zeros((1, 1))), arr(np.zeros((1, 1))),
              arr(np.zeros(1, np.uint16)))
    compiled = njit(sig, nogil=True, boundscheck=False)(reduce_codes)

    def call(*args: object) -> int:
        return compiled(reduce_blocks, *args)  # type: ignore[no-any-return]

    return call


class CodedReduction:
    """:class:`~mother_core.stats.fused.StreamReduction` fed with the stored ``qtype`` blocks of ``models`` rows.

    Each :meth:`add` takes one piece of the rows as their stored bytes, ``raw`` (M, bytes) uint8 (each row
    from the first byte of its blocks; bytes past them are not read), and
    the piece's width in values; the kernel decodes and reduces it :data:`SCRATCH_BYTES` at a time (module
    docstring). :meth:`finish` is :meth:`StreamReduction.finish`.
    """

    def __init__(self, qtype: str, models: int, want_dist: bool = True, expected_columns: int = 0) -> None:
        from mother_core.io import gguf_fast

        self.reduction = fused.StreamReduction(models, want_dist, expected_columns)
        self.qtype, self.kernel = qtype, _kernel(qtype)
        self.f16 = gguf_fast.f16_table()
        block = fused.KERNEL_BLOCK
        self.step = max(block, SCRATCH_BYTES // (2 * models) // block * block)  # whole kernel blocks
        self.scratch = np.empty(models * self.step, dtype=np.uint16)

    def add(self, raw: np.ndarray, width: int) -> None:
        """Fold in the next piece: ``raw`` (M, >= bytes) the stored blocks of ``width`` values of each row."""
        red = self.reduction
        red.reserve(width)  # steps are whole kernel blocks: a part-filled block only at the end
        red.blocks = self.kernel(raw, self.f16, width, self.step, fused.KERNEL_BLOCK, red.blocks,
                               red.want_dist, red.counts, red.means, red.sums, red.dist, red.eq, self.scratch)

    def finish(self) -> tuple[Moments, np.ndarray, np.ndarray]:
        """Moments, squared distances and equal-entry counts of the rows (:meth:`StreamReduction.finish`)."""
        return self.reduction.finish()


def stored_bytes(qtype: str, values: int) -> int:
    """Bytes of ``values`` values (whole blocks) stored as ``qtype`` blocks: a row's, the pass's pieces'."""
    from mother_core.io import gguf_fast

    nbytes, nvalues = gguf_fast.block_layout(qtype)
    return values // nvalues * nbytes


def gather(raw: np.ndarray, qtype: str, shape: tuple[int, ...], rows: tuple[int, int],
           index: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~mother_core.stats.skeleton.gather` of a piece held as its stored blocks (``raw`` (M, bytes),
    rows ``rows`` of the slot): the skeleton rows inside it decoded alone, rounded to bfloat16 as the
    bfloat16 piece holds them, and their skeleton columns picked (float32, the same values)."""
    from mother_core.io import gguf_fast
    from mother_core.stats.skeleton import rows_inside

    c_idx = index[1]
    positions, inner = rows_inside(index, shape, rows)
    values = np.zeros((raw.shape[0], len(positions), len(c_idx)), dtype=np.float32)
    line = stored_bytes(qtype, shape[-1])  # bytes of one innermost row
    for i in range(raw.shape[0]):
        for j, r in enumerate(inner):
            row = gguf_fast.dequantize(raw[i, r * line : (r + 1) * line], qtype, rounded=True)
            values[i, j] = row[c_idx]
    return positions, values
