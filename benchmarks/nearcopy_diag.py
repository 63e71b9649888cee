"""Near-copy fine-tunes in typed sets: where the engine puts them and which cue could tell one from its parent
(issue 11; benchmarks/RESULTS.md, "Near-copy fine-tunes in typed sets").

A diagnostic, no engine change. For each set (a folder with ``truth.json``: typed sets or generalise
collections) it recovers with the defaults and reads every true fine-tune edge a -> c:

- ``--misses``: each one the engine misses, with the recipe (lr, steps; typed sets), the size of the step
  against a's own step from its parent, and where c and a were put;
- the hub table: for c and each other fine-tune child x of a (siblings) and each fine-tune child x of c
  (children), the projection of x's update on c's

      beta = <W_x - W_a, W_c - W_a> / |W_c - W_a|^2 = (D(a, x) + D(a, c) - D(c, x)) / (2 D(a, c))

  (D: squared distance summed over the tensors). A child carries c's update whole (beta near 1); a sibling
  only what its first steps shared with c's; distance hangs x under c wherever beta > 1/2. With whether the
  engine placed x right;
- the chain table: each true chain p -> a -> b of fine-tunes whose second step is at most half the first
  (r = d(a, b) / d(p, a) < 1/2), with g = (D(p, b) + D(a, b) - D(p, a)) / (2 D(a, b)) (g < 1/2: b nearer p
  than a, distance reads p -> b -> a) and the kurtosis contrast k(W_b - W_p) - k(W_a - W_p) on the skeleton
  entries (mean over layers): which of the two differences to p is the single run;
- last line: a rule gated to that tie zone simulated on the recovered tree (see ``read_set``): how many
  recovered chains it would swap, how many swaps would be right and how many would break a right chain.

    python benchmarks/nearcopy_diag.py --cache /tmp/cache-x /tmp/typedd/seed200/typed ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mother_core import compute_statistics, discover, recover  # noqa: E402
from siblings_diag import _kurtosis, truth_edges  # noqa: E402


SIMULATED: list[dict] = []


def _recipe(folder: Path) -> dict[str, dict]:
    return json.loads((folder / "truth.json").read_text()).get("meta", {}).get("models", {})


def read_set(folder: Path, cache: Path | None, misses: bool) -> tuple[list[dict], list[dict]]:
    """Hub rows and chain rows of one set (and the misses printed)."""
    truth = truth_edges(folder)
    meta = _recipe(folder)
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    sq_t = np.asarray(stats.sq_dist, dtype=np.float64)
    present = np.asarray(stats.present, dtype=bool)
    pred: dict[str, set[str]] = {}
    rec_ft: list[tuple[str, str]] = []
    for e in recover(stats).edges:
        pred.setdefault(e.child, set()).add(e.parent)
        if e.relation == "finetune":
            rec_ft.append((e.parent, e.child))
    ft = [(a, c) for a, c, r in truth if r == "finetune" and a in ix and c in ix]
    kids: dict[str, list[str]] = {}
    par: dict[str, str] = {}
    for a, c in ft:
        kids.setdefault(a, []).append(c)
        par[c] = a

    def trio(x: str, y: str, z: str) -> tuple[float, float, float]:
        """D(x, y), D(x, z), D(y, z) over the tensors all three hold (a classifier's head counts for none)."""
        i, j, k = ix[x], ix[y], ix[z]
        t = np.nan_to_num(sq_t[present[i] & present[j] & present[k]])
        return float(t[:, i, j].sum()), float(t[:, i, k].sum()), float(t[:, j, k].sum())

    def proj(a: str, c: str, x: str) -> float:
        dac, dax, dcx = trio(a, c, x)
        return (dax + dac - dcx) / (2 * dac)

    hub, chains = [], []
    for a, c in ft:
        lr = meta.get(c, {}).get("params", {}).get("lr", float("nan"))
        steps = meta.get(c, {}).get("params", {}).get("steps", -1)
        p = par.get(a)
        r = float(np.sqrt(trio(p, a, c)[2] / trio(p, a, c)[0])) if p else float("nan")
        for x in kids.get(a, []):
            if x != c:
                hub.append({"kind": "sibling", "lr": lr, "beta": proj(a, c, x), "placed": a in pred.get(x, set())})
        for x in kids.get(c, []):
            hub.append({"kind": "child", "lr": lr, "beta": proj(a, c, x), "placed": c in pred.get(x, set())})
        if p is not None and r < 0.5:
            ks = []
            for sk in stats.skeletons.values():
                w = sk[[ix[p], ix[a], ix[c]]].astype(np.float64).reshape(3, -1)
                if np.isfinite(w).all() and w.shape[1] >= 16 and (w[1] - w[0]).any() and (w[2] - w[0]).any():
                    ks.append(_kurtosis(w[2] - w[0]) - _kurtosis(w[1] - w[0]))
            if ks:
                chains.append({"g": proj(c, a, p),
                               "k": float(np.mean(ks)), "right": a in pred.get(c, set()) and p in pred.get(a, set()),
                               "swapped": c in pred.get(a, set())})
        if misses and a not in pred.get(c, set()):
            print(f"  miss {a} -> {c} (lr {lr:.2g}, {steps} steps, d(a,c)/d(p,a) {r:.3f}): c under "
                  f"{sorted(pred.get(c, set())) or 'root'}, a under {sorted(pred.get(a, set())) or 'root'}")
    # The gated rule simulated on the recovered tree: each recovered chain p -> x -> y of single-parent
    # fine-tunes with d(x, y) < d(p, x) / 2 and h = (D(p, y) - D(p, x)) / D(x, y) < 1 (the reading's second step
    # partly undoes its first) would be swapped to p -> y -> x where k(W_y - W_p) < k(W_x - W_p).
    one = {c for c, ps in pred.items() if len(ps) == 1}
    rpar = {c: p for p, c in rec_ft if c in one}
    tset = {(a, c) for a, c in ft}
    for x, y in rec_ft:
        p = rpar.get(x)
        if p is None or y not in one:
            continue
        dpx, dpy, dxy = trio(p, x, y)
        if not dxy or dxy >= dpx / 4 or (dpy - dpx) / dxy >= 1:
            continue
        ks = []
        for sk in stats.skeletons.values():
            w = sk[[ix[p], ix[x], ix[y]]].astype(np.float64).reshape(3, -1)
            if np.isfinite(w).all() and w.shape[1] >= 16 and (w[1] - w[0]).any() and (w[2] - w[0]).any():
                ks.append(_kurtosis(w[2] - w[0]) - _kurtosis(w[1] - w[0]))
        if ks:
            SIMULATED.append({"swap": float(np.mean(ks)) < 0, "now_right": (p, x) in tset and (x, y) in tset,
                              "swap_right": (p, y) in tset and (y, x) in tset})
    return hub, chains


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--misses", action="store_true", help="list every missed fine-tune edge")
    args = ap.parse_args()
    hub: list[dict] = []
    chains: list[dict] = []
    for folder in args.sets:
        if args.misses:
            print(folder)
        h, c = read_set(folder, args.cache, args.misses)
        hub += h
        chains += c
    print("\n| x of a near-copy c (lr <= 2e-4) | n | beta min / q10 / median / q90 / max | beta > 1/2 "
          "| of those placed right |")
    print("|---|---|---|---|---|")
    for kind in ("sibling", "child"):
        rows = [r for r in hub if r["kind"] == kind and r["lr"] <= 2e-4]
        if rows:
            b = np.array([r["beta"] for r in rows])
            hi = [r for r in rows if r["beta"] > 0.5]
            print(f"| {kind} | {len(rows)} | " + " / ".join(f"{v:.2f}" for v in np.quantile(b, [0, .1, .5, .9, 1]))
                  + f" | {len(hi)} | {sum(r['placed'] for r in hi)} |")
    print("\n| chains p -> a -> b, r < 1/2 | n | read right | k(W_b - W_p) > k(W_a - W_p) |")
    print("|---|---|---|---|")
    for name, sel in (("all", chains), ("g < 1/2 (b nearer p)", [r for r in chains if r["g"] < 0.5])):
        print(f"| {name} | {len(sel)} | {sum(r['right'] for r in sel)} | {sum(r['k'] > 0 for r in sel)} |")
    sw = [r for r in SIMULATED if r["swap"]]
    print(f"\ngated swap on the recovered tree: {len(SIMULATED)} candidate chains, {len(sw)} swapped; of those "
          f"{sum(r['swap_right'] for r in sw)} become right, {sum(r['now_right'] for r in sw)} were right (lost); "
          f"not swapped: {sum(r['now_right'] for r in SIMULATED if not r['swap'])} right, "
          f"{sum(r['swap_right'] for r in SIMULATED if not r['swap'])} left reversed")


if __name__ == "__main__":
    main()
