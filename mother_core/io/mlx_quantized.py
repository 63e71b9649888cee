"""MLX quantized checkpoints (what ``mlx_lm.convert -q`` writes), decoded under the original names.

MLX stores each quantized ``Linear`` or ``Embedding`` of module ``m`` as ``m.weight`` uint32 (out, in * bits
/ 32): the unsigned codes of each row packed lowest bits first, densely across words; ``m.scales`` and
``m.biases`` (out, in / group_size) in the model's float dtype. ``config.json`` says ``quantization:
{"group_size", "bits", "mode"}``, with per-module overrides keyed by the module's path (mixed recipes). A
weight is ``W = q * scale + bias`` with each operation in the scale's dtype, as ``mx.dequantize`` computes
it (so the weights here are the library's, bit for bit). Widths and groups are taken from the stored shapes
where the config does not fit them. Modes other than ``affine`` (MLX's ``mxfp4``, ``nvfp4``) are reported,
not guessed. Reference: MLX ``mlx.core.quantize`` / ``dequantize`` (https://ml-explore.github.io/mlx/).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from mother_core.io import compressed_fast
from mother_core.io.compressed_tensors import (
    PackedLayout,
    Pieces,
    compiled_applies,
    decode_compiled,
    float32_numpy,
    unpack_codes,
)
from mother_core.io.names import normalise_name
from mother_core.io.quant_scheme import Shapes

#: Code widths MLX's affine mode packs, and the group sizes it allows.
MLX_BITS = (4, 8, 2, 3, 5, 6)
MLX_GROUP_SIZES = (64, 32, 128)


@dataclass(frozen=True)
class MlxWeight:
    """One MLX-quantized weight: (out, in), code width, group size, and its stored tensors."""

    name: str
    shape: tuple[int, int]
    bits: int
    group_size: int
    parts: dict[str, str]  # q, scale, bias


def normalised_config(quant_config: Mapping) -> dict:
    """The quantization config with its per-module entries keyed as the readers name tensors (the
    config says ``model.layers.0.mlp.up_proj``; the reader lists ``layers.0.mlp.up_proj.weight``)."""
    out: dict = {}
    for key, value in quant_config.items():
        if isinstance(value, (dict, bool)) and isinstance(key, str):
            out[normalise_name(key + ".weight")[: -len(".weight")]] = value
        else:
            out[key] = value
    return out


def module_settings(quant_config: Mapping, module: str) -> tuple[int | None, int | None, str]:
    """``(bits, group_size, mode)`` the config gives ``module`` (its own entry, else the defaults)."""
    own = quant_config.get(module)
    source = own if isinstance(own, dict) else quant_config
    if own is False:  # a module the recipe left unquantized
        return None, None, "affine"
    bits, group, mode = source.get("bits"), source.get("group_size"), source.get("mode", "affine")
    return (bits if isinstance(bits, int) and not isinstance(bits, bool) else None,
            group if isinstance(group, int) and not isinstance(group, bool) else None,
            mode if isinstance(mode, str) else "affine")


def describe(name: str, shapes: Shapes, quant_config: Mapping) -> MlxWeight | str | None:
    """The MLX-quantized weight stored under ``name``, a reason it cannot be decoded, or None.

    Parameters
    ----------
    name : str
        A stored tensor name; an MLX weight is a uint32 ``m.weight`` with ``m.scales`` and ``m.biases``.
    shapes : mapping
        Every stored tensor's (shape, dtype name).
    quant_config : mapping
        ``quantization_config`` of the model's ``config.json`` through :func:`normalised_config`; may be
        empty.
    """
    shape, dtype = shapes[name]
    if not name.endswith(".weight") or dtype != "uint32":
        return None
    module = name[: -len(".weight")]
    parts = {"q": name, "scale": module + ".scales", "bias": module + ".biases"}
    if parts["scale"] not in shapes or parts["bias"] not in shapes:
        return None
    scale_shape, bias_shape = shapes[parts["scale"]][0], shapes[parts["bias"]][0]
    if len(shape) != 2 or len(scale_shape) != 2 or scale_shape != bias_shape or scale_shape[0] != shape[0]:
        return f"{module!r} has codes {shape} beside scales {scale_shape} and biases {bias_shape} that do not fit"
    bits, group, mode = module_settings(quant_config, module)
    if mode != "affine":
        return f"{module!r} is quantized in MLX's {mode[:40]!r} mode, which we do not decode"
    words, groups = shape[1], scale_shape[1]
    fits = [(b, words * 32 // b) for b in MLX_BITS if (words * 32) % b == 0 and groups
            and (words * 32 // b) % groups == 0 and (words * 32 // b) // groups in MLX_GROUP_SIZES]
    chosen = [f for f in fits if f[0] == bits and f[1] // groups == (group or f[1] // groups)] or fits
    if not chosen:
        return f"{module!r} packs {words} words a row with {groups} scales, which no MLX width and group size does"
    b, n_in = chosen[0]
    return MlxWeight(module + ".weight", (shape[0], n_in), b, n_in // groups, parts)


def decode_into(w: MlxWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                rows: tuple[int, int], out: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``w`` into ``out`` (float32 (r1 - r0, in), contiguous): ``q * scale + bias``.

    ``read(name, rows)`` reads stored rows; with ``pieces`` (a reader's ``decode_pieces``) the compiled
    decoder takes 2-, 4- and 8-bit codes piece by piece as they are read, on several threads.
    """
    r0, r1 = rows
    cols = w.shape[1]
    scale, bias = read(w.parts["scale"], rows), read(w.parts["bias"], rows)
    if w.bits in (2, 4, 8) and scale.dtype in (torch.float32, torch.bfloat16) and bias.dtype == scale.dtype \
            and compiled_applies(out):
        levels = compressed_fast.integer_levels(w.bits, offset=False)  # MLX's codes are the values
        scales, biases = (float32_numpy(t) for t in (scale, bias))  # not in torch's pool: see float32_numpy
        return decode_compiled(w.parts["q"], cols, read, rows, out, pieces, w.bits, levels, scales, biases,
                               scale.dtype == torch.bfloat16, cols * w.bits // 8, affine=True)
    # torch: the same arithmetic in the scale's dtype (uint32 codes are read as their int32 bits)
    packed = read(w.parts["q"], rows)
    codes = unpack_codes(packed.view(torch.int32) if packed.dtype != torch.int32 else packed, cols,
                         PackedLayout(w.bits, dense=True), offset_binary=False)
    group_of = torch.arange(cols) // w.group_size
    values = codes.to(scale.dtype) * scale[:, group_of] + bias[:, group_of]
    return out.view(r1 - r0, cols).copy_(values)
