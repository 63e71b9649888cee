"""Candidate parents from sketches: each model's k nearest neighbours (docs/SCALE.md).

Each model's per-tensor sketches (:mod:`mother_core.stats.sketch`), divided by the square root of the
tensor's size and concatenated, form an embedding whose squared Euclidean distance estimates the sum
over tensors of the mean squared difference, sum_t ||W_i,t - W_j,t||^2 / n_t: the quantity whose
per-layer square roots recovery averages (l_FT). The candidate pairs are the union of every model's
``k`` nearest neighbours under that estimate (a model's parent is among its closest models: one
fine-tune away, where siblings are two and a grandparent two or more). Only those pairs get exact
statistics, so everything after the per-model pass is O(N k).

Search: exact (blocked matrix products, O(N^2 D) arithmetic but O(N k) memory) up to
:data:`EXACT_UP_TO` models; beyond that an approximate index (pynndescent, the ``scale`` extra) when
installed, else still exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from mother_core.stats.fingerprint import Fingerprint
from mother_core.stats.sketch import slot_numel

#: Candidate parents per model. On the fitting forest (N = 1,000, benchmarks/scale_sketch.py) the true
#: parent's recall was 0.72 at k = 1, 0.96 at k = 2 and 1.0 from k = 3; 8 keeps a margin for wider
#: families (more siblings near a parent) at ~5 exact pairs per model. Held-out forests (N = 100,
#: 10,000): benchmarks/RESULTS.md, "Ten thousand models".
DEFAULT_K = 8
#: Exact nearest-neighbour search up to this many models; an approximate index beyond (if installed).
EXACT_UP_TO = 50_000
_BLOCK = 2048


def embedding(fps: Sequence[Fingerprint], slots: Sequence[str]) -> np.ndarray:
    """(N, D) float32: per slot, each model's sketch / sqrt(numel), zeros where a model lacks the slot."""
    widths = [fps[0].spec.width(slot_numel(s)) if fps else 0 for s in slots]
    offsets = np.concatenate([[0], np.cumsum(widths)]).astype(int)
    out = np.zeros((len(fps), int(offsets[-1])), dtype=np.float32)
    where = {s: i for i, s in enumerate(slots)}
    for m, fp in enumerate(fps):
        for s, sk in zip(fp.slots, fp.sketches):
            i = where.get(s)
            if i is not None:
                out[m, offsets[i]:offsets[i + 1]] = sk / np.sqrt(slot_numel(s))
    return out


def nearest_neighbours(emb: np.ndarray, k: int, exact_up_to: int = EXACT_UP_TO) -> np.ndarray:
    """(N, min(k, N - 1)) indices of each row's nearest other rows by Euclidean distance, nearest first."""
    n = emb.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((n, 0), dtype=np.int64)
    if n > exact_up_to:
        try:
            import pynndescent
        except ImportError:
            warnings.warn(f"{n} models: an approximate nearest-neighbour index would be faster; "
                          "`pip install pynndescent` (the `scale` extra). Searching exactly.",
                          RuntimeWarning, stacklevel=2)
        else:
            index = pynndescent.NNDescent(emb, n_neighbors=k + 1, random_state=0)
            found, _ = index.neighbor_graph
            return np.array([[j for j in row if j != i][:k] for i, row in enumerate(found)], dtype=np.int64)
    x = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)).double()
    sq = (x * x).sum(dim=1)
    out = np.empty((n, k), dtype=np.int64)
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        # (B, N) squared distances |a|^2 + |b|^2 - 2 a.b, with two (B, N) arrays instead of four: the same
        # numbers as writing it out (doubling is exact, so subtracting 2 a.b in place rounds alike).
        d = sq[lo:hi, None] + sq[None, :]
        d.sub_(x[lo:hi] @ x.T, alpha=2.0)
        d[torch.arange(hi - lo), torch.arange(lo, hi)] = float("inf")
        # Stable order: ties (identical models) go to the lower index, so results do not depend on blocks.
        idx = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
        out[lo:hi] = idx.numpy()
    return out


def candidate_pairs(neighbours: np.ndarray) -> np.ndarray:
    """(P, 2) int64 unique pairs ``i < j`` such that one is among the other's neighbours, sorted."""
    n, k = neighbours.shape
    if k == 0:
        return np.zeros((0, 2), dtype=np.int64)
    i = np.repeat(np.arange(n), k)
    j = neighbours.reshape(-1)
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)


def recall(neighbours: np.ndarray, parent: Sequence[int]) -> float:
    """Fraction of models with a parent (``parent[c] >= 0``) whose parent is among their neighbours or
    who are among their parent's (the pair is a candidate either way)."""
    hits, total = 0, 0
    for c, p in enumerate(parent):
        if p < 0:
            continue
        total += 1
        hits += int(p in neighbours[c] or c in neighbours[p])
    return hits / total if total else 1.0
