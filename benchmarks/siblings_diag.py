"""Fine-tune siblings read as chains: which wrong fine-tune edges they are, and what separates a chain from
siblings (issues 11 and 12; benchmarks/RESULTS.md, issue 12, "Siblings read as chains").

A diagnostic, no engine change. For each set (a folder with ``truth.json``: typed sets or generalise
collections) it recovers with the defaults and classifies every true fine-tune edge p -> c the engine
misses by where it put c: under a true sibling of c (``sibling-as-parent``: the siblings read as a chain),
under c's grandparent, a descendant of c, reversed (p under c), as a root, or elsewhere. ``--triples``
then reads every true triple of full fine-tunes, a chain p -> s -> c or siblings p -> {s, c}, and prints
how well each cue tells them apart (AUROC, siblings positive), on all triples and on the hard ones
(distance puts c nearer s than p):

- distance: log(d(s, c) / d(p, c)) (mean RMS over the skeleton layers);
- the excess kurtosis contrast k(W_c - W_s) - k(W_c - W_p) of the skeleton entries (mean over layers):
  under the chain W_c - W_s is one run, under the siblings W_c - W_p is;
- element-level co-moments of the two steps x = W_s - W_p and y = W_c - W_s (or y' = W_c - W_p): the
  correlation of x^2 and y^2, and sign agreement beyond what their correlation implies (arcsine law).

    python benchmarks/siblings_diag.py --cache /tmp/cache-x /tmp/typedc/seed5/typed ...
    python benchmarks/siblings_diag.py --triples --cache /tmp/cache-x benchmarks/_data/generalise/fit-fft ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import compute_statistics, discover, recover  # noqa: E402


def truth_edges(folder: Path) -> list[tuple[str, str, str]]:
    """(parent, child, relation) of a set's truth.json (generalise collections: every edge a fine-tune;
    merged LoRA trees there are told apart by their recipe, see :func:`recipes`)."""
    d = json.loads((folder / "truth.json").read_text())
    return [(e["parent"], e["child"], e.get("relation", "finetune")) if isinstance(e, dict)
            else (e[0], e[1], "finetune") for e in d["edges"]]


def recipes(folder: Path) -> dict[str, str]:
    """Model id -> generator recipe (generalise collections), empty for typed sets."""
    meta = json.loads((folder / "truth.json").read_text()).get("meta", {})
    return {m: t.get("recipe", "?") for t in meta.get("trees", []) for m in t.get("models", [])}


def classify(folder: Path, cache: Path | None) -> Counter:
    truth = truth_edges(folder)
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    pred = {e.child: e.parent for e in recover(stats).edges}
    kids: dict[str, list[str]] = {}
    parents: dict[str, set[str]] = {}
    for p, c, _ in truth:
        kids.setdefault(p, []).append(c)
        parents.setdefault(c, set()).add(p)
    out: Counter = Counter()
    for p, c, rel in truth:
        if rel != "finetune":
            continue
        q = pred.get(c)
        if q == p:
            kind = "right"
        elif q is None:
            kind = "root"
        elif pred.get(p) == c:
            kind = "reversed"
        elif q in kids.get(p, []):
            kind = "sibling-as-parent"
        elif q in parents.get(p, set()):
            kind = "grandparent"
        elif q in kids.get(c, []) or any(q in kids.get(x, []) for x in kids.get(c, [])):
            kind = "descendant"
        else:
            kind = "other"
        out[kind] += 1
        if kind != "right":
            print(f"    {kind}: true {p} -> {c}, recovered under {q}")
    return out


def _kurtosis(u: np.ndarray) -> float:
    u = u - u.mean()
    m2 = float((u * u).mean())
    return float((u ** 4).mean() / m2 ** 2 - 3.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def triples(folder: Path, cache: Path | None) -> list[dict]:
    truth = truth_edges(folder)
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    recipe = recipes(folder)
    kids: dict[int, list[int]] = {}
    for p, c, rel in truth:
        if rel == "finetune" and p in ix and c in ix and "lora" not in recipe.get(p, ""):
            kids.setdefault(ix[p], []).append(ix[c])
    cases = [(p, s, c, 1) for p, cs in kids.items() for s in cs for c in cs if c != s]
    cases += [(p, s, c, 0) for p, cs in kids.items() for s in cs for c in kids.get(s, [])]
    rows = []
    for p, s, c, sib in cases:
        per_layer = []
        for t, sk in stats.skeletons.items():
            w = sk[[p, s, c]].astype(np.float64).reshape(3, -1)
            x, y, y2 = w[1] - w[0], w[2] - w[1], w[2] - w[0]
            if not np.isfinite(w).all() or w.shape[1] < 16 or not (x.any() and y.any() and y2.any()):
                continue
            sq = stats.sq_dist[t] / stats.numel[t]
            cxy, cxy2 = _corr(x, y), _corr(x, y2)
            per_layer.append((np.sqrt(sq[s, c]), np.sqrt(sq[p, c]), _kurtosis(y) - _kurtosis(y2),
                              _corr(x * x, y2 * y2) - _corr(x * x, y * y),
                              float(np.mean(np.sign(x) == np.sign(y2))) - (0.5 + np.arcsin(cxy2) / np.pi)
                              - float(np.mean(np.sign(x) == np.sign(y))) + (0.5 + np.arcsin(cxy) / np.pi)))
        if len(per_layer) >= 2:
            a = np.array(per_layer).mean(axis=0)
            rows.append({"sib": sib, "hard": a[0] < a[1], "distance": float(np.log(a[0] / a[1])),
                         "kurtosis contrast": float(a[2]), "squares co-moment": float(a[3]),
                         "sign excess": float(a[4])})
    return rows


def auroc(score: list[float], positive: list[int]) -> float:
    s, lab = np.asarray(score), np.asarray(positive, dtype=bool)
    pos, neg = s[lab], s[~lab]
    if not len(pos) or not len(neg):
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--triples", action="store_true", help="the cue table over true triples instead")
    args = ap.parse_args()
    if not args.triples:
        total: Counter = Counter()
        for folder in args.sets:
            print(folder)
            counts = classify(folder, args.cache)
            print(f"  {dict(counts)}")
            total += counts
        print(f"all: {dict(total)}")
        return
    rows = [r for folder in args.sets for r in triples(folder, args.cache)]
    cues = ["distance", "kurtosis contrast", "squares co-moment", "sign excess"]
    print("| triples | n | siblings | " + " | ".join(cues) + " |")
    print("|---|---|---|" + "---|" * len(cues))
    for name, sel in (("all", rows), ("hard (d(s,c) < d(p,c))", [r for r in rows if r["hard"]])):
        print(f"| {name} | {len(sel)} | {sum(r['sib'] for r in sel)} | "
              + " | ".join(f"{auroc([r[k] for r in sel], [r['sib'] for r in sel]):.2f}" for k in cues) + " |")


if __name__ == "__main__":
    main()
