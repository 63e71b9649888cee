"""PEFT OFT, BOFT, VeRA and LN-tuning adapters read as their base with the adapter merged in (issue 11, "the
formats users have").

Each adapter is made by PEFT itself (0.21) on a tiny transformers Llama with attention biases, trained a few real
AdamW steps (OFT's and BOFT's rotations start as the identity, VeRA's ``lambda_b`` at zero: untrained, each would
be no change), saved unmerged with ``save_pretrained``; the engine's reading of every tensor, whole and by row
ranges, is compared with PEFT's own ``merge_and_unload()`` weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoint_factory import adam_steps
from format_factory import load_llama, peft_conv_set, peft_llama_set
from mother_core import RecoverySettings, discover, recover_paths
from mother_core.errors import UnreadableCheckpointError
from mother_core.io.names import normalise_name
from mother_core.io.readers import open_model
from mother_core.relations.calibration import CONFIDENCE

pytestmark = pytest.mark.xdist_group("peft-oft-vera")

peft = pytest.importorskip("peft")


def _configs() -> dict[str, Any]:
    from peft import BOFTConfig, HRAConfig, LNTuningConfig, OFTConfig, VeraConfig

    return {
        # OFT as PEFT 0.21 makes it by default (Cayley-Neumann, 5 terms), blocks of 8 (q_proj: 4 blocks; down_proj,
        # 48 inputs: 6), and on the embedding, which PEFT rotates as W @ R and saves with its base_layer.weight
        "oft": OFTConfig(r=0, oft_block_size=8, target_modules=["q_proj", "down_proj", "embed_tokens"]),
        # constrained OFT: each block projected to within eps / sqrt(blocks) of zero before the rotation (the
        # trained blocks lie beyond it: test_the_changes_are_not_small)
        "oft-coft": OFTConfig(r=0, oft_block_size=4, coft=True, eps=0.05, target_modules=["q_proj", "v_proj"]),
        # one block shared along the input, and the exact Cayley transform instead of the Neumann series
        "oft-shared": OFTConfig(r=0, oft_block_size=4, block_share=True, use_cayley_neumann=False,
                                target_modules=["q_proj", "v_proj"]),
        # BOFT with PEFT's default single butterfly factor (the CPU build forces it), rows scaled by boft_s
        "boft": BOFTConfig(boft_block_size=4, target_modules=["q_proj", "up_proj"]),
        # VeRA: shared random projections saved with the adapter (save_projection, the default)
        "vera": VeraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]),
        "ln_tuning": LNTuningConfig(target_modules=["input_layernorm", "post_attention_layernorm"]),
        # HRA: 4 Householder reflections (PEFT's symmetric init: pairs that cancel until trained), and with
        # Gram-Schmidt (apply_GS) on an odd count
        "hra": HRAConfig(r=4, target_modules=["q_proj", "down_proj"]),
        "hra-gs": HRAConfig(r=3, apply_GS=True, target_modules=["v_proj", "up_proj"]),
    }


#: Tensors each adapter changes: its modules x 2 layers (OFT also the embedding; LN tuning two norms a layer).
_CHANGED = {"oft": 5, "oft-coft": 4, "oft-shared": 4, "boft": 4, "vera": 6, "ln_tuning": 4, "hra": 4, "hra-gs": 4}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The set folder (a base and one trained adapter of each type) and PEFT's merged weights per adapter."""

    root = tmp_path_factory.mktemp("peft-oft-vera")
    return {"root": root, "merged": peft_llama_set(root, _configs(), seed=20)}


def _refs(root: Path) -> dict[str, Any]:
    return {m.id: m for m in discover([root]).models}


def _compare(root: Path, kind: str, want: dict[str, torch.Tensor]) -> tuple[int, float]:
    """The engine's reading of adapter ``kind`` under ``root`` against PEFT's merged weights ``want``, whole and
    in row ranges (0-5, 5-13, 13-n): (tensors the adapter changed, largest absolute difference)."""
    refs = _refs(root)
    assert refs[kind].format == f"peft-lora:{kind.split('-')[0]}" and refs[kind].base_id == "base"
    changed, worst = 0, 0.0
    with open_model(refs["base"]) as base, open_model(refs[kind], base) as reader:
        assert set(reader.tensor_infos()) == set(base.tensor_infos())
        for name, info in reader.tensor_infos().items():
            if name not in want:
                continue
            got = reader.read(name)
            assert got.dtype == want[name].dtype, name
            n = info.shape[0]
            cuts = [0, min(5, n), min(13, n), n]
            pieces = torch.cat([reader.read(name, rows=(a, b)) for a, b in zip(cuts, cuts[1:])])
            worst = max(worst, (got - want[name]).abs().max().item(), (pieces - want[name]).abs().max().item())
            changed += not torch.equal(base.read(name), got)
    return changed, worst


@pytest.mark.parametrize("kind", sorted(_CHANGED))
def test_merged_reading_equals_peft_merge_and_unload(made, kind):
    """Every tensor, whole and in row ranges, equals PEFT's merge: VeRA and LN tuning bit for bit (PEFT's
    operations in its order); OFT and BOFT within 1e-7 (measured 7.5e-9 at most): PEFT multiplies by the whole
    block-diagonal rotation, the reader block by block, so the sums run in another order; HRA too (measured
    1.9e-8): PEFT multiplies by the (in, in) product of the reflections, the reader adds its rank-r part."""
    changed, worst = _compare(made["root"], kind, made["merged"][kind])
    assert changed == _CHANGED[kind]
    assert worst <= (0.0 if kind in ("vera", "ln_tuning") else 1e-7), worst


def test_the_changes_are_not_small(made):
    """The trained adapters move their tensors far above the tolerance (so the comparison above means something):
    the largest change against the base is over 1e-4 for each; and the constrained OFT's blocks are trained beyond
    its bound, so its projection changes the merge (a reader without it would differ)."""
    from mother_core.io.lora import oft_rotation

    refs = _refs(made["root"])
    with open_model(refs["base"]) as base:
        for kind in _CHANGED:
            want = made["merged"][kind]
            moved = max((want[n] - base.read(n)).abs().max().item() for n in base.tensor_infos() if n in want)
            assert moved > 1e-4, (kind, moved)
    stored = load_file(str(made["root"] / "oft-coft" / "adapter_model.safetensors"))
    weight = next(v for k, v in stored.items() if k.endswith("q_proj.oft_R.weight"))
    projected, free = oft_rotation(weight, 4, True, 0.05, True, 5), oft_rotation(weight, 4, False, 0.05, True, 5)
    assert (projected - free).abs().max() > 1e-3


def test_adapters_linked_to_their_base(made):
    """Recovery places each adapter under the base it names, as an ``adapter`` relation at the config-base
    confidence, its evidence naming its type."""
    result = recover_paths([made["root"]], RecoverySettings())
    assert not result.problems
    edges = {e.child: e for e in result.edges}
    words = {"oft": "OFT", "oft-coft": "OFT", "oft-shared": "OFT", "boft": "BOFT", "ln_tuning": "LN-tuning"}
    for kind in _CHANGED:
        assert edges[kind].parent == "base" and edges[kind].relation == "adapter", edges[kind]
        assert edges[kind].relation_confidence == CONFIDENCE["adapter: config base"], edges[kind]
        link = next(link for link in result.problem.links if result.model_ids[link["child"]] == kind)
        if kind in words:  # rotations and norm vectors are not low-rank updates: the evidence says so
            assert f"PEFT {words[kind]} adapter" in link["evidence"] and "not low rank" in link["evidence"]
        else:  # VeRA's update is B @ A at rank r, HRA's W (H - I) too: confirmed by rank like a LoRA's
            assert "at low rank" in link["evidence"], link["evidence"]


@pytest.mark.parametrize("kind", ["oft", "boft", "hra"])
def test_oft_boft_hra_on_a_convolution(tmp_path, kind):
    """On a Conv2d PEFT rotates (or reflects) the kernel flattened (out, in * 3 * 3: 9 blocks of 4); merged as PEFT
    does."""
    from peft import BOFTConfig, HRAConfig, OFTConfig

    config = {"oft": OFTConfig(r=0, oft_block_size=4, target_modules=["conv", "proj"]),
              "boft": BOFTConfig(boft_block_size=4, target_modules=["conv", "proj"]),
              "hra": HRAConfig(r=2, target_modules=["conv", "proj"])}[kind]
    want = peft_conv_set(tmp_path, kind, config)
    changed, worst = _compare(tmp_path, kind, want)
    assert changed == 2 and worst <= 1e-7, (changed, worst)


def test_lora_on_an_embedding_merges_into_the_saved_base_layer(made, tmp_path):
    """A LoRA on ``embed_tokens``: PEFT saves the embedding's ``base_layer.weight`` beside the adapter; the reader
    merged nothing into it before (the embedding read as the base's, 0.44 off PEFT's merge), now PEFT's merge."""
    from peft import LoraConfig, get_peft_model

    shutil.copytree(made["root"] / "base", tmp_path / "base")
    model = get_peft_model(load_llama(tmp_path / "base"), LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"]))
    adam_steps(model, 3, 4, 1e-2)
    model.save_pretrained(tmp_path / "lora")
    want = {normalise_name(k): v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}
    refs = _refs(tmp_path)
    with open_model(refs["base"]) as base, open_model(refs["lora"], base) as reader:
        got = reader.read("embed_tokens.weight")
        assert not torch.equal(got, base.read("embed_tokens.weight"))
        torch.testing.assert_close(got, want["embed_tokens.weight"], rtol=0, atol=1e-6)


def test_vera_without_its_projections_is_refused_saying_how_to_resave(made, tmp_path):
    """VeRA saved with ``save_projection=False`` lacks the shared random matrices: refused when opened, the
    message saying to save it again with them (or to merge it)."""
    from peft import VeraConfig, get_peft_model

    shutil.copytree(made["root"] / "base", tmp_path / "base")
    model = get_peft_model(load_llama(tmp_path / "base"),
                           VeraConfig(r=4, target_modules=["q_proj"], save_projection=False))
    model.save_pretrained(tmp_path / "vera")
    refs = _refs(tmp_path)
    with open_model(refs["base"]) as base, pytest.raises(UnreadableCheckpointError,
                                                         match="save_projection=False.*save it again with "
                                                               "save_projection=True"):
        open_model(refs["vera"], base)


def _copy_adapter(made: dict[str, Any], tmp_path: Path, kind: str) -> Path:
    shutil.copytree(made["root"] / "base", tmp_path / "base")
    shutil.copytree(made["root"] / kind, tmp_path / kind)
    return tmp_path / kind


def test_old_oft_and_unfollowed_config_flags_refused_by_name(made, tmp_path):
    """An OFT file in PEFT 0.15's layout (``oft_r``; PEFT 0.21 refuses to load it too), an OFT config with
    ``fan_in_fan_out`` and a BOFT with two butterfly factors (which only PEFT's CUDA extension trains) are each
    refused with what they are and the way out, not merged wrongly."""
    folder = _copy_adapter(made, tmp_path, "oft")
    path = folder / "adapter_model.safetensors"
    good = load_file(str(path))
    save_file({k.replace(".oft_R.weight", ".oft_r"): v for k, v in good.items()}, str(path))
    refs = _refs(tmp_path)
    with open_model(refs["base"]) as base, pytest.raises(UnreadableCheckpointError, match="PEFT 0.15 or older"):
        open_model(refs["oft"], base)

    save_file(good, str(path))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "fan_in_fan_out": True}))
    with open_model(refs["base"]) as base, pytest.raises(UnreadableCheckpointError, match="fan_in_fan_out"):
        open_model(refs["oft"], base)

    folder = _copy_adapter(made, tmp_path / "b", "boft")
    path = folder / "adapter_model.safetensors"
    tensors = {k: torch.cat([v, v]) if k.endswith("boft_R") else v for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))
    refs = _refs(tmp_path / "b")
    with open_model(refs["base"]) as base, pytest.raises(UnreadableCheckpointError,
                                                         match="2 butterfly factors.*merge_and_unload"):
        open_model(refs["boft"], base)


def test_vera_fan_in_fan_out_on_gpt2(tmp_path):
    """VeRA on GPT-2's ``Conv1D`` (stored (in, out), ``fan_in_fan_out``): the update is transposed to the stored
    layout, bit for bit PEFT's merge."""
    from peft import VeraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=4)).save_pretrained(
        tmp_path / "base")
    model = get_peft_model(GPT2LMHeadModel.from_pretrained(tmp_path / "base"),
                           VeraConfig(r=4, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True))
    adam_steps(model, 3, 4, 1e-2)
    model.save_pretrained(tmp_path / "vera")
    want = {normalise_name(k): v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}
    changed, worst = _compare(tmp_path, "vera", want)
    assert changed == 2 and worst == 0.0, (changed, worst)
