"""Glue between an architecture, its data and its loss: one :class:`Family` per architecture.

A family knows how to build a fresh root, how to adapt a parent's copy to a new task (a new head when
the task changes), how to compute a batch loss, and how to describe the model in ``config.json``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import bert, llama, unet, vit
from .data import DenoiseTask, ImageTask, KeywordTextTask, SequenceTask


@dataclass
class Batcher:
    """Per-node sources of randomness for data: a torch generator (images) and a NumPy one (tokens)."""

    seed: int
    torch_gen: torch.Generator = field(init=False)
    np_gen: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.torch_gen = torch.Generator().manual_seed(self.seed)
        self.np_gen = np.random.default_rng(self.seed)


class Family:
    """Interface of an architecture family (see the subclasses)."""

    name: str = ""
    batch_size: int = 32
    lora_targets: tuple[str, ...] = ()
    head_prefix: str = ""
    # Task heads (classifiers) are trained alongside LoRA adapters, as PEFT's modules_to_save does;
    # an LM head or a UNet's output conv stays frozen.
    train_head_with_lora: bool = False

    def new_root(self, size_cfg: Any, task: Any) -> nn.Module:
        raise NotImplementedError

    def child_of(self, parent: nn.Module, task: Any, parent_task: Any) -> nn.Module:
        """A deep copy of ``parent`` ready for ``task`` (new head if the task changed)."""
        return copy.deepcopy(parent)

    def loss(self, model: nn.Module, task: Any, b: Batcher) -> torch.Tensor:
        raise NotImplementedError

    def hf_config(self, model: nn.Module, dtype: str) -> dict[str, object]:
        """``config.json`` content for ``model`` (most families' configs need only the dtype)."""
        return model.config.hf_config(dtype)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


class ViTFamily(Family):
    name = "vit"
    batch_size = 32
    train_head_with_lora = True
    lora_targets = vit.LORA_TARGETS
    head_prefix = vit.HEAD_PREFIX

    def new_root(self, size_cfg: vit.ViTConfig, task: ImageTask) -> nn.Module:
        return vit.ViTForImageClassification(size_cfg, task.num_classes)

    def child_of(self, parent: nn.Module, task: ImageTask, parent_task: ImageTask) -> nn.Module:
        m = copy.deepcopy(parent)
        if task.factors != parent_task.factors:
            # A new task gets a new, freshly initialised head (its shape differs when the class count does).
            m.new_head(task.num_classes)
        return m

    def loss(self, model: nn.Module, task: ImageTask, b: Batcher) -> torch.Tensor:
        x, y = task.sample(self.batch_size, b.torch_gen)
        return F.cross_entropy(model(x), y)

    def hf_config(self, model: nn.Module, dtype: str) -> dict[str, object]:
        return model.config.hf_config(model.num_labels, dtype)


class LlamaFamily(Family):
    name = "llama"
    batch_size = 16
    lora_targets = llama.LORA_TARGETS
    head_prefix = llama.HEAD_PREFIX

    def new_root(self, size_cfg: llama.LlamaConfig, task: SequenceTask) -> nn.Module:
        return llama.LlamaForCausalLM(size_cfg)

    def loss(self, model: nn.Module, task: SequenceTask, b: Batcher) -> torch.Tensor:
        ids = task.sample(self.batch_size, b.np_gen)  # (B, T)
        logits = model(ids[:, :-1])
        target = ids[:, 1:].clone()
        target[target == 0] = -100  # no loss on padding
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


class UNetFamily(Family):
    name = "unet"
    batch_size = 16
    lora_targets = unet.LORA_TARGETS
    head_prefix = unet.HEAD_PREFIX

    def new_root(self, size_cfg: unet.UNetConfig, task: DenoiseTask) -> nn.Module:
        return unet.UNet2DModel(size_cfg)

    def loss(self, model: nn.Module, task: DenoiseTask, b: Batcher) -> torch.Tensor:
        x, log_sigma, eps = task.sample(self.batch_size, b.torch_gen)
        return F.mse_loss(model(x, log_sigma), eps)


class BertFamily(Family):
    """Fine-tuning the real MiniLM; only the top ``train_top_layers`` layers (and head) are trained."""

    name = "bert"
    batch_size = 16
    train_head_with_lora = True
    lora_targets = bert.LORA_TARGETS
    head_prefix = bert.HEAD_PREFIX

    def new_root(self, size_cfg: Any, task: KeywordTextTask) -> nn.Module:
        cfg = bert.load_minilm_config()
        # The real root has no task head; a placeholder head is replaced by every child's own.
        m = bert.BertForSequenceClassification(cfg, 2 if task is None else task.num_classes)
        m.bert.load_state_dict(bert.load_minilm_backbone_state(), strict=True)
        return m

    def child_of(self, parent: nn.Module, task: KeywordTextTask, parent_task: KeywordTextTask | None) -> nn.Module:
        m = copy.deepcopy(parent)
        if parent_task is None or task.name != parent_task.name:
            m.new_head(task.num_classes)
        return m

    def loss(self, model: nn.Module, task: KeywordTextTask, b: Batcher) -> torch.Tensor:
        ids, y = task.sample(self.batch_size, b.np_gen)
        return F.cross_entropy(model(ids), y)

    def hf_config(self, model: nn.Module, dtype: str) -> dict[str, object]:
        return model.hf_config(dtype)


FAMILIES: dict[str, Family] = {f.name: f for f in (ViTFamily(), LlamaFamily(), UNetFamily(), BertFamily())}
