"""Typed lineage on the typed zoo (issue 11): MDGBench's scores, a table per relation, an ablation per
detector.

Each set is a folder of models plus ``truth.json`` with typed edges (``mother zoo typed --out DIR``;
even seeds are the fitting collection, odd seeds the held-out one). The number of families is never
given. Statistics are computed once per set (one streaming pass); every row re-solves from them.

    python benchmarks/typed.py --sets typed_a/typed typed_b/typed
    python benchmarks/typed.py --make 0 1 --size small --out /tmp/typed_zoo   # generate, then score
    python benchmarks/typed.py --make 5 --profile C --out /tmp/typedc --no-ablation   # profile C (sets
                                                                 # made the way other people's are)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import evaluate, load_truth_edges  # noqa: E402
from mother_core.relations.detect import DETECTORS  # noqa: E402

ABLATIONS: list[tuple[str, RecoverySettings]] = [
    ("all detectors (default)", RecoverySettings()),
    ("no detectors (every edge a fine-tune: the engine before this issue)", RecoverySettings(relations="none")),
] + [(f"without {d}", RecoverySettings(relations=",".join(x for x in DETECTORS if x != d))) for d in DETECTORS]


def make_sets(seeds: list[int], size: str, out: Path, profile: str = "auto") -> list[Path]:
    """Generate typed sets with the zoo's own command (real training and tools)."""
    sets = []
    for seed in seeds:
        folder = out / f"seed{seed}"
        if not (folder / "typed" / "truth.json").exists():
            subprocess.run([sys.executable, "-m", "mother_core", "zoo", "typed", "--out", str(folder),
                            "--size", size, "--seed", str(seed), "--profile", profile], check=True)
        sets.append(folder / "typed")
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="*", default=[], type=Path, help="typed set folders (with truth.json)")
    ap.add_argument("--make", nargs="*", type=int, default=[], help="seeds to generate with `mother zoo typed`")
    ap.add_argument("--size", default="small")
    ap.add_argument("--out", type=Path, default=Path("typed_zoo"))
    ap.add_argument("--profile", default="auto", choices=["auto", "A", "B", "C", "D", "E", "S"],
                    help="generator profile of --make (auto: A for even seeds, B for odd ones)")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--cache", type=Path, default=None,
                    help="statistics cache folder (a warm cache makes 'pass s' a cache read, not a pass)")
    args = ap.parse_args()
    sets = list(args.sets) + make_sets(args.make, args.size, args.out, args.profile)
    if not sets:
        ap.error("give --sets or --make")
    rows: dict[str, list] = defaultdict(list)
    per_relation: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    confidence_rows: list[str] = []
    print("| set | models | true edges | edge P | edge R | edge F1 | family ARI | reachability | relation acc. "
          "| pass s | solve s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for folder in sets:
        truth = load_truth_edges(folder / "truth.json")
        t0 = time.perf_counter()
        found = discover([folder])
        stats = compute_statistics(found, device="cpu", cache_dir=args.cache)
        t_pass = time.perf_counter() - t0
        for name, settings in ABLATIONS if not args.no_ablation else ABLATIONS[:1]:
            t1 = time.perf_counter()
            rec = recover(stats, settings)
            t_solve = time.perf_counter() - t1
            ev = evaluate(rec, truth)
            rows[name].append(ev)
            if name == ABLATIONS[0][0]:
                print(f"| {folder.parent.name}/{folder.name} | {len(rec.models)} | {ev.n_truth_edges} | "
                      f"{ev.edge_precision:.3f} | {ev.edge_recall:.3f} | {ev.edge_f1:.3f} | "
                      f"{ev.adjusted_rand_index:.3f} | {ev.reachability:.3f} | {ev.relation_accuracy:.3f} | "
                      f"{t_pass:.1f} | {t_solve:.2f} |")
                confidence_rows.append(
                    f"| {folder.parent.name}/{folder.name} | {ev.n_recovered_edges} | {ev.n_correct} | "
                    f"{ev.expected_calibration_error:.3f} | {ev.confidence_auroc:.2f} | "
                    f"{ev.n_confident_wrong} of {ev.n_confident} |")
                for rel, (k, hit, typed) in ev.per_relation.items():
                    per_relation[rel][0] += k
                    per_relation[rel][1] += hit
                    per_relation[rel][2] += typed
                if found.problems or stats.problems:
                    for p in list(found.problems) + list(stats.problems):
                        print(f"  (problem) {Path(p.path).name}: {p.message[:120]}", file=sys.stderr)
    print("\nPer relation (all sets, default settings)\n")
    print("| relation | true edges | recovered (directed) | recall | with the right relation |")
    print("|---|---|---|---|---|")
    for rel, (k, hit, typed) in sorted(per_relation.items()):
        print(f"| {rel} | {k} | {hit} | {hit / k:.2f} | {typed} |")
    print("\nEdge confidence (default settings): is a recovered edge as likely right as it says?\n")
    print("| set | recovered edges | right | ECE | AUROC right vs wrong | wrong among edges at >= 0.8 |")
    print("|---|---|---|---|---|---|")
    print("\n".join(confidence_rows))
    if args.no_ablation:
        return
    print("\nAblation (mean over sets)\n")
    print("| setting | edge F1 | family ARI | reachability | relation acc. |")
    print("|---|---|---|---|---|")
    for name, _ in ABLATIONS:
        evs = rows[name]
        mean = lambda f: sum(f(e) for e in evs) / len(evs)  # noqa: E731
        print(f"| {name} | {mean(lambda e: e.edge_f1):.3f} | {mean(lambda e: e.adjusted_rand_index):.3f} | "
              f"{mean(lambda e: e.reachability):.3f} | {mean(lambda e: e.relation_accuracy):.3f} |")


if __name__ == "__main__":
    main()
