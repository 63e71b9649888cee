"""Merge parents counted per evidence kind on typed sets (issue 11; benchmarks/RESULTS.md, "Merge parents'
confidence per evidence kind").

For every typed set, the engine's recovery (the defaults, and with ``--signs`` once more with the opt-in sign
reading, ``merge-signs``) is scored edge by edge against ``truth.json``: each merge parent edge with its kind
(:func:`mother_core.relations.calibration.kind_of` on its detail and evidence; a parent another relative contests
is kind ``merge: contested parent``), its own confidence, and whether this parent is a true parent of the child
with relation ``merge``. Printed: per kind and run, the edges, the right ones and the wrong ones at confidence
>= 0.8; the wrong edges at >= 0.8 of any relation; with ``--list``, every merge edge of the kinds named.

    python benchmarks/merge_kinds.py --sets /work/data/typedd/seed{224,226,228}/typed --signs --cache CACHE \
        --json /tmp/out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import load_truth_edges  # noqa: E402
from mother_core.relations.calibration import CONTESTED, kind_of  # noqa: E402
from mother_core.relations.detect import DETECTORS  # noqa: E402
from mother_core.relations.merge import ONE_BASE_TEST  # noqa: E402
from mother_core.relations.vocabulary import parse_relation  # noqa: E402

HIGH = 0.8
RUNS = {"default": RecoverySettings(), "signs": RecoverySettings(relations=",".join(DETECTORS) + ",merge-signs")}


def edge_rows(folder: Path, cache: Path | None, runs: list[str]) -> list[dict]:
    """One row per recovered edge of ``folder`` and run: set, run, parent, child, relation, kind, confidence,
    whether right."""
    truth = {(t.parent, t.child): t.relation for t in load_truth_edges(folder / "truth.json")}
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rows = []
    for run in runs:
        t0 = time.time()
        rec = recover(stats, RUNS[run])
        evidence = {}
        if rec.problem is not None:
            for link in rec.problem.links:
                evidence[rec.model_ids[int(link["child"])]] = str(link.get("evidence", ""))
        for e in rec.edges:
            want = truth.get((e.parent, e.child))
            # (a truth without relations, issue 12's generalise collections, holds no merge: a merge edge is wrong)
            right = (e.parent, e.child) in truth and (parse_relation(want).value == e.relation if want is not None
                                                      else e.relation != "merge")
            kind = e.relation
            if math.isfinite(e.relation_confidence):
                kind = kind_of(e.relation, e.relation_detail, evidence.get(e.child, ""))
            if e.relation == "merge" and e.parent_note:
                kind = CONTESTED
            if e.relation == "merge" and "(signs of its entries)" in e.relation_detail and kind != CONTESTED:
                kind = "merge: signs"  # (how the script tells the sign reading before the engine named its kind)
            if e.relation == "merge" and ONE_BASE_TEST in evidence.get(e.child, "") and kind != CONTESTED:
                kind = "merge: exact, one base test"
            rows.append({"set": str(folder), "run": run, "parent": e.parent, "child": e.child,
                         "relation": e.relation, "detail": e.relation_detail, "kind": kind,
                         "confidence": float(e.confidence), "relation_confidence": float(e.relation_confidence),
                         "note": e.parent_note, "right": bool(right),
                         "evidence": evidence.get(e.child, "") if e.relation == "merge" else ""})
        print(f"  {folder} {run}: {len(rec.edges)} edges, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], listed: list[str]) -> None:
    """Per kind and run: merge parent edges, right, wrong at >= 0.8; wrong edges at >= 0.8 of any relation."""
    table: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in rows:
        if r["relation"] != "merge":
            continue
        t = table[(r["run"], r["kind"])]
        t[0] += 1
        t[1] += r["right"]
        t[2] += (not r["right"]) and r["confidence"] >= HIGH
        t[3] += r["confidence"] >= HIGH
    print("| run | kind | merge parent edges | right | at >= 0.8 | wrong at >= 0.8 |")
    print("|---|---|---|---|---|---|")
    for (run, kind), (n, right, wrong_high, high) in sorted(table.items()):
        print(f"| {run} | {kind} | {n} | {right} | {high} | {wrong_high} |")
    for run in sorted({r["run"] for r in rows}):
        mine = [r for r in rows if r["run"] == run]
        high = [r for r in mine if r["confidence"] >= HIGH]
        wrong = [r for r in high if not r["right"]]
        merge_wrong = [r for r in wrong if r["relation"] == "merge"]
        print(f"{run}: wrong at >= 0.8 {len(wrong)} of {len(high)} (merge parents {len(merge_wrong)}); "
              f"edges right {sum(r['right'] for r in mine)} of {len(mine)}")
        for r in wrong:
            print(f"   {Path(r['set']).parent.name} {r['parent']} -> {r['child']} {r['relation']} {r['kind']} "
                  f"{r['confidence']:.3f} {r['detail']}")
    for r in rows:
        if r["relation"] == "merge" and r["kind"] in listed:
            print(f"  [{r['run']}] {Path(r['set']).parent.name} {r['parent']} -> {r['child']} {r['kind']} "
                  f"{r['confidence']:.3f} right={r['right']} {r['detail']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--signs", action="store_true", help="also run with the opt-in sign reading (merge-signs)")
    ap.add_argument("--signs-only", action="store_true",
                    help="only the run with the sign reading (it holds the default run's exact merges too)")
    ap.add_argument("--json", type=Path, default=None, help="write every edge row here")
    ap.add_argument("--list", nargs="*", default=[], help="kinds whose merge edges are listed one by one")
    args = ap.parse_args()
    runs = ["signs"] if args.signs_only else ["default", "signs"] if args.signs else ["default"]
    rows: list[dict] = []
    for folder in args.sets:
        rows += edge_rows(folder, args.cache, runs)
        if args.json is not None:
            args.json.write_text(json.dumps(rows))
    report(rows, args.list)


if __name__ == "__main__":
    main()
