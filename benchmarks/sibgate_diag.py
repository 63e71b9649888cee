"""Which trees the sibling lift (:func:`mother_core.recovery.ties.lift_siblings`) may be trusted in: the
lift's exact inputs per tree, dumped, and a per-tree gate simulated on them (issue 12, "Siblings lifted
where a tree's runs read alike"; benchmarks/RESULTS.md).

A diagnostic. ``dump`` recovers each set (a folder with ``truth.json``) with the defaults and keeps, for
every tree the lift is asked about, what it was given (the tree after the near-tie step, the tree's
:class:`~mother_core.recovery.problem.TieKurtosis`, constraints) and the true edges. ``show`` prints, per
tree, the recovered edges' difference kurtosis by depth and each lift (right / wrong), and the fine-tune
edges each tree gate (:data:`mother_core.recovery.ties.LIFT_TREE_KURTOSIS`; ``off``: no gate) gains or
loses per set: the lift is re-run on the dumped inputs with that gate, nothing else moves (the lift is
the last step of a tree's solve). ``--trees`` also prints each asked tree's median edge kurtosis (the
gate's reading), before the lift and ungated.

    python benchmarks/sibgate_diag.py dump --cache /tmp/cache-x --out /tmp/x.pkl SET ...
    python benchmarks/sibgate_diag.py show /tmp/x.pkl [--trees] [--gates off,-0.3,-0.6]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mother_core.recovery.solve as solve_module  # noqa: E402
import mother_core.recovery.ties as ties_module  # noqa: E402
from mother_core import compute_statistics, discover, recover  # noqa: E402


def truth_of(folder: Path) -> tuple[set[tuple[str, str]], dict[str, str]]:
    """True (parent, child) edges and model id -> recipe (generalise collections; '' elsewhere)."""
    d = json.loads((folder / "truth.json").read_text())
    edges = {(e["parent"], e["child"]) if isinstance(e, dict) else (e[0], e[1]) for e in d["edges"]}
    meta = d.get("meta", {}) if isinstance(d.get("meta"), dict) else {}
    recipe = {m: t.get("recipe", "?") for t in meta.get("trees", []) for m in t.get("models", [])}
    return edges, recipe


def dump(sets: list[Path], cache: Path | None, out: Path) -> None:
    calls: list[dict] = []
    real = solve_module.lift_siblings

    def spy(parent, members, ties, **kw):  # the lift's exact inputs, per call
        calls.append({"parent": parent.copy(), "members": np.asarray(members).copy(), "ties": dict(ties),
                      "kw": {k: (v if k != "choices" else dict(v or {})) for k, v in kw.items()}})
        return real(parent, members, ties, **kw)

    solve_module.lift_siblings = spy
    rows = []
    try:
        for folder in sets:
            calls.clear()
            stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
            rec = recover(stats)
            truth, recipe = truth_of(folder)
            assert rec.problem is not None
            ids = rec.problem.ids
            final = {e.child: e.parent for e in rec.edges}
            # The last call per tree is the one the result kept (a tree may be solved more than once).
            last = {tuple(c["members"].tolist()): c for c in calls}
            rows.append({"set": str(folder), "ids": ids, "truth": truth, "recipe": recipe, "final": final,
                         "calls": list(last.values())})
            n_right = sum((p, c) in truth for c, p in final.items())
            print(f"{folder}: {len(last)} tree(s) asked, {n_right} of {len(truth)} true edges recovered", flush=True)
    finally:
        solve_module.lift_siblings = real
    out.write_bytes(pickle.dumps(rows))


def depths(parent: np.ndarray, members: np.ndarray) -> dict[int, int]:
    inside = {int(g) for g in members}
    out: dict[int, int] = {}
    for g in inside:
        d, x = 0, g
        while parent[x] >= 0 and int(parent[x]) in inside and d <= len(inside):
            x, d = int(parent[x]), d + 1
        out[g] = d
    return out


def edge_kurtosis(parent: np.ndarray, ties: dict, members: np.ndarray) -> dict[int, float]:
    """Each member's difference kurtosis to its parent in ``parent`` (where the parent is a candidate)."""
    out = {}
    inside = {int(g) for g in members}
    for c, t in ties.items():
        if c not in inside:
            continue
        p = int(parent[c])
        if p >= 0 and p in t.candidates:
            out[c] = float(t.kurtosis[t.candidates.index(p)])
    return out


def show(path: Path, trees: bool, gates: list[str]) -> None:
    rows = pickle.loads(path.read_bytes())
    totals: dict[str, int] = defaultdict(int)
    default = ties_module.LIFT_TREE_KURTOSIS
    print(f"| set | true edges | {' | '.join(gates)} |")
    for row in rows:
        ids, truth = row["ids"], row["truth"]
        gained = {}
        for gate in gates:
            delta = 0
            for call in row["calls"]:
                ties_module.LIFT_TREE_KURTOSIS = float("inf") if gate == "off" else float(gate)
                new, _ = ties_module.lift_siblings(call["parent"], call["members"], call["ties"], **call["kw"])
                for g in call["members"]:
                    c = ids[int(g)]
                    before = (ids[int(call["parent"][g])], c) in truth if call["parent"][g] >= 0 else False
                    after = (ids[int(new[g])], c) in truth if new[g] >= 0 else False
                    delta += int(after) - int(before)
            gained[gate] = delta
            totals[gate] += delta
        print(f"| {Path(row['set']).name} | {len(truth)} | " + " | ".join(f"{gained[g]:+d}" for g in gates) + " |")
        if not trees:
            continue
        for call in row["calls"]:
            parent, members, ties = call["parent"], call["members"], call["ties"]
            if not ties:
                continue
            dep = depths(parent, members)
            ku = edge_kurtosis(parent, ties, members)
            ties_module.LIFT_TREE_KURTOSIS = float("inf")
            new, moved = ties_module.lift_siblings(parent, members, ties, **call["kw"])
            rec = {row["recipe"].get(ids[int(g)], "") for g in members} - {""}
            by_depth: dict[int, list[str]] = defaultdict(list)
            for c, k in sorted(ku.items()):
                ok = (ids[int(parent[c])], ids[c]) in truth
                by_depth[dep[c]].append(f"{k:+.2f}{'' if ok else '!'}")
            inside = {int(g) for g in members}
            med = float(np.median([k for c, k in ku.items() if c in inside and np.isfinite(k)] or [np.nan]))
            print(f"    tree {sorted(rec) or '-'} ({len(members)} models, median {med:+.2f}): "
                  + "; ".join(f"d{d}: {' '.join(v)}" for d, v in sorted(by_depth.items())))
            for c in moved:
                ok = (ids[int(new[c])], ids[c]) in truth
                was = (ids[int(parent[c])], ids[c]) in truth
                t = ties[c]
                kk = dict(zip(t.candidates, t.kurtosis.tolist()))
                allk = np.array(list(ku.values()))
                q1, med, q3 = np.percentile(allk, [25, 50, 75])
                print(f"      lift {ids[c]}: {ids[int(parent[c])]} -> {ids[int(new[c])]} "
                      f"({'right' if ok else 'wrong'}, was {'right' if was else 'wrong'}; depth {dep[c]}; "
                      f"k(c,s) {kk[int(parent[c])]:+.2f} k(c,p) {kk[int(new[c])]:+.2f} "
                      f"k(s,p) {edge_kurtosis(parent, ties, members).get(int(parent[c]), float('nan')):+.2f}; "
                      f"tree q1/med/q3 {q1:+.2f} {med:+.2f} {q3:+.2f})")
    ties_module.LIFT_TREE_KURTOSIS = default
    print("| all | | " + " | ".join(f"{totals[g]:+d}" for g in gates) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("sets", nargs="+", type=Path)
    d.add_argument("--cache", type=Path, default=None)
    d.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("show")
    s.add_argument("dumps", nargs="+", type=Path)
    s.add_argument("--trees", action="store_true")
    s.add_argument("--gates", default="off,-0.6", help="tree gates (LIFT_TREE_KURTOSIS values; off = none)")
    args = ap.parse_args()
    if args.cmd == "dump":
        dump(args.sets, args.cache, args.out)
    else:
        for p in args.dumps:
            print(p)
            show(p, args.trees, args.gates.split(","))


if __name__ == "__main__":
    main()
