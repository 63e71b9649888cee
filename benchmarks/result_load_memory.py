"""Memory and time of opening a saved result (``Recovery.load``), before and after reading matrices row by row.

Results are written by the real writer (``Recovery.save``) from a real recovery: ``mother recover`` on a typed
set (profile C, 93 models, every matrix the engine keeps), tiled into K disjoint copies of its families (ids
suffixed, matrices block-diagonal: inf / NaN between copies, as between unrelated trees) up to N models. Each
file is opened in a fresh interpreter twice: "before" reads it as main did (``json_numbers.loads``: lists of
Python floats, then arrays), "after" with ``Recovery.load`` (``json_numbers.loads_result``). Peak is
``tracemalloc``'s (every Python object and numpy array the load allocates, the file's bytes included), taken after
a small result was loaded first, so what loading imports lazily is not counted. Time is wall time (tracing on).

    python benchmarks/result_load_memory.py --real /tmp/resultmem/real-c5.json --sizes 250 500 1000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mother_core.recovery.result import Alternative, Recovery  # noqa: E402

CHILD = """
import sys, time
from pathlib import Path
from mother_core.recovery.json_numbers import loads
from mother_core.recovery.result import Recovery
from mother_core.io.filekind import read_bytes_file
Recovery.load(sys.argv[3])  # a small result first: what loading imports lazily is not the load's cost
import gc, tracemalloc
gc.collect()
tracemalloc.start()
t = time.perf_counter()
if sys.argv[2] == 'before':
    r = Recovery.from_dict(loads(read_bytes_file(sys.argv[1], 1 << 31).decode('utf-8')))
else:
    r = Recovery.load(sys.argv[1])
t = time.perf_counter() - t
print(t, tracemalloc.get_traced_memory()[1] / 2**20, len(r.models))
"""


def tiled(real: Recovery, n: int) -> Recovery:
    """``real``'s models in ``ceil(n / N)`` disjoint copies, cut to ``n`` models (block-diagonal matrices)."""
    p = real.problem
    assert p is not None
    k = -(-n // len(real.models))
    name = lambda i, c: f"{i}~{c}"  # noqa: E731
    keep = {name(m.id, c) for c in range(k) for m in real.models[:n - c * len(real.models)]}

    def alts(c: int, alternatives: tuple[Alternative, ...]) -> tuple[Alternative, ...]:
        return tuple(replace(a, parent=None if a.parent is None else name(a.parent, c)) for a in alternatives
                     if a.parent is None or name(a.parent, c) in keep)

    def other(c: int, m: str | None) -> str | None:
        return None if m is None or name(m, c) not in keep else name(m, c)

    models = [replace(m, id=name(m.id, c), tree=m.tree + c * 1000, alternatives=alts(c, m.alternatives),
                      declared_parent=other(c, m.declared_parent))
              for c in range(k) for m in real.models if name(m.id, c) in keep]
    edges = [replace(e, parent=name(e.parent, c), child=name(e.child, c), alternatives=alts(c, e.alternatives),
                     tie_kurtosis={name(m, c): v for m, v in e.tie_kurtosis.items() if name(m, c) in keep},
                     tie_displaced=other(c, e.tie_displaced))
             for c in range(k) for e in real.edges if name(e.child, c) in keep and name(e.parent, c) in keep]
    trees = [replace(t, id=t.id + c * 1000, members=tuple(name(x, c) for x in t.members if name(x, c) in keep),
                     root=name(t.root, c)) for c in range(k) for t in real.trees if name(t.root, c) in keep]

    def block(a: np.ndarray, off: float) -> np.ndarray:
        out = np.full((len(a) * k, len(a) * k), off, dtype=a.dtype)
        for c in range(k):
            out[c * len(a):(c + 1) * len(a), c * len(a):(c + 1) * len(a)] = a
        return out[:n, :n]

    problem = replace(
        p, ids=tuple(m.id for m in models), distance=block(p.distance, np.inf), cost=block(p.cost, np.inf),
        relative=block(p.relative, np.nan), tree_of=np.array([m.tree for m in models]),
        evidence=block(p.evidence, 0.0), votes_up=block(p.votes_up, 0), shared=block(p.shared, 0),
        kurtosis=np.tile(p.kurtosis, k)[:n], models=(p.models * k)[:n],
        squared=None if p.squared is None else block(p.squared, np.nan),
        cue_votes={c: block(np.asarray(v), 0.0) for c, v in p.cue_votes.items()},
        links=(), edge_labels={}, layer_margins={}, tie_kurtosis={}, twins=(), tie_spectra={})
    lk = None if real.layer_kurtosis is None else np.tile(real.layer_kurtosis, (k, 1))[:n]
    return replace(real, models=models, edges=edges, trees=trees, problem=problem, layer_kurtosis=lk)


def measure(path: Path, how: str, small: str) -> tuple[float, float, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), how, str(small)], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    seconds, mb, n = out.stdout.split()
    return float(seconds), float(mb), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", required=True, help="a result.json written by `mother recover` (with matrices)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    ap.add_argument("--extra", nargs="*", default=[], help="other result files to measure as they are")
    ap.add_argument("--out", default=None, help="folder for the tiled results (default: a temporary one)")
    args = ap.parse_args()
    real = Recovery.load(args.real)
    folder = Path(args.out or tempfile.mkdtemp(prefix="result_load_memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in args.sizes:
        path = folder / f"tiled-{n}.json"
        if not path.exists():
            tiled(real, n).save(path)
        files.append(path)
    files += [Path(p) for p in args.extra]
    print("| file | models | MB | before: s, peak MB (x file) | after: s, peak MB (x file) |")
    print("|---|---|---|---|---|")
    for path in files:
        size = path.stat().st_size / 2**20
        (s0, m0, n), (s1, m1, _) = measure(path, "before", args.real), measure(path, "after", args.real)
        print(f"| {path.name} | {n} | {size:.1f} | {s0:.1f}, {m0:.0f} ({m0 / size:.1f}x) | "
              f"{s1:.1f}, {m1:.0f} ({m1 / size:.1f}x) |", flush=True)


if __name__ == "__main__":
    main()
