"""What the typed detectors' reruns within one recovery cost, and what reusing their layer reads saves.

``recover`` runs :func:`mother_core.relations.detect.detect_relations` up to three times (again after a
stack's split, again after :func:`mother_core.recovery.typed.join_linked_trees` joins trees). The layer-stacking
and depth-pruning detectors read sampled layers from the models' files each time. This script solves each set
with two codes alternately (this checkout and ``--other``, e.g. main, each a fresh Python process) and reports,
per code, the seconds and the files opened inside those two detectors, per call of ``detect_relations`` and over
the whole ``recover``, with the ratios of the medians, and whether the two results are the same.

    git archive main | tar -x -C /tmp/main-copy && ln -s $PWD/.venv /tmp/main-copy/.venv
    python benchmarks/detect_rerun.py --other /tmp/main-copy --cache CACHE --sets /tmp/typeds/seed400/typed

The statistics cache must be warm (one ``benchmarks/typed.py --cache CACHE`` run): the pass is not timed.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solve_speed import run_one, timed_recover, two_codes  # noqa: E402


def worker(code: Path, folder: Path, cache: Path) -> None:
    """Solve one set with the ``mother_core`` under ``code``, timing the stack and depth detectors and counting
    the files they open; print one JSON line."""
    sys.path.insert(0, str(code))
    import mother_core.io.readers as readers
    import mother_core.relations.detect as detect
    from mother_core import RecoverySettings, compute_statistics, discover, recover

    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    calls: list[dict[str, float]] = []
    inside = [False]
    opened = [0]
    real_open = readers.open_model

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened[0] += int(inside[0])
        return real_open(*args, **kwargs)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            inside[0], before, t0 = True, opened[0], time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                inside[0] = False
                calls[-1][name + "_s"] = calls[-1].get(name + "_s", 0.0) + time.perf_counter() - t0
                calls[-1][name + "_opened"] = calls[-1].get(name + "_opened", 0) + opened[0] - before
        return run

    real_detect = detect.detect_relations

    def counting_detect(*args: Any, **kwargs: Any) -> Any:
        calls.append({})
        t0 = time.perf_counter()
        out = real_detect(*args, **kwargs)
        calls[-1]["detect_s"] = time.perf_counter() - t0
        return out

    readers.open_model = counting_open
    detect.find_depth_pruned = timed("depth", detect.find_depth_pruned)
    detect.find_stacks = timed("stack", detect.find_stacks)
    import mother_core.recovery.recover as rmod
    rmod.detect_relations = counting_detect
    _, out = timed_recover(stats, recover, RecoverySettings())
    print(json.dumps({**out, "calls": calls}))


def _summary(runs: list[dict]) -> dict[str, float]:
    """Medians over the runs: recover seconds, the detectors' seconds and files opened (all calls, and calls
    after the first)."""
    def med(f: Callable[[dict], float]) -> float:
        return statistics.median(f(r) for r in runs)

    def total(r: dict, key: str, first: int = 0) -> float:
        return sum(c.get(key, 0.0) for c in r["calls"][first:])

    return {"recover_s": med(lambda r: r["seconds"]), "detect_calls": med(lambda r: len(r["calls"])),
            "depth_s": med(lambda r: total(r, "depth_s")), "depth_rerun_s": med(lambda r: total(r, "depth_s", 1)),
            "stack_s": med(lambda r: total(r, "stack_s")), "stack_rerun_s": med(lambda r: total(r, "stack_s", 1)),
            "depth_opened": med(lambda r: total(r, "depth_opened")),
            "depth_rerun_opened": med(lambda r: total(r, "depth_opened", 1)),
            "stack_opened": med(lambda r: total(r, "stack_opened")),
            "stack_rerun_opened": med(lambda r: total(r, "stack_opened", 1))}


def main() -> None:
    args = two_codes(__doc__).parse_args()
    if args.worker is not None:
        worker(args.worker, args.sets[0], args.cache)
        return
    codes = [("this", args.this)] + ([("other", args.other)] if args.other else [])
    for folder in args.sets:
        runs: dict[str, list[dict]] = {name: [] for name, _ in codes}
        for _ in range(args.repeats):
            for name, code in codes:
                runs[name].append(run_one(code, folder, args.cache, __file__))
        sums = {name: _summary(r) for name, r in runs.items()}
        hashes = {name: {r["hash"] for r in rs} for name, rs in runs.items()}
        loads = [r["load"] for rs in runs.values() for r in rs]
        print(f"{folder}: load {min(loads):.1f}-{max(loads):.1f}, results "
              + ("identical" if len(set.union(*hashes.values())) == 1 else f"differ {hashes}"))
        keys = list(next(iter(sums.values())))
        print("| median | " + " | ".join(name for name, _ in codes) + (" | this / other |" if args.other else " |"))
        print("|---" * (len(codes) + 1 + bool(args.other)) + "|")
        for k in keys:
            vals = [sums[name][k] for name, _ in codes]
            ratio = f" | {vals[0] / vals[1]:.2f}" if args.other and vals[1] else (" | -" if args.other else "")
            print(f"| {k} | " + " | ".join(f"{v:.3g}" for v in vals) + ratio + " |")


if __name__ == "__main__":
    main()
