"""Every wrong fine-tune edge of typed sets, with the engine's reading and a cause (issue 11;
benchmarks/RESULTS.md, "Wrong fine-tune edges in typed sets").

A diagnostic. For each set (a folder with ``truth.json``) it recovers with the defaults and, for each
true fine-tune edge p -> c the result lacks, prints the child, its true parent, the parent(s) found, the
relation read on the child's edge, that edge's confidence and the detector's evidence, the recipe (lr,
steps) and a cause:

- ``reversed as R``: the result holds c -> p, read as relation R (a fine-tune, or a typed relation);
- ``read as R``: c was given a typed relation R (lora, merge...) to another parent;
- ``under p's R child`` / ``under a R child``: c hung under a model that is, in the truth, a typed child (R:
  lora, merge, quantized...) of p / of another model (a merged LoRA beside it, a merge the detectors missed);
- ``under a sibling``: c hung under another fine-tune child of p (siblings read as a chain);
- ``under its descendant`` / ``under a descendant of a sibling``, ``under p's parent`` (a level skipped),
  ``root``, ``other``.

Last, the table of causes over all sets, with how many of each were given at confidence >= 0.8.

``--chains``: the count behind :mod:`mother_core.recovery.chain_ties` instead (its cap switched off while
counting): every recovered fine-tune chain p -> x -> y (each with one parent), its
h = (D(p, y)^2 - D(p, x)^2) / D(x, y)^2 on the recovery's distance, and per zone h < 0, 1/4, 1/2 how many
first and second edges are right, how many wrong and right ones read >= 0.8, and the caps
(right + 1) / (n + 2). Sets: the fitting collections only.

    python benchmarks/ftedge_diag.py --cache /tmp/cache-x /tmp/typedc/seed5/typed ...
    python benchmarks/ftedge_diag.py --chains --cache /tmp/cache-x /tmp/typedc/seed5/typed ... fit-fft ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.recovery.chain_ties import CHAIN_TIE_ZONE  # noqa: E402


def _truth(folder: Path) -> tuple[list[tuple[str, str, str]], dict[str, dict]]:
    d = json.loads((folder / "truth.json").read_text())
    edges = [(e["parent"], e["child"], e.get("relation") or "finetune") for e in d["edges"]]
    return edges, d.get("meta", {}).get("models", {})


def cause(p: str, c: str, found: list, par: dict[str, set[str]], kids: dict[str, set[str]],
          rel_of: dict[tuple[str, str], str] | None = None) -> str:
    """The cause of a missed true fine-tune edge p -> c (see the module docstring)."""
    if not found:
        return "root"
    e = found[0]
    if e.relation != "finetune":
        return f"read as {e.relation}"
    q = e.parent
    typed_in = sorted({r for (a, k), r in (rel_of or {}).items() if k == q and r != "finetune"})
    if typed_in:  # the parent found is a typed child in the truth: a LoRA, a merge (unread), a copy...
        return f"under p's {typed_in[0]} child" if p in par.get(q, set()) else f"under a {typed_in[0]} child"

    def desc(x: str) -> set[str]:
        out, todo = set(), [x]
        while todo:
            for k in kids.get(todo.pop(), set()):
                if k not in out:
                    out.add(k)
                    todo.append(k)
        return out

    if q in desc(c):
        return "under its descendant"
    if q in kids.get(p, set()):
        return "under a sibling"
    if any(q in desc(s) for s in kids.get(p, set()) if s != c):
        return "under a descendant of a sibling"
    if q in par.get(p, set()):
        return "under p's parent"
    return "other"


def read_set(folder: Path, cache: Path | None, settings: RecoverySettings, verbose: bool) -> list[dict]:
    truth, meta = _truth(folder)
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rec = recover(stats, settings)
    par: dict[str, set[str]] = {}
    kids: dict[str, set[str]] = {}
    rel_of: dict[tuple[str, str], str] = {}
    for p, c, r in truth:
        par.setdefault(c, set()).add(p)
        kids.setdefault(p, set()).add(c)
        rel_of[(p, c)] = r
    by_child: dict[str, list] = {}
    by_pair = {}
    for e in rec.edges:
        by_child.setdefault(e.child, []).append(e)
        by_pair[(e.parent, e.child)] = e
    rows = []
    for p, c, r in truth:
        if r != "finetune" or (p, c) in by_pair:
            continue
        found = by_child.get(c, [])
        rev = by_pair.get((c, p))
        why = f"reversed as {rev.relation}" if rev is not None else cause(p, c, found, par, kids, rel_of)
        e = rev if rev is not None else (found[0] if found else None)
        prm = meta.get(c, {}).get("params", {})

        def roles(x: str) -> str:
            """What else x is in the truth: a root, a merge input, a LoRA's or an adapter's base..."""
            out = ["root"] if x not in par else []
            out += sorted({r2 for (q, k), r2 in rel_of.items() if q == x and r2 != "finetune"})
            out += ["ft-parent"] if any(r2 == "finetune" for (q, k), r2 in rel_of.items() if q == x) else []
            return "+".join(out) or "-"
        row = {"set": f"{folder.parent.name}", "child": c, "parent": p,
               "found": ",".join(x.parent for x in found) or "-",
               "relation": e.relation if e else "-", "conf": e.confidence if e else float("nan"),
               "detail": (e.relation_detail if e else "")[:90], "lr": prm.get("lr", float("nan")),
               "steps": prm.get("steps", -1), "cause": why, "roles": f"{roles(p)} / {roles(c)}",
               "cues": {k: round(v, 2) for k, v in (e.cues.items() if e else [])}}
        rows.append(row)
        if verbose:
            print(f"| {row['set']} | {c} | {p} | {row['found']} | {row['relation']} | {row['conf']:.3f} | "
                  f"{row['lr']:.2g} / {row['steps']} | {why} | {row['roles']} | {row['detail']} {row['cues']} |")
    # Wrong recovered edges at >= 0.8 whose child is a true fine-tune child (for the honesty count)
    return rows


def chain_rows(folder: Path, cache: Path | None) -> list[dict]:
    """Every recovered fine-tune chain p -> x -> y of one set, uncapped, with h and whether each edge is right."""
    from mother_core.recovery import chain_ties

    d = json.loads((folder / "truth.json").read_text())
    truth = {(e["parent"], e["child"]) if isinstance(e, dict) else (e[0], e[1]) for e in d["edges"]}
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    zone, chain_ties.CHAIN_TIE_ZONE = chain_ties.CHAIN_TIE_ZONE, -np.inf  # counted before the cap
    try:
        rec = recover(stats)
    finally:
        chain_ties.CHAIN_TIE_ZONE = zone
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    dist = np.asarray(rec.distance_matrix)
    rows = []
    for up, e in chain_ties.fine_tune_chains(list(rec.edges)):
        h = chain_ties.chain_h(dist, ix[up.parent], ix[e.parent], ix[e.child])
        if np.isfinite(h):
            rows.append({"h": h, "first": (up.parent, up.child) in truth, "second": (e.parent, e.child) in truth,
                         "c_first": up.confidence, "c_second": e.confidence, "set": folder.name})
    return rows


def chains(sets: list[Path], cache: Path | None) -> None:
    """The table of ``--chains`` (module docstring)."""
    rows = [r for folder in sets for r in chain_rows(folder, cache)]
    print(f"{len(rows)} recovered fine-tune chains p -> x -> y in {len(sets)} sets\n")
    print("| zone | chains | second edge (x -> y) right | first edge (p -> x) right | wrong >= 0.8 lowered "
          "(second / first) | right >= 0.8 lowered | caps (second / first) |")
    print("|---|---|---|---|---|---|---|")
    for zone in (0.0, 0.25, 0.5):
        z = [r for r in rows if r["h"] < zone]
        n = len(z)
        s2, s1 = sum(r["second"] for r in z), sum(r["first"] for r in z)
        w2 = sum(not r["second"] and r["c_second"] >= 0.8 for r in z)
        w1 = sum(not r["first"] and r["c_first"] >= 0.8 for r in z)
        ok = sum(r["second"] and r["c_second"] >= 0.8 for r in z) + sum(r["first"] and r["c_first"] >= 0.8 for r in z)
        print(f"| h < {zone} | {n} | {s2} | {s1} | {w2} / {w1} | {ok} | {(s2 + 1) / (n + 2):.3f} / "
              f"{(s1 + 1) / (n + 2):.3f} |")
    z = [r for r in rows if r["h"] < CHAIN_TIE_ZONE]
    for key in ("second", "first"):
        cap, right, n = lowered_share([r["c_" + key] for r in z], [r[key] for r in z])
        print(f"\n{key} edges of the tie zone: the cap that is the share right among the edges it lowers: "
              f"{cap:.3f} ({right} of {n} above it right; chain_ties.CHAIN_TIE_{key.upper()})")


def lowered_share(confidence: list[float], right: list[bool]) -> tuple[float, int, int]:
    """(cap, right, n): the cap equal to (right + 1) / (n + 2) over the edges whose own ``confidence`` is above
    it, those it lowers (a fixed point, iterated from the share over every edge); edges below a cap keep their
    own confidence, so they are not what the cap is counted on."""
    c, y = np.asarray(confidence, dtype=float), np.asarray(right, dtype=bool)
    cap = (y.sum() + 1) / (len(y) + 2)
    for _ in range(100):
        above = c > cap
        new = (y[above].sum() + 1) / (above.sum() + 2)
        if abs(new - cap) < 1e-12:
            break
        cap = new
    above = c > cap
    return float(cap), int(y[above].sum()), int(above.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--chains", action="store_true", help="the count behind recovery.chain_ties (fitting sets only)")
    args = ap.parse_args()
    if args.chains:
        chains(args.sets, args.cache)
        return
    print("| set | child | true parent | found parent | relation read | confidence | lr / steps | cause "
          "| roles (parent / child) | evidence |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict] = []
    for folder in args.sets:
        rows += read_set(folder, args.cache, RecoverySettings(), True)
    n = Counter(r["cause"] for r in rows)
    hi = Counter(r["cause"] for r in rows if r["conf"] >= 0.8)
    print("\n| cause | wrong fine-tune edges | of them at confidence >= 0.8 |")
    print("|---|---|---|")
    for k, v in n.most_common():
        print(f"| {k} | {v} | {hi[k]} |")


if __name__ == "__main__":
    main()
