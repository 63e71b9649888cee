"""``convert`` and ``quantized``: the same weights again, up to a rounding grid (docs/RELATIONS.md).

Conversions (another dtype or file format, byte-identical duplicates included): two float models of
the same shapes whose every shared layer sits within the rounding noise of the coarser of their two
storage types, ||W_i - W_j|| <= CONVERT_TOL * u * ||W|| with u its unit roundoff (round-to-nearest
moves each value by at most u relative; a fine-tune moves a layer by 1-30%). Such models form
classes; in each, the original is the one of highest precision, then the oldest file (a copy is
written later; ``cp -p`` keeps the mtime but not the ctime), then the first in model order: the
others are its ``convert`` children.

"Highest precision" is that of the values, not of the storage type: a cast *up* (a bf16 checkpoint
saved again in fp32 or fp16) changes no value, so the finer copy holds the coarser one's values to
within its own rounding (fp16's subnormals round a few tiny bf16 values), while a cast *down* moves
every value by about u of the coarser type. Two members within :data:`CONVERT_TOL` units of the
*finer* type's roundoff hold the same values, and of those the coarser storage is the original
(:func:`_value_roundoff`): hub checkpoints are trained and saved in bf16, and their fp32 / fp16
copies are upcasts.

Quantized models are the ones whose format names a quantization scheme (the reader's
``container:scheme``, e.g. ``gguf:Q4_0``). Their rounding error e is fixed by the source and nearly
orthogonal to any fine-tuning difference, so ||Q - W||^2 = ||e||^2 + ||W_src - W||^2: the source is
the float model at the smallest squared distance even when e is far larger than the fine-tunes'
differences (a 4-bit grid). The quantized model is always the child.

The same orthogonality checks that the nearest float model P really is the source: for any other
float model C of the family, ||Q - C||^2 = ||e||^2 + ||P - C||^2 (up to the tiny cross term
2<e, P - C>). When the true source is *not* in the set and P and C are two of its fine-tunes, Q sits
between them instead: ||Q - C||^2 = ||e||^2 + ||d_C||^2, short of ||Q - P||^2 + ||P - C||^2 by
2(||d_P||^2 - <d_P, d_C>), which is large unless the two updates coincide. A quantized model that
breaks the identity by more than ``SOURCE_INCONSISTENCY`` stays a root, with a note.

A float model can also be made *from* a quantized one: QLoRA (Dettmers et al. 2023) trains a LoRA on a
4-bit model and merges it into the dequantized weights, so the merged model holds Q's values plus a
low-rank update (its untargeted layers Q's values to within float rounding) and sits nearer Q than Q's
source does. A quantizer's rounding is full rank on every matrix it rounds; a difference from Q that is
low rank on every changed weight matrix is a merged adapter on Q's values (:func:`_made_from`). Such a
model is neither Q's source nor evidence that Q's source is missing; it is left to the adapter
detectors as Q's child. Near the float floor (a 5- or 6-bit grid against bf16) the rounding reads as low
rank too; there Q's grid tells (:mod:`.grid`): Q's source rounds onto it, a model made from Q's values
sits on its points plus an update.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from mother_core.relations.calibration import CONTESTED_SOURCE, CONTESTED_SOURCE_KIND, confidence, counted_note, kind_of
from mother_core.relations.evidence import (
    CONVERT_TOL, PairLayers, TypedLink, dtype_name, file_times, quantization_scheme, split_format, storage_roundoff,
)
from mother_core.relations.grid import read_grid
from mother_core.relations.lowrank import reads_low_rank
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Largest per-layer relative difference (in u): layers of tiny values (biases near zero) fall into
#: fp16's subnormal range, where rounding is coarser than u relative to them.
CONVERT_MAX = 20.0
#: Share of each model's elements the two must share to be the same weights in another form.
SAME_SHAPES = 0.95
#: A quantized model's source must share this share of its elements.
QUANT_COVERAGE = 0.5
#: Farther than this (relative) from every float model, a quantized model's source is not in the set.
QUANT_MAX_RELATIVE = 0.8
#: Largest relative shortfall of ||Q - C||^2 against ||Q - P||^2 + ||P - C||^2 for P to be Q's source.
#: With P the source the shortfall is the cross term 2<e, P - C>, about 1/sqrt(elements) relative; a
#: missing source leaves siblings short by tens of percent (module docstring).
SOURCE_INCONSISTENCY = 0.1
#: Nearest float candidates of a quantized model tested as made from it (:func:`_made_from`): a model made
#: from ``q``'s values lacks the rounding, so it sits among ``q``'s nearest.
MADE_FROM_CANDIDATES = 3
#: A quantizer's rounding (about 2^-bits relative) is told from float rounding by the rank test only when it
#: is at least this many float roundoffs: 6-bit against bf16 (2^-6 against 2^-8), not 8-bit against bf16. At 8
#: roundoffs (a GGUF Q5_0 of a bf16 merged LoRA, typed profile D seed 204, a fitting set) the rounding's smaller
#: singular values fall under the floor and the difference reads as low rank: the grid then tells the source
#: (:mod:`.grid`: its values rounded onto the quantized model's grid are the quantized values) from a model made
#: from the quantized values (tests/test_gguf_of_merged_lora.py holds both). It was 16 for a while, which left a
#: QLoRA on a 5- or 6-bit model unrecognised.
ROUNDING_VISIBLE = 4.0


def find_conversions(stats: WeightStatistics, pl: PairLayers, skip: set[int]) -> list[TypedLink]:
    """Conversion classes among the float models not in ``skip``; one link per non-original member."""
    n = stats.n_models
    u = storage_roundoff(stats)
    eligible = [i for i in range(n) if i not in skip and quantization_scheme(stats.models[i].format) is None]
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    worst: dict[tuple[int, int], float] = {}
    medians: dict[tuple[int, int], float] = {}
    matrix = np.array([len(t.shape) >= 2 for t in stats.tensors], dtype=bool)
    for a_pos, i in enumerate(eligible):
        for j in eligible[a_pos + 1:]:
            if pl.shared[i, j] < SAME_SHAPES * max(pl.own[i], pl.own[j]) or pl.shared[i, j] == 0:
                continue
            r = pl.rel[:, i, j]
            # (an all-zero matrix, equal in every dtype, tells nothing; nor does a matrix one of the two keeps
            # in a finer dtype than the rest of it: a cast that kept some modules in float32 holds their values
            # as they were, bit for bit)
            kept = np.zeros_like(matrix) if stats.finer is None else stats.finer[i] | stats.finer[j]
            if _partial_update(r, matrix & ~kept & (pl.scale2[:, i, j] > 0), CONVERT_TOL * min(u[i], u[j])):
                continue
            r = r[np.isfinite(r)]
            if r.size == 0:
                continue
            m, med = float(r.max()), float(np.median(r))
            if med <= CONVERT_TOL * max(u[i], u[j]) and m <= CONVERT_MAX * max(u[i], u[j]):
                worst[(i, j)] = m
                medians[(i, j)] = med
                parent[find(i)] = find(j)
    classes: dict[int, list[int]] = {}
    for i in eligible:
        classes.setdefault(find(i), []).append(i)
    times = file_times(stats)
    links = []
    for whole in classes.values():
        for members in _split_distinct_originals(whole, medians, pl, u):
            links += _class_links(stats, members, worst, medians, u, times)
    return links


def _split_distinct_originals(members: list[int], medians: dict[tuple[int, int], float], pl: PairLayers,
                              u: np.ndarray) -> list[list[int]]:
    """A class joined through a coarser copy, split where its finest members hold different values.

    Pairs join a class within the COARSER member's rounding, so a bf16 copy of A also joins a fine-tune B of A
    whose update is below bf16's rounding (a preference fine-tune at a low learning rate moves each weight by
    ~0.1%, bf16 rounds by 0.4%): A and B, both fp32, would become one original and its "duplicate" although
    every element differs. The members holding the finest values (:func:`_value_roundoff`) are grouped by
    whether they hold the same values (within the FINER storage's rounding, :func:`_same_values`); each group
    is a class of its own, and every coarser member joins the group of the finest member nearest it (median
    per-layer difference). A class whose finest members all hold the same values is returned whole.
    """
    if len(members) < 3:
        return [members]
    vu = _value_roundoff(members, medians, u)
    finest = min(vu[k] for k in members)
    fine = [k for k in members if vu[k] == finest]
    groups: list[list[int]] = []
    for k in fine:
        home = next((g for g in groups if any(_same_values(medians, u, j, k) for j in g)), None)
        if home is None:
            groups.append([k])
        else:
            home.append(k)
    if len(groups) < 2:
        return [members]

    def median_rel(i: int, j: int) -> float:
        r = pl.rel[:, i, j]
        r = r[np.isfinite(r)]
        return float(np.median(r)) if r.size else math.inf

    for k in members:
        if vu[k] != finest:
            min(groups, key=lambda g: min(median_rel(k, j) for j in g)).append(k)
    return [g for g in groups if len(g) > 1]


def _class_links(stats: WeightStatistics, members: list[int], worst: dict[tuple[int, int], float],
                 medians: dict[tuple[int, int], float], u: np.ndarray,
                 times: list[tuple[int, int]]) -> list[TypedLink]:
    """One conversion link per non-original member of a class (its original chosen as documented above)."""
    links = []
    if len(members) >= 2:
        # The original: finest precision of the values, then the coarser storage (an upcast copy holds the
        # same values), then the oldest file, then model order (documented above).
        vu = _value_roundoff(members, medians, u)
        members.sort(key=lambda k: (vu[k], -u[k], times[k][0], times[k][1], k))
        orig = members[0]
        for c in members[1:]:
            m = worst.get((min(orig, c), max(orig, c)), math.nan)
            upcast = _same_values(medians, u, orig, c) and u[c] < u[orig]
            links.append(_conversion_link(stats, orig, c, m, u, times, upcast=upcast))
    return links


def _partial_update(rel: np.ndarray, matrix: np.ndarray, lossless: float) -> bool:
    """Some weight matrices hold the same values (within ``lossless``: the finer dtype's rounding) and
    some do not: a partial update (a merged LoRA, whose untouched layers are written bit for bit as they
    were), not the same weights again.

    A conversion rounds every matrix alike: a copy, a format change or an upcast changes no value of any
    of them, a cast down moves every one by about the coarser type's rounding. Profile C (issue 11): a
    bf16 LoRA of a few steps, its 9 targeted matrices changed by at most 17 bf16 units and 12 of 21 layers
    identical, had the median and the largest per-layer difference of a duplicate (of its base, and of
    the base's fp16 copy, whose matrices hold the bf16 values).
    """
    ok = np.isfinite(rel) & matrix
    return bool((rel[ok] <= lossless).any() and (rel[ok] > lossless).any())


def _value_roundoff(members: list[int], medians: dict[tuple[int, int], float], u: np.ndarray) -> dict[int, float]:
    """The precision of each member's *values*: the coarsest storage roundoff among the members whose values
    it holds to within its own rounding (:data:`CONVERT_TOL` units of the finer of the two; an upcast copy
    of a bf16 checkpoint has bf16 values), its own where none."""
    out = {}
    for k in members:
        same = [j for j in members if j != k and _same_values(medians, u, j, k)]
        out[k] = max([u[k]] + [u[j] for j in same])
    return out


def _same_values(medians: dict[tuple[int, int], float], u: np.ndarray, j: int, k: int) -> bool:
    """Whether ``j`` and ``k`` hold the same values: their median per-layer difference (``medians``, keyed by
    the ordered pair) within :data:`CONVERT_TOL` units of the finer storage's roundoff."""
    return medians.get((min(j, k), max(j, k)), math.inf) <= CONVERT_TOL * min(u[j], u[k])


def _conversion_link(stats: WeightStatistics, p: int, c: int, max_rel: float, u: np.ndarray,
                     times: list[tuple[int, int]], upcast: bool = False) -> TypedLink:
    fp, fc = split_format(stats.models[p].format)[0], split_format(stats.models[c].format)[0]
    tp, tc = dtype_name(u[p]), dtype_name(u[c])
    if upcast:
        detail, why = f"{tp} -> {tc} (upcast)", (f"the {tc} copy holds the {tp} values unchanged (a cast down "
                                                 f"would round them to the {tp} grid): the {tp} one is the original")
        conf_dir = 0.9
    elif tp != tc:
        detail, why = f"{tp} -> {tc}", "the lower precision is the child"
        conf_dir = 0.99
    elif fp != fc:
        detail, why = f"{fp} -> {fc}", "same precision: the newer file is the child"
        conf_dir = 0.75 if times[c] > times[p] else 0.5
    else:
        detail, why = "duplicate", "same precision and format: the newer file is the child"
        conf_dir = 0.75 if times[c] > times[p] else 0.5
    if max_rel == 0:
        detail = "byte-identical" if detail == "duplicate" else f"{detail}, identical values"
    noise = "identical values" if max_rel == 0 else (
        f"largest per-layer relative difference {max_rel:.2g} <= {CONVERT_TOL} x {tc if u[c] >= u[p] else tp} "
        "rounding")
    conf = confidence(kind_of(Relation.CONVERT.value, detail), conf_dir)
    return TypedLink(c, (p,), Relation.CONVERT, detail, conf,
                     evidence=f"same weights on every shared layer ({noise}); {why}")


def find_quantized(stats: WeightStatistics, pl: PairLayers, not_parents: set[int],
                   copies: dict[int, int] | None = None,
                   merged_from: dict[int, set[int]] | None = None) -> tuple[list[TypedLink], list[tuple[int, str]]]:
    """The source of every model whose format names a quantization scheme.

    Parameters
    ----------
    not_parents : set of int
        Models that cannot be a source (adapters).
    copies : dict of int to int, optional
        Each conversion copy's original (:func:`find_conversions`). A copy is a source only where it fits
        clearly better than its original (:func:`_copies_as_sources`); elsewhere its original stands for it.
    merged_from : dict of int to set of int, optional
        Models known to be made from a quantized model's values (the merges that take it as an input:
        :func:`mother_core.relations.detect.detect_relations`), keyed by that model. They are never its
        source, and only the quantized models named here are read (a second reading after the merges).

    Returns
    -------
    links, notes
        A note for a quantized model whose source is not in the set (it stays a root).
    """
    n = stats.n_models
    quantized = [i for i in range(n) if quantization_scheme(stats.models[i].format) is not None]
    copies = copies or {}  # (only read)
    links, notes = [], []
    u = storage_roundoff(stats)
    tested: dict[tuple[int, int], bool] = {}

    def made_from(q: int, c: int) -> bool:
        if (q, c) not in tested:
            tested[q, c] = _made_from(stats, pl, q, c, u)
        return tested[q, c]

    # A second reading (``merged_from``) reads only the quantized models named there, without their merges.
    for q in quantized if merged_from is None else [q for q in quantized if q in merged_from]:
        known = set() if merged_from is None else merged_from[q]
        scheme = quantization_scheme(stats.models[q].format) or ""
        scored = []
        for c in range(n):
            if (c == q or c in quantized or c in not_parents or c in known
                    or pl.shared[q, c] < QUANT_COVERAGE * pl.own[q]):
                continue
            ok = np.isfinite(pl.sq[:, q, c])
            num = float(pl.sq[ok, q, c].sum())
            den = float(pl.scale2[ok, q, c].sum())
            if den > 0:
                scored.append((num / den, c, int(ok.sum())))
        # Quantizing keeps every tensor's shape: the source shares at least as much of the model as any
        # other candidate (a pruned sibling shares less, and on fewer layers may sit closer).
        most = max((float(pl.shared[q, c]) for _, c, _ in scored), default=0.0)
        scored = sorted(x for x in scored if pl.shared[q, x[1]] >= SAME_SHAPES * most)
        scored = _copies_as_sources(scored, copies)
        # A model made from q's values sits nearer q than q's source: the nearest are tested, and any other
        # model that would show the source missing (_between).
        made = {c for _, c, _ in scored[:MADE_FROM_CANDIDATES] if made_from(q, c)}
        scored = [x for x in scored if x[1] not in made]
        if not scored or math.sqrt(scored[0][0]) > QUANT_MAX_RELATIVE:
            notes.append((q, f"quantized ({scheme}); its source model is not in the set (no float model of its "
                             "family within quantization noise)"))
            continue
        s1, p, n_layers = scored[0]
        between = _between(q, p, [c for _, c, _ in scored[1:]], pl,
                           made_from=lambda c: made_from(q, c))
        if between is not None:
            c, shortfall = between
            notes.append((q, f"quantized ({scheme}); its source model is not in the set: it sits between "
                             f"{stats.models[p].id} and {stats.models[c].id} ({shortfall:.0%} closer to the "
                             "second than a copy of the first would be), as a copy of a common ancestor of both "
                             "does"))
            continue
        conf, margin_txt = _source_confidence(scored, stats, q)
        contested = _contested(scored)
        if contested is not None:
            margin_txt += (f" ({stats.models[contested].id}, within {SOURCE_INCONSISTENCY:.0%} in squared distance: "
                           f"{CONTESTED_SOURCE}; {counted_note(CONTESTED_SOURCE_KIND)})")
        evidence = (f"{scheme} rounding: relative distance {math.sqrt(s1):.3g} to its source over {n_layers} "
                    f"layers{margin_txt}; the quantized model is the child")
        conf = confidence(kind_of(Relation.QUANTIZED.value, scheme, evidence), conf)
        links.append(TypedLink(q, (p,), Relation.QUANTIZED, scheme, conf, evidence=evidence))
    # Each model made from a quantized one's values is that model's merged adapter (module docstring).
    adapted: set[int] = set()
    for (q, c), holds in sorted(tested.items()):
        if holds and c not in adapted:
            adapted.add(c)
            links.append(TypedLink(c, (q,), Relation.LORA, "on dequantized weights",
                                   confidence(Relation.LORA.value, 0.85), evidence=(
                f"holds the values of {stats.models[q].id} ({quantization_scheme(stats.models[q].format)}) "
                "plus a low-rank update on the weight matrices where they differ (a quantizer's rounding is "
                "full rank): an adapter trained on its dequantized weights and merged into them (QLoRA)")))
    return links, notes


def _made_from(stats: WeightStatistics, pl: PairLayers, q: int, c: int, u: np.ndarray) -> bool:
    """Whether float model ``c`` holds quantized model ``q``'s values plus a low-rank update on every weight
    matrix where they differ (a LoRA merged into ``q``'s dequantized weights: module docstring).

    The test is :func:`~mother_core.relations.detect.label_edge`'s low-rank profile
    (:func:`.lowrank.lowrank_profile`) of the pair (the rank of
    the skeleton differences above the float floor) with its bar, at least half the changed weight matrices
    at low rank (a rank-r update of a matrix with fewer than r / LORA_RANK rows, grouped-query k / v, is full
    rank there): a quantizer's rounding is full rank on each matrix it rounds, so its source does not pass,
    nor does a LoRA merged into the source (its difference from ``q`` carries the rounding too), except near the
    float floor, where a pair that passes is read on ``q``'s grid (:func:`.grid.read_grid`): the source's values
    rounded onto it are ``q``'s."""
    bits = scheme_bits(quantization_scheme(stats.models[q].format) or "")
    if bits is None or 2.0 ** -bits < ROUNDING_VISIBLE * max(u[q], u[c]):
        # A grid of 2^b levels per block rounds by about 2^-b relative; near the float floor (8 bits against
        # bf16's 2^-8) the rank test cannot see it, and the source itself would read as low rank.
        return False
    if not reads_low_rank(stats, pl, q, c, u):  # the profile's test, refitting only until it is decided
        return False
    # Near the float floor the rank test passes q's own source too (a 5-bit grid against bf16): the source's values
    # sit within half a step of q's, filling the cells; a model made from q's values sits on the grid points plus
    # its update, which knows nothing of the cells (read from both files, only for pairs that read low rank).
    return not read_grid(stats, q, c).rounding


def scheme_bits(scheme: str) -> int | None:
    """Bits per weight a quantization scheme names (``Q4_0``, ``bnb-nf4``, ``quanto-int8``, ``MXFP4``: the
    first number in its name), or None where the name gives none (``hqq``, ``compressed-packed``)."""
    m = re.search(r"[0-9]{1,9}", scheme)
    return int(m.group()) if m else None


def _between(q: int, p: int, others: list[int], pl: PairLayers,
             made_from: Callable[[int], bool] = lambda c: False) -> tuple[int, float] | None:
    """The float model ``c`` that shows ``p`` is not ``q``'s source, with the relative shortfall of
    ||Q - C||^2 against ||Q - P||^2 + ||P - C||^2 over the layers all three hold (module docstring);
    None when every other candidate is consistent with ``p`` as the source."""
    worst: tuple[int, float] | None = None
    for c in others:
        ok = np.isfinite(pl.sq[:, q, c]) & np.isfinite(pl.sq[:, q, p]) & np.isfinite(pl.sq[:, p, c])
        if not ok.any():
            continue
        predicted = float(pl.sq[ok, q, p].sum() + pl.sq[ok, p, c].sum())
        if predicted <= 0:
            continue
        shortfall = 1.0 - float(pl.sq[ok, q, c].sum()) / predicted
        if shortfall > SOURCE_INCONSISTENCY and (worst is None or shortfall > worst[1]) and not made_from(c):
            worst = (c, shortfall)
    return worst


def _copies_as_sources(scored: list[tuple[float, int, int]], copies: dict[int, int]) -> list[tuple[float, int, int]]:
    """``scored`` (sorted, nearest first) without the conversion copies that do not fit clearly better than their
    original.

    A copy holds its original's values to within float rounding, so it fits a quantized model as well as the
    original does and the original stands for it (a cast's copy is never the source a hub lists). A "copy" whose
    squared distance is shorter than its original's by more than :data:`SOURCE_INCONSISTENCY` (the identity's
    tolerance) is not that: its small update (a merged LoRA within 1.5 x bf16 rounding of its base reads as a
    convert, typed profile D seed 222) is what the quantized model was made from, since with P the source
    ||Q - C||^2 = ||e||^2 + ||P - C||^2 for its original C too (module docstring)."""
    dist = {c: s for s, c, _ in scored}
    kept = []
    for x in scored:
        original = copies.get(x[1])
        if original is None or (original in dist and x[0] < (1.0 - SOURCE_INCONSISTENCY) * dist[original]):
            kept.append(x)
    return kept


def _contested(scored: list[tuple[float, int, int]]) -> int | None:
    """The next candidate when it fits within the identity's tolerance (:data:`SOURCE_INCONSISTENCY`) of the nearest:
    ||Q - C||^2 <= (1 + tol) ||Q - P||^2, the shortfall the detector reads as consistent with either being the
    source (module docstring), whatever the cross term's fluctuation says (:func:`_source_confidence` reads that
    alone, and it is tiny on every model of 10^5 values or more)."""
    if len(scored) < 2 or scored[1][0] > (1.0 + SOURCE_INCONSISTENCY) * scored[0][0]:
        return None
    return scored[1][1]


def _source_confidence(scored: list[tuple[float, int, int]], stats: WeightStatistics, q: int) -> tuple[float, str]:
    """How sure the nearest float model is the source: the gap to the next candidate against the
    fluctuation of the cross term 2<e, W_src - W> (rounding noise e is nearly independent of the
    weights' differences, so that term is ~ 2 |e| |d| / sqrt(n) for n values)."""
    if len(scored) < 2:
        return 0.9, " (the only float candidate)"
    s1, s2 = scored[0][0], scored[1][0]
    gap = s2 - s1
    n_values = max(1.0, float(stats.present[q] @ stats.numel))
    spread = 2.0 * math.sqrt(max(s1, 1e-300)) * math.sqrt(max(gap, 1e-300)) / math.sqrt(n_values)
    z = gap / max(spread, 1e-300)
    conf = 0.5 + 0.49 * (1.0 - math.exp(-z / 10.0))
    return conf, f", next candidate {math.sqrt(s2):.3g}"
