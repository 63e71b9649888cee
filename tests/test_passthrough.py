"""Layer-stacking merges (mergekit ``passthrough`` with ``slices``; branch ``passthrough``, issue 11).

A frankenmerge stacks layer ranges of one or more models; a SOLAR-style depth up-scaling repeats one model's
overlapping ranges. The child is deeper than its parents and its layer ``k`` is a parent's layer ``j``, so the
streaming pass, which compares tensors of one name, sees only the wrong pairs: main reads both as fine-tunes of
the first slice's model (the second parent missing, the relation wrong) and a fine-tuned stack without its
original likewise. Real mergekit merges of really trained tiny Llama models (:mod:`tests.passthrough_family`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from passthrough_family import build

MERGE = Relation.MERGE.value


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> Path:
    pytest.importorskip("mergekit")
    d = tmp_path_factory.mktemp("passthrough")
    build(d, root_steps=12, ft_steps=6)
    return d


@pytest.fixture(scope="module")
def recovered(family):
    return recover(compute_statistics(discover([family]), device="cpu"))


def _detail(rec, child: str) -> str:
    return next(e.relation_detail for e in rec.edges if e.child == child)


@pytest.mark.xdist_group("passthrough")
def test_a_stacks_fine_tune_parents_no_model_lacking_its_layers(recovered):
    """A stack's fine-tune holds the stack's copies of its parents' layers, moved by its own update only: as the
    stack itself, it never parents a shallower model in the forest (typed profile S seeds 400-410, fitting: each
    hung a parent of a stack under the stack's fine-tune, an edge read ``distill`` by its shapes, 0 of 7
    right). It still parents its own copies, and the depth-pruned student keeps its teacher."""
    import numpy as np

    ids, cost = recovered.model_ids, recovered.problem.cost
    i = ids.index
    for parent in ("m-stack-ft", "m-stack-ft-bf16"):
        for child in ("m-a", "m-b", "m-root", "m-a-3"):
            assert np.isinf(cost[i(parent), i(child)]), (parent, child)  # main: finite
    assert recovered.parents_of("m-stack-ft-bf16") == ["m-stack-ft"]
    assert recovered.parents_of("m-a-3") == ["m-a"]


@pytest.mark.xdist_group("passthrough")
def test_a_two_parent_stack_is_a_merge_of_both(recovered):
    assert recovered.relation_of("m-stack") == MERGE  # main: finetune of m-a, m-b missing
    assert recovered.parents_of("m-stack") == ["m-a", "m-b"]
    assert _detail(recovered, "m-stack") == "passthrough m-a[0:3] + m-b[1:4]"  # mergekit's slices
    weights = {e.parent: e.merge_weight for e in recovered.edges if e.child == "m-stack"}
    assert weights == {"m-a": 0.5, "m-b": 0.5}  # the share of layers each gave


@pytest.mark.xdist_group("passthrough")
def test_a_depth_up_scaling_is_a_merge_of_its_one_parent(recovered):
    assert recovered.relation_of("m-upscale") == MERGE  # main: finetune
    assert recovered.parents_of("m-upscale") == ["m-a"]
    assert _detail(recovered, "m-upscale") == "passthrough m-a[0:3] + m-a[1:4]"
    edge = next(e for e in recovered.edges if e.child == "m-upscale")
    assert 0.5 < edge.relation_confidence < 1.0


@pytest.mark.xdist_group("passthrough")
def test_a_stack_parents_its_fine_tune_and_nothing_else_is_a_stack(recovered):
    assert recovered.parents_of("m-stack-ft") == ["m-stack"]  # a stack is a hub for its own layout
    assert recovered.relation_of("m-stack-ft") == Relation.FINETUNE.value
    assert recovered.parents_of("m-stack-ft-bf16") == ["m-stack-ft"]
    assert recovered.relation_of("m-stack-ft-bf16") == Relation.CONVERT.value
    for m in ("m-root", "m-stranger", "m-deep-stranger"):  # a deeper model whose layers are its own
        assert recovered.parents_of(m) == []
    assert recovered.parents_of("m-a") == recovered.parents_of("m-b") == ["m-root"]
    assert recovered.parents_of("m-a-3") == ["m-a"]  # a depth-pruned student: its teacher is no stack of it
    assert recovered.relation_of("m-a-3") == Relation.DISTILL.value
    # a model of the stacks' layout unrelated to them keeps its distances to its shallower student
    assert recovered.parents_of("m-deep-stranger-4") == ["m-deep-stranger"]
    assert {m for m in recovered.model_ids if recovered.relation_of(m) == MERGE} == {"m-stack", "m-upscale"}


@pytest.mark.xdist_group("passthrough")
def test_a_fine_tuned_stack_without_its_original_is_a_merge_of_the_stacked_models(family):
    models = [family / m for m in ("m-root", "m-a", "m-b", "m-stack-ft", "m-stack-ft-bf16", "m-stranger")]
    rec = recover(compute_statistics(discover(models), device="cpu"))
    assert rec.relation_of("m-stack-ft") == MERGE  # main: finetune of m-a
    assert rec.parents_of("m-stack-ft") == ["m-a", "m-b"]
    assert rec.parents_of("m-stack-ft-bf16") == ["m-stack-ft"]


@pytest.mark.xdist_group("passthrough")
def test_a_gpt2_stack_is_found_under_its_own_layer_names(tmp_path):
    """GPT-2 names its layers ``transformer.h.N`` and fuses q, k, v into one Conv1D: nothing in the rule
    names a block or a tensor. (mergekit 0.1.5 cannot write a Qwen2 stack's config under the installed
    transformers: its ``layer_types`` keep the parents' length.)"""
    pytest.importorskip("mergekit")
    from transformers import GPT2Config, GPT2LMHeadModel

    from checkpoint_factory import adam_steps
    from passthrough_family import passthrough

    torch.manual_seed(0)
    root = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=48, n_layer=4, n_head=4, n_positions=32))
    adam_steps(root, 0, 8, 3e-3).save_pretrained(tmp_path / "g-root")
    for name, seed in (("g-a", 1), ("g-b", 2)):
        adam_steps(GPT2LMHeadModel.from_pretrained(tmp_path / "g-root"), seed, 4, 2e-3).save_pretrained(tmp_path / name)
    passthrough([(tmp_path / "g-b", 0, 2), (tmp_path / "g-a", 1, 4), (tmp_path / "g-b", 3, 4)], tmp_path / "g-stack")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"))
    assert rec.relation_of("g-stack") == MERGE
    assert rec.parents_of("g-stack") == ["g-b", "g-a"]  # three layers of g-b, three of g-a: the first slice's first
    assert _detail(rec, "g-stack") == "passthrough g-b[0:2] + g-a[1:4] + g-b[3:4]"
    assert rec.parents_of("g-a") == rec.parents_of("g-b") == ["g-root"]


@pytest.mark.xdist_group("passthrough")
def test_a_stack_parent_whose_own_fine_tune_is_nearly_as_near_reads_lower(family, tmp_path):
    """The fine-tuned stack alone beside ``m-a1``, ``m-a`` trained two more steps at a small rate: the stack's
    layers from ``m-a`` are nearly as near ``m-a1``'s (the stack could have been cut from either), so that
    parent's own confidence falls towards half; ``m-b``'s, uncontested, stays the merge's."""
    from transformers import LlamaForCausalLM

    from checkpoint_factory import adam_steps

    a1 = LlamaForCausalLM.from_pretrained(family / "m-a", dtype=torch.float32)
    adam_steps(a1, 11, 2, 5e-4).save_pretrained(tmp_path / "m-a1")
    models = [family / m for m in ("m-root", "m-a", "m-b", "m-stack-ft", "m-stranger")] + [tmp_path / "m-a1"]
    rec = recover(compute_statistics(discover(models), device="cpu"))
    assert rec.parents_of("m-stack-ft") == ["m-a", "m-b"]
    edges = {e.parent: e for e in rec.edges if e.child == "m-stack-ft"}
    assert edges["m-b"].confidence == edges["m-b"].relation_confidence  # the merge's own
    assert edges["m-a"].confidence < 0.6 < edges["m-b"].confidence  # main: one number for both parents
    assert "another model's layer" in edges["m-a"].parent_note


@pytest.mark.xdist_group("passthrough")
def test_stacks_of_stacked_layers_their_fine_tune_and_a_stack_held_only_quantized(family, tmp_path):
    """Beside ``m-ab5`` (``m-a[0:2] + m-b[1:4]``, 5 layers: its last three are ``m-b``'s, unchanged, and it comes
    first in the set), a depth up-scaling of ``m-b`` (6 layers) is fitted to ``m-b``, the original, not to the
    stack holding copies of its layers (main: ``m-b[0:1] + m-ab5[2:4] + m-ab5[2:5]``, the tie broken by the
    set's order). Held only as a GGUF Q8_0 it is the same merge (main: a ``quantized`` child of ``m-ab5``, the
    nearest float model by name), with its parent's own confidence (the copies in ``m-ab5`` at the rounding's
    distance are no rival) and a note that its weights are quantized. ``m-ab5-ft`` (``m-ab5`` fine-tuned) beside
    ``m-b1`` (``m-b`` one AdamW step further on the same data) has ``m-b``'s layers nearer ``m-b1``'s: its fit
    names other sources than ``m-ab5``'s (main: a stack of its own, a merge of ``m-a`` and ``m-b1``); its stack
    holds every layer as near, so it is ``m-ab5``'s fine-tune. Real mergekit passthrough merges, real AdamW
    steps, the zoo's GGUF writer."""
    from transformers import LlamaForCausalLM

    from checkpoint_factory import adam_steps
    from mother_zoo.typed.quant import write_gguf
    from passthrough_family import passthrough

    b1 = LlamaForCausalLM.from_pretrained(family / "m-b", dtype=torch.float32)
    adam_steps(b1, 13, 1, 5e-4).save_pretrained(tmp_path / "m-b1")
    passthrough([(family / "m-a", 0, 2), (family / "m-b", 1, 4)], tmp_path / "m-ab5")
    ft = LlamaForCausalLM.from_pretrained(tmp_path / "m-ab5", dtype=torch.float32)
    adam_steps(ft, 13, 6, 2e-3).save_pretrained(tmp_path / "m-ab5-ft")
    passthrough([(family / "m-b", 0, 3), (family / "m-b", 1, 4)], tmp_path / "m-b-up")
    (tmp_path / "m-b-up-gguf").mkdir()
    write_gguf("llama", tmp_path / "m-b-up", tmp_path / "m-b-up-gguf" / "m-b-up-Q8_0.gguf", "Q8_0", "stack", [])
    base = [tmp_path / "m-ab5"] + [family / m for m in ("m-root", "m-a", "m-b")] + [tmp_path / "m-b1"]

    rec = recover(compute_statistics(discover(base + [tmp_path / "m-b-up"]), device="cpu"))
    assert _detail(rec, "m-b-up") == "passthrough m-b[0:3] + m-b[1:4]"  # main: m-ab5's copies of m-b's layers
    assert rec.parents_of("m-ab5") == ["m-b", "m-a"]

    rec = recover(compute_statistics(discover(base + [tmp_path / "m-ab5-ft"]), device="cpu"))
    assert rec.parents_of("m-ab5-ft") == ["m-ab5"]  # main: a merge of m-a and m-b1
    assert rec.relation_of("m-ab5-ft") == Relation.FINETUNE.value

    rec = recover(compute_statistics(discover(base + [tmp_path / "m-b-up-gguf"]), device="cpu"))
    quantized = next(m for m in rec.model_ids if m.startswith("m-b-up"))
    assert rec.relation_of(quantized) == MERGE and rec.parents_of(quantized) == ["m-b"]  # main: quantized, m-ab5
    edge = next(e for e in rec.edges if e.child == quantized)
    assert edge.confidence == edge.relation_confidence and not edge.parent_note
    assert rec.problem is not None
    link = next(lk for lk in rec.problem.links if rec.model_ids[int(lk["child"])] == quantized)
    assert "its weights are quantized (Q8_0)" in str(link["evidence"])

    # m-stack (m-a[0:3] + m-b[1:4]) held only as a GGUF, beside m-upscale (m-a[0:3] + m-a[1:4]): as deep, and by
    # name half its layers the same, the up-scaling is the quantized detector's source (main, and a hand-over for
    # shallower sources only); the stack reading is nearer by far: the merge of m-a and m-b
    (tmp_path / "m-stack-gguf").mkdir()
    write_gguf("llama", family / "m-stack", tmp_path / "m-stack-gguf" / "m-stack-Q8_0.gguf", "Q8_0", "stack", [])
    models = [family / m for m in ("m-root", "m-a", "m-b", "m-upscale")] + [tmp_path / "m-stack-gguf"]
    rec = recover(compute_statistics(discover(models), device="cpu"))
    quantized = next(m for m in rec.model_ids if m.startswith("m-stack"))
    assert rec.relation_of(quantized) == MERGE and rec.parents_of(quantized) == ["m-a", "m-b"]  # main: quantized
