"""The fitted maps' sure edges read their counted share (issue 12, item 5; :func:`.confidence.sure_raised`).
Real training of tiny models with a fitting recipe of ``benchmarks/generalise.py`` (:mod:`mother_zoo.variety`),
no synthetic weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from mother_core import Constraints, compute_statistics, discover, recover, resolve
from mother_core.recovery import confidence
from mother_core.recovery.confidence import SKELETON_RELATIONS, SURE_FROM, SURE_POWER, sure_raised


@pytest.fixture(scope="module")
def lora_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mother_zoo.variety import Collection, Recipe, generate_collection

    # A fitting recipe (generalise.py's fit-vit-lora-qv) with a seed of its own: merged-LoRA trees are where
    # the maps read most edges sure.
    qv = Recipe("fit-vit-lora-qv", "vit", method="lora", lora_rank=4, lora_targets="qv", lora_alpha="r",
                lr=(5e-4, 5e-3))
    return generate_collection(Collection("sure-test", ((qv, 251),)), tmp_path_factory.mktemp("sure"))


def test_sure_raised_lifts_only_what_already_reads_sure() -> None:
    assert 0.0 < SURE_POWER < 1.0
    # below SURE_FROM: as the maps say, however close
    assert sure_raised(0.9, 0.88) == (0.9, 0.88)
    # at or above it: both parts raised by the one power, their product with them, the order kept
    p, d = sure_raised(0.9, 0.9)
    assert (p, d) == pytest.approx((0.9 ** SURE_POWER, 0.9 ** SURE_POWER)) and p * d > 0.81
    assert sure_raised(0.95, 0.95)[0] * sure_raised(0.95, 0.95)[1] > p * d
    assert sure_raised(1.0, 1.0) == (1.0, 1.0)


def test_edges_the_maps_read_sure_take_the_counted_share(lora_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every edge the maps put at >= SURE_FROM reads its maps' confidence ** SURE_POWER (parts alike), every
    other edge reads as before: no edge crosses SURE_FROM that did not stand there; a re-solve reads the same."""
    stats = compute_statistics(discover([lora_tree]), device="cpu")
    rec = recover(stats)
    with monkeypatch.context() as m:
        m.setattr(confidence, "SURE_POWER", 1.0)  # the maps as they were, without the count
        before = {(e.parent, e.child): e for e in recover(stats).edges}
    readings = {m: t for t in rec.trees for m in t.members}
    raised = 0
    for e in rec.edges:
        b = before[(e.parent, e.child)]
        own = not e.chosen_by_tie and readings[e.child].direction_basis != "prior" and e.relation in SKELETON_RELATIONS
        if own and b.confidence >= SURE_FROM:
            raised += 1
            assert e.confidence == pytest.approx(b.confidence ** SURE_POWER)
            assert e.placement_confidence == pytest.approx(b.placement_confidence ** SURE_POWER)
            assert e.direction_confidence == pytest.approx(b.direction_confidence ** SURE_POWER)
        else:
            assert e.confidence == pytest.approx(b.confidence)
        assert (e.confidence >= SURE_FROM) == (b.confidence >= SURE_FROM)
    assert raised, [round(e.confidence, 3) for e in before.values()]
    # A re-solve (what a local correction runs) reads them the same way.
    again = {(e.parent, e.child): e.confidence for e in resolve(rec, Constraints()).edges}
    assert all(again[(e.parent, e.child)] == pytest.approx(e.confidence) for e in rec.edges)
