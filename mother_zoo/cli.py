"""``mother zoo``: generate model-zoo splits (and the built-in demo sets) from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mother_core.errors import InputError, MotherError

from .demo import generate_demo
from .splits import DEMOS, SIZES, SPLITS, generate_split
from .writer import DTYPES


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add the ``zoo`` subcommand to a ``mother`` argument parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``zoo`` parser (its ``func`` default runs the command and returns an exit code).
    """
    p = subparsers.add_parser(
        "zoo",
        help="generate model trees with known lineage (real training on procedural data)",
        description=_DESCRIPTION,
    )
    add_arguments(p)
    return p


TYPED = "typed"
_DESCRIPTION = (
    "Generate splits into OUT/<split>/. Splits: "
    + "; ".join(f"{k}: {v.description}" for k, v in SPLITS.items())
    + f"; {TYPED}: a typed set (fine-tunes, PEFT adapters, merged LoRAs, mergekit merges, GGUF / quanto /"
    " bitsandbytes quantizations, dtype conversions, pruned and distilled children) made with the real tools;"
    " even seeds and odd seeds use different generator settings (fit on one, report on the other); needs the"
    " 'zoo' extra"
    + f". 'demo' writes the built-in demo sets ({', '.join(DEMOS)}, {TYPED}) in float16 unless --dtype is given."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``zoo`` options (shared by ``mother zoo`` and ``python -m mother_zoo``)."""
    p.add_argument(
        "splits", nargs="+", metavar="SPLIT", help=f"one or more of: {', '.join(SPLITS)}, {TYPED}, demo, all"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder (each split goes to OUT/<split>)")
    p.add_argument("--size", choices=list(SIZES), default="full", help="'small' = tiny trees for tests (default: full)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same weights (default: 0)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="storage dtype (default float32; demo float16)")
    p.add_argument("--profile", choices=["auto", "A", "B", "C", "D", "E", "S"], default="auto",
                   help="typed set's generator profile: auto = A for even seeds (fitting), B for odd ones "
                   "(held-out); C differs from both as sets made elsewhere do (other architectures, bf16, "
                   "rsLoRA / DoRA, other merge methods and quantizers); D differs from A, B and C (other "
                   "architectures, storage dtypes per model, shards, vocabulary growth, classifier heads, QLoRA, hqq); "
                   "E mixture-of-experts families; S layer stacks (mergekit passthrough) among the other relations")
    p.add_argument("--quiet", action="store_true", help="no per-model progress")
    p.set_defaults(func=run_zoo)


def _progress(done: int, total: int, model_id: str) -> None:
    print(f"\r  {done}/{total} {model_id}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def run_zoo(args: argparse.Namespace) -> int:
    """Run ``mother zoo`` with parsed arguments; returns the exit code."""
    names: list[str] = []
    for s in args.splits:
        names.extend(SPLITS if s == "all" else [s])
    progress = None if args.quiet else _progress
    try:
        for name in names:  # validate every name before spending minutes on the first one
            if name not in ("demo", TYPED) and name not in SPLITS and name not in DEMOS:
                raise InputError(f"Unknown split {name!r}: choose from {', '.join(SPLITS)}, {TYPED}, demo or all.")
        for name in names:
            t0 = time.perf_counter()
            if name == "demo":
                paths = generate_demo(args.out, seed=args.seed, dtype=args.dtype or "float16", progress=progress)
            elif name == TYPED:
                paths = [_typed(args, progress)]
            else:
                paths = [generate_split(name, args.out, size=args.size, seed=args.seed,
                                        dtype=args.dtype or "float32", progress=progress)]
            for path in paths:
                # Per split (a demo writes several): the time recorded in its truth.json.
                seconds = json.loads((path / "truth.json").read_text())["meta"]["generation_seconds"]
                print(f"{path.name}: wrote {path} in {seconds:.1f} s")
            if len(paths) > 1:
                print(f"{name}: {time.perf_counter() - t0:.1f} s in all")
    except MotherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _typed(args: argparse.Namespace, progress: object) -> Path:
    """``mother zoo typed``: the typed set (its dtypes are part of the set, so --dtype does not apply)."""
    try:
        from .typed import generate_typed
    except ImportError as exc:  # transformers, peft, mergekit, gguf... live in the optional extra
        raise InputError(f"The typed zoo needs the 'zoo' extra ({exc.name} is missing): "
                         "pip install 'mother-explorer[zoo]' \"torch==2.13.0\"") from exc
    if args.dtype is not None:
        raise InputError("--dtype does not apply to 'typed': its conversions are part of the set.")
    return generate_typed(args.out, size=args.size, seed=args.seed, progress=progress,  # type: ignore[arg-type]
                          profile=getattr(args, "profile", "auto"))


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m mother_zoo``), the same as ``mother zoo``."""
    parser = argparse.ArgumentParser(prog="python -m mother_zoo", description=_DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
