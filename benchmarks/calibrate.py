"""Fit the confidence constants of mother_core/recovery/confidence.py on fitting collections.

The trees are generated with seeds (1, 2, 3) that the accuracy benchmark (seed 0) never uses, so
calibration is checked on data it was not fitted on. Prints the fitted constants and the
calibration they give on the fitting data; copy them into confidence.py.

    python benchmarks/calibrate.py [--seeds 1 2 3] [--size small]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalise import N_PRIOR  # noqa: E402
from mother_core import RecoverySettings, compute_statistics, discover, recover  # noqa: E402
from mother_core.evaluate import load_truth  # noqa: E402
from mother_zoo import generate_split  # noqa: E402

DATA = Path(__file__).resolve().parent / "_data" / "calibration"
SPLITS = ("fft", "lora16", "lora-mixed", "continued", "mixed")


def edge_features(split_dir: Path, cache: Path | None = None) -> list[tuple[float, ...]]:
    """Per recovered edge: log margin, relative/threshold, direction evidence, placed right, directed right,
    the confidence of its tree's reading, whether that reading rests on the prior, the layers'
    effect size for the chosen parent over the best alternative (NaN where not measured), and whether
    the reading rests on norm growth (basis "growth": its confidence is GROWTH_PRIOR, counted, not fitted)."""
    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    ids = rec.model_ids
    ix = {m: i for i, m in enumerate(ids)}
    problem = rec.problem
    rel, ev, thr = problem.relative, problem.evidence, problem.threshold
    rows = []
    typed = {int(link["child"]) for link in problem.links}  # their confidence is the relation's
    for e in rec.edges:
        p, c = ix[e.parent], ix[e.child]
        if c in typed:
            continue
        alt = e.alternatives[0].cost if e.alternatives else math.inf
        chosen = rec.cost_matrix[p, c]
        margin = math.log(max(alt, 1e-300) / max(chosen, 1e-300)) if math.isfinite(alt) else 5.0
        placed = (e.parent, e.child) in truth or (e.child, e.parent) in truth
        tree = next(t for t in rec.trees if e.child in t.members)
        effect = problem.layer_margin(p, ix[e.alternatives[0].parent], c) if e.alternatives else None
        rows.append((margin, math.log(thr / max(rel[p, c], 1e-12)), float(ev[p, c]), int(placed),
                     int((e.parent, e.child) in truth), tree.regime_confidence, int(tree.direction_basis == "prior"),
                     math.nan if effect is None else effect, int(tree.direction_basis == "growth")))
    return rows


def edge_table(split_dir: Path, cache: Path | None = None) -> list[dict[str, object]]:
    """Every recovered edge of one collection with what its confidence is made of and what else the engine
    computed about it (issue 12, item 5: which factor is miscalibrated where; ``--pooled`` fits on these).

    Per edge: the engine's confidence and its parts; right / placed right; typed (a relation's child: its
    confidence is the relation's, not refitted here); the placement inputs (layer effect over the best and
    second-best alternative, log cost margin, NaN / 5.0 where not measured / no alternative, negative when
    contested; log(threshold / relative)); the direction inputs (tree reading's confidence and basis,
    whether the radial-share rule flagged the tree, the tree's radial share, the edge's evidence E); the
    root-only-child cap; and candidate inputs (tree size, alternatives within a layer effect of 1, the
    relative distance, whether the parent is a root, the parent's number of children)."""
    from mother_core.recovery.chain_ties import chain_tie_edges
    from mother_core.recovery.confidence import sole_child_edges, tree_radial_share
    from mother_core.recovery.features import pair_evidence, select_layers

    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    recipes = json.loads((split_dir / "truth.json").read_text()).get("meta", {}).get("models", {})
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    problem = rec.problem
    typed = {int(link["child"]) for link in problem.links}
    sole = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in rec.edges])
    chain: set[tuple[str, str]] = set()
    if rec.distance_matrix is not None:  # the tie chains' edges (recovery/chain_ties.py: capped)
        first, second = chain_tie_edges(list(rec.edges), np.asarray(rec.distance_matrix), list(rec.model_ids))
        chain = set(first) | set(second)
    parent_of = {e.child: e.parent for e in rec.edges}
    n_children: dict[str, int] = {}
    for e in rec.edges:
        n_children[e.parent] = n_children.get(e.parent, 0) + 1
    tree_of = {m: t for t in rec.trees for m in t.members}
    share = {t.id: tree_radial_share(stats.norm, stats.sq_dist, ev.layer_index, ev.distance,
                                     np.array([ix[m] for m in t.members if ix[m] not in typed]))
             for t in rec.trees if len(t.members) > 1}
    rows: list[dict[str, object]] = []
    for e in rec.edges:
        p, c = ix[e.parent], ix[e.child]
        tree = tree_of[e.child]
        alts = [ix[a.parent] for a in e.alternatives]
        eff = [problem.layer_margin(p, q, c) for q in alts[:2]]
        alt = e.alternatives[0].cost if e.alternatives else math.inf
        chosen = float(problem.cost[p, c])
        margin = math.log(max(alt, 1e-300) / max(chosen, 1e-300)) if math.isfinite(alt) else 5.0
        m = problem.layer_margins.get(c)
        near = 0
        if m is not None and p in m.candidates:
            row = m.effect[m.candidates.index(p)]
            near = int(sum(1 for j, q in enumerate(m.candidates) if q != p and np.isfinite(row[j]) and row[j] < 1.0))
        depth, node = 0, e.child
        while node in parent_of and depth < 100:
            node, depth = parent_of[node], depth + 1
        rows.append({
            "collection": split_dir.name, "parent": e.parent, "child": e.child,
            "recipe": str(recipes.get(e.child, {}).get("recipe", "")),
            "tree": tree.id, "tree_size": len(tree.members), "typed": c in typed,
            "relation": e.relation, "constrained": e.constrained,
            "confidence": e.confidence, "placement": e.placement_confidence, "direction": e.direction_confidence,
            "right": (e.parent, e.child) in truth,
            "placed": (e.parent, e.child) in truth or (e.child, e.parent) in truth,
            "effect": math.nan if not eff or eff[0] is None else eff[0],
            "effect2": math.nan if len(eff) < 2 or eff[1] is None else eff[1],
            "margin": margin, "related": math.log(problem.threshold / max(float(problem.relative[p, c]), 1e-12)),
            "relative": float(problem.relative[p, c]), "n_alternatives": len(alts), "near_tied": near,
            "reading": tree.regime_confidence, "basis": tree.direction_basis,
            "flagged": "radial share" in (tree.direction_note or ""), "share": share.get(tree.id, math.nan),
            "evidence": float(problem.evidence[p, c]), "sole": (e.parent, e.child) in sole,
            "chain": (e.parent, e.child) in chain,
            "parent_is_root": e.parent not in parent_of, "parent_children": n_children[e.parent], "depth": depth,
            "cues": dict(e.cues), "tie_chosen": bool(e.tie_kurtosis), "tie_lifted": e.tie_lifted,
            "alt_margins": [math.log(max(a.cost, 1e-300) / max(chosen, 1e-300)) for a in e.alternatives],
        })
    return rows


def growing_trees(split_dir: Path, cache: Path | None = None) -> tuple[int, int]:
    """(trees whose norms grow along most of their true edges, multi-model trees) of a collection: the
    count behind direction.GROWTH_PRIOR."""
    from mother_core.recovery.features import pair_evidence, select_layers

    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    truth = load_truth(split_dir / "truth.json")
    grow = total = 0
    for tree in json.loads((split_dir / "truth.json").read_text())["meta"]["trees"]:
        members = set(tree["models"])
        growth = [ev.norm_growth[ix[p], ix[c]] for p, c in truth if c in members and p in ix and c in ix]
        if growth:
            total += 1
            grow += int(np.mean(np.array(growth) > 0) > 0.5)
    return grow, total


def radial_shares(split_dir: Path, cache: Path | None = None) -> list[float]:
    """The radial share (:func:`mother_core.recovery.confidence.tree_radial_share`) of every recovered
    tree of two or more models: the domain the constants are fitted on (``RADIAL_SHARE_MAX``)."""
    from mother_core.recovery.confidence import tree_radial_share
    from mother_core.recovery.features import pair_evidence, select_layers

    stats = compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache)
    rec = recover(stats, RecoverySettings())
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers), drop_reinitialised=True)
    ix = {m: i for i, m in enumerate(stats.model_ids)}
    out = [tree_radial_share(stats.norm, stats.sq_dist, ev.layer_index, ev.distance,
                             np.array([ix[m] for m in t.members])) for t in rec.trees if len(t.members) > 1]
    return [s for s in out if math.isfinite(s)]


def sole_child(split_dir: Path, cache: Path | None = None) -> tuple[int, int]:
    """(right, total) of the edges :func:`mother_core.recovery.confidence.sole_child_edges` picks: the
    count behind SOLE_CHILD_CONFIDENCE."""
    from mother_core.recovery.confidence import sole_child_edges

    rec = recover(compute_statistics(discover([split_dir]), device="cpu", cache_dir=cache), RecoverySettings())
    truth = set(map(tuple, load_truth(split_dir / "truth.json")))
    which = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in rec.edges])
    return sum(e in truth for e in which), len(which)


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood a, b of P(y=1) = sigmoid(a x + b), lightly regularised."""
    def nll(w: np.ndarray) -> float:
        z = w[0] * x + w[1]
        return float(np.sum(np.logaddexp(0, z) - y * z) + 1e-3 * (w ** 2).sum())
    res = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead")
    return float(res.x[0]), float(res.x[1])


def fit_evidence_bias(y: np.ndarray, reading: np.ndarray) -> float:
    """b of P(right | placed) = rc sigmoid(b) + (1 - rc)(1 - sigmoid(b)), rc each edge's reading
    confidence as the engine gave it (domain check included): how often an edge points the way a
    right reading says."""
    rc = np.clip(reading, 1e-9, 1 - 1e-9)

    def nll(w: np.ndarray) -> float:
        p = 1.0 / (1.0 + math.exp(-w[0]))
        q = np.clip(rc * p + (1 - rc) * (1 - p), 1e-9, 1 - 1e-9)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)))
    return float(minimize(nll, np.array([3.0]), method="Nelder-Mead").x[0])


def fit_direction(e: np.ndarray, y: np.ndarray, reading: np.ndarray, on_prior: np.ndarray,
                  counted: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """a >= 0, b of sigmoid(a E + b), the confidence of a prior reading and the slope s of an own or
    pooled reading's confidence sigmoid(s * margin), by maximum likelihood of
    P(right) = rc sigmoid(a E + b) + (1 - rc)(1 - sigmoid(a E + b)), rc the tree's reading confidence.
    The margin is read back from the confidence the engine gave (sigmoid(READING_SLOPE * margin)).
    ``counted`` rows (basis "growth") keep the reading confidence the engine gave (GROWTH_PRIOR)."""
    from mother_core.recovery.direction import READING_SLOPE

    rc0 = np.clip(reading, 1e-9, 1 - 1e-9)
    margin = np.log(rc0 / (1 - rc0)) / READING_SLOPE
    counted = np.zeros(len(e), dtype=bool) if counted is None else counted

    def nll(w: np.ndarray) -> float:
        rc = np.where(on_prior, 1.0 / (1.0 + math.exp(-w[2])),
                      np.where(counted, rc0, 1.0 / (1.0 + np.exp(-w[3] * margin))))
        p = 1.0 / (1.0 + np.exp(-(w[0] * e + w[1])))
        q = np.clip(rc * p + (1 - rc) * (1 - p), 1e-9, 1 - 1e-9)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)) + 1e-3 * (w[:2] ** 2).sum())
    # More evidence never lowers the confidence (a >= 0); a reading's margin never counts against it.
    res = minimize(nll, np.array([0.5, 1.0, 0.0, 1.0]), method="L-BFGS-B",
                   bounds=[(0.0, 20.0), (-20.0, 20.0), (-20.0, 20.0), (0.0, 20.0)])
    return float(res.x[0]), float(res.x[1]), float(1.0 / (1.0 + math.exp(-res.x[2]))), float(res.x[3])


# --- Pooled fit on every fitting collection (issue 12, item 5; ``--pooled``) -----------------------------
#: The fitting collections pooled: generalise.py's fit-*, their second draw fit2-* (confidence_data.py) and
#: the fitting-side collections made for the direction work (generalise.py --only fitting-more).
#: prior/fitp-*: small fitting trees of the shapes that can read on the prior (generalise.py --only fitting-prior).
PRIOR_FITTING = tuple(f"prior/fitp-{k}" for k in range(N_PRIOR))
POOLED = ("generalise/fit-fft", "generalise/fit-lora", "generalise/fit-mixed", "generalise/fit2-fft",
          "generalise/fit2-lora", "generalise/fit2-mixed", "more/fitx-0", "more/fitx-1", "more/fitx-2", "more/fitw",
          *PRIOR_FITTING)
#: Reading log-odds powers compared out of fold (READING_ODDS_POWER).
POWERS = (1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 20.0)


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logistic(x: np.ndarray, y: np.ndarray, signs: tuple[int, ...], l2: float = 1e-2) -> np.ndarray:
    """Maximum-likelihood bias and slopes of P(y) = sigmoid(b0 + x @ b), each slope's sign fixed by
    ``signs`` (+1 >= 0, -1 <= 0, 0 free), lightly regularised."""
    xx = np.column_stack([np.ones(len(x)), x])
    yy = y.astype(float)
    bounds = [(None, None)] + [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in signs]

    def f(b: np.ndarray) -> tuple[float, np.ndarray]:
        z = xx @ b
        grad = xx.T @ (_sig(z) - yy) + 2 * l2 * np.r_[0.0, b[1:]]
        return float(np.sum(np.logaddexp(0, z) - yy * z) + l2 * np.sum(b[1:] ** 2)), grad
    return minimize(f, np.zeros(xx.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds).x


def _columns(rows: list[dict[str, object]]) -> dict[str, np.ndarray]:
    from mother_core.recovery.confidence import RADIAL_SHARE_MAX

    def col(k: str) -> np.ndarray:
        return np.array([r[k] for r in rows], dtype=float)
    # A tree on the prior; "flagged" when beyond the calibrated radial share (a coin flip whatever the prior's
    # confidence: with a prior at 0.5 the engine leaves such a tree's note unflagged, so the share is read here).
    prior = np.array([r["basis"] == "prior" for r in rows], dtype=bool) & ~col("typed").astype(bool)
    share = col("share")
    prior_flagged = prior & (col("flagged").astype(bool) | (np.isfinite(share) & (share > RADIAL_SHARE_MAX)))
    return {"prior": prior, "prior_flagged": prior_flagged,
            # beyond the calibrated radial share: the engine's flag (its note), or a tree on the prior beyond it
            "flagged": (col("flagged").astype(bool) | prior_flagged) & ~col("typed").astype(bool),
            "margin": np.clip(col("margin"), -1.0, 1.0), "raw_margin": col("margin"), "near": col("near_tied"),
            "no_alt": (col("n_alternatives") == 0).astype(float), "related": _sig(4 * col("related")),
            "reading": col("reading"), "scale": np.array([float(r["cues"].get("scale", 0.0)) for r in rows]),  # type: ignore[attr-defined]
            "placed": col("placed").astype(bool), "right": col("right").astype(bool), "sole": col("sole").astype(bool),
            "typed": col("typed").astype(bool), "confidence": col("confidence"),
            # A parent the near-tie rule chose (rows dumped before the field was kept read as none).
            "tie": np.array([bool(r.get("tie_chosen", False)) for r in rows], dtype=bool) & ~col("typed").astype(bool)}


def fit_pooled(rows: list[dict[str, object]], power: float) -> dict[str, float]:
    """The constants of confidence.py's placement and direction maps, fitted on ``rows`` (edge_table)."""
    c = _columns(rows)
    u = ~c["typed"] & ~c["tie"]  # a parent the near-tie rule chose is counted (tie_count), not fitted
    b = _logistic(np.column_stack([c["margin"], c["near"], c["no_alt"]])[u], c["placed"][u], (1, -1, 0))
    plain = u & (c["raw_margin"] >= 0)
    m = _logistic(np.column_stack([c["margin"], c["no_alt"]])[plain], c["placed"][plain], (1, 0))
    contested = u & (c["raw_margin"] < 0)
    rate = min((c["placed"][contested].sum() + 1) / (contested.sum() + 2), float(_sig(m[0])))
    # The prior's edges and those beyond the radial share are counted, not fitted (direction.PRIOR_CONFIDENCE,
    # confidence.RADIAL_FLAG_CONFIDENCE); the rest fit the mixture.
    d = u & c["placed"] & ~c["sole"] & ~c["prior"] & ~c["flagged"]
    y, s = c["right"][d].astype(float), c["scale"][d]
    r = _reading(c["reading"][d], power)

    def nll(w: np.ndarray) -> float:
        p = _sig(w[0] + w[1] * s)
        q = np.clip(r * p + (1 - r) * (1 - p), 1e-9, 1 - 1e-9)
        return float(-np.sum(y * np.log(q) + (1 - y) * np.log(1 - q)) + 1e-2 * w[1] ** 2)
    w = minimize(nll, np.array([3.0, 0.5]), method="L-BFGS-B", bounds=[(-20.0, 20.0), (0.0, 20.0)]).x
    sole = u & c["sole"]
    k_right, k_n = prior_count(rows)
    t_right, t_n = tie_count(rows)
    f_right, f_n = flagged_count(rows)
    return {"PRIOR_CONFIDENCE": (k_right + 1) / (k_n + 2), "TIE_PLACEMENT": (t_right + 1) / (t_n + 2),
            "RADIAL_FLAG_CONFIDENCE": (f_right + 1) / (f_n + 2),
            "PLACE_BIAS": b[0], "PLACE_MARGIN_SLOPE": b[1], "PLACE_NEAR_TIED": -b[2], "PLACE_NO_ALTERNATIVE": b[3],
            "PLACEMENT_BIAS": m[0], "PLACEMENT_SLOPE": m[1], "PLACEMENT_NO_ALTERNATIVE": m[2],
            "CONTESTED_PLACEMENT": rate, "EVIDENCE_BIAS": w[0], "SCALE_SLOPE": w[1], "READING_ODDS_POWER": power,
            "SOLE_CHILD_CONFIDENCE": (c["right"][sole].sum() + 1) / (sole.sum() + 2)}


def prior_count(rows: list[dict[str, object]]) -> tuple[int, int]:
    """(directed right, placed) among the edges of trees on the prior (not typed, not a root's only child,
    the tree within the calibrated radial share): the count behind direction.PRIOR_CONFIDENCE."""
    c = _columns(rows)
    k = c["prior"] & ~c["prior_flagged"] & c["placed"] & ~c["sole"]
    return int(c["right"][k].sum()), int(k.sum())


def flagged_trees(rows: list[dict[str, object]]) -> list[tuple[str, int, int, int]]:
    """(collection/tree, placed edges, directed right, read right) of every tree beyond the calibrated radial
    share with a placed edge (not typed, not a root's only child): read right when most of its placed edges
    are directed right."""
    c = _columns(rows)
    trees: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if c["flagged"][i] and c["placed"][i] and not c["sole"][i]:
            trees.setdefault(f"{r['collection']}/{r['tree']}", []).append(i)
    out = []
    for name, ix in trees.items():
        k = int(c["right"][ix].sum())
        out.append((name, len(ix), k, int(k > len(ix) / 2)))
    return out


def flagged_count(rows: list[dict[str, object]]) -> tuple[int, int]:
    """(trees read right, trees) among the trees beyond the calibrated radial share (:func:`flagged_trees`):
    the count behind confidence.RADIAL_FLAG_CONFIDENCE, per tree because a reading is right or wrong for the
    whole tree."""
    t = flagged_trees(rows)
    return sum(x[3] for x in t), len(t)


def tie_count(rows: list[dict[str, object]]) -> tuple[int, int]:
    """(placed right, n) among the edges whose parent the near-tie rule chose (ties.py; not typed): the count
    behind confidence.TIE_PLACEMENT."""
    c = _columns(rows)
    return int(c["placed"][c["tie"]].sum()), int(c["tie"].sum())


def _reading(rc: np.ndarray, power: float) -> np.ndarray:
    rc = np.clip(rc, 1e-12, 1 - 1e-12)
    return np.where((rc > 1e-9) & (rc < 1 - 1e-9), _sig(power * np.log(rc / (1 - rc))), rc)


def pooled_confidence(rows: list[dict[str, object]], k: dict[str, float]) -> np.ndarray:
    """Each edge's confidence under constants ``k`` as the engine computes it (dense path, mother+):
    placement x direction, a root's only child capped; a typed relation's edge keeps the engine's."""
    c = _columns(rows)
    place = _sig(k["PLACE_BIAS"] + k["PLACE_MARGIN_SLOPE"] * c["margin"] - k["PLACE_NEAR_TIED"] * c["near"]
                 + k["PLACE_NO_ALTERNATIVE"] * c["no_alt"]) * c["related"]
    place = np.where(c["tie"], k["TIE_PLACEMENT"] * c["related"], place)
    r = _reading(c["reading"], k["READING_ODDS_POWER"])
    p = _sig(k["EVIDENCE_BIAS"] + k["SCALE_SLOPE"] * c["scale"])
    direction = np.where(c["flagged"], k.get("RADIAL_FLAG_CONFIDENCE", 0.5),
                         np.where(c["prior"], k["PRIOR_CONFIDENCE"], r * p + (1 - r) * (1 - p)))
    conf = place * direction
    conf = np.where(_maps_own(c), _recount(conf, k), conf)  # confidence.recounted
    conf = np.where(c["sole"], np.minimum(conf, k["SOLE_CHILD_CONFIDENCE"]), conf)
    return np.where(c["typed"], c["confidence"], conf)


def _maps_own(c: dict[str, np.ndarray]) -> np.ndarray:
    """Edges whose confidence is the fitted maps' own: not a typed relation's, a near-tie parent's count, a tree
    on the prior's or beyond the calibrated radial share's (those are counted shares of their own)."""
    return ~c["typed"] & ~c["tie"] & ~c["prior"] & ~c["flagged"]


def _recount(conf: np.ndarray, k: dict[str, float]) -> np.ndarray:
    """The fitted maps' products raised to their counted share (confidence.recounted), under constants ``k``."""
    top, below = k.get("SURE_POWER", 1.0), k.get("BELOW_POWER", 1.0)
    at = k.get("SURE_FROM", 0.8)
    return np.where(conf >= at, conf ** top, at * (np.clip(conf, 0.0, None) / at) ** below)


def maps_count(rows: list[dict[str, object]]) -> dict[str, tuple[int, int, np.ndarray]]:
    """(right, n, the maps' products) of the fitted maps' own edges at >= confidence.SURE_FROM ("sure") and below
    it ("below") (not a root's only child, not a capped tie chain's): the counts behind confidence.SURE_POWER and
    BELOW_POWER. The engine's confidences are read back through the powers it ran with (confidence.recounted
    keeps the two ranges apart), so the counts are the same before and after the change."""
    from mother_core.recovery.confidence import BELOW_POWER, SURE_FROM, SURE_POWER

    c = _columns(rows)
    conf = c["confidence"]
    maps = np.where(conf >= SURE_FROM ** SURE_POWER, conf ** (1.0 / SURE_POWER),
                    SURE_FROM * (conf / SURE_FROM) ** (1.0 / BELOW_POWER))
    own = _maps_own(c) & ~c["sole"] & ~np.array([bool(r.get("chain", False)) for r in rows])
    out = {}
    for name, m in (("sure", own & (maps >= SURE_FROM)), ("below", own & (maps < SURE_FROM))):
        out[name] = (int(c["right"][m].sum()), int(m.sum()), maps[m])
    return out


def counted_power(right: int, n: int, maps: np.ndarray, at: float | None = None) -> float:
    """The power g with mean(maps ** g) = (right + 1) / (n + 2), the counted share (with ``at``: of at *
    (maps / at) ** g, the lower range's map); 1 where the maps already say as much (they are never lowered)."""
    from scipy.optimize import brentq

    rate = (right + 1) / (n + 2)

    def f(g: float) -> float:
        return float(np.mean(maps ** g if at is None else at * (maps / at) ** g)) - rate
    if n == 0 or f(1.0) >= 0:
        return 1.0
    if f(1e-3) < 0:  # beyond what any power can say (below: SURE_FROM itself)
        return math.nan
    return float(brentq(f, 1e-3, 1.0))


def sure(fit: list[Path], check: list[Path], cache: Path | None) -> None:
    """Count confidence.SURE_POWER and BELOW_POWER on the ``fit`` collections and show what they do on the
    ``check`` ones, which they were not counted on (ECE / AUROC / wrong at >= 0.8 of every recovered edge, from
    the edge tables: the maps as they were, and raised by the powers counted here)."""
    from mother_core.recovery.confidence import SURE_FROM

    tables = {"counted on": [r for f in fit for r in edge_table(f, cache)],
              "checked on": [r for f in check for r in edge_table(f, cache)]}
    counts = maps_count(tables["counted on"])
    powers = {}
    for name, (right, n, maps) in counts.items():
        powers[name] = counted_power(right, n, maps, None if name == "sure" else SURE_FROM)
        print(f"{name}: {right} of {n} right at mean {maps.mean() if n else math.nan:.3f}; (right + 1) / (n + 2) = "
              f"{(right + 1) / (n + 2):.3f}; power {powers[name]:.3f}")
    engine = engine_constants()
    k = {**engine, "SURE_POWER": powers["sure"], "BELOW_POWER": powers["below"]}
    print("\n| collections | edges | maps' edges >= 0.8: right / n / mean before -> after | below 0.8 | "
          "all: ECE / AUROC / wrong >= 0.8, maps as they were | raised by these powers |")
    print("|---|---|---|---|---|---|")
    for name, rows in tables.items():
        if not rows:
            continue
        c = _columns(rows)
        got = maps_count(rows)
        # every edge as the maps gave it (the engine's read back where it raised it), then raised by k
        conf = c["confidence"].copy()
        own = _maps_own(c) & ~c["sole"] & ~np.array([bool(r.get("chain", False)) for r in rows])
        maps = np.where(conf >= SURE_FROM ** engine["SURE_POWER"], conf ** (1.0 / engine["SURE_POWER"]),
                        SURE_FROM * (conf / SURE_FROM) ** (1.0 / engine["BELOW_POWER"]))
        plain = np.where(own, maps, conf)
        after = np.where(own, _recount(maps, k), conf)
        cells = []
        for part in ("sure", "below"):
            r_, n_, m_ = got[part]
            cells.append(f"{r_} / {n_} / {m_.mean():.3f} -> {float(np.mean(_recount(m_, k))):.3f}" if n_ else "none")
        print(f"| {name} | {len(rows)} | {cells[0]} | {cells[1]} | {_cells(plain, c['right'])} | "
              f"{_cells(after, c['right'])} |")


def _ece(conf: np.ndarray, right: np.ndarray, bins: int = 5) -> float:
    from confidence_heldout import ece  # one definition of the benchmark's ECE (5 bins, as mother evaluate)

    return ece(conf, right, bins)


def _cells(conf: np.ndarray, right: np.ndarray) -> str:
    from mother_core.evaluate import confidence_auroc as auroc

    high = conf >= 0.8
    a = auroc(conf, right)
    return (f"{_ece(conf, right.astype(float)):.3f} / {'n/a' if not np.isfinite(a) else f'{a:.2f}'} / "
            f"{int((~right[high]).sum())} of {int(high.sum())}")


#: main's confidence constants before this refit (ce25725: fitted on fit-* only, 78 edges; the prior at 0.5).
MAIN = SimpleNamespace(PLACEMENT_SLOPE=6.805, PLACEMENT_BIAS=-0.072, LAYER_SLOPE=1.819, LAYER_BIAS=-0.594,
                       CONTESTED_PLACEMENT=0.48, EVIDENCE_BIAS=3.145, SOLE_CHILD_CONFIDENCE=0.43)


def main_confidence(rows: list[dict[str, object]]) -> np.ndarray:
    """Each edge's confidence under main's form and constants before the pooled refit (:data:`MAIN`), from
    its edge_table row (layer effect, else cost margin; reading x evidence mixture, a tree on the prior at
    0.5; a root's only child capped): the "before" column, recomputed (it reproduced main's engine to
    1e-16 when main ran it)."""
    k = MAIN
    c = _columns(rows)
    c["reading"] = np.where(c["prior"], 0.5, c["reading"])
    effect = np.array([float(r["effect"]) for r in rows])  # type: ignore[arg-type]
    raw = c["raw_margin"]
    by_margin = np.where(raw < 0, k.CONTESTED_PLACEMENT, _sig(k.PLACEMENT_SLOPE * raw + k.PLACEMENT_BIAS))
    by_margin = np.where(c["no_alt"] > 0, 1.0, by_margin)
    place = np.where(np.isfinite(effect), _sig(k.LAYER_SLOPE * np.nan_to_num(effect) + k.LAYER_BIAS), by_margin)
    place = place * c["related"]
    p = float(_sig(np.array(k.EVIDENCE_BIAS)))
    conf = place * (c["reading"] * p + (1 - c["reading"]) * (1 - p))
    conf = np.where(c["sole"], np.minimum(conf, k.SOLE_CHILD_CONFIDENCE), conf)
    return np.where(c["typed"], c["confidence"], conf)


#: The held-out collections of the one check (generalise.py's held-*, confidence_data.py's held2-*, barely.py).
HELD_OUT = ("generalise/held-fft", "generalise/held-lora", "generalise/held-mixed", "generalise/held2-fft",
            "generalise/held2-lora", "generalise/held2-mixed", "barely/held-barely")
#: The reading log-odds power of the pooled refit, by the rule of :func:`choose_power` (of the powers whose
#: out-of-fold ECE is <= 0.05, the smallest share of wrong edges at >= 0.8 out of fold). On the 390 edges
#: before the prior's collections it gave 1.5 (1: ECE 0.057; 1.5: 9 of 124; 2: 11 of 133; 20: 15 of 158).
#: With them (863 edges) 1.5 misses 0.05 (0.056) and the rule gives 20 (27 of 407, 6.6%; 5: 27 of 402, 6.7%;
#: 3: 28 of 407; 2: 29 of 397): a reading's confidence no longer ranks its edges (benchmarks/RESULTS.md).
CANDIDATE_POWER = 20.0


def engine_constants() -> dict[str, float]:
    """The constants the engine runs with (confidence.py, direction.PRIOR_CONFIDENCE), as fit_pooled names them."""
    from mother_core.recovery import confidence as k
    from mother_core.recovery.direction import PRIOR_CONFIDENCE

    names = ("PLACE_BIAS", "PLACE_MARGIN_SLOPE", "PLACE_NEAR_TIED", "PLACE_NO_ALTERNATIVE", "PLACEMENT_BIAS",
             "PLACEMENT_SLOPE", "PLACEMENT_NO_ALTERNATIVE", "CONTESTED_PLACEMENT", "EVIDENCE_BIAS", "SCALE_SLOPE",
             "READING_ODDS_POWER", "SOLE_CHILD_CONFIDENCE", "TIE_PLACEMENT", "RADIAL_FLAG_CONFIDENCE",
             "SURE_FROM", "SURE_POWER", "BELOW_POWER")
    return {"PRIOR_CONFIDENCE": PRIOR_CONFIDENCE, **{n: float(getattr(k, n)) for n in names}}


def choose_power(oof: dict[float, np.ndarray], right: np.ndarray) -> float:
    """The power rule: of the powers whose out-of-fold ECE is <= 0.05, the one with the smallest share of
    wrong edges among those at >= 0.8 out of fold (ties: the smaller power); none meeting 0.05: the lowest ECE."""
    ok = [p for p, c in oof.items() if _ece(c, right.astype(float)) <= 0.05]
    if not ok:
        return min(oof, key=lambda p: _ece(oof[p], right.astype(float)))

    def wrong_share(p: float) -> float:
        high = oof[p] >= 0.8
        return float((~right[high]).mean()) if high.any() else 0.0
    return min(ok, key=lambda p: (wrong_share(p), p))


def pooled(cache: Path | None, held_out: bool = False) -> None:
    """Fit on every fitting collection pooled; report per collection: the engine as committed, the refit
    in sample, and out of fold (each collection predicted by constants fitted without it); with
    ``held_out``, the refit's constants frozen from the fitting fit on the held-out collections too."""
    data = Path(__file__).resolve().parent / "_data"
    missing = [name for name in POOLED if not (data / name / "truth.json").exists()]
    if missing:  # generalise.py --only fitting-prior makes them
        print(f"not generated, left out: {', '.join(missing)}")
    tables = {name.split("/")[1]: edge_table(data / name, cache) for name in POOLED if name not in missing}
    rows = [r for t in tables.values() for r in t]
    engine = _columns(rows)["confidence"]
    right = _columns(rows)["right"]
    here = pooled_confidence(rows, engine_constants())
    print(f"{len(rows)} edges in {len(tables)} fitting collections; the engine's form recomputed from the table "
          f"differs from the engine by at most {np.abs(here - engine).max():.1e}")
    k_right, k_n = prior_count(rows)
    print(f"trees on the prior: {k_right} of {k_n} placed edges directed right (not a root's only child, within "
          f"the radial share); rule of succession {(k_right + 1) / (k_n + 2):.3f}, Wilson 95% lower bound "
          f"{_wilson_low(k_right, k_n):.3f}")
    t_right, t_n = tie_count(rows)
    print(f"parents the near-tie rule chose: {t_right} of {t_n} placed right; rule of succession "
          f"{(t_right + 1) / (t_n + 2):.3f} (confidence.TIE_PLACEMENT)")
    f_right, f_n = flagged_count(rows)
    print(f"trees beyond the radial share: {f_right} of {f_n} read right (most placed edges directed right); "
          f"rule of succession {(f_right + 1) / (f_n + 2):.3f} (confidence.RADIAL_FLAG_CONFIDENCE)")
    for name, n, k, ok in flagged_trees(rows):
        print(f"  {name}: {k} of {n} placed edges directed right")
    for name, t in tables.items():
        kr, kn = prior_count(t)
        if kn:
            print(f"  {name}: {kr} of {kn}")
    print()
    print("| READING_ODDS_POWER | out of fold, pooled: ECE / AUROC / wrong at >= 0.8 | in sample |")
    print("|---|---|---|")
    oof: dict[float, np.ndarray] = {}
    for power in POWERS:
        out = []
        for name, t in tables.items():
            k = fit_pooled([r for n, tt in tables.items() if n != name for r in tt], power)
            out.append(pooled_confidence(t, k))
        oof[power] = np.concatenate(out)
        in_sample = pooled_confidence(rows, fit_pooled(rows, power))
        print(f"| {power:g} | {_cells(oof[power], right)} | {_cells(in_sample, right)} |")
    power = choose_power(oof, right)
    print(f"\nthe power rule picks {power:g} (CANDIDATE_POWER {CANDIDATE_POWER:g})")
    k = fit_pooled(rows, CANDIDATE_POWER)
    print(f"\nrefit constants (READING_ODDS_POWER {CANDIDATE_POWER:g}):")
    for name, v in k.items():
        print(f"{name} = {v:.3f}")
    fitted = pooled_confidence(rows, k)
    before = main_confidence(rows)
    print("\n| collection | edges | directed | main (before): ECE / AUROC / wrong >= 0.8 | engine (this branch) "
          "| refit, in sample | refit, out of fold |")
    print("|---|---|---|---|---|---|---|")
    at = 0
    for name, t in tables.items():
        sl = slice(at, at + len(t))
        at += len(t)
        print(f"| {name} | {len(t)} | {right[sl].mean():.0%} | {_cells(before[sl], right[sl])} | "
              f"{_cells(engine[sl], right[sl])} | {_cells(fitted[sl], right[sl])} | "
              f"{_cells(oof[CANDIDATE_POWER][sl], right[sl])} |")
    print(f"| **pooled** | {len(rows)} | {right.mean():.0%} | {_cells(before, right)} | {_cells(engine, right)} | "
          f"{_cells(fitted, right)} | {_cells(oof[CANDIDATE_POWER], right)} |")
    if not held_out:
        return
    print("\n| held-out collection | edges | directed | main (before): ECE / AUROC / wrong >= 0.8 "
          "| engine (this branch) | refit (frozen from the fit above) |")
    print("|---|---|---|---|---|---|")
    held = {name.split("/")[1]: edge_table(data / name, cache) for name in HELD_OUT}
    for name, t in [*held.items(), ("**all held-out, pooled**", [r for t in held.values() for r in t])]:
        c = _columns(t)
        print(f"| {name} | {len(t)} | {c['right'].mean():.0%} | {_cells(main_confidence(t), c['right'])} | "
              f"{_cells(c['confidence'], c['right'])} | {_cells(pooled_confidence(t, k), c['right'])} |")


def _wilson_low(k: int, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson score interval for k successes in n trials."""
    if n == 0:
        return 0.0
    f = k / n
    return float((f + z * z / (2 * n) - z * math.sqrt(f * (1 - f) / n + z * z / (4 * n * n))) / (1 + z * z / n))


def lora_count(rows: list[dict[str, object]]) -> tuple[int, int]:
    """(placed right, n) among the forest's own edges typed ``lora`` (not a typed relation's child, not a parent
    the near-tie rule chose): the count confidence.LORA_PLACEMENT is (right + 1) / (n + 2) of."""
    own = [r for r in rows if r["relation"] == "lora" and not r["typed"] and not r["tie_chosen"]
           and not r["tie_lifted"]]
    return sum(bool(r["placed"]) for r in own), len(own)


def lora(folders: list[Path], cache: Path | None) -> None:
    """Count confidence.LORA_PLACEMENT on ``folders`` (fitting collections), in all and leaving each one out."""
    tables = {f.name: edge_table(f, cache) for f in folders}
    right, n = lora_count([r for t in tables.values() for r in t])
    print(f"all: {right} of {n} placed right; (right + 1) / (n + 2) = {(right + 1) / (n + 2):.3f}")
    for name in tables:
        r_, n_ = lora_count([r for other, t in tables.items() if other != name for r in t])
        print(f"without {name}: {r_} of {n_}; {(r_ + 1) / (n_ + 2):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", default="small")
    ap.add_argument("--generalise", action="store_true",
                    help="fit on the FITTING collections of benchmarks/generalise.py instead of zoo seeds")
    ap.add_argument("--also", nargs="*", default=[str(DATA / "full-seed1" / s) for s in ("fft", "lora16")],
                    help="more held-out split folders to fit on, if they exist")
    ap.add_argument("--cache", type=Path, default=None,
                    help="statistics cache (--generalise: default benchmarks/_data/generalise/stats-cache)")
    ap.add_argument("--pooled", action="store_true",
                    help="fit on EVERY fitting collection pooled (fit-*, fit2-*, more/fitx-*, more/fitw, "
                         "prior/fitp-*), per collection report (issue 12, item 5)")
    ap.add_argument("--held-out", action="store_true",
                    help="with --pooled: the refit, frozen, on the held-out collections too (run once)")
    ap.add_argument("--sure", nargs="+", type=Path, default=None,
                    help="count confidence.SURE_POWER and BELOW_POWER on these fitting collections (truth.json)")
    ap.add_argument("--check", nargs="*", type=Path, default=[],
                    help="with --sure: fitting collections it was not counted on, to check it on")
    ap.add_argument("--lora", nargs="+", type=Path, default=None,
                    help="count confidence.LORA_PLACEMENT on these fitting collections (truth.json)")
    args = ap.parse_args()
    if args.lora:
        lora(args.lora, args.cache)
        return
    if args.sure:
        sure(args.sure, args.check, args.cache)
        return
    if args.pooled:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        pooled(args.cache, args.held_out)
        return
    rows = []
    grown = [0, 0]
    shares: list[float] = []
    sole = [0, 0]
    if args.generalise:
        from confidence_data import folders as second_draw
        from generalise import COLLECTIONS
        from generalise import DATA as GDATA

        from mother_zoo.variety import generate_collection

        cache = args.cache or GDATA / "stats-cache"
        # The fitting collections and their second draw (same recipes, new seeds): 158 edges, not 78.
        for folder in [generate_collection(c, GDATA) for c in COLLECTIONS["fitting"]] + second_draw("fitting2"):
            rows += edge_features(folder, cache)
            g, n = growing_trees(folder, cache)
            grown = [grown[0] + g, grown[1] + n]
            shares += radial_shares(folder, cache)
            k, n = sole_child(folder, cache)
            sole = [sole[0] + k, sole[1] + n]
        args.also, args.seeds = [], []
    for folder in map(Path, args.also):
        if (folder / "truth.json").exists():
            rows += edge_features(folder)
    for seed in args.seeds:
        for split in SPLITS:
            out = DATA / f"seed{seed}"
            folder = out / split
            if not (folder / "truth.json").exists():
                generate_split(split, out, size=args.size, seed=seed)
            rows += edge_features(folder)
    r = np.array(rows)
    # Contested edges (another parent is cheaper pairwise: the refinement's choices) get their own rate.
    contested = r[:, 0] < 0
    a_p, b_p = fit_logistic(r[~contested, 0], r[~contested, 3])
    # capped at a tie's confidence: an edge with a cheaper alternative is never surer than one without
    rate = min((r[contested, 3].sum() + 1) / (contested.sum() + 2), 1.0 / (1.0 + math.exp(-b_p)))
    placed = r[:, 3] == 1
    a_d, b_d, prior, slope = fit_direction(r[placed, 2], r[placed, 4], r[placed, 5], r[placed, 6] == 1,
                                           r[placed, 8] == 1)
    layered = np.isfinite(r[:, 7])
    a_l, b_l = fit_logistic(r[layered, 7], r[layered, 3])
    b_given = fit_evidence_bias(r[placed, 4], r[placed, 5])
    print(f"edges: {len(r)}  placed right: {placed.mean():.2f}  directed right: {r[:, 4].mean():.2f}  "
          f"contested: {int(contested.sum())} ({int(r[contested, 3].sum())} placed right)")
    print(f"LAYER_SLOPE = {a_l:.3f}\nLAYER_BIAS = {b_l:.3f}  ({int(layered.sum())} edges with a layer effect)")
    print(f"PLACEMENT_SLOPE = {a_p:.3f}\nPLACEMENT_BIAS = {b_p:.3f}\nCONTESTED_PLACEMENT = {rate:.2f}\n"
          f"EVIDENCE_BIAS = {b_given:.3f}  (EVIDENCE_SLOPE 0, the readings' confidences as direction.py gives them)\n"
          f"joint refit with the reading's slope (not adopted: its held-out check, benchmarks/RESULTS.md, issue 12):\n"
          f"  EVIDENCE_SLOPE = {a_d:.3f}\n  EVIDENCE_BIAS = {b_d:.3f}\n"
          f"  PRIOR_CONFIDENCE = {prior:.2f}  (direction.py)\n"
          f"  READING_SLOPE = {slope:.3f}  (direction.py)")
    if shares:
        print(f"RADIAL_SHARE_MAX = {max(shares):.3f}  (the largest radial share of the {len(shares)} fitting trees; "
              f"median {np.median(shares):.3f})")
    if sole[1]:
        print(f"SOLE_CHILD_CONFIDENCE = {(sole[0] + 1) / (sole[1] + 2):.2f}  ({sole[0]} of {sole[1]} edges from a "
              f"root to its only child, in trees of three or more models, right; rule of succession)")
    if grown[1]:
        print(f"GROWTH_PRIOR = {(grown[0] + 1) / (grown[1] + 2):.3f}  (direction.py; {grown[0]} of {grown[1]} "
              f"multi-model trees grow along most of their true edges, rule of succession)")


if __name__ == "__main__":
    main()
