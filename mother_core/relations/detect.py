"""Run the relation detectors on the statistics of one streaming pass (docs/RELATIONS.md).

Order (the near-exact relations first, so the fine-tune forest is solved on the rest):

1. ``convert``: same weights in another dtype / format (:mod:`.copies`);
2. ``quantized``: the float source of each quantized model (:mod:`.copies`);
3. ``adapter``: an unmerged PEFT adapter is read merged into the base its config names when that base
   is in the set; the weights must confirm it (the difference is low-rank on the targeted layers; for
   adapters whose updates are not low rank, PEFT's LoHa, LoKr, IA3, OFT, BOFT and LN tuning and the
   LyCORIS module types of a Stable Diffusion file, that it differs at all);
4. ``merge``: combinations of other models with a small residual (:mod:`.merge`);
   and layer-stacking merges (mergekit ``passthrough``): a deeper model whose every layer is a layer of
   shallower relatives (:mod:`.stack`);
5. ``distill`` and ``prune`` (the ``shape`` detector): a depth-pruned child is linked to the deeper
   relative whose layers it holds, in order (:mod:`.depth`); a width-pruned child to the relative whose
   weights make exactly its cut (:mod:`.prune`);
6. ``lora``: a merged LoRA is linked to the relative holding the layers it left untouched, at the
   lowest summed rank (:func:`lora_links`); it stays a member of the forest for placing the others.

Edges the forest then chooses are typed by :func:`label_edge`: ``lora`` (low rank on the targeted
layers only), ``prune`` (narrower layers), ``distill`` (fewer layers), else ``finetune``.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np

from mother_core.io.base import ModelRef
from mother_core.io.registry import needs_base
from mother_core.relations.calibration import DECLARED_CONTRADICTED, confidence, kind_of
from mother_core.relations.copies import find_conversions, find_quantized
from mother_core.relations.depth import find_depth_pruned
from mother_core.relations.evidence import PairLayers, TypedFindings, TypedLink, pair_layers, storage_roundoff
from mother_core.relations.lowrank import (
    LORA_UNTOUCHED, LowRankProfile, lowrank_profile, reads_low_rank, untouched_share, untouched_tolerance,
)
from mother_core.relations.merge import exact_merge_of, find_merges, merge_layers
from mother_core.relations.merge_signs import sign_step
from mother_core.relations.prune import find_pruned
from mother_core.relations.stack import LayerReads, find_stacks, quantized_sources
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Detectors that can be switched off (benchmarks/typed.py's ablation).
DETECTORS = ("convert", "quantized", "adapter", "merge", "shape", "lora")
#: Detectors run only when named (``relations="convert,...,merge,merge-signs"``): sparse merges confirmed by the
#: signs of their sampled entries (:mod:`.merge_signs`). Right on every fitting typed set where it read (36 of 36
#: parents), but on the lead's held-out sets (benchmarks/RESULTS.md, "Fresh sets C 73, C 75, D 221, D 223") it
#: put two wrong parents at 0.908 and reversed two edges of a fine-tune collection. Counted since on the fitting
#: material (benchmarks/RESULTS.md, "Merge parents' confidence per evidence kind"): 39 of 39 parents right, all on
#: profile C and a stress set, none read on a profile D or S set or a generalise fitting collection, so no count
#: speaks for the families where it failed: still opt-in, its confidence its counted rate (``calibration.SIGNS_KIND``).
OPTIONAL_DETECTORS = ("merge-signs",)
#: Relative margin of summed rank (:func:`lora_links`) from which a merged LoRA's parent keeps its full
#: confidence: the margin of a base over a sibling LoRA (or its own parent) of half the LoRA's rank, whose
#: difference from the LoRA has rank r + r / 2. Below it the confidence falls linearly to half (a tie:
#: either of two relatives). Constant of reasoning, not fitted: profile C has no merged LoRA with two
#: relatives holding its untouched layers.
LORA_MARGIN = 1 / 3


#: Confidence of an adapter's base by (weights confirm a low-rank update, base named only by the model
#: card): benchmarks/calibrate_typed.py.
ADAPTER_CONFIDENCE = {(True, False): 0.95, (False, False): 0.6, (True, True): 0.8, (False, True): 0.5}
#: Confidence of an adapter's declared base when another model of the set explains the adapter's update better
#: (:func:`declared_base_contradicted`): the set holds the update applied to that other model, none applied to the
#: declared one. A constant of reasoning, below 0.5: the one case seen (the third stress set's VeRA, all three
#: seeds) was wrong, and no fitting typed set has one.
CONTRADICTED_CONFIDENCE = 0.3
#: Largest residual of a contradicting fit, as a share of the update's squared size: ``||M - C - (A - B)||^2``
#: at most a quarter of ``||A - B||^2``. On the fitting typed sets (C 5-57, D 200-204) every other (M, C) pair
#: leaves about the whole update (0.97 or more: a copy of C for M); the stress set's merged copy leaves 0.
CONTRADICT_RESIDUAL = 0.25
#: Residual share within which other candidate bases tie with the best (copies of one another: a pickle or a cast of
#: the real base fits the merged copy to its rounding).
CONTRADICT_TIE = 0.01


def detect_relations(stats: WeightStatistics, labels: np.ndarray,
                     detectors: tuple[str, ...] = DETECTORS, reads: LayerReads | None = None) -> TypedFindings:
    """Typed links decided before the forest, and labels for the edges the forest may choose.

    Parameters
    ----------
    stats : WeightStatistics
    labels : ndarray (N,)
        Tree of each model (:func:`mother_core.recovery.forest.split_into_trees`).
    detectors : tuple of str
        Which of :data:`DETECTORS` run.
    reads : LayerReads, optional
        Layers the stack and depth detectors read from ``stats``' models, kept across runs on the same
        statistics (``recover`` reruns this after a stack's split and after joining trees: the reads do not
        depend on ``labels``); a fresh one when not given.
    """
    reads = LayerReads.of(stats, reads)
    pl = pair_layers(stats)
    adapters = {i for i, m in enumerate(stats.models) if needs_base(m)}
    links: list[TypedLink] = []
    notes: list[tuple[int, str]] = []
    if "convert" in detectors:
        links += find_conversions(stats, pl, skip=adapters)
    copies = {link.child: link.parents[0] for link in links}
    if "quantized" in detectors:
        q_links, q_notes = find_quantized(stats, pl, not_parents=adapters, copies=copies)
        links += q_links
        notes += q_notes
    if "adapter" in detectors:
        a_links, a_notes = _adapters(stats, pl, adapters)
        links += a_links
        notes += a_notes
    if "merge" in detectors:
        excluded = {link.child for link in links} | adapters
        signs = sign_step(stats, labels, excluded, reads) if "merge-signs" in detectors else None
        links += find_merges(stats, pl, labels, excluded, signs)
        if "quantized" in detectors:
            links, notes = _quantized_merge_inputs(stats, pl, labels, adapters, copies, excluded, links, notes)
        merged = {link.child for link in links} - excluded
        # a stack's layers may come from merges (a frankenmerge of merges), not from copies or adapters; a
        # quantized model deeper than its source may be the quantized copy of a stack the set lacks
        quantized = quantized_sources(stats, pl, links)
        found = [s for s in find_stacks(stats, pl, excluded, quantized, reads) if s.child not in merged]
        restacked = {s.child for s in found} & set(quantized)
        links = [link for link in links if link.child not in restacked] + found
    if "shape" in detectors:
        links += find_depth_pruned(stats, pl, {link.child for link in links} | adapters, links, reads)
        links += find_pruned(stats, pl, labels, {link.child for link in links} | adapters)
    partial: frozenset[int] = frozenset()
    if "lora" in detectors:
        skip = {link.child for link in links} | adapters
        pairs = _partial_pairs(stats, pl, labels, skip)
        partial = frozenset(pairs)
        links += lora_links(stats, pl, pairs, _lora_minority(labels, skip, partial))
    return TypedFindings(links=tuple(links), notes=tuple(notes), partial=partial)


def _quantized_merge_inputs(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, adapters: set[int],
                            copies: dict[int, int], excluded: set[int], links: list[TypedLink],
                            notes: list[tuple[int, str]]) -> tuple[list[TypedLink], list[tuple[int, str]]]:
    """Quantized models read again without the merges made from their values.

    A merge of a quantized model's dequantized values (a user's GGUF read back and merged) holds a share of
    them, rounding included, so it can sit nearer the quantized model than its float source does. It then
    either shows the source "missing" (:func:`.copies._between`: the quantized model is left without one, and the
    merge search, to which it is then an ordinary relative, reads the merge on it), or it is read as the source
    itself (the quantized model is then a copy, never a merge input, and the merge is not read at all). Made from
    the quantized model's values, such a merge is never its source: the merges found on a sourceless quantized
    model, and a quantized model's source that is an exact merge with that model among its inputs
    (:func:`.merge.exact_merge_of`), are set aside and the quantized model is read again.
    """
    noted = {q for q, _ in notes}
    made: dict[int, set[int]] = {}
    for link in links:
        if link.relation == Relation.MERGE:
            for p in link.parents:
                if p in noted:
                    made.setdefault(p, set()).add(link.child)
    typed = {link.child for link in links}  # (a source read as anything else already is no merge to seek)
    added: list[TypedLink] = []
    merge_pl: PairLayers | None = None  # made at the first quantized model to read, then shared
    for link in links:
        if link.relation != Relation.QUANTIZED or link.parents[0] in typed:
            continue
        q, p = link.child, link.parents[0]
        if merge_pl is None:
            merge_pl = merge_layers(stats, pl, labels)
        fit = exact_merge_of(stats, merge_pl, labels, excluded - {q}, p)
        if fit is not None and q in fit.parents:
            made.setdefault(q, set()).add(p)
            added.append(fit)
    if not made:
        return links, notes
    found, again = find_quantized(stats, pl, not_parents=adapters, copies=copies, merged_from=made)
    kept = [link for link in links if not (link.relation == Relation.QUANTIZED and link.child in made)]
    return (kept + found + added,
            [(q, text) for q, text in notes if q not in made] + [(q, text) for q, text in again])


def _partial_pairs(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray,
                   skip: set[int]) -> dict[int, set[int]]:
    """Each merged LoRA with the relatives it differs from on part of its layers at low rank: the models
    that differ from a relative of their tree on part of their layers only, at low rank (the same test as
    :func:`label_edge`'s ``lora``; their set is :attr:`TypedFindings.partial`).

    The test is symmetric (a parent also differs from its merged LoRA on part of its layers, at low
    rank), so of each such pair the one farther from the rest of its tree is taken: a LoRA's update
    adds to its distance to every other model (nearly orthogonal updates), while its parent sits
    where the tree's other fine-tunes started from.
    """
    n = stats.n_models
    u = storage_roundoff(stats)
    out: dict[int, set[int]] = {}
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
                same = untouched_share(stats, rel, untouched_tolerance(u, a, b))
                if not LORA_UNTOUCHED <= same < 1.0:
                    continue
                prof = lowrank_profile(stats, pl, a, b, u)
                if prof.changed and prof.low >= 0.5:
                    lora, other = (a, b) if total[a] > total[b] else (b, a)
                    out.setdefault(lora, set()).add(other)
    return {g: v for g, v in out.items() if 0 <= g < n}


def _lora_minority(labels: np.ndarray, skip: set[int], partial: frozenset[int]) -> set[int]:
    """The merged LoRAs of trees whose fine-tune skeleton (the models no detector typed) holds fewer merged
    LoRAs than other models: the trees where :func:`lora_links` applies (the same split as
    :func:`mother_core.recovery.typed.refinement_core`).

    Among full fine-tunes a merged LoRA and its base are the only models holding its untouched layers
    (with its sibling LoRAs), and the LoRA is the one farther from the rest (its update adds to every
    distance). In a tree of merged LoRAs every model holds most of them, a LoRA's update is as far from
    the rest as its parent's or its child's, and a parent and its child differ at the same rank (one
    adapter each way): neither the pair's direction nor the lowest summed rank names the parent (on the
    generalise collection fit-lora, trees of 9 merged LoRAs on a root, the links moved edges to a
    sibling, a child or a grandparent: directed accuracy 89% -> 81%). There the forest places them, as
    it places the paper's LoRA trees.
    """
    out: set[int] = set()
    for t in np.unique(labels):
        members = [int(g) for g in np.flatnonzero(labels == t) if int(g) not in skip]
        low_rank = [g for g in members if g in partial]
        if 2 * len(low_rank) < len(members):
            out.update(low_rank)
    return out


def lora_links(stats: WeightStatistics, pl: PairLayers, pairs: dict[int, set[int]],
               minority: set[int] | None = None) -> list[TypedLink]:
    """A merged LoRA's parent: of the relatives it differs from on part of its layers only, at low rank
    (:func:`_partial_pairs`), the one it differs from at the lowest summed rank.

    ``merge_and_unload`` writes the layers an adapter does not target bit for bit, so the model it was
    merged into holds them; the forest, which reads distances only, can instead hang a LoRA whose update
    is large (a merged DoRA moves its rows' magnitudes far) above its own family's root, or under a
    sibling LoRA trained on a similar task (profile C, issue 11). Every relative that a LoRA left
    untouched also holds those layers: its base, the base's own ancestors through untouched layers (a
    LoRA trained on a merged LoRA shares the grandparent's untouched layers too) and its sibling LoRAs.
    Of these the parent is the one at the lowest LoRA distance of the MoTHer paper (docs/method.md: the
    sum over layers of rank(W_i - W_j)): the difference from the parent is B A alone (rank r per
    targeted layer, after the DoRA row rescaling for a merged DoRA), from a sibling ``B A - B' A'`` (rank
    r + r'), from a grandparent ``B A + B' A'`` (r + r' again). Ranks add for independent low-rank updates
    even where the updates are correlated (similar tasks), which is where squared distances stop adding up.
    Ties go to the nearer relative. Of each pair the LoRA is the one farther from the rest of its tree
    (:func:`_partial_pairs`), an order without cycles, so the links form a forest. Only the LoRAs in
    ``minority`` (default: all) are linked: in a tree made mostly of merged LoRAs neither the direction
    nor the rank names the parent (:func:`_lora_minority`).
    """
    u = storage_roundoff(stats)
    links = []
    for g, partners in sorted(pairs.items()):
        if minority is not None and g not in minority:
            continue
        # the settled rank costs refits on every changed layer: only where it has relatives to choose from
        settle = len(partners) > 1
        profiles = {h: lowrank_profile(stats, pl, h, g, u, settle=settle) for h in sorted(partners)}
        ranked = sorted(profiles, key=lambda h: (profiles[h].rank_sum, _total_rel(pl, h, g)))
        p, prof = ranked[0], profiles[ranked[0]]
        margin = lora_margin(prof.rank_sum, profiles[ranked[1]].rank_sum) if len(ranked) > 1 else 1.0
        detail = f"{prof.changed} layers changed" + (f", {prof.rescaled} low rank after a DoRA-style row rescaling"
                                                     if prof.rescaled else "")
        evidence = (f"differs from {stats.models[p].id} on {prof.changed} layers only ({prof.untouched:.0%} of shared "
                    f"layers identical, as merge_and_unload writes the layers an adapter does not target), "
                    f"{prof.low:.0%} of them at low rank (summed rank {prof.rank_sum}"
                    + (f"; {prof.rescaled} after a DoRA-style row rescaling" if prof.rescaled else "") + ")"
                    + (f"; of {len(profiles)} relatives holding those layers, the lowest summed rank "
                       f"(next: {stats.models[ranked[1]].id} at {profiles[ranked[1]].rank_sum}, margin {margin:.0%})"
                       if len(profiles) > 1 else ""))
        # a close runner-up is a link the ranks barely decide (a sibling LoRA of much lower rank, or rank
        # figures off by a refit): the calibrated rate was measured on LoRAs with a single such relative
        conf = confidence(Relation.LORA.value, 0.85) * 0.5 * (1.0 + min(1.0, margin / LORA_MARGIN))
        links.append(TypedLink(g, (p,), Relation.LORA, detail, conf, evidence=evidence))
    return links


def lora_margin(best: int, second: int) -> float:
    """Relative margin of the lowest summed rank over the next relative's, in [0, 1]: 0 for a tie, 1 when
    the best differs at rank 0. A base differs from its LoRA at r per targeted layer and a sibling or
    grandparent at r + r', so a sibling of equal rank leaves 1/2 and one of half the rank 1/3
    (:data:`LORA_MARGIN`)."""
    return (second - best) / second if second > 0 else 0.0


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
    if ref.scheme in _NOT_LOW_RANK:
        return f"unmerged PEFT {_NOT_LOW_RANK[ref.scheme]} adapter", "adapter_config.json"
    return "unmerged PEFT adapter", "adapter_config.json"


#: PEFT adapter types (``peft-lora:<type>``, :mod:`mother_core.io.lora`) whose update is not low rank:
#: LoHa's Hadamard product of two rank-r products reaches rank r^2, LoKr's Kronecker product the
#: product of its factors' ranks, IA3 rescales whole rows or columns, OFT and BOFT rotate every row
#: (``W @ R.T``: ``W (R - I).T`` is full rank), LN tuning replaces norm vectors. Rank cannot confirm them; that
#: the merged adapter changes its base at all is what the weights can say.
_NOT_LOW_RANK = {"loha": "LoHa", "lokr": "LoKr", "ia3": "IA3", "oft": "OFT", "boft": "BOFT",
                 "ln_tuning": "LN-tuning"}


def _not_low_rank_form(ref: ModelRef) -> str | None:
    """What an adapter whose update is not low rank is (for the evidence line), or None for a LoRA: a PEFT
    type of :data:`_NOT_LOW_RANK`, or the LyCORIS module types of a Stable Diffusion file (LoHa, LoKr, full
    difference, norm, OFT / BOFT, IA3: every type but LoRA / LoCon, :func:`mother_core.io.sd_lora.module_kinds`)."""
    if ref.container == "peft-lora":
        return _NOT_LOW_RANK.get(ref.scheme or "")
    if ref.container == "sd-lora":
        from mother_core.io.sd_lora import KIND_NAMES

        others = [KIND_NAMES[k] for k in ref.adapter_kinds if k != "lora"]
        return " and ".join(others) if others else None
    return None


def declared_base_contradicted(pl: PairLayers, a: int, b: int) -> tuple[tuple[int, ...], int, float] | None:
    """A model ``c`` (and the model ``m`` that shows it) that explains adapter ``a``'s update better than its
    declared base ``b``: ``m - c`` is the update ``a - b`` (``a`` is read as ``b`` plus the update, so its distance
    to ``b`` can never contradict the declaration; a copy of the update merged into another base can), while
    nothing in the set is ``b`` plus it (no merged copy on the declared base). Returns (the models ``c``, best first:
    copies of one another fit alike; ``m``; the residual share) or None.

    The residual ``||m - c - (a - b)||^2`` needs no tensors: it is, per layer, ``sq(m,a) + sq(c,b) + sq(m,c) +
    sq(a,b) - sq(m,b) - sq(a,c)`` (the polarisation identity on four points), summed over the layers ``a`` and
    ``b`` share and divided by ``||a - b||^2``. Only ``c`` farther from ``b`` than the update itself contradicts
    (a quantized or cast copy of ``b`` is ``b``); a pair with ``c`` near ``b`` that fits as well confirms it.
    """
    sq = pl.sq
    layers = np.flatnonzero(np.isfinite(sq[:, a, b]))
    upd = float(sq[layers, a, b].sum()) if layers.size else 0.0
    if upd <= 0:
        return None
    n = sq.shape[1]
    # r[m, c] = sum over layers of the identity's terms (a layer at a time: N^2 memory); NaN (a layer not shared)
    # leaves the pair out.
    r = np.zeros((n, n))
    for layer in layers:
        s = sq[layer]
        r += s[:, a, None] + s[None, :, b] + s + s[a, b] - s[:, b, None] - s[None, a, :]
    r /= upd
    far = sq[layers, :, b].sum(axis=0) / upd  # ||c - b||^2 over the update's
    far[b] = 0.0
    ok = np.isfinite(r)
    ok[[a, b], :] = False  # m is neither the adapter nor its declared base
    ok[:, a] = False
    ok[np.arange(n), np.arange(n)] = False
    if not ok.any():
        return None
    near = ok & (far[None, :] < 1.0)
    if near.any() and float(r[near].min()) <= CONTRADICT_RESIDUAL:
        return None  # the declared base (or a copy of it) has its merged copy in the set
    contra = ok & (far[None, :] >= 1.0) & (r <= CONTRADICT_RESIDUAL)
    if not contra.any():
        return None
    m, c = np.unravel_index(np.argmin(np.where(contra, r, np.inf)), r.shape)
    best = float(max(r[m, c], 0.0))
    # Copies of C (a pickle, a cast) fit M as well: every C within CONTRADICT_TIE of the best is named, best first,
    # none picked by input order.
    tied = np.flatnonzero(contra[m] & (r[m] <= best + CONTRADICT_TIE))
    return tuple(int(x) for x in tied[np.argsort(r[m, tied], kind="stable")]), int(m), best


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
        prof = lowrank_profile(stats, pl, base, a, u)
        low, changed, rescaled = prof.low, prof.changed, prof.rescaled
        form = _not_low_rank_form(ref)
        agree = changed > 0 and (low >= 0.5 or form is not None)
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
                    + (f", {low:.0%} of them at low rank" if changed and form is None else "")
                    + (f" ({form} updates are not low rank: their form is checked by the reader, not by rank)"
                       if form else "")
                    + (f" ({rescaled} after a DoRA-style row rescaling)" if agree and rescaled else "")
                    + ("" if agree else " (the weights do not confirm a low-rank update)")
                    + ("; which model of its family it was trained on rests on metadata only (the weights fit "
                       "every model of the same shapes alike)" if by_card else ""))
        other = declared_base_contradicted(pl, a, base) if agree else None
        if other is not None:
            cs, m, res = other
            named_c = " or ".join(repr(stats.models[c].id) for c in cs)
            # The adapter's position is its declared base plus its update: only a copy of the update found on
            # another model can say the declaration is wrong, and then the edge must not keep metadata's 0.98.
            evidence += (f"; {DECLARED_CONTRADICTED}: {stats.models[m].id!r} is {named_c} plus this adapter's "
                         f"update (residual {res:.1%} of it), while no model is {base_id!r} plus it: {named_c} "
                         f"{'fits' if len(cs) == 1 else '(copies of one another) fit'} better as the base it was "
                         "trained on")
            conf = CONTRADICTED_CONFIDENCE
        conf = confidence(kind_of(Relation.ADAPTER.value, "", evidence), conf)
        links.append(TypedLink(a, (base,), Relation.ADAPTER, f"declared base {base_id}", conf, evidence=evidence))
    return links, notes


class EdgeLabel(NamedTuple):
    """The relation :func:`label_edge` gives a forest edge, with what the result shows of it."""

    relation: Relation
    detail: str  # a short reading, e.g. "12 layers changed"; "" for a fine-tune
    confidence: float  # NaN for a fine-tune (the edge's own confidence stands)
    evidence: str  # the sentence the Edge page shows; "" for a fine-tune


def label_edge(stats: WeightStatistics, pl: PairLayers, p: int, c: int,
               detectors: tuple[str, ...] = DETECTORS) -> EdgeLabel:
    """The relation of a forest edge p -> c: ``prune``/``distill`` by shapes, ``lora`` by rank, else
    ``finetune``."""
    if "shape" in detectors and pl.own[c] < 0.97 * pl.own[p]:
        kind = _shape_change(stats, p, c)
        if kind is not None:
            return kind
    if "lora" in detectors:
        u = storage_roundoff(stats)
        # Most edges are fine-tunes, known as such before every layer is refitted (the pair test alone); a
        # LoRA's whole profile, for its evidence, reuses the refits done (lowrank.remembered_rescales).
        prof = (lowrank_profile(stats, pl, p, c, u) if reads_low_rank(stats, pl, p, c, u, untouched=LORA_UNTOUCHED)
                else LowRankProfile())
        untouched, low, changed, rescaled = prof.untouched, prof.low, prof.changed, prof.rescaled
        if changed and untouched >= LORA_UNTOUCHED and low >= 0.5:
            return EdgeLabel(Relation.LORA, f"{changed} layers changed"
                    + (f", {rescaled} low rank after a DoRA-style row rescaling" if rescaled else ""),
                    confidence(Relation.LORA.value, 0.85),
                    f"differs from its parent on {changed} layers only ({untouched:.0%} of shared layers "
                    f"untouched), {low:.0%} of them at low rank"
                    + (f" ({rescaled} of them after a DoRA-style row rescaling: each output row scaled to "
                       "its own magnitude, as a merged DoRA does)" if rescaled else ""))
    return EdgeLabel(Relation.FINETUNE, "", math.nan, "")


#: A tensor of a numbered block (``layers.3.``, ``h.3.``, ``encoder.layer.3.``).
_BLOCK = re.compile(r"(^|\.)\d+\.")


def _shape_change(stats: WeightStatistics, p: int, c: int) -> EdgeLabel | None:
    """``prune`` when the child holds narrower versions of the parent's tensors, ``distill`` when it
    holds fewer of them (fewer layers)."""
    names_p = {t.name: t.shape for t, ok in zip(stats.tensors, stats.present[p]) if ok}
    names_c = {t.name: t.shape for t, ok in zip(stats.tensors, stats.present[c]) if ok}
    narrower = [n for n in names_c if n in names_p and names_c[n] != names_p[n]]
    missing = [n for n in names_p if n not in names_c]
    if narrower:
        return EdgeLabel(Relation.PRUNE, f"{len(narrower)} tensors narrower", confidence(Relation.PRUNE.value, 0.8),
                f"{len(narrower)} of its tensors are narrower versions of the parent's; the rest match")
    # Fewer LAYERS: some missing tensor sits in a numbered block. A child that lacks only tensors outside the
    # blocks (its head, a pooler) is the same network saved without them (``AutoModel``: a sentence-embedding
    # fine-tune of a masked LM, elsewhere2 set), not a distilled student: it is read as any other edge.
    if missing and set(names_c) <= set(names_p) and any(_BLOCK.search(n) for n in missing):
        detail = f"{len(missing)} fewer tensors"
        return EdgeLabel(Relation.DISTILL, detail, confidence(kind_of(Relation.DISTILL.value, detail), 0.7),
                f"holds a subset of the parent's tensors ({len(missing)} fewer: fewer layers)")
    return None
