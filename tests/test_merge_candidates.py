"""Exact merges of four whose inputs a plain nearest-candidates search misses (issue 11, profile C).

Real mergekit linear merges (``run_merge``) of four models written by ``transformers`` (a small Llama
base, fine-tunes whose synthetic updates change every entry, merged LoRAs of the base), recovered from
the weights: (1) a merge of four sits nearer its base and the base's near-copies than to its inputs, so
its farthest input ranks beyond ``merge.CANDIDATES``; (2) an input with a small weight leaves, when left
out, a residual under ``merge.EXACT_NOISE``, which fewer parents used to win with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import PairLayers, pair_layers
from mother_core.relations.merge import CANDIDATES, EXACT_NOISE, _total, affine_fit
from mother_core.stats.result import WeightStatistics
from tests.test_sparse_merge import _fine_tune, _llama, _merged_lora, _mergekit_weighted


def _family(root: Path, loras: int, weights: tuple[float, float, float, float], far: float) -> None:
    base = _llama(0)
    family = {"base": base, "ft_a": _fine_tune(base, 1), "ft_b": _fine_tune(base, 2), "ft_c": _fine_tune(base, 3),
              "ft_d": _fine_tune(base, 4, scale=far)}
    for k in range(loras):
        family[f"lora{k}"] = _merged_lora(base, 10 + k)
    for name, model in family.items():
        model.save_pretrained(root / name, safe_serialization=True)
    _mergekit_weighted(root / "merged", "linear", None,
                       [(root / m, w) for m, w in zip(("ft_a", "ft_b", "ft_c", "ft_d"), weights)])


def _merged_family(root: Path, **family: Any) -> tuple[WeightStatistics, PairLayers, list[str], int]:
    """:func:`_family` under ``root`` read in one pass: (statistics, pair layers, model ids, the merge's index)."""
    pytest.importorskip("mergekit")
    pytest.importorskip("transformers")
    _family(root, **family)
    stats = compute_statistics(discover([root]), device="cpu")
    ids = list(stats.model_ids)
    return stats, pair_layers(stats), ids, ids.index("merged")


@pytest.mark.xdist_group("merge-candidates")
def test_a_linear_merge_of_four_with_its_farthest_input_beyond_the_candidates(tmp_path):
    stats, pl, ids, c = _merged_family(tmp_path, loras=4, weights=(0.3, 0.3, 0.3, 0.1), far=0.12)
    order = sorted((p for p in range(len(ids)) if p != c), key=lambda p: _total(pl, c, p))
    assert order.index(ids.index("ft_d")) >= CANDIDATES  # the base and its four merged LoRAs crowd it out
    rec = recover(stats)
    assert rec.relation_of("merged") == Relation.MERGE.value
    assert set(rec.parents_of("merged")) == {"ft_a", "ft_b", "ft_c", "ft_d"}
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"merged"}


@pytest.mark.xdist_group("merge-candidates")
def test_a_small_weight_input_is_kept_when_it_explains_more_than_noise(tmp_path):
    stats, pl, ids, c = _merged_family(tmp_path, loras=0, weights=(0.32, 0.32, 0.30, 0.06), far=0.05)
    three = [ids.index(m) for m in ("ft_a", "ft_b", "ft_c")]
    dc = [_total(pl, c, p) for p in three]
    _, res = affine_fit(np.array(dc), np.array([[_total(pl, p, q) for q in three] for p in three]))
    assert res / min(dc) <= EXACT_NOISE  # three of the four already fit under the noise an exact merge leaves
    rec = recover(stats)
    assert set(rec.parents_of("merged")) == {"ft_a", "ft_b", "ft_c", "ft_d"}


def _two_far_family(root: Path, method: str) -> None:
    """A base, two fine-tunes of small updates, two of updates three times theirs, five merged LoRAs of the base, and
    ``method`` (mergekit, no base) of the four fine-tunes, the two far ones weighted most."""
    base = _llama(0)
    family = {"base": base, "ft_a": _fine_tune(base, 1), "ft_b": _fine_tune(base, 2),
              "ft_c": _fine_tune(base, 3, scale=0.15), "ft_d": _fine_tune(base, 4, scale=0.15)}
    for k in range(5):
        family[f"lora{k}"] = _merged_lora(base, 10 + k)
    for name, model in family.items():
        model.save_pretrained(root / name, safe_serialization=True)
    _mergekit_weighted(root / "merged", method, None,
                       [(root / m, w) for m, w in zip(("ft_a", "ft_b", "ft_c", "ft_d"), (0.2, 0.2, 0.3, 0.3))])


@pytest.mark.xdist_group("merge-candidates")
@pytest.mark.parametrize("method", ["multislerp", "linear"])
def test_a_merge_of_four_with_two_inputs_beyond_the_candidates(tmp_path, method):
    """Both heavy inputs of a merge of four without a base rank behind the base and its near-copies
    (``merge.FAR_INPUTS``); the merge is read with its four parents, and nothing else is read as a merge."""
    pytest.importorskip("mergekit")
    pytest.importorskip("transformers")
    _two_far_family(tmp_path, method)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = list(stats.model_ids)
    pl, c = pair_layers(stats), ids.index("merged")
    order = sorted((p for p in range(len(ids)) if p != c), key=lambda p: _total(pl, c, p))
    assert min(order.index(ids.index("ft_c")), order.index(ids.index("ft_d"))) >= CANDIDATES
    rec = recover(stats)
    assert rec.relation_of("merged") == Relation.MERGE.value
    assert set(rec.parents_of("merged")) == {"ft_a", "ft_b", "ft_c", "ft_d"}
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"merged"}


@pytest.mark.xdist_group("merge-candidates")
def test_a_completed_three_does_not_pre_empt_the_four_of_a_linear_merge(tmp_path):
    """A linear merge of four (mergekit, exact up to rounding) whose inputs are two fine-tunes of the base, a near child
    of one of them (a small further update) and a far fine-tune beyond the candidates (four merged LoRAs crowd it out,
    as profile C seed 57's merged LoRA input): two nearest and the far one complete to a three under
    ``merge.EXACT_NOISE`` (the left-out near child's small update), which main returned before trying the fours. The
    four leave only rounding and are read."""
    pytest.importorskip("mergekit")
    pytest.importorskip("transformers")
    base = _llama(0)
    family = {"base": base, "ft_a": _fine_tune(base, 1), "ft_b": _fine_tune(base, 2),
              "ft_d": _fine_tune(base, 4, scale=0.12)}
    family["ft_e"] = _fine_tune(family["ft_b"], 5, scale=0.01)
    for k in range(4):
        family[f"lora{k}"] = _merged_lora(base, 10 + k)
    for name, model in family.items():
        model.save_pretrained(tmp_path / name, safe_serialization=True)
    _mergekit_weighted(tmp_path / "merged", "linear", None,
                       [(tmp_path / m, w) for m, w in zip(("ft_a", "ft_b", "ft_e", "ft_d"), (0.3, 0.25, 0.3, 0.15))])
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = list(stats.model_ids)
    pl, c = pair_layers(stats), ids.index("merged")
    order = sorted((p for p in range(len(ids)) if p != c), key=lambda p: _total(pl, c, p))
    assert order.index(ids.index("ft_d")) >= CANDIDATES
    three = [ids.index(m) for m in ("ft_a", "ft_e", "ft_d")]
    dc = np.array([_total(pl, c, p) for p in three])
    _, res = affine_fit(dc, np.array([[_total(pl, p, q) for q in three] for p in three]))
    assert res / dc.min() <= EXACT_NOISE  # a completed three, under the noise an exact merge leaves
    rec = recover(stats)
    assert rec.relation_of("merged") == Relation.MERGE.value
    assert set(rec.parents_of("merged")) == {"ft_a", "ft_b", "ft_e", "ft_d"}  # main: ft_a, ft_e, ft_d
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"merged"}
