"""Calibrated relation confidences (docs/RELATIONS.md, ``relation_confidence``).

Each typed edge has a kind (:func:`kind_of`); its confidence is the rate of right edges of that kind
on a fitting typed set, shrunk towards the pooled rate of all typed edges (empirical Bayes, a prior
worth ten edges: a kind seen three times is not trusted on its own, and none reaches 1):
``benchmarks/calibrate_typed.py`` fits them and reports their calibration error on held-out sets
(benchmarks/RESULTS.md, "Typed lineage graph").
"""

from __future__ import annotations

#: Storage types a conversion's detail names (``fp32 -> bf16``: a cast).
DTYPES = ("fp64", "fp32", "fp16", "bf16")

#: Confidence per kind, fitted on the typed zoo's fitting collection (seed 0: 41 of 41 typed edges
#: right, pooled rate 0.977, prior strength 10 edges). Kinds it did not show (a distilled child, an
#: adapter whose update the weights do not confirm as low-rank) keep their detector's own value.
CONFIDENCE: dict[str, float] = {
    "adapter: card base": 0.981, "adapter: config base": 0.979, "convert: cast": 0.982,
    "convert: same precision": 0.985, "lora": 0.982, "merge: exact": 0.985, "merge: sparse": 0.988,
    "prune": 0.982, "quantized": 0.987,
}


def kind_of(relation: str, detail: str, evidence: str = "") -> str:
    """The calibration kind of a typed edge from its relation, detail and evidence."""
    if relation == "convert":
        sides = [s.strip() for s in detail.split(",")[0].split("->")]
        return "convert: cast" if len(sides) == 2 and all(s in DTYPES for s in sides) else "convert: same precision"
    if relation == "merge":
        return "merge: sparse" if detail.startswith("ties/dare") else "merge: exact"
    if relation == "adapter":
        if "do not confirm" in evidence:
            return "adapter: unconfirmed"
        return "adapter: card base" if "model card" in evidence else "adapter: config base"
    return relation


def confidence(kind: str, fallback: float) -> float:
    """The calibrated confidence of ``kind``; ``fallback`` (the detector's own) where none is fitted."""
    return CONFIDENCE.get(kind, fallback)
