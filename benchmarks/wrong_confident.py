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

Near copies (benchmarks/RESULTS.md, "Fine-tune edges of typed sets, sixth pass"): profile D draws fine-tune
learning rates over two orders of magnitude (``mother_zoo/typed/plan.py``), so some fine-tunes barely move
from their parent. Every missed fine-tune edge also gets the recipe of its ends (learning rate x steps, the
task kinds ``_narrow_task`` drew) and, where the recovery hung the child on a model within a near copy's step
of the true parent (:data:`NEAR_COPY`), a ``near-copy tie`` mark with the task kinds the child shares with
that model. :func:`near_copy_triples` reads every true triple r -> nc (a near copy), c a fine-tune of r or of
nc, and the distance statistic that decides it; :func:`near_copy_ties` the recovered edges whose parent has
a near copy about as near the child (what their confidence says against how often they are right).

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import evaluate, load_truth_edges  # noqa: E402
from mother_core.recovery.confidence import RADIAL_FLAG_CONFIDENCE, SOLE_CHILD_CONFIDENCE  # noqa: E402
from mother_core.recovery.result import Edge, Recovery  # noqa: E402
from mother_core.relations.calibration import CONTESTED, kind_of  # noqa: E402

HIGH = 0.8
SURE = 0.9
#: A model is a near copy of another, for a third model c, when the step between the two is under this share
#: of their distances to c (a label of the diagnostic, not of the engine: at 0.25 the two distances to c
#: differ by at most about 3% under orthogonal steps, well inside what correlated siblings move them).
NEAR_COPY = 0.25
#: The recipe ops of trained models (``mother_zoo/typed/plan.py``): the relatives a near copy is measured against.
TRAINED = ("root", "finetune", "vocab", "classify")
#: Two candidate parents of c are tied when the farther is at most this much farther (relative).
TIE = 0.05


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
    parents: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for t in load_truth_edges(folder / "truth.json"):
        parents[t.child].append((t.parent, t.relation or "finetune"))
    ops = {m: str(v.get("op", "")) for m, v in _truth_models(folder).items()}
    return parents, ops


def _truth_models(folder: Path) -> dict[str, dict]:
    """``truth.json``'s ``meta.models`` (each model's recipe, as the typed generator writes it), or {}."""
    data = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    return data.get("meta", {}).get("models", {}) if isinstance(data.get("meta"), dict) else {}


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


def recipes(folder: Path) -> dict[str, dict]:
    """Each model's recipe from ``truth.json``'s ``meta.models``: op, learning rate, steps and the task kinds
    it was trained on (``mother_zoo/typed/plan.py``); empty where the generator wrote none."""
    out = {}
    for m, v in _truth_models(folder).items():
        params = v.get("params", {}) or {}
        task = params.get("task", {}) if isinstance(params.get("task"), dict) else {}
        out[m] = {"op": str(v.get("op", "")), "lr": params.get("lr"), "steps": params.get("steps"),
                  "tasks": tuple(task.get("tasks", ()))}
    return out


def recipe_words(r: dict) -> str:
    """``finetune lr 1.2e-04 x 17 [dyck/markov]``: what made one model, in a listing's words."""
    lr = f" lr {r['lr']:.1e} x {r['steps']}" if isinstance(r.get("lr"), float) else ""
    return f"{r.get('op', '?')}{lr} [{'/'.join(r.get('tasks', ()))}]"


def near_copy_mark(p: str, c: str, got: list[str], flipped: bool, dist: np.ndarray | None,
                   ix: dict[str, int], rec_of: dict[str, dict]) -> str:
    """A near copy in a missed fine-tune edge ``p -> c`` (the recovery gave ``c`` the parents ``got``;
    ``flipped``: it made ``c`` ``p``'s parent, or a root), on the recovery's distances (:data:`NEAR_COPY`);
    empty where none is involved:

    - ``near-copy tie``: ``c`` hung on a model ``g`` within a near copy's step of ``p`` (a near copy of ``p``, or
      ``p`` of it), which the distances to ``c`` cannot tell apart; with the task kinds ``c`` shares with ``g``;
    - ``the child's near copy above it``: ``c`` hung on its own near copy (a chain in the other order);
    - ``a near-copy step reversed``: ``c`` made ``p``'s parent or a root while its step from ``p`` is small next
      to either's nearest other relative (which of the two came first).
    """
    if dist is None or p not in ix or c not in ix:
        return ""
    d_pc = dist[ix[p], ix[c]]
    if len(got) == 1 and got[0] in ix and got[0] != p:
        g = got[0]
        d_pg, d_gc = dist[ix[p], ix[g]], dist[ix[g], ix[c]]
        if d_pg < NEAR_COPY * min(d_pc, d_gc):
            shared = sorted(set(rec_of.get(c, {}).get("tasks", ())) & set(rec_of.get(g, {}).get("tasks", ())))
            return (f" (near-copy tie: step {d_pg / min(d_pc, d_gc):.3f} of the child's, D(true) {d_pc:.4g} "
                    f"D(found) {d_gc:.4g}; shares {len(shared)} task kinds with the model found)")
        if d_gc < NEAR_COPY * d_pc:
            return f" (the child's near copy above it: step {d_gc / d_pc:.3f} of the child's)"
    # Copies, quantized files and adapters sit at ~0 from their source: only trained models are relatives here.
    others = [min(dist[ix[p], j], dist[ix[c], j]) for m, j in ix.items()
              if m not in (p, c) and rec_of.get(m, {}).get("op") in TRAINED]
    nearest = min((d for d in others if np.isfinite(d) and d > 0), default=np.inf)
    if flipped and d_pc < NEAR_COPY * nearest:
        return f" (a near-copy step reversed: step {d_pc / nearest:.3f} of the nearest other relative's)"
    return ""


def missed_rows(rec: Recovery, folder: Path) -> list[dict]:
    """One row per true fine-tune edge or merge parent the recovery did not give, with its cause
    (:func:`cause_of`), the recipes of the true parent, the child and the parent found, and for a fine-tune
    its near-copy mark (:func:`near_copy_mark`); the wrong recovered edges get their cause in
    :func:`edge_rows`."""
    true_parents, ops = _truth_graph(folder)
    rec_of = recipes(folder)
    dist = rec.distance_matrix
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    found: dict[str, list[str]] = defaultdict(list)
    for e in rec.edges:
        found[e.child].append(e.parent)
    rows = []
    for child, ps in true_parents.items():
        for parent, relation in ps:
            if relation not in ("finetune", "merge") or parent in found.get(child, []):
                continue
            got = found.get(child, [])
            flipped = not got or child in found.get(parent, [])
            near = near_copy_mark(parent, child, got, flipped, dist, ix, rec_of) if relation == "finetune" else ""
            rows.append({"set": str(folder), "parent": parent, "child": child, "relation": relation,
                         "status": "missed", "found": got,
                         "cause": cause_of(parent, child, relation, true_parents, ops, found),
                         "near_copy": near, "recipe": " / ".join(recipe_words(rec_of.get(m, {}))
                                                                 for m in (parent, child, *got[:1]))})
    return rows


def near_copy_t(d_rc: float, d_nc: float, d_rn: float) -> float:
    """t = x.u / |u|^2 for nc = r + u and c = r + x, from the three distances D(r, c), D(nc, c), D(r, nc)
    (the law of cosines): 0 for an update orthogonal to u (a sibling), 1 for u plus one (a child of nc); the
    distances hang c on nc exactly when t > 1/2."""
    return float((d_rc ** 2 + d_rn ** 2 - d_nc ** 2) / (2 * d_rn ** 2))


def near_copy_triples(rec: Recovery, folder: Path) -> list[dict]:
    """Every true triple of fine-tunes r -> nc, c where nc is a near copy of r (:data:`NEAR_COPY`) and c a
    fine-tune of r (nc's sibling) or of nc (its child), with the statistic that decides c's place by distance.

    With nc = r + u and c's offset x = W_c - r, D(nc, c)^2 - D(r, c)^2 = |u|^2 (1 - 2 t), t = x.u / |u|^2: the
    distances hang c on nc exactly when t > 1/2. Orthogonal updates give t = 0 for a sibling and t = 1 for a
    child; siblings trained on shared task kinds (``_narrow_task`` draws 2-3 of 8 per fine-tune) move along u
    as a child does. Computed on the recovery's distances (l_FT), each row with the task kinds c shares with
    nc and whether the recovery gave c its true parent.
    """
    dist = rec.distance_matrix
    if dist is None:
        return []
    rec_of = recipes(folder)
    true_parents, _ = _truth_graph(folder)
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    tuned = {c: ps[0][0] for c, ps in true_parents.items()
             if len(ps) == 1 and ps[0][1] == "finetune" and c in ix and ps[0][0] in ix}
    got = {e.child: e.parent for e in rec.edges}
    rows = []
    for nc, r in tuned.items():
        for c, p in tuned.items():
            if c == nc or p not in (r, nc) or not dist[ix[r], ix[nc]] > 0:
                continue
            d_rc, d_nc = dist[ix[r], ix[c]], dist[ix[nc], ix[c]]
            if not dist[ix[r], ix[nc]] < NEAR_COPY * min(d_rc, d_nc):
                continue
            shared = set(rec_of.get(c, {}).get("tasks", ())) & set(rec_of.get(nc, {}).get("tasks", ()))
            rows.append({"set": str(folder), "r": r, "nc": nc, "c": c, "kind": "sibling" if p == r else "child",
                         "t": near_copy_t(d_rc, d_nc, dist[ix[r], ix[nc]]), "shared": len(shared),
                         "placed": "right" if got.get(c) == p else "on the other" if got.get(c) in (r, nc)
                         else "elsewhere"})
    return rows


def near_copy_ties(rec: Recovery, folder: Path) -> list[dict]:
    """The recovered fine-tune edges q -> c with a near-tied candidate a (at most :data:`TIE` farther from c)
    that is a near copy of q or q of it (:data:`NEAR_COPY`): their confidence and whether they are right."""
    dist = rec.distance_matrix
    if dist is None:
        return []
    truth = {(t.parent, t.child) for t in load_truth_edges(folder / "truth.json")}
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    rows = []
    for e in rec.edges:
        if e.relation != "finetune" or e.parent not in ix or e.child not in ix:
            continue
        d = dist[ix[e.parent], ix[e.child]]
        tied = [a.parent for a in e.alternatives if a.parent in ix and a.parent != e.parent
                and dist[ix[a.parent], ix[e.child]] <= (1 + TIE) * d
                and dist[ix[e.parent], ix[a.parent]] < NEAR_COPY * d]
        if tied:
            rows.append({"set": str(folder), "parent": e.parent, "child": e.child, "tied": tied,
                         "confidence": float(e.confidence), "right": (e.parent, e.child) in truth,
                         "tied_true": any((a, e.child) in truth for a in tied)})
    return rows


def run_set(folder: Path, cache: Path | None, settings: RecoverySettings,
            save: Path | None = None, saved: Path | None = None) -> tuple[list[dict], dict]:
    """Recover ``folder`` and return its edge rows (with the missed true fine-tune edges and merge parents, the
    near-copy triples and ties: :func:`near_copy_triples`, :func:`near_copy_ties`) and its scores (ECE, AUROC,
    wrong among edges at >= 0.8); ``save`` keeps the recovery as JSON, ``saved`` (a folder ``save`` wrote) reads
    it back instead of recovering (a listing of an earlier run, same rows)."""
    t0 = time.time()
    if saved is not None:
        rec = Recovery.load(saved / f"{label(str(folder)).replace('/', '_')}.json")
    else:
        rec = recover(compute_statistics(discover([folder]), device="cpu", cache_dir=cache), settings)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        rec.save(save / f"{label(str(folder)).replace('/', '_')}.json")
    ev = evaluate(rec, load_truth_edges(folder / "truth.json"))
    score = {"set": str(folder), "edges": ev.n_recovered_edges, "right": ev.n_correct,
             "ece": ev.expected_calibration_error, "auroc": ev.confidence_auroc,
             "high": ev.n_confident, "high_wrong": ev.n_confident_wrong, "seconds": time.time() - t0}
    near = [{**r, "status": "near-copy triple"} for r in near_copy_triples(rec, folder)]
    near += [{**r, "status": "near-copy tie"} for r in near_copy_ties(rec, folder)]
    return edge_rows(rec, folder) + missed_rows(rec, folder) + near, score


def label(folder: str) -> str:
    """A short name of a set: its seed folder (typed sets) or its own folder."""
    p = Path(folder)
    return f"{p.parent.parent.name}/{p.parent.name}" if p.name == "typed" else p.name


def report(rows: list[dict], scores: list[dict], low: float) -> None:
    """Print the wrong edges at >= ``low``, the counts per kind, the missed fine-tune edges and merge parents by
    cause (the near-copy ties apart, with the recipes), the near-copy triples and ties, and the scores per set."""
    missed = [r for r in rows if r["status"] == "missed"]
    triples = [r for r in rows if r["status"] == "near-copy triple"]
    ties = [r for r in rows if r["status"] == "near-copy tie"]
    rows = [r for r in rows if r["status"] in ("right", "reversed", "misplaced")]
    causes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in missed:
        mark = str(r.get("near_copy", ""))
        tie = f" [{mark[2:mark.index(':')]}]" if mark else ""
        causes[(r["relation"], r["cause"] + tie)].append(f"{label(r['set'])} {r['parent']}->{r['child']}")
    print("Missed true fine-tune edges and merge parents, by cause:")
    for (relation, cause), cases in sorted(causes.items(), key=lambda kv: (kv[0][0], -len(kv[1]))):
        print(f"  {relation} | {cause} | {len(cases)} | {'; '.join(cases)}")
    print("Missed fine-tune edges, one by one (true parent / child / parent found):")
    for r in missed:
        if r["relation"] == "finetune":
            print(f"  {label(r['set'])} {r['parent']} -> {r['child']} (found {', '.join(r['found']) or 'none'}): "
                  f"{r['cause']}{r.get('near_copy', '')}; {r.get('recipe', '')}")
    print("\nNear-copy triples (r -> nc a near copy; c a fine-tune of r or of nc; distance hangs c on nc iff t > 1/2):")
    print("| c is nc's | task kinds shared with nc | triples | median t | t > 1/2 | placed right | on the other |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("sibling", "child"):
        for k in sorted({r["shared"] for r in triples if r["kind"] == kind}):
            sel = [r for r in triples if r["kind"] == kind and r["shared"] == k]
            print(f"| {kind} | {k} | {len(sel)} | {float(np.median([r['t'] for r in sel])):+.2f} | "
                  f"{sum(r['t'] > 0.5 for r in sel)} | {sum(r['placed'] == 'right' for r in sel)} | "
                  f"{sum(r['placed'] == 'on the other' for r in sel)} |")
    if ties:
        right = [r for r in ties if r["right"]]
        print(f"Near-copy ties among recovered fine-tune edges: {len(ties)}, right {len(right)} "
              f"({len(right) / len(ties):.0%}), the tied candidate true for {sum(r['tied_true'] for r in ties)}; "
              f"mean confidence {float(np.mean([r['confidence'] for r in ties])):.3f} (right "
              f"{float(np.mean([r['confidence'] for r in right] or [np.nan])):.3f}, wrong "
              f"{float(np.mean([r['confidence'] for r in ties if not r['right']] or [np.nan])):.3f}); "
              f"wrong at >= 0.8: {sum(r['confidence'] >= HIGH and not r['right'] for r in ties)}, "
              f"right at >= 0.8: {sum(r['confidence'] >= HIGH for r in right)}")
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
    ap.add_argument("--saved", type=Path, default=None,
                    help="read each recovery from this folder (what --save wrote) instead of recovering")
    args = ap.parse_args()
    rows: list[dict] = []
    scores: list[dict] = []
    for folder in args.sets:
        mine, score = run_set(folder, args.cache, RecoverySettings(), args.save, args.saved)
        rows += mine
        scores.append(score)
        print(f"  {label(str(folder))}: {score['edges']} edges, {score['seconds']:.0f} s", file=sys.stderr,
              flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps({"rows": rows, "scores": scores}))
    report(rows, scores, args.low)


if __name__ == "__main__":
    main()
