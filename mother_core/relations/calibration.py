"""Calibrated relation confidences (docs/RELATIONS.md, ``relation_confidence``).

Each typed edge has a kind (:func:`kind_of`); its confidence is the rate of right edges of that kind
on a fitting typed set, shrunk towards the pooled rate of all typed edges (empirical Bayes, a prior
worth ten edges: a kind seen three times is not trusted on its own, and none reaches 1):
``benchmarks/calibrate_typed.py`` fits them and reports their calibration error on held-out sets
(benchmarks/RESULTS.md, "Typed lineage graph"; the later rows each name their own fitting sets).
"""

from __future__ import annotations

#: Storage types a conversion's detail names (``fp32 -> bf16``: a cast).
DTYPES = ("fp64", "fp32", "fp16", "bf16")
#: Words of a sparse merge's evidence when its entries confirm it (:data:`.merge.EQUAL_SHARE`): TIES and
#: DARE keep the base's value exactly wherever every input's entry was trimmed or dropped.
EQUAL_ENTRIES = "of its entries equal"
#: Words of a depth-pruned child's detail when its layers were mapped onto its parent's (:mod:`.depth`).
LAYERS_KEPT = "layers kept"

#: Confidence per kind, fitted on the typed zoo's fitting collection only (seed 0: 42 of 42 typed edges
#: right, pooled rate 0.977, prior strength 10 edges; refitted after sparse merges were told by their
#: equal entries, ``benchmarks/calibrate_typed.py``; held-out seeds 1 and 3: benchmarks/RESULTS.md). Kinds
#: it did not show (a distilled child, fitted since on profile S below; an adapter whose update the weights do
#: not confirm as low-rank, a sparse merge whose entries do not confirm it) keep their detector's own value.
CONFIDENCE: dict[str, float] = {
    "adapter: card base": 0.981, "adapter: config base": 0.979, "convert: cast": 0.983,
    "convert: same precision": 0.986, "lora": 0.983, "merge: exact": 0.986, "merge: sparse": 0.988,
    "prune": 0.983, "quantized": 0.988,
    # A merge parent another relative can take the place of (:func:`.merge.contest_parents`), fitted on the typed
    # profile C seeds 5, 13, 15, 17, 19, 21, 23, 53, 55, 57 and D seeds 200-208 (even): 6 of 16 right, shrunk
    # towards a coin flip (:data:`CONTESTED_FALLBACK`), not the pooled rate (benchmarks/RESULTS.md, "Merge parents,
    # each with its own confidence").
    "merge: contested parent": 0.423,
    # A layer-stacking merge (relations/stack.py), fitted on the typed profile S seeds 400, 402, 404 (mergekit
    # passthrough stacks among the other relations): 30 of 30 stack parents right, shrunk towards those sets'
    # pooled rate 0.989 (91 of 91 typed edges); held-out S 401, 403: benchmarks/RESULTS.md, "Stacks in the typed
    # zoo and their calibrated confidence".
    "merge: passthrough": 0.997,
    # A depth-pruned child's layer map (relations/depth.py), fitted on the typed profile S seeds 400-410 (even; one
    # or two students each): 12 of 12 right, shrunk towards those sets' pooled rate 0.995 (186 of 186 typed edges);
    # held-out S 401, 403: benchmarks/RESULTS.md, "Distill links calibrated, detector reruns read once". A forest edge
    # read ``distill`` by its shapes alone (kind "distill: shapes only") is no such link and keeps its own 0.7.
    "distill": 0.998,
}


#: The kind of a merge parent another relative can take the place of (:func:`.merge.contest_parents`); its
#: confidence is never more than the merge's own.
CONTESTED = "merge: contested parent"
#: Its confidence where none is fitted, and the prior its fitted rate is shrunk towards: either of two readings.
CONTESTED_FALLBACK = 0.5


def contested_confidence() -> float:
    """The confidence of a contested merge parent (:data:`CONTESTED`): the rate of right ones where fitted."""
    return CONFIDENCE.get(CONTESTED, CONTESTED_FALLBACK)


def kind_of(relation: str, detail: str, evidence: str = "") -> str:
    """The calibration kind of a typed edge from its relation, detail and evidence."""
    if relation == "convert":
        sides = [s.strip() for s in detail.split(",")[0].split("->")]
        return "convert: cast" if len(sides) == 2 and all(s in DTYPES for s in sides) else "convert: same precision"
    if relation == "merge":
        if detail.startswith("passthrough"):  # layers stacked (relations/stack.py): fitted on typed profile S
            return "merge: passthrough"
        if not detail.startswith("ties/dare"):
            return "merge: exact"
        # A sparse merge whose entries do not confirm it is another kind: every sparse merge of the
        # fitting set kept its base's entries (equal share 0.32-0.56), while fine-tunes read as sparse
        # merges keep none (issue 12: a barely trained child at residual 0.39 read 0.99 as "sparse").
        return "merge: sparse" if EQUAL_ENTRIES in evidence else "merge: sparse, unconfirmed"
    if relation == "distill" and LAYERS_KEPT not in detail:
        # A forest edge read as ``distill`` by its shapes alone (detect.label_edge), not the depth detector's layer
        # map (relations/depth.py): every such edge of the fitting profile S sets was wrong (a stack's parent hung
        # under the stack's fine-tune, 0 of 7), a reading the calibrated layer map's rate does not speak for.
        return "distill: shapes only"
    if relation == "adapter":
        if "do not confirm" in evidence:
            return "adapter: unconfirmed"
        return "adapter: card base" if "model card" in evidence else "adapter: config base"
    return relation


def confidence(kind: str, fallback: float) -> float:
    """The calibrated confidence of ``kind``; ``fallback`` (the detector's own) where none is fitted."""
    return CONFIDENCE.get(kind, fallback)
