"""Numerically careful per-chunk statistics: central moments and pairwise squared distances.

All functions take a chunk ``X`` of shape (M, n): the same rows of one tensor from M models,
flattened, in float32, on any device. Sums are accumulated so that results agree with a float64
reference to ~1e-6 relative, also when two models differ by 1e-4 relative (a light fine-tune) or
not at all (a frozen layer).

The streaming pass uses :class:`ChunkReducer`, which computes both in one cache-blocked sweep with
reused buffers (about 15x less CPU than :meth:`Moments.of_chunk` + :func:`pairwise_sq_dist`, which are
kept as the simple reference formulation).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from mother_core.stats import fused
from mother_core.stats.running_moments import Moments

# Dot products over long vectors lose precision when BLAS accumulates a whole row in float32
# (error ~ sqrt(n) * 6e-8). Splitting the inner dimension into blocks and summing the block
# results in float64 keeps every fp32 accumulation short.
GRAM_BLOCK = 2048
# Pairs whose distance is this small compared with their centred norms suffer cancellation in
# Gii + Gjj - 2Gij; they are recomputed from explicit differences (exact for near-equal floats).
CANCELLATION_RATIO = 0.25
# Chunks with at most this many pairwise differences (M * M * n) are reduced in float64 numpy at once
# (:func:`small_chunk`): the blocked sweep's ~30 small torch calls cost ~0.4 ms a chunk whatever its size,
# which a file of many tiny tensors (norm scales, biases, or a hostile header of a million scalars) pays
# once per tensor.
SMALL_CHUNK_DIFFERENCES = 1 << 16


def pairwise_sq_dist(x: torch.Tensor) -> np.ndarray:
    """Squared L2 distances between the rows of ``x`` (M, n), float64 (M, M).

    Uses a Gram matrix of the rows centred on their mean across models (one GEMM instead of M^2
    passes), blocked so fp32 accumulations stay short, and recomputes pairs that are close
    relative to their centred norms from explicit differences, where the Gram identity would cancel.
    """
    m, n = x.shape
    if m < 2:
        return np.zeros((m, m))
    y = x - x.mean(dim=0, keepdim=True)  # (M, n) centred across models
    with exact_fp32_matmul():
        gram = _blocked_gram(y)  # (M, M) float64
    sq = torch.diagonal(gram)
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
    scale = sq[:, None] + sq[None, :]
    suspect = torch.triu(dist < CANCELLATION_RATIO * scale, diagonal=1).nonzero().tolist()
    for i, j in suspect:
        diff = x[i] - x[j]  # exact for nearly equal floats (Sterbenz)
        v = torch.dot(diff.double(), diff.double()) if n <= 1 << 20 else _long_sq_norm(diff)
        dist[i, j] = dist[j, i] = v
    dist.fill_diagonal_(0)
    return dist.detach().cpu().numpy()


def _blocked_gram(y: torch.Tensor) -> torch.Tensor:
    m, n = y.shape
    if n <= GRAM_BLOCK:
        yd = y.double()
        return yd @ yd.T
    n_full = (n // GRAM_BLOCK) * GRAM_BLOCK
    blocks = y[:, :n_full].reshape(m, -1, GRAM_BLOCK).transpose(0, 1)  # (B, M, blk)
    gram = torch.bmm(blocks, blocks.transpose(1, 2)).sum(dim=0, dtype=torch.float64)
    if n_full < n:
        tail = y[:, n_full:].double()
        gram += tail @ tail.T
    return gram


def _long_sq_norm(v: torch.Tensor) -> torch.Tensor:
    # float64 copies of huge rows cost memory; square in fp32 and sum with float64 accumulation.
    return (v * v).sum(dtype=torch.float64)


# --- the fused, cache-blocked reduction used by the streaming pass -------------------------------------

# Elements (models x columns) per cache block of :class:`ChunkReducer`: the block, its four power
# buffers and its centred copy (fp32) stay in L2/L3 instead of streaming every temporary through DRAM.
BLOCK_ELEMENTS = 1 << 18


_TF32_LOCK = threading.Lock()
_TF32_STATE = {"depth": 0, "saved": False}


@contextmanager
def exact_fp32_matmul() -> Iterator[None]:
    """Keep CUDA matmuls in true fp32 (no TF32: 10-bit mantissas would ruin the Gram) while our reductions
    run, then restore the user's setting. Re-entrant and thread-safe: the pass's two workers may overlap,
    and the setting is restored only when the last one leaves."""
    with _TF32_LOCK:
        if _TF32_STATE["depth"] == 0:
            _TF32_STATE["saved"] = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        _TF32_STATE["depth"] += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _TF32_STATE["depth"] -= 1
            if _TF32_STATE["depth"] == 0:
                torch.backends.cuda.matmul.allow_tf32 = _TF32_STATE["saved"]


class ChunkReducer:
    """Moments of every row and pairwise squared distances of a chunk ``x`` (M, n), in one cache-blocked pass.

    For each block of columns (about :data:`BLOCK_ELEMENTS` elements), while the block is in cache: the
    block's row means; the powers d, d^2, d^3, d^4 of the deviations from them (fp32, into one reused
    (4, M, B) buffer) and their sums (one reduction, cascade-summed in fp32 over at most B terms); and the
    Gram matrix of the rows centred on their column mean (fp32 GEMMs over :data:`GRAM_BLOCK` columns).
    Block results are combined in float64: moments with the exact shift formulas (the parallel update of
    Chan/Pébay), Gram blocks by summation. Pairs too close for the Gram identity are then recomputed
    from explicit differences, as :func:`pairwise_sq_dist` does. Buffers are reused between chunks
    (fresh allocations fault in pages at ~0.4 s/GB).
    """

    def __init__(self, block_elements: int = BLOCK_ELEMENTS, use_fused: bool = False) -> None:
        self.block_elements = block_elements
        self.use_fused = use_fused  # hand chunks the fused CPU kernel accepts to it
        self._bufs: dict[tuple, torch.Tensor] = {}

    def _buf(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        need = 1
        for d in shape:
            need *= d
        k = (key, dtype, device)
        b = self._bufs.get(k)
        if b is None or b.numel() < need:
            b = torch.empty(need, dtype=dtype, device=device)
            self._bufs[k] = b
        return b[:need].view(shape)

    def block_columns(self, m: int, n: int) -> int:
        cols = max(GRAM_BLOCK, (self.block_elements // max(m, 1)) // GRAM_BLOCK * GRAM_BLOCK)
        return min(cols, n)

    def reduce(self, x: torch.Tensor, want_dist: bool = True) -> tuple[Moments, np.ndarray, np.ndarray]:
        """Return (moments per row, squared distances (M, M) float64, counts of exactly equal entries
        (M, M) float64: :func:`equal_counts`) of ``x`` (M, n).

        ``x`` is float32, or a CPU chunk in its stored dtype that :func:`fused.accepts` (then the fused
        kernel reduces it without widening it in memory); other dtypes are widened here.
        """
        m, n = x.shape
        if self.use_fused and fused.accepts(x.dtype, m, x.device) and fused.ready():
            return fused.reduce_chunk(x, want_dist)
        if x.device.type == "cpu" and m <= fused.MAX_EQUAL_MODELS and m * m * n <= SMALL_CHUNK_DIFFERENCES:
            return small_chunk(x, want_dist)
        if x.dtype != torch.float32:
            x = x.float()
        moments, dist = self._moments_and_distances(x, want_dist)
        eq = equal_counts(x) if want_dist and m > 1 else np.diag(np.full(m, float(n)))
        return moments, dist, eq

    def _moments_and_distances(self, x: torch.Tensor, want_dist: bool) -> tuple[Moments, np.ndarray]:
        m, n = x.shape
        dev = x.device
        b = self.block_columns(m, n)
        nblocks = (n + b - 1) // b
        # Per block: row means, and the sums of d, d^2, d^3, d^4 (d = deviation from the block mean).
        means = self._buf("means", (nblocks, m), torch.float32, dev)
        sums = self._buf("sums", (nblocks, 4, m), torch.float32, dev)
        do_gram = want_dist and m > 1
        n_gram = (b // GRAM_BLOCK) if n >= GRAM_BLOCK else 0
        grams = self._buf("grams", (max(nblocks * n_gram, 1), m, m), torch.float32, dev)
        tail_gram = torch.zeros((m, m), dtype=torch.float64, device=dev)
        inv_m = torch.full((1, m), 1.0 / m, dtype=torch.float32, device=dev)
        counts = []
        g = 0
        with exact_fp32_matmul():
            for k, j0 in enumerate(range(0, n, b)):
                j1 = min(n, j0 + b)
                w = j1 - j0
                counts.append(w)
                xb = x[:, j0:j1]  # (M, w) strided view of the chunk
                mb = means[k]
                torch.sum(xb, dim=1, out=mb)
                mb.div_(w)
                pw = self._buf("powers", (4, m, w), torch.float32, dev)
                torch.sub(xb, mb[:, None], out=pw[0])  # d
                torch.mul(pw[0], pw[0], out=pw[1])  # d^2
                torch.mul(pw[1:2], pw[0:2], out=pw[2:4])  # d^3, d^4 in one op
                torch.sum(pw, dim=2, out=sums[k])  # (4, M)
                if do_gram:
                    y = pw[0]  # reuse: (M, w) rows centred on the column mean
                    cm = self._buf("colmean", (1, w), torch.float32, dev)
                    torch.mm(inv_m, xb, out=cm)  # mean over models (any centre is exact; this one is small)
                    torch.sub(xb, cm, out=y)
                    full = (w // GRAM_BLOCK) * GRAM_BLOCK
                    if full:
                        yb = y[:, :full].reshape(m, -1, GRAM_BLOCK).transpose(0, 1)  # (nb, M, blk)
                        torch.bmm(yb, yb.transpose(1, 2), out=grams[g : g + yb.shape[0]])
                        g += yb.shape[0]
                    if full < w:
                        tail = y[:, full:].double()
                        tail_gram += tail @ tail.T
        moments = _combine_blocks(np.asarray(counts, dtype=np.float64), means.double(), sums.double())
        if not do_gram:
            return moments, np.zeros((m, m))
        gram = grams[:g].sum(dim=0, dtype=torch.float64) + tail_gram
        sq = torch.diagonal(gram)
        dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
        scale = sq[:, None] + sq[None, :]
        suspect = torch.triu(dist < CANCELLATION_RATIO * scale, diagonal=1).nonzero()
        if len(suspect):
            i, j = suspect[:, 0], suspect[:, 1]
            exact = self._explicit_sq_dists(x, i, j)
            dist[i, j] = exact
            dist[j, i] = exact
        dist.fill_diagonal_(0)
        return moments, dist.cpu().numpy()

    def _explicit_sq_dists(self, x: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """sum((x[i] - x[j])**2) for pairs (i[p], j[p]) from explicit differences, in cache-sized pieces.

        A difference of two nearly equal floats is exact (Sterbenz), so these pairs suffer no cancellation;
        squares are summed per piece in fp32 (cascade) and across pieces in float64.
        """
        n = x.shape[1]
        cols = min(n, max(GRAM_BLOCK, self.block_elements))
        per = max(1, self.block_elements // cols)  # pairs per piece
        total = torch.zeros(len(i), dtype=torch.float64, device=x.device)
        for p0 in range(0, len(i), per):
            ip, jp = i[p0 : p0 + per], j[p0 : p0 + per]
            for j0 in range(0, n, cols):
                w = min(n, j0 + cols) - j0
                d = self._buf("pairdiff", (len(ip), w), torch.float32, x.device)
                e = self._buf("pairother", (len(ip), w), torch.float32, x.device)
                xs = x[:, j0 : j0 + w]
                torch.index_select(xs, 0, ip, out=d)
                torch.index_select(xs, 0, jp, out=e)
                d.sub_(e)
                d.mul_(d)
                total[p0 : p0 + len(ip)] += d.sum(dim=1, dtype=torch.float64)
        return total


def small_chunk(x: torch.Tensor, want_dist: bool = True) -> tuple[Moments, np.ndarray, np.ndarray]:
    """What :meth:`ChunkReducer.reduce` returns, for a small CPU chunk ``x`` (M, n): every value widened
    to float64 (exact for the stored floats) and every pairwise difference formed explicitly, so no
    cancellation needs guarding and a constant row has exactly zero spread."""
    a = x.double().numpy()
    m, n = a.shape
    mean = a.mean(axis=1)
    d = a - mean[:, None]
    d2 = d * d
    moments = Moments(np.full(m, float(n)), mean, d2.sum(axis=1), (d2 * d).sum(axis=1), (d2 * d2).sum(axis=1))
    if not want_dist or m < 2:
        return moments, np.zeros((m, m)), np.diag(np.full(m, float(n)))
    diff = a[:, None, :] - a[None, :, :]  # (M, M, n)
    dist = np.einsum("ijk,ijk->ij", diff, diff)
    equal = (diff == 0).sum(axis=2).astype(np.float64)
    np.fill_diagonal(equal, n)  # every entry equals itself (NaN rows are reduced again without them)
    return moments, dist, equal


def equal_counts(x: torch.Tensor) -> np.ndarray:
    """How many entries of each pair of rows of ``x`` (M, n) are exactly equal: (M, M) float64, symmetric,
    n on the diagonal; NaN off it above :data:`fused.MAX_EQUAL_MODELS` rows (M^2/2 compares per value).

    Rows widened from one stored dtype are equal exactly where the stored values are. A TIES / DARE
    merge keeps a share of its inputs' entries as they were; fine-tunes change nearly every entry
    (docs/RELATIONS.md, "Sparse merges"). On the CPU the compiled kernel counts (when loaded), else
    torch compares row against rows (on a GPU: M small kernels per chunk).
    """
    m, n = x.shape
    if m > fused.MAX_EQUAL_MODELS:
        eq = np.full((m, m), np.nan)
        np.fill_diagonal(eq, n)
        return eq
    if x.device.type == "cpu" and fused.enabled() and fused.ready():
        return fused.equal_counts(x)
    out = torch.zeros((m, m), dtype=torch.float64, device=x.device)
    for i in range(m - 1):
        out[i, i + 1 :] = (x[i + 1 :] == x[i]).sum(dim=1, dtype=torch.float64)
    return fused.mirrored(out.cpu().numpy(), n)


def _combine_blocks(counts: np.ndarray, means: torch.Tensor, sums: torch.Tensor) -> Moments:
    """Central moments of each row from per-block (count, mean, sums of d..d^4 about the block mean)."""
    cnt = torch.as_tensor(counts, dtype=torch.float64, device=means.device)[:, None]  # (B, 1)
    # Block sums are about the fp32 block mean; fold their (tiny) residual S1 into the exact shift below.
    s1, s2, s3, s4 = sums.unbind(1)  # each (B, M)
    n = cnt.sum(0)  # (1,)
    mean = (means * cnt + s1).sum(0) / n  # exact grand mean (M,)
    delta = means - mean  # (B, M): block origin minus grand mean
    m2 = (s2 + 2 * delta * s1 + cnt * delta**2).sum(0)
    m3 = (s3 + 3 * delta * s2 + 3 * delta**2 * s1 + cnt * delta**3).sum(0)
    m4 = (s4 + 4 * delta * s3 + 6 * delta**2 * s2 + 4 * delta**3 * s1 + cnt * delta**4).sum(0)
    # A constant row leaves only rounding residue (~1e-16 of ulp^2): any two distinct fp32 values differ
    # by at least half an ulp of the row's magnitude, so a genuine spread is far above this floor.
    floor = n * (mean.abs() * 2.0**-24) ** 2 * 1e-3
    const = m2 <= floor
    m2, m3, m4 = (torch.where(const, torch.zeros_like(v), v) for v in (m2, m3, m4))
    to_np = lambda t: t.detach().cpu().numpy()  # noqa: E731
    m = means.shape[1]
    return Moments(np.full(m, float(n)), to_np(mean), to_np(m2), to_np(m3), to_np(m4))
