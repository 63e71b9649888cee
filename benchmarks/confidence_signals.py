"""Which trees does the confidence misjudge? Per tree of the generalise collections (issue 12, item 5).

For every tree the engine recovers with defaults: its directed accuracy, the mean edge confidence (and
its placement part), and the *radial share* of its updates: per recovered edge p -> c and layer,

    kappa = <W_p, W_c - W_p> / (||W_p|| ||W_c - W_p||)
          = (||W_c||^2 - ||W_p||^2 - ||W_c - W_p||^2) / (2 ||W_p|| ||W_c - W_p||),

read from the statistics the pass already keeps (norms and squared distances), the median |kappa| over
the layers that moved, then the median over the tree's edges. The method's premise (docs/METHOD.md;
``mother_core/recovery/additive.py``; the norm-growth cue) is that fine-tuning adds updates nearly
orthogonal to the weights and to each other (kappa ~ 0). Updates with a large radial share all move
along the weights' own direction: siblings then lie on a line, and distances order them along it
instead of telling whose parent is whose.

This script measures; it fits nothing and changes nothing in the engine (benchmarks/RESULTS.md,
"Generalisation", "What the confidence misjudges").

    python benchmarks/confidence_signals.py                  # fitting and held-out collections
    python benchmarks/confidence_signals.py --only fitting
    python benchmarks/confidence_signals.py --folders DIR...  # any folders with truth.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalise import COLLECTIONS, DATA  # noqa: E402

from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import confidence_auroc as auroc  # noqa: E402
from mother_core.evaluate import load_truth  # noqa: E402
from mother_core.recovery.features import select_layers  # noqa: E402
from mother_core.stats.result import WeightStatistics  # noqa: E402


def radial_share(stats: WeightStatistics, mask: np.ndarray, p: int, c: int) -> float:
    """Median over the selected layers that moved of |cos(W_p, W_c - W_p)| (NaN if none moved)."""
    idx = np.flatnonzero(mask)
    norm2 = stats.norm[:, idx] ** 2
    sq = stats.sq_dist[idx, p, c]
    moved = np.isfinite(sq) & (sq > 0) & (norm2[p] > 0)
    if not moved.any():
        return float("nan")
    kappa = (norm2[c, moved] - norm2[p, moved] - sq[moved]) / (2 * np.sqrt(norm2[p, moved] * sq[moved]))
    return float(np.median(np.abs(kappa)))


def tree_rows(folder: Path, cache: Path | None) -> list[dict[str, float | str | int]]:
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    truth = set(load_truth(folder / "truth.json"))
    rec = recover(stats, RecoverySettings())
    mask = select_layers(stats, RecoverySettings().layers)
    index = {m: i for i, m in enumerate(rec.model_ids)}
    rows: list[dict[str, float | str | int]] = []
    for t in rec.trees:
        edges = [e for e in rec.edges if e.child in t.members]
        if not edges:
            continue
        kappa = [radial_share(stats, mask, index[e.parent], index[e.child]) for e in edges]
        rows.append({"collection": folder.name, "tree": t.id, "models": len(t.members),
                     "right": float(np.mean([(e.parent, e.child) in truth for e in edges])),
                     "confidence": float(np.mean([e.confidence for e in edges])),
                     "placement": float(np.mean([e.placement_confidence for e in edges])),
                     "kappa": float(np.nanmedian(kappa)) if np.isfinite(kappa).any() else float("nan"),
                     "basis": t.direction_basis})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=list(COLLECTIONS))
    ap.add_argument("--folders", nargs="*", type=Path, default=[])
    args = ap.parse_args()
    groups: dict[str, list[tuple[Path, Path | None]]] = {}
    if args.folders:
        groups["given"] = [(f, None) for f in args.folders]
    else:
        for g in [args.only] if args.only else list(COLLECTIONS):
            groups[g] = [(DATA / c.name, DATA / "stats-cache") for c in COLLECTIONS[g]
                         if (DATA / c.name / "truth.json").exists()]
    for g, folders in groups.items():
        rows = [r for f, cache in folders for r in tree_rows(f, cache)]
        multi = [r for r in rows if int(r["models"]) >= 3]
        print(f"\n## {g}: trees of three or more models\n")
        print("| collection | tree | models | directed right | mean confidence | mean placement conf. "
              "| radial share (median abs kappa) | reading |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(multi, key=lambda r: float(r["kappa"])):
            print(f"| {r['collection']} | {r['tree']} | {r['models']} | {float(r['right']):.0%} | "
                  f"{float(r['confidence']):.2f} | {float(r['placement']):.2f} | {float(r['kappa']):.3f} | "
                  f"{r['basis']} |")
        k = np.array([float(r["kappa"]) for r in multi])
        gap = np.array([float(r["confidence"]) - float(r["right"]) for r in multi])
        ok = np.isfinite(k)
        if ok.sum() > 2:
            print(f"\nSpearman rho (radial share vs over-confidence, confidence - right): "
                  f"{_spearman(k[ok], gap[ok]):+.2f} over {int(ok.sum())} trees; AUROC of -kappa for trees at least "
                  f"2/3 right: {auroc(-k[ok], np.array([float(r['right']) >= 2 / 3 for r in multi])[ok]):.2f}")


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


if __name__ == "__main__":
    main()
