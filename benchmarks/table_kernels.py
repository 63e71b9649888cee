"""Where an HQQ or compressed-tensors int4 decode's time goes, on one core (issue 11: "reading a 1 GB GGUF
or quantized file costs at most about 1.5x reading its bytes").

The first layer of the files ``benchmarks/formats.py`` writes (``hqq-int4``: a 4096 x 4096 ``HQQLinear``,
4-bit, groups of 64, bfloat16; ``compressed-int4``: W4A16, groups of 128, bfloat16 scales), decoded the
way the readers decode it: piece by piece (256 KiB of stored codes, :data:`mother_core.io.staged.PIECE_BYTES`)
into one reused chunk buffer of 4M values (16 MiB, the pass's), by:

* **kernel**: the decoder the reader uses now (``hqq_fast.decode`` / ``compressed_fast.decode_codes``,
  with the ``vpermps`` lookups of :mod:`mother_core.io.permute16` on an AVX-512 CPU);
* **portable**: the same decoder built without those lookups (as on a CPU without AVX-512);
* **before**: the decoder of another checkout (``--before DIR``, e.g. ``git archive main`` unpacked),
  loaded from its file, on the same bytes;
* **stores only**: writing every output value once (a constant): what any float32 decoder pays;
* **copy**: ``numpy.copyto`` of the stored codes into a buffer of their size (a ``read()`` from the page
  cache is a copy like it).

Every decoder's values are checked equal, bit for bit, to the first's before anything is timed. Each is
run in turn ``--repeat`` times (CPU time of this thread, ``time.thread_time``); medians in ns per value.

    .venv/bin/python benchmarks/table_kernels.py --repeat 7 [--before DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "benchmarks" / "_data"
CHUNK = 1 << 22


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _float32(t) -> np.ndarray:  # noqa: ANN001 - a torch tensor
    import torch

    return t.to(torch.float32).contiguous().numpy()


Layer = tuple[int, dict[str, Callable[[np.ndarray], None]], int]


def _hqq(path: Path, decoders: dict[str, ModuleType]) -> Layer:
    """Values, one full decode of the layer into a chunk buffer by each decoder, stored bytes read."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        words = f.get_tensor("model.layers.0.mlp.up_proj.W_q").numpy()
        scale = _float32(f.get_tensor("model.layers.0.mlp.up_proj.scale")).reshape(-1)
        zero = _float32(f.get_tensor("model.layers.0.mlp.up_proj.zero")).reshape(-1)
    packed, cols = words.shape
    rows_chunk, rows_piece = CHUNK // cols, (256 << 10) // cols

    def run(module: ModuleType) -> Callable[[np.ndarray], None]:
        old = "source_row" in inspect.signature(module.decode).parameters

        def decode_layer(out: np.ndarray) -> None:
            for slot in (0, 1):  # the reader takes a chunk's rows from one slot (4 bits: two a byte)
                for c0 in range(0, packed, rows_chunk):
                    for p0 in range(c0, c0 + rows_chunk, rows_piece):
                        piece = words[p0:p0 + rows_piece]
                        k, g = piece.shape[0], slot * packed + p0
                        rows = (np.arange(k, dtype=np.int64), np.full(k, 4 * (1 - slot), np.int64)) if old \
                            else (4 * (1 - slot),)  # main's decoder took a row map and a shift a row
                        module.decode(piece, *rows, 4, zero[g:g + k], scale[g:g + k], False, module.ROUND_BF16,
                                      -(p0 - c0) * cols, out)
        return decode_layer

    return 2 * packed * cols, {name: run(m) for name, m in decoders.items()}, 2 * words.nbytes


def _compressed(path: Path, decoders: dict[str, ModuleType]) -> Layer:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        codes = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed").contiguous().numpy().view(np.uint8)
        scale = _float32(f.get_tensor("model.layers.0.mlp.up_proj.weight_scale"))
    rows, cols = codes.shape[0], codes.shape[1] * 2
    rows_chunk, rows_piece = CHUNK // cols, (256 << 10) // codes.shape[1]

    def run(module: ModuleType) -> Callable[[np.ndarray], None]:
        levels = module.integer_levels(4)

        def decode_layer(out: np.ndarray) -> None:
            target = out.reshape(rows_chunk, cols)
            for c0 in range(0, rows, rows_chunk):
                for p0 in range(c0, c0 + rows_chunk, rows_piece):
                    module.decode_codes(codes[p0:p0 + rows_piece], 4, levels, scale[p0:p0 + rows_piece], None, True,
                                        target[p0 - c0:p0 - c0 + rows_piece])
        return decode_layer

    return rows * cols, {name: run(m) for name, m in decoders.items()}, codes.nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--before", type=Path, default=None, help="another checkout whose decoders are timed too")
    ap.add_argument("--size-gb", type=float, default=1.0, help="the files' tag, as formats.py names them")
    args = ap.parse_args()
    from mother_core.io import compressed_fast, hqq_fast

    tag = f"{args.size_gb:g}gb"
    print(f"load average {os.getloadavg()[0]:.1f}; ns per value, median of {args.repeat} (min)\n")
    print("| file | kernel | portable | before | stores only | copy of the codes | kernel / stores | values |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, fname, fast, make in (("hqq-int4", f"hqq-int4-{tag}.safetensors", hqq_fast, _hqq),
                                     ("compressed-int4", f"compressed-int4-{tag}.safetensors", compressed_fast,
                                      _compressed)):
        path = DATA / fname
        if not path.exists():
            print(f"| {label} | (no {path.name}: run benchmarks/formats.py --only {label} first) |")
            continue
        portable = _module(Path(fast.__file__), f"{fast.__name__}_portable")
        portable._KERNEL = portable._build(False)
        decoders = {"kernel": fast, "portable": portable}
        if args.before is not None:
            decoders["before"] = _module(args.before / "mother_core" / "io" / Path(fast.__file__).name,
                                         f"{fast.__name__}_before")
        values, runs, nbytes = make(path, decoders)
        out, first = np.empty(CHUNK, np.float32), None
        for name, run in runs.items():  # also compiles each before it is timed
            check = np.full(CHUNK, np.nan, np.float32)
            run(check)
            if first is None:
                first = check
            elif not np.array_equal(first.view(np.uint32), check.view(np.uint32)):
                raise SystemExit(f"{label}: {name} decodes other values than the kernel")
        codes = np.frombuffer(np.random.default_rng(0).bytes(nbytes), np.uint8)
        copy = np.empty_like(codes)

        def stores(out: np.ndarray) -> None:
            for k in range(0, values, CHUNK):
                out[: min(CHUNK, values - k)].fill(1.0)

        timed = {**runs, "stores only": stores, "copy": lambda out: np.copyto(copy, codes)}
        seconds: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.repeat):
            for name, run in timed.items():
                t0 = time.thread_time()
                run(out)
                seconds[name].append(time.thread_time() - t0)

        def cell(name: str) -> str:
            if name not in seconds:
                return "-"
            return f"{statistics.median(seconds[name]) / values * 1e9:.3f} ({min(seconds[name]) / values * 1e9:.3f})"

        ratio = statistics.median(seconds["kernel"]) / statistics.median(seconds["stores only"])
        print(f"| {label} | {cell('kernel')} | {cell('portable')} | {cell('before')} | {cell('stores only')} | "
              f"{cell('copy')} | {ratio:.2f}x | {values / 1e6:.1f} M |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
