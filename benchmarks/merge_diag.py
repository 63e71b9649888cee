"""Merge diagnosis on typed sets (issue 11): every true merge child with the detector's numbers.

For each merge in ``truth.json`` (method and weights from its ``meta``), what the engine found, where
each true parent ranks among the child's candidates, and the merge detector's numbers on the true
parent set: the affine residual (all layers and per layer), the coefficients, which parents pass as a
base (additivity error, norm growth, off-path), the equal-entry share with each parent, the residual
off the child's own direction. Then every model the engine calls a merge that is not one.

    python benchmarks/merge_diag.py --sets /tmp/typedc/seed5/typed --cache CACHE
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.relations import merge as mg  # noqa: E402
from mother_core.relations.evidence import pair_layers  # noqa: E402


def numbers(pl, c: int, parents: list[int]) -> str:
    layers = mg._common_layers(pl, [c, *parents])
    sq = pl.sq[layers]
    norm2 = {m: float(np.nansum(pl.scale2[layers, m, m])) for m in [c, *parents]}
    tot = sq.sum(axis=0)
    dc = np.array([tot[c, p] for p in parents])
    dp = np.array([[tot[p, q] for q in parents] for p in parents])
    a, res = mg.affine_fit(dc, dp)
    ratio = res / dc.min()
    lw = mg.layerwise_residual(sq, c, tuple(parents)) / dc.min()
    offray = mg.off_ray_ratio(pl, c, tuple(parents))
    out = [f"ratio {ratio:.3g} layerwise {lw:.3g} offray {offray:.3g} coeffs " + "/".join(f"{x:.2f}" for x in a)]
    k = len(parents)
    for b in range(k):
        others = [i for i in range(k) if i != b]
        err = max((abs(dp[i, j] - dp[i, b] - dp[b, j]) / dp[i, j]
                   for x, i in enumerate(others) for j in others[x + 1:]), default=float("nan"))
        growth = (norm2[c] - norm2[parents[b]]) / dc[b]
        offp = mg._off_path(dc, dp, b) if k > 1 else float("nan")
        # per other parent (the minimum is mg._off_path), and the other parents' additivity through the child
        # instead of the base: a junction read as a merge of its descendants branches them (issue 11, mergec3)
        shares = "/".join(f"{(dc[b] + dc[i] - dp[b, i]) / dp[b, i]:+.2f}" for i in others)
        child = max((abs(dp[i, j] - dc[i] - dc[j]) / dp[i, j]
                     for x, i in enumerate(others) for j in others[x + 1:]), default=float("nan"))
        out.append(f"   as base {b}: additivity {err:.3f} (through the child {child:.3f}) growth {growth:.2f} "
                   f"offpath {offp:.2f} ({shares}) eq {pl.equal_share[c, parents[b]]:.3f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path)
    args = ap.parse_args()
    for folder in args.sets:
        truth = json.loads((folder / "truth.json").read_text())
        meta = truth["meta"]["models"]
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
        rec = recover(stats, RecoverySettings())
        ids = [m.id for m in stats.models]
        pos = {m: i for i, m in enumerate(ids)}
        pl = pair_layers(stats)
        print(f"=== {folder}")
        n_true = n_found = 0
        for child, m in meta.items():
            if m["relation"] != "merge":
                continue
            c = pos[child]
            tp = [pos[p] for p in m["parents"]]
            got = rec.parents_of(child)
            rel = rec.relation_of(child)
            hit = len(set(got) & set(m["parents"])) if rel == "merge" else 0
            n_true += len(tp)
            n_found += hit
            pool = [p for p in range(len(ids)) if p != c and truth["families"].get(ids[p]) == truth["families"][child]
                    and rec.relation_of(ids[p]) not in ("convert", "quantized", "adapter")]
            order = sorted(pool, key=lambda p: mg._total(pl, c, p))
            ranks = [order.index(p) + 1 if p in order else -1 for p in tp]
            pr = m["params"]
            desc = f"{pr['method']} w={pr.get('weights')} base={pr.get('base') is not None} dens={pr.get('density')}"
            flag = "OK " if hit == len(tp) and rel == "merge" and len(got) == len(tp) else "MISS"
            print(f"{flag} {child} {desc}\n   true {m['parents']} ranks {ranks}\n   got {rel} {got} "
                  f"({[e.relation_detail for e in rec.edges_into(child)][:1]})")
            print("   " + numbers(pl, c, tp))
        print(f"merge parent edges found {n_found}/{n_true}")
        for child in ids:
            if rec.relation_of(child) == "merge" and meta[child]["relation"] != "merge":
                print(f"FALSE {child} ({meta[child]['relation']}) got {rec.parents_of(child)} "
                      f"true {meta[child]['parents']}")
                print("   " + numbers(pl, pos[child], [pos[p] for p in rec.parents_of(child)]))


if __name__ == "__main__":
    main()
