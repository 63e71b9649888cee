"""Each merge parent gets its own confidence (issues 11 and 12; branch ``mergeconf``).

A merge's confidence says that the child is a merge; a parent the fit took in the place of a near relative
(an input's own fine-tune, a merged LoRA of the base) read the merge's 0.99 on main, as the true ones do
(profile C seed 17: a base's merged LoRA taken for the base; seed 21: the parent of an input). Real mergekit
merges of really trained tiny Llamas (AdamW steps, a PEFT LoRA merged by PEFT), float32:

- a linear merge of two fine-tunes, one of which has a few-step fine-tune of its own (a near relative, not an
  input): the engine's reading keeps both inputs at the merge's confidence; read with that relative in the
  input's place, the relative is contested (the input in its place explains the child better) and reads under
  0.8 while the other input keeps the merge's;
- a TIES merge of the same two fine-tunes on the root, beside a LoRA merged into the root (its untouched
  layers hold the root's values bit for bit, so the merge keeps as many of its entries as of the root's over
  most tensors): the engine's reading keeps its three parents high; read with the merged LoRA as the base, the
  root keeps more of the merge's entries on the tensors the LoRA changed, and the LoRA reads under 0.8.

Both fail on main, whose links carry one confidence for every parent (no ``parent_confidence``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps, tiny_llama
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation
from mother_core.relations.evidence import pair_layers
from mother_core.relations.merge import contest_parents, find_merges

#: Fine-tunes of the root: (name, parent, task seed, AdamW steps, learning rate).
#: Most of the tree shares no entry with anyone, so that the entries a sparse merge keeps stand out from the tree's
#: chance level (``merge.chance_equal_share``: the median member's largest share).
TREE = (("m-a", "m-root", 1, 8, 2e-3), ("m-b", "m-root", 2, 8, 2e-3), ("m-c", "m-root", 3, 8, 2e-3),
        ("m-d", "m-root", 4, 8, 2e-3), ("m-a1", "m-a", 5, 3, 1e-3), ("m-b1", "m-b", 6, 8, 2e-3)) + tuple(
    (f"m-e{k}", "m-root", 10 + k, 4, 2e-3) for k in range(6))


def _run_mergekit(merge: dict, out: Path) -> None:
    """Run mergekit on ``merge`` (a configuration dict) into ``out``, CPU, no remote code, seed 0."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(merge), str(out),
              MergeOptions(trust_remote_code=False, copy_tokenizer=False, quiet=True, random_seed=0,
                           write_model_card=False, lazy_unpickle=False))


def _family(d: Path) -> None:
    """``m-root`` (20 AdamW steps) and the fine-tunes of :data:`TREE`, float32."""
    from transformers import LlamaForCausalLM

    adam_steps(tiny_llama(seed=0), 0, 20, 3e-3).save_pretrained(d / "m-root")
    for name, parent, seed, steps, lr in TREE:
        model = LlamaForCausalLM.from_pretrained(d / parent, dtype=torch.float32)
        adam_steps(model, seed, steps, lr).save_pretrained(d / name)


def _merged_lora(parent: Path, out: Path) -> None:
    """A PEFT LoRA on ``parent``'s q_proj and v_proj, 8 AdamW steps, merged by PEFT (float32)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(7)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(parent, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    adam_steps(model, 7, 8, 3e-3)
    model.merge_and_unload().save_pretrained(out)


def _link(stats, child: str):
    ids = [m.id for m in stats.models]
    links = find_merges(stats, pair_layers(stats), np.zeros(len(ids), dtype=int), set())
    found = {ids[x.child]: x for x in links}
    assert set(found) == {child}  # no other model is read as a merge
    return found[child], links


def _forced(stats, link, links, true: str, wrong: str, swap: bool = False):
    """``link`` with ``wrong`` in ``true``'s place (same weights), its parents contested afresh (``swap``: an exact
    merge's better reading taken, as the engine does; off, the contest's notes and numbers alone)."""
    at = {m.id: i for i, m in enumerate(stats.models)}
    parents = tuple(at[wrong] if p == at[true] else p for p in link.parents)
    forced = dataclasses.replace(link, parents=parents, parent_confidence=None, parent_notes=())
    ids = [m.id for m in stats.models]
    # (the statistics as find_merges reads them: the equal shares scaled to the tree's chance level)
    from mother_core.relations.merge import _entries_above_chance, rounding_ratio

    pl = _entries_above_chance(pair_layers(stats), np.zeros(len(ids), dtype=int), rounding_ratio(stats))
    return contest_parents(stats, pl, np.zeros(len(ids), dtype=int), set(), forced, links, swap=swap), ids


@pytest.mark.xdist_group("sparse-merge")
def test_a_near_relative_in_an_inputs_place_reads_low(tmp_path):
    pytest.importorskip("mergekit")
    _family(tmp_path)
    _run_mergekit({"merge_method": "linear", "dtype": "float32",
                   "models": [{"model": str(tmp_path / m), "parameters": {"weight": w}}
                              for m, w in (("m-a", 0.6), ("m-b", 0.4))]}, tmp_path / "m-merge")
    stats = compute_statistics(discover([tmp_path]), device="cpu")

    link, links = _link(stats, "m-merge")
    ids = [m.id for m in stats.models]
    assert {ids[p] for p in link.parents} == {"m-a", "m-b"}
    assert link.parent_confidence == (link.confidence,) * 2 and link.confidence >= 0.9  # main: None
    assert not any(link.parent_notes)

    forced, ids = _forced(stats, link, links, "m-a", "m-a1")  # m-a's own few-step fine-tune in its place
    own = {ids[p]: forced.confidence_of(k) for k, p in enumerate(forced.parents)}
    assert own["m-a1"] < 0.8 and own["m-b"] == forced.confidence >= 0.9
    assert "m-a in its place" in forced.note_of(list(forced.parents).index(ids.index("m-a1")))
    # The engine takes the better reading of an exact merge (merge._swapped): m-a back in m-a1's place, at the
    # counted rate of such parents, its note naming m-a1.
    swapped, ids = _forced(stats, link, links, "m-a", "m-a1", swap=True)
    assert {ids[p] for p in swapped.parents} == {"m-a", "m-b"}
    k = list(swapped.parents).index(ids.index("m-a"))
    assert swapped.confidence_of(k) < 0.8 and "m-a1" in swapped.note_of(k)

    rec = recover(stats)  # the engine's reading, through the result: each parent edge its own number
    edges = {e.parent: e for e in rec.edges if e.child == "m-merge"}
    assert set(edges) == {"m-a", "m-b"}
    for e in edges.values():
        assert e.relation == Relation.MERGE.value and e.confidence >= 0.9 and e.parent_note == ""
        assert e.confidence == e.relation_confidence

    # A contested parent's own number and note travel through result.json, the model-card lines and the app.
    from explorer_ui.graph import edge_tooltip
    from mother_core.export import base_model_lines
    from mother_core.recovery.result import Recovery

    doubted = dataclasses.replace(edges["m-b"], confidence=0.42, placement_confidence=0.42,
                                  parent_note="m-b1 in its place explains the child better")
    rec = dataclasses.replace(rec, edges=[doubted if e is edges["m-b"] else e for e in rec.edges])
    rec.save(tmp_path / "result.json")
    back = {e.parent: e for e in Recovery.load(tmp_path / "result.json").edges if e.child == "m-merge"}
    assert back["m-b"].confidence == 0.42 and back["m-b"].parent_note == doubted.parent_note
    assert back["m-a"].parent_note == "" and back["m-b"].relation_confidence == edges["m-b"].relation_confidence
    tip = edge_tooltip(back["m-b"], None)
    assert "this parent 0.42" in tip and doubted.parent_note in tip
    assert "- m-b  # this parent: confidence 0.42" in base_model_lines(rec)


@pytest.mark.xdist_group("sparse-merge")
def test_a_merged_lora_of_the_base_read_as_the_base_reads_low(tmp_path):
    pytest.importorskip("mergekit")
    pytest.importorskip("peft")
    _family(tmp_path)
    _merged_lora(tmp_path / "m-root", tmp_path / "m-root-lora")
    _run_mergekit({"merge_method": "ties", "dtype": "float32", "base_model": str(tmp_path / "m-root"),
                   "models": [{"model": str(tmp_path / m), "parameters": {"weight": w, "density": 0.5}}
                              for m, w in (("m-a", 0.5), ("m-b", 0.5))]}, tmp_path / "m-merge")
    stats = compute_statistics(discover([tmp_path]), device="cpu")

    at = {m.id: i for i, m in enumerate(stats.models)}
    shares = pair_layers(stats).equal_share[at["m-merge"]]
    # over the median tensor the merged LoRA holds the root's values: the merge keeps as many of its entries
    assert shares[at["m-root-lora"]] == pytest.approx(shares[at["m-root"]], rel=0.05)
    link, links = _link(stats, "m-merge")
    ids = [m.id for m in stats.models]
    assert {ids[p] for p in link.parents} == {"m-root", "m-a", "m-b"}
    assert "of its entries equal" in link.evidence  # the entries name the base
    assert link.parent_confidence == (link.confidence,) * 3 and link.confidence >= 0.9  # main: None

    forced, ids = _forced(stats, link, links, "m-root", "m-root-lora")
    own = {ids[p]: forced.confidence_of(k) for k, p in enumerate(forced.parents)}
    assert own["m-root-lora"] < 0.8
    assert own["m-a"] == own["m-b"] == forced.confidence >= 0.9
    assert "m-root keeps more of the child's entries" in forced.note_of(list(forced.parents).index(
        ids.index("m-root-lora")))
