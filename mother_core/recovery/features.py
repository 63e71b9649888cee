"""Pairwise evidence from weight statistics: layer selection, distances, kurtosis differences.

All matrices are (N, N) over the models of a :class:`~mother_core.stats.result.WeightStatistics`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from mother_core.errors import InputError
from mother_core.io.names import LAYER_KINDS
from mother_core.settings import LAYER_SELECTIONS
from mother_core.stats.result import WeightStatistics

#: Relative layer difference at which a layer counts as re-initialised rather than fine-tuned
#: (independent weights of one shape sit at sqrt(2) ~ 1.41; fine-tuning moves a layer by a fraction).
REINITIALISED = 0.8


def select_layers(stats: WeightStatistics, layers: str = "matrices", name_pattern: str | None = None) -> np.ndarray:
    """Boolean mask (T,) of the tensor slots used for recovery.

    Parameters
    ----------
    layers : str
        ``"matrices"`` (default: every weight with two or more dimensions, convolutions included —
        beyond the paper, which kept square attention matrices only), ``"all"`` (every float tensor,
        norms and biases too), ``"square-attention"`` (the paper's choice), or a comma-separated list
        of layer kinds (``"attn_q,attn_v,mlp"``).
    name_pattern : str, optional
        A regular expression; only slots whose name matches (``re.search``) are kept.
    """
    metas = stats.tensors
    if layers == "all":
        mask = np.ones(len(metas), dtype=bool)
    elif layers == "matrices":
        mask = np.array([len(t.shape) >= 2 for t in metas], dtype=bool)
    elif layers == "square-attention":
        mask = np.array([t.is_square_attention for t in metas], dtype=bool)
    else:
        kinds = {k.strip() for k in layers.split(",") if k.strip()}
        unknown = kinds - set(LAYER_KINDS)
        if unknown:
            raise InputError(
                f"Unknown layer selection {layers!r}: use one of {', '.join(LAYER_SELECTIONS)} or a "
                f"comma-separated list of kinds from {', '.join(sorted(LAYER_KINDS))}."
            )
        mask = np.array([t.kind in kinds for t in metas], dtype=bool)
    if name_pattern:
        try:
            rx = re.compile(name_pattern)
        except re.error as e:
            raise InputError(f"Invalid layer name pattern {name_pattern!r}: {e}.") from e
        mask &= np.array([bool(rx.search(t.name)) for t in metas], dtype=bool)
    return mask


@dataclass(frozen=True)
class PairEvidence:
    """The pairwise matrices recovery works from.

    Attributes
    ----------
    rms : ndarray (L, N, N)
        Per-layer RMS of the difference, RMS(W_i - W_j) = ||W_i - W_j||_F / sqrt(numel); NaN where the
        pair does not share the layer or it was set aside as re-initialised.
    distance : ndarray (N, N)
        The paper's l_FT: mean over shared selected layers of ``rms`` (inf when nothing is shared).
    relative : ndarray (N, N)
        Median over shared selected layers of ||W_i - W_j|| / sqrt((||W_i||^2 + ||W_j||^2) / 2):
        ~0 for a light fine-tune, ~sqrt(2) for independently initialised models. Scale-free, so it
        separates trees across architectures.
    shared : ndarray (N, N) of int
        Number of selected layers each pair shares (and that count as evidence for the pair).
    kurtosis_delta : ndarray (N, N)
        Sum over shared selected layers of ku_j - ku_i (i -> j raises kurtosis when positive).
    votes_up : ndarray (N, N) of int
        Number of shared selected layers whose kurtosis rises from i to j.
    kurtosis_trend : ndarray (N, N)
        Magnitude-weighted vote in [-1, 1]: sum(ku_j - ku_i) / sum|ku_j - ku_i| over shared layers;
        +1 when every layer's kurtosis rises from i to j.
    norm_growth : ndarray (N, N)
        In [-1, 1]: clip(sum(||W_j||^2 - ||W_i||^2) / sum ||W_j - W_i||^2). A fine-tune adds an update
        nearly orthogonal to its parent's weights (exactly so for a merged LoRA B @ A on a frozen base),
        so ||child||^2 ~ ||parent||^2 + ||update||^2 and the value is ~+1 from parent to child, ~-1 back.
    layer_index : ndarray (L,)
        The slot indices (into ``stats.tensors``) of the selected layers.
    scale_fit : ndarray (N, N)
        In [-1, 1]: how much better "j is i rescaled by one factor for every layer, plus an update
        orthogonal to i" fits than the same with the roles swapped (:func:`scale_fit`). Unlike
        ``norm_growth`` it holds whether norms grow or shrink (decoupled weight decay shrinks every
        tensor by one factor), so it has no sign to read per tree.
    """

    rms: np.ndarray
    distance: np.ndarray
    relative: np.ndarray
    shared: np.ndarray
    kurtosis_delta: np.ndarray
    votes_up: np.ndarray
    layer_index: np.ndarray
    kurtosis_trend: np.ndarray
    norm_growth: np.ndarray
    effective_rank_trend: np.ndarray | None = None  # see effective_rank_trend(); filled by recover
    scale_fit: np.ndarray | None = None
    subspace_trend: np.ndarray | None = None  # see subspace_trend(); filled by recover


def pair_evidence(stats: WeightStatistics, mask: np.ndarray, drop_reinitialised: bool = True) -> PairEvidence:
    """Compute :class:`PairEvidence` for the selected slots ``mask``.

    Parameters
    ----------
    drop_reinitialised : bool
        Per pair, ignore layers whose relative difference is at the level of unrelated weights
        (>= :data:`REINITIALISED`) while other layers of the pair are close: a classification head
        re-initialised for a new task says nothing about lineage and would otherwise dominate the
        mean. When every shared layer is that far (unrelated models), all are kept.
    """
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        raise InputError("The layer selection matches no tensor of these models; choose another selection.")
    numel = stats.numel[idx].astype(np.float64)  # (L,)
    sq = stats.sq_dist[idx]  # (L, N, N)
    shared_any = ~np.isnan(sq)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(sq / numel[:, None, None])
        norm2 = stats.norm[:, idx].T ** 2  # (L, N)
        scale = np.sqrt((norm2[:, :, None] + norm2[:, None, :]) / 2)
        rel_layer = np.where(scale > 0, np.sqrt(sq) / scale, 0.0)  # (L, N, N)
    keep = shared_any
    if drop_reinitialised:
        close = shared_any & (rel_layer < REINITIALISED)
        keep = np.where(close.any(axis=0)[None], close, shared_any)
    shared = keep.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.where(shared > 0, np.where(keep, rms, 0.0).sum(axis=0) / shared, np.inf)
        # The median over *all* shared layers: robust both to a re-initialised head in a related
        # pair and to a few identically initialised layers (zeros, ones) in an unrelated pair.
        with warnings.catch_warnings():  # pairs sharing nothing: an all-NaN slice, set to inf below
            warnings.simplefilter("ignore", RuntimeWarning)
            relative = np.nanmedian(np.where(shared_any, rel_layer, np.nan), axis=0)
        relative = np.where(shared_any.any(axis=0), relative, np.inf)
    ku = stats.kurtosis[:, idx].T  # (L, N)
    delta = np.where(keep, ku[:, None, :] - ku[:, :, None], 0.0)  # (L, N, N): ku_j - ku_i
    kurtosis_delta = delta.sum(axis=0)
    votes_up = (delta > 0).sum(axis=0).astype(int)
    abs_delta = np.abs(delta).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        kurtosis_trend = np.where(abs_delta > 0, kurtosis_delta / abs_delta, 0.0)
        growth = np.where(keep, norm2[:, None, :] - norm2[:, :, None], 0.0).sum(axis=0)  # ||W_j||^2 - ||W_i||^2
        moved = np.where(keep, sq, 0.0).sum(axis=0)
        norm_growth = np.clip(np.where(moved > 0, growth / moved, 0.0), -1.0, 1.0)
    np.fill_diagonal(distance, 0.0)
    np.fill_diagonal(relative, 0.0)
    return PairEvidence(np.where(keep, rms, np.nan), distance, relative, shared, kurtosis_delta, votes_up, idx,
                        kurtosis_trend, norm_growth, scale_fit=scale_fit(norm2, sq, keep))


def scale_fit(norm2: np.ndarray, sq: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """In [-1, 1]: evidence that j descends from i as one rescaling of i plus orthogonal updates.

    Model: W_j = s * W_i + U with one factor s for every layer and each layer's update U orthogonal to
    W_i. Fine-tuning without weight decay is s = 1 (norm growth, ``PairEvidence.norm_growth``);
    decoupled weight decay (AdamW) multiplies every tensor by the same (1 - lr * wd) per step, s < 1.
    Per layer the fitted factor is s_l = <W_i, W_j> / ||W_i||^2 (from the norms and the squared
    distance the pass keeps); under the model log s_l is one value in every layer, whatever the
    layer's update size. Read the other way (i from j) the factor is s'_l = <W_i, W_j> / ||W_j||^2,
    which carries each layer's own norm change. With v = the variance of log s_l over the layers and
    v' that of log s'_l, the value is (v' - v) / (v' + v): +1 when i -> j fits one factor exactly,
    -1 when j -> i does, antisymmetric. Layers count as replicates (equal weights). Whether norms
    grow or shrink does not enter, so the cue has no sign to read per tree.

    Parameters
    ----------
    norm2 : ndarray (L, N)
        Squared norm of each selected layer of each model.
    sq : ndarray (L, N, N)
        Squared distance ||W_i - W_j||^2 per layer (NaN where not shared).
    keep : ndarray (L, N, N) of bool
        The layers that count for each pair (shared, not re-initialised).
    """
    n_layers, n = norm2.shape
    v = np.zeros((n, n))
    rows = max(1, SCALE_FIT_BLOCK // max(1, n_layers * n))  # rows i per block: bounded temporaries
    with np.errstate(invalid="ignore", divide="ignore"):
        for a in range(0, n, rows):
            b = min(n, a + rows)
            ni, nj = norm2[:, a:b, None], norm2[:, None, :]
            ok = keep[:, a:b] & (ni > 0) & (nj > 0)
            dot = (ni + nj - np.where(ok, sq[:, a:b], 0.0)) / 2  # <W_i, W_j>
            ok &= dot > 0  # related weights point the same way; unrelated ones say nothing here
            ls = np.where(ok, np.log(np.where(ok, dot, 1.0) / ni), 0.0)  # log s_l, i -> j
            count = ok.sum(axis=0)
            mean = ls.sum(axis=0) / np.maximum(count, 1)
            v[a:b] = np.where(count >= 2, (np.where(ok, ls - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1), 0.0)
        vr = v.T  # log s'_l of i -> j is log s_l of j -> i
        total = v + vr
        out = np.where(total > 0, (vr - v) / np.where(total > 0, total, 1.0), 0.0)
    np.fill_diagonal(out, 0.0)
    return out


#: Elements per block of :func:`scale_fit`'s (layers, rows, N) temporaries (~160 MB of float64).
SCALE_FIT_BLOCK = 20_000_000


#: Candidate parents per model whose difference rank is measured (the nearest by distance).
RANK_CANDIDATES = 6
#: A tree counts as low-rank (merged LoRA) when, for most models, the nearest relative differs at
#: less than this fraction of full rank.
LOW_RANK_FRACTION = 0.5


@dataclass(frozen=True)
class RankEvidence:
    """Normalised rank of weight differences for candidate pairs of one tree (docs/METHOD.md l_LoRA).

    ``rank[i, j]``: mean over the skeleton layers that differ of rank(W_i - W_j) / k in [0, 1] (0 when
    no layer differs), NaN where not measured.
    ``low_rank``: whether the tree's models differ from their nearest relative at low rank.
    """

    rank: np.ndarray
    low_rank: bool
    nearest_rank: float


def rank_evidence(stats: WeightStatistics, mask: np.ndarray, distance: np.ndarray, members: np.ndarray,
                  candidates: int = RANK_CANDIDATES) -> RankEvidence | None:
    """Measure difference ranks within one tree from the statistics' skeletons.

    First each model's nearest relative only (cheap: N SVDs per layer) to decide whether the tree is
    low-rank; if it is, every model's ``candidates`` nearest relatives. None when no selected layer has
    a skeleton.
    """
    from mother_core.stats.skeleton import difference_singular_values, rank_above_floor

    slots = [int(s) for s in np.flatnonzero(mask) if s in stats.skeletons]
    n = len(members)
    model_roundoff = stats.roundoff
    if not slots or n < 2 or model_roundoff is None:
        return None
    d = distance[np.ix_(members, members)].copy()
    np.fill_diagonal(d, np.inf)
    order = np.argsort(d, axis=1)
    rank = np.full((n, n), np.nan)

    def measure(pairs: list[tuple[int, int]]) -> None:
        pairs = [(a, b) for a, b in pairs if np.isnan(rank[a, b])]
        if not pairs:
            return
        totals = np.zeros(len(pairs))
        counts = np.zeros(len(pairs))
        for s in slots:
            sk = stats.skeletons[s]
            ga, gb = members[[a for a, _ in pairs]], members[[b for _, b in pairs]]
            ok = ~(np.isnan(sk[ga]).any(axis=(1, 2)) | np.isnan(sk[gb]).any(axis=(1, 2)))
            if not ok.any():
                continue
            scale = np.sqrt(0.5 * (np.mean(sk[ga[ok]].astype(np.float64) ** 2, axis=(1, 2))
                                   + np.mean(sk[gb[ok]].astype(np.float64) ** 2, axis=(1, 2))))
            roundoff = np.maximum(model_roundoff[ga[ok]], model_roundoff[gb[ok]])
            # The singular values of sk[a] - sk[b]; remembered for the edges' labels (stats/skeleton.py).
            sv = difference_singular_values([sk] * int(ok.sum()), list(zip(ga[ok].tolist(), gb[ok].tolist())))
            r = rank_above_floor(sv, max(sk.shape[1:]), scale, roundoff) / min(sk.shape[1:])
            # Only layers that changed count: frozen layers (rank 0) are shared by a whole family
            # and would make a partial fine-tune (a few full-rank layers) look low-rank.
            totals[ok] += r
            counts[ok] += r > 0
        for (a, b), t, c in zip(pairs, totals, counts):
            rank[a, b] = rank[b, a] = t / c if c else 0.0

    measure([(i, int(order[i, 0])) for i in range(n) if np.isfinite(d[i, order[i, 0]])])
    nearest = np.array([rank[i, order[i, 0]] for i in range(n)])
    nearest_rank = float(np.nanmedian(nearest)) if np.isfinite(nearest).any() else 1.0
    low = nearest_rank < LOW_RANK_FRACTION
    if low:
        k = min(candidates, n - 1)
        measure([(i, int(order[i, c])) for i in range(n) for c in range(k) if np.isfinite(d[i, order[i, c]])])
    return RankEvidence(rank, low, nearest_rank)


#: At most this many skeleton layers (evenly spread) enter the effective-rank cue: N SVDs each.
ERANK_MAX_LAYERS = 24


def skeleton_slots(stats: WeightStatistics, mask: np.ndarray, max_layers: int) -> list[int]:
    """The selected slots with a skeleton, at most ``max_layers`` of them, evenly spread over the model."""
    slots = [int(s) for s in np.flatnonzero(mask) if s in stats.skeletons]
    if len(slots) > max_layers:
        slots = [slots[i] for i in np.linspace(0, len(slots) - 1, max_layers).round().astype(int)]
    return slots


def effective_rank_trend(stats: WeightStatistics, mask: np.ndarray, max_layers: int = ERANK_MAX_LAYERS) -> np.ndarray:
    """In [-1, 1]: the magnitude-weighted vote of per-layer changes of effective rank from i to j.

    The effective rank of a matrix is exp of the entropy of its normalised singular values (Roy &
    Vetterli 2007); 2026 lineage work reports it lower in the parent than in a fine-tuned child
    (method.md, "What the signals look like"). It is read from the fixed random submatrices the pass
    already keeps (:mod:`mother_core.stats.skeleton`), so it costs no extra read. +1 when every layer's
    effective rank rises from i to j; 0 where no layer has a skeleton.

    See Also
    --------
    spectral_trends : this cue and the subspace one from one SVD per model and layer.
    """
    trend = spectral_trends(stats, mask, np.zeros((0, 2), dtype=np.int64), max_layers, effective_rank=True)
    assert trend.effective_rank is not None
    return trend.effective_rank


#: The top singular directions a model's own matrix spans, as a share of the skeleton's smaller side
#: (at least one): where :func:`subspace_trend` looks for an update.
SUBSPACE_SHARE = 0.1
#: Pairs whose skeleton differences are held at once in :func:`subspace_trend` (256 x 96 x 96 float64: 19 MB).
SUBSPACE_BLOCK = 256
#: Each model's nearest relatives in its tree for which :func:`subspace_pairs` asks the cue: every pair of a
#: tree of up to 13 models (all fitting trees), linear cost in the number of models beyond.
SUBSPACE_CANDIDATES = 12


def subspace_pairs(distance: np.ndarray, labels: np.ndarray, candidates: int = SUBSPACE_CANDIDATES) -> np.ndarray:
    """(P, 2) pairs i < j of one tree where j is among i's ``candidates`` nearest tree-mates or the reverse:
    the edges an arborescence can take in practice, at a cost linear in the number of models."""
    pairs: set[tuple[int, int]] = set()
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        if len(members) < 2:
            continue
        d = distance[np.ix_(members, members)].astype(np.float64)
        np.fill_diagonal(d, np.inf)
        near = np.argsort(d, axis=1)[:, :candidates]
        for a, row in enumerate(near):
            for b in row:
                if np.isfinite(d[a, b]):
                    i, j = int(members[a]), int(members[b])
                    pairs.add((min(i, j), max(i, j)))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def subspace_trend(stats: WeightStatistics, mask: np.ndarray, pairs: np.ndarray | None = None,
                   max_layers: int = ERANK_MAX_LAYERS) -> np.ndarray:
    """In [-1, 1]: evidence that j descends from i because the update lies in j's own principal directions.

    A fine-tune adds a structured update U = W_j - W_i (a few directions carry most of a gradient's
    energy; a merged LoRA is low-rank outright). Added to the parent, it becomes part of the child's
    top singular directions; the parent's own top directions never saw it. So the share of ||U||^2
    inside the top-k left and right singular subspaces of the *child* exceeds the share inside the
    *parent's*. Per layer the value is (share_j(U) - share_i(U)), with U's sign irrelevant (a share is
    quadratic), so the matrix is antisymmetric; layers are combined as the magnitude-weighted vote
    (sum of values over sum of their magnitudes), as :func:`effective_rank_trend`. It has no sign to
    read per tree: the update sits in the child's directions under growth, weight decay and continued
    pre-training alike (fitting collections, ``benchmarks/fftdir_diag.py``: the cue alone points the
    true way with AUROC 0.84 on 198 full fine-tuning edges, 0.98 on 108 merged-LoRA edges,
    benchmarks/RESULTS.md, "Full fine-tune trees: wrong edges by cause").

    Read from the fixed random submatrices the pass keeps (:mod:`mother_core.stats.skeleton`): a row and
    column subset of a low-dimensional update is low-dimensional too, so no extra read. k is
    :data:`SUBSPACE_SHARE` of the skeleton's smaller side.

    Parameters
    ----------
    pairs : ndarray (P, 2) of int, optional
        The pairs to measure (:func:`subspace_pairs`); every pair when None. 0 elsewhere, and where no
        layer has a skeleton for the pair.

    See Also
    --------
    spectral_trends : this cue and the effective-rank one from one SVD per model and layer.
    """
    return spectral_trends(stats, mask, pairs, max_layers).subspace


@dataclass(frozen=True)
class SpectralTrends:
    """The two direction cues read from the singular value decomposition of the skeletons.

    Attributes
    ----------
    effective_rank : ndarray (N, N) or None
        :func:`effective_rank_trend`; None where it was not asked for.
    subspace : ndarray (N, N)
        :func:`subspace_trend` on the pairs asked for; 0 elsewhere.
    """

    effective_rank: np.ndarray | None
    subspace: np.ndarray


def spectral_trends(stats: WeightStatistics, mask: np.ndarray, pairs: np.ndarray | None = None,
                    max_layers: int = ERANK_MAX_LAYERS, *, effective_rank: bool = False) -> SpectralTrends:
    """:func:`subspace_trend` on ``pairs`` and, if asked, :func:`effective_rank_trend`, from one SVD each.

    Both cues read the same skeletons (:func:`skeleton_slots`): the effective rank needs each model's
    singular values, the subspace cue its top singular directions. One decomposition per model and layer
    gives both; the recovery used to decompose every skeleton twice.

    Parameters
    ----------
    pairs : ndarray (P, 2) of int, optional
        The pairs the subspace cue measures (:func:`subspace_pairs`); every pair when None.
    effective_rank : bool
        Also compute the effective-rank cue (over every pair of models).
    """
    n = stats.n_models
    if pairs is None:
        pairs = np.stack(np.triu_indices(n, 1), axis=1)
    in_pairs = np.isin(np.arange(n), pairs)
    rank_total, rank_magnitude = np.zeros((n, n)), np.zeros((n, n))
    space_total, space_magnitude = np.zeros(len(pairs)), np.zeros(len(pairs))
    for s in skeleton_slots(stats, mask, max_layers) if effective_rank or len(pairs) else []:
        sk = stats.skeletons[s].astype(np.float64)  # (N, k1, k2)
        ok = np.asarray(~np.isnan(sk).any(axis=(1, 2)), dtype=bool)
        # The effective rank compares every model with the layer; the subspace cue only the pairs' models.
        rank_ok = effective_rank and ok.sum() >= 2
        space_ok = np.count_nonzero(ok & in_pairs) >= 2
        decomposed = ok if rank_ok else ok & in_pairs
        if not (rank_ok or space_ok):
            continue
        spectrum = _skeleton_svd(sk, decomposed)
        if rank_ok:
            delta = _effective_rank_change(spectrum.singular, decomposed)
            rank_total += delta
            rank_magnitude += np.abs(delta)
        if space_ok:
            delta_p = _subspace_share_change(sk, ok, spectrum, pairs)
            space_total += delta_p
            space_magnitude += np.abs(delta_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        rank = np.where(rank_magnitude > 0, rank_total / rank_magnitude, 0.0) if effective_rank else None
        value = np.where(space_magnitude > 0, space_total / space_magnitude, 0.0)
    subspace = np.zeros((n, n))
    if len(pairs):
        subspace[pairs[:, 0], pairs[:, 1]] = value
        subspace[pairs[:, 1], pairs[:, 0]] = -value
    return SpectralTrends(rank, subspace)


@dataclass(frozen=True)
class _SkeletonSVD:
    """One layer's skeletons decomposed: rows not decomposed hold NaN singular values and zero vectors."""

    singular: np.ndarray  # (N, min(k1, k2)), descending
    left: np.ndarray  # (N, k1, k): the top-k left singular vectors, k from SUBSPACE_SHARE
    right_t: np.ndarray  # (N, k, k2): the matching right singular vectors, transposed


def _skeleton_svd(sk: np.ndarray, rows: np.ndarray) -> _SkeletonSVD:
    """The SVD of ``sk[rows]`` (one batch on one thread: small SVDs, stats/skeleton.py, singular_values)."""
    import torch

    from mother_core.device import one_torch_thread

    n, k1, k2 = sk.shape
    k = max(1, int(round(SUBSPACE_SHARE * min(k1, k2))))
    singular = np.full((n, min(k1, k2)), np.nan)
    left, right_t = np.zeros((n, k1, k)), np.zeros((n, k, k2))
    with one_torch_thread():
        u, sv, vt = torch.linalg.svd(torch.as_tensor(sk[rows]), full_matrices=False)
    singular[rows], left[rows], right_t[rows] = sv.numpy(), u[:, :, :k].numpy(), vt[:, :k, :].numpy()
    return _SkeletonSVD(singular, left, right_t)


def _effective_rank_change(singular: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(N, N): er_j - er_i, the change of effective rank exp(entropy of the normalised singular values)
    from model i to model j; 0 where either lacks the layer."""
    n = len(singular)
    sv = singular[ok]  # (n_ok, k)
    p = sv / np.maximum(sv.sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    er = np.full(n, np.nan)
    er[ok] = np.exp(entropy)
    delta = er[None, :] - er[:, None]  # er_j - er_i
    return np.where(np.isfinite(delta), delta, 0.0)


def _subspace_share_change(sk: np.ndarray, ok: np.ndarray, svd: _SkeletonSVD, pairs: np.ndarray) -> np.ndarray:
    """(P,): per pair (i, j), the share of ||U||^2, U = W_j - W_i, in j's top singular directions minus
    the share in i's (:func:`subspace_trend`); 0 where either lacks the layer or U = 0."""
    out = np.zeros(len(pairs))
    for lo in range(0, len(pairs), SUBSPACE_BLOCK):
        i, j = pairs[lo:lo + SUBSPACE_BLOCK, 0], pairs[lo:lo + SUBSPACE_BLOCK, 1]
        both = ok[i] & ok[j]
        u = sk[j] - sk[i]  # (P, k1, k2)
        u2 = (u ** 2).sum(axis=(1, 2))

        def energy(m: np.ndarray, u: np.ndarray = u) -> np.ndarray:
            """||A_m^T U B_m||^2 per pair: U's energy in model m's top-k directions."""
            t = np.einsum("pkr,pkl->prl", svd.left[m], u, optimize=True)
            return (np.einsum("prl,pql->prq", t, svd.right_t[m], optimize=True) ** 2).sum(axis=(1, 2))

        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:lo + SUBSPACE_BLOCK] = np.where(both & (u2 > 0),
                                                   (energy(j) - energy(i)) / np.where(u2 > 0, u2, 1.0), 0.0)
    return out
