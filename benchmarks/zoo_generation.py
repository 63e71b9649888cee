"""Benchmark/summary of generated zoo splits: generation time, how losses moved, and a textbook check.

For each split folder under ``--zoo`` (default ``zoo_out``) it prints the model count, the generation
time recorded in ``truth.json``, mean held-out losses of roots and descendants before/after training,
and (``--reference``) the edge accuracy of a plain, paper-style MoTHer run **per known tree** (clusters
given, so this checks the data, not our engine): mean-RMS distance (rank distance for LoRA trees),
summed excess kurtosis of 2-D layers for direction, lambda = 0.3, networkx arborescence.

Usage::

    .venv/bin/python -m mother_zoo all --out zoo_out          # generate (minutes)
    .venv/bin/python benchmarks/zoo_generation.py --zoo zoo_out --reference
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from safetensors import safe_open


def _load(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        # Strip the task-wrapper prefix so a BERT classifier lines up with its BertModel root.
        return {k.removeprefix("bert."): f.get_tensor(k).double() for k in f.keys()
                if f.get_slice(k).get_dtype() in ("F32", "F16", "BF16")}


def _kurtosis(x: torch.Tensor) -> float:
    x = x.flatten() - x.mean()
    return float((x**4).mean() / (x**2).mean() ** 2 - 3)


def _rank(d: torch.Tensor, rel: float = 1e-4) -> int:
    s = torch.linalg.svdvals(d)
    return int((s > rel * s[0]).sum()) if s[0] > 0 else 0


def reference_accuracy(split: Path, truth: dict) -> tuple[int, int, int]:
    """(directed correct, undirected correct, edges) of a plain MoTHer run per known tree."""
    directed = undirected = total = 0
    models = truth["meta"]["models"]
    for tree in truth["meta"]["trees"]:
        ids = tree["models"]
        if len(ids) < 2:
            continue
        T = {i: _load(split / i) for i in ids}
        names = [k for k, v in T[ids[0]].items() if v.dim() >= 2 and "classifier" not in k
                 and all(k in T[i] and T[i][k].shape == v.shape for i in ids)]
        lora = any(models[i]["method"] == "lora" for i in ids)
        n = len(ids)
        D = np.zeros((n, n))
        for a in range(n):
            for b in range(a + 1, n):
                if lora:
                    D[a, b] = sum(_rank(T[ids[a]][k] - T[ids[b]][k]) for k in names if T[ids[a]][k].dim() == 2)
                else:
                    D[a, b] = np.mean([float(((T[ids[a]][k] - T[ids[b]][k]) ** 2).mean().sqrt()) for k in names])
                D[b, a] = D[a, b]
        ku = [sum(_kurtosis(T[i][k]) for k in names if T[i][k].dim() == 2) for i in ids]
        gen = tree["regime"] == "generalization"
        mean_d = D[~np.eye(n, dtype=bool)].mean()
        G = nx.DiGraph()
        for p in range(n):
            for c in range(n):
                if p != c:
                    against = ku[c] < ku[p] if gen else ku[c] > ku[p]
                    G.add_edge(p, c, weight=D[p, c] + 0.3 * mean_d * against)
        pred = {(ids[p], ids[c]) for p, c in nx.minimum_spanning_arborescence(G).edges()}
        true = {tuple(e) for e in truth["edges"] if e[1] in set(ids)}
        directed += len(pred & true)
        undirected += len({frozenset(e) for e in pred} & {frozenset(e) for e in true})
        total += len(true)
    return directed, undirected, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", type=Path, default=Path("zoo_out"))
    ap.add_argument("--reference", action="store_true", help="also run the per-tree textbook MoTHer check")
    args = ap.parse_args()
    print("| split | models | edges | gen. s | roots loss before -> after | descendants before -> after (improved) |"
          + (" reference directed / undirected |" if args.reference else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.reference else ""))
    for truth_path in sorted(args.zoo.glob("*/truth.json")):
        truth = json.loads(truth_path.read_text())
        meta = truth["meta"]
        ms = list(meta["models"].values())
        roots = [m for m in ms if m["parent"] is None and m["eval_loss_before"] is not None]
        kids = [m for m in ms if m["parent"] is not None]
        mean = lambda xs: statistics.mean(xs) if xs else float("nan")  # noqa: E731
        root_cell = (f"{mean([m['eval_loss_before'] for m in roots]):.2f} -> "
                     f"{mean([m['eval_loss_after'] for m in roots]):.2f}"
                     if roots else "n/a (real root)")
        row = (f"| {meta['split']} | {meta['n_models']} | {meta['n_edges']} | {meta['generation_seconds']:.0f} | "
               f"{root_cell} | "
               f"{mean([m['eval_loss_before'] for m in kids]):.2f} -> {mean([m['eval_loss_after'] for m in kids]):.2f} "
               f"({sum(m['eval_loss_after'] < m['eval_loss_before'] for m in kids)}/{len(kids)}) |")
        if args.reference:
            d, u, t = reference_accuracy(truth_path.parent, truth)
            row += f" {d}/{t} = {d / max(t, 1):.0%} / {u / max(t, 1):.0%} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
