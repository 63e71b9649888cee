"""Stable Diffusion single-file checkpoints (``.ckpt`` / ``.safetensors``) under the diffusers UNet's names.

A single-file SD 1.x/2.x checkpoint holds the whole pipeline in the original (LDM) layout: the UNet as
``model.diffusion_model.*`` (``input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight``), the VAE as
``first_stage_model.*`` and the text encoder as ``cond_stage_model.*``; a diffusers repository keeps the
UNet in ``unet/`` with other names (``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight``).
This module renames the UNet's tensors to the diffusers names with the conversion table diffusers itself
uses (``scripts/convert_diffusers_to_original_stable_diffusion.py``: block prefixes, ResNet parts and the
time embedding), so that a single-file checkpoint and a diffusers folder compare tensor by tensor (the
``sd1`` preset works with either layout). Only the UNet is kept (what ``--component unet`` compares in a
diffusers folder); the VAE and text encoder are left out.

When the file also holds EMA weights (``model_ema.diffusion_model<name without dots>``), those are used,
as diffusers' converter does by default (the published diffusers UNets were converted from them).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

UNET_PREFIX = "model.diffusion_model."
_EMA_PREFIX = "model_ema."

#: (LDM name, diffusers name) of tensors renamed whole.
_WHOLE: tuple[tuple[str, str], ...] = (
    ("time_embed.0.weight", "time_embedding.linear_1.weight"),
    ("time_embed.0.bias", "time_embedding.linear_1.bias"),
    ("time_embed.2.weight", "time_embedding.linear_2.weight"),
    ("time_embed.2.bias", "time_embedding.linear_2.bias"),
    ("input_blocks.0.0.weight", "conv_in.weight"),
    ("input_blocks.0.0.bias", "conv_in.bias"),
    ("out.0.weight", "conv_norm_out.weight"),
    ("out.0.bias", "conv_norm_out.bias"),
    ("out.2.weight", "conv_out.weight"),
    ("out.2.bias", "conv_out.bias"),
)

#: (LDM part, diffusers part) inside ResNet blocks.
_RESNET: tuple[tuple[str, str], ...] = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
)


@lru_cache(maxsize=1)
def _block_prefixes() -> tuple[tuple[str, str], ...]:
    """(LDM prefix, diffusers prefix) of every block of the SD UNet (4 levels, 2 ResNets down, 3 up)."""
    out: list[tuple[str, str]] = []
    for i in range(4):
        for j in range(2):
            out.append((f"input_blocks.{3 * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if i < 3:
                out.append((f"input_blocks.{3 * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(3):
            out.append((f"output_blocks.{3 * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if i > 0:
                out.append((f"output_blocks.{3 * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < 3:
            out.append((f"input_blocks.{3 * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            out.append((f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.", f"up_blocks.{i}.upsamplers.0."))
    out.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        out.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    # Longest first, so "input_blocks.3.0.op." wins over any shorter prefix of the same block.
    return tuple(sorted(out, key=lambda p: -len(p[0])))


def diffusers_name(ldm_name: str) -> str | None:
    """The diffusers UNet name of one UNet tensor in LDM naming (without ``model.diffusion_model.``).

    Examples
    --------
    >>> diffusers_name("input_blocks.4.1.proj_in.weight")
    'down_blocks.1.attentions.0.proj_in.weight'
    >>> diffusers_name("output_blocks.2.1.conv.weight")
    'up_blocks.0.upsamplers.0.conv.weight'
    """
    for ldm, hf in _WHOLE:
        if ldm_name == ldm:
            return hf
    for ldm, hf in _block_prefixes():
        if ldm_name.startswith(ldm):
            name = hf + ldm_name[len(ldm):]
            if ".resnets." in hf:
                for ldm_part, hf_part in _RESNET:
                    name = name.replace(f".{ldm_part}.", f".{hf_part}.")
            return name
    return None


def is_single_file(raw_names: Iterable[str]) -> bool:
    """Whether a checkpoint's tensor names are those of an SD single-file checkpoint."""
    return any(n.startswith(UNET_PREFIX) for n in raw_names)


def unet_names(raw_names: Iterable[str]) -> dict[str, str] | None:
    """Diffusers UNet name -> raw name to read, for an SD single-file checkpoint; None for other files.

    Names the table does not know keep their LDM name (they compare with other single-file checkpoints
    only); EMA weights are taken where the file has them.
    """
    names = list(raw_names)
    if not is_single_file(names):
        return None
    present = set(names)
    has_ema = any(n.startswith(_EMA_PREFIX + "diffusion_model") for n in names)
    out: dict[str, str] = {}
    for raw in names:
        if not raw.startswith(UNET_PREFIX):
            continue
        ldm = raw[len(UNET_PREFIX):]
        source = raw
        if has_ema:
            ema = _EMA_PREFIX + ("diffusion_model." + ldm).replace(".", "")
            source = ema if ema in present else raw
        out[diffusers_name(ldm) or ldm] = source
    return out
