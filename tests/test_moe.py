"""Mixture-of-experts families read in every layout and recovered (issue 11, "the formats users have").

A tiny Mixtral family is trained (AdamW) and made with the real tools (tests/moe_family.py): per-expert
``save_pretrained`` files, ``torch.save`` of transformers 5's fused ``state_dict``, a GGUF file with the experts
stacked as llama.cpp's converter writes them, a bf16 cast, a mergekit merge (written fused), and LoRAs on the
attention and, through peft's ``target_parameters``, on the expert parameters (one unmerged, two merged).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mother_core.io.discovery import discover
from mother_core.io.names import layer_kind, normalise_name
from mother_core.io.readers import open_model
from mother_core.recovery.recover import recover
from mother_core.stats.compute import compute_statistics

from moe_family import EDGES, moe_family, moe_node, moe_root

# Its tests share a module fixture (a trained family): one worker builds it once.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning"),
              pytest.mark.xdist_group("moe")]

EXPERTS = ("gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for mod in ("transformers", "peft", "mergekit", "gguf"):
        pytest.importorskip(mod)
    return moe_family("mixtral", tmp_path_factory.mktemp("moe"), steps=12, child_steps=8)


def _readers(folder: Path, *ids: str):
    refs = {m.id: m for m in discover([folder]).models}
    return [open_model(refs[i]) for i in ids]


def test_mixtral_names_are_transformers_5s() -> None:
    """Mixtral's hub names (block_sparse_moe, w1 / w2 / w3) read under the names transformers 5 gives the modules."""
    hub = "model.layers.3.block_sparse_moe.experts.7"
    assert normalise_name(f"{hub}.w1.weight") == "layers.3.mlp.experts.7.gate_proj.weight"
    assert normalise_name(f"{hub}.w2.weight") == "layers.3.mlp.experts.7.down_proj.weight"
    assert normalise_name(f"{hub}.w3.weight") == "layers.3.mlp.experts.7.up_proj.weight"
    assert normalise_name("model.layers.3.block_sparse_moe.gate.weight") == "layers.3.mlp.gate.weight"
    assert normalise_name("layers.0.feed_forward.w1.weight") == "layers.0.feed_forward.w1.weight"  # not an expert
    assert layer_kind("layers.0.mlp.experts.gate_proj.weight", (4, 32, 16)) == "mlp"
    assert layer_kind("layers.0.mlp.experts.gate_up_proj", (4, 64, 16)) == "mlp"
    assert layer_kind("conv.weight", (4, 3, 3, 3)) == "conv"


def test_per_expert_and_fused_read_identically(family: Path) -> None:
    """The hub's per-expert files and transformers 5's fused state dict list the same stacked tensors, bit for bit,
    row ranges (experts) included, and through the pass's buffer path."""
    per, fused = _readers(family, "m-f11", "m-f11-fused")
    infos_p, infos_f = per.tensor_infos(), fused.tensor_infos()
    assert set(infos_p) == set(infos_f)
    stacked = [n for n in infos_p if ".experts." in n]
    assert sorted(stacked) == sorted(f"layers.{i}.mlp.experts.{p}.weight" for i in range(2) for p in EXPERTS)
    for name in infos_p:
        assert infos_p[name].shape == infos_f[name].shape, name
        assert torch.equal(per.read(name), fused.read(name)), name
    name = "layers.1.mlp.experts.up_proj.weight"
    assert infos_p[name].shape == (4, 32, 32)
    whole = per.read(name)
    for reader in (per, fused):
        assert torch.equal(reader.read(name, (1, 3)), whole[1:3])
        buf = torch.empty((2, 32, 32), dtype=whole.dtype)
        assert torch.equal(reader.read_into(name, (2, 4), buf), whole[2:4])
    for r in (per, fused):
        r.close()


def test_gguf_of_moe_reads_its_source(family: Path) -> None:
    """The GGUF file (experts stacked as ``blk.N.ffn_*_exps``, Q8_0) lists every tensor of its safetensors source
    under the same name and shape, equal within Q8_0's rounding (a weight's 8-bit step: ~0.5% of its RMS)."""
    src, gg = _readers(family, "m-f1", "m-f1-q8")
    assert set(src.tensor_infos()) == set(gg.tensor_infos())
    for name, info in src.tensor_infos().items():
        assert gg.tensor_infos()[name].shape == info.shape, name
        a, b = src.read(name).float(), gg.read(name).float()
        assert float((a - b).norm() / a.norm()) < 0.01, name
    # row ranges of a stacked tensor are experts
    name = "layers.0.mlp.experts.down_proj.weight"
    assert torch.equal(gg.read(name, (1, 2))[0], gg.read(name)[1])


def test_expert_lora_adapter_reads_as_peft_merges_it(family: Path, tmp_path: Path) -> None:
    """An unmerged adapter on the expert parameters (peft ``target_parameters``), read onto its base, equals
    what peft's own ``merge_and_unload`` writes (``PeftModel.from_pretrained`` of the same folder)."""
    from mother_zoo.typed import ops

    ops.merge_adapter(moe_node(7, "mixtral", "lora", "lora", (0,), 22), family / "m-root", family / "m-adapter",
                      tmp_path / "merged")
    refs = {m.id: m for m in discover([family / "m-root", family / "m-adapter", tmp_path / "merged"]).models}
    base = open_model(refs["m-root"])
    adapter, merged = open_model(refs["m-adapter"], base=base), open_model(refs["merged"])
    changed = 0
    for name in merged.tensor_infos():
        a, m = adapter.read(name).float(), merged.read(name).float()
        assert torch.allclose(a, m, rtol=0, atol=1e-6), name
        changed += ".experts." in name and not torch.equal(m, base.read(name).float())
    assert changed == 6  # every stacked expert tensor of both layers moved


def _per_expert_model(family: Path):
    """The root's experts as transformers 4's Mixtral held them, one module per expert (``block_sparse_moe.experts.E``
    with ``w1`` / ``w2`` / ``w3``), loaded with the root's weights; its forward sums the experts' SwiGLU outputs (what
    each expert computes; the router is left out), so that adapters on them train through it."""
    from safetensors.torch import load_file
    from torch import nn

    state = load_file(str(next((family / "m-root").glob("*.safetensors"))))
    experts = {k: v for k, v in state.items() if ".block_sparse_moe.experts." in k}
    inter, hidden = experts["model.layers.0.block_sparse_moe.experts.0.w1.weight"].shape

    class Expert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.w3 = nn.Linear(hidden, inter, bias=False), nn.Linear(hidden, inter, bias=False)
            self.w2 = nn.Linear(inter, hidden, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))

    class Experts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Module()
            self.model.layers = nn.ModuleList()
            for _ in range(2):
                block = nn.Module()
                block.block_sparse_moe = nn.Module()
                block.block_sparse_moe.experts = nn.ModuleList(Expert() for _ in range(4))
                self.model.layers.append(block)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.model.layers:
                x = x + sum(expert(x) for expert in block.block_sparse_moe.experts)
            return x

    model = Experts()
    model.load_state_dict(experts, strict=True)
    return model, hidden


def _assert_reads_as_merged(family: Path, adapter_dir: Path, merged: dict[str, torch.Tensor], atol: float) -> None:
    """The adapter in ``adapter_dir``, read onto the root (experts listed stacked), equals ``merged`` (peft's own
    ``merge_and_unload`` state, one module per expert) expert by expert, whole and in row ranges (experts)."""
    refs = {m.id: m for m in discover([family / "m-root", adapter_dir]).models}
    base = open_model(refs["m-root"])
    adapter = open_model(refs[adapter_dir.name], base=base)
    hub = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for layer in range(2):
        for proj, short in hub.items():
            name = f"layers.{layer}.mlp.experts.{proj}.weight"
            want = torch.stack([merged[f"model.layers.{layer}.block_sparse_moe.experts.{e}.{short}.weight"]
                                for e in range(4)])
            assert not torch.equal(want, base.read(name).float()), name
            assert torch.allclose(adapter.read(name).float(), want, rtol=0, atol=atol), name
            assert torch.allclose(adapter.read(name, (1, 3)).float(), want[1:3], rtol=0, atol=atol), name
    for name in base.tensor_infos():  # every other tensor is the base's
        if ".experts." not in name:
            assert torch.equal(adapter.read(name), base.read(name)), name


def test_lora_on_single_expert_modules_reads_as_peft_merges_it(family: Path, tmp_path: Path) -> None:
    """An adapter made where each expert is a module of its own (transformers 4's Mixtral: ``target_modules`` w1 /
    w2 / w3, one ``lora_A`` / ``lora_B`` pair per expert), read onto a base whose experts are listed stacked,
    equals PEFT's own ``merge_and_unload`` expert by expert, one expert's alpha set apart (``alpha_pattern``)."""
    peft = pytest.importorskip("peft")
    model, _ = _per_expert_model(family)
    torch.manual_seed(3)
    config = peft.LoraConfig(target_modules=["w1", "w2", "w3"], r=4, lora_alpha=8, init_lora_weights=False,
                             alpha_pattern={"layers.1.block_sparse_moe.experts.2.w1": 2})
    wrapped = peft.get_peft_model(model, config)
    wrapped.save_pretrained(str(tmp_path / "m-adapter"))
    _assert_reads_as_merged(family, tmp_path / "m-adapter", wrapped.merge_and_unload().state_dict(), 1e-6)


#: PEFT type -> its config on single experts' modules (ranks and alphas apart so that a wrong scale shows; IA3 with
#: ``w2`` feed-forward, so scaling its inputs, and w1 / w3 their outputs; OFT and BOFT in blocks of 8; VeRA's
#: projections shared by experts of two shapes).
EXPERT_ADAPTERS = {
    "loha": ("LoHaConfig", {"r": 4, "alpha": 6, "alpha_pattern": {"layers.1.block_sparse_moe.experts.2.w1": 3}}),
    "lokr": ("LoKrConfig", {"r": 2, "alpha": 3, "decompose_both": True}),
    "ia3": ("IA3Config", {"feedforward_modules": ["w2"]}),
    "oft": ("OFTConfig", {"r": 0, "oft_block_size": 8}),
    "boft": ("BOFTConfig", {"boft_block_size": 8}),
    "vera": ("VeraConfig", {"r": 4}),
    "hra": ("HRAConfig", {"r": 4}),
}


def trained_expert_adapter(family: Path, kind: str, folder: Path) -> dict[str, torch.Tensor]:
    """A PEFT adapter of type ``kind`` (:data:`EXPERT_ADAPTERS`) on the root's single experts' modules
    (:func:`_per_expert_model`), with its real initialisation and 4 real AdamW steps (lr 1e-2) through the experts'
    forward, saved unmerged into ``folder`` naming ``m-root`` its base; returns PEFT's own ``merge_and_unload``
    state."""
    import peft

    model, hidden = _per_expert_model(family)
    torch.manual_seed(5)
    config_class, kwargs = EXPERT_ADAPTERS[kind]
    wrapped = peft.get_peft_model(model, getattr(peft, config_class)(target_modules=["w1", "w2", "w3"], **kwargs))
    opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(16, hidden), torch.randn(16, hidden)
    for _ in range(4):
        loss = (wrapped(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    wrapped.save_pretrained(str(folder))
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "m-root"  # the base as the set names it (peft writes None for a bare module)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return wrapped.merge_and_unload().state_dict()


@pytest.mark.parametrize("kind", list(EXPERT_ADAPTERS))
def test_other_adapters_on_single_expert_modules_read_as_peft_merges_them(family: Path, tmp_path: Path,
                                                                          kind: str) -> None:
    """LoHa, LoKr, IA3, OFT, BOFT, VeRA and HRA adapters made by PEFT on single experts' modules (transformers 4's
    Mixtral ``w1`` / ``w2`` / ``w3``), with their real initialisation and 4 real AdamW steps through the experts'
    forward, saved unmerged: read onto the base whose experts are listed stacked, every expert equals PEFT's own
    ``merge_and_unload`` (to float32 summation order), row ranges too, and the adapter is recovered as the root's
    ``adapter``. Before, each was refused as a base mismatch (no tensor named for one expert)."""
    pytest.importorskip("peft")
    folder = tmp_path / f"m-{kind}"
    merged = trained_expert_adapter(family, kind, folder)
    _assert_reads_as_merged(family, folder, merged, 1e-6)
    stats = compute_statistics(discover([family / "m-root", family / "m-stranger", folder]), device="cpu")
    assert not stats.problems, stats.problems
    edge = next(e for e in recover(stats).edges if e.child == folder.name)
    assert (edge.parent, edge.relation) == ("m-root", "adapter"), edge


def test_misfitting_expert_adapter_names_the_expert(family: Path, tmp_path: Path) -> None:
    """A LoHa on single experts' modules whose factors for one expert do not fit that expert (its ``hada_w1_a`` and
    ``hada_w2_a`` a row short: an update of another width) is refused naming the expert and the shapes, and the
    statistics pass reports it as that adapter's problem, the other models read."""
    pytest.importorskip("peft")
    from safetensors.torch import load_file, save_file

    from mother_core.errors import AdapterMismatchError

    folder = tmp_path / "m-loha"
    trained_expert_adapter(family, "loha", folder)
    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    for part in ("hada_w1_a", "hada_w2_a"):
        key = next(k for k in tensors if f"layers.1.block_sparse_moe.experts.3.w1.{part}" in k)
        tensors[key] = tensors[key][:-1].contiguous()
    save_file(tensors, str(path))
    refs = {m.id: m for m in discover([family / "m-root", family / "m-stranger", folder]).models}
    with open_model(refs["m-root"]) as base, pytest.raises(AdapterMismatchError, match="expert 3 of layers.1"):
        open_model(refs["m-loha"], base=base)
    stats = compute_statistics(discover([family / "m-root", family / "m-stranger", folder]), device="cpu")
    assert stats.n_models == 2 and any("expert 3" in p.message for p in stats.problems), stats.problems


def test_unknown_expert_layout_is_a_note(tmp_path: Path) -> None:
    """gpt-oss stores its fused experts (experts, in, out), gate and up interleaved: kept under their stored
    names with a note (compared with the same layout only), never a crash."""
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tf.GptOssConfig(vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                          head_dim=8, max_position_embeddings=64, layer_types=["full_attention"] * 2)
    for name in ("gpt-oss", "gpt-oss-2"):
        tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path / name))
    (reader,) = _readers(tmp_path, "gpt-oss")
    infos = reader.tensor_infos()
    assert infos["layers.0.mlp.experts.gate_up_proj"].shape == (4, 32, 64)
    assert any("gate_up_proj" in note and "same layout" in note for note in reader.notes)
    assert reader.read("layers.0.mlp.experts.gate_up_proj", (0, 1)).shape == (1, 32, 64)
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    assert stats.n_models == 2 and any("gate_up_proj" in p.message for p in stats.problems)
    assert any(t.name == "layers.0.mlp.experts.gate_up_proj" and t.kind == "mlp" for t in stats.tensors)


def test_qwen3_moe_gguf_router_and_experts(tmp_path: Path) -> None:
    """Qwen3-MoE's GGUF (llama.cpp's ``qwen3moe``: per-head q/k norms, router ``ffn_gate_inp`` in float32) lists
    its source's names, the router as ``mlp.gate``."""
    pytest.importorskip("gguf")
    from mother_zoo.typed import quant

    moe_root("qwen3_moe", tmp_path / "root", steps=4)
    (tmp_path / "q").mkdir()
    quant.write_gguf("qwen3_moe", tmp_path / "root", tmp_path / "q" / "m.gguf", "Q8_0", "root", [])
    src, gg = _readers(tmp_path, "root", "q")
    assert set(src.tensor_infos()) == set(gg.tensor_infos())
    assert torch.equal(src.read("layers.1.mlp.gate.weight"), gg.read("layers.1.mlp.gate.weight"))
    a, b = src.read("layers.1.mlp.experts.gate_proj.weight"), gg.read("layers.1.mlp.experts.gate_proj.weight")
    assert float((a - b).norm() / a.norm()) < 0.01


def test_fused_gate_up_gguf_reads_its_source(tmp_path: Path) -> None:
    """A GGUF file of the architectures llama.cpp writes with one fused ``blk.N.ffn_gate_up_exps`` tensor
    (experts, 2 x inter, hidden; gate rows first, as transformers 5's ``gate_up_proj``: Qwen3-Next / Qwen3.5-MoE)
    lists every tensor of its per-expert safetensors source under the same name, bit for bit (float32), the q / k
    norms as transformers names them (``self_attn.q_norm``, not Persimmon's ``q_layernorm``)."""
    gguf = pytest.importorskip("gguf")
    import json

    from mother_zoo.typed import quant
    from mother_zoo.typed.ops import load_state

    moe_root("qwen3_moe", tmp_path / "root", steps=2)
    cfg = json.loads((tmp_path / "root" / "config.json").read_text())
    tensors = dict(quant.gguf_tensors("qwen3_moe", load_state(tmp_path / "root"), cfg))
    for b in range(cfg["num_hidden_layers"]):
        gate, up = tensors.pop(f"blk.{b}.ffn_gate_exps.weight"), tensors.pop(f"blk.{b}.ffn_up_exps.weight")
        tensors[f"blk.{b}.ffn_gate_up_exps.weight"] = torch.cat([gate, up], dim=1)
        tensors[f"blk.{b}.post_attention_norm.weight"] = tensors.pop(f"blk.{b}.ffn_norm.weight")
    (tmp_path / "q").mkdir()
    writer = gguf.GGUFWriter(str(tmp_path / "q" / "m.gguf"), "qwen35moe")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_expert_count(4)
    for name, t in tensors.items():
        writer.add_tensor(name, t.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    src, gg = _readers(tmp_path, "root", "q")
    assert not gg.notes
    assert set(src.tensor_infos()) == set(gg.tensor_infos())
    assert "layers.0.self_attn.q_norm.weight" in gg.tensor_infos()
    for name in src.tensor_infos():
        assert torch.equal(src.read(name).float(), gg.read(name).float()), name
    name = "layers.1.mlp.experts.up_proj.weight"
    assert torch.equal(gg.read(name, (2, 4)), src.read(name)[2:4])


def test_moe_family_recovered(family: Path) -> None:
    """Every edge of the family, with its relation: fine-tunes, the GGUF's source, the cast and the fused copy
    (``convert``), the expert adapter's base, both merged LoRAs' parents (one on the experts and router only: read
    at low rank from one expert's skeleton, :func:`~mother_core.stats.skeleton.skeleton_index`) and both inputs of
    the merge; the stranger stays alone."""
    stats = compute_statistics(discover([family]), device="cpu")
    assert not stats.problems
    slots = [t for t in stats.tensors if ".experts." in t.name]
    assert len(slots) == 6 and all(len(t.shape) == 3 and t.kind == "mlp" for t in slots)
    assert all(stats.tensors.index(t) in stats.skeletons for t in slots)  # one expert's submatrix each
    rec = recover(stats)
    got = {(e.child, e.parent, e.relation) for e in rec.edges}
    assert got == set(EDGES)
    assert rec.parent_of("m-stranger") is None
    typed = [e.relation_confidence for e in rec.edges if e.relation != "finetune"]
    assert np.isfinite(typed).all() and min(typed) > 0.5
