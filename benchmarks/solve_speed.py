"""Solve time (``recover`` on cached statistics) of two code versions on the same sets, in the same minutes,
and whether their results are the same.

Machines shared with other jobs are noisy, so the two codes are timed alternately (this one, the other,
this one, ...) for ``--repeats`` rounds and compared by the median of each; each run is a fresh Python
process importing its code's ``mother_core`` from the given folder. A result is the whole recovery as
``Recovery.to_dict`` writes it (edges, relations, confidences, evidence lines, trees, the distance and
cost matrices) less its wall time, compared by hash.

    git archive main | tar -x -C /tmp/main-copy && ln -s $PWD/.venv /tmp/main-copy/.venv
    python benchmarks/solve_speed.py --other /tmp/main-copy --cache CACHE --sets /tmp/typedd/seed200/typed ...

The statistics cache must be warm (one ``benchmarks/typed.py --cache CACHE`` run): the pass is not timed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def worker(code: Path, folder: Path, cache: Path) -> None:
    """Solve one set with the ``mother_core`` under ``code``; print one JSON line (seconds, hash, models)."""
    sys.path.insert(0, str(code))
    from mother_core import RecoverySettings, compute_statistics, discover, recover

    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rec, out = timed_recover(stats, recover, RecoverySettings())
    print(json.dumps({**out, "models": len(rec.models), "edges": len(rec.edges)}))


def timed_recover(stats: Any, recover: Callable[..., Any], settings: Any) -> tuple[Any, dict[str, float | str]]:
    """``recover(stats, settings)`` with its seconds, the load average before it and the hash of its result."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    rec = recover(stats, settings)
    seconds = time.perf_counter() - t0
    d = rec.to_dict()
    d.pop("run_seconds", None)
    digest = hashlib.sha256(json.dumps(d, sort_keys=True, allow_nan=True).encode()).hexdigest()[:16]
    return rec, {"seconds": seconds, "hash": digest, "load": load}


def run_one(code: Path, folder: Path, cache: Path, script: str = __file__) -> dict:
    """One worker run of ``script`` (this one, or another script built on :func:`two_codes`) as a fresh process."""
    out = subprocess.run([sys.executable, str(Path(script).resolve()), "--worker", str(code), "--sets",
                          str(folder), "--cache", str(cache)], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(code)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def two_codes(doc: str | None) -> argparse.ArgumentParser:
    """The arguments of a script running two codes' workers on the same sets (this one, benchmarks/detect_rerun.py)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", type=Path, required=True, help="typed set folders")
    ap.add_argument("--cache", type=Path, required=True, help="a warm statistics cache folder")
    ap.add_argument("--other", type=Path, help="the other code's checkout (with mother_core/)")
    ap.add_argument("--this", type=Path, default=HERE, help="this code's checkout (default: this one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    ap = two_codes(__doc__)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker, args.sets[0], args.cache)
        return
    if args.other is None:
        ap.error("give --other")
    codes = {"this": args.this.resolve(), "other": args.other.resolve()}
    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.repeats):
        for folder in args.sets:
            for name in (("this", "other") if rep % 2 == 0 else ("other", "this")):  # alternate who goes first
                r = run_one(codes[name], folder, args.cache)
                runs.setdefault((str(folder), name), []).append(r)
                print(f"# round {rep + 1} {folder.parent.name} {name}: {r['seconds']:.2f} s, load {r['load']:.1f}, "
                      f"result {r['hash']}", file=sys.stderr, flush=True)
    print(f"this: {codes['this']}; other: {codes['other']}; {args.repeats} rounds, medians\n")
    print("| set | models | other s | this s | this / other | runs (other; this) | load | same result |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.sets:
        mine, theirs = runs[(str(folder), "this")], runs[(str(folder), "other")]
        a, b = statistics.median(r["seconds"] for r in theirs), statistics.median(r["seconds"] for r in mine)
        same = len({r["hash"] for r in mine + theirs}) == 1
        loads = [r["load"] for r in mine + theirs]
        times = "; ".join(", ".join(f"{r['seconds']:.1f}" for r in rs) for rs in (theirs, mine))
        print(f"| {folder.parent.parent.name}/{folder.parent.name} | {mine[0]['models']} | {a:.2f} | {b:.2f} | "
              f"{b / a:.3f} | {times} | {min(loads):.1f}-{max(loads):.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
