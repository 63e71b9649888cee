"""Numerically careful per-chunk statistics: central moments and pairwise squared distances.

All functions take a chunk ``X`` of shape (M, n): the same rows of one tensor from M models,
flattened, in float32, on any device. Sums are accumulated so that results agree with a float64
reference to ~1e-6 relative, also when two models differ by 1e-4 relative (a light fine-tune) or
not at all (a frozen layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Dot products over long vectors lose precision when BLAS accumulates a whole row in float32
# (error ~ sqrt(n) * 6e-8). Splitting the inner dimension into blocks and summing the block
# results in float64 keeps every fp32 accumulation short.
GRAM_BLOCK = 2048
# Pairs whose distance is this small compared with their centred norms suffer cancellation in
# Gii + Gjj - 2Gij; they are recomputed from explicit differences (exact for near-equal floats).
CANCELLATION_RATIO = 0.25


@dataclass
class Moments:
    """Running count, mean and central moment sums M2..M4 per model (float64 arrays of shape (M,)).

    Chunks combine with the pairwise update of Chan et al. (1979) extended to third and fourth
    moments by Pébay (2008), so chunking never loses accuracy.
    """

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    m4: np.ndarray

    @classmethod
    def of_chunk(cls, x: torch.Tensor) -> "Moments":
        """Moments of each row of ``x`` (M, n)."""
        n = x.shape[1]
        mean = x.sum(dim=1, dtype=torch.float64) / n  # (M,)
        d = x - mean.to(x.dtype)[:, None]
        # The fp32 mean is off by rounding; correct the central sums with the exact residual mean.
        d2 = d * d
        m2 = d2.sum(dim=1, dtype=torch.float64)
        m3 = (d2 * d).sum(dim=1, dtype=torch.float64)
        m4 = (d2 * d2).sum(dim=1, dtype=torch.float64)
        s1 = d.sum(dim=1, dtype=torch.float64)
        del d, d2
        r = s1 / n  # residual mean of d (tiny); shift moments from d's origin to its true mean
        m4 = m4 - 4 * r * m3 + 6 * r**2 * m2 - 3 * n * r**4
        m3 = m3 - 3 * r * m2 + 2 * n * r**3
        m2 = m2 - n * r**2
        mean = mean + r
        to_np = lambda t: t.detach().cpu().numpy()  # noqa: E731
        return cls(np.full(x.shape[0], float(n)), to_np(mean), to_np(m2), to_np(m3), to_np(m4))

    def combine(self, other: "Moments") -> "Moments":
        """Moments of the union of two disjoint chunks (Pébay 2008, eq. 2.1-2.3)."""
        na, nb = self.n, other.n
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * nb / n
        m2 = self.m2 + other.m2 + delta**2 * na * nb / n
        m3 = (
            self.m3 + other.m3
            + delta**3 * na * nb * (na - nb) / n**2
            + 3 * delta * (na * other.m2 - nb * self.m2) / n
        )
        m4 = (
            self.m4 + other.m4
            + delta**4 * na * nb * (na**2 - na * nb + nb**2) / n**3
            + 6 * delta**2 * (na**2 * other.m2 + nb**2 * self.m2) / n**2
            + 4 * delta * (na * other.m3 - nb * self.m3) / n
        )
        return Moments(n, mean, m2, m3, m4)

    @property
    def variance(self) -> np.ndarray:
        """Population variance m2 / n."""
        return self.m2 / self.n

    @property
    def excess_kurtosis(self) -> np.ndarray:
        """Population excess kurtosis n * M4 / M2**2 - 3 (method.md, "Signals" 2); 0 for constant tensors."""
        with np.errstate(divide="ignore", invalid="ignore"):
            k = self.n * self.m4 / self.m2**2 - 3.0
        return np.where(self.m2 > 0, k, 0.0)

    @property
    def sum_of_squares(self) -> np.ndarray:
        """sum(x**2) = M2 + n * mean**2, for the Frobenius norm."""
        return self.m2 + self.n * self.mean**2


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
