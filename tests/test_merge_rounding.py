"""Equal entries beyond what bf16 rounding keeps name a sparse merge's base (issue 11, profile C).

In bf16 a change of less than half a unit in the last place of a value rounds back to it, so every child
keeps some of its parent's entries; a Breadcrumbs merge of high density drops only its inputs' smallest
(and largest) task-vector entries and keeps few more. Its share with its base stays under
``EQUAL_SHARE`` (set on float32 sets), but it is several times what rounding alone keeps, while
fine-tunes keep about what rounding predicts (``merge.rounding_ratio``). Real training (AdamW steps,
stored in bf16) and a real mergekit merge.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoint_factory import llama_tree
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import CHANCE_FACTOR, EQUAL_SHARE, PARSIMONY, reversal_factor, rounding_ratio


def _run_mergekit(merge: dict, out) -> None:
    """Run mergekit on ``merge`` (a configuration dict) into ``out``, CPU, no remote code, seed 0."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


@pytest.mark.xdist_group("sparse-merge")
def test_a_dense_breadcrumbs_merge_in_bf16_is_named_by_entries_beyond_rounding(tmp_path):
    pytest.importorskip("mergekit")
    # each fine-tune starts from the root as stored (bf16), as a user's training run loads it
    tree = (("m-a", "m-root", 1), ("m-b", "m-root", 2), ("m-c", "m-root", 3), ("m-d", "m-root", 4))
    llama_tree(tmp_path, tree, 20, 3e-3, 8, 2e-3, dtype=torch.bfloat16)
    merge = {"merge_method": "breadcrumbs", "dtype": "float32", "out_dtype": "bfloat16",
             "base_model": str(tmp_path / "m-root"),
             "models": [{"model": str(tmp_path / m), "parameters": {"weight": w, "density": 0.75, "gamma": 0.02}}
                        for m, w in (("m-a", 0.4), ("m-b", 0.35), ("m-c", 0.45))]}
    _run_mergekit(merge, tmp_path / "m-merge")

    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = [m.id for m in stats.models]
    at = {m: i for i, m in enumerate(ids)}
    share, ratio = pair_layers(stats).equal_share, rounding_ratio(stats)
    c, root = at["m-merge"], at["m-root"]
    assert share[c, root] < EQUAL_SHARE  # under the float32 bar: the test could fail without the rule
    assert ratio[c, root] >= CHANCE_FACTOR
    others = [at[m] for m in ids if m != "m-merge"]
    off = ratio[np.ix_(others, others)][~np.eye(len(others), dtype=bool)]
    assert np.nanmax(off) < CHANCE_FACTOR  # fine-tunes keep about what rounding keeps

    rec = recover(stats)
    assert rec.relation_of("m-merge") == Relation.MERGE.value  # without the rule: a fine-tune of the root
    got = set(rec.parents_of("m-merge"))
    assert "m-root" in got and got <= {"m-root", "m-a", "m-b", "m-c"} and len(got) >= 3
    assert {m for m in ids if rec.relation_of(m) == Relation.MERGE.value} == {"m-merge"}
    for m in ("m-a", "m-b", "m-c", "m-d"):
        assert rec.parents_of(m) == ["m-root"]


@pytest.mark.xdist_group("sparse-merge")
def test_a_base_read_as_the_merge_of_its_own_shrunk_merge_is_a_coin_flip(tmp_path):
    """Fine-tunes trained with weight decay shrink, and so does a Breadcrumbs-TIES merge of them (weights
    summing to 0.9): its base then reads as a sparse merge of that merge and the base's children, the
    merge taken as the base (their entries are shared; the base's norm is the larger, as a merge's would
    be). Read the right way round the merge leaves a third of that residual, so the entries tell the pair
    but not its direction, and the edges must read as a coin flip (main: 0.56; on profile C seed 23 such
    a reading read 0.99)."""
    pytest.importorskip("mergekit")
    tree = (("m-a", "m-root", 1), ("m-b", "m-root", 2), ("m-c", "m-root", 3), ("m-a1", "m-a", 4))
    llama_tree(tmp_path, tree, 20, 3e-3, 8, 2e-3, decay=1.0, dtype=torch.bfloat16)
    merge = {"merge_method": "breadcrumbs_ties", "dtype": "float32", "out_dtype": "bfloat16",
             "base_model": str(tmp_path / "m-root"),
             "models": [{"model": str(tmp_path / m), "parameters": {"weight": w, "density": 0.41, "gamma": 0.02}}
                        for m, w in (("m-a1", 0.315), ("m-b", 0.27), ("m-c", 0.315))]}
    _run_mergekit(merge, tmp_path / "m-merge")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"))
    merges = [e for e in rec.edges if e.relation == Relation.MERGE.value]
    assert merges  # the backwards reading is there (the engine does not orient this pair)
    for e in merges:
        if e.child == "m-root" or "m-root" not in rec.parents_of(e.child):
            assert e.relation_confidence == pytest.approx(0.5, abs=0.02)


def test_a_merge_read_no_better_than_its_reverse_is_a_coin_flip():
    """The entries name the pair, not its direction: the confidence keeps its value only where the
    reading beats the one the other way round by the parsimony factor, and is a coin flip where the
    reverse fits as well or better (profile C seed 23: a root read as a merge of its own merge, 0.455
    against 0.228 the other way round)."""
    assert reversal_factor(0.2, 0.2 / PARSIMONY) == pytest.approx(1.0)
    assert reversal_factor(0.1, 0.5) == 1.0
    assert reversal_factor(0.455, 0.228) == 0.0
    assert reversal_factor(0.3, 0.3) == 0.0
    assert 0.0 < reversal_factor(0.4, 0.5) < 1.0
