"""A small Vision Transformer whose ``state_dict`` uses Hugging Face ``ViTForImageClassification`` names.

Layout per layer (names relative to ``vit.encoder.layer.N.``)::

    layernorm_before, attention.attention.{query,key,value}, attention.output.dense,
    layernorm_after, intermediate.dense, output.dense

plus ``vit.embeddings.{cls_token, position_embeddings, patch_embeddings.projection}``,
``vit.layernorm`` and ``classifier``. Initialisation follows HF (truncated normal, std 0.02), which
matters: the kurtosis signal depends on how weights start and move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    """Sizes of the small ViT."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    image_size: int = 16
    patch_size: int = 4
    num_channels: int = 3
    initializer_range: float = 0.02

    def hf_config(self, num_labels: int, dtype: str) -> dict[str, object]:
        """``config.json`` content in Hugging Face ViT form."""
        d = asdict(self)
        d.update(
            model_type="vit",
            architectures=["ViTForImageClassification"],
            hidden_act="gelu",
            layer_norm_eps=1e-12,
            qkv_bias=True,
            num_labels=num_labels,
            torch_dtype=dtype,
        )
        return d


class _Linear(nn.Linear):
    """``nn.Linear`` with HF's init (normal std 0.02, zero bias) instead of PyTorch's uniform init."""

    def __init__(self, i: int, o: int, std: float, bias: bool = True) -> None:
        super().__init__(i, o, bias=bias)
        nn.init.trunc_normal_(self.weight, std=std)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class _SelfAttention(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        d, s = c.hidden_size, c.initializer_range
        self.heads = c.num_attention_heads
        self.query, self.key, self.value = _Linear(d, d, s), _Linear(d, d, s), _Linear(d, d, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        B, T, D = x.shape
        q, k, v = (
            m(x).view(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (self.query, self.key, self.value)
        )
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)


class _Dense(nn.Module):
    def __init__(self, i: int, o: int, std: float) -> None:
        super().__init__()
        self.dense = _Linear(i, o, std)


class _Attention(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.attention = _SelfAttention(c)
        self.output = _Dense(c.hidden_size, c.hidden_size, c.initializer_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output.dense(self.attention(x))


class _Layer(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        d, s = c.hidden_size, c.initializer_range
        self.attention = _Attention(c)
        self.intermediate = _Dense(d, c.intermediate_size, s)
        self.output = _Dense(c.intermediate_size, d, s)
        self.layernorm_before = nn.LayerNorm(d, eps=1e-12)
        self.layernorm_after = nn.LayerNorm(d, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output.dense(F.gelu(self.intermediate.dense(self.layernorm_after(x))))


class _PatchEmbeddings(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, stride=c.patch_size)
        nn.init.trunc_normal_(self.projection.weight, std=c.initializer_range)
        nn.init.zeros_(self.projection.bias)


class _Embeddings(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        n_patches = (c.image_size // c.patch_size) ** 2
        self.cls_token = nn.Parameter(
            torch.nn.init.trunc_normal_(torch.empty(1, 1, c.hidden_size), std=c.initializer_range)
        )
        self.position_embeddings = nn.Parameter(
            torch.nn.init.trunc_normal_(torch.empty(1, n_patches + 1, c.hidden_size), std=c.initializer_range)
        )
        self.patch_embeddings = _PatchEmbeddings(c)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1+P, D)
        p = self.patch_embeddings.projection(img).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(p.shape[0], -1, -1)
        return torch.cat([cls, p], dim=1) + self.position_embeddings


class _Encoder(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Layer(c) for _ in range(c.num_hidden_layers)])


class _ViTModel(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.layernorm = nn.LayerNorm(c.hidden_size, eps=1e-12)


class ViTForImageClassification(nn.Module):
    """The small ViT with a linear head on the [CLS] token (HF tensor names)."""

    def __init__(self, config: ViTConfig, num_labels: int) -> None:
        super().__init__()
        self.config = config
        self.vit = _ViTModel(config)
        self.classifier = _Linear(config.hidden_size, num_labels, config.initializer_range)

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def new_head(self, num_labels: int) -> None:
        """Replace the classifier with a freshly initialised one (a new task)."""
        self.classifier = _Linear(self.config.hidden_size, num_labels, self.config.initializer_range)

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, num_labels)
        x = self.vit.embeddings(img)
        for layer in self.vit.encoder.layer:
            x = layer(x)
        return self.classifier(self.vit.layernorm(x)[:, 0])


# LoRA targets: every linear layer inside the encoder (attention + MLP), as in common ViT LoRA recipes.
LORA_TARGETS: tuple[str, ...] = ("query", "key", "value", "attention.output.dense", "intermediate.dense",
                                 "output.dense")
HEAD_PREFIX = "classifier."
