"""torchao-quantized checkpoints that transformers saves as safetensors, decoded under the original names.

transformers' torchao integration (``TorchAoConfig``, ``save_pretrained``) keeps each quantized weight
``m.w`` as a torchao tensor subclass and flattens it for safetensors
(``torchao.prototype.safetensors.safetensors_support.flatten_tensor_state_dict``, torchao >= 0.14):

* one stored tensor ``m._w_<data>`` per tensor the subclass holds (``qdata``, ``scale``, ``zero_point``...);
* one string in the header's ``__metadata__`` under ``m.w``: the JSON object ``{"_type": subclass,
  "_data": {attribute: value}, "_tensor_data_names": [...]}`` (a torch dtype is ``{"_type":
  "torch.dtype", "_data": "bfloat16"}``); plain tensors say ``{"_type": "Tensor"}``.

The subclasses decoded here, each as its own ``dequantize()`` computes it (torchao 0.18,
``quantization/quantize_/workflows`` and ``quantization/quant_primitives.py``), with ``D`` the subclass's
``dtype`` attribute (the model's float dtype) and one scale (and zero point) per block of ``block_size``:

* **Int8Tensor** (``Int8WeightOnlyConfig``, ``Int8DynamicActivationInt8WeightConfig``) and
  **IntxUnpackedToInt8Tensor** (``IntxWeightOnlyConfig``, ``Int8DynamicActivationIntxWeightConfig``: 1- to
  8-bit codes, one per int8): ``dequantize_affine``, ``W = ((q.to(D) - zero_point.to(D)) * scale).to(D)``
  (the product in the promoted dtype of ``D`` and the scale's).
* **Float8Tensor** (``Float8WeightOnlyConfig``, ``Float8DynamicActivationFloat8WeightConfig``):
  ``_dequantize_affine_float8``, ``W = (q.to(float32) * scale).to(D)``, the blocks taken from the scale's
  shape as the library does (``D`` is float32 when the attribute is absent, the subclass's default).

The same operations on the same dtypes, so the weights are torchao's bit for bit, then widened to float32.
Not decoded (the weight is left out with a note, the rest of the model read): the packed int4 layouts of
GPU kernels (``Int4Tensor``, ``Int4TilePackedTo4dTensor``, ``Int4PlainInt32Tensor``), ``MXTensor``,
``NVFP4Tensor``, any other ``_type``, and an Int8Tensor with an ``act_pre_scale`` (AWQ / SmoothQuant: the
layer's weight is then the dequantized one times that scale, which ``dequantize()`` does not apply).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from mother_core.io.names import normalise_name
from mother_core.io.quant_scheme import FLOAT8_DTYPES, Shapes, torchao_qdata
from mother_core.io.safetensors_header import MAX_JSON_DEPTH, json_depth_ok, read_header

#: The subclasses decoded -> which formula of the module docstring decodes them.
DECODED = {"Int8Tensor": "affine", "IntxUnpackedToInt8Tensor": "affine", "Float8Tensor": "float8"}
#: Tensors a subclass may hold that only serve the activations (static activation quantization): stored,
#: never part of the weight.
ACTIVATION_ONLY = ("act_quant_scale", "act_quant_zero_point")
#: Longest ``__metadata__`` entry read for one weight (a real one is a few hundred bytes).
MAX_ENTRY_CHARS = 64 * 1024
_FLOAT_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class TorchaoWeight:
    """One torchao weight, decodable: (out, in), how, its float dtype, its blocks and stored tensors.

    Attributes
    ----------
    name : str
        The weight's (normalised) name, e.g. ``layers.0.mlp.up_proj.weight``.
    shape : tuple of int
        (out, in), the shape of ``qdata``.
    kind : str
        ``"affine"`` (Int8Tensor, IntxUnpackedToInt8Tensor) or ``"float8"`` (Float8Tensor).
    dtype : str
        ``D``, the dtype ``dequantize()`` returns.
    block : tuple of int
        Rows and columns sharing one scale (and zero point).
    parts : dict
        ``q``, ``scale`` and, when stored, ``zero_point`` -> stored (normalised) tensor names.
    by_rows : frozenset of str
        The roles stored as (block rows, blocks per row), read by rows with the codes.
    """

    name: str
    shape: tuple[int, int]
    kind: str
    dtype: str
    block: tuple[int, int]
    parts: dict[str, str]
    by_rows: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Undecoded:
    """A torchao weight we do not decode: its name, every stored tensor of it, and why."""

    name: str
    parts: dict[str, str]
    why: str


def header_metadata(files: Iterable[str]) -> dict[str, str]:
    """The ``__metadata__`` of every shard (the same per-weight entries in each), keyed by normalised name."""
    out: dict[str, str] = {}
    for path in files:
        for key, value in read_header(path).metadata.items():
            out.setdefault(normalise_name(key), value)
    return out


def stored_by_torchao(shapes: Shapes) -> bool:
    """Whether a checkpoint holds flattened torchao weights (a ``m._w_qdata`` tensor)."""
    return any(torchao_qdata(n) is not None for n in shapes)


def entry(text: str) -> dict:
    """One weight's ``__metadata__`` JSON, parsed with the limits of the header's own (size, depth).

    Raises
    ------
    ValueError
        Too long, too deep, not JSON, or not ``{"_type": str, "_data": dict, "_tensor_data_names": [str]}``.
    """
    if len(text) > MAX_ENTRY_CHARS:
        raise ValueError(f"its description is longer than {MAX_ENTRY_CHARS} characters")
    if not json_depth_ok(text, MAX_JSON_DEPTH):
        raise ValueError(f"its description nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"its description is not JSON ({str(e)[:80]})") from None
    if not isinstance(value, dict) or not isinstance(value.get("_type"), str):
        raise ValueError("its description names no tensor type")
    data, names = value.get("_data", {}), value.get("_tensor_data_names", [])
    if not isinstance(data, dict) or not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("its description does not list its attributes and tensors")
    return value


def describe_all(shapes: Shapes, metadata: Mapping[str, str]) -> dict[str, TorchaoWeight | Undecoded]:
    """Every flattened torchao weight of a checkpoint, keyed by its stored ``qdata`` name.

    Parameters
    ----------
    shapes : mapping
        Stored (normalised) tensor name -> (shape, torch dtype name).
    metadata : mapping
        :func:`header_metadata` of the checkpoint's files.
    """
    out: dict[str, TorchaoWeight | Undecoded] = {}
    flattened: dict[str, list[str]] = {}  # module -> its stored ``m._...`` tensors (one pass over the names)
    for stored in shapes:
        module, _, last = stored.rpartition(".")
        if last.startswith("_"):
            flattened.setdefault(module, []).append(stored)
    for stored in shapes:
        split = torchao_qdata(stored)
        if split is None:
            continue
        module, attribute = split
        prefix = f"{module}._{attribute}_"
        parts = {n[len(prefix):]: n for n in flattened.get(module, ()) if n.startswith(prefix)}
        name = f"{module}.{attribute}"
        try:
            out[stored] = _describe(name, parts, shapes, metadata.get(name))
        except ValueError as e:
            out[stored] = Undecoded(name, parts, str(e))
    return _described_under_other_names(out, shapes, metadata)


def _described_under_other_names(out: dict[str, TorchaoWeight | Undecoded], shapes: Shapes,
                                 metadata: Mapping[str, str]) -> dict[str, TorchaoWeight | Undecoded]:
    """Weights whose description is missing, decoded by the descriptions left over under other names.

    transformers >= 5 renames some modules when it loads a model (its conversion mapping: Swin's
    ``attention.self.query`` is ``attention.q_proj`` in memory) and renames the tensors back when it saves,
    but torchao's flattening writes the header's descriptions under the names in memory: the file then holds
    ``...self.query._weight_qdata`` and a description of ``...q_proj.weight`` only. The renaming is one to
    one, so when as many quantized descriptions name no stored tensor as weights lack one, and every such
    description that fits a weight (its tensors, block and scale counts) decodes it the same way (one config
    for every layer, as ``TorchAoConfig`` applies it), that is the weight's description. Otherwise the weight
    stays undecoded, with the reason.
    """
    missing = [s for s, w in out.items() if isinstance(w, Undecoded) and w.name not in metadata]
    if not missing:
        return out
    modules = {n.rpartition(".")[0] for n in shapes}
    spare: list[str] = []
    for key, text in metadata.items():
        if key in shapes or key.rpartition(".")[0] in modules:
            continue  # a plain tensor's entry, or the entry of a stored module
        try:
            if entry(text)["_type"] != "Tensor":
                spare.append(text)
        except ValueError:
            continue
    if len(spare) != len(missing):
        return out
    texts = sorted(set(spare))
    for stored in missing:
        w = out[stored]
        assert isinstance(w, Undecoded)
        fits: dict[tuple[object, ...], TorchaoWeight] = {}
        for text in texts:
            try:
                got = _describe(w.name, w.parts, shapes, text)
            except ValueError:
                continue
            fits.setdefault((got.kind, got.dtype, got.block, got.by_rows), got)
        if len(fits) == 1:
            out[stored] = next(iter(fits.values()))
    return out


def _describe(name: str, parts: dict[str, str], shapes: Shapes, text: str | None) -> TorchaoWeight:
    if text is None:
        raise ValueError("its file's metadata does not describe it (the torchao description is missing)")
    meta = entry(text)
    kind = DECODED.get(meta["_type"])
    if kind is None:
        raise ValueError(f"it is a torchao {str(meta['_type'])[:40]!r}, a layout we do not decode")
    names = meta.get("_tensor_data_names", [])
    unknown = sorted(set(names) - {"qdata", "scale", "zero_point", *ACTIVATION_ONLY})
    if unknown:  # act_pre_scale (AWQ, SmoothQuant) changes the layer's weight: not dequantize()'s
        raise ValueError(f"it holds {', '.join(u[:40] for u in unknown)}, which we do not apply")
    missing = [n for n in names if n not in parts]
    if missing or "qdata" not in names or "scale" not in names:
        raise ValueError(f"its stored tensors ({', '.join(sorted(parts))[:120]}) are not those it lists")
    (q_shape, q_dtype), (s_shape, _) = shapes[parts["qdata"]], shapes[parts["scale"]]
    if len(q_shape) != 2 or not all(q_shape):
        raise ValueError(f"its codes have shape {q_shape}; we decode two-dimensional weights")
    rows, cols = q_shape
    data = meta["_data"]
    dtype = _dtype(data.get("dtype"), "float32" if kind == "float8" else None)
    if kind == "float8":
        if q_dtype not in FLOAT8_DTYPES:
            raise ValueError(f"its codes are {q_dtype}, not float8")
        block = _float8_block(s_shape, rows, cols)
    else:
        if q_dtype != "int8":
            raise ValueError(f"its codes are {q_dtype}, not int8")
        block = _block(data.get("block_size"), rows, cols)
    groups = (rows // block[0]) * (cols // block[1])
    for role in ("scale", "zero_point"):
        if role in names and math.prod(shapes[parts[role]][0]) != groups:
            raise ValueError(f"its {role} holds {math.prod(shapes[parts[role]][0])} values for {groups} blocks")
    roles = {"q": parts["qdata"], "scale": parts["scale"]}
    if "zero_point" in names:
        roles["zero_point"] = parts["zero_point"]
    by_rows = frozenset(r for r in ("scale", "zero_point") if r in roles
                        and shapes[roles[r]][0] == (rows // block[0], cols // block[1]))
    return TorchaoWeight(name, (rows, cols), kind, dtype, block, roles, by_rows)


def _dtype(value: object, default: str | None) -> str:
    """``D`` from a serialised ``torch.dtype`` (``{"_type": "torch.dtype", "_data": "bfloat16"}``)."""
    if value is None and default is not None:
        return default
    if isinstance(value, dict) and value.get("_type") == "torch.dtype" and value.get("_data") in _FLOAT_DTYPES:
        return str(value["_data"])
    raise ValueError(f"its output dtype {str(value)[:60]} is not a float dtype we read")


def _block(value: object, rows: int, cols: int) -> tuple[int, int]:
    """``block_size`` of an affine weight: two positive integers dividing its shape."""
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                            and v > 0 for v in value)
            and rows % value[0] == 0 and cols % value[1] == 0):
        return value[0], value[1]
    raise ValueError(f"its block_size {str(value)[:60]} does not divide its shape ({rows}, {cols})")


def _float8_block(scale: tuple[int, ...], rows: int, cols: int) -> tuple[int, int]:
    """A Float8Tensor's blocks from its scale's shape, as ``_maybe_expand_scale_to_tensor_shape`` finds them:
    one scale for all, or a 2-D scale whose dimensions divide the weight's."""
    if math.prod(scale) == 1:
        return rows, cols
    if len(scale) == 2 and scale[0] and scale[1] and rows % scale[0] == 0 and cols % scale[1] == 0:
        return rows // scale[0], cols // scale[1]
    raise ValueError(f"its scale of shape {scale} does not divide its shape ({rows}, {cols})")


def decode_into(w: TorchaoWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor],
                rows: tuple[int, int], out: torch.Tensor) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``w`` into ``out`` (float32 (r1 - r0, in), contiguous), as ``dequantize()``.

    Reads only those rows of the codes and the scale (and zero point) rows of their blocks. The codes are
    viewed as (rows, blocks, block columns) against (rows, blocks, 1) parameters, the reshape
    ``_dequantize_affine_no_dtype_check`` makes: each element meets its own block's values in the same
    operations and dtypes.
    """
    r0, r1 = rows
    n, cols = r1 - r0, w.shape[1]
    if n == 0:
        return out.view(0, cols)
    d = getattr(torch, w.dtype)
    q = read(w.parts["q"], rows).reshape(n, cols // w.block[1], w.block[1])
    scale = _per_row(w, read, "scale", r0, r1)
    if w.kind == "float8":
        values = (_float8_to_float32(q) * scale).to(d)
    else:
        values = q.to(d)
        if "zero_point" in w.parts:
            values = values - _per_row(w, read, "zero_point", r0, r1).to(d)
        values = (values * scale).to(d)
    return out.view(n, cols).copy_(values.reshape(n, cols))


def _float8_to_float32(q: torch.Tensor) -> torch.Tensor:
    """``q.to(float32)`` by a lookup of each byte in the 256 values torch's own conversion gives (the same
    floats, exactly: every float8 is a float32), 2.4 times faster on a CPU than the conversion itself."""
    table = torch.arange(256, dtype=torch.uint8).view(q.dtype).to(torch.float32)
    return torch.take(table, q.view(torch.uint8).to(torch.int64))


def _per_row(w: TorchaoWeight, read: Callable[[str, tuple[int, int] | None], torch.Tensor], role: str,
             r0: int, r1: int) -> torch.Tensor:
    """The ``role`` values of rows ``[r0, r1)``, (r1 - r0, blocks per row, 1), in their stored dtype."""
    rows, cols = w.shape
    block_rows, blocks = rows // w.block[0], cols // w.block[1]
    g0, g1 = r0 // w.block[0], -(-r1 // w.block[0])
    if role in w.by_rows:  # stored (block rows, blocks), as the library keeps them: only these block rows
        values = read(w.parts[role], (g0, g1)).reshape(g1 - g0, blocks)
    else:  # another shape of as many values (a scalar, a flat vector): small, read whole
        values = read(w.parts[role], None).reshape(block_rows, blocks)[g0:g1]
    return values[torch.arange(r0, r1) // w.block[0] - g0].unsqueeze(-1)


__all__ = ["DECODED", "TorchaoWeight", "Undecoded", "decode_into", "describe_all", "entry", "header_metadata",
           "stored_by_torchao"]
