"""Reading quantized checkpoints costs about what reading their bytes costs (issue 11, "Done when").

Writes (once, into the git-ignored ``benchmarks/_data/``) files of about ``--size-gb`` each: GGUF in Q8_0
and Q4_K, quantized safetensors from optimum-quanto (int8), bitsandbytes (int8, ``Linear8bitLt``) and
compressed-tensors (W4A16 pack-quantized, as llm-compressor saves it), MLX (4-bit, ``mx.quantize``) and HQQ
(4-bit, ``HQQLinear``), and,
for reference, a plain bf16 safetensors file. Then, in a fresh process per measurement (so each has its
own peak RSS), with the same file in the same page-cache state:

* ``cat FILE > /dev/null`` and a plain Python ``readinto`` loop over the file (16 MiB at a time): the cost
  of reading the bytes;
* **reader**: the engine's reader (``discover`` + ``open_model``) reading every tensor in the row chunks
  the pass uses (``chunk_elements`` values), dequantized to float32 into a reused buffer with ``read_into``
  where the reader has it, the next chunks hinted with ``prefetch`` as the pass hints them: the cost of
  the format;
* **stores alone**: as many float32 values as the reader decodes written into the same reused chunk
  buffer (``fill_``, one thread): what any float32 decoder pays for its output, before reading a byte
  (a Q4_K file decodes to 7.1 bytes of float32 per byte, Q8_0 and int8 to about 4);
* **pass**: the whole streaming pass ``mother recover`` runs on the file (``compute_statistics``: read,
  dequantize, and every statistic of every tensor: moments, norms, the skeletons), CPU, no cache.

Python's imports and the one-time load of the compiled kernels (a cost per run, not per byte) are done
before the clock starts; the peak RSS is shown with the RSS after those imports. Each is run warm (page
cache filled by a ``cat`` just before) and cold (the file's pages dropped with ``posix_fadvise(DONTNEED)``
first, which needs no privileges). Each repeat runs ``cat``, ``read()``, reader and pass one after the
other (so a baseline and the reader it is compared with run in the same minutes of a shared machine's
load), ``--repeat`` times; each column is the **median** over the repeats, of the wall time and, apart, of
the CPU seconds (user + system, all threads), with the highest 1-minute load average seen. The files' tensors are real
quantizations (``gguf.quants`` / the Q4_K packer of ``tests/format_factory.py``, ``optimum.quanto``,
``bitsandbytes``) of random 4096 x 4096 weights, repeated under new names to reach the size (the read cost
does not depend on the values).

``--before DIR`` adds the reader of another checkout (``git archive main | tar -x -C DIR``), measured by its
own ``formats.py`` in every repeat between this one's runs, so that a change is judged against the code it
replaces in the same minutes (and, unless ``--no-pass``, its whole pass: column ``pass before``);
``--caches warm`` / ``cold`` measures one page-cache state only;
``--threads-ab`` adds the reader (and the pass) with one decode thread (``decode_threads=1``, columns
``reader@1`` / ``pass@1``) beside the default (every core available), in every repeat; ``--float32-ab``
adds this reader with every tensor read as float32 (``reader f32``): the reader column reads a GGUF 4- to
6-bit tensor at half width (bfloat16), as the pass does when every model of the tensor may (the file and
its copy), and as float32 beside a float32 model.

    .venv/bin/python benchmarks/formats.py --size-gb 1.0 --repeat 5 [--no-pass] [--before DIR] [--caches warm]
        [--threads-ab]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "_data"
CHUNK_ELEMENTS = 1 << 22
PREFETCH_AHEAD = 4  # chunks hinted ahead (the streaming pass hints a byte window from a thread: stats/execute.py)


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


def _write_bnb(path: Path, size: float) -> None:
    import bitsandbytes.nn as bnn
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pool = []
    for _ in range(2):
        lin = bnn.Linear8bitLt(4096, 4096, bias=False, has_fp16_weights=False)
        lin.weight = bnn.Int8Params(torch.randn(4096, 4096) * 0.02, requires_grad=False, has_fp16_weights=False)
        lin = lin.to("cpu")
        pool.append({k: v.contiguous() for k, v in lin.state_dict().items()})
    n = max(2, round(size * 1e9 / (4096 * 4096)))
    state = {f"model.layers.{i}.mlp.up_proj.{k}": v.clone() for i in range(n) for k, v in pool[i % 2].items()}
    save_file(state, str(path))


def _write_compressed(path: Path, size: float) -> None:
    """W4A16 as llm-compressor saves it: compressed-tensors pack-quantized int4, a bfloat16 scale per group
    of 128 inputs (min-max scales by the library's ``calculate_qparams``, packed by its compressor)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from safetensors.torch import save_file

    torch.manual_seed(0)
    args = QuantizationArgs(num_bits=4, type="int", strategy="group", group_size=128, symmetric=True)
    pool = []
    for _ in range(2):
        lin = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False)).to(torch.bfloat16)
        apply_quantization_config(lin, QuantizationConfig(
            config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)}))
        groups = lin[0].weight.data.float().unflatten(1, (-1, 128))
        scale, _ = calculate_qparams(groups.amin(2), groups.amax(2), args)
        lin[0].weight_scale.data = scale.to(torch.bfloat16)
        ModelCompressor.from_pretrained_model(lin, quantization_format="pack-quantized").compress_model(lin)
        pool.append({k.split(".", 1)[1]: v.detach().contiguous() for k, v in lin.state_dict().items()
                     if k.startswith("0.weight")})
    n = max(2, round(size * 1e9 / (4096 * 4096 // 2)))
    state = {f"model.layers.{i}.mlp.up_proj.{k}": v.clone() for i in range(n) for k, v in pool[i % 2].items()}
    save_file(state, str(path))


def _write_mlx(path: Path, size: float) -> None:
    """4-bit MLX as ``mlx_lm.convert -q`` saves it (``mx.quantize``, groups of 64, bfloat16 scales and biases)."""
    import mlx.core as mx
    import numpy as np
    import torch
    from safetensors.torch import save_file

    mx.random.seed(0)
    pool = []
    for _ in range(2):
        codes, scales, biases = mx.quantize((mx.random.normal((4096, 4096)) * 0.02).astype(mx.bfloat16),
                                            group_size=64, bits=4)
        pool.append({"weight": torch.from_numpy(np.array(codes)),
                     "scales": torch.from_numpy(np.array(scales.astype(mx.float32))).bfloat16(),
                     "biases": torch.from_numpy(np.array(biases.astype(mx.float32))).bfloat16()})
    n = max(2, round(size * 1e9 / (4096 * 4096 // 2)))
    state = {f"model.layers.{i}.mlp.up_proj.{k}": v.clone() for i in range(n) for k, v in pool[i % 2].items()}
    save_file(state, str(path))


def _write_hqq(path: Path, size: float) -> None:
    """4-bit HQQ as hqq's ``save_to_safetensors`` (and transformers' ``HqqConfig``) saves it: ``HQQLinear``
    with hqq's default settings (groups of 64 along the input, ``axis`` 1, optimized zeros and scales),
    bfloat16 compute dtype, on the CPU."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pool = []
    for _ in range(2):
        lin = torch.nn.Linear(4096, 4096, bias=False).to(torch.bfloat16)
        layer = HQQLinear(lin, BaseQuantizeConfig(nbits=4, group_size=64), compute_dtype=torch.bfloat16, device="cpu")
        pool.append({k: v.contiguous() for k, v in layer.state_dict().items()})
    n = max(2, round(size * 1e9 / (4096 * 4096 // 2)))
    state = {f"model.layers.{i}.mlp.up_proj.{k}": v.clone() for i in range(n) for k, v in pool[i % 2].items()}
    save_file(state, str(path))


def _write_plain(path: Path, size: float) -> None:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    pool = [(torch.randn(4096, 4096) * 0.02).bfloat16() for _ in range(2)]
    n = max(2, round(size * 1e9 / (4096 * 4096 * 2)))
    save_file({f"model.layers.{i}.mlp.up_proj.weight": pool[i % 2].clone() for i in range(n)}, str(path))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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


def _measure(what: str, paths: list[Path]) -> dict:
    """Run in this (fresh) process: time ``what`` over ``paths``; peak RSS of the process. ``what@N``:
    with the ``decode_threads`` setting at N (``reader@1``: one thread decodes, as before the setting)."""
    base_rss = 0.0
    fill_values = 0
    what, _, threads = what.partition("@")
    as_float32 = what == "reader32"  # this reader, every tensor read as float32 (no half-width reads)
    what = "reader" if as_float32 else what
    if what in ("reader", "pass", "fill"):  # imports and the one-time kernel loads are a cost per run: not timed
        sys.path.insert(0, str(ROOT))
        import torch

        import numpy as np

        if threads:
            from mother_core.io.staged import set_decode_threads

            set_decode_threads(int(threads))
        from mother_core.io import compressed_fast, gguf_fast, hqq_fast, int8_fast
        from mother_core.io.discovery import discover
        from mother_core.io.readers import open_model
        from mother_core.stats import fused
        from mother_core.stats.compute import compute_statistics

        gguf_fast.warm_up()
        if what == "pass":
            fused.warm_up()
            try:  # the kernels decoding GGUF blocks inside the reduction (compiled per process: not timed)
                from mother_core.stats import fused_codes
            except ImportError:  # a checkout before them (--before)
                pass
            else:
                fused_codes.warm_up(["Q4_K", "Q6_K"])
        int8_fast.scale_rows(np.zeros((1, 4), np.int8), np.ones(1, np.float32), np.empty((1, 4), np.float32))
        compressed_fast.decode_codes(np.zeros((1, 1), np.uint8), 4, compressed_fast.integer_levels(4),
                                     np.ones((1, 1), np.float32), None, False, np.empty((1, 2), np.float32))
        hqq_fast.decode(np.zeros((1, 2), np.uint8), 0, 4, np.zeros(1, np.float32), np.ones(1, np.float32), False,
                        hqq_fast.ROUND_BF16, 0, np.empty(2, np.float32))
        if what == "fill":  # as many float32 values as the reader decodes, counted before the clock starts
            for ref in discover(paths).models:
                with open_model(ref) as reader:
                    fill_values += sum(i.numel for i in reader.tensor_infos().values() if i.is_float)
        base_rss = _peak_rss_mib()
    start = time.perf_counter()
    cpu0 = _cpu()
    values = 0
    if what == "cat":
        subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    elif what == "fill":  # the stores alone: every decoded value written once into the reused chunk buffer
        torch.set_num_threads(1)  # one core, as the decoders run
        buffer = torch.empty(CHUNK_ELEMENTS, dtype=torch.float32)
        for k in range(0, fill_values, CHUNK_ELEMENTS):
            buffer[: min(CHUNK_ELEMENTS, fill_values - k)].fill_(1.0)
        values = fill_values
    elif what == "read":
        buf = bytearray(16 << 20)
        view = memoryview(buf)
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while f.readinto(view):
                    pass
    elif what == "pass":
        stats = compute_statistics(discover(paths), device="cpu", cache_dir=None, chunk_elements=CHUNK_ELEMENTS)
        values = int(sum(t.numel for t in stats.tensors)) * len(paths)
    for ref in discover(paths).models if what == "reader" else ():
        buffer = torch.empty(CHUNK_ELEMENTS, dtype=torch.float32)  # the pass reuses its chunk buffers too
        half_buffer = torch.empty(CHUNK_ELEMENTS, dtype=torch.bfloat16)
        with open_model(ref) as reader:
            read_into = getattr(reader, "read_into", None)
            prefetch = getattr(reader, "prefetch", None)
            # The pass reads a tensor at half width when every model may (the file and its copy here)
            half_width = None if as_float32 else getattr(reader, "half_width", None)
            chunks = []
            for name, info in reader.tensor_infos().items():
                if not info.is_float:
                    continue
                rows = info.shape[0] if info.shape else 1
                per_row = max(1, info.numel // max(rows, 1))
                step = max(1, CHUNK_ELEMENTS // per_row)
                for r0 in range(0, rows, step):
                    span = (r0, min(rows, r0 + step)) if info.shape else None
                    chunks.append((name, info, span, (span[1] - span[0]) * per_row if span else info.numel))
            for k, (name, info, span, n) in enumerate(chunks):
                if prefetch is not None:
                    if k == 0:
                        for ahead in chunks[:PREFETCH_AHEAD]:
                            prefetch(ahead[0], ahead[2])
                    elif k + PREFETCH_AHEAD - 1 < len(chunks):
                        ahead = chunks[k + PREFETCH_AHEAD - 1]
                        prefetch(ahead[0], ahead[2])
                if read_into is not None and info.dtype == "float32" and n <= CHUNK_ELEMENTS:
                    into = half_buffer if half_width is not None and half_width(name) else buffer
                    values += read_into(name, span, into[:n]).numel()  # as the pass reads float32 / bf16
                else:
                    values += reader.read(name, span).numel()
    seconds = time.perf_counter() - start
    cpu = _cpu() - cpu0
    rss = _peak_rss_mib()
    if what == "cat":
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "rss_mib": rss, "values": values, "base_rss_mib": base_rss, "cpu": cpu,
            "load": os.getloadavg()[0]}


def _run(what: str, paths: list[Path], cold: bool, before: Path | None = None) -> dict:
    for path in paths:
        if cold:
            _drop(path)
        else:
            subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # fill the page cache
    script = __file__
    if what in ("before", "before-pass"):  # the reader (pass) of another checkout (its own formats.py)
        script, what = str(before / "benchmarks" / "formats.py"), "reader" if what == "before" else "pass"
    out = subprocess.run([sys.executable, script, "--measure", what, *map(str, paths)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="measure only the files whose label contains this")
    ap.add_argument("--no-pass", action="store_true", help="leave out the whole-pass column (the slow one)")
    ap.add_argument("--caches", default="warm,cold", help="page-cache states to measure: warm, cold or both")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout (e.g. `git archive main` unpacked): its reader is measured in every "
                         "repeat beside this one's, alternating")
    ap.add_argument("--threads-ab", action="store_true",
                    help="also measure the reader (and the pass) with one decode thread (decode_threads=1), "
                         "alternating with the default (every core available)")
    ap.add_argument("--float32-ab", action="store_true",
                    help="also measure this reader with every tensor read as float32 (column `reader f32`: what "
                         "a GGUF 4- to 6-bit tensor costs beside a float32 model, whose slot is read as float32)")
    ap.add_argument("--measure", nargs="+", metavar="WHAT PATH", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure[0], [Path(p) for p in args.measure[1:]])))
        return
    DATA.mkdir(parents=True, exist_ok=True)
    tag = f"{args.size_gb:g}gb"
    files = {"GGUF Q8_0": DATA / f"q8_0-{tag}.gguf", "GGUF Q4_K": DATA / f"q4_k-{tag}.gguf",
             "safetensors quanto-int8": DATA / f"quanto-int8-{tag}.safetensors",
             "safetensors bnb-int8": DATA / f"bnb-int8-{tag}.safetensors",
             "safetensors compressed-int4": DATA / f"compressed-int4-{tag}.safetensors",
             "safetensors mlx-int4": DATA / f"mlx-int4-{tag}.safetensors",
             "safetensors hqq-int4": DATA / f"hqq-int4-{tag}.safetensors",
             "safetensors bf16 (plain)": DATA / f"plain-bf16-{tag}.safetensors"}
    for label, path in files.items():
        if args.only not in label or path.exists():
            continue
        print(f"writing {path.name} ...", flush=True)
        if label.startswith("GGUF"):
            _write_gguf(path, label.split()[1], args.size_gb)
        elif "quanto" in label:
            _write_quanto(path, args.size_gb)
        elif "bnb" in label:
            _write_bnb(path, args.size_gb)
        elif "compressed" in label:
            _write_compressed(path, args.size_gb)
        elif "mlx" in label:
            _write_mlx(path, args.size_gb)
        elif "hqq" in label:
            _write_hqq(path, args.size_gb)
        else:
            _write_plain(path, args.size_gb)
    for path in files.values():  # a set has two models at least: the pass runs on the file and a copy
        twin = path.with_name(f"copy-{path.name}")
        if path.exists() and not twin.exists():
            shutil.copyfile(path, twin)
    kinds = ("cat", "read", "fill", "reader") + (("reader@1",) if args.threads_ab else ())
    kinds += ("reader32",) if args.float32_ab else ()
    kinds += (("before",) if args.before else ())
    kinds += () if args.no_pass else ("pass",) + (("pass@1",) if args.threads_ab else ())
    kinds += ("before-pass",) if args.before and not args.no_pass else ()
    print(f"\ndecode threads (default): {_cores()}; columns `@1`: decode_threads=1")
    print("\n| file | size | cache | read() (s) | reader (s) | **reader / read()** | reader@1 / read() "
          "| reader f32 / read() | before / read() | pass / read() | pass@1 / read() | pass before / read() "
          f"| CPU s: {' / '.join(kinds)} | reader / read() CPU | reader@1 / read() CPU | reader f32 / read() CPU "
          "| before / read() CPU | pass / read() CPU | pass before / read() CPU | stores / read() CPU | values (G) "
          "| RSS after imports -> peak (MiB) | load avg |")
    print("| --- " * 23 + "|")
    for label, path in files.items():
        if args.only not in label:
            continue
        pair = [path, path.with_name(f"copy-{path.name}")]
        size = sum(p.stat().st_size for p in pair)
        for cold in [c == "cold" for c in args.caches.split(",")]:
            runs: dict[str, list[dict]] = {w: [] for w in kinds}
            for _ in range(args.repeat):  # interleaved: baseline and reader under the same load
                for w in kinds:
                    runs[w].append(_run(w, pair, cold, args.before))
            med = {w: {k: statistics.median(r[k] for r in runs[w]) for k in ("seconds", "cpu", "rss_mib",
                                                                              "base_rss_mib", "values")}
                   for w in kinds}
            load = max(r["load"] for w in kinds for r in runs[w])
            read, rd = med["read"]["seconds"], med["reader"]["seconds"]

            def ratio(w: str, key: str = "seconds") -> str:
                return f"{med[w][key] / med['read'][key]:.2f}x" if w in med else "-"

            cpu = " / ".join(f"{med[w]['cpu']:.2f}" for w in kinds)
            rss = (f"{med['pass']['base_rss_mib']:.0f} -> {med['pass']['rss_mib']:.0f}" if "pass" in med else
                   f"{med['reader']['base_rss_mib']:.0f} -> {med['reader']['rss_mib']:.0f} (reader)")
            if "before-pass" in med:
                rss += f" (before: {med['before-pass']['base_rss_mib']:.0f} -> {med['before-pass']['rss_mib']:.0f})"
            print(f"| {label} | {size / 1e9:.2f} GB | {'cold' if cold else 'warm'} | {read:.2f} | {rd:.2f} | "
                  f"**{ratio('reader')}** | {ratio('reader@1')} | {ratio('reader32')} | {ratio('before')} | "
                  f"{ratio('pass')} | {ratio('pass@1')} | {ratio('before-pass')} | {cpu} | "
                  f"{ratio('reader', 'cpu')} | "
                  f"{ratio('reader@1', 'cpu')} | {ratio('reader32', 'cpu')} | {ratio('before', 'cpu')} | "
                  f"{ratio('pass', 'cpu')} | {ratio('before-pass', 'cpu')} | {ratio('fill', 'cpu')} | "
                  f"{med['reader']['values'] / 1e9:.2f} | {rss} | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
