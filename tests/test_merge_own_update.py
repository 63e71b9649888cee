"""A drop-and-rescale merge's residual is measured on its own update (issue 11, profile C).

DARE and DELLA (Yu et al. 2023; Deep et al. 2024) keep each task-vector entry with probability p and
divide the survivors by p: what no combination of the inputs explains is the dropped part of the merge's
own update, about (1 - p) of it (more where DELLA's normalisation divides a lone survivor by its own
weight), and the base's entries survive where every input dropped theirs. Weights summing past 1 and the
rescaling carry the merge away from its base, towards and past its heaviest input, so on the nearest
parent's squared distance the same residual reads 0.8-0.9, over ``RESIDUAL_MAX_EQUAL`` or close to it,
and so does the residual off the child's own direction; on the merge's own update (its squared distance
to the base its entries name) it is 0.4-0.6. Real training (AdamW steps) and real mergekit merges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from checkpoint_factory import llama_tree
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import EQUAL_SHARE, RESIDUAL_MAX_EQUAL, affine_fit

TREE = (("m-a", "m-root", 1), ("m-b", "m-root", 2), ("m-c", "m-root", 3), ("m-a1", "m-a", 4), ("m-a2", "m-a", 5))


def _family(d: Path, method: str, density: float, inputs: tuple[tuple[str, float], ...]):
    """A root, three fine-tunes of it, two of the first, and a mergekit ``method`` merge of ``inputs`` on the
    root (float32: only dropping keeps the root's entries); returns the pass's statistics."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    llama_tree(d, TREE, 20, 3e-3, 8, 2e-3)
    merge = {"merge_method": method, "dtype": "float32", "base_model": str(d / "m-root"),
             "models": [{"model": str(d / m), "parameters": {"weight": w, "density": density, "epsilon": 0.085}}
                        for m, w in inputs]}
    run_merge(MergeConfiguration.model_validate(merge), str(d / "m-merge"),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))
    return compute_statistics(discover([d]), device="cpu")


def _residuals(stats, parents: tuple[str, ...]) -> tuple[float, float, float]:
    """(share of the root's entries the merge keeps, residual / own update, residual / nearest parent)."""
    at = {m.id: i for i, m in enumerate(stats.models)}
    pl = pair_layers(stats)
    c, idx = at["m-merge"], np.array([at[m] for m in parents])
    total = pl.sq.sum(axis=0)
    dc = total[c, idx]
    _, res = affine_fit(dc, total[idx[:, None], idx[None, :]])
    return float(pl.equal_share[c, idx[0]]), res / dc[0], res / dc.min()


def _only_merge_is_the_merge(rec) -> None:
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"m-merge"}
    for m, p, _ in TREE:
        assert rec.parents_of(m) == [p]


@pytest.mark.xdist_group("sparse-merge")
def test_a_della_linear_merge_beyond_the_cap_on_its_nearest_parent_is_found_on_its_own_update(tmp_path):
    """DELLA-linear, density 0.4, weights 0.3 / 0.3 / 0.9: every fit of the merge leaves more than
    ``RESIDUAL_MAX_EQUAL`` of its nearest parent's (the heaviest input's) squared distance, 0.55 of its own
    update. Main read it as a fine-tune of its heaviest input; it is found with its base and its three
    inputs."""
    pytest.importorskip("mergekit")
    parents = ("m-root", "m-a", "m-c", "m-b")
    stats = _family(tmp_path, "della_linear", 0.4, (("m-a", 0.3), ("m-c", 0.3), ("m-b", 0.9)))
    share, own, nearest = _residuals(stats, parents)
    assert share >= EQUAL_SHARE  # (1 - 0.4)^3 of the root's entries: the entries name the base
    assert own < 0.6 and nearest > RESIDUAL_MAX_EQUAL  # under the cap on its own update only
    rec = recover(stats)
    assert rec.relation_of("m-merge") == Relation.MERGE.value  # without the rule: a fine-tune of m-b
    assert set(rec.parents_of("m-merge")) == set(parents)
    _only_merge_is_the_merge(rec)
