"""What a junk torch pickle costs before it is refused: the operation allowance against none, in one run.

A torch file is read by a pure-Python unpickler (``mother_core/io/unpickler.py``), so a file costs its pickle
operations. The file here is a zip-format torch file whose ``data.pkl`` is a list of ``N`` integers and no
tensor; the rows time :func:`~mother_core.io.readers.load_torch_file` on it with the default
``OPS_ALLOWANCE`` and with the allowance lifted (the code before it, which runs to the end of the pickle), then
a real checkpoint (a whole ``nn.Module`` of 480 tensors) as the baseline a real file costs.

Usage::

    .venv/bin/python benchmarks/junk_pickle.py               # 1,000,000 and 10,000,000 integers
    .venv/bin/python benchmarks/junk_pickle.py 2000000
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import hostile_inputs as hi  # noqa: E402
from mother_core.io import unpickler  # noqa: E402
from mother_core.io.readers import load_torch_file  # noqa: E402


def _timed(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        state = load_torch_file(str(path))
        outcome = f"read ({len(state)} tensors)"
    except Exception as e:  # noqa: BLE001 - the outcome is what we print
        outcome = f"{type(e).__name__}: {str(e).split(': ', 1)[-1][:60]}"
    return time.perf_counter() - start, outcome


def main(sizes: list[int]) -> None:
    default = unpickler.OPS_ALLOWANCE
    print(f"load average {os.getloadavg()[0]:.1f}; OPS_ALLOWANCE {default:,}, "
          f"OPS_PER_TENSOR {unpickler.OPS_PER_TENSOR}")
    print("| file | pickle MB | allowance | seconds | outcome |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        module = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
                                       for _ in range(120)])
        real = Path(tmp) / "module.pt"
        torch.save(module, real)
        seconds, outcome = _timed(real)
        print(f"| a whole nn.Module (baseline) | {real.stat().st_size / 1e6:.1f} (with storages) | default | "
              f"{seconds:.2f} | {outcome} |")
        for n in sizes:
            path = Path(tmp) / f"junk-{n}.pt"
            data = pickle.dumps({"log": list(range(n))}, protocol=2)
            hi._torch_zip(path, data, {})
            for label, allowance in (("default", default), ("none", sys.maxsize)):
                unpickler.OPS_ALLOWANCE = allowance
                seconds, outcome = _timed(path)
                print(f"| {n:,} integers, no tensor | {len(data) / 1e6:.0f} | {label} | {seconds:.2f} | {outcome} |")
            unpickler.OPS_ALLOWANCE = default


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000_000, 10_000_000])
