"""The fitted maps' edges read their counted share (issue 12, item 5; :func:`.confidence.recounted`).
Real training of tiny models with a fitting recipe of ``benchmarks/generalise.py`` (:mod:`mother_zoo.variety`),
no synthetic weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mother_core import Constraints, compute_statistics, discover, recover, resolve
from mother_core.recovery import confidence
from mother_core.recovery.chain_ties import chain_tie_edges
from mother_core.evaluate import load_truth
from mother_core.recovery.confidence import (
    BELOW_POWER, LORA_PLACEMENT, RANK_PLACED_BELOW, SKELETON_RELATIONS, SURE_FROM, SURE_POWER, rank_placed,
    recounted, related_confidence, sole_child_edges,
)


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("recounted-confidence")

@pytest.fixture(scope="module")
def lora_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mother_zoo.variety import Collection, Recipe, generate_collection

    # A fitting recipe (generalise.py's fit-vit-lora-qv) with a seed of its own: merged-LoRA trees are where
    # the maps read most edges sure.
    qv = Recipe("fit-vit-lora-qv", "vit", method="lora", lora_rank=4, lora_targets="qv", lora_alpha="r",
                lr=(5e-4, 5e-3))
    return generate_collection(Collection("sure-test", ((qv, 251),)), tmp_path_factory.mktemp("sure"))


def test_recounted_raises_each_range_and_never_across_sure_from() -> None:
    assert 0.0 < SURE_POWER < 1.0 and 0.0 < BELOW_POWER < 1.0
    # at or above SURE_FROM: both parts ** SURE_POWER
    p, d = recounted(0.9, 0.9)
    assert (p, d) == pytest.approx((0.9 ** SURE_POWER, 0.9 ** SURE_POWER))
    assert recounted(1.0, 1.0) == (1.0, 1.0)
    # below it: raised, but never to SURE_FROM, however close
    for pl, di in ((0.9, 0.88), (0.5, 0.9), (0.3, 0.4)):
        p, d = recounted(pl, di)
        c = pl * di
        assert p * d == pytest.approx(SURE_FROM * (c / SURE_FROM) ** BELOW_POWER)
        assert c < p * d < SURE_FROM and p >= pl and d >= di
    # one order throughout
    products = [a * b for a, b in (recounted(x, x) for x in np.linspace(0.05, 1.0, 40))]
    assert all(x < y for x, y in zip(products, products[1:]))
    assert recounted(0.0, 0.7) == (0.0, 0.7)


def test_the_maps_edges_take_their_counted_share(lora_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every edge the fitted maps read (not a near-tie parent's count, a tree on the prior's, a typed relation's,
    a capped chain or root's only child) reads its maps' confidence raised by its range's power, parts alike; no
    edge crosses SURE_FROM either way; a re-solve reads the same."""
    # The merged LoRA's own edges then read their counted placement (rank_placed_edges, its own test below): off
    # here, so that what is left is the power alone.
    monkeypatch.setattr(confidence, "LORA_PLACEMENT", 0.0)
    stats = compute_statistics(discover([lora_tree]), device="cpu")
    rec = recover(stats)
    with monkeypatch.context() as m:
        m.setattr(confidence, "SURE_POWER", 1.0)  # the maps as they were, without the count
        m.setattr(confidence, "BELOW_POWER", 1.0)
        before = {(e.parent, e.child): e for e in recover(stats).edges}
    readings = {m: t for t in rec.trees for m in t.members}
    assert rec.distance_matrix is not None
    first, second = chain_tie_edges(list(rec.edges), np.asarray(rec.distance_matrix), list(rec.model_ids))
    capped = sole_child_edges([(e.parent, e.child, e.relation, e.constrained) for e in rec.edges]) | set(first) \
        | set(second)
    seen = {"sure": 0, "below": 0}
    for e in rec.edges:
        b = before[(e.parent, e.child)]
        own = (not e.chosen_by_tie and readings[e.child].direction_basis != "prior"
               and e.relation in SKELETON_RELATIONS and (e.parent, e.child) not in capped)
        if own:
            sure = b.confidence >= SURE_FROM
            seen["sure" if sure else "below"] += 1
            a = SURE_POWER if sure else math.log(SURE_FROM * (b.confidence / SURE_FROM) ** BELOW_POWER) / math.log(
                b.confidence)
            assert e.confidence == pytest.approx(b.confidence ** a) and e.confidence >= b.confidence
            assert e.placement_confidence == pytest.approx(b.placement_confidence ** a)
            assert e.direction_confidence == pytest.approx(b.direction_confidence ** a)
        assert (e.confidence >= SURE_FROM) == (b.confidence >= SURE_FROM)
    assert seen["sure"] and seen["below"], seen
    # A re-solve (what a local correction runs) reads them the same way.
    again = {(e.parent, e.child): e.confidence for e in resolve(rec, Constraints()).edges}
    assert all(again[(e.parent, e.child)] == pytest.approx(e.confidence) for e in rec.edges)


def test_rank_placed_raises_placement_and_never_across_sure_from() -> None:
    assert rank_placed(0.90, 0.99, 1.0) == pytest.approx(LORA_PLACEMENT)
    assert rank_placed(0.995, 0.99, 1.0) == 0.995  # never below what the map read
    assert rank_placed(0.90, 0.99, 0.5) == 0.90  # far from the "unrelated" threshold's side: the map stands
    # an edge below SURE_FROM stays at or below RANK_PLACED_BELOW, never lowered
    assert rank_placed(0.85, 0.82, 1.0) * 0.82 == pytest.approx(RANK_PLACED_BELOW)
    assert rank_placed(0.95, 0.842, 1.0) == 0.95
    assert rank_placed(0.88, 0.52, 1.0) == pytest.approx(LORA_PLACEMENT)


def test_merged_lora_edges_read_their_counted_placement(lora_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 (merged LoRA under-confident): every edge the LoRA detector types ``lora`` is placed right (the
    count LORA_PLACEMENT rests on), and reads its placement at that count times the related term, not the
    placement map's margin (0.85-0.97 on this tree); the direction part is untouched, no edge crosses SURE_FROM,
    and a re-solve reads the same."""
    stats = compute_statistics(discover([lora_tree]), device="cpu")
    rec = recover(stats)
    with monkeypatch.context() as m:
        m.setattr(confidence, "LORA_PLACEMENT", 0.0)  # the placement map alone
        before = {(e.parent, e.child): e for e in recover(stats).edges}
    truth = {tuple(t) for t in load_truth(lora_tree / "truth.json")}
    problem = rec.problem
    assert problem is not None
    ix = {m: i for i, m in enumerate(problem.ids)}
    lora = [e for e in rec.edges if e.relation == "lora" and not e.chosen_by_tie]
    assert len(lora) >= 5, [e.relation for e in rec.edges]
    for e in lora:
        b = before[(e.parent, e.child)]
        assert (e.parent, e.child) in truth or (e.child, e.parent) in truth  # placed right, as counted
        related = related_confidence(float(problem.relative[ix[e.parent], ix[e.child]]), problem.threshold)
        assert e.placement_confidence >= b.placement_confidence
        assert e.confidence == pytest.approx(e.placement_confidence * e.direction_confidence)
        assert e.confidence >= b.confidence - 1e-12
        if b.confidence >= SURE_FROM:
            assert e.placement_confidence == pytest.approx(max(b.placement_confidence, LORA_PLACEMENT * related))
        else:
            assert e.confidence < SURE_FROM
    gained = np.mean([e.placement_confidence - before[(e.parent, e.child)].placement_confidence for e in lora])
    assert gained > 0.01, gained
    assert np.mean([e.placement_confidence for e in lora]) > 0.97
    # Other edges (a prune, a typed relation) are left as they were.
    for e in rec.edges:
        if e.relation != "lora":
            assert e.confidence == pytest.approx(before[(e.parent, e.child)].confidence)
    again = {(e.parent, e.child): e for e in resolve(rec, Constraints()).edges}
    assert all(again[(e.parent, e.child)].confidence == pytest.approx(e.confidence) for e in rec.edges)
