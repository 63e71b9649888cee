"""Reading quantized checkpoints costs about what reading their bytes costs (issue 11, "Done when").

Writes (once, into the git-ignored ``benchmarks/_data/``) a GGUF file in Q8_0, one in Q4_K and a
quantized safetensors file (optimum-quanto int8) of about ``--size-gb`` each, then, in a fresh process per
measurement (so each has its own peak RSS):

* ``cat FILE > /dev/null`` and a plain Python ``readinto`` loop over the file (16 MiB at a time): the cost
  of reading the bytes;
* the engine's reader (``discover`` + ``open_model``) reading every tensor in the row chunks the pass
  uses (``chunk_elements`` values), dequantized to float32, into a reused buffer with ``read_into`` where
  the reader has it (as the pass does): the cost of the format. Python's imports and
  the one-time load of the compiled kernels (a cost per run, not per byte) are done before the clock
  starts; the peak RSS is shown with the RSS after those imports.

Each is run warm (page cache filled by a previous read) and cold (the file's pages dropped with
``posix_fadvise(DONTNEED)`` first, which needs no privileges); the best of ``--repeat`` runs is kept. The
files' tensors are real quantizations (``gguf.quants`` / the Q4_K packer of ``tests/format_factory.py``,
and ``optimum.quanto``) of random 4096 x 4096 weights, repeated under new names to reach the size (the
read cost does not depend on the values).

    .venv/bin/python benchmarks/formats.py --size-gb 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "_data"
CHUNK_ELEMENTS = 1 << 22


def _write_gguf(path: Path, kind: str, size: float) -> None:
    import gguf
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from format_factory import quantize

    rng = np.random.default_rng(0)
    pool = [quantize((rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32), kind) for _ in range(2)]
    n = max(2, round(size * 1e9 / pool[0].nbytes))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(n)
    writer.add_head_count(32)
    writer.add_head_count_kv(32)
    writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{kind}" + ("_M" if kind.endswith("_K") else "")]))
    q = gguf.GGMLQuantizationType[kind]
    for i in range(n):  # one 4096 x 4096 up_proj per block
        writer.add_tensor(f"blk.{i}.ffn_up.weight", pool[i % 2], raw_shape=pool[i % 2].shape, raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_quanto(path: Path, size: float) -> None:
    import torch
    from optimum import quanto
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pool = []
    for _ in range(2):
        lin = torch.nn.Linear(4096, 4096, bias=False)
        quanto.quantize(lin, weights=quanto.qint8)
        quanto.freeze(lin)
        pool.append({k: v.contiguous() for k, v in lin.state_dict().items()})
    n = max(2, round(size * 1e9 / (4096 * 4096)))
    state = {f"model.layers.{i}.mlp.up_proj.{k.lstrip('.')}": v.clone() for i in range(n)
             for k, v in pool[i % 2].items()}
    save_file(state, str(path))


def _drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``: reset by ``exec``, unlike ``ru_maxrss``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> float:
    """CPU seconds of this process and its finished children (cat), user + system."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(what: str, path: Path) -> dict:
    """Run in this (fresh) process: time ``what`` over ``path``; peak RSS of the process."""
    base_rss = 0.0
    if what == "reader":  # imports and the one-time kernel load are a cost per run, not per byte: not timed
        sys.path.insert(0, str(ROOT))
        import numpy as np

        from mother_core.io import gguf_fast
        from mother_core.io.discovery import discover
        from mother_core.io.readers import open_model

        for kind, nbytes in (("Q8_0", 34), ("Q4_0", 18), ("Q4_K", 144)):
            gguf_fast.dequantize(np.zeros(nbytes, dtype=np.uint8), kind)
        base_rss = _peak_rss_mib()
    start = time.perf_counter()
    cpu0 = _cpu()
    values = 0
    if what == "cat":
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    elif what == "read":
        buf = bytearray(16 << 20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
    else:
        import torch

        ref = discover([path]).models[0]
        buffer = torch.empty(CHUNK_ELEMENTS, dtype=torch.float32)  # the pass reuses its chunk buffers too
        with open_model(ref) as reader:
            read_into = getattr(reader, "read_into", None)
            for name, info in reader.tensor_infos().items():
                if not info.is_float:
                    continue
                rows = info.shape[0] if info.shape else 1
                per_row = max(1, info.numel // max(rows, 1))
                step = max(1, CHUNK_ELEMENTS // per_row)
                for r0 in range(0, rows, step):
                    span = (r0, min(rows, r0 + step)) if info.shape else None
                    n = (span[1] - span[0]) * per_row if span else info.numel
                    if read_into is not None and info.dtype == "float32" and n <= CHUNK_ELEMENTS:
                        values += read_into(name, span, buffer[:n]).numel()  # as the pass reads float32
                    else:
                        values += reader.read(name, span).numel()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu0
    rss = _peak_rss_mib()
    if what == "cat":
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mib": rss, "values": values, "base_rss_mib": base_rss, "cpu": cpu}


def _run(what: str, path: Path, cold: bool) -> dict:
    if cold:
        _drop(path)
    else:
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # fill the page cache
    out = subprocess.run([sys.executable, __file__, "--measure", what, str(path)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default="", help="measure only the files whose label contains this")
    ap.add_argument("--measure", nargs=2, metavar=("WHAT", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure[0], Path(args.measure[1]))))
        return
    DATA.mkdir(parents=True, exist_ok=True)
    tag = f"{args.size_gb:g}gb"
    files = {"GGUF Q8_0": DATA / f"q8_0-{tag}.gguf", "GGUF Q4_K": DATA / f"q4_k-{tag}.gguf",
             "safetensors quanto-int8": DATA / f"quanto-int8-{tag}.safetensors"}
    for label, path in files.items():
        if not path.exists():
            print(f"writing {path.name} ...", flush=True)
            if label.startswith("GGUF"):
                _write_gguf(path, label.split()[1], args.size_gb)
            else:
                _write_quanto(path, args.size_gb)
    print("\n| file | size | cache | cat (s) | read() (s) | engine reader (s) | reader / cat | reader / read() "
          "| CPU s: cat / read() / reader | dequantized GB/s | reader RSS after imports -> peak (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, path in files.items():
        if args.only not in label:
            continue
        size = path.stat().st_size
        for cold in (False, True):
            best = {w: min((_run(w, path, cold) for _ in range(args.repeat)), key=lambda r: r["seconds"])
                    for w in ("cat", "read", "reader")}
            cat, read, rd = best["cat"]["seconds"], best["read"]["seconds"], best["reader"]["seconds"]
            print(f"| {label} | {size / 1e9:.2f} GB | {'cold' if cold else 'warm'} | {cat:.2f} | {read:.2f} | "
                  f"{rd:.2f} | {rd / cat:.1f}x | {rd / read:.1f}x | "
                  f"{best['cat']['cpu']:.2f} / {best['read']['cpu']:.2f} / {best['reader']['cpu']:.2f} | "
                  f"{best['reader']['values'] * 4 / rd / 1e9:.2f} | "
                  f"{best['reader']['base_rss_mib']:.0f} -> {best['reader']['rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
