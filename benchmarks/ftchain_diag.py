"""Fine-tune edges placed or directed wrong: the engine's inputs dumped per set, placement variants simulated
on them, the engine compared with a variant (issues 11 and 12; benchmarks/RESULTS.md, "(branch ftchain)").

``dump`` recovers each set with the defaults and keeps what a re-solve needs (the :class:`RecoveryProblem`),
the true edges and recipes, and the excess kurtosis of W_i - W_j for every pair of models in one recovered
tree (mean over layers and per layer, from the skeletons, as :mod:`.ties` reads it). ``show`` re-solves each
problem under variants (installed by replacing a step of :mod:`mother_core.recovery.ties` or
:mod:`mother_core.recovery.solve` for the run) and prints fine-tune edges right, directed (undirected), per
set and per tree recipe; ``--moves`` lists each child that moves. ``compare`` recovers each set twice from the
same statistics, as the engine is and with one variant (default ``ties-by-mean``: near ties read on the
mean kurtosis over layers, the rule before this branch), with confidence figures.

Variants: ``ties-by-mean``; ``wide<G:E`` (near ties up to effect size E in trees whose recovered edges' median
difference kurtosis is below G); ``triple<G`` / ``swap<G`` / ``liftarg<G`` / ``swapleaf<G`` (in such trees,
each recovered chain p -> x -> y re-read from its three differences: the most heavy-tailed pair is the one
that is not an edge); ``+full`` reads every in-tree pair's kurtosis from the dump, not only the candidates the
problem keeps.

    python benchmarks/ftchain_diag.py dump --cache CACHE --out /tmp/x/fit.pkl SET ...
    python benchmarks/ftchain_diag.py show /tmp/x/fit.pkl ... [--variants a,b] [--trees] [--moves]
    python benchmarks/ftchain_diag.py compare --cache CACHE SET ...
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.recovery import solve as S  # noqa: E402
from mother_core.recovery import ties as T  # noqa: E402
from mother_core.recovery.features import pair_evidence, select_layers  # noqa: E402
from siblings_diag import recipes, truth_edges  # noqa: E402


def dump(folders: list[Path], cache: Path | None, out: Path) -> None:
    """Recover each folder, keep its problem, truth, recipes and in-tree difference kurtoses."""
    sets: dict[str, dict[str, Any]] = {}
    for folder in folders:
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
        rec = recover(stats)
        prob = rec.problem
        ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
        pairs = [(int(a), int(b)) for t in np.unique(prob.tree_of)
                 for a in np.flatnonzero(prob.tree_of == t) for b in np.flatnonzero(prob.tree_of == t) if a < b]
        k, kl = T.difference_kurtosis_layers(stats, ev.rms, ev.layer_index, pairs)
        n = stats.n_models
        kmat = np.full((n, n), np.nan)
        for (a, b), v in zip(pairs, k):
            kmat[a, b] = kmat[b, a] = v
        layers = {pr: kl[i] for i, pr in enumerate(pairs)}
        name = f"{folder.parent.name}/{folder.name}" if folder.name == "typed" else folder.name
        sets[name] = {"problem": prob, "truth": truth_edges(folder), "recipes": recipes(folder), "k": kmat,
                      "k_layers": layers, "engine": {(e.parent, e.child) for e in rec.edges}}
        print(f"{name}: {n} models", file=sys.stderr, flush=True)
        out.write_bytes(pickle.dumps(sets))


def score(d: dict[str, Any], parent: np.ndarray) -> tuple[dict[str, list[int]], list[tuple[str, str, str]]]:
    """Per recipe: [fine-tune edges, right directed, right undirected]; and the misses (parent, child, found)."""
    ids = d["problem"].ids
    idx = {m: i for i, m in enumerate(ids)}
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    misses = []
    for p, c, rel in d["truth"]:
        if rel != "finetune" or p not in idx or c not in idx:
            continue
        r = d["recipes"].get(c, "typed")
        row = per[r]
        row[0] += 1
        pi, ci = idx[p], idx[c]
        if parent[ci] == pi:
            row[1] += 1
            row[2] += 1
        elif parent[pi] == ci:
            row[2] += 1
            misses.append((p, c, "reversed"))
        else:
            misses.append((p, c, ids[parent[ci]] if parent[ci] >= 0 else "root"))
    return per, misses


def parents_of(prob: Any) -> np.ndarray:
    rec = S.solve(prob)
    idx = {m: i for i, m in enumerate(prob.ids)}
    parent = np.full(len(prob.ids), -1)
    for e in rec.edges:
        parent[idx[e.child]] = idx[e.parent]
    return parent


VARIANTS: dict[str, Callable[[], Any]] = {}


def variant(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def deco(f: Callable[[], Any]) -> Callable[[], Any]:
        VARIANTS[name] = f
        return f
    return deco


@variant("defaults")
def _defaults() -> Any:
    return None


CURRENT: dict[str, Any] = {}


def _patch_ties(post: Callable[[np.ndarray, np.ndarray, Any, set[int], set[tuple[int, int]]], np.ndarray]
                ) -> Callable[[], None]:
    """Install ``post(parent, members, problem, pinned, banned) -> parent`` after the engine's tie step."""
    original = S._ties_broken

    def patched(sol, members, problem, forced, forbidden, leaves):  # type: ignore[no-untyped-def]
        sol, moved = original(sol, members, problem, forced, forbidden, leaves)
        parent = np.full(problem.n_models, -1)
        parent[members] = [members[pk] if pk >= 0 else -1 for pk in sol]
        new = post(parent, members, problem, {c for _, c in forced} | set(leaves), set(forbidden))
        local = {int(g): k for k, g in enumerate(members)}
        return np.array([local[int(new[g])] if new[g] >= 0 else -1 for g in members]), moved

    S._ties_broken = patched  # type: ignore[assignment]

    def undo() -> None:
        S._ties_broken = original  # type: ignore[assignment]
    return undo


def _trusted(parent: np.ndarray, members: np.ndarray, problem: Any, gate: float) -> bool:
    ties = problem.tie_kurtosis
    inside = {int(g) for g in members}
    read = [float(t.kurtosis[t.candidates.index(int(parent[c]))]) for c, t in ties.items()
            if c in inside and parent[c] >= 0 and int(parent[c]) in t.candidates]
    read = [k for k in read if np.isfinite(k)]
    return bool(read) and float(np.median(read)) < gate


def _triples(gate: float, swap: bool = True, lift: bool = True, leaf_only: bool = False
             ) -> Callable[[], Callable[[], None]]:
    """In trees whose recovered edges read below ``gate`` (median difference kurtosis), each recovered chain
    p -> x -> y of full fine-tunes is re-read from its three differences: the pair with the highest excess
    kurtosis is the one that is not an edge (two runs' sum or difference), so
    k(p, y) highest: the chain as read; k(p, x) highest: p -> y -> x; k(x, y) highest: siblings p -> {x, y}."""
    def install() -> Callable[[], None]:
        def post(parent: np.ndarray, members: np.ndarray, problem: Any, pinned: set[int],
                 banned: set[tuple[int, int]]) -> np.ndarray:
            ties = problem.tie_kurtosis
            if not _trusted(parent, members, problem, gate):
                return parent
            out = parent.copy()
            inside = {int(g) for g in members}
            order = sorted(inside, key=lambda g: _depth(out, g))
            for y in order:
                x = int(out[y])
                if x < 0 or y in pinned or y not in ties or x not in ties or x not in inside:
                    continue
                p = int(out[x])
                if p < 0 or p not in inside or x in pinned:
                    continue
                if leaf_only and (out == y).any():
                    continue
                kpx, kpy, kxy = kt(problem, p, x), kt(problem, p, y), kt(problem, x, y)
                if not np.all(np.isfinite([kpx, kpy, kxy])):
                    continue
                top = max(kpx, kpy, kxy)
                if top == kxy and lift and (p, y) not in banned:
                    out[y] = p
                elif top == kpx and swap and (p, y) not in banned and (y, x) not in banned:
                    out[y] = p
                    out[x] = y
            return out
        return _patch_ties(post)
    return install


def kt(problem: Any, a: int, b: int) -> float:
    """k(W_a - W_b) as the problem keeps it (a candidate of the other's :class:`TieKurtosis`), else NaN; the
    dump's full matrix when ``CURRENT["full"]``."""
    if CURRENT.get("full"):
        return float(CURRENT["k"][a, b])
    for u, v in ((a, b), (b, a)):
        t = problem.tie_kurtosis.get(v)
        if t is not None and u in t.candidates:
            return float(t.kurtosis[t.candidates.index(u)])
    return float("nan")


def _depth(parent: np.ndarray, g: int) -> int:
    d = 0
    while parent[g] >= 0 and d < 1000:
        g = int(parent[g])
        d += 1
    return d


for _g in (-1.0, -0.6, -0.3, 0.0):
    VARIANTS[f"triple<{_g}"] = _triples(_g)
    VARIANTS[f"swap<{_g}"] = _triples(_g, lift=False)
    VARIANTS[f"liftarg<{_g}"] = _triples(_g, swap=False)
VARIANTS["swapleaf<-1.0"] = _triples(-1.0, lift=False, leaf_only=True)


def _wide_ties(gate: float, effect: float) -> Callable[[], Callable[[], None]]:
    """The near-tie step with a wider tie (``effect`` for :data:`.ties.TIE_EFFECT`) in trees whose recovered
    edges read below ``gate`` (the lift's tree check, :func:`.ties.lift_trusted`, at that level)."""
    def install() -> Callable[[], None]:
        original = S.choose_among_ties

        def patched(parent, members, margins, ties, pinned=(), banned=(), no_children=()):  # type: ignore[no-untyped-def]
            inside = {int(g) for g in members}
            read = [float(t.kurtosis[t.candidates.index(int(parent[c]))]) for c, t in ties.items()
                    if c in inside and parent[c] >= 0 and int(parent[c]) in t.candidates]
            read = [k for k in read if np.isfinite(k)]
            old = T.TIE_EFFECT
            if read and float(np.median(read)) < gate:
                T.TIE_EFFECT = effect
            try:
                return original(parent, members, margins, ties, pinned, banned, no_children)
            finally:
                T.TIE_EFFECT = old

        S.choose_among_ties = patched  # type: ignore[assignment]

        def undo() -> None:
            S.choose_among_ties = original  # type: ignore[assignment]
        return undo
    return install


for _g in (-1.0, -0.6, -0.3):
    for _e in (1.0, 2.0, np.inf):
        VARIANTS[f"wide<{_g}:{_e}"] = _wide_ties(_g, _e)


def _ties_by_mean() -> Callable[[], None]:
    """The near-tie step as it was before branch ftchain: the lowest mean kurtosis over layers wins."""
    original = T.more_platykurtic

    def by_mean(tie: Any, q: int, than: int) -> bool:
        return original(T.TieKurtosis(tie.candidates, tie.kurtosis), q, than)

    T.more_platykurtic = by_mean  # type: ignore[assignment]

    def undo() -> None:
        T.more_platykurtic = original  # type: ignore[assignment]
    return undo


VARIANTS["ties-by-mean"] = _ties_by_mean


def _full(name: str) -> Callable[[], Callable[[], None]]:
    def install() -> Callable[[], None]:
        undo = VARIANTS[name]()
        CURRENT["full"] = True

        def both() -> None:
            CURRENT["full"] = False
            undo()
        return both
    return install


for _n in list(VARIANTS):
    if _n != "defaults":
        VARIANTS[_n + "+full"] = _full(_n)


def load(files: list[Path]) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}
    for f in files:
        sets.update(pickle.loads(f.read_bytes()))
    return sets


def moves(files: list[Path], names: list[str]) -> None:
    """Each child whose parent differs between the first variant and each other one: right or wrong before and
    after, the tree recipe, and the gate's reading (median edge kurtosis of the tree as recovered)."""
    sets = load(files)
    for name, d in sets.items():
        CURRENT["k"] = d["k"]
        prob = d["problem"]
        found = []
        for v in names:
            undo = VARIANTS[v]()
            try:
                found.append(parents_of(prob))
            finally:
                if callable(undo):
                    undo()
        ids = prob.ids
        idx = {m: i for i, m in enumerate(ids)}
        tp = {idx[c]: idx[p] for p, c, _ in d["truth"] if p in idx and c in idx}
        for v, par in zip(names[1:], found[1:]):
            for c in np.flatnonzero(par != found[0]):
                c = int(c)
                t = tp.get(c, -1)
                print(f"{v:22s} {name:22s} {d['recipes'].get(ids[c], 'typed'):24s} child {c:3d} true {t:3d} "
                      f"{found[0][c]:3d} -> {par[c]:3d}  {'right' if found[0][c] == t else 'wrong'} -> "
                      f"{'right' if par[c] == t else 'wrong'}")


def show(files: list[Path], names: list[str], by_tree: bool) -> None:
    sets = load(files)
    totals: dict[str, list[int]] = {}
    for v in names:
        undo = VARIANTS[v]()
        try:
            tot = [0, 0, 0]
            cells = []
            for name, d in sets.items():
                CURRENT["k"] = d["k"]
                per, _ = score(d, parents_of(d["problem"]))
                s = [sum(r[i] for r in per.values()) for i in range(3)]
                tot = [a + b for a, b in zip(tot, s)]
                cells.append(f"{name.split('/')[-2] if '/' in name else name} {s[1]} ({s[2]})/{s[0]}")
                if by_tree:
                    for r, row in sorted(per.items()):
                        print(f"    {v:24s} {name:28s} {r:28s} {row[1]} ({row[2]}) / {row[0]}")
            totals[v] = tot
            print(f"{v:24s} total {tot[1]} ({tot[2]}) / {tot[0]}   " + "  ".join(cells))
        finally:
            if callable(undo):
                undo()


def compare(folders: list[Path], cache: Path | None, before: str) -> None:
    """Full recoveries of each folder with the engine as it is and with variant ``before`` installed, from the same
    statistics in the same process: fine-tune edges right, directed (undirected), and over every edge the ECE,
    AUROC and wrong edges among those at confidence >= 0.8 (``benchmarks/generalise.py``'s scoring)."""
    from generalise import score as confidence_score

    from mother_core.evaluate import load_truth
    tot: dict[str, list[int]] = {"before": [0, 0, 0, 0, 0], "after": [0, 0, 0, 0, 0]}
    for folder in folders:
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
        truth = load_truth(folder / "truth.json")
        d = {"truth": truth_edges(folder), "recipes": recipes(folder)}
        row = []
        for label in ("before", "after"):
            undo = VARIANTS[before]() if label == "before" else None
            try:
                rec = recover(stats)
            finally:
                if callable(undo):
                    undo()
            d["problem"] = rec.problem
            idx = {m: i for i, m in enumerate(rec.problem.ids)}
            parent = np.full(len(idx), -1)
            for e in rec.edges:
                parent[idx[e.child]] = idx[e.parent]
            per, _ = score(d, parent)
            s = [sum(r[i] for r in per.values()) for i in range(3)]
            c = confidence_score(rec, truth)
            hi = int(round(c["wrong_high"] * c["n_high"]))
            t = tot[label]
            for i, v in enumerate((s[0], s[1], s[2], hi, c["n_high"])):
                t[i] += v
            row.append(f"{label}: fine-tune {s[1]} ({s[2]}) / {s[0]}, ECE {c['ece']:.3f}, AUROC {c['auroc']:.2f}, "
                       f"wrong >= 0.8 {hi} of {c['n_high']}")
        name = f"{folder.parent.name}/{folder.name}" if folder.name == "typed" else folder.name
        print(f"{name:26s} " + " | ".join(row), flush=True)
    for label, t in tot.items():
        print(f"total {label}: fine-tune {t[1]} ({t[2]}) / {t[0]}, wrong >= 0.8 {t[3]} of {t[4]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("dump")
    a.add_argument("folders", nargs="+", type=Path)
    a.add_argument("--cache", type=Path)
    a.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("show")
    b.add_argument("files", nargs="+", type=Path)
    b.add_argument("--variants", default="defaults")
    b.add_argument("--trees", action="store_true")
    b.add_argument("--moves", action="store_true", help="each child that moves against the first variant")
    c = sub.add_parser("compare")
    c.add_argument("folders", nargs="+", type=Path)
    c.add_argument("--cache", type=Path)
    c.add_argument("--before", default="ties-by-mean")
    args = ap.parse_args()
    if args.cmd == "compare":
        compare(args.folders, args.cache, args.before)
    elif args.cmd == "dump":
        dump(args.folders, args.cache, args.out)
    else:
        if args.moves:
            moves(args.files, args.variants.split(","))
        else:
            show(args.files, args.variants.split(","), args.trees)


if __name__ == "__main__":
    main()
