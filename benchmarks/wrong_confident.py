"""Wrong edges shown at high confidence, listed and counted by cause (issue 12's "at most 5% of wrong edges at
confidence >= 0.8"; benchmarks/RESULTS.md, "Wrong edges at high confidence").

Each set (a folder of models with ``truth.json``: typed sets, stress sets, generalise collections) is recovered
with the defaults and scored edge by edge: an edge is right when the truth holds the same directed (parent,
child) pair, ``reversed`` when it holds the opposite one, ``misplaced`` otherwise. Every edge gets the evidence
kind that set its confidence (:func:`source_of`):

- a typed edge (a relation detector read it): its calibration kind (:func:`.calibration.kind_of`; a merge parent
  another relative contests is ``merge: contested parent``);
- a fine-tune skeleton edge: the counted source that replaced the fitted maps, when one did (``sole child cap``,
  ``near-tie rule``, ``tree on the prior``, ``tree beyond the radial share``), else ``fitted map``, suffixed with
  the weaker of its two parts (``placement`` or ``direction``).

Printed: every wrong edge at >= ``--low`` (0.8 by default) with its confidence, parts, kind and relation; a table
of wrong edges at >= 0.8 and >= 0.9 per kind, beside the right ones (what a lower confidence would cost); ECE and
AUROC per set, as :func:`mother_core.evaluate.evaluate` computes them.

    python benchmarks/wrong_confident.py --sets /work/data/typedc/seed{5,13}/typed --cache CACHE --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import evaluate, load_truth_edges  # noqa: E402
from mother_core.recovery.confidence import RADIAL_FLAG_CONFIDENCE, SOLE_CHILD_CONFIDENCE  # noqa: E402
from mother_core.recovery.result import Edge, Recovery  # noqa: E402
from mother_core.relations.calibration import CONTESTED, kind_of  # noqa: E402

HIGH = 0.8
SURE = 0.9


def source_of(edge: Edge, evidence: str, basis: str) -> str:
    """The evidence kind that set ``edge``'s confidence (module docstring); ``evidence`` is the typed link's
    evidence words, ``basis`` the direction basis of the edge's tree."""
    if edge.relation == "merge" and edge.parent_note:
        return CONTESTED
    if math.isfinite(edge.relation_confidence):
        return kind_of(edge.relation, edge.relation_detail, evidence)
    if abs(edge.confidence - SOLE_CHILD_CONFIDENCE) < 1e-9:
        return "sole child cap"
    if edge.tie_displaced is not None or edge.tie_lifted or edge.tie_spectral or edge.tie_kurtosis:
        return "near-tie rule"
    if basis == "prior":
        return "tree on the prior"
    if abs(edge.direction_confidence - RADIAL_FLAG_CONFIDENCE) < 1e-9:
        return "tree beyond the radial share"
    weak = "placement" if edge.placement_confidence <= edge.direction_confidence else "direction"
    return f"fitted map ({weak})"


def edge_rows(rec: Recovery, folder: Path) -> list[dict]:
    """One row per recovered edge: set, parent, child, relation, kind, confidence and parts, status."""
    truth = {(t.parent, t.child) for t in load_truth_edges(folder / "truth.json")}
    evidence: dict[str, str] = {}
    if rec.problem is not None:
        for link in rec.problem.links:
            evidence[rec.model_ids[int(link["child"])]] = str(link.get("evidence", ""))
    basis = {m: t.direction_basis for t in rec.trees for m in t.members}
    rows = []
    for e in rec.edges:
        status = ("right" if (e.parent, e.child) in truth else
                  "reversed" if (e.child, e.parent) in truth else "misplaced")
        rows.append({"set": str(folder), "parent": e.parent, "child": e.child, "relation": e.relation,
                     "detail": e.relation_detail, "kind": source_of(e, evidence.get(e.child, ""),
                                                                    basis.get(e.child, "")),
                     "confidence": float(e.confidence), "placement": float(e.placement_confidence),
                     "direction": float(e.direction_confidence), "status": status,
                     "note": e.parent_note, "cues": dict(e.cues),
                     "votes": [e.layers_voting_forward, e.layers_voting_backward]})
    return rows


def _truth_graph(folder: Path) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    """The true parents of each child (parent, relation) and each model's recipe op (``root``, ``finetune``,
    ``merge``, ``lora`` ...), read from ``truth.json`` (its ``meta.models`` where the generator wrote one)."""
    data = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    parents: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for t in load_truth_edges(folder / "truth.json"):
        parents[t.child].append((t.parent, t.relation or "finetune"))
    models = data.get("meta", {}).get("models", {}) if isinstance(data.get("meta"), dict) else {}
    ops = {m: str(v.get("op", "")) for m, v in models.items()}
    return parents, ops


def cause_of(parent: str, child: str, relation: str, true_parents: dict[str, list[tuple[str, str]]],
             ops: dict[str, str], found: dict[str, list[str]]) -> str:
    """The cause of one wrong fine-tune edge or merge parent, read against the truth.

    ``parent -> child`` is the true edge of ``relation`` that was not recovered (``found`` maps each child to the
    parents the recovery gave it). Labels: the recipe step that made the true parent and the child, and where the
    child went: ``reversed`` (the child parents its true parent), ``under a sibling`` / ``under a sibling's
    descendant``, ``under its descendant``, ``level skipped`` (under the true parent's parent), ``under p's
    <op> child`` (a typed child of the true parent), ``read as a merge`` (a fine-tune given several parents),
    ``root`` (given none); for a merge parent also ``merge read with another parent`` (the true parent replaced
    by a relative: its ``parent``, ``child`` or other) and ``merge not read`` (the child has one parent).
    """
    def ancestors(m: str) -> list[str]:
        out, todo = [], [m]
        while todo:
            for q, _ in true_parents.get(todo.pop(), []):
                if q not in out:
                    out.append(q)
                    todo.append(q)
        return out

    def kin(a: str, b: str) -> str:
        if b in [q for q, _ in true_parents.get(a, [])]:
            return "parent"
        if a in [q for q, _ in true_parents.get(b, [])]:
            return "child"
        if b in ancestors(a):
            return "ancestor"
        if a in ancestors(b):
            return "descendant"
        pa = {q for q, _ in true_parents.get(a, [])}
        pb = {q for q, _ in true_parents.get(b, [])}
        if pa & pb:
            return "sibling"
        if any(q in pa for q in ancestors(b)) or any(pa & {x for x, _ in true_parents.get(y, [])}
                                                     for y in ancestors(b)):
            return "sibling's descendant"
        return "unrelated" if not (set(ancestors(a)) & set(ancestors(b) + [b])) else "cousin"

    got = found.get(child, [])
    steps = f"{ops.get(parent, '?')} -> {ops.get(child, '?')}"
    if relation == "merge":
        if parent in got:
            return f"{steps}: right"
        if len(got) <= 1:
            where = kin(child, got[0]) if got else "none"
            return f"{steps}: merge not read (one parent, its {where})"
        others = [kin(parent, g) for g in got if g not in [q for q, _ in true_parents.get(child, [])]]
        return f"{steps}: merge read with another parent (the true one's {', '.join(sorted(others)) or '?'})"
    if parent in found.get(child, []):
        return f"{steps}: right"
    if child in found.get(parent, []):
        return f"{steps}: reversed"
    if not got:
        return f"{steps}: made a root"
    if len(got) > 1:
        return f"{steps}: read as a merge"
    g = got[0]
    if parent in [q for q, _ in true_parents.get(g, [])] and ops.get(g) not in ("finetune", "root"):
        return f"{steps}: under the parent's {ops.get(g)} child"
    if g in [q for q, _ in true_parents.get(parent, [])]:
        return f"{steps}: level skipped"
    where = {"child": "under its child (a chain in the other order)", "descendant": "under its descendant",
             "ancestor": "under a farther ancestor", "sibling": "under a sibling",
             "sibling's descendant": "under a sibling's descendant"}
    k = kin(child, g)
    return f"{steps}: {where.get(k, 'under a ' + k + ' model')} ({ops.get(g, '?')})"


def missed_rows(rec: Recovery, folder: Path) -> list[dict]:
    """One row per true fine-tune edge or merge parent the recovery did not give, with its cause
    (:func:`cause_of`); the wrong recovered edges get their cause in :func:`edge_rows`."""
    true_parents, ops = _truth_graph(folder)
    found: dict[str, list[str]] = defaultdict(list)
    for e in rec.edges:
        found[e.child].append(e.parent)
    rows = []
    for child, ps in true_parents.items():
        for parent, relation in ps:
            if relation not in ("finetune", "merge") or parent in found.get(child, []):
                continue
            rows.append({"set": str(folder), "parent": parent, "child": child, "relation": relation,
                         "status": "missed", "found": found.get(child, []),
                         "cause": cause_of(parent, child, relation, true_parents, ops, found)})
    return rows


def run_set(folder: Path, cache: Path | None, settings: RecoverySettings,
            save: Path | None = None) -> tuple[list[dict], dict]:
    """Recover ``folder`` and return its edge rows (with the missed true fine-tune edges and merge parents) and
    its scores (ECE, AUROC, wrong among edges at >= 0.8); ``save`` keeps the recovery as JSON."""
    t0 = time.time()
    stats = compute_statistics(discover([folder]), device="cpu", cache_dir=cache)
    rec = recover(stats, settings)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        rec.save(save / f"{label(str(folder)).replace('/', '_')}.json")
    ev = evaluate(rec, load_truth_edges(folder / "truth.json"))
    score = {"set": str(folder), "edges": ev.n_recovered_edges, "right": ev.n_correct,
             "ece": ev.expected_calibration_error, "auroc": ev.confidence_auroc,
             "high": ev.n_confident, "high_wrong": ev.n_confident_wrong, "seconds": time.time() - t0}
    return edge_rows(rec, folder) + missed_rows(rec, folder), score


def label(folder: str) -> str:
    """A short name of a set: its seed folder (typed sets) or its own folder."""
    p = Path(folder)
    return f"{p.parent.parent.name}/{p.parent.name}" if p.name == "typed" else p.name


def report(rows: list[dict], scores: list[dict], low: float) -> None:
    """Print the wrong edges at >= ``low``, the counts per kind, the missed fine-tune edges and merge parents by
    cause, and the scores per set."""
    missed = [r for r in rows if r["status"] == "missed"]
    rows = [r for r in rows if r["status"] != "missed"]
    causes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in missed:
        causes[(r["relation"], r["cause"])].append(f"{label(r['set'])} {r['parent']}->{r['child']}")
    print("Missed true fine-tune edges and merge parents, by cause:")
    for (relation, cause), cases in sorted(causes.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        print(f"  {relation} | {cause} | {len(cases)} | {'; '.join(cases)}")
    print(f"Wrong edges at confidence >= {low}:")
    for r in sorted((r for r in rows if r["status"] != "right" and r["confidence"] >= low),
                    key=lambda r: -r["confidence"]):
        print(f"  {label(r['set'])} {r['parent']} -> {r['child']} {r['status']} {r['relation']} [{r['kind']}] "
              f"{r['confidence']:.3f} (placement {r['placement']:.3f}, direction {r['direction']:.3f}) "
              f"{r['detail'][:60]}")
    table: dict[str, list[int]] = defaultdict(lambda: [0] * 6)
    for r in rows:
        t = table[r["kind"]]
        wrong = r["status"] != "right"
        t[0] += 1
        t[1] += wrong
        t[2] += wrong and r["confidence"] >= HIGH
        t[3] += wrong and r["confidence"] >= SURE
        t[4] += (not wrong) and r["confidence"] >= HIGH
        t[5] += r["status"] == "reversed" and r["confidence"] >= HIGH
    print("\n| kind | edges | wrong | wrong at >= 0.8 | of them reversed | wrong at >= 0.9 | right at >= 0.8 |")
    print("|---|---|---|---|---|---|---|")
    for kind, (n, w, w8, w9, r8, rev) in sorted(table.items(), key=lambda kv: (-kv[1][2], kv[0])):
        print(f"| {kind} | {n} | {w} | {w8} | {rev} | {w9} | {r8} |")
    tot = [sum(t[i] for t in table.values()) for i in range(6)]
    print(f"| all | {tot[0]} | {tot[1]} | {tot[2]} | {tot[5]} | {tot[3]} | {tot[4]} |")
    print("\n| set | edges | right | ECE | AUROC | wrong at >= 0.8 | s |")
    print("|---|---|---|---|---|---|---|")
    for s in scores:
        print(f"| {label(s['set'])} | {s['edges']} | {s['right']} | {s['ece']:.3f} | {s['auroc']:.2f} | "
              f"{s['high_wrong']} of {s['high']} | {s['seconds']:.0f} |")
    high = sum(s["high"] for s in scores)
    wrong = sum(s["high_wrong"] for s in scores)
    print(f"all: wrong at >= 0.8 {wrong} of {high} ({wrong / max(high, 1):.1%} of the edges at >= 0.8; "
          f"{wrong} of {tot[1]} wrong edges, {wrong / max(tot[1], 1):.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", type=Path, required=True, help="set folders holding truth.json")
    ap.add_argument("--cache", type=Path, default=None, help="statistics cache folder")
    ap.add_argument("--json", type=Path, default=None, help="write every edge row and score here")
    ap.add_argument("--low", type=float, default=HIGH, help="list wrong edges at this confidence or more")
    ap.add_argument("--save", type=Path, default=None, help="keep each recovery (Recovery.save) in this folder")
    args = ap.parse_args()
    rows: list[dict] = []
    scores: list[dict] = []
    for folder in args.sets:
        mine, score = run_set(folder, args.cache, RecoverySettings(), args.save)
        rows += mine
        scores.append(score)
        print(f"  {label(str(folder))}: {score['edges']} edges, {score['seconds']:.0f} s", file=sys.stderr,
              flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps({"rows": rows, "scores": scores}))
    report(rows, scores, args.low)


if __name__ == "__main__":
    main()
