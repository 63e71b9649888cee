"""How each tree reads its direction cues: its own evidence, the forest's (per architecture), or the prior.

A tree's direction rests on two readings (method.md, "Signals" 2; :func:`.recover.direction_evidence`):
the kurtosis *regime* (specialization: kurtosis falls from parent to child; generalization: it rises)
and the *norm sign* (norms grow from parent to child, or shrink under strong weight decay). With
``regime="auto"`` each tree is solved under every reading and a branching tree is cheap under one of
them only. A tree of two models, or a chain, reads equally well either way: left to itself, it picks
whichever reading fits its one edge, and every such edge then "agrees" with the reading it chose
(issue 12: a forest of base + one child families came out half reversed at confidence 0.95).

Rule (constants chosen on the fitting collections of ``benchmarks/generalise.py`` only):

1. **own**: a tree whose best reading beats the next by more than :data:`OWN_MARGIN` direction-penalty
   units keeps it. A tree that reads equally well reversed cannot: a base with one child, or a chain,
   reversed is still a tree, and the fully mirrored reading (other regime, other norm sign) gives it
   exactly the same cost, so its margin is 0. A branching tree reversed is not a tree: it has a margin;
2. **pooled**: otherwise the trees of the same architecture (same tensor names and shapes) pool their
   evidence: each reading's excess penalty over the tree's best, summed over the group; if the best
   pooled reading beats the next by :data:`POOLED_MARGIN`, the tree takes it;
3. **growth**: otherwise norms are taken to grow, the prior (:data:`GROWTH_PRIOR` of the fitting
   trees). A tree that reads as well mirrored still tells its regime *given* growth (along a chain
   its kurtosis moves with or against its norms): it keeps the better of its two growing readings
   when that beats the other by :data:`OWN_MARGIN`, and is right as often as growth is;
4. **prior**: otherwise specialization with norm growth, the kurtosis cue left out
   (:func:`.recover.prior_cues`).

Norms shrinking from parent to child (strong weight decay) is the exception, so in steps 1 and 2 a
shrinking reading is taken only when it beats the best growing reading by :data:`SHRINK_MARGIN`: the
margin whose odds outweigh the prior odds of growth. A tree whose siblings lie nearly on a line
reads almost as well mirrored, and without this a small margin reversed whole trees whose norms grow
(issue 10: fit-mixed's continued-pre-training tree read "shrinking" by 0.21 units, all its edges
reversed, and a two-model family of its architecture borrowed the reading).

The reading's confidence (a probability that it is the right one) goes into every edge's direction
confidence (:mod:`.confidence`): an edge of a tree whose reading is a coin flip is itself a coin flip
on the cues that reading flips.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

#: Own evidence counts from this margin (penalty units) between the best and next reading: above
#: mirror ties. 1.0 (about one edge's worth of agreement) sent every tree of the zoo's own splits to
#: the prior, UNet continued-pre-training trees included (zoo small: 87% -> 77% directed); the fitting
#: collections were indifferent between 0.5 and 1e9 (benchmarks/RESULTS.md, "Generalisation").
OWN_MARGIN = 0.05
#: Pooled evidence over an architecture's trees counts from this margin (mirror ties sum to ties).
POOLED_MARGIN = 0.05
#: Confidence of a reading that rests on the prior alone, and of each of its edges' direction
#: (:func:`.confidence.evidence_confidence`, ``counted``): the share of such edges directed right on the
#: fitting trees of this shape (``benchmarks/generalise.py --only fitting-prior``: every fitting recipe as a
#: base with one child, 41 collections; ``calibrate.py --pooled`` counts them): 49 of 55 placed edges, not a
#: root's only child, in trees within the calibrated radial share; by the rule of succession (49 + 1) /
#: (55 + 2) = 0.877 (Wilson 95% interval from 0.78). It was 0.5 while the fitting data held one such edge.
#: A tree beyond the radial share still reads 0.5 (:func:`.confidence.within_calibration`).
PRIOR_CONFIDENCE = 0.877

#: Probability that a tree's norms grow from parent to child: of the fitting collections' multi-model
#: trees, 10 of 12 grow along most of their true edges (``calibrate.py --generalise`` counts them); by
#: the rule of succession (10 + 1) / (12 + 2). The confidence of a reading on basis "growth".
#: With the second fitting draw ``calibrate.py`` counts 20 of 24 (0.808); that recount was checked and
#: not adopted: it lost a barely-trained edge and held-out AUROC (benchmarks/RESULTS.md, issue 12).
GROWTH_PRIOR = 0.786


@dataclass(frozen=True)
class Reading:
    """One tree solved under one reading: its arborescence's total cost and direction penalty."""

    regime: str
    norm_sign: float
    tree_cost: float
    penalty: float
    prior_rank: int  # order of prior preference (0 = the prior)


@dataclass(frozen=True)
class ChosenReading:
    """The reading a tree uses, how sure it is, and what it rests on.

    ``basis``: ``"own"`` (the tree's own evidence), ``"pooled"`` (trees of the same architecture),
    ``"growth"`` (norms taken to grow; the regime from the tree's own evidence given that), ``"prior"``
    (nothing says otherwise: specialization, norm growth) or ``"fixed"`` (set by the user).
    """

    regime: str
    norm_sign: float
    confidence: float
    basis: str

    @property
    def note(self) -> str:
        """A sentence for the user on what this tree's direction rests on."""
        what = f"{self.regime}, norms {'growing' if self.norm_sign > 0 else 'shrinking'} from parent to child"
        return {
            "own": f"Direction read from this tree's own evidence ({what}).",
            "pooled": f"This tree's own evidence is too weak to tell its direction; it borrows the reading "
                      f"of the other trees of its architecture ({what}).",
            "growth": f"Nothing in this tree or its architecture's other trees tells whether its norms grow "
                      f"or shrink; they are taken to grow, as in most fine-tuning, and its own evidence gives "
                      f"the regime ({what}). Its edges are as sure as that is.",
            "prior": f"Nothing in this tree or its architecture's other trees tells its direction; it rests "
                     f"on the prior ({what}), which directs such edges right {PRIOR_CONFIDENCE:.0%} of the time "
                     f"on the fitting trees of this shape.",
            "fixed": f"Direction read as set ({what}).",
        }[self.basis]


def _excess(readings: list[Reading], scale: float) -> dict[tuple[str, float], float]:
    """Each reading's cost above the tree's best, in direction-penalty units."""
    best = min(r.tree_cost for r in readings)
    return {(r.regime, r.norm_sign): (r.tree_cost - best) / scale for r in readings}


def _margin(excess: dict[tuple[str, float], float], order: list[tuple[str, float]]) -> tuple[tuple[str, float], float]:
    """The best reading (ties go to the earlier in ``order``) and its margin over the next."""
    ranked = sorted(order, key=lambda k: (round(excess[k], 9), order.index(k)))
    margin = excess[ranked[1]] - excess[ranked[0]] if len(ranked) > 1 else math.inf
    return ranked[0], margin


def choose_readings(solved: dict[int, list[Reading]], scales: dict[int, float], groups: Mapping[int, Hashable],
                    own_margin: float | None = None, pooled_margin: float | None = None,
                    shrink_margin: float | None = None) -> dict[int, ChosenReading]:
    """Pick each tree's reading by the rule of the module docstring.

    Parameters
    ----------
    solved : dict tree -> list of Reading
        Every reading tried for the tree (one only when the user fixed regime and norm direction).
    scales : dict tree -> float
        lambda * mean(D) of the tree: the cost of one unit of direction penalty.
    groups : dict tree -> hashable
        Architecture of each tree; trees of one architecture pool their evidence.
    own_margin, pooled_margin, shrink_margin : float, optional
        The rule's margins (default :data:`OWN_MARGIN`, :data:`POOLED_MARGIN`, :data:`SHRINK_MARGIN`).
    """
    own_margin = OWN_MARGIN if own_margin is None else own_margin
    pooled_margin = POOLED_MARGIN if pooled_margin is None else pooled_margin
    shrink_margin = SHRINK_MARGIN if shrink_margin is None else shrink_margin
    out: dict[int, ChosenReading] = {}
    excess = {t: _excess(rs, max(scales[t], 1e-300)) for t, rs in solved.items()}
    orders = {t: [(r.regime, r.norm_sign) for r in sorted(rs, key=lambda r: r.prior_rank)] for t, rs in solved.items()}
    pooled: dict[object, dict[tuple[str, float], float]] = {}
    for t, ex in excess.items():
        acc = pooled.setdefault(groups[t], {})
        for k, v in ex.items():
            acc[k] = acc.get(k, 0.0) + v
    for t in solved:
        order = orders[t]
        if len(order) == 1:
            out[t] = ChosenReading(order[0][0], order[0][1], 1.0, "fixed")
            continue
        best, margin = _margin(excess[t], order)
        if margin > own_margin and _sign_read(excess[t], best, shrink_margin):
            out[t] = ChosenReading(best[0], best[1], _sure(margin), "own")
            continue
        group = pooled[groups[t]]
        shared = [k for k in order if k in group]
        p_best, p_margin = _margin(group, shared)
        if p_margin > pooled_margin and math.isfinite(p_margin) and _sign_read(group, p_best, shrink_margin):
            out[t] = ChosenReading(p_best[0], p_best[1], _sure(p_margin), "pooled")
            continue
        growing = [k for k in order if k[1] > 0]
        if len(growing) > 1 and len(growing) < len(order):  # the norm sign was free, the regime too
            g_best, g_margin = _margin(excess[t], growing)
            if g_margin > own_margin:
                out[t] = ChosenReading(g_best[0], g_best[1], GROWTH_PRIOR, "growth")
                continue
        prior = order[0]  # the prior among the readings allowed
        out[t] = ChosenReading(prior[0], prior[1], PRIOR_CONFIDENCE, "prior")
    return out


def _sign_read(excess: dict[tuple[str, float], float], best: tuple[str, float], shrink_margin: float) -> bool:
    """Whether the evidence ``excess`` (a tree's, or pooled) may read ``best``'s norm sign: growth always;
    shrinkage only when the best shrinking reading beats the best growing one by ``shrink_margin``."""
    if best[1] > 0:
        return True
    growing = [v for k, v in excess.items() if k[1] > 0]
    if not growing:
        return True  # only shrinking readings were solved
    shrinking = [v for k, v in excess.items() if k[1] < 0]
    return min(growing) - min(shrinking) > shrink_margin


#: Confidence in a tree's own or pooled reading: sigmoid(READING_SLOPE * margin), the margin in
#: direction-penalty units (fitted with the direction constants by ``calibrate.py --generalise``).
READING_SLOPE = 3.465
#: A shrinking reading needs this margin (penalty units) over the best growing one: the margin whose
#: odds, as any reading's (sigmoid(READING_SLOPE * margin)), outweigh the prior odds of growth:
#: logit(GROWTH_PRIOR) / READING_SLOPE = 0.375. The fitting trees that read "shrinking" by a margin
#: did so by 0.21 (a tree whose norms grow on every edge: all its edges reversed) and 0.37 (a merged-LoRA
#: tree whose norms grow on 3 of 9 edges: 7 of 9 right under either sign).
SHRINK_MARGIN = math.log(GROWTH_PRIOR / (1.0 - GROWTH_PRIOR)) / READING_SLOPE


def _sure(margin: float) -> float:
    """Confidence in a reading from its margin in penalty units: sigmoid(READING_SLOPE * margin)."""
    return 1.0 / (1.0 + math.exp(-READING_SLOPE * min(margin, 50.0)))


def architecture_key(present: np.ndarray) -> bytes:
    """A tree's architecture: which tensor slots (name and shape) its first model has."""
    return np.packbits(present.astype(bool)).tobytes()
