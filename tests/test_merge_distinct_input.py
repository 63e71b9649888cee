"""Inputs a merge's residual barely tells apart (issue 11, profile C; branch ``merges3``).

Two readings real mergekit merges of really trained models get wrong on main:

- a sparse merge (Breadcrumbs-TIES, float32, its base named by the entries it keeps) of two few-step fine-tunes
  and one trained far harder, the way profile C merges two fine-tunes with a merged LoRA: the large update
  dominates what the inputs explain, the merge's trimmed entries dominate what they leave, and its base with two
  of the inputs explains within ``PARSIMONY`` of what all of them explain, so main reads one input fewer; the
  left-out input lowers the residual far more than any relative that could take its place
  (``merge._distinct_input``);
- a Model Stock merge of near-orthogonal fine-tunes (each input at t / k per tensor, t from the angle between
  the task vectors): exact per layer, each input under ``MIN_WEIGHT`` on all layers, so main reads no merge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps, tiny_llama
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import EQUAL_SHARE, MIN_WEIGHT, PARSIMONY, affine_fit, find_merges


def _run_mergekit(merge: dict, out: Path) -> None:
    """Run mergekit on ``merge`` (a configuration dict) into ``out``, CPU, no remote code, seed 0."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


def _train(d: Path, tree: tuple[tuple[str, str, int, int, float], ...], root_steps: int, hidden: int = 48) -> None:
    """``m-root`` (seed 0, ``root_steps`` Adam steps at 3e-3), then each ``(name, parent, seed, steps, lr)`` of
    ``tree`` loaded from its parent as stored and trained on task ``seed``; float32."""
    from transformers import LlamaForCausalLM

    adam_steps(tiny_llama(seed=0, hidden=hidden, intermediate=2 * hidden), 0, root_steps, 3e-3).save_pretrained(
        d / "m-root")
    for name, parent, seed, steps, lr in tree:
        model = LlamaForCausalLM.from_pretrained(d / parent, dtype=torch.float32)
        adam_steps(model, seed, steps, lr).save_pretrained(d / name)


def _ratio(stats, child: str, parents: tuple[str, ...]) -> float:
    at = {m.id: i for i, m in enumerate(stats.models)}
    total = pair_layers(stats).sq.sum(axis=0)
    idx = np.array([at[m] for m in parents])
    dc = total[at[child], idx]
    _, res = affine_fit(dc, total[idx[:, None], idx[None, :]])
    return res / float(dc.min())


@pytest.mark.xdist_group("sparse-merge")
def test_a_sparse_merge_input_small_beside_another_is_not_left_out(tmp_path):
    pytest.importorskip("mergekit")
    # m-b2 is trained four times harder than the other fine-tunes (profile C: a merged LoRA beside them)
    tree = (("m-a", "m-root", 1, 8, 2e-3), ("m-b", "m-root", 2, 8, 2e-3), ("m-c", "m-root", 3, 8, 2e-3),
            ("m-a1", "m-a", 4, 8, 2e-3), ("m-b1", "m-b", 5, 8, 2e-3), ("m-b2", "m-b", 6, 8, 8e-3))
    _train(tmp_path, tree, 20)
    merge = {"merge_method": "breadcrumbs_ties", "dtype": "float32", "base_model": str(tmp_path / "m-root"),
             "models": [{"model": str(tmp_path / m), "parameters": {"weight": w, "density": 0.45, "gamma": 0.02}}
                        for m, w in (("m-a1", 0.45), ("m-b2", 0.3), ("m-b1", 0.5))]}
    _run_mergekit(merge, tmp_path / "m-merge")
    stats = compute_statistics(discover([tmp_path]), device="cpu")

    at = {m.id: i for i, m in enumerate(stats.models)}
    assert pair_layers(stats).equal_share[at["m-merge"], at["m-root"]] >= EQUAL_SHARE  # the base is named
    full = _ratio(stats, "m-merge", ("m-root", "m-a1", "m-b2", "m-b1"))
    fewer = _ratio(stats, "m-merge", ("m-root", "m-a1", "m-b2"))
    assert 1.0 - fewer >= PARSIMONY * (1.0 - full)  # the explained share alone reads one input fewer

    rec = recover(stats)
    assert rec.relation_of("m-merge") == Relation.MERGE.value
    assert set(rec.parents_of("m-merge")) == {"m-root", "m-a1", "m-b1", "m-b2"}  # main: without m-b1
    assert {m for m in rec.model_ids if rec.relation_of(m) == Relation.MERGE.value} == {"m-merge"}
    for name, parent, *_ in tree:
        assert rec.parents_of(name) == [parent]


@pytest.mark.xdist_group("sparse-merge")
def test_a_model_stock_merge_of_near_orthogonal_fine_tunes_keeps_every_input(tmp_path):
    pytest.importorskip("mergekit")
    tree = (("m-a", "m-root", 1, 12, 3e-3), ("m-b", "m-root", 2, 12, 3e-3), ("m-c", "m-root", 3, 12, 3e-3),
            ("m-a1", "m-a", 4, 12, 3e-3))
    _train(tmp_path, tree, 80, hidden=64)
    merge = {"merge_method": "model_stock", "dtype": "float32", "base_model": str(tmp_path / "m-root"),
             "models": [{"model": str(tmp_path / m)} for m in ("m-a", "m-b", "m-c")]}
    _run_mergekit(merge, tmp_path / "m-merge")
    stats = compute_statistics(discover([tmp_path]), device="cpu")

    ids = [m.id for m in stats.models]
    links = find_merges(stats, pair_layers(stats), np.zeros(len(ids), dtype=int), set())
    assert [ids[link.child] for link in links] == ["m-merge"]  # main: none
    link = links[0]
    assert {ids[p] for p in link.parents} == {"m-root", "m-a", "m-b", "m-c"}
    assert "model stock" in link.detail
    inputs = [w for p, w in zip(link.parents, link.weights) if ids[p] != "m-root"]
    assert max(inputs) < MIN_WEIGHT  # near-orthogonal task vectors: t / k under the whole-model floor
