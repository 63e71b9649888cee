"""Flux and SD3 single-file checkpoints under the diffusers transformer's names, fused tensors split.

The DiT image pipelines ship their denoiser two ways. A diffusers repository keeps it in ``transformer/``
(``transformer_blocks.0.attn.to_q.weight``, ...); the single files Black Forest Labs, Stability and ComfyUI
publish keep the original layout, bare (``flux1-dev.safetensors``) or under ``model.diffusion_model.``
beside the text encoders and the VAE:

* **Flux** (``flux-single-file``): ``double_blocks.N.img_attn.qkv.weight`` holds the image stream's query,
  key and value stacked by rows, ``single_blocks.N.linear1.weight`` the single block's query, key, value and
  MLP input (``inner, inner, inner, mlp`` rows, ``inner`` = the weight's input width), ``*.norm.*_norm.scale``
  the RMS norms, ``final_layer.adaLN_modulation.1`` the output norm's (shift, scale) rows;
* **SD3 / 3.5** (``sd3-single-file``): ``joint_blocks.N.{x_block,context_block}.attn.qkv`` (and SD3.5's
  ``x_block.attn2.qkv``), ``ln_q`` / ``ln_k`` norms, and (shift, scale) modulations in the last block's
  context stream and the final layer.

:func:`layout` maps every such tensor onto the tensors diffusers' converters
(``diffusers.loaders.single_file_utils.convert_flux_transformer_checkpoint_to_diffusers`` and
``convert_sd3_transformer_checkpoint_to_diffusers``) make of it: each diffusers tensor is a list of row
:class:`Segment` s of one stored tensor (a third of a ``qkv``, a part of ``linear1``, or the two halves of a
modulation swapped into diffusers' (scale, shift) order). :mod:`.dit_single_file_reader` reads those rows,
and only those, from the file's own reader, so a single file and a diffusers folder of the same weights
compare tensor by tensor, with no tensor ever held whole. The one difference from the converters: Flux's
``linear1`` is split by the file's own width, where diffusers 0.42 assumes Flux's 3072 (so it reads Flux
.1 dev / schnell files only); for those the two agree row for row.

Tensors no rule covers (a Flux variant's extra layers) keep their own names, with a note: they compare with
other single files of the same layout only. The VAE and the text encoders of an all-in-one file are left out
by the readers (:mod:`.sd_single_file`), as for Stable Diffusion single files: the denoiser is compared, as
``transformer/`` is in a diffusers folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# No torch here: discovery names a file's layout from its header (:func:`sniff`) without loading torch.


FLUX = "flux-single-file"
SD3 = "sd3-single-file"
_PREFIX = "model.diffusion_model."
#: A stored tensor that marks each layout (names without the ``model.diffusion_model.`` prefix).
_MARKS = (
    (FLUX, re.compile(r"^(double_blocks\.\d+\.img_attn\.qkv|single_blocks\.\d+\.linear1)\.weight$")),
    (SD3, re.compile(r"^joint_blocks\.\d+\.x_block\.attn\.qkv\.weight$")),
)

# How a stored module becomes diffusers modules: one whole, its rows in equal thirds (q, k, v), Flux's
# linear1 (q, k, v of the input width each, then the MLP), or its two row halves swapped.
_WHOLE, _THIRDS, _LINEAR1, _SWAP = "whole", "thirds", "linear1", "swap"

#: (stored module, split, diffusers modules); ``{0}`` is the block index, ``{last}`` marks SD3's last block.
_FLUX_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (r"time_in\.in_layer", _WHOLE, ("time_text_embed.timestep_embedder.linear_1",)),
    (r"time_in\.out_layer", _WHOLE, ("time_text_embed.timestep_embedder.linear_2",)),
    (r"vector_in\.in_layer", _WHOLE, ("time_text_embed.text_embedder.linear_1",)),
    (r"vector_in\.out_layer", _WHOLE, ("time_text_embed.text_embedder.linear_2",)),
    (r"guidance_in\.in_layer", _WHOLE, ("time_text_embed.guidance_embedder.linear_1",)),
    (r"guidance_in\.out_layer", _WHOLE, ("time_text_embed.guidance_embedder.linear_2",)),
    (r"txt_in", _WHOLE, ("context_embedder",)),
    (r"img_in", _WHOLE, ("x_embedder",)),
    (r"double_blocks\.([0-9]{1,9})\.img_mod\.lin", _WHOLE, ("transformer_blocks.{0}.norm1.linear",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_mod\.lin", _WHOLE, ("transformer_blocks.{0}.norm1_context.linear",)),
    (r"double_blocks\.([0-9]{1,9})\.img_attn\.qkv", _THIRDS,
     ("transformer_blocks.{0}.attn.to_q", "transformer_blocks.{0}.attn.to_k", "transformer_blocks.{0}.attn.to_v")),
    (r"double_blocks\.([0-9]{1,9})\.txt_attn\.qkv", _THIRDS,
     ("transformer_blocks.{0}.attn.add_q_proj", "transformer_blocks.{0}.attn.add_k_proj",
      "transformer_blocks.{0}.attn.add_v_proj")),
    (r"double_blocks\.([0-9]{1,9})\.img_attn\.norm\.query_norm", _WHOLE, ("transformer_blocks.{0}.attn.norm_q",)),
    (r"double_blocks\.([0-9]{1,9})\.img_attn\.norm\.key_norm", _WHOLE, ("transformer_blocks.{0}.attn.norm_k",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_attn\.norm\.query_norm", _WHOLE, ("transformer_blocks.{0}.attn.norm_added_q",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_attn\.norm\.key_norm", _WHOLE, ("transformer_blocks.{0}.attn.norm_added_k",)),
    (r"double_blocks\.([0-9]{1,9})\.img_mlp\.0", _WHOLE, ("transformer_blocks.{0}.ff.net.0.proj",)),
    (r"double_blocks\.([0-9]{1,9})\.img_mlp\.2", _WHOLE, ("transformer_blocks.{0}.ff.net.2",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_mlp\.0", _WHOLE, ("transformer_blocks.{0}.ff_context.net.0.proj",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_mlp\.2", _WHOLE, ("transformer_blocks.{0}.ff_context.net.2",)),
    (r"double_blocks\.([0-9]{1,9})\.img_attn\.proj", _WHOLE, ("transformer_blocks.{0}.attn.to_out.0",)),
    (r"double_blocks\.([0-9]{1,9})\.txt_attn\.proj", _WHOLE, ("transformer_blocks.{0}.attn.to_add_out",)),
    (r"single_blocks\.([0-9]{1,9})\.modulation\.lin", _WHOLE, ("single_transformer_blocks.{0}.norm.linear",)),
    (r"single_blocks\.([0-9]{1,9})\.linear1", _LINEAR1,
     ("single_transformer_blocks.{0}.attn.to_q", "single_transformer_blocks.{0}.attn.to_k",
      "single_transformer_blocks.{0}.attn.to_v", "single_transformer_blocks.{0}.proj_mlp")),
    (r"single_blocks\.([0-9]{1,9})\.norm\.query_norm", _WHOLE, ("single_transformer_blocks.{0}.attn.norm_q",)),
    (r"single_blocks\.([0-9]{1,9})\.norm\.key_norm", _WHOLE, ("single_transformer_blocks.{0}.attn.norm_k",)),
    (r"single_blocks\.([0-9]{1,9})\.linear2", _WHOLE, ("single_transformer_blocks.{0}.proj_out",)),
    (r"final_layer\.linear", _WHOLE, ("proj_out",)),
    (r"final_layer\.adaLN_modulation\.1", _SWAP, ("norm_out.linear",)),
)

_SD3_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (r"x_embedder\.proj", _WHOLE, ("pos_embed.proj",)),
    (r"t_embedder\.mlp\.0", _WHOLE, ("time_text_embed.timestep_embedder.linear_1",)),
    (r"t_embedder\.mlp\.2", _WHOLE, ("time_text_embed.timestep_embedder.linear_2",)),
    (r"y_embedder\.mlp\.0", _WHOLE, ("time_text_embed.text_embedder.linear_1",)),
    (r"y_embedder\.mlp\.2", _WHOLE, ("time_text_embed.text_embedder.linear_2",)),
    (r"context_embedder", _WHOLE, ("context_embedder",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn\.qkv", _THIRDS,
     ("transformer_blocks.{0}.attn.to_q", "transformer_blocks.{0}.attn.to_k", "transformer_blocks.{0}.attn.to_v")),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.attn\.qkv", _THIRDS,
     ("transformer_blocks.{0}.attn.add_q_proj", "transformer_blocks.{0}.attn.add_k_proj",
      "transformer_blocks.{0}.attn.add_v_proj")),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn\.ln_q", _WHOLE, ("transformer_blocks.{0}.attn.norm_q",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn\.ln_k", _WHOLE, ("transformer_blocks.{0}.attn.norm_k",)),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.attn\.ln_q", _WHOLE, ("transformer_blocks.{0}.attn.norm_added_q",)),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.attn\.ln_k", _WHOLE, ("transformer_blocks.{0}.attn.norm_added_k",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn\.proj", _WHOLE, ("transformer_blocks.{0}.attn.to_out.0",)),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.attn\.proj", _WHOLE, ("transformer_blocks.{0}.attn.to_add_out",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn2\.qkv", _THIRDS,
     ("transformer_blocks.{0}.attn2.to_q", "transformer_blocks.{0}.attn2.to_k", "transformer_blocks.{0}.attn2.to_v")),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn2\.ln_q", _WHOLE, ("transformer_blocks.{0}.attn2.norm_q",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn2\.ln_k", _WHOLE, ("transformer_blocks.{0}.attn2.norm_k",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.attn2\.proj", _WHOLE, ("transformer_blocks.{0}.attn2.to_out.0",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.adaLN_modulation\.1", _WHOLE, ("transformer_blocks.{0}.norm1.linear",)),
    # The last block's context stream only feeds attention (diffusers' context_pre_only): its modulation is
    # an AdaLayerNormContinuous, whose (scale, shift) rows the original stores as (shift, scale).
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.adaLN_modulation\.1", "{last}",
     ("transformer_blocks.{0}.norm1_context.linear",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.mlp\.fc1", _WHOLE, ("transformer_blocks.{0}.ff.net.0.proj",)),
    (r"joint_blocks\.([0-9]{1,9})\.x_block\.mlp\.fc2", _WHOLE, ("transformer_blocks.{0}.ff.net.2",)),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.mlp\.fc1", _WHOLE, ("transformer_blocks.{0}.ff_context.net.0.proj",)),
    (r"joint_blocks\.([0-9]{1,9})\.context_block\.mlp\.fc2", _WHOLE, ("transformer_blocks.{0}.ff_context.net.2",)),
    (r"final_layer\.linear", _WHOLE, ("proj_out",)),
    (r"final_layer\.adaLN_modulation\.1", _SWAP, ("norm_out.linear",)),
)
_RULES = {FLUX: tuple((re.compile(p), s, t) for p, s, t in _FLUX_RULES),
          SD3: tuple((re.compile(p), s, t) for p, s, t in _SD3_RULES)}
#: Stored parameter -> diffusers parameter (Flux's RMS norms store ``scale``; diffusers' ``RMSNorm`` ``weight``).
_PARAMS = {"weight": "weight", "bias": "bias", "scale": "weight"}
#: SD3's whole-name tensors (no module): the positional embedding table.
_SD3_WHOLE_NAMES = {"pos_embed": "pos_embed.pos_embed"}
# Block numbers in every rule are at most nine ASCII digits: a real DiT has tens of blocks, and int() refuses a
# hostile name's 5,000-digit number (the file would be refused with a bare ValueError instead of read).
_JOINT = re.compile(r"^joint_blocks\.([0-9]{1,9})\.")

Shapes = Mapping[str, tuple[tuple[int, ...], str]]


def bare_name(name: str) -> str:
    """A stored name without the ``model.diffusion_model.`` prefix all-in-one files put the denoiser under."""
    return name[len(_PREFIX):] if name.startswith(_PREFIX) else name


def sniff(names: Iterable[str]) -> str | None:
    """The single-file DiT layout of a checkpoint from its tensor names: :data:`FLUX`, :data:`SD3` or None.

    Examples
    --------
    >>> sniff(["model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "vae.decoder.conv_in.weight"])
    'flux-single-file'
    >>> sniff(["joint_blocks.0.x_block.attn.qkv.weight"])
    'sd3-single-file'
    >>> sniff(["transformer_blocks.0.attn.to_q.weight"]) is None
    True
    """
    for name in names:
        bare = bare_name(name)
        for scheme, mark in _MARKS:
            if mark.match(bare):
                return scheme
    return None


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of one stored tensor (named as the wrapped reader lists it)."""

    source: str
    start: int
    stop: int


@dataclass(frozen=True)
class Layout:
    """A single-file DiT checkpoint as diffusers names it.

    Attributes
    ----------
    scheme : str
        :data:`FLUX` or :data:`SD3`.
    tensors : Mapping
        Diffusers name -> the row segments of stored tensors it is made of, in order (a tensor no rule
        covers maps to itself, whole).
    unmapped : tuple of str
        Stored tensors no rule covers, or whose shape does not split as the rule says (kept under their own
        names).
    """

    scheme: str
    tensors: Mapping[str, tuple[Segment, ...]]
    unmapped: tuple[str, ...] = ()


def _segments(split: str, source: str, shape: tuple[int, ...], inner: int | None, parts: int
              ) -> tuple[tuple[Segment, ...], ...] | None:
    """Per diffusers tensor, its segments of ``source``; None when the shape does not split so."""
    rows = shape[0] if shape else 0
    if split == _WHOLE:
        return ((Segment(source, 0, rows),),)
    if split == _THIRDS and rows % parts == 0 and rows > 0:
        d = rows // parts
        return tuple((Segment(source, k * d, (k + 1) * d),) for k in range(parts))
    if split == _LINEAR1 and inner is not None and rows > 3 * inner:
        cuts = (0, inner, 2 * inner, 3 * inner, rows)
        return tuple((Segment(source, cuts[k], cuts[k + 1]),) for k in range(4))
    if split == _SWAP and rows % 2 == 0 and rows > 0:
        half = rows // 2
        return ((Segment(source, half, rows), Segment(source, 0, half)),)
    return None


def layout(shapes: Shapes) -> Layout | None:
    """The diffusers names of a Flux or SD3 single-file checkpoint's tensors; None for other checkpoints.

    Parameters
    ----------
    shapes : Mapping
        Stored name (bare or under ``model.diffusion_model.``) -> (shape, dtype), as a reader lists them.
    """
    scheme = sniff(shapes)
    if scheme is None:
        return None
    rules = _RULES[scheme]
    last = max((int(m[1]) for n in shapes if (m := _JOINT.match(bare_name(n)))), default=-1)
    out: dict[str, tuple[Segment, ...]] = {}
    unmapped: list[str] = []
    for name, (shape, _) in shapes.items():
        bare = bare_name(name)
        module, _, param = bare.rpartition(".")
        if scheme == SD3 and bare in _SD3_WHOLE_NAMES:
            out[_SD3_WHOLE_NAMES[bare]] = (Segment(name, 0, shape[0] if shape else 0),)
            continue
        hit = next(((m, split, targets) for rule, split, targets in rules if (m := rule.fullmatch(module))), None)
        if hit is None or param not in _PARAMS:
            unmapped.append(name)
            continue
        m, split, targets = hit
        if split == "{last}":
            split = _SWAP if int(m[1]) == last else _WHOLE
        weight = shapes.get(name[: -len(param)] + "weight")
        inner = weight[0][1] if weight is not None and len(weight[0]) == 2 else None
        parts = _segments(split, name, tuple(shape), inner, len(targets))
        if parts is None:
            unmapped.append(name)
            continue
        for target, segs in zip(targets, parts):
            out[f"{target.format(*m.groups())}.{_PARAMS[param]}"] = segs
    for name in unmapped:
        shape = shapes[name][0]
        out.setdefault(name, (Segment(name, 0, shape[0] if shape else 0),))
    return Layout(scheme, out, tuple(unmapped))


#: The rules in kohya-ss's flat naming (the module path with every dot an underscore, ``lora_unet_`` removed).
_KOHYA_RULES = tuple((re.compile(p.replace(r"\.", "_")), s, t) for p, s, t in (*_FLUX_RULES, *_SD3_RULES))
_HF_JOINT = re.compile(r"^transformer_blocks\.([0-9]{1,9})\.")


def kohya_targets(flat: str, rows: int, inner: int, base_names: Iterable[str]
                  ) -> tuple[tuple[str, tuple[tuple[int, int], ...]], ...] | None:
    """The diffusers modules a kohya-ss module of a Flux / SD3 LoRA updates, with the rows of its update
    (``lora_up``'s rows) each takes, in the base's row order; None when ``flat`` is not such a module.

    A fused module (``double_blocks_0_img_attn_qkv``, ``single_blocks_0_linear1``) updates several diffusers
    modules, each the rows of the update its weight has in the fused one (:func:`layout`'s segments); that is
    what diffusers' kohya converter computes by splitting ``lora_up`` (its rows, or the diagonal blocks of a
    "sparse" up).

    Parameters
    ----------
    flat : str
        The module's kohya name without ``lora_unet_`` (``double_blocks_0_img_attn_qkv``).
    rows, inner : int
        The update's rows (``lora_up``'s first dimension) and columns (``lora_down``'s second): Flux's
        ``linear1`` splits by its input width.
    base_names : Iterable of str
        The base's tensor names: SD3's last joint block (whose context modulation is swapped) is its last.

    Examples
    --------
    >>> kohya_targets("double_blocks_3_img_attn_qkv", 48, 16, [])
    (('transformer_blocks.3.attn.to_q', ((0, 16),)), ('transformer_blocks.3.attn.to_k', ((16, 32),)), \
('transformer_blocks.3.attn.to_v', ((32, 48),)))
    """
    hit = kohya_rule(flat)
    if hit is None:
        return None
    m, split, targets = hit
    if split == "{last}":
        last = max((int(j[1]) for n in base_names if (j := _HF_JOINT.match(n))), default=-1)
        split = _SWAP if int(m[1]) == last else _WHOLE
    parts = _segments(split, flat, (rows,), inner, len(targets))
    if parts is None:
        return None
    return tuple((t.format(*m.groups()), tuple((s.start, s.stop) for s in segs)) for t, segs in zip(targets, parts))


def kohya_rule(flat: str) -> tuple[re.Match[str], str, tuple[str, ...]] | None:
    """The rule a kohya-ss Flux / SD3 module name (``lora_unet_`` removed) falls under: (its match, the split,
    the diffusers modules), or None when it names no DiT module."""
    return next(((m, split, targets) for rule, split, targets in _KOHYA_RULES if (m := rule.fullmatch(flat))), None)


def splits_rows(flat: str) -> bool:
    """Whether a kohya-ss Flux / SD3 module (``lora_unet_`` removed) is a fused module whose rows several diffusers
    modules share, or reorders (a qkv, Flux's ``linear1``, a swapped modulation), rather than one module whole.

    >>> splits_rows("double_blocks_0_img_attn_qkv"), splits_rows("double_blocks_0_img_attn_proj")
    (True, False)
    """
    hit = kohya_rule(flat)
    return hit is not None and hit[1] != _WHOLE
