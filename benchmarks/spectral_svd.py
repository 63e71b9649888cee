"""Benchmark: the SVD work of the effective-rank and subspace direction cues, once per cue or shared.

Until branch ``tidy`` the effective-rank cue took ``torch.linalg.svdvals`` of every model's skeleton of
each selected layer and the subspace cue ``torch.linalg.svd`` of the same skeletons (those of the models
in its pairs) again; :func:`mother_core.recovery.features.spectral_trends` decomposes each once. This
times both ways on the same statistics, in one process, alternating, on one torch thread (as the engine
runs them), and prints the best of ``--repeat`` rounds per set::

    .venv/bin/python benchmarks/spectral_svd.py --cache /tmp/cache SET/typed [SET/typed ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from mother_core import compute_statistics, discover
from mother_core.device import one_torch_thread
from mother_core.recovery.features import (
    ERANK_MAX_LAYERS, pair_evidence, select_layers, skeleton_slots, subspace_pairs,
)
from mother_core.recovery.forest import split_into_trees
from mother_core.stats.skeleton import singular_values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sets", nargs="+", type=Path, help="model set folders")
    ap.add_argument("--cache", type=Path, default=None, help="statistics cache folder")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for folder in args.sets:
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
        mask = select_layers(stats, "matrices")
        ev = pair_evidence(stats, mask)
        labels, _ = split_into_trees(ev.relative)
        in_pairs = np.isin(np.arange(stats.n_models), subspace_pairs(ev.distance, labels))
        skeletons = [stats.skeletons[s].astype(np.float64) for s in skeleton_slots(stats, mask, ERANK_MAX_LAYERS)]

        def once_per_cue() -> None:
            for sk in skeletons:
                ok = ~np.isnan(sk).any(axis=(1, 2))
                singular_values(sk[ok])  # the effective-rank cue
                with one_torch_thread():  # the subspace cue
                    torch.linalg.svd(torch.as_tensor(sk[ok & in_pairs]), full_matrices=False)

        def shared() -> None:
            for sk in skeletons:
                ok = ~np.isnan(sk).any(axis=(1, 2))
                with one_torch_thread():
                    torch.linalg.svd(torch.as_tensor(sk[ok]), full_matrices=False)

        times: dict[str, list[float]] = {"once per cue": [], "shared": []}
        for _ in range(args.repeat):
            for name, run in (("once per cue", once_per_cue), ("shared", shared)):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        old, new = min(times["once per cue"]), min(times["shared"])
        load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
        print(f"{folder}: {stats.n_models} models, {len(skeletons)} layers: once per cue {old:.2f} s, "
              f"shared {new:.2f} s ({old / new:.2f}x); load {load}")


if __name__ == "__main__":
    main()
