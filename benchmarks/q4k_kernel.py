"""Where a Q4_K decode's time goes, on one core (issue 11: "reading a 1 GB GGUF ... costs at most about 1.5x
reading its bytes").

Real Q4_K blocks (``tests/format_factory.py``'s packer, as ``benchmarks/formats.py`` writes them) of
random 4096 x 4096 weights, decoded chunk after chunk into one reused float32 buffer, as the pass does,
by:

* **kernel**: the decoder the reader uses (``gguf_fast.kernels()["Q4_K"]``: the ``vpermps`` one on an
  AVX-512 CPU);
* **portable**: the portable kernel (convert, multiply and subtract per value), where the first one
  replaced it;
* **scales only**: the same loop over blocks doing only the f16 and 6-bit scale and min unpacking;
* **stores only**: writing every output value once (a constant): what any float32 decoder pays;
* **stores only, bf16 width**: the same number of 2-byte values (what a decoder to bfloat16 would pay);
* **kernel, bf16 out** / **generic, bf16 out**: the half-width decoders the pass uses when every model of
  a tensor is 4- to 6-bit GGUF (``gguf_fast.half_kernels()``: the ``vpermps`` one with rounded tables, and
  the generic float32-scratch-then-round one the other types use);
* **kernel, rounded f32**: the float32 kernel with its tables rounded to bfloat16 (the values every
  other read of a 4- to 6-bit tensor gives, e.g. in a slot shared with a float32 model);
* **copy**: ``numpy.copyto`` of the source bytes into a buffer of their size (a ``read()`` from the page
  cache is a copy like it, plus the kernel's work).

Each is run in turn ``--repeat`` times (CPU time of this thread, ``time.thread_time``), medians shown as
seconds per GB of Q4_K file, for an output chunk of 4M values (16 MiB, the pass's) and of 256K values
(1 MiB, a core's L2).

    .venv/bin/python benchmarks/q4k_kernel.py --repeat 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _extra_kernels():  # noqa: ANN202 - numba dispatchers
    from numba import njit

    from mother_core.io.gguf_fast import slp_vectorised

    sig = "void(uint8[::1], float32[::1], float32[::1])"
    with slp_vectorised():
        @njit(sig, nogil=True)
        def scales_only(src, f16, out):  # pragma: no cover - compiled
            sc = np.empty(8, dtype=np.float32)
            mn = np.empty(8, dtype=np.float32)
            for b in range(out.shape[0] // 256):
                p = b * 144
                d = f16[np.int64(src[p]) | (np.int64(src[p + 1]) << 8)]
                dmin = f16[np.int64(src[p + 2]) | (np.int64(src[p + 3]) << 8)]
                s = p + 4
                for j in range(4):
                    lo, mid, hi = src[s + j], src[s + 4 + j], src[s + 8 + j]
                    sc[j] = d * np.float32(lo & 0x3F)
                    mn[j] = dmin * np.float32(mid & 0x3F)
                    sc[4 + j] = d * np.float32((hi & 0x0F) | ((lo >> 2) & 0x30))
                    mn[4 + j] = dmin * np.float32((hi >> 4) | ((mid >> 2) & 0x30))
                out[b * 256] = sc[b & 7] + mn[(b + 3) & 7]  # keeps the work from being dropped

        @njit(sig, nogil=True)
        def stores_only(src, f16, out):  # pragma: no cover - compiled
            v = np.float32(src[0])
            for i in range(out.shape[0]):
                out[i] = v

        @njit(sig, nogil=True)
        def half_stores_only(src, f16, out):  # pragma: no cover - compiled
            half = out.view(np.uint16)[: out.shape[0]]  # as many 2-byte values (a bfloat16 output)
            v = np.uint16(src[0])
            for i in range(half.shape[0]):
                half[i] = v

    return scales_only, stores_only, half_stores_only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from format_factory import quantize

    from mother_core.io import gguf_fast

    table = gguf_fast.kernels()
    f16 = gguf_fast._F16
    rng = np.random.default_rng(0)
    blocks = quantize((rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32), "Q4_K").reshape(-1)
    src = np.tile(blocks, 4)  # 37.7 MB: more than the L3, so the source comes from memory as a file's would
    scales_only, stores_only, half_stores_only = _extra_kernels()
    kernels = {"kernel (" + table["Q4_K"].py_func.__name__ + ")": table["Q4_K"]}
    if "Q4_K/portable" in table:
        kernels["portable"] = table["Q4_K/portable"]
    halves = gguf_fast.half_kernels()
    half_out = {"kernel, bf16 out": halves["Q4_K"]} if "Q4_K" in halves else {}
    half_out["generic, bf16 out"] = halves["Q4_K/generic"]
    if "Q4_K@float32" in halves:  # float32 output, tables rounded: what a mixed slot's read costs now
        kernels["kernel, rounded f32"] = halves["Q4_K@float32"]
    kernels |= {"scales only": scales_only, "stores only": stores_only, "stores only, bf16 width": half_stores_only}
    print(f"load average {os.getloadavg()[0]:.1f}; seconds per GB of Q4_K file, median of {args.repeat}")
    for values in (1 << 22, 1 << 18):
        out = np.zeros(values, dtype=np.float32)
        nbytes = values // 256 * 144
        stage = np.empty(nbytes, dtype=np.uint8)
        half = np.zeros(values, dtype=np.uint16)
        runs: dict[str, list[float]] = {name: [] for name in [*kernels, *half_out, "copy"]}
        for _ in range(args.repeat):
            for name in runs:
                began, done = time.thread_time(), 0
                for p in range(0, src.size - nbytes, nbytes):
                    if name == "copy":
                        np.copyto(stage, src[p:p + nbytes])
                    elif name in half_out:
                        half_out[name](src[p:p + nbytes], f16, half)
                    else:
                        kernels[name](src[p:p + nbytes], f16, out)
                    done += nbytes
                runs[name].append((time.thread_time() - began) * 1e9 / done)
        med = {name: statistics.median(v) for name, v in runs.items()}
        print(f"output chunk {values * 4 >> 10} KiB: "
              + "  ".join(f"{name} {m:.3f}" for name, m in med.items()))


if __name__ == "__main__":
    main()
