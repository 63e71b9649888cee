"""Reliability of the edge confidence per collection, split into its placement and direction parts, per source,
and the merged-LoRA placement count replayed leave-one-collection-out (issue 12; benchmarks/RESULTS.md,
"Confidence honest on trees made elsewhere, sixth pass", branch calib6). Fitting collections only.

    python benchmarks/reliability_parts.py --cache CACHE /work/data/gen/{fit-fft,fit-lora,fit-mixed,fitw} \
        /work/data/gen/{fitx-0,fitx-1,fitx-2}

Placement is read against "placed right" (either direction), direction against "directed right" among the edges
placed right. The replay raises each merged LoRA's own edge (typed ``lora``, not a root's only child, whose cap
wins) as ``confidence.rank_placed`` does, with LORA_PLACEMENT counted on the other collections; run it on the
base code (without the raise) to get the before/after of one set of rows.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate import edge_table, lora_count  # noqa: E402
from confidence_heldout import ece  # noqa: E402

from mother_core.evaluate import confidence_auroc  # noqa: E402
from mother_core.recovery.confidence import SURE_FROM, sigmoid  # noqa: E402

RANK_PLACED_BELOW = 0.79  # confidence.RANK_PLACED_BELOW (not imported: the base code has none)


def source(r: dict[str, object]) -> str:
    """The last rule that set an edge's confidence."""
    for key, name in (("typed", "typed"), ("chain", "chain cap"), ("sole", "root's only child"),
                      ("flagged", "beyond the radial share")):
        if r[key]:
            return name
    if r["basis"] == "prior":
        return "prior"
    if r["tie_chosen"] or r["tie_lifted"]:
        return "near-tie parent"
    return f"maps, reading {r['basis']}"


def cells(conf: np.ndarray, right: np.ndarray) -> str:
    """ECE / AUROC / wrong among edges at >= 0.8."""
    hi = conf >= SURE_FROM
    auroc = confidence_auroc(conf, right) if 0 < right.sum() < len(right) else math.nan
    return f"{ece(conf, right.astype(float)):.3f} / {auroc:.2f} / {int((~right[hi]).sum())} of {int(hi.sum())}"


def columns(rows: list[dict[str, object]]) -> tuple[np.ndarray, ...]:
    """Placed right, right, placement, direction and confidence of each edge (calibrate.edge_table's rows)."""
    pl = np.array([bool(r["placed"]) for r in rows])
    y = np.array([bool(r["right"]) for r in rows])
    P, D, c = (np.array([float(r[k]) for r in rows])  # type: ignore[arg-type]
               for k in ("placement", "direction", "confidence"))
    return pl, y, P, D, c


def replay(rows: list[dict[str, object]], share: float) -> np.ndarray:
    """Each edge's confidence with a merged LoRA's own edges read at ``share`` (confidence.rank_placed)."""
    out = []
    for r in rows:
        c, p, d = float(r["confidence"]), float(r["placement"]), float(r["direction"])  # type: ignore[arg-type]
        if r["relation"] == "lora" and not (r["typed"] or r["tie_chosen"] or r["tie_lifted"] or r["sole"]):
            related = sigmoid(4.0 * float(r["related"]))  # type: ignore[arg-type]  # confidence.related_confidence
            raised = max(p, share * related)
            if c < SURE_FROM and d > 0:
                raised = min(raised, max(p, RANK_PLACED_BELOW / d))
            c = raised * d
        out.append(c)
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    tables = {f.name: edge_table(f, args.cache) for f in args.folders}
    print("| collection | edges | right | mean conf. | placement: mean / placed right / ECE | "
          "direction (placed): mean / right / ECE |")
    print("|---|---|---|---|---|---|")
    for name, rows in tables.items():
        pl, y, P, D, c = columns(rows)
        print(f"| {name} | {len(rows)} | {y.mean():.2f} | {c.mean():.2f} | {P.mean():.2f} / {pl.mean():.2f} / "
              f"{ece(P, pl.astype(float)):.3f} | {D[pl].mean():.2f} / {y[pl].mean():.2f} / "
              f"{ece(D[pl], y[pl].astype(float)):.3f} |")
    every = [r for rows in tables.values() for r in rows]
    by: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in every:
        by[source(r)].append(r)
    print("\n| source | edges | placement mean / placed right | direction mean / right among placed | "
          "confidence mean / right |")
    print("|---|---|---|---|---|")
    for name, rows in sorted(by.items(), key=lambda kv: -len(kv[1])):
        pl, y, P, D, c = columns(rows)
        dirs = f"{D[pl].mean():.2f} / {y[pl].mean():.2f}" if pl.any() else "-"
        print(f"| {name} | {len(rows)} | {P.mean():.2f} / {pl.mean():.2f} | {dirs} | {c.mean():.2f} / {y.mean():.2f} |")
    print("\n| collection | LORA_PLACEMENT counted without it | as read: ECE / AUROC / wrong >= 0.8 | replayed |")
    print("|---|---|---|---|")
    before, after, right = [], [], []
    for name, rows in tables.items():
        k, n = lora_count([r for other, t in tables.items() if other != name for r in t])
        share = (k + 1) / (n + 2)
        y = np.array([bool(r["right"]) for r in rows])
        b = np.array([float(r["confidence"]) for r in rows])  # type: ignore[arg-type]
        a = replay(rows, share)
        print(f"| {name} | {k} of {n}: {share:.3f} | {cells(b, y)} | {cells(a, y)} |")
        before += list(b)
        after += list(a)
        right += list(y)
    yy = np.array(right)
    print(f"| pooled, each out of fold | | {cells(np.array(before), yy)} | {cells(np.array(after), yy)} |")


if __name__ == "__main__":
    main()
