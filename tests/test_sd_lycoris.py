"""LyCORIS Stable Diffusion files (LoHa, LoKr, full difference, Tucker LoCon, DoRA), made by the library itself
(``lycoris-lora``: its kohya network on a tiny diffusers UNet, one real AdamW step, saved by its own
``save_weights`` in kohya naming): read as the base UNet with the network merged, equal tensor by tensor to
the weight the library's own forward applies (an SDXL file under sd-scripts' LDM module names too); typed
``adapter`` of their base by recovery; a type still not merged (GLoRA) is a problem of its own, the rest of the
run intact. OFT, BOFT and IA3 modules too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("lycoris")

from format_factory import (  # noqa: E402
    assert_adapters_beside_one_problem, lycoris_applied_weights, lycoris_unet, lycoris_wrapped_unet, tiny_sd_unet,
    tiny_sdxl_unet,
)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from test_sd_lora import _finetuned, _single_file, _unet_state  # noqa: E402

from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.errors import AdapterMismatchError  # noqa: E402
from mother_core.io.base import TensorInfo  # noqa: E402
from mother_core.io.discovery import discover  # noqa: E402
from mother_core.io.readers import open_model  # noqa: E402
from mother_core.io.sd_lora import KOHYA, lora_modules, resolve, sniff  # noqa: E402

#: name -> (algo, create_network arguments, parts the saved file must hold). Alphas differ from the ranks
#: (scale alpha / r = 0.5 on linear layers, 0.25 on convolutions) so that a scale applied wrongly shows.
# Its tests share module-scoped fixtures: one xdist worker builds them once, not one each.
pytestmark = pytest.mark.xdist_group("sd-lycoris")

CASES = {
    # rank dropout and its rescaling act while training only (lycoris/modules/loha.py get_weight)
    "loha": ("loha", {"rank_dropout": 0.1, "rank_dropout_scale": True},
             {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}),
    "loha-tucker-dora": ("loha", {"use_tucker": True, "dora_wd": True}, {"hada_t1", "hada_t2", "dora_scale"}),
    "lokr": ("lokr", {}, {"lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b"}),
    # rank 1: both halves factored on 16-wide layers, a Tucker w2 on 3x3 convolutions, DoRA on top
    "lokr-factored-tucker-dora": ("lokr", {"dim": 1, "alpha": 0.5, "conv_dim": 1, "conv_alpha": 0.5,
                                           "decompose_both": True, "use_tucker": True, "dora_wd": True},
                                  {"lokr_w1_a", "lokr_w1_b", "lokr_t2", "dora_scale"}),
    "full": ("full", {}, {"diff", "diff_b"}),
    "locon-tucker": ("locon", {"use_tucker": True}, {"lora_down.weight", "lora_up.weight", "lora_mid.weight"}),
    "dora": ("locon", {"dora_wd": True}, {"dora_scale"}),
    "dora-on-inputs": ("locon", {"dora_wd": True, "wd_on_output": False}, {"dora_scale"}),
    # train_norm: the blocks' GroupNorm / LayerNorm layers get norm modules beside the LoHa ones
    "loha-norm": ("loha", {"train_norm": True}, {"hada_w1_a", "w_norm", "b_norm"}),
    # Diag-OFT with its per-row rescale, and a constraint (alpha * out) small enough that the trained blocks are
    # scaled down to it on the wider layers
    "diag-oft": ("diag-oft", {"rescaled": True, "constraint": 1e-4}, {"oft_blocks", "rescale", "alpha"}),
    # BOFT: up to 4 butterfly stages on 32-row layers (groups of 2^(m-1) * b rows: whole tensors)
    "boft": ("boft", {"rescaled": True}, {"oft_blocks", "rescale", "alpha"}),
    # IA3 on every layer, scaling outputs (on_input 0); by inputs in test_lycoris_ia3_on_inputs
    "ia3": ("ia3", {}, {"weight", "on_input"}),
}
#: The layers each case's network wraps (attention, ResNet, up/down-sampling, in/out; with train_norm, norms).
WRAPPED = {"loha-norm": 389}


def _diffusers_folder(state, folder: Path) -> Path:
    (folder / "unet").mkdir(parents=True)
    save_file(state, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return folder


def _save(network, path: Path, base_name: str = "base.safetensors") -> Path:
    """The network saved by the library, with the header metadata sd-scripts writes."""
    network.save_weights(str(path), torch.float32,
                         {"ss_sd_model_name": base_name, "ss_network_module": "lycoris.kohya"})
    return path


@pytest.fixture(scope="module")
def base_state():
    return _unet_state(tiny_sd_unet(1))


def _expected(applied, base_state) -> dict[str, torch.Tensor]:
    """Base tensor name -> the weight (or bias) the library's modules apply (:func:`lycoris_applied_weights`)."""
    flat = {name[:-len(".weight")].replace(".", "_"): name for name in base_state if name.endswith(".weight")}
    want: dict[str, torch.Tensor] = {}
    for lora_name, (kind, weight, bias) in applied.items():
        name = flat[lora_name.removeprefix("lora_unet_")]
        shape = base_state[name].shape
        want[name] = weight.reshape(shape) if kind == "weight" else base_state[name] + weight.reshape(shape)
        if bias is not None:
            bias_name = name[:-len(".weight")] + ".bias"
            want[bias_name] = bias if kind == "weight" else base_state[bias_name] + bias
    return want


@pytest.mark.parametrize("case", list(CASES))
def test_lycoris_file_reads_as_the_library_applies_it(case, base_state, tmp_path):
    """Every updated tensor equals the base plus the difference the library's forward applies (the whole weight
    for a full module, its bias too), to float32 rounding; every other tensor is the base's; row ranges are
    slices of the whole tensor."""
    algo, kwargs, parts = CASES[case]
    network = lycoris_unet(algo, tmp_path, **kwargs)[1]
    applied = lycoris_applied_weights(network)
    _diffusers_folder(base_state, tmp_path / "set" / "base")
    _save(network, tmp_path / "set" / f"{case}.safetensors")
    _check_read(tmp_path / "set", case, applied, base_state, parts, WRAPPED.get(case, 281))


@pytest.mark.parametrize("case", ["loha-tucker-dora", "lokr", "dora", "full"])
def test_half_precision_files_read_as_the_library_loads_them(case, base_state, tmp_path):
    """Files saved in fp16 (as most shared files are): read as the library's own loader
    (``create_network_from_weights``, sd-scripts' path to a saved network) applies them to a fresh base."""
    from lycoris.kohya import create_network_from_weights

    algo, kwargs, parts = CASES[case]
    network = lycoris_unet(algo, tmp_path, **kwargs)[1]
    _diffusers_folder(base_state, tmp_path / "set" / "base")
    path = tmp_path / "set" / f"{case}.safetensors"
    network.save_weights(str(path), torch.float16, {"ss_sd_model_name": "base.safetensors"})
    loaded = create_network_from_weights(1.0, str(path), None, None, tiny_sd_unet(1))[0]
    _check_read(tmp_path / "set", case, lycoris_applied_weights(loaded), base_state, parts)


def _check_read(folder: Path, case: str, applied, base_state, parts: set[str], wrapped: int = 281) -> None:
    path = folder / f"{case}.safetensors"
    names = list(safe_open(str(path), "pt").keys())
    assert parts <= {n.split(".", 1)[1] for n in names}  # the file holds the forms this case is about
    if case == "dora-on-inputs":  # dora_scale (1, in, ...): one norm per input channel
        assert all(safe_open(str(path), "pt").get_slice(n).get_shape()[0] == 1 for n in names if "dora_scale" in n)
    assert sniff(names) == KOHYA
    found = {m.id: m for m in discover([folder]).models}
    assert found[case].format == "sd-lora:kohya"
    want = _expected(applied, base_state)
    assert len(applied) == wrapped  # every layer the network wraps (attention, ResNet, up/down-sampling, in/out)
    with open_model(found["base"]) as base, open_model(found[case], base=base) as reader:
        assert set(reader.tensor_infos()) == set(base_state)
        worst, moved = 0.0, 0
        for name, base_tensor in base_state.items():
            got = reader.read(name)
            if name not in want:
                assert torch.equal(got, base_tensor), name
                continue
            delta = (want[name] - base_tensor).abs().max()
            moved += bool(delta > 1e-5)
            err = (got - want[name]).abs().max()
            worst = max(worst, float(err))
            assert err <= 1e-6 + 1e-4 * delta, (name, float(err), float(delta))
            if got.shape[0] > 3:
                assert torch.allclose(reader.read(name, rows=(1, 3)), got[1:3], atol=1e-7, rtol=0), name
    assert worst < 1e-6
    # one real step moved nearly every layer (a wrong scale would show); the mid block's self-attention sees one
    # token (1x1 latents), so its query and key get no gradient
    assert moved >= 0.9 * len(want), (moved, len(want))


def test_sdxl_lycoris_file_with_ldm_names(tmp_path):
    """A LyCORIS LoHa (Tucker kernels, DoRA) of the tiny SDXL UNet, its modules named as sd-scripts names an SDXL
    network (the LDM layout, ``lora_unet_input_blocks_4_1_...``, from the base's own structure): read as the
    library's forward applies it, on the SDXL base's diffusers folder."""
    from mother_core.io.sd_single_file import ldm_unet_names

    network = lycoris_unet("loha", tmp_path, sdxl=True, use_tucker=True, dora_wd=True)[1]
    applied = lycoris_applied_weights(network)
    base_state = _unet_state(tiny_sdxl_unet(1))
    ldm = ldm_unet_names(base_state)
    flat = {name[:-len(".weight")].replace(".", "_"): name for name in base_state if name.endswith(".weight")}
    renamed = {}
    for key, value in network.state_dict().items():  # what save_weights writes, under the LDM module names
        module, part = key.split(".", 1)
        ldm_module = ldm[flat[module.removeprefix("lora_unet_")]].removesuffix(".weight").replace(".", "_")
        renamed[f"lora_unet_{ldm_module}.{part}"] = value.detach().contiguous()
    assert any(k.startswith("lora_unet_input_blocks_") for k in renamed)
    _diffusers_folder(base_state, tmp_path / "set" / "base")
    save_file(renamed, str(tmp_path / "set" / "sdxl-loha.safetensors"), {"ss_sd_model_name": "base.safetensors"})
    _check_read(tmp_path / "set", "sdxl-loha", applied, base_state, {"hada_t1", "dora_scale"}, len(applied))


@pytest.mark.parametrize("algo", ["lokr", "diag-oft"])
def test_lycoris_wrapper_network_file(algo, base_state, tmp_path):
    """A network made by LyCORIS's own wrapper (``create_lycoris`` on the diffusers UNet; modules named
    ``lycoris_<path>``) and saved by its ``save_weights``: read in the kohya layout, as the library's forward
    applies it."""
    network = lycoris_wrapped_unet(algo)[1]
    applied = lycoris_applied_weights(network)
    assert all(name.startswith("lycoris_") for name in applied)
    _diffusers_folder(base_state, tmp_path / "set" / "base")
    path = tmp_path / "set" / f"wrapped-{algo}.safetensors"
    network.save_weights(str(path), torch.float32, {"ss_sd_model_name": "base.safetensors"})
    renamed = {name.replace("lycoris_", "lora_unet_", 1): v for name, v in applied.items()}
    parts = {"lokr_w1", "alpha"} if algo == "lokr" else {"oft_blocks", "alpha"}
    _check_read(tmp_path / "set", f"wrapped-{algo}", renamed, base_state, parts, len(applied))


_IA3_PRESET = """enable_conv = false
unet_target_module = []
unet_target_name = ['.*\\.to_k$', '.*\\.to_v$', '.*\\.ff\\.net\\.2$']
text_encoder_target_module = []
text_encoder_target_name = []
[name_algo_map.'.*\\.ff\\.net\\.2$']
train_on_input = true
"""


def test_lycoris_ia3_on_inputs(base_state, tmp_path):
    """IA3 as LyCORIS's own ``ia3`` preset places it (``lycoris/config.py``), written for the UNet's module paths:
    attention keys and values scaled by output, the feed-forward output layer (``ff.net.2``) by input
    (``on_input`` 1): read as the library's forward applies it."""
    network = lycoris_unet("ia3", tmp_path, preset=_IA3_PRESET)[1]
    applied = lycoris_applied_weights(network)
    on_input = [k for k, v in network.state_dict().items() if k.endswith(".on_input") and float(v) == 1]
    assert on_input and all("ff_net_2" in k for k in on_input)
    _diffusers_folder(base_state, tmp_path / "set" / "base")
    _save(network, tmp_path / "set" / "ia3-preset.safetensors")
    _check_read(tmp_path / "set", "ia3-preset", applied, base_state, {"weight", "on_input"}, len(applied))


def test_lycoris_files_are_adapters_of_their_base_and_glora_is_a_problem(tmp_path):
    """A set of a base (single file), a fine-tune of it, an unrelated UNet, LoHa, LoKr, OFT, BOFT and IA3 files
    naming the base in their header, and a LyCORIS GLoRA file: the others are ``adapter`` children of the base,
    the GLoRA file is a problem naming its type and what to do, and the rest of the run is intact."""
    folder = tmp_path / "set"
    folder.mkdir()
    _single_file(_unet_state(tiny_sd_unet(1)), folder / "base.safetensors")
    _single_file(_finetuned(7), folder / "finetuned.safetensors")
    _single_file(_unet_state(tiny_sd_unet(2)), folder / "unrelated.safetensors")
    algos = {"loha": "loha", "lokr": "lokr", "oft": "diag-oft", "boft": "boft", "ia3": "ia3"}
    for name, algo in algos.items():
        _save(lycoris_unet(algo, tmp_path, seed=3)[1], folder / f"{name}.safetensors")
    _save(lycoris_unet("glora", tmp_path)[1], folder / "glora.safetensors")
    edges = assert_adapters_beside_one_problem(
        recover_paths([folder], RecoverySettings()), "glora.safetensors",
        ("GLoRA (LyCORIS) Stable Diffusion network, which this version does not merge",
         "Merge it into its base model with the tool that made it"), algos, "base")
    assert edges["finetuned"].parent == "base" and edges["finetuned"].relation == "finetune"
    assert "unrelated" not in edges


def test_damaged_or_misfitting_lycoris_modules_are_refused_by_name():
    """From names and header shapes only: a LoHa module lacking a factor, a module mixing two types' parts, and
    factors that do not multiply out to the base tensor each raise with the module named."""
    m = "lora_unet_a_b"
    loha = {f"{m}.hada_w1_a": (3, 2), f"{m}.hada_w1_b": (2, 4), f"{m}.hada_w2_a": (3, 2), f"{m}.alpha": ()}
    with pytest.raises(AdapterMismatchError, match="LoHa module 'a_b' has .* but no hada_w2_b"):
        lora_modules("x", KOHYA, list(loha))
    with pytest.raises(AdapterMismatchError, match="parts of several network types"):
        lora_modules("x", KOHYA, [*loha, f"{m}.hada_w2_b", f"{m}.lokr_w1"])
    loha[f"{m}.hada_w2_b"] = (2, 4)
    base = {"a.b.weight": TensorInfo("a.b.weight", (3, 4), "float32")}
    assert resolve("x", KOHYA, lora_modules("x", KOHYA, list(loha)), loha, base, "base") == {"a_b": "a.b.weight"}
    wrong = {"a.b.weight": TensorInfo("a.b.weight", (3, 5), "float32")}
    with pytest.raises(AdapterMismatchError, match="hada_w1_b .2, 4.*is that the right base model"):
        resolve("x", KOHYA, lora_modules("x", KOHYA, list(loha)), loha, wrong, "base")
    # LoKr: kron((1, 2), (3, 2)) is (3, 4)
    lokr = {f"{m}.lokr_w1": (1, 2), f"{m}.lokr_w2_a": (3, 1), f"{m}.lokr_w2_b": (1, 2), f"{m}.alpha": ()}
    assert resolve("x", KOHYA, lora_modules("x", KOHYA, list(lokr)), lokr, base, "base") == {"a_b": "a.b.weight"}
    with pytest.raises(AdapterMismatchError, match="is that the right base model"):
        resolve("x", KOHYA, lora_modules("x", KOHYA, list(lokr)), lokr, wrong, "base")



def test_misfitting_lycoris_oft_boft_ia3_modules_are_refused_by_name():
    """From header shapes: OFT blocks that do not tile the layer's rows, a BOFT whose butterfly groups do not
    divide them (or whose stage count is absurd), and an IA3 vector of another length each raise with the
    module named; fitting ones resolve."""
    m = "lora_unet_a_b"
    base = {"a.b.weight": TensorInfo("a.b.weight", (8, 4), "float32")}

    def resolves(shapes: dict[str, tuple[int, ...]]) -> bool:
        try:
            return resolve("x", KOHYA, lora_modules("x", KOHYA, list(shapes)), shapes, base, "base") == \
                {"a_b": "a.b.weight"}
        except AdapterMismatchError as e:
            assert "'a_b'" in e.message or "a.b.weight" in e.message
            return False

    assert resolves({f"{m}.oft_blocks": (2, 4, 4), f"{m}.rescale": (8, 1), f"{m}.alpha": ()})
    assert not resolves({f"{m}.oft_blocks": (3, 2, 2), f"{m}.alpha": ()})  # 6 rows of 8
    assert not resolves({f"{m}.oft_blocks": (2, 4, 4), f"{m}.rescale": (7, 1), f"{m}.alpha": ()})
    assert resolves({f"{m}.oft_blocks": (2, 2, 4, 4), f"{m}.alpha": ()})  # 2 stages: groups of 8 rows
    assert not resolves({f"{m}.oft_blocks": (3, 2, 4, 4), f"{m}.alpha": ()})  # groups of 16 in 8 rows
    assert not resolves({f"{m}.oft_blocks": (10**6, 2, 4, 4), f"{m}.alpha": ()})
    assert resolves({f"{m}.weight": (8,), f"{m}.on_input": ()})
    assert resolves({f"{m}.weight": (4,), f"{m}.on_input": ()})
    assert not resolves({f"{m}.weight": (5,), f"{m}.on_input": ()})
