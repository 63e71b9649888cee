"""Throughput and memory of the streaming pass against merely reading the files (issues 2 and 6).

Prints one table: for 8 GPT-2-small-shaped models (124M parameters, bf16 on disk, ~2 GB):
read-only time, the statistics pass, the whole ``recover`` (pass + tree), and a naive pairwise
baseline (load both models per pair), warm and cold page cache, with ratios and peak RSS.

    python benchmarks/throughput.py            # 8 x 124M (about 2 GB on disk)
    python benchmarks/throughput.py --memory   # adds 8 models of ~1 GB each: peak RSS check
"""

from __future__ import annotations

import argparse
import json
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
print(json.dumps({{"seconds": dt, "bytes": total, "peak_rss_mb": peak_mb}}))
"""

PASS = """
import json, time, torch
from mother_core import discover, compute_statistics, recover
t = time.perf_counter()
stats = compute_statistics(discover({folder!r}), device={device!r})
t_pass = time.perf_counter() - t
rec = recover(stats)
dt = time.perf_counter() - t
{peak}
print(json.dumps({{"seconds": dt, "pass_seconds": t_pass, "edges": len(rec.edges), "peak_rss_mb": peak_mb,
                  "bytes": stats.settings["bytes_read"]}}))
"""

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


def measure(folder: Path, n_models: int, shapes: dict, naive: bool, device: str) -> list[dict]:
    paths = make_family(folder, n_models, shapes)
    files = [str(p / "model.safetensors") for p in paths]
    rows = []
    for cache in ("cold", "warm"):
        if cache == "warm":
            run_python(READ.format(files=files, peak=PEAK_RSS))  # fill the page cache
        how = drop_page_cache([Path(f) for f in files]) if cache == "cold" else "-"
        read = run_python(READ.format(files=files, peak=PEAK_RSS))
        if cache == "cold":
            drop_page_cache([Path(f) for f in files])
        full = run_python(PASS.format(folder=[str(folder)], device=device, peak=PEAK_RSS))
        row = {"cache": cache, "how": how, "gb": read["bytes"] / 1e9, "read_s": read["seconds"],
               "recover_s": full["seconds"], "pass_s": full["pass_seconds"],
               "ratio": full["seconds"] / read["seconds"], "peak_rss_mb": full["peak_rss_mb"]}
        if naive and cache == "warm":
            nv = run_python(NAIVE.format(files=files, peak=PEAK_RSS))
            row["naive_s"] = nv["seconds"]
            row["speedup_vs_naive"] = nv["seconds"] / full["seconds"]
            row["naive_peak_rss_mb"] = nv["peak_rss_mb"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--memory", action="store_true", help="also 8 models of ~1 GB each (peak RSS)")
    ap.add_argument("--no-naive", action="store_true")
    args = ap.parse_args()
    tables = [("8 x GPT-2 small (124M, bf16)", measure(DATA / "gpt2x8", args.models, gpt2_shapes(),
                                                        not args.no_naive, args.device))]
    if args.memory:
        big = gpt2_shapes(n_layer=36, d=1280)  # GPT-2 large shapes: ~774M params, ~1.5 GB in bf16
        tables.append(("8 x GPT-2 large (774M, bf16)", measure(DATA / "gpt2L-x8", args.models, big, False,
                                                               args.device)))
    print("| set | page cache | GB read | read only (s) | pass (s) | recover (s) | recover / read | "
          "naive pairwise (s) | speed-up vs naive | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in tables:
        for r in rows:
            print(f"| {name} | {r['cache']} ({r['how']}) | {r['gb']:.2f} | {r['read_s']:.2f} | {r['pass_s']:.2f} | "
                  f"{r['recover_s']:.2f} | {r['ratio']:.2f}x | {r.get('naive_s', float('nan')):.1f} | "
                  f"{r.get('speedup_vs_naive', float('nan')):.1f}x | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
