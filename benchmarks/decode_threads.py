"""One decode thread against several, in one process, alternating (issue 11: decoding on every core).

Reads every 2-D tensor of one quantized file the way the pass does (``read_into`` of row chunks of
``--chunk`` values into one reused float32 buffer) with ``decode_threads`` 1 and then N, ``--rounds`` times
in turn, and prints the median wall and CPU seconds of each with the load average. Kernels are loaded
before the clock starts; fill the page cache first (``cat FILE > /dev/null``) for a warm read.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/decode_threads.py benchmarks/_data/q8_0-1gb.gguf --rounds 7
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import numpy as np
    import torch

    from mother_core.io import gguf_fast, int8_fast, staged
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="the other setting (0: every core available)")
    ap.add_argument("--chunk", type=int, default=1 << 22)
    args = ap.parse_args()
    gguf_fast.warm_up()
    int8_fast.scale_rows(np.zeros((1, 4), np.int8), np.ones(1, np.float32), np.empty((1, 4), np.float32))
    ref = discover([args.path]).models[0]

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def once(threads: int) -> tuple[float, float]:
        staged.set_decode_threads(threads)
        buf = torch.empty(args.chunk)
        t0, c0 = time.perf_counter(), cpu()
        with open_model(ref) as reader:
            for name, info in reader.tensor_infos().items():
                if not info.is_float or len(info.shape) < 2:
                    continue
                rows = info.shape[0]
                per_row = info.numel // rows
                step = max(1, args.chunk // per_row)
                for r0 in range(0, rows, step):
                    r1 = min(rows, r0 + step)
                    reader.read_into(name, (r0, r1), buf[: (r1 - r0) * per_row])  # type: ignore[attr-defined]
        return time.perf_counter() - t0, cpu() - c0

    settings = (1, args.threads)
    runs: dict[int, list[tuple[float, float]]] = {t: [] for t in settings}
    for _ in range(args.rounds):
        for t in settings:
            runs[t].append(once(t))
    for t, r in runs.items():
        label = f"{t}" if t else f"0 ({staged.available_cores()} cores)"
        print(f"decode_threads={label}: wall {statistics.median(x[0] for x in r):.3f} s, "
              f"CPU {statistics.median(x[1] for x in r):.3f} s  (walls: {' '.join(f'{x[0]:.2f}' for x in r)})")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
