"""HQQ checkpoints (Half-Quadratic Quantization, the ``hqq`` package), decoded under the original names.

HQQ replaces each quantized ``nn.Linear`` of module ``m`` by an ``HQQLinear`` whose encoded state dict, under
the module's name, is what hqq's ``AutoHQQHFModel.save_to_safetensors`` writes, and what transformers 4.x's
``HqqConfig`` integration saved and loads back (``HqqHfQuantizer``; transformers 5.24 does not quantize
with HQQ yet):

* ``m.W_q``: the packed codes. The weight (out, in) is first reshaped to a matrix ``R`` of whole groups:
  (out * in / group_size, group_size) for ``axis`` 1, (group_size, out * in / group_size) for ``axis`` 0
  (or left (out, in) when not grouped), so that flat index ``f`` of the weight is ``R[f // C, f % C]``
  with ``C`` the columns of ``R``. The codes of ``R`` are packed *down its rows*: with ``k`` codes a word,
  ``W_q`` has ``P = ceil(rows / k)`` rows and ``C`` columns, and row ``i`` of ``R`` sits in row ``i % P``
  of ``W_q`` at slot ``i // P``, the first slot in the highest bits. Packings (``m.packing``, an ASCII
  string stored as uint8): ``8bit_u8`` (one code a byte; also 5- and 6-bit codes), ``4bit_u8``,
  ``2bit_u8`` (also the 1.58-bit ternary codes), ``1bit_u8`` and ``3bit_32`` (ten 3-bit codes in the low
  30 bits of an int32, rows padded to a multiple of ten). With ``m.view_as_float`` the packed bytes are
  stored viewed as the compute dtype (``m.unpack_view_dtype`` says what to view them back as).
* ``m.scale`` and ``m.zero``: one per group, shaped to broadcast over ``R`` ((rows, 1) for axis 1,
  (1, C) for axis 0, one value when not channel-wise); or both stacked in ``m.zero_scale`` (the
  deprecated ``offload_meta`` setting).
* ``m.shape`` (the weight's (out, in), int64), ``m.compute_dtype`` (``"torch.float16"``... as uint8),
  ``m.nbits``, ``m.group_size``, ``m.axis`` and flags (``quant_scale``, ``quant_zero``, ``channel_wise``,
  ``optimize``, ``round_zero``, ``offload_meta``, ``encoded_state_dict``, ``stores_quant_config``).
  ``m.bias`` stays a tensor of the model.

A weight is ``W = ((R - zero) * scale).reshape(out, in)`` with the codes, the zero and the scale in the
compute dtype and each operation rounded to it, as ``HQQLinear.dequantize`` (``Quantizer.dequantize``)
computes it; the decoder here runs the same torch operations on the same operands, so the weights are the
library's bit for bit (``tests/test_hqq_quantized.py``), and so does the compiled decoder
(:mod:`.hqq_fast`) that reads them where numba is there. Rows of the weight are decoded
from the rows of ``R`` that hold them, so a chunk reads only its own slice of ``W_q`` (bounded memory).
The compute dtype is the one stored with the layer (the library's loader takes it from its caller,
normally the dtype the model was quantized in). Quantized scales and zeros (``quant_scale`` /
``quant_zero``, which the library itself refuses to serialize) and unknown packings are reported, not
guessed.
Reference: ``hqq/core/quantize.py`` (``Quantizer.dequantize``, ``HQQLinear.state_dict``) and
``hqq/core/bitpack.py`` of https://github.com/mobiusml/hqq (read to learn the layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mother_core.io import hqq_fast
from mother_core.io.compressed_tensors import Pieces, compiled_applies, float32_numpy
from mother_core.io.quant_scheme import Shapes

#: The tensors an ``HQQLinear`` writes beside ``W_q`` (``HQQLinear.state_dict_keys`` less ``bias``).
HQQ_KEYS = ("W_q", "scale", "zero", "zero_scale", "shape", "nbits", "group_size", "axis", "packing",
            "unpack_view_dtype", "view_as_float", "quant_scale", "quant_zero", "compute_dtype", "offload_meta",
            "encoded_state_dict", "stores_quant_config", "channel_wise", "optimize", "round_zero")


@dataclass(frozen=True)
class Packing:
    """One of HQQ's bit packings: bits per code, codes per stored word, and the stored word type."""

    bits: int
    slots: int
    word: torch.dtype

    def shift(self, slot: int) -> int:
        """Right shift of the code in ``slot`` (the first slot holds the highest bits)."""
        return self.bits * (self.slots - 1 - slot)


#: ``Quantizer.pack`` / ``unpack`` of hqq by packing name.
PACKINGS: dict[str, Packing] = {
    "8bit_u8": Packing(8, 1, torch.uint8),
    "4bit_u8": Packing(4, 2, torch.uint8),
    "2bit_u8": Packing(2, 4, torch.uint8),
    "1bit_u8": Packing(1, 8, torch.uint8),
    "3bit_32": Packing(3, 10, torch.int32),
}
_COMPUTE_DTYPES = {"torch.float16": torch.float16, "torch.bfloat16": torch.bfloat16, "torch.float32": torch.float32}
_VIEW_DTYPES = {"torch.uint8": torch.uint8, "torch.int32": torch.int32}


@dataclass(frozen=True)
class HqqWeight:
    """One HQQ-quantized weight.

    Attributes
    ----------
    name : str
        The weight's name (``m.weight``).
    shape : tuple of int
        (out, in).
    packing : Packing
        How the codes are packed.
    grouped : tuple of int
        (rows, columns) of the grouped matrix ``R``.
    packed_rows : int
        Rows of ``W_q`` (``P``).
    compute_dtype : torch.dtype
        The dtype the library dequantizes in.
    parts : dict
        Stored tensor name by hqq's key: ``W_q``, ``scale`` and ``zero`` (or ``zero_scale``), the metadata.
    by_row : bool
        ``scale`` and ``zero`` hold one value a grouped row: a chunk reads only its own rows of them.
    """

    name: str
    shape: tuple[int, int]
    packing: Packing
    grouped: tuple[int, int]
    packed_rows: int
    compute_dtype: torch.dtype
    parts: dict[str, str]
    by_row: bool = False


def hqq_parts(module: str, shapes: Shapes) -> dict[str, str]:
    """The stored tensors of HQQ layer ``module`` by key (``W_q``, ``scale``, ...)."""
    return {key: module + "." + key for key in HQQ_KEYS if module + "." + key in shapes}


def _text(read_small: Callable[[str], torch.Tensor], name: str) -> str:
    """An ASCII string hqq stored as uint8 codes (``encode_safetensor_type``); read, never evaluated."""
    values = read_small(name).reshape(-1)
    if values.dtype != torch.uint8 or values.numel() > 64:
        raise ValueError(f"{name!r} is not a short string")
    return bytes(values.tolist()).decode("ascii")


def _number(read_small: Callable[[str], torch.Tensor], name: str) -> int:
    t = read_small(name).reshape(-1)
    if t.numel() != 1:
        raise ValueError(f"{name!r} holds {t.numel()} values, not one")
    return int(t.item())


def describe(name: str, shapes: Shapes, read_small: Callable[[str], torch.Tensor]) -> HqqWeight | str | None:
    """The HQQ weight whose codes are stored under ``name``, a reason it cannot be decoded, or None.

    Parameters
    ----------
    name : str
        A stored tensor name; an HQQ layer ``m`` starts at ``m.W_q`` beside ``m.scale`` / ``m.zero`` (or
        ``m.zero_scale``).
    shapes : mapping
        Every stored tensor's (shape, dtype name).
    read_small : callable
        Reads a small stored tensor whole (the layer's metadata).
    """
    if not name.endswith(".W_q"):
        return None
    module = name[: -len(".W_q")]
    parts = hqq_parts(module, shapes)
    if "zero_scale" not in parts and ("scale" not in parts or "zero" not in parts):
        return None
    for key in ("shape", "packing", "compute_dtype", "unpack_view_dtype", "quant_scale", "quant_zero"):
        size = 1
        for d in shapes[parts[key]][0] if key in parts else ():
            size *= d
        if size > 64:  # metadata is a few values: never read a large tensor as one
            return f"{module!r} stores {size} values as its {key!r}, not metadata"
    try:
        for flag in ("quant_scale", "quant_zero"):
            if flag in parts and _number(read_small, parts[flag]):
                return f"{module!r} stores quantized scales or zeros (hqq's deprecated {flag}), which we do not decode"
        if "packing" not in parts or "shape" not in parts:
            return f"{module!r} does not store its packing and shape (an older hqq layout we do not decode)"
        packing_name = _text(read_small, parts["packing"])
        packing = PACKINGS.get(packing_name)
        if packing is None:
            return f"{module!r} is packed as {packing_name[:40]!r}, a packing we do not decode"
        shape = tuple(int(v) for v in read_small(parts["shape"]).reshape(-1).tolist())
        cd_name = _text(read_small, parts["compute_dtype"]) if "compute_dtype" in parts else "torch.float16"
        view_name = _text(read_small, parts["unpack_view_dtype"]) if "unpack_view_dtype" in parts else None
    except (ValueError, OverflowError, UnicodeDecodeError, RuntimeError) as e:
        return f"{module!r} has metadata we cannot read ({str(e)[:120]})"
    compute_dtype = _COMPUTE_DTYPES.get(cd_name)  # the library's default when not stored: float16
    if compute_dtype is None:
        return f"{module!r} is dequantized in {cd_name[:40]!r}, a dtype we do not decode in"
    if view_name is not None and _VIEW_DTYPES.get(view_name) != packing.word:
        return f"{module!r} views its codes as {view_name[:40]!r}, which does not fit its packing {packing_name!r}"
    if len(shape) != 2 or min(shape) <= 0:
        return f"{module!r} stores the shape {shape[:8]}, not a matrix"
    stored_shape, stored_dtype = shapes[name]
    if len(stored_shape) != 2:
        return f"{module!r} stores its codes with {len(stored_shape)} dimensions"
    word_bytes = 4 if packing.word == torch.int32 else 1
    stored_bytes = _ITEM_BYTES.get(stored_dtype)
    if stored_bytes is None or (stored_shape[1] * stored_bytes) % word_bytes:
        return f"{module!r} stores its codes as {stored_dtype}, which does not hold {packing_name!r} words"
    rows_p, cols = stored_shape[0], stored_shape[1] * stored_bytes // word_bytes  # view_as_float undone
    n = shape[0] * shape[1]
    if cols == 0 or n % cols:
        return f"{module!r} packs {cols} columns of codes, which do not divide its {shape} weight"
    grouped = (n // cols, cols)
    if rows_p != -(-grouped[0] // packing.slots) or (packing.slots * rows_p != grouped[0] and packing.bits != 3):
        return f"{module!r} has {rows_p} packed rows for {grouped[0]} rows of {packing_name!r} codes"
    for role in ("scale", "zero"):
        if role in parts and not _fits(shapes[parts[role]][0], grouped):
            return f"{module!r} has a {role} of shape {shapes[parts[role]][0]} that does not fit groups {grouped}"
    if "zero_scale" in parts and "scale" not in parts:
        zs_shape, zs_dtype = shapes[parts["zero_scale"]]
        if zs_dtype not in ("float16", "bfloat16", "float32") or not zs_shape or zs_shape[0] != 2 \
                or not _fits(zs_shape[1:], grouped):
            return f"{module!r} stores zero_scale as {zs_dtype} {zs_shape} (quantized or not fitting its groups)"
    by_row = all(role in parts and tuple(shapes[parts[role]][0]) == (grouped[0], 1) for role in ("scale", "zero"))
    return HqqWeight(module + ".weight", (shape[0], shape[1]), packing, grouped, rows_p, compute_dtype, parts, by_row)


#: How :func:`hqq_fast.decode` rounds each operation, by compute dtype.
_ROUNDING = {torch.float32: hqq_fast.ROUND_NONE, torch.bfloat16: hqq_fast.ROUND_BF16, torch.float16: hqq_fast.ROUND_F16}
_ITEM_BYTES = {"uint8": 1, "int8": 1, "int32": 4, "float16": 2, "bfloat16": 2, "float32": 4}


def _fits(shape: tuple[int, ...], grouped: tuple[int, int]) -> bool:
    """A scale or zero that broadcasts over the grouped matrix: one value, one per row, or one per column."""
    numel = 1
    for d in shape:
        numel *= d
    return numel == 1 or tuple(shape) in ((grouped[0], 1), (1, grouped[1]))


def packed_ranges(w: HqqWeight, rows: tuple[int, int]) -> list[tuple[int, int, int]]:
    """``(slot, first, end)``: the rows of ``W_q`` (and the slot in them) that hold weight rows ``rows``,
    for the rows ``[i0, i1)`` of the grouped matrix that cover them (see :func:`grouped_rows`)."""
    i0, i1 = grouped_rows(w, rows)
    p = w.packed_rows
    out = []
    for slot in range(w.packing.slots):
        lo, hi = max(i0, slot * p), min(i1, (slot + 1) * p)
        if lo < hi:
            out.append((slot, lo - slot * p, hi - slot * p))
    return out


def stored_ranges(w: HqqWeight, rows: tuple[int, int]) -> list[tuple[str, tuple[int, int] | None]]:
    """The stored tensors and row ranges :func:`decode_into` reads for weight rows ``rows`` (to hint them)."""
    out: list[tuple[str, tuple[int, int] | None]] = [(w.parts["W_q"], (first, end))
                                                       for _, first, end in packed_ranges(w, rows)]
    if w.by_row:
        out += [(w.parts["scale"], grouped_rows(w, rows)), (w.parts["zero"], grouped_rows(w, rows))]
    return out


def grouped_rows(w: HqqWeight, rows: tuple[int, int]) -> tuple[int, int]:
    """The rows ``[i0, i1)`` of the grouped matrix ``R`` that hold weight rows ``[r0, r1)``."""
    cols_w, cols_r = w.shape[1], w.grouped[1]
    return rows[0] * cols_w // cols_r, -(-rows[1] * cols_w // cols_r)


def _grouped_slice(t: torch.Tensor, grouped: tuple[int, int], i0: int, i1: int) -> torch.Tensor:
    """A scale or zero for rows ``[i0, i1)`` of ``R``: its own rows when it has one per row."""
    if t.numel() == 1:
        return t.reshape(1, 1) if t.dim() != 2 else t
    return t[i0:i1] if tuple(t.shape) == (grouped[0], 1) else t


def decode_into(w: HqqWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                rows: tuple[int, int], out: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``w`` into ``out`` (float32 (r1 - r0, in), contiguous), as the library computes
    them (see the module docstring): through the compiled decoder (:mod:`.hqq_fast`) where numba is there,
    in torch otherwise.

    ``read(name, rows)`` reads stored rows (None: the whole tensor); with ``pieces`` (a reader's
    ``decode_pieces``) the compiled decoder takes the packed rows piece by piece as they are read, on
    several threads.
    """
    r0, r1 = rows
    i0, i1 = grouped_rows(w, rows)
    cols = w.grouped[1]
    cd = w.compute_dtype
    if w.by_row:  # the chunk's own rows of them, in the frame of rows [i0, i1)
        scale, zero = read(w.parts["scale"], (i0, i1)), read(w.parts["zero"], (i0, i1))
    elif "scale" in w.parts:
        scale, zero = read(w.parts["scale"], None), read(w.parts["zero"], None)
    else:
        zero_scale = read(w.parts["zero_scale"], None)
        zero, scale = zero_scale[0], zero_scale[1]
    # the library moves its scale and zero to the compute dtype (Quantizer.to_inplace), unpacks the codes
    # into it, then takes (codes - zero) * scale: each operation rounded to the compute dtype
    if not w.by_row:
        zero = _grouped_slice(zero.to(cd), w.grouped, i0, i1)
        scale = _grouped_slice(scale.to(cd), w.grouped, i0, i1)
    zero, scale = zero.to(cd), scale.to(cd)
    offset = r0 * w.shape[1] - i0 * cols  # flat position of out[0] from grouped row i0's first code
    ranges = packed_ranges(w, rows)
    if compiled_applies(out):
        _decode_compiled(w, read, ranges, i0, zero, scale, offset, out.view(-1).numpy(), pieces)
        return out.view(r1 - r0, w.shape[1])
    codes = torch.empty(i1 - i0, cols, dtype=torch.int32)
    mask = (1 << w.packing.bits) - 1
    start = 0
    for slot, first, end in ranges:
        piece = read(w.parts["W_q"], (first, end))
        if piece.dtype != w.packing.word:  # view_as_float: the packed words stored as the compute dtype
            piece = piece.contiguous().view(w.packing.word)
        codes[start:start + end - first] = (piece.to(torch.int32) >> w.packing.shift(slot)) & mask
        start += end - first
    values = (codes.to(cd) - zero) * scale
    flat = values.reshape(-1)[offset:offset + (r1 - r0) * w.shape[1]]
    return out.view(r1 - r0, w.shape[1]).copy_(flat.view(r1 - r0, w.shape[1]))


def _decode_compiled(w: HqqWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                     ranges: list[tuple[int, int, int]], i0: int, zero: torch.Tensor, scale: torch.Tensor,
                     offset: int, out: np.ndarray, pieces: Pieces | None) -> None:
    """The chunk's packed ``ranges`` decoded by :func:`hqq_fast.decode` into ``out`` (flat float32, from
    ``offset`` codes past grouped row ``i0``'s first): piece by piece as read with ``pieces``, else whole."""
    cols = w.grouped[1]
    per_column = zero.shape[1] > 1 or scale.shape[1] > 1
    frame = (1, cols) if per_column else (sum(end - first for _, first, end in ranges), 1)  # rows i0...
    zeros, scales = (float32_numpy(t.expand(*frame)).reshape(-1) for t in (zero, scale))
    mode = _ROUNDING[w.compute_dtype]
    word = np.uint8 if w.packing.word == torch.uint8 else np.int32
    unit = cols * (4 if word == np.int32 else 1)  # bytes a packed row

    def rows_into(local: int, words: np.ndarray, shift: int) -> None:
        """Packed rows ``words`` holding grouped rows ``i0 + local``...: into their part of ``out``."""
        k = words.shape[0]
        z, s = (zeros, scales) if per_column else (zeros[local:local + k], scales[local:local + k])
        hqq_fast.decode(words, shift, w.packing.bits, z, s, per_column, mode, offset - local * cols, out)

    for slot, first, end in ranges:
        local = slot * w.packed_rows + first - i0  # the range's first grouped row, from i0
        shift = w.packing.shift(slot)
        if pieces is not None:  # several threads, each on its own rows of out
            pieces(w.parts["W_q"], (first, end), unit,
                   lambda unit_first, piece, local=local, shift=shift:  # type: ignore[misc]
                   rows_into(local + unit_first, piece.view(word).reshape(-1, cols), shift))
        else:
            stored = read(w.parts["W_q"], (first, end)).contiguous()
            rows_into(local, stored.view(w.packing.word).numpy() if stored.dtype != w.packing.word
                      else stored.numpy(), shift)
