"""LyCORIS networks on Flux and SD3 transformers (issue 11, "the formats users have"), made by the library itself
(``lycoris-lora``) on tiny diffusers transformers and trained 3 real AdamW steps, saved by its ``save_weights``:

- as sd-scripts makes them, its kohya network on the original modules (``lora_unet_double_blocks_0_img_attn_qkv``,
  ``joint_blocks_0_x_block_attn_qkv``: the fused qkv / ``linear1`` of BFL's and Stability's models): read on the
  diffusers-named base as the network's forward merged into the original layout, mapped by diffusers' own
  single-file converters;
- made on the diffusers transformer itself (its kohya network, ``lora_unet_transformer_blocks_0_attn_to_q``, or its
  wrapper ``create_lycoris`` as SimpleTuner trains them, ``lycoris_transformer_blocks_0_attn_to_q``): read as the
  network's forward applies it.

Before, every one of these files was refused at discovery ("a layout this version does not read yet")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("lycoris")

from dit_factory import (  # noqa: E402
    flux_converter, flux_single_file, lycoris_network, lycoris_merged, original_modules, sd3_converter,
    sd3_single_file, state_of, tiny_flux, tiny_sd3,
)
from format_factory import assert_adapters_beside_one_problem, lycoris_applied_weights  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.io.discovery import discover  # noqa: E402
from mother_core.io.readers import open_model  # noqa: E402
from mother_core.io.sd_lora import KOHYA, fits  # noqa: E402

PREFIX = "model.diffusion_model."
#: case -> (algo, network arguments, parts the saved file must hold). Alphas differ from the ranks (scale 0.5).
CASES = {
    "loha": ("loha", {}, {"hada_w1_a", "hada_w2_b", "alpha"}),
    # rank 2 with factor 4: both halves of the wider layers' Kronecker products kept factored or whole by LyCORIS
    "lokr": ("lokr", {"dim": 2, "factor": 4}, {"lokr_w1", "lokr_w2_a", "lokr_w2_b"}),
    "full": ("full", {}, {"diff", "diff_b"}),
    "ia3": ("ia3", {}, {"weight", "on_input"}),
    # LoCon with its weight decomposed per output row (DoRA): the scale of each part's rows cut with them
    "locon-dora": ("locon", {"dora_wd": True}, {"lora_down.weight", "dora_scale"}),
}
#: Wrapped modules of the original layouts (Flux: 10 per double block, 3 per single block; SD3: the joint blocks'
#: linear layers, the dual-attention block's attn2 too, the last block's context stream only its modulation and
#: attention) and the diffusers tensors their updates move.
WRAPPED = {"flux": 26, "sd3": 29}


def _base(arch: str) -> dict[str, torch.Tensor]:
    return state_of(tiny_flux(0) if arch == "flux" else tiny_sd3(0))


def _original(arch: str, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return flux_single_file(base) if arch == "flux" else sd3_single_file(base, "")


def _assert_reads(folder: Path, network: str, base: str, want: dict[str, torch.Tensor],
                  base_state: dict[str, torch.Tensor]) -> int:
    """``network`` read on ``base`` equals ``want`` on every tensor (float32 rounding), row ranges slices of whole
    reads; returns how many tensors the network moved."""
    found = {m.id: m for m in discover([folder]).models}
    assert found[network].format == "sd-lora:kohya"
    moved = 0
    with open_model(found[base]) as b, open_model(found[network], base=b) as reader:
        assert set(reader.tensor_infos()) == set(want)
        for name, value in want.items():
            got = reader.read(name)
            assert got.shape == value.shape and got.dtype == value.dtype, name
            assert (got - value).abs().max() <= 1e-6, (name, float((got - value).abs().max()))
            if got.shape[0] > 3:
                assert torch.allclose(reader.read(name, (1, 3)), got[1:3], atol=1e-7, rtol=0), name
            moved += not torch.equal(value, base_state[name])
    return moved


def original_network(arch: str, case: str, folder: Path) -> tuple[Path, dict[str, torch.Tensor], int]:
    """A LyCORIS network of :data:`CASES` made as sd-scripts makes one (the library's kohya network on the original
    modules of the tiny ``arch``, :func:`dit_factory.original_modules`, 3 real AdamW steps), saved into
    ``folder / "set"`` beside its base (a single file, ``base.safetensors``). Returns the file, what the read must
    give (the network's forward merged into the original layout, mapped by diffusers' own single-file converter)
    and the number of modules it wraps."""
    algo, kwargs, _ = CASES[case]
    (folder / "set").mkdir(parents=True, exist_ok=True)
    single = _original(arch, _base(arch))
    network = lycoris_network(original_modules(single), algo, folder, **kwargs)
    applied = lycoris_applied_weights(network)
    convert = flux_converter(16) if arch == "flux" else sd3_converter()
    want = convert({PREFIX + k: v for k, v in lycoris_merged(single, applied).items()})
    save_file({PREFIX + k: v for k, v in single.items()}, str(folder / "set" / "base.safetensors"))
    path = folder / "set" / f"{case}.safetensors"
    network.save_weights(str(path), torch.float32, {"ss_sd_model_name": "base.safetensors"})
    return path, want, len(applied)


@pytest.mark.parametrize("arch", ["flux", "sd3"])
@pytest.mark.parametrize("case", list(CASES))
def test_lycoris_on_original_modules_reads_as_its_forward(arch, case, tmp_path):
    """A LyCORIS network made as sd-scripts makes one (the library's kohya network on the original modules, the
    fused qkv and ``linear1`` among them), read on a single-file base (under diffusers' names), equals the network's
    forward merged into the original layout and mapped by diffusers' own single-file converter, tensor by tensor;
    each fused module's update is split by rows onto the diffusers modules it fuses."""
    path, want, wrapped = original_network(arch, case, tmp_path)
    assert wrapped == WRAPPED[arch]
    assert CASES[case][2] <= {n.split(".", 1)[1] for n in safe_open(str(path), "pt").keys()}
    assert any("qkv" in n for n in safe_open(str(path), "pt").keys())  # fused modules among them
    moved = _assert_reads(path.parent, case, "base", want, _base(arch))
    # every diffusers part of every wrapped module moved (a full difference moves the biases too)
    assert moved >= {"flux": 40, "sd3": 43}[arch], moved


@pytest.mark.parametrize("arch, kind, algo", [("flux", "wrapper", "lokr"), ("flux", "kohya", "loha"),
                                              ("sd3", "kohya", "lokr"), ("sd3", "wrapper", "loha")])
def test_lycoris_on_diffusers_transformer_reads_as_its_forward(arch, kind, algo, tmp_path):
    """A LyCORIS network made on the diffusers transformer itself (its kohya network, or its wrapper as SimpleTuner
    trains Flux / SD3), its modules under the diffusers names: read on the base's diffusers state as the network's
    forward applies it. (Files without a LoRA-like part, full differences and Diag-OFT, were already read this way:
    only ``hada_`` / ``lokr_`` / ``alpha`` parts made discovery take a file for a Flux / SD3 LoRA and refuse it.)"""
    model = tiny_flux(0) if arch == "flux" else tiny_sd3(0)
    base = state_of(model)
    network = lycoris_network(model, algo, tmp_path, kind=kind)
    applied = lycoris_applied_weights(network)
    assert all(name.startswith("lycoris_" if kind == "wrapper" else "lora_unet_") for name in applied)
    want = lycoris_merged(base, applied)
    folder = tmp_path / "set"
    folder.mkdir()
    save_file(base, str(folder / "base.safetensors"))
    network.save_weights(str(folder / "net.safetensors"), torch.float32, {"ss_sd_model_name": "base.safetensors"})
    assert _assert_reads(folder, "net", "base", want, base) >= 0.9 * len(applied)


def test_lycoris_dit_files_are_adapters_and_a_fused_rotation_is_a_problem(tmp_path):
    """A set of a Flux base (single file), an unrelated Flux, a LoHa made on the original modules, a LoKr made on the
    diffusers modules, and a Diag-OFT on the original modules (whose rotation mixes the rows of a fused qkv's
    parts): the LoHa and LoKr are ``adapter`` children of the base, confirmed by the weights; the OFT file is a
    problem naming its type and the fused module, the rest of the run intact. A LoHa on a Flux of another width is
    refused from headers, naming the module and the shapes."""
    folder = tmp_path / "set"
    folder.mkdir()
    base = _base("flux")
    single = flux_single_file(base)
    save_file({PREFIX + k: v for k, v in single.items()}, str(folder / "flux-base.safetensors"))
    save_file(flux_single_file(state_of(tiny_flux(7))), str(folder / "unrelated.safetensors"))
    meta = {"ss_sd_model_name": "flux-base.safetensors"}
    loha = lycoris_network(original_modules(single), "loha", tmp_path, seed=3)
    loha.save_weights(str(folder / "loha.safetensors"), torch.float32, meta)
    lokr = lycoris_network(tiny_flux(0), "lokr", tmp_path, kind="wrapper", seed=4)
    lokr.save_weights(str(folder / "lokr.safetensors"), torch.float32, meta)
    oft = lycoris_network(original_modules(single), "diag-oft", tmp_path, seed=5)
    oft.save_weights(str(folder / "oft.safetensors"), torch.float32, meta)
    edges = assert_adapters_beside_one_problem(
        recover_paths([folder], RecoverySettings()), "oft.safetensors",
        ("OFT / BOFT module on the fused module double_blocks_0_img_attn_qkv", "not read yet"), ("loha", "lokr"),
        "flux-base")
    assert "unrelated" not in edges

    from test_dit_single_file import _flux_of_width

    save_file(flux_single_file(_flux_of_width(32)), str(tmp_path / "wide.safetensors"))
    [ref] = discover([tmp_path / "wide.safetensors"]).models
    with open_model(ref) as wide:
        why = fits(str(folder / "loha.safetensors"), KOHYA, wide)
    assert why is not None and "right base model" in why and "double_blocks_0_" in why, why


def test_dora_per_input_on_a_fused_module_is_a_problem_of_its_file(tmp_path):
    """A LoCon with its weight decomposed per input channel (``wd_on_output`` false) on the original Flux modules: the
    norms of a fused qkv's columns span its three parts, which this version does not merge. Opening it says so, and
    the statistics pass reports it as that file's problem, the other models read."""
    from mother_core.errors import UnreadableCheckpointError
    from mother_core.stats.compute import compute_statistics

    single = flux_single_file(_base("flux"))
    folder = tmp_path / "set"
    folder.mkdir()
    save_file({PREFIX + k: v for k, v in single.items()}, str(folder / "base.safetensors"))
    save_file(flux_single_file(state_of(tiny_flux(7))), str(folder / "unrelated.safetensors"))
    network = lycoris_network(original_modules(single), "locon", tmp_path, dora_wd=True, wd_on_output=False)
    network.save_weights(str(folder / "dora-in.safetensors"), torch.float32, {"ss_sd_model_name": "base.safetensors"})
    found = discover([folder])
    models = {m.id: m for m in found.models}
    with open_model(models["base"]) as base, pytest.raises(UnreadableCheckpointError, match="per input channel"):
        open_model(models["dora-in"], base=base)
    stats = compute_statistics(found, device="cpu")
    assert sorted(m.id for m in stats.models) == ["base", "unrelated"]
    assert any("per input channel" in p.message for p in stats.problems), stats.problems
