"""Accuracy of recovery on the zoo's trained trees, with ablations (issue "Model zoo").

Every split of a zoo folder (``mother zoo ... --out zoo_out``) is recovered without being told the
number of trees; one table per question:

1. main table: directed / undirected accuracy, forest ARI, root precision and recall, regime
   auto-choice accuracy, calibration error, wall time; the paper's published figure beside it;
2. ablations: the paper's method as published, distance only (no direction), direction cues,
   re-initialised layers kept, layer selections, and a lambda sweep;
3. calibration of the confidence, pooled over splits.

    python benchmarks/accuracy.py --zoo zoo_out            # all splits found there
    python benchmarks/accuracy.py --zoo zoo_out --splits fft lora16
    python benchmarks/accuracy.py --zoo zoo_out --splits fft mixed --bf16   # stored as bf16, like hub models
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import evaluate, load_truth  # noqa: E402
from mother_core.settings import ablation_rows  # noqa: E402

PAPER = {"fft": "89%", "lora16": "~100%", "lora-mixed": "~100%"}  # VTHR figures (docs/METHOD.md)

# One row per non-default choice of every setting, made from the settings schema (mother_core/settings.py),
# then combinations and sweeps the schema cannot name.
ABLATIONS: list[tuple[str, RecoverySettings]] = ablation_rows() + [
    ("paper method as published (square attention, kurtosis sign, lambda 0.3)",
     RecoverySettings(method="paper", layers="square-attention")),
    ("distance only (lambda 0: no direction)", RecoverySettings(lambda_=0.0)),
] + [(f"lambda {lam}", RecoverySettings(lambda_=lam)) for lam in (0.1, 0.3, 0.5, 1.0)]


def regime_accuracy(rec, truth_meta: dict) -> tuple[int, int]:
    """(right, total) over recovered multi-model trees matched to a true tree by majority."""
    trees = truth_meta.get("trees") or []
    member_tree = {m: t for t in trees for m in t.get("models", [])}
    right = total = 0
    for t in rec.trees:
        if len(t.members) < 2:
            continue
        votes = Counter(member_tree[m]["root"] for m in t.members if m in member_tree)
        if not votes:
            continue
        true = next(tt for tt in trees if tt["root"] == votes.most_common(1)[0][0])
        total += 1
        right += int(true.get("regime") == t.regime)
    return right, total


def run(split_dir: Path, cache: Path, settings_list) -> tuple[list[dict], list]:
    t0 = time.perf_counter()
    stats = compute_statistics(discover([split_dir]), device="auto", cache_dir=cache)
    t_pass = time.perf_counter() - t0
    truth = load_truth(split_dir / "truth.json")
    meta = json.loads((split_dir / "truth.json").read_text()).get("meta", {})
    rows, pooled = [], []
    for name, settings in settings_list:
        t1 = time.perf_counter()
        try:
            rec = recover(stats, settings)
        except Exception as e:  # an ablation that cannot run on this split (no square matrices) says so
            rows.append({"setting": name, "error": str(e).split(".")[0]})
            continue
        ev = evaluate(rec, truth)
        r_ok, r_n = regime_accuracy(rec, meta)
        rows.append({
            "setting": name, "n": len(rec.models), "dir": ev.directed_accuracy, "und": ev.undirected_accuracy,
            "ari": ev.adjusted_rand_index, "root_p": ev.root_precision, "root_r": ev.root_recall,
            "regime": f"{r_ok}/{r_n}", "ece": ev.expected_calibration_error, "trees": len(rec.trees),
            "true_trees": len(meta.get("trees") or []),
            "seconds": t_pass + time.perf_counter() - t1, "pass_s": t_pass,
        })
        if name.startswith("ours"):
            status = ev.edge_status
            pooled += [(e.confidence, status.get((e.parent, e.child)) == "correct") for e in rec.edges]
    return rows, pooled


def as_bf16(split_dir: Path, out: Path) -> Path:
    """A copy of a split with every floating tensor stored in bf16 (how most hub checkpoints are)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    dst = out / split_dir.name
    if (dst / "truth.json").exists():
        return dst
    for model in sorted(split_dir.glob("m-*")):
        (dst / model.name).mkdir(parents=True, exist_ok=True)
        for f in model.iterdir():
            if f.suffix == ".safetensors":
                tensors = load_file(f)
                save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()},
                          dst / model.name / f.name)
            else:
                shutil.copy(f, dst / model.name / f.name)
    shutil.copy(split_dir / "truth.json", dst / "truth.json")  # last: marks the copy complete
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default="zoo_out")
    ap.add_argument("--splits", nargs="*")
    ap.add_argument("--cache", default="benchmarks/_data/stats-cache")
    ap.add_argument("--bf16", action="store_true", help="run on bf16 copies (written under benchmarks/_data/bf16)")
    args = ap.parse_args()
    zoo = Path(args.zoo)
    splits = args.splits or sorted(p.name for p in zoo.iterdir() if (p / "truth.json").exists())
    results, pooled = {}, []
    for s in splits:
        folder = as_bf16(zoo / s, Path(__file__).resolve().parent / "_data" / "bf16") if args.bf16 else zoo / s
        results[s], pool = run(folder, Path(args.cache), ABLATIONS)
        pooled += pool
        print(f"done {s}", file=sys.stderr)

    print("## Main table (number of trees not given)\n")
    print("| split | models | directed acc. | undirected acc. | paper | forest ARI | trees found / true | "
          "root P / R | regime auto right | ECE | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in splits:
        r = results[s][0]
        print(f"| {s} | {r['n']} | {r['dir']:.1%} | {r['und']:.1%} | {PAPER.get(s, '-')} | {r['ari']:.3f} | "
              f"{r['trees']} / {r['true_trees']} | {r['root_p']:.2f} / {r['root_r']:.2f} | {r['regime']} | "
              f"{r['ece']:.3f} | {r['seconds']:.1f} |")

    print("\n## Ablations: directed accuracy (undirected in brackets)\n")
    print("| setting | " + " | ".join(splits) + " | mean |")
    print("|---|" + "---|" * (len(splits) + 1))
    for i, (name, _) in enumerate(ABLATIONS):
        cells, vals = [], []
        for s in splits:
            r = results[s][i]
            if "error" in r:
                cells.append("n/a")
            else:
                cells.append(f"{r['dir']:.1%} ({r['und']:.0%})")
                vals.append(r["dir"])
        mean = f"{np.mean(vals):.1%}" if vals else "n/a"
        print(f"| {name} | " + " | ".join(cells) + f" | {mean} |")

    print("\n## Calibration of edge confidence (ours, all splits pooled)\n")
    print("| confidence | edges | mean confidence | fraction correct |")
    print("|---|---|---|---|")
    conf = np.array([c for c, _ in pooled])
    ok = np.array([k for _, k in pooled], dtype=float)
    edges = np.linspace(0, 1, 6)
    bins = [(lo, hi, (conf >= lo) & ((conf < hi) | (hi == 1.0))) for lo, hi in zip(edges[:-1], edges[1:])]
    for lo, hi, m in bins:
        if m.any():
            print(f"| {lo:.1f}-{hi:.1f} | {m.sum()} | {conf[m].mean():.2f} | {ok[m].mean():.2f} |")
    if len(conf):
        ece = sum(abs(conf[m].mean() - ok[m].mean()) * m.sum() for _, _, m in bins if m.any()) / len(conf)
        print(f"\nExpected calibration error: {ece:.3f} over {len(conf)} edges.")


if __name__ == "__main__":
    main()
