"""Profile C of the typed zoo (issue 11: "scored on typed model sets built elsewhere"), and the engine
rules it needed, each checked on a set the real tools made (``mother zoo typed --profile C``).

Profile C differs from A and B as sets made elsewhere do: other architectures (Phi-3, Gemma, StarCoder2,
OPT, GPT-NeoX), bf16 storage, rsLoRA / DoRA, merges of three or four models with mergekit methods A and B
never use, other quantizers. The engine rules it exposed:

- a conversion's original is the copy of finest *values*: an fp32 or fp16 copy of a bf16 checkpoint holds
  its values unchanged (an upcast), so bf16 is the original (mother_core/relations/copies.py);
- GGUF files of Gemma (norms written as 1 + w) and GPT-NeoX (query_key_value rows regrouped) read back
  as their transformers source (mother_core/io/gguf_header.py, gguf_reader.py);
- merges whose coefficients change by layer (Model Stock) are exact combinations layer by layer
  (mother_core/relations/merge.py);
- a bf16 fine-tune, whose norm updates round mostly away, is not a merged LoRA: an untouched layer is
  identical between models of one dtype (mother_core/relations/detect.py);
- DoRA adapters are merged as PEFT merges them (mother_core/io/lora.py);
- a merged DoRA is a merged LoRA once each row is rescaled (mother_core/relations/detect.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mother_core import compute_statistics, discover, recover
from mother_core.io.readers import open_model
from mother_core.relations import Relation
from mother_zoo.typed import PROFILES, plan_typed

pytestmark = pytest.mark.xdist_group("typed-zoo-c")


def test_profile_c_plans_what_sets_made_elsewhere_hold() -> None:
    """Planning only (no training): the ops profile C adds over A and B."""
    nodes = plan_typed("small", 5, "C")
    assert [(n.op, n.parents, n.seed) for n in nodes] == [(n.op, n.parents, n.seed)
                                                          for n in plan_typed("small", 5, "C")]
    assert [n.seed for n in plan_typed("small", 0)] == [n.seed for n in plan_typed("small", 0, "A")]
    archs = {n.arch for n in nodes}
    assert archs == {"phi3", "gemma", "starcoder2", "opt", "gpt_neox"}
    assert not archs & {n.arch for s in (0, 1) for n in plan_typed("small", s)}
    by = {n.index: n for n in nodes}
    merges = [n for n in nodes if n.op == "merge"]
    ab_methods = {m for p in (PROFILES["A"], PROFILES["B"]) for m in p.two_parent_methods + p.base_methods}
    c = PROFILES["C"]
    assert {n.params["method"] for n in merges} <= set(c.two_parent_methods + c.base_methods + c.multi_methods)
    assert not {n.params["method"] for n in merges} & ab_methods - {"linear"}
    assert max(len(n.parents) for n in merges) == 4
    assert any(by[n.parents[0]].op == "merge" for n in nodes if n.op == "gguf")  # a merge quantized afterwards
    assert any(by[n.parents[0]].op == "finetune" for n in nodes if n.op == "adapter")  # adapter on a fine-tune
    assert {n.params["qtype"] for n in nodes if n.op == "gguf"} & {"Q5_1", "MXFP4"}
    assert "int8" in {n.params.get("quant_type") for n in nodes if n.op == "bnb"}
    assert {n.params["dtype"] for n in nodes if n.op == "cast"} == {"float16", "float32"}
    assert {n.params.get("variant") for n in nodes if n.op in ("adapter", "lora")} & {"dora", "rslora"}
    trained = [n for n in nodes if n.op in ("root", "finetune", "lora", "merge", "prune", "distill")]
    assert trained and all(n.params["store"] == "bfloat16" for n in trained)
    roots = Counter(n.arch for n in nodes if n.op == "root")
    assert sum(roots.values()) == 4 + 3  # four families, three distractors


def test_cli_offers_the_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    """``mother zoo typed --profile`` takes auto, A, B, C, D or E, and nothing else."""
    from mother_zoo.cli import main as zoo_main

    with pytest.raises(SystemExit):
        zoo_main(["typed", "--out", "/nonexistent", "--profile", "F"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture(scope="module")
def set_c(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small profile C set (seed 5) made with the real tools, its statistics and its recovery."""
    for mod in ("transformers", "peft", "mergekit", "gguf", "optimum.quanto", "bitsandbytes"):
        pytest.importorskip(mod)
    from mother_zoo.typed import generate_typed

    folder = generate_typed(tmp_path_factory.mktemp("typed-c"), size="small", seed=5, profile="C")
    found = discover([folder])
    stats = compute_statistics(found, device="cpu")
    truth = json.loads((folder / "truth.json").read_text())
    return {"folder": folder, "found": found, "stats": stats, "rec": recover(stats), "truth": truth}


def _edges(rec: Any) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for e in rec.edges:
        out.setdefault(e.child, []).append((e.parent, e.relation))
    return out


def test_every_model_of_profile_c_is_read(set_c: dict[str, Any]) -> None:
    """Every file of the set is read (DoRA adapters included), with no problem reported."""
    assert not set_c["found"].problems and not set_c["stats"].problems
    assert len(set_c["stats"].models) == set_c["truth"]["meta"]["n_models"]


def test_gemma_and_gpt_neox_gguf_read_as_their_source(set_c: dict[str, Any]) -> None:
    """Gemma's 1 + w norms and GPT-NeoX's regrouped query_key_value rows are undone: every tensor of the
    GGUF file sits at Q8_0 / Q5_1 / MXFP4 noise from its source, its F32 norms exactly."""
    refs = {m.id: m for m in set_c["found"].models}
    models = set_c["truth"]["meta"]["models"]
    checked = set()
    for mid, v in models.items():
        if v["op"] != "gguf" or v["architecture"] not in ("gemma", "gpt_neox"):
            continue
        src, q = open_model(refs[v["parents"][0]]), open_model(refs[mid])
        names = set(q.tensor_infos()) & set(src.tensor_infos())
        assert len(names) >= len(q.tensor_infos()) - 1  # GPT-NeoX's rotary buffers aside, the same tensors
        for n in names:
            a, b = src.read(n).double(), q.read(n).double()
            rel = float((a - b).norm() / a.norm())
            assert rel < (1e-6 if a.dim() == 1 else 0.08), (mid, n, rel)
            checked.add(v["architecture"] + (":qkv" if "query_key_value" in n else ":norm" if "norm" in n else ""))
    assert {"gemma:norm", "gpt_neox:qkv"} <= checked


def test_casts_up_and_down_point_to_the_bf16_original(set_c: dict[str, Any]) -> None:
    """An fp32 copy of a bf16 model (same values) and an fp16 one (bf16 values, a few subnormals rounded)
    are conversions whose parent is the bf16 model, not the other way round."""
    got = _edges(set_c["rec"])
    casts = [(mid, v) for mid, v in set_c["truth"]["meta"]["models"].items() if v["op"] == "cast"]
    assert {v["params"]["dtype"] for _, v in casts} == {"float16", "float32"}
    for mid, v in casts:
        assert got.get(mid) == [(v["parents"][0], Relation.CONVERT.value)], mid
    convert_details = {e.relation_detail for e in set_c["rec"].edges if e.relation == Relation.CONVERT.value}
    assert any("upcast" in d for d in convert_details)


def test_merges_with_coefficients_by_layer_are_found_with_every_parent(set_c: dict[str, Any]) -> None:
    """Model Stock (its ratio set per tensor from the task vectors' angle), and the merges of three or four
    models without a base (Multi-SLERP, Karcher, linear), are recovered with all their parents."""
    got = _edges(set_c["rec"])
    n = 0
    for mid, v in set_c["truth"]["meta"]["models"].items():
        if v["op"] == "merge" and v["params"]["method"] in ("model_stock", "multislerp", "karcher", "linear"):
            assert sorted(got.get(mid, [])) == sorted((p, Relation.MERGE.value) for p in v["parents"]), mid
            n += 1
    assert n >= 4


def test_bf16_fine_tunes_are_fine_tunes(set_c: dict[str, Any]) -> None:
    """A fine-tune stored in bf16 leaves norm layers within rounding of its parent, never bit-identical
    layers as a merged LoRA does: no recovered fine-tune edge is labelled a merged LoRA."""
    truth = {(e["parent"], e["child"]): e["relation"] for e in set_c["truth"]["edges"]}
    labels = [e.relation for e in set_c["rec"].edges if truth.get((e.parent, e.child)) == Relation.FINETUNE.value]
    assert len(labels) >= 12 and set(labels) == {Relation.FINETUNE.value}


def test_merged_doras_are_merged_loras(set_c: dict[str, Any]) -> None:
    """A merged DoRA rescales every output row to a learned magnitude, so it differs from its base at full
    rank, but at low rank once each row is rescaled: every merged DoRA edge recovered is a ``lora``, read
    so after a DoRA-style row rescaling (before: 2 of the 3 recovered were ``finetune``)."""
    models = set_c["truth"]["meta"]["models"]
    doras = {(e["parent"], e["child"]) for e in set_c["truth"]["edges"]
             if e["relation"] == Relation.LORA.value and models[e["child"]]["params"].get("variant") == "dora"}
    got = {(e.parent, e.child): e for e in set_c["rec"].edges if (e.parent, e.child) in doras}
    assert len(doras) >= 2 and len(got) >= 2
    assert {e.relation for e in got.values()} == {Relation.LORA.value}
    assert any("DoRA-style row rescaling" in e.relation_detail for e in got.values())


def test_dora_adapter_reads_as_peft_merges_it(set_c: dict[str, Any]) -> None:
    """A shipped DoRA adapter, read merged into its base, equals PEFT's own merge_and_unload of it (saved
    in bf16 as the set's merged copy) tensor for tensor."""
    refs = {m.id: m for m in set_c["found"].models}
    models = set_c["truth"]["meta"]["models"]
    pairs = [(mid, v) for mid, v in models.items() if v["op"] == "lora" and v["params"].get("from_adapter") is not None
             and v["params"].get("variant") == "dora"]
    assert pairs
    ids = {i: mid for i, mid in enumerate(models)}  # plan order = truth order
    for mid, v in pairs:
        adapter = ids[v["params"]["from_adapter"]]
        merged = open_model(refs[mid])
        read = open_model(refs[adapter], base=open_model(refs[v["parents"][0]]))
        for n, info in merged.tensor_infos().items():
            assert torch.equal(read.read(n).to(torch.bfloat16), merged.read(n).to(torch.bfloat16)), (adapter, n)


def test_small_bf16_updates_are_neither_copies_nor_merged_loras(set_c: dict[str, Any], tmp_path: Path) -> None:
    """Made with the zoo's own ops from the set's bf16 Phi-3 root: a merged LoRA of two steps (its update a
    few bf16 units on 9 matrices, 12 layers identical) and its base's fp16 copy, next to a fine-tune of
    a few small steps whose norm weights round back to the same bf16 values. The LoRA is no copy of its
    base or of the fp16 copy (some matrices identical, some not), and the fine-tune, which trains every
    matrix, is no merged LoRA."""
    import shutil

    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.plan import TypedNode

    models = set_c["truth"]["meta"]["models"]
    root_id = next(m for m, v in models.items() if v["op"] == "root" and v["architecture"] == "phi3")
    root = tmp_path / "m-base"
    shutil.copytree(set_c["folder"] / root_id, root)
    task = SequenceTask(SEQUENCE_TASKS[:2], models[root_id]["params"]["size"]["vocab"], task_seed=3)
    common = {"task": task, "store": "bfloat16"}
    lora = TypedNode(1, 0, "phi3", "lora", "lora", (0,), 11,
                     {**common, "steps": 2, "lr": 2e-3, "rank": 6, "alpha": 6.0})
    ops.make_adapter(lora, root, tmp_path / "m-lora", "", merged=True)
    ops.make_cast(TypedNode(2, 0, "phi3", "cast", "convert", (0,), 12, {"dtype": "float16"}), root, tmp_path / "m-fp16")
    ft = TypedNode(3, 0, "phi3", "finetune", "finetune", (0,), 13, {**common, "steps": 4, "lr": 3e-4})
    ops.make_finetune(ft, root, tmp_path / "m-ft")
    base, ft_st = load_file(str(root / "model.safetensors")), load_file(str(tmp_path / "m-ft" / "model.safetensors"))
    assert any(torch.equal(base[k], ft_st[k]) for k in base if k.endswith("norm.weight"))  # rounded back

    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"))
    got = {e.child: (e.parent, e.relation) for e in rec.edges}
    assert got["m-lora"] == ("m-base", Relation.LORA.value)
    assert got["m-fp16"] == ("m-base", Relation.CONVERT.value)
    assert got["m-ft"] == ("m-base", Relation.FINETUNE.value)


def test_dora_on_gpt2_conv1d_reads_as_peft_merges_it(tmp_path: Path) -> None:
    """A DoRA adapter on GPT-2's ``Conv1D`` layers (``fan_in_fan_out``: an output is a stored column, its
    norm taken over the whole merged tensor), read merged into its base, equals PEFT's own
    ``merge_and_unload``, whole and by row ranges."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=3)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "m-base")
    peft_model = get_peft_model(GPT2LMHeadModel.from_pretrained(tmp_path / "m-base"),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                                           use_dora=True))
    with torch.no_grad():  # as after training: B nonzero, magnitudes moved
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
            if "lora_magnitude" in n:
                p.mul_(1 + 0.1 * torch.randn_like(p))
    peft_model.save_pretrained(tmp_path / "m-dora")
    peft_model.merge_and_unload().save_pretrained(tmp_path / "m-merged")

    found = discover([tmp_path])
    assert not found.problems
    refs = {m.id: m for m in found.models}
    merged, base = open_model(refs["m-merged"]), open_model(refs["m-base"])
    read = open_model(refs["m-dora"], base=base)
    changed = 0
    for n in merged.tensor_infos():
        want = merged.read(n)
        assert torch.allclose(read.read(n), want, rtol=1e-5, atol=1e-6), n
        assert torch.allclose(read.read(n, (0, 5)), want[:5], rtol=1e-5, atol=1e-6), n
        changed += not torch.equal(base.read(n), merged.read(n))
    assert changed >= 2  # c_attn and c_fc


def _merged_dora(tmp_path: Path, model: Any, targets: list[str], **lora: Any) -> tuple[Relation, str]:
    """``model`` saved as m-base, a PEFT DoRA adapter on ``targets`` set as after training (B nonzero,
    magnitudes moved) merged by PEFT and saved (fp32) as m-merged; the label of the edge between them."""
    from peft import LoraConfig, get_peft_model

    from mother_core.relations.detect import label_edge
    from mother_core.relations.evidence import pair_layers

    model.save_pretrained(tmp_path / "m-base")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True, **lora))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
            if "lora_magnitude" in n:
                p.mul_(1 + 0.2 * torch.randn_like(p))
    peft_model.merge_and_unload().save_pretrained(tmp_path / "m-merged")
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = list(stats.model_ids)
    relation, detail, _, _ = label_edge(stats, pair_layers(stats), ids.index("m-base"), ids.index("m-merged"))
    return relation, detail


def test_merged_fp32_dora_is_a_merged_lora(tmp_path: Path) -> None:
    """PEFT's own merge of a DoRA adapter on a Llama's attention and MLP projections, stored in fp32
    (float32's tight rank floor, not bf16's): a ``lora`` edge from its base, read after a DoRA-style row
    rescaling (before: ``finetune``, the difference being full rank)."""
    pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    relation, detail = _merged_dora(tmp_path, LlamaForCausalLM(cfg), ["q_proj", "v_proj", "up_proj"])
    assert relation is Relation.LORA and "DoRA-style row rescaling" in detail


def test_merged_dora_on_gpt2_conv1d_is_a_merged_lora(tmp_path: Path) -> None:
    """The same on GPT-2's ``Conv1D`` (``fan_in_fan_out``: an output is a stored column, so the rescale is
    per column)."""
    pytest.importorskip("peft")
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=64, n_embd=48, n_layer=2, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=3)
    relation, detail = _merged_dora(tmp_path, GPT2LMHeadModel(cfg), ["c_attn", "c_fc"], fan_in_fan_out=True)
    assert relation is Relation.LORA and "DoRA-style row rescaling" in detail


def test_join_linked_trees_merges_only_the_trees_a_link_crosses() -> None:
    """A link whose child and parent the distance cut put in different trees makes those trees one; the
    others keep their labels (and nothing moves when no link crosses)."""
    from mother_core.recovery.typed import join_linked_trees
    from mother_core.relations.evidence import TypedLink

    labels = np.array([0, 0, 1, 1, 2, 3])
    inside = TypedLink(child=1, parents=(0,), relation=Relation.QUANTIZED, detail="Q8_0", confidence=0.99)
    assert join_linked_trees(labels, [inside]) is labels
    across = TypedLink(child=3, parents=(0,), relation=Relation.ADAPTER, detail="r 8", confidence=0.98)
    merge = TypedLink(child=5, parents=(4,), relation=Relation.MERGE, detail="linear", confidence=0.98)
    assert join_linked_trees(labels, [inside, across, merge]).tolist() == [0, 0, 0, 0, 1, 1]


def test_a_source_found_in_another_tree_joins_its_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Profile C seed 65 (real training, PEFT, mergekit, gguf): the distance cut put an unmerged adapter
    and a merged LoRA of the same base in a tree of their own, away from the base the adapter detector
    found. The solver forced the adapter's edge across trees and raised a ConstraintError, so the whole
    set failed. Now every typed child is in its parents' tree and the set is recovered."""
    from mother_zoo.typed import generate_typed

    folder = generate_typed(tmp_path, size="small", seed=65, profile="C")
    stats = compute_statistics(discover([folder]), device="cpu")
    rec = recover(stats)
    tree = {m.id: m.tree for m in rec.models}
    adapters = [e for e in rec.edges if e.relation == Relation.ADAPTER.value]
    assert adapters and all(tree[e.parent] == tree[e.child] for e in rec.edges)
    truth = {(e["parent"], e["child"]) for e in json.loads((folder / "truth.json").read_text())["edges"]}
    assert all((e.parent, e.child) in truth for e in adapters)
    # Without the join (the start code's behaviour on this set) the relations cannot form a forest: the set
    # is still recovered, without them, and the run says so instead of failing as a whole.
    import mother_core.recovery.recover as recover_module

    monkeypatch.setattr(recover_module, "join_linked_trees", lambda labels, links: labels)
    unjoined = recover(stats)  # the same statistics: the join is a step of recover, not of the pass
    assert unjoined.settings.relations == "none"
    assert len(unjoined.edges) == len(unjoined.models) - len(unjoined.roots) > 0
    assert any("could not be joined into one forest" in p["message"] for p in unjoined.problems)
