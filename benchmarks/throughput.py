"""Throughput and memory of the streaming pass against merely reading the files (issues 2 and 6).

Prints one table: for 8 GPT-2-small-shaped models (124M parameters, bf16 on disk, ~2 GB):
read-only time, the statistics pass, the whole ``recover`` (pass + tree), and a naive pairwise
baseline (load both models per pair), warm and cold page cache, with ratios and peak RSS.

    python benchmarks/throughput.py                            # 8 x 124M (about 2 GB on disk)
    python benchmarks/throughput.py --memory                   # adds 8 models of ~1 GB each: peak RSS
    python benchmarks/throughput.py --memory --skip-small --no-naive --repeats 1
    python benchmarks/throughput.py --kernels                  # adds the pass with the fused kernel off
    python benchmarks/throughput.py --steady --memory          # one process: first pass vs steady state
    python benchmarks/throughput.py --device cpu,cuda --no-naive  # the pass on each device, alternating

The machine these numbers come from is shared: every run also reports its CPU seconds (user + system, all
threads) and the load average, and each state is repeated (``--repeats``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, PEAK_RSS, drop_page_cache, gpt2_shapes, make_family, run_python  # noqa: E402

READ = """
import json, time, sys
files = {files!r}
buf = bytearray(1 << 24)
t = time.perf_counter(); total = 0
for f in files:
    with open(f, 'rb', buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n: break
            total += n
dt = time.perf_counter() - t
{peak}
{cpu}
print(json.dumps({{"seconds": dt, "bytes": total, "peak_rss_mb": peak_mb, "cpu_s": cpu_s}}))
"""

PASS = """
import json, time, torch
from mother_core import discover, compute_statistics, recover
{cpu}
cpu0 = cpu_s
t = time.perf_counter()
stats = compute_statistics(discover({folder!r}), device={device!r})
t_pass = time.perf_counter() - t
rec = recover(stats)
dt = time.perf_counter() - t
{peak}
{cpu}
print(json.dumps({{"seconds": dt, "pass_seconds": t_pass, "edges": len(rec.edges), "peak_rss_mb": peak_mb,
                  "bytes": stats.settings["bytes_read"], "cpu_s": cpu_s - cpu0}}))
"""

STEADY = """
import json, time
from mother_core import discover, compute_statistics
from mother_core.stats import fused
found = discover({folder!r})
times = []
for _ in range(3):
    t = time.perf_counter()
    compute_statistics(found, device="cpu")
    times.append(time.perf_counter() - t)
print(json.dumps({{"first_s": times[0], "steady_s": min(times[1:]), "kernel": fused.ready()}}))
"""

# User + system CPU seconds of this process so far (all threads): contention from other work on a shared
# machine stretches wall time but not this.
CPU = ("import resource; _ru = resource.getrusage(resource.RUSAGE_SELF); "
       "cpu_s = _ru.ru_utime + _ru.ru_stime")

NAIVE = """
import json, time, itertools, torch
from safetensors.torch import load_file
paths = {files!r}
t = time.perf_counter()
dist = {{}}
for i, j in itertools.combinations(range(len(paths)), 2):
    a = load_file(paths[i]); b = load_file(paths[j])  # load both models for every pair
    d = 0.0
    for k in a:
        x, y = a[k].float(), b[k].float()
        d += float(((x - y) ** 2).sum())
        for z in (x, y):  # kurtosis of both, as a per-pair loop would
            c = z - z.mean(); m2 = (c * c).mean(); _ = (c ** 4).mean() / m2 ** 2 - 3
    dist[(i, j)] = d
dt = time.perf_counter() - t
{peak}
print(json.dumps({{"seconds": dt, "peak_rss_mb": peak_mb}}))
"""


def measure(folder: Path, n_models: int, shapes: dict, naive: bool, device: str, repeats: int = 1,
            kernels: bool = False) -> list[dict]:
    """Read-only vs recover, cold then warm, ``repeats`` times each (interleaved, so drift hits both).

    ``kernels``: also run the pass with the fused CPU kernel switched off (``MOTHER_FUSED_KERNEL=0``,
    the torch path) right after each default run, for the ablation column.
    """
    paths = make_family(folder, n_models, shapes)
    files = [str(p / "model.safetensors") for p in paths]
    read_code = READ.format(files=files, peak=PEAK_RSS, cpu=CPU)
    # Several devices ("cpu,cuda") alternate within each repeat, on the same files and page-cache state.
    pass_codes = {d: PASS.format(folder=[str(folder)], device=d, peak=PEAK_RSS, cpu=CPU) for d in device.split(",")}
    rows = []
    for cache in ("cold", "warm"):
        for _, (dev, pass_code) in itertools.product(range(repeats), pass_codes.items()):
            if cache == "warm":
                run_python(read_code)  # fill the page cache
            how = drop_page_cache([Path(f) for f in files]) if cache == "cold" else "-"
            read = run_python(read_code)
            if cache == "cold":
                drop_page_cache([Path(f) for f in files])
            full = run_python(pass_code)
            if kernels:
                if cache == "cold":
                    drop_page_cache([Path(f) for f in files])
                torch_path = run_python(pass_code, env={"MOTHER_FUSED_KERNEL": "0"})
            row = {"device": dev, "cache": cache, "how": how, "gb": read["bytes"] / 1e9, "read_s": read["seconds"],
                   "read_cpu_s": read["cpu_s"], "recover_s": full["seconds"], "pass_s": full["pass_seconds"],
                   "recover_cpu_s": full["cpu_s"], "ratio": full["seconds"] / read["seconds"],
                   "peak_rss_mb": full["peak_rss_mb"], "load": os.getloadavg()[0],
                   "torch_pass_s": torch_path["pass_seconds"] if kernels else float("nan")}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        if naive and cache == "warm":
            nv = run_python(NAIVE.format(files=files, peak=PEAK_RSS))
            best = min(r["recover_s"] for r in rows if r["cache"] == "warm")
            for r in rows:
                if r["cache"] == "warm":
                    r["naive_s"] = nv["seconds"]
                    r["speedup_vs_naive"] = nv["seconds"] / r["recover_s"]
                    r["naive_peak_rss_mb"] = nv["peak_rss_mb"]
            print(json.dumps({"naive_s": nv["seconds"], "best_warm_recover_s": best}), file=sys.stderr)
    return rows


ACCURACY = """
import json, numpy as np, torch
from safetensors import safe_open
from mother_core import discover, compute_statistics
from mother_core.io.names import normalise_name
folder = {folder!r}
stats = compute_statistics(discover([folder]), device={device!r})
names = [t.name for t in stats.tensors]
files = [str(r.files[0]) for r in stats.models]
worst = {{"dist_rel": 0.0, "kurtosis_abs": 0.0, "kurtosis_rel_1e-6": 0.0}}
for name in {names!r}:
    s = names.index(normalise_name(name))
    rows = []
    for f in files:
        with safe_open(f, "pt") as fh:
            rows.append(fh.get_tensor(name).double().reshape(-1))
    x = torch.stack(rows)
    for a in range(len(rows)):
        c = x[a] - x[a].mean()
        k = float((c ** 4).mean() / (c ** 2).mean() ** 2 - 3)
        err = abs(stats.kurtosis[a, s] - k)
        worst["kurtosis_abs"] = max(worst["kurtosis_abs"], err)
        worst["kurtosis_rel_1e-6"] = max(worst["kurtosis_rel_1e-6"], err / (abs(k) + 1e-6))  # as the tests
        for b in range(a + 1, len(rows)):
            ref = float(((x[a] - x[b]) ** 2).sum())
            worst["dist_rel"] = max(worst["dist_rel"], abs(stats.sq_dist[s, a, b] - ref) / ref)
print(json.dumps(worst))
"""


def accuracy(folder: Path, device: str) -> dict:
    """Largest relative error of squared distances and kurtosis against float64, on a few tensors."""
    names = ["transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.5.mlp.c_fc.bias",
             "transformer.h.11.mlp.c_proj.weight", "transformer.ln_f.weight"]
    return run_python(ACCURACY.format(folder=str(folder), device=device, names=names))


def steady(folder: Path, n_models: int, shapes: dict) -> list[str]:
    """Warm page cache, one process: the pass's first run (numba's load included) and its steady state
    (best of the next two), with the fused kernel and with it switched off."""
    paths = make_family(folder, n_models, shapes)
    run_python(READ.format(files=[str(p / "model.safetensors") for p in paths], peak=PEAK_RSS, cpu=CPU))
    code = STEADY.format(folder=[str(folder)])
    on = run_python(code)
    off = run_python(code, env={"MOTHER_FUSED_KERNEL": "0"})
    return [f"| {folder.name} | {on['first_s']:.2f} | {on['steady_s']:.2f} | {off['first_s']:.2f} | "
            f"{off['steady_s']:.2f} | {off['steady_s'] / on['steady_s']:.2f}x | {os.getloadavg()[0]:.1f} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--device", default="auto",
                    help="auto | cpu | cuda | a comma list (cpu,cuda) measured alternately in one run")
    ap.add_argument("--memory", action="store_true", help="also 8 models of ~1 GB each (peak RSS)")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs per page-cache state (the machine is shared)")
    ap.add_argument("--skip-small", action="store_true", help="with --memory: only the ~1 GB models")
    ap.add_argument("--steady", action="store_true",
                    help="only: warm pass in one process, first run vs steady state, kernel on vs off")
    ap.add_argument("--kernels", action="store_true",
                    help="also time the pass with the fused CPU kernel off (torch path), same run")
    ap.add_argument("--accuracy", action="store_true",
                    help="only: max relative error vs float64 on a few tensors of the 124M set")
    args = ap.parse_args()
    if args.accuracy:
        make_family(DATA / "gpt2x8", args.models, gpt2_shapes())
        print(json.dumps(accuracy(DATA / "gpt2x8", args.device)))
        return
    if args.steady:
        print("| set | kernel: first pass (s) | kernel: steady (s) | torch path: first (s) | torch path: steady (s) "
              "| steady speed-up | load avg |")
        print("|---|---|---|---|---|---|---|")
        for line in steady(DATA / "gpt2x8", args.models, gpt2_shapes()):
            print(line)
        if args.memory:
            for line in steady(DATA / "gpt2-1GB-x8", args.models, gpt2_shapes(n_layer=36, d=1024)):
                print(line)
        return
    tables = []
    if not args.skip_small:
        tables.append(("8 x GPT-2 small (124M, bf16)", measure(DATA / "gpt2x8", args.models, gpt2_shapes(),
                                                                not args.no_naive, args.device, args.repeats,
                                                                args.kernels)))
    if args.memory:
        big = gpt2_shapes(n_layer=36, d=1024)  # GPT-2-medium width, 36 layers: ~505M params, ~1.0 GB in bf16
        tables.append(("8 x 505M (bf16, ~1 GB each)", measure(DATA / "gpt2-1GB-x8", args.models, big, False,
                                                              args.device, args.repeats, args.kernels)))
    print("| set | device | page cache | GB read | read only (s) | pass (s) | pass, kernel off (s) | recover (s) | "
          "recover / read | recover CPU s (read CPU s) | naive pairwise (s) | speed-up vs naive | peak RSS (MB) | "
          "load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in tables:
        for r in rows:
            print(f"| {name} | {r['device']} | {r['cache']} ({r['how']}) | {r['gb']:.2f} | {r['read_s']:.2f} | "
                  f"{r['pass_s']:.2f} | "
                  f"{r['torch_pass_s']:.2f} | "
                  f"{r['recover_s']:.2f} | {r['ratio']:.2f}x | {r['recover_cpu_s']:.2f} ({r['read_cpu_s']:.2f}) | "
                  f"{r.get('naive_s', float('nan')):.1f} | {r.get('speedup_vs_naive', float('nan')):.1f}x | "
                  f"{r['peak_rss_mb']:.0f} | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
