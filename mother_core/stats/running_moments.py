"""Running central moments of many rows at once, combinable across chunks (:class:`Moments`).

Its own module so that both reducers, the torch one (:mod:`.moments`) and the fused numba one
(:mod:`.fused`), build it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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
        """Population excess kurtosis n * M4 / M2**2 - 3 (docs/METHOD.md, "Signals" 2); 0 for constant tensors."""
        with np.errstate(divide="ignore", invalid="ignore"):
            k = self.n * self.m4 / self.m2**2 - 3.0
        return np.where(self.m2 > 0, k, 0.0)


def summarise_moments(cnt: np.ndarray, mean: np.ndarray, m2: np.ndarray, m4: np.ndarray,
                      present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Variance, excess kurtosis and Frobenius norm per (model, slot) from the pooled central moments.

    ``m2`` and ``m4`` are sums of squared and fourth-power deviations over ``cnt`` values; the
    kurtosis is the paper's moment ratio n * m4 / m2^2 - 3 (docs/METHOD.md), 0 for a constant tensor
    and NaN where the model lacks the slot; ||W||^2 = m2 + n * mean^2.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / cnt
        kurt = np.where(m2 > 0, cnt * m4 / m2**2 - 3.0, 0.0)
        kurt[~present] = np.nan
        norm = np.sqrt(m2 + cnt * mean**2)
    return var, kurt, norm
