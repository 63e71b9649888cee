"""A width-pruned child placed by the cut that made it (issue 11, profile C: pruned children placed by a
fine-tune sibling or their grandparent).

The family is tiny Llamas trained with AdamW (:func:`checkpoint_factory.adam_steps`) and stored in bf16 as
profile C stores them: a root, two fine-tunes of it, a fine-tune of the first, and a child of the first
pruned as the typed zoo prunes (the MLP neurons of largest weight norm kept, in order) and then trained on
the same task as its fine-tune sibling. The two updates from their parent are correlated (one task), so
on the tensors they share the pruned child sits nearer its sibling than its parent: distances alone
place it under the sibling. The kept neurons are exactly the largest of the parent's alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps
from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("prune-parent")

INTER, KEEP = 96, 64


def _load(folder: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)


def _save(model: Any, folder: Path) -> None:
    model.to(torch.bfloat16).save_pretrained(folder)


def _pruned(parent: Any, keep: int) -> Any:
    """``parent`` with each MLP narrowed to its ``keep`` neurons of largest weight norm (rows of gate and
    up, column of down; summed), in their order: structured magnitude pruning."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{**parent.config.to_dict(), "intermediate_size": keep})
    state = {k: v.detach().clone() for k, v in parent.state_dict().items()}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.mlp."
        score = sum(state[p + n + ".weight"].norm(dim=1) for n in ("gate_proj", "up_proj"))
        score = score + state[p + "down_proj.weight"].norm(dim=0)
        idx = torch.sort(torch.topk(score, keep).indices).values
        for n in ("gate_proj", "up_proj"):
            state[p + n + ".weight"] = state[p + n + ".weight"][idx].contiguous()
        state[p + "down_proj.weight"] = state[p + "down_proj.weight"][:, idx].contiguous()
    child = LlamaForCausalLM(cfg)
    child.load_state_dict(state, strict=True)
    return child


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("prune-parent")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=INTER, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    _save(adam_steps(LlamaForCausalLM(cfg), 0, 40, 3e-3), d / "root")
    _save(adam_steps(_load(d / "root"), 1, 6, 1e-3), d / "ft1")
    _save(adam_steps(_load(d / "root"), 2, 6, 1e-3), d / "ft2")
    _save(adam_steps(_load(d / "ft1"), 5, 4, 3e-4), d / "ft1-ft")  # the sibling: task 5, a few small steps
    _save(adam_steps(_pruned(_load(d / "ft1"), KEEP), 5, 6, 1e-3), d / "ft1-pruned")  # task 5 too
    stats = compute_statistics(discover([d]), device="cpu")
    return {"stats": stats, "rec": recover(stats)}


def test_distances_alone_place_the_pruned_child_elsewhere(family: dict[str, Any]) -> None:
    """The premise: without the cut (the ``shape`` detector off), the forest hangs the pruned child under
    a relative other than its parent."""
    rec = recover(family["stats"], RecoverySettings(relations="convert,quantized,adapter,merge,lora"))
    parent = {e.child: e.parent for e in rec.edges}
    assert parent.get("ft1-pruned") != "ft1"


def test_pruned_child_goes_to_the_relative_that_made_its_cut(family: dict[str, Any]) -> None:
    edges = {e.child: e for e in family["rec"].edges}
    e = edges["ft1-pruned"]
    assert (e.parent, e.relation) == ("ft1", Relation.PRUNE.value)
    assert "exactly the largest" in next(x.evidence for x in _links(family["rec"]) if x.relation is Relation.PRUNE)


def test_pruned_child_parents_no_wider_model(family: dict[str, Any]) -> None:
    assert all(e.parent != "ft1-pruned" for e in family["rec"].edges)


def test_cut_by_other_neurons_gives_no_link(tmp_path: Path, family: dict[str, Any]) -> None:
    """A child that kept its parent's first neurons (not the largest: pruned by activations, say) gets no
    link (no relative's weights make that cut), and the forest still types its edge ``prune``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mother_core.relations.prune import cut_violations, narrowed_groups, neuron_norms

    stats = family["stats"]
    groups = narrowed_groups(stats, stats.index("ft1-pruned"))
    ft1 = _load_weights(stats, "ft1")
    assert len(groups) == 2  # the two layers' MLPs
    for g in groups:
        norms = [neuron_norms(ft1[n], ax) for n, ax in g.matrices]
        assert min(cut_violations(norms, np.arange(KEEP)).values()) > 0
    parent = _load(Path(stats.models[stats.index("ft1")].path))
    state = {k: (v[:KEEP] if "gate_proj" in k or "up_proj" in k else v[:, :KEEP] if "down_proj" in k else v)
             for k, v in parent.state_dict().items()}
    child = LlamaForCausalLM(LlamaConfig(**{**parent.config.to_dict(), "intermediate_size": KEEP}))
    child.load_state_dict(state, strict=True)
    for name in ("root", "ft1", "ft2"):
        _save(_load(Path(stats.models[stats.index(name)].path)), tmp_path / name)
    _save(adam_steps(child, 5, 6, 1e-3), tmp_path / "first-kept")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"))
    assert not [x for x in _links(rec) if x.relation is Relation.PRUNE]
    assert {e.child: e.relation for e in rec.edges}["first-kept"] == Relation.PRUNE.value


def _load_weights(stats: Any, name: str) -> dict[str, Any]:
    from mother_core.io.readers import open_model

    with open_model(stats.models[stats.index(name)]) as r:
        return {i.name: r.read(i.name).double().numpy() for i in r.tensor_infos().values() if i.is_float}


def _links(rec: Any) -> list[Any]:
    from mother_core.recovery.typed import links_of

    return links_of(rec.problem)


def test_a_classification_head_of_fewer_labels_may_be_a_childs(tmp_path):
    """Added tokens fix a direction (``grown_vocabulary``: the model with more embedding rows is never the
    parent), but a classification head is replaced freely: a 10-class parent's child may hold 3 classes.
    Only embedding tables are read for the rule; the grown embedding still is."""
    from checkpoint_factory import hf_folder, llama_state

    from mother_core.relations.prune import grown_vocabulary

    parent = llama_state(seed=3)
    hidden = parent["model.embed_tokens.weight"].shape[1]
    g = torch.Generator().manual_seed(4)
    parent["score.weight"] = 0.1 * torch.randn(10, hidden, generator=g)
    child = {k: v + 0.01 * v.std() * torch.randn(v.shape, generator=g) for k, v in parent.items()}
    child["score.weight"] = 0.1 * torch.randn(3, hidden, generator=g)  # a new head for a 3-class task
    grown = dict(child)
    grown["model.embed_tokens.weight"] = torch.cat([child["model.embed_tokens.weight"],
                                                    0.1 * torch.randn(4, hidden, generator=g)])
    for name, sd in (("parent", parent), ("child", child), ("grown", grown)):
        hf_folder(tmp_path / name, sd)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    pairs = {(stats.model_ids[a], stats.model_ids[b]) for a, b in grown_vocabulary(stats)}
    assert ("parent", "child") not in pairs  # the head's rows say nothing about direction
    assert pairs == {("grown", "parent"), ("grown", "child")}
