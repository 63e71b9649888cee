"""Placement variants measured on the FITTING collections (issue 12, "Placement: what was tried").

None of these is in the engine: each is installed here by replacing one step of
:mod:`mother_core.recovery.recover` for the run (the distance of :func:`pair_evidence`, the squared
distances the additivity refinement reads, or one tree's placement distance), and the engine's own
answer is the ``defaults`` row. Per tree: directed / undirected edges right; totals over the
collections given.

    python benchmarks/placement_variants.py --cache /tmp/cache-placement \\
        fit-fft fit-lora fit-mixed /tmp/more/fitx-0 /tmp/more/fitx-1 /tmp/more/fitx-2 /tmp/more/fitw
    python benchmarks/placement_variants.py --objective ...   # refinement objective, true vs recovered tree
    python benchmarks/placement_variants.py --element-kurtosis ...   # an element-level cue (below)

A bare name is read under ``benchmarks/_data/generalise``; ``--only fitting-more --data DIR`` of
``generalise.py`` makes the ``fitx-*`` and ``fitw`` collections.

Variants (docs/METHOD.md, "Signals", "Refinement"):

- ``rescaled``: d(p -> c) = mean over layers of RMS of min_s ||W_c - s W_p||, the child's distance to
  its parent after optimally rescaling the parent (removes a shared shrink, weight decay's ray);
- ``borda``: each layer ranks the candidate parents of a child; the mean rank over layers scales the
  distance (per-layer voting, for trees where a few layers dominate the sum);
- ``trimmed``: the mean over layers without each pair's 20% largest layer distances;
- ``refine-pc1`` / ``refine-pc2``: the refinement's squared distances with each layer's top 1 / 2
  principal directions of the tree removed (classical MDS per layer): a drift shared by siblings that
  keep training on one task;
- ``ray-rescaled``: only in trees whose updates lie along the weights (radial share above 0.25,
  :func:`.confidence.tree_radial_share`; fitting trees without strong decay: 0.02-0.13), placement by
  the symmetric ``rescaled`` distance and no refinement;
- ``refine-kurtosis``: the refinement's squared distances times exp(2 k), k the excess kurtosis of the
  difference's skeleton entries (``--element-kurtosis`` below), in trees whose members' differences to
  their nearest relatives read platykurtic (median k < 0);
- ``no refinement``: ``RecoverySettings(refine=False)``;
- ``no kurtosis ties``: ``RecoverySettings(kurtosis_ties=False)``, the engine without its near-tied
  parents re-chosen by the difference kurtosis (:mod:`mother_core.recovery.ties`; adopted from the
  ``--element-kurtosis`` lead below, benchmarks/RESULTS.md, issue 12, "Near-tied parents").

``--element-kurtosis`` (a diagnostic, no recovery): per tree, minimum spanning trees over the distance,
over the excess kurtosis of the entries of W_i - W_j (the skeletons' random submatrices, mean over
layers), and over distance x exp(kurtosis). A few Adam steps give sign-like, platykurtic updates (an
entry moves by about lr per step whatever its gradient's size); the difference of two siblings'
updates is a mixture (entries where their signs agree cancel), so it is less platykurtic.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mother_core.recovery.recover as R  # noqa: E402
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.recovery.additive import _adjacency, _path_sums  # noqa: E402
from mother_core.recovery.confidence import tree_radial_share  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data" / "generalise"
RAY_SHARE = 0.25
ORIGINAL: dict[str, Any] = {
    "pair_evidence": R.pair_evidence,
    "squared_distances": R.squared_distances,
    "_placement_distance": R._placement_distance,
}


def _mean_over_layers(per_layer: np.ndarray, keep: np.ndarray) -> np.ndarray:
    shared = keep.sum(0)
    d = np.where(shared > 0, np.where(keep, per_layer, 0.0).sum(0) / np.maximum(shared, 1), np.inf)
    np.fill_diagonal(d, 0.0)
    return d


def rescaled_residual(stats: Any, layers: np.ndarray, members: np.ndarray | None = None) -> np.ndarray:
    """Per layer, min_s ||W_c - s W_p||^2 = ||W_c||^2 - <W_p, W_c>^2 / ||W_p||^2, indexed [l, p, c]."""
    idx = np.arange(stats.n_models) if members is None else members
    n = stats.norm[idx][:, layers].T
    sq = stats.sq_dist[layers][:, idx][:, :, idx]
    inner = (n[:, :, None] ** 2 + n[:, None, :] ** 2 - sq) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        res = n[:, None, :] ** 2 - inner**2 / n[:, :, None] ** 2
    return np.clip(np.nan_to_num(res, nan=0.0), 0.0, None)


def _distance_variant(kind: str) -> Callable[..., Any]:
    def patched(stats: Any, mask: np.ndarray, drop_reinitialised: bool = True) -> Any:
        ev = ORIGINAL["pair_evidence"](stats, mask, drop_reinitialised)
        if not drop_reinitialised:
            return ev
        rms = ev.rms
        keep = np.isfinite(rms)
        if kind == "rescaled":
            res = np.sqrt(rescaled_residual(stats, ev.layer_index) / stats.numel[ev.layer_index][:, None, None])
            d = _mean_over_layers(res, keep)
        elif kind == "trimmed":
            r = np.sort(np.where(keep, rms, np.inf), axis=0)
            k = np.maximum(1, np.round(keep.sum(0) * 0.8)).astype(int)
            cs = np.cumsum(np.where(np.isfinite(r), r, 0.0), axis=0)
            d = np.where(keep.sum(0) > 0, np.take_along_axis(cs, (k - 1)[None], 0)[0] / k, np.inf)
            np.fill_diagonal(d, 0.0)
        else:  # borda
            r = np.where(keep, rms, np.inf)
            for layer in r:
                np.fill_diagonal(layer, np.inf)
            rank = np.where(keep, np.argsort(np.argsort(r, axis=1), axis=1).astype(float), np.nan)
            with np.errstate(invalid="ignore"):
                b = np.nan_to_num(np.nanmean(rank, axis=0) / (rms.shape[1] - 1), nan=0.0)
            d = _mean_over_layers(rms, keep) * (1.0 + b)
        return replace(ev, distance=d)

    return patched


def _refine_without_pcs(k: int) -> Callable[..., Any]:
    def patched(rms: np.ndarray, numel: np.ndarray, members: np.ndarray) -> np.ndarray | None:
        m = len(members)
        sub, off = np.ix_(members, members), ~np.eye(m, dtype=bool)
        centre = np.eye(m) - 1.0 / m
        total, used = np.zeros((m, m)), 0
        for layer_rms, size in zip(rms, numel):
            r = layer_rms[sub]
            if not np.isfinite(r[off]).all():
                continue
            s = r**2 * float(size)
            np.fill_diagonal(s, 0.0)
            w, v = np.linalg.eigh(-0.5 * centre @ s @ centre)
            gram = (v[:, :-k] * np.clip(w[:-k], 0, None)) @ v[:, :-k].T
            dg = np.diag(gram)
            total += dg[:, None] + dg[None, :] - 2 * gram
            used += 1
        if not used:
            return None
        total = np.clip(total, 0.0, None)
        np.fill_diagonal(total, 0.0)
        return total

    return patched


def _ray_placement(
    stats: Any, mask: np.ndarray, ev: Any, members: np.ndarray, settings: Any, typed: Any = frozenset()
) -> np.ndarray | None:
    got = ORIGINAL["_placement_distance"](stats, mask, ev, members, settings, typed)
    if got is not None:
        return got
    core = np.array([g for g in members if g not in typed], dtype=int)
    if not tree_radial_share(stats.norm, stats.sq_dist, ev.layer_index, ev.distance, core) > RAY_SHARE:
        return None
    res = np.sqrt(rescaled_residual(stats, ev.layer_index, members) / stats.numel[ev.layer_index][:, None, None])
    return _mean_over_layers(np.minimum(res, res.transpose(0, 2, 1)), np.isfinite(ev.rms[:, members][:, :, members]))


def _difference_kurtosis(stats: Any, members: np.ndarray) -> np.ndarray:
    """Mean over tensors with a skeleton of the excess kurtosis of the entries of W_i - W_j (m x m)."""
    m = len(members)
    total, count = np.zeros((m, m)), np.zeros((m, m))
    for sk in stats.skeletons.values():
        x = sk[members].reshape(m, -1).astype(np.float64)
        if not np.isfinite(x).all() or x.shape[1] < 16:
            continue
        u = x[:, None, :] - x[None, :, :]
        u = u - u.mean(-1, keepdims=True)
        v = (u**2).mean(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            k = (u**4).mean(-1) / v**2 - 3.0
        total += np.where(v > 0, k, 0.0)
        count += v > 0
    return total / np.maximum(count, 1)


CURRENT: dict[str, Any] = {}


def _refine_with_kurtosis(rms: np.ndarray, numel: np.ndarray, members: np.ndarray) -> np.ndarray | None:
    s = ORIGINAL["squared_distances"](rms, numel, members)
    if s is None:
        return None
    k = _difference_kurtosis(CURRENT["stats"], members)
    nearest = np.argsort(np.where(np.eye(len(members), dtype=bool), np.inf, s), axis=1)[:, 0]
    if not float(np.median(k[np.arange(len(members)), nearest])) < 0.0:
        return s
    s = s * np.exp(2.0 * k)
    np.fill_diagonal(s, 0.0)
    return s


VARIANTS: dict[str, tuple[dict[str, Any], RecoverySettings]] = {
    "defaults": ({}, RecoverySettings()),
    "rescaled": ({"pair_evidence": _distance_variant("rescaled")}, RecoverySettings()),
    "borda": ({"pair_evidence": _distance_variant("borda")}, RecoverySettings()),
    "trimmed": ({"pair_evidence": _distance_variant("trimmed")}, RecoverySettings()),
    "refine-pc1": ({"squared_distances": _refine_without_pcs(1)}, RecoverySettings()),
    "refine-pc2": ({"squared_distances": _refine_without_pcs(2)}, RecoverySettings()),
    "ray-rescaled": ({"_placement_distance": _ray_placement}, RecoverySettings()),
    "refine-kurtosis": ({"squared_distances": _refine_with_kurtosis}, RecoverySettings()),
    "no refinement": ({}, RecoverySettings(refine=False)),
    "no kurtosis ties": ({}, RecoverySettings(kurtosis_ties=False)),
}


def _objective(parent: np.ndarray, s: np.ndarray) -> float:
    """The refinement's fit (:func:`.additive.refine_topology`): sum of (log s - log path sum)^2."""
    paths = _path_sums(_adjacency(parent), s)
    off = ~np.eye(len(parent), dtype=bool)
    return float(((np.log(s[off]) - np.log(paths[off])) ** 2).sum())


def _mst_right(weights: np.ndarray, members: np.ndarray, truth: set[frozenset[int]]) -> int:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    m = len(members)
    w = weights - weights[~np.eye(m, dtype=bool)].min() + 1e-6
    np.fill_diagonal(w, 0.0)
    t = minimum_spanning_tree(csr_matrix(w)).tocoo()
    return sum(frozenset((int(members[a]), int(members[b]))) in truth for a, b in zip(t.row, t.col))


def element_kurtosis(stats: Any, folder: Path, meta: dict[str, Any]) -> dict[str, int]:
    """Per tree of 3+ models: edges right (undirected) by an MST over each weight; prints a row each."""
    from mother_core.recovery.features import pair_evidence, select_layers

    mask = select_layers(stats, "matrices")
    ev = pair_evidence(stats, mask)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    slots = [int(s) for s in np.flatnonzero(mask) if s in stats.skeletons]
    out = {"distance": 0, "kurtosis": 0, "distance x exp(kurtosis)": 0, "edges": 0}
    for tree in meta["trees"]:
        if len(tree["models"]) < 3:
            continue
        members = np.array([ix[m] for m in tree["models"]])
        m = len(members)
        truth = {
            frozenset((ix[meta["models"][x]["parent"]], ix[x])) for x in tree["models"] if meta["models"][x]["parent"]
        }
        kurt, count = np.zeros((m, m)), np.zeros((m, m))
        for slot in slots:
            sk = stats.skeletons[slot][members].reshape(m, -1).astype(np.float64)
            if not np.isfinite(sk).all() or sk.shape[1] < 16:
                continue
            for a in range(m):
                for b in range(a + 1, m):
                    u = sk[a] - sk[b]
                    u = u - u.mean()
                    v = float((u**2).mean())
                    if v > 0:
                        k = float((u**4).mean()) / v**2 - 3.0
                        kurt[a, b] += k
                        kurt[b, a] += k
                        count[a, b] += 1
                        count[b, a] += 1
        kurt = kurt / np.maximum(count, 1)
        dist = ev.distance[np.ix_(members, members)]
        row = {
            "distance": _mst_right(dist.copy(), members, truth),
            "kurtosis": _mst_right(kurt.copy(), members, truth),
            "distance x exp(kurtosis)": _mst_right(dist * np.exp(kurt), members, truth),
        }
        for k2, v2 in row.items():
            out[k2] += v2
        out["edges"] += len(truth)
        all_k = float(kurt[~np.eye(m, dtype=bool)].mean())
        true_k = np.mean([kurt[list(members).index(a), list(members).index(b)] for a, b in map(tuple, truth)])
        print(
            f"  {folder.name} {tree['recipe']:22s} "
            + " ".join(f"{k2} {v2}" for k2, v2 in row.items())
            + f" of {len(truth)}; kurtosis on true edges {true_k:.2f}, all pairs {all_k:.2f}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collections", nargs="+")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", type=Path, default=DATA / "stats-cache")
    ap.add_argument("--objective", action="store_true", help="refinement objective of the true vs recovered tree")
    ap.add_argument("--element-kurtosis", action="store_true", help="element-level diagnostic (docstring)")
    args = ap.parse_args()
    if args.element_kurtosis:
        total: dict[str, int] = {}
        for name in args.collections:
            folder = Path(name) if "/" in name else DATA / name
            stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
            meta = json.loads((folder / "truth.json").read_text())["meta"]
            for key, right in element_kurtosis(stats, folder, meta).items():
                total[key] = total.get(key, 0) + right
        print("TOTAL (undirected edges right): " + ", ".join(f"{key} {right}" for key, right in total.items()))
        return
    names = ["defaults"] if args.objective else args.variants.split(",")
    totals = {v: [0, 0, 0] for v in names}
    for name in args.collections:
        folder = Path(name) if "/" in name else DATA / name
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
        CURRENT["stats"] = stats
        meta = json.loads((folder / "truth.json").read_text())["meta"]
        cells: dict[str, list[str]] = {}
        for v in names:
            patches, settings = VARIANTS[v]
            for attr, original in ORIGINAL.items():
                setattr(R, attr, patches.get(attr, original))
            rec = recover(stats, settings)
            got = {(e.parent, e.child) for e in rec.edges}
            und = {frozenset(e) for e in got}
            for t, tree in enumerate(meta["trees"]):
                truth = {(meta["models"][m]["parent"], m) for m in tree["models"] if meta["models"][m]["parent"]}
                if not truth:
                    continue
                d, u = len(got & truth), sum(frozenset(e) in und for e in truth)
                totals[v][0] += d
                totals[v][1] += u
                totals[v][2] += len(truth)
                cells.setdefault(f"{t}:{tree['recipe']}", []).append(f"{d}/{u}/{len(truth)}")
                if args.objective and rec.problem is not None and rec.problem.squared is not None:
                    ix = {m: i for i, m in enumerate(rec.problem.ids)}
                    members = np.array([ix[m] for m in tree["models"]])
                    s = rec.problem.squared[np.ix_(members, members)]
                    if np.isfinite(s).all() and len(members) >= 3:
                        loc = {m: k for k, m in enumerate(tree["models"])}
                        parent_of = {e.child: e.parent for e in rec.edges}
                        true_p = np.array([loc.get(meta["models"][m]["parent"] or "", -1) for m in tree["models"]])
                        rec_p = np.array([loc.get(parent_of.get(m, ""), -1) for m in tree["models"]])
                        cells[f"{t}:{tree['recipe']}"].append(
                            f"objective true {_objective(true_p, s.copy()):.3f} "
                            f"recovered {_objective(rec_p, s.copy()):.3f}"
                        )
        for attr, original in ORIGINAL.items():
            setattr(R, attr, original)
        print(f"\n{folder.name}: " + " | ".join(names))
        for recipe, row in cells.items():
            print(f"  {recipe:26s} " + " | ".join(row))
    print(
        "\nTOTAL (directed / undirected / edges): " + " | ".join(f"{v} {t[0]}/{t[1]}/{t[2]}" for v, t in totals.items())
    )


if __name__ == "__main__":
    main()
