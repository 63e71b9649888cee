"""Skeletons: a fixed random k x k submatrix of every 2-D weight, kept per model, for the rank of
weight differences (the paper's LoRA distance, docs/METHOD.md "Signals" 1).

A merged LoRA fine-tune differs from its parent by B @ A of rank r. The rank of a generic rank-r matrix
survives in a random submatrix of at least r rows and r columns (the rows of B and the columns of A
picked are themselves generic), so the rank of (W_i - W_j)[R, C] equals rank(W_i - W_j) up to k
without ever holding the full difference: gathering R x C from each chunk as it streams by costs no
arithmetic and k*k floats per model and layer. Siblings differ at rank r1 + r2, unrelated or fully
fine-tuned weights at full rank k.

Rounding in fp16/bf16 makes every stored difference full-rank: singular values count only above a
noise floor set by the storage precision (:func:`numerical_rank`).
"""

from __future__ import annotations

import numpy as np
import torch

SKELETON_SIZE = 96
# Unit roundoff of the storage dtypes: the size of rounding noise relative to a weight.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}


def skeleton_index(shape: tuple[int, ...], size: int = SKELETON_SIZE) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns of the skeleton of a 2-D slot of this shape (None for other tensors).

    The choice depends only on the shape, so every model, run and cache agrees on it.
    """
    if len(shape) != 2 or min(shape) < 8:
        return None
    m, n = shape
    rng = np.random.default_rng(1_000_003 * m + n)
    rows = np.sort(rng.choice(m, min(size, m), replace=False))
    cols = np.sort(rng.choice(n, min(size, n), replace=False))
    return rows, cols


def gather(data: torch.Tensor, shape: tuple[int, ...], rows: tuple[int, int] | None,
           index: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The skeleton entries inside one chunk.

    Parameters
    ----------
    data : Tensor (M, chunk_rows * n)
        The chunk, or a piece of it, as the pass holds it (float32 or the stored dtype, any device).
    rows : (start, stop) or None
        Its row range of the slot (None: the whole tensor).

    Returns
    -------
    positions : ndarray of int
        Which skeleton rows this chunk holds.
    values : ndarray (M, len(positions), k2) of float32
    """
    r_idx, c_idx = index
    start, stop = rows if rows is not None else (0, shape[0])
    inside = (r_idx >= start) & (r_idx < stop)
    positions = np.flatnonzero(inside)
    if len(positions) == 0:
        return positions, np.zeros((data.shape[0], 0, len(c_idx)), dtype=np.float32)
    local = torch.as_tensor(r_idx[inside] - start, device=data.device)
    cols = torch.as_tensor(c_idx, device=data.device)
    # index_select over advanced indexing: the streaming pass calls this once per 4 MB piece
    block = data.view(data.shape[0], stop - start, shape[1]).index_select(1, local).index_select(2, cols)
    return positions, block.float().cpu().numpy()


def singular_values(batch: np.ndarray) -> np.ndarray:
    """Singular values (descending) of each matrix of a batch ``(P, k1, k2)``, in float64, on one thread.

    Skeletons are small (k <= 96): LAPACK's threads gain nothing on them, and on a busy machine their
    spin-waiting made the same SVDs 10-60x slower (8 x 96 x 96: 0.2-1.2 s on two threads against 18-25 ms
    on one, load 7-9 on 2 cores; the 8 x GPT-2-small tree step took 41-71 s instead of about 1 s,
    benchmarks/RESULTS.md, issue 15 "The one pass at disk speed").
    """
    from mother_core.device import one_torch_thread

    with one_torch_thread():
        return torch.linalg.svdvals(torch.as_tensor(batch, dtype=torch.float64)).numpy()


def numerical_rank(diffs: np.ndarray, scale: np.ndarray, roundoff: np.ndarray) -> np.ndarray:
    """Numerical rank of each k1 x k2 difference, with a threshold that survives half precision.

    Parameters
    ----------
    diffs : ndarray (P, k1, k2)
        Skeleton differences.
    scale : ndarray (P,)
        RMS of the weights involved (rounding noise is relative to it).
    roundoff : ndarray (P,)
        Unit roundoff of the coarser of the two storage dtypes.

    Returns
    -------
    ndarray (P,) of int
        Singular values above both 1e-5 of the largest and 4 * sqrt(max(k1, k2)) * roundoff * scale
        (the spectral norm of a k1 x k2 matrix of independent rounding errors is about
        (sqrt(k1) + sqrt(k2)) times their size).
    """
    if len(diffs) == 0:
        return np.zeros(0, dtype=int)
    s = singular_values(diffs)  # (P, k)
    k = max(diffs.shape[1], diffs.shape[2])
    floor = np.maximum(1e-5 * s[:, :1], (4.0 * np.sqrt(k) * roundoff * scale)[:, None])
    return (s > floor).sum(axis=1)
