"""Near-tied parents re-chosen by the kurtosis of the weight difference (issue 12, "Placement").

Where a family's members lie on a line (siblings that keep training on their root's task, barely trained
trees, continued pre-training) distances cannot tell a star of siblings from a chain: the three-point
geometry is the same, and the additivity refinement (:mod:`.additive`) prefers the chain. What tells
them apart is the shape of the difference, not its size. A few Adam steps move every entry by about
the learning rate whatever its gradient's size, so a true edge's update W_c - W_p is *platykurtic*
(excess kurtosis below 0); the difference of two siblings is a mixture (entries where their signs agree
cancel) and reads less so (benchmarks/RESULTS.md, issue 12, "Placement: what was tried").

The cue is wrong where updates are heavy-tailed (SGD, merged LoRA: excess kurtosis +0.2 to +9) and
weaker than distance on ordinary fine-tunes, so it is used only

- in trees whose own nearest-relative differences read platykurtic (:data:`PLATYKURTIC_GATE`), and
- for a child whose chosen parent the layers do not prefer over an alternative candidate beyond the
  noise (the layers' effect size, :func:`.confidence.layer_effect`, below :data:`TIE_EFFECT`): among
  those near-tied candidates the one whose difference to the child is the most platykurtic (in most
  layers, :func:`more_platykurtic`) is taken, after the refinement, as long as the tree stays a tree.

The same cue also asks, for every child of a child, whether it is a chain or a sibling
(:func:`lift_siblings`): on a line, a child c of s whose parent is p can be p -> s -> c or p -> {s, c}, and
the three distances fit both. Under the chain, W_c - W_s is one Adam run (platykurtic); under the
siblings, W_c - W_p is one run and W_c - W_s the difference of two, whose entries cancel where the two
runs agree (a mixture, heavy-tailed in the trees where distance fails). So a recovered edge s -> c whose
difference reads heavy-tailed while the grandparent's reads platykurtic, in most layers, is lifted.
Reading only which of the two differences is the more platykurtic is not enough: where a strongly
platykurtic step s - p is followed by a near-Gaussian one (the vit-tree demo, the zoo's recipe: children on
new tasks), W_c - W_p inherits the first step's shape and reads the more platykurtic on a true chain (the vit-tree
demo lost 3 of 12 edges that way; benchmarks/RESULTS.md, issue 12, "Siblings read as chains"). And the
lift is trusted only in a tree whose recovered edges read clearly platykurtic on the median
(:func:`lift_trusted`): where single runs read near-Gaussian (our zoo), one run's difference reads as
heavy-tailed as two runs' and the zoo lost 3 edges to the lift.

The constants were chosen on the FITTING collections of ``benchmarks/generalise.py`` only
(``benchmarks/placement_variants.py --variants "no kurtosis ties,defaults"``; benchmarks/RESULTS.md,
issue 12, "Near-tied parents re-chosen by the kurtosis of the difference"); the lift's sign test adds none
("Siblings read as chains"), its tree check one, placed with our zoo and the demos as guard rails
(:data:`LIFT_TREE_KURTOSIS`; "Siblings lifted where a tree's runs read alike").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, entropy

from mother_core.recovery.features import PairEvidence
from mother_core.recovery.problem import LayerMargins, TieKurtosis, TieSpectrum
from mother_core.relations.detect import label_edge
from mother_core.relations.evidence import PairLayers, pair_layers
from mother_core.relations.vocabulary import Relation
from mother_core.stats.result import WeightStatistics

#: A tree uses the cue when the median excess kurtosis of its members' differences to their cheapest
#: candidate parents is below this: Adam-like updates are platykurtic (fitting trees: -0.1 to -1.7),
#: SGD and merged-LoRA trees are not (+0.2 to +7). Excess kurtosis 0 is the Gaussian's.
PLATYKURTIC_GATE = 0.0
#: A candidate parent is near-tied with the chosen one when the layers prefer the chosen one by an
#: effect size (:func:`.confidence.layer_effect`) below this (fitting, directed: 0.25 / 0.5 / 0.75 / 1.0 /
#: 2.0 gain 8 / 14 / 14 / 15 / 8 edges; 0.5 is the only one under which no fitting collection loses one).
TIE_EFFECT = 0.5
#: A child c of s is lifted to s's parent p when, besides W_c - W_s reading heavy-tailed and W_c - W_p
#: platykurtic on the mean over layers (both against :data:`PLATYKURTIC_GATE`), the layers read as
#: replicates agree: a one-sided sign test over the layers that measured both differences rejects "no
#: preference" at this level (the conventional 5%, not fitted; 1% and 10% give the same edges right per
#: FITTING collection).
LIFT_ALPHA = 0.05
#: The lift is trusted only in a tree whose runs read clearly Adam-like: the median excess kurtosis of its
#: recovered edges' differences below this (Gaussian updates read 0, a uniform -1.2, the sign-like ones of
#: a few Adam steps -1.2 to -2). Where single runs read near-Gaussian (children trained on new tasks with
#: new heads: our zoo's trees -0.21 to -0.39), one run reads as heavy-tailed as a difference of two and the
#: contrast is noise. Chosen on FITTING (every value from -1.19 to -0.09 gives the same edges there, +3)
#: inside the range where no guard rail loses an edge (our zoo, the demos, zoo-like trees of the fitting
#: ViT recipe trained longer: up to -0.64), rounded: benchmarks/RESULTS.md, issue 12, "Siblings lifted where
#: a tree's runs read alike". The margin on the fitting side is thin (a continued tree at -1.19).
LIFT_TREE_KURTOSIS = -1.0
#: Skeletons smaller than this many entries give no kurtosis (four moments of a handful of numbers).
MIN_ENTRIES = 16
#: The relation detectors that tell a member's update is not a full fine-tune's (shapes, merged LoRA).
NOT_FINETUNE = ("shape", "lora")
#: Pairs whose skeleton differences are held at once (256 x 96 x 96 float64: 19 MB).
PAIRS_PER_BLOCK = 256
#: A child c of s (whose parent is p) is lifted to p when the effective rank of W_c - W_s exceeds that of
#: W_c - W_p by more than this, as the mean over layers of the log ratio (:func:`lift_by_spectrum`). From
#: {0.05, 0.1, 0.2, 0.3} on the FITTING collections (``benchmarks/fftplace_diag.py``, the engine's recovered
#: full fine-tuning trees, 192 true edges, each lift asked alone): fixes 14 / 11 / 7 / 2 and breaks 5 / 1 / 1 / 0.
#: 0.1 gains the most in the engine (+7 directed over the fitting collections) but lifts a right edge of the
#: zoo-like guard-rail tree (our zoo's recipe on the fitting ViT; tests/test_siblings.py) at 0.11; 0.2 is the
#: largest gain (+6) under which no fitting collection, demo or guard rail loses an edge (benchmarks/RESULTS.md,
#: issue 12, "Siblings told from chains by the spectrum of the difference").
SPECTRAL_LIFT = 0.2


def difference_kurtosis(stats: WeightStatistics, rms: np.ndarray, layer_index: np.ndarray,
                        pairs: list[tuple[int, int]]) -> np.ndarray:
    """Mean over selected layers with a skeleton of the excess kurtosis (m4 / m2^2 - 3, float64) of the
    entries of W_a - W_b, one value per pair ``(a, b)`` (NaN where no layer measured it).

    The entries are those of the skeletons the statistics pass keeps for the rank cue (a random
    submatrix of each matrix, :mod:`mother_core.stats.skeleton`). A layer counts for a pair where its
    per-pair distance does (``rms`` of :class:`.features.PairEvidence`: finite, e.g. not a
    re-initialised head) and the difference is not zero (a frozen layer has no update to read).
    """
    return difference_kurtosis_layers(stats, rms, layer_index, pairs)[0]


def difference_kurtosis_layers(stats: WeightStatistics, rms: np.ndarray, layer_index: np.ndarray,
                               pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`difference_kurtosis` (pairs,) and the same per selected layer (pairs, layers), NaN where a
    layer did not measure a pair (no skeleton, distance set aside, no difference)."""
    out = np.zeros(len(pairs))
    count = np.zeros(len(pairs))
    per_layer = np.full((len(pairs), len(layer_index)), np.nan)
    if not pairs:
        return out, per_layer
    a = np.array([p for p, _ in pairs])
    b = np.array([c for _, c in pairs])
    for row, slot in enumerate(layer_index):
        sk = stats.skeletons.get(int(slot))
        if sk is None or sk[0].size < MIN_ENTRIES:
            continue
        counted = np.flatnonzero(np.isfinite(rms[row, a, b]))
        for start in range(0, len(counted), PAIRS_PER_BLOCK):  # (block, k1 * k2) float64 at a time
            at = counted[start:start + PAIRS_PER_BLOCK]
            # The difference in the skeletons' own precision (float32: a relative error of 1e-7 of the
            # weights, far below any update), its moments in float64.
            u = (sk[a[at]] - sk[b[at]]).reshape(len(at), -1).astype(np.float64)
            u -= u.mean(axis=1, keepdims=True)
            u *= u
            m2 = u.mean(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                k = np.einsum("ij,ij->i", u, u) / u.shape[1] / m2 ** 2 - 3.0
            ok = np.isfinite(k) & (m2 > 0)
            out[at[ok]] += k[ok]
            count[at[ok]] += 1
            per_layer[at[ok], row] = k[ok]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, out / np.maximum(count, 1), np.nan), per_layer


def _candidates_inside(members: np.ndarray, margins: Mapping[int, LayerMargins]) -> dict[int, tuple[int, ...]]:
    """Each member of the tree (``members``) that has candidate parents in it -> those, nearest first."""
    inside = {int(g) for g in members}
    own = {c: tuple(q for q in margins[c].candidates if q in inside) for c in map(int, members) if c in margins}
    return {c: cand for c, cand in own.items() if cand}


def _fine_tunes_of_nearest(stats: WeightStatistics, pl: PairLayers,
                           own: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
    """The members of ``own`` (member -> candidate parents, nearest first) whose update from their nearest
    candidate reads as a full fine-tune (:func:`mother_core.relations.detect.label_edge`): a merged LoRA
    leaves most layers untouched and a pruned model is narrower, so neither has the entries the tie rules
    read."""
    return {c: cand for c, cand in own.items()
            if label_edge(stats, pl, cand[0], c, NOT_FINETUNE).relation is Relation.FINETUNE}


def tree_tie_kurtosis(stats: WeightStatistics, ev: PairEvidence, members: np.ndarray,
                      margins: Mapping[int, LayerMargins],
                      layers: Callable[[], PairLayers] | None = None) -> dict[int, TieKurtosis]:
    """The difference kurtosis of each member to its candidate parents, in a tree that reads
    platykurtic; empty in any other tree (the gate, :data:`PLATYKURTIC_GATE`).

    The gate reads each member's difference to its cheapest candidate parent (its pairwise favourite,
    parent or child), so it is known before the tree is solved and costs one pair per member. A member
    whose difference to that candidate is not a full fine-tune's (a merged LoRA that leaves most layers
    untouched, a pruned or distilled model: :func:`mother_core.relations.detect.label_edge`, the
    detectors :data:`NOT_FINETUNE`) gets none: a low-rank update's entries are not Adam's, and its
    siblings' differences to it read more platykurtic than its parent's (on the typed zoo's fitting
    seed 0 both merged-LoRA children of gated trees moved to a sibling without this). ``layers`` gives the set's
    :func:`mother_core.relations.evidence.pair_layers` (computed here when omitted; a caller with many
    trees computes it once).
    """
    own = _candidates_inside(members, margins)
    if len(own) < 3:
        return {}
    nearest = difference_kurtosis(stats, ev.rms, ev.layer_index, [(cand[0], c) for c, cand in own.items()])
    if not np.isfinite(nearest).any() or not float(np.nanmedian(nearest)) < PLATYKURTIC_GATE:
        return {}
    # A member whose update from its cheapest candidate is not a full fine-tune (a merged LoRA child
    # leaves most layers untouched, a pruned one is narrower) has no Adam entries to read.
    own = _fine_tunes_of_nearest(stats, layers() if layers is not None else pair_layers(stats), own)
    pairs = [(q, c) for c, cand in own.items() for q in cand]
    k, per_layer = difference_kurtosis_layers(stats, ev.rms, ev.layer_index, pairs)
    out, at = {}, 0
    for c, cand in own.items():
        out[c] = TieKurtosis(cand, k[at:at + len(cand)], per_layer[at:at + len(cand)])
        at += len(cand)
    return out


@dataclass(frozen=True)
class TieChoice:
    """How one child's parent was re-chosen among near-tied candidates (:func:`choose_among_ties`).

    Attributes
    ----------
    displaced : int
        The parent distance (the arborescence and the refinement) had given the child.
    candidates : tuple of int
        The chosen parent first, then the candidates it was near-tied with (``displaced`` among
        them), by increasing difference kurtosis.
    kurtosis : tuple of float
        The excess kurtosis of W_child - W_candidate of each of ``candidates`` (NaN: not measured).
    lifted : bool
        The child was lifted from a chain to a sibling of its parent (:func:`lift_siblings`), not
        re-chosen among near ties.
    spectral : bool
        The lift was read from the spectrum of the differences (:func:`lift_by_spectrum`), not their
        kurtosis; ``kurtosis`` is then only told (NaN where the tree did not read it).
    """

    displaced: int
    candidates: tuple[int, ...]
    kurtosis: tuple[float, ...]
    lifted: bool = False
    spectral: bool = False


def choose_among_ties(parent: np.ndarray, members: np.ndarray, margins: Mapping[int, LayerMargins],
                      ties: Mapping[int, TieKurtosis], pinned: Collection[int] = (),
                      banned: Collection[tuple[int, int]] = (), no_children: Collection[int] = ()
                      ) -> tuple[np.ndarray, dict[int, TieChoice]]:
    """``parent`` (model indices, -1 for roots) with near-tied parents re-chosen by the difference
    kurtosis, within one tree (``members``), and for each child whose parent moved, a
    :class:`TieChoice` saying from where and among which candidates (what the result tells the user).

    For each child with :class:`TieKurtosis`, the candidates the layers do not rank below its parent
    by :data:`TIE_EFFECT` or more (:attr:`.problem.LayerMargins.effect`) compete with it, one after the
    other against the one standing (the parent first): a candidate whose difference to the child reads the
    more platykurtic in most layers (:func:`more_platykurtic`) takes its place unless it is a descendant
    of the child (a cycle). Children are taken from the most ambiguous (smallest margin)
    on. ``pinned`` children keep their parents (forced edges, typed relations), ``banned`` edges
    (forbidden) are not taken, ``no_children`` (typed leaves) are no one's parent. Roots stay roots.
    """
    out = parent.copy()
    pinned, no_children = set(pinned), set(no_children)
    banned = set(banned)
    todo: list[tuple[float, int, list[int]]] = []
    for c in map(int, members):
        p = int(out[c])
        if p < 0 or c in pinned or c not in ties or c not in margins:
            continue
        m = margins[c]
        if p not in m.candidates:
            continue
        i = m.candidates.index(p)
        tied = [(float(m.effect[i, j]), q) for j, q in enumerate(m.candidates)
                if q != p and q in ties[c].candidates and np.isfinite(m.effect[i, j]) and m.effect[i, j] < TIE_EFFECT
                and q not in no_children and (q, c) not in banned]
        if tied:
            todo.append((min(e for e, _ in tied), c, [q for _, q in tied]))
    choices: dict[int, TieChoice] = {}
    for _, c, near in sorted(todo):
        p = int(out[c])
        k = dict(zip(ties[c].candidates, ties[c].kurtosis.tolist()))
        below = _descendants(out, c)
        best = p
        for q in near:
            if q not in below and more_platykurtic(ties[c], q, best):
                best = q
        out[c] = best
        if best != p:
            # The contest as the child saw it: the winner, then the others that stood (nearest-tied
            # first by kurtosis; a cycle's candidate did not stand).
            rest = sorted((q for q in {p, *near} - {best} if q not in below),
                          key=lambda q: (not np.isfinite(k.get(q, np.nan)), k.get(q, np.nan)))
            order = (best, *rest)
            choices[c] = TieChoice(p, order, tuple(float(k.get(q, np.nan)) for q in order))
    return out, choices


def more_platykurtic(tie: TieKurtosis, q: int, than: int) -> bool:
    """Whether the child's difference to candidate ``q`` reads more platykurtic than its difference to
    ``than`` (both among ``tie.candidates``, the child's :class:`TieKurtosis`): in most of the layers that
    measured both, read as replicates, where the per-layer kurtosis was kept; on the mean over layers
    otherwise (problems saved before it was kept, or no layer measured both). A ``than`` not measured at all
    loses to any measured ``q``.

    Why the layers and not their mean: one layer's heavy tail can decide a mean. On the FITTING collections'
    questions the sibling lift asks, the mean separates a chain from siblings at AUROC 0.92 and the share of
    layers agreeing at 0.99 (benchmarks/RESULTS.md, issue 12, "Siblings read as chains"); among near-tied
    parents the majority of layers places 3 FITTING fine-tune edges more than the mean (227 -> 230 of 306),
    gives up no right parent, and adds no constant (benchmarks/RESULTS.md, "Near-tied parents read layer by
    layer").
    """
    k = dict(zip(tie.candidates, tie.kurtosis.tolist()))
    kq, kt = k.get(q, np.nan), k.get(than, np.nan)
    if not np.isfinite(kq):
        return False
    if not np.isfinite(kt):
        return True
    if tie.layers is not None:
        a, b = tie.layers[tie.candidates.index(q)], tie.layers[tie.candidates.index(than)]
        both = np.isfinite(a) & np.isfinite(b)
        if both.any():
            return int((a[both] < b[both]).sum()) * 2 > int(both.sum())
    return bool(kq < kt)


def lift_siblings(parent: np.ndarray, members: np.ndarray, ties: Mapping[int, TieKurtosis],
                  pinned: Collection[int] = (), banned: Collection[tuple[int, int]] = (),
                  no_children: Collection[int] = (), choices: Mapping[int, TieChoice] | None = None
                  ) -> tuple[np.ndarray, dict[int, TieChoice]]:
    """``parent`` with children read as a chain p -> s -> c lifted to siblings p -> {s, c} where the
    difference kurtosis says so layer by layer (:func:`sign_test` below :data:`LIFT_ALPHA`), within one
    tree (``members``); for each child that moved, a :class:`TieChoice` (``choices``, the near-tie step's,
    are carried into it).

    Physically (module docstring): under the chain, W_c - W_s is one Adam run; under the siblings,
    W_c - W_p is one run and W_c - W_s the difference of two. In a tree that reads Adam-like (the gate
    that gives c its :class:`TieKurtosis`), one run's difference is platykurtic, so the edge s -> c is
    questioned only when its difference is not (excess kurtosis above :data:`PLATYKURTIC_GATE`, mean
    over layers), and c goes to p only when W_c - W_p is (below it) and the layers, read as replicates,
    say W_c - W_s is the less platykurtic of the two (:func:`sign_test` below :data:`LIFT_ALPHA`; one
    layer's heavy tail can outweigh the rest in a mean). Both c and s must have :class:`TieKurtosis`
    (full fine-tunes) and both s and p must be among c's candidates (whose kurtosis the problem keeps,
    so a re-solve gives the same tree). Models are visited from the roots down, so a child whose parent
    was lifted is asked again against its new grandparent; a lifted child is asked again too.
    ``pinned`` children keep their parents, ``banned`` edges are not taken, ``no_children`` parent
    nothing. Lifting a child to its grandparent cannot make a cycle. Nothing moves in a tree whose runs
    read too near-Gaussian for one run to look unlike two runs' difference (:func:`lift_trusted`).
    """
    if not lift_trusted(parent, members, ties):  # the tree's runs read too near-Gaussian to tell
        return parent.copy(), {}

    def asks(c: int, s: int, p: int) -> bool:
        # A single Adam run's difference is platykurtic (the gate's premise): an edge whose difference
        # is not is questioned, and only a grandparent whose difference is can take the child.
        k = dict(zip(ties[c].candidates, ties[c].kurtosis.tolist()))
        return bool(k.get(s, np.nan) > PLATYKURTIC_GATE > k.get(p, np.nan)) and sign_test(ties[c], s, p) < LIFT_ALPHA

    return _lift_up(parent, members, ties, asks, ties, False, pinned, banned, no_children, choices)


def _lift_up(parent: np.ndarray, members: np.ndarray, read: Collection[int], asks: Callable[[int, int, int], bool],
             ties: Mapping[int, TieKurtosis] | None, spectral: bool, pinned: Collection[int],
             banned: Collection[tuple[int, int]], no_children: Collection[int],
             choices: Mapping[int, TieChoice] | None) -> tuple[np.ndarray, dict[int, TieChoice]]:
    """The walk both sibling lifts share: from the roots down, each child c in ``read`` whose parent s is in
    ``read`` too goes to s's parent p while ``asks(c, s, p)`` (then is asked again against its new
    grandparent); ``pinned`` children stay, ``banned`` edges and ``no_children`` parents are not taken.
    Each child that moved gets a lifted :class:`TieChoice` (``ties`` gives the kurtosis it tells, NaN
    where not read; ``choices``, an earlier step's, give the parent distance had chosen)."""
    out = parent.copy()
    moved: dict[int, TieChoice] = {}
    pinned, no_children, banned = set(pinned), set(no_children), set(banned)
    inside = {int(g) for g in members}
    stack = [g for g in inside if out[g] < 0 or int(out[g]) not in inside]
    while stack:
        c = stack.pop()
        passed: list[int] = []
        while c in read and c not in pinned:
            s = int(out[c])
            p = int(out[s]) if s >= 0 else -1
            if p < 0 or s not in read or p in no_children or (p, c) in banned or p not in inside or not asks(c, s, p):
                break
            passed.append(s)
            out[c] = p
        if passed:
            before = (choices or {}).get(c)
            displaced = before.displaced if before is not None else passed[0]
            k = dict(zip(ties[c].candidates, ties[c].kurtosis.tolist())) if ties and c in ties else {}
            order = (int(out[c]), *reversed(passed))
            moved[c] = TieChoice(displaced, order, tuple(float(k.get(q, math.nan)) for q in order),
                                 lifted=True, spectral=spectral)
        stack.extend(int(w) for w in np.flatnonzero(out == c) if int(w) in inside)
    return out, moved


def lift_trusted(parent: np.ndarray, members: np.ndarray, ties: Mapping[int, TieKurtosis]) -> bool:
    """Whether a tree's runs read Adam-like enough for :func:`lift_siblings`: the median, over its members
    with a :class:`TieKurtosis`, of the excess kurtosis of W_child - W_parent for the parent in ``parent``
    (where that parent is among the child's candidates) is below :data:`LIFT_TREE_KURTOSIS`.

    The lift reads a heavy-tailed edge under a platykurtic grandparent as two runs' difference; that holds
    where one run reads clearly platykurtic. Where a tree's runs read near-Gaussian (children trained long
    on new tasks with new heads), a true single run reads as heavy-tailed as a difference of two, edge by
    edge, and nothing in a triple's three differences tells them apart. The median is over the tree as
    recovered (before the lift), so the few heavy-tailed edges the lift asks about do not decide it.
    Checks of whether the runs read alike depth by depth (rank tests across depths, a trend with depth)
    did not tell our zoo's trees from the fitting ones (benchmarks/RESULTS.md, issue 12).
    """
    inside = {int(g) for g in members}
    read = []
    for c, t in ties.items():
        p = int(parent[c]) if c in inside else -1
        if p >= 0 and p in t.candidates:
            read.append(float(t.kurtosis[t.candidates.index(p)]))
    read = [k for k in read if math.isfinite(k)]
    return bool(read) and float(np.median(read)) < LIFT_TREE_KURTOSIS


def sign_test(tie: TieKurtosis, s: int, p: int) -> float:
    """One-sided sign test over the layers: the probability, were no layer to prefer either, that at
    least as many layers as measured read W_c - W_s less platykurtic than W_c - W_p (``tie`` is c's);
    1.0 where ``s`` or ``p`` is not among c's candidates or no per-layer kurtosis was kept."""
    if tie.layers is None or s not in tie.candidates or p not in tie.candidates:
        return 1.0
    ks = tie.layers[tie.candidates.index(s)]
    kp = tie.layers[tie.candidates.index(p)]
    both = np.isfinite(ks) & np.isfinite(kp)
    n, wins = int(both.sum()), int((ks[both] > kp[both]).sum())
    return float(binomtest(wins, n, 0.5, alternative="greater").pvalue) if n else 1.0


def difference_spread_layers(stats: WeightStatistics, rms: np.ndarray, layer_index: np.ndarray,
                             pairs: list[tuple[int, int]]) -> np.ndarray:
    """Per pair ``(a, b)`` and selected layer, the log effective rank (exp of the entropy of the
    normalised singular values) of the skeleton of W_a - W_b; NaN where a layer did not measure the pair
    (no skeleton, distance set aside, e.g. a re-initialised head, or no difference: a frozen layer).

    One fine-tuning run's update has a concentrated spectrum; the difference of two runs from one start
    (siblings) or of a run and its continuation (two steps of a chain) spreads over more directions.
    The entries are the skeletons the statistics pass keeps (a random submatrix of each matrix,
    :mod:`mother_core.stats.skeleton`), as for :func:`difference_kurtosis`.
    """
    out = np.full((len(pairs), len(layer_index)), np.nan)
    if not pairs:
        return out
    a = np.array([p for p, _ in pairs])
    b = np.array([c for _, c in pairs])
    for row, slot in enumerate(layer_index):
        sk = stats.skeletons.get(int(slot))
        if sk is None or sk.ndim != 3 or min(sk.shape[1:]) < 2:
            continue
        counted = np.flatnonzero(np.isfinite(rms[row, a, b]))
        for start in range(0, len(counted), PAIRS_PER_BLOCK):
            at = counted[start:start + PAIRS_PER_BLOCK]
            u = (sk[a[at]] - sk[b[at]]).astype(np.float64)
            sv = np.linalg.svd(u, compute_uv=False)  # (block, min(k1, k2))
            ok = sv.sum(axis=1) > 0
            out[at[ok], row] = entropy(sv[ok], axis=1)  # log of the effective rank exp(entropy)
    return out


def tree_tie_spectra(stats: WeightStatistics, ev: PairEvidence, members: np.ndarray,
                     margins: Mapping[int, LayerMargins],
                     layers: Callable[[], PairLayers] | None = None) -> dict[int, TieSpectrum]:
    """Each member's per-layer log effective rank of its difference to each of its candidate parents (in
    the tree), for :func:`lift_by_spectrum`; a member whose update from its cheapest candidate is not a full
    fine-tune's (:data:`NOT_FINETUNE`, as :func:`tree_tie_kurtosis`) gets none. No gate: the contrast held
    on every fitting recipe's full fine-tunes, SGD and Adam alike (benchmarks/RESULTS.md, issue 12)."""
    own = _candidates_inside(members, margins)
    if len(own) < 3:
        return {}
    own = _fine_tunes_of_nearest(stats, layers() if layers is not None else pair_layers(stats), own)
    pairs = [(c, q) for c, cand in own.items() for q in cand]
    per_layer = difference_spread_layers(stats, ev.rms, ev.layer_index, pairs)
    out, at = {}, 0
    for c, cand in own.items():
        out[c] = TieSpectrum(cand, per_layer[at:at + len(cand)])
        at += len(cand)
    return out


def spectral_contrast(spec: TieSpectrum, s: int, p: int) -> float:
    """Mean over the layers that measured both of log er(W_c - W_s) - log er(W_c - W_p) (``spec`` is c's);
    NaN where ``s`` or ``p`` is not among c's candidates or no layer measured both."""
    if s not in spec.candidates or p not in spec.candidates:
        return math.nan
    es, ep = spec.layers[spec.candidates.index(s)], spec.layers[spec.candidates.index(p)]
    both = np.isfinite(es) & np.isfinite(ep)
    return float((es[both] - ep[both]).mean()) if both.any() else math.nan


def lift_by_spectrum(parent: np.ndarray, members: np.ndarray, spectra: Mapping[int, TieSpectrum],
                     ties: Mapping[int, TieKurtosis] | None = None, pinned: Collection[int] = (),
                     banned: Collection[tuple[int, int]] = (), no_children: Collection[int] = (),
                     choices: Mapping[int, TieChoice] | None = None) -> tuple[np.ndarray, dict[int, TieChoice]]:
    """``parent`` with children read as a chain p -> s -> c lifted to siblings p -> {s, c} where the
    spectrum of the differences says so (:func:`spectral_contrast` above :data:`SPECTRAL_LIFT`), within one
    tree (``members``); for each child that moved, a :class:`TieChoice` with ``spectral`` set.

    Under the chain, W_c - W_s is one run (a concentrated spectrum) and W_c - W_p two runs' sum; under the
    siblings, W_c - W_p is one run and W_c - W_s the difference of two runs from one start, whose shared
    drift cancels and leaves more directions. The three distances fit both (a line). On the FITTING
    collections' true triples the contrast tells siblings from chains at AUROC 0.87 (0.91 on the triples
    distance gets wrong), against 0.62 / 0.72 for the kurtosis contrast, and holds where the kurtosis
    contrast fails (SGD trees, the demos' children on new tasks); it fails on a decay ray (all updates
    along the weights: one direction whatever the topology). Models are visited from the roots down; a
    lifted child is asked again against its new grandparent. ``ties`` (the kurtosis, where the tree has
    it) is only told on the moved edges. ``pinned`` children keep their parents, ``banned`` edges are not
    taken, ``no_children`` parent nothing. Lifting to a grandparent cannot make a cycle.
    """
    return _lift_up(parent, members, spectra,
                    lambda c, s, p: spectral_contrast(spectra[c], s, p) > SPECTRAL_LIFT,
                    ties, True, pinned, banned, no_children, choices)


def _descendants(parent: np.ndarray, c: int) -> set[int]:
    """Every model below ``c`` in the forest ``parent``."""
    out: set[int] = set()
    stack = [c]
    while stack:
        v = stack.pop()
        for w in np.flatnonzero(parent == v).tolist():
            if w not in out:
                out.add(w)
                stack.append(w)
    return out
