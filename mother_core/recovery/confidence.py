"""Per-edge confidence: placement (is this the right parent?) and direction (is it the right way?).

Both are logistic maps of evidence a user can inspect:

- placement: the layers' effect size for the chosen parent over the best alternative
  (:func:`layer_effect`: a margin the layers disagree on is inside the noise between candidates), or
  where that was not measured (a parent beyond the cheapest candidates, a result re-read without it)
  the log of the cost ratio (1.0 is a tie, i.e. a coin flip); times how far the edge is from the
  "unrelated" threshold;
- direction (mother+): the edge's summed direction evidence E in [-2, 2] (kurtosis trend under the
  tree's regime plus norm growth, see ``recover.direction_evidence``); (paper method) the agreement
  of per-layer kurtosis votes with the regime, as a z-score (2f - 1) * sqrt(n) over n shared layers.

The slopes are calibration constants fitted on the FITTING collections of ``benchmarks/generalise.py``
(``benchmarks/calibrate.py --generalise``), never on the held-out ones reported (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Fitted by `python benchmarks/calibrate.py --generalise` on the FITTING collections of
# benchmarks/generalise.py only (78 edges from generator settings no held-out tree uses), never on the
# held-out collections the results report (see benchmarks/RESULTS.md, "Generalisation").
# a, b of sigmoid(a * x + b). There the margin over the best alternative parent separates right from
# wrong placements sharply: a tie (margin 0) is right about half the time.
PLACEMENT_SLOPE = 6.805
PLACEMENT_BIAS = -0.072
# Placement from the layers' effect size (layer_effect) for the chosen parent over the best alternative:
# sigmoid(LAYER_SLOPE * effect + LAYER_BIAS). Each layer is a replicate of the same comparison; a
# margin the layers disagree on is inside the noise between the candidates, however large it sums to.
# Fitted like the constants above (calibrate.py --generalise, FITTING collections only).
LAYER_SLOPE = 1.819
LAYER_BIAS = -0.594
#: Candidate parents per child whose layer effects are kept (the cheapest by cost).
LAYER_CANDIDATES = 6
# An edge kept although another parent is cheaper pairwise (chosen by the additivity refinement, or
# forced by the user) is contested: its placement confidence is the fraction of such edges placed
# right on the same fitting trees, (right + 1) / (n + 2), capped at a tie's sigmoid(PLACEMENT_BIAS): an
# edge with a cheaper alternative is never surer than one without (fitting: 4 of 6 right, 0.62, capped).
CONTESTED_PLACEMENT = 0.48
# The paper method's vote-based direction confidence (not refitted).
DIRECTION_SLOPE = 0.6
DIRECTION_BIAS = 0.0
# Direction: fitted jointly with direction.PRIOR_CONFIDENCE through the reading's confidence
# (evidence_confidence): most of the uncertainty is whether the tree's reading is right.
EVIDENCE_SLOPE = 0.0
EVIDENCE_BIAS = 3.145


@dataclass(frozen=True)
class ConfidenceParts:
    placement: float
    direction: float

    @property
    def combined(self) -> float:
        """Probability that the edge is placed *and* directed right (parts treated as independent)."""
        return self.placement * self.direction


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def placement_confidence(chosen_cost: float, alternative_cost: float, relative: float, threshold: float) -> float:
    """Confidence that the chosen parent is right.

    Parameters
    ----------
    chosen_cost, alternative_cost : float
        Cost of the chosen edge and of the cheapest alternative parent (inf if none).
    relative, threshold : float
        Relative distance of the edge and the tree-split threshold: an edge nearly as far as
        unrelated models may not exist at all.
    """
    if not math.isfinite(alternative_cost):
        margin_term = 1.0
    elif alternative_cost < chosen_cost:
        margin_term = CONTESTED_PLACEMENT
    else:
        ratio = max(alternative_cost, 1e-300) / max(chosen_cost, 1e-300)
        margin_term = sigmoid(PLACEMENT_SLOPE * math.log(ratio) + PLACEMENT_BIAS)
    if not math.isfinite(relative) or not math.isfinite(threshold):
        related_term = 0.0 if not math.isfinite(relative) else 1.0  # models sharing nothing: unrelated
    else:
        related_term = sigmoid(4.0 * math.log(max(threshold, 1e-12) / max(relative, 1e-12)))
    return margin_term * related_term


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


def layer_placement_confidence(effect: float, relative: float, threshold: float) -> float:
    """Confidence that the chosen parent is right from the layers' effect size over the best
    alternative (:func:`layer_effect`), times the same "related at all" term as
    :func:`placement_confidence`."""
    return sigmoid(LAYER_SLOPE * effect + LAYER_BIAS) * placement_confidence(1.0, math.inf, relative, threshold)


def direction_confidence(votes_forward: int, votes_total: int, regime_confidence: float) -> float:
    """Confidence that the edge points the right way, from per-layer kurtosis votes."""
    if votes_total == 0:
        return 0.5
    f = votes_forward / votes_total
    z = (2 * f - 1) * math.sqrt(votes_total)
    p_layers = sigmoid(DIRECTION_SLOPE * z + DIRECTION_BIAS)
    # If the regime itself is uncertain, the votes may point the wrong way as a whole.
    return regime_confidence * p_layers + (1 - regime_confidence) * (1 - p_layers)


def evidence_confidence(evidence: float, reading_confidence: float = 1.0) -> float:
    """Confidence in an edge's direction from its summed cue evidence E in [-2, 2] (mother+), read
    under a reading (regime, norm sign) that is right with probability ``reading_confidence``: a wrong
    reading turns the evidence around, so the two mix like :func:`direction_confidence`'s votes."""
    p = sigmoid(EVIDENCE_SLOPE * evidence + EVIDENCE_BIAS)
    return reading_confidence * p + (1.0 - reading_confidence) * (1.0 - p)
