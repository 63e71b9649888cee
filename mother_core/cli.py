"""The ``mother`` command: scan, recover, evaluate, export, resolve, and generate zoo trees."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from typing import Sequence

# Only light modules at the top: each command imports what it needs, so `mother --help`, `scan`,
# `relations` and `evaluate` start without torch (benchmarks/RESULTS.md, issue 15: `mother --help`
# took ~4 s on a quiet machine).
from mother_core.atomic import write_text_atomic
from mother_core.errors import MotherError
from mother_core.settings import SETTINGS, RecoverySettings, recovery_settings


def _pair(text: str) -> tuple[str, str]:
    """``"PARENT:CHILD"`` (or ``"PARENT>CHILD"``, for ids that hold a colon) -> ``(parent, child)``."""
    if ":" not in text and ">" not in text:
        raise argparse.ArgumentTypeError(f"expected PARENT:CHILD, got {text!r}")
    sep = ">" if ">" in text else ":"
    parent, child = text.split(sep, 1)
    return parent, child


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """One option per setting of the schema (:data:`mother_core.settings.SETTINGS`): same name,
    choices, default and help as the library and the app."""
    for s in SETTINGS:
        shown = "none" if s.default is None else s.default
        if s.type is bool:
            parser.add_argument(s.flag, dest=s.name, action="store_false" if s.default else "store_true",
                                help=s.help)
            continue
        choices = s.choices if s.choices and not s.open_choices else None
        metavar = "|".join(s.choices) + "|a,b,c" if s.open_choices else None
        parser.add_argument(s.flag, dest=s.name, type=s.type, default=s.default, choices=choices,
                            metavar=metavar, help=f"{s.help} (default: {shown})")


def settings_from_args(args: argparse.Namespace) -> RecoverySettings:
    """The :class:`RecoverySettings` of parsed options (see :func:`add_setting_options`)."""
    return RecoverySettings(**{s.name: getattr(args, s.name) for s in recovery_settings()})


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, newlines in file names) and
    undecodable file-name bytes are shown escaped instead of being interpreted or raising."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


#: Help of the options that ``scan``, ``recover`` and ``fingerprint`` share.
COMPONENT_HELP = ("sub-folder of multi-component (diffusers) repos; default: the denoiser, unet/ if present, "
                  "else transformer/")
CONFINE_HELP = ("read only files that resolve inside DIR (repeatable; symlinks, HF refs and shard indexes pointing "
                "elsewhere are refused)")


def _add_constraint_options(parser: argparse.ArgumentParser, *, flip: bool) -> None:
    """The user's constraints on the tree, as ``recover`` and ``resolve`` take them (ids as in the result)."""
    parser.add_argument("--force", type=_pair, action="append", default=[], metavar="PARENT:CHILD",
                        help="this edge must be in the tree (repeatable)")
    parser.add_argument("--forbid", type=_pair, action="append", default=[], metavar="PARENT:CHILD",
                        help="this edge must not be in the tree (repeatable)")
    if flip:
        parser.add_argument("--flip", type=_pair, action="append", default=[], metavar="PARENT:CHILD",
                            help="reverse this edge of the result: forbid it and force CHILD:PARENT (repeatable)")
    parser.add_argument("--root", action="append", default=[], help="model that must be a root (repeatable)")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``mother`` argument parser; ``argv`` (the arguments it will parse), when given, lets it
    leave out what those arguments do not use (the zoo's imports)."""
    parser = argparse.ArgumentParser(
        prog="mother",
        description="Recover the family tree of neural-network models from their weights (MoTHer).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="list the models found under paths (reads no weights)")
    scan.add_argument("paths", nargs="+", help="models, or folders of models")
    scan.add_argument("--component", help=COMPONENT_HELP)
    scan.add_argument("--confine", action="append", metavar="DIR", help=CONFINE_HELP)

    rec = sub.add_parser("recover", help="recover the model graph of the models under paths")
    rec.add_argument("paths", nargs="+", help="models, or folders of models")
    rec.add_argument("--out", default="result.json", help="where to write the result (default result.json)")
    add_setting_options(rec)
    rec.add_argument("--content-hash", action="store_true",
                     help="key the statistics cache on file content (SHA-256), not path/size/mtime")
    rec.add_argument("--cache-dir", help="statistics cache folder (re-runs then read nothing)")
    rec.add_argument("--component", help=COMPONENT_HELP)
    rec.add_argument("--confine", action="append", metavar="DIR", help=CONFINE_HELP)
    _add_constraint_options(rec, flip=False)
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    rec.add_argument("--timings", action="store_true",
                     help="print the wall-clock seconds of each stage (start-up, headers, planning, read + reduce, "
                          "tree step, writing the result) to standard error")
    rec.add_argument("--candidates", type=int, metavar="K",
                     help="compare each model exactly with its K nearest models by sketch only (linear in the "
                          "number of models; automatic above 1,500 models, docs/SCALE.md)")

    fp = sub.add_parser("fingerprint", help="read each model once into the sketch store of --cache-dir "
                                            "(optionally on a Dask cluster); `recover` then reads no weights twice")
    fp.add_argument("paths", nargs="+", help="models, or folders of models")
    fp.add_argument("--cache-dir", required=True, help="the store: a folder every worker can reach")
    fp.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); default: in this process")
    fp.add_argument("--local-workers", type=int, help="start a local Dask cluster of this many processes")
    fp.add_argument("--content-hash", action="store_true", help="key models on file content (SHA-256)")
    fp.add_argument("--component", help=COMPONENT_HELP)
    fp.add_argument("--confine", action="append", metavar="DIR", help=CONFINE_HELP)

    res = sub.add_parser("resolve", help="re-solve a result under constraints, without reading weights")
    res.add_argument("result", help="a result.json written by `mother recover`")
    res.add_argument("--out", required=True, help="where to write the re-solved result")
    _add_constraint_options(res, flip=True)

    ev = sub.add_parser("evaluate", help="score a result against a truth file")
    ev.add_argument("result", help="a result.json written by `mother recover`")
    ev.add_argument("--truth", required=True,
                    help='JSON {"edges": [[parent, child], ...]} or [{"parent", "child", "relation"}, ...]')

    ex = sub.add_parser("export", help="export a result as node-link JSON, GraphML, Newick or base_model lines")
    ex.add_argument("result", help="a result.json written by `mother recover`")
    ex.add_argument("--format", choices=["node-link", "graphml", "newick", "base-model"], required=True)
    ex.add_argument("--out", help="file to write (default: standard output)")

    sub.add_parser("relations", help="list the relation words edges carry (docs/RELATIONS.md)")

    _add_zoo(sub, argv)
    return parser


def _add_zoo(sub: argparse._SubParsersAction, argv: Sequence[str] | None) -> None:
    """The ``zoo`` command. The zoo imports torch and its model code (~4 s): when ``argv`` is given and
    does not run ``zoo``, only a placeholder with the same one-line help is listed."""
    from importlib.util import find_spec

    if find_spec("mother_zoo") is None:  # the zoo is optional
        return
    if argv is not None and "zoo" not in [a for a in argv if not a.startswith("-")][:1]:
        sub.add_parser("zoo", help=ZOO_HELP)
        return
    try:
        from mother_zoo.cli import register_cli
    except ImportError:  # a dependency of the zoo is missing
        return
    register_cli(sub)


#: The ``zoo`` command's one-line help (the same as mother_zoo.cli.register_cli's; tests/test_cli.py).
ZOO_HELP = "generate model trees with known lineage (real training on procedural data)"


def _progress_bar(quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def update(p) -> None:
        if p.bytes_total and bar.total != p.bytes_total:
            bar.total = p.bytes_total
        bar.set_description(f"{p.stage} {p.tensors_done}/{p.tensors_total} tensors")
        bar.n = p.bytes_read
        bar.refresh()

    return update, bar.close


def _cmd_scan(args) -> int:
    from mother_core.io.discovery import discover

    found = discover(args.paths, component=args.component, roots=args.confine)
    id_width = min(60, max([40, *(len(m.id) for m in found.models)]))
    # A diffusers repository's model is one component (the denoiser unless --component says otherwise):
    # the column says which, so a Flux folder read as its transformer/ says so.
    shown = {m.id: m.format + (f" [{m.component}/]" if m.component else "") for m in found.models}
    format_width = min(40, max([20, *(len(s) for s in shown.values())]))  # columns line up
    for m in found.models:
        size = f"{m.size_bytes / 1e6:9.1f} MB"
        print(printable(f"{m.id:{id_width}s} {shown[m.id]:{format_width}s} {size} {m.architecture or ''}"))
    for p in found.problems:
        print(printable(f"skipped {p.path}: {p.message}"), file=sys.stderr)
    return 0


def _cmd_recover(args) -> int:
    from mother_core.device import describe_device
    from mother_core.pipeline import recover_paths
    from mother_core.recovery.result import Constraints
    from mother_core.relations.vocabulary import Relation
    from mother_core.timing import StageClock, seconds_since_process_start, stage

    settings = settings_from_args(args)
    constraints = Constraints(forced=tuple(args.force), forbidden=tuple(args.forbid), roots=tuple(args.root))
    if not args.quiet:
        print(f"device: {describe_device(args.device)}", file=sys.stderr)
    update, close = _progress_bar(args.quiet)
    with StageClock() as clock:
        if args.timings and (started := seconds_since_process_start()) is not None:
            clock.add("start-up (interpreter + imports)", started, time.process_time())
        try:
            result = recover_paths(args.paths, settings, device=args.device, cache_dir=args.cache_dir,
                                   progress=update, component=args.component, constraints=constraints,
                                   content_hash=args.content_hash, roots=args.confine, candidates=args.candidates,
                                   decode_threads=args.decode_threads)
        finally:
            close()
        with stage("writing the result"):
            result.save(args.out)
    if args.timings:
        print(clock.table(), file=sys.stderr)
    for p in result.problems:
        print(printable(f"skipped {p['path']}: {p['message']}"), file=sys.stderr)
    counts = Counter(e.relation for e in result.edges)
    kinds = ", ".join(f"{counts[r.value]} {r.value}" for r in Relation if counts[r.value])
    print(f"{len(result.models)} models, {len(result.edges)} edges ({kinds or 'none'}), {len(result.trees)} trees "
          f"-> {args.out}")
    for note in result.notes:
        print(printable(f"note: {note}"))
    doubted = [e for e in result.edges if e.relation == Relation.MERGE.value and e.parent_note]
    if doubted:  # each merge parent has its own confidence (mother_core/relations/merge.py, contest_parents)
        print(f"{len(doubted)} merge parent(s) another relative could take the place of, each at its own "
              "confidence (the merge's is its relation_confidence):")
        for e in doubted:
            print(printable(f"  {e.parent} -> {e.child} (confidence {e.confidence:.2f}, merge "
                            f"{e.relation_confidence:.2f}): {e.parent_note}"))
    # Placement by the shape of the update, not by distance (mother_core/recovery/ties.py): a chain read as
    # siblings layer by layer, then parents chosen among near-tied candidates.
    for lifted, what in ((True, "child(ren) moved from a chain to a sibling of their parent by the shape of the "
                                "weight difference (its kurtosis in most layers, or its spectrum), not by distance:"),
                         (False, "parent(s) chosen among near-tied candidates by the shape of the weight difference "
                                 "(Adam-like updates), not by distance (each edge's tie_kurtosis):")):
        chosen = [e for e in result.edges if e.chosen_by_tie and e.tie_lifted == lifted]
        if chosen:
            print(f"{len(chosen)} {what}")
        for e in chosen:
            if e.tie_spectral:
                print(printable(f"  {e.parent} -> {e.child} (distance gave {e.tie_displaced}; read from the "
                                "effective rank of the differences: fewer directions to the chosen parent)"))
                continue
            ku = ", ".join(f"{m} {v:+.2f}" for m, v in e.tie_kurtosis.items())
            print(printable(f"  {e.parent} -> {e.child} (distance gave {e.tie_displaced}; "
                            f"difference kurtosis {ku})"))
    return 0


def _cmd_fingerprint(args) -> int:
    from mother_core.fingerprinting import fingerprint_all
    from mother_core.io.discovery import discover

    found = discover(args.paths, component=args.component, roots=args.confine)
    client = mapper = None
    if args.scheduler or args.local_workers:
        from mother_core.distributed import connect, dask_mapper

        client = connect(args.scheduler, args.local_workers)
        mapper = dask_mapper(client)
    try:
        refs, _, problems, figures = fingerprint_all(found.models, cache_dir=args.cache_dir,
                                                     content_hash=args.content_hash, mapper=mapper)
    finally:
        if client is not None:
            client.close()
    for p in list(found.problems) + problems:
        print(printable(f"skipped {p.path}: {p.message}"), file=sys.stderr)
    print(f"{len(refs)} models fingerprinted ({figures['models_read']} read, {figures['bytes_read'] / 1e6:.1f} MB) "
          f"-> {args.cache_dir}")
    return 0


def _cmd_resolve(args) -> int:
    from mother_core.recovery.recover import resolve
    from mother_core.recovery.result import Constraints, Recovery

    rec = Recovery.load(args.result)
    c = Constraints(forced=tuple(args.force), forbidden=tuple(args.forbid), roots=tuple(args.root))
    for parent, child in args.flip:
        c = c.flipped(parent, child)
    out = resolve(rec, c)
    out.save(args.out)
    before = {(e.parent, e.child) for e in rec.edges}
    after = {(e.parent, e.child) for e in out.edges}
    tied = {(e.parent, e.child) for e in out.edges if e.chosen_by_tie}
    for p, ch in sorted(after - before):
        print(f"+ {p} -> {ch}" + (" (among near-ties, by the shape of the weight difference)"
                                  if (p, ch) in tied else ""))
    for p, ch in sorted(before - after):
        print(f"- {p} -> {ch}")
    return 0


def _cmd_evaluate(args) -> int:
    from mother_core.evaluate import evaluate, format_evaluation, load_truth_edges
    from mother_core.recovery.result import Recovery

    print(format_evaluation(evaluate(Recovery.load(args.result), load_truth_edges(args.truth))))
    return 0


def _cmd_export(args) -> int:
    from mother_core import export
    from mother_core.recovery.result import Recovery

    rec = Recovery.load(args.result)
    text = {
        "node-link": lambda: json.dumps(export.to_node_link(rec), indent=1),
        "graphml": lambda: export.to_graphml(rec),
        "newick": lambda: export.to_newick(rec),
        "base-model": lambda: export.base_model_lines(rec),
    }[args.format]()
    if args.format == "newick" and (note := export.newick_unreadable_note(rec)):
        print(f"warning: {note}", file=sys.stderr)
    if args.out:
        write_text_atomic(args.out, text)
    else:
        print(text)
    return 0


def _cmd_relations(args) -> int:
    from mother_core.relations.vocabulary import RELATIONS

    for r, info in RELATIONS.items():
        print(f"{r.value:<10} {info.label:<12} {info.description}")
    return 0


COMMANDS = {"relations": _cmd_relations, "scan": _cmd_scan, "recover": _cmd_recover, "resolve": _cmd_resolve,
            "evaluate": _cmd_evaluate, "export": _cmd_export, "fingerprint": _cmd_fingerprint}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mother`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or getattr(args, "func", None)
        if handler is None:
            raise MotherError(f"Unknown command {args.command!r}.")
        return int(handler(args) or 0)
    except MotherError as e:
        print(printable(f"error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """The ``mother`` console script and ``python -m mother_core``: :func:`main`, then exit at once.

    Every file is written and closed by the time :func:`main` returns; what is left is the interpreter's
    finalisation with torch and numba loaded, which took 1.9-3.3 s after a ``recover`` on this machine
    (benchmarks/RESULTS.md, issue 15 "The one pass at disk speed"). ``os._exit`` skips it.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # whoever read the output went away (`mother relations | head -1`)
        code = 1
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
