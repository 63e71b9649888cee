"""Calibrate the relation confidences (issue 11) on a fitting typed set, report them on held-out ones.

Every typed edge the engine returns carries ``relation_confidence``: the probability that this
parent -> child edge is true and has this relation. The detectors give each edge a kind
(:func:`mother_core.relations.calibration.kind_of`: an exact or a sparse merge, a dtype cast or a
same-precision copy, an adapter whose base its config or only its model card names, ...); the
confidence of a kind is its rate of right edges on the fitting sets, shrunk towards the pooled rate
of all typed edges (empirical Bayes: (right + M p) / (n + M), p = (R + 1) / (N + 2) over all kinds,
M = ``PRIOR_EDGES``): a kind seen three times is not trusted on its own, and none reaches 0 or 1.
The held-out sets get the expected
calibration error (equal-width bins, as ``mother evaluate``) of the confidences the engine
reports (run it before copying the table in for the hand-set ones' error).

    python benchmarks/calibrate_typed.py --fit typed_zoo/seed0/typed --held-out typed_zoo/seed3/typed

Copy the printed table into ``mother_core/relations/calibration.py`` (``CONFIDENCE``). A merge parent's
edge is scored with its own confidence (the merge's, or lower where another relative could take its place:
kind ``merge: contested parent``, fitted on the typed profile C and D diagnosis sets, see
benchmarks/RESULTS.md "Merge parents, each with its own confidence"; the other kinds on the typed zoo's seed 0):

    python benchmarks/calibrate_typed.py --fit /tmp/typedc/seed{5,13,15,17,19,21,23,53,55,57}/typed \
        /tmp/typedd/seed{200,202,204,206,208}/typed --cache CACHE      # copy the contested row only
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import load_truth_edges  # noqa: E402
from mother_core.relations.calibration import CONFIDENCE, CONTESTED, CONTESTED_FALLBACK, kind_of  # noqa: E402
from mother_core.relations.vocabulary import parse_relation  # noqa: E402

N_BINS = 10
#: Strength of the pooled prior, in edges: a kind counts as this many edges at the pooled rate.
PRIOR_EDGES = 10


def typed_edges(folder: Path, cache: Path | None) -> list[tuple[str, float, bool]]:
    """(kind, reported relation_confidence, right) for every typed edge of one set."""
    truth = {(t.parent, t.child): t.relation for t in load_truth_edges(folder / "truth.json")}
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    evidence = {}
    if rec.problem is not None:
        for link in rec.problem.links:
            evidence[rec.model_ids[int(link["child"])]] = str(link.get("evidence", ""))
    rows = []
    for e in rec.edges:
        if not math.isfinite(e.relation_confidence):
            continue  # a plain fine-tune: its confidence is the placement's (benchmarks/calibrate.py)
        kind = kind_of(e.relation, e.relation_detail, evidence.get(e.child, ""))
        conf = float(e.relation_confidence)
        if e.relation == "merge":
            # A merge parent's edge is right when this parent is one of the child's: its own confidence, and its
            # own kind where another relative could take its place (merge.contest_parents).
            conf = float(e.confidence)
            if e.parent_note:
                kind = CONTESTED
        want = truth.get((e.parent, e.child))
        right = (e.parent, e.child) in truth and (want is None or parse_relation(want).value == e.relation)
        rows.append((kind, conf, bool(right)))
    return rows


def ece(conf: np.ndarray, right: np.ndarray) -> float:
    """Expected calibration error over ``N_BINS`` equal-width bins."""
    if conf.size == 0:
        return math.nan
    which = np.minimum((np.clip(conf, 0, 1) * N_BINS).astype(int), N_BINS - 1)
    return float(sum((which == b).sum() / conf.size * abs(conf[which == b].mean() - right[which == b].mean())
                     for b in range(N_BINS) if (which == b).any()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", nargs="+", type=Path, required=True, help="typed sets to fit on")
    ap.add_argument("--held-out", nargs="*", type=Path, default=[], help="typed sets to report on")
    ap.add_argument("--cache", type=Path, default=None, help="statistics cache folder")
    args = ap.parse_args()
    fit_rows = [r for f in args.fit for r in typed_edges(f, args.cache)]
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for kind, _, right in fit_rows:
        counts[kind][0] += 1
        counts[kind][1] += int(right)
    total, right_all = sum(n for n, _ in counts.values()), sum(k for _, k in counts.values())
    pooled_rate = (right_all + 1) / (total + 2)
    print("Fitted on " + ", ".join(f"{f.parent.name}/{f.name}" for f in args.fit)
          + f": {right_all} of {total} typed edges right, pooled rate {pooled_rate:.3f}\n")
    print("| kind | edges | right | fitted confidence | in the engine |")
    print("|---|---|---|---|---|")
    for kind in sorted(set(counts) | set(CONFIDENCE)):
        n, k = counts.get(kind, [0, 0])
        # A contested merge parent is one of two readings the residual cannot order: its prior is a coin flip
        # (CONTESTED_FALLBACK), not the pooled rate of edges no rival contests.
        prior = CONTESTED_FALLBACK if kind == CONTESTED else pooled_rate
        fitted = (k + PRIOR_EDGES * prior) / (n + PRIOR_EDGES)
        print(f"| {kind} | {n} | {k} | {fitted if n else math.nan:.3f} | {CONFIDENCE.get(kind, math.nan):.3f} |")
    if not args.held_out:
        return
    print("\n| held-out set | typed edges | right | mean confidence | ECE |")
    print("|---|---|---|---|---|")
    pooled: list[tuple[str, float, bool]] = []
    for folder in args.held_out:
        rows = typed_edges(folder, args.cache)
        pooled += rows
        _report(f"{folder.parent.name}/{folder.name}", rows)
    if len(args.held_out) > 1:
        _report("pooled", pooled)


def _report(name: str, rows: list[tuple[str, float, bool]]) -> None:
    conf = np.array([c for _, c, _ in rows])
    right = np.array([r for _, _, r in rows], dtype=float)
    print(f"| {name} | {len(rows)} | {int(right.sum())} | {conf.mean():.3f} | {ece(conf, right):.3f} |")


if __name__ == "__main__":
    main()
