"""Training loop (AdamW, warmup + cosine schedule) and LoRA: wrap, train, merge.

LoRA follows the usual recipe: for a frozen linear layer ``W`` (out, in) train ``A`` (r, in, Kaiming
uniform) and ``B`` (out, r, zeros); the merged checkpoint stores ``W + (alpha / r) * B @ A``, so a
parent-to-child difference of a LoRA layer has rank at most ``r``.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Parameters
    ----------
    base : nn.Linear
        The layer to adapt; its parameters are frozen.
    rank : int
        LoRA rank ``r``.
    alpha : float
        Scale numerator: the update is ``(alpha / r) * B @ A``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as PEFT does

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (computed in float64, stored fp32)."""
        with torch.no_grad():
            delta = (self.lora_B.double() @ self.lora_A.double()) * self.scale
            self.base.weight.copy_((self.base.weight.double() + delta).to(self.base.weight.dtype))
        return self.base


def _matches(name: str, targets: Iterable[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(model: nn.Module, targets: tuple[str, ...], rank: int, alpha: float, skip_prefix: str) -> int:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends with a target in :class:`LoRALinear`.

    Parameters
    ----------
    model : nn.Module
        Modified in place.
    targets : tuple of str
        Module-name suffixes to adapt (attention and MLP projections).
    rank, alpha : int, float
        LoRA rank and scale numerator.
    skip_prefix : str
        Names starting with this (the task head) are never wrapped.

    Returns
    -------
    int
        Number of wrapped layers.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and _matches(name, targets) and not (name + ".").startswith(skip_prefix):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            lora = LoRALinear(module, rank, alpha)
            if isinstance(parent, nn.ModuleList):
                parent[int(attr)] = lora
            else:
                setattr(parent, attr, lora)
            wrapped += 1
    return wrapped


def merge_lora(model: nn.Module) -> None:
    """Replace every :class:`LoRALinear` by its merged base layer (in place) and unfreeze everything."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if isinstance(parent, nn.ModuleList):
                parent[int(attr)] = module.merged()
            else:
                setattr(parent, attr, module.merged())
    for p in model.parameters():
        p.requires_grad_(True)


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    eval_fn: Callable[[nn.Module], float],
    *,
    steps: int,
    lr: float,
    weight_decay: float = 0.01,
    warmup_frac: float = 0.1,
    max_grad_norm: float = 1.0,
    optimizer: str = "adamw",
    schedule: str = "cosine",
    fast_prefix: str | None = None,
    fast_lr_factor: float = 1.0,
) -> dict[str, object]:
    """Train the parameters of ``model`` that require grad with AdamW.

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    loss_fn : callable
        ``loss_fn(model)`` draws the next batch and returns the training loss.
    eval_fn : callable
        ``eval_fn(model)`` returns the loss on a fixed held-out batch (called before and after).
    steps, lr : int, float
        Number of optimiser steps and peak learning rate (linear warmup, cosine decay to 10%).
    weight_decay : float
        Decoupled weight decay, applied to matrices only (not to norms, biases, embeddings of size 1).
    optimizer : {"adamw", "adam", "sgd"}
        AdamW (decoupled decay), Adam (L2 decay in the gradient) or SGD with momentum 0.9.
    schedule : {"cosine", "linear", "constant"}
        After the warmup: cosine to 10% of the peak, linear to 0, or constant.
    fast_prefix, fast_lr_factor : str or None, float
        Parameters whose name starts with ``fast_prefix`` (a new classifier head) train at
        ``fast_lr_factor`` times the learning rate, a common transfer-learning recipe.

    Returns
    -------
    dict
        ``steps, lr, loss_start, loss_end, eval_loss_before, eval_loss_after, losses (every step),
        seconds``: the training log written to ``training_log.json``.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    groups = []
    for fast in (False, True):
        chosen = [(n, p) for n, p in named if bool(fast_prefix and n.startswith(fast_prefix)) == fast]
        factor = fast_lr_factor if fast else 1.0
        for decays in (True, False):
            ps = [p for _, p in chosen if (p.dim() >= 2) == decays]
            if ps:
                groups.append({"params": ps, "weight_decay": weight_decay if decays else 0.0, "factor": factor})
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    elif optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999))
    elif optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    warm = max(1, int(steps * warmup_frac))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        if schedule == "constant":
            return lr
        if schedule == "linear":
            return lr * (1.0 - t)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    t0 = time.perf_counter()
    model.eval()  # no dropout anywhere; eval mode keeps runs deterministic
    with torch.no_grad():
        before = float(eval_fn(model))
    losses: list[float] = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step) * g["factor"]
        loss = loss_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        losses.append(round(float(loss.detach()), 5))
    with torch.no_grad():
        after = float(eval_fn(model))
    k = max(1, min(5, steps // 5))
    return {
        "optimizer": {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}[optimizer],
        "steps": steps,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": f"linear warmup {warm} steps, " + {"cosine": "cosine to 10%", "linear": "linear to 0",
                                                         "constant": "constant"}[schedule],
        **({"head_lr_factor": fast_lr_factor} if fast_prefix and fast_lr_factor != 1.0 else {}),
        "loss_start": round(sum(losses[:k]) / k, 5),
        "loss_end": round(sum(losses[-k:]) / k, 5),
        "eval_loss_before": round(before, 5),
        "eval_loss_after": round(after, 5),
        "losses": losses,
        "seconds": round(time.perf_counter() - t0, 3),
    }
