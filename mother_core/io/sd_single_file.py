"""Stable Diffusion single-file checkpoints (``.ckpt`` / ``.safetensors``) under the diffusers UNet's names.

A single-file SD checkpoint holds the whole pipeline in the original (LDM / sgm) layout: the UNet as
``model.diffusion_model.*`` (``input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight``), the VAE as
``first_stage_model.*`` and the text encoder(s) as ``cond_stage_model.*`` (SDXL: ``conditioner.*``); a
diffusers repository keeps the UNet in ``unet/`` with other names
(``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight``). This module renames the UNet's
tensors to the diffusers names, so that a single-file checkpoint and a diffusers folder compare tensor by
tensor (the ``sd1`` preset works with either layout). Only the UNet is kept (what ``--component unet``
compares in a diffusers folder); the VAE and text encoders are left out.

Which ``input_blocks.K`` / ``output_blocks.K`` is which diffusers block depends on the UNet's structure:
SD 1.x / 2.x have four levels with attention in the first three, SDXL three levels with none in the first,
so the same LDM name (``output_blocks.2.1``) is an upsampler in one and an attention in the other. diffusers'
own converter (``convert_ldm_unet_checkpoint``) takes the structure from a config; here it is read from the
file's own names, as :class:`UnetBlocks`: each ``input_blocks.K`` holds a ResBlock (``in_layers``), then a
SpatialTransformer (``transformer_blocks``) where the level has attention, or alone a Downsample (``op``),
which ends the level; each ``output_blocks.K`` a ResBlock, maybe a SpatialTransformer and maybe an Upsample
(``conv`` alone), which ends the level. The renaming then follows diffusers' converter: ResNet parts
(``in_layers.2`` -> ``conv1``, ...), the time embedding, and SDXL's added-conditioning MLP ``label_emb.0``
-> ``add_embedding`` (the "text_time" embedding; ``class_embedding`` in an SD 2.x unCLIP file, recognised by
its image-noise augmentor ``noise_augmentor.*``, which is what feeds that embedding there). A file whose
blocks do not have that structure keeps its LDM names (it compares with other single-file checkpoints only),
with a note saying why.

When the file also holds EMA weights (``model_ema.diffusion_model<name without dots>``), those are used,
as diffusers' converter does by default (the published diffusers UNets were converted from them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

UNET_PREFIX = "model.diffusion_model."
_EMA_PREFIX = "model_ema."

#: (LDM module, diffusers module) of modules renamed whole, whatever the block structure.
_WHOLE: tuple[tuple[str, str], ...] = (
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
    ("label_emb", "class_embedding"),  # an nn.Embedding of class labels (the x4 upscaler's noise level)
)
#: LDM ``label_emb.0`` (Linear, SiLU, Linear) -> the diffusers embedding it is, see the module docstring.
_LABEL_MLP = (("label_emb.0.0", "linear_1"), ("label_emb.0.2", "linear_2"))
#: Tensors (outside the UNet) that mark an SD 2.x unCLIP file, whose ``label_emb.0`` is a class embedding.
_UNCLIP_MARK = "noise_augmentor."

#: (LDM part, diffusers part) inside ResNet blocks.
_RESNET: tuple[tuple[str, str], ...] = (
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
)

_RES, _ATTN, _DOWN, _UP = "resnet", "attention", "downsampler", "upsampler"
_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.([0-9]{1,9})\.([0-9]{1,9})\.([^.]+)")
_MIDDLE = re.compile(r"^middle_block\.([0-9]{1,9})\.([^.]+)")
_HF_BLOCK = re.compile(r"^(down|up)_blocks\.([0-9]{1,9})\.(resnets|attentions|downsamplers|upsamplers)\.([0-9]{1,9})\.")
_HF_MIDDLE = re.compile(r"^mid_block\.(resnets|attentions)\.([0-9]{1,9})\.")


class _Unmapped(ValueError):
    """The UNet's blocks do not have the structure diffusers' UNet2DConditionModel names."""


@dataclass(frozen=True)
class Level:
    """One level of the UNet's down or up path.

    Attributes
    ----------
    attentions : tuple of bool
        Per ResNet of the level, in order: whether a transformer follows it.
    sampler : bool
        Whether the level ends with a downsampler (down path) or an upsampler (up path).
    """

    attentions: tuple[bool, ...]
    sampler: bool


@dataclass(frozen=True)
class UnetBlocks:
    """The block structure of an SD UNet, read from its tensor names (LDM or diffusers).

    Attributes
    ----------
    down, up : tuple of Level
        The down path's levels (``down_blocks``, LDM ``input_blocks`` after ``conv_in``) and the up path's
        (``up_blocks``, LDM ``output_blocks``), each in its own order (the up path starts at the deepest).
    mid : tuple of str
        The middle block's modules in order, ``"resnet"`` or ``"attention"``.
    label_mlp : str
        The diffusers module LDM's ``label_emb.0`` MLP is: ``"add_embedding"`` or ``"class_embedding"``.
    """

    down: tuple[Level, ...]
    up: tuple[Level, ...]
    mid: tuple[str, ...]
    label_mlp: str = "add_embedding"

    def prefixes(self) -> tuple[tuple[str, str, str], ...]:
        """(LDM module, diffusers module, kind) of every block, kind ``"resnet"`` or another."""
        out: list[tuple[str, str, str]] = []
        k = 1  # input_blocks.0 is conv_in
        for i, level in enumerate(self.down):
            for j, attn in enumerate(level.attentions):
                out.append((f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", _RES))
                if attn:
                    out.append((f"input_blocks.{k}.1", f"down_blocks.{i}.attentions.{j}", _ATTN))
                k += 1
            if level.sampler:
                out.append((f"input_blocks.{k}.0.op", f"down_blocks.{i}.downsamplers.0.conv", _DOWN))
                k += 1
        k = 0
        for i, level in enumerate(self.up):
            for j, attn in enumerate(level.attentions):
                out.append((f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", _RES))
                if attn:
                    out.append((f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}", _ATTN))
                if level.sampler and j == len(level.attentions) - 1:
                    # The Upsample follows the level's last ResBlock (and its transformer, if any).
                    out.append((f"output_blocks.{k}.{2 if attn else 1}", f"up_blocks.{i}.upsamplers.0", _UP))
                k += 1
        seen = {_RES: 0, _ATTN: 0}
        for m, kind in enumerate(self.mid):
            out.append((f"middle_block.{m}", f"mid_block.{kind}s.{seen[kind]}", kind))
            seen[kind] += 1
        out.extend((ldm, hf, "whole") for ldm, hf in _WHOLE)
        out.extend((ldm, f"{self.label_mlp}.{hf}", "whole") for ldm, hf in _LABEL_MLP)
        return tuple(out)

    def diffusers_name(self, ldm_name: str) -> str | None:
        """The diffusers name of one UNet tensor in LDM naming (no ``model.diffusion_model.``); None if unknown.

        Examples
        --------
        >>> sd1 = UnetBlocks((Level((True, True), True),) * 3 + (Level((False, False), False),),
        ...                  (Level((False,) * 3, True),) + (Level((True,) * 3, True),) * 2
        ...                  + (Level((True,) * 3, False),), ("resnet", "attention", "resnet"))
        >>> sd1.diffusers_name("output_blocks.2.1.conv.weight")
        'up_blocks.0.upsamplers.0.conv.weight'
        >>> sdxl = UnetBlocks((Level((False, False), True), Level((True, True), True), Level((True, True), False)),
        ...                   (Level((True,) * 3, True),) * 2 + (Level((False,) * 3, False),),
        ...                   ("resnet", "attention", "resnet"))
        >>> sdxl.diffusers_name("output_blocks.2.1.norm.weight")
        'up_blocks.0.attentions.2.norm.weight'
        """
        return _rename(ldm_name, _table(self, to_diffusers=True), to_diffusers=True)

    def ldm_name(self, diffusers_name: str) -> str | None:
        """The LDM name of one diffusers UNet tensor (the inverse of :meth:`diffusers_name`); None if unknown."""
        return _rename(diffusers_name, _table(self, to_diffusers=False), to_diffusers=False)


@lru_cache(maxsize=16)
def _table(blocks: UnetBlocks, to_diffusers: bool) -> tuple[tuple[str, str, bool], ...]:
    """(source module, target module, is a ResNet) of every block, longest source first (so that
    ``input_blocks.3.0.op`` wins over ``input_blocks.3.0``)."""
    rows = [(ldm, hf, kind == _RES) if to_diffusers else (hf, ldm, kind == _RES) for ldm, hf, kind in blocks.prefixes()]
    return tuple(sorted(rows, key=lambda r: -len(r[0])))


def _rename(name: str, table: tuple[tuple[str, str, bool], ...], to_diffusers: bool) -> str | None:
    for source, target, resnet in table:
        if not name.startswith(source + "."):
            continue
        rest = name[len(source) + 1:]
        if resnet:
            for ldm_part, hf_part in _RESNET:
                old, new = (ldm_part, hf_part) if to_diffusers else (hf_part, ldm_part)
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
        return f"{target}.{rest}"
    return None


def _kind(children: set[str]) -> str:
    """What an LDM sub-block is, from the names of its children (``openaimodel.py``'s modules)."""
    if "in_layers" in children:
        return _RES
    if "transformer_blocks" in children:
        return _ATTN
    if children == {"op"}:
        return _DOWN
    if children == {"conv"}:
        return _UP
    return "unknown (" + ", ".join(sorted(children))[:60] + ")"


def _parts(names: Iterable[str], path: str) -> dict[int, tuple[str, ...]]:
    """Block index -> the kinds of its sub-blocks in order, for ``input_blocks`` or ``output_blocks``."""
    children: dict[int, dict[int, set[str]]] = {}
    for n in names:
        m = _BLOCK.match(n)
        if m and m[1] == path:
            children.setdefault(int(m[2]), {}).setdefault(int(m[3]), set()).add(m[4])
    out = {}
    for k, subs in children.items():
        if sorted(subs) != list(range(len(subs))):
            raise _Unmapped(f"{path}.{k} has sub-blocks {sorted(subs)}")
        out[k] = tuple(_kind(subs[p]) for p in range(len(subs)))
    return out


def _levels(blocks: Mapping[int, tuple[str, ...]], path: str, first: int, sampler: str) -> tuple[Level, ...]:
    """The levels of the down (``input_blocks``) or up (``output_blocks``) path from its blocks' kinds."""
    if sorted(blocks) != list(range(first, first + len(blocks))):
        raise _Unmapped(f"{path} are not numbered {first}, {first + 1}, ...")
    levels: list[Level] = []
    current: list[bool] = []
    for k in sorted(blocks):
        kinds = blocks[k]
        if sampler == _DOWN and kinds == (_DOWN,) and current:
            levels.append(Level(tuple(current), True))
            current = []
            continue
        rest = kinds[1:-1] if sampler == _UP and kinds[-1:] == (_UP,) else kinds[1:]
        if kinds[:1] != (_RES,) or rest not in ((), (_ATTN,)):
            raise _Unmapped(f"{path}.{k} holds {', '.join(kinds)}")
        current.append(bool(rest))
        if kinds[-1] == sampler:
            levels.append(Level(tuple(current), True))
            current = []
    if current:
        levels.append(Level(tuple(current), False))
    return tuple(levels)


def _check(blocks: UnetBlocks) -> UnetBlocks:
    """The structure diffusers' UNet2DConditionModel has: as many up levels as down ones, a sampler between
    levels (not after the last), attention for every ResNet of a level or none."""
    for name, levels in (("down", blocks.down), ("up", blocks.up)):
        if [lv.sampler for lv in levels] != [True] * (len(levels) - 1) + [False] * bool(levels):
            raise _Unmapped(f"the {name} path's samplers are not between its levels")
        if any(len(set(lv.attentions)) > 1 for lv in levels):
            raise _Unmapped(f"a {name} level has attention after some of its ResNets only")
    if len(blocks.down) != len(blocks.up):
        raise _Unmapped(f"{len(blocks.down)} down levels but {len(blocks.up)} up levels")
    if any(k not in (_RES, _ATTN) for k in blocks.mid):
        raise _Unmapped("the middle block holds " + ", ".join(blocks.mid))
    return blocks


def blocks_from_ldm(ldm_names: Iterable[str], label_mlp: str = "add_embedding") -> UnetBlocks:
    """The block structure of a UNet from its LDM tensor names (without ``model.diffusion_model.``).

    Raises
    ------
    ValueError
        The blocks do not have the structure of diffusers' UNet2DConditionModel (the message says where).
    """
    names = list(ldm_names)
    middle: dict[int, set[str]] = {}
    for n in names:
        m = _MIDDLE.match(n)
        if m:
            middle.setdefault(int(m[1]), set()).add(m[2])
    if sorted(middle) != list(range(len(middle))):
        raise _Unmapped("middle_block's modules are not numbered 0, 1, ...")
    inputs = _parts(names, "input_blocks")
    inputs.pop(0, None)  # conv_in, renamed whole
    return _check(UnetBlocks(
        down=_levels(inputs, "input_blocks", 1, _DOWN),
        up=_levels(_parts(names, "output_blocks"), "output_blocks", 0, _UP),
        mid=tuple(_kind(middle[m]) for m in sorted(middle)),
        label_mlp=label_mlp,
    ))


def blocks_from_diffusers(names: Iterable[str]) -> UnetBlocks | None:
    """The block structure of a diffusers UNet from its tensor names; None when it has no ``down_blocks``."""
    resnets: dict[tuple[str, int], int] = {}
    attentions: dict[tuple[str, int], int] = {}
    samplers: set[tuple[str, int]] = set()
    mid = {"resnets": 0, "attentions": 0}
    label = "add_embedding"
    for n in names:
        m = _HF_BLOCK.match(n)
        if m:
            key, j = (m[1], int(m[2])), int(m[4]) + 1
            if m[3] == "resnets":
                resnets[key] = max(resnets.get(key, 0), j)
            elif m[3] == "attentions":
                attentions[key] = max(attentions.get(key, 0), j)
            else:
                samplers.add(key)
        elif (mm := _HF_MIDDLE.match(n)) is not None:
            mid[mm[1]] = max(mid[mm[1]], int(mm[2]) + 1)
        elif n.startswith("class_embedding.linear_"):
            label = "class_embedding"
    paths = []
    for where in ("down", "up"):
        count = 1 + max((i for w, i in resnets if w == where), default=-1)
        paths.append(tuple(Level((attentions.get((where, i), 0) > 0,) * resnets.get((where, i), 0),
                                 (where, i) in samplers) for i in range(count)))
    if not paths[0]:
        return None
    # diffusers' middle block is resnets[0], then (attentions[k], resnets[k + 1]) per layer.
    order = [_RES] * bool(mid["resnets"])
    for k in range(max(mid["resnets"] - 1, mid["attentions"])):
        order += [_ATTN] * (k < mid["attentions"]) + [_RES] * (k + 1 < mid["resnets"])
    return UnetBlocks(paths[0], paths[1], tuple(order), label)


def is_single_file(raw_names: Iterable[str]) -> bool:
    """Whether a checkpoint's tensor names are those of an SD single-file checkpoint."""
    return any(n.startswith(UNET_PREFIX) for n in raw_names)


@dataclass(frozen=True)
class SingleFileUnet:
    """The UNet of a single-file checkpoint as the readers list it.

    Attributes
    ----------
    names : Mapping
        Listed name (diffusers, or the LDM name where the structure is unknown) -> raw name to read.
    blocks : UnetBlocks or None
        The structure read from the file; None when it could not be (then ``note`` says why).
    note : str or None
        Why the UNet keeps its LDM names, for the reader's notes.
    """

    names: Mapping[str, str]
    blocks: UnetBlocks | None
    note: str | None = None


def read_unet(raw_names: Iterable[str], model_names: Iterable[str] | None = None) -> SingleFileUnet | None:
    """The UNet of an SD single-file checkpoint under the diffusers names; None for other files.

    Names the structure does not cover keep their LDM name (they compare with other single-file
    checkpoints only); EMA weights are taken where the file has them.

    Parameters
    ----------
    raw_names : Iterable of str
        The tensor names of one file.
    model_names : Iterable of str, optional
        Every tensor name of the model, when the file is one shard of several: the structure is the
        whole UNet's, which one shard may hold only part of.
    """
    names = list(raw_names)
    if not is_single_file(names):
        return None
    present = set(names)
    everything = names if model_names is None else list(model_names)
    has_ema = any(n.startswith(_EMA_PREFIX + "diffusion_model") for n in names)
    ldm = [n[len(UNET_PREFIX):] for n in names if n.startswith(UNET_PREFIX)]
    whole = [n[len(UNET_PREFIX):] for n in everything if n.startswith(UNET_PREFIX)]
    label = "class_embedding" if any(n.startswith(_UNCLIP_MARK) for n in everything) else "add_embedding"
    blocks: UnetBlocks | None = None
    note = None
    if any(_BLOCK.match(n) or _MIDDLE.match(n) for n in whole):
        try:
            blocks = blocks_from_ldm(whole, label)
        except _Unmapped as e:
            note = (f"its UNet (model.diffusion_model.*) does not have the block structure of an SD 1.x / 2.x / "
                    f"XL UNet ({e}), so its tensors keep their original names and compare only with other "
                    "single-file checkpoints of the same layout, not with diffusers folders.")
    out: dict[str, str] = {}
    for name in ldm:
        raw = UNET_PREFIX + name
        source = raw
        if has_ema:
            ema = _EMA_PREFIX + ("diffusion_model." + name).replace(".", "")
            source = ema if ema in present else raw
        out[(blocks.diffusers_name(name) if blocks else None) or name] = source
    return SingleFileUnet(out, blocks, note)


def ldm_unet_names(diffusers_names: Iterable[str]) -> dict[str, str]:
    """Diffusers UNet tensor name -> its LDM name (no ``model.diffusion_model.``), the structure read from
    the names themselves; empty when they are not a diffusers UNet's. What kohya-ss SDXL LoRAs, which name
    modules in the LDM layout, are resolved against (:mod:`.sd_lora`)."""
    names = list(diffusers_names)
    blocks = blocks_from_diffusers(names)
    if blocks is None:
        return {}
    try:
        _check(blocks)
    except _Unmapped:
        return {}
    out = {}
    for n in names:
        ldm = blocks.ldm_name(n)
        if ldm is not None:
            out[n] = ldm
    return out
