"""Fit the confidence constants of mother_core/recovery/confidence.py on fitting collections.

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


def edge_features(split_dir: Path, cache: Path | None = None) -> list[tuple[float, ...]]:
    """Per recovered edge: log margin, relative/threshold, direction evidence, placed right, directed right,
    the confidence of its tree's reading, whether that reading rests on the prior, the layers'
    effect size for the chosen parent over the best alternative (NaN where not measured), and whether
    the reading rests on norm growth (basis "growth": its confidence is GROWTH_PRIOR, counted, not fitted)."""
    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    ids = rec.model_ids
    ix = {m: i for i, m in enumerate(ids)}
    problem = rec.problem
    rel, ev, thr = problem.relative, problem.evidence, problem.threshold
    rows = []
    typed = {int(link["child"]) for link in problem.links}  # their confidence is the relation's
    for e in rec.edges:
        p, c = ix[e.parent], ix[e.child]
        if c in typed:
            continue
        alt = e.alternatives[0].cost if e.alternatives else math.inf
        chosen = rec.cost_matrix[p, c]
        margin = math.log(max(alt, 1e-300) / max(chosen, 1e-300)) if math.isfinite(alt) else 5.0
        placed = (e.parent, e.child) in truth or (e.child, e.parent) in truth
        tree = next(t for t in rec.trees if e.child in t.members)
        effect = problem.layer_margin(p, ix[e.alternatives[0].parent], c) if e.alternatives else None
        rows.append((margin, math.log(thr / max(rel[p, c], 1e-12)), float(ev[p, c]), int(placed),
                     int((e.parent, e.child) in truth), tree.regime_confidence, int(tree.direction_basis == "prior"),
                     math.nan if effect is None else effect, int(tree.direction_basis == "growth")))
    return rows


def growing_trees(split_dir: Path, cache: Path | None = None) -> tuple[int, int]:
    """(trees whose norms grow along most of their true edges, multi-model trees) of a collection: the
    count behind direction.GROWTH_PRIOR."""
    import json

    from mother_core.recovery.features import pair_evidence, select_layers

    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    truth = load_truth(split_dir / "truth.json")
    grow = total = 0
    for tree in json.loads((split_dir / "truth.json").read_text())["meta"]["trees"]:
        members = set(tree["models"])
        growth = [ev.norm_growth[ix[p], ix[c]] for p, c in truth if c in members and p in ix and c in ix]
        if growth:
            total += 1
            grow += int(np.mean(np.array(growth) > 0) > 0.5)
    return grow, total


def radial_shares(split_dir: Path, cache: Path | None = None) -> list[float]:
    """The radial share (:func:`mother_core.recovery.confidence.tree_radial_share`) of every recovered
    tree of two or more models: the domain the constants are fitted on (``RADIAL_SHARE_MAX``)."""
    from mother_core.recovery.confidence import tree_radial_share
    from mother_core.recovery.features import pair_evidence, select_layers

    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    out = [tree_radial_share(stats.norm, stats.sq_dist, ev.layer_index, ev.distance,
                             np.array([ix[m] for m in t.members])) for t in rec.trees if len(t.members) > 1]
    return [s for s in out if math.isfinite(s)]


def sole_child(split_dir: Path, cache: Path | None = None) -> tuple[int, int]:
    """(right, total) of the edges :func:`mother_core.recovery.confidence.sole_child_edges` picks: the
    count behind SOLE_CHILD_CONFIDENCE."""
    from mother_core.recovery.confidence import sole_child_edges

    rec = recover(compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache), RecoverySettings())
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    which = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in rec.edges])
    return sum(e in truth for e in which), len(which)


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood a, b of P(y=1) = sigmoid(a x + b), lightly regularised."""
    def nll(w: np.ndarray) -> float:
        z = w[0] * x + w[1]
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * (w ** 2).sum())
    res = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def fit_evidence_bias(y: np.ndarray, reading: np.ndarray) -> float:
    """b of P(right | placed) = rc sigmoid(b) + (1 - rc)(1 - sigmoid(b)), rc each edge's reading
    confidence as the engine gave it (domain check included): how often an edge points the way a
    right reading says."""
    rc = np.clip(reading, 1e-9, 1 - 1e-9)

    def nll(w: np.ndarray) -> float:
        p = 1.0 / (1.0 + math.exp(-w[0]))
        q = np.clip(rc * p + (1 - rc) * (1 - p), 1e-9, 1 - 1e-9)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)))
    return float(minimize(nll, np.array([3.0]), method="Nelder-Mead").x[0])


def fit_direction(e: np.ndarray, y: np.ndarray, reading: np.ndarray, on_prior: np.ndarray,
                  counted: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """a >= 0, b of sigmoid(a E + b), the confidence of a prior reading and the slope s of an own or
    pooled reading's confidence sigmoid(s * margin), by maximum likelihood of
    P(right) = rc sigmoid(a E + b) + (1 - rc)(1 - sigmoid(a E + b)), rc the tree's reading confidence.
    The margin is read back from the confidence the engine gave (sigmoid(READING_SLOPE * margin)).
    ``counted`` rows (basis "growth") keep the reading confidence the engine gave (GROWTH_PRIOR)."""
    from mother_core.recovery.direction import READING_SLOPE

    rc0 = np.clip(reading, 1e-9, 1 - 1e-9)
    margin = np.log(rc0 / (1 - rc0)) / READING_SLOPE
    counted = np.zeros(len(e), dtype=bool) if counted is None else counted

    def nll(w: np.ndarray) -> float:
        rc = np.where(on_prior, 1.0 / (1.0 + math.exp(-w[2])),
                      np.where(counted, rc0, 1.0 / (1.0 + np.exp(-w[3] * margin))))
        p = 1.0 / (1.0 + np.exp(-(w[0] * e + w[1])))
        q = np.clip(rc * p + (1 - rc) * (1 - p), 1e-9, 1 - 1e-9)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)) + 1e-3 * (w[:2] ** 2).sum())
    # More evidence never lowers the confidence (a >= 0); a reading's margin never counts against it.
    res = minimize(nll, np.array([0.5, 1.0, 0.0, 1.0]), method="L-BFGS-B",
                   bounds=[(0.0, 20.0), (-20.0, 20.0), (-20.0, 20.0), (0.0, 20.0)])
    return float(res.x[0]), float(res.x[1]), float(1.0 / (1.0 + math.exp(-res.x[2]))), float(res.x[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", default="small")
    ap.add_argument("--generalise", action="store_true",
                    help="fit on the FITTING collections of benchmarks/generalise.py instead of zoo seeds")
    ap.add_argument("--also", nargs="*", default=[str(DATA / "full-seed1" / s) for s in ("fft", "lora16")],
                    help="more held-out split folders to fit on, if they exist")
    ap.add_argument("--cache", type=Path, default=None,
                    help="statistics cache (--generalise: default benchmarks/_data/generalise/stats-cache)")
    args = ap.parse_args()
    rows = []
    grown = [0, 0]
    shares: list[float] = []
    sole = [0, 0]
    if args.generalise:
        from confidence_data import folders as second_draw
        from generalise import COLLECTIONS
        from generalise import DATA as GDATA

        from mother_zoo.variety import generate_collection

        cache = args.cache or GDATA / "stats-cache"
        # The fitting collections and their second draw (same recipes, new seeds): 158 edges, not 78.
        for folder in [generate_collection(c, GDATA) for c in COLLECTIONS["fitting"]] + second_draw("fitting2"):
            rows += edge_features(folder, cache)
            g, n = growing_trees(folder, cache)
            grown = [grown[0] + g, grown[1] + n]
            shares += radial_shares(folder, cache)
            k, n = sole_child(folder, cache)
            sole = [sole[0] + k, sole[1] + n]
        args.also, args.seeds = [], []
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
    # capped at a tie's confidence: an edge with a cheaper alternative is never surer than one without
    rate = min((r[contested, 3].sum() + 1) / (contested.sum() + 2), 1.0 / (1.0 + math.exp(-b_p)))
    placed = r[:, 3] == 1
    a_d, b_d, prior, slope = fit_direction(r[placed, 2], r[placed, 4], r[placed, 5], r[placed, 6] == 1,
                                           r[placed, 8] == 1)
    layered = np.isfinite(r[:, 7])
    a_l, b_l = fit_logistic(r[layered, 7], r[layered, 3])
    b_given = fit_evidence_bias(r[placed, 4], r[placed, 5])
    print(f"edges: {len(r)}  placed right: {placed.mean():.2f}  directed right: {r[:, 4].mean():.2f}  "
          f"contested: {int(contested.sum())} ({int(r[contested, 3].sum())} placed right)")
    print(f"LAYER_SLOPE = {a_l:.3f}\nLAYER_BIAS = {b_l:.3f}  ({int(layered.sum())} edges with a layer effect)")
    print(f"PLACEMENT_SLOPE = {a_p:.3f}\nPLACEMENT_BIAS = {b_p:.3f}\nCONTESTED_PLACEMENT = {rate:.2f}\n"
          f"EVIDENCE_BIAS = {b_given:.3f}  (EVIDENCE_SLOPE 0, the readings' confidences as direction.py gives them)\n"
          f"joint refit with the reading's slope (not adopted: its held-out check, benchmarks/RESULTS.md, issue 12):\n"
          f"  EVIDENCE_SLOPE = {a_d:.3f}\n  EVIDENCE_BIAS = {b_d:.3f}\n"
          f"  PRIOR_CONFIDENCE = {prior:.2f}  (direction.py)\n"
          f"  READING_SLOPE = {slope:.3f}  (direction.py)")
    if shares:
        print(f"RADIAL_SHARE_MAX = {max(shares):.3f}  (the largest radial share of the {len(shares)} fitting trees; "
              f"median {np.median(shares):.3f})")
    if sole[1]:
        print(f"SOLE_CHILD_CONFIDENCE = {(sole[0] + 1) / (sole[1] + 2):.2f}  ({sole[0]} of {sole[1]} edges from a "
              f"root to its only child, in trees of three or more models, right; rule of succession)")
    if grown[1]:
        print(f"GROWTH_PRIOR = {(grown[0] + 1) / (grown[1] + 2):.3f}  (direction.py; {grown[0]} of {grown[1]} "
              f"multi-model trees grow along most of their true edges, rule of succession)")


if __name__ == "__main__":
    main()
