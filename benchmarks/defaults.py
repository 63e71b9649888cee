"""Choosing the defaults of the settings schema by benchmark (issue 10, "one settings schema").

Rows are made from the schema (:func:`mother_core.settings.ablation_rows`): the defaults, then every
other choice of each recovery setting alone. Each row is scored on the FITTING collections of
``benchmarks/generalise.py`` and the demo sets (where defaults are chosen), then on the HELD-OUT
collections (what the choice is worth on trees it was not chosen on). Directed accuracy (undirected in
brackets); the number of trees is never given.

    python benchmarks/defaults.py                      # fitting + demos, then held-out
    python benchmarks/defaults.py --only layers        # rows of one setting (and the defaults)

The collections are generated (real training, :mod:`mother_zoo.variety`) and cached under
``benchmarks/_data/generalise`` by ``benchmarks/generalise.py --generate-only``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import compute_statistics, discover, recover  # noqa: E402
from mother_core.errors import MotherError  # noqa: E402
from mother_core.evaluate import evaluate, load_truth  # noqa: E402
from mother_core.settings import ablation_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "_data" / "generalise"
FITTING = [DATA / "fit-fft", DATA / "fit-lora", DATA / "fit-mixed",
           ROOT / "assets" / "demo" / "vit-tree", ROOT / "assets" / "demo" / "mixed-forest"]
HELD_OUT = [DATA / "held-fft", DATA / "held-lora", DATA / "held-mixed"]


def table(folders: list[Path], rows: list, title: str, cache: Path = DATA / "stats-cache") -> None:
    missing = [f.name for f in folders if not (f / "truth.json").is_file()]
    folders = [f for f in folders if (f / "truth.json").is_file()]
    if missing:
        print(f"(missing: {', '.join(missing)}; run benchmarks/generalise.py --generate-only)", file=sys.stderr)
    cells: dict[str, list[str]] = {name: [] for name, _ in rows}
    means: dict[str, list[float]] = {name: [] for name, _ in rows}
    for f in folders:
        t = time.perf_counter()
        stats = compute_statistics(discover([f]), device="cpu", cache_dir=cache)
        truth = load_truth(f / "truth.json")
        for name, settings in rows:
            try:
                ev = evaluate(recover(stats, settings), truth)
            except MotherError as e:  # a selection that matches nothing here says so
                cells[name].append("n/a")
                print(f"{f.name} {name}: {e}", file=sys.stderr)
                continue
            cells[name].append(f"{ev.directed_accuracy:.0%} ({ev.undirected_accuracy:.0%})")
            means[name].append(ev.directed_accuracy)
        print(f"{f.name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(f"\n## {title}\n")
    print("| setting | " + " | ".join(f.name for f in folders) + " | mean directed |")
    print("|---|" + "---|" * (len(folders) + 1))
    for name, _ in rows:
        mean = f"{np.mean(means[name]):.1%}" if means[name] else "n/a"
        print(f"| {name} | " + " | ".join(cells[name]) + f" | {mean} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="the rows of one setting (by name, e.g. layers)")
    ap.add_argument("--fitting-only", action="store_true")
    ap.add_argument("--cache", type=Path, default=DATA / "stats-cache", help="statistics cache (one per helper)")
    args = ap.parse_args()
    rows = ablation_rows()
    if args.only:
        rows = [rows[0]] + [r for r in rows[1:] if r[0].startswith(args.only + "=")]
    table(FITTING, rows, "Fitting collections and demos (defaults are chosen here)", args.cache)
    if not args.fitting_only:
        table(HELD_OUT, rows, "Held-out collections", args.cache)


if __name__ == "__main__":
    main()
