"""Barely trained trees (issue 12, "the barely-trained case"): a held-out check of edge confidence.

Roots pre-trained 100 steps (the issue's case), descendants 1 to 5 steps: the children have barely
moved from their parents, so the distances between a parent and its children are of the order of the
noise between siblings and the direction cues have had a few steps to move. The engine may get many
of these edges wrong; what it must not do is be sure of the wrong ones.

Real training (:mod:`mother_zoo.variety`, the generator of ``benchmarks/generalise.py``) with settings
and seeds that neither the fitting nor the held-out collections of ``generalise.py`` use: roots of 100
steps (generalise.py's barely trained trees have 60), widths 40 and 48, AdamW, Adam and SGD, chains
three generations deep. Nothing in the engine is chosen on these trees.

    python benchmarks/barely.py                    # generate (cached under benchmarks/_data/barely) and print
    python benchmarks/barely.py --cache DIR        # statistics cache (default: DATA/stats-cache)

Prints directed / undirected accuracy, ECE, AUROC, and the wrong edges at confidence >= 0.8 with their
placement and direction parts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalise import score  # noqa: E402

from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import load_truth  # noqa: E402
from mother_zoo.variety import Collection, Recipe, generate_collection  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data" / "barely"

#: A root trained 100 steps, children a few steps (issue 12), from four generators.
BARELY = Collection("held-barely", (
    (Recipe("barely-vit-adamw", "vit", hidden=48, method="fft", root_steps=100, child_steps=(1, 5)), 201),
    (Recipe("barely-llama-adam", "llama", hidden=48, method="fft", optimizer="adam", root_steps=100,
            child_steps=(1, 5), schedule="linear"), 202),
    (Recipe("barely-vit-sgd", "vit", hidden=40, method="fft", optimizer="sgd", lr=(3e-3, 2e-2), weight_decay=0.0,
            root_steps=100, child_steps=(2, 6), shape=(2, 2, 2)), 203),
    (Recipe("barely-llama-adamw", "llama", hidden=40, method="fft", root_steps=100, child_steps=(1, 4),
            shape=(2, 2, 2), weight_decay=0.05), 204),
))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DATA / "stats-cache")
    args = ap.parse_args()
    folder = generate_collection(BARELY, DATA)
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
    truth = load_truth(folder / "truth.json")
    rec = recover(stats, RecoverySettings())
    s = score(rec, truth)
    print("| collection | edges | directed (undirected) | ECE | AUROC | wrong at >= 0.8 | mean confidence |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {folder.name} | {s['edges']} | {s['dir']:.0%} ({s['und']:.0%}) | {s['ece']:.3f} | {s['auroc']:.2f} | "
          f"{int(round(s['wrong_high'] * s['n_high']))} of {s['n_high']} | {np.mean(s['conf']):.2f} |")
    t = set(truth)
    wrong = [e for e in rec.edges if (e.parent, e.child) not in t]
    print("\nwrong edges (confidence = placement x direction):")
    for e in sorted(wrong, key=lambda e: -e.confidence):
        how = "reversed" if (e.child, e.parent) in t else "misplaced"
        print(f"  {e.parent} -> {e.child}: {how}, {e.confidence:.2f} = {e.placement_confidence:.2f} x "
              f"{e.direction_confidence:.2f}")


if __name__ == "__main__":
    main()
