"""Per-edge confidence: placement (is this the right parent?) and direction (is it the right way?).

Both are small monotone logistic maps of evidence a user can inspect (docs/METHOD.md, "Confidence"):

- placement: the log cost ratio of the best alternative parent over the chosen one (clipped), less a step
  per candidate parent the layers do not put clearly behind the chosen one (:func:`layer_effect`,
  :func:`near_tied`: a margin the layers disagree on is inside the noise between candidates); the margin
  alone where no layers were compared (the sparse path); times how far the edge is from the "unrelated"
  threshold;
- direction (mother+): the scale cue's vote read under the tree's reading, mixed with the probability
  that the reading is right; a tree on the prior takes the counted share of such edges directed right
  (``direction.PRIOR_CONFIDENCE``); (paper method) the agreement of per-layer kurtosis votes with the
  regime, as a z-score (2f - 1) * sqrt(n) over n shared layers.
- the maps' own edges (mother+) raised to the counted share right of their range, at or above 0.8 and below it,
  never across 0.8 (:func:`recounted`).

The constants are fitted on the FITTING collections only (``benchmarks/calibrate.py --pooled``), never on
the held-out ones reported (benchmarks/RESULTS.md, issue 12). They hold within the domain they were fitted
on: a tree whose updates lie along its weights more than any fitting tree's (:func:`tree_radial_share`,
:data:`RADIAL_SHARE_MAX`) reads its direction at the counted share of such fitting trees read right
(:func:`within_calibration`, :data:`RADIAL_FLAG_CONFIDENCE`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Fitted by `python benchmarks/calibrate.py --pooled` on ALL the fitting collections pooled (863 edges:
# benchmarks/generalise.py's fit-*, their second draw fit2-*, fitx-0..2 / fitw made for the direction work,
# and fitp-0..40, every fitting recipe as a base with one child (fitp-2: two-edge chains) made so that trees
# on the prior are counted; never the held-out collections the results report). Each is a logistic
# sigmoid(bias + sum of slope x input) whose slopes have a fixed sign (more margin never lowers the
# confidence, more near-tied candidates never raise it); benchmarks/RESULTS.md, issue 12, "Confidence
# fitted on every fitting collection" (the form, 390 edges, not adopted alone) and "Trees on the prior
# counted" (this refit).
#
# Placement: the log cost ratio of the best alternative parent over the chosen one, clipped to
# +-MARGIN_CLIP (beyond a ratio of e the fitting edges are no surer), less PLACE_NEAR_TIED per candidate
# parent that the layers do not put clearly behind the chosen one (:func:`near_tied`: layer effect below
# NEAR_TIED_EFFECT). On the first 390 pooled fitting edges the margin ranked right placements better than
# the best alternative's layer effect (AUROC 0.78 vs 0.73); the count of near-tied candidates adds what the
# layers say (91% right with none, 80% with one, 48-54% with three or more); the layer effect adds nothing
# once both are in. PLACE_NO_ALTERNATIVE: a child with no other candidate parent (its margin clips to +1);
# with the base + one child trees counted (right whenever the pair is split off as a tree) it is positive.
MARGIN_CLIP = 1.0
NEAR_TIED_EFFECT = 1.0
PLACE_BIAS = 0.953
PLACE_MARGIN_SLOPE = 3.505
PLACE_NEAR_TIED = 0.487
PLACE_NO_ALTERNATIVE = 1.073
# The same without the layers (the sparse path): margin only, fitted on the same edges, contested ones
# left to CONTESTED_PLACEMENT.
PLACEMENT_SLOPE = 4.577
PLACEMENT_BIAS = 0.017
PLACEMENT_NO_ALTERNATIVE = 0.880
# An edge kept although another parent is cheaper pairwise (chosen by the refinement, or forced by the
# user), on the margin-only path: the fraction of such fitting edges placed right, (right + 1) / (n + 2),
# capped at a tie's sigmoid(PLACEMENT_BIAS) = 0.504: never surer than an edge without a cheaper
# alternative. (The layered path reads it through its negative margin.)
CONTESTED_PLACEMENT = 0.504
# A parent the near-tie rule chose (ties.py: re-chosen among candidates the layers do not separate, by the
# difference kurtosis, against the distance's choice; or a sibling lifted off a chain) has a negative margin
# and near-tied candidates by construction, so the map above reads it as a coin flip lost (0.13-0.63 on the
# fitting edges, mean 0.39), yet such parents are right more often than not: counted, not fitted, as
# (placed right + 1) / (n + 2) over every such fitting edge (``calibrate.py --pooled`` counts it; 19 of 26
# on the fitting collections fit-*, fit2-*, fitx-0..2 and fitw, regenerated 2026-12-04: 11 of 16 on fitx-*
# alone, 8 of 10 on the rest). Times the related term as any placement. Recount when ties.py changes.
TIE_PLACEMENT = 0.714
#: Candidate parents per child whose layer effects are kept (the cheapest by cost).
LAYER_CANDIDATES = 6
# The paper method's vote-based direction confidence (not refitted).
DIRECTION_SLOPE = 0.6
DIRECTION_BIAS = 0.0
# Direction: sigmoid(EVIDENCE_BIAS + SCALE_SLOPE * s) that the edge points the way a right reading says,
# s the scale cue's vote in [-1, 1] (the child is the parent rescaled by one factor plus orthogonal
# updates, ``features.scale_fit``; sign-free, so it does not depend on the reading), mixed with the
# tree reading's confidence r as r p + (1 - r)(1 - p). On the pooled fitting edges placed right the
# scale vote ranks right directions (AUROC 0.86 on the first 390); the fused evidence E less, so E's slope
# stays 0. READING_ODDS_POWER: the reading's confidence is used with its log-odds times this power (0.5, a
# coin flip, stays 0.5). Powers 1-20 were compared out of fold (calibrate.py --pooled prints them; the rule:
# of those whose out-of-fold ECE is <= 0.05, the smallest share of wrong edges at >= 0.8): 20 (27 of 407
# wrong at >= 0.8, ECE 0.026; 1.5, chosen on the first 390 edges, now misses 0.05). At 20 any reading
# surer than a coin flip counts as right: readings at 0.57-0.79 direct their edges right about as often as
# those at >= 0.9, and the scale vote is what ranks them. Trees on the prior are counted, not mixed
# (``counted``, direction.PRIOR_CONFIDENCE).
EVIDENCE_SLOPE = 0.0
EVIDENCE_BIAS = 1.469
SCALE_SLOPE = 5.419
READING_ODDS_POWER = 20.0

# The fitted maps' edges read their counted share (issue 12, item 5; benchmarks/RESULTS.md, "The fitted maps'
# edges read their count", branch confece). On the fitting collections the maps' own edges (not a typed
# relation's, a near-tie parent's, a tree on the prior's or beyond the radial share's: those are counted shares
# of their own) were right more often than they said, below 0.8 and above it alike. Each range is raised by one
# power, chosen so that the edges' mean equals the counted share right, (right + 1) / (n + 2) (``calibrate.py
# --sure`` counts them and solves for the powers), and so that nothing crosses SURE_FROM (a wrong edge at >= 0.8
# is the error item 5 weighs most): an edge at >= SURE_FROM reads c ** SURE_POWER; one below reads
# SURE_FROM * (c / SURE_FROM) ** BELOW_POWER, which stays below SURE_FROM. Both maps are monotone, so the maps'
# order of their edges is kept. Counted on fitx-0..2 and fitw (232 edges): 67 of 70 right at mean 0.908 at or
# above 0.8 (0.944: SURE_POWER 0.586), 70 of 107 right at mean 0.579 below it (0.651: BELOW_POWER 0.588); checked
# on fit-fft, fit-lora, fit-mixed and the typed profile C sets 5 and 13, which they were not counted on (ECE 0.085
# -> 0.067, AUROC 0.91 -> 0.90, wrong at >= 0.8 1 of 217 both). Counted the other way (on those, checked on fitx
# and fitw) the sure power is 0.468 and the lower range cannot be counted (81% right, above what any raise that
# stays below 0.8 can say): the two draws differ, and the larger, more varied one is counted. A refit of the maps
# themselves on fit-* raised their middle too and put 9-21 wrong fitx/fitw edges at >= 0.8 instead of 3.
SURE_FROM = 0.8
SURE_POWER = 0.586
BELOW_POWER = 0.588


@dataclass(frozen=True)
class ConfidenceParts:
    """An edge's confidence in two parts: that the parent is the right one (placement) and that the edge
    points the right way given that (direction)."""

    placement: float
    direction: float

    @property
    def combined(self) -> float:
        """Probability that the edge is placed *and* directed right (parts treated as independent)."""
        return self.placement * self.direction


def recounted(placement: float, direction: float) -> tuple[float, float]:
    """An edge's (placement, direction) from the fitted maps, raised to their counted share: where their product c
    is at least :data:`SURE_FROM`, each part ** :data:`SURE_POWER`; below it, each part ** a with c ** a =
    SURE_FROM * (c / SURE_FROM) ** :data:`BELOW_POWER`, which stays below SURE_FROM. No edge is lowered or lifted
    across SURE_FROM, and the order of the products is kept."""
    c = placement * direction
    if c >= SURE_FROM:
        return placement ** SURE_POWER, direction ** SURE_POWER
    if c <= 0.0:
        return placement, direction
    raised = SURE_FROM * (c / SURE_FROM) ** BELOW_POWER
    a = math.log(raised) / math.log(c)
    return placement ** a, direction ** a

# --- Edges placed by rank: a merged LoRA's own edges ---------------------------------------------------
#: Placement confidence of a forest edge typed ``lora`` (the child differs from its parent at low rank on a few
#: layers only, ``relations.detect.label_edge``): the counted share of such edges placed right on the fitting
#: collections of ``benchmarks/generalise.py`` (fit-fft, fit-lora, fit-mixed, fitx-0..2, fitw; 12 merged-LoRA
#: trees), (right + 1) / (n + 2) = (93 + 1) / (93 + 2) = 0.989; counted leave-one-collection-out it is
#: 0.985-0.989 (benchmarks/RESULTS.md, issue 12, "Confidence honest on trees made elsewhere, sixth pass", branch
#: calib6). The placement map reads their margin and near-tied candidates as it reads a full fine-tune's and gave
#: them 0.95 on average (0.63 at the lowest), yet every one was placed right: a rank-r difference singles out a
#: parent (a sibling differs at rank 2r), where a full fine-tune's distance leaves candidates inside the noise.
#: Their wrong edges are reversals (the direction part), which this leaves alone. Recount when the LoRA detector,
#: the placement or the fitting collections change.
LORA_PLACEMENT = 0.989
#: The most an edge below :data:`SURE_FROM` is raised to by :func:`rank_placed`: clear of SURE_FROM (also once
#: rounded for display), so a raised edge never reads as sure.
RANK_PLACED_BELOW = 0.79


def rank_placed(placement: float, direction: float, related: float) -> float:
    """The placement confidence of a merged LoRA's own edge (:data:`LORA_PLACEMENT`): the counted share times how
    far the edge is from the "unrelated" threshold (``related``, :func:`related_confidence`), never below what the
    map read. An edge whose confidence (``placement * direction``) was below :data:`SURE_FROM` stays at or below
    :data:`RANK_PLACED_BELOW` (a reversal is what such edges get wrong, and the direction part that says so is
    unchanged): no edge crosses SURE_FROM, as with :func:`recounted`."""
    raised = max(placement, LORA_PLACEMENT * related)
    if placement * direction < SURE_FROM and direction > 0.0:
        raised = min(raised, max(placement, RANK_PLACED_BELOW / direction))
    return raised


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), written so that neither branch overflows for large ``|x|``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def placement_confidence(chosen_cost: float, alternative_cost: float, relative: float, threshold: float,
                         near: int | None = None) -> float:
    """Confidence that the chosen parent is right.

    Parameters
    ----------
    chosen_cost, alternative_cost : float
        Cost of the chosen edge and of the cheapest alternative parent (inf if none).
    relative, threshold : float
        Relative distance of the edge and the tree-split threshold: an edge nearly as far as
        unrelated models may not exist at all.
    near : int, optional
        Candidate parents the layers do not put clearly behind the chosen one (:func:`near_tied`);
        None where the layers were not compared (the sparse path): the margin alone then.
    """
    no_alternative = not math.isfinite(alternative_cost)
    ratio = 0.0 if no_alternative else math.log(max(alternative_cost, 1e-300) / max(chosen_cost, 1e-300))
    margin = MARGIN_CLIP if no_alternative else max(-MARGIN_CLIP, min(MARGIN_CLIP, ratio))
    if near is not None:
        margin_term = sigmoid(PLACE_BIAS + PLACE_MARGIN_SLOPE * margin - PLACE_NEAR_TIED * near
                              + PLACE_NO_ALTERNATIVE * no_alternative)
    elif ratio < 0:
        margin_term = CONTESTED_PLACEMENT
    else:
        margin_term = sigmoid(PLACEMENT_BIAS + PLACEMENT_SLOPE * margin + PLACEMENT_NO_ALTERNATIVE * no_alternative)
    return margin_term * related_confidence(relative, threshold)


def tie_placement_confidence(relative: float, threshold: float) -> float:
    """Confidence that a parent the near-tie rule chose (:mod:`.ties`) is right: the counted share of such
    parents placed right (:data:`TIE_PLACEMENT`), times how far the edge is from the "unrelated" threshold."""
    return TIE_PLACEMENT * related_confidence(relative, threshold)


def related_confidence(relative: float, threshold: float) -> float:
    """How far an edge is from the "unrelated" threshold: sigmoid(4 log(threshold / relative)) (0 for
    models sharing nothing)."""
    if not math.isfinite(relative) or not math.isfinite(threshold):
        return 0.0 if not math.isfinite(relative) else 1.0
    return sigmoid(4.0 * math.log(max(threshold, 1e-12) / max(relative, 1e-12)))


def near_tied(effects: np.ndarray, own: int) -> int:
    """How many other candidate parents the layers do not put clearly behind the chosen one: entries of
    its row of layer effects (:func:`layer_effect` over each other candidate, ``own`` its own index)
    below :data:`NEAR_TIED_EFFECT`."""
    row = np.delete(np.asarray(effects, dtype=float), own)
    return int(np.sum(np.isfinite(row) & (row < NEAR_TIED_EFFECT)))


def layer_effect(parent_rms: np.ndarray, other_rms: np.ndarray) -> float:
    """How consistently the layers put ``parent`` nearer to a child than ``other``: the mean over
    layers of log(RMS(child - other) / RMS(child - parent)) over its standard deviation (an effect
    size; it does not grow with the number of layers, which are not independent replicates).

    ``parent_rms``, ``other_rms``: per-layer RMS differences to the child (NaN where a layer does not
    count for the pair, e.g. a re-initialised head). NaN with fewer than three common layers.
    """
    ok = np.isfinite(parent_rms) & np.isfinite(other_rms) & (parent_rms > 0) & (other_rms > 0)
    if ok.sum() < 3:
        return math.nan
    lr = np.log(other_rms[ok] / parent_rms[ok])
    sd = float(lr.std(ddof=1))
    mean = float(lr.mean())
    if sd <= 1e-12:
        return math.copysign(50.0, mean) if mean else 0.0
    return max(-50.0, min(50.0, mean / sd))


def direction_confidence(votes_forward: int, votes_total: int, regime_confidence: float) -> float:
    """Confidence that the edge points the right way, from per-layer kurtosis votes."""
    if votes_total == 0:
        return 0.5
    f = votes_forward / votes_total
    z = (2 * f - 1) * math.sqrt(votes_total)
    p_layers = sigmoid(DIRECTION_SLOPE * z + DIRECTION_BIAS)
    # If the regime itself is uncertain, the votes may point the wrong way as a whole.
    return regime_confidence * p_layers + (1 - regime_confidence) * (1 - p_layers)


def evidence_confidence(evidence: float, reading_confidence: float = 1.0, scale: float = 0.0,
                        counted: bool = False) -> float:
    """Confidence in an edge's direction from its summed cue evidence E in [-2, 2] (mother+) and the
    scale cue's vote ``scale`` in [-1, 1], read under a reading (regime, norm sign) that is right with
    probability ``reading_confidence`` (used with its log-odds times :data:`READING_ODDS_POWER`): a wrong
    reading turns the edge around, so the two mix like :func:`direction_confidence`'s votes. A reading at
    0.5 (a coin flip) gives 0.5 whatever the cues say.

    ``counted``: the reading's confidence is itself the share of edges it directs right, counted on
    fitting trees (a tree on the prior, ``direction.PRIOR_CONFIDENCE``: its edges are oriented by norm
    growth and the scale cue alone, and that count is how often they come out right; a tree beyond the
    calibrated radial share, :data:`RADIAL_FLAG_CONFIDENCE`): it is the edge's direction confidence as it
    stands."""
    r = min(max(reading_confidence, 0.0), 1.0)
    if counted:
        return r
    p = sigmoid(EVIDENCE_SLOPE * evidence + SCALE_SLOPE * scale + EVIDENCE_BIAS)
    if 0.0 < r < 1.0:
        r = sigmoid(READING_ODDS_POWER * math.log(r / (1.0 - r)))
    return r * p + (1.0 - r) * (1.0 - p)


# --- The domain the constants were calibrated on ---------------------------------------------------
#: The largest radial share (:func:`tree_radial_share`) of any tree the confidence constants were fitted
#: on: the 24 trees of the FITTING collections of ``benchmarks/generalise.py`` and their second draw
#: (``benchmarks/confidence_data.py``), 0.021-0.130 (``calibrate.py --generalise`` prints it). A tree
#: beyond it is unlike anything the calibration saw.
RADIAL_SHARE_MAX = 0.130
#: The direction confidence of every edge of a tree beyond :data:`RADIAL_SHARE_MAX`: the share of such trees
#: on the fitting collections whose reading directed most of their placed edges right, (right + 1) / (n + 2),
#: counted per tree, since a reading is right or wrong for the whole tree and its edges are not independent
#: draws (``calibrate.py --pooled`` counts it: ``flagged_count``). On two draws of the generalise fitting
#: collections (fit-*, fit2-*, fitx-0..2, fitw; typed C seeds 5, 13, 15 and D 200 have no such tree):
#: 3 trees of 4 (fit-llama-fft in fitx-2, 8 of 8 placed edges directed right, on both draws; an AdamW ViT
#: piece of fitw, 2 of 2; fitw's SGD + L2 ViT tree, 0 of 2), (3 + 1) / (4 + 2) = 0.667; by edge 18 of 20.
#: Before, such a tree read 0.5, a coin flip, which was no count (benchmarks/RESULTS.md, "Confidence sources
#: counted", branch confcal). Below 0.8, so no such edge reads as sure. Recount when the fitting collections
#: or the direction readings change.
RADIAL_FLAG_CONFIDENCE = 0.667


def radial_share(norm2: np.ndarray, sq: np.ndarray) -> float:
    """How much of the difference between two models lies along their own weights: the median over the
    layers that differ of min(|kappa_ab|, |kappa_ba|), where

        kappa_ab = <W_a, W_b - W_a> / (||W_a|| ||W_b - W_a||)
                 = (||W_b||^2 - ||W_a||^2 - ||W_b - W_a||^2) / (2 ||W_a|| ||W_b - W_a||),

    read from the norms and squared distances the pass keeps (``norm2``: (2, L) squared norms of a and
    b; ``sq``: (L,) squared distances). The norm-growth cue and the additivity refinement rest on
    updates nearly orthogonal to the weights (docs/METHOD.md, "Direction", "Refinement"): kappa near 0.
    NaN when no layer differs."""
    moved = np.isfinite(sq) & (sq > 0) & (norm2[0] > 0) & (norm2[1] > 0)
    if not moved.any():
        return math.nan
    a, b, d = norm2[0, moved], norm2[1, moved], sq[moved]
    k_ab = np.abs(b - a - d) / (2.0 * np.sqrt(a * d))
    k_ba = np.abs(a - b - d) / (2.0 * np.sqrt(b * d))
    return float(np.median(np.minimum(k_ab, k_ba)))


def tree_radial_share(norm: np.ndarray, sq_dist: np.ndarray, layers: np.ndarray, distance: np.ndarray,
                      members: np.ndarray) -> float:
    """A tree's radial share: the median over its models of :func:`radial_share` with its nearest
    other member (by ``distance``), which is nearly always its parent, a child or a sibling.

    Parameters
    ----------
    norm : ndarray (N, T)
        Per-model, per-tensor Frobenius norms (``WeightStatistics.norm``).
    sq_dist : ndarray (T, N, N)
        Squared distances per tensor (``WeightStatistics.sq_dist``).
    layers : ndarray of int
        The tensors the recovery reads.
    distance : ndarray (N, N)
        The recovery's pairwise distance.
    members : ndarray of int
        The tree's models (typed children such as quantized copies left out by the caller).
    """
    if len(members) < 2:
        return math.nan
    sub = distance[np.ix_(members, members)].astype(float)
    np.fill_diagonal(sub, np.inf)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(len(members)):
        j = int(np.argmin(sub[i]))
        if not np.isfinite(sub[i, j]):
            continue
        pair = np.array([int(members[i]), int(members[j])])
        pairs.append((norm[np.ix_(pair, layers)] ** 2, sq_dist[layers, pair[0], pair[1]]))
    return median_radial_share(pairs)


def median_radial_share(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """The median of :func:`radial_share` over a tree's pairs of each model with its nearest other member,
    given as (``norm2`` (2, L), ``sq`` (L,)): the one reading of a tree's radial share, whether the
    pairs come from the dense matrices (:func:`tree_radial_share`) or from the candidate pairs of the
    sparse path (:mod:`.sparse`). NaN when no pair moved."""
    shares = [s for s in (radial_share(n2, sq) for n2, sq in pairs) if math.isfinite(s)]
    return float(np.median(shares)) if shares else math.nan


def within_calibration(reading_confidence: float, note: str, share: float) -> tuple[float, str, bool]:
    """A tree reading's confidence and note, checked against the domain the confidence was calibrated
    on, and whether the tree lies beyond it: a tree whose radial share exceeds :data:`RADIAL_SHARE_MAX`
    is unlike the trees the constants were fitted on (issue 12: such a tree must not read 0.9 by a fit
    that never saw it). Its updates move along the weights themselves (e.g. Adam with L2 decay pulls every
    weight towards zero), so the norm cue may read the optimiser's pull rather than the orthogonal growth of
    fine-tuning. Its reading's confidence becomes the share of such fitting trees whose reading directed
    their edges right (:data:`RADIAL_FLAG_CONFIDENCE`, counted, whatever its basis), and each of its edges
    takes that share as its direction confidence (``evidence_confidence(..., counted=True)``), since the
    fitted maps do not hold there."""
    if not math.isfinite(share) or share <= RADIAL_SHARE_MAX or reading_confidence <= 0.5:
        return reading_confidence, note, False
    return RADIAL_FLAG_CONFIDENCE, (
        f"{note} Its updates lie along the weights' own direction more than in any tree the confidence was "
        f"calibrated on (radial share {share:.2f} > {RADIAL_SHARE_MAX:.2f}): its direction is given the share "
        f"of such fitting trees read right ({RADIAL_FLAG_CONFIDENCE:.0%}).").strip(), True


# --- A root's only child ----------------------------------------------------------------------------
#: Relations of the fine-tune skeleton (the forest's own edges; copies, adapters and merges are typed).
SKELETON_RELATIONS = ("finetune", "lora", "prune", "distill")
#: Confidence cap of an edge from a root to its only child in a tree of three or more skeleton models:
#: the share of such edges that were right on all the fitting collections pooled, (right + 1) / (n + 2)
#: (``calibrate.py --pooled`` counts them: 0.481 with fitp-2's chains; 7 of 15, 0.47, before them; 2 of 5 on
#: the first two draws, 0.43). Recount when placement or direction change. A candidate parent is never one
#: of the child's descendants, so this edge has no alternative and reads its placement as such, yet
#: reversing it (re-rooting the tree at the child) is the error it makes: a tree solved with its root on the
#: wrong side of one edge has exactly this shape.
SOLE_CHILD_CONFIDENCE = 0.481


def sole_child_edges(edges: list[tuple[str, str, str, bool]]) -> set[tuple[str, str]]:
    """The (parent, child) edges that :data:`SOLE_CHILD_CONFIDENCE` caps, from the edges as (parent,
    child, relation, constrained): a skeleton edge, not set by the user, from a model with no skeleton
    parent to its only skeleton child, in a connected skeleton of three or more models."""
    skeleton = [(p, c, k) for p, c, relation, k in edges if relation in SKELETON_RELATIONS]
    parent = {c: p for p, c, _ in skeleton}
    children: dict[str, list[str]] = {}
    for p, c, _ in skeleton:
        children.setdefault(p, []).append(c)

    def size(root: str) -> int:
        todo, seen = [root], 0
        while todo:
            seen += 1
            todo.extend(children.get(todo.pop(), []))
        return seen

    return {(p, c) for p, c, constrained in skeleton
            if not constrained and p not in parent and len(children[p]) == 1 and size(p) >= 3}


def capped(confidence: float, placement: float, direction: float) -> tuple[float, float, float]:
    """An edge's (confidence, placement, direction) with its confidence capped at
    :data:`SOLE_CHILD_CONFIDENCE`; the cap goes to the direction part (the re-rooting it guards
    against reverses the edge)."""
    if confidence <= SOLE_CHILD_CONFIDENCE:
        return confidence, placement, direction
    direction = min(direction, SOLE_CHILD_CONFIDENCE / max(placement, 1e-12))
    return placement * direction, placement, direction
