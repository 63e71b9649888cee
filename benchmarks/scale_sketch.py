"""Ten thousand models (issue 15): the sparse path (sketches -> candidates -> exact pairs -> tree).

Model sets: ``mother_zoo.mlp_forest`` forests of N models of 98,880 parameters (fp16), families of
~50 in random recursive trees, every child trained from its parent (4 SGD steps on its own random
regression task; roots 20 steps from their own initialisation). Generated once under
``benchmarks/_data/scale-forest-N`` (seed N).

For each N, in a fresh interpreter: discovery, fingerprinting (one read per model), candidate search,
exact candidate pairs, sparse recovery, writing ``result.json``; seconds per stage, peak RSS, the
result's size, accuracy against truth; the recall of the true parent among each model's k nearest
models by sketch (k = 1..16). At N <= ``--dense-up-to`` the dense path (every pair exact) runs on the
same set for comparison. Also the cache: a re-run, and one model added to N - 1. ``CPU (s)`` is the
process's CPU time from discovery to the written result (less swayed by other processes than the wall
clock), ``load`` the 1-minute load average when the run ended.

Final 10,000-model measurement (issue 15's done-when line), on a quiet machine:

    python benchmarks/scale_sketch.py --sizes 10000

    python benchmarks/scale_sketch.py                       # N = 100, 1000, 10000
    python benchmarks/scale_sketch.py --sizes 100 1000 --dense-up-to 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, PEAK_RSS, run_python  # noqa: E402

SPARSE = """
import json, os, time, torch
torch.set_num_threads(1)
t0 = time.perf_counter()
from mother_core.io.discovery import discover
from mother_core.fingerprinting import sparse_statistics
from mother_core.recovery.sparse import recover_sparse
from mother_core.evaluate import evaluate, load_truth
t1, c1 = time.perf_counter(), time.process_time()
found = discover([{path!r}])
t2 = time.perf_counter()
timings = {{}}
models = found.models[:{limit}] if {limit} else found.models
stats = sparse_statistics(models, k={k}, cache_dir={cache!r}, timings=timings)
t3 = time.perf_counter()
rec = recover_sparse(stats)
t4 = time.perf_counter()
rec.save({out!r})
t5, c5 = time.perf_counter(), time.process_time()
{peak}
score = evaluate(rec, load_truth({truth!r}))
print(json.dumps({{"import_s": t1 - t0, "discover_s": t2 - t1, **{{k + "_s": v for k, v in timings.items()}},
                  "cpu_s": c5 - c1, "load_1min": os.getloadavg()[0],
                  "tree_s": t4 - t3, "write_s": t5 - t4, "total_s": t5 - t1, "models": stats.n_models,
                  "pairs": int(len(stats.pairs)), "result_mb": os.path.getsize({out!r}) / 1e6,
                  "peak_rss_mb": peak_mb, "directed": score.directed_accuracy,
                  "undirected": score.undirected_accuracy, "ari": score.adjusted_rand_index,
                  "fingerprinted": stats.settings["models_fingerprinted"],
                  "pair_models_read": stats.settings["pair_models_read"], "bytes_read": stats.settings["bytes_read"]}}))
"""

DENSE = """
import json, os, time
t0 = time.perf_counter()
from mother_core import discover, compute_statistics, recover
from mother_core.evaluate import evaluate, load_truth
t1, c1 = time.perf_counter(), time.process_time()
found = discover([{path!r}])
t2 = time.perf_counter()
stats = compute_statistics(found, device="cpu")
t3 = time.perf_counter()
rec = recover(stats)
t4 = time.perf_counter()
rec.save({out!r})
t5, c5 = time.perf_counter(), time.process_time()
{peak}
score = evaluate(rec, load_truth({truth!r}))
print(json.dumps({{"import_s": t1 - t0, "discover_s": t2 - t1, "pass_s": t3 - t2, "tree_s": t4 - t3,
                  "cpu_s": c5 - c1, "load_1min": os.getloadavg()[0],
                  "write_s": t5 - t4, "total_s": t5 - t1, "models": stats.n_models,
                  "result_mb": os.path.getsize({out!r}) / 1e6, "peak_rss_mb": peak_mb,
                  "directed": score.directed_accuracy, "undirected": score.undirected_accuracy,
                  "ari": score.adjusted_rand_index}}))
"""

RECALL = """
import json
from mother_core.io.discovery import discover
from mother_core.evaluate import load_truth
from mother_core.fingerprinting import fingerprint_all
from mother_core.recovery.candidates import embedding, nearest_neighbours, recall
found = discover([{path!r}])
refs, fps, _, _ = fingerprint_all(found.models, cache_dir={cache!r})
ix = {{r.id: i for i, r in enumerate(refs)}}
parent = [-1] * len(refs)
for p, c in load_truth({truth!r}):
    parent[ix[c]] = ix[p]
slots = sorted({{s for fp in fps for s in fp.slots if "," in s.rsplit("|", 1)[1]}})
emb = embedding(fps, slots)
nb = nearest_neighbours(emb, 16)
print(json.dumps({{str(k): recall(nb[:, :k], parent) for k in (1, 2, 3, 4, 6, 8, 12, 16)}}))
"""


def ensure_forest(n: int) -> Path:
    folder = DATA / f"scale-forest-{n}"
    if not (folder / "truth.json").exists():
        from mother_zoo.mlp_forest import generate_forest

        t = time.perf_counter()
        generate_forest(folder, n, seed=n)
        print(f"generated {n} models in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--dense-up-to", type=int, default=1000)
    ap.add_argument("--incremental-up-to", type=int, default=1000)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores",
          file=sys.stderr)
    rows, recalls, incremental = [], {}, []
    tmp = Path(tempfile.mkdtemp(prefix="mother-scale-"))
    try:
        for n in args.sizes:
            folder = ensure_forest(n)
            truth = str(folder / "truth.json")
            cache = str(tmp / f"cache-{n}")
            for label, cache_dir in (("sparse, cold cache", cache), ("sparse, re-run (cache)", cache)):
                r = run_python(SPARSE.format(path=str(folder), k=args.k, cache=cache_dir, out=str(tmp / "r.json"),
                                             truth=truth, peak=PEAK_RSS, limit=0))
                r.update(n=n, path=label)
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
            recalls[n] = run_python(RECALL.format(path=str(folder), cache=cache, truth=truth))
            recalls[n].pop("wall_s", None)  # run_python's own figure, not a k
            print(n, "recall", json.dumps(recalls[n]), file=sys.stderr)
            if n <= args.dense_up_to:
                r = run_python(DENSE.format(path=str(folder), out=str(tmp / "d.json"), truth=truth, peak=PEAK_RSS))
                r.update(n=n, path="dense (every pair)")
                rows.append(r)
                print(json.dumps(r), file=sys.stderr)
            # Incremental: N - 1 models into a fresh cache, then all N.
            inc_cache = str(tmp / f"inc-{n}")
            steps = (("first run, N-1", n - 1), ("N-th model added", 0)) if n <= args.incremental_up_to else ()
            for label, limit in steps:
                r = run_python(SPARSE.format(path=str(folder), k=args.k, cache=inc_cache, out=str(tmp / "i.json"),
                                             truth=truth, peak=PEAK_RSS, limit=limit))
                r.update(n=n, step=label)
                incremental.append(r)
                print(json.dumps(r), file=sys.stderr)
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(inc_cache, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\nk = {args.k}, sketch d = 256; fresh interpreter per run (imports excluded); `uptime` at the end: {up}\n")
    print("| N | path | discover | fingerprint / pass | candidates | exact pairs | tree | write | end to end (s) "
          "| CPU (s) | load | peak RSS (MB) | result.json (MB) | pairs | directed acc. | undirected acc. | ARI |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fp = r.get("fingerprint_s", r.get("pass_s", float("nan")))
        cand = r.get("candidates_s", float("nan"))
        print(f"| {r['n']:,} | {r['path']} | {r['discover_s']:.1f} | {fp:.1f} | {cand:.1f} "
              f"| {r.get('pairs_s', float('nan')):.1f} | {r['tree_s']:.1f} | {r['write_s']:.1f} | {r['total_s']:.1f} "
              f"| {r.get('cpu_s', float('nan')):.1f} | {r.get('load_1min', float('nan')):.1f} "
              f"| {r['peak_rss_mb']:.0f} | {r['result_mb']:.1f} | {r.get('pairs', '-')} | {r['directed']:.4f} "
              f"| {r['undirected']:.4f} | {r['ari']:.4f} |")
    print("\nRecall of the true parent among the k nearest models by sketch distance (either direction):\n")
    ks = list(next(iter(recalls.values())).keys()) if recalls else []
    print("| N | " + " | ".join(f"k={k}" for k in ks) + " |")
    print("|---|" + "---|" * len(ks))
    for n, rec in recalls.items():
        print(f"| {n:,} | " + " | ".join(f"{rec[k]:.4f}" for k in ks) + " |")
    if not incremental:
        return
    print("\n| N | cache step | models fingerprinted | models re-read for pairs | end to end (s) |")
    print("|---|---|---|---|---|")
    for r in incremental:
        print(f"| {r['n']:,} | {r['step']} | {r['fingerprinted']} | {r['pair_models_read']} | {r['total_s']:.1f} |")


if __name__ == "__main__":
    main()
