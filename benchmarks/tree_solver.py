"""Benchmark: our dense Chu-Liu/Edmonds vs networkx's minimum_spanning_arborescence.

Dense random costs (uniform [0, 1), complete digraph), one root chosen by the solver. networkx is run
only up to ``--nx-max`` models: it is slow and builds an N^2-edge Python graph.

Usage::

    .venv/bin/python benchmarks/tree_solver.py [--sizes 100 200 500 1000 2000] [--nx-max 200] [--repeat 3]

Prints a Markdown table (time in seconds, median of ``--repeat`` runs for ours, one run for networkx)
and checks that both solvers reach the same total cost.

``--refine`` times the additivity refinement (``mother_core.recovery.additive``) instead: one tree of N
models whose every step adds an independent random update (so squared distances form a tree metric),
started from that tree with a tenth of its models moved to their grandparent::

    .venv/bin/python benchmarks/tree_solver.py --refine [--sizes 50 100 200 400]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mother_core.recovery.additive import orient, refine_topology  # noqa: E402
from mother_core.recovery.arborescence import minimum_spanning_arborescence, tree_cost  # noqa: E402


def time_ours(cost: np.ndarray, repeat: int) -> tuple[float, float]:
    times, total = [], 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        parent = minimum_spanning_arborescence(cost)
        times.append(time.perf_counter() - t)
        total = tree_cost(cost, parent)
    return statistics.median(times), total


def time_networkx(cost: np.ndarray) -> tuple[float, float]:
    # Graph construction is counted: it is part of what a caller pays to use networkx on a matrix.
    t = time.perf_counter()
    n = len(cost)
    g = nx.DiGraph()
    g.add_weighted_edges_from((p, c, float(cost[p, c])) for p in range(n) for c in range(n) if p != c)
    tree = nx.minimum_spanning_arborescence(g, preserve_attrs=True)
    elapsed = time.perf_counter() - t
    return elapsed, sum(d["weight"] for _, _, d in tree.edges(data=True))


def _edges(parent: np.ndarray) -> set[frozenset[int]]:
    return {frozenset((c, int(p))) for c, p in enumerate(parent) if p >= 0}


def refinement_table(sizes: list[int], seed: int, dim: int = 2000) -> None:
    print("| N models | moves | time (s) | edges right before | after |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        rng = np.random.default_rng(seed + n)
        truth = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n)])
        x = np.zeros((n, dim))
        x[0] = rng.normal(size=dim)
        for c in range(1, n):
            x[c] = x[truth[c]] + rng.normal(scale=rng.uniform(0.05, 0.2), size=dim)
        gram = x @ x.T
        sq = np.maximum(np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram, 0.0)
        start = truth.copy()
        for c in rng.choice(np.arange(1, n), size=n // 10, replace=False):
            if start[start[c]] >= 0:
                start[c] = start[start[c]]
        t = time.perf_counter()
        adj, moves = refine_topology(start, sq)
        elapsed = time.perf_counter() - t
        after = orient(adj, np.zeros((n, n)), roots=[0])
        print(f"| {n} | {moves} | {elapsed:.2f} | {len(_edges(start) & _edges(truth))}/{n - 1} | "
              f"{len(_edges(after) & _edges(truth))}/{n - 1} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", help="default: 100 200 500 1000 2000 (--refine: 50 100 200 400)")
    ap.add_argument("--nx-max", type=int, default=200, help="largest N to run networkx on")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refine", action="store_true", help="time the additivity refinement instead")
    args = ap.parse_args(argv)
    if args.refine:
        refinement_table(args.sizes or [50, 100, 200, 400], args.seed)
        return
    args.sizes = args.sizes or [100, 200, 500, 1000, 2000]

    print(f"python {platform.python_version()}, numpy {np.__version__}, networkx {nx.__version__}, "
          f"{platform.machine()}")
    print()
    print("| N | ours (s) | networkx (s) | networkx / ours | same cost |")
    print("|---:|---:|---:|---:|:---:|")
    for n in args.sizes:
        cost = np.random.default_rng(args.seed + n).random((n, n))
        ours, our_total = time_ours(cost, args.repeat)
        if n <= args.nx_max:
            theirs, nx_total = time_networkx(cost)
            same = "yes" if abs(our_total - nx_total) <= 1e-9 * max(1.0, abs(nx_total)) else "NO"
            print(f"| {n} | {ours:.3f} | {theirs:.1f} | {theirs / ours:,.0f}x | {same} |", flush=True)
        else:
            print(f"| {n} | {ours:.3f} | - | - | - |", flush=True)


if __name__ == "__main__":
    main()
