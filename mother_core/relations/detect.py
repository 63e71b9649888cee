"""Run the relation detectors on the statistics of one streaming pass (docs/RELATIONS.md).

Order (the near-exact relations first, so the fine-tune forest is solved on the rest):

1. ``convert``: same weights in another dtype / format (:mod:`.copies`);
2. ``quantized``: the float source of each quantized model (:mod:`.copies`);
3. ``adapter``: an unmerged PEFT adapter is read merged into the base its config names when that base
   is in the set; the weights must confirm it (the difference is low-rank on the targeted layers);
4. ``merge``: combinations of other models with a small residual (:mod:`.merge`).

Edges the forest then chooses are typed by :func:`label_edge`: ``lora`` (low rank on the targeted
layers only), ``prune`` (narrower layers), ``distill`` (fewer layers), else ``finetune``.
"""

from __future__ import annotations

import math

import numpy as np

from mother_core.io.base import ModelRef
from mother_core.io.registry import needs_base
from mother_core.relations.calibration import confidence, kind_of
from mother_core.relations.copies import CONVERT_TOL, find_conversions, find_quantized
from mother_core.relations.evidence import PairLayers, TypedFindings, TypedLink, pair_layers, storage_roundoff
from mother_core.relations.merge import find_merges
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Detectors that can be switched off (benchmarks/typed.py's ablation).
DETECTORS = ("convert", "quantized", "adapter", "merge", "shape", "lora")
#: A merged LoRA leaves at least this share of the shared layers untouched (not targeted).
LORA_UNTOUCHED = 0.15
#: ... and the layers it changed differ at less than this share of full rank (ranks up to half the
#: width are LoRAs; a trained layer is full rank).
LORA_RANK = 0.75
#: Refits of a merged DoRA's per-row scales outside the residual's leading subspace
#: (:func:`rescaled_rank`): each cuts the scale error about tenfold (a PEFT DoRA merged in fp32: tail /
#: top singular value 0.008, 1e-3, 2e-5 after 2, 3, 5 refits); fp32's floor is 1e-5 of the top.
RESCALE_STEPS = 8


#: Confidence of an adapter's base by (weights confirm a low-rank update, base named only by the model
#: card): benchmarks/calibrate_typed.py.
ADAPTER_CONFIDENCE = {(True, False): 0.95, (False, False): 0.6, (True, True): 0.8, (False, True): 0.5}


def detect_relations(stats: WeightStatistics, labels: np.ndarray,
                     detectors: tuple[str, ...] = DETECTORS) -> TypedFindings:
    """Typed links decided before the forest, and labels for the edges the forest may choose.

    Parameters
    ----------
    stats : WeightStatistics
    labels : ndarray (N,)
        Tree of each model (:func:`mother_core.recovery.forest.split_into_trees`).
    detectors : tuple of str
        Which of :data:`DETECTORS` run.
    """
    pl = pair_layers(stats)
    adapters = {i for i, m in enumerate(stats.models) if needs_base(m)}
    links: list[TypedLink] = []
    notes: list[tuple[int, str]] = []
    if "convert" in detectors:
        links += find_conversions(stats, pl, skip=adapters)
    copies = {link.child for link in links}
    if "quantized" in detectors:
        q_links, q_notes = find_quantized(stats, pl, not_parents=copies | adapters)
        links += q_links
        notes += q_notes
    if "adapter" in detectors:
        a_links, a_notes = _adapters(stats, pl, adapters)
        links += a_links
        notes += a_notes
    if "merge" in detectors:
        excluded = {link.child for link in links} | adapters
        links += find_merges(stats, pl, labels, excluded)
    partial = partial_updates(stats, pl, labels, {link.child for link in links} | adapters) \
        if "lora" in detectors else frozenset()
    return TypedFindings(links=tuple(links), notes=tuple(notes), partial=partial)


def partial_updates(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, skip: set[int]) -> frozenset[int]:
    """Models that differ from a relative of their tree on part of their layers only, at low rank:
    merged LoRAs (the same test as :func:`label_edge`'s ``lora``).

    The test is symmetric (a parent also differs from its merged LoRA on part of its layers, at low
    rank), so of each such pair the one farther from the rest of its tree is taken: a LoRA's update
    adds to its distance to every other model (nearly orthogonal updates), while its parent sits
    where the tree's other fine-tunes started from.
    """
    n = stats.n_models
    u = storage_roundoff(stats)
    out: set[int] = set()
    for t in np.unique(labels):
        members = [int(g) for g in np.flatnonzero(labels == t) if int(g) not in skip]
        if len(members) < 3:
            continue
        total = {g: sum(_total_rel(pl, g, h) for h in members if h != g) for g in members}
        for x, a in enumerate(members):
            for b in members[x + 1:]:
                rel = pl.rel[:, a, b]
                shared = np.isfinite(rel)
                # Cheap first: a share of layers equal up to rounding (SVDs only for those pairs).
                if not shared.any() or pl.shared[a, b] < 0.95 * max(pl.own[a], pl.own[b]):
                    continue
                same = _untouched_share(stats, rel, untouched_tolerance(u, a, b))
                if not LORA_UNTOUCHED <= same < 1.0:
                    continue
                _, low, changed, _ = _lowrank_profile(stats, pl, a, b, u)
                if changed and low >= 0.5:
                    out.add(a if total[a] > total[b] else b)
    return frozenset(g for g in out if 0 <= g < n)


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


def _untouched_share(stats: WeightStatistics, rel: np.ndarray, tol: float) -> float:
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
    return float(same.sum() / shared.sum()) if (same & matrix).any() else 0.0


def _total_rel(pl: PairLayers, a: int, b: int) -> float:
    ok = np.isfinite(pl.sq[:, a, b])
    return float(pl.sq[ok, a, b].sum() / max(pl.scale2[ok, a, b].sum(), 1e-300)) if ok.any() else 0.0


def _adapter_words(ref: ModelRef) -> tuple[str, str]:
    """(what the adapter is, where its base is named) for the evidence line."""
    if ref.container == "sd-lora":
        from mother_core.io.sd_lora import LAYOUT_NAMES

        layout = LAYOUT_NAMES.get(ref.scheme or "", ref.scheme or "")
        source = "its header metadata (ss_sd_model_name)" if ref.base_source else "its metadata"
        return f"unmerged Stable Diffusion LoRA file ({layout} layout)", source
    return "unmerged PEFT adapter", "adapter_config.json"


def _adapters(stats: WeightStatistics, pl: PairLayers, adapters: set[int]) -> tuple[list[TypedLink],
                                                                                  list[tuple[int, str]]]:
    """An adapter read merged into its declared base: the base is its parent when the weights agree."""
    from mother_core.io.discovery import adapter_base

    ids = {m.id: i for i, m in enumerate(stats.models)}
    links, notes = [], []
    u = storage_roundoff(stats)
    for a in sorted(adapters):
        ref = stats.models[a]
        found = adapter_base(ref, list(ids))
        if found is None:
            notes.append((a, f"adapter: its declared base {ref.base_id!r} is not in the set; only metadata "
                             "could tell which model it was trained on"))
            continue
        base_id, source = found
        base = ids[base_id]
        untouched, low, changed, rescaled = _lowrank_profile(stats, pl, base, a, u)
        agree = changed > 0 and low >= 0.5
        by_card = source == "model card"
        conf = ADAPTER_CONFIDENCE[(agree, by_card)]
        what, config = _adapter_words(ref)
        if by_card:
            named = (f"{config} names {ref.base_id!r}, not in the set" if ref.base_id else f"{config} names no base")
            named += f"; its model card names {base_id!r}"
        elif ref.base_source == "ss_sd_model_hash":
            named = f"its header's ss_sd_model_hash is the legacy hash of the file of {base_id!r}"
        else:
            named = f"{config} names {ref.base_id!r}, in the set"
        evidence = (f"{what}; {named}; merged into it, it changes {changed} layers"
                    + (f", {low:.0%} of them at low rank" if changed else "")
                    + (f" ({rescaled} after a DoRA-style row rescaling)" if agree and rescaled else "")
                    + ("" if agree else " (the weights do not confirm a low-rank update)")
                    + ("; which model of its family it was trained on rests on metadata only (the weights fit "
                       "every model of the same shapes alike)" if by_card else ""))
        conf = confidence(kind_of(Relation.ADAPTER.value, "", evidence), conf)
        links.append(TypedLink(a, (base,), Relation.ADAPTER, f"declared base {base_id}", conf, evidence=evidence))
    return links, notes


def _lowrank_profile(stats: WeightStatistics, pl: PairLayers, p: int, c: int,
                     u: np.ndarray) -> tuple[float, float, int, int]:
    """(share of shared layers unchanged, share of changed 2-D layers at low rank, changed layers, changed
    layers at low rank only after a per-row rescale (:func:`rescaled_rank`)).

    The rescale is tried only on pairs with untouched weight matrices (:data:`LORA_UNTOUCHED`), the
    only ones whose rank decides anything: a fine-tune trains every matrix."""
    from mother_core.stats.skeleton import difference_singular_values, rank_above_floor

    rel = pl.rel[:, p, c]
    shared = np.isfinite(rel)
    if not shared.any():
        return 0.0, 0.0, 0, 0
    tol = untouched_tolerance(u, p, c)
    changed = shared & (rel > tol)
    untouched = _untouched_share(stats, rel, tol)
    by_shape: dict[tuple[int, ...], list[tuple[np.ndarray, float]]] = {}
    for slot in np.flatnonzero(changed):
        sk = stats.skeletons.get(int(slot))
        if sk is None or np.isnan(sk[[p, c]]).any():
            continue
        scale = math.sqrt(0.5 * float(np.mean(sk[p].astype(np.float64) ** 2) + np.mean(sk[c].astype(np.float64) ** 2)))
        by_shape.setdefault(sk.shape[1:], []).append((sk, scale))
    ranks: list[float] = []
    rescaled = 0
    roundoff = max(u[p], u[c])
    for shape, items in by_shape.items():  # one batched SVD per skeleton shape, of the c - p differences
        # not already taken for the rank cue (a model and its nearest relative: stats/skeleton.py)
        sv = difference_singular_values([sk for sk, _ in items], [(c, p)] * len(items))
        r = rank_above_floor(sv, max(shape), np.array([s for _, s in items]), np.full(len(items), roundoff))
        for (sk, scale), rank in zip(items, r / min(shape)):
            if rank >= LORA_RANK and untouched >= LORA_UNTOUCHED:
                low_after = rescaled_rank(sk[p], sk[c], scale, roundoff) / min(shape)
                if low_after < LORA_RANK:
                    rescaled += 1
                    rank = low_after
            ranks.append(float(rank))
    low = float(np.mean(np.array(ranks) < LORA_RANK)) if ranks else 0.0
    return untouched, low, int(changed.sum()), rescaled


def rescaled_rank(w: np.ndarray, w2: np.ndarray, scale: float, roundoff: float) -> int:
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
    know which model is the child."""
    import torch

    from mother_core.device import one_torch_thread
    from mother_core.stats.skeleton import rank_above_floor

    def one_side(a: np.ndarray, b: np.ndarray) -> int:
        cap = int(LORA_RANK * min(a.shape))
        basis = np.zeros((0, a.shape[1]))
        best = a.shape[0] + a.shape[1]
        for _ in range(RESCALE_STEPS + 1):
            pa, pb = a - (a @ basis.T) @ basis, b - (b @ basis.T) @ basis
            s = (pa * pb).sum(axis=1) / np.maximum((pa * pa).sum(axis=1), 1e-300)
            resid = b - s[:, None] * a
            with one_torch_thread():  # small matrices: LAPACK's threads only spin (stats/skeleton.py)
                _, sv_t, vh_t = torch.linalg.svd(torch.as_tensor(resid), full_matrices=False)
            sv, vh = sv_t.numpy()[None], vh_t.numpy()
            r = int(rank_above_floor(sv, max(resid.shape), np.array([scale]), np.array([roundoff]))[0])
            best = min(best, r)
            if r < LORA_RANK * min(a.shape):  # already a LoRA's rank: decided
                break
            # the next fit leaves out the span of A: the residual's leading singular vectors up to its
            # largest spectral gap (diag(s) B A above, the full-rank diag(bias) W below), at most the
            # rank a LoRA may have
            top = sv[0, :cap + 1]
            basis = vh[:int(np.argmax(top[:-1] / np.maximum(top[1:], 1e-300))) + 1]
        return best

    a, b = w.astype(np.float64), w2.astype(np.float64)
    best = a.shape[0] + a.shape[1]
    for x, y in ((a, b), (b, a), (a.T, b.T), (b.T, a.T)):  # the first that reads as a LoRA decides
        best = min(best, one_side(x, y))
        if best < LORA_RANK * min(a.shape):
            break
    return best


def label_edge(stats: WeightStatistics, pl: PairLayers, p: int, c: int,
               detectors: tuple[str, ...] = DETECTORS) -> tuple[Relation, str, float, str]:
    """The relation of a forest edge p -> c: ``prune``/``distill`` by shapes, ``lora`` by rank, else
    ``finetune``; returns (relation, detail, confidence, evidence)."""
    if "shape" in detectors and pl.own[c] < 0.97 * pl.own[p]:
        kind = _shape_change(stats, p, c)
        if kind is not None:
            return kind
    if "lora" in detectors:
        u = storage_roundoff(stats)
        untouched, low, changed, rescaled = _lowrank_profile(stats, pl, p, c, u)
        if changed and untouched >= LORA_UNTOUCHED and low >= 0.5:
            return (Relation.LORA, f"{changed} layers changed"
                    + (f", {rescaled} low rank after a DoRA-style row rescaling" if rescaled else ""),
                    confidence(Relation.LORA.value, 0.85),
                    f"differs from its parent on {changed} layers only ({untouched:.0%} of shared layers "
                    f"untouched), {low:.0%} of them at low rank"
                    + (f" ({rescaled} of them after a DoRA-style row rescaling: each output row scaled to "
                       "its own magnitude, as a merged DoRA does)" if rescaled else ""))
    return Relation.FINETUNE, "", math.nan, ""


def _shape_change(stats: WeightStatistics, p: int, c: int) -> tuple[Relation, str, float, str] | None:
    """``prune`` when the child holds narrower versions of the parent's tensors, ``distill`` when it
    holds fewer of them (fewer layers)."""
    names_p = {t.name: t.shape for t, ok in zip(stats.tensors, stats.present[p]) if ok}
    names_c = {t.name: t.shape for t, ok in zip(stats.tensors, stats.present[c]) if ok}
    narrower = [n for n in names_c if n in names_p and names_c[n] != names_p[n]]
    missing = [n for n in names_p if n not in names_c]
    if narrower:
        return (Relation.PRUNE, f"{len(narrower)} tensors narrower", confidence(Relation.PRUNE.value, 0.8),
                f"{len(narrower)} of its tensors are narrower versions of the parent's; the rest match")
    if missing and set(names_c) <= set(names_p):
        return (Relation.DISTILL, f"{len(missing)} fewer tensors", confidence(Relation.DISTILL.value, 0.7),
                f"holds a subset of the parent's tensors ({len(missing)} fewer: fewer layers)")
    return None
