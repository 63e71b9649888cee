"""The sparse path's stages, wall and CPU seconds, against another checkout (issue 15, 10,000 models).

On a ``mother_zoo.mlp_forest`` forest (``benchmarks/_data/scale-forest-N``, as ``scale_sketch.py``), in
a fresh interpreter per run, cold sketch store, warm page cache, one torch thread: discovery, the sparse
statistics (fingerprints, candidates, exact pairs), the tree step and writing ``result.json``, each with
the process's CPU seconds beside the wall clock (CPU is less swayed by other processes on a shared
machine). With ``--before CHECKOUT`` the same runs alternate with another checkout's code (run from that
checkout), so a change is measured against its baseline under the same load.

    git archive main | tar -x -C /tmp/before
    python benchmarks/scale_stages.py --models 10000 --repeats 2 --before /tmp/before
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PEAK_RSS, alternating_arguments, alternating_runs  # noqa: E402
from scale_sketch import ensure_forest  # noqa: E402

CODE = """
import json, os, tempfile, time
import torch
torch.set_num_threads(1)
from mother_core.io.discovery import discover
from mother_core.fingerprinting import sparse_statistics
from mother_core.recovery.sparse import recover_sparse
from mother_core.evaluate import evaluate, load_truth
clock = lambda: (time.perf_counter(), time.process_time())
with tempfile.TemporaryDirectory() as tmp:
    r = {{}}
    w0, c0 = clock()
    found = discover([{folder!r}])
    w1, c1 = clock()
    timings = {{}}
    stats = sparse_statistics(found.models, k=8, cache_dir=os.path.join(tmp, "cache"), timings=timings)
    w2, c2 = clock()
    rec = recover_sparse(stats)
    w3, c3 = clock()
    rec.save(os.path.join(tmp, "result.json"))
    w4, c4 = clock()
    {peak}
    score = evaluate(rec, load_truth({truth!r}))
    print(json.dumps({{"discover": [w1 - w0, c1 - c0], "sparse": [w2 - w1, c2 - c1],
                      **{{k: [v, timings.get(k + "_cpu")] for k, v in timings.items() if not k.endswith("_cpu")}},
                      "tree": [w3 - w2, c3 - c2], "write": [w4 - w3, c4 - c3], "total": [w4 - w0, c4 - c0],
                      "peak_mb": peak_mb, "directed": score.directed_accuracy,
                      "undirected": score.undirected_accuracy, "load": os.getloadavg()[0]}}))
"""

STAGES = ("discover", "fingerprint", "candidates", "pairs", "tree", "write", "total")


def _cell(pair: list) -> str:
    wall, cpu = pair
    return f"{wall:.1f}" if cpu is None else f"{wall:.1f} / {cpu:.1f}"


def main() -> None:
    args = alternating_arguments(__doc__, models=1000)
    folder = ensure_forest(args.models)
    code = CODE.format(folder=str(folder), truth=str(folder / "truth.json"), peak=PEAK_RSS)
    print("Seconds, wall / CPU (CPU of the sparse stages only where the code records it).\n")
    print("| run | code | " + " | ".join(STAGES) + " | peak RSS (MB) | directed | undirected | load |")
    print("|---|---|" + "---|" * (len(STAGES) + 4))
    for i, name, r in alternating_runs(code, args.repeats, args.before):
        cells = " | ".join(_cell(r[s]) for s in STAGES)
        print(f"| {i} | {name} | {cells} | {r['peak_mb']:.0f} | {r['directed']:.5f} | {r['undirected']:.5f} "
              f"| {r['load']:.1f} |", flush=True)
    print(f"\nload average now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
