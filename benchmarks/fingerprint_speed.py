"""The per-model fingerprint pass (issue 15, the 10,000-model target): seconds and CPU seconds per model.

``fingerprint_all`` over a ``mother_zoo.mlp_forest`` forest (98,880-parameter fp16 models, children
trained from their parents; the same sets as ``scale_sketch.py``, ``benchmarks/_data/scale-forest-N``),
in a fresh interpreter, into an empty sketch store, warm page cache. With ``--before CHECKOUT`` the same
runs alternate with another checkout's code (run from that checkout), so a change is measured against its
baseline under the same load; the load average is printed with every row.

    python benchmarks/fingerprint_speed.py --models 200 --repeats 2 --before /path/to/old/checkout
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternating_arguments, alternating_runs  # noqa: E402
from scale_sketch import ensure_forest  # noqa: E402

CODE = """
import json, os, tempfile, time
import mother_core
from mother_core.io.discovery import discover
from mother_core.fingerprinting import fingerprint_all
found = discover([{folder!r}])
with tempfile.TemporaryDirectory() as store:
    w, c = time.perf_counter(), time.process_time()
    refs, fps, problems, figures = fingerprint_all(found.models, cache_dir=store)
    print(json.dumps({{"models": len(fps), "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                      "load": os.getloadavg()[0], "code": os.path.dirname(os.path.dirname(mother_core.__file__))}}))
"""


def main() -> None:
    args = alternating_arguments(__doc__, models=200)
    folder = ensure_forest(args.models)
    code = CODE.format(folder=str(folder))
    print("| run | code | models | fingerprint (s) | per model (ms) | CPU (s) | CPU per model (ms) | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    for i, name, r in alternating_runs(code, args.repeats, args.before):
        print(f"| {i} | {name} | {r['models']} | {r['wall_s']:.2f} | {1000 * r['wall_s'] / r['models']:.1f} | "
              f"{r['cpu_s']:.2f} | {1000 * r['cpu_s'] / r['models']:.1f} | {r['load']:.1f} |", flush=True)
    print(f"\nload average now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
