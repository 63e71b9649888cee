"""The GGUF header read with a real-sized tokenizer (issue 11's read cost): before / after, in one run.

Real GGUF files carry their tokenizer in the header: ``tokenizer.ggml.tokens`` (128k-262k strings), ``scores``,
``token_type``, ``merges`` (hundreds of thousands of strings). Files written here by the ``gguf`` package's own
``GGUFWriter``, with a few small tensors quantized by the package's own ``quantize`` (Q8_0, Q4_K, F16, F32):

- ``llama3``: a Llama-3-sized tokenizer (128,256 tokens and types, 280,147 merges);
- ``gemma3``: a Gemma-3-sized one (262,144 tokens, scores and types).

Timed, each the median of ``--repeats`` runs, as CPU seconds of this process (``time.process_time``; the
machine is shared, so wall time says little), the load average printed with each row:

- the header read of the code before the change (``mother_core/io/gguf_header.py`` of ``--before``, a checkout
  of main: ``gguf.GGUFReader`` plus its checks), loaded beside the one of this checkout, same process;
- this checkout's :func:`mother_core.io.gguf_header.read_header`;
- ``gguf.GGUFReader(path)`` alone (the package's parse);
- ``mother scan`` of a folder of ten such files (five of each), each checkout in its own process (CPU s of
  the child, from ``getrusage``; median of ``--scan-repeats``, default 1: the one before takes 90 CPU s),
  including the interpreter's start-up and imports.

    python benchmarks/gguf_header_speed.py                          # --before /work/main, 3 repeats
    python benchmarks/gguf_header_speed.py --before ../main --repeats 5 --scan-repeats 3 --out /tmp/gguf_bench
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: name -> (tokens, merges, scores): the sizes of Llama 3's (128,256 tokens, 280,147 merges) and Gemma 3's
#: (262,144 tokens with scores) tokenizers.
SIZES: dict[str, tuple[int, int, bool]] = {"llama3": (128_256, 280_147, False), "gemma3": (262_144, 0, True)}


def _tokens(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct token strings of 1-16 characters (byte-level BPE looks like this: short, mostly ASCII)."""
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzĠABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éü"))
    lengths = rng.integers(1, 12, n)
    picks = rng.integers(0, len(alphabet), int(lengths.sum()))
    out, at = [], 0
    for i, k in enumerate(lengths):
        out.append("".join(alphabet[picks[at:at + k]]) + f"{i:x}")  # the suffix keeps them distinct
        at += k
    return out


def write_file(path: Path, kind: str, arch: str = "llama") -> Path:
    """A GGUF file by the package's writer with ``kind``'s tokenizer and four small tensors of four types
    (Q8_0 by the package's ``quantize``, Q4_K as random codes with finite scales, F16, F32)."""
    import gguf

    n_tokens, n_merges, scores = SIZES[kind]
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"bench {kind}")
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    writer.add_string("general.base_model.0.name", "bench base")
    writer.add_tokenizer_model("gpt2" if n_merges else "llama")
    tokens = _tokens(n_tokens, rng)
    writer.add_token_list(tokens)
    writer.add_token_types([1] * n_tokens)
    if scores:
        writer.add_token_scores(rng.standard_normal(n_tokens).astype(np.float32).tolist())
    if n_merges:
        writer.add_token_merges([f"{tokens[i % n_tokens]} {tokens[(7 * i + 1) % n_tokens]}" for i in range(n_merges)])
    w = rng.standard_normal((256, 512)).astype(np.float32)
    Q = gguf.GGMLQuantizationType
    for name, qtype in (("blk.0.attn_q.weight", Q.Q8_0), ("blk.0.ffn_up.weight", Q.Q4_K),
                        ("blk.0.ffn_down.weight", Q.F16), ("output_norm.weight", Q.F32)):
        data = w[0] if qtype == Q.F32 else w
        if qtype in (Q.F16, Q.F32):
            writer.add_tensor(name, data.astype(np.float16 if qtype == Q.F16 else np.float32))
        elif qtype == Q.Q4_K:  # the package dequantizes Q4_K but cannot quantize it: random codes, finite scales
            blocks = rng.integers(0, 256, (256, 512 // 256, 144), dtype=np.uint8)
            blocks[..., 0:4] = np.frombuffer(np.array([0.01, 0.002], np.float16).tobytes(), np.uint8)
            writer.add_tensor(name, blocks.reshape(256, -1), raw_dtype=qtype)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_files(out: Path) -> dict[str, Path]:
    """The two files (written once, kept in ``out``) and a folder ``out/scan`` of ten copies, five of each."""
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / f"{k}.gguf" for k in SIZES}
    for kind, path in files.items():
        if not path.exists():
            t0 = time.perf_counter()
            write_file(path.with_suffix(".part"), kind).rename(path)
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    scan = out / "scan"
    scan.mkdir(exist_ok=True)
    for i in range(10):
        kind = "llama3" if i % 2 else "gemma3"
        target = scan / f"m{i}-{kind}.gguf"
        if not target.exists():
            shutil.copyfile(files[kind], target)
    return files


def _module(checkout: Path, name: str):
    """``mother_core/io/gguf_header.py`` of ``checkout``, loaded as its own module (the rest from this one)."""
    spec = importlib.util.spec_from_file_location(name, checkout / "mother_core" / "io" / "gguf_header.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _cpu(fn: Callable[[], object], repeats: int) -> float:
    """Median CPU seconds of ``fn()`` over ``repeats`` calls in this process."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def _scan_cpu(checkout: Path, folder: Path, repeats: int) -> tuple[float, float, int]:
    """Median (CPU s, wall s) of ``mother scan folder`` run from ``checkout`` in a child process, and the models
    it listed."""
    cpu, wall, listed = [], [], 0
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        # Run from the checkout: ``-m`` puts the working folder first on the path, ahead of PYTHONPATH.
        done = subprocess.run([sys.executable, "-m", "mother_core.cli", "scan", str(folder)], env=env, cwd=checkout,
                              capture_output=True, text=True, check=True)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        listed = sum(1 for line in done.stdout.splitlines() if "gguf:" in line)
    return statistics.median(cpu), statistics.median(wall), listed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, default=Path("/work/main"), help="checkout of the code before")
    ap.add_argument("--out", type=Path, default=Path("/tmp/gguf_header_speed"), help="where the files go")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scan-repeats", type=int, default=1, help="runs of each mother scan (the one before: 90 CPU s)")
    ap.add_argument("--no-scan", action="store_true", help="skip the mother scan rows")
    args = ap.parse_args()
    files = make_files(args.out)
    import gguf

    before, after = _module(args.before, "gguf_header_before"), _module(ROOT, "gguf_header_after")
    for mod in (before, after):  # warm: imports, the name tables, any compiled kernel's cache
        mod.read_header(str(files["llama3"]))
    print("| file | size MB | metadata values | package parse CPU s | before CPU s | after CPU s | ratio | load |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, path in files.items():
        load = os.getloadavg()[0]
        values = after.metadata_entries(str(path))
        package = _cpu(lambda: gguf.GGUFReader(str(path)), args.repeats)
        old = _cpu(lambda: before.read_header(str(path)), args.repeats)
        new = _cpu(lambda: after.read_header(str(path)), args.repeats)
        same = asdict(before.read_header(str(path))) == asdict(after.read_header(str(path)))
        print(f"| {kind} | {path.stat().st_size / 1e6:.1f} | {values:,} | {package:.3f} | {old:.3f} | {new:.4f} | "
              f"{old / max(new, 1e-9):.0f}x{'' if same else ' (HEADERS DIFFER)'} | {load:.1f} |")
    if args.no_scan:
        return
    print()
    print("| mother scan of 10 files | CPU s | wall s | models listed | load |")
    print("|---|---|---|---|---|")
    for label, checkout in (("before", args.before), ("after", ROOT)):
        load = os.getloadavg()[0]
        cpu, wall, listed = _scan_cpu(checkout, args.out / "scan", args.scan_repeats)
        print(f"| {label} ({checkout}) | {cpu:.2f} | {wall:.2f} | {listed} | {load:.1f} |")


if __name__ == "__main__":
    main()
