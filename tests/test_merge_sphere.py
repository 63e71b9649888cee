"""Merges renormalised onto the sphere (issue 11, profile C): mergekit's Karcher mean and Multi-SLERP.

Real mergekit merges (``run_merge``, no base) of fine-tunes written by ``transformers`` (a small Llama
base, fine-tunes whose synthetic updates change every entry). Both put each tensor in the inputs' linear
span with coefficients summing past 1 (``mergekit/merge_methods/karcher.py``, ``multislerp.py``), so the
chord misses the merge along the merge itself: far-apart inputs leave more than ``merge.EXACT`` on all
layers, while off the child's own direction (``merge.off_ray_ratio``) the fit stays exact. On main both
read as fine-tunes of one input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import EXACT, _total, affine_fit, off_ray_ratio
from tests.test_sparse_merge import _fine_tune, _llama, _mergekit_weighted

INPUTS = ("ft_a", "ft_b", "ft_c", "ft_d")


def _family(root: Path, method: str, weights: tuple[float, ...]) -> None:
    base = _llama(0)
    # Updates of 0.4 of each tensor's spread: inputs ~0.3 apart in relative squared distance, far enough
    # for the arc to leave the chord by more than EXACT of the distance to the nearest input.
    family = {"base": base, **{name: _fine_tune(base, k + 1, scale=0.4) for k, name in enumerate(INPUTS)}}
    for name, model in family.items():
        model.save_pretrained(root / name, safe_serialization=True)
    _mergekit_weighted(root / "merged", method, None, [(root / m, w) for m, w in zip(INPUTS, weights)])


@pytest.mark.xdist_group("merge-sphere")
@pytest.mark.parametrize("method, weights", [("karcher", (1.0, 1.0, 1.0, 1.0)),
                                             ("multislerp", (0.4, 0.35, 0.25))])
def test_a_merge_on_the_sphere_is_exact_off_the_ray(tmp_path, method, weights):
    pytest.importorskip("mergekit")
    pytest.importorskip("transformers")
    _family(tmp_path, method, weights)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    pl, ids = pair_layers(stats), stats.model_ids
    c = ids.index("merged")
    parents = [ids.index(m) for m in INPUTS[:len(weights)]]
    dc = np.array([_total(pl, c, p) for p in parents])
    _, res = affine_fit(dc, np.array([[_total(pl, p, q) for q in parents] for p in parents]))
    assert res / dc.min() > EXACT  # on all layers the chord misses the arc
    assert off_ray_ratio(pl, c, tuple(parents)) < EXACT / 4  # off the merge's own direction it is exact
    rec = recover(stats)
    assert rec.relation_of("merged") == Relation.MERGE.value
    assert set(rec.parents_of("merged")) == set(INPUTS[:len(weights)])
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"merged"}
