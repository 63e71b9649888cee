"""Benchmark: our dense Chu-Liu/Edmonds vs networkx's minimum_spanning_arborescence.

Dense random costs (uniform [0, 1), complete digraph), one root chosen by the solver. networkx is run
only up to ``--nx-max`` models: it is slow and builds an N^2-edge Python graph.

Usage::

    .venv/bin/python benchmarks/tree_solver.py [--sizes 100 200 500 1000 2000] [--nx-max 200] [--repeat 3]

Prints a Markdown table (time in seconds, median of ``--repeat`` runs for ours, one run for networkx)
and checks that both solvers reach the same total cost.
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 500, 1000, 2000])
    ap.add_argument("--nx-max", type=int, default=200, help="largest N to run networkx on")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

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
