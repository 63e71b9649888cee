"""The streaming pass against the code of another revision: one chunk through the fused kernel, and the whole
pass on a family of bf16 models, in fresh processes that alternate between the two trees.

Used to price a change to the pass (the count of exactly equal entries, issues 10/11) as a ratio against
its baseline measured in the same run. The machine is shared: thread CPU time is reported beside wall time,
and each number is the best of ``--rounds`` alternating runs.

    git archive b70c75c | tar -x -C /tmp/before            # the code before the change
    python benchmarks/pass_ab.py --baseline /tmp/before --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, gpt2_shapes, make_family  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

KERNEL = r"""
import json, time, numpy as np, torch
from mother_core.stats import fused
fused.warm_up()
rng = np.random.default_rng(0)
out = {}
for m, n in [(5, 1 << 22), (8, 1 << 22), (16, 1 << 21)]:
    x = torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).bfloat16()
    best = 1e9
    for _ in range(15):
        t = time.thread_time(); fused.reduce_chunk(x); best = min(best, time.thread_time() - t)
    out[f"{m} x {n / 1e6:.1f}M"] = best
print(json.dumps(out))
"""

PASS = r"""
import json, resource, sys, time
from mother_core import compute_statistics, discover
t = time.perf_counter(); r0 = resource.getrusage(resource.RUSAGE_SELF)
s = compute_statistics(discover([sys.argv[1]]), device="cpu")
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t, "cpu": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime,
                  "bytes": s.settings["bytes_read"]}))
"""


def _run(tree: Path, code: str, *args: str) -> dict:
    # cwd = the tree: `python -c` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, required=True, help="a tree holding the baseline's mother_core")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4, help="GPT-2-shaped models of this many blocks (4: 68M)")
    args = ap.parse_args()
    trees = {"before": args.baseline.resolve(), "after": ROOT}
    folder = DATA / f"pass_ab_{args.layers}"
    make_family(folder, 8, gpt2_shapes(n_layer=args.layers))
    kernel: dict[str, dict[str, float]] = {k: {} for k in trees}
    whole: dict[str, list[dict]] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for shape, sec in _run(tree, KERNEL).items():
                kernel[name][shape] = min(sec, kernel[name].get(shape, 1e9))
            whole[name].append(_run(tree, PASS, str(folder)))
    print(f"load average {os.getloadavg()[0]:.1f}\n")
    print("| chunk (bf16, models x values) | before ms | after ms | ratio |\n|---|---|---|---|")
    for shape in kernel["before"]:
        b, a = kernel["before"][shape], kernel["after"][shape]
        print(f"| {shape} | {1e3 * b:.1f} | {1e3 * a:.1f} | {a / b:.2f} |")
    gb = whole["after"][0]["bytes"] / 1e9
    print(f"\n| whole pass, 8 x {args.layers}-block GPT-2 bf16 ({gb:.2f} GB, warm) | before | after | ratio |")
    print("|---|---|---|---|")
    for key in ("wall", "cpu"):
        b, a = min(r[key] for r in whole["before"]), min(r[key] for r in whole["after"])
        print(f"| {key} s (best of {args.rounds}) | {b:.2f} | {a:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
