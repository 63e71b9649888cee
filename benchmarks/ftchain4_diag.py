"""Does the spectral sibling lift reach the fine-tune skeleton of typed sets, and what would it do there?
(issue 11; benchmarks/RESULTS.md, "Fine-tune edges of typed sets, fourth pass (branch ftchain4)").

A diagnostic, no engine change. For each typed set (a folder with ``truth.json``) it recovers with the
defaults and reads every recovered fine-tune chain q -> s -> c (both edges fine-tunes, each child with
one parent): the truth says it is a chain (c's parent is s), siblings read as a chain (c's parent is q:
what :func:`mother_core.recovery.ties.lift_by_spectrum` lifts) or other. For each it prints how the
chain's tree was placed (``dist``: by distance, where the near-tie rules and the spectral lift run;
``rank``: by the rank distance of merged-LoRA trees, :func:`mother_core.recovery.recover._placement_distance`,
where they do not) and the spectral contrast log er(W_c - W_s) - log er(W_c - W_q)
(:func:`mother_core.recovery.ties.spectral_contrast`). In rank-placed trees the engine keeps no spectra,
so they are computed here with the engine's own :func:`mother_core.recovery.ties.tree_tie_spectra` on the
recovery's own pair evidence and candidate parents (captured while it runs): the answer to "what would
the lift do if it ran there".

Printed: the chains that are not plain right chains; per placement, the chains by truth, the AUROC of
the contrast (siblings against chains) and, per margin, how many siblings a lift would fix, right chains
it would break and other chains it would move; last, every reversed fine-tune edge with the typed
children (adapters, LoRAs, copies, merges) each end holds in the recovery (does the family's typed
graph name the root?) and whether the true parent is the base of a merge the engine found with it among its
parents (an oracle: the base is read from the generator's ``truth.json`` meta, which the engine never sees).
Also the true fine-tune edges right per placement of their tree.

    python benchmarks/ftchain4_diag.py --cache /tmp/ftchain4/cache /work/data/typedc/seed5/typed ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mother_core.recovery.recover as engine  # noqa: E402
from mother_core import RecoverySettings, compute_statistics, discover  # noqa: E402
from mother_core.recovery.additive import MAX_TREE  # noqa: E402
from mother_core.recovery.ties import spectral_contrast, tree_tie_spectra  # noqa: E402
from mother_core.relations.evidence import TypedLink  # noqa: E402

MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2)
#: (placement of the child's tree, right) -> true fine-tune edges, over all sets read
PLACED: Counter = Counter()


def recover_with_rank_spectra(folder: Path, cache: Path | None) -> tuple:
    """The default recovery of ``folder`` and every skeleton member's spectra, rank-placed trees included."""
    seen: dict = {}
    placement, margins = engine._placement_distance, engine.layer_margins

    def spy_placement(stats, mask, ev, members, settings, typed=frozenset()):  # type: ignore[no-untyped-def]
        seen["ev"] = ev
        out = placement(stats, mask, ev, members, settings, typed)
        if out is not None:
            seen.setdefault("rank", []).append(np.asarray(members))
        return out

    def spy_margins(rms, cost, *args):  # type: ignore[no-untyped-def]
        seen["margins"] = margins(rms, cost, *args)
        return seen["margins"]

    engine._placement_distance, engine.layer_margins = spy_placement, spy_margins
    try:
        stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
        rec = engine.recover(stats, RecoverySettings())
    finally:
        engine._placement_distance, engine.layer_margins = placement, margins
    assert rec.problem is not None
    links = [TypedLink.from_dict(dict(d)) for d in rec.problem.links]
    typed = {k.child for k in links if k.relation.value not in ("lora", "prune", "distill")}  # as recover does
    spectra = dict(rec.problem.tie_spectra)
    rank_models: set[int] = set()
    for members in seen.get("rank", []):
        core = np.array([g for g in members if int(g) not in typed], dtype=int)
        rank_models |= {int(g) for g in members}
        if 3 <= len(core) <= MAX_TREE:
            spectra.update(tree_tie_spectra(stats, seen["ev"], core, seen["margins"]))
    return rec, spectra, rank_models


def chain_rows(folder: Path, cache: Path | None) -> tuple[list[tuple], list[str]]:
    """Every recovered fine-tune chain of one set with its truth label, placement and contrast; and the
    reversed fine-tune edges with each end's typed children."""
    truth = json.loads((folder / "truth.json").read_text())
    rec, spectra, rank_models = recover_with_rank_spectra(folder, cache)
    assert rec.problem is not None
    ids = list(rec.problem.ids)
    ix = {m: i for i, m in enumerate(ids)}
    true_ft = {(e["parent"], e["child"]) for e in truth["edges"] if (e.get("relation") or "finetune") == "finetune"}
    first = {}
    for e in rec.edges:
        first.setdefault(e.child, e)
    rows = []
    for c, e in first.items():
        up = first.get(e.parent)
        if e.relation != "finetune" or up is None or up.relation != "finetune":
            continue
        s, q = e.parent, up.parent
        label = "chain" if (s, c) in true_ft else "sib" if (q, c) in true_ft else "other"
        spec = spectra.get(ix[c])
        contrast = spectral_contrast(spec, ix[s], ix[q]) if spec is not None else math.nan
        rows.append((folder.parent.name, c, s, q, label, "rank" if ix[c] in rank_models else "dist", contrast,
                     e.confidence))
    pairs = {(e.parent, e.child) for e in rec.edges}
    for p, c in true_ft:  # table 1: fine-tune edges right per placement of their tree
        PLACED[("rank" if ix[c] in rank_models else "dist", (p, c) in pairs)] += 1
    # the oracle bound of section 3: the base of each base-type merge, from the generator's meta (its index)
    meta = truth.get("meta", {}).get("models", {})
    names = list(meta)
    merge_parents = {ids[k.child]: {ids[q] for q in k.parents} for k in map(lambda d: TypedLink.from_dict(dict(d)),
                                                                          rec.problem.links)
                     if k.relation.value == "merge"}
    bases = {m: names[v["params"]["base"]] for m, v in meta.items()
             if v.get("op") == "merge" and isinstance(v.get("params", {}).get("base"), int)
             and v["params"]["base"] < len(names)}
    reversed_rows = []
    for p, c in sorted(true_ft):
        if (c, p) in pairs:
            kids = [Counter(e.relation for e in rec.edges if e.parent == x and e.relation != "finetune")
                    for x in (p, c)]
            reversed_rows.append(f"{folder.parent.name} {p} -> {c} read reversed; typed children: parent "
                                 f"{dict(kids[0])} ({sum(kids[0].values())}), child {dict(kids[1])} "
                                 f"({sum(kids[1].values())}); the parent is the base of a found merge: "
                                 f"{any(b == p and p in merge_parents.get(m, ()) for m, b in bases.items())}")
    return rows, reversed_rows


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive reads above a negative), ties half."""
    if not len(pos) or not len(neg):
        return math.nan
    return float(((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                 / (len(pos) * len(neg)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    rows, reversed_rows = [], []
    for folder in args.sets:
        r, rev = chain_rows(folder, args.cache)
        rows += r
        reversed_rows += rev
        print(f"{folder}: {len(r)} recovered fine-tune chains", flush=True)
    print("\n| set | c | s | q | truth | placed by | contrast | confidence of s -> c |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r[4] != "chain" or not math.isfinite(r[6]):
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.3f} | {r[7]:.2f} |")
    print("\n| placed by | chains (chain / sib / other) | no contrast | AUROC sib vs chain | "
          + " | ".join(f"> {m}: sib fixed / chain broken / other moved" for m in MARGINS) + " |")
    print("|---|---|---|---|" + "---|" * len(MARGINS))
    for placed in ("dist", "rank"):
        sub = [r for r in rows if r[5] == placed]
        con = {k: np.array([r[6] for r in sub if r[4] == k and math.isfinite(r[6])]) for k in ("chain", "sib", "other")}
        missing = sum(1 for r in sub if not math.isfinite(r[6]))
        cells = [f"{int((con['sib'] > m).sum())} / {int((con['chain'] > m).sum())} / {int((con['other'] > m).sum())}"
                 for m in MARGINS]
        counts = " / ".join(str(sum(1 for r in sub if r[4] == k)) for k in ("chain", "sib", "other"))
        area = auroc(con["sib"], con["chain"])
        print(f"| {placed} | {counts} | {missing} | {area:.2f} | " + " | ".join(cells) + " |")
    print("\nTrue fine-tune edges right, by the placement of their tree: "
          + ", ".join(f"{k} {PLACED[(k, True)]} of {PLACED[(k, True)] + PLACED[(k, False)]}" for k in ("dist", "rank")))
    print("\nReversed fine-tune edges:")
    print("\n".join(reversed_rows) or "none")


if __name__ == "__main__":
    main()
