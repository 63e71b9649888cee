"""Many small MLPs in trees with known lineage, every child really trained from its parent.

For the scale benchmark (issue "Ten thousand models", docs/SCALE.md): thousands of ~100k-parameter
models are needed in minutes on two cores, so the training is batched. All models of one depth are
trained together as one batched MLP (``torch.bmm`` over stacked weights): each starts from its
parent's weights and takes a few SGD steps on its own random regression task (random inputs, targets
from a random teacher), so children differ from parents by real gradient updates, never by noise.
Roots are independent initialisations, each trained the same way from scratch.

Trees are random recursive trees (each new model picks a parent among the earlier models of its
family), so depths and branching vary. Ids are shuffled (``m-00042`` says nothing about lineage).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Layer widths: 64 -> 256 -> 256 -> 64, 98,880 parameters.
WIDTHS = (64, 256, 256, 64)


@dataclass(frozen=True)
class ForestPlan:
    """Who descends from whom: ``parent[i]`` (-1 for a root) in training order, and each model's id."""

    parent: tuple[int, ...]
    ids: tuple[str, ...]

    @property
    def depth(self) -> np.ndarray:
        d = np.zeros(len(self.parent), dtype=int)
        for i, p in enumerate(self.parent):
            d[i] = 0 if p < 0 else d[p] + 1
        return d


def plan_forest(n: int, family_size: int = 50, seed: int = 0) -> ForestPlan:
    """Families of about ``family_size`` models, each a random recursive tree (parents come first)."""
    rng = np.random.default_rng(seed)
    parent: list[int] = []
    start = 0
    while start < n:
        size = min(n - start, max(2, int(rng.integers(family_size // 2, family_size * 3 // 2 + 1))))
        for j in range(size):
            # Prefer recent models a little, for deeper trees than uniform attachment gives.
            parent.append(-1 if j == 0 else start + int(j - 1 - min(j - 1, rng.geometric(0.3) - 1)))
        start += size
    ids = [f"m-{i:05d}" for i in rng.permutation(n)]
    return ForestPlan(tuple(parent), tuple(ids))


def _init(count: int, gen: torch.Generator) -> list[torch.Tensor]:
    params = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        params.append((torch.rand(count, fan_out, fan_in, generator=gen) * 2 - 1) * bound)
        params.append((torch.rand(count, fan_out, generator=gen) * 2 - 1) * bound)
    return params


def _train(params: list[torch.Tensor], gen: torch.Generator, steps: int, lr: float,
           batch: int = 16) -> list[torch.Tensor]:
    """``steps`` SGD steps of every model of the batch on its own random teacher's outputs."""
    count = params[0].shape[0]
    teacher = torch.randn(count, WIDTHS[-1], WIDTHS[0], generator=gen) / math.sqrt(WIDTHS[0])
    ps = [p.clone().requires_grad_(True) for p in params]
    for _ in range(steps):
        x = torch.randn(count, batch, WIDTHS[0], generator=gen)
        y = torch.tanh(torch.bmm(x, teacher.transpose(1, 2)))
        h = x
        for k in range(0, len(ps), 2):
            h = torch.baddbmm(ps[k + 1][:, None, :], h, ps[k].transpose(1, 2))
            if k + 2 < len(ps):
                h = torch.relu(h)
        loss = ((h - y) ** 2).mean(dim=(1, 2)).sum()
        grads = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for p, g in zip(ps, grads):
                p -= lr * g
    return [p.detach() for p in ps]


def names() -> list[str]:
    return [f"net.{k}.{kind}" for k in range(len(WIDTHS) - 1) for kind in ("weight", "bias")]


def generate_forest(out: str | Path, n: int, *, family_size: int = 50, steps: int = 4, lr: float = 0.5,
                    root_steps: int = 20, seed: int = 0, dtype: torch.dtype = torch.float16,
                    batch_models: int = 1024) -> ForestPlan:
    """Train and write ``n`` models (``out/<id>/model.safetensors``) and ``out/truth.json``.

    Parameters
    ----------
    steps, lr : int, float
        SGD steps and learning rate of each child's training from its parent.
    root_steps : int
        Steps of each root's training from its random initialisation.
    dtype : torch.dtype
        How weights are stored (trained in float32).
    batch_models : int
        Models trained at once (bounds memory: ~1.2 MB per model in training).
    """
    from safetensors.torch import save_file

    out = Path(out)
    plan = plan_forest(n, family_size, seed)
    gen = torch.Generator().manual_seed(seed)
    depth = plan.depth
    weights: dict[int, list[torch.Tensor]] = {}
    children_left = np.bincount([p for p in plan.parent if p >= 0], minlength=n)
    keys = names()
    for level in range(int(depth.max()) + 1):
        todo = np.flatnonzero(depth == level)
        for lo in range(0, len(todo), batch_models):
            idx = todo[lo:lo + batch_models]
            if level == 0:
                trained = _train(_init(len(idx), gen), gen, root_steps, lr)
            else:
                start = [torch.stack([weights[plan.parent[i]][k] for i in idx]) for k in range(len(keys))]
                trained = _train(start, gen, steps, lr)
            for b, i in enumerate(idx):
                tensors = [t[b].clone() for t in trained]
                folder = out / plan.ids[i]
                folder.mkdir(parents=True, exist_ok=True)
                save_file({k: t.to(dtype).contiguous() for k, t in zip(keys, tensors)},
                          str(folder / "model.safetensors"))
                if children_left[i]:
                    weights[int(i)] = tensors
        # Parents whose children are all trained are dropped (memory stays bounded by two levels).
        for i in todo:
            p = plan.parent[i]
            if p >= 0:
                children_left[p] -= 1
                if children_left[p] == 0:
                    weights.pop(p, None)
    edges = [[plan.ids[p], plan.ids[c]] for c, p in enumerate(plan.parent) if p >= 0]
    (out / "truth.json").write_text(json.dumps({"edges": edges}))
    return plan
