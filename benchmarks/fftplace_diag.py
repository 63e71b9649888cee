"""Full fine-tuning trees: cues that are not the distance, measured before any rule (issue 12;
benchmarks/RESULTS.md, issue 12, "Full fine-tuning trees: update geometry and spectra measured").

A diagnostic, no engine change. For each generalise collection (a folder with ``truth.json``) it loads
every model's 2-D weight matrices (the small models of ``mother_zoo.variety``; a matrix whose shape
differs inside a tree, a replaced head, is left out), recovers with the defaults, and measures on the
full fine-tuning trees (merged-LoRA recipes left out):

1. **Update geometry at a node** (direction). At a model u with two tree neighbours a and b, the cosine
   of the two updates seen from u, cos(W_a - W_u, W_b - W_u) per layer, mean over layers. If u is the
   parent of both (siblings) it is the cosine of two runs from one start; if u lies on a chain a -> u -> b
   it is minus the cosine of two successive runs. Printed: both distributions on the true trees, and the
   AUROC of the cosine for "siblings" against "chain".
2. **Root choice by that geometry** (direction is the choice of root on a tree). Each candidate root of
   an undirected tree predicts, at every node, which neighbour pairs are siblings (+1) and which a chain
   through the node (-1); its score is the sum of sign x cosine. On the true undirected trees and on the
   engine's recovered ones: directed edges with the engine's root, with the best-scoring root, and with
   the best root when the engine's is kept unless the geometry prefers another by a margin.
3. **Spectra of differences** (placement, chain vs siblings). For true triples, a chain p -> s -> c or
   siblings p -> {s, c}: the stable rank ||X||_F^2 / ||X||_2^2 and the effective rank (exp of the
   singular-value entropy) of X = W_c - W_s against X = W_c - W_p, per layer; contrast (mean over
   layers of the log ratio) and the share of layers where W_c - W_s is the less concentrated, AUROC with
   siblings positive, on all triples and on the hard ones (distance puts c nearer s than p).

    python benchmarks/fftplace_diag.py --cache /tmp/fftplace/cache /work/data/gen/fit-fft ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import networkx as nx
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import compute_statistics, discover, recover  # noqa: E402


def auroc(score: list[float], positive: list[int]) -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    s = np.asarray(score, float)
    y = np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def load_tree(folder: Path, models: list[str]) -> dict[str, list[np.ndarray]]:
    """Each model's 2-D float matrices (as float64), in one order, shapes equal across the tree."""
    raw = {m: load_file(str(folder / m / "model.safetensors")) for m in models}
    names = sorted(set.intersection(*(set(r) for r in raw.values())))
    keep = [n for n in names if raw[models[0]][n].ndim == 2 and min(raw[models[0]][n].shape) > 1
            and all(raw[m][n].shape == raw[models[0]][n].shape for m in models)]
    return {m: [raw[m][n].astype(np.float64) for n in keep] for m in models}


def layer_cos(w: dict[str, list[np.ndarray]], u: str, a: str, b: str) -> float:
    """Mean over layers of cos(W_a - W_u, W_b - W_u) (layers where both differences are non-zero)."""
    vals = []
    for wu, wa, wb in zip(w[u], w[a], w[b], strict=True):
        x, y = (wa - wu).ravel(), (wb - wu).ravel()
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        if nx > 0 and ny > 0:
            vals.append(float(x @ y / (nx * ny)))
    return float(np.mean(vals)) if vals else 0.0


def spectra(x: np.ndarray) -> tuple[float, float]:
    """(stable rank, effective rank) of a matrix."""
    s = np.linalg.svd(x, compute_uv=False)
    if s[0] <= 0:
        return 0.0, 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float((s ** 2).sum() / s[0] ** 2), float(np.exp(-(p * np.log(p)).sum()))


def rooted(adj: dict[str, set[str]], root: str) -> dict[str, str]:
    """Child -> parent of an undirected tree rooted at ``root``."""
    tree = nx.Graph()
    tree.add_nodes_from(adj)
    tree.add_edges_from((u, v) for u in adj for v in adj[u])
    return dict(nx.dfs_predecessors(tree, root))


def geometry_score(adj: dict[str, set[str]], root: str, cos: dict[tuple[str, str, str], float]) -> float:
    """Sum over nodes and neighbour pairs of (+1 siblings / -1 chain through the node) x cosine."""
    parent = rooted(adj, root)
    total = 0.0
    for u, nb in adj.items():
        for a, b in combinations(sorted(nb), 2):
            chain = parent.get(u) in (a, b)
            total += (-1.0 if chain else 1.0) * cos[(u, a, b)]
    return total


def components(adj: dict[str, set[str]]) -> list[set[str]]:
    seen: set[str] = set()
    out = []
    for s in adj:
        if s in seen:
            continue
        comp, stack = {s}, [s]
        while stack:
            for v in adj[stack.pop()]:
                if v not in comp:
                    comp.add(v)
                    stack.append(v)
        seen |= comp
        out.append(comp)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--margins", default="0,0.25,0.5,1,2")
    args = ap.parse_args()
    margins = [float(x) for x in args.margins.split(",")]

    sib_cos: list[float] = []
    chain_cos: list[float] = []
    by_recipe: dict[str, list[tuple[int, float]]] = defaultdict(list)
    trip_rows: list[dict] = []
    lift_rows: list[dict] = []
    engine_right: dict[str, tuple[int, int]] = {}
    # root choice: per (which trees, which rule) -> [right directed, edges]
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for folder in args.folders:
        meta = json.loads((folder / "truth.json").read_text())
        edges = [(e[0], e[1]) if not isinstance(e, dict) else (e["parent"], e["child"]) for e in meta["edges"]]
        tpar = {c: p for p, c in edges}
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
        pred = {e.child: e.parent for e in recover(stats).edges}
        for tree in meta["meta"]["trees"]:
            recipe, models = tree["recipe"], tree["models"]
            if "lora" in recipe or len(models) < 3:
                continue
            w = load_tree(folder, models)
            mset = set(models)
            kids: dict[str, list[str]] = defaultdict(list)
            for c in models:
                if c in tpar:
                    kids[tpar[c]].append(c)
            # 1. cosines at true nodes
            for u in models:
                for a, b in combinations(kids[u], 2):
                    c = layer_cos(w, u, a, b)
                    sib_cos.append(c)
                    by_recipe[recipe].append((1, c))
                if u in tpar:
                    for k in kids[u]:
                        c = layer_cos(w, u, tpar[u], k)
                        chain_cos.append(c)
                        by_recipe[recipe].append((0, c))
            # 2. root choice on true and recovered undirected trees (recovered restricted to the tree's
            # models; components of the recovered forest inside it)
            for which, par in (("true", {c: p for c, p in tpar.items() if c in mset}),
                               ("recovered", {c: p for c, p in pred.items() if c in mset and p in mset})):
                adj: dict[str, set[str]] = {m: set() for m in models}
                for c, p in par.items():
                    adj[c].add(p)
                    adj[p].add(c)
                for comp in components(adj):
                    if len(comp) < 2:
                        continue
                    sub = {u: adj[u] for u in comp}
                    cos = {}
                    for u, nb in sub.items():
                        for a, b in combinations(sorted(nb), 2):
                            cos[(u, a, b)] = layer_cos(w, u, a, b)
                    scores = {r: geometry_score(sub, r, cos) for r in comp}
                    # the engine's root of this component: the member without a parent inside it
                    eng_par = {c: p for c, p in par.items() if c in comp} if which == "recovered" else None
                    if which == "recovered":
                        eng_roots = [u for u in comp if u not in eng_par]
                        eng_root = eng_roots[0]
                    else:
                        # on the true undirected tree the engine's root is read from its recovered
                        # orientation: the member whose path to the others most agrees with pred
                        best, eng_root = -1, next(iter(comp))
                        for r in comp:
                            rp = rooted(sub, r)
                            agree = sum(pred.get(c) == p for c, p in rp.items())
                            if agree > best:
                                best, eng_root = agree, r
                    true_root_par = {c: tpar.get(c) for c in comp}

                    def right(r: str) -> int:
                        return sum(true_root_par.get(c) == p for c, p in rooted(sub, r).items())

                    n = len(comp) - 1
                    for name, r in (("engine", eng_root), ("geometry", max(scores, key=scores.get))):
                        tally[f"{which} {name}"][0] += right(r)
                        tally[f"{which} {name}"][1] += n
                        tally[f"{which} {name} | {recipe}"][0] += right(r)
                        tally[f"{which} {name} | {recipe}"][1] += n
                    for mg in margins:
                        best_r = max(scores, key=scores.get)
                        r = best_r if scores[best_r] - scores[eng_root] > mg else eng_root
                        tally[f"{which} engine unless geometry +{mg}"][0] += right(r)
                        tally[f"{which} engine unless geometry +{mg}"][1] += n
            # 3. spectra on true triples
            for s in models:
                for c in models:
                    if c == s:
                        continue
                    if tpar.get(c) == s and s in tpar:
                        p, sib = tpar[s], 0
                    elif tpar.get(c) is not None and tpar.get(c) == tpar.get(s):
                        p, sib = tpar[c], 1
                    else:
                        continue
                    sr_cs, sr_cp, er_cs, er_cp, dcs, dcp = [], [], [], [], [], []
                    for wp, ws, wc in zip(w[p], w[s], w[c], strict=True):
                        x, y = wc - ws, wc - wp
                        if not np.any(x) or not np.any(y):
                            continue
                        a1, b1 = spectra(x)
                        a2, b2 = spectra(y)
                        sr_cs.append(a1)
                        sr_cp.append(a2)
                        er_cs.append(b1)
                        er_cp.append(b2)
                        dcs.append(np.linalg.norm(x))
                        dcp.append(np.linalg.norm(y))
                    if not sr_cs:
                        continue
                    lsr = np.log(np.asarray(sr_cs)) - np.log(np.asarray(sr_cp))
                    ler = np.log(np.asarray(er_cs)) - np.log(np.asarray(er_cp))
                    trip_rows.append({
                        "sib": sib, "recipe": recipe,
                        "dist": float(np.mean(np.log(np.asarray(dcs) / np.asarray(dcp)))),
                        "sr": float(lsr.mean()), "sr_share": float((lsr > 0).mean()),
                        "er": float(ler.mean()), "er_share": float((ler > 0).mean()),
                    })
            # 4. on the recovered tree: each recovered chain q -> s -> c asks "lift c to q?", each recovered
            # sibling pair q -> {s, c} asks "sink c under s?"; both by the effective-rank contrast
            rp = {c: p for c, p in pred.items() if c in mset and p in mset}
            r0, n0 = engine_right.get(folder.name, (0, 0))
            engine_right[folder.name] = (r0 + sum(tpar.get(c) == p for c, p in rp.items()),
                                         n0 + sum(c in tpar for c in models))
            erc: dict[tuple[str, str], np.ndarray] = {}

            def er_layers(a: str, b: str) -> np.ndarray:
                key = (a, b) if a < b else (b, a)
                if key not in erc:
                    erc[key] = np.array([spectra(wa - wb)[1] if np.any(wa - wb) else np.nan
                                         for wa, wb in zip(w[a], w[b], strict=True)])
                return erc[key]

            for c, s_ in rp.items():
                q = rp.get(s_)
                # (kind, x, y): the contrast read is log er(W_c - W_x) - log er(W_c - W_y). A lift (x = s, y = q)
                # is asked where it is positive, a sink under the sibling x (y = s) where it is negative.
                asked = [("lift", s_, q)] if q is not None else []
                asked += [("sink", c2, s_) for c2, s2 in rp.items() if s2 == s_ and c2 != c]
                for kind, x, y in asked:
                    lr = np.log(er_layers(c, x)) - np.log(er_layers(c, y))
                    lr = lr[np.isfinite(lr)]
                    lift_rows.append({"folder": folder.name, "recipe": recipe, "kind": kind, "mean": float(lr.mean()),
                                      "share": float((lr > 0).mean()), "now_right": tpar.get(c) == s_,
                                      "move_right": tpar.get(c) == (q if kind == "lift" else x), "n": len(lr)})
        print(f"{folder}: done", flush=True)

    print("\n1. cos of the two updates seen from a node (mean over layers)")
    print(f"   siblings n={len(sib_cos)} median {np.median(sib_cos):+.3f} "
          f"[{np.percentile(sib_cos, 10):+.3f}, {np.percentile(sib_cos, 90):+.3f}]")
    print(f"   chain    n={len(chain_cos)} median {np.median(chain_cos):+.3f} "
          f"[{np.percentile(chain_cos, 10):+.3f}, {np.percentile(chain_cos, 90):+.3f}]")
    print(f"   AUROC siblings vs chain: {auroc(sib_cos + chain_cos, [1] * len(sib_cos) + [0] * len(chain_cos)):.3f}")
    for rec, rows in sorted(by_recipe.items()):
        ys = [y for y, _ in rows]
        cs = [c for _, c in rows]
        sib = [c for y, c in rows if y]
        ch = [c for y, c in rows if not y]
        print(f"   {rec:22s} sib med {np.median(sib) if sib else float('nan'):+.3f} "
              f"chain med {np.median(ch) if ch else float('nan'):+.3f} AUROC {auroc(cs, ys):.3f}")
    print("\n2. root choice (directed edges right / edges)")
    for k in sorted(tally):
        r, n = tally[k]
        print(f"   {k:55s} {r:4d} / {n:4d}")
    print("\n3. spectra of W_c - W_s against W_c - W_p on true triples (AUROC, siblings positive)")
    for label, sel in (("all", lambda t: True), ("hard", lambda t: t["dist"] < 0)):
        rows = [t for t in trip_rows if sel(t)]
        ys = [t["sib"] for t in rows]
        line = f"   {label:5s} n={len(rows)} siblings={sum(ys)}"
        for key in ("dist", "sr", "sr_share", "er", "er_share"):
            sc = [t[key] for t in rows]  # dist: log d(s, c) / d(p, c), larger for siblings
            line += f"  {key} {auroc(sc, ys):.2f}"
        print(line)
    for rec in sorted({t["recipe"] for t in trip_rows}):
        rows = [t for t in trip_rows if t["recipe"] == rec and t["dist"] < 0]
        ys = [t["sib"] for t in rows]
        print(f"   hard {rec:22s} n={len(rows)} sib={sum(ys)}  sr {auroc([t['sr'] for t in rows], ys):.2f}"
              f"  sr_share {auroc([t['sr_share'] for t in rows], ys):.2f}  er {auroc([t['er'] for t in rows], ys):.2f}")
    report_moves(lift_rows)
    print("\n5. lifts per collection (full fine-tuning trees; recovered edges right by the engine, "
          "then + fixes - breaks)")
    for folder in sorted({r["folder"] for r in lift_rows}):
        right, n = engine_right.get(folder, (0, 0))
        line = f"   {folder:14s} engine {right:3d} / {n:3d}"
        for thr in (0.1, 0.2):
            sel = [r for r in lift_rows if r["folder"] == folder and r["kind"] == "lift" and r["mean"] > thr]
            line += f"  lift > {thr}: {right + sum(r['move_right'] for r in sel) - sum(r['now_right'] for r in sel):3d}"
        print(line)


def report_moves(lift_rows: list[dict]) -> None:
    """Section 4: how many recovered edges each threshold on the contrast would fix and break."""
    print("\n4. moves on the recovered trees by the effective-rank contrast log er(W_c - W_s) - log er(W_c - W_q)")
    for kind in ("lift", "sink"):
        rows = [r for r in lift_rows if r["kind"] == kind]
        print(f"   {kind}: {len(rows)} questions, {sum(r['move_right'] for r in rows)} where the move is right, "
              f"{sum(r['now_right'] for r in rows)} where the edge is right now")
        for thr in (0.0, 0.05, 0.1, 0.2, 0.3):
            if kind == "lift":
                sel = [r for r in rows if r["mean"] > thr]
            else:
                sel = [r for r in rows if r["mean"] < -thr]
            fix = sum(r["move_right"] for r in sel)
            brk = sum(r["now_right"] for r in sel)
            recs = sorted({r["recipe"] for r in sel if r["now_right"]})
            print(f"     |mean| > {thr:.2f}: moves {len(sel):3d}, fixes {fix:3d}, breaks {brk:3d}  breaks in {recs}")
        # the questions whose contrast asks for the move, strongest first: would it fix or break an edge
        asks = [r for r in rows if (r["mean"] > 0 if kind == "lift" else r["mean"] < 0)]
        for r in sorted(asks, key=lambda r: -abs(r["mean"]))[:20]:
            what = "fixes" if r["move_right"] else "BREAKS" if r["now_right"] else "wrong -> wrong"
            print(f"       {r['folder']:12s} {r['recipe']:20s} mean {r['mean']:+.3f} share {r['share']:.2f} "
                  f"layers {r['n']:2d} {what}")


if __name__ == "__main__":
    main()
