"""Which quantizer wrote a safetensors checkpoint, from its header and ``config.json`` alone.

Reads no weights and imports no torch, so discovery (``mother scan``) stays light; the decoding itself is
:mod:`mother_core.io.quantized`, whose docstring describes each scheme's tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mother_core.io.filekind import read_json_file

#: Tensors that only serve to decode a weight (or to run it): never weights themselves.
AUX_SUFFIXES: tuple[str, ...] = (
    ".SCB", ".weight_format", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".qzeros",
    ".scales", ".g_idx", ".qweight", "._scale", "._shift", "._data", ".input_scale", ".output_scale",
    ".weight_scale", ".weight_scale_inv", ".weight_zero_point", ".weight_g_idx", ".k_scale", ".v_scale",
    ".weight_global_scale", ".input_global_scale", ".weight_shape", ".biases",
)
FLOAT8_DTYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
#: optimum-quanto's group size for 4- and 2-bit weights.
QUANTO_GROUP_SIZE = 128

Shapes = Mapping[str, tuple[tuple[int, ...], str]]


def is_aux(name: str) -> bool:
    """A tensor that only serves to decode (or run) a weight: never compared as one."""
    return name.endswith(AUX_SUFFIXES) or ".quant_state." in name


def detect_scheme(shapes: Shapes, quant_config: Mapping | None = None) -> str | None:
    """The quantization scheme of a safetensors checkpoint from its tensor names and dtypes, or None.

    Parameters
    ----------
    shapes : mapping
        Tensor name -> (shape, torch dtype name), as :func:`mother_core.io.sniff.safetensors_header` gives.
    quant_config : mapping, optional
        ``quantization_config`` of the model's ``config.json`` (bits of GPTQ / AWQ), if known.

    Returns
    -------
    str or None
        ``"bnb-int8"``, ``"bnb-nf4"``, ``"bnb-fp4"``, ``"gptq-int4"``, ``"awq-int4"`` (other widths as
        ``-int8``, ``-int3``...), ``"quanto-int8"``, ``"quanto-int4"``, ``"quanto-int2"``, ``"quanto-float8"``,
        ``"fp8"``, ``"compressed-int4"`` (compressed-tensors pack-quantized; ``-int8``... by the config's
        ``num_bits``, ``"compressed-packed"`` when the config does not say), ``"compressed-int8"``
        (int-quantized), ``"compressed-nvfp4"``, ``"mlx-int4"`` (MLX; ``"mlx"`` when the config does not
        give the width), ``"hqq-int4"`` (HQQ; ``-int8``, ``-int3``... by the packing, ``"hqq"`` when
        neither the header nor the config gives the width), ``"torchao-int8"`` (torchao through transformers;
        ``-int4``, ``-float8``... by the config's weight dtype, else the codes': :func:`torchao_scheme`); None
        for a plain checkpoint.
    """
    names = list(shapes)
    for n in names:
        if ".quant_state.bitsandbytes__" in n:
            return "bnb-" + n.rsplit("__", 1)[1]
    if any(n.endswith(".SCB") for n in names):
        return "bnb-int8"
    raw_bits = (quant_config or {}).get("bits", 4) or 4
    bits = raw_bits if isinstance(raw_bits, int) and not isinstance(raw_bits, bool) and 1 <= raw_bits <= 16 else 4
    for n in names:
        if n.endswith(".qweight") and n[: -len(".qweight")] + ".scales" in shapes:
            method = str((quant_config or {}).get("quant_method", "")).lower()
            return f"{'awq' if method == 'awq' or looks_awq(n, shapes) else 'gptq'}-int{bits}"
    for n in names:
        if n.endswith(".weight._data._data"):
            return f"quanto-int{quanto_bits(n[: -len('._data._data')], shapes) or 4}"
        if n.endswith(".weight._data"):
            return "quanto-float8" if shapes[n][1] in FLOAT8_DTYPES else "quanto-int8"
    for name, (_, dtype) in shapes.items():  # MLX: uint32 codes beside .scales and .biases
        module = name[: -len(".weight")]
        if dtype == "uint32" and name.endswith(".weight") and module + ".scales" in shapes \
                and module + ".biases" in shapes:
            width = (quant_config or {}).get("bits")
            return f"mlx-int{width}" if isinstance(width, int) and not isinstance(width, bool) else "mlx"
    hqq = hqq_scheme(shapes, quant_config)
    if hqq is not None:
        return hqq
    torchao = torchao_scheme(shapes, quant_config)
    if torchao is not None:  # before fp8 and packed: its codes are float8 or int8 tensors
        return torchao
    compressed = compressed_tensors_scheme(shapes, quant_config)
    if compressed is not None:  # before fp8: NVFP4 stores float8 scales
        return compressed
    if any(dtype in FLOAT8_DTYPES for _, dtype in shapes.values()):
        return "fp8"
    if packed_weights(shapes):
        return UNKNOWN_PACKED
    return None


#: The code width of each of HQQ's packings by codes a stored row holds: rows of the grouped weight per
#: row of ``W_q`` (see :mod:`mother_core.io.hqq_quantized`).
_HQQ_BITS_BY_SLOTS = {1: 8, 2: 4, 4: 2, 8: 1}


def hqq_scheme(shapes: Shapes, quant_config: Mapping | None = None) -> str | None:
    """``"hqq-int<bits>"`` for a checkpoint of HQQ layers (``m.W_q`` beside ``m.scale`` and ``m.zero``, or
    ``m.zero_scale``), ``"hqq"`` when the width is not known from the header; None for others.

    The width is the config's ``nbits`` (transformers' ``HqqConfig`` writes ``quant_config`` /
    ``weight_quant_params``), else what the shapes tell: ``8 / bits`` rows of the grouped weight to a row
    of ``W_q`` in bytes, ten 3-bit codes to an int32 word (one scale per row for ``axis`` 1; for ``axis`` 0
    the rows are the group size, which the header does not give).
    """
    for name, (shape, dtype) in shapes.items():
        if not name.endswith(".W_q"):
            continue
        module = name[: -len(".W_q")]
        if module + ".zero_scale" not in shapes and (module + ".scale" not in shapes or module + ".zero" not in shapes):
            continue
        bits = _hqq_config_bits(quant_config)
        scale = shapes.get(module + ".scale")
        if bits is None and dtype == "int32":
            bits = 3
        if bits is None and scale is not None and len(scale[0]) == 2 and scale[0][1] == 1 and len(shape) == 2 \
                and shape[0]:  # also codes stored viewed as floats (view_as_float): the rows are the same
            rows = scale[0][0]
            bits = _HQQ_BITS_BY_SLOTS.get(rows // shape[0]) if rows % shape[0] == 0 else None
            if bits is None and shape[0] == -(-rows // 10):  # ten 3-bit codes a word, rows padded
                bits = 3
        return f"hqq-int{bits}" if bits is not None else "hqq"
    return None


def _hqq_config_bits(quant_config: Mapping | None) -> int | None:
    """``nbits`` of an HQQ ``quantization_config`` (transformers' integration), when it is one whole width."""
    config = quant_config or {}
    inner = config.get("quant_config")
    params = inner.get("weight_quant_params") if isinstance(inner, dict) else None
    nbits = params.get("nbits") if isinstance(params, dict) else config.get("nbits")
    return nbits if isinstance(nbits, int) and not isinstance(nbits, bool) and 1 <= nbits <= 8 else None


def compressed_tensors_scheme(shapes: Shapes, quant_config: Mapping | None = None) -> str | None:
    """The compressed-tensors layout of a checkpoint's integer weights (see
    :mod:`mother_core.io.compressed_tensors`), or None."""
    for name, (_, dtype) in shapes.items():
        if name.endswith(".weight_packed"):
            if dtype == "uint8":
                return "compressed-nvfp4"
            bits = config_bits(quant_config)
            return f"compressed-int{bits}" if bits else "compressed-packed"
    for name, (_, dtype) in shapes.items():
        if name.endswith(".weight") and dtype == "int8" and name + "_scale" in shapes:
            return "compressed-int8"
    return None


def torchao_qdata(name: str) -> tuple[str, str] | None:
    """``(module, attribute)`` of a torchao weight's codes as transformers flattens them (``m._w_qdata``
    for weight ``m.w``; :mod:`mother_core.io.torchao_quantized`), else None."""
    module, _, last = name.rpartition(".")
    if not module or not last.startswith("_") or not last.endswith("_qdata") or len(last) <= len("__qdata"):
        return None
    return module, last[1:-len("_qdata")]


def torchao_scheme(shapes: Shapes, quant_config: Mapping | None = None) -> str | None:
    """``"torchao-<dtype>"`` for a checkpoint of flattened torchao weights, else None: the weight dtype its
    ``TorchAoConfig`` names (``quant_type.default._data.weight_dtype``), else the codes' dtype."""
    codes = [dtype for name, (_, dtype) in shapes.items() if torchao_qdata(name) is not None]
    if not codes:
        return None
    quant_type = (quant_config or {}).get("quant_type")
    default = quant_type.get("default") if isinstance(quant_type, dict) else None
    data = default.get("_data") if isinstance(default, dict) else None
    named = data.get("weight_dtype") if isinstance(data, dict) else None
    word = named.get("_data") if isinstance(named, dict) else None
    word = word if isinstance(word, str) and word.isidentifier() and len(word) <= 24 else codes[0]
    return "torchao-" + ("float8" if word.startswith("float8") else word)


#: The scheme of a checkpoint whose weights are packed integers of a quantizer we do not decode
#: (EXL2, AQLM, ...): read without them, with a note.
UNKNOWN_PACKED = "unknown-packed"
_PACKED_DTYPES = frozenset({"int8", "uint8", "int16", "int32"})
NOT_PACKED_SUFFIXES = (".bias", "mask", "_ids", ".masked_bias")  # integer buffers of plain models (causal masks, ids)


def packed_weights(shapes: Shapes) -> list[str]:
    """Tensors that look like packed quantized weights: integer, at least 2-D and 64 values, not a buffer.

    Called where no known scheme matched; a plain checkpoint holds integers only in small or 1-D buffers
    (``position_ids`` are int64, causal masks are named ``bias`` / ``mask``)."""
    out = []
    for name, (shape, dtype) in shapes.items():
        numel = 1
        for d in shape:
            numel *= d
        if dtype in _PACKED_DTYPES and len(shape) >= 2 and numel >= 64 and not name.endswith(NOT_PACKED_SUFFIXES):
            out.append(name)
    return out


def looks_awq(qweight: str, shapes: Shapes) -> bool:
    """AWQ packs along the output dimension: its qweight has fewer columns than scales."""
    base = qweight[: -len(".qweight")]
    q, s = shapes[qweight][0], shapes[base + ".scales"][0]
    return len(q) == 2 and len(s) == 2 and q[1] < s[1]


def quanto_bits(weight: str, shapes: Shapes) -> int | None:
    packed, scale = shapes.get(weight + "._data._data"), shapes.get(weight + "._scale")
    if packed is None or scale is None or not packed[0] or not scale[0]:
        return None
    ratio = -(-scale[0][0] // packed[0][0])  # values per byte: rows of codes over packed rows
    return {2: 4, 4: 2}.get(ratio)


def model_config(path: str) -> dict:
    """The ``config.json`` beside a weight file (empty when absent or unreadable)."""
    config_path = os.path.join(os.path.dirname(path), "config.json")
    if not os.path.lexists(config_path):
        return {}
    try:
        config = read_json_file(config_path)  # no FIFO, size and depth limits
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def quantization_config(path: str) -> dict:
    """``quantization_config`` of the ``config.json`` beside a weight file (empty when absent)."""
    q = model_config(path).get("quantization_config")
    return q if isinstance(q, dict) else {}


def config_bits(quant_config: Mapping | None) -> int | None:
    """``num_bits`` of the weights when every weight scheme of a compressed-tensors config agrees."""
    bits = config_weights_value(quant_config, "num_bits")
    return bits if isinstance(bits, int) and not isinstance(bits, bool) else None


def config_weights_value(quant_config: Mapping | None, key: str) -> object:
    """``key`` of the weights' scheme (``num_bits``, ``strategy``) when every weight scheme of a
    compressed-tensors config gives the same value (None otherwise, or when the config has none)."""
    groups = (quant_config or {}).get("config_groups")
    if not isinstance(groups, dict):
        return None
    values: set = set()
    for group in groups.values():
        weights = group.get("weights") if isinstance(group, dict) else None
        value = weights.get(key) if isinstance(weights, dict) else None
        if isinstance(value, (int, str)):
            values.add(value)
    return values.pop() if len(values) == 1 else None
