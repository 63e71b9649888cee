"""A fused CPU kernel for the streaming pass: moments and pairwise distances in one sweep of the stored bytes.

The torch formulation in :mod:`mother_core.stats.moments` runs a dozen separate vector ops per block
and needs every chunk widened to float32 in memory first (write 4 bytes, read them back); on a 2-core
machine that costs several times the time to read the files. This kernel (compiled by numba) reads
each chunk once in its stored dtype (bfloat16 or float32) and, per block of :data:`KERNEL_BLOCK`
columns, widens it into a float32 scratch block that stays in L1/L2, takes each row's mean and the
sums of d, d^2, d^3, d^4 about it, and adds every pair's squared differences (4 x 4 register tiles).
Moments combine across blocks in float64 as :class:`~mother_core.stats.moments.ChunkReducer`'s do.
Distances come from explicit differences, which are exact for nearly equal floats, so unlike the
torch path's column-centred Gram nothing cancels and no pair is recomputed; results agree with a
float64 reference to ~1e-6 relative (tests run every reference check through both paths).

Used for CPU chunks of bfloat16 or float32 with at most :data:`MAX_MODELS` rows, when numba is
installed and the pass is large enough to repay loading it (:data:`WORTH_LOADING_VALUES`);
everything else (GPU, float16, very many models, where one GEMM wins) takes the torch path.
Set ``MOTHER_FUSED_KERNEL=0`` to force the torch path. Compiled code is cached on disk by numba:
the first run on a machine compiles (~2-3 s), later processes load it (~1 s with numba's import).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Iterable

import numpy as np
import torch

from mother_core.stats.running_moments import Moments

# Columns per block: the (M, 2048) float32 scratch block stays in L1/L2 while it is reduced.
KERNEL_BLOCK = 2048
# Loading numba and the cached kernels costs a process ~1.1 s once (2-core machine), partly hidden:
# chunks go through the torch path meanwhile. The kernel then saves ~1.4 s per 1e9 values (8 x GPT-2
# small in bf16, warm: steady pass 0.50 s against 1.95 s; first pass 1.55 s against 2.04 s). A pass
# uses it when it has at least this many values for it (estimated break-even ~3e8), or when the
# kernels are already loaded in this process (the app: every later pass).
WORTH_LOADING_VALUES = 4e8
# Above this many models the M^2/2 pair differences per value cost more than one blocked GEMM in torch.
MAX_MODELS = 32
# Exactly equal entries have no GEMM shortcut: every pair is compared, M^2/2 per value. Up to this many
# models a chunk's counts are taken (on the CPU by :func:`equal_counts`: ~0.7e9 values/s at 100 models,
# estimated from 0.06 us per pair and 2048-column block at 16 models); above it they are left unknown
# (NaN: the sparse-merge signal is absent, nothing else changes).
MAX_EQUAL_MODELS = 64

_SUPPORTED = (torch.bfloat16, torch.float32)


_HAVE_NUMBA = importlib.util.find_spec("numba") is not None  # an optional accelerator


def enabled() -> bool:
    """Whether the fused kernel can be used (numba installed and not switched off)."""
    return _HAVE_NUMBA and os.environ.get("MOTHER_FUSED_KERNEL", "1") != "0"


def accepts(dtype: torch.dtype, models: int, device: torch.device) -> bool:
    """Whether a chunk of ``models`` rows stored as ``dtype`` on ``device`` can be reduced by the kernel."""
    return device.type == "cpu" and dtype in _SUPPORTED and 1 <= models <= MAX_MODELS and enabled()


_READY = threading.Event()  # set once warm_up has loaded the kernels in this process


def warm_up(dtypes: Iterable[torch.dtype] = _SUPPORTED) -> None:
    """Import numba and load (or, on a machine's first run, compile) the reduction kernel for ``dtypes``,
    then mark the kernels :func:`ready`. Blocking; the pass runs it on a background thread."""
    for dtype in dtypes:
        load(dtype)
    equal_counts(torch.zeros((2, 8)))  # the chunk path's rows are float32
    _READY.set()


def load(dtype: torch.dtype) -> None:
    """Load (or compile) the reduction kernel's overload for rows stored as ``dtype``: a tiny chunk through it."""
    reduce_chunk(torch.zeros((2, 8), dtype=dtype))


def ready() -> bool:
    """Whether the kernels are loaded in this process (using them costs nothing more). Until then a
    pass that wants them reduces its chunks on the torch path instead of waiting ~1 s for the load."""
    return _READY.is_set()


def compiled(module: str) -> ModuleType:
    """The numba kernel module ``mother_core.stats.<module>`` (``_fused_kernels``, ``_sketch_kernels``),
    imported on first use: numba's import and the cached kernels' load cost ~1 s."""
    if "NUMBA_CACHE_DIR" not in os.environ and not os.access(Path(__file__).parent, os.W_OK):
        # An install numba cannot write its cache beside: keep compiled kernels in the user's cache
        # rather than compiling them again (~3 s) in every process. Read when numba is imported.
        os.environ["NUMBA_CACHE_DIR"] = str(Path.home() / ".cache" / "mother-explorer" / "numba")
    return importlib.import_module(f"mother_core.stats.{module}")


def _kernels() -> ModuleType:
    return compiled("_fused_kernels")


def _as_bits(x: torch.Tensor) -> tuple[np.ndarray, int]:
    """A zero-copy numpy view of the raw bits, and the shift that makes them float32 bits: bfloat16 is
    the top half of a float32 (uint16, shift 16); float32 is itself (uint32, shift 0)."""
    x = x.contiguous()  # a piece of a larger buffer is a contiguous view: no copy
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16), 16
    return x.view(torch.int32).numpy().view(np.uint32), 0


class StreamReduction:
    """Moments, pairwise squared distances and counts of exactly equal entries of ``models`` rows fed as
    consecutive column pieces.

    Each :meth:`add` runs the kernel over one (M, w) piece (bf16 or fp32 on the CPU, any width): per
    block of :data:`KERNEL_BLOCK` columns, each row's mean and the sums of d..d^4 about it, and the
    explicit squared differences of every pair (and how many of them are zero: equal entries).
    :meth:`finish` combines the blocks in float64 with the
    exact shift formulas (Pébay 2008, as :func:`~mother_core.stats.moments._combine_blocks`).
    """

    def __init__(self, models: int, want_dist: bool = True, expected_columns: int = 0) -> None:
        self.models = models
        self.want_dist = want_dist and models > 1
        cap = max(1, -(-expected_columns // KERNEL_BLOCK))
        self.counts = np.zeros(cap, dtype=np.float64)
        self.means = np.zeros((cap, models), dtype=np.float32)
        self.sums = np.zeros((cap, 4, models), dtype=np.float32)
        self.dist = np.zeros((models, models), dtype=np.float64)
        self.eq = np.zeros((models, models), dtype=np.float64)
        self.blocks = 0

    def add(self, x: torch.Tensor) -> None:
        """Fold in the next piece ``x`` (M, w) of the rows."""
        raw, shift = _as_bits(x)
        self.reserve(raw.shape[1])
        self.blocks = _kernels().reduce_blocks(raw, shift, KERNEL_BLOCK, self.blocks, self.want_dist,
                                               self.counts, self.means, self.sums, self.dist, self.eq)

    def reserve(self, columns: int) -> None:
        """Room for the blocks of ``columns`` more columns (pieces ending in part-filled blocks: grow)."""
        need = self.blocks + -(-columns // KERNEL_BLOCK)
        if need > len(self.counts):
            grow = max(need, 2 * len(self.counts))
            self.counts = np.resize(self.counts, grow)
            self.means = np.resize(self.means, (grow, self.models))
            self.sums = np.resize(self.sums, (grow, 4, self.models))

    def finish(self) -> tuple[Moments, np.ndarray, np.ndarray]:
        """(moments per row, a constant row having zero central moments; squared distances (M, M)
        float64, symmetric with a zero diagonal; counts of exactly equal entries (M, M) float64,
        symmetric, the row length on the diagonal)."""
        out = np.empty((4, self.models), dtype=np.float64)
        _kernels().combine_blocks(self.counts, self.blocks, self.means, self.sums, out)
        upper = np.triu(self.dist, 1)
        mean, m2, m3, m4 = out
        n = self.counts[: self.blocks].sum()
        return Moments(np.full(self.models, n), mean, m2, m3, m4), upper + upper.T, mirrored(self.eq, n)


def mirrored(counts: np.ndarray, n: float) -> np.ndarray:
    """Pair counts added above the diagonal only (by the kernels, or by torch in
    :func:`~mother_core.stats.moments.equal_counts`), made symmetric, with ``n`` (a row's length: every
    entry equals itself) on the diagonal."""
    upper = np.triu(counts, 1)
    same = upper + upper.T
    np.fill_diagonal(same, n)
    return same


def equal_counts(x: torch.Tensor) -> np.ndarray:
    """Counts of exactly equal entries of every pair of rows of a CPU chunk ``x`` (M, n), bfloat16 (compared
    as stored) or float32: (M, M) float64, symmetric, n on the diagonal. For chunks whose moments and
    distances went another way (:class:`~mother_core.stats.moments.ChunkReducer`)."""
    m, n = x.shape
    eq = np.zeros((m, m), dtype=np.float64)
    if x.dtype == torch.bfloat16:
        raw, _ = _as_bits(x)
        _kernels().equal_counts_bits(raw, KERNEL_BLOCK, eq)
    else:
        _kernels().equal_counts_float(x.contiguous().float().numpy(), KERNEL_BLOCK, eq)
    return mirrored(eq, n)


def reduce_chunk(x: torch.Tensor, want_dist: bool = True) -> tuple["Moments", np.ndarray, np.ndarray]:
    """Moments, squared distances and equal-entry counts of the rows of one chunk ``x`` (M, n): see
    :class:`StreamReduction`."""
    reduction = StreamReduction(x.shape[0], want_dist, x.shape[1])
    reduction.add(x)
    return reduction.finish()
