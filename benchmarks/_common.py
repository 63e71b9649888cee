"""Shared helpers of the benchmark scripts: synthetic checkpoints, cache dropping, subprocess timing."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "_data"


def gpt2_shapes(n_layer: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of GPT-2 small (124M parameters) as Hugging Face saves it."""
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (vocab, d), "transformer.wpe.weight": (ctx, d)}
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        shapes.update({
            p + "ln_1.weight": (d,), p + "ln_1.bias": (d,),
            p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
            p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
            p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
            p + "mlp.c_fc.weight": (d, 4 * d), p + "mlp.c_fc.bias": (4 * d,),
            p + "mlp.c_proj.weight": (4 * d, d), p + "mlp.c_proj.bias": (d,),
        })
    shapes["transformer.ln_f.weight"] = (d,)
    shapes["transformer.ln_f.bias"] = (d,)
    return shapes


def make_family(folder: Path, n_models: int, shapes: dict[str, tuple[int, ...]], dtype=torch.bfloat16) -> list[Path]:
    """A root and ``n_models - 1`` descendants (a chain of small perturbations), one folder each.

    These models only exercise throughput and memory; accuracy benchmarks use trained zoo trees.
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "done.json"
    paths = [folder / f"model-{i}" for i in range(n_models)]
    if marker.exists() and json.loads(marker.read_text()) == {"n": n_models, "shapes": len(shapes)}:
        return paths
    g = torch.Generator().manual_seed(0)
    root = {k: (torch.ones(s) if k.endswith("ln_1.weight") else torch.randn(*s, generator=g) * 0.02)
            for k, s in shapes.items()}
    current = root
    for i, p in enumerate(paths):
        if i:
            current = {k: v + 0.002 * torch.randn(v.shape, generator=g) for k, v in current.items()}
        p.mkdir(exist_ok=True)
        save_file({k: v.to(dtype).contiguous() for k, v in current.items()}, str(p / "model.safetensors"))
    marker.write_text(json.dumps({"n": n_models, "shapes": len(shapes)}))
    return paths


def evict(files: list[Path]) -> None:
    """Drop these files' pages from the page cache with ``posix_fadvise`` (clean pages go; nothing else
    is touched, and no root is needed)."""
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def drop_page_cache(files: list[Path]) -> str:
    """Evict ``files`` from the page cache: drop_caches where permitted, else :func:`evict`."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return "drop_caches"
    except OSError:
        evict(files)
        return "fadvise"


def run_python(code: str, env: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (``env``: extra environment variables); it must print one
    JSON object on its last line."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=None if env is None else {**os.environ, **env})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("wall_s", time.perf_counter() - t)
    return result


def alternating_arguments(doc: str | None, models: int) -> argparse.Namespace:
    """The options of a before/after benchmark over a generated forest: ``--models`` (default ``models``),
    ``--repeats`` and ``--before CHECKOUT`` (see :func:`alternating_runs`)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=models)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--before", type=Path, metavar="CHECKOUT", help="also run another checkout's code")
    return ap.parse_args()


def alternating_runs(code: str, repeats: int, before: Path | None):
    """Run ``code`` ``repeats`` times in this checkout and, when given, in ``before`` (another checkout),
    alternating so both see the same minutes of a shared machine's load (performance is reported as a
    ratio between them). Yields ``(repeat, "before" | "this checkout", result)`` where ``result`` is the
    JSON object ``code`` prints last."""
    checkouts = ([before] if before is not None else []) + [ROOT]
    for i in range(1, repeats + 1):
        for checkout in checkouts:
            # ``python -c`` puts the working directory first on sys.path: run in the checkout.
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=checkout,
                                 check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(result), file=sys.stderr)
            yield i, "before" if checkout == before else "this checkout", result


# Peak resident memory of the measured process. Not getrusage's ru_maxrss: Linux carries it over from
# the parent through fork and exec, so a benchmark that has just generated 8 GB of models would report
# its own peak for every child. VmHWM belongs to the process's address space, new at exec.
PEAK_RSS = ("peak_mb = next(int(line.split()[1]) for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')) / 1024")


def check_script_main(doc: str | None, make, folder_of_set) -> None:
    """The command line of a format check (``lycoris_check.py``, ``peft_other_check.py``): ``--out DIR`` makes
    the files with the real library and measures the reader against it (``make(out)``); with
    ``--discover-only`` it only says how discovery takes the folder ``folder_of_set(out)`` (run it with another
    checkout's code for the "before")."""
    from mother_core.io.discovery import discover

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--discover-only", action="store_true", help="only say how discovery takes the files made")
    args = ap.parse_args()
    if args.discover_only:
        found = discover([folder_of_set(args.out)])
        for m in found.models:
            print(m.id, m.format)
        for p in found.problems:
            print(Path(p.path).name, "PROBLEM:", p.message[:160])
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        make(args.out)
