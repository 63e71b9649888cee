"""Edge confidence on held-out collections (issue 12, item 5): calibration, ranking, confident errors.

Per collection and pooled: directed accuracy, mean confidence, ECE (5 bins, as ``mother evaluate``),
the ECE a perfectly calibrated confidence would show on the same edges (the mean over 300 draws of
outcomes from the confidences themselves: the noise floor of ECE at this many edges), the AUROC of
confidence for right-vs-wrong edges, and the wrong edges among those at confidence >= 0.8.

Collections: the held-out ones of ``benchmarks/generalise.py`` (seen while the rules were chosen),
their second draw ``held2-*`` (``benchmarks/confidence_data.py``, generated and read after the rules
were fixed) and the barely trained set (``benchmarks/barely.py``); ``--fitting`` adds the fitting
collections and their second draw. Nothing is fitted here.

    python benchmarks/confidence_heldout.py --cache /tmp/cache          # held-out, held2, barely
    python benchmarks/confidence_heldout.py --fitting --cache /tmp/cache
    python benchmarks/confidence_heldout.py --fitting-only --cache /tmp/cache   # while choosing: no held-out read
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import barely  # noqa: E402
from confidence_data import folders as second_draw  # noqa: E402
from generalise import COLLECTIONS, DATA  # noqa: E402

from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import confidence_auroc as auroc  # noqa: E402
from mother_core.evaluate import load_truth  # noqa: E402
from mother_zoo.variety import generate_collection  # noqa: E402


def ece(conf: np.ndarray, right: np.ndarray, bins: int = 5) -> float:
    """Expected calibration error over ``bins`` equal-width bins (the last one closed)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for i in range(bins):
        m = (conf >= edges[i]) & ((conf < edges[i + 1]) if i < bins - 1 else (conf <= 1.0))
        if m.any():
            total += m.mean() * abs(conf[m].mean() - right[m].mean())
    return float(total)


def edges_of(folder: Path, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right) of every recovered edge of one collection, default settings."""
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    truth = set(load_truth(folder / "truth.json"))
    return (np.array([e.confidence for e in rec.edges]),
            np.array([(e.parent, e.child) in truth for e in rec.edges], dtype=bool))


def row(name: str, conf: np.ndarray, right: np.ndarray) -> str:
    rng = np.random.default_rng(0)
    floor = np.mean([ece(conf, rng.random(len(conf)) < conf) for _ in range(300)])
    high = conf >= 0.8
    return (f"| {name} | {len(conf)} | {right.mean():.0%} | {conf.mean():.2f} | {ece(conf, right.astype(float)):.3f} | "
            f"{floor:.3f} | {auroc(conf, right):.2f} | {int((~right[high]).sum())} of {int(high.sum())} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="statistics cache (default: none)")
    ap.add_argument("--fitting", action="store_true", help="also the fitting collections and their second draw")
    ap.add_argument("--fitting-only", action="store_true",
                    help="the fitting collections, their second draw and, where generated, generalise.py's "
                         "fitting-more ones (under _data/more) only: nothing held-out is generated or read")
    args = ap.parse_args()
    groups: dict[str, list[Path]] = {}
    if args.fitting or args.fitting_only:
        groups["fitting"] = [generate_collection(c, DATA) for c in COLLECTIONS["fitting"]]
        groups["fitting, second draw"] = second_draw("fitting2")
    if args.fitting_only:
        more = [f for f in sorted((DATA.parent / "more").glob("fit*")) if (f / "truth.json").exists()]
        if more:
            groups["fitting, more"] = more
    else:
        groups["held-out (seen while choosing)"] = [generate_collection(c, DATA) for c in COLLECTIONS["held-out"]]
        groups["held-out, second draw (clean)"] = second_draw("held2")
        groups["barely trained (clean)"] = [generate_collection(barely.BARELY, barely.DATA)]
    print("| collection | edges | directed | mean confidence | ECE | ECE if calibrated | AUROC | wrong at >= 0.8 |")
    print("|---|---|---|---|---|---|---|---|")
    held: list[tuple[np.ndarray, np.ndarray]] = []
    fitting: list[tuple[np.ndarray, np.ndarray]] = []
    for g, folders in groups.items():
        parts = [edges_of(f, args.cache) for f in folders]
        for f, (c, r) in zip(folders, parts):
            print(row(f.name, c, r))
        c, r = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        print(row(f"**{g}, pooled**", c, r))
        if not g.startswith("fitting"):
            held += parts
        else:
            fitting += parts
    pooled = held or fitting
    c, r = np.concatenate([p[0] for p in pooled]), np.concatenate([p[1] for p in pooled])
    print(row("**all held-out, pooled**" if held else "**all fitting, pooled**", c, r))


if __name__ == "__main__":
    main()
