"""The one pass at disk speed (issue 15, item 6): cold ``mother recover`` against a cold ``cat``.

Eight GPT-2-small-shaped bf16 models (124M parameters each, ~2 GB of safetensors, written by
``_common.make_family``). Each run, from a cold page cache for these files:

- ``cat`` of the eight files to ``/dev/null`` (the disk's speed, the baseline);
- with ``--before CHECKOUT``, first a cold ``cat`` and a cold ``mother recover --timings`` of that checkout (the
  code before a change, a ``git worktree``), so both ratios come from the same minutes;
- ``mother recover --timings`` on the folder (the real command, in its own process): its wall time, and the
  seconds of each stage it reports (start-up = interpreter + imports, finding models = header parsing,
  opening models, planning, read + reduce, assembling statistics, tree step, writing the result);
- the start-up alone: ``python -c "import mother_core"``, ``mother --help``, and
  ``python -c "import torch, mother_core.pipeline"`` (what ``recover`` imports before reading).

The ratio is (recover wall - its start-up) / cold cat, the start-up being the one the run itself measured.
The page cache is emptied for these files only, with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (works
without root for files one can open; ``drop_caches`` would empty the cache of everyone on a shared
machine). Runs are interleaved (cat, recover, cat, recover...), so drift in the machine's load hits both;
the load average is printed with every row.

    python benchmarks/disk_speed.py                # 5 runs
    python benchmarks/disk_speed.py --repeats 3
    python benchmarks/disk_speed.py --repeats 5 --before ../before   # ../before: git worktree of the old commit
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, ROOT, evict, gpt2_shapes, make_family  # noqa: E402

MOTHER = [sys.executable, "-m", "mother_core"]
STAGE_LINE = re.compile(r"^(?P<name>.+?)\s+(?P<s>[0-9.]+) s\s+\((?P<cpu>[0-9.na]+) s cpu\)$")


def timed(cmd: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    """Wall seconds of ``cmd`` run in ``cwd`` (its output discarded) and its standard error."""
    t = time.perf_counter()
    out = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd)
    seconds = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return seconds, out.stderr


def stages_of(stderr: str) -> dict[str, float]:
    """The ``--timings`` table of ``mother recover``'s standard error."""
    found, cpu = {}, {}
    for line in stderr.splitlines():
        m = STAGE_LINE.match(line.strip())
        if m:
            found[m["name"].strip()] = float(m["s"])
            cpu[m["name"].strip()] = float(m["cpu"])
    found.pop("total", None)
    return found, cpu


def one_run(folder: Path, files: list[Path], out: Path, before: Path | None) -> dict:
    row: dict = {}
    if before is not None:  # the same commands on another checkout (``python -m`` imports from the cwd)
        evict(files)
        row["before_cat_s"], _ = timed(["cat", *map(str, files)])
        evict(files)
        row["before_recover_s"], err = timed([*MOTHER, "recover", str(folder), "--out", str(out), "--quiet",
                                              "--timings"], before)
        stages, cpu = stages_of(err)
        row["before_startup_s"] = stages.get("start-up (interpreter + imports)", float("nan"))
        row["before_stages"], row["before_cpu"] = stages, cpu
        row["before_ratio"] = (row["before_recover_s"] - row["before_startup_s"]) / row["before_cat_s"]
        row["before_help_s"], _ = timed([*MOTHER, "--help"], before)
    evict(files)
    cat_s, _ = timed(["cat", *map(str, files)])
    evict(files)
    recover_s, err = timed([*MOTHER, "recover", str(folder), "--out", str(out), "--quiet", "--timings"])
    stages, cpu = stages_of(err)
    startup = stages.get("start-up (interpreter + imports)", float("nan"))
    import_core, _ = timed([sys.executable, "-c", "import mother_core"])
    help_s, _ = timed([*MOTHER, "--help"])
    import_torch, _ = timed([sys.executable, "-c", "import torch, mother_core.pipeline"])
    return {**row, "cat_s": cat_s, "recover_s": recover_s, "startup_s": startup, "stages": stages, "cpu": cpu,
            "import_core_s": import_core, "help_s": help_s, "import_torch_s": import_torch,
            "ratio": (recover_s - startup) / cat_s, "load": os.getloadavg()[0],
            "gb": sum(f.stat().st_size for f in files) / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--before", type=Path, metavar="CHECKOUT",
                    help="also time `recover` and `--help` of another checkout (e.g. a git worktree of the "
                         "commit before a change), in the same runs")
    args = ap.parse_args()
    folder = DATA / "gpt2x8"
    paths = make_family(folder, args.models, gpt2_shapes())
    files = [p / "model.safetensors" for p in paths]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed: numba compiles the fused kernels into its on-disk cache on a checkout's first run.
        for checkout in [ROOT] + ([args.before] if args.before is not None else []):
            timed([*MOTHER, "recover", str(folder), "--out", str(Path(tmp) / "warm.json"), "--quiet"], checkout)
        for _ in range(args.repeats):
            rows.append(one_run(folder, files, Path(tmp) / "result.json", args.before))
            print(json.dumps(rows[-1]), file=sys.stderr)
    names = list(dict.fromkeys(n for r in rows for n in r["stages"]))
    short = {"start-up (interpreter + imports)": "start-up", "finding models (headers)": "headers",
             "opening models": "open", "assembling statistics": "assemble", "writing the result": "write"}
    print(f"{len(files)} x GPT-2 small (bf16), {rows[0]['gb']:.2f} GB; page cache emptied per file (posix_fadvise)")
    print()
    print("| run | cold cat (s) | `mother recover` (s) | " + " | ".join(short.get(n, n) + " (s)" for n in names)
          + " | recover - start-up (s) | **ratio** | `import mother_core` (s) | `mother --help` (s) "
          "| `import torch, mother_core.pipeline` (s) | load avg |")
    print("|---" * (len(names) + 9) + "|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['cat_s']:.2f} | {r['recover_s']:.2f} | "
              + " | ".join(f"{r['stages'].get(n, float('nan')):.2f}" for n in names)
              + f" | {r['recover_s'] - r['startup_s']:.2f} | **{r['ratio']:.2f}x** | {r['import_core_s']:.2f} | "
              f"{r['help_s']:.2f} | {r['import_torch_s']:.2f} | {r['load']:.1f} |")
    if args.before is not None:
        print()
        print(f"Before (`{args.before.name}`) and this checkout in the same runs, each `recover` right after its "
              "own cold `cat`; read + reduce and tree step as wall (CPU) seconds:")
        print()
        print("| run | code | cold cat (s) | `mother recover` (s) | start-up (s) | read + reduce (s) | tree step (s) "
              "| **ratio** | `mother --help` (s) | load avg |")
        print("|---" * 10 + "|")

        def cell(r: dict, stages: str, cpu: str, name: str) -> str:
            return f"{r[stages].get(name, float('nan')):.2f} ({r[cpu].get(name, float('nan')):.2f})"

        for i, r in enumerate(rows, 1):
            print(f"| {i} | before | {r['before_cat_s']:.2f} | {r['before_recover_s']:.2f} | "
                  f"{r['before_startup_s']:.2f} | {cell(r, 'before_stages', 'before_cpu', 'read + reduce')} | "
                  f"{cell(r, 'before_stages', 'before_cpu', 'tree step')} | **{r['before_ratio']:.2f}x** | "
                  f"{r['before_help_s']:.2f} | {r['load']:.1f} |")
            print(f"| {i} | this checkout | {r['cat_s']:.2f} | {r['recover_s']:.2f} | {r['startup_s']:.2f} | "
                  f"{cell(r, 'stages', 'cpu', 'read + reduce')} | {cell(r, 'stages', 'cpu', 'tree step')} | "
                  f"**{r['ratio']:.2f}x** | {r['help_s']:.2f} | {r['load']:.1f} |")
    print()
    for label, key in [("before", "before_ratio"), ("this checkout", "ratio")]:
        ratios = [r[key] for r in rows if key in r]
        if ratios:
            print(f"{label}: ratio (recover - start-up) / cold cat: median {statistics.median(ratios):.2f}x, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}x over {len(rows)} runs")


if __name__ == "__main__":
    main()
