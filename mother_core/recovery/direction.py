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
3. **prior**: otherwise specialization with norm growth, the common case of fine-tuning.

The reading's confidence (a probability that it is the right one) goes into every edge's direction
confidence (:mod:`.confidence`): an edge of a tree whose reading is a coin flip is itself a coin flip
on the cues that reading flips.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

PRIOR = ("specialization", 1.0)
#: Own evidence counts from this margin (penalty units) between the best and next reading: above
#: mirror ties. 1.0 (about one edge's worth of agreement) sent every tree of the zoo's own splits to
#: the prior, UNet continued-pre-training trees included (zoo small: 87% -> 77% directed); the fitting
#: collections were indifferent between 0.5 and 1e9 (benchmarks/RESULTS.md, "Generalisation").
OWN_MARGIN = 0.05
#: Pooled evidence over an architecture's trees counts from this margin (mirror ties sum to ties).
POOLED_MARGIN = 0.05
#: Confidence of a reading that rests on the prior alone: the fraction of the fitting collections'
#: multi-model trees whose true direction the prior reading gives (benchmarks/generalise.py).
PRIOR_CONFIDENCE = 0.50

BASES = ("own", "pooled", "prior", "fixed")


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
    ``"prior"`` (nothing says otherwise: specialization, norm growth) or ``"fixed"`` (set by the user).
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
            "prior": f"Nothing in this tree or its architecture's other trees tells its direction; it rests "
                     f"on the prior ({what}). Treat its edges' directions as uncertain.",
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
                    own_margin: float | None = None, pooled_margin: float | None = None) -> dict[int, ChosenReading]:
    """Pick each tree's reading by the rule of the module docstring.

    Parameters
    ----------
    solved : dict tree -> list of Reading
        Every reading tried for the tree (one only when the user fixed regime and norm direction).
    scales : dict tree -> float
        lambda * mean(D) of the tree: the cost of one unit of direction penalty.
    groups : dict tree -> hashable
        Architecture of each tree; trees of one architecture pool their evidence.
    """
    own_margin = OWN_MARGIN if own_margin is None else own_margin
    pooled_margin = POOLED_MARGIN if pooled_margin is None else pooled_margin
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
        if margin > own_margin:
            out[t] = ChosenReading(best[0], best[1], _sure(margin), "own")
            continue
        group = pooled[groups[t]]
        shared = [k for k in order if k in group]
        p_best, p_margin = _margin(group, shared)
        if p_margin > pooled_margin and math.isfinite(p_margin):
            out[t] = ChosenReading(p_best[0], p_best[1], _sure(p_margin), "pooled")
            continue
        prior = order[0]  # the prior among the readings allowed
        out[t] = ChosenReading(prior[0], prior[1], PRIOR_CONFIDENCE, "prior")
    return out


#: Confidence in a tree's own or pooled reading: sigmoid(READING_SLOPE * margin), the margin in
#: direction-penalty units (fitted with the direction constants by ``calibrate.py --generalise``).
READING_SLOPE = 3.465


def _sure(margin: float) -> float:
    """Confidence in a reading from its margin in penalty units: sigmoid(READING_SLOPE * margin)."""
    return 1.0 / (1.0 + math.exp(-READING_SLOPE * min(margin, 50.0)))


def architecture_key(present: np.ndarray) -> bytes:
    """A tree's architecture: which tensor slots (name and shape) its first model has."""
    return np.packbits(present.astype(bool)).tobytes()
