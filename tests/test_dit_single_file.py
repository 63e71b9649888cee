"""The DiT image pipelines as people hold them (issue 11): diffusers repositories whose denoiser is
``transformer/`` (Flux, SD3), and Flux / SD3 single-file checkpoints (BFL, Stability, ComfyUI), read under the
diffusers transformer's names with their fused tensors split. Built on tiny transformers made by diffusers 0.42;
diffusers' own single-file converters are the oracle (the files are written by inverting them, and the tests
check the converters map each file back to the model exactly); fine-tunes are real AdamW steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from dit_factory import (  # noqa: E402
    flux_converter, flux_single_file, flux_steps, kohya_sd3_lora, merge_kohya_in_original_layout, sd3_converter,
    sd3_single_file, sd3_steps, state_of, tiny_flux, tiny_sd3, trained_flux_lora, trained_sd3_lora,
)
from safetensors.torch import save_file  # noqa: E402

from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.io import dit_single_file  # noqa: E402
from mother_core.io.discovery import discover  # noqa: E402
from mother_core.io.readers import open_model  # noqa: E402
from mother_core.relations.evidence import quantization_scheme  # noqa: E402

# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("dit-single-file")

FLUX_PREFIXES = {"bfl": "", "comfyui": "model.diffusion_model."}
#: What an all-in-one ComfyUI / Stability file holds beside the denoiser (left out by the reader).
EXTRAS = {"vae.decoder.conv_in.weight": torch.ones(4, 4, 3, 3),
          "first_stage_model.decoder.conv_in.weight": torch.ones(4, 4, 3, 3),
          "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": torch.ones(8)}


@pytest.fixture(scope="module")
def flux() -> dict[str, torch.Tensor]:
    return state_of(tiny_flux(0))


@pytest.fixture(scope="module")
def sd3() -> dict[str, torch.Tensor]:
    return state_of(tiny_sd3(0))


def _reads(path: Path) -> dict[str, torch.Tensor]:
    [ref] = discover([path]).models
    with open_model(ref) as reader:
        return {n: reader.read(n) for n in reader.tensor_infos()}


def _assert_exact(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:10]
    for name, value in want.items():
        assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
        assert (got[name] - value).abs().max().item() == 0, name


@pytest.mark.parametrize("where", sorted(FLUX_PREFIXES))
def test_flux_single_file_reads_as_diffusers_converts_it(tmp_path, flux, where):
    """A Flux single file (bare as BFL ships it, or under model.diffusion_model. beside the VAE and text encoder
    as ComfyUI does) reads as exactly the diffusers transformer: the same names, the same values (max abs
    difference 0), and what diffusers' own converter makes of the file."""
    single = flux_single_file(flux, FLUX_PREFIXES[where])
    assert flux_converter(16)(single).keys() == flux.keys()
    _assert_exact(flux_converter(16)(single), flux)  # the file is what diffusers reads as this model
    path = tmp_path / "flux.safetensors"
    save_file({**single, **(EXTRAS if where == "comfyui" else {})}, str(path))
    [ref] = discover([path]).models
    assert ref.format == "safetensors:flux-single-file"
    _assert_exact(_reads(path), flux)


def test_sd3_single_file_reads_as_diffusers_converts_it(tmp_path, sd3):
    """An SD3.5-shaped single file (dual attention, RMS q/k norms, the last block's context modulation and the
    final one stored as (shift, scale)) reads as exactly the diffusers transformer, and diffusers' converter
    agrees."""
    single = sd3_single_file(sd3)
    _assert_exact(sd3_converter()(single), sd3)
    path = tmp_path / "sd3.safetensors"
    save_file({**single, **EXTRAS}, str(path))
    [ref] = discover([path]).models
    assert ref.format == "safetensors:sd3-single-file"
    _assert_exact(_reads(path), sd3)


def test_plain_sd3_single_file(tmp_path):
    """SD3 medium's shape: no dual attention, no q/k norms, bare names."""
    state = state_of(tiny_sd3(1, dual=(), qk_norm=None))
    path = tmp_path / "sd3-medium.safetensors"
    save_file(sd3_single_file(state, prefix=""), str(path))
    _assert_exact(_reads(path), state)


def test_row_ranges_and_buffers_are_slices_of_whole_reads(tmp_path, flux):
    """Rows of a split tensor (a third of qkv, a part of linear1, the swapped halves of a modulation, across
    the swap) are the rows of the whole tensor, by ``read`` and by ``read_into``; no stored tensor is read whole."""
    path = tmp_path / "flux.safetensors"
    save_file(flux_single_file(flux, "model.diffusion_model."), str(path))
    [ref] = discover([path]).models
    with open_model(ref) as reader:
        asked: list[tuple[str, tuple[int, int] | None]] = []
        raw_read = reader.raw.read
        reader.raw.read = lambda n, rows=None: (asked.append((n, rows)), raw_read(n, rows))[1]
        for name in ("transformer_blocks.0.attn.to_k.weight", "single_transformer_blocks.1.proj_mlp.weight",
                     "single_transformer_blocks.1.attn.to_v.bias", "norm_out.linear.weight", "norm_out.linear.bias"):
            whole = flux[name]
            n = whole.shape[0]
            for rows in ((0, n), (1, n - 1), (n // 2 - 1, n // 2 + 1), (n - 1, n), (3, 3)):
                assert torch.equal(reader.read(name, rows), whole[rows[0]:rows[1]]), (name, rows)
                out = torch.empty(rows[1] - rows[0], *whole.shape[1:], dtype=whole.dtype)
                assert torch.equal(reader.read_into(name, rows, out), whole[rows[0]:rows[1]]), (name, rows)
        assert all(r is not None for _, r in asked)
        assert ("double_blocks.0.img_attn.qkv.weight", (16 + 1, 16 + 15)) in asked  # to_k rows 1..15 only


def test_torch_pickle_single_file(tmp_path, flux):
    """A Flux single file saved by torch.save (.ckpt / .pt) is renamed the same way."""
    path = tmp_path / "flux.ckpt"
    torch.save(flux_single_file(flux), path)
    [ref] = discover([path]).models
    assert ref.format == "torch"
    _assert_exact(_reads(path), flux)


def _repo(folder: Path, state: dict[str, torch.Tensor], pipeline: str, extra: tuple[str, ...] = ()) -> Path:
    """A diffusers repository as save_pretrained lays it out: model_index.json, transformer/, other components."""
    (folder / "transformer").mkdir(parents=True)
    save_file(state, str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    (folder / "transformer" / "config.json").write_text(json.dumps({"_class_name": "FluxTransformer2DModel"}))
    for comp in extra:
        (folder / comp).mkdir()
        save_file({"encoder.weight": torch.ones(4, 4)}, str(folder / comp / "model.safetensors"))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    return folder


def test_transformer_is_the_default_component(tmp_path, flux):
    """A diffusers repository with transformer/ and no unet/ (Flux, SD3, PixArt, Sana) is read as its
    transformer, and ``mother scan`` says so; an explicit component still wins."""
    repo = _repo(tmp_path / "flux-dev", flux, "FluxPipeline", extra=("text_encoder", "vae"))
    found = discover([repo])
    assert not found.problems
    [ref] = found.models
    assert ref.component == "transformer" and ref.path.endswith("transformer")
    [vae] = discover([repo], component="vae").models
    assert vae.component == "vae"
    scan = subprocess.run([sys.executable, "-m", "mother_core", "scan", str(repo)], capture_output=True, text=True,
                          check=True)
    assert "[transformer/]" in scan.stdout, scan.stdout


def test_repository_without_a_denoiser_is_still_a_problem(tmp_path):
    """Without unet/ or transformer/ nothing is chosen for the user: the problem lists the components."""
    repo = tmp_path / "encoders"
    for comp in ("text_encoder", "vae"):
        (repo / comp).mkdir(parents=True)
        save_file({"w": torch.ones(2, 2)}, str(repo / comp / "model.safetensors"))
    (repo / "model_index.json").write_text("{}")
    found = discover([repo, tmp_path / "encoders" / "vae"])
    assert any("no component was chosen" in p.message and "text_encoder, vae" in p.message for p in found.problems)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_single_files_and_diffusers_folder_are_one_lineage(tmp_path, family):
    """{diffusers-layout base, single-file fine-tune, single-file copy, unrelated model}: the copy is a
    ``convert`` of the base (same values, another layout) and the fine-tune (real AdamW steps) its child."""
    make, steps, single = ((tiny_flux, flux_steps, flux_single_file) if family == "flux"
                           else (tiny_sd3, sd3_steps, sd3_single_file))
    base_model = make(0)
    base = state_of(base_model)
    tuned = state_of(steps(base_model, seed=5))
    folder = tmp_path / "set"
    _repo(folder / "base", base, "FluxPipeline" if family == "flux" else "StableDiffusion3Pipeline")
    save_file(single(base), str(folder / "base-single.safetensors"))
    save_file(single(tuned), str(folder / "finetune.safetensors"))
    save_file(single(state_of(make(7))), str(folder / "unrelated.safetensors"))
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems, result.problems
    edges = {frozenset((e.parent, e.child)): e for e in result.edges}
    assert edges[frozenset(("base", "base-single"))].relation == "convert", result.edges
    tune = next(e for e in result.edges if e.child == "finetune")
    assert tune.parent in ("base", "base-single") and tune.relation == "finetune", tune
    assert all("unrelated" not in k for k in edges)


def test_unknown_and_partial_files_are_notes_not_crashes(tmp_path, flux):
    """A Flux variant's extra tensors keep their names with a note; a fused tensor that does not split as the
    layout says (qkv rows not a multiple of 3) is kept whole with a note; a file of only some blocks reads what
    it has; a truncated file is a problem of its model."""
    single = flux_single_file(flux)
    single["distilled_guidance_layer.in_proj.weight"] = torch.ones(4, 4)
    single["double_blocks.1.img_attn.qkv.weight"] = torch.ones(47, 16)
    path = tmp_path / "variant.safetensors"
    save_file(single, str(path))
    [ref] = discover([path]).models
    with open_model(ref) as reader:
        names = set(reader.tensor_infos())
        assert "distilled_guidance_layer.in_proj.weight" in names
        assert "double_blocks.1.img_attn.qkv.weight" in names and "transformer_blocks.1.attn.to_q.weight" not in names
        q = "transformer_blocks.0.attn.to_q.weight"
        assert torch.equal(reader.read(q), flux[q])
        assert any("2 tensor(s) of this Flux single-file" in n for n in reader.notes), reader.notes
    partial = {k: v for k, v in flux_single_file(flux).items() if k.startswith("single_blocks.0.")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    got = _reads(tmp_path / "partial.safetensors")
    assert set(got) == {k for k in flux if k.startswith("single_transformer_blocks.0.")}
    good = tmp_path / "set"
    good.mkdir()
    save_file(flux_single_file(flux), str(good / "a.safetensors"))
    data = (tmp_path / "variant.safetensors").read_bytes()
    (good / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    found = discover([good])
    assert [m.id for m in found.models] == ["a"]
    assert any("truncated" in p.path for p in found.problems)


@pytest.mark.parametrize("names, what", [
    # a LyCORIS Diag-OFT module on Flux's fused qkv (kohya-ss layout; LoRA, LoHa, LoKr, full and IA3 modules there
    # are read, tests/test_dit_lycoris.py): its rotation mixes the rows of the three parts
    (["lora_unet_double_blocks_0_img_attn_qkv.oft_blocks", "lora_unet_double_blocks_0_img_attn_qkv.alpha"],
     "a LyCORIS OFT / BOFT module on the fused module double_blocks_0_img_attn_qkv"),
    # diffusers module names without the pipeline's transformer. prefix (a bare PEFT state dict)
    (["transformer_blocks.0.attn.to_q.lora_A.weight", "transformer_blocks.0.attn.to_q.lora_B.weight",
      "single_transformer_blocks.0.proj_mlp.lora_A.weight"], "Flux LoRA (diffusers / PEFT layout)"),
    (["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"], "Flux LoRA (original single-file layout)"),
    # a LyCORIS BOFT module on SD3's fused qkv likewise
    (["lora_unet_joint_blocks_0_x_block_attn_qkv.oft_blocks", "lora_unet_joint_blocks_0_x_block_attn_qkv.rescale",
      "lora_unet_joint_blocks_0_x_block_attn_qkv.alpha"],
     "a LyCORIS OFT / BOFT module on the fused module joint_blocks_0_x_block_attn_qkv"),
])
def test_dit_lora_files_are_a_clear_problem(tmp_path, flux, names, what):
    """Flux / SD3 LoRA files in the layouts not read yet: a problem saying what the file is, never a model of its
    LoRA factors."""
    folder = tmp_path / "set"
    folder.mkdir()
    save_file(flux_single_file(flux), str(folder / "flux.safetensors"))
    save_file({n: torch.ones(2, 16) for n in names}, str(folder / "my-lora.safetensors"))
    found = discover([folder])
    assert [m.id for m in found.models] == ["flux"]
    [problem] = found.problems
    assert what in problem.message and "not read yet" in problem.message, problem.message


def test_sniff_and_layout_need_the_marks():
    """Only the layouts' own fused tensors mark a file: an SD UNet or a diffusers transformer is not one."""
    assert dit_single_file.sniff(["model.diffusion_model.input_blocks.1.1.proj_in.weight"]) is None
    assert dit_single_file.layout({"transformer_blocks.0.attn.to_q.weight": ((4, 4), "float32")}) is None
    # the relation detectors read these schemes as layouts of float weights, not quantizations
    assert quantization_scheme(f"safetensors:{dit_single_file.FLUX}") is None
    assert quantization_scheme(f"safetensors:{dit_single_file.SD3}") is None


@pytest.fixture(scope="module")
def flux_lora(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Flux LoRA as diffusers saves it (peft on the transformer, 3 real AdamW steps of the LoRA factors,
    ``FluxPipeline.save_lora_weights`` with its adapter metadata), and the transformer diffusers' own
    ``load_lora_weights`` + ``fuse_lora`` make of it on the tiny base."""
    pytest.importorskip("peft")
    from diffusers import FluxPipeline
    from peft import get_peft_model_state_dict

    model = trained_flux_lora(3, ["to_q", "to_k", "to_v", "proj_mlp", "add_q_proj", "to_out.0", "ff.net.2"])
    folder = tmp_path_factory.mktemp("flux-lora")
    FluxPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(model),
                                   transformer_lora_adapter_metadata=model.peft_config["default"].to_dict(),
                                   safe_serialization=True)
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tiny_flux(0))
    pipe.load_lora_weights(folder)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return folder / "pytorch_lora_weights.safetensors", state_of(pipe.transformer)


@pytest.mark.parametrize("base_layout", ["single-file", "diffusers"])
def test_flux_lora_merges_as_diffusers_fuses_it(tmp_path, flux, flux_lora, base_layout):
    """A diffusers-layout Flux LoRA is read on its base (a single file or a transformer/ folder) as exactly the
    transformer diffusers' load_lora_weights + fuse_lora make (max abs difference 0), and recovered as an
    adapter of its base."""
    path, fused = flux_lora
    folder = tmp_path / "set"
    (folder / "my-lora").mkdir(parents=True)
    (folder / "my-lora" / path.name).write_bytes(path.read_bytes())
    (folder / "my-lora" / "README.md").write_text("---\nbase_model: flux-base\n---\n")
    if base_layout == "single-file":
        save_file(flux_single_file(flux, "model.diffusion_model."), str(folder / "flux-base.safetensors"))
    else:
        _repo(folder / "flux-base", flux, "FluxPipeline")
    save_file(flux_single_file(state_of(tiny_flux(7))), str(folder / "unrelated.safetensors"))
    found = discover([folder])
    assert not found.problems
    models = {m.id: m for m in found.models}
    assert models["my-lora"].format == "sd-lora:diffusers"
    with open_model(models["flux-base"]) as base, open_model(models["my-lora"], base) as lora:
        _assert_exact({n: lora.read(n) for n in lora.tensor_infos()}, fused)
    assert sum(not torch.equal(fused[k], flux[k]) for k in flux) == 20  # the LoRA changed every layer it targets
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems, result.problems
    edge = next(e for e in result.edges if e.child == "my-lora")
    assert edge.parent == "flux-base" and edge.relation == "adapter", edge


@pytest.fixture(scope="module")
def kohya_flux_lora(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A kohya-ss Flux LoRA (fused ``img_attn_qkv`` / ``txt_attn_qkv`` / ``linear1`` modules, and whole ones), made
    from a diffusers-layout LoRA trained 3 real AdamW steps (``dit_factory.kohya_flux_lora``: the parts' factors
    stacked, what diffusers reads as a "sparse" kohya module), and what diffusers' ``load_lora_weights`` (its kohya
    Flux converter, with its Flux.1 split sizes set to the tiny model's) + ``fuse_lora`` make of it."""
    pytest.importorskip("peft")
    from unittest import mock

    from diffusers import FluxPipeline
    from diffusers.loaders import lora_pipeline
    from dit_factory import kohya_flux_lora, patched_kohya_flux_converter
    from peft import get_peft_model_state_dict

    model = trained_flux_lora(4)
    lora = {"transformer." + k: v for k, v in get_peft_model_state_dict(model).items()}
    path = tmp_path_factory.mktemp("kohya") / "my-lora.safetensors"
    save_file(kohya_flux_lora(lora, alpha=4.0), str(path), metadata={"ss_sd_model_name": "flux-base.safetensors"})
    pipe = FluxPipeline(scheduler=None, vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tiny_flux(0))
    with mock.patch.object(lora_pipeline, "_convert_kohya_flux_lora_to_diffusers",
                           patched_kohya_flux_converter(16, 64)):
        pipe.load_lora_weights(str(path))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return path, state_of(pipe.transformer)


def _assert_kohya_adapter(folder: Path, base_id: str, base_state: dict[str, torch.Tensor],
                          fused: dict[str, torch.Tensor], changed: int) -> None:
    """``my-lora`` (a kohya-ss file) in ``folder`` reads on ``base_id`` as exactly ``fused``, having changed
    ``changed`` of the base's tensors, and is recovered as that base's adapter."""
    found = discover([folder])
    assert not found.problems, found.problems
    models = {m.id: m for m in found.models}
    assert models["my-lora"].format == "sd-lora:kohya"
    with open_model(models[base_id]) as base, open_model(models["my-lora"], base) as lora:
        _assert_exact({n: lora.read(n) for n in lora.tensor_infos()}, fused)
    assert sum(not torch.equal(fused[k], base_state[k]) for k in base_state) == changed
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems, result.problems
    [edge] = result.edges
    assert (edge.parent, edge.child, edge.relation) == (base_id, "my-lora", "adapter"), edge


@pytest.mark.parametrize("base_layout", ["single-file", "diffusers"])
def test_kohya_flux_lora_merges_as_diffusers_fuses_it(tmp_path, flux, kohya_flux_lora, base_layout):
    """A kohya-ss Flux LoRA, whose fused modules' updates are split by rows onto the diffusers modules, reads as
    exactly the transformer diffusers' kohya converter + fuse_lora make (max abs difference 0), on either base,
    and is recovered as an adapter of the base its metadata names."""
    path, fused = kohya_flux_lora
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    if base_layout == "single-file":
        save_file(flux_single_file(flux, "model.diffusion_model."), str(folder / "flux-base.safetensors"))
    else:
        _repo(folder / "flux-base", flux, "FluxPipeline")
    _assert_kohya_adapter(folder, "flux-base", flux, fused, changed=26)


@pytest.fixture(scope="module")
def kohya_sd3_lora_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A kohya-ss SD3 LoRA (fused ``x_block`` / ``context_block`` ``attn_qkv`` modules, whole ones, the last
    block's context modulation in the original's (shift, scale) order), made from a diffusers-layout LoRA
    trained 3 real AdamW steps (``dit_factory.kohya_sd3_lora``), and what diffusers' ``load_lora_weights`` +
    ``fuse_lora`` make of that diffusers-layout LoRA. diffusers has no SD3 kohya converter: the oracle is
    checked against its SD3 single-file converter applied to the kohya LoRA merged in the original layout."""
    pytest.importorskip("peft")
    from diffusers import StableDiffusion3Pipeline
    from peft import get_peft_model_state_dict

    model = trained_sd3_lora(5)
    layers = get_peft_model_state_dict(model)
    folder = tmp_path_factory.mktemp("sd3-lora")
    StableDiffusion3Pipeline.save_lora_weights(folder, transformer_lora_layers=layers, safe_serialization=True,
                                               transformer_lora_adapter_metadata=model.peft_config["default"].to_dict())
    pipe = StableDiffusion3Pipeline(transformer=tiny_sd3(0), scheduler=None, vae=None, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None)
    pipe.load_lora_weights(folder)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = state_of(pipe.transformer)
    kohya, modules = kohya_sd3_lora({"transformer." + k: v for k, v in layers.items()}, alpha=4.0, blocks=3)
    in_original = merge_kohya_in_original_layout(sd3_single_file(state_of(tiny_sd3(0))), kohya, modules)
    _assert_exact(sd3_converter()(in_original), fused)
    path = folder / "my-lora.safetensors"
    save_file(kohya, str(path), metadata={"ss_sd_model_name": "sd3-base.safetensors"})
    return path, fused


@pytest.mark.parametrize("base_layout", ["single-file", "diffusers"])
def test_kohya_sd3_lora_merges_as_diffusers_fuses_it(tmp_path, sd3, kohya_sd3_lora_file, base_layout):
    """A kohya-ss SD3 LoRA, its fused qkv updates split by rows onto the diffusers modules and the last block's
    context modulation swapped back, reads as exactly the transformer diffusers' fuse_lora makes (max abs
    difference 0), on either base, and is recovered as an adapter of the base its metadata names."""
    path, fused = kohya_sd3_lora_file
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / path.name).write_bytes(path.read_bytes())
    if base_layout == "single-file":
        save_file(sd3_single_file(sd3), str(folder / "sd3-base.safetensors"))
    else:
        _repo(folder / "sd3-base", sd3, "StableDiffusion3Pipeline")
    _assert_kohya_adapter(folder, "sd3-base", sd3, fused, changed=36)


def test_kohya_flux_lora_on_the_wrong_base_says_so(tmp_path, kohya_flux_lora):
    """A kohya-ss Flux LoRA on a Flux of another width: an error naming the module and the shapes, not a crash."""
    from mother_core.io.sd_lora import KOHYA, fits

    path, _ = kohya_flux_lora
    wide = _flux_of_width(32)
    save_file(flux_single_file(wide), str(tmp_path / "wide.safetensors"))
    [ref] = discover([tmp_path / "wide.safetensors"]).models
    with open_model(ref) as base:
        why = fits(str(path), KOHYA, base)
    assert why is not None and "double_blocks_0_img_attn_" in why and "(32, 32)" in why and "right base model" in why


def _flux_of_width(width: int) -> dict[str, torch.Tensor]:
    """A tiny Flux of another width (heads of 8)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return state_of(FluxTransformer2DModel(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2,
                                           attention_head_dim=8, num_attention_heads=width // 8,
                                           joint_attention_dim=12, pooled_projection_dim=6, guidance_embeds=True,
                                           axes_dims_rope=(2, 2, 4)))


def test_fp8_flux_single_file_is_split_after_dequantizing(tmp_path, flux):
    """Flux is often shared as an fp8 cast of the single file (``flux1-dev-fp8``): its scheme stays ``fp8`` (a
    quantized copy for the relation detectors) and its weights, widened as the fp8 reader does, are split the
    same way: exactly the diffusers tensors cast to fp8 and back."""
    single = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v
              for k, v in flux_single_file(flux, "model.diffusion_model.").items()}
    path = tmp_path / "flux-fp8.safetensors"
    save_file(single, str(path))
    [ref] = discover([path]).models
    assert ref.format == "safetensors:fp8"
    got = _reads(path)
    _assert_exact({k: v.float() for k, v in got.items()},
                  {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v).float() for k, v in flux.items()})
