"""Quantized safetensors checkpoints, dequantized while streaming, under the original weight names.

What the quantizers write (one weight ``W`` of shape (out, in) of module ``m``), and how it is read back:

* **bitsandbytes int8** (``Linear8bitLt``): ``m.weight`` int8 and ``m.SCB`` (out,) float:
  ``W = weight * SCB[:, None] / 127``.
* **bitsandbytes nf4 / fp4** (``Linear4bit``): ``m.weight`` uint8, two 4-bit codes a byte (first in the
  high nibble), ``m.weight.absmax`` one scale per block of ``blocksize`` codes (uint8 when the statistics
  are compressed, with ``nested_absmax`` / ``nested_quant_map`` and ``nested_offset``), ``m.weight.quant_map``
  (16 code values), ``m.weight.quant_state.bitsandbytes__nf4`` (the JSON quant state: shape, blocksize):
  ``W.flat[j] = quant_map[code_j] * absmax[j // blocksize]``.
* **GPTQ** (AutoGPTQ / GPTQModel / optimum): ``m.qweight`` int32 (in * bits / 32, out), ``m.qzeros`` int32
  (groups, out * bits / 32), ``m.scales`` (groups, out), ``m.g_idx`` (in,): codes packed along the input
  dimension, lowest bits first; ``W[o, i] = scales[g, o] * (q[i, o] - (z[g, o] + 1))`` with ``g = g_idx[i]``
  (the ``+ 1`` of AutoGPTQ's stored zeros, format v1; GPTQModel's ``checkpoint_format: gptq_v2`` stores
  the zeros themselves).
* **AWQ** (AutoAWQ GEMM): ``m.qweight`` int32 (in, out * bits / 32), ``m.qzeros`` (groups, out * bits / 32),
  ``m.scales`` (groups, out); codes packed along the output dimension in the order 0 2 4 6 1 3 5 7;
  ``W[o, i] = scales[g, o] * (q[i, o] - z[g, o])`` with ``g = i // group_size``.
* **optimum-quanto**: ``m.weight._data`` (int8 or float8, the weight's shape) and ``m.weight._scale``
  (``W = _scale * _data``); 4- and 2-bit weights store ``m.weight._data._data`` (uint8, codes packed along
  the first dimension of the grouped weight) and ``m.weight._scale`` / ``m.weight._shift`` per group
  (``W = _scale * codes - _shift``, or ``(codes - _shift) * _scale`` for an integer shift). Grouped 4-bit
  weights do not store their (out, in) shape: it is taken from the module's bias when there is one, else
  from a same-named weight of another model in the set (:meth:`QuantizedReader.adopt_shapes`), else the
  weight is left out and reported.
* **MLX** (``mlx_lm.convert -q``): ``m.weight`` uint32 codes, ``m.scales`` and ``m.biases``:
  :mod:`mother_core.io.mlx_quantized`.
* **HQQ** (``hqq``'s ``HQQLinear``, also through transformers' ``HqqConfig``): ``m.W_q`` codes packed down
  the rows of the grouped weight, ``m.scale``, ``m.zero`` and the layer's metadata:
  :mod:`mother_core.io.hqq_quantized`.
* **compressed-tensors** (llm-compressor: pack-quantized int4 / int8, int-quantized int8, NVFP4):
  :mod:`mother_core.io.compressed_tensors`.
* **torchao** (transformers' ``TorchAoConfig``: ``m._weight_qdata``, ``m._weight_scale``... described by
  JSON in the header's metadata): :mod:`mother_core.io.torchao_quantized`.
* **fp8** (``F8_E4M3`` / ``F8_E5M2`` tensors): ``W = weight * weight_scale`` (a scalar or one per row), or
  ``weight * weight_scale_inv`` per 128 x 128 block (DeepSeek-V3 style); a ``weight_scale`` may also be
  one per group of columns or per block (compressed-tensors' float-quantized); a float8 weight without a
  scale is only widened.

Auxiliary tensors (scales, zeros, absmax, quant maps, activation scales) are never compared as weights:
they are consumed by the weight they belong to or dropped. A quantized weight that cannot be decoded is
left out with a message in :attr:`QuantizedReader.notes`.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mother_core.errors import NoTensorsError, UnreadableCheckpointError
from mother_core.io import compressed_tensors, hqq_quantized, int8_fast, mlx_quantized, torchao_quantized
from mother_core.io.base import ModelReader, ModelRef, TensorInfo
from mother_core.io.quant_scheme import (  # re-exported for the readers
    AUX_SUFFIXES,
    FLOAT8_DTYPES,
    NOT_PACKED_SUFFIXES,
    QUANTO_GROUP_SIZE,
    UNKNOWN_PACKED,
    Shapes,
    config_bits,
    config_weights_value,
    detect_scheme,
    is_aux,
    looks_awq,
    model_config,
    packed_weights,
    quantization_config,
    quanto_bits,
)

_AWQ_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # position of the k-th packed nibble in AutoAWQ's interleaving

#: Models whose linear layers are transformers ``Conv1D`` (weight stored (in, out)). bitsandbytes
#: replaces them by ``Linear8bitLt`` / ``Linear4bit`` of weight (out, in): read back transposed, so that
#: they compare with the float checkpoints' (in, out) tensors.
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer"})
_CONV1D_SUFFIXES = (".attn.c_attn.weight", ".attn.q_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                    ".mlp.c_proj.weight")


@dataclass(frozen=True)
class _Weight:
    """One quantized weight: how to decode it and which stored tensors it needs."""

    name: str
    shape: tuple[int, ...]
    kind: str  # bnb-int8 | bnb-4bit | gptq | awq | quanto-bytes | quanto-bits | fp8 | ct-int | ct-nvfp4 | mlx | hqq
    #            | torchao
    parts: dict[str, str]  # role -> stored (normalised) tensor name
    meta: dict = field(default_factory=dict)
    whole: bool = False  # rows are not contiguous on disk: decoded whole, then sliced


class QuantizedReader:
    """A :class:`~mother_core.io.base.ModelReader` over a quantized safetensors checkpoint.

    Wraps the plain safetensors reader of the same files: dequantized weights appear as ``float32``
    tensors under their original names, other float tensors pass through unchanged, auxiliary ones are
    hidden. Weights whose rows are not contiguous on disk (GPTQ / AWQ pack across rows) are decoded whole
    once and kept until another whole-decoded weight is asked for, so memory stays at one such tensor.
    """

    def __init__(self, raw: ModelReader, quant_config: Mapping | None = None) -> None:
        self.raw = raw
        self.ref: ModelRef = raw.ref
        shapes = {n: (i.shape, i.dtype) for n, i in raw.tensor_infos().items()}
        config = dict(quant_config if quant_config is not None else quantization_config(raw.ref.files[0]))
        self.scheme = detect_scheme(shapes, config)
        self._problems: list[str] = []
        self._pending: dict[str, _Weight] = {}  # grouped quanto weights whose (out, in) is not stored
        self._weights: dict[str, _Weight] = {}
        used: set[str] = set()
        self._mlx_config = mlx_quantized.normalised_config(config)
        self._ct_bits = config_bits(config)
        strategy = config_weights_value(config, "strategy")
        self._ct_strategy = strategy if isinstance(strategy, str) else None
        self._torchao = torchao_quantized.describe_all(shapes, torchao_quantized.header_metadata(
            raw.ref.files)) if torchao_quantized.stored_by_torchao(shapes) else {}
        for name in shapes:
            w = self._describe(name, shapes, config)
            if w is None:
                continue
            used.update(w.parts.values())
            if w.shape and all(d > 0 for d in w.shape):
                self._weights[w.name] = w
        if str(model_config(raw.ref.files[0]).get("model_type", "")) in _CONV1D_MODEL_TYPES:
            for name, w in list(self._weights.items()):
                if w.kind in ("bnb-int8", "bnb-4bit") and name.endswith(_CONV1D_SUFFIXES) and len(w.shape) == 2:
                    self._weights[name] = replace(w, shape=(w.shape[1], w.shape[0]), whole=True,
                                                  meta={**w.meta, "stored_shape": w.shape})
        if self.scheme == UNKNOWN_PACKED:
            used.update(self._undecoded(shapes, config))
        self._infos: dict[str, TensorInfo] = {}
        for name, info in raw.tensor_infos().items():
            if name in used or is_aux(name) or name in self._weights:
                continue
            self._infos[name] = info
        if self.scheme == UNKNOWN_PACKED and not any(i.is_float and len(i.shape) >= 2 for i in self._infos.values()):
            raise NoTensorsError(f"{self.ref.path}: {self._problems[-1]} No weight matrix is left to compare: "
                                 "the model is left out. Add its unquantized source to the set instead.", self.ref.path)
        for name, w in self._weights.items():
            self._infos[name] = TensorInfo(name, w.shape, "float32")
        self._cached: tuple[str, torch.Tensor] | None = None
        # The last int8 weight's whole scale tensor (a few KB): read once per weight, not once per chunk.
        # On a cold file each of those small reads is a synchronous trip to the disk between the large
        # hinted reads of the codes; the scales are hinted with the weight's first rows (prefetch).
        self._scales: tuple[str, torch.Tensor] | None = None
        self._local = threading.local()  # per-thread staging buffer of int8 codes (the pass reads from two)

    # --- what is there -------------------------------------------------------------------------------

    def _undecoded(self, shapes: Shapes, config: Mapping) -> set[str]:
        """Packed weights of an unknown quantizer and the tensors beside them (their scales, zeros, shapes):
        all left out, with one note naming the quantizer."""
        packed = packed_weights(shapes)
        modules = {n.rsplit(".", 1)[0] for n in packed}
        siblings = {n for n in shapes if n.rsplit(".", 1)[0] in modules and not n.endswith(NOT_PACKED_SUFFIXES)}
        method = config.get("quant_method")
        how = f"by {str(method)[:60]!r}" if isinstance(method, str) and method else "by a quantizer"
        dtypes = ", ".join(sorted({shapes[n][1] for n in packed}))
        self._problems.append(
            f"{self.ref.path}: {len(packed)} weights are stored as packed {dtypes} {how} that we do not decode "
            f"(e.g. {packed[0]!r}); they are left out (we read bitsandbytes, GPTQ, AWQ, optimum-quanto, "
            "compressed-tensors, MLX, HQQ, torchao and fp8).")
        return siblings

    def _describe(self, name: str, shapes: Shapes, config: Mapping) -> _Weight | None:
        shape, dtype = shapes[name]
        tao = self._torchao.get(name)
        if isinstance(tao, torchao_quantized.Undecoded):  # all its stored tensors hidden, the weight left out
            self._problems.append(f"{self.ref.path}: the torchao weight {tao.name!r}: {tao.why}; it is left out.")
            return _Weight(tao.name, (), "bad", dict(tao.parts))
        if tao is not None:
            return _Weight(tao.name, tao.shape, "torchao", dict(tao.parts), {"torchao": tao})
        # The schemes with a module of their own: each describes the weight a stored name starts, or says why
        # it cannot be decoded (a str), or passes (None); the first that answers decides.
        for what, key, describe, unreadable in (
                ("compressed-tensors weight", "ct",
                 lambda: compressed_tensors.describe(name, shapes, self.raw.read, self._ct_bits,
                                                            self._ct_strategy),
                 lambda: (name[: -len("_packed")] if name.endswith("_packed") else name, {"q": name})),
                ("HQQ layer", "hqq", lambda: hqq_quantized.describe(name, shapes, self.raw.read),
                 lambda: (name[: -len(".W_q")] + ".weight", hqq_quantized.hqq_parts(name[: -len(".W_q")], shapes))),
                ("MLX weight", "mlx", lambda: mlx_quantized.describe(name, shapes, self._mlx_config),
                 lambda: (name, {"q": name}))):
            found = describe()
            if isinstance(found, str):
                self._problems.append(f"{self.ref.path}: the {what} {found}; it is left out.")
                weight, parts = unreadable()
                return _Weight(weight, (), "bad", parts)
            if found is not None:
                return _Weight(found.name, found.shape, getattr(found, "kind", key), dict(found.parts), {key: found})
        if name.endswith(".SCB"):
            weight = name[: -len(".SCB")] + ".weight"
            if weight in shapes:
                return _Weight(weight, shapes[weight][0], "bnb-int8", {"q": weight, "scb": name})
        if ".quant_state.bitsandbytes__" in name:
            weight = name.split(".quant_state.", 1)[0]
            try:
                state = json.loads(bytes(self.raw.read(name).to(torch.uint8).numpy()).decode("utf-8"))
                out_shape = tuple(int(d) for d in state["shape"])
                packed, wanted = math.prod(shapes[weight][0]), math.prod(out_shape)
                if any(d < 0 for d in out_shape) or wanted > 2 * packed + 2:  # 4-bit: two codes per byte
                    raise ValueError(f"its shape {out_shape[:8]} holds more values than the packed codes")
                parts = {"q": weight, "absmax": weight + ".absmax", "map": weight + ".quant_map"}
                if weight + ".nested_absmax" in shapes:
                    parts.update(nested_absmax=weight + ".nested_absmax", nested_map=weight + ".nested_quant_map")
                blocksize, nested_blocksize = int(state["blocksize"]), int(state.get("nested_blocksize", 256))
                meta = {"blocksize": blocksize, "nested_blocksize": nested_blocksize,
                        "nested_offset": float(state.get("nested_offset", 0.0))}
                # The decoder broadcasts the block scales over the blocks: a short absmax would be read as one
                # scale for every block without a word, so its length is checked here.
                blocks = _bnb_blocks(wanted, blocksize)
                sizes = {part: math.prod(shapes[parts[part]][0]) if parts[part] in shapes else -1 for part in parts}
                if sizes["absmax"] != blocks or sizes["map"] != 16:
                    raise ValueError(f"its absmax holds {sizes['absmax']} block scales for {blocks} blocks and its "
                                     f"quant_map {sizes['map']} values for 16 codes")
                if "nested_absmax" in parts and (sizes["nested_absmax"] != _bnb_blocks(blocks, nested_blocksize)
                                                 or sizes["nested_map"] != 256):
                    raise ValueError("its nested statistics do not match its block scales")
                return _Weight(weight, out_shape, "bnb-4bit", parts, meta)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
                self._problems.append(f"{self.ref.path}: the bitsandbytes quant state of {weight!r} is not "
                                     f"readable ({e}); the weight is left out.")
                return _Weight(weight, (), "bad", {"q": weight, "state": name})
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            if base + ".scales" not in shapes or base + ".qzeros" not in shapes:
                return None
            scales = shapes[base + ".scales"][0]
            bits = _config_int(config, "bits", 4, self.ref.path)
            awq = str(config.get("quant_method", "")).lower() == "awq" or looks_awq(name, shapes)
            parts = {"q": name, "zeros": base + ".qzeros", "scales": base + ".scales"}
            if base + ".g_idx" in shapes and not awq:
                parts["g_idx"] = base + ".g_idx"
            if bits not in (2, 4, 8) or 32 % bits:
                self._problems.append(f"{self.ref.path}: {base} is packed with {bits} bits, which we do not decode; "
                                     "it is left out.")
                return _Weight(base + ".weight", (), "bad", parts)
            pack = 32 // bits
            out = scales[1] if len(scales) == 2 else 0
            rows_in = shape[0] if awq else shape[0] * pack
            mismatch = _packed_mismatch(shape, scales, shapes[base + ".qzeros"][0], shapes.get(parts.get("g_idx", "")),
                                        pack, awq)
            if mismatch:
                self._problems.append(f"{self.ref.path}: the {'AWQ' if awq else 'GPTQ'} weight {base!r} is not "
                                     f"stored in the quantizer's layout ({mismatch}); it is left out. Re-export "
                                     "the model, or remove it from the set.")
                return _Weight(base + ".weight", (), "bad", parts)
            return _Weight(base + ".weight", (out, rows_in), "awq" if awq else "gptq", parts,
                           {"bits": bits, "group_size": _config_int(config, "group_size", 0, self.ref.path),
                            # GPTQModel's format v2 stores the zeros themselves; v1 (AutoGPTQ) stores them minus one
                            "zero_offset": 0 if str(config.get("checkpoint_format", "")).lower() == "gptq_v2" else 1},
                           whole=True)
        if name.endswith(".weight._data._data"):
            weight = name[: -len("._data._data")]
            parts = {"q": name, "scale": weight + "._scale", "shift": weight + "._shift"}
            qbits = quanto_bits(weight, shapes)
            scale_rows = shapes.get(weight + "._scale", ((0,), ""))[0][0]
            cols = shape[1] if len(shape) > 1 else 1
            bias = shapes.get(weight[: -len(".weight")] + ".bias")
            # one scale and one shift per row of codes: a shorter shift would be broadcast without a word
            if (qbits is None or weight + "._shift" not in shapes
                    or math.prod(shapes[weight + "._shift"][0]) != math.prod(shapes[weight + "._scale"][0])):
                self._problems.append(f"{self.ref.path}: the quanto weight {weight!r} is packed in a way we do "
                                     "not decode; it is left out.")
                return _Weight(weight, (), "bad", parts)
            if scale_rows * cols == 0:
                return _Weight(weight, (), "bad", parts)
            grouped = (scale_rows, cols)  # rows of codes = one per scale
            # quanto groups 4/2-bit weights by QUANTO_GROUP_SIZE along the input when it divides it: a
            # grouped weight is (out * in / 128, 128), an ungrouped one (out, in) with in != 128 then.
            full: tuple[int, ...] = ()
            if cols != QUANTO_GROUP_SIZE:
                full = grouped
            elif bias is not None and bias[0] and (scale_rows * cols) % bias[0][0] == 0:
                full = (bias[0][0], scale_rows * cols // bias[0][0])
            if not full:  # its shape may come from another model of the set (adopt_shapes)
                self._pending[weight] = _Weight(weight, (), "quanto-bits", parts, {"bits": qbits, "grouped": grouped},
                                                whole=True)
                return self._pending[weight]
            return _Weight(weight, full, "quanto-bits", parts, {"bits": qbits, "grouped": grouped}, whole=True)
        if name.endswith(".weight._data"):
            weight = name[: -len("._data")]
            if weight + "._scale" in shapes:
                return _Weight(weight, shape, "quanto-bytes", {"q": name, "scale": weight + "._scale"})
        if dtype in FLOAT8_DTYPES and not name.endswith(AUX_SUFFIXES):
            parts = {"q": name}
            for suffix, role in (("_scale", "scale"), ("_scale_inv", "scale_inv")):
                if name + suffix in shapes:
                    parts[role] = name + suffix
            return _Weight(name, shape, "fp8", parts)
        return None

    @property
    def notes(self) -> list[str]:
        """What was left out of this model and why (shown to the user as problems of the model)."""
        return list(getattr(self.raw, "notes", ())) + self._problems + [
            f"{self.ref.path}: the grouped quanto weight {w!r} does not store its shape and no other model of the "
            "set has a weight of that name and size; it is left out." for w in sorted(self._pending)]

    def adopt_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Take the (out, in) shape of grouped quanto weights from other models' tensors of the same name.

        optimum-quanto stores a grouped 4- or 2-bit weight as (out * in / 128, 128) and leaves the shape to
        the model's code; a same-named 2-D tensor of as many values elsewhere in the set tells it.
        """
        for name, w in list(self._pending.items()):
            shape = shapes.get(name)
            rows, cols = w.meta["grouped"]
            if shape is None or len(shape) != 2 or shape[0] * shape[1] != rows * cols or shape[1] % cols:
                continue
            del self._pending[name]
            self._weights[name] = _Weight(name, tuple(shape), w.kind, w.parts, w.meta, whole=True)
            self._infos[name] = TensorInfo(name, tuple(shape), "float32")

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    # --- reading -------------------------------------------------------------------------------------

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        w = self._weights.get(name)
        if w is None:
            if name not in self._infos:
                raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
            return self.raw.read(name, rows)
        if rows is not None and not 0 <= rows[0] <= rows[1] <= w.shape[0]:
            raise ValueError(f"Rows {rows} out of range for {name!r} of shape {w.shape}.")
        try:
            if w.whole:
                if self._cached is None or self._cached[0] != name:
                    self._cached = None  # let the previous one go first
                    self._cached = (name, _decode_whole(self.raw, w))
                t = self._cached[1]
                return (t if rows is None else t[rows[0]:rows[1]]).clone()
            return _decode(self.raw, w, rows)
        except UnreadableCheckpointError:
            raise
        except (RuntimeError, ValueError, IndexError, KeyError) as e:
            raise self._undecodable(name, w, e) from e

    def _undecodable(self, name: str, w: _Weight, e: Exception) -> UnreadableCheckpointError:
        return UnreadableCheckpointError(
            f"Cannot dequantize {name!r} of {self.ref.path} ({w.kind}): {type(e).__name__}: {str(e)[:200]}. "
            "The file does not follow the quantizer's layout: re-export or remove it.", self.ref.path)

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read into a caller's contiguous buffer of the listed dtype (see ``SafetensorsReader.read_into``)."""
        if name not in self._weights and hasattr(self.raw, "read_into"):
            return self.raw.read_into(name, rows, out)  # type: ignore[attr-defined]
        w = self._weights.get(name)
        if w is not None and not w.whole and w.kind in ("bnb-int8", "quanto-bytes") and out.dtype == torch.float32 \
                and out.is_contiguous() and rows is not None and 0 <= rows[0] <= rows[1] <= w.shape[0]:
            # The int8 rows are read in cache-sized pieces (staged.py), each widened and scaled into the
            # caller's buffer in one pass as it arrives (the same float32 products as ``read``).
            view = out.view(rows[1] - rows[0], *w.shape[1:])
            n = rows[1] - rows[0]
            scale = self._row_scale(name, w, rows)
            per_row = scale.numel() == 1 or (scale.dim() >= 1 and scale.shape[0] == n and scale.numel() == n)
            fast = int8_fast.available() and n > 0 and per_row
            scales = scale.reshape(-1).expand(n).contiguous().numpy() if fast else None
            in_pieces = getattr(self.raw, "decode_pieces", None)
            if scales is not None and in_pieces is not None and self.raw.tensor_infos()[w.parts["q"]].dtype == "int8":
                target = view.reshape(n, -1).numpy()
                cols = target.shape[1]
                kernel, s = int8_fast.kernel(), scales

                def rows_into(first: int, piece: np.ndarray) -> None:  # by several threads (staged.decode)
                    k = piece.size // cols
                    kernel(piece.view(np.int8).reshape(k, cols), s[first:first + k], target[first:first + k])

                in_pieces(w.parts["q"], rows, cols, rows_into)
                return view
            codes = self._codes(w, rows)
            if scales is not None and codes.dtype == torch.int8:
                int8_fast.scale_rows(codes.reshape(n, -1).numpy(), scales, view.reshape(n, -1).numpy())
            else:  # widen, then scale: two passes, no temporary as large as the chunk
                view.copy_(codes)
                view.mul_(scale)
            return view
        if w is not None and w.kind in _INTO_BUFFER and out.dtype == torch.float32 \
                and out.is_contiguous() and rows is not None and 0 <= rows[0] <= rows[1] <= w.shape[0] \
                and out.numel() == (rows[1] - rows[0]) * w.shape[1]:
            view = out.view(rows[1] - rows[0], w.shape[1])
            try:  # decoded straight into the caller's buffer (one compiled pass for 2/4/8-bit codes)
                return _decode_into(self.raw, w, rows, view, getattr(self.raw, "decode_pieces", None))
            except UnreadableCheckpointError:
                raise
            except (RuntimeError, ValueError, IndexError, KeyError) as e:
                raise self._undecodable(name, w, e) from e
        t = self.read(name, rows)
        if out.numel() != t.numel() or out.dtype != t.dtype:
            raise ValueError(f"Buffer of {out.numel()} {out.dtype} does not fit {name!r} rows {rows}.")
        out.copy_(t.reshape(-1) if out.dim() == 1 else t.reshape(out.shape))
        return out.view(t.shape)

    def _row_scale(self, name: str, w: _Weight, rows: tuple[int, int]) -> torch.Tensor:
        """:func:`_row_scale` from the weight's whole scale tensor, kept while its rows are read (the same
        float32 values: the division by 127 is elementwise)."""
        if w.kind not in ("bnb-int8", "quanto-bytes"):
            return _row_scale(self.raw, w, rows)
        cached = self._scales
        if cached is None or cached[0] != name:
            whole = _f32(self.raw, w.parts["scb"]) / 127.0 if w.kind == "bnb-int8" else _f32(self.raw, w.parts["scale"])
            cached = self._scales = (name, whole)
        scale = cached[1]
        r0, r1 = rows
        if w.kind == "bnb-int8":
            return scale[r0:r1].reshape(r1 - r0, *([1] * (len(w.shape) - 1)))
        if scale.dim() >= 1 and scale.shape[0] == w.shape[0] and scale.numel() > 1:
            return scale[r0:r1]
        return scale

    def _codes(self, w: _Weight, rows: tuple[int, int]) -> torch.Tensor:
        """The stored int8 rows of ``w``, read into this thread's staging buffer where the reader can."""
        q = w.parts["q"]
        read_into = getattr(self.raw, "read_into", None)
        info = self.raw.tensor_infos()[q]
        if read_into is None or info.dtype != "int8":
            return self.raw.read(q, rows)
        per_row = 1
        for d in info.shape[1:]:
            per_row *= d
        n = (rows[1] - rows[0]) * per_row
        staging = getattr(self._local, "codes", None)
        if staging is None or staging.numel() < n:
            staging = self._local.codes = torch.empty(n, dtype=torch.int8)
        return read_into(q, rows, staging[:n])

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None:
        hint = getattr(self.raw, "prefetch", None)
        if hint is None:
            return
        w = self._weights.get(name)
        if w is None:
            hint(name, rows)
        elif w.kind == "hqq":  # a weight's rows sit in a few row ranges of the packed codes
            for stored, stored_rows in hqq_quantized.stored_ranges(w.meta["hqq"], rows or (0, w.shape[0])):
                hint(stored, stored_rows)
        elif not w.whole and w.kind in ("bnb-int8", "quanto-bytes", "fp8", *_INTO_BUFFER):  # rows stored as rows
            hint(w.parts["q"], rows)
            side = w.parts.get("scb") or w.parts.get("scale")
            if side is not None and (rows is None or rows[0] == 0):  # read whole, with the first rows
                hint(side, None)

    def close(self) -> None:
        self._cached = self._scales = None
        self.raw.close()

    def __enter__(self) -> QuantizedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<QuantizedReader {self.ref.id!r} ({self.scheme})>"


# --- decoders ------------------------------------------------------------------------------------------

def _f32(raw: ModelReader, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
    return raw.read(name, rows).to(torch.float32)


def _row_scale(raw: ModelReader, w: _Weight, rows: tuple[int, int]) -> torch.Tensor:
    """The per-row (or scalar) scale of an int8 weight's rows, shaped to broadcast over them."""
    r0, r1 = rows
    if w.kind == "bnb-int8":
        return (_f32(raw, w.parts["scb"], rows) / 127.0).reshape(r1 - r0, *([1] * (len(w.shape) - 1)))
    scale = _f32(raw, w.parts["scale"])
    if scale.dim() >= 1 and scale.shape[0] == w.shape[0] and scale.numel() > 1:
        scale = scale[r0:r1]
    return scale


def _decode_whole(raw: ModelReader, w: _Weight) -> torch.Tensor:
    """All of weight ``w`` as float32; a transposed one (``stored_shape``) decoded as stored, then turned."""
    stored = w.meta.get("stored_shape")
    if stored is None:
        return _decode(raw, w, None)
    return _decode(raw, replace(w, shape=tuple(stored)), None).reshape(tuple(stored)).T.contiguous()


def _decode(raw: ModelReader, w: _Weight, rows: tuple[int, int] | None) -> torch.Tensor:
    """Weight ``w`` (rows ``[r0, r1)`` of it, or all) as float32."""
    r0, r1 = rows if rows is not None else (0, w.shape[0])
    p = w.parts
    if w.kind == "bnb-int8":
        return _f32(raw, p["q"], (r0, r1)) * (_f32(raw, p["scb"], (r0, r1)) / 127.0)[:, None]
    if w.kind == "bnb-4bit":
        return _bnb_4bit(raw, w, r0, r1)
    if w.kind == "gptq":
        return _gptq(raw, w)
    if w.kind == "awq":
        return _awq(raw, w)
    if w.kind == "quanto-bytes":
        scale = _f32(raw, p["scale"])
        if scale.dim() >= 1 and scale.shape[0] == w.shape[0] and scale.numel() > 1:
            scale = scale[r0:r1]
        return _f32(raw, p["q"], (r0, r1)) * scale
    if w.kind == "quanto-bits":
        return _quanto_bits_decode(raw, w)
    if w.kind == "fp8":
        return _fp8(raw, w, r0, r1)
    if w.kind in _INTO_BUFFER:
        return _decode_into(raw, w, (r0, r1), torch.empty(r1 - r0, w.shape[1], dtype=torch.float32))
    raise ValueError(f"no decoder for {w.kind}")


#: Kinds whose decoders write into a caller's buffer (compressed-tensors, MLX, HQQ, torchao).
_INTO_BUFFER = ("ct-int", "ct-nvfp4", "mlx", "hqq", "torchao")


def _decode_into(raw: ModelReader, w: _Weight, rows: tuple[int, int], out: torch.Tensor,
                 pieces: compressed_tensors.Pieces | None = None) -> torch.Tensor:
    if w.kind == "mlx":
        return mlx_quantized.decode_into(w.meta["mlx"], raw.read, rows, out, pieces)
    if w.kind == "hqq":
        return hqq_quantized.decode_into(w.meta["hqq"], raw.read, rows, out, pieces)
    if w.kind == "torchao":
        return torchao_quantized.decode_into(w.meta["torchao"], raw.read, rows, out)
    return compressed_tensors.decode_into(w.meta["ct"], raw.read, rows, out, pieces)


def _bnb_4bit(raw: ModelReader, w: _Weight, r0: int, r1: int) -> torch.Tensor:
    bs = w.meta["blocksize"]
    cols = math.prod(w.shape[1:])
    e0, e1 = r0 * cols, r1 * cols
    b0, b1 = e0 // bs, -(-e1 // bs)
    packed_rows = raw.tensor_infos()[w.parts["q"]].shape[0]
    byte0, byte1 = b0 * bs // 2, min(b1 * bs // 2, packed_rows)
    packed = raw.read(w.parts["q"], (byte0, byte1)).reshape(-1).to(torch.int64)
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)  # high nibble first
    absmax_rows = raw.tensor_infos()[w.parts["absmax"]].shape[0]
    absmax = raw.read(w.parts["absmax"], (b0, min(b1, absmax_rows)))
    if "nested_absmax" in w.parts:
        nested = _f32(raw, w.parts["nested_absmax"])
        nmap = _f32(raw, w.parts["nested_map"])
        nbs = w.meta["nested_blocksize"]
        blocks = torch.arange(b0, b0 + absmax.numel())
        absmax = nmap[absmax.to(torch.int64)] * nested[blocks // nbs] + w.meta["nested_offset"]
    else:
        absmax = absmax.to(torch.float32)
    values = _f32(raw, w.parts["map"])[codes]
    n = values.numel() // bs * bs
    scaled = torch.empty_like(values)
    scaled[:n] = (values[:n].view(-1, bs) * absmax[: n // bs, None]).reshape(-1)
    if n < values.numel():
        scaled[n:] = values[n:] * absmax[-1]
    start = e0 - b0 * bs
    return scaled[start:start + (e1 - e0)].reshape(r1 - r0, *w.shape[1:])


def _unpack_int32(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Codes packed lowest bits first in int32 along ``dim`` -> one code per element along ``dim``."""
    pack = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    x = packed.to(torch.int32).unsqueeze(-1) >> shifts  # (..., pack)
    x = x & ((1 << bits) - 1)
    if dim == 0:  # (rows, cols, pack) -> (rows * pack, cols)
        return x.permute(0, 2, 1).reshape(packed.shape[0] * pack, packed.shape[1])
    return x.reshape(packed.shape[0], packed.shape[1] * pack)


def _bnb_blocks(values: int, blocksize: int) -> int:
    """How many blocks of ``blocksize`` bitsandbytes cuts ``values`` codes into (the last may be short)."""
    if blocksize <= 0:
        raise ValueError(f"its block size is {blocksize}")
    return -(-values // blocksize)


def _config_int(config: Mapping, key: str, default: int, path: str) -> int:
    """An integer of a ``quantization_config`` (absent, null or 0: ``default``, as the quantizers read it).

    Raises
    ------
    UnreadableCheckpointError
        When the value is not a whole number (``"four"``, ``4.5``, a list): the config was not written by the
        quantizer, and guessing would decode garbage.
    """
    value = config.get(key)
    if not value:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise UnreadableCheckpointError(
            f"{path}: its config.json gives the quantization {key!r} as {str(value)[:40]!r}, not a whole number. "
            "Fix the quantization_config, re-export the model, or remove it from the set.", path)
    return int(value)


def _packed_mismatch(q: tuple[int, ...], scales: tuple[int, ...], zeros: tuple[int, ...],
                     g_idx: tuple[tuple[int, ...], str] | None, pack: int, awq: bool) -> str:
    """What in a GPTQ / AWQ weight's stored shapes contradicts the layout (module docstring), or ``""``.

    GPTQ: ``qweight`` (in / pack, out), ``scales`` (groups, out), ``qzeros`` (groups, out / pack), ``g_idx``
    (in,). AWQ: ``qweight`` (in, out / pack), the same ``scales`` and ``qzeros``. Checked here because
    the decoder's broadcasting would otherwise read a cut ``scales`` (groups, 1) as one scale for every
    output, silently.
    """
    if len(q) != 2 or len(scales) != 2 or len(zeros) != 2:
        return f"qweight {q}, scales {scales} and qzeros {zeros} must each have two dimensions"
    out = q[1] * pack if awq else q[1]
    if scales[1] != out:
        return f"scales {scales} for {out} outputs"
    if zeros != (scales[0], -(-out // pack)):
        return f"qzeros {zeros} for scales {scales}"
    if g_idx is not None and g_idx[0] != (q[0] * pack,):
        return f"g_idx {g_idx[0]} for {q[0] * pack} inputs"
    return ""


def _gptq(raw: ModelReader, w: _Weight) -> torch.Tensor:
    bits = w.meta["bits"]
    q = _unpack_int32(raw.read(w.parts["q"]), bits, dim=0)  # (in, out)
    zeros = _unpack_int32(raw.read(w.parts["zeros"]), bits, dim=1)  # (groups, out)
    scales = _f32(raw, w.parts["scales"])  # (groups, out)
    n_in = q.shape[0]
    if "g_idx" in w.parts:
        g = raw.read(w.parts["g_idx"]).to(torch.int64)
    else:
        group = w.meta["group_size"] or -(-n_in // scales.shape[0])
        g = torch.arange(n_in) // group
    weight = scales[g] * (q.to(torch.float32) - (zeros[g] + w.meta.get("zero_offset", 1)).to(torch.float32))
    return weight.T.contiguous()  # (out, in)


def _awq(raw: ModelReader, w: _Weight) -> torch.Tensor:
    bits = w.meta["bits"]
    order = torch.tensor(_AWQ_ORDER if bits == 4 else tuple(range(32 // bits)))

    def unpack(t: torch.Tensor) -> torch.Tensor:
        x = _unpack_int32(t, bits, dim=1).view(t.shape[0], t.shape[1], 32 // bits)
        return x[:, :, order].reshape(t.shape[0], -1)  # undo the interleaving

    q = unpack(raw.read(w.parts["q"]))  # (in, out)
    zeros = unpack(raw.read(w.parts["zeros"]))  # (groups, out)
    scales = _f32(raw, w.parts["scales"])
    group = w.meta["group_size"] or -(-q.shape[0] // scales.shape[0])
    g = torch.arange(q.shape[0]) // group
    return (scales[g] * (q - zeros[g]).to(torch.float32)).T.contiguous()


def _quanto_bits_decode(raw: ModelReader, w: _Weight) -> torch.Tensor:
    bits = w.meta["bits"]
    rows, cols = w.meta["grouped"]
    packed = raw.read(w.parts["q"]).to(torch.int32)
    per = 8 // bits
    codes = torch.cat([(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(per)], dim=0)[:rows]
    scale = _f32(raw, w.parts["scale"])
    shift = raw.read(w.parts["shift"])
    if shift.is_floating_point():
        values = scale * codes.to(torch.float32) - shift.to(torch.float32)
    else:
        values = (codes - shift.to(torch.int32)).to(torch.float32) * scale
    if (rows, cols) == w.shape:
        return values
    # quanto's ``ungroup`` for axis 0: the groups are consecutive runs of the flattened (out, in) weight.
    return values.reshape(w.shape)


def _fp8(raw: ModelReader, w: _Weight, r0: int, r1: int) -> torch.Tensor:
    x = _f32(raw, w.parts["q"], (r0, r1))
    role = "scale" if "scale" in w.parts else "scale_inv" if "scale_inv" in w.parts else None
    if role is None:
        return x
    stored = raw.read(w.parts[role])
    s = stored.to(torch.float32)
    if s.numel() == 1:
        values = x * s.reshape(())
    elif x.dim() == 2:  # per row, per group of columns or per block (compressed_tensors.per_column)
        values = x * compressed_tensors.per_column(s, w.shape[0], w.shape[1], None, r0, r1)
    elif s.shape[0] == w.shape[0] and s.numel() == w.shape[0]:
        values = x * s[r0:r1].reshape(r1 - r0, *([1] * (x.dim() - 1)))
    else:
        raise ValueError(f"scale of shape {tuple(s.shape)} does not fit weight {w.shape}")
    if stored.dtype in (torch.float16, torch.bfloat16):  # dequantized in the scale's dtype, as the tools do
        values = values.to(stored.dtype).to(torch.float32)
    return values
