"""A big-endian GGUF file against its little-endian twin: per tensor type, how its values read, and the pass's
statistics over two such models (``benchmarks/RESULTS.md``, "Big-endian GGUF data").

The files are made as ``tests/test_gguf_big_endian.py`` makes them (the ``gguf`` package's writer, then
llama.cpp's ``gguf_convert_endian.py``). Run with the code to measure first on the path::

    PYTHONPATH=<checkout> .venv/bin/python benchmarks/gguf_big_endian_check.py <checkout with tests/>
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch


def main(repo: str) -> None:
    logging.disable(logging.CRITICAL)  # the conversion script's warnings
    sys.path.insert(0, f"{repo}/tests")
    import test_gguf_big_endian as t  # the test's files, made the same way

    from mother_core.io.discovery import discover
    from mother_core.stats.compute import compute_statistics

    folder = Path(tempfile.mkdtemp(prefix="gguf_big_endian_"))
    patch = pytest.MonkeyPatch()
    t._pair(folder, patch, 0)
    t._pair(folder, patch, 1)
    rows: dict[str, list[float]] = {}  # type -> tensors, equal, non-finite values, worst relative L2 error
    with t._reader(folder / "le" / "m0.gguf") as le, t._reader(folder / "be" / "m0.gguf") as be:
        for name in le.tensor_infos():
            want, got = le.read(name).double(), be.read(name).double()
            finite = torch.isfinite(got)
            rel = float(((want - got)[finite].norm() / want.norm()).item()) if finite.any() else float("nan")
            row = rows.setdefault(le._tensors[name].qtype_name, [0, 0, 0, 0.0])
            row[0] += 1
            row[1] += bool(torch.equal(want, got))
            row[2] += int((~finite).sum())
            row[3] = max(row[3], rel)
    for qtype, (n, same, bad, rel) in sorted(rows.items()):
        print(f"{qtype:5s} tensors {n:2.0f} equal {same:2.0f} non-finite values {bad:6.0f} "
              f"worst relative L2 error (finite values) {rel:.3g}")
    for sub in ("le", "be"):
        stats = compute_statistics(discover([folder / sub]), device="cpu", cache_dir=None, chunk_elements=40000)
        print(sub, "models", [m.id for m in stats.models], "problems", len(stats.problems),
              "summed kurtosis", np.round(np.nansum(stats.kurtosis, axis=1), 3).tolist(),
              "squared distance m0-m1", float(np.nansum(stats.sq_dist[..., 0, 1])))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1]))
