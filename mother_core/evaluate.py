"""Score a recovered Model Graph against a known one (docs/METHOD.md, "Task" and "Reported numbers").

- Edge accuracy as in the MoTHer paper (Horwitz, Shul & Hoshen 2024): correctly placed AND directed
  edges / ground-truth edges; plus the undirected variant (placement only) and root precision/recall.
- Calibration of the per-edge ``confidence`` (reliability table with equal-width bins and the expected
  calibration error of Naeini, Cooper & Hauskrecht 2015 / Guo et al. 2017).
- Forest recovery: the adjusted Rand index (Hubert & Arabie 1985) between recovered and true trees.

Truth file format (``mother evaluate result.json --truth truth.json``)::

    {"edges": [["parent-id", "child-id"], ...]}
    {"edges": [{"parent": "p", "child": "c", "relation": "merge"}, ...]}

(either shape, mixed freely; several parents per child allowed, as a merge has; ``relation`` is a
word of :class:`mother_core.relations.Relation`.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.special import comb
from scipy.stats import mannwhitneyu

from mother_core.errors import MotherError, ResultFormatError
from mother_core.io.filekind import MAX_JSON_BYTES, read_bytes_file
from mother_core.recovery.json_numbers import loads
from mother_core.recovery.result import Recovery, TreeInfo
from mother_core.relations.vocabulary import parse_relation
from mother_core.statuses import TRUTH_STATUSES, EdgeStatus
from mother_core.walk import components

__all__ = [
    "CalibrationBin",
    "Evaluation",
    "TruthEdge",
    "adjusted_rand_index",
    "edge_status",
    "evaluate",
    "format_evaluation",
    "load_truth",
    "load_truth_edges",
]

STATUSES = TRUTH_STATUSES  # the words: mother_core/statuses.py
#: Equal-width confidence bins of the calibration table and its expected calibration error (ECE); the
#: benchmarks' ECE columns say "5 bins, as ``mother evaluate``".
N_BINS = 5
#: The confidence a user reads as "sure": the issue's "share of wrong edges at >= 0.8".
CONFIDENT = 0.8

_TRUTH_HELP = ('A truth file is JSON like {"edges": [["parent-id", "child-id"], ...]} or {"edges": [{"parent": '
               '"p", "child": "c", "relation": "finetune"}, ...]} using the model ids of the result.')


# --------------------------------------------------------------------------------------------------
# truth
# --------------------------------------------------------------------------------------------------
class TruthEdge(NamedTuple):
    """One true edge; ``relation`` is a :class:`~mother_core.relations.Relation` word, or ``None`` where
    the truth file does not say."""

    parent: str
    child: str
    relation: str | None = None


def load_truth(path: str | Path) -> list[tuple[str, str]]:
    """Read the true edges (parent, child) from a truth JSON file (relations dropped).

    Parameters
    ----------
    path : str or Path
        A JSON file ``{"edges": [[parent, child], ...]}`` or
        ``{"edges": [{"parent": p, "child": c, "relation": r}, ...]}`` (see :func:`load_truth_edges`).

    Returns
    -------
    list of (str, str)
        The edges in file order, duplicates removed.

    Raises
    ------
    ResultFormatError
        As :func:`load_truth_edges`.
    """
    return list(dict.fromkeys((e.parent, e.child) for e in load_truth_edges(path)))


def load_truth_edges(path: str | Path) -> list[TruthEdge]:
    """Read the true edges with their relations from a truth JSON file.

    Two shapes are accepted, mixed freely within one list::

        {"edges": [["parent-id", "child-id"], ...]}
        {"edges": [{"parent": "p", "child": "c", "relation": "quantized"}, ...]}

    A child may have several parents (a merge lists one edge per parent). ``relation`` is optional
    and must be a word of :class:`~mother_core.relations.Relation` (docs/RELATIONS.md).

    Returns
    -------
    list of TruthEdge
        In file order, duplicates (same parent and child) removed, the first kept.

    Raises
    ------
    ResultFormatError
        The file is missing, not JSON, not of that shape, names an unknown relation, or its edges
        have a self-loop or a cycle; the message says how to fix it.
    """
    p = Path(path)
    try:
        data = loads(read_bytes_file(p, MAX_JSON_BYTES).decode("utf-8"))  # never a FIFO or /dev/zero
    except FileNotFoundError:
        raise ResultFormatError(f"Truth file {p} does not exist. {_TRUTH_HELP}", p) from None
    except (OSError, ValueError) as e:  # deep nesting, 5,000-digit ints: ValueErrors of loads (were tracebacks)
        raise ResultFormatError(f"Cannot read truth file {p}: {e}. {_TRUTH_HELP}", p) from e
    if not isinstance(data, dict) or not isinstance(data.get("edges"), list):
        raise ResultFormatError(f"Truth file {p} has no 'edges' list. {_TRUTH_HELP}", p)
    edges: dict[tuple[str, str], TruthEdge] = {}
    for i, raw in enumerate(data["edges"]):
        t = _truth_edge(raw, i, p)
        edges.setdefault((t.parent, t.child), t)
    out = list(edges.values())
    _check_acyclic(out, p)
    return out


def _truth_edge(raw: object, i: int, path: Path) -> TruthEdge:
    relation = None
    e = raw
    if isinstance(raw, dict) and "parent" in raw and "child" in raw:
        relation = raw.get("relation")
        e = [raw["parent"], raw["child"]]
    if not (isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(x, str) and x for x in e)):
        raise ResultFormatError(
            f"Truth file {path}: edge #{i} is {e!r}; each edge must be a pair of model ids [parent, child]. "
            + _TRUTH_HELP,
            path,
        )
    if relation is not None:
        try:
            relation = parse_relation(relation).value
        except MotherError as err:
            raise ResultFormatError(f"Truth file {path}: edge #{i}: {err}", path) from None
    return TruthEdge(e[0], e[1], relation)


def _check_acyclic(edges: Sequence[TruthEdge], path: Path | None) -> None:
    parents: dict[str, list[str]] = {}
    for e in edges:
        if e.parent == e.child:
            raise ResultFormatError(f"Truth edge ({e.parent!r}, {e.child!r}) is a self-loop; fix the truth file.", path)
        parents.setdefault(e.child, []).append(e.parent)
    done: set[str] = set()
    for start in parents:  # iterative depth-first search up the parent links
        if start in done:
            continue
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, k = stack.pop()
            if k == 0:
                if node in on_path:
                    raise ResultFormatError(f"The truth edges contain a cycle through {node!r}; fix the truth file.",
                                            path)
                if node in done:
                    continue
                on_path.add(node)
            ups = parents.get(node, [])
            if k < len(ups):
                stack.append((node, k + 1))
                stack.append((ups[k], 0))
            else:
                on_path.discard(node)
                done.add(node)


# --------------------------------------------------------------------------------------------------
# per-edge status and the evaluation
# --------------------------------------------------------------------------------------------------
def edge_status(recovery: Recovery, truth_edges: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Status of every recovered edge, plus the true edges the result lacks.

    Parameters
    ----------
    recovery : Recovery
    truth_edges : iterable of (str, str)
        True (parent, child) pairs.

    Returns
    -------
    dict
        Keys are (parent, child). Recovered edges map to ``"correct"`` (the same directed edge is
        true), ``"flipped"`` (the reverse edge is true) or ``"wrong"``; true edges recovered in
        neither direction map to ``"missing"``. A true edge found flipped is counted once, under the
        recovered key.
    """
    truth = {tuple(e) for e in truth_edges}
    out: dict[tuple[str, str], str] = {}
    for e in recovery.edges:
        key = (e.parent, e.child)
        status = (EdgeStatus.CORRECT if key in truth else EdgeStatus.FLIPPED if (e.child, e.parent) in truth
                  else EdgeStatus.WRONG)
        out[key] = status.value  # plain words in the result
    for p, c in sorted(truth):
        if (p, c) not in out and (c, p) not in out:
            out[(p, c)] = EdgeStatus.MISSING.value
    return out


class CalibrationBin(NamedTuple):
    """One row of the reliability table over recovered edges' ``confidence``."""

    lo: float
    hi: float
    n_edges: int
    mean_confidence: float  # NaN for an empty bin
    fraction_correct: float  # correctly placed and directed; NaN for an empty bin


@dataclass(frozen=True)
class Evaluation:
    """Scores of a recovery against the truth (see :func:`evaluate`).

    Ratios whose denominator is zero are NaN (printed as "n/a").
    """

    directed_accuracy: float
    undirected_accuracy: float
    root_precision: float
    root_recall: float
    n_truth_edges: int
    n_models: int
    n_recovered_edges: int
    n_correct: int
    n_flipped: int
    n_wrong: int
    n_missing: int
    n_undirected_correct: int
    calibration: tuple[CalibrationBin, ...]
    expected_calibration_error: float
    adjusted_rand_index: float
    models_not_in_result: tuple[str, ...] = ()  # truth models the result does not contain
    edge_status: dict[tuple[str, str], str] = field(default_factory=dict, compare=False)
    # Typed-graph scores, as MDGBench reports them (docs/METHOD.md, "Beyond fine-tune trees").
    edge_precision: float = math.nan  # correct directed edges / recovered edges (type-agnostic)
    edge_recall: float = math.nan  # correct directed edges / true edges (= directed_accuracy)
    edge_f1: float = math.nan
    reachability: float = math.nan  # mean share of each model's true descendants reachable in the result
    relation_accuracy: float = math.nan  # right relation among correct edges whose true relation is known
    n_relation_known: int = 0  # correct edges with a known true relation (relation_accuracy's denominator)
    # relation -> (true edges of that relation, recovered correctly (directed), recovered with that relation)
    per_relation: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    run_seconds: float = math.nan  # the recovery's own wall time (from the result)
    # Whether confidence tells right from wrong (issue 12): the AUROC of confidence for right-vs-wrong
    # recovered edges, and how many edges are given at least CONFIDENT and how many of those are wrong.
    confidence_auroc: float = math.nan
    n_confident: int = 0
    n_confident_wrong: int = 0


def evaluate(recovery: Recovery, truth_edges: Iterable[tuple[str, str]] | Iterable[TruthEdge]) -> Evaluation:
    """Score ``recovery`` against the true edges.

    Accuracy follows the MoTHer paper: ``directed_accuracy`` = correctly placed AND directed edges /
    true edges; ``undirected_accuracy`` counts placement only. Roots are the models without a parent,
    counted over the models present in both the result and the truth. Calibration bins the recovered
    edges by ``confidence`` into 5 equal-width bins (0-0.2, ..., 0.8-1.0) and compares the mean
    confidence with the fraction of correct edges; the expected calibration error is their
    edge-weighted mean absolute difference (Naeini et al. 2015; Guo et al. 2017). The forest is scored
    by :func:`adjusted_rand_index`.

    Typed graphs are scored as MDGBench does: directed-edge precision, recall and F1 over
    (parent, child) pairs whatever their relation (a merge child's edges count one per parent);
    reachability, the mean over models with true descendants of the share of those descendants
    reachable from the model along recovered edges; per-relation recall; and relation-type accuracy,
    the share of correctly recovered edges whose recovered relation is the true one (over edges whose
    truth file gives a relation).

    Parameters
    ----------
    recovery : Recovery
    truth_edges : iterable of (str, str) or TruthEdge
        True edges; :class:`TruthEdge` items (from :func:`load_truth_edges`) also carry relations.

    Returns
    -------
    Evaluation
    """
    typed = [e if isinstance(e, TruthEdge) else TruthEdge(str(e[0]), str(e[1])) for e in truth_edges]
    typed = list({(e.parent, e.child): e for e in reversed(typed)}.values())[::-1]  # first of duplicates
    truth: list[tuple[str, str]] = [(e.parent, e.child) for e in typed]
    status = edge_status(recovery, truth)
    counts = {s: sum(1 for v in status.values() if v == s) for s in STATUSES}
    n_truth = len(truth)
    bins, ece = _calibration(recovery, status)
    conf, right = _confidence_and_rightness(recovery, status)
    confident = conf >= CONFIDENT
    precision, recall = _root_scores(recovery, truth)
    truth_models = {m for e in truth for m in e}
    precision_e = _ratio(counts[EdgeStatus.CORRECT], len(recovery.edges))
    recall_e = _ratio(counts[EdgeStatus.CORRECT], n_truth)
    rel_known, rel_right, per_relation = _typed_scores(recovery, typed, status)
    return Evaluation(
        directed_accuracy=_ratio(counts[EdgeStatus.CORRECT], n_truth),
        undirected_accuracy=_ratio(counts[EdgeStatus.CORRECT] + counts[EdgeStatus.FLIPPED], n_truth),
        root_precision=precision,
        root_recall=recall,
        n_truth_edges=n_truth,
        n_models=len(recovery.models),
        n_recovered_edges=len(recovery.edges),
        n_correct=counts[EdgeStatus.CORRECT],
        n_flipped=counts[EdgeStatus.FLIPPED],
        n_wrong=counts[EdgeStatus.WRONG],
        n_missing=counts[EdgeStatus.MISSING],
        n_undirected_correct=counts[EdgeStatus.CORRECT] + counts[EdgeStatus.FLIPPED],
        calibration=bins,
        expected_calibration_error=ece,
        adjusted_rand_index=adjusted_rand_index(recovery, truth),
        models_not_in_result=tuple(sorted(truth_models - set(recovery.model_ids))),
        edge_status=status,
        edge_precision=precision_e,
        edge_recall=recall_e,
        edge_f1=_f1(precision_e, recall_e),
        reachability=_reachability(recovery, truth),
        relation_accuracy=_ratio(rel_right, rel_known),
        n_relation_known=rel_known,
        per_relation=per_relation,
        run_seconds=recovery.run_seconds,
        confidence_auroc=confidence_auroc(conf, right),
        n_confident=int(confident.sum()),
        n_confident_wrong=int((confident & ~right).sum()),
    )


def _f1(precision: float, recall: float) -> float:
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _typed_scores(recovery: Recovery, typed: Sequence[TruthEdge],
                  status: Mapping[tuple[str, str], str]) -> tuple[int, int, dict[str, tuple[int, int, int]]]:
    """(correct edges with a known true relation, of which the relation is right, per-relation counts)."""
    ours = {(e.parent, e.child): e.relation for e in recovery.edges}
    known = right = 0
    per: dict[str, list[int]] = {}
    for t in typed:
        found = status.get((t.parent, t.child)) == EdgeStatus.CORRECT
        rel = t.relation or "(unspecified)"
        row = per.setdefault(rel, [0, 0, 0])
        row[0] += 1
        row[1] += int(found)
        if found and t.relation is not None:
            known += 1
            hit = ours[(t.parent, t.child)] == t.relation
            right += int(hit)
            row[2] += int(hit)
    return known, right, {k: (v[0], v[1], v[2]) for k, v in sorted(per.items())}


def _reachability(recovery: Recovery, truth: Sequence[tuple[str, str]]) -> float:
    """Mean over models with true descendants of the share of them reachable in the recovered graph."""
    def closure(edges: Iterable[tuple[str, str]]) -> Mapping[str, set[str]]:
        children: dict[str, list[str]] = {}
        for p, c in edges:
            children.setdefault(p, []).append(c)
        memo: dict[str, set[str]] = {}
        for start in children:
            seen: set[str] = set()
            stack = list(children[start])
            while stack:
                x = stack.pop()
                if x not in seen:
                    seen.add(x)
                    stack.extend(children.get(x, ()))
            memo[start] = seen
        return memo

    true_desc = closure(truth)
    ours = closure((e.parent, e.child) for e in recovery.edges)
    shares = [len(d & ours.get(m, set())) / len(d) for m, d in true_desc.items() if d]
    return float(np.mean(shares)) if shares else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _root_scores(recovery: Recovery, truth: Sequence[tuple[str, str]]) -> tuple[float, float]:
    truth_models = {m for e in truth for m in e}
    common = [m for m in recovery.model_ids if m in truth_models]
    true_children = {c for _, c in truth}
    ours = {m for m in recovery.roots if m in truth_models}
    theirs = {m for m in common if m not in true_children}
    hits = len(ours & theirs)
    return _ratio(hits, len(ours)), _ratio(hits, len(theirs))


def _confidence_and_rightness(
    recovery: Recovery, status: Mapping[tuple[str, str], str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each recovered edge's confidence (clipped to [0, 1]) and whether it is correct; unscored edges left out."""
    conf = np.array([e.confidence for e in recovery.edges], dtype=np.float64)
    right = np.array([status[(e.parent, e.child)] == EdgeStatus.CORRECT for e in recovery.edges], dtype=bool)
    keep = np.isfinite(conf)
    return np.clip(conf[keep], 0.0, 1.0), right[keep]


def confidence_auroc(confidence: np.ndarray, right: np.ndarray) -> float:
    """The AUROC of confidence for right-vs-wrong edges (issue 12, "Confidence that knows what it doesn't know").

    The probability that a right edge, drawn at random, is given a higher confidence than a wrong one
    (ties count half): the Mann-Whitney U statistic over the number of pairs (Hanley and McNeil 1982).
    0.5 means confidence does not separate right from wrong at all.

    Parameters
    ----------
    confidence : numpy.ndarray
        One confidence per edge.
    right : numpy.ndarray of bool
        Whether each edge is right.

    Returns
    -------
    float
        NaN when every edge is right or every edge is wrong (nothing to separate).
    """
    right = np.asarray(right, dtype=bool)
    pos, neg = np.asarray(confidence, dtype=np.float64)[right], np.asarray(confidence, dtype=np.float64)[~right]
    if not len(pos) or not len(neg):
        return math.nan
    u = float(mannwhitneyu(pos, neg, alternative="two-sided", method="asymptotic").statistic)
    return u / (len(pos) * len(neg))


def _calibration(
    recovery: Recovery, status: Mapping[tuple[str, str], str]
) -> tuple[tuple[CalibrationBin, ...], float]:
    conf, right = _confidence_and_rightness(recovery, status)
    which = np.minimum((conf * N_BINS).astype(int), N_BINS - 1)  # 1.0 falls in the last bin
    bins, ece = [], 0.0
    for b in range(N_BINS):
        sel = which == b
        k = int(sel.sum())
        mean_c = float(conf[sel].mean()) if k else math.nan
        frac = float(right[sel].mean()) if k else math.nan
        if k:
            ece += k / conf.size * abs(mean_c - frac)
        bins.append(CalibrationBin(b / N_BINS, (b + 1) / N_BINS, k, mean_c, frac))
    return tuple(bins), (ece if conf.size else math.nan)


# --------------------------------------------------------------------------------------------------
# forest: adjusted Rand index
# --------------------------------------------------------------------------------------------------
def adjusted_rand_index(
    recovered_trees: Recovery | Sequence[TreeInfo] | Sequence[Iterable[str]] | Mapping[str, object],
    truth_edges: Iterable[tuple[str, str]],
) -> float:
    """Adjusted Rand index between the recovered trees and the true trees (Hubert & Arabie 1985).

    The true trees are the connected components of the truth edges; recovered models that no true
    edge mentions are single-model true trees. The index is computed over the recovered models
    (true-only models are ignored) from the contingency table, with ``scipy.special.comb``. 1 is a
    perfect match, about 0 is chance level. When both partitions are trivial and equal (everything
    in one tree, or every model alone) the index is 1.

    Parameters
    ----------
    recovered_trees : Recovery, sequence of TreeInfo, sequence of member lists, or mapping
        The recovered partition: a :class:`Recovery` (its trees are the connected components of its
        edges), ``TreeInfo`` objects or member lists (one per tree), or ``{model id: tree label}``.
    truth_edges : iterable of (str, str)

    Returns
    -------
    float
    """
    ours = _partition(recovered_trees)
    theirs = _components(list(ours), truth_edges)
    models = list(ours)
    if len(models) < 2:
        return 1.0
    a = _codes([ours[m] for m in models])
    b = _codes([theirs[m] for m in models])
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    index = comb(table, 2).sum()
    sum_a = comb(table.sum(1), 2).sum()
    sum_b = comb(table.sum(0), 2).sum()
    expected = sum_a * sum_b / comb(len(models), 2)
    top = (sum_a + sum_b) / 2
    if top == expected:
        return 1.0
    return float((index - expected) / (top - expected))


def _codes(labels: list[object]) -> np.ndarray:
    lookup: dict[object, int] = {}
    return np.array([lookup.setdefault(x, len(lookup)) for x in labels], dtype=np.int64)


def _partition(trees: Recovery | Sequence[TreeInfo | Iterable[str]] | Mapping[str, object]) -> dict[str, object]:
    if isinstance(trees, Recovery):
        return _components(trees.model_ids, [(e.parent, e.child) for e in trees.edges])
    if isinstance(trees, Mapping):
        return dict(trees)
    out: dict[str, object] = {}
    for i, t in enumerate(trees):
        members = t.members if isinstance(t, TreeInfo) else t
        if isinstance(members, str):
            raise ResultFormatError("Recovered trees must be lists of model ids, not single strings.")
        for m in members:
            out[m] = i
    return out


def _components(models: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, object]:
    """Tree label of every model: the connected components of the edges; unmentioned models stay alone."""
    return dict(components(models, edges))


# --------------------------------------------------------------------------------------------------
# text report
# --------------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    """``x`` as a percentage with one decimal; "n/a" for NaN."""
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}%"


def _shown(x: float, fmt: str = ".3f") -> str:
    """``x`` formatted for the report; "n/a" for NaN (a score with nothing to count)."""
    return "n/a" if math.isnan(x) else format(x, fmt)


def format_evaluation(ev: Evaluation, *, max_edges: int = 20) -> str:
    """A readable text report of an :class:`Evaluation` (what ``mother evaluate`` prints).

    Parameters
    ----------
    ev : Evaluation
    max_edges : int, optional
        How many flipped/wrong/missing edges to list.

    Returns
    -------
    str
    """
    n = ev.n_truth_edges
    lines = [
        f"Directed accuracy    {_pct(ev.directed_accuracy):>7}  ({ev.n_correct}/{n} true edges placed and directed)",
        f"Undirected accuracy  {_pct(ev.undirected_accuracy):>7}  ({ev.n_undirected_correct}/{n} placed)",
        f"Root precision       {_pct(ev.root_precision):>7}",
        f"Root recall          {_pct(ev.root_recall):>7}",
        f"Tree ARI             {_shown(ev.adjusted_rand_index):>7}  (family clustering)",
        f"Edge precision       {_pct(ev.edge_precision):>7}  (recovered edges that are true, any relation)",
        f"Edge recall          {_pct(ev.edge_recall):>7}",
        f"Edge F1              {_shown(ev.edge_f1):>7}",
        f"Reachability         {_pct(ev.reachability):>7}  (share of true descendants reachable)",
        f"Relation accuracy    {_pct(ev.relation_accuracy):>7}  ({ev.n_relation_known} correct edges with a "
        "known relation)",
        f"Run time             {_shown(ev.run_seconds, '.1f'):>7} s",
        f"Models               {ev.n_models} in result, {ev.n_recovered_edges} recovered edges",
        f"Edges                correct {ev.n_correct}, flipped {ev.n_flipped}, wrong {ev.n_wrong}, "
        f"missing {ev.n_missing}",
    ]
    if ev.models_not_in_result:
        shown = ", ".join(ev.models_not_in_result[:10])
        more = f" (+{len(ev.models_not_in_result) - 10} more)" if len(ev.models_not_in_result) > 10 else ""
        lines.append(f"Not in result        {shown}{more}")
    if ev.per_relation:
        lines += ["", "Per relation (true edges)",
                  f"  {'relation':<14} {'edges':>5}  {'recall':>7}  {'typed right':>11}"]
        for rel, (k, found, typed_ok) in ev.per_relation.items():
            lines.append(f"  {rel:<14} {k:>5}  {_pct(_ratio(found, k)):>7}  {typed_ok:>11}")
    lines += ["", "Calibration (recovered edges by confidence)",
              f"  {'confidence':<11} {'edges':>5}  {'mean conf':>9}  {'correct':>7}"]
    for b in ev.calibration:
        lines.append(f"  {b.lo:.1f}-{b.hi:.1f}     {b.n_edges:>5}  {_shown(b.mean_confidence):>9}  "
                     f"{_shown(b.fraction_correct):>7}")
    lines.append(f"  expected calibration error: {_shown(ev.expected_calibration_error)}")
    lines.append(f"  AUROC of confidence, right vs wrong: {_shown(ev.confidence_auroc, '.2f')}")
    lines.append(f"  wrong among edges at >= {CONFIDENT}: {ev.n_confident_wrong} of {ev.n_confident}")
    bad = [(k, s) for k, s in ev.edge_status.items() if s != EdgeStatus.CORRECT]
    if bad:
        lines += ["", "Edges that are not correct (parent -> child)"]
        lines += [f"  {s:<8} {p} -> {c}" for (p, c), s in bad[:max_edges]]
        if len(bad) > max_edges:
            lines.append(f"  ... and {len(bad) - max_edges} more")
    return "\n".join(lines)
