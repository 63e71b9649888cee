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

import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from mother_core.stats.result import TensorMeta

#: k, the side of a skeleton: the highest rank it can read (a rank-r difference keeps rank r in a k x k
#: submatrix while r <= k); the paper's LoRA splits use ranks 8 to 64. k * k floats per model and layer.
SKELETON_SIZE = 96
# Unit roundoff of the storage dtypes: the size of rounding noise relative to a weight.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}


def skeleton_index(shape: tuple[int, ...], size: int = SKELETON_SIZE,
                   experts: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns of the skeleton of a 2-D slot of this shape (None for other tensors).

    The choice depends only on the shape, so every model, run and cache agrees on it. With ``experts``, a 3-D
    slot (experts, out, in) of stacked mixture-of-experts projections (:mod:`mother_core.io.experts`) gets the
    skeleton of one of its experts (drawn from the shape), its rows numbered in the (experts x out, in) view
    the pass streams: a LoRA on the experts changes each expert at rank r (peft's ``target_parameters``), so one
    expert's submatrix shows the rank as a 2-D layer's does, where the stacked matrix would read r per expert.
    """
    if experts and len(shape) == 3 and min(shape[1:]) >= 8:
        e, m, n = shape
        rng = np.random.default_rng(1_000_003 * m + n + 7_919 * e)
        expert = int(rng.integers(e))
        rows = expert * m + np.sort(rng.choice(m, min(size, m), replace=False))
        return rows, np.sort(rng.choice(n, min(size, n), replace=False))
    if len(shape) != 2 or min(shape) < 8:
        return None
    m, n = shape
    rng = np.random.default_rng(1_000_003 * m + n)
    rows = np.sort(rng.choice(m, min(size, m), replace=False))
    cols = np.sort(rng.choice(n, min(size, n), replace=False))
    return rows, cols


def slot_skeleton(meta: TensorMeta) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`skeleton_index` of a slot: 2-D weights, and stacked experts (3-D ``mlp`` slots: layer_kind calls a
    3-D tensor ``mlp`` only under an ``experts`` component)."""
    return skeleton_index(meta.shape, experts=len(meta.shape) == 3 and meta.kind == "mlp")


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
    c_idx = index[1]
    positions, inner = rows_inside(index, shape, rows)
    if len(positions) == 0:
        return positions, np.zeros((data.shape[0], 0, len(c_idx)), dtype=np.float32)
    local = torch.as_tensor(inner, device=data.device)
    cols = torch.as_tensor(c_idx, device=data.device)
    # index_select over advanced indexing: the streaming pass calls this once per 4 MB piece
    block = data.view(data.shape[0], -1, shape[-1]).index_select(1, local).index_select(2, cols)
    return positions, block.float().cpu().numpy()


def rows_inside(index: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...],
                rows: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Which skeleton rows of ``index`` a chunk (or piece) of rows ``rows`` of the slot holds (None: the whole
    tensor): their positions in the index, and their innermost rows inside the chunk (:func:`gather`;
    :func:`mother_core.stats.fused_codes.gather` of a piece held as GGUF blocks)."""
    r_idx = index[0]
    start, stop = rows if rows is not None else (0, shape[0])
    per = math.prod(shape[1:-1])  # 1 for a 2-D slot; a stacked experts' slot: each expert's rows (its index rows)
    start, stop = start * per, stop * per
    inside = (r_idx >= start) & (r_idx < stop)
    return np.flatnonzero(inside), r_idx[inside] - start


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


# (id of a skeleton stack, model a, model b) with a < b -> (the stack, singular values of its a - b difference)
_DIFFERENCES: ContextVar[dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] | None] = ContextVar(
    "mother_skeleton_differences", default=None)


@contextmanager
def remembered_differences() -> Iterator[None]:
    """Within the block, :func:`difference_singular_values` computes each pair's singular values once.

    The tree step asks for the same skeleton differences twice: a model and its nearest relative for the
    rank cue (``recovery.features.rank_evidence``), then the same pair as a tree edge for its relation
    label (``relations.lowrank.lowrank_profile``); on 8 x GPT-2 small that was a third of the tree step.
    The stacks must not change inside the block (the memo holds them, keyed by identity).
    """
    token = _DIFFERENCES.set({})
    try:
        yield
    finally:
        _DIFFERENCES.reset(token)


def difference_singular_values(stacks: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Singular values (P, k) of ``stacks[i][a] - stacks[i][b]`` in float64 for each ``(a, b) = pairs[i]``.

    ``stacks`` are skeleton stacks (N, k1, k2) of one shape. Inside :func:`remembered_differences` a pair
    already computed (in either order) is not computed again: a - b is exactly -(b - a) and the singular
    values of a negated matrix are the same bits (every step of the SVD is symmetric in sign), as are
    those of one matrix in any batch, so results do not depend on what was remembered.
    """
    memo = _DIFFERENCES.get()
    found: list[np.ndarray | None] = [None] * len(pairs)
    todo: dict[tuple[int, int, int], list[int]] = {}  # key -> positions asking for it
    for i, (sk, (a, b)) in enumerate(zip(stacks, pairs)):
        key = (id(sk), min(a, b), max(a, b))
        hit = memo.get(key) if memo is not None else None
        if hit is not None and hit[0] is sk:
            found[i] = hit[1]
        else:
            todo.setdefault(key, []).append(i)
    if todo:
        first = [positions[0] for positions in todo.values()]
        diffs = np.stack([stacks[i][pairs[i][0]].astype(np.float64) - stacks[i][pairs[i][1]] for i in first])
        for key, i, s in zip(todo, first, singular_values(diffs)):
            for j in todo[key]:
                found[j] = s
            if memo is not None:
                memo[key] = (stacks[i], s)
    return np.stack([f for f in found if f is not None]) if found else np.zeros((0, 0))


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
    return rank_above_floor(singular_values(diffs), max(diffs.shape[1], diffs.shape[2]), scale, roundoff)


def rank_above_floor(s: np.ndarray, k: int, scale: np.ndarray, roundoff: np.ndarray) -> np.ndarray:
    """:func:`numerical_rank` from the singular values ``s`` (P, min(k1, k2)) of the differences, ``k`` being
    max(k1, k2) (e.g. from :func:`difference_singular_values`)."""
    if len(s) == 0:
        return np.zeros(0, dtype=int)
    floor = np.maximum(1e-5 * s[:, :1], (4.0 * np.sqrt(k) * roundoff * scale)[:, None])
    return (s > floor).sum(axis=1)
