"""Quantized children with the real quantizers: GGUF (``gguf``), optimum-quanto and bitsandbytes.

GGUF files are written as llama.cpp's ``convert_hf_to_gguf.py`` writes them for these architectures:
tensor names from ``gguf.get_tensor_name_map``, Llama / Mistral ``q_proj`` and ``k_proj`` rows permuted
(llama.cpp's rotary layout), GPT-2's ``Conv1D`` weights transposed to (out, in) and its tied embedding
written again as ``output.weight``, BERT's ``bert.`` prefix and pooler dropped and its classifier written as
``cls.output``; mixture-of-experts blocks with each projection's experts stacked into one (experts, out, in)
tensor under the merged name the converter maps (``blk.N.ffn_gate_exps`` / ``ffn_up_exps`` / ``ffn_down_exps``,
Mixtral under the ``llama`` architecture, with ``expert_count`` / ``expert_used_count``); 1-D tensors, position and
token-type embeddings stay F32, matrices whose rows are not a whole number of blocks fall back to F16.
Blocks are quantized by ``gguf.quants.quantize`` (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1); as ``llama-quantize``
does, a 4-bit file keeps ``output.weight`` at a higher precision (Q8_0 here: the Python package cannot
write Q6_K).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from .archs import ARCHS, model_class
from .plan import TypedNode

GGUF_FILE_TYPES = {"Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "MXFP4": 38}
TOKENIZER_MODEL = {"llama": "llama", "mistral": "llama", "qwen2": "gpt2", "gpt2": "gpt2", "bert": "bert",
                   "phi3": "llama", "gemma": "llama", "gpt_neox": "gpt2", "starcoder2": "gpt2",
                   "qwen3": "gpt2", "granite": "gpt2", "olmo2": "gpt2", "gemma2": "llama", "llama_tied": "gpt2",
                   "mixtral": "llama", "qwen3_moe": "gpt2", "olmoe": "gpt2"}
#: Architectures whose GGUF metadata is llama.cpp's RMS-norm / rotary family.
_RMS_ARCHS = ("llama", "mistral", "qwen2", "phi3", "gemma", "qwen3", "granite", "olmo2", "gemma2", "llama_tied",
              "mixtral", "qwen3_moe", "olmoe")
#: Architectures whose q/k rows ``convert_hf_to_gguf.py`` permutes (its ``LlamaModel`` and subclasses).
_PERMUTED = ("llama", "mistral", "granite", "llama_tied", "mixtral")
#: One expert's tensor as ``save_pretrained`` writes it (``...experts.<E>.w1.weight``,
#: ``...experts.<E>.gate_proj.weight``).
_EXPERT = re.compile(r"^(?P<block>.+\.experts)\.(?P<index>\d+)\.(?P<rest>.+)$")


def _stack_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each projection's experts stacked (experts, out, in) under the merged name the converter
    gives them (``model.layers.N.mlp.experts.gate_proj.weight``; Mixtral's ``block_sparse_moe.experts.w1.weight``),
    in the converter's order: the stacked tensor where its block's last expert was."""
    groups: dict[str, dict[int, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        m = _EXPERT.match(name)
        if m is None:
            out[name] = t
            continue
        merged = f"{m['block']}.{m['rest']}"
        groups.setdefault(merged, {})[int(m["index"])] = t
        out[merged] = t  # placeholder, replaced below (keeps the order)
    for merged, members in groups.items():
        out[merged] = torch.stack([members[e] for e in range(len(members))])
    return out
#: Architectures whose converter writes every ``*norm.weight`` as 1 + w (Gemma's RMSNorm scales by 1 + w).
_NORM_PLUS_ONE = ("gemma", "gemma2")


def llama_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's ``LlamaModel.permute``: HF's rotary halves to llama.cpp's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def neox_qkv(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's ``GPTNeoXModel.modify_tensors``: rows grouped per head as (q, k, v) become all
    q heads, then all k, then all v ("Map bloom-style qkv_linear to gpt-style qkv_linear")."""
    per = t.reshape(n_head, 3, t.shape[0] // (3 * n_head), *t.shape[1:])
    return torch.cat([per[:, k].reshape(-1, *t.shape[1:]) for k in range(3)], dim=0)


def gguf_tensors(arch: str, state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
    """The (GGUF name, tensor) pairs ``convert_hf_to_gguf.py`` would write for ``state`` (float32)."""
    import gguf

    gg_arch = ARCHS[arch].gguf_arch
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[gg_arch]
    n_layers = int(cfg.get("num_hidden_layers", cfg.get("n_layer")) or 0)
    tmap = gguf.get_tensor_name_map(arch_enum, n_layers)
    out: list[tuple[str, torch.Tensor]] = []
    for name, t in _stack_experts(state).items():
        t = t.float()
        if name.endswith((".attn.bias", ".attn.masked_bias", "position_ids")):
            continue  # buffers, not weights
        if arch in _PERMUTED:
            if name.endswith("q_proj.weight"):
                t = llama_permute(t, cfg["num_attention_heads"])
            elif name.endswith("k_proj.weight"):
                t = llama_permute(t, cfg["num_key_value_heads"])
        if arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            t = t.T.contiguous()  # Conv1D (in, out) -> (out, in)
        if name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue  # tied to the embeddings (the converter writes token_embd only)
        if arch in _NORM_PLUS_ONE and name.endswith("norm.weight"):
            t = t + 1  # GemmaModel / Gemma2Model: HF's RMSNorm scales by (1 + w), llama.cpp's by w
        if arch == "gpt_neox" and ".attention.query_key_value." in name:
            t = neox_qkv(t, cfg["num_attention_heads"])
        key = name
        if arch == "bert":
            # convert_hf_to_gguf's BertModel: no "bert." prefix, no pooler (llama.cpp pools itself), and
            # a sequence classifier's projection written as the classification output head.
            key = name.removeprefix("bert.")
            if key.startswith("pooler."):
                continue
            key = {
                "classifier.weight": "classifier.out_proj.weight",
                "classifier.bias": "classifier.out_proj.bias",
            }.get(key, key)
        new = tmap.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"no GGUF name for {name!r} ({gg_arch})")
        out.append((new, t))
        if arch == "gpt2" and new == "token_embd.weight":
            out.append(("output.weight", t))  # GPT-2's LM head is tied to wte
    return out


def _gguf_qtype(name: str, t: torch.Tensor, qtype: Any) -> Any:
    import gguf

    Q = gguf.GGMLQuantizationType
    # convert_hf_to_gguf keeps these in float32 whatever the file type (its prepare_tensors: position and
    # token-type embeddings, the MoE router ``ffn_gate_inp``)
    if t.ndim < 2 or name.startswith(("position_embd", "token_types")) or ".ffn_gate_inp." in name:
        return Q.F32
    if name == "output.weight" and qtype != Q.Q8_0:
        qtype = Q.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return qtype if t.shape[-1] % block == 0 else Q.F16


def write_gguf(arch: str, parent: Path, path: Path, qtype_name: str, display_name: str,
               base_models: list[str]) -> dict[str, Any]:
    """Write ``path`` (one GGUF file) from the safetensors folder ``parent``; returns per-type tensor counts."""
    import gguf

    cfg = json.loads((parent / "config.json").read_text())
    from .ops import load_state

    state = load_state(parent)
    qtype = gguf.GGMLQuantizationType[qtype_name]
    w = gguf.GGUFWriter(str(path), ARCHS[arch].gguf_arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(display_name)
    if base_models:
        w.add_base_model_count(len(base_models))
        for i, b in enumerate(base_models):
            w.add_base_model_name(i, b)
    hidden = cfg.get("hidden_size", cfg.get("n_embd"))
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer"))
    heads = cfg.get("num_attention_heads", cfg.get("n_head"))
    w.add_context_length(cfg.get("max_position_embeddings", cfg.get("n_positions")))
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * hidden)
    w.add_head_count(heads)
    if arch in _RMS_ARCHS:
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_freq_base(float(cfg.get("rope_parameters", {}).get("rope_theta", 10000.0)))
        w.add_rope_dimension_count(hidden // heads)
    else:
        w.add_layer_norm_eps(cfg.get("layer_norm_eps", cfg.get("layer_norm_epsilon", cfg.get("norm_epsilon", 1e-5))))
        if "num_key_value_heads" in cfg:  # StarCoder2: grouped-query attention with LayerNorms
            w.add_head_count_kv(cfg["num_key_value_heads"])
    experts = cfg.get("num_local_experts") or cfg.get("num_experts")
    if experts:  # convert_hf_to_gguf: add_expert_count / add_expert_used_count (Qwen3-MoE: the expert width too)
        w.add_expert_count(experts)
        w.add_expert_used_count(cfg["num_experts_per_tok"])
        if cfg.get("moe_intermediate_size"):
            w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    if arch == "bert":
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.CLS)
    w.add_file_type(GGUF_FILE_TYPES[qtype_name])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocab = cfg["vocab_size"]
    w.add_tokenizer_model(TOKENIZER_MODEL[arch])
    w.add_token_list([f"<t{i}>" for i in range(vocab)])
    w.add_token_types([gguf.TokenType.CONTROL if i < 4 else gguf.TokenType.NORMAL for i in range(vocab)])
    counts: dict[str, int] = {}
    for name, t in gguf_tensors(arch, state, cfg):
        qt = _gguf_qtype(name, t, qtype)
        counts[qt.name] = counts.get(qt.name, 0) + 1
        arr = t.numpy()
        if qt == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qt == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr.astype(np.float32), qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensor_types": counts}


def _quanto_class(arch: str) -> Any:
    from optimum.quanto import QuantizedModelForCausalLM
    from optimum.quanto.models.transformers_models import QuantizedTransformersModel
    from transformers import AutoModelForSequenceClassification

    if ARCHS[arch].objective == "causal":
        return QuantizedModelForCausalLM

    class QuantizedModelForSequenceClassification(QuantizedTransformersModel):  # quanto ships only the LM one
        auto_class = AutoModelForSequenceClassification

    return QuantizedModelForSequenceClassification


def write_quanto(arch: str, parent: Path, out: Path, weights: str) -> dict[str, Any]:
    """optimum-quanto weight quantization (``quantize`` + ``freeze``), saved with its ``quanto_qmap.json``."""
    import optimum.quanto as oq

    model = model_class(arch).from_pretrained(str(parent), local_files_only=True)
    exclude = ARCHS[arch].lm_head if ARCHS[arch].objective == "causal" else "classifier"
    qmodel = _quanto_class(arch).quantize(model, weights=getattr(oq, weights), exclude=exclude)
    qmodel.save_pretrained(str(out))
    return {}


def write_bnb(arch: str, parent: Path, out: Path, quant_type: str) -> dict[str, Any]:
    """bitsandbytes 4-bit (NF4 / FP4) or LLM.int8 (``int8``) through transformers' ``BitsAndBytesConfig``,
    on the CPU."""
    from transformers import BitsAndBytesConfig

    if quant_type == "int8":
        qc = BitsAndBytesConfig(load_in_8bit=True)
    else:
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                bnb_4bit_compute_dtype=torch.float32)
    model = model_class(arch).from_pretrained(str(parent), local_files_only=True, quantization_config=qc,
                                              device_map="cpu")
    model.save_pretrained(str(out))
    return {}


def write_hqq(arch: str, parent: Path, out: Path, bits: int, group: int) -> dict[str, Any]:
    """hqq on the CPU (``AutoHQQHFModel.quantize_model``: every Linear of the decoder blocks an ``HQQLinear``),
    written by hqq's own ``save_to_safetensors`` (``model.safetensors`` and ``config.json``)."""
    from hqq.core.quantize import BaseQuantizeConfig
    from hqq.models.hf.base import AutoHQQHFModel

    model = model_class(arch).from_pretrained(str(parent), local_files_only=True, dtype=torch.bfloat16)
    AutoHQQHFModel.quantize_model(model, quant_config=BaseQuantizeConfig(nbits=bits, group_size=group),
                                  compute_dtype=torch.bfloat16, device="cpu")
    AutoHQQHFModel.save_to_safetensors(model, str(out))
    return {}


def make_quantized(node: TypedNode, parent: Path, out: Path, ids: dict[int, str], declare_name: bool,
                   base_models: list[str]) -> dict[str, Any]:
    """Dispatch a quantization op (``gguf``, ``quanto``, ``bnb``) to its tool.

    ``declare_name``: a GGUF's ``general.name`` is its source's id (as the converter writes the folder
    name) or a generic name (renamed by the uploader); ``base_models``: the source's declared bases.
    """
    p = node.params
    out.mkdir(parents=True, exist_ok=True)
    if node.op == "gguf":
        name = ids[node.parents[0]] if declare_name else f"{node.arch.capitalize()} Tiny"
        return {**write_gguf(node.arch, parent, out / f"ggml-model-{p['qtype']}.gguf", p["qtype"], name, base_models),
                "general_name": name}
    if node.op == "quanto":
        return write_quanto(node.arch, parent, out, p["weights"])
    if node.op == "bnb":
        return write_bnb(node.arch, parent, out, p["quant_type"])
    if node.op == "hqq":
        return write_hqq(node.arch, parent, out, p["bits"], p["group"])
    raise ValueError(node.op)
