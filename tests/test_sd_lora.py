"""Stable Diffusion LoRA files as people hold them (kohya-ss and diffusers single ``.safetensors`` files), made
by diffusers + peft on a tiny SD UNet: sniffed from the header, read as base + (alpha / r) up @ down exactly
as diffusers' own ``fuse_lora`` merges them (LoCon convolutions included), on a diffusers folder and on a
single-file checkpoint base, typed ``adapter`` by recovery, and refused with a message where they cannot be
read (no base in the set, LyCORIS OFT); LyCORIS's other types: tests/test_sd_lycoris.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from format_factory import (  # noqa: E402
    denoising_steps, diffusers_fused, fused_unet_state, ldm_single_file, save_diffusers_lora, save_kohya_lora,
    save_old_diffusers_lora, sd_lora_unet, tiny_sd_unet,
)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.errors import AdapterMismatchError  # noqa: E402
from mother_core.io.base import TensorInfo  # noqa: E402
from mother_core.io.discovery import discover  # noqa: E402
from mother_core.io.readers import open_model  # noqa: E402
from mother_core.io.sd_lora import KOHYA, legacy_hash, lora_modules, resolve, sniff  # noqa: E402


# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("sd-lora")

def _unet_state(unet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in unet.state_dict().items()}


def _diffusers_folder(state, folder: Path) -> Path:
    (folder / "unet").mkdir(parents=True)
    save_file(state, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return folder


def _single_file(state, path: Path) -> Path:
    single = ldm_single_file(state)
    # A real single-file checkpoint carries its VAE and text encoder (hundreds of MB): this stand-in makes
    # the file longer than the 1 MiB + 64 KiB the legacy hash reads, so that hashes tell files apart.
    single["first_stage_model.encoder.stand_in"] = torch.randn(300_000, generator=torch.Generator().manual_seed(
        len(path.name)))
    save_file(single, str(path))
    return path


def _finetuned(seed: int) -> dict[str, torch.Tensor]:
    """A tiny UNet fine-tuned from the base for two AdamW steps (denoising loss on random latents)."""
    return _unet_state(denoising_steps(tiny_sd_unet(1), seed))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Made once: the base UNet, three LoRAs in the three layouts, peft's merge of the LoRAs saved and
    diffusers' fuse of the renamed files, and a fine-tune of the base."""
    root = tmp_path_factory.mktemp("sdlora")
    base = _unet_state(tiny_sd_unet(1))
    lora = sd_lora_unet(5, rank=4, alpha=8.0)  # alpha / r = 2, LoCon on proj_in (1x1) and conv1/conv2 (3x3)
    old = sd_lora_unet(6, rank=2, alpha=2.0, conv=False)
    files = root / "files"
    files.mkdir()
    out = {
        "root": root, "base": base,
        "diffusers": save_diffusers_lora(lora, files / "lora-diffusers", text_encoder=True),
        "kohya": save_kohya_lora(lora, files / "lora-kohya.safetensors", {"ss_sd_model_name": "base.safetensors"}),
        "old": save_old_diffusers_lora(old, files / "lora-old.safetensors"),
    }
    out["expected"] = fused_unet_state(lora)
    out["expected_old"] = fused_unet_state(old)
    # diffusers' own reading of the two files whose keys it renames (the peft-keyed file is peft's state dict)
    out["tool_reads"] = {k: diffusers_fused(out[k]) for k in ("kohya", "old")}
    out["finetuned"] = _finetuned(7)
    return out


@pytest.mark.parametrize("layout", ["diffusers", "kohya", "old"])
@pytest.mark.parametrize("base_kind", ["folder", "single-file"])
def test_read_is_base_plus_the_merged_update(made, tmp_path, layout, base_kind):
    """Each layout reads as the base with the LoRA merged: equal (float tolerance) to peft's own merge of the
    LoRA that was saved and to diffusers' fuse of the file, under the diffusers UNet names, on either base
    layout; row ranges are slices of the whole tensor."""
    base_path = (_diffusers_folder(made["base"], tmp_path / "base") if base_kind == "folder"
                 else _single_file(made["base"], tmp_path / "base.safetensors"))
    shutil.copy(made[layout], tmp_path / f"lora-{layout}.safetensors")
    found = {m.id: m for m in discover([tmp_path]).models}
    ref = found[f"lora-{layout}"]
    assert ref.format == f"sd-lora:{'kohya' if layout == 'kohya' else 'diffusers'}"
    expected = made["expected_old" if layout == "old" else "expected"]
    assert found["base"].path.startswith(str(base_path))
    with open_model(found["base"]) as base, open_model(ref, base=base) as reader:
        infos = reader.tensor_infos()
        assert set(infos) == set(expected)
        changed = 0
        for name, want in expected.items():
            got = reader.read(name)
            assert torch.allclose(got, want, atol=2e-6, rtol=1e-5), name
            if layout in made["tool_reads"]:
                assert torch.allclose(got, made["tool_reads"][layout][name], atol=2e-6, rtol=1e-5), name
            changed += not torch.equal(got, made["base"][name])
            if got.shape[0] > 3:
                assert torch.equal(reader.read(name, rows=(1, 3)), got[1:3])
        # exactly the layers the file holds a UNet LoRA for changed (LoCon: proj_in and the ResNet convs too)
        kind = KOHYA if layout == "kohya" else "diffusers"
        modules = lora_modules(str(made[layout]), kind, list(safe_open(str(made[layout]), "pt").keys()))
        assert changed == len(modules) == (128 if layout == "old" else 188)


def test_sniff_reads_names_only(made, tmp_path):
    names = {k: list(safe_open(str(made[k]), "pt").keys()) for k in ("diffusers", "kohya", "old")}
    assert sniff(names["kohya"]) == "kohya"
    assert sniff(names["diffusers"]) == "diffusers" and sniff(names["old"]) == "diffusers"
    assert sniff(made["base"]) is None
    assert sniff(names["kohya"] + ["bundle_emb.style.string_to_param.*"]) == "kohya"  # a bundled embedding
    # LyCORIS LoHa names (lycoris/modules/loha.py: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, alpha) are
    # merged (tests/test_sd_lycoris.py), and so are its OFT names (modules/diag_oft.py: oft_blocks, rescale, alpha);
    # its GLoRA names (modules/glora.py: a1, a2, b1, b2) are not
    loha = {f"lora_unet_mid_block_attentions_0_proj_in.{p}": torch.ones(2, 2)
            for p in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha")}
    assert sniff(loha) == "kohya"
    oft = {"lora_unet_mid_block_attentions_0_proj_in.oft_blocks": torch.ones(2, 2, 2),
           "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(2.0)}
    assert sniff(oft) == "kohya"
    glora = {f"lora_unet_mid_block_attentions_0_proj_in.{p}.weight": torch.ones(2, 2) for p in ("a1", "a2", "b1", "b2")}
    assert sniff(glora) == "unsupported:GLoRA (LyCORIS)"
    save_file(glora, str(tmp_path / "glora.safetensors"))
    _diffusers_folder(made["base"], tmp_path / "base")
    found = discover([tmp_path])
    assert [m.id for m in found.models] == ["base"]
    (problem,) = found.problems
    assert "GLoRA (LyCORIS) Stable Diffusion network, which this version does not merge" in problem.message


def test_kohya_names_are_resolved_against_the_base_never_guessed():
    """``a_b_c`` could be ``a.b_c`` or ``a_b.c``: only the base's own names decide, and a name matching two
    modules of the base is refused rather than guessed."""
    shapes = {"lora_unet_a_b_c.lora_down.weight": (2, 4), "lora_unet_a_b_c.lora_up.weight": (3, 2)}
    modules = lora_modules("x", KOHYA, list(shapes))
    one = {"a.b_c.weight": TensorInfo("a.b_c.weight", (3, 4), "float32")}
    assert resolve("x", KOHYA, modules, shapes, one, "base") == {"a_b_c": "a.b_c.weight"}
    two = {**one, "a_b.c.weight": TensorInfo("a_b.c.weight", (3, 4), "float32")}
    with pytest.raises(AdapterMismatchError, match="names several modules"):
        resolve("x", KOHYA, modules, shapes, two, "base")
    with pytest.raises(AdapterMismatchError, match="does not have"):
        resolve("x", KOHYA, modules, shapes, {"a.b.weight": TensorInfo("a.b.weight", (3, 4), "float32")}, "base")
    # an up factor that is not (out, r[, 1, 1]) is a damaged file, refused before any tensor is read
    bad = {**shapes, "lora_unet_a_b_c.lora_up.weight": (3, 2, 3, 3)}
    with pytest.raises(AdapterMismatchError, match="is that the right base model"):
        resolve("x", KOHYA, modules, bad, one, "base")
    # kohya-ss SDXL files name modules in the original (LDM) layout: said so, not guessed onto diffusers names
    ldm = {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": (2, 4),
           "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": (3, 2)}
    with pytest.raises(AdapterMismatchError, match="original .LDM. UNet layout"):
        resolve("x", KOHYA, lora_modules("x", KOHYA, list(ldm)), ldm, one, "base")


def test_recover_types_both_layouts_as_adapters(made, tmp_path):
    """A set of a base (single file), a fine-tune of it, an unrelated UNet, a kohya LoRA naming the base's
    file, a kohya LoRA found by the base's legacy hash, and a diffusers LoRA folder whose model card names
    the base: both LoRAs are ``adapter`` children of the base, with their metadata as evidence."""
    folder = tmp_path / "set"
    folder.mkdir()
    base_file = _single_file(made["base"], folder / "base.safetensors")
    _single_file(made["finetuned"], folder / "finetuned.safetensors")
    _single_file(_unet_state(tiny_sd_unet(2)), folder / "unrelated.safetensors")
    shutil.copy(made["kohya"], folder / "kohya-by-name.safetensors")
    save_kohya_lora(sd_lora_unet(8), folder / "kohya-by-hash.safetensors",
                    {"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
                     "ss_sd_model_hash": legacy_hash(str(base_file))})
    (folder / "lora-diffusers").mkdir()
    shutil.copy(made["diffusers"], folder / "lora-diffusers" / "pytorch_lora_weights.safetensors")
    (folder / "lora-diffusers" / "README.md").write_text("---\nbase_model: someone/base\n---\n# a LoRA\n")
    refs = {m.id: m for m in discover([folder]).models}
    assert refs["kohya-by-hash"].base_id == "base" and refs["kohya-by-hash"].base_source == "ss_sd_model_hash"
    result = recover_paths([folder], RecoverySettings())
    assert not result.problems
    edges = {e.child: e for e in result.edges}
    for lora in ("kohya-by-name", "kohya-by-hash", "lora-diffusers"):
        assert edges[lora].parent == "base" and edges[lora].relation == "adapter", edges[lora]
    assert edges["finetuned"].parent == "base" and edges["finetuned"].relation == "finetune"
    assert "unrelated" not in edges


def test_lora_without_its_base_is_a_problem_and_the_run_goes_on(made, tmp_path):
    """A LoRA naming a base that is not in the set, and one made for another UNet shape: each a clear
    problem of its own, the rest of the set recovered."""
    folder = tmp_path / "set"
    folder.mkdir()
    _diffusers_folder(made["base"], folder / "base")
    _single_file(made["finetuned"], folder / "finetuned.safetensors")
    save_kohya_lora(sd_lora_unet(10, base_seed=3), folder / "for-sdxl.safetensors",
                    {"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, text_encoder=False)
    wide = tiny_sd_unet(4)
    from peft import LoraConfig

    other = type(wide)(**{**dict(wide.config), "block_out_channels": (8, 16, 16, 32)})
    other.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q"]))
    save_kohya_lora(other, folder / "other-shapes.safetensors", {"ss_sd_model_name": "sd_xl_base_1.0.safetensors"},
                    text_encoder=False)
    result = recover_paths([folder], RecoverySettings())
    messages = {Path(p["path"]).name: p["message"] for p in result.problems}
    assert "names its base 'sd_xl_base_1.0.safetensors' in its header metadata (ss_sd_model_name), which is not " \
           "in the set; it fits 'base'" in messages["for-sdxl.safetensors"]
    assert "only metadata could tell" in messages["for-sdxl.safetensors"]
    assert "no model in the set has the shapes it updates" in messages["other-shapes.safetensors"]
    # the rest of the set is recovered (which way a two-model tree points is not this test's question)
    assert [{e.parent, e.child} for e in result.edges] == [{"base", "finetuned"}]
