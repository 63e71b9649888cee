"""The transformers architectures of the typed zoo: configs, objectives, LoRA targets, GGUF names.

Every model is a real ``transformers`` class (``LlamaForCausalLM`` with grouped-query attention,
``Qwen2ForCausalLM``, ``MistralForCausalLM``, ``GPT2LMHeadModel``, ``BertForSequenceClassification``), so the
checkpoints carry the tensor names and ``config.json`` that the hub's files have, and the real tools
(peft, mergekit, gguf, quanto, bitsandbytes) work on them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data import PAD, SEQUENCE_TASKS, SequenceTask, _seq_one


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the typed zoo.

    Attributes
    ----------
    name : str
        Short key (``llama``, ``qwen2``, ``mistral``, ``gpt2``, ``bert``...), the ``model_type`` of its config
        (``llama_tied``: a Llama with a tied head; ``qwen3_cls``: Qwen3 with a classification head).
    objective : str
        ``causal`` (next-token) or ``classify`` (BERT: which procedural task made the sequence).
    lora_targets : tuple of str
        PEFT ``target_modules`` (module-name suffixes) for adapters.
    mlp_up, mlp_down : tuple of str
        Name templates (``{i}`` = layer index) of the MLP's input projections (rows = neurons) and output
        projection (columns = neurons), used to prune MLP neurons.
    conv1d : bool
        GPT-2 stores its projections as ``Conv1D`` with weights (in, out): neurons are columns of the
        input projections and rows of the output one.
    gguf_arch : str or None
        llama.cpp's architecture name (``general.architecture``), as ``convert_hf_to_gguf.py`` writes it;
        None where llama.cpp has no such architecture (OPT).
    lm_head : str
        The output projection's module name (left unquantized by quanto, as its examples do).
    tied : bool
        The head is tied to the embeddings (one stored tensor).
    """

    name: str
    objective: str
    lora_targets: tuple[str, ...]
    mlp_up: tuple[str, ...]
    mlp_down: tuple[str, ...]
    conv1d: bool
    gguf_arch: str | None
    lm_head: str = "lm_head"
    tied: bool = False


ARCHS: dict[str, ArchSpec] = {
    a.name: a
    for a in (
        ArchSpec("llama", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "llama"),
        ArchSpec("qwen2", "causal", ("q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "qwen2"),
        # Mistral converts to GGUF under llama.cpp's "llama" architecture (convert_hf_to_gguf.py).
        ArchSpec("mistral", "causal", ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "llama"),
        ArchSpec("gpt2", "causal", ("c_attn", "c_proj"),
                 ("transformer.h.{i}.mlp.c_fc",), ("transformer.h.{i}.mlp.c_proj",), True, "gpt2"),
        ArchSpec("bert", "classify", ("query", "key", "value"),
                 ("bert.encoder.layer.{i}.intermediate.dense",), ("bert.encoder.layer.{i}.output.dense",),
                 False, "bert"),
        # Profile C's architectures (issue 11, "sets built elsewhere"): fused projections (Phi-3's
        # qkv_proj and gate_up_proj; GPT-NeoX's per-head query_key_value, which llama.cpp regroups),
        # Gemma's (1 + w) norms and tied head, StarCoder2's biased LayerNorms, OPT's learned positions
        # and no GGUF support. Phi-3's fused MLP is not pruned (no mlp_up). mergekit 0.1.5 cannot merge
        # today's GPT-NeoX checkpoints (its table asks for the attention.bias buffer transformers no
        # longer saves): GPT-NeoX appears as distractors only.
        ArchSpec("phi3", "causal", ("qkv_proj", "o_proj", "down_proj"), (), (), False, "phi3"),
        ArchSpec("gemma", "causal", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "gemma"),
        ArchSpec("gpt_neox", "causal", ("query_key_value", "dense"),
                 ("gpt_neox.layers.{i}.mlp.dense_h_to_4h",), ("gpt_neox.layers.{i}.mlp.dense_4h_to_h",), False,
                 "gptneox", lm_head="embed_out"),
        ArchSpec("starcoder2", "causal", ("q_proj", "v_proj", "c_fc"),
                 ("model.layers.{i}.mlp.c_fc",), ("model.layers.{i}.mlp.c_proj",), False, "starcoder2"),
        ArchSpec("opt", "causal", ("q_proj", "v_proj", "fc1", "fc2"),
                 ("model.decoder.layers.{i}.fc1",), ("model.decoder.layers.{i}.fc2",), False, None),
        # Profile D's architectures (issue 11, sets built elsewhere, second round): Qwen3 (per-head
        # q_norm / k_norm, tied head), Granite (embedding, residual, attention and logit multipliers in the
        # config, q/k rows permuted by llama.cpp as Llama's), OLMo2 (norms after attention and MLP, q_norm /
        # k_norm over the whole projection), Gemma 2 (four norms per layer stored as 1 + w by llama.cpp,
        # logit soft-capping, tied head), a Llama 3.2-style Llama with a tied head among the distractors,
        # and a Qwen3 sequence classifier (a new ``score`` head) fine-tuned from a causal-LM parent.
        ArchSpec("qwen3", "causal", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "qwen3", tied=True),
        ArchSpec("granite", "causal", ("q_proj", "v_proj", "o_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "granite", tied=True),
        ArchSpec("olmo2", "causal", ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "olmo2"),
        ArchSpec("gemma2", "causal", ("q_proj", "o_proj", "gate_proj", "down_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "gemma2", tied=True),
        ArchSpec("llama_tied", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, "llama", tied=True),
        ArchSpec("qwen3_cls", "classify", ("q_proj", "v_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, None, lm_head="score"),
        ArchSpec("gemma2_cls", "classify", ("q_proj", "v_proj"),
                 ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
                 ("model.layers.{i}.mlp.down_proj",), False, None, lm_head="score"),
        # Mixture-of-experts architectures (issue 11, "the formats users have"): Mixtral (llama.cpp's "llama"
        # architecture with stacked experts, q/k rows permuted), Qwen3-MoE (per-head q_norm / k_norm) and
        # OLMoE (q_norm / k_norm over the whole projection). transformers 5 fuses their experts in memory
        # (``mlp.experts.gate_up_proj``, a 3-D parameter, which peft adapts only through
        # ``target_parameters``) and writes them back per expert; adapters here target the attention
        # projections and the router (``mlp.gate``), as LoRA on MoE models usually does. Experts are not
        # pruned (no mlp_up).
        ArchSpec("mixtral", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"), (), (), False, "llama"),
        ArchSpec("qwen3_moe", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"), (), (), False, "qwen3moe"),
        ArchSpec("olmoe", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"), (), (), False, "olmoe"),
    )
}

#: The mixture-of-experts architectures (their sizes' ``experts`` is the number of experts per layer).
MOE_ARCHS = ("mixtral", "qwen3_moe", "olmoe")


@dataclass(frozen=True)
class ArchSize:
    """Sizes of one architecture instance (a family's root; children inherit them, pruned ones shrink)."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    max_positions: int = 64
    #: Mixture-of-experts architectures only (MOE_ARCHS): experts per layer, 2 routed per token (0: dense; not
    #: shown, so the dense profiles' sizes read as they always have).
    experts: int = field(default=0, repr=False)


def hf_config(arch: str, size: ArchSize) -> Any:
    """A ``transformers`` config for ``arch`` at ``size`` (no network, no remote code)."""
    import transformers as tf

    common_dec: dict[str, Any] = {
        "vocab_size": size.vocab, "hidden_size": size.hidden, "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers, "num_attention_heads": size.heads, "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": size.max_positions, "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": PAD,
    }
    if arch == "llama":
        return tf.LlamaConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if arch == "qwen2":
        # Small Qwen2 checkpoints tie the LM head to the embeddings (Qwen2-0.5B does).
        return tf.Qwen2Config(**common_dec, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)
    if arch == "mistral":
        return tf.MistralConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None)
    if arch == "phi3":
        return tf.Phi3Config(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=False)
    if arch == "gemma":
        # Gemma ties its head to the embeddings and scales norms by (1 + w).
        return tf.GemmaConfig(**common_dec, head_dim=size.hidden // size.heads, rms_norm_eps=1e-6,
                              tie_word_embeddings=True)
    if arch in ("qwen3", "qwen3_cls"):
        extra: dict[str, Any] = {"num_labels": len(SEQUENCE_TASKS)} if arch == "qwen3_cls" else {}
        return tf.Qwen3Config(**common_dec, head_dim=size.hidden // size.heads, rms_norm_eps=1e-6,
                              tie_word_embeddings=True, **extra)
    if arch == "granite":
        # Granite 3's scalings (embedding x12, residual x0.22, logits / 8), here at this width's scale.
        return tf.GraniteConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=True, embedding_multiplier=4.0,
                                residual_multiplier=0.5, attention_multiplier=1.0 / (size.hidden // size.heads),
                                logits_scaling=2.0)
    if arch == "olmo2":
        return tf.Olmo2Config(**common_dec, rms_norm_eps=1e-6, tie_word_embeddings=False)
    if arch in ("gemma2", "gemma2_cls"):
        hd = size.hidden // size.heads
        return tf.Gemma2Config(**common_dec, head_dim=hd, query_pre_attn_scalar=hd, rms_norm_eps=1e-6,
                               sliding_window=16, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                               tie_word_embeddings=True,
                               **({"num_labels": len(SEQUENCE_TASKS)} if arch == "gemma2_cls" else {}))
    if arch == "mixtral":
        return tf.MixtralConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                                num_local_experts=size.experts, num_experts_per_tok=2)
    if arch == "qwen3_moe":
        return tf.Qwen3MoeConfig(**common_dec, head_dim=size.hidden // size.heads, rms_norm_eps=1e-6,
                                 tie_word_embeddings=False, num_experts=size.experts, num_experts_per_tok=2,
                                 moe_intermediate_size=size.intermediate, decoder_sparse_step=1, norm_topk_prob=True)
    if arch == "olmoe":
        return tf.OlmoeConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=False, num_experts=size.experts,
                              num_experts_per_tok=2)
    if arch == "llama_tied":  # Llama 3.2 1B / 3B tie the head to the embeddings
        return tf.LlamaConfig(**common_dec, rms_norm_eps=1e-5, tie_word_embeddings=True)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
                                num_hidden_layers=size.layers, num_attention_heads=size.heads,
                                max_position_embeddings=size.max_positions, rotary_pct=0.25,
                                use_parallel_residual=True, tie_word_embeddings=False,
                                bos_token_id=1, eos_token_id=3, pad_token_id=PAD)
    if arch == "starcoder2":
        return tf.Starcoder2Config(**common_dec, norm_epsilon=1e-5, use_bias=True, tie_word_embeddings=False)
    if arch == "opt":
        return tf.OPTConfig(vocab_size=size.vocab, hidden_size=size.hidden, ffn_dim=size.intermediate,
                            num_hidden_layers=size.layers, num_attention_heads=size.heads,
                            max_position_embeddings=size.max_positions, word_embed_proj_dim=size.hidden,
                            bos_token_id=1, eos_token_id=3, pad_token_id=PAD)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=size.vocab, n_embd=size.hidden, n_inner=size.intermediate,
                             n_layer=size.layers, n_head=size.heads, n_positions=size.max_positions,
                             bos_token_id=1, eos_token_id=3, pad_token_id=PAD)
    if arch == "bert":
        return tf.BertConfig(vocab_size=size.vocab, num_labels=len(SEQUENCE_TASKS),  # type: ignore[call-arg]
                             hidden_size=size.hidden, intermediate_size=size.intermediate,
                             num_hidden_layers=size.layers, num_attention_heads=size.heads,
                             max_position_embeddings=size.max_positions, pad_token_id=PAD)
    raise KeyError(arch)


def model_class(arch: str) -> Any:
    """The ``transformers`` model class (the name written to ``config.json``'s ``architectures``)."""
    import transformers as tf

    return {"llama": tf.LlamaForCausalLM, "qwen2": tf.Qwen2ForCausalLM, "mistral": tf.MistralForCausalLM,
            "gpt2": tf.GPT2LMHeadModel, "bert": tf.BertForSequenceClassification, "phi3": tf.Phi3ForCausalLM,
            "gemma": tf.GemmaForCausalLM, "gpt_neox": tf.GPTNeoXForCausalLM, "opt": tf.OPTForCausalLM,
            "starcoder2": tf.Starcoder2ForCausalLM, "qwen3": tf.Qwen3ForCausalLM, "granite": tf.GraniteForCausalLM,
            "olmo2": tf.Olmo2ForCausalLM, "gemma2": tf.Gemma2ForCausalLM, "llama_tied": tf.LlamaForCausalLM,
            "qwen3_cls": tf.Qwen3ForSequenceClassification, "gemma2_cls": tf.Gemma2ForSequenceClassification,
            "mixtral": tf.MixtralForCausalLM, "qwen3_moe": tf.Qwen3MoeForCausalLM, "olmoe": tf.OlmoeForCausalLM}[arch]


def new_model(arch: str, size: ArchSize) -> Any:
    """A freshly initialised model (the caller seeds torch first)."""
    return model_class(arch)(hf_config(arch, size))


def _classify_batch(task: SequenceTask, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Sequences from the task's mixture, labelled with the index of the procedural task that made each."""
    ids = np.full((n, task.seq_len), PAD, dtype=np.int64)
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        kind = task.tasks[int(rng.integers(len(task.tasks)))]
        seq = _seq_one(kind, rng, task.vocab, task.seq_len, task.task_seed)[: task.seq_len]
        ids[i, : len(seq)] = seq
        labels[i] = SEQUENCE_TASKS.index(kind)
    t = torch.from_numpy(ids)
    return {"input_ids": t, "attention_mask": (t != PAD).long(), "labels": torch.from_numpy(labels)}


def lm_batch(arch: str, task: SequenceTask, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """One batch of keyword arguments for the model's forward (inputs and labels)."""
    if ARCHS[arch].objective == "classify":
        return _classify_batch(task, n, rng)
    ids = task.sample(n, rng)  # (n, T)
    labels = ids.clone()
    labels[labels == PAD] = -100  # no loss on padding (transformers shifts the labels itself)
    return {"input_ids": ids, "labels": labels}


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss on ``batch`` (language modelling, or classification for BERT)."""
    return model(**batch).loss


def distill_loss(student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                 temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): KL to the teacher's softened logits plus half the LM loss."""
    with torch.no_grad():
        t_logits = teacher(**{k: v for k, v in batch.items() if k != "labels"}).logits
    out = student(**batch)
    s_log = F.log_softmax(out.logits / temperature, -1).reshape(-1, out.logits.shape[-1])
    t_log = F.log_softmax(t_logits / temperature, -1).reshape(-1, out.logits.shape[-1])
    kl = F.kl_div(s_log, t_log, log_target=True, reduction="batchmean") * temperature**2
    return kl + 0.5 * out.loss
