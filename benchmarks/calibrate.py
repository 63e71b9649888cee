"""Fit the confidence constants of mother_core/recovery/confidence.py on held-out zoo trees.

The trees are generated with seeds (1, 2, 3) that the accuracy benchmark (seed 0) never uses, so
calibration is checked on data it was not fitted on. Prints the fitted constants and the
calibration they give on the fitting data; copy them into confidence.py.

    python benchmarks/calibrate.py [--seeds 1 2 3] [--size small]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import load_truth  # noqa: E402
from mother_zoo import generate_split  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data" / "calibration"
SPLITS = ("fft", "lora16", "lora-mixed", "continued", "mixed")


def edge_features(split_dir: Path) -> list[tuple[float, float, float, int, int]]:
    """Per recovered edge: log margin, relative/threshold, direction evidence, placed right, directed right."""
    stats = compute_statistics(discover([split_dir]), device="cpu")
    rec = recover(stats, RecoverySettings())
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    ids = rec.model_ids
    ix = {m: i for i, m in enumerate(ids)}
    problem = rec.problem
    rel, ev, thr = problem.relative, problem.evidence, problem.threshold
    rows = []
    for e in rec.edges:
        p, c = ix[e.parent], ix[e.child]
        alt = e.alternatives[0].cost if e.alternatives else math.inf
        chosen = rec.cost_matrix[p, c]
        margin = math.log(max(alt, 1e-300) / max(chosen, 1e-300)) if math.isfinite(alt) else 5.0
        placed = (e.parent, e.child) in truth or (e.child, e.parent) in truth
        rows.append((margin, math.log(thr / max(rel[p, c], 1e-12)), float(ev[p, c]), int(placed),
                     int((e.parent, e.child) in truth)))
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood a, b of P(y=1) = sigmoid(a x + b), lightly regularised."""
    def nll(w: np.ndarray) -> float:
        z = w[0] * x + w[1]
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * (w ** 2).sum())
    res = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", default="small")
    ap.add_argument("--also", nargs="*", default=[str(DATA / "full-seed1" / s) for s in ("fft", "lora16")],
                    help="more held-out split folders to fit on, if they exist")
    args = ap.parse_args()
    rows = []
    for folder in map(Path, args.also):
        if (folder / "truth.json").exists():
            rows += edge_features(folder)
    for seed in args.seeds:
        for split in SPLITS:
            out = DATA / f"seed{seed}"
            folder = out / split
            if not (folder / "truth.json").exists():
                generate_split(split, out, size=args.size, seed=seed)
            rows += edge_features(folder)
    r = np.array(rows)
    # Contested edges (another parent is cheaper pairwise: the refinement's choices) get their own rate.
    contested = r[:, 0] < 0
    a_p, b_p = fit_logistic(r[~contested, 0], r[~contested, 3])
    rate = (r[contested, 3].sum() + 1) / (contested.sum() + 2)
    placed = r[:, 3] == 1
    a_d, b_d = fit_logistic(r[placed, 2], r[placed, 4])
    print(f"edges: {len(r)}  placed right: {placed.mean():.2f}  directed right: {r[:, 4].mean():.2f}  "
          f"contested: {int(contested.sum())} ({int(r[contested, 3].sum())} placed right)")
    print(f"PLACEMENT_SLOPE = {a_p:.3f}\nPLACEMENT_BIAS = {b_p:.3f}\nCONTESTED_PLACEMENT = {rate:.2f}\n"
          f"EVIDENCE_SLOPE = {a_d:.3f}\nEVIDENCE_BIAS = {b_d:.3f}")


if __name__ == "__main__":
    main()
