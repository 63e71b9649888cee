"""A small Llama-style decoder with grouped-query attention and Hugging Face ``LlamaForCausalLM`` names.

Names: ``model.embed_tokens``, ``model.layers.N.self_attn.{q,k,v,o}_proj`` (no biases; k/v have
``num_key_value_heads * head_dim`` rows, so they are NOT square), ``model.layers.N.mlp.{gate,up,down}_proj``,
``model.layers.N.{input_layernorm, post_attention_layernorm}`` (RMSNorm), ``model.norm``, ``lm_head``
(untied). Rotary position embeddings are computed, not stored, as in HF.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    """Sizes of the small decoder."""

    vocab_size: int = 96
    hidden_size: int = 96
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    max_position_embeddings: int = 64
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def hf_config(self, dtype: str) -> dict[str, object]:
        """``config.json`` content in Hugging Face Llama form."""
        d = asdict(self)
        d.update(
            model_type="llama",
            architectures=["LlamaForCausalLM"],
            hidden_act="silu",
            head_dim=self.head_dim,
            tie_word_embeddings=False,
            attention_bias=False,
            bos_token_id=1,
            eos_token_id=3,
            pad_token_id=0,
            torch_dtype=dtype,
        )
        return d


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def _lin(i: int, o: int, std: float) -> nn.Linear:
    m = nn.Linear(i, o, bias=False)
    nn.init.normal_(m.weight, std=std)  # HF Llama init: normal(0, initializer_range)
    return m


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class _Attention(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        hd, s = c.head_dim, c.initializer_range
        self.h, self.kvh, self.hd = c.num_attention_heads, c.num_key_value_heads, hd
        self.q_proj = _lin(c.hidden_size, c.num_attention_heads * hd, s)
        self.k_proj = _lin(c.hidden_size, c.num_key_value_heads * hd, s)
        self.v_proj = _lin(c.hidden_size, c.num_key_value_heads * hd, s)
        self.o_proj = _lin(c.num_attention_heads * hd, c.hidden_size, s)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)  # (B, h, T, hd)
        k = self.k_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)  # (B, kvh, T, hd)
        v = self.v_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        rep = self.h // self.kvh  # grouped-query: each kv head serves `rep` query heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.h * self.hd))


class _MLP(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        s = c.initializer_range
        self.gate_proj = _lin(c.hidden_size, c.intermediate_size, s)
        self.up_proj = _lin(c.hidden_size, c.intermediate_size, s)
        self.down_proj = _lin(c.intermediate_size, c.hidden_size, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _DecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = _Attention(c)
        self.mlp = _MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class _LlamaModel(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=c.initializer_range)
        self.layers = nn.ModuleList([_DecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """The small GQA decoder with an untied LM head."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _LlamaModel(config)
        self.lm_head = _lin(config.hidden_size, config.vocab_size, config.initializer_range)
        hd = config.head_dim
        inv = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(config.max_position_embeddings).float(), inv)  # (T, hd/2)
        ang = torch.cat([ang, ang], dim=-1)
        # Not persistent: HF does not store rotary tables either.
        self.register_buffer("_cos", ang.cos(), persistent=False)
        self.register_buffer("_sin", ang.sin(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> logits (B, T, V)
        T = ids.shape[1]
        cos, sin = self._cos[:T], self._sin[:T]
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.model.norm(x))


LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HEAD_PREFIX = "lm_head."
