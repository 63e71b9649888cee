"""The subspace direction cue: a fine-tune's update lies in the child's own top singular directions, not
the parent's (issue 12; :func:`mother_core.recovery.features.subspace_trend`; benchmarks/RESULTS.md, issue 12,
"Full fine-tune trees: wrong edges by cause and orienting cues measured"). Real training of tiny models with
three fitting recipes of ``benchmarks/generalise.py`` (:mod:`mother_zoo.variety`) and the seeds of the
fitting-more collections whose edges the cue turned: no synthetic weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.evaluate import load_truth
from mother_core.recovery.features import pair_evidence, select_layers, subspace_trend
from mother_core.stats.result import WeightStatistics


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("direction-subspace")

@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mother_zoo.variety import Collection, Recipe, generate_collection

    # benchmarks/generalise.py's fitting recipes with the seeds they have in fitx-1 (a base and one child by
    # partial fine-tuning, 226; AdamW ViT fine-tunes, 220) and fitx-0 (an SGD Llama tree, 202). Together, the
    # kurtosis, norm and scale cues reverse three of their edges, the base -> child pair among them.
    family = Recipe("fit-vit-family", "vit", method="partial", shape=(1,), child_steps=(60, 100), lr=(3e-4, 1e-3))
    vit = Recipe("fit-vit-fft", "vit", method="fft", optimizer="adamw", weight_decay=0.01)
    llama = Recipe("fit-llama-fft", "llama", method="fft", optimizer="sgd", lr=(3e-3, 2e-2), weight_decay=0.0)
    return generate_collection(Collection("subspace-test", ((family, 226), (vit, 220), (llama, 202))),
                               tmp_path_factory.mktemp("subspace"))


@pytest.fixture(scope="module")
def stats(trees: Path) -> WeightStatistics:
    return compute_statistics(discover([trees]), device="cpu")


def test_the_update_lies_in_the_childs_own_directions(trees: Path, stats: WeightStatistics) -> None:
    truth = load_truth(trees / "truth.json")
    mask = select_layers(stats, "matrices")
    trend = subspace_trend(stats, mask)
    ids = list(stats.model_ids)
    # Antisymmetric, in [-1, 1]: reading the pair the other way swaps parent and child.
    assert np.allclose(trend, -trend.T) and np.abs(trend).max() <= 1.0
    votes = np.array([trend[ids.index(p), ids.index(c)] for p, c in truth])
    # Alone it points the true way on nearly every edge of these trees (fitting collections: AUROC 0.84 on
    # full fine-tuning edges), the edges the other cues reverse included.
    assert (votes > 0).mean() >= 0.85
    # The norm-growth cue alone is right less often here: the new cue carries information it lacks.
    growth = pair_evidence(stats, mask).norm_growth
    assert (votes > 0).sum() > sum(growth[ids.index(p), ids.index(c)] > 0 for p, c in truth)


def test_the_subspace_cue_turns_reversed_edges(trees: Path, stats: WeightStatistics) -> None:
    truth = set(load_truth(trees / "truth.json"))
    with_cue = recover(stats)
    without = recover(stats, RecoverySettings(direction_cues="kurtosis+norm+scale"))
    on = {(e.parent, e.child) for e in with_cue.edges}
    off = {(e.parent, e.child) for e in without.edges}
    assert len(on & truth) >= len(off & truth) + 3
    # Only directions move: every edge the cue changes is an edge it turned around, now pointing the true way.
    assert {(c, p) for p, c in off - on} == on - off
    assert on - off <= truth
    family = next(t for t in json.loads((trees / "truth.json").read_text())["meta"]["trees"]
                  if t["recipe"] == "fit-vit-family")["models"]
    assert {(e.parent, e.child) for e in with_cue.edges if e.child in family} <= truth  # the base-child pair
    for e in with_cue.edges:
        if (e.parent, e.child) in on - off:
            assert e.cues["subspace"] > 0


def test_the_edge_page_says_the_subspace_vote(stats: WeightStatistics) -> None:
    from explorer_ui.views import cue_note

    e = recover(stats).edges[0]
    assert "subspace" in e.cues
    assert "update in the child's own directions" in cue_note(e)


def test_one_svd_per_skeleton_serves_both_spectral_cues(stats: WeightStatistics,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The effective-rank cue (singular values) and the subspace cue (top singular directions) read the same
    skeletons: a recovery decomposes each model's skeleton of a layer once, not once per cue."""
    import collections

    import torch

    from mother_core.recovery.features import ERANK_MAX_LAYERS, skeleton_slots

    mask = select_layers(stats, "matrices")
    # The bytes of each model's skeleton of a layer -> how many models hold exactly those (a layer that partial
    # fine-tuning froze is the same in parent and child).
    holders: collections.Counter[bytes] = collections.Counter(
        sk.tobytes() for s in skeleton_slots(stats, mask, ERANK_MAX_LAYERS)
        for sk in stats.skeletons[s].astype(np.float64))
    decomposed: collections.Counter[bytes] = collections.Counter()

    def counting(decompose: Callable[..., Any]) -> Callable[..., Any]:
        def run(a: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            for row in np.asarray(a, dtype=np.float64):
                if row.tobytes() in holders:
                    decomposed[row.tobytes()] += 1
            return decompose(a, *args, **kwargs)
        return run

    monkeypatch.setattr(torch.linalg, "svd", counting(torch.linalg.svd))
    monkeypatch.setattr(torch.linalg, "svdvals", counting(torch.linalg.svdvals))
    rec = recover(stats, RecoverySettings())
    votes = rec.problem.cue_votes if rec.problem is not None else {}
    assert {"effective_rank", "subspace"} <= set(votes)  # both cues were read (a set this small shows both)
    assert decomposed
    assert all(decomposed[b] <= holders[b] for b in decomposed), "a skeleton was decomposed once per cue"
