"""compressed-tensors checkpoints (what llm-compressor and vLLM write), decoded under the original names.

compressed-tensors stores each quantized ``nn.Linear`` of module ``m`` in one of these layouts (its
``quantization_config.format`` in ``config.json``; the layout is read from the tensors themselves, so a
``mixed-precision`` model or a missing config reads the same):

* **pack-quantized** (W4A16, W8A16, GPTQ / AWQ through llm-compressor): ``m.weight_packed`` int32 (out,
  words), the integer codes of each row packed lowest bits first with an offset of ``2 ** (bits - 1)``;
  ``m.weight_shape`` (the (out, in) shape), ``m.weight_scale`` (per tensor, per row or per group of
  columns), optionally ``m.weight_zero_point`` (asymmetric schemes; packed the same way down the rows) and
  ``m.weight_g_idx`` (activation ordering: the group of each column). From compressed-tensors 0.20 the
  codes are dense across words (32 codes in exactly ``bits`` words); earlier versions put ``32 // bits``
  codes in each word: the same bytes for 2, 4 and 8 bits, and told apart by the number of words for others.
* **int-quantized / naive-quantized** (W8A8): ``m.weight`` int8 codes and ``m.weight_scale`` (and
  ``m.weight_zero_point``, int8, when asymmetric).
* **nvfp4-pack-quantized**: ``m.weight_packed`` uint8, two FP4 (E2M1) codes a byte, low nibble first;
  ``m.weight_scale`` float8 per group of 16 columns; ``m.weight_global_scale`` (1,) float32.
* **float-quantized** (FP8) is an fp8 ``m.weight`` with ``m.weight_scale``: read by the fp8 decoder of
  :mod:`mother_core.io.quantized`.

Values: ``W = (q - zero_point) * scale`` for the integer layouts and ``W = fp4(q) * scale / global_scale``
for NVFP4, computed the way compressed-tensors' ``dequantize`` does and rounded to the scale's float
dtype as it does (so the weights are those the library decodes, bit for bit), then widened to float32.
Reference: compressed-tensors ``compressors/pack_quantized``, ``compressors/nvfp4`` and
``quantization/lifecycle/forward.py`` (the library's docs: https://github.com/vllm-project/compressed-tensors).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mother_core.io import compressed_fast
from mother_core.io.quant_scheme import FLOAT8_DTYPES, Shapes

#: The eight magnitudes of an FP4 E2M1 code (its low three bits); the fourth bit is the sign.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class PackedLayout:
    """How one weight's integer codes are stored: ``bits`` per code, and whether codes run dense across
    32-bit words (compressed-tensors >= 0.20) or ``32 // bits`` to a word (earlier)."""

    bits: int
    dense: bool


def packed_layout(in_features: int, words: int, preferred_bits: int | None = None) -> PackedLayout | None:
    """The code width that packs ``in_features`` codes into ``words`` int32 words, or None.

    Dense packing takes ``ceil(in * bits / 32)`` words, the earlier layout ``ceil(in / (32 // bits))``.
    Different widths give different counts for ``in >= 32``; the two packings of one odd width can tie on
    short rows (70 3-bit codes take 7 words either way), and then the current library's dense packing is
    read. Where two widths fit (tiny rows), ``preferred_bits`` (the config's ``num_bits``) decides.
    """
    fits = [PackedLayout(b, True) for b in range(1, 9) if -(-in_features * b // 32) == words]
    fits += [PackedLayout(b, False) for b in (3, 5, 6, 7) if -(-in_features // (32 // b)) == words]
    if preferred_bits is not None:
        preferred = [f for f in fits if f.bits == preferred_bits]
        fits = preferred or fits
    return fits[0] if fits else None


def unpack_codes(packed: torch.Tensor, count: int, layout: PackedLayout, offset_binary: bool = True) -> torch.Tensor:
    """Signed integer codes (int32) from int32 words packed lowest bits first along the last dimension.

    Parameters
    ----------
    packed : torch.Tensor
        (rows, words) int32, as ``pack_to_int32`` of compressed-tensors writes them.
    count : int
        Codes per row (the weight's input features).
    layout : PackedLayout
        Bits per code and the packing (dense across words or ``32 // bits`` a word).
    offset_binary : bool
        The codes are stored with an offset of ``2 ** (bits - 1)`` (compressed-tensors), taken off here;
        False: the stored unsigned codes (MLX).

    Returns
    -------
    torch.Tensor
        (rows, count) int32, the stored codes, less the offset where there is one.
    """
    bits = layout.bits
    words = packed.to(torch.int64) & 0xFFFFFFFF  # the words as unsigned
    index = torch.arange(count, dtype=torch.int64)
    if layout.dense:
        start = index * bits
        word, offset = start // 32, start % 32
    else:
        per_word = 32 // bits
        word, offset = index // per_word, (index % per_word) * bits
    low = words[:, word] >> offset
    if layout.dense and 32 % bits:  # a code may straddle two words: its high bits start the next one
        spill = torch.cat([words, torch.zeros_like(words[:, :1])], dim=1)[:, word + 1] << (32 - offset)
        low = low | torch.where(offset + bits > 32, spill, torch.zeros_like(spill))
    codes = (low & ((1 << bits) - 1)).to(torch.int32)
    return codes - (1 << (bits - 1)) if offset_binary else codes


@dataclass(frozen=True)
class CompressedWeight:
    """One compressed-tensors weight: its (out, in) shape, layout and the stored tensors it is made of."""

    name: str
    shape: tuple[int, int]
    kind: str  # "ct-int" (packed or int8 codes) | "ct-nvfp4"
    parts: dict[str, str]  # role -> stored tensor name: q, scale, zero, g_idx, global
    layout: PackedLayout | None  # None: int8 codes stored as they are (int-quantized), or NVFP4
    layout_words: int = 0  # int32 words a row of packed codes takes
    scale_by_row: bool = False  # one scale row per weight row: a chunk of rows reads only its own scales


def describe(name: str, shapes: Shapes, read_small: Callable[[str], torch.Tensor],
             preferred_bits: int | None, strategy: str | None = None) -> CompressedWeight | str | None:
    """The compressed-tensors weight stored under ``name``, a reason it cannot be decoded, or None.

    Parameters
    ----------
    name : str
        A stored tensor name (``m.weight_packed`` or an int8 ``m.weight`` are the ones that start a weight).
    shapes : mapping
        Every stored tensor's (shape, dtype name).
    read_small : callable
        Reads a small stored tensor whole (``m.weight_shape``).
    preferred_bits : int, optional
        ``num_bits`` of the config's only weight scheme, if it has one.
    strategy : str, optional
        ``strategy`` of the config's only weight scheme (``"group"``, ``"channel"``, ``"block"``...), if it
        has one: a scale with fewer rows than the weight is read as block scales only where it may be blocks.
    """
    shape, dtype = shapes[name]
    if name.endswith(".weight_packed"):
        base = name[: -len("_packed")]  # "m.weight"
    elif name.endswith(".weight") and dtype == "int8" and name + "_scale" in shapes:
        base = name
    else:
        return None
    parts = {"q": name, "scale": base + "_scale"}
    for suffix, role in (("_zero_point", "zero"), ("_g_idx", "g_idx"), ("_global_scale", "global")):
        if base + suffix in shapes:
            parts[role] = base + suffix
    if parts["scale"] not in shapes:
        return f"{base!r} has packed codes but no {parts['scale']!r}"
    if len(shape) != 2:
        return f"{base!r} is stored with {len(shape)} dimensions (only matrices are decoded)"
    scale_shape, scale_dtype = shapes[parts["scale"]]
    by_row = len(scale_shape) in (1, 2) and scale_shape[0] == shape[0] > 1
    if name == base:  # int8 codes stored as the weight
        why = _scale_mismatch(base, (shape[0], shape[1]), tuple(scale_shape), strategy)
        return why or CompressedWeight(base, (shape[0], shape[1]), "ct-int", parts, None, scale_by_row=by_row)
    if dtype == "uint8":
        if "global" not in parts and scale_dtype not in FLOAT8_DTYPES:
            return f"{base!r} is packed in bytes without the global scale of NVFP4"
        out, cols = shape[0], 2 * shape[1]
        # NVFP4 has one layout: a scale per 16 columns of every row, one global scale.
        if tuple(scale_shape) != (out, -(-cols // 16)):
            return (f"{base!r} has a weight_scale of shape {tuple(scale_shape)[:4]} for a ({out}, {cols}) NVFP4 "
                    f"weight, not one per 16 columns of each row ({out}, {-(-cols // 16)})")
        if "global" in parts and _numel(shapes[parts["global"]][0]) != 1:
            return f"{base!r} has {_numel(shapes[parts['global']][0])} global scales, not one"
        return CompressedWeight(base, (out, cols), "ct-nvfp4", parts, None, scale_by_row=by_row)
    if dtype != "int32":
        return f"{base!r} is packed as {dtype}, a layout we do not decode"
    out_in = _stored_shape(base + "_shape", shapes, read_small)
    if out_in is None or out_in[0] != shape[0]:
        return f"{base!r} does not store a (rows, columns) shape that matches its {shape[0]} packed rows"
    layout = packed_layout(out_in[1], shape[1], preferred_bits)
    if layout is None:
        return f"{base!r} packs {out_in[1]} columns into {shape[1]} words, which no code width from 1 to 8 bits does"
    why = _scale_mismatch(base, out_in, tuple(scale_shape), strategy)
    return why or CompressedWeight(base, out_in, "ct-int", parts, layout, shape[1], by_row)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _scale_mismatch(base: str, weight: tuple[int, int], scale: tuple[int, ...], strategy: str | None) -> str:
    """Why an integer weight's ``weight_scale`` shape fits none of the library's strategies, or ``""``.

    One value (tensor), one per row ((out,) or (out, 1): channel), one per group of columns of each row
    ((out, groups): group), or one per block ((ceil(out / bh), ceil(in / bw)): block). A scale with fewer
    rows than the weight is read as block scales, which broadcast each scale row over many weight rows: a
    scale cut short by a damaged download would be read so without a word, so it is taken as blocks only
    where the config's scheme is ``block`` or unknown, and its blocks must cover the weight.
    """
    out, cols = weight
    if _numel(scale) == 1 or scale in ((out,), (out, 1)):
        return ""
    if len(scale) == 2 and scale[0] == out and 1 <= scale[1] <= cols:
        return ""
    if len(scale) == 2 and 1 <= scale[0] < out and 1 <= scale[1] <= cols and strategy in (None, "block"):
        return ""
    return (f"{base!r} has a weight_scale of shape {scale[:4]} for a {weight} weight"
            + (f" quantized by {strategy[:20]!r}" if strategy else "") + ", which no scale layout of "
            "compressed-tensors gives (a damaged or cut download)")


def _stored_shape(name: str, shapes: Shapes, read_small: Callable[[str], torch.Tensor]) -> tuple[int, int] | None:
    if name not in shapes or shapes[name][0] != (2,):
        return None
    try:
        values = [int(v) for v in read_small(name).reshape(-1).tolist()]
    except (ValueError, OverflowError):  # a float shape holding NaN or infinity
        return None
    return (values[0], values[1]) if all(v > 0 for v in values) else None


#: ``decode_pieces(name, rows, unit, fn)`` of a reader: the stored bytes of rows in pieces of whole rows,
#: each passed to ``fn(first row, bytes)`` as it arrives, by several threads (SafetensorsReader's).
Pieces = Callable[[str, tuple[int, int], int, Callable[[int, np.ndarray], None]], None]


def decode_into(w: CompressedWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                rows: tuple[int, int], out: torch.Tensor, pieces: Pieces | None = None) -> torch.Tensor:
    """Rows ``[r0, r1)`` of weight ``w`` as float32 into ``out`` ((r1 - r0, in), contiguous; see the module
    docstring for the formula), in one compiled pass where the codes are 2, 4 or 8 bits with even groups
    (:func:`decode_compiled`), else in torch.

    ``read(name, rows)`` reads stored rows (None: the whole tensor). Codes are stored row by row, so a chunk
    of rows reads only its own codes, and its own scales where there is a scale row per weight row.
    """
    r0, r1 = rows
    n_out, cols = w.shape
    scale = read(w.parts["scale"], rows if w.scale_by_row else None)
    # the frame the scales are indexed in: the chunk's own rows, or the whole weight's
    frame = (r1 - r0, 0, r1 - r0) if w.scale_by_row else (n_out, r0, r1)
    if w.kind == "ct-nvfp4":
        local = _nvfp4_scales(w, read, scale)
        groups = _row_groups(local, *frame, cols) if local.dim() == 2 and local.shape[1] == cols // 16 else None
        if compiled_applies(out) and cols % 16 == 0 and groups is not None:
            return decode_compiled(w.parts["q"], cols, read, rows, out, pieces, 4, _E2M1_LEVELS,
                                   np.require(groups, np.float32, ["C", "W"]), None, True, cols // 2)
        return out.copy_(_nvfp4(w, read, rows, local, frame))
    zero = None
    if "zero" in w.parts:
        zero = read(w.parts["zero"], None)
        if w.layout is not None and zero.dtype == torch.int32 and zero.dim() == 2:
            # asymmetric zero points are packed down the rows (packed_dim=0): unpack along the columns
            zero = unpack_codes(zero.T.contiguous(), n_out, w.layout).T  # (out, groups)
        if w.scale_by_row and zero.dim() >= 1 and zero.shape[0] == n_out:
            zero = zero[r0:r1]  # in the scales' frame
    fast = _fast_arguments(w, scale, zero, frame, out)
    if fast is not None:
        bits, scales, zeros = fast
        unit = -(-cols * bits // 8) if w.layout is None else w.layout_words * 4
        return decode_compiled(w.parts["q"], cols, read, rows, out, pieces, bits,
                               compressed_fast.integer_levels(bits, signed=w.layout is None), scales, zeros,
                               scale.dtype == torch.bfloat16, unit)
    stored = read(w.parts["q"], rows)
    codes = stored.to(torch.int32) if w.layout is None else unpack_codes(stored, cols, w.layout)
    g_idx = read(w.parts["g_idx"], None).to(torch.int64) if "g_idx" in w.parts else None
    x = codes.to(torch.float32)
    if zero is not None:
        x = x - per_column(zero.to(torch.float32), frame[0], cols, g_idx, frame[1], frame[2])
    values = x * per_column(scale.to(torch.float32), frame[0], cols, g_idx, frame[1], frame[2])
    if scale.dtype in _HALF_DTYPES:  # the library computes in the scale's dtype
        values = values.to(scale.dtype).to(torch.float32)
    return out.copy_(values)


#: The value of each NVFP4 code: E2M1 magnitude by the low three bits, the fourth the sign.
_E2M1_LEVELS = np.array([(-1.0 if k & 8 else 1.0) * E2M1_VALUES[k & 7] for k in range(16)], dtype=np.float32)


def float32_numpy(t: torch.Tensor) -> np.ndarray:
    """A small tensor's values as float32 numpy (an exact widening for bfloat16, float16 and float32),
    without torch's thread pool: a chunk's scales and zeros, tens of thousands of values, are enough for
    torch to split the widening over its threads, whose wake-up and spinning cost more than the work on a
    busy machine (an MLX read took 7.6 CPU s instead of 1.2 at load 9, ``benchmarks/RESULTS.md``)."""
    if t.dtype == torch.bfloat16:  # bfloat16 is float32's top half
        return (t.contiguous().view(torch.int16).numpy().view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return t.contiguous().numpy().astype(np.float32)


def compiled_applies(out: torch.Tensor) -> bool:
    """Whether :func:`decode_compiled` can write ``out`` (numba there, a little-endian machine, a
    contiguous buffer)."""
    return sys.byteorder == "little" and out.is_contiguous() and compressed_fast.available()


def decode_compiled(codes_name: str, cols: int, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                    rows: tuple[int, int], out: torch.Tensor, pieces: Pieces | None, bits: int, levels: np.ndarray,
                    scales: np.ndarray, zeros: np.ndarray | None, round_bf16: bool, unit: int,
                    affine: bool = False) -> torch.Tensor:
    """Rows ``[r0, r1)`` of the codes stored as ``codes_name`` decoded by
    :func:`compressed_fast.decode_codes` into ``out``: piece by piece as they are read with ``pieces``
    (several threads), else from the rows read whole. ``unit``: stored bytes a row; ``scales`` / ``zeros``:
    float32 (r1 - r0, groups); the rest as :func:`compressed_fast.decode_codes` takes them."""
    r0, r1 = rows
    target = out.view(r1 - r0, cols).numpy()

    def rows_into(first: int, codes: np.ndarray) -> None:
        k = codes.shape[0]
        compressed_fast.decode_codes(codes, bits, levels, scales[first:first + k],
                                     None if zeros is None else zeros[first:first + k], round_bf16,
                                     target[first:first + k], affine=affine)

    if pieces is not None:
        pieces(codes_name, rows, unit, lambda first, piece: rows_into(first, piece.view(np.uint8).reshape(-1, unit)))
    else:
        whole = read(codes_name, rows).contiguous().numpy().view(np.uint8)  # little-endian words
        rows_into(0, whole.reshape(r1 - r0, -1))
    return out


def _row_groups(t: torch.Tensor, n_out: int, r0: int, r1: int, cols: int) -> np.ndarray | None:
    """A per-tensor, per-row or per-group (even groups) scale or zero of an (n_out, cols) frame as float32
    (r1 - r0, groups) (a read-only view where it is broadcast); None for layouts the compiled decoder does
    not take (blocks, uneven groups)."""
    if t.numel() == 1:
        return np.broadcast_to(float32_numpy(t).reshape(1, 1), (r1 - r0, 1))
    if t.dim() == 1 and t.shape[0] == n_out:
        return float32_numpy(t[r0:r1]).reshape(r1 - r0, 1)
    if t.dim() == 2 and t.shape[0] == n_out and cols % t.shape[1] == 0:
        return float32_numpy(t[r0:r1])
    return None


def _fast_arguments(w: CompressedWeight, scale: torch.Tensor, zero: torch.Tensor | None,
                    frame: tuple[int, int, int], out: torch.Tensor) -> tuple[int, np.ndarray, np.ndarray | None] | None:
    """Bits, scales and zeros (float32 (r1 - r0, groups)) for the compiled decoder, or None where it does
    not apply (other widths, reordered columns, blocks, groups that split a byte, a half-float16 scale)."""
    bits = 8 if w.layout is None else w.layout.bits
    if bits not in (2, 4, 8) or "g_idx" in w.parts or scale.dtype not in (torch.float32, torch.bfloat16) \
            or not compiled_applies(out):
        return None
    cols = w.shape[1]
    scales = _row_groups(scale, *frame, cols)
    zeros = _row_groups(zero, *frame, cols) if zero is not None else None
    if scales is None or (zero is not None and zeros is None):
        return None
    groups = scales.shape[1] if zeros is None else max(scales.shape[1], zeros.shape[1])
    if (zeros is not None and {scales.shape[1], zeros.shape[1]} - {1, groups}) or (cols // groups) % (8 // bits):
        return None  # groups that do not line up, or that split a byte of codes
    # one per row beside one per group: the narrower widened; writable copies where they are broadcast
    # views (numba compiles a read-only array as another type: a second compilation inside the read)
    rows = scales.shape[0]
    return (bits, np.require(np.broadcast_to(scales, (rows, groups)), np.float32, ["C", "W"]),
            None if zeros is None else np.require(np.broadcast_to(zeros, (rows, groups)), np.float32, ["C", "W"]))


def _nvfp4_scales(w: CompressedWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                  scale: torch.Tensor) -> torch.Tensor:
    """NVFP4's float32 scale per group of 16: the library widens the float8 scales to bfloat16 and divides
    them by the float32 global scale."""
    local = scale.to(torch.bfloat16).to(torch.float32)
    if "global" in w.parts:
        local = local / read(w.parts["global"], None).to(torch.float32).reshape(-1)[0]
    return local


def _nvfp4(w: CompressedWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor], rows: tuple[int, int],
           local: torch.Tensor, frame: tuple[int, int, int]) -> torch.Tensor:
    r0, r1 = rows
    packed = read(w.parts["q"], rows).to(torch.int64)
    codes = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(r1 - r0, -1)  # low nibble first
    values = torch.from_numpy(_E2M1_LEVELS)[codes]
    columns = per_column(local, frame[0], w.shape[1], None, frame[1], frame[2])
    return (values * columns).to(torch.bfloat16).to(torch.float32)


def per_column(t: torch.Tensor, out: int, cols: int, g_idx: torch.Tensor | None, r0: int,
                r1: int) -> torch.Tensor:
    """A scale or zero point broadcast over rows ``[r0, r1)`` of an (out, cols) weight.

    One value (per tensor), one per row (per channel), one per group of columns (``g_idx`` gives each
    column's group where the columns were reordered), or one per block of rows and columns.
    """
    if t.numel() == 1:
        return t.reshape(1, 1)
    if t.dim() == 1 and t.shape[0] == out:
        return t[r0:r1, None]
    if t.dim() != 2:
        raise ValueError(f"a scale of shape {tuple(t.shape)} does not fit a weight of shape ({out}, {cols})")
    rows, groups = t.shape
    if rows == out:
        if groups == 1:
            return t[r0:r1]
        group_of = g_idx if g_idx is not None else torch.arange(cols) // -(-cols // groups)
        return t[r0:r1][:, group_of]
    # blocks of (ceil(out / rows), ceil(cols / groups))
    block_rows, block_cols = -(-out // rows), -(-cols // groups)
    return t[torch.arange(r0, r1) // block_rows][:, torch.arange(cols) // block_cols]

