"""How a model differs from a relative at low rank, layer by layer: the test behind merged LoRAs (``lora``
links and edge labels, :mod:`.detect`) and adapters merged into a quantized model (QLoRA, :mod:`.copies`).

A LoRA (Hu et al. 2022) merged into its base changes the layers it targets by a product of rank r and
leaves the others bit for bit as they were; a fine-tune trains every matrix at full rank; a quantizer's
rounding is full rank on every matrix it rounds. Ranks are read on the skeletons the pass gathers
(:mod:`mother_core.stats.skeleton`), above the storage's rounding floor (docs/RELATIONS.md).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mother_core.relations.evidence import CONVERT_TOL, PairLayers
from mother_core.stats.result import WeightStatistics

#: A merged LoRA leaves at least this share of the shared layers untouched (not targeted).
LORA_UNTOUCHED = 0.15
#: ... and the layers it changed differ at less than this share of full rank (ranks up to half the
#: width are LoRAs; a trained layer is full rank).
LORA_RANK = 0.75
#: Between dtypes, the median relative difference of the changed weight matrices must reach this many
#: rounding tolerances (:func:`untouched_tolerance`) for the layers within rounding to count as untouched:
#: a LoRA's targeted layers move far past the rounding, an update at the rounding's own scale (changed
#: matrices a step or two past it) leaves some matrices within it by chance. On the typed profile D fitting
#: sets (200-208, 220, 222) the merged LoRAs between dtypes read 9.3-700 tolerances; the fine-tunes at
#: lr <= 1e-4 between dtypes 1.2-7.8 (one of 34 steps: 45), the one read as a LoRA (4 steps) 1.2. 4 sits
#: between, a factor 2 or more from the LoRAs and from the near-copies at 1.2-1.5 (benchmarks/RESULTS.md,
#: branch loraflip).
ROUNDING_CLEAR = 4.0
#: Refits of a merged DoRA's per-row scales outside the residual's leading subspace
#: (:func:`rescaled_rank`): each cuts the scale error about tenfold (a PEFT DoRA merged in fp32: tail /
#: top singular value 0.008, 1e-3, 2e-5 after 2, 3, 5 refits); fp32's floor is 1e-5 of the top.
RESCALE_STEPS = 8

# (id of a skeleton stack, model x, model y, transposed, settle, scale, roundoff) -> (the stack, the rank
# of one orientation's refits of y on x: :func:`rescaled_rank`'s ``one_side``)
_RESCALED: ContextVar[dict[tuple[int, int, int, bool, bool, float, float], tuple[np.ndarray, int]] | None] = \
    ContextVar("mother_rescaled_ranks", default=None)


@contextmanager
def remembered_rescales() -> Iterator[None]:
    """Within the block, :func:`lowrank_profile` refits each layer's row scales once per pair and orientation.

    The refits are nine SVDs a side and four sides a layer (most pairs tried never read as a LoRA, so every
    refit runs), and one recovery may ask for a pair again: the pair test of a tree edge and then the whole
    profile of a ``lora`` edge for its evidence (``detect.label_edge``), the same edge for the tie gate
    (``recovery.ties``), pairs in both orders (``detect._partial_pairs``, the QLoRA test
    ``copies._made_from``); on a profile D set 15 of 97 profiles repeated one (benchmarks/RESULTS.md,
    "Solving profile D sets").
    A side's rank depends only on its two skeletons, its scale, floor and ``settle``, all in the key, so
    results do not depend on what was remembered. The stacks must not change inside the block (the memo
    holds them, keyed by identity).
    """
    token = _RESCALED.set({})
    try:
        yield
    finally:
        _RESCALED.reset(token)


def untouched_tolerance(u: np.ndarray, a: int, b: int) -> float:
    """Largest relative difference of a layer a LoRA left alone: none between two models stored in the same
    dtype, rounding between two that are not.

    ``merge_and_unload`` writes the layers an adapter does not target bit for bit as they were (a bf16
    base read into float32 and saved in bf16 again round-trips exactly), so between models of one dtype
    an untouched layer is *identical*. A layer within rounding but not identical was trained, by an
    update the storage rounds mostly away: a fine-tune of a bf16 checkpoint moves its norm weights
    (values near 1, bf16 step 2^-7) by less than a step, and a rounding tolerance took such fine-tunes
    for merged LoRAs (profile C, issue 11: 2 of 18 fine-tunes). Between dtypes the values of an untouched
    layer differ by the coarser one's rounding (:data:`CONVERT_TOL`)."""
    return 0.0 if u[a] == u[b] else CONVERT_TOL * max(u[a], u[b])


def untouched_share(stats: WeightStatistics, rel: np.ndarray, tol: float) -> float:
    """Share of the shared layers left as they were (within ``tol``); 0 when no weight *matrix* was.

    PEFT adapts chosen linear layers and never, by default, the embeddings or the output head, so a merged
    LoRA leaves at least one matrix as it was; a fine-tune trains every matrix. Norm weights and biases
    alone do not count: a fine-tune of a bf16 checkpoint moves its norms (values near 1, bf16 step 2^-7)
    by less than half a step in a few steps, which leaves them bit for bit as they were (profile C, issue
    11: a fine-tune of a fine-tune, 7 of 21 layers identical, all of them norms)."""
    shared = np.isfinite(rel)
    if not shared.any():
        return 0.0
    same = shared & (rel <= tol)
    matrix = np.array([len(t.shape) >= 2 for t in stats.tensors], dtype=bool)
    moved = shared & ~same & matrix
    if tol > 0 and moved.any() and float(np.median(rel[moved])) < ROUNDING_CLEAR * tol:
        # Between dtypes "untouched" means "within rounding", and an update at the rounding's own scale
        # leaves some matrices within it by chance: a near-copy (4 AdamW steps at lr 7.7e-5, bf16 from an
        # fp32 parent) reads 29% untouched, and its changed layers, barely above the rank floor, read low
        # rank. A merged LoRA's targeted layers stand far clear of the rounding (:data:`ROUNDING_CLEAR`).
        return 0.0
    return float(same.sum() / shared.sum()) if (same & matrix).any() else 0.0


@dataclass(frozen=True)
class LowRankProfile:
    """How a model ``c`` differs from a relative ``p`` layer by layer (:func:`lowrank_profile`).

    Attributes
    ----------
    untouched : float
        Share of the shared layers left as they were (:func:`untouched_share`).
    low : float
        Share of the changed 2-D layers (skeletons) that differ at low rank (:data:`LORA_RANK`).
    changed : int
        Shared layers that differ.
    rescaled : int
        Changed layers at low rank only after a per-row rescale (:func:`rescaled_rank`).
    rank_sum : int
        Summed numerical rank of the changed 2-D layers' differences (the rescaled rank where it is the
        lower): the MoTHer paper's LoRA distance (docs/method.md), untouched layers adding 0.
    """

    untouched: float = 0.0
    low: float = 0.0
    changed: int = 0
    rescaled: int = 0
    rank_sum: int = 0


def lowrank_profile(stats: WeightStatistics, pl: PairLayers, p: int, c: int,
                     u: np.ndarray, settle: bool = False) -> LowRankProfile:
    """How ``c`` differs from ``p``: untouched share, low-rank share, changed layers, layers at low rank
    only after a per-row rescale (:func:`rescaled_rank`), summed rank (:class:`LowRankProfile`).

    The rescale is tried only on pairs with untouched weight matrices (:data:`LORA_UNTOUCHED`), the
    only ones whose rank decides anything: a fine-tune trains every matrix. For the low-rank *share*
    (the pair test, :func:`label_edge`) only layers at or above :data:`LORA_RANK` need it, and a refit
    that brings a layer under it decides. With ``settle`` (the summed rank that chooses a merged LoRA's
    parent, :func:`lora_links`) it is tried on every changed layer and refitted until the rank stops
    falling: a merged DoRA's layer reads 20-33 of 48 after the first, plain least-squares scale fit
    (under the threshold, so the pair test stops there) and its adapter's rank 4 two refits later, and
    summed over layers the unsettled figures made a sibling LoRA look nearer than the DoRA's base (the
    trained-root family of tests/test_lora_links.py: 152 against 200, settled 64 against 32)."""
    found = _changed_layers(stats, pl, p, c, u)
    if found is None:
        return LowRankProfile()
    untouched, changed, roundoff, layers = found
    ranks: list[float] = []
    rank_sum = 0
    rescaled = 0
    for sk, scale, rank, shape in layers:
        if untouched >= LORA_UNTOUCHED and (settle or rank >= LORA_RANK * min(shape)):
            after = rescaled_rank(sk[p], sk[c], scale, roundoff, settle=settle, key=(sk, p, c))
            if after < min(rank, LORA_RANK * min(shape)):
                rescaled += rank >= LORA_RANK * min(shape)
                rank = after
        ranks.append(rank / min(shape))
        rank_sum += rank
    low = float(np.mean(np.array(ranks) < LORA_RANK)) if ranks else 0.0
    return LowRankProfile(untouched, low, changed, rescaled, rank_sum)


def reads_low_rank(stats: WeightStatistics, pl: PairLayers, p: int, c: int, u: np.ndarray,
                   untouched: float = 0.0) -> bool:
    """The pair test of a merged LoRA: whether ``c`` differs from ``p`` on some layers, with at least
    ``untouched`` of the shared layers left as they were, and at low rank on at least half the changed
    2-D layers; exactly ``prof.changed and prof.untouched >= untouched and prof.low >= 0.5`` for
    ``prof = lowrank_profile(stats, pl, p, c, u)``, with the row-scale refits (:func:`rescaled_rank`)
    only until the answer is known.

    The refits are nearly all of a profile's cost, and a refit that leaves a layer at full rank runs all
    :data:`RESCALE_STEPS` of them on each of four sides; most pairs tested are not LoRAs (a quantized
    model's nearest floats for a QLoRA, ``copies._made_from``; every tree edge, ``detect.label_edge``), and
    their answer is known once more than half the layers stay at full rank. Layers already at low rank
    count first (they need no refit); which layers are refitted before the answer is known does not
    change it.
    """
    found = _changed_layers(stats, pl, p, c, u)
    if found is None:
        return False
    share, changed, roundoff, layers = found
    if not changed or share < untouched or not layers:
        return False
    n = len(layers)
    low = sum(rank / min(shape) < LORA_RANK for _, _, rank, shape in layers)
    # lowrank_profile refits layers at or above LORA_RANK, on pairs with untouched matrices only
    todo = [layer for layer in layers if not layer[2] / min(layer[3]) < LORA_RANK] if share >= LORA_UNTOUCHED else []
    todo.sort(key=lambda layer: math.prod(layer[3]))  # smaller skeletons first: cheaper SVDs, the same answer
    for at, (sk, scale, rank, shape) in enumerate(todo):
        if low / n >= 0.5 or (low + len(todo) - at) / n < 0.5:  # decided either way
            break
        after = rescaled_rank(sk[p], sk[c], scale, roundoff, key=(sk, p, c))
        low += after < min(rank, LORA_RANK * min(shape))
    return low / n >= 0.5


def _changed_layers(stats: WeightStatistics, pl: PairLayers, p: int, c: int, u: np.ndarray
                    ) -> tuple[float, int, float, list[tuple[np.ndarray, float, int, tuple[int, ...]]]] | None:
    """What :func:`lowrank_profile` reads before any refit: the untouched share, the number of changed
    shared layers, the pair's roundoff, and for each changed 2-D layer with a skeleton (its skeleton
    stack, the weights' RMS, the numerical rank of the ``c - p`` skeleton difference, the skeleton's
    shape); None when the two share no layer."""
    from mother_core.stats.skeleton import difference_singular_values, rank_above_floor

    rel = pl.rel[:, p, c]
    shared = np.isfinite(rel)
    if not shared.any():
        return None
    tol = untouched_tolerance(u, p, c)
    changed = shared & (rel > tol)
    untouched = untouched_share(stats, rel, tol)
    by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, float]]] = {}
    for slot in np.flatnonzero(changed):
        sk = stats.skeletons.get(int(slot))
        if sk is None or np.isnan(sk[[p, c]]).any():
            continue
        scale = math.sqrt(0.5 * float(np.mean(sk[p].astype(np.float64) ** 2) + np.mean(sk[c].astype(np.float64) ** 2)))
        by_shape.setdefault(sk.shape[1:], []).append((sk, scale))
    roundoff = max(u[p], u[c])
    layers = []
    for shape, items in by_shape.items():  # one batched SVD per skeleton shape, of the c - p differences
        # not already taken for the rank cue (a model and its nearest relative: stats/skeleton.py)
        sv = difference_singular_values([sk for sk, _ in items], [(c, p)] * len(items))
        r = rank_above_floor(sv, max(shape), np.array([s for _, s in items]), np.full(len(items), roundoff))
        layers += [(sk, scale, int(whole), shape) for (sk, scale), whole in zip(items, r)]
    return untouched, int(changed.sum()), roundoff, layers


def rescaled_rank(w: np.ndarray, w2: np.ndarray, scale: float, roundoff: float, settle: bool = False,
                  key: tuple[np.ndarray, int, int] | None = None) -> int:
    """Numerical rank of ``w2 - diag(s) w`` (rows, or columns for a transposed layout, whichever is
    lower) with the per-row scales s that best explain ``w2`` from ``w``: a merged DoRA's difference.

    DoRA (Liu et al. 2024; PEFT's ``DoraLinearLayer``) merges as ``W' = diag(m / ||W + B A||_row) (W + B A)``:
    every output row is rescaled to a learned magnitude, so ``W' - W`` is full rank although
    ``W' - diag(s) W`` is ``diag(s) B A``, of rank r. The scales are found in closed form, row by row
    (least squares of ``W'_i`` on ``W_i``), first on the whole row, then on the part of the row outside
    the span of the residual's leading right singular vectors up to its largest spectral gap (the span
    of A, which otherwise biases the fit by ``<(BA)_i, W_i> / ||W_i||^2`` and leaves a full-rank
    ``diag(bias) W`` term), until the rank is below :data:`LORA_RANK` (at most :data:`RESCALE_STEPS`
    refits; each cuts the bias term about tenfold, so float32's tight floor needs 5-8). Skeleton rows
    are whole output rows on a column subset, so the scales are those of the full matrix. GPT-2's
    Conv1D stores outputs as columns: the same fit on the transposes. The relation is symmetric
    (``W - diag(1/s) W' = -B A``) but the fit is not, so both ways are tried: the pair test does not
    know which model is the child. Without ``settle`` the first fit under :data:`LORA_RANK` decides
    (enough to call the layer low rank); with it the refits go on until the rank stops falling, which
    gives the adapter's own rank (the summed rank of :func:`lora_links` compares relatives by it).

    ``key`` (the skeleton stack and the rows ``w`` and ``w2`` are of) lets a :func:`remembered_rescales`
    block reuse each side's refits, for this pair in either order.

    The refits run on one thread for torch and for numpy's BLAS: their matrices are small, and extra
    threads only wait for a core on a busy machine (:func:`mother_core.device.one_blas_thread`).
    """
    import torch

    from mother_core.device import one_blas_thread, one_torch_thread
    from mother_core.stats.skeleton import rank_above_floor

    def one_side(a: np.ndarray, b: np.ndarray) -> int:
        cap = int(LORA_RANK * min(a.shape))
        basis = np.zeros((0, a.shape[1]))
        best = a.shape[0] + a.shape[1]
        k, last = 0, best
        for _ in range(RESCALE_STEPS + 1):
            pa, pb = a - (a @ basis.T) @ basis, b - (b @ basis.T) @ basis
            s = (pa * pb).sum(axis=1) / np.maximum((pa * pa).sum(axis=1), 1e-300)
            resid = b - s[:, None] * a
            _, sv_t, vh_t = torch.linalg.svd(torch.as_tensor(resid), full_matrices=False)
            sv, vh = sv_t.numpy()[None], vh_t.numpy()
            r = int(rank_above_floor(sv, max(resid.shape), np.array([scale]), np.array([roundoff]))[0])
            best = min(best, r)
            if r < LORA_RANK * min(a.shape) and (not settle or r >= last):  # a LoRA's rank: decided (settled)
                break
            # the next fit leaves out the span of A: the residual's leading singular vectors up to its
            # largest spectral gap (diag(s) B A above, the full-rank diag(bias) W below), at most the
            # rank a LoRA may have. The basis never shrinks, and doubles when the rank stopped falling:
            # a gap inside the span of A (a few of its directions much larger than the rest: a DoRA
            # whose magnitudes moved far, profile C seed 5, r = 20 of 64) leaves the rest of A in the
            # fit, whose bias then holds the rank still (55 of 64 through 8 refits; doubling: 20-45)
            top = sv[0, :cap + 1]
            gap = int(np.argmax(top[:-1] / np.maximum(top[1:], 1e-300))) + 1
            k = min(cap, max(gap, 2 * k if r >= last else k))  # (settling: r fell, so k is kept)
            last = r
            basis = vh[:k]
        return best

    memo = _RESCALED.get() if key is not None else None
    a, b = w.astype(np.float64), w2.astype(np.float64)
    best = a.shape[0] + a.shape[1]
    # small matrices: LAPACK's and OpenBLAS's threads only spin (stats/skeleton.py, device.one_blas_thread)
    with one_torch_thread(), one_blas_thread():
        # the sides (a, b), (b, a), (a.T, b.T), (b.T, a.T): the first that reads as a LoRA decides
        for swap, transpose in ((False, False), (True, False), (False, True), (True, True)):
            x, y = (b, a) if swap else (a, b)
            x, y = (x.T, y.T) if transpose else (x, y)
            if memo is None or key is None:
                side = one_side(x, y)
            else:
                stack, p, c = key
                mk = (id(stack), *((c, p) if swap else (p, c)), transpose, settle, scale, roundoff)
                hit = memo.get(mk)
                if hit is not None and hit[0] is stack:
                    side = hit[1]
                else:
                    side = one_side(x, y)
                    memo[mk] = (stack, side)
            best = min(best, side)
            if best < LORA_RANK * min(a.shape):
                break
    return best
