"""Full fine-tuning trees: wrong edges by cause, and orienting cues measured one by one (issue 12;
benchmarks/RESULTS.md, "Full fine-tune trees: wrong edges by cause and orienting cues measured").

A diagnostic, no engine change. For each generalise collection (a folder with ``truth.json``) it
recovers with the defaults and

1. **classifies every true edge p -> c** by what the engine made of it: right; reversed (the engine
   has c -> p), split into a *root* edge (p is the tree's true root) and an *inner* one; a sibling
   taken for the parent (chain read for siblings); the grandparent taken (a chain read as siblings);
   a descendant of c taken; another model of the tree; a model of another tree (wrong family); no
   parent (c made a root). Per recipe and per collection.
2. **measures candidate orienting cues on the true edges**, each alone, as the AUROC of the cue read
   p -> c against the same cue read c -> p (0.5: no information; below 0.5: the cue points the other
   way, consistently). A cue is a difference f(c) - f(p) of an endpoint statistic per tensor,
   aggregated over tensors either as a magnitude-weighted sum (sum of deltas over sum of |deltas|, as
   the engine's kurtosis trend) or as a per-layer vote (the mean of the deltas' signs). Endpoint
   statistics: the excess kurtosis, the log Frobenius norm, the effective rank, the top singular
   value's share of the squared norm, and the spike count above the Marchenko-Pastur edge
   sigma (sqrt(m) + sqrt(n)) (sigma^2 from the matrix's own mean square) of each endpoint's own
   weights; on the body matrices, on the head (classifier / lm_head / embeddings), on the 1-D tensors
   (norm gains: their departure from 1; biases: their norm). Pair cues: where the update lives (the
   share of ||W_c - W_p||^2 inside the top-k singular subspaces of the *parent* minus that of the
   *child*, k = 10% of the smaller side, at least 1), and the engine's own cue votes (``Edge.cues``,
   read on the true edge's recovered twin where the engine has the pair, else not counted).
   Reported per collection group and separately on root edges (p the true root) and inner edges.
3. **root choice on the engine's own undirected trees**: every cue that points the true way on a
   collection other than the one looked at can only help through a tree's root (direction on a
   placed tree is the choice of its root). For each recovered tree, the root maximising the engine's
   fused evidence (its cue votes, summed along the rooted edges) plus w x the cue is taken; printed:
   directed edges right, before (the engine's own root) and after, per w.

    python benchmarks/fftdir_diag.py --cache /tmp/fftdir/cache /work/data/gen/fit-fft ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fftplace_diag import auroc  # noqa: E402
from mother_core import compute_statistics, discover, recover  # noqa: E402

HEAD_WORDS = ("classifier", "lm_head", "embed", "position_embeddings", "cls_token", "patch_embeddings")


def kind(name: str, shape: tuple[int, ...]) -> str:
    """body / head / gain / bias: which group a tensor's cue is read in."""
    if any(w in name for w in HEAD_WORDS):
        return "head"
    if len(shape) == 1:
        return "bias" if name.endswith("bias") else "gain"
    return "body" if len(shape) == 2 else "head"


def excess_kurtosis(x: np.ndarray) -> float:
    x = x.ravel() - x.mean()
    m2 = float((x ** 2).mean())
    return float((x ** 4).mean() / m2 ** 2 - 3.0) if m2 > 0 else 0.0


def endpoint_stats(name: str, w: np.ndarray) -> dict[str, float]:
    """Statistics of one model's own tensor (not of a difference)."""
    out = {"kurt": excess_kurtosis(w), "lognorm": float(np.log(np.linalg.norm(w) + 1e-30))}
    k = kind(name, w.shape)
    if k == "gain":
        out["departure"] = float(np.linalg.norm(w - 1.0))
    if w.ndim == 2 and min(w.shape) > 1:
        s = np.linalg.svd(w, compute_uv=False)
        p = s / s.sum()
        p = p[p > 0]
        out["erank"] = float(np.exp(-(p * np.log(p)).sum()))
        out["top1"] = float(s[0] ** 2 / (s ** 2).sum())
        m, n = w.shape
        sigma = np.sqrt((s ** 2).sum() / (m * n))
        out["spikes"] = float((s > sigma * (np.sqrt(m) + np.sqrt(n))).sum())
    return out


def update_share(wp: np.ndarray, wc: np.ndarray) -> float:
    """Share of ||U||^2 (U = W_c - W_p) in the parent's top-k singular subspaces minus the child's."""
    u = wc - wp
    nu = float((u ** 2).sum())
    if nu <= 0:
        return 0.0
    k = max(1, int(round(0.1 * min(u.shape))))

    def share(w: np.ndarray) -> float:
        a, _, bt = np.linalg.svd(w, full_matrices=False)
        proj = a[:, :k].T @ u @ bt[:k].T
        return float((proj ** 2).sum()) / nu

    return share(wp) - share(wc)


def load(folder: Path, models: list[str]) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    raw = {m: load_file(str(folder / m / "model.safetensors")) for m in models}
    names = sorted(set.intersection(*(set(r) for r in raw.values())))
    keep = [n for n in names if np.issubdtype(raw[models[0]][n].dtype, np.floating)
            and all(raw[m][n].shape == raw[models[0]][n].shape for m in models)]
    return keep, {m: [raw[m][n].astype(np.float64) for n in keep] for m in models}


def pair_cues(names: list[str], st: dict[str, list[dict[str, float]]], w: dict[str, list[np.ndarray]],
              p: str, c: str) -> dict[str, float]:
    """Every candidate cue read p -> c (positive: the cue's raw difference f(c) - f(p) is positive)."""
    deltas: dict[str, list[float]] = defaultdict(list)
    for i, n in enumerate(names):
        sp, sc = st[p][i], st[c][i]
        k = kind(n, w[p][i].shape)
        if not np.any(w[c][i] - w[p][i]):
            continue  # frozen tensor: says nothing
        for key in sp:
            deltas[f"{key}@{k}"].append(sc[key] - sp[key])
        if k == "body" and w[p][i].ndim == 2:
            deltas["update-in-parent-dirs@body"].append(update_share(w[p][i], w[c][i]))
    out = {}
    for key, d in deltas.items():
        a = np.asarray(d)
        tot = np.abs(a).sum()
        out[f"{key} sum"] = float(a.sum() / tot) if tot > 0 else 0.0
        out[f"{key} vote"] = float(np.sign(a).mean())
    return out


def classify(p: str, c: str, tpar: dict[str, str], pred: dict[str, str], tree: set[str]) -> str:
    """What the engine made of the true edge p -> c."""
    q = pred.get(c)
    if q == p:
        return "right"
    if pred.get(p) == c:
        return "reversed root edge" if p not in tpar else "reversed inner edge"
    if q is None:
        return "child made a root"
    if q not in tree:
        return "wrong family"
    if tpar.get(q) == p:
        return "sibling taken as parent"
    if tpar.get(p) == q:
        return "grandparent taken"
    anc, x = set(), q
    while x in tpar:
        x = tpar[x]
        anc.add(x)
    if c in anc:
        return "descendant taken"
    return "other model of the tree"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--weights", default="0.5,1,2,4")
    args = ap.parse_args()
    weights = [float(x) for x in args.weights.split(",")]

    causes: dict[str, Counter] = defaultdict(Counter)
    # cue -> group -> list of (value read p -> c)
    vals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    root_tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for folder in args.folders:
        col = folder.name
        meta = json.loads((folder / "truth.json").read_text())
        edges = [(e[0], e[1]) if not isinstance(e, dict) else (e["parent"], e["child"]) for e in meta["edges"]]
        tpar = {c: p for p, c in edges}
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=args.cache)
        rec = recover(stats)
        pred = {e.child: e.parent for e in rec.edges}
        engine_cues = {(e.parent, e.child): sum(e.cues.get(k, 0.0) for k in ("kurtosis", "norm", "scale"))
                       for e in rec.edges}
        for tree in meta["meta"]["trees"]:
            recipe, models = tree["recipe"], tree["models"]
            if len(models) < 2:
                continue
            mset = set(models)
            lora = "lora" in recipe
            for c in models:
                if c in tpar:
                    causes[f"{col} | {recipe}"][classify(tpar[c], c, tpar, pred, mset)] += 1
            names, w = load(folder, models)
            st = {m: [endpoint_stats(n, x) for n, x in zip(names, w[m], strict=True)] for m in models}
            cue_of: dict[tuple[str, str], dict[str, float]] = {}
            for c in models:
                if c not in tpar:
                    continue
                p = tpar[c]
                cu = pair_cues(names, st, w, p, c)
                cu["engine fused (kurtosis+norm+scale)"] = (engine_cues[(p, c)] if (p, c) in engine_cues
                                                           else -engine_cues[(c, p)] if (c, p) in engine_cues
                                                           else np.nan)
                cue_of[(p, c)] = cu
                where = "root" if p not in tpar else "inner"
                for group in (("lora" if lora else "fft") + " " + where, ("lora" if lora else "fft") + " all",
                              f"{col} {'lora' if lora else 'fft'}"):
                    for key, v in cu.items():
                        if not np.isnan(v):
                            vals[key][group].append(v)
            # 3. root choice on the engine's recovered undirected trees inside this true tree
            if lora:
                continue
            g = nx.Graph()
            g.add_nodes_from(models)
            g.add_edges_from((c, p) for c, p in pred.items() if c in mset and p in mset)
            for comp in nx.connected_components(g):
                if len(comp) < 2:
                    continue
                sub = g.subgraph(comp)
                eng_root = next(u for u in comp if pred.get(u) not in comp)
                cand: dict[str, dict[str, float]] = {}
                for r in comp:
                    par = dict(nx.dfs_predecessors(sub, r))
                    scores: dict[str, float] = defaultdict(float)
                    for ch, pa in par.items():
                        scores["engine"] += (engine_cues[(pa, ch)] if (pa, ch) in engine_cues
                                             else -engine_cues.get((ch, pa), 0.0))
                        cu = pair_cues(names, st, w, pa, ch) if (pa, ch) not in cue_of else cue_of[(pa, ch)]
                        cue_of[(pa, ch)] = cu
                        for key, v in cu.items():
                            if key.startswith("engine"):
                                continue
                            scores[key] += v
                    scores["right"] = sum(tpar.get(ch) == pa for ch, pa in par.items())
                    cand[r] = scores
                n = len(comp) - 1
                root_tally["engine's root"][0] += int(cand[eng_root]["right"])
                root_tally["engine's root"][1] += n
                root_tally["best root (oracle)"][0] += int(max(s["right"] for s in cand.values()))
                root_tally["best root (oracle)"][1] += n
                keys = sorted({k for s in cand.values() for k in s if k not in ("engine", "right")})
                for key in keys:
                    for sign in (1.0, -1.0):
                        for wt in weights:
                            r = max(cand, key=lambda x: (cand[x]["engine"] + sign * wt * cand[x].get(key, 0.0),
                                                         x == eng_root))
                            tag = f"{'+' if sign > 0 else '-'}{wt} x {key}"
                            root_tally[tag][0] += int(cand[r]["right"])
                            root_tally[tag][1] += n
                            root_tally[f"{tag} | {col}"][0] += int(cand[r]["right"])
                            root_tally[f"{tag} | {col}"][1] += n
                root_tally[f"engine's root | {col}"][0] += int(cand[eng_root]["right"])
                root_tally[f"engine's root | {col}"][1] += n

    print("## 1. True edges by what the engine made of them")
    total: Counter = Counter()
    for key in sorted(causes):
        total.update(causes[key])
        print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in causes[key].most_common()))
    print("ALL: " + ", ".join(f"{k} {v}" for k, v in total.most_common()))

    print("\n## 2. Cues alone: AUROC of the cue read parent -> child against child -> parent")
    groups = sorted({g for d in vals.values() for g in d})
    head = ["fft all", "fft root", "fft inner", "lora all"] + [g for g in groups if g.startswith("fit")]
    print("| cue | " + " | ".join(f"{g} (n)" for g in head) + " |")
    print("|---|" + "---|" * len(head))
    for key in sorted(vals):
        cells = []
        for g in head:
            v = vals[key].get(g, [])
            if not v:
                cells.append("-")
                continue
            a = np.asarray(v)
            cells.append(f"{auroc(list(a) + list(-a), [1] * len(a) + [0] * len(a)):.2f} ({len(a)})")
        print(f"| {key} | " + " | ".join(cells) + " |")

    print("\n## 3. Root choice on the engine's undirected trees (full fine-tuning recipes): directed right")
    base = root_tally["engine's root"]
    print(f"engine's root: {base[0]} / {base[1]}; oracle root: {root_tally['best root (oracle)'][0]}")
    rows = [(k, v) for k, v in root_tally.items() if "|" not in k and k not in ("engine's root", "best root (oracle)")]
    rows.sort(key=lambda kv: -kv[1][0])
    cols = sorted({k.split(" | ")[1] for k in root_tally if " | " in k})
    eng = {c: root_tally[f"engine's root | {c}"][0] for c in cols}
    for k, v in rows[:30]:
        per = ", ".join(f"{c} {root_tally[f'{k} | {c}'][0] - eng[c]:+d}" for c in cols)
        print(f"{k}: {v[0]} / {v[1]} ({v[0] - base[0]:+d}; {per})")


if __name__ == "__main__":
    main()
