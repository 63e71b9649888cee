"""Writers of tiny checkpoints in the quantized and converted formats, with the real tools.

GGUF files are written the way llama.cpp's ``convert_hf_to_gguf.py`` writes them: names through the
``gguf`` package's :class:`gguf.TensorNameMap`, Llama q/k rows permuted (``LlamaModel.permute``), GPT-2's
``Conv1D`` weights transposed, 2-D weights quantized with :func:`gguf.quants.quantize` and 1-D ones kept
in float32, written by :class:`gguf.GGUFWriter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
import re
from pathlib import Path

import numpy as np
import torch


def llama_state(seed: int, hidden: int = 64, inter: int = 128, vocab: int = 96, layers: int = 2,
                heads: int = 4, kv_heads: int = 2, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """A tiny Llama with grouped-query attention, named as ``LlamaForCausalLM`` saves it."""
    g = torch.Generator().manual_seed(seed)
    hd = hidden // heads

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"model.embed_tokens.weight": r(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = r(heads * hd, hidden)
        sd[p + "self_attn.k_proj.weight"] = r(kv_heads * hd, hidden)
        sd[p + "self_attn.v_proj.weight"] = r(kv_heads * hd, hidden)
        sd[p + "self_attn.o_proj.weight"] = r(hidden, heads * hd)
        sd[p + "mlp.gate_proj.weight"] = r(inter, hidden)
        sd[p + "mlp.up_proj.weight"] = r(inter, hidden)
        sd[p + "mlp.down_proj.weight"] = r(hidden, inter)
        sd[p + "input_layernorm.weight"] = 1 + r(hidden)
        sd[p + "post_attention_layernorm.weight"] = 1 + r(hidden)
    sd["model.norm.weight"] = 1 + r(hidden)
    sd["lm_head.weight"] = r(vocab, hidden)
    return sd


def perturbed(sd: Mapping[str, torch.Tensor], seed: int, rel: float = 0.05) -> dict[str, torch.Tensor]:
    """A stand-in for a fine-tune in unit tests of the readers (not a benchmark model set)."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g) * v.std() * rel if v.ndim == 2 else v.clone()
            for k, v in sd.items()}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` (convert_hf_to_gguf.py)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def write_gguf(sd: Mapping[str, torch.Tensor], path: Path, qtype: str = "Q8_0", arch: str = "llama",
               heads: int = 4, kv_heads: int = 2, file_type: str | None = None,
               force_types: Mapping[str, str] | None = None, split_max_tensors: int = 0,
               head_keys: tuple[str, ...] = ("head_count", "head_count_kv")) -> Path:
    """Write ``sd`` (transformers names) as a GGUF file the way llama.cpp's converter does.

    ``force_types`` maps transformers names to a type to store them in instead (``"F16"``, ``"Q4_K"``...).
    ``split_max_tensors``: split the model into files of at most this many tensors as ``gguf-split`` does
    (the package's writer names them ``<stem>-00001-of-0000n.gguf``).
    """
    import gguf

    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    n_blocks = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("model.layers.")), default=0)
    if arch == "gpt2":
        n_blocks = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.h."))
    names = gguf.TensorNameMap(arch_enum, n_blocks)
    writer = gguf.GGUFWriter(str(path), arch, split_max_tensors=split_max_tensors)
    writer.add_block_count(n_blocks)
    # q/k are permuted with ``heads`` / ``kv_heads`` either way; ``head_keys`` says which counts the file states
    # (llama.cpp's converter writes head_count always, head_count_kv where the config has one).
    if "head_count" in head_keys:
        writer.add_head_count(heads)
    if "head_count_kv" in head_keys:
        writer.add_head_count_kv(kv_heads)
    writer.add_name(path.stem)
    if file_type is not None:
        writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{file_type}"]))
    force = dict(force_types or {})
    for hf_name, tensor in sd.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name is not None, hf_name
        data = tensor.float().numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if arch == "gpt2" and hf_name.endswith((".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight",
                                                ".mlp.c_proj.weight")):
            data = np.ascontiguousarray(data.T)
        kind = force.get(hf_name, qtype if data.ndim == 2 else "F32")
        q = gguf.GGMLQuantizationType[kind]
        if q == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data.astype(np.float32))
        elif q == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            packed = quantize(data.astype(np.float32), kind)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: transformers ``model_type`` -> (GGUF architecture, head-count key of the config, kv-head key).
_HF_ARCHS = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gpt2": "gpt2", "bert": "bert"}


def hf_to_gguf(model_dir: Path, path: Path, qtype: str = "Q8_0") -> Path:
    """Convert a transformers checkpoint folder (``config.json`` + ``model.safetensors``) to GGUF as
    ``convert_hf_to_gguf.py`` does for Llama, Qwen2, Qwen3, GPT-2 and BERT: its per-model renames (BERT:
    no ``bert.`` prefix, no pooler, a sequence classifier's ``classifier`` written as ``classifier.out_proj``),
    names through :class:`gguf.TensorNameMap`, Llama q/k rows permuted, GPT-2 ``Conv1D`` weights transposed
    and its tied LM head written as ``output``; 2-D weights in ``qtype`` (F16 where a row is not a whole
    number of blocks, as llama-quantize falls back), the rest in float32."""
    import json

    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = _HF_ARCHS[cfg["model_type"]]
    state = load_file(str(model_dir / "model.safetensors"))
    n_blocks = int(cfg.get("num_hidden_layers") or cfg.get("n_layer"))
    heads = int(cfg.get("num_attention_heads") or cfg.get("n_head"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
    names = gguf.TensorNameMap(arch_enum, n_blocks)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(n_blocks)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{qtype}"]))
    tensors: list[tuple[str, np.ndarray]] = []
    for hf_name, tensor in state.items():
        key = hf_name
        if arch == "bert":
            key = key.removeprefix("bert.")
            if key.startswith("pooler.") or key.endswith("position_ids"):
                continue
            key = {"classifier.weight": "classifier.out_proj.weight",
                   "classifier.bias": "classifier.out_proj.bias"}.get(key, key)
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # GPT-2's causal-mask buffers
        data = tensor.float().numpy()
        if arch == "llama" and key.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif arch == "llama" and key.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if arch == "gpt2" and key.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            data = np.ascontiguousarray(data.T)
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        assert name is not None, (arch, hf_name)
        tensors.append((name, data))
        if arch == "gpt2" and name == "token_embd.weight":
            tensors.append(("output.weight", data))
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype]][0]
    for name, data in tensors:
        if data.ndim < 2 or name.startswith(("position_embd", "token_types")):
            writer.add_tensor(name, data.astype(np.float32))
        elif data.shape[-1] % block:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            packed = quantize(data.astype(np.float32), qtype)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize_q4_k(data: np.ndarray) -> np.ndarray:
    """Q4_K blocks laid out as ggml's ``block_q4_K`` (``ggml-common.h``): f16 ``d`` and ``dmin``, 12 bytes of
    6-bit sub-block scales and mins, 128 bytes of nibbles (the ``gguf`` package dequantizes Q4_K but has no
    quantizer for it; this is llama.cpp's reference rounding without its iterative search)."""
    rows = data.reshape(-1, 256).astype(np.float32)
    sub = rows.reshape(-1, 8, 32)
    lo = np.minimum(sub.min(axis=2), 0.0)
    scale = (sub.max(axis=2) - lo) / 15.0
    d = (scale.max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    dmin = ((-lo).max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / np.where(d == 0, 1, d)[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.round(-lo / np.where(dmin == 0, 1, dmin)[:, None]), 0, 63).astype(np.uint8)
    step = (d[:, None] * sc)[:, :, None]
    q = np.clip(np.round((sub + (dmin[:, None] * mn)[:, :, None]) / np.where(step == 0, 1, step)), 0, 15)
    q = q.astype(np.uint8)
    scales = np.empty((len(rows), 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    qs = (q[:, 0::2, :] | (q[:, 1::2, :] << 4)).reshape(len(rows), 128)
    blocks = np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2),
                             dmin.astype(np.float16).view(np.uint8).reshape(-1, 2), scales, qs], axis=1)
    return blocks.reshape(*data.shape[:-1], data.shape[-1] // 256 * 144)


def quantize_q6_k(data: np.ndarray) -> np.ndarray:
    """Q6_K blocks laid out as ggml's ``block_q6_K``: 128 bytes of low nibbles ``ql``, 64 bytes of high bit pairs
    ``qh``, 16 int8 scales (one per 16 values), f16 ``d``; a value is ``d * scale * (q - 32)`` with ``q`` 6 bits
    (the package dequantizes Q6_K but has no quantizer for it; llama.cpp's reference rounding without its
    search). Value ``128 h + 32 k + i`` of a block: low nibble of ``ql[64 h + 32 (k & 1) + i]`` (its upper
    nibble for k >= 2), high bits ``(qh[32 h + i] >> 2 k) & 3``."""
    rows = data.reshape(-1, 256).astype(np.float32)
    groups = rows.reshape(-1, 16, 16)
    scale = np.abs(groups).max(axis=2) / 31.0  # (blocks, 16)
    d = (scale.max(axis=1) / 127.0).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / np.where(d == 0, 1, d)[:, None]), -128, 127).astype(np.int8)
    step = (d[:, None] * sc)[:, :, None]
    q = (np.clip(np.round(groups / np.where(step == 0, 1, step)), -32, 31) + 32).astype(np.uint8).reshape(-1, 256)
    v = q.reshape(-1, 2, 4, 32)  # (blocks, half, k, i)
    low, high = v & 0x0F, v >> 4
    ql = np.concatenate([low[:, h, k] | (low[:, h, k + 2] << 4) for h in range(2) for k in range(2)],
                        axis=1)  # ql[64 h + 32 k + i], k < 2
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6))  # (blocks, 2, 32)
    blocks = np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8),
                             d.astype(np.float16).view(np.uint8).reshape(-1, 2)], axis=1)
    return blocks.reshape(*data.shape[:-1], data.shape[-1] // 256 * 210)


def quantize(data: np.ndarray, kind: str) -> np.ndarray:
    """``data`` quantized to ``kind`` by the ``gguf`` package (Q4_K by :func:`quantize_q4_k`, Q6_K by
    :func:`quantize_q6_k`: the package has no quantizer for them)."""
    import gguf

    if kind == "Q4_K":
        return quantize_q4_k(data)
    if kind == "Q6_K":
        return quantize_q6_k(data)
    return gguf.quants.quantize(data, gguf.GGMLQuantizationType[kind])


def gguf_roundtrip(sd: Mapping[str, torch.Tensor], qtype: str) -> dict[str, torch.Tensor]:
    """What a GGUF of ``sd`` holds once dequantized by the package (the reference a reader must match)."""
    import gguf

    q = gguf.GGMLQuantizationType[qtype]
    out = {}
    for k, v in sd.items():
        data = v.float().numpy()
        if data.ndim == 2:
            out[k] = torch.from_numpy(gguf.quants.dequantize(quantize(data, qtype), q).copy())
        else:
            out[k] = v.float()
    return out


# --- quantized safetensors ----------------------------------------------------------------------------

def module_of(sd: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """An ``nn.Module`` tree whose ``state_dict()`` is ``sd`` (Linear for 2-D weights, Embedding for
    embeddings, a bare parameter for 1-D ones), for the quantizers that work on modules."""
    root = torch.nn.Module()
    for name, t in sd.items():
        *path, param = name.split(".")
        if param != "weight":
            raise ValueError(name)
        parent = root
        for part in path[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        if t.ndim == 2 and "embed" in path[-1]:
            mod: torch.nn.Module = torch.nn.Embedding(*t.shape)
        elif t.ndim == 2:
            mod = torch.nn.Linear(t.shape[1], t.shape[0], bias=False)
        else:
            mod = torch.nn.Module()
            mod.weight = torch.nn.Parameter(torch.empty_like(t))
        with torch.no_grad():
            mod.weight.copy_(t)
        parent.add_module(path[-1], mod)
    return root


def quanto_state(sd: Mapping[str, torch.Tensor], weights: str) -> dict[str, torch.Tensor]:
    """``sd`` quantized by optimum-quanto (``quantize`` + ``freeze``) and its state dict as saved."""
    from optimum import quanto

    model = module_of(sd)
    quanto.quantize(model, weights=getattr(quanto, weights))
    quanto.freeze(model)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def compressed_tensors_state(sd: Mapping[str, torch.Tensor], weights: dict, fmt: str,
                             dtype: torch.dtype = torch.bfloat16) -> tuple[dict, dict, dict]:
    """``sd``'s Linear weights quantized and compressed by compressed-tensors (llm-compressor's saving path:
    ``apply_quantization_config``, min-max scales by the library's ``calculate_qparams``, then
    ``ModelCompressor.compress_model``), ``lm_head`` left in float as llm-compressor's recipes do.

    Returns the state dict as saved, the ``quantization_config`` for ``config.json``, and the weights the
    library itself decodes from that state (``decompress_model``), by their saved names.
    """
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

    model = module_of(sd).to(dtype)
    args = QuantizationArgs(**weights)
    config = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
                                ignore=["lm_head"])
    apply_quantization_config(model, config)
    for module in model.modules():
        if getattr(module, "quantization_scheme", None) is None:
            continue
        w = module.weight.data.float()
        if args.strategy == "tensor":
            lo, hi = w.min().reshape(1), w.max().reshape(1)
        elif args.strategy == "channel":
            lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
        elif args.strategy == "block":
            bh, bw = args.block_structure
            blocks = w.unflatten(0, (-1, bh)).unflatten(2, (-1, bw))
            lo, hi = blocks.amin((1, 3)), blocks.amax((1, 3))
        else:  # group, tensor_group
            groups = w.unflatten(1, (-1, args.group_size))
            lo, hi = groups.amin(2), groups.amax(2)
        global_scale = None
        if args.strategy == "tensor_group":
            global_scale = generate_gparam(w.min(), w.max())
            module.weight_global_scale.data.copy_(global_scale)
        scale, zero = calculate_qparams(lo, hi, args, global_scale=global_scale)
        module.weight_scale.data = scale if args.strategy == "tensor_group" else scale.to(module.weight_scale.dtype)
        if hasattr(module, "weight_zero_point"):
            module.weight_zero_point.data = zero.to(module.weight_zero_point.dtype)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    quant_config = {"quant_method": "compressed-tensors",
                    **compressor.quantization_config.model_dump(exclude=["quant_method"])}
    compressor.decompress_model(model)
    decoded = {k: v.detach().float() for k, v in model.state_dict().items() if k.endswith(".weight")}
    return state, quant_config, decoded


def mlx_quantized(folder: Path, out: Path, bits: int, group_size: int,
                  mixed: str | None = None) -> dict[str, torch.Tensor]:
    """The transformers model in ``folder`` quantized by MLX as ``mlx_lm.convert -q`` does it
    (``load_model``, ``quantize_model``, ``save_model``, ``save_config``: every Linear and the embeddings),
    written to ``out``; returns the weights MLX itself decodes from the saved file (``mx.dequantize`` of
    each module's stored codes, scales and biases), by saved name, as float32 tensors. ``mixed``: modules
    whose path contains it get 8 bits in groups of 32 (a mixed recipe, written per module in the config)."""
    import mlx.core as mx
    from mlx_lm.utils import load_model, quantize_model, save_config, save_model

    def predicate(path: str, module) -> bool | dict:
        return {"bits": 8, "group_size": 32} if mixed is not None and mixed in path else True

    model, config = load_model(folder)
    model, config = quantize_model(model, config, group_size=group_size, bits=bits, quant_predicate=predicate)
    save_model(out, model)
    save_config(config, out / "config.json")
    stored: dict = {}
    for f in sorted(out.glob("*.safetensors")):
        stored.update(mx.load(str(f)))
    decoded = {}
    for name, codes in stored.items():
        module = name[: -len(".weight")]
        if name.endswith(".weight") and module + ".scales" in stored:
            own = config["quantization"].get(module)
            b, g = (own["bits"], own["group_size"]) if isinstance(own, dict) else (bits, group_size)
            w = mx.dequantize(codes, stored[module + ".scales"], stored[module + ".biases"], group_size=g, bits=b)
            decoded[name] = torch.from_numpy(np.array(w.astype(mx.float32)))
    return decoded


def hqq_quantized(folder: Path, out: Path, bits: int, group_size: int, axis: int = 1,
                  compute_dtype: torch.dtype = torch.bfloat16, view_as_float: bool = False) -> dict[str, torch.Tensor]:
    """The transformers model in ``folder`` quantized by hqq on the CPU (``AutoHQQHFModel.quantize_model``:
    every Linear of the decoder blocks becomes an ``HQQLinear``) and written by hqq's own
    ``AutoHQQHFModel.save_to_safetensors`` to ``out``; returns what the library decodes
    (``HQQLinear.dequantize``) of each quantized layer, by its float weight's saved name, as float32."""
    import transformers
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    from hqq.models.hf.base import AutoHQQHFModel

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=compute_dtype)
    config = BaseQuantizeConfig(nbits=bits, group_size=group_size, axis=axis, view_as_float=view_as_float)
    AutoHQQHFModel.quantize_model(model, quant_config=config, compute_dtype=compute_dtype, device="cpu")
    AutoHQQHFModel.save_to_safetensors(model, str(out))
    return {name + ".weight": module.dequantize().float() for name, module in model.named_modules()
            if isinstance(module, HQQLinear)}


def bnb_state(sd: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """``sd`` with its Linear weights quantized by bitsandbytes on the CPU (``"int8"``, ``"nf4"``, ``"fp4"``),
    as ``Linear8bitLt`` / ``Linear4bit`` save them."""
    import bitsandbytes.nn as bnn

    model = module_of(sd)
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, torch.nn.Linear):
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        w = mod.weight.detach().clone()
        if kind == "int8":
            new = bnn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False)
            new.weight = bnn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
            new = new.to("cpu")
        else:
            new = bnn.Linear4bit(w.shape[1], w.shape[0], bias=False, quant_type=kind, compress_statistics=True)
            new.weight = bnn.Params4bit(w, requires_grad=False, quant_type=kind,
                                        compress_statistics=True)._quantize("cpu")
        parent.add_module(name.rsplit(".", 1)[-1], new)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _pack_int32(codes: torch.Tensor, bits: int, dim: int, order: tuple[int, ...] | None = None) -> torch.Tensor:
    """Pack ``codes`` (non-negative ints < 2**bits) into int32 along ``dim``, lowest bits first."""
    pack = 32 // bits
    c = codes.to(torch.int64)
    if dim == 0:
        c = c.reshape(c.shape[0] // pack, pack, c.shape[1]).permute(0, 2, 1)  # (rows, cols, pack)
    else:
        c = c.reshape(c.shape[0], c.shape[1] // pack, pack)
    if order is not None:
        c = c[..., list(order)]
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    packed = (c << shifts).sum(-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def gptq_state(sd: Mapping[str, torch.Tensor], group: int = 32, bits: int = 4, awq: bool = False,
               v2: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``sd``'s Linear weights quantized with per-group asymmetric ``bits``-bit codes and packed as
    AutoGPTQ (format v1: zeros stored minus one, ``g_idx``; ``v2``: GPTQModel's format v2, zeros as they
    are) or AutoAWQ GEMM (interleaved order 0 2 4 6 1 3 5 7, packed along the output) pack them. Returns
    (state dict, what it dequantizes to)."""
    out: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    top = 2**bits - 1
    for name, w in sd.items():
        if w.ndim != 2 or "embed" in name or name.startswith("lm_head"):
            out[name] = w.half()
            ref[name] = w.half().float()
            continue
        base = name[: -len(".weight")]
        wt = w.T.float()  # (in, out)
        n_in, n_out = wt.shape
        g = wt.reshape(n_in // group, group, n_out)
        lo, hi = g.amin(1), g.amax(1)
        scale = ((hi - lo) / top).clamp_min(1e-8).half().float()
        zero = torch.round(-lo / scale).clamp(0 if awq else 1, top)  # v1 GPTQ cannot store a zero of 0
        q = torch.round(g / scale[:, None] + zero[:, None]).clamp(0, top).reshape(n_in, n_out)
        gidx = torch.arange(n_in) // group
        ref[name] = (scale[gidx] * (q - zero[gidx])).T.contiguous()
        out[base + ".scales"] = scale.half()
        if awq:
            order = (0, 2, 4, 6, 1, 3, 5, 7)
            out[base + ".qweight"] = _pack_int32(q, bits, dim=1, order=order)
            out[base + ".qzeros"] = _pack_int32(zero, bits, dim=1, order=order)
        else:
            out[base + ".qweight"] = _pack_int32(q, bits, dim=0)
            out[base + ".qzeros"] = _pack_int32(zero if v2 else zero - 1, bits, dim=1)
            out[base + ".g_idx"] = gidx.to(torch.int32)
    return out, ref


# --- Stable Diffusion single-file checkpoints ------------------------------------------------------------

def tiny_sd_unet(seed: int):
    """A tiny UNet2DConditionModel with SD 1.x's block structure (4 levels, cross-attention in the first
    three down blocks and last three up blocks), made by diffusers."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(8, 16, 16, 16), norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def tiny_sdxl_unet(seed: int, layers_per_block: int = 2):
    """A tiny UNet2DConditionModel with SDXL's block structure, made by diffusers: 3 levels, no attention at
    the first, transformer depths (1, 2, 2) (SDXL: 0, 2, 10), linear projections, and the "text_time"
    added-conditioning embedding (``add_embedding``, LDM ``label_emb.0``) fed pooled text and size ids."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=layers_per_block,
        block_out_channels=(8, 16, 16), norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 2), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=8 + 6 * 4,
    )


#: diffusers ResNet part -> LDM ``ResBlock`` part (``ldm/modules/diffusionmodules/openaimodel.py``).
_LDM_RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                     "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_LDM_WHOLE = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
              "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}


def ldm_unet_names(diffusers_names) -> dict[str, str]:
    """diffusers UNet name -> the name the original (LDM / sgm) ``UNetModel`` gives the same tensor, written
    here from the LDM model's construction (``input_blocks``: conv_in, then per level its ResBlocks, each
    with its SpatialTransformer if the level has attention, then a Downsample; ``output_blocks`` per level
    one more ResBlock, the last followed by an Upsample), independently of the reader; the tests check it
    against diffusers' own ``convert_ldm_unet_checkpoint``."""
    names = list(diffusers_names)
    block = re.compile(r"^(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)$")
    resnets: dict[tuple[str, int], int] = {}
    attention: set[tuple[str, int]] = set()
    sampler: set[tuple[str, int]] = set()
    for n in names:
        m = block.match(n)
        if m:
            key = (m[1], int(m[2]))
            if m[3] == "resnets":
                resnets[key] = max(resnets.get(key, 0), int(m[4]) + 1)
            elif m[3] == "attentions":
                attention.add(key)
            else:
                sampler.add(key)
    levels = {d: sorted(i for (w, i) in resnets if w == d) for d in ("down", "up")}
    first_in: dict[int, int] = {}
    at = 1
    for i in levels["down"]:
        first_in[i] = at
        at += resnets[("down", i)] + (("down", i) in sampler)
    first_out: dict[int, int] = {}
    at = 0
    for i in levels["up"]:
        first_out[i] = at
        at += resnets[("up", i)]

    def resnet_rest(rest: str) -> str:
        part, _, tail = rest.partition(".")
        return f"{_LDM_RESNET_PARTS[part]}.{tail}"

    out: dict[str, str] = {}
    for n in names:
        module, _, leaf = n.rpartition(".")
        if module in _LDM_WHOLE:
            out[n] = f"{_LDM_WHOLE[module]}.{leaf}"
            continue
        m = block.match(n)
        mid = re.match(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", n)
        if m:
            where, i, kind, j, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
            if where == "down":
                k = first_in[i] + (resnets[("down", i)] if kind == "downsamplers" else j)
                out[n] = {"resnets": f"input_blocks.{k}.0.{resnet_rest(rest) if kind == 'resnets' else rest}",
                          "attentions": f"input_blocks.{k}.1.{rest}",
                          "downsamplers": f"input_blocks.{k}.0.op.{rest.removeprefix('conv.')}"}[kind]
            else:
                k = first_out[i] + (resnets[("up", i)] - 1 if kind == "upsamplers" else j)
                out[n] = {"resnets": f"output_blocks.{k}.0.{resnet_rest(rest) if kind == 'resnets' else rest}",
                          "attentions": f"output_blocks.{k}.1.{rest}",
                          "upsamplers": f"output_blocks.{k}.{2 if ('up', i) in attention else 1}.{rest}"}[kind]
        elif mid:
            j = int(mid[2])
            out[n] = (f"middle_block.{2 * j}.{resnet_rest(mid[3])}" if mid[1] == "resnets"
                      else f"middle_block.{2 * j + 1}.{mid[3]}")
        else:
            raise KeyError(n)
    return out


def ldm_single_file(unet_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers UNet state dict in the original single-file layout (``model.diffusion_model.*``, names
    from :func:`ldm_unet_names`), plus a stand-in VAE and text-encoder tensor as a real single file carries."""
    names = ldm_unet_names(unet_state)
    out = {"model.diffusion_model." + names[k]: v.contiguous() for k, v in unet_state.items()}
    out["first_stage_model.decoder.conv_in.weight"] = torch.randn(8, 4, 3, 3)
    out["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    return out


# --- Tesseract LSTM models (.traineddata) ----------------------------------------------------------------

def tesseract_state(seed: int, ni: int = 12, ns: int = 16, no: int = 10, scale: float = 0.5
                    ) -> dict[str, torch.Tensor]:
    """The weight matrices of a tiny Tesseract network ``[1,ni Fs{ns} Lfx{ns} O1c{no}]``, each
    ``(outputs, inputs + 1)`` with the bias as the last column, named as the reader names them."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).double()

    sd = {"Series.1.Hidden.weight": r(ns, ni + 1)}
    for gate in ("CI", "GI", "GF1", "GO"):
        sd[f"Series.2.Lfx{ns}.{gate}.weight"] = r(ns, 2 * ns + 1)  # LSTM inputs: the layer's input + its state
    sd["Series.3.Output.weight"] = r(no, ns + 1)
    return sd


def write_traineddata(sd: Mapping[str, torch.Tensor], path: Path, int8: bool = False, lstm: bool = True,
                      version: str = "4.00.00alpha:tiny:test") -> Path:
    """Write ``sd`` (from :func:`tesseract_state`) as Tesseract serializes a recognizer: the component
    archive (``TessdataManager``) with the LSTM network at entry 17 (``Network::Serialize`` and each
    layer's ``Serialize``); ``int8`` as ``ConvertToInt`` stores it (codes and one scale per row)."""
    import struct

    def s(text: str) -> bytes:
        return struct.pack("<I", len(text)) + text.encode()

    def common(kind: str, name: str, ni: int, no: int, flags: int = 0) -> bytes:
        return b"\x00" + s(kind) + b"\x00\x00" + struct.pack("<iiii", flags, ni, no, 0) + s(name)

    def matrix(w: torch.Tensor) -> bytes:
        w64 = w.double().numpy()
        d1, d2 = w64.shape
        if not int8:
            return bytes([128]) + struct.pack("<II", d1, d2) + struct.pack("<d", 0.0) + w64.astype("<f8").tobytes()
        scale = np.abs(w64).max(axis=1) / 127.0
        codes = np.rint(w64 / np.where(scale > 0, scale, 1.0)[:, None]).astype(np.int8)
        return (bytes([129]) + struct.pack("<II", d1, d2) + b"\x00" + codes.tobytes()
                + struct.pack("<I", d1) + scale.astype("<f8").tobytes())

    hidden = sd["Series.1.Hidden.weight"]
    ns, ni = hidden.shape[0], hidden.shape[1] - 1
    no = sd["Series.3.Output.weight"].shape[0]
    lstm_name = next(k.split(".")[2] for k in sd if ".CI." in k)
    layers = [common("Input", "Input", ni, ni) + struct.pack("<5i", 1, 1, 0, ni, 0),
              common("Tanh", "Hidden", ni, ns) + matrix(hidden),
              common("LSTM", lstm_name, ns, ns) + struct.pack("<i", 2 * ns)
              + b"".join(matrix(sd[f"Series.2.{lstm_name}.{g}.weight"]) for g in ("CI", "GI", "GF1", "GO")),
              common("Softmax", "Output", ns, no) + matrix(sd["Series.3.Output.weight"])]
    network = (common("Series", "Series", ni, no, flags=64) + struct.pack("<I", len(layers)) + b"".join(layers)
               + struct.pack("<I", len(layers)) + struct.pack(f"<{len(layers)}f", *([1e-3] * len(layers))))
    components = {0: b"lang config\n", 23: version.encode()}
    if lstm:
        components[17] = network + b"trailing recognizer fields"
    n = 24
    offsets, body, at = [-1] * n, b"", 4 + 8 * n
    for i in sorted(components):
        offsets[i] = at + len(body)
        body += components[i]
    path.write_bytes(struct.pack("<i", n) + struct.pack(f"<{n}q", *offsets) + body)
    return path


# --- Stable Diffusion LoRA files (kohya-ss and diffusers layouts) --------------------------------------------

def sd_lora_unet(seed: int, base_seed: int = 1, rank: int = 4, alpha: float = 8.0, conv: bool = True):
    """A tiny SD UNet (:func:`tiny_sd_unet`) with a peft LoRA added the way diffusers' training scripts add
    one (``LoraConfig`` + ``add_adapter``) on the attention projections and, with ``conv``, the 1x1
    ``proj_in`` and the ResNets' 3x3 convolutions (LoCon); its B factors drawn (an untrained LoRA is zero)."""
    targets = ["to_q", "to_k", "to_v", "to_out.0"] + (["proj_in", "conv1", "conv2"] if conv else [])
    return with_drawn_lora(tiny_sd_unet(base_seed), targets, seed, rank, alpha)


def with_drawn_lora(unet, targets: list[str], seed: int, rank: int = 4, alpha: float = 8.0):
    """``unet`` with a peft LoRA on ``targets`` added as diffusers' training scripts add one (``LoraConfig``
    + ``add_adapter``), its B factors drawn from ``seed`` (an untrained LoRA is zero); returns ``unet``."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return unet


def denoising_steps(unet, seed: int, steps: int = 2, sdxl: bool = False):
    """``steps`` AdamW steps (lr 1e-3) of a denoising loss on random latents and conditions from ``seed``
    (with ``sdxl``, SDXL's added text and time conditions too); returns ``unet``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    for _ in range(steps):
        x = torch.randn(2, 4, 8, 8, generator=g)
        added = ({"text_embeds": torch.randn(2, 8, generator=g), "time_ids": torch.randn(2, 6, generator=g)}
                 if sdxl else None)
        cond = torch.randn(2, 3, 8, generator=g)
        out = unet(x, torch.tensor([10, 500]), cond, added_cond_kwargs=added).sample
        loss = (out - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return unet


class Style:
    """A synthetic image style: smooth latents (a few 2-D cosines of style-drawn frequencies, a style mean per
    channel) and the prompt embedding that conditions them."""

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.freqs = torch.rand(6, 2, generator=g) * 1.5
        self.mean = 0.5 * torch.randn(4, generator=g)
        self.prompt = torch.randn(3, 8, generator=g)

    def batch(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        amp = torch.randn(n, 6, 4, generator=g)
        phase = torch.rand(n, 6, generator=g) * 6.283
        waves = torch.cos(self.freqs[None, :, 0, None, None] * xx + self.freqs[None, :, 1, None, None] * yy
                          + phase[:, :, None, None])  # (n, 6, 8, 8)
        x0 = torch.einsum("nkc,nkhw->nchw", amp, waves) / 6 ** 0.5 + self.mean[None, :, None, None]
        cond = self.prompt[None].expand(n, -1, -1) + 0.1 * torch.randn(n, 3, 8, generator=g)
        return x0, cond


def denoise_train(unet, styles: list[Style], steps: int, lr: float, seed: int, batch: int = 16) -> dict[str, float]:
    """diffusers' text-to-image loop: noise a clean latent at a random timestep, predict the noise, AdamW.
    Only parameters with ``requires_grad`` train (a peft LoRA leaves the base frozen)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(seed)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    unet.train()
    first = last = 0.0
    for step in range(steps):
        style = styles[int(torch.randint(len(styles), (1,), generator=g))]
        x0, cond = style.batch(batch, g)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        pred = unet(sched.add_noise(x0, noise, t), t, cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if step == 0 else first
        last = 0.9 * last + 0.1 * loss.item() if step else loss.item()
    return {"steps": steps, "lr": lr, "loss_start": round(first, 5), "loss_end": round(last, 5)}


def tiny_text_encoder_lora(seed: int) -> dict[str, torch.Tensor]:
    """peft LoRA factors of a tiny CLIP text encoder (what a LoRA file's text-encoder half holds)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2,
                                      num_hidden_layers=1, vocab_size=32, max_position_embeddings=8))
    te = get_peft_model(te, LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian",
                                       target_modules=["q_proj", "v_proj"]))
    return {k.removeprefix("base_model.model."): v for k, v in get_peft_model_state_dict(te).items()}


def save_diffusers_lora(unet, folder: Path, with_metadata: bool = True, text_encoder: bool = False) -> Path:
    """``pytorch_lora_weights.safetensors`` as diffusers writes it (``save_lora_weights``, peft keys
    ``unet.<path>.lora_A.weight``), with the LoraConfig as ``lora_adapter_metadata`` when asked."""
    from diffusers import StableDiffusionPipeline
    from peft import get_peft_model_state_dict

    meta = unet.peft_config["default"].to_dict() if with_metadata else None
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True,
        unet_lora_adapter_metadata=meta,
        text_encoder_lora_layers=tiny_text_encoder_lora(3) if text_encoder else None)
    return folder / "pytorch_lora_weights.safetensors"


def save_old_diffusers_lora(unet, path: Path) -> Path:
    """The pre-peft diffusers layout (``unet.<path>.lora.down.weight`` / ``.lora.up.weight``), converted by
    diffusers' own ``convert_state_dict_to_diffusers``; attention layers only, as that layout had."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    old = convert_state_dict_to_diffusers({"unet." + k: v for k, v in get_peft_model_state_dict(unet).items()})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in old.items()}, str(path))
    return path


def save_kohya_lora(unet, path: Path, metadata: Mapping[str, str] | None = None, text_encoder: bool = True) -> Path:
    """A kohya-ss LoRA file (``lora_unet_*.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``, LoCon for
    convolutions) made by diffusers' ``convert_state_dict_to_kohya``; its ``.alpha`` set to the LoRA's
    ``lora_alpha`` (the converter writes the rank, which is only right when alpha = r), and the header
    metadata sd-scripts writes (``ss_network_dim``, ``ss_network_alpha``, plus ``metadata``)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    config = unet.peft_config["default"]
    state = {"unet." + k: v for k, v in get_peft_model_state_dict(unet).items()}
    if text_encoder:
        state.update({"text_encoder." + k: v for k, v in tiny_text_encoder_lora(3).items()})
    kohya = convert_state_dict_to_kohya(state)
    for k in kohya:
        if k.endswith(".alpha") and k.startswith("lora_unet_"):
            kohya[k] = torch.tensor(float(config.lora_alpha), dtype=torch.float16)  # sd-scripts stores fp16/fp32
    meta = {"ss_network_dim": str(config.r), "ss_network_alpha": str(config.lora_alpha),
            "ss_network_module": "networks.lora", "ss_base_model_version": "sd_v1", **(metadata or {})}
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata=meta)
    return path


def fused_unet_state(unet) -> dict[str, torch.Tensor]:
    """The UNet's weights with its LoRA merged by diffusers / peft themselves (``fuse_lora``), under the
    plain UNet names."""
    unet.fuse_lora()
    out = {}
    for k, v in unet.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().clone()
    return out


def diffusers_fused(path: Path, base_seed: int = 1) -> dict[str, torch.Tensor]:
    """A LoRA file as diffusers reads it (``lora_state_dict``: every layout it knows, kohya included, with
    its network alphas) loaded into a fresh base UNet and fused: the tool's own interpretation of the file."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin as Loader

    state, alphas = Loader.lora_state_dict(str(path))
    metadata = None
    if isinstance(state, tuple):  # (state, alphas, metadata) when asked; keep the pair form
        state, alphas = state[0], state[1]
    unet = tiny_sd_unet(base_seed)
    try:
        from diffusers.loaders.lora_base import _load_sft_state_dict_metadata

        metadata = _load_sft_state_dict_metadata(str(path))
    except (ImportError, OSError):
        metadata = None
    Loader.load_lora_into_unet(state, alphas, unet, metadata=metadata if not alphas else None)
    return fused_unet_state(unet)


# --- LyCORIS networks on a Stable Diffusion UNet (lycoris-lora, kohya layout) ---------------------------------

#: The SD 1.x targets of LyCORIS's kohya network (its "full" preset before it listed newer architectures'
#: blocks): 4.1.3's "full" also names TimestepEmbedding, which wraps time_embedding.linear_1 a second time on a
#: diffusers UNet and trips the library's own duplicate-name check.
LYCORIS_SD_PRESET = """enable_conv = true
unet_target_module = ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"]
unet_target_name = ["conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2"]
text_encoder_target_module = []
text_encoder_target_name = []
"""


def lycoris_unet(algo: str, folder: Path, seed: int = 0, steps: int = 1, sdxl: bool = False, preset: str | None = None,
                 **kwargs):
    """A tiny SD UNet (:func:`tiny_sd_unet`, or with ``sdxl`` :func:`tiny_sdxl_unet`; base seed 1) with a LyCORIS
    network made by the library's kohya entry point (``lycoris.kohya.create_network``, as sd-scripts'
    ``--network_module lycoris.kohya`` makes it), applied and trained ``steps`` real AdamW steps on the denoising
    loss. Returns ``(unet, network)``; the network saves with ``network.save_weights`` (kohya names
    ``lora_unet_<module>.<part>``, the module's diffusers path). ``preset`` is a LyCORIS preset (TOML) to use
    instead of :data:`LYCORIS_SD_PRESET`."""
    from lycoris.kohya import create_network

    (folder / "sd-preset.toml").write_text(LYCORIS_SD_PRESET if preset is None else preset)
    unet = tiny_sdxl_unet(1) if sdxl else tiny_sd_unet(1)
    torch.manual_seed(seed)
    kwargs = {"conv_dim": 4, "conv_alpha": 1.0, **kwargs}
    dim, alpha = kwargs.pop("dim", 4), kwargs.pop("alpha", 2.0)
    network = create_network(1.0, dim, alpha, None, None, unet, algo=algo, preset=str(folder / "sd-preset.toml"),
                             **kwargs)
    network.apply_to(None, unet, apply_text_encoder=False, apply_unet=True)
    params, _ = network.prepare_optimizer_params(unet_lr=1e-2)  # as sd-scripts asks the network
    opt = torch.optim.AdamW(params, lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    unet.train()
    for _ in range(steps):
        x = torch.randn(2, 4, 8, 8, generator=g)
        cond = torch.randn(2, 3, 8, generator=g)
        added = {"added_cond_kwargs": {"text_embeds": torch.randn(2, 8, generator=g),
                                       "time_ids": torch.randn(2, 6, generator=g)}} if sdxl else {}
        loss = (unet(x, torch.tensor([10, 500]), cond, **added).sample - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    unet.eval()
    network.eval()
    return unet, network


def lycoris_wrapped_unet(algo: str, seed: int = 0, **kwargs):
    """A tiny SD UNet (base seed 1) with a network made by LyCORIS's own wrapper (``lycoris.create_lycoris``, the
    ``LycorisNetwork`` that trainers wrapping a diffusers UNet directly use; it names modules
    ``lycoris_<module path with _>``) on the same layers as :func:`lycoris_unet`, applied and trained one real
    AdamW step on the denoising loss. Returns ``(unet, network)``."""
    from lycoris import LycorisNetwork, create_lycoris

    unet = tiny_sd_unet(1)
    saved = {k: v for k, v in vars(LycorisNetwork).items() if k.isupper()}  # apply_preset sets class attributes
    try:
        LycorisNetwork.apply_preset({"enable_conv": True, "target_module": ["Transformer2DModel", "ResnetBlock2D",
                                                                            "Downsample2D", "Upsample2D"],
                                     "target_name": ["conv_in", "conv_out", "time_embedding.linear_1",
                                                     "time_embedding.linear_2"]})
        torch.manual_seed(seed)
        kwargs = {"conv_dim": 4, "conv_alpha": 1.0, **kwargs}
        network = create_lycoris(unet, 1.0, linear_dim=kwargs.pop("dim", 4), linear_alpha=kwargs.pop("alpha", 2.0),
                                 algo=algo, **kwargs)
    finally:
        for k, v in saved.items():
            setattr(LycorisNetwork, k, v)
    network.apply_to()
    opt = torch.optim.AdamW(network.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    unet.train()
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    loss = (unet(x, torch.tensor([10, 500]), cond).sample - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    unet.eval()
    network.eval()
    return unet, network


def lycoris_applied_weights(network) -> dict[str, tuple[str, torch.Tensor, torch.Tensor | None]]:
    """What each LyCORIS module's own forward applies, by module: lora name -> ("delta" | "weight", weight, bias).

    The module's forward (its default, non-bypass mode) builds the weight it applies and hands it to the layer's
    op (``F.linear`` / ``F.conv2d`` / ``F.group_norm`` / ``F.layer_norm``): a LoCon / LoHa / LoKr / norm module the
    difference ``new - base`` (a norm module its bias's too), a full module
    the whole weight and bias (or, loaded from a file, their differences). The op is wrapped to record them while
    the forward runs on a probe input."""
    out: dict[str, tuple[str, torch.Tensor, torch.Tensor | None]] = {}
    for lora in getattr(network, "unet_loras", None) or network.loras:  # kohya network, or LycorisNetwork
        seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        op = lora.op

        def record(x, weight=None, bias=None, *args, _op=op, _seen=seen, **kw):
            _seen.append((weight.detach().clone(), None if bias is None else bias.detach().clone()))
            return _op(x, *args, weight=weight, bias=bias, **kw)

        layer = lora.org_module[0]
        if isinstance(layer, torch.nn.Linear):
            probe = torch.randn(1, layer.in_features)
        elif isinstance(layer, torch.nn.GroupNorm):
            probe = torch.randn(1, layer.num_channels, 8, 8)
        elif isinstance(layer, torch.nn.LayerNorm):
            probe = torch.randn(1, 3, *layer.normalized_shape)
        else:
            probe = torch.randn(1, layer.in_channels, 8, 8)
        lora.op = record
        try:
            with torch.no_grad():
                lora.forward(probe)
        finally:
            lora.op = op
        # a full module given the layer's weight (apply_to) applies it whole; one loaded from a file, the difference
        kind = "weight" if type(lora).__name__ == "FullModule" and not lora.is_diff else "delta"
        out[lora.lora_name] = (kind, *seen[-1])
    return out


def saved_llama(folder: Path, seed: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """A freshly initialised tiny Llama (hidden 128, 2 layers, grouped-query attention) saved by transformers
    in ``dtype`` into ``folder``; returns its state in float32."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    return {k: v.float() for k, v in model.state_dict().items()}


def read_in_pieces(reader, name: str, rows: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 2-D weight read through ``reader.read_into`` ``rows`` rows at a time into one reused buffer of
    ``dtype`` (the pass's way), as one float32 tensor: equal to ``reader.read(name)`` for a correct reader."""
    rows_total, cols = reader.tensor_infos()[name].shape
    buffer = torch.full((rows * cols,), float("nan"), dtype=dtype)
    pieces = []
    for r0 in range(0, rows_total, rows):
        r1 = min(rows_total, r0 + rows)
        piece = reader.read_into(name, (r0, r1), buffer[: (r1 - r0) * cols])
        pieces.append(piece.reshape(r1 - r0, cols).to(torch.float32, copy=True))  # the buffer is reused
    return torch.cat(pieces)


class ConvNet(torch.nn.Module):
    """A convolution and a linear layer: PEFT's LoHa, LoKr, OFT, BOFT and HRA take both."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3)
        self.proj = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x).mean((2, 3)))


def peft_conv_set(folder: Path, kind: str, config: Any) -> dict[str, torch.Tensor]:
    """A base :class:`ConvNet` and an adapter trained on it (AdamW steps on a fixed regression batch) under
    ``folder``; PEFT's merged weights."""
    import json

    from peft import get_peft_model
    from safetensors.torch import save_file

    from mother_core.io.names import normalise_name

    torch.manual_seed(0)
    net = ConvNet()
    (folder / "base").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "base" / "model.safetensors"))
    (folder / "base" / "config.json").write_text("{}")
    model = get_peft_model(net, config)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 4, 7, 7, generator=g), torch.randn(16, 6, generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(4):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(folder / kind)
    config_path = folder / kind / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = "base"  # a custom module has no hub name; say which folder
    config_path.write_text(json.dumps(saved))
    return {normalise_name(k): v.detach().clone() for k, v in model.merge_and_unload().state_dict().items()}


def load_llama(folder: Path) -> Any:
    """A transformers Llama saved under ``folder``, in float32."""
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)


def peft_llama_set(root: Path, configs: Mapping[str, Any], seed: int, biases: bool = False,
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """A tiny Llama (attention biases on; with ``biases`` drawn, not zero) saved under ``root / "base"``, and
    one adapter per ``configs`` entry trained on it (4 AdamW steps, seeds from ``seed``) and saved by PEFT
    under ``root / kind``; PEFT's ``merge_and_unload`` weights per kind."""
    from peft import get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from checkpoint_factory import adam_steps
    from mother_core.io.names import normalise_name

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
                         max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    if biases:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0, 0.1)
    model.save_pretrained(root / "base")
    merged: dict[str, dict[str, torch.Tensor]] = {}
    for i, (kind, adapter) in enumerate(configs.items()):
        torch.manual_seed(seed + i)
        peft_model = get_peft_model(load_llama(root / "base"), adapter)
        adam_steps(peft_model, seed + i, 4, 1e-2)
        peft_model.save_pretrained(root / kind)
        merged[kind] = {normalise_name(k): v.detach().clone()
                        for k, v in peft_model.merge_and_unload().state_dict().items()}
    return merged


#: The decoders :func:`use_table_kernel` built, by (module, permuted): each build is new numba functions, which
#: compile at their first call (about 6 CPU seconds for the HQQ decoder), so a test process builds each once.
_TABLE_KERNELS: dict[tuple[str, bool], Any] = {}


def use_table_kernel(module, permuted: bool, monkeypatch) -> None:
    """Install ``module``'s compiled decoder (:mod:`mother_core.io.compressed_fast`, :mod:`~mother_core.io.hqq_fast`)
    with the AVX-512 lookups of 16 codes (``permuted``) or with the portable loops; skips the test where numba
    is missing, or where the lookups are asked for on a CPU without AVX-512."""
    import pytest

    from mother_core.io import compressed_fast, permute16

    if not compressed_fast.available():
        pytest.skip("numba is not installed")
    if permuted and not permute16.available():
        pytest.skip("no AVX-512 here: the portable loops only")
    key = (module.__name__, permuted)
    if key not in _TABLE_KERNELS:
        _TABLE_KERNELS[key] = module._build(permuted)
    monkeypatch.setattr(module, "_KERNEL", _TABLE_KERNELS[key])


def assert_adapters_beside_one_problem(result, problem_file: str, phrases: tuple[str, ...], adapters, base: str):
    """``result`` (a recovery) has one problem, of ``problem_file``, whose message holds every phrase, and each of
    ``adapters`` is an ``adapter`` child of ``base`` at a confirmed adapter's confidence: LyCORIS updates are not low
    rank, so that the merged file differs from its base is what the weights confirm (before: 0.6, "not
    confirmed"). Returns the edges by child."""
    (problem,) = result.problems
    assert Path(problem["path"]).name == problem_file
    for phrase in phrases:
        assert phrase in problem["message"], (phrase, problem["message"])
    edges = {e.child: e for e in result.edges}
    for name in adapters:
        assert (edges[name].parent, edges[name].relation) == (base, "adapter"), edges[name]
        assert edges[name].relation_confidence >= 0.9, (name, edges[name].relation_confidence)
    return edges


def elsewhere_family(roles: tuple[str, ...], out: Path) -> dict[str, Path]:
    """The models ``roles`` of benchmarks/elsewhere_set.py's plan, made by the set's own recipe (real training,
    mergekit) under ``out``, one folder per role, on one thread as the set is made (the same models, bit for bit)."""
    import sys

    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        import elsewhere_set
    finally:
        sys.path.remove(str(benchmarks))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folders: dict[str, Path] = {}
        arch: dict[str, str] = {}
        for node in (n for n in elsewhere_set.plan() if n.role in roles):
            folders[node.role] = out / node.role
            arch[node.role] = elsewhere_set.make(node, folders, folders[node.role], arch)
    finally:
        torch.set_num_threads(threads)
    return folders
