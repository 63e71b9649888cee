"""The I/O seam: discovery of every layout, readers of every format, names, and bad input."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import checkpoint_factory as cf
from mother_core.errors import (
    AdapterMismatchError, MissingBaseModelError, ModelNotFoundError, NoTensorsError,
    UnreadableCheckpointError,
)
from mother_core.io.base import ModelReader, ModelRef
from mother_core.io.discovery import discover, file_stem, match_model_id
from mother_core.io.names import layer_kind, normalise_name
from mother_core.io.readers import open_model
from mother_core.io.unpickler import load_legacy, load_zip

SD = cf.llama_state(0)
Q0 = "layers.0.self_attn.q_proj.weight"


def bare(sd):
    """Expected tensors keyed by normalised name."""
    return {normalise_name(k): v for k, v in sd.items()}


def only(found, model_id):
    return next(m for m in found.models if m.id == model_id)


def check_all_tensors(ref: ModelRef, expected: dict[str, torch.Tensor]) -> None:
    with open_model(ref) as reader:
        assert isinstance(reader, ModelReader)
        infos = reader.tensor_infos()
        assert set(infos) == set(expected)
        for name, want in expected.items():
            assert infos[name].shape == tuple(want.shape) and infos[name].dtype == str(want.dtype)[6:]
            got = reader.read(name)
            assert got.dtype == want.dtype and torch.equal(got, want), name
            if want.dim() and want.shape[0] > 3:
                assert torch.equal(reader.read(name, rows=(1, 3)), want[1:3])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """One folder holding a model in every format (built once for the module)."""
    root = tmp_path_factory.mktemp("zoo")
    cf.save_safetensors(root / "single.safetensors", SD)
    cf.hf_folder(root / "hf-bf16", cf.llama_state(1, torch.bfloat16), readme_base_model="org/single")
    cf.hf_folder(root / "hf-fp16", cf.llama_state(2, torch.float16),
                 config={"base_model": ["cfg-parent", "x"], "architectures": ["LlamaForCausalLM"]})
    cf.sharded_safetensors(root / "sharded", SD, n=3)
    cf.torch_bin_folder(root / "bin", cf.with_buffers(SD))
    cf.sharded_bin(root / "sharded-bin", SD)
    cf.training_checkpoint(root / "train.pth.tar", SD)
    cf.training_checkpoint(root / "train-legacy.pth.tar", SD, legacy=True)
    cf.legacy_file(root / "legacy.pt", SD)
    cf.diffusers_repo(root / "sd")
    cf.hf_cache_entry(root, "org/cached", SD)
    return root


@pytest.fixture(scope="module")
def found(zoo):
    return discover([zoo])


# --- discovery ---------------------------------------------------------------------------------------

def test_discovery_finds_every_format(found, zoo):
    by_id = {m.id: m for m in found.models}
    assert found.problems == []
    assert {k: by_id[k].format for k in by_id} == {
        "single": "safetensors", "hf-bf16": "safetensors", "hf-fp16": "safetensors",
        "sharded": "safetensors-sharded", "bin": "torch", "sharded-bin": "torch-sharded",
        "train": "torch", "train-legacy": "torch", "legacy": "torch", "sd": "safetensors",
        "org/cached": "safetensors",
    }
    assert len(by_id["sharded"].files) == 3 and len(by_id["sharded-bin"].files) == 2
    assert by_id["sd"].component == "unet" and by_id["sd"].path.endswith("unet")


def test_declared_parent_from_card_and_config_not_name_or_path(found):
    assert only(found, "hf-bf16").declared_parent == "org/single"
    assert only(found, "hf-fp16").declared_parent == "cfg-parent"
    assert only(found, "hf-fp16").architecture == "LlamaForCausalLM"
    assert only(found, "sharded").declared_parent is None  # config has only _name_or_path-like data


def test_readme_list_takes_first(tmp_path):
    cf.hf_folder(tmp_path / "m", SD, readme_base_model=["first/parent", "second/parent"])
    assert discover([tmp_path / "m"]).models[0].declared_parent == "first/parent"


def test_discovery_reads_no_tensor_data(zoo, monkeypatch):
    import safetensors

    def boom(*a, **k):
        raise AssertionError("discovery read tensor data")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(safetensors, "safe_open", boom)
    assert len(discover([zoo]).models) == 11


def test_file_stem_and_direct_files(zoo):
    assert file_stem("a/foo.pth.tar") == "foo" and file_stem("b.safetensors") == "b"
    got = discover([zoo / "train.pth.tar", zoo / "hf-bf16" / "model.safetensors"])
    assert [m.id for m in got.models] == ["train", "hf-bf16"]  # a generic file name takes its folder's name
    idx = discover([zoo / "sharded" / "model.safetensors.index.json"]).models[0]
    assert idx.id == "sharded" and idx.format == "safetensors-sharded"


def test_hf_cache_entry_uses_refs_main_snapshot(found, zoo):
    ref = only(found, "org/cached")
    assert ref.path.endswith("0" * 39 + "1")
    check_all_tensors(ref, bare(SD))  # older snapshot holds SD + 1
    alone = discover([zoo / "models--org--cached"])
    assert [m.id for m in alone.models] == ["org/cached"]


def test_hf_home_hub_root(tmp_path):
    cf.hf_cache_entry(tmp_path / "hub", "a/one", SD, revs=1)
    cf.hf_cache_entry(tmp_path / "hub", "two", cf.llama_state(3), revs=1)
    assert sorted(m.id for m in discover([tmp_path]).models) == ["a/one", "two"]


def test_diffusers_components(zoo):
    vae = discover([zoo / "sd"], component="vae").models[0]
    assert vae.component == "vae" and vae.id == "sd"
    with open_model(vae) as r:
        assert list(r.tensor_infos()) == ["encoder.conv_in.weight"]
    with pytest.raises(ModelNotFoundError) as e:
        discover([zoo / "sd"], component="nope")
    assert "text_encoder, unet, vae" in str(e.value)


def test_diffusers_without_unet_needs_a_component(tmp_path):
    repo = cf.diffusers_repo(tmp_path / "pipe")
    (repo / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    found = discover([tmp_path / "pipe", cf.save_safetensors(tmp_path / "other.safetensors", SD)])
    assert [m.id for m in found.models] == ["other"]
    assert "text_encoder, vae" in found.problems[0].message and "component" in found.problems[0].message


# --- readers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_id,seed,dtype", [
    ("single", 0, torch.float32), ("hf-bf16", 1, torch.bfloat16), ("hf-fp16", 2, torch.float16),
    ("sharded", 0, torch.float32), ("sharded-bin", 0, torch.float32), ("legacy", 0, torch.float32),
    ("org/cached", 0, torch.float32),
])
def test_reader_returns_stored_tensors_and_rows(found, model_id, seed, dtype):
    check_all_tensors(only(found, model_id), bare(cf.llama_state(seed, dtype)))


def test_sharded_safetensors_keeps_one_shard_open(found):
    with open_model(only(found, "sharded")) as r:
        opened = set()
        for name in r.tensor_infos():
            r.read(name, rows=(0, 1))
            opened.add(r._open_path)
        assert len(opened) == 3
    assert r._handle is None


def test_non_float_buffers_listed_but_not_weights(found):
    with open_model(only(found, "bin")) as r:
        infos = r.tensor_infos()
        assert infos["position_ids"].dtype == "int64" and not infos["position_ids"].is_float
        assert not infos["bn.num_batches_tracked"].is_float and infos["mask"].dtype == "bool"
        assert {i.name for i in r.tensor_infos().values() if i.is_float and i.numel > 0} == set(bare(SD))


def test_read_copies_do_not_leak_in_place_changes(found):
    with open_model(only(found, "single")) as r:
        r.read(Q0).mul_(0)
        assert torch.equal(r.read(Q0), SD["model." + Q0])


@pytest.mark.parametrize("model_id", ["train", "train-legacy"])
def test_training_checkpoint_recovered_without_running_code(found, zoo, model_id):
    path = zoo / f"{model_id}.pth.tar"
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # the fallback path really is exercised
    cf.TRIGGERED.clear()
    check_all_tensors(only(found, model_id), bare(SD))  # module.model. stripped; optimizer not chosen
    assert cf.TRIGGERED == []
    assert "mother_gone_module" not in sys.modules


def test_restricted_unpickler_matches_torch_load(zoo):
    plain = torch.load(zoo / "bin" / "pytorch_model.bin", weights_only=True)
    mine = load_zip(str(zoo / "bin" / "pytorch_model.bin"))
    assert plain.keys() == mine.keys() and all(torch.equal(plain[k], mine[k]) for k in plain)
    legacy = load_legacy(str(zoo / "legacy.pt"))
    assert all(torch.equal(legacy[k], SD[k]) for k in SD)


def test_views_and_pickled_module_are_recovered(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    shared = {"a.weight": base[:6].view(2, 3), "b.weight": base[6:].view(3, 2)}
    torch.save(shared, tmp_path / "views.pt", _use_new_zipfile_serialization=False)
    got = load_legacy(str(tmp_path / "views.pt"))
    assert torch.equal(got["a.weight"], shared["a.weight"]) and torch.equal(got["b.weight"], shared["b.weight"])
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.save({"model": net, "epoch": 1}, tmp_path / "whole.pt")
    ref = discover([tmp_path / "whole.pt"]).models[0]
    check_all_tensors(ref, {k: v.detach() for k, v in net.state_dict().items()})


def test_name_collisions_keep_every_tensor(tmp_path):
    sd = {"model.norm.weight": torch.ones(3), "norm.weight": torch.zeros(3)}
    cf.save_safetensors(tmp_path / "c.safetensors", sd)
    with open_model(discover([tmp_path / "c.safetensors"]).models[0]) as r:
        assert torch.equal(r.read("norm.weight"), torch.zeros(3))
        assert torch.equal(r.read("model.norm.weight"), torch.ones(3))


def test_mismatched_shapes_are_reported_as_stored(tmp_path):
    a = cf.llama_state(0)
    b = dict(a, **{"lm_head.weight": torch.zeros(7, cf.HIDDEN)})  # another vocabulary
    cf.save_safetensors(tmp_path / "a.safetensors", a)
    cf.save_safetensors(tmp_path / "b.safetensors", b)
    ra, rb = (open_model(m) for m in discover([tmp_path]).models)
    assert ra.tensor_infos()["lm_head.weight"].shape == (cf.VOCAB, cf.HIDDEN)
    assert rb.tensor_infos()["lm_head.weight"].shape == (7, cf.HIDDEN)
    ra.close(), rb.close()


# --- PEFT LoRA ---------------------------------------------------------------------------------------

def _merged_ok(adapter: ModelRef, base_ref: ModelRef, pairs, scale: dict[str, float] | float) -> None:
    with open_model(base_ref) as base, open_model(adapter, base) as lora:
        assert set(lora.tensor_infos()) == set(base.tensor_infos())
        for raw, w in SD.items():
            name = normalise_name(raw)
            want = w
            if raw in pairs:
                a, b = pairs[raw]
                s = scale if isinstance(scale, float) else scale[raw]
                want = w + s * (b @ a)
            assert torch.allclose(lora.read(name), want, atol=1e-6), name
            assert torch.allclose(lora.read(name, rows=(2, 5)), want[2:5], atol=1e-6), name
        assert lora.read(Q0).dtype == w.dtype


def test_peft_lora_merge_equals_w_plus_scaled_ba(tmp_path):
    cf.hf_folder(tmp_path / "Llama-tiny", SD)
    pairs = cf.peft_adapter(tmp_path / "my-lora", SD, "meta/Llama-tiny", r=4, alpha=8)
    found = discover([tmp_path])
    adapter = only(found, "my-lora")
    assert adapter.format == "peft-lora" and adapter.base_id == "Llama-tiny"  # matched by hub-id tail
    assert adapter.declared_parent == "meta/Llama-tiny"
    _merged_ok(adapter, only(found, "Llama-tiny"), pairs, 8 / 4)


def test_peft_rslora_patterns_default_suffix_and_bin(tmp_path):
    cf.hf_folder(tmp_path / "base", SD)
    pairs = cf.peft_adapter(tmp_path / "rs", SD, "base", r=4, alpha=8, use_rslora=True,
                            adapter_suffix=".default", as_bin=True)
    found = discover([tmp_path])
    _merged_ok(only(found, "rs"), only(found, "base"), pairs, 8 / math.sqrt(4))

    pat = cf.peft_adapter(tmp_path / "pat", SD, "base", r=4, alpha=8, rank_pattern={"layers.1.self_attn.v_proj": 2},
                          alpha_pattern={"v_proj": 16})
    scale = {raw: (16 if "v_proj" in raw else 8) / (2 if "layers.1.self_attn.v_proj" in raw else 4) for raw in pat}
    found = discover([tmp_path])
    _merged_ok(only(found, "pat"), only(found, "base"), pat, scale)


def test_peft_fan_in_fan_out(tmp_path):
    w = torch.randn(6, 9)  # GPT-2 Conv1D stores (in, out)
    cf.save_safetensors(tmp_path / "gpt" / "model.safetensors", {"transformer.h.0.attn.c_attn.weight": w})
    a, b = torch.randn(2, 6), torch.randn(9, 2)
    ad = tmp_path / "ad"
    ad.mkdir()
    save_file({"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": a,
               "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": b}, str(ad / "adapter_model.safetensors"))
    (ad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                        "fan_in_fan_out": True, "base_model_name_or_path": "gpt"}))
    found = discover([tmp_path])
    with open_model(only(found, "gpt")) as base, open_model(only(found, "ad"), base) as lora:
        assert torch.allclose(lora.read("h.0.attn.c_attn.weight"), w + 2 * (b @ a).T, atol=1e-6)


def test_peft_without_base_and_with_wrong_base(tmp_path):
    pairs = cf.peft_adapter(tmp_path / "lonely", SD, "meta/Llama-2-7b")
    assert pairs
    ref = discover([tmp_path / "lonely"]).models[0]
    assert ref.base_id == "meta/Llama-2-7b"
    with pytest.raises(MissingBaseModelError) as e:
        open_model(ref)
    # The advice names what exists: the paths to give (there is no --base option).
    assert "meta/Llama-2-7b" in str(e.value) and "paths you give" in str(e.value) and "--base" not in str(e.value)
    other = cf.save_safetensors(tmp_path / "other.safetensors", {"x.weight": torch.ones(2, 2)})
    with open_model(discover([other]).models[0]) as base, pytest.raises(AdapterMismatchError) as e:
        open_model(ref, base)
    assert "right base model" in str(e.value)


def test_peft_naming_itself_as_its_base_is_told_so(tmp_path):
    """hostile3's leftover: an adapter whose config names its own folder (a path on another machine
    ending in its name) was told its base "is not in the set"; it is, as the adapter."""
    from mother_core import compute_statistics

    cf.hf_folder(tmp_path / "set" / "base", SD)
    cf.hf_folder(tmp_path / "set" / "other", cf.llama_state(1))
    cf.peft_adapter(tmp_path / "set" / "my-lora", SD, "/home/someone/runs/my-lora")
    stats = compute_statistics(discover([tmp_path / "set"]), device="cpu")
    (message,) = [p.message for p in stats.problems if "my-lora" in p.path]
    assert "names itself as its base model" in message and "/home/someone/runs/my-lora" in message, message
    assert "not in the set" not in message


# --- names -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,norm", [
    ("model.layers.0.self_attn.q_proj.weight", Q0),
    ("layers.0.self_attn.q_proj.weight", Q0),
    ("module._orig_mod.model.layers.0.self_attn.q_proj.weight", Q0),
    ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight", Q0),
    ("bert.encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.weight"),
    ("roberta.embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    ("vit.encoder.layer.0.output.dense.weight", "encoder.layer.0.output.dense.weight"),
    ("transformer.h.0.attn.c_attn.weight", "h.0.attn.c_attn.weight"),
    ("transformer.wte.weight", "wte.weight"),
    ("gpt_neox.layers.0.attention.dense.weight", "layers.0.attention.dense.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("classifier.weight", "classifier.weight"),
    ("transformer_blocks.0.attn1.to_q.weight", "transformer_blocks.0.attn1.to_q.weight"),
    ("bert.weird.weight", "bert.weird.weight"),  # backbone name not followed by a backbone child: kept
])
def test_normalise_name(raw, norm):
    assert normalise_name(raw) == norm


def test_wrapped_and_bare_models_align(tmp_path):
    cf.save_safetensors(tmp_path / "causal.safetensors", SD)
    cf.save_safetensors(tmp_path / "bare.safetensors", cf.llama_state(0, prefix="", head=False))
    torch.save({"state_dict": {f"module.{k}": v for k, v in SD.items()}}, tmp_path / "ddp.pt")
    readers = [open_model(m) for m in discover([tmp_path]).models]
    names = [set(r.tensor_infos()) for r in readers]
    assert names[0] - {"lm_head.weight"} == names[1] - {"lm_head.weight"} == names[2] - {"lm_head.weight"}
    for r in readers:
        assert torch.equal(r.read(Q0), SD["model." + Q0])
        r.close()


@pytest.mark.parametrize("name,shape,kind", [
    (Q0, (16, 16), "attn_q"), ("layers.0.self_attn.k_proj.weight", (4, 16), "attn_k"),
    ("layers.0.self_attn.v_proj.weight", (4, 16), "attn_v"), ("layers.0.self_attn.o_proj.weight", (16, 16), "attn_o"),
    ("layers.0.mlp.gate_proj.weight", (24, 16), "mlp"), ("layers.0.mlp.down_proj.weight", (16, 24), "mlp"),
    ("embed_tokens.weight", (40, 16), "embedding"), ("norm.weight", (16,), "norm"),
    ("layers.0.input_layernorm.weight", (16,), "norm"), ("lm_head.weight", (40, 16), "head"),
    ("h.0.attn.c_attn.weight", (16, 48), "attn_qkv"), ("h.0.attn.c_proj.weight", (16, 16), "attn_o"),
    ("h.0.mlp.c_fc.weight", (16, 64), "mlp"), ("h.0.mlp.c_proj.weight", (64, 16), "mlp"),
    ("wte.weight", (40, 16), "embedding"), ("wpe.weight", (8, 16), "embedding"), ("ln_f.weight", (16,), "norm"),
    ("h.0.ln_1.bias", (16,), "norm"), ("h.0.attn.c_attn.bias", (48,), "bias"),
    ("encoder.layer.0.attention.self.query.weight", (16, 16), "attn_q"),
    ("encoder.layer.0.attention.self.key.weight", (16, 16), "attn_k"),
    ("encoder.layer.0.attention.self.value.weight", (16, 16), "attn_v"),
    ("encoder.layer.0.attention.output.dense.weight", (16, 16), "attn_o"),
    ("encoder.layer.0.attention.output.LayerNorm.weight", (16,), "norm"),
    ("encoder.layer.0.intermediate.dense.weight", (64, 16), "mlp"),
    ("encoder.layer.0.output.dense.weight", (16, 64), "mlp"),
    ("embeddings.patch_embeddings.projection.weight", (16, 3, 4, 4), "conv"),
    ("patch_embed.proj.weight", (16, 3, 4, 4), "conv"), ("pos_embed", (1, 5, 16), "embedding"),
    ("cls_token", (1, 1, 16), "embedding"), ("blocks.0.attn.qkv.weight", (48, 16), "attn_qkv"),
    ("blocks.0.attn.proj.weight", (16, 16), "attn_o"), ("blocks.0.mlp.fc1.weight", (64, 16), "mlp"),
    ("head.weight", (10, 16), "head"), ("classifier.weight", (2, 16), "head"), ("fc.weight", (10, 16), "head"),
    ("layer1.0.conv1.weight", (8, 8, 3, 3), "conv"), ("layer1.0.bn1.running_mean", (8,), "norm"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", (8, 8), "attn_q"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", (8, 8), "attn_o"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", (16, 8), "mlp"),
    ("encoder.layers.0.self_attn.out_proj.weight", (16, 16), "attn_o"),
    ("layers.0.attention.query_key_value.weight", (48, 16), "attn_qkv"),
    ("layers.0.attention.dense.weight", (16, 16), "attn_o"),
    ("block.0.layer.0.SelfAttention.o.weight", (16, 16), "attn_o"),
    ("block.0.layer.1.DenseReluDense.wo.weight", (16, 64), "mlp"),
    ("layers.0.attention.wo.weight", (16, 16), "attn_o"), ("layers.0.feed_forward.w1.weight", (64, 16), "mlp"),
    ("pooler.dense.weight", (16, 16), "other"), ("layers.0.mlp.down_proj.bias", (16,), "bias"),
])
def test_layer_kind(name, shape, kind):
    assert layer_kind(name, shape) == kind


# --- bad input ---------------------------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        discover([tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(e.value) and e.value.path == str(tmp_path / "nope")


def test_empty_folder_and_junk_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError) as e:
        discover([tmp_path / "empty"])
    assert "empty" in str(e.value) and ".safetensors" in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    found = discover([tmp_path / "junk", cf.save_safetensors(tmp_path / "ok.safetensors", SD)])
    assert [m.id for m in found.models] == ["ok"] and "junk" in found.problems[0].path


def test_truncated_safetensors(tmp_path):
    bad = cf.truncate(cf.save_safetensors(tmp_path / "bad.safetensors", SD))
    with pytest.raises(ModelNotFoundError) as e:
        discover([bad])
    assert "bad.safetensors" in str(e.value)
    ref = ModelRef("bad", str(bad), "safetensors", (str(bad),))
    with pytest.raises(UnreadableCheckpointError) as e:
        open_model(ref)
    assert str(bad) in str(e.value) and "re-download" in str(e.value) and e.value.path == str(bad)


def test_folder_of_five_with_one_corrupt(tmp_path):
    for i in range(4):
        cf.save_safetensors(tmp_path / f"m{i}.safetensors", cf.llama_state(i))
    cf.truncate(cf.torch_bin_folder(tmp_path / "broken", SD) / "pytorch_model.bin", 0.5)
    found = discover([tmp_path])
    assert [m.id for m in found.models] == ["m0", "m1", "m2", "m3"]
    assert len(found.problems) == 1 and "pytorch_model.bin" in found.problems[0].message
    assert found.problems[0].path.endswith("pytorch_model.bin")
    for m in found.models:
        with open_model(m) as r:
            assert r.read(Q0).shape == (16, 16)


def test_corrupt_legacy_pickle_fails_at_open(tmp_path):
    bad = cf.truncate(cf.legacy_file(tmp_path / "old.pt", SD), 0.7)
    ref = discover([bad]).models[0]  # legacy pickles cannot be checked without reading them
    with pytest.raises(UnreadableCheckpointError) as e:
        open_model(ref)
    assert str(bad) in str(e.value)


def test_pickle_without_tensors(tmp_path):
    path = cf.no_tensor_pickle(tmp_path / "meta.pt")
    with pytest.raises(NoTensorsError) as e:
        open_model(discover([path]).models[0])
    assert str(path) in str(e.value)


def test_model_with_only_integer_buffers(tmp_path):
    path = cf.save_safetensors(tmp_path / "ints.safetensors", {"ids": torch.arange(4)})
    with pytest.raises(NoTensorsError) as e:
        open_model(discover([path]).models[0])
    assert "ints.safetensors" in str(e.value)


def test_duplicate_ids(tmp_path):
    a = cf.save_safetensors(tmp_path / "x" / "same.safetensors", SD)
    b = cf.save_safetensors(tmp_path / "y" / "same.pt.safetensors", SD)
    os.rename(b, tmp_path / "y" / "same.safetensors")
    found = discover([a, tmp_path / "y" / "same.safetensors"])  # the first is read, the second reported
    assert [m.path for m in found.models] == [str(a)]
    [problem] = found.problems
    assert str(a) in problem.message and str(tmp_path / "y") in problem.message and "Rename" in problem.message


def test_match_model_id():
    ids = ["Llama-2-7b-hf", "org/other"]
    assert match_model_id("meta-llama/Llama-2-7b-hf", ids) == "Llama-2-7b-hf"
    assert match_model_id("/models/other", ids) == "org/other"
    assert match_model_id("nothing", ids) is None


def test_missing_shard_and_same_path_twice(tmp_path):
    folder = cf.sharded_safetensors(tmp_path / "sh", SD, n=2)
    (folder / "model-00002-of-00002.safetensors").unlink()
    ok = cf.save_safetensors(tmp_path / "ok.safetensors", SD)
    found = discover([tmp_path, ok])
    assert [m.id for m in found.models] == ["ok"]
    assert "model-00002-of-00002.safetensors" in found.problems[0].message


def test_peft_embedding_and_conv_updates(tmp_path):
    emb, conv = torch.randn(10, 6), torch.randn(5, 3, 3, 3)
    cf.save_safetensors(tmp_path / "base" / "model.safetensors",
                        {"model.embed_tokens.weight": emb, "stem.conv.weight": conv})
    ea, eb = torch.randn(2, 10), torch.randn(6, 2)  # PEFT Embedding: A (r, vocab), B (dim, r)
    ca, cb = torch.randn(2, 3, 3, 3), torch.randn(5, 2, 1, 1)
    ad = tmp_path / "ad"
    ad.mkdir()
    save_file({"base_model.model.model.embed_tokens.lora_embedding_A": ea,
               "base_model.model.model.embed_tokens.lora_embedding_B": eb,
               "base_model.model.stem.conv.lora_A.weight": ca, "base_model.model.stem.conv.lora_B.weight": cb},
              str(ad / "adapter_model.safetensors"))
    (ad / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 2, "base_model_name_or_path": "base"}))
    found = discover([tmp_path])
    with open_model(only(found, "base")) as base, open_model(only(found, "ad"), base) as lora:
        assert torch.allclose(lora.read("embed_tokens.weight"), emb + (eb @ ea).T, atol=1e-5)
        assert torch.allclose(lora.read("embed_tokens.weight", rows=(3, 8)), (emb + (eb @ ea).T)[3:8], atol=1e-5)
        want = conv + (cb.flatten(1) @ ca.flatten(1)).reshape(conv.shape)
        assert torch.allclose(lora.read("stem.conv.weight"), want, atol=1e-5)
        assert torch.allclose(lora.read("stem.conv.weight", rows=(1, 4)), want[1:4], atol=1e-5)


def test_trainer_side_files_are_not_models(tmp_path):
    run = tmp_path / "run"
    cf.save_safetensors(run / "checkpoint-500" / "weights.safetensors", SD)
    torch.save({"lr": 0.1}, run / "checkpoint-500" / "optimizer.pt")
    torch.save({"x": 1}, run / "checkpoint-500" / "training_args.bin")
    cf.save_safetensors(run / "final.safetensors", SD)
    torch.save({"x": 1}, run / "training_args.bin")
    found = discover([run])
    assert sorted(m.id for m in found.models) == ["checkpoint-500", "final"] and not found.problems


def test_broken_shard_index_is_a_problem(tmp_path):
    folder = cf.sharded_safetensors(tmp_path / "sh", SD, n=2)
    (folder / "model.safetensors.index.json").write_text("{not json")
    cf.save_safetensors(tmp_path / "ok.safetensors", SD)
    found = discover([tmp_path])
    assert [m.id for m in found.models] == ["ok"] and "model.safetensors.index.json" in found.problems[0].message


# --- the pass's fast paths of the safetensors reader -------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_read_into_fills_a_buffer_with_the_same_rows_as_read(tmp_path, dtype):
    from checkpoint_factory import hf_folder, llama_state
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    sd = {k: v.to(dtype) for k, v in llama_state(seed=4).items()}
    hf_folder(tmp_path / "m", sd)
    ref = discover([tmp_path / "m"]).models[0]
    with open_model(ref) as reader:
        name = "layers.0.mlp.up_proj.weight"
        whole = reader.read(name)
        for rows in [(0, 3), (5, whole.shape[0]), None]:
            expected = whole if rows is None else whole[rows[0]:rows[1]]
            buf = torch.empty(expected.numel(), dtype=dtype)
            got = reader.read_into(name, rows, buf)
            assert torch.equal(got, expected)
            assert got.data_ptr() == buf.data_ptr()  # no extra copy
        reader.prefetch(name, (0, 3))  # a hint: must not fail or change anything
        assert torch.equal(reader.read(name), whole)
        with pytest.raises(ValueError):
            reader.read_into(name, (0, 3), torch.empty(7, dtype=dtype))  # wrong size: a caller bug


def test_header_offsets_that_do_not_match_the_shape_are_reported(tmp_path):
    import json as _json
    import struct

    from checkpoint_factory import hf_folder, llama_state
    from mother_core.errors import MotherError
    from mother_core.io.discovery import discover
    from mother_core.io.readers import open_model

    folder = hf_folder(tmp_path / "m", llama_state(seed=5))
    path = tmp_path / "m" / "model.safetensors"
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = _json.loads(raw[8:8 + n])
    key = next(k for k in header if k != "__metadata__")
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin, end - 4]  # one element short of its shape
    new = _json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (n - len(new)) if len(new) <= n else b""
    assert len(new) == n
    path.write_bytes(raw[:8] + new + raw[8 + n:])
    with pytest.raises(MotherError, match="model.safetensors"):
        with open_model(discover([folder]).models[0]) as reader:
            reader.read(key.removeprefix("model."))


def test_a_folder_of_empty_folders_lists_the_formats_once(tmp_path):
    """"No model found" in a folder of folders that hold none named every subfolder with the whole format list
    (~500 characters each: four times for three subfolders); it names each subfolder, and the formats once."""
    from mother_core.io.discovery import FORMATS_HELP

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    with pytest.raises(ModelNotFoundError) as err:
        discover([tmp_path])
    text = str(err.value)
    assert text.count(FORMATS_HELP) == 1, text
    assert all(f"{tmp_path / n} holds no model we can read." in text for n in ("a", "b", "c")), text
