"""``merge``: a model explained, layer by layer, as a combination of other models (docs/RELATIONS.md).

mergekit's linear, SLERP and task-arithmetic merges are affine combinations of their inputs
(coefficients summing to 1; task arithmetic base + sum l_k (M_k - base) gives the base 1 - sum l_k;
SLERP between close models is a lerp up to O(theta^2)). TIES and DARE trim or drop task-vector
entries first, which leaves a residual. For an affine combination (sum a_k = 1) the residual needs
squared distances only::

    ||C - sum_k a_k P_k||^2 = sum_k a_k d(C, P_k) - 1/2 sum_{k,l} a_k a_l d(P_k, P_l)

so the least-squares coefficients come from the pass's per-pair squared distances, over all layers
(detection) and per layer (the method and its coefficients). A fine-tune is not such a combination
of other models: its update is new, nearly orthogonal to everything else, so its residual is most of
its distance to the nearest model. A sparse merge is also told by its entries: trimming and dropping
keep its base's (and sometimes another input's) values exactly, which the pass counts
(:data:`EQUAL_SHARE`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from mother_core.relations.calibration import (
    EQUAL_ENTRIES,
    EXCHANGEABLE,
    ONE_BASE_TEST,
    SWAPPED_KIND,
    confidence,
    counted_note,
    counted_rate,
    kind_of,
)
from mother_core.relations.evidence import PairLayers, TypedLink, storage_roundoff
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: Candidate parents tried per model (its nearest by relative distance). A merge of k fine-tunes of
#: one base sits nearer that base (its updates average out to ~1/k of their size) and the base's own
#: copies and near-copies (a Model Stock merge of near-orthogonal updates is ~ the base) than to any of
#: its parents, so a merge of four needs room beyond four plus the base (profile C, issue 11: a
#: Multi-SLERP of four and a linear merge of four had a parent 7th and 8th nearest).
CANDIDATES = 8
#: Inputs of an exact merge of :data:`MAX_PARENTS` that may lie beyond the nearest :data:`CANDIDATES` together
#: (:func:`_completions`). A merge without a base (linear with ``normalize``, Multi-SLERP, Karcher: mergekit
#: ``linear.py``, ``multislerp.py``, ``karcher.py``) is its inputs' weighted mean, renormalised for the last two:
#: its distance to an input k is about sum_{j != k} w_j^2 |u_j|^2 + (1 - w_k)^2 |u_k|^2 over their updates u from
#: their common ancestor, while that ancestor and every near-copy of it (merged LoRAs, other merges of its
#: children) sit at sum_j w_j^2 |u_j|^2 plus their own small update. Every input whose own update is the larger
#: ranks behind all of those; on profile C one of four does (8th-10th nearest, :func:`_completed`), and a
#: merge of four whose two heaviest inputs are deeper fine-tunes has two there. Not more: each further one
#: multiplies the fits tried by the farther relatives' count.
FAR_INPUTS = 2
#: Candidates of the sparse (TIES / DARE) fit, whose residual caps are loose: every added candidate is
#: another chance for a fine-tune to pass as a sparse merge of its relatives (the generalise fitting
#: collection fitx-0: a fine-tune read as a TIES merge of three with 8 candidates, not with 6).
SPARSE_CANDIDATES = 6
#: Largest number of parents of one merge (MDGBench: 2 to 5). Not 5 (benchmarks/RESULTS.md, "Merges of five
#: parents"): a real linear merge of five is then read (tests/test_merge_five.py), but on the profile C fitting
#: sets a true merge of four gains a false fifth parent (C 5 and C 13, one each; on C 5 a second wrong edge at
#: >= 0.8) and the solve takes 10-15% longer (C 5, C 13, D 200), while the sparse merges of a base and four
#: (Breadcrumbs, TIES; the sixth stress set's) stay unread at 5 for reasons of their own.
MAX_PARENTS = 4
#: Other trees searched with a model's own for merges across trees (:func:`_bridging_fits`): those of its nearest
#: relatives outside its tree, up to this many. Two: a merge of two inputs the forest split from each other and
#: from the merge (each far from the rest) has one in each.
BRIDGED_TREES = 2
#: A merge's residual, as a share of its squared distance to the nearest parent, is at most this
#: (TIES / DARE on the typed zoo's fitting collection: 0.31-0.47; a later set has one at 0.65, missed).
#: Not higher: on a plain fine-tune tree (the zoo's ``fft`` split at test scale) a child reads as a
#: sparse merge of three relatives, base test passed, at a residual between 0.6 and 0.8. A merge whose
#: entries confirm it may leave up to :data:`RESIDUAL_MAX_EQUAL`.
RESIDUAL_MAX = 0.6
#: Below this share the combination is exact: linear, task arithmetic, or SLERP (whose arc departs
#: from the chord by O(theta^2): 6e-4-2e-3 on the fitting collection). A parent sits at 1/k of
#: its squared distances from the mean of k fine-tuned children (0.25 and more for k <= 4).
EXACT = 0.02
#: What an exact merge leaves at most: SLERP's chord error (6e-4-2e-3 on the fitting collection) and
#: Multi-SLERP's or Karcher's renormalisation (profile C: 5e-3-6e-3) with some room. Fewer parents win over
#: more when their fit is within :data:`PARSIMONY` of the best or under this; a fit under :data:`EXACT`
#: but well above this, when more parents explain the child to this level, is not the merge (profile C,
#: held-out seed 9: a linear merge of three read as a SLERP of one of them and another merge, 0.017
#: against 3e-4).
EXACT_NOISE = 8e-3
#: Every parent but a base enters with at least this weight.
MIN_WEIGHT = 0.05
#: A merge fit whose child equals one parent exactly on this share of its elements, where another parent differs,
#: is refused (:func:`_copied_parent`). Well above a merge's t = 0 on some of its layers (SLERP gradients set
#: whole filters to one input: 0.12 of the elements in benchmarks/elsewhere_set.py), under a BitFit child's
#: untouched matrices (0.99).
COPIED_SHARE = 0.9
#: A linear merge whose weights miss 1 by more than this on some layer is read by :func:`_scaled_fits` (the affine
#: fits cannot read it); nearer 1, the affine fits' residual is (1 - sum w)^2 |base|^2, within their exactness.
SCALED_SUM = 0.02
#: A sparse merge's squared norm exceeds its base's by at least this many times their squared distance
#: (TIES / DARE on the fitting collection: 1.4-3.1; a parent read as the merge of its descendants: 0.1-0.7).
BASE_GROWTH = 1.0
#: A sparse merge sits off the path from its base to each other parent by at least this share of their
#: squared distance (:func:`_off_path`): tree junctions read as merges of their descendants on the
#: generalise fitting collections: 0.01-0.11; the typed zoo's TIES / DARE merges: above 0.6.
OFF_PATH = 0.3
#: A sparse merge keeps its base's value wherever every input's task-vector entry was trimmed (TIES,
#: Yadav et al. 2023) or dropped (DARE, Yu et al. 2023), so a share of its entries equals its base's, and
#: (TIES, where one input alone kept an entry, or where an input left a layer alone) another parent's,
#: exactly (:func:`~mother_core.relations.evidence.equal_share`). Fitted on the typed zoo's seed 0: its
#: TIES / DARE merges share 0.32-0.56 of their entries with their base; no other relation shares more
#: than 0.031 with any model (quantized copies with their source; fine-tunes, adapters, conversions:
#: 0). The threshold is the geometric middle of that gap. A candidate base that shares this much with
#: the child confirms a sparse merge. With this evidence a sparse merge stands without the
#: off-path test (a merge with a merged LoRA or a small update among its inputs sits near the path:
#: off-path -0.20 and -0.28 on seeds 0 and 3) and up to :data:`RESIDUAL_MAX_EQUAL`.
EQUAL_SHARE = 0.1
#: Equal entries name a base only where they stand out from the coincidences of the child's tree: at
#: least this many times the tree's chance level (:func:`chance_equal_share`). A few Adam steps move
#: every entry by about +-lr each (Kingma and Ba 2015: the first step is exactly lr times the sign of the
#: gradient), so in bf16 entries whose steps net to nothing round back to the parent's value, and
#: siblings land on the same value: a family of 3-6 step bf16 fine-tunes shares 0.10-0.15 of its entries
#: pair by pair, and read its root and a chain's middle model as TIES merges of their descendants at
#: confidence 0.72-0.99 (tests/test_lora_links.py). Trees of the typed sets' fine-tunes: chance level
#: 0-0.04, so the bar stays :data:`EQUAL_SHARE` there.
CHANCE_FACTOR = 2.0
#: The residual a sparse merge may leave when its entries confirm it (:data:`EQUAL_SHARE`). The cap
#: :data:`RESIDUAL_MAX` guards against fine-tunes, which share no entries; a sparse merge's residual
#: grows with its drop / trim rate and only a fine-tune's own new update leaves ~1. A TIES merge of the
#: held-out seed 1 leaves 0.65. Where no fit of a child whose entries name a base is within it, it is read
#: on the merge's own update instead (:func:`_own_update_ratio`: DELLA merges that outrun their heaviest input).
RESIDUAL_MAX_EQUAL = 0.85
#: A base's other parents differ through it: |d(i, j) - d(i, base) - d(base, j)| <= this share of d(i, j).
BASE_ADDITIVITY = 0.25
#: A larger set of parents must lower the residual by this factor to be preferred.
PARSIMONY = 0.6
#: The largest residual among the sparse merges the calibrated rate was measured on (the typed zoo's
#: fitting collection, seed 0: 0.312 and 0.474; :mod:`.calibration`). A fit between this and
#: :data:`RESIDUAL_MAX` is one the calibration never saw: there, fine-tunes read as sparse merges land
#: (issue 12: 0.49 on held-fft, siblings repeating a task; 0.59 in a barely trained tree, whose few-step
#: updates are correlated; 0.53 for a fine-tune of the typed zoo's seed 3), each at confidence 0.99.
CALIBRATED_RESIDUAL = 0.475
#: A merge read on a found merge of some of its parents, in their place, leaves at most this share more than on
#: them where it is the same reading: the child holds those parents in that merge's own proportion, so it may
#: have been made from it (:func:`contest_parents`). Profile C and D diagnosis sets: a linear merge of a merge
#: and a third model, read as the merge's inputs (profile D seed 208), 2e-6; merges whose inputs a sibling merge
#: also took (profile C: 26 pairs) 5e-4 and more (sparse merges, whose trimmed entries dominate the residual), 5e-2
#: and more (Model Stock, per layer). The bar sits between, nearer the first.
SAME_READING = 1e-4
#: The words that open the note of a merge parent taken in the place of a contested one (:func:`_mark_swapped`).
CONTESTED_NOTE_SWAPPED = "taken in the place of"


#: A fit of :func:`_best_subset`, :func:`_completed` or :func:`_on_sphere`: (residual ratio, parents, coefficients,
#: the largest residual ratio its kind may leave, whether the coefficients are fitted layer by layer, whether its
#: small-weight base passed one base test of two: :data:`ONE_BASE_TEST`).
Fit = tuple[float, tuple[int, ...], np.ndarray, float, bool, bool]


class SubsetFit(NamedTuple):
    """One subset's fit inside :func:`_best_subset`, before it is judged against the other sizes."""

    ratio: float  #: residual ratio (on the nearest parent's squared distance)
    parents: tuple[int, ...]
    weights: np.ndarray  #: affine coefficients, one per parent
    score: float  #: the ratio plus, for a sparse merge, its base's additivity (lower is better)
    confirmed: bool  #: a base named by the entries the child keeps (:data:`EQUAL_SHARE`)
    by_layer: bool  #: coefficients fitted layer by layer (:func:`layerwise_residual`)
    own: float  #: residual on the merge's own update (:func:`_own_update_ratio`), ``inf`` where none
    one_test: bool  #: its small-weight base passed one base test of two (:data:`ONE_BASE_TEST`)


def affine_fit(dc: np.ndarray, dp: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine coefficients of C on parents from squared distances.

    Parameters
    ----------
    dc : ndarray (K,)
        d(C, P_k), squared distances.
    dp : ndarray (K, K)
        d(P_k, P_l).

    Returns
    -------
    coefficients (K,) summing to 1, residual ||C - sum a_k P_k||^2 (>= 0).
    """
    k = len(dc)
    # minimise f(a) = a.dc - 1/2 a' dp a subject to 1'a = 1: stationarity -dp a + dc = mu 1.
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = -dp
    kkt[:k, k] = -1.0
    kkt[k, :k] = 1.0
    rhs = np.concatenate([-dc, [1.0]])
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    a = sol[:k]
    res = float(a @ dc - 0.5 * a @ dp @ a)
    return a, max(res, 0.0)


#: A step that widens the fits :func:`find_merges` found before they are made consistent: it is given the pair
#: layers (entries above chance), every fit, and the children exact, per-layer or scaled fits settled
#: (:func:`.merge_signs.sign_step` reads the rest on the signs of their entries).
FitStep = Callable[[PairLayers, list[tuple[float, TypedLink]], set[int]], list[tuple[float, TypedLink]]]


def find_merges(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int],
                more: FitStep | None = None) -> list[TypedLink]:
    """Merged models among those not in ``excluded`` (copies, quantized models, adapters).

    For each model, subsets of its nearest ``CANDIDATES`` relatives in its tree are fitted; the
    smallest subset whose residual is within ``PARSIMONY`` of the best is kept when its residual is
    near zero (``EXACT``: linear, SLERP, task arithmetic) or, for trimmed task vectors (TIES, DARE),
    at most ``RESIDUAL_MAX`` of the squared distance to its nearest parent with one parent the base
    of the others (:func:`_has_base`); every coefficient is at most
    1 and every coefficient but at most one (the base of a task-arithmetic, TIES or DARE merge, which
    may be negative down to -1) is at least ``MIN_WEIGHT``. A model
    already used as another merge's parent with a smaller residual is not itself a merge of that
    merge (its coefficient would be negative anyway). Where no fit is exact on all layers, exact
    fits are also sought off the child's own direction (:func:`_on_sphere`: SLERP, NuSLERP,
    Multi-SLERP and Karcher renormalise onto the sphere, which leaves their chord error along the
    child). An exact fit must also explain the child better, by :data:`PARSIMONY`, than any single
    relative alone (:func:`_one_parent_share`): a near-copy fine-tune of a model lying between two others
    is exact on them with its own update for residual. With ``more`` (``detect`` passes
    :func:`.merge_signs.sign_step`), the children no exact or per-layer fit explains are also read on the signs
    of their sampled entries: high-density DELLA and Breadcrumbs merges, which keep too few of their base's
    entries for :data:`EQUAL_SHARE`, and sparse readings missing an input.
    """
    pl = merge_layers(stats, pl, labels)
    # Exact merges first; they are not parents of the sparse ones (a merge of merges is rare, and a
    # merge sits between its parents, where it fits any combination of them as well as they do).
    modes: dict[int, tuple[bool, bool]] = {}  # each child's fit: (off the ray, coefficients per layer)
    own = [x for x in _fits(stats, pl, labels, excluded, modes=modes) if x[0] <= EXACT]
    exact = _one_reading(pl, labels, excluded, own + _bridging_fits(stats, pl, labels, excluded,
                                                                    {link.child for _, link in own}, modes))
    exact_children = {link.child for _, link in exact}
    sparse = [x for x in _fits(stats, pl, labels, excluded | exact_children, candidates=SPARSE_CANDIDATES,
                               modes=modes) if x[0] > EXACT]
    # Then, for the rest, exact combinations with coefficients per layer (Model Stock; :func:`_best_subset`):
    # the richer reading only where one set of coefficients explains nothing, and, as above, not on the
    # merges already found (a merge of several models sits near their base, where it crowds the
    # candidates of every other merge of that base).
    found = {link.child for _, link in exact + sparse}
    layered = _fits(stats, pl, labels, excluded | found, by_layer=True, modes=modes)
    # A sparse fit does not pre-empt an exact one per layer. TIES, DARE, DELLA, Breadcrumbs and SCE trim or
    # drop task-vector entries one by one, so what no input explains is spread over the entries of every
    # tensor, and coefficients fitted per layer leave it as one set does (profile C, issue 11: 0.08-0.89 on
    # all layers, within 0.03 of it per layer, on every sparse merge of ten sets). Model Stock sets its ratio
    # per tensor from the task vectors' angle (mergekit ``model_stock.py``), exact per layer (0.002-0.007),
    # and in bf16 it keeps its base's value wherever its small update rounds back to it, which can name the
    # base as a sparse merge's entries do (seed 13: 0.126 of its entries; read as a TIES merge of three).
    sparse_children = {link.child for _, link in sparse}
    if sparse_children:
        per_layer = _fits(stats, pl, labels, excluded | exact_children | sparse_children, by_layer=True,
                          children=sparse_children, modes=modes)
        exact_by_layer = {link.child for _, link in per_layer}
        sparse = [x for x in sparse if x[1].child not in exact_by_layer]
        layered += per_layer
    # Last, linear merges whose weights do not sum to 1 (mergekit ``linear`` with ``normalize: false``), which no
    # affine fit explains: only for the children nothing else read.
    scaled = _scaled_fits(stats, pl, labels, excluded | {link.child for _, link in exact + sparse + layered})
    fits = exact + sparse + layered + scaled
    if more is not None:
        fits = more(pl, fits, {link.child for _, link in exact + layered + scaled})
    links = _consistent([fit for fit in fits if _copied_parent(stats, pl, fit[1].child, fit[1].parents) is None])
    scaled_children = {link.child for _, link in scaled}
    # (a scaled merge's parents are not contested: the contest refits affinely, which no relative satisfies)
    return [link if link.child in scaled_children else
            contest_parents(stats, pl, labels, excluded, link, links, *modes.get(link.child, (False, False)))
            for link in links]


def merge_layers(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray) -> PairLayers:
    """``pl`` as the merge fits read it: each pair's equal shares against their bar, storage rounding counted
    (:func:`_entries_above_chance` with :func:`rounding_ratio`). One (N, N) pass over the tensors: made once
    per detection, then handed to every fit."""
    return _entries_above_chance(pl, labels, rounding_ratio(stats))


def exact_merge_of(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int],
                   child: int) -> TypedLink | None:
    """The exact merge reading of ``child`` (:func:`_fits`, residual within :data:`EXACT`) on the relatives of its
    tree not in ``excluded``, or None. For a model :func:`find_merges` never fitted on some input (a quantized
    model's nearest float model, read as its source, which may be a merge of the quantized model's values).
    ``pl``: the pair layers from :func:`merge_layers` (made once by the caller, not per child)."""
    fits = sorted((x for x in _fits(stats, pl, labels, excluded, children={child}) if x[0] <= EXACT),
                  key=lambda x: x[0])
    fits = [x for x in fits if _copied_parent(stats, pl, child, x[1].parents) is None]
    return fits[0][1] if fits else None


def _copied_parent(stats: WeightStatistics, pl: PairLayers, c: int, parents: tuple[int, ...]) -> int | None:
    """The parent ``c`` equals exactly on tensors holding at least :data:`COPIED_SHARE` of its elements where
    another parent differs from it there, or None.

    There the other parents entered with weight 0, which no merge of them does on nearly the whole model: the
    two are one model and a fine-tune of it that changed the rest only (BitFit trains biases and norms alone, a
    partial fine-tune some blocks). Read as a merge, the root of such a pair became the merge of its BitFit
    child and a sibling fitted on the biases (benchmarks/elsewhere_set.py, at confidence 0.99), and the
    tree hung from that child.

    The share is of the elements of the tensors where the child differs from some parent: tensors the child and
    all its parents hold equal (a module no training step reaches: SigLIP's attention-pooling head under a
    classifier on the mean, which AdamW leaves alone without a gradient) say nothing about which parent it copied.
    Counted in, they hid a linear probe (the root and its copy but for the classifier) behind 0.68 of the root's
    elements, and the root read as a SLERP of the probe and a sibling (benchmarks/elsewhere7_set.py, 0.99)."""
    numel = stats.numel.astype(float)
    differs = np.nan_to_num(pl.sq[:, c, list(parents)], nan=0.0) > 0  # (L, k)
    informative = float(numel[np.isfinite(pl.sq[:, c, list(parents)]).all(axis=1) & differs.any(axis=1)].sum())
    for p in parents:
        others = [q for q in parents if q != p]
        same = (pl.sq[:, c, p] == 0) & np.any(np.nan_to_num(pl.sq[:, c, others], nan=0.0) > 0, axis=1)
        if informative > 0 and float(numel[same].sum()) >= COPIED_SHARE * informative:
            return p
    return None


def free_fit(c: int, parents: tuple[int, ...], pl: PairLayers, slot: int) -> tuple[np.ndarray, float]:
    """Least-squares coefficients of ``c`` on ``parents`` in one slot, free (not summing to 1), and the residual
    ||C - sum a_k P_k||^2, from the pass's norms and squared distances: <P_i, P_j> = (|P_i|^2 + |P_j|^2 -
    d(P_i, P_j)) / 2, and ``scale2`` holds (|P_i|^2 + |P_j|^2) / 2."""
    idx = np.array((c, *parents))
    gram = pl.scale2[slot][np.ix_(idx, idx)] - pl.sq[slot][np.ix_(idx, idx)] / 2
    g, h = gram[0, 1:], gram[1:, 1:]
    try:
        a = np.linalg.solve(h, g)
    except np.linalg.LinAlgError:
        a = np.linalg.lstsq(h, g, rcond=None)[0]
    return a, max(float(gram[0, 0] - 2 * a @ g + a @ h @ a), 0.0)


def _scaled_fits(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray,
                 excluded: set[int]) -> list[tuple[float, TypedLink]]:
    """Linear merges whose weights do not sum to 1: mergekit's ``linear`` with ``normalize: false`` writes
    sum_k w_k P_k as given (weights per layer where a gradient sets them), which sits off every affine
    combination of its inputs by (1 - sum w) times their common base, so the affine fits leave most of its
    distance (benchmarks/elsewhere_set.py: 0.32-0.93 per layer) while coefficients per layer with no constraint
    leave ~1e-7 of it. A fine-tune's own update is not in its relatives' span, so it leaves ~1 either way; a
    model fitted by its descendants needs a negative coefficient. Subsets of 2 to 3 of the nearest
    :data:`CANDIDATES` relatives; the fit must be :data:`EXACT` over the layers all hold, every coefficient at
    least :data:`MIN_WEIGHT` on every layer, and the weights must miss 1 (by :data:`SCALED_SUM` on some layer):
    otherwise an affine fit would have read it, and one that did not has a reason. It must hold off the ray
    too (:func:`off_ray_ratio`): models on one ray of weight decay are free combinations of each other
    (tests/test_merge_ray.py)."""
    n = stats.n_models
    found: list[tuple[float, TypedLink]] = []
    for c in range(n):
        if c in excluded:
            continue
        pool = tree_inputs(pl, labels, excluded, c)
        if len(pool) < 2:
            continue
        cand = [pool[k] for k in np.argsort([_total(pl, c, p) for p in pool])[:CANDIDATES]]
        best: tuple[float, tuple[int, ...], np.ndarray] | None = None
        for size in (2, 3):
            for parents in itertools.combinations(cand, size):
                layers = np.flatnonzero(_common_layers(pl, [c, *parents]) & (pl.scale2[:, c, c] > 0))
                if not len(layers):
                    continue
                fits = [free_fit(c, parents, pl, int(slot)) for slot in layers]
                coeffs = np.array([a for a, _ in fits])
                if not (coeffs >= MIN_WEIGHT).all() or not (np.abs(coeffs.sum(axis=1) - 1) > SCALED_SUM).any():
                    continue
                nearest = min(float(pl.sq[layers, c, p].sum()) for p in parents)
                ratio = sum(r for _, r in fits) / nearest if nearest > 0 else math.inf
                if ratio > EXACT or (best is not None and ratio >= best[0] / PARSIMONY):
                    continue
                # Off the child's own direction the weights' sum no longer matters (a = w / sum w fits exactly
                # there), while a weight-decayed fine-tune on a ray of relatives leaves its own update
                # unexplained: the ray check every merge fit passes (:func:`off_ray_ratio`, at EXACT).
                if not off_ray_ratio(pl, c, parents, by_layer=True) <= EXACT:
                    continue
                best = (ratio, parents, coeffs)
            if best is not None:
                break  # fewer parents first
        if best is None:
            continue
        ratio, parents, coeffs = best
        mean = coeffs.mean(axis=0)
        order = np.argsort(-mean)
        parents, mean = tuple(parents[k] for k in order), mean[order]
        sums = coeffs.sum(axis=1)
        detail = ("linear (weights not normalised) " + "/".join(f"{w:.2f}" for w in mean)
                  + ("" if np.ptp(sums) <= 0.02 else " by layer"))
        names = ", ".join(stats.models[p].id for p in parents)
        found.append((ratio, TypedLink(c, parents, Relation.MERGE, detail,
                                       merge_confidence(kind_of(Relation.MERGE.value, detail, ""), ratio),
                                       tuple(float(w) for w in mean), evidence=(
            f"explained layer by layer as a weighted sum of {names} (mean weights "
            + ", ".join(f"{w:.2f}" for w in mean) + f"; their sum {sums.min():.2f}-{sums.max():.2f} over layers, "
            f"not 1: no affine combination fits); residual {ratio:.2g} of its squared distance to the nearest "
            "parent (a fine-tune leaves ~1)"))))
    return found


def _bridging_fits(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int], done: set[int],
                   modes: dict[int, tuple[bool, bool]]) -> list[tuple[float, TypedLink]]:
    """Exact merges whose inputs the forest put in other trees: each model's tree searched together with the
    trees of its :data:`BRIDGED_TREES` nearest relatives outside it (same tensors), kept where the fit is exact
    and takes an input from outside the child's tree.

    The forest splits at a gap in relative distance, and an input that moved far from its family (a fine-tune
    at a large learning rate: Adagrad at 0.05 moved a SmolLM3 ten times farther than its siblings, issue 11's
    fourth stress set) lands in a tree of its own, and the merge that takes a share of it with it or alone:
    the merge is then searched among fewer than two candidates and read as the far input's fine-tune, or left
    a root. A merge lies between its inputs, so they are among its nearest relatives in other trees. Only exact
    fits count (:data:`EXACT`): models of unrelated trees combine exactly only where the child is their merge,
    and a loose (sparse) reading across trees would be a fine-tune's chance to pass as one. ``done``: children
    an exact fit within their tree already read."""
    n = stats.n_models
    nearest: dict[int, list[int]] = {}  # each child's nearest other trees, nearest first
    for c in range(n):
        if c in excluded or c in done:
            continue
        others = sorted((p for p in range(n) if labels[p] != labels[c] and p not in excluded
                         and can_be_input(pl, c, p)), key=lambda p: _total(pl, c, p))
        trees: list[int] = []
        for p in others:
            if int(labels[p]) not in trees:
                trees.append(int(labels[p]))
        nearest[c] = trees[:BRIDGED_TREES]
    found: list[tuple[float, TypedLink]] = []
    read: set[int] = set()
    # One other tree first, then two for the children still unread: every further tree is another model set
    # for the fit to borrow from (a third input of an unrelated tree at -0.17 fitted a wide-angle SLERP of two
    # better than the two alone, at 3 trees).
    for k in range(1, BRIDGED_TREES + 1):
        groups: dict[tuple[int, ...], set[int]] = {}  # trees searched together -> children searched there
        for c, trees in nearest.items():
            if c not in read and len(trees) >= k:
                groups.setdefault(tuple(sorted([int(labels[c]), *trees[:k]])), set()).add(c)
        for searched, children in sorted(groups.items()):
            joined = np.where(np.isin(labels, searched), searched[0], labels)
            scratch: dict[int, tuple[bool, bool]] = {}  # (the modes of the fits kept only)
            for fit in _fits(stats, pl, joined, excluded, children=children, modes=scratch):
                link = fit[1]
                # (positive weights only: a negative-weight input is its co-inputs' base, an ancestor the
                # forest keeps in their tree, never a model the gap put elsewhere)
                if (fit[0] <= EXACT and any(labels[p] != labels[link.child] for p in link.parents)
                        and link.weights is not None and min(link.weights) >= MIN_WEIGHT):
                    found.append(fit)
                    read.add(link.child)
                    modes[link.child] = scratch[link.child]
    return found


def _one_reading(pl: PairLayers, labels: np.ndarray, excluded: set[int],
                 exact: list[tuple[float, TypedLink]]) -> list[tuple[float, TypedLink]]:
    """Of exact fits that read the same models each as the combination of the others, the one whose child lies
    farthest from the rest of its tree (the median relative squared distance to its members outside the fit).

    The checkpoint mergers' add difference A + m (B - C) enters A at weight 1, so A is exactly the merge minus
    m (B - C), in range like the merge itself (a subtraction of B's task vector, :func:`_negation`, or C's on
    B as the base), and at m = 1 (its common recipe) the four models are a parallelogram whose every corner is
    its neighbours minus its opposite corner, at one residual: the residual cannot choose, and the tie went to
    float noise (a Stable Diffusion add difference of two fine-tunes read its first input as
    the merge of it, its base and the other input). The tree can: its other members reach these models
    through their lineage, and a merge adds its inputs' updates on top of where they start, so it is the
    corner farthest from them (a negation with its added input at weight 1 too: the input lacks the
    subtracted update the negation moved away by). Fits of different model sets are untouched."""
    groups: dict[frozenset[int], list[tuple[float, TypedLink]]] = {}
    for fit in exact:
        groups.setdefault(frozenset((fit[1].child, *fit[1].parents)), []).append(fit)
    dropped: set[int] = set()  # ids of the fits another reading of the same models wins over
    for models, group in groups.items():
        c = group[0][1].child
        rest = [h for h in range(len(labels)) if labels[h] == labels[c] and h not in models and h not in excluded]
        if len(group) == 1 or not rest:
            continue  # one reading, or nothing to tell the readings apart by: every reading stays
        winner = max(group, key=lambda g: float(np.median([_total(pl, h, g[1].child) for h in rest])))
        dropped.update(id(g) for g in group if g is not winner)
    return [fit for fit in exact if id(fit) not in dropped]


def chance_equal_share(share: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,): the share of exactly equal entries that models of each model's tree reach by chance: the
    median over the tree's members of each member's largest share with another member (NaN-free; 0 for
    a tree of one).

    A sparse merge keeps its base's entries, and its base keeps them with nobody else; a median over the
    members is not moved by the few merges and bases of a tree, but it is by a tree whose members all
    share entries with a relative, which no merge explains (few-step bf16 fine-tunes: :data:`CHANCE_FACTOR`).
    """
    chance = np.zeros(len(labels))
    for tree in np.unique(labels):
        members = np.flatnonzero(labels == tree)
        if len(members) < 3:
            continue
        sub = share[np.ix_(members, members)].copy()
        np.fill_diagonal(sub, np.nan)
        sub = np.where(np.isfinite(sub), sub, 0.0)
        chance[members] = float(np.median(sub.max(axis=1)))
    return chance


def _entries_above_chance(pl: PairLayers, labels: np.ndarray, rounded: np.ndarray | None = None) -> PairLayers:
    """``pl`` with each child's equal shares scaled so that :data:`EQUAL_SHARE` stands for its bar:
    ``max(EQUAL_SHARE, CHANCE_FACTOR x`` the tree's chance level ``)`` (:func:`chance_equal_share`); the
    shares as counted stay in ``equal_counted`` for the evidence text.

    ``rounded`` (:func:`rounding_ratio`): a pair whose share is at least :data:`CHANCE_FACTOR` times what
    storage rounding alone keeps, and at least that many times the tree's chance level, reaches the bar
    too. :data:`EQUAL_SHARE` was set on float32 sets, where nothing but trimming keeps an entry; in bf16
    every change under half a unit of the base's last place rounds back to it, so a dense change keeps
    a share of its own (0.01-0.06 on profile C) and a sparse merge of high density (Breadcrumbs at
    0.6-0.8: it drops its inputs' smallest entries, those that round back anyway) keeps only a few
    times that (0.03-0.07), under :data:`EQUAL_SHARE` but well above what rounding explains.
    """
    chance = chance_equal_share(pl.equal_share, labels)
    bar = np.maximum(EQUAL_SHARE, CHANCE_FACTOR * chance)
    scaled = pl.equal_share * (EQUAL_SHARE / bar)[:, None]
    if rounded is not None:
        # A merge has one base, and the entries it keeps are that base's: a relative holding the base's
        # values on part of its own (its merged LoRA, a near-copy) shares fewer of them, and by rounding
        # alone would pass too, so only the child's largest share counts here.
        own = np.where(np.isfinite(pl.equal_share), pl.equal_share, -np.inf)
        np.fill_diagonal(own, -np.inf)
        # The share must be there at all: ``rounded`` is a median over the tensors where rounding keeps an entry,
        # the share a median over every layer. In float32 rounding keeps one only in tensors near zero (the
        # generalise collection fitw: two attention key biases, which get no gradient and only decay), so a share
        # of 0 (most layers keep none of the candidate's entries, which no sparse merge leaves: it trims every
        # tensor) passed on those alone against a tree's chance level of 0, and a fine-tune of that SGD tree read
        # as a confirmed TIES merge of its own children at 0.988.
        with np.errstate(invalid="ignore"):
            beyond = ((rounded >= CHANCE_FACTOR) & (pl.equal_share >= CHANCE_FACTOR * chance[:, None])
                      & (pl.equal_share > 0) & (own >= own.max(axis=1, keepdims=True)))
        scaled = np.where(beyond, np.maximum(scaled, EQUAL_SHARE), scaled)
    return dataclasses.replace(pl, equal_share=scaled, equal_counted=pl.equal_share)


def rounding_ratio(stats: WeightStatistics) -> np.ndarray:
    """(N, N): per pair (child ``i``, candidate base ``j``), the median over the tensors both hold of the share
    of entries equal as stored over the share that rounding alone keeps equal; NaN where no tensor counts
    or where rounding keeps less than one entry of a tensor (float32: no measure to compare with).

    A child made from ``j`` by a dense change d and stored on a grid of unit roundoff u holds ``j``'s value
    exactly where |d| is under half a unit of the last place of that value, u |w| / m for a mantissa m in
    [1, 2). With d and w independent and centred, d / w is Cauchy-like with scale sigma_d / sigma_w (the
    tensor's root-mean-square difference over the base's), and m spread as the leading digits of floating
    point values are (log-uniform: E[1/m] = 1 / (2 ln 2)), so the share kept is about
    (2 / pi) arctan(u / (2 ln 2) x ||W_j|| / ||W_i - W_j||), per tensor, from the pass's norms and squared
    distances alone. On profile C (bf16, issue 11) fine-tunes, merged LoRAs, pruned children and exact
    merges keep 0.9-1.3 times that with their parent and their relatives; sparse merges keep 1.6-17 times
    it of their base's entries.
    """
    n = stats.n_models
    out = np.full((n, n), np.nan)
    if stats.equal is None or not len(stats.tensors):
        return out
    numel = stats.numel.astype(np.float64)
    norm2 = stats.norm.T ** 2  # (T, N)
    u = storage_roundoff(stats) / (2.0 * math.log(2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = stats.equal / numel[:, None, None]
        rounding = (2.0 / np.pi) * np.arctan(u[None, :, None] * np.sqrt(norm2[:, None, :] / stats.sq_dist))
        ok = (np.isfinite(kept) & (kept < 1.0) & np.isfinite(stats.sq_dist) & (stats.sq_dist > 0)
              & (rounding * numel[:, None, None] >= 1.0))
        ratio = np.where(ok, kept / rounding, np.nan)
    counted = ok.any(axis=0)
    if counted.any():
        i, j = np.nonzero(counted)
        out[i, j] = np.nanmedian(ratio[:, i, j], axis=0)
    return out


def _fits(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int], by_layer: bool = False,
          candidates: int | None = None, children: set[int] | None = None,
          modes: dict[int, tuple[bool, bool]] | None = None) -> list[tuple[float, TypedLink]]:
    """Merge fits of every model not in ``excluded`` (or of ``children`` only, which may be in ``excluded``: those
    are then children but never candidates), on relatives of its tree that are not in ``excluded``; ``modes``
    receives each fitted child's (found off the ray, coefficients per layer) for :func:`contest_parents`."""
    n = stats.n_models
    found: list[tuple[float, TypedLink]] = []
    memo: dict[tuple[int, int], bool] = {}

    def farther(g: int, b: int) -> bool:
        """Whether the other members of their tree reach ``g`` through ``b`` rather than ``b`` through ``g``
        (:func:`_negation`, :func:`_through`). Copies, quantized models and adapters (``excluded``) sit where
        their source does: one vote per position."""
        if (g, b) not in memo:
            tree = [h for h in range(n) if h not in (g, b) and h not in excluded and labels[h] == labels[g]]
            memo[(g, b)] = _through(pl, g, b, tree)
        return memo[(g, b)]

    for c in range(n):
        if (c not in children) if children is not None else (c in excluded):
            continue
        pool = tree_inputs(pl, labels, excluded, c)
        if len(pool) < 2:
            continue
        d_all = np.array([_total(pl, c, p) for p in pool])
        order = np.argsort(d_all)
        cand = [pool[k] for k in order[:candidates or CANDIDATES]]
        best = None
        if candidates is not None and not by_layer:
            # A sparse merge's base is named by the entries the child keeps (EQUAL_SHARE), whatever its
            # distance: weights summing past 1 (DELLA rescales its survivors) move the merge far from
            # its base, beyond the nearest few (profile C: a DELLA merge's base 8th-9th nearest), and a
            # merge of four sits among its inputs' other relatives. With such a base the loose caps
            # have the entries behind them, so these fits may take CANDIDATES nearest relatives and
            # every base the entries name; without one the nearest SPARSE_CANDIDATES only.
            named = [p for p in pool if _kept_by(pl, c, p)]
            if named:
                wide = [pool[k] for k in order[:CANDIDATES]]
                best = _best_subset(pl, c, wide + [p for p in named if p not in wide], by_layer, named=set(named),
                                    farther=farther)
        if best is None:
            best = _best_subset(pl, c, cand, by_layer, farther=farther)
        sphere = None
        if candidates is None and not by_layer and (best is None or best[0] > EXACT):
            rest = [pool[k] for k in order[len(cand):]]
            # (a subtracted task vector moves the merge away from that input: beyond the nearest, too)
            best = _completed(pl, c, cand, rest, farther) or best
            if best is None or best[0] > EXACT:
                sphere = _on_sphere(pl, c, cand, rest)
                best = sphere or best
        if best is None:
            continue
        # (the fit's own flag: the whole-model pass may not rebind the loop's ``by_layer``)
        ratio, parents, coeffs, cap, fit_by_layer, one_test = best
        if ratio <= EXACT and _one_parent_share(pl, c, parents, pool, best is sphere, fit_by_layer)[0] > PARSIMONY:
            continue  # one relative alone explains it about as well: a fine-tune of that relative (_one_parent_share)
        off_ray = off_ray_ratio(pl, c, parents, by_layer=fit_by_layer)
        if not off_ray <= cap:
            continue  # explained along its own direction only: a rescaled fine-tune (weight decay)
        reverse = _reversed(pl, c, parents, ratio, pool) if ratio > EXACT else None
        if modes is not None:
            modes[c] = (best is sphere, fit_by_layer)
        found.append((ratio, _merge_link(stats, pl, c, parents, coeffs, ratio, off_ray, sphere=best is sphere,
                                         reverse=reverse, by_layer=fit_by_layer, one_test=one_test)))
    return found


def _one_parent_share(pl: PairLayers, c: int, parents: tuple[int, ...], pool: list[int], sphere: bool,
                      by_layer: bool) -> tuple[float, int]:
    """The merge fit's residual as a share of what the single relative of ``pool`` (not a parent) that explains the
    child best leaves alone (its squared distance), and that relative (-1 where none); each fitted as the merge was
    (``sphere``, ``by_layer``: :func:`_subset_residual`) over the layers the child, its parents and that relative hold.

    A fine-tune of a model is that model plus an update new to every other model, so the one-parent reading leaves
    the update. A merge with k parents must explain the child better than that by the factor more parents must
    gain (:data:`PARSIMONY`), as it must against fewer parents of its own (:func:`_best_subset`). Measured on the
    nearest parent alone, the residual says nothing of this: a near-copy fine-tune of a model T that lies on a
    line between two of T's relatives is an exact "merge" of those two (a negation's base lies between the negation
    and its subtracted input: base - l (M - base)), with its own small update for residual. Profile D seeds 204 and
    206: two such fine-tunes read as SLERPs of a negation and its subtracted input at residual 0.006-0.009 of
    the nearest parent, 0.77 of T's distance; on the profile C, D and E diagnosis sets the exact fits of every merge
    read (160 on the fifteen other sets, and D 204's and 206's) leave at most 0.022 of what any single relative
    leaves."""
    shared = _common_layers(pl, [c, *parents])
    best, who = 0.0, -1
    for r in pool:
        if r in parents:
            continue
        layers = shared & np.isfinite(pl.sq[:, c, r])
        if not layers.any():
            continue
        single = _subset_residual(pl, c, (r,), layers, sphere, by_layer)
        if not single > 0:
            continue
        share = _subset_residual(pl, c, parents, layers, sphere, by_layer) / single
        if share > best or who < 0:
            best, who = share, r
    return best, who


def _reversed(pl: PairLayers, c: int, parents: tuple[int, ...], ratio: float, pool: list[int]
              ) -> tuple[int, float] | None:
    """The reading of a sparse merge the other way round: its base named by entries read as a sparse merge
    with ``c`` as *its* base, (that base, its best residual ratio), or None (no base named by entries).

    Equal entries are symmetric: they say that ``c`` and a parent are a sparse merge and its base, not
    which is which. :func:`_entry_bases` takes the direction from the norm (a merge of task vectors grows),
    which holds for merges whose weights sum to about one or more, not for trimmed merges that shrink
    (profile C, issue 11: seed 23's root read as a Breadcrumbs merge of its own Breadcrumbs-TIES merge,
    whose norm is the smaller; the true reading leaves 0.23, the backwards one 0.46). The reversed fit is
    made as the forward one is (three or :data:`MAX_PARENTS` inputs, ``c`` among them, from the base's
    :data:`CANDIDATES` nearest relatives of ``pool``, weights in [-1, 1], only ``c`` under
    :data:`MIN_WEIGHT`), without the tests that orient (norm growth, additivity, off-path): they are what
    is in doubt. Its residual ratio is compared with the forward one in :func:`reversal_factor`.
    """
    named = [p for p in parents if _kept_by(pl, c, p)]
    if not named:
        return None
    base = max(named, key=lambda p: float(pl.equal_share[c, p]))
    others = sorted((p for p in pool if p not in (base, c)), key=lambda p: _total(pl, base, p))[:CANDIDATES]
    local = np.array([base, c, *others])
    layers = _common_layers(pl, local.tolist())
    if not layers.any():
        return None
    total = pl.sq[layers][:, local[:, None], local[None, :]].sum(axis=0)
    best = math.inf
    for size in range(2, min(MAX_PARENTS, len(others) + 1)):
        for sub in itertools.combinations(range(2, len(local)), size):
            idx = np.array((1, *sub))
            dc = total[0, idx]
            if (dc <= 0).any():
                continue
            a, res = affine_fit(dc, total[idx[:, None], idx[None, :]])
            if (a > 1.0 + 1e-3).any() or (a < -1.0).any() or (a[1:] < MIN_WEIGHT).any():
                continue
            best = min(best, res / float(dc.min()))
    return (base, best) if math.isfinite(best) else None


def reversal_factor(ratio: float, reversed_ratio: float) -> float:
    """How far a sparse merge's confidence keeps its value, in [0, 1] (0: a coin flip), given the residual
    ratio of its reading (``ratio``) and of the reading the other way round (``reversed_ratio``:
    :func:`_reversed`). A reading counts as better than another when it lowers the residual by the factor
    :data:`PARSIMONY`, the bar more parents must pass in :func:`_best_subset`: at or beyond it the reading
    keeps its confidence; where the reversed one fits as well or better, either direction is as likely."""
    if not reversed_ratio > 0:
        return 0.0
    q = ratio / reversed_ratio
    return float(min(1.0, max(0.0, (1.0 - q) / (1.0 - PARSIMONY))))


def _completed(pl: PairLayers, c: int, cand: list[int], rest: list[int],
               farther: Callable[[int, int], bool] | None = None
               ) -> Fit | None:
    """An exact merge of three or :data:`MAX_PARENTS` whose farthest input is not among the nearest ``cand``.

    A merge of k fine-tunes sits nearer their base and the base's near-copies (merged LoRAs, other
    merges of that base) than to any of its inputs (its updates average to ~1/k), so one input of a
    merge of three or four may rank beyond :data:`CANDIDATES` (profile C: a Multi-SLERP, a linear merge and
    a Model Stock merge of four with an input 9th-10th nearest; a linear merge of three with one 9th).
    Trying every subset of more candidates costs C(n, 4) fits per model, each with its checks (10
    candidates: +18% recover time); instead every fit of two and of three of ``cand`` is completed by
    each relative in ``rest``, in one batched solve of the whole-model fits: the missing input, and only
    it, explains the share the others leave (a quarter of the update, 0.5-0.7 of the distance, which
    three of the nearest leave as well, so no ranking of the threes finds the right ones). A completed
    fit under :data:`EXACT` is then judged as any other (:func:`_best_subset` on its models: parsimony,
    coefficients; the farther relative must stay in it) and must hold off the ray (its caller). As fewer
    parents win over more in :func:`_best_subset` only under :data:`EXACT_NOISE` (the most an exact merge
    leaves) or within :data:`PARSIMONY`, a completed three must leave at most :data:`EXACT_NOISE` to compete
    with the completed fours (profile C, seed 11: a Model Stock merge, exact per layer only, fits two of its
    inputs and a near-copy of its base completed by its farthest input at 0.018, its four parents at 0.012),
    and both sizes are tried, then judged by the same rules (:func:`_fewest`). Fits with coefficients per
    layer (Model Stock) are not completed: per layer that batch costs the layers' count more.
    """
    if len(cand) < 2 or not rest:
        return None
    local = [c, *cand, *rest]
    layers = _common_layers(pl, local)
    if not layers.any():
        return None
    idx = np.array(local)
    sq = pl.sq[layers][:, idx[:, None], idx[None, :]]  # (L, 1 + K + R, 1 + K + R): the child first
    per_size: dict[int, Fit] = {}
    for size in range(3, min(MAX_PARENTS - 1, len(cand)) + 2):
        completed = np.array(_completions(len(cand), len(rest), size))
        ratios = _subset_ratios(sq, completed)
        tol = EXACT_NOISE if size < MAX_PARENTS else EXACT
        # (two farther relatives widen the search by their pairs' count: held to what an exact merge leaves)
        ratios = np.where(((completed > len(cand)).sum(axis=1) > 1) & (ratios > EXACT_NOISE), np.inf, ratios)
        for j in np.argsort(ratios):
            if not ratios[j] <= tol:
                break
            fit = _best_subset(pl, c, [local[m] for m in completed[j]], farther=farther)
            if fit is not None and fit[0] <= tol and len(fit[1]) == size:
                per_size[size] = fit
                break
    return _fewest(pl, c, per_size)


def _fewest(pl: PairLayers, c: int, per_size: dict[int, Fit]) -> Fit | None:
    """Of the completed fits by size (:func:`_completed`), the one :func:`_best_subset` would keep: the fewest parents
    whose fit is within :data:`PARSIMONY` of the best, or under :data:`EXACT_NOISE` and within it of the best off the
    child's own direction (:func:`_noise_only`).

    A completed three under :data:`EXACT_NOISE` no longer pre-empts the fours untried: mergekit's linear merge and task
    arithmetic are exact up to storage rounding, so a linear merge of four read on three of them leaves the fourth's
    update, off the child's direction, and the four leave nothing (profile C seed 57: a linear merge of four whose
    merged LoRA input, 9th nearest, completes two of the others at 3.0e-3, the four at 6.8e-5). A SLERP-family merge's
    chord error lies along the child, where a further relative also gains, and there the three stay."""
    if not per_size:
        return None
    best = min(per_size.values(), key=lambda f: f[0])
    for size in sorted(per_size):
        fit = per_size[size]
        if fit is best or fit[0] <= best[0] / PARSIMONY:
            return fit
        if off_ray_ratio(pl, c, fit[1]) * PARSIMONY <= off_ray_ratio(pl, c, best[1]):
            return fit
    return best


def _completions(n_cand: int, n_rest: int, size: int) -> list[tuple[int, ...]]:
    """Subsets of ``size`` positions in ``[child, *cand, *rest]`` (:func:`_completed`, :func:`_on_sphere`):
    ``size - 1`` of the nearest ``cand`` completed by one farther relative of ``rest``, and, for a merge of
    :data:`MAX_PARENTS`, ``size - 2`` of them completed by two of the next :data:`CANDIDATES` (:data:`FAR_INPUTS`)."""
    rest = range(n_cand + 1, n_cand + 1 + n_rest)
    out = [(*s, x) for s in itertools.combinations(range(1, n_cand + 1), size - 1) for x in rest]
    if size >= MAX_PARENTS and size > FAR_INPUTS:
        # (pairs among the next CANDIDATES only: a bounded count, in large families too)
        out += [(*s, *xs) for s in itertools.combinations(range(1, n_cand + 1), size - FAR_INPUTS)
                for xs in itertools.combinations(rest[:CANDIDATES], FAR_INPUTS)]
    return out


def _on_sphere(pl: PairLayers, c: int, cand: list[int], rest: list[int]
               ) -> Fit | None:
    """An exact merge renormalised onto the sphere: SLERP, NuSLERP, Multi-SLERP, Karcher mean.

    mergekit computes these per tensor, without a base, as a point of the inputs' *linear* span whose
    coefficients sum to more than 1: NuSLERP (sin((1-t) theta) P_0 + sin(t theta) P_1) / sin(theta), whose
    coefficients sum to >= 1 by the concavity of sin; Multi-SLERP the weighted mean of the unit
    tensors, renormalised and scaled to the weights' mean of the input norms; Karcher the weighted
    Riemannian mean of the unit tensors (an iterate of exponential maps that never leaves their span),
    scaled alike (``mergekit/merge_methods/{nuslerp,multislerp,karcher}.py``; Shoemake 1985; Karcher
    1977). Each tensor is then lambda_t M_t, M_t an affine combination of the inputs and lambda_t >= 1:
    (sum_k w_k |P_k|) (sum_k w_k / |P_k|) >= 1 and |sum_k w_k u_k| <= 1 for unit u_k. The chord M_t misses
    the child by (lambda_t - 1) M_t, along the child itself: for inputs of one norm, 1 - |m| of the norm
    with |m|^2 = 1 - 1/2 sum_kl w_k w_l |u_k - u_l|^2, about a quarter of the squared distance to the
    nearest input in relative terms (profile C, issue 11: a Karcher mean of four and a Multi-SLERP of
    three whose inputs sit 0.016 and 0.002 apart leave 0.034 and 0.027 of it on all layers, above
    :data:`EXACT`, and 0.002 off the ray).

    So the fit is made off the ray (:func:`_off_ray_sq`: each layer's component along the child projected
    out of the child and of every candidate), where such a merge is exact, and held to :data:`EXACT`
    there; the radial part the projection forgives must lie *outward*, |C_t|^2 > <M_t, C_t> summed over
    layers (lambda_t > 1: the arc lies outside the chord). A fine-tune trained with weight decay is the
    opposite, a shrunk copy of its parent plus an update of its own (W = s W_p + u, s < 1): inward, and
    off the ray its update u is explained by nothing (:func:`off_ray_ratio`). Candidates are the nearest
    ``cand`` and, as in :func:`_completed`, their subsets of two and three completed by each farther
    relative in ``rest`` (an input of a Multi-SLERP of three ranked 9th), held to :data:`EXACT_NOISE`
    there. The smallest number of
    parents within :data:`PARSIMONY` of the best off-ray fit wins; its caller checks the ray as for any
    exact fit. Only used where no fit is exact on all layers.
    """
    local = [c, *cand, *rest]
    idx = np.array(local)
    # Rows: the child, the nearest and the next CANDIDATES farther relatives (a subset holds one farther relative,
    # or two of those: :func:`_completions`); their off-ray distances to everyone, summed over the layers the child
    # and its nearest hold with everyone (a pair missing one of those layers stays out: inf), (M, M).
    near = np.array([c, *cand])
    rows = idx[:len(near) + CANDIDATES]
    layers = np.isfinite(pl.sq[:, near[:, None], idx[None, :]]).all(axis=(1, 2))
    if not layers.any():
        return None
    block = _off_ray_block(pl, rows, idx, layers)
    block = np.where(np.isfinite(block).all(axis=0), block.sum(axis=0), np.inf)
    sq_perp = np.full((1, len(local), len(local)), np.inf)
    sq_perp[0, :len(rows), :] = block
    sq_perp[0, :, :len(rows)] = block.T
    np.fill_diagonal(sq_perp[0], 0.0)
    n_cand = len(cand)
    subsets_by_size: list[np.ndarray] = []
    for size in range(2, min(MAX_PARENTS, n_cand) + 1):
        inner = list(itertools.combinations(range(1, n_cand + 1), size))
        subsets_by_size.append(np.array(inner + _completions(n_cand, len(rest), size)))
    per_size: dict[int, tuple[float, tuple[int, ...], np.ndarray]] = {}
    for subsets in subsets_by_size:
        ratios = _subset_ratios(sq_perp, subsets)
        # completed fits (a relative beyond ``cand``) are held to EXACT_NOISE, as in :func:`_completed`
        ratios = np.where((subsets > n_cand).any(axis=1) & (ratios > EXACT_NOISE), np.inf, ratios)
        size = subsets.shape[1]
        for j in np.argsort(ratios):
            if not ratios[j] <= EXACT:
                break
            pos = subsets[j]
            a, _ = affine_fit(sq_perp[0, 0, pos], sq_perp[0][pos[:, None], pos[None, :]])
            if (a < MIN_WEIGHT).any() or (a > 1.0 + 1e-3).any():
                continue  # a SLERP-family merge weighs every input in (0, 1] and has no base
            if not _outward(pl, c, [local[m] for m in pos], a, layers):
                continue
            per_size[size] = (float(ratios[j]), tuple(local[m] for m in pos), a)
            break
    if not per_size:
        return None
    best = min(v[0] for v in per_size.values())
    for size in sorted(per_size):
        ratio, parents, a = per_size[size]
        if ratio <= best / PARSIMONY:
            return ratio, parents, a, EXACT, False, False
    return None


def _outward(pl: PairLayers, c: int, parents: list[int], a: np.ndarray, layers: np.ndarray) -> bool:
    """Whether the child lies outside the chord of ``parents`` with coefficients ``a``: |C|^2 > <M, C> summed
    over ``layers``, M = sum_k a_k P_k per layer, from the pass's squared norms and distances
    (<P_k, C> = (|P_k|^2 + |C|^2 - d(C, P_k)) / 2). See :func:`_on_sphere`."""
    idx = np.array(parents)
    n2_c = pl.scale2[layers, c, c]
    n2_p = pl.scale2[:, idx, idx][layers]
    inner = 0.5 * (n2_p + n2_c[:, None] - pl.sq[:, c, idx][layers]) @ a
    return float((n2_c - inner).sum()) > 0.0


def _subset_ratios(sq: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Residual ratios (to the nearest parent) of the child, position 0 of ``sq`` (L, M, M), on each row of
    ``subsets`` (S, K) (positions in ``sq``), with one set of coefficients (per-layer fits:
    :func:`_layerwise_all`). The layers' sums come first: memory S K^2, not S L K^2, for many completions."""
    total = sq.sum(axis=0)
    dc = total[0, subsets]  # (S, K)
    dc_min = dc.min(axis=1)
    res = _affine_residuals(dc, total[subsets[:, :, None], subsets[:, None, :]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dc_min > 0, res / dc_min, np.inf)


def _consistent(found: list[tuple[float, TypedLink]]) -> list[TypedLink]:
    found = sorted(found, key=lambda x: x[0])
    links: list[TypedLink] = []
    used_as_parent: set[int] = set()
    merged: set[int] = set()
    for ratio, link in found:
        # A merge's parents are not merges of that merge: keep the better explanation only. Nor, read
        # loosely (a sparse fit), merges of others: a merge's input sits among the merge's relatives, where
        # trimmed task vectors fit it. An exact combination is itself a merge, and may be merged again
        # (a merge of a merge, common on the hub: profile D's SLERP of a SLERP and a fine-tune).
        if (link.child in used_as_parent and ratio > EXACT) or any(
                p in merged and link.child in _parents_of(links, p) for p in link.parents):
            continue
        links.append(link)
        merged.add(link.child)
        used_as_parent.update(link.parents)
    return links


def _parents_of(links: list[TypedLink], child: int) -> tuple[int, ...]:
    for link in links:
        if link.child == child:
            return link.parents
    return ()


def _common_layers(pl: PairLayers, models: list[int]) -> np.ndarray:
    ok = np.ones(pl.sq.shape[0], dtype=bool)
    for a in models:
        for b in models:
            if a < b:
                ok &= np.isfinite(pl.sq[:, a, b])
    return ok


def can_be_input(pl: PairLayers, c: int, p: int) -> bool:
    """Whether ``p`` may be an input of a merge into ``c``: it holds (nearly) every element ``c`` holds, and
    hardly more (a merge has its inputs' layout)."""
    return bool(pl.shared[c, p] >= 0.95 * pl.own[c] and pl.own[p] <= 1.05 * pl.own[c])


def tree_inputs(pl: PairLayers, labels: np.ndarray, excluded: set[int], c: int) -> list[int]:
    """The models of ``c``'s tree, other than ``c`` and not ``excluded``, that may be inputs of a merge into it
    (:func:`can_be_input`), in model order."""
    return [p for p in range(len(pl.own)) if p != c and p not in excluded and labels[p] == labels[c]
            and can_be_input(pl, c, p)]


def _total(pl: PairLayers, a: int, b: int) -> float:
    ok = np.isfinite(pl.sq[:, a, b])
    return float(pl.sq[ok, a, b].sum() / max(pl.scale2[ok, a, b].sum(), 1e-300))


def _best_subset(pl: PairLayers, c: int, cand: list[int], layerwise: bool = False, named: set[int] | None = None,
                 farther: Callable[[int, int], bool] | None = None
                 ) -> Fit | None:
    """The smallest subset of ``cand`` within :data:`PARSIMONY` of the best fit (a :data:`Fit`), or None.

    With ``named`` (models whose entries the child keeps: :data:`EQUAL_SHARE`), only sparse fits whose base
    is one of them count (:func:`_fits`' wider search).

    ``farther`` (whether the tree's members reach a model through another: :func:`_through`) admits task
    arithmetic with a subtracted task vector (:func:`_negation`) where they reach the child through the
    fit's base.

    With ``layerwise``, only exact fits with coefficients per layer count (:func:`layerwise_residual`):
    Model Stock sets its interpolation ratio per tensor from the angle between the task vectors (Jang et
    al. 2024), SLERP's ``t`` may follow a gradient over layers, and both are exact combinations layer by
    layer. A fine-tune is not: its own update is new in every layer (thousands of values per layer
    against at most four coefficients).
    """
    layers = _common_layers(pl, [c] + cand)
    if not layers.any():
        return None
    sq = pl.sq[layers]
    norm2 = {m: float(np.nansum(pl.scale2[layers, m, m])) for m in [c, *cand]}
    local = np.array([c, *cand])
    sq_local = sq[:, local[:, None], local[None, :]]  # (L, 1 + K, 1 + K): the child first
    total = sq_local.sum(axis=0)
    pos = {m: k for k, m in enumerate(local.tolist())}

    def d(a: int, b: int) -> float:
        return float(total[pos[a], pos[b]])

    sizes = range(2, min(MAX_PARENTS, len(cand)) + 1)
    by_layer_res = _layerwise_all(sq_local, cand, sizes) if layerwise else {}
    per_size: dict[int, SubsetFit] = {}
    beyond: dict[int, SubsetFit] = {}
    # (with ``named``) every fit that competes, by size, with its residual: :func:`_distinct_input`
    rivals: dict[int, list[tuple[float, SubsetFit]]] = {}
    rivals_beyond: dict[int, list[tuple[float, SubsetFit]]] = {}
    for size in sizes:
        for subset in itertools.combinations(cand, size):
            if named is not None and named.isdisjoint(subset):
                continue
            dc = np.array([d(c, p) for p in subset])
            if (dc <= 0).any():
                continue  # an identical copy is a conversion, not a merge
            dp = np.array([[d(p, q) for q in subset] for p in subset])
            a, res = affine_fit(dc, dp)
            ratio = res / float(dc.min())
            by_layer = False
            if layerwise:
                if ratio <= EXACT:
                    continue  # found by the whole-model fit, which comes first
                ratio, by_layer = by_layer_res[subset] / float(dc.min()), True
                if ratio > EXACT:
                    continue
            # A merge's inputs enter with weights in (0, 1]; only a base may have a small or negative
            # weight (task arithmetic with weights summing past 1). Solving a parent out of its merge
            # needs a weight above 1 (1 / its own weight), which tells the two readings apart. The one
            # exception is an exact task arithmetic that subtracts a task vector (_negation).
            negation = _negation(a, dp, dc) if ratio <= EXACT and farther is not None else None
            if negation is not None and farther is not None and not farther(c, subset[negation]):
                negation = None  # the base's side of the exchange (_negation): the child is the tree's junction
            if negation is None and ((a > 1.0 + 1e-3).any() or (a < -1.0).any()):
                continue
            if negation is not None and ((a < -1.0).any() or (np.delete(a, negation) > 1.0 + 1e-3).any()):
                continue
            # Model Stock gives each of its k inputs t / k per tensor, t = k cos / ((k - 1) cos + 1) from the angle
            # between their task vectors (Jang et al. 2024; mergekit ``model_stock.py``), so near-orthogonal
            # fine-tunes enter with weights near 0 (profile C seed 13: 0.04-0.07 on all layers, and the merge is
            # exact per layer with all four parents only: 0.007 against 0.12-0.53 for any three). Per layer a
            # parent must only weigh positively; one that explains nothing loses to the smaller fit (parsimony).
            small = np.flatnonzero(a < (0.0 if by_layer else MIN_WEIGHT))
            if negation is not None:
                small = np.array([k for k in small if k != negation and a[k] >= -MIN_WEIGHT], dtype=int)
            # The merged task vectors add to the base: the child's squared norm exceeds its base's
            # by at least their squared distance (BASE_GROWTH). Read backwards (a base solved out of
            # its merge and the merge's other parents) the norm shrinks; a parent taken for the
            # merge of its descendants grows by less (measured on a fine-tune forest: 0.1-0.7).
            # An exact fit's base that weighs negative (task arithmetic or NuSLERP whose weights sum past 1) needs
            # only one of the two base tests. With the fit exact, the growth only restates whether the inputs'
            # updates grew norms away from the base (|c|^2 - |b|^2 - |c - b|^2 = sum_i w_i (|P_i|^2 - |b|^2 -
            # |P_i - b|^2)), which fine-tunes without weight decay need not do, and additivity whether the inputs'
            # updates are orthogonal, which fine-tunes on related data are not (elsewhere2 set: a Mamba task
            # arithmetic of three fine-tunes, exact at 2e-8, additive through its base (0.06) but 1.2 below its
            # growth; a RoBERTa NuSLERP of two masked-LM fine-tunes, exact at 0.015, growth 1.3 but additivity
            # 0.46). A model failing both is no base (typed D 200: a fourth input at -0.83 did).
            additive = _additivity(dp)  # once per subset: both base tests read it
            grows = {b for b in range(len(subset)) if norm2[c] - norm2[subset[b]] >= BASE_GROWTH * dc[b]}
            bases = {b: e for b, e in _bases(additive).items() if b in grows}
            strict = set(bases)  # (bases passing both tests: a fit whose base passed one is another evidence kind)
            if ratio <= EXACT:
                bases.update({b: additive[b] for b in np.flatnonzero(a < 0.0).tolist() if b in additive
                              and (b in grows or additive[b] <= BASE_ADDITIVITY)})
            if ratio > EXACT:
                bases.update(_entry_bases(pl, c, subset, additive, norm2, bases))
            kept = _keeps_entries(pl, c, subset, bases) if ratio > EXACT else set()
            if ratio > EXACT:  # a sparse merge sits off the tree's paths; a junction on them (_off_path)
                bases = {b: e for b, e in bases.items() if b in kept or _off_path(dc, dp, b) >= OFF_PATH}
            if len(small) > 1 or (len(small) == 1 and int(small[0]) not in bases):
                continue
            if ratio > EXACT and not bases:
                continue
            # A confirmed sparse merge's residual on its own update (the squared distance to the base its
            # entries name: :func:`_own_update_ratio`), at most its ratio on the nearest parent.
            own = _own_update_ratio(res, dc, kept & set(bases)) if ratio > EXACT else math.inf
            if named is not None and (ratio <= EXACT or own > RESIDUAL_MAX_EQUAL or not kept & set(bases)):
                # The wider search is for sparse merges whose entries confirm their base, and only fits
                # that could be one compete: fewer inputs than the merge took leave their trimmed task
                # vectors unexplained, so a subset beyond the cap is not the merge while a larger one may be
                # (profile C: a DELLA merge of four at 0.77, any three of its inputs 0.86-0.92).
                continue
            # Among near-equal fits prefer the base through which the others add up best.
            score = ratio + (min(bases.values()) if ratio > EXACT else 0.0)
            # With a base named by entries, fits beyond the cap on the nearest parent's scale (within it on the
            # merge's own update) compete only where none is within it: there, as above, a subset beyond it
            # leaves inputs out; where none is, the merge has moved past its heaviest input (DELLA), and the
            # own update is the only scale left (:func:`_own_update_ratio`).
            into = beyond if named is not None and ratio > RESIDUAL_MAX_EQUAL else per_size
            one_test = ratio <= EXACT and len(small) == 1 and int(small[0]) not in strict
            entry = SubsetFit(ratio, subset, a, score, bool(kept & set(bases)), by_layer, own, one_test)
            if size not in into or score < into[size].score:
                into[size] = entry
            if named is not None:
                (rivals_beyond if into is beyond else rivals).setdefault(size, []).append((res, entry))
    if not per_size:
        per_size, rivals = beyond, rivals_beyond
    if not per_size:
        return None
    best_ratio = min(v.ratio for v in per_size.values())
    for size in sorted(per_size):
        ratio, subset, a, _, confirmed, by_layer, own, one_test = per_size[size]
        if named is not None:
            # A sparse merge's residual is mostly its trimmed or dropped entries, which no input explains
            # (a fine-tune leaves ~1): what a set of inputs adds is the share it explains, 1 - ratio. Fewer
            # inputs win when they explain within PARSIMONY of what the best explains (profile C: a DELLA
            # merge of four explains 0.32 of its distance, its base and two of its inputs 0.16).
            if 1.0 - ratio >= PARSIMONY * (1.0 - best_ratio):
                chosen = per_size[size]
                wider = _distinct_input(chosen, rivals)
                # More inputs only for a merge the smaller reading already makes: it must hold off the child's
                # own direction (the guard :func:`_fits` applies). The larger fit always leaves less there, and
                # on weight-decayed fine-tunes that share untouched entries (SGD; generalise ``fitw``) it let
                # fine-tunes the smaller fits leave as such through as merges.
                if wider is not chosen:
                    off_ray = off_ray_ratio(pl, c, chosen.parents, by_layer=chosen.by_layer)
                    if not off_ray <= _equal_cap(chosen.ratio, chosen.own):
                        wider = chosen
                return wider.ratio, wider.parents, wider.weights, _equal_cap(wider.ratio, wider.own), wider.by_layer, \
                    wider.one_test
            continue
        if ratio <= best_ratio / PARSIMONY or (ratio <= EXACT_NOISE and _noise_only(pl, c, per_size[size], per_size)):
            cap = EXACT if ratio <= EXACT else RESIDUAL_MAX_EQUAL if confirmed else RESIDUAL_MAX
            return (ratio, subset, a, cap, by_layer, one_test) if ratio <= cap else None
    return None


def _distinct_input(chosen: SubsetFit, rivals: dict[int, list[tuple[float, SubsetFit]]]) -> SubsetFit:
    """The fit of a sparse merge whose base its entries name: ``chosen`` (an entry of :func:`_best_subset`'s
    ``per_size``, chosen by explained share), or a fit with more parents where its added parent gains what no
    other relative could (``rivals``: every fit that competes, by size, with its residual).

    A sparse merge's residual is mostly the entries it trimmed or dropped, which no input explains, so an input
    whose own update is small beside another's (a fine-tune merged with a merged LoRA, whose low-rank update is
    many times a few fine-tuning steps: profile C, issue 11) lowers it little, and fewer inputs explain within
    :data:`PARSIMONY` of what the merge's inputs explain (13 merges of ten profile C sets read with one input
    fewer). The share explained cannot tell that input from a relative that is not one; what can is how it
    compares with the relatives that could take its place: fitted with the other inputs, a true input lowers the
    residual by its own update (times its weight and the share kept), while a relative that is not an input only
    picks up the part of the dropped entries it happens to share, about what any other relative picks up. So the
    best fit with one more parent wins where its gain over the chosen one is at least 1 / :data:`PARSIMONY` times
    the gain of the best fit of its size that holds none of its added parents; a fit with no such rival wins
    where it gains at all. Each fit has passed :func:`_best_subset`'s tests (weights in range, a base named by
    entries): a relative that is not an input mostly fails them, taking a weight under :data:`MIN_WEIGHT` or
    solving another parent out.
    """
    residual = {id(entry): r for fits in rivals.values() for r, entry in fits}
    while len(chosen.parents) + 1 in rivals:
        fits = rivals[len(chosen.parents) + 1]
        r_big, big = min(fits, key=lambda x: x[0])
        added = set(big.parents) - set(chosen.parents)
        r_small = residual[id(chosen)]
        rival = min((r for r, entry in fits if added.isdisjoint(entry.parents)), default=r_small)
        gain = r_small - r_big
        if not (gain > 0 and gain * PARSIMONY >= r_small - rival):
            break
        chosen = big
    return chosen


def _own_update_ratio(res: float, dc: np.ndarray, kept: set[int]) -> float:
    """A confirmed sparse merge's residual ``res`` as a share of its own update: its squared distance to the
    base its entries name (``kept``: positions in ``dc``, the child's squared distances to the subset), the
    farthest of them where more than one; ``inf`` where none.

    Drop-and-rescale merges (DARE, Yu et al. 2023; DELLA, Deep et al. 2024) keep each task-vector entry with
    probability p and divide it by p: what no combination of the inputs explains is the dropped part of
    the merge's own update, (1 - p) of it for a linear combination (DELLA-linear) and up to about 1.5 x
    that where DELLA's sign election and normalisation divide a lone survivor by its own weight (simulated:
    1.2-1.5 x), and the base's entries survive where every input dropped theirs, (1 - p)^k of them for k
    inputs (profile C, issue 11: the base shares of the diagnosis sets' six DELLA merges give their 1 - p to
    within 0.011, and their residuals are 0.8-1.1 x that of their own update). A fine-tune's update is new:
    it leaves ~1 of it where the named base is its parent. Measured on the nearest parent instead, the same
    residuals read 0.68-0.90: the rescaling carries the merge away from its base, towards and past its
    heaviest input. Only a fallback (:func:`_best_subset`, :func:`_equal_cap`): the guards were set on the
    nearest parent's scale, and on this one they lose fine-tunes that share entries with their tree (SGD
    leaves entries without gradient untouched): a fine-tune two steps below the named base leaves about half
    of its distance to it, and the off-ray guard against weight-decayed fine-tunes, read on this scale, let
    three SGD + weight-decay fine-tunes of the generalise collection ``fitw`` through as merges at 0.99.
    """
    if not kept:
        return math.inf
    own = max(float(dc[b]) for b in kept)
    return res / own if own > 0 else math.inf


def _equal_cap(ratio: float, own: float) -> float:
    """The cap a confirmed sparse merge's fit (residual ``ratio`` of its nearest parent's squared distance,
    ``own`` of its own update) is held to in :func:`_fits`' off-ray test: :data:`RESIDUAL_MAX_EQUAL`, or where
    the fit is beyond it (the fallback of :func:`_best_subset`) the same cap on the own update, in the units
    of ``ratio``."""
    if ratio <= RESIDUAL_MAX_EQUAL or not 0 < own < math.inf:
        return RESIDUAL_MAX_EQUAL
    return RESIDUAL_MAX_EQUAL * ratio / own


def _noise_only(pl: PairLayers, c: int, fit: SubsetFit, per_size: dict[int, SubsetFit]) -> bool:
    """Whether the best fit, where it has more parents than ``fit`` (an entry of :func:`_best_subset`'s
    ``per_size``, under :data:`EXACT_NOISE`), gains only along the child's own direction.

    SLERP, Multi-SLERP and Karcher means renormalise their result onto an arc (Shoemake 1985; Karcher
    1977): their chord error lies along the child's weights, which any further relative of a different
    norm can partly explain, so a smaller set of parents under :data:`EXACT_NOISE` wins. A linear merge
    whose smallest input was left out leaves that input's update instead, off the child's direction
    (profile C: a linear merge of four read as three of them at 6.9e-3, off the ray 7.0e-3; the four
    6e-4 and 6e-4): there the fit with more parents must win. Compared off the ray
    (:func:`off_ray_ratio`) the smaller fit must be within :data:`PARSIMONY` of the best.
    """
    best = min(per_size.values(), key=lambda v: v.ratio)
    if len(best.parents) <= len(fit.parents):
        return True
    off_best = off_ray_ratio(pl, c, best.parents, by_layer=best.by_layer)
    return off_ray_ratio(pl, c, fit.parents, by_layer=fit.by_layer) * PARSIMONY <= off_best


def _affine_residuals(dc: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """:func:`affine_fit`'s residual for a stack of layers: ``dc`` (L, K), ``dp`` (L, K, K) -> (L,).

    A layer where the child equals one of the models (``dc`` 0: a layer a merge, or bf16 rounding, left
    as it was) is explained exactly and adds 0; a singular system (two parents alike on a layer) falls
    back to the least-squares solution."""
    n_layers, k = dc.shape
    out = np.zeros(n_layers)
    live = np.flatnonzero(dc.min(axis=1) > 0) if k else np.zeros(0, dtype=int)
    if not len(live):
        return out
    kkt = np.zeros((len(live), k + 1, k + 1))
    kkt[:, :k, :k] = -dp[live]
    kkt[:, :k, k] = -1.0
    kkt[:, k, :k] = 1.0
    rhs = np.concatenate([-dc[live], np.ones((len(live), 1))], axis=1)
    try:
        sol = np.linalg.solve(kkt, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a layer two parents hold alike: the least-squares solution, batched
        sol = (np.linalg.pinv(kkt) @ rhs[..., None])[..., 0]
    a = sol[:, :k]
    res = np.einsum("lk,lk->l", a, dc[live]) - 0.5 * np.einsum("lk,lkj,lj->l", a, dp[live], a)
    out[live] = np.maximum(res, 0.0)
    return out


def _layerwise_all(sq_local: np.ndarray, cand: list[int], sizes: range) -> dict[tuple[int, ...], float]:
    """:func:`layerwise_residual` of the child (position 0 of ``sq_local``) on every subset of ``cand`` of the
    given sizes, one batched solve per size."""
    out: dict[tuple[int, ...], float] = {}
    n_layers = sq_local.shape[0]
    for size in sizes:
        subsets = list(itertools.combinations(range(1, len(cand) + 1), size))
        if not subsets:
            continue
        idx = np.array(subsets)  # (S, K) positions in sq_local
        dc = sq_local[:, 0, idx].transpose(1, 0, 2)  # (S, L, K)
        dp = sq_local[:, idx[:, :, None], idx[:, None, :]].transpose(1, 0, 2, 3)  # (S, L, K, K)
        res = _affine_residuals(dc.reshape(-1, size), dp.reshape(-1, size, size)).reshape(len(subsets), n_layers)
        for sub, r in zip(subsets, res.sum(axis=1)):
            out[tuple(cand[k - 1] for k in sub)] = float(r)
    return out


def layerwise_residual(sq: np.ndarray, c: int, subset: tuple[int, ...]) -> float:
    """Sum over layers of the residual of ``c`` on ``subset`` with coefficients fitted per layer (``sq``:
    the per-layer squared distances, (L, N, N), over the layers all of them hold)."""
    idx = np.array(subset)
    return float(_affine_residuals(sq[:, c, idx], sq[:, idx[:, None], idx[None, :]]).sum())


def off_ray_ratio(pl: PairLayers, c: int, parents: tuple[int, ...], by_layer: bool = False) -> float:
    """The merge fit's residual ratio once each layer's component along the child's own weights is
    projected out (of the child and of every parent alike), from the pass's statistics only.

    A merge is a combination of its parents in every direction: a linear projection keeps C = sum a_k P_k
    (and SLERP, a per-layer combination of two parents, stays one of them; a t varying by layer
    leaves about the residual it leaves on all layers), so its residual ratio off
    that direction stays small (the typed zoo's seeds 0, 1, 3: linear and SLERP merges <= 9e-8, a
    SLERP's chord error lying along the child; TIES / DARE 0.26-0.65 against 0.25-0.65 on all layers,
    each under its cap). A fine-tune trained with L2 weight decay is a shrunk copy of its
    parent plus a small update, W_c = s W_p + u: a tree of them lies near one ray, each model a
    rescaling of the others, so one is a near-exact combination of its relatives *along the ray*, while
    its own update u, orthogonal to it, is explained by nothing (issue 11: two SGD + weight-decay
    fine-tunes of the generalise collection ``fitw`` read as exact merges at residual < 0.02, off the ray
    0.77 and 0.87). Removing the ray leaves exactly that update, so the fit must hold there at the
    tolerance it was accepted at (:func:`_fits`: :data:`EXACT` for an exact merge, the sparse cap
    otherwise). The threshold is the detector's own, not fitted: a merge that holds on the ray only is
    a rescaling, which a merge and a weight-decayed fine-tune both are.

    Per layer the Gram matrix of (C, P_1..P_K) follows from the squared norms and squared distances
    (<a, b> = (|a|^2 + |b|^2 - |a - b|^2) / 2), taken in differences from C so that no term of the size of
    |C|^2 cancels; projecting out the unit vector along C takes each difference's component along it
    away, and the projected squared distances, summed over the layers every model holds, enter
    :func:`affine_fit`. Returns NaN where no layer counts.
    """
    models = [c, *parents]
    layers = _common_layers(pl, models)
    if not layers.any():
        return math.nan
    sq_perp = _off_ray_sq(pl, models, layers)
    d = sq_perp.sum(axis=0)
    dc = d[0, 1:]
    if not (dc > 0).all():
        return math.nan
    if by_layer:  # coefficients per layer (:func:`_best_subset`), on the projected per-layer distances
        return float(_affine_residuals(sq_perp[:, 0, 1:], sq_perp[:, 1:, 1:]).sum()) / float(dc.min())
    _, res = affine_fit(dc, d[1:, 1:])
    return res / float(dc.min())


def _off_ray_sq(pl: PairLayers, models: list[int], layers: np.ndarray) -> np.ndarray:
    """Per-layer squared distances (L', M, M) between ``models`` (the child first) once each layer's component
    along the child's own weights is projected out of every one of them (:func:`off_ray_ratio`), over ``layers``."""
    idx = np.array(models)
    return _off_ray_block(pl, idx, idx, layers)


def _off_ray_block(pl: PairLayers, rows: np.ndarray, cols: np.ndarray, layers: np.ndarray) -> np.ndarray:
    """:func:`_off_ray_sq` between ``rows`` and ``cols`` (model indices, each led by the child), (L', R, S).

    Per layer each model's component along the unit vector of the child C is, taken from C,
    r_x = <x - C, C> / |C| = (|x|^2 - |C|^2 - d(C, x)) / (2 |C|) (0 for C itself): differences from C, so that
    nothing of the size of |C|^2 cancels. Projecting that direction out leaves d(x, y) - (r_x - r_y)^2.
    """
    c = int(rows[0])
    sq = pl.sq[:, rows[:, None], cols[None, :]][layers]  # (L', R, S)
    n2_c = pl.scale2[layers, c, c][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        def radial(m: np.ndarray) -> np.ndarray:
            n2 = pl.scale2[:, m, m][layers]
            return np.where(n2_c > 0, (n2 - n2_c - pl.sq[:, c, m][layers]) / (2 * np.sqrt(n2_c)), 0.0)
        r_rows, r_cols = radial(rows), radial(cols)
    r_rows[:, rows == c] = 0.0
    r_cols[:, cols == c] = 0.0
    return np.maximum(sq - (r_rows[:, :, None] - r_cols[:, None, :]) ** 2, 0.0)


def _keeps_entries(pl: PairLayers, c: int, subset: tuple[int, ...], bases: dict[int, float]) -> set[int]:
    """The candidate bases (positions in ``subset``) whose entries ``c`` keeps as a sparse merge does: at
    least :data:`EQUAL_SHARE` of them exactly. (TIES also keeps an input's value where it alone survived
    the trim; DARE rescales what it keeps, so only the base's values stay.)"""
    return {b for b in bases if _kept_by(pl, c, subset[b])}


def _kept_by(pl: PairLayers, c: int, p: int) -> bool:
    """Whether ``c`` keeps enough of ``p``'s entries exactly to name it a sparse merge's base: the shared
    bar :data:`EQUAL_SHARE` (on shares already scaled to the tree's chance level, :func:`_entries_above_chance`)."""
    return bool(pl.equal_share[c, p] >= EQUAL_SHARE)


def _entry_bases(pl: PairLayers, c: int, subset: tuple[int, ...], additive: dict[int, float],
                 norm2: dict[int, float], bases: dict[int, float]) -> dict[int, float]:
    """Parents (positions in ``subset``, three or more) that are a sparse merge's base by its entries alone:
    ``c`` keeps at least :data:`EQUAL_SHARE` of their values exactly and its squared norm exceeds theirs.

    The additivity test (:func:`_bases`) and the norm growth (:data:`BASE_GROWTH`) find a base among
    fine-tunes from distances only, which holds when the other inputs' updates are orthogonal to each
    other through the base. Merges built elsewhere take inputs that share a subtree (a fine-tune and its
    own child or merged LoRA, both below one model): their distances then do not add up through the base
    (profile C, issue 11: Breadcrumbs, DELLA, SCE merges at additivity errors 0.32-1.5), and DELLA's and
    Breadcrumbs' trimmed, rescaled task vectors grow the norm by less than their squared distance
    (0.5-0.9). The entries the merge keeps name its base directly (TIES, DARE, DELLA, Breadcrumbs and
    SCE all leave an entry at the base's value where every input's was trimmed or dropped; Yadav et al.
    2023, Yu et al. 2023, Deep et al. 2024, Davari and Belilovsky 2023), which a fine-tune never does;
    the norm must still grow (read backwards, a base solved out of its merge and the merge's other
    inputs, it shrinks). Returns the base's score for :func:`_best_subset`: its additivity error
    (``additive``: :func:`_additivity` of the subset), at most :data:`BASE_ADDITIVITY`; ``norm2``: squared
    norms of ``c`` and of the subset's models.
    """
    named = [b for b in range(len(subset)) if b not in bases and _kept_by(pl, c, subset[b])
             and norm2[c] > norm2[subset[b]]] if len(subset) >= 3 else []
    return {b: min(additive[b], BASE_ADDITIVITY) for b in named}


def _off_path(dc: np.ndarray, dp: np.ndarray, base: int) -> float:
    """How far the merge sits off the path from its base to its other parents (least over them), as a
    share of the base's squared distance to each: d(base, C) + d(C, P_k) - d(base, P_k).

    A merge of task vectors on a base carries part of the *other* inputs' updates, which are not on
    the way from the base to P_k: it sits off that path by about twice their squared size. A tree's
    junction read backwards as the "merge" of its descendants (a root between its subtrees, one of
    them taken as the base: issue 12's fine-tune trees, whose norms shrink from parent to child and
    so pass :data:`BASE_GROWTH`) lies on the path from that base to the parents in its other subtrees
    (updates add up orthogonally along the tree: ``mother_core/recovery/additive.py``).
    """
    others = [k for k in range(len(dc)) if k != base]
    return min((dc[base] + dc[k] - dp[base, k]) / max(dp[base, k], 1e-300) for k in others)


def _through(pl: PairLayers, c: int, b: int, tree: list[int]) -> bool:
    """Whether the members of ``tree`` reach ``c`` through ``b`` (a negation's child and its base,
    :func:`_negation`) rather than ``b`` through ``c``.

    Each member h reads s(h) = (d(h, c) - d(h, b)) / d(b, c) in relative squared distances. A member that shares
    none of the merge's task vectors is +1 exactly (its update, the base's and the merge's add up
    orthogonally: ``mother_core/recovery/additive.py``), and -1 where the roles are exchanged; the inputs'
    own relatives land anywhere (nearer the child by twice the share of the added input's update they hold,
    farther by that of the subtracted one). So the members within :data:`BASE_ADDITIVITY` of +1 are counted
    against those within it of -1; a tie (none either way) is read on the median member's side.
    """
    dbc = _total(pl, b, c)
    if not tree or not dbc > 0:
        return False
    s = np.array([(_total(pl, h, c) - _total(pl, h, b)) / dbc for h in tree])
    votes = int((np.abs(s - 1.0) <= BASE_ADDITIVITY).sum()) - int((np.abs(s + 1.0) <= BASE_ADDITIVITY).sum())
    return votes > 0 if votes else float(np.median(s)) > 0.0


def _negation(a: np.ndarray, dp: np.ndarray, dc: np.ndarray | None = None) -> int | None:
    """The base of a task arithmetic that subtracts a task vector, or None: three or more parents, one input
    at a clearly negative weight (below ``-MIN_WEIGHT``), and a parent, not negated, through which the others
    differ (:func:`_additivity` within :data:`BASE_ADDITIVITY`, or as below), whose coefficient (1 minus the inputs'
    weights, which may pass 1) takes up the rest.

    Task arithmetic (Ilharco et al. 2023) subtracts a task vector to remove a behaviour ("forgetting by
    negation"): base + l_1 (M_1 - base) - l_2 (M_2 - base), exact like any task arithmetic. Read backwards,
    a parent solved out of a merge also takes negative weights, but on every other parent (-w_j / w_k; the
    base's too unless the weights summed past 1), so a negation must also add a task vector; or a parent
    takes a weight below -1 (1 / its own weight); a weight near 0 (a superfluous parent) is not a negation.
    A pure subtraction (base - l (M - base), two parents) is not read: it is the interpolation that puts the
    base between M and the merge, the other way round. One exchange stays
    exact: the base read as a negation of the merge (the four models lie in one plane, and the base's
    coefficient a becomes 1 / a). The merge's update, new to every other model, adds to its distance to
    the rest of its tree, while its base sits where the tree's other updates start from (the argument
    that orients a merged LoRA against its parent, :mod:`.detect`): a negation is read only where the
    tree's members reach the child through its base (:func:`_through`, :func:`_best_subset`'s ``farther``).
    Not on their mean distance: a member that shares none of the inputs' updates is farther from the child
    by exactly d(base, child), but the added input's own relatives (its ancestors below the base, their
    merges, adapters and copies) lie nearer the child, and the subtracted input's farther, by amounts that
    grow with those updates; a well-populated added lineage carried the mean to the child's side (profile D
    seeds 206 / 208: a Granite and a Gemma 2 negation lost, the Granite's base read as the merge), and the
    median member too where the lineage holds half the tree (seed 208's Gemma 2).

    The base's others differ through it up to the drift their updates share: few-step fine-tunes of one
    model on related data start along the same gradient signs (Adam's first steps are lr times the sign), and
    a shared share rho of two equal updates leaves an additivity error rho / (1 - rho): 0.29-0.34 for three
    of profile D's 20 diagnosis negations (two OLMo2, one Qwen3). Beyond :data:`BASE_ADDITIVITY`, up to twice it, a base
    still passes where its others fall short of adding up through it (a shared drift brings them nearer each
    other, never farther: :func:`_drifted`; the three: -0.29 to -0.34) and add up worse through the child in
    its place: an exchanged reading (the base read as the merge, or the added input solved out of it with
    the child for its base) puts the child there, where the subtracted weight l alone leaves an error of at
    least 2 l (1 + l) in the second (0.5 at l = 0.21; the diagnosis sets' subtracted weights are 0.31-0.70).
    Without the sign, a SLERP input solved out of the SLERP of it and a third model, with its own other
    input added back, passed at +0.39 (seed 204)."""
    k = len(a)
    negated = [i for i in range(k) if a[i] < -MIN_WEIGHT]
    # (the base contributes: a parent at weight ~0 is superfluous, not a base)
    if k < 3 or not negated:
        return None
    additive = _additivity(dp)
    # (the child in each parent's place: how well the others differ through it instead)
    through_child = _additivity_through(dc, dp) if dc is not None else {}
    bases = [b for b, e in additive.items() if b not in negated and a[b] >= MIN_WEIGHT
             and (e <= BASE_ADDITIVITY or (e <= 2.0 * BASE_ADDITIVITY and _drifted(dp, b)
                                           and e < through_child.get(b, 0.0)))]
    if not bases:
        return None
    base = max(bases, key=lambda b: float(a[b]))
    # It adds a task vector too: a parent solved out of a merge takes negative weights on all its other
    # parents (-w_j / w_k), the base included unless the weights summed past 1.
    if not any(a[i] >= MIN_WEIGHT for i in range(k) if i != base and i not in negated):
        return None
    return base


def _additivity_through(dc: np.ndarray, dp: np.ndarray) -> dict[int, float]:
    """For each parent (of three or more), the additivity error of the other parents through the child
    in its place: the largest |d(i, j) - d(i, c) - d(c, j)| / d(i, j) over pairs of the others
    (:func:`_additivity` with the child for the base)."""
    return {b: _worst_detour(dp, b, dc) for b in range(len(dp))} if len(dp) >= 3 else {}


def _worst_detour(dp: np.ndarray, b: int, to_mid: np.ndarray) -> float:
    """The largest |d(i, j) - m(i) - m(j)| / d(i, j) over pairs of parents other than ``b``, where ``m`` holds
    each parent's squared distance to the model they should reach each other through (``to_mid``)."""
    others = [i for i in range(len(dp)) if i != b]
    return float(max(abs(dp[i, j] - to_mid[i] - to_mid[j]) / max(dp[i, j], 1e-300)
                     for x, i in enumerate(others) for j in others[x + 1:]))


def _drifted(dp: np.ndarray, b: int) -> bool:
    """Whether the parents other than ``b`` all lie nearer each other than their squared distances through ``b``
    add up to: d(i, j) < d(i, b) + d(b, j), the shortfall a drift their updates share leaves (:func:`_negation`)."""
    others = [i for i in range(len(dp)) if i != b]
    return all(dp[i, j] < dp[i, b] + dp[b, j] for x, i in enumerate(others) for j in others[x + 1:])


def _bases(additive: dict[int, float]) -> dict[int, float]:
    """Parents (of three or more; ``additive``: :func:`_additivity`) that are the base of the others, with
    their additivity error: the
    others' squared distances add up through the base (fine-tuning updates are nearly orthogonal),
    as in a TIES / DARE merge of task vectors on a base.

    A parent model is close to the mean of its own fine-tuned children (their updates average out,
    leaving 1/k of their size), so a residual that is not near zero only counts as a sparse merge with
    a base: among siblings no member is such a base.
    """
    return {b: e for b, e in additive.items() if e <= BASE_ADDITIVITY}


def _additivity(dp: np.ndarray) -> dict[int, float]:
    """Each parent's additivity error as the base of the others (three or more parents): the largest
    |d(i, j) - d(i, b) - d(b, j)| / d(i, j) over pairs of the others."""
    return {b: _worst_detour(dp, b, dp[b]) for b in range(len(dp))} if len(dp) >= 3 else {}


def _merge_link(stats: WeightStatistics, pl: PairLayers, c: int, parents: tuple[int, ...], coeffs: np.ndarray,
                ratio: float, off_ray: float, sphere: bool = False,
                reverse: tuple[int, float] | None = None, by_layer: bool = False, one_test: bool = False) -> TypedLink:
    """The typed link of a merge fit; ``sphere``: found off the ray (:func:`_on_sphere`), where ``ratio`` is the
    off-ray residual and the evidence gives the residual on all layers beside it; ``reverse``: the reading
    the other way round (:func:`_reversed`), which pulls a confirmed sparse merge's confidence toward a
    coin flip where it fits about as well (:func:`reversal_factor`); ``one_test``: an exact fit whose
    negative-weight base passed one base test of two (:data:`ONE_BASE_TEST`), said in the evidence, which
    gives it its own calibration kind."""
    order = np.argsort(-coeffs)
    parents = tuple(parents[k] for k in order)
    coeffs = coeffs[order]
    per_layer = _per_layer(pl, c, parents)
    spread = float(np.nanstd(per_layer[:, 0])) if len(per_layer) else 0.0
    shown = ratio
    if sphere:
        method = f"slerp t={coeffs[1]:.2f}" if len(parents) == 2 else "multi-slerp / karcher"
        shown = _whole_ratio(pl, c, parents)
    elif ratio > EXACT:
        method = "ties/dare (trimmed task vectors)" if (coeffs < MIN_WEIGHT).any() or len(parents) > 2 else "ties/dare"
    elif (coeffs < MIN_WEIGHT).any() and not by_layer:
        method = "task arithmetic"
    elif by_layer and spread <= 0.02:  # exact per layer only, with inputs of small weight (Model Stock)
        method = "slerp (t by layer)" if len(parents) == 2 else "weights by layer (model stock)"
    elif len(parents) == 2 and spread > 0.02:
        method = "slerp (t by layer)"
    elif spread > 0.02:
        method = "weights by layer (model stock)"
    elif len(parents) == 2 and ratio > 1e-7:
        method = f"slerp t={coeffs[1]:.2f}"
    else:
        method = "linear"
    detail = f"{method} " + "/".join(f"{w:.2f}" for w in coeffs)
    counted = pl.equal_counted if pl.equal_counted is not None else pl.equal_share
    kept = [(p, float(counted[c, p])) for p in parents if _kept_by(pl, c, p)]
    confirmed = ratio > EXACT and bool(kept)
    names = ", ".join(stats.models[p].id for p in parents)
    entries = ("; " + " and ".join(f"{v:.0%} {EQUAL_ENTRIES} {stats.models[p].id}'s exactly" for p, v in kept)
               + " (median over layers: trimmed or dropped task-vector entries keep the inputs' values; a "
               "fine-tune changes every entry)") if confirmed else ""
    swap = exchangeable_parent(coeffs) if ratio <= EXACT and not sphere and not by_layer else None
    if swap is not None and not one_test:
        entries += (f"; solved for {stats.models[parents[swap]].id} instead (weight {coeffs[swap]:.2f}), the same "
                    f"combination {EXCHANGEABLE} (weights "
                    + ", ".join(f"{w:.2f}" for w in _exchanged(coeffs, swap))
                    + "): the fit does not tell which of the two is the merge: "
                    + counted_note(kind_of(Relation.MERGE.value, detail, EXCHANGEABLE)))
    if one_test:
        # The relaxed base test (benchmarks/elsewhere2_set.py's Mamba task arithmetic and RoBERTa NuSLERP) is its own
        # kind (:data:`.calibration.ONE_TEST_KIND`): on the lead's held-out sets it added a wrong merge parent at the
        # strict exact merges' 0.986 (benchmarks/RESULTS.md, "Merge parents' confidence per evidence kind").
        base = int(np.argmin(coeffs))
        entries += (f"; its base {stats.models[parents[base]].id} (weight {coeffs[base]:.2f}) {ONE_BASE_TEST} (norm "
                    "growth, additivity of the others through it): "
                    + counted_note(kind_of(Relation.MERGE.value, detail, ONE_BASE_TEST)))
    conf = merge_confidence(kind_of(Relation.MERGE.value, detail, entries), ratio, confirmed)
    backwards = ""
    if confirmed and reverse is not None:
        # The residuals do not tell the two readings apart; nor, always, does the norm: fine-tunes trained
        # with weight decay shrink, and so does their merge, whose base then reads as the merge grown by
        # more than BASE_GROWTH (a real Breadcrumbs-TIES family: 1.23; tests/test_merge_rounding.py), as
        # true DELLA merges grow by 1.2-1.6 (profile C).
        keep = reversal_factor(ratio, reverse[1])
        conf = 0.5 + (conf - 0.5) * keep
        if keep < 1.0:
            backwards = (f"; read the other way round, {stats.models[reverse[0]].id} as a sparse merge on this "
                         f"model, it leaves {reverse[1]:.2g}: the entries tell the pair, not its "
                         "direction")
    return TypedLink(c, parents, Relation.MERGE, detail, conf, tuple(float(w) for w in coeffs), evidence=(
        f"explained layer by layer as a combination of {names} (weights "
        + ", ".join(f"{w:.2f}" for w in coeffs) + f"); residual {shown:.2g} of its squared distance to the "
        "nearest parent (a fine-tune leaves ~1); " + f"{off_ray:.2g} off its own direction"
        + (" (renormalised onto the sphere: the rest lies along the child, outside the chord)" if sphere else "")
        + entries + backwards))


def _exchanged(coeffs: np.ndarray, k: int) -> np.ndarray:
    """The weights of ``c = sum_i coeffs_i p_i`` solved for parent ``k``: ``p_k = (1 / a_k) c - sum_(i != k)
    (a_i / a_k) p_i``, the child's weight first, then the other parents' in their order."""
    a = np.asarray(coeffs, dtype=float)
    return np.concatenate([[1.0 / a[k]], -np.delete(a, k) / a[k]])


def exchangeable_parent(coeffs: np.ndarray) -> int | None:
    """The parent (index into ``coeffs``) for which an exact merge's combination, solved for it, is itself a merge
    of the child and the other parents whose weights pass the merge test of :func:`_best_subset` without its
    negation allowance (every weight in [-1, 1], at most one under :data:`MIN_WEIGHT`, a base), or None.

    An exact fit is an equation among models: it holds as well read for any of them. Read for a parent, the child's
    weight is 1 / a_k, so only a parent weighing one or more (a task arithmetic's base whose inputs' weights sum
    past what they take from it, or one that subtracts a task vector: base + l_1 (M_1 - base) - l_2 (M_2 - base)
    has base weight 1 - l_1 + l_2) can be solved for as a merge; a linear, SLERP or plain task arithmetic merge
    (weights in (0, 1), its base's 1 - sum l <= 1) cannot. Where one can, the reading needs the negation allowance
    (a weight past one) while the same equation read for that parent is a plain merge: the fit itself does not say
    which model is the merge, only the tests that orient it (norm growth, additivity, the tree's reach through the
    base: :func:`_negation`) do, and on the fitting typed sets they read one such merge of sixteen backwards (typed D
    222; :data:`.calibration.COUNTED`). The plain side of such a pair (weights under one) is not flagged here: read
    for any parent it needs a weight past one; where its base passed one base test only, it is its own kind
    (:data:`ONE_BASE_TEST`)."""
    a = np.asarray(coeffs, dtype=float)
    for k in np.argsort(-np.abs(a)).tolist():
        if abs(a[k]) < 1.0 - 1e-3:
            break
        if _plain_weights(_exchanged(a, k)):
            return int(k)
    return None


def _plain_weights(w: np.ndarray) -> bool:
    """Whether merge weights pass the merge test of :func:`_best_subset` without its negation allowance: every
    weight in [-1, 1] (past one by rounding only), at most one under :data:`MIN_WEIGHT` (a base)."""
    return bool((w <= 1.0 + 1e-3).all() and (w >= -1.0).all() and int((w < MIN_WEIGHT).sum()) <= 1)


def merge_confidence(kind: str, ratio: float, confirmed: bool = False) -> float:
    """Confidence of a merge with residual ``ratio`` (a share of its squared distance to the nearest
    parent): the calibrated rate of its kind (:mod:`.calibration`) within the residuals that rate was
    measured on; beyond :data:`CALIBRATED_RESIDUAL` the detector's own, which falls with the residual
    from 0.95 to 0.55 at :data:`RESIDUAL_MAX`, or at :data:`RESIDUAL_MAX_EQUAL` for a sparse merge whose
    entries confirm it (``confirmed``: :data:`EQUAL_SHARE`) (issue 12: a set unlike anything the
    calibration saw must not read 0.99)."""
    cap = RESIDUAL_MAX_EQUAL if confirmed else RESIDUAL_MAX
    raw = 0.97 if ratio <= EXACT else float(0.55 + 0.4 * (1.0 - min(ratio, cap) / cap))
    return raw if ratio > CALIBRATED_RESIDUAL else confidence(kind, raw)


def _whole_ratio(pl: PairLayers, c: int, parents: tuple[int, ...]) -> float:
    """The affine fit's residual ratio of ``c`` on ``parents``, one set of coefficients over the layers all hold."""
    return _whole_fit(pl, c, parents, _common_layers(pl, [c, *parents]))[1]


def _whole_fit(pl: PairLayers, c: int, parents: tuple[int, ...], layers: np.ndarray) -> tuple[np.ndarray, float]:
    """The affine coefficients of ``c`` on ``parents``, one set over ``layers``, and the residual ratio (on the
    nearest parent's squared distance; NaN where a parent equals ``c``)."""
    idx = np.array(parents)
    total = pl.sq[layers].sum(axis=0)
    dc = total[c, idx]
    coeffs, res = affine_fit(dc, total[idx[:, None], idx[None, :]])
    return coeffs, res / float(dc.min()) if dc.min() > 0 else math.nan


def _per_layer(pl: PairLayers, c: int, parents: tuple[int, ...]) -> np.ndarray:
    """Per-layer coefficients (L', K) of the chosen parents, over layers all of them share."""
    layers = np.flatnonzero(_common_layers(pl, [c, *parents]))
    rows = []
    for slot in layers:
        sq = pl.sq[slot]
        dc = np.array([sq[c, p] for p in parents])
        if (dc <= 0).all() or not np.isfinite(dc).all():
            continue
        dp = np.array([[sq[p, q] for q in parents] for p in parents])
        a, _ = affine_fit(dc, dp)
        if np.isfinite(a).all() and math.isfinite(float(a.sum())):
            rows.append(a)
    return np.array(rows) if rows else np.zeros((0, len(parents)))


def contest_parents(stats: WeightStatistics, pl: PairLayers, labels: np.ndarray, excluded: set[int], link: TypedLink,
                    links: list[TypedLink], sphere: bool = False, by_layer: bool = False,
                    swap: bool = True) -> TypedLink:
    """``link`` (a merge) with each parent's own confidence: the merge's, or for a parent another relative can
    take the place of, at most the calibrated rate of such contested parents (:data:`.calibration.CONTESTED`).
    Where the fit is exact with one set of coefficients and the contest names a better reading, that reading
    replaces the fit's (``swap``; :func:`_swapped`).

    A merge's confidence says that the child is a merge; the fit chose its parents among the child's relatives,
    and one of them may stand in for a relative that is the true input: an input's own fine-tune or parent,
    which carries most of its update (profile C: a Breadcrumbs merge read with the parent of one input in that
    input's place), a merge of two inputs in place of both (profile D: a linear merge of a merge and a third
    model read as the merge's own inputs), or, for a negation, the subtracted input's parent. Each parent is
    replaced in turn by every other relative of the tree that could be a merge input (not a copy, quantized
    model or adapter, not a merge made from the child), and the fit is redone the way it was found (off the
    child's own direction for a SLERP-family fit, coefficients per layer where it had them), over the layers the
    child, its parents and that relative all hold:

    - a parent is contested where a relative in its place leaves a *smaller* residual: the fit is then not the
      best reading by its own measure (its tests or its candidates kept the relative out). Not where it leaves
      a little more: a sparse merge's residual is mostly the entries it trimmed or dropped, which no input
      explains, so a relative that is not an input leaves about as much in an input's place
      (:func:`_distinct_input`), and a Model Stock input (t / k per tensor, near 0) is replaced by its own
      fine-tune or parent at 1.05-1.6 times the residual (profile C; within 1 / :data:`PARSIMONY` that contested
      31 right parents of the diagnosis sets);
    - a sparse merge's base (a parent whose entries the child keeps, :func:`_kept_by`) may weigh anything, down to
      0 (TIES' weights summing to 1), so the residual cannot tell it from its own relatives; its entries can: it
      is contested where the relative sharing most entries with the child shares more than it on more tensors
      than the other way round (its merged LoRA holds the base's values wherever the low-rank update rounds away
      in bf16, and is read as the base on a tie of the median share);
    - a found merge of some of the parents lies in their span and ties the first test by construction; it
      contests them only where, in their place, it leaves at most :data:`SAME_READING` more with fewer parents.

    ``links``: every merge found (a merge made from the child is no rival); ``excluded``: copies, quantized
    models and adapters; ``sphere``, ``by_layer``: how the fit was made (:func:`_fits`).
    """
    from mother_core.relations.calibration import contested_confidence

    c, parents = link.child, link.parents
    made_from_c = {x.child for x in links if c in x.parents}
    rivals = [r for r in range(stats.n_models) if r != c and r not in parents and r not in excluded
              and r not in made_from_c and labels[r] == labels[c] and pl.shared[c, r] >= 0.95 * pl.own[c]
              and pl.own[r] <= 1.05 * pl.own[c]]
    # A rival that is itself a merge of some of the parents lies in their span: in the place of one of them it
    # leaves the same residual by construction (up to its storage rounding). It contests those parents only
    # where the reading with it in the place of all of them, with fewer parents, is the same reading
    # (:data:`SAME_READING`): the child holds its inputs in its own proportion, as a merge of it does.
    of_parents = {x.child: x.parents for x in links if x.child in rivals and set(x.parents) <= set(parents)}
    sparse = link.detail.startswith("ties/dare")
    notes = ["" for _ in parents]
    # What each contested parent's better reading puts in its place (:func:`_swapped`): the merge of several
    # parents that explains the child as well with fewer, an input of a merge parent, or a relative that leaves
    # markedly less residual.
    better: dict[int, tuple[int, float]] = {}
    shared = _common_layers(pl, [c, *parents])
    own_on: dict[bytes, float] = {}  # the merge's own residual, once per set of layers

    def layers_with(r: int) -> np.ndarray:
        return shared & np.isfinite(pl.sq[:, r, [c, *parents]]).all(axis=1)

    def own_residual(layers: np.ndarray) -> float:
        key = layers.tobytes()
        if key not in own_on:
            own_on[key] = _subset_residual(pl, c, parents, layers, sphere, by_layer)
        return own_on[key]

    for r, inner in of_parents.items():
        layers = layers_with(r)
        if not layers.any():
            continue
        own = own_residual(layers)
        fewer = _subset_residual(pl, c, tuple(q for q in parents if q not in inner) + (r,), layers, sphere, by_layer)
        if fewer <= own * (1.0 + SAME_READING):
            for k, p in enumerate(parents):
                if p in inner:
                    better[k] = (r, 0.0)
                    notes[k] = (f"{stats.models[r].id}, a merge of "
                                + " and ".join(stats.models[q].id for q in inner)
                                + f", explains the child as well in their place, with fewer parents (residual "
                                f"{fewer:.3g} against {own:.3g})")
    plain = [r for r in rivals if r not in of_parents]
    inputs_of = {x.child: x.parents for x in links}
    for k, p in enumerate(parents):
        if notes[k]:
            continue
        if p in inputs_of:  # (before the entries: a TIES merge keeps an input's values where it alone kept them)
            notes[k], q = _inner_input_contest(stats, pl, c, parents, p, inputs_of[p], rivals, own_residual, sphere,
                                               by_layer, layers_with)
            if notes[k]:
                better[k] = (q, 0.0)
                continue
        if sparse and _kept_by(pl, c, p):
            notes[k] = _entries_contest(stats, pl, c, p, rivals)
            continue
        best: tuple[float, float, int] | None = None
        for r in plain:
            layers = layers_with(r)
            if not layers.any():
                continue
            own = own_residual(layers)
            swapped = _subset_residual(pl, c, tuple(r if q == p else q for q in parents), layers, sphere, by_layer)
            if best is None or swapped - own < best[0] - best[1]:
                best = (swapped, own, r)
        if best is not None and best[0] < best[1]:
            swapped, own, r = best
            notes[k] = (f"{stats.models[r].id} in its place explains the child better (residual {swapped:.3g} "
                        f"against {own:.3g})")
            if swapped < PARSIMONY * own:  # better by the bar a richer reading must clear (_best_subset)
                better[k] = (r, swapped / own if own > 0 else 0.0)
    if swap and better and not sparse and not sphere and not by_layer:
        moved = _swapped(stats, pl, c, link, better)
        if moved is not None:
            # The better reading's own contest: its parents' confidence and notes (no second swap).
            again = contest_parents(stats, pl, labels, excluded, moved, links, swap=False)
            return _mark_swapped(stats, again, link)
    if not any(notes):
        return dataclasses.replace(link, parent_confidence=(link.confidence,) * len(parents),
                                   parent_notes=("",) * len(parents))
    own_conf = tuple(min(link.confidence, contested_confidence()) if note else link.confidence for note in notes)
    return dataclasses.replace(link, parent_confidence=own_conf, parent_notes=tuple(notes))


def _swapped(stats: WeightStatistics, pl: PairLayers, c: int, link: TypedLink,
             better: dict[int, tuple[int, float]]) -> TypedLink | None:
    """The reading of ``c`` with each contested parent ``k`` of ``better`` replaced by its better rival, refitted
    with one set of coefficients over the layers they all hold, or None where that reading is no exact merge by
    the detector's own tests (residual within :data:`EXACT`, weights as :func:`_best_subset` allows them).

    An exact fit names parents whose combination *is* the child up to rounding; its search only looks at the
    nearest :data:`CANDIDATES` relatives and the completions beyond them, and a subtracted task vector moves the
    merge away from that input, so a near copy of the true input (a few small steps either way) can be nearer and
    leave a residual that still passes. The contest (:func:`contest_parents`) tries every relative in each
    parent's place; where one leaves markedly less (by :data:`PARSIMONY`, the bar a richer reading must clear),
    the fit's own measure prefers it. So does parsimony where a found merge of some parents explains the child as
    well in their place with fewer parents (a merge of a merge read as a merge of its inputs: profile D's
    recipe), and where an input of a merge parent explains it about as well (the merge of an input read on a
    merge that holds it). Profile D fitting sets (benchmarks/RESULTS.md, "Fine-tune edges and merge parents of
    typed sets, fifth pass"): every such rival of an exact merge was the true parent. Sparse merges (TIES, DARE)
    are left alone: their residual is mostly the entries they dropped, which no relative explains, and there the
    rival was the true parent for 3 of 13 contested parents."""
    new: list[int] = []
    for k, p in enumerate(link.parents):
        q = better[k][0] if k in better else p
        if q not in new:  # (a merge of two parents takes both places)
            new.append(q)
    parents = tuple(new)
    if len(parents) < 2 or c in parents:
        return None
    layers = _common_layers(pl, [c, *parents])
    if not layers.any():
        return None
    coeffs, ratio = _whole_fit(pl, c, parents, layers)
    if not ratio <= EXACT or not _plain_weights(coeffs):
        return None
    return _merge_link(stats, pl, c, parents, coeffs, ratio, off_ray_ratio(pl, c, parents),
                       one_test=ONE_BASE_TEST in link.evidence)


def _mark_swapped(stats: WeightStatistics, link: TypedLink, was: TypedLink) -> TypedLink:
    """``link`` (a reading :func:`_swapped` put in the place of ``was``) with each parent ``was`` did not hold at
    most the counted rate of such parents (:data:`.calibration.SWAPPED_KIND`) and a note naming the parents it
    replaced: the rival the contest preferred is a reading of the fit's own measure, counted on few merges."""
    gone = [p for p in was.parents if p not in link.parents]
    conf = list(link.confidence_of(k) for k in range(len(link.parents)))
    notes = [link.note_of(k) for k in range(len(link.parents))]
    for k, p in enumerate(link.parents):
        if p in was.parents:
            continue
        conf[k] = min(conf[k], counted_rate(SWAPPED_KIND))
        notes[k] = ((notes[k] + "; ") if notes[k] else "") + (
            f"{CONTESTED_NOTE_SWAPPED} " + " and ".join(stats.models[q].id for q in gone)
            + f" (read first as {was.detail}): in its place the child's residual is markedly smaller, or the same "
            "with fewer parents: " + counted_note(SWAPPED_KIND))
    return dataclasses.replace(link, parent_confidence=tuple(conf), parent_notes=tuple(notes))


def _inner_input_contest(stats: WeightStatistics, pl: PairLayers, c: int, parents: tuple[int, ...], p: int,
                         inner: tuple[int, ...], rivals: list[int], own_residual: Callable[[np.ndarray], float],
                         sphere: bool, by_layer: bool, layers_with: Callable[[int], np.ndarray]) -> tuple[str, int]:
    """What contests a merge parent ``p`` that is itself a found merge of ``inner`` (:func:`contest_parents`): one of
    its own inputs, not already a parent, that in its place leaves less than 1 / :data:`PARSIMONY` times the
    residual; ``""`` where none does.

    A merge lies in its inputs' span, so a child read on it and on some of those inputs is read on their span too,
    and one of its other inputs in its place spans nearly the same: the two readings differ by what that input
    adds. A true merge of a merge explains the child markedly better with the merge than with any one of its inputs
    (profile D seeds 200-208: 2.5 to 1e9 times less residual, 18 such parents). Where an input of the merge
    explains it about as well, the merge parent is one reading of two, an input taken in the place of its own near
    copy (D 204: a task-arithmetic merge read on a SLERP that weighs the true input 0.65, that input leaving 0.7
    times its residual). The bar is the detector's own: more parents (a merge parent brings its inputs with it) must
    lower the residual by :data:`PARSIMONY` to be preferred, as in :func:`_best_subset`; nothing was fitted.
    Returns the note and that input (-1 with ``""``)."""
    best: tuple[float, float, int] | None = None
    for q in inner:
        if q in parents or q not in rivals:
            continue
        layers = layers_with(q)
        if not layers.any():
            continue
        own = own_residual(layers)
        swapped = _subset_residual(pl, c, tuple(q if x == p else x for x in parents), layers, sphere, by_layer)
        if best is None or swapped * best[1] < best[0] * own:
            best = (swapped, own, q)
    if best is None or not best[0] * PARSIMONY < best[1]:
        return "", -1
    swapped, own, q = best
    return (f"{stats.models[q].id}, an input of this parent (itself a merge of "
            + " and ".join(stats.models[x].id for x in inner)
            + f"), explains the child about as well in its place (residual {swapped:.3g} against {own:.3g}): "
            "the merge of a merge and the merge of its input are one reading of two"), q


def _subset_residual(pl: PairLayers, c: int, subset: tuple[int, ...], layers: np.ndarray, sphere: bool,
                     by_layer: bool) -> float:
    """The residual (a squared distance, summed over ``layers``) of ``c`` on ``subset``, fitted as the merge was:
    off the child's own direction (``sphere``: :func:`_on_sphere`), with coefficients per layer (``by_layer``), or
    one set of coefficients over the layers."""
    models = [c, *subset]
    if sphere:
        sq = _off_ray_sq(pl, models, layers)
    else:
        idx = np.array(models)
        sq = pl.sq[layers][:, idx[:, None], idx[None, :]]
    dc, dp = sq[:, 0, 1:], sq[:, 1:, 1:]
    if by_layer:
        return float(_affine_residuals(dc, dp).sum())
    return affine_fit(dc.sum(axis=0), dp.sum(axis=0))[1]


def _entries_contest(stats: WeightStatistics, pl: PairLayers, c: int, base: int, rivals: list[int]) -> str:
    """What contests a sparse merge's base (:func:`contest_parents`): the relative of ``rivals`` sharing most exactly
    equal entries with ``c`` where it keeps more of them than ``base`` on more tensors than the other way round
    (tensors equal in full, not shared or not counted left out); ``""`` where none does."""
    counted = pl.equal_counted if pl.equal_counted is not None else pl.equal_share
    shares = [(float(counted[c, r]), r) for r in rivals if math.isfinite(float(counted[c, r]))]
    if stats.equal is None or not shares:
        return ""
    r = max(shares)[1]
    a, b = stats.equal[:, c, base], stats.equal[:, c, r]
    ok = np.isfinite(a) & np.isfinite(b) & (a < stats.numel) & (b < stats.numel)
    more, fewer = int((b[ok] > a[ok]).sum()), int((b[ok] < a[ok]).sum())
    if more <= fewer:
        return ""
    return (f"{stats.models[r].id} keeps more of the child's entries than it on {more} of {more + fewer} tensors "
            "(a sparse merge keeps its base's values exactly)")
