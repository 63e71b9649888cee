"""Stable Diffusion XL files as people share them (issue 11): single-file checkpoints, whose UNet has another
block layout than SD 1.x / 2.x (3 levels, no attention in the first, transformer depth > 1, the "text_time"
``label_emb``), and kohya-ss SDXL LoRAs, which name modules in that original (LDM) layout. Built on tiny UNets
made by diffusers; diffusers itself is the oracle: its single-file converter for the names, its LoRA loader
(``lora_state_dict`` with the UNet's config, ``load_lora_into_unet``, ``fuse_lora``) for the merge."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from format_factory import (  # noqa: E402
    denoising_steps, fused_unet_state, ldm_single_file, ldm_unet_names, tiny_sd_unet, tiny_sdxl_unet,
    tiny_text_encoder_lora, with_drawn_lora,
)
from safetensors.torch import save_file  # noqa: E402

from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.errors import AdapterMismatchError  # noqa: E402
from mother_core.io import sd_single_file  # noqa: E402
from mother_core.io.base import TensorInfo  # noqa: E402
from mother_core.io.discovery import discover  # noqa: E402
from mother_core.io.readers import open_model  # noqa: E402
from mother_core.io.sd_lora import KOHYA, lora_modules, resolve  # noqa: E402


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("sdxl")

def _state(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in unet.state_dict().items()}


def _unclip_unet(seed: int):
    """A tiny SD 2.x unCLIP-shaped UNet: SD 2's four levels with a "projection" class embedding (LDM
    ``label_emb.0``, as SDXL's added-conditioning MLP is)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 16, 16, 16),
        norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2, use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        class_embed_type="projection", projection_class_embeddings_input_dim=12)


def _folder(unet_or_state, folder: Path) -> Path:
    """A diffusers repository holding the UNet (config and weights, as ``save_pretrained`` writes them)."""
    (folder / "unet").mkdir(parents=True)
    if isinstance(unet_or_state, dict):
        save_file(unet_or_state, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    else:
        unet_or_state.save_pretrained(folder / "unet")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    return folder


def _single(state, path: Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
    single = ldm_single_file(state)
    # SDXL's text encoders sit under conditioner.*, not cond_stage_model.* (sgm layout)
    single["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    save_file({**single, **(extra or {})}, str(path))
    return path


LAYOUTS = {"sd1": tiny_sd_unet, "sdxl": tiny_sdxl_unet, "sdxl-3-resnets": lambda s: tiny_sdxl_unet(s, 3),
           "unclip": _unclip_unet}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_single_file_reads_as_diffusers_converts_it(tmp_path, layout):
    """Our reader lists and reads a single-file checkpoint's UNet under exactly the names diffusers' own
    converter gives each tensor, for the SD 1.x, SDXL (two and three ResNets a level) and unCLIP layouts;
    and the LDM names derived back from the diffusers names (what kohya SDXL LoRAs are resolved against)
    are the file's."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = LAYOUTS[layout](0)
    state = _state(unet)
    extra = {"noise_augmentor.betas": torch.ones(4)} if layout == "unclip" else None
    path = _single(state, tmp_path / f"{layout}.safetensors", extra)
    from safetensors.torch import load_file

    single = load_file(str(path))
    converted = convert_ldm_unet_checkpoint(dict(single), dict(unet.config))
    assert set(converted) == set(state)  # the factory's LDM names are the ones diffusers reads
    ref = discover([path]).models[0]
    assert ref.format == "safetensors:sd-single-file"
    with open_model(ref) as reader:
        assert set(reader.tensor_infos()) == set(converted)
        assert not reader.notes
        for name, want in converted.items():
            assert torch.equal(reader.read(name), want), name
    assert sd_single_file.ldm_unet_names(state) == ldm_unet_names(state)


def test_sharded_single_file_reads_whole(tmp_path):
    """An SDXL single file split in three shards (the HF sharded layout) reads as the whole file does: the
    structure is the whole UNet's, read from every shard's names, not from the part one shard holds."""
    from checkpoint_factory import sharded_safetensors
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = tiny_sdxl_unet(0)
    single = ldm_single_file(_state(unet))
    converted = convert_ldm_unet_checkpoint(dict(single), dict(unet.config))
    ref = discover([sharded_safetensors(tmp_path / "sharded", single, n=3)]).models[0]
    assert ref.format == "safetensors-sharded:sd-single-file" and len(ref.files) == 3
    with open_model(ref) as reader:
        assert not reader.notes and set(reader.tensor_infos()) == set(converted)
        for name, want in converted.items():
            assert torch.equal(reader.read(name), want), name


def test_diffusers_from_single_file_agrees(tmp_path):
    """diffusers' loader proper (``from_single_file`` with the diffusers folder's config) loads the SDXL
    file into the same tensors under the same names as our reader lists."""
    from diffusers import UNet2DConditionModel

    unet = tiny_sdxl_unet(0)
    state = _state(unet)
    folder = _folder(unet, tmp_path / "sdxl")
    path = _single(state, tmp_path / "sdxl.safetensors")
    loaded = UNet2DConditionModel.from_single_file(str(path), config=str(folder), subfolder="unet",
                                                   local_files_only=True)
    theirs = loaded.state_dict()
    with open_model(discover([path]).models[0]) as reader:
        assert set(reader.tensor_infos()) == set(theirs)
        for name, want in theirs.items():
            assert torch.equal(reader.read(name), want), name


def test_table_of_sd1_misnames_sdxl():
    """The rule this replaces: SD 1.x's fixed table renamed SDXL's up-path attention at ``output_blocks.2.1``
    as an upsampler; the structure read from the file does not."""
    ldm = sd_single_file.blocks_from_ldm(ldm_unet_names(_state(tiny_sdxl_unet(0))).values())
    assert [len(lv.attentions) for lv in ldm.down] == [2, 2, 2] and [lv.attentions[0] for lv in ldm.down] == [
        False, True, True]
    assert ldm.diffusers_name("output_blocks.2.1.norm.weight") == "up_blocks.0.attentions.2.norm.weight"
    assert ldm.diffusers_name("output_blocks.2.2.conv.weight") == "up_blocks.0.upsamplers.0.conv.weight"
    assert ldm.diffusers_name("label_emb.0.2.bias") == "add_embedding.linear_2.bias"


def test_unknown_layout_keeps_ldm_names_with_a_note(tmp_path):
    """A UNet whose blocks are not a diffusers UNet's (here an output block holding two transformers) keeps its
    LDM names, with a note saying why; nothing is renamed by guess."""
    state = _state(tiny_sdxl_unet(0))
    single = ldm_single_file(state)
    odd = {k.replace("output_blocks.3.1.", "output_blocks.3.2."): v.clone() for k, v in single.items()
           if k.startswith("model.diffusion_model.output_blocks.3.1.")}
    single.update(odd)
    save_file(single, str(tmp_path / "odd.safetensors"))
    with open_model(discover([tmp_path / "odd.safetensors"]).models[0]) as reader:
        names = set(reader.tensor_infos())
        (note,) = reader.notes
    assert "output_blocks.3 holds resnet, attention, attention" in note and "keep their original names" in note
    assert "input_blocks.4.1.proj_in.weight" in names and not any(n.startswith("down_blocks.") for n in names)


def _finetuned(seed: int) -> dict[str, torch.Tensor]:
    """The tiny SDXL UNet trained two AdamW steps (denoising loss, SDXL's added conditions)."""
    return _state(denoising_steps(tiny_sdxl_unet(1), seed, sdxl=True))


@pytest.fixture(scope="module")
def finetuned() -> dict[str, torch.Tensor]:
    return _finetuned(3)


def test_sdxl_single_file_and_its_diffusers_folder_are_one_model(tmp_path, finetuned):
    """A single-file SDXL and the diffusers folder of the same weights are the same model to the engine (a
    ``convert`` edge: same values, another format), and a fine-tune of it hangs under them."""
    folder = tmp_path / "set"
    base = _state(tiny_sdxl_unet(1))
    _folder(base, folder / "sdxl-base")
    _single(base, folder / "sdxl-base-single.safetensors")
    _single(finetuned, folder / "sdxl-finetune.safetensors")
    _folder(_state(tiny_sdxl_unet(2)), folder / "unrelated")
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {frozenset((e.parent, e.child)): e for e in result.edges}
    pair = edges[frozenset(("sdxl-base", "sdxl-base-single"))]
    assert pair.relation == "convert", pair
    tune = next(e for e in result.edges if e.child == "sdxl-finetune")
    assert tune.parent in ("sdxl-base", "sdxl-base-single") and tune.relation == "finetune", tune
    assert all("unrelated" not in k for k in edges)


def _sdxl_lora(seed: int, rank: int = 4, alpha: float = 8.0):
    """The tiny SDXL UNet with a peft LoRA on the attention projections, the transformers' proj_in /
    proj_out and feed-forward, and the ResNets' 3x3 convolutions (LoCon); its B factors drawn."""
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2", "conv1", "conv2"]
    return with_drawn_lora(tiny_sdxl_unet(1), targets, seed, rank, alpha)


def _save_kohya_sdxl(unet, path: Path, metadata: dict[str, str]) -> Path:
    """The LoRA as sd-scripts writes an SDXL network: ``lora_unet_<LDM module, dots as underscores>`` with
    ``lora_down`` / ``lora_up`` / ``alpha``, and both text encoders' layers as ``lora_te1_`` / ``lora_te2_``."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import get_peft_model_state_dict

    config = unet.peft_config["default"]
    state = get_peft_model_state_dict(unet)
    modules = {k.rsplit(".lora_", 1)[0] for k in state}
    ldm = ldm_unet_names(_state(tiny_sdxl_unet(1)))  # the whole UNet's names: its structure
    out: dict[str, torch.Tensor] = {}
    for m in modules:
        key = "lora_unet_" + ldm[m + ".weight"].removesuffix(".weight").replace(".", "_")
        out[key + ".lora_down.weight"] = state[m + ".lora_A.weight"]
        out[key + ".lora_up.weight"] = state[m + ".lora_B.weight"]
        out[key + ".alpha"] = torch.tensor(float(config.lora_alpha))
    text = convert_state_dict_to_kohya({"text_encoder." + k: v for k, v in tiny_text_encoder_lora(3).items()})
    for k, v in text.items():
        for te in ("lora_te1_", "lora_te2_"):
            out[k.replace("lora_te_", te, 1)] = v
    meta = {"ss_network_dim": str(config.r), "ss_network_alpha": str(config.lora_alpha),
            "ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0", **metadata}
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=meta)
    return path


def _diffusers_reads(path: Path) -> dict[str, torch.Tensor]:
    """The kohya SDXL file as diffusers reads it: SDXL's ``lora_state_dict`` given the UNet's config (which maps
    the LDM blocks), loaded into a fresh base UNet with its network alphas and fused."""
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin as Loader

    unet = tiny_sdxl_unet(1)
    state, alphas = Loader.lora_state_dict(str(path), unet_config=unet.config)
    unet_state = {k: v for k, v in state.items() if k.startswith("unet.")}
    unet_alphas = {k: v for k, v in alphas.items() if k.startswith("unet.")}
    Loader.load_lora_into_unet(unet_state, unet_alphas, unet)
    return fused_unet_state(unet)


@pytest.fixture(scope="module")
def kohya(tmp_path_factory):
    root = tmp_path_factory.mktemp("kohya-sdxl")
    lora = _sdxl_lora(5)
    path = _save_kohya_sdxl(lora, root / "lora.safetensors", {"ss_sd_model_name": "sdxl-base.safetensors"})
    return {"path": path, "expected": fused_unet_state(lora), "diffusers": _diffusers_reads(path),
            "base": _state(tiny_sdxl_unet(1))}


@pytest.mark.parametrize("base_kind", ["folder", "single-file"])
def test_kohya_sdxl_lora_merges_as_diffusers_fuses_it(kohya, tmp_path, base_kind):
    """A kohya SDXL LoRA (LDM module names) reads as its base with the LoRA merged: equal to peft's merge of
    the LoRA that was saved and to diffusers' own reading of the file, on a diffusers folder or a
    single-file base; exactly the modules it holds change; the text encoders' layers are left out."""
    if base_kind == "folder":
        _folder(kohya["base"], tmp_path / "sdxl-base")
    else:
        _single(kohya["base"], tmp_path / "sdxl-base.safetensors")
    shutil.copy(kohya["path"], tmp_path / "lora.safetensors")
    found = {m.id: m for m in discover([tmp_path]).models}
    assert found["lora"].format == "sd-lora:kohya" and found["lora"].base_id == "sdxl-base"
    with open_model(found["sdxl-base"]) as base, open_model(found["lora"], base=base) as reader:
        assert set(reader.tensor_infos()) == set(kohya["expected"])
        changed = 0
        for name, want in kohya["expected"].items():
            got = reader.read(name)
            torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-5)
            torch.testing.assert_close(got, kohya["diffusers"][name], atol=2e-6, rtol=1e-5)
            changed += not torch.equal(got, kohya["base"][name])
    from safetensors import safe_open

    modules = lora_modules(str(kohya["path"]), KOHYA, list(safe_open(str(kohya["path"]), "pt").keys()))
    assert all(m.key.startswith(("input_blocks_", "middle_block_", "output_blocks_")) for m in modules)
    assert changed == len(modules) > 50


def test_kohya_sdxl_lora_is_an_adapter_of_its_base(kohya, finetuned, tmp_path):
    """In a set with the base (single file), a fine-tune and an unrelated SDXL, the kohya SDXL LoRA naming the
    base's file is its ``adapter`` child."""
    folder = tmp_path / "set"
    folder.mkdir()
    _single(kohya["base"], folder / "sdxl-base.safetensors")
    _single(finetuned, folder / "sdxl-finetune.safetensors")
    _single(_state(tiny_sdxl_unet(2)), folder / "unrelated.safetensors")
    shutil.copy(kohya["path"], folder / "lora.safetensors")
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {e.child: e for e in result.edges}
    assert edges["lora"].parent == "sdxl-base" and edges["lora"].relation == "adapter", edges["lora"]
    assert "unrelated" not in edges


def test_ldm_name_for_another_structure_is_refused():
    """An LDM kohya name the base has no module for (a LoRA of a deeper UNet) is refused, saying so."""
    shapes = {"lora_unet_input_blocks_10_1_proj_in.lora_down.weight": (2, 16),
              "lora_unet_input_blocks_10_1_proj_in.lora_up.weight": (16, 2)}
    base = {k: TensorInfo(k, tuple(v.shape), "float32") for k, v in _state(tiny_sdxl_unet(1)).items()}
    with pytest.raises(AdapterMismatchError, match="original .LDM. UNet layout.*no such module"):
        resolve("x", KOHYA, lora_modules("x", KOHYA, list(shapes)), shapes, base, "sdxl")
    # the same module at the index the base has resolves
    ok = {k.replace("_10_", "_4_"): v for k, v in shapes.items()}
    assert resolve("x", KOHYA, lora_modules("x", KOHYA, list(ok)), ok, base, "sdxl") == {
        "input_blocks_4_1_proj_in": "down_blocks.1.attentions.0.proj_in.weight"}
