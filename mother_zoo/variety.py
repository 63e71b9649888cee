"""Trees from many generators: recipes that vary what the zoo's splits keep fixed (issue 12, item 1).

The zoo's splits (:mod:`.splits`) follow one recipe each (AdamW, cosine, weight decay 0.01, LoRA on
every encoder matrix at alpha 16, a fixed step range). An engine tuned on them can fit that recipe
rather than fine-tuning itself. A :class:`Recipe` names every setting that a *generator* of model
trees chooses: architecture and width, full fine-tuning / merged LoRA (rank, targets, alpha r or 2r)
/ partial fine-tuning with frozen lower layers / continued pre-training, optimiser, weight decay,
learning-rate schedule, classifier heads (kept, new, new at a higher learning rate), siblings
repeating one task, step counts from barely trained to long, and the tree's shape.

A :class:`Collection` is a list of (recipe, seed) trees plus optional strangers (independently
initialised models of a tree's architecture, trained on its root's task), written like a zoo split
(one folder per model, ``truth.json``) so that ``mother evaluate`` and the benchmarks read it.
``benchmarks/generalise.py`` splits recipes into a fitting and a held-out set.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import llama, vit
from .data import (
    FINETUNE_FACTORS,
    NARROW_IMAGE_DOMAIN,
    PRETRAIN_IMAGE_TASKS,
    SEQUENCE_TASKS,
    ImageTask,
    SequenceTask,
    narrowed,
    widened,
)
from .families import FAMILIES, Batcher
from .training import apply_lora, merge_lora, train
from .writer import model_card, write_model, write_truth

#: LoRA target sets per architecture (module-name suffixes, see :func:`.training.apply_lora`).
LORA_TARGET_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "vit": {"qv": ("query", "value"),
            "attn": ("query", "key", "value", "attention.output.dense"),
            "attn+mlp": vit.LORA_TARGETS},
    "llama": {"qv": ("q_proj", "v_proj"),
              "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
              "attn+mlp": llama.LORA_TARGETS},
}


@dataclass(frozen=True)
class Recipe:
    """Every choice a generator of model trees makes.

    Attributes
    ----------
    arch : {"vit", "llama"}
    hidden, layers : int
        Width and depth of the tiny models (MLP width 2x hidden).
    method : {"fft", "lora", "partial", "continued"}
        Full fine-tuning, merged LoRA, fine-tuning of the upper half of the layers only (transfer
        learning with frozen lower layers), or continued pre-training on ever broader data (the
        generalization regime).
    lora_rank, lora_targets, lora_alpha : int, str, str
        Rank; ``"qv"``, ``"attn"`` or ``"attn+mlp"``; ``"r"`` or ``"2r"`` (alpha = r or 2r).
    optimizer, weight_decay, schedule : str, float, str
        See :func:`.training.train`.
    head : {"keep", "new", "new-fast"}
        ViT children: same label set as the parent (head kept), a new task with a fresh head, or a
        fresh head trained at 10x the learning rate.
    repeat_task : bool
        Siblings share one task (they differ by seed, learning rate and steps only).
    root_steps : int
        Pre-training steps of the root (peak learning rate 2e-3, AdamW, decay 0.1, cosine).
    child_steps : (int, int)
        Range of training steps per descendant.
    lr : (float, float)
        Range of peak learning rates per descendant (log-uniform).
    shape : tuple of int
        Children per node at each depth: ``(3, 2)`` is a root, 3 children, 2 grandchildren each.
    """

    name: str
    arch: str = "vit"
    hidden: int = 32
    layers: int = 2
    method: str = "fft"
    lora_rank: int = 4
    lora_targets: str = "attn"
    lora_alpha: str = "r"
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    schedule: str = "cosine"
    head: str = "new"
    repeat_task: bool = False
    root_steps: int = 200
    child_steps: tuple[int, int] = (20, 40)
    lr: tuple[float, float] = (1e-4, 1e-3)
    shape: tuple[int, ...] = (3, 2)

    @property
    def regime(self) -> str:
        return "generalization" if self.method == "continued" else "specialization"


@dataclass(frozen=True)
class Collection:
    """Trees to generate together (one folder), each from its own recipe and seed.

    ``strangers``: for each listed tree index, one independently initialised model of that tree's
    architecture trained on its root's task (an unrelated model that must stand alone).
    """

    name: str
    trees: tuple[tuple[Recipe, int], ...]
    strangers: tuple[int, ...] = ()


@dataclass
class _Node:
    index: int
    parent: int | None
    tree: int
    recipe: Recipe
    task: Any
    seed: int
    lr: float
    steps: int
    method: str  # "pretrain" for roots and strangers, else the recipe's method
    tree_meta: dict[str, Any] = field(default_factory=dict)


def _vit_cfg(r: Recipe) -> vit.ViTConfig:
    return vit.ViTConfig(hidden_size=r.hidden, num_hidden_layers=r.layers, num_attention_heads=4,
                         intermediate_size=2 * r.hidden)


def _llama_cfg(r: Recipe) -> llama.LlamaConfig:
    return llama.LlamaConfig(vocab_size=64, hidden_size=r.hidden, intermediate_size=2 * r.hidden,
                             num_hidden_layers=r.layers, num_attention_heads=4, num_key_value_heads=2)


def _root_task(r: Recipe, rng: np.random.Generator) -> Any:
    if r.arch == "vit":
        factors = PRETRAIN_IMAGE_TASKS[int(rng.integers(len(PRETRAIN_IMAGE_TASKS)))]
        return ImageTask(factors, NARROW_IMAGE_DOMAIN) if r.method == "continued" else ImageTask(factors)
    kinds = list(SEQUENCE_TASKS)
    tasks = tuple(kinds[:3]) if r.method == "continued" else tuple(kinds)
    return SequenceTask(tasks, 64, task_seed=int(rng.integers(2**31 - 1)))


def _child_task(r: Recipe, parent_task: Any, rng: np.random.Generator) -> Any:
    """A descendant's task: narrower (specialization) or broader (continued pre-training)."""
    if r.arch == "vit":
        if r.method == "continued":
            return ImageTask(parent_task.factors, widened(parent_task.domain, rng))
        if r.head == "keep":
            return ImageTask(parent_task.factors, narrowed(parent_task.domain, rng))
        factor = FINETUNE_FACTORS[int(rng.integers(len(FINETUNE_FACTORS)))]
        if (factor,) == parent_task.factors:
            factor = FINETUNE_FACTORS[(FINETUNE_FACTORS.index(factor) + 1) % len(FINETUNE_FACTORS)]
        return ImageTask((factor,), narrowed(parent_task.domain, rng) if rng.random() < 0.5 else parent_task.domain)
    kinds = list(SEQUENCE_TASKS)
    if r.method == "continued":
        extra = [k for k in kinds if k not in parent_task.tasks]
        more = tuple(rng.choice(extra, size=min(2, len(extra)), replace=False).tolist()) if extra else ()
        return SequenceTask(tuple(parent_task.tasks) + more, 64, task_seed=parent_task.task_seed)
    k = kinds[int(rng.integers(len(kinds)))]
    return SequenceTask((k,), 64, task_seed=int(rng.integers(2**31 - 1)))


def plan_collection(c: Collection) -> list[_Node]:
    """Every node of the collection, parents before children, every random choice drawn in order."""
    nodes: list[_Node] = []
    for t, (recipe, seed) in enumerate(c.trees):
        rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(recipe.name.encode())]))

        def add(parent: int | None, task: Any, steps: int, lr: float, method: str,
                t: int = t, recipe: Recipe = recipe, rng: np.random.Generator = rng) -> int:
            nodes.append(_Node(len(nodes), parent, t, recipe, task, int(rng.integers(2**31 - 1)), lr, steps, method))
            return len(nodes) - 1

        root = add(None, _root_task(recipe, rng), recipe.root_steps, 2e-3, "pretrain")
        frontier = [root]
        for n_children in recipe.shape:
            nxt = []
            for p in frontier:
                shared = _child_task(recipe, nodes[p].task, rng) if recipe.repeat_task else None
                for _ in range(n_children):
                    task = shared if shared is not None else _child_task(recipe, nodes[p].task, rng)
                    lo, hi = recipe.lr
                    lr = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                    steps = int(rng.integers(recipe.child_steps[0], recipe.child_steps[1] + 1))
                    nxt.append(add(p, task, steps, lr, recipe.method))
            frontier = nxt
    for t in c.strangers:
        recipe, seed = c.trees[t]
        root = next(n for n in nodes if n.tree == t and n.parent is None)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7919, t]))
        tree = len(c.trees) + c.strangers.index(t)
        nodes.append(_Node(len(nodes), None, tree, recipe, root.task, int(rng.integers(2**31 - 1)), 2e-3,
                           recipe.root_steps, "pretrain"))
    return nodes


def _train(node: _Node, parent_model: torch.nn.Module | None, parent_task: Any) -> tuple[torch.nn.Module, dict]:
    """Build (a fresh root, or a copy of the parent) and train one node; LoRA merged afterwards."""
    r = node.recipe
    fam = FAMILIES[r.arch]
    torch.manual_seed(node.seed)
    batches = Batcher(node.seed)

    def loss(m: torch.nn.Module) -> torch.Tensor:
        return fam.loss(m, node.task, batches)

    def held_out(m: torch.nn.Module) -> float:
        return float(fam.loss(m, node.task, Batcher(node.seed ^ 0x5EED5)))

    if parent_model is None:
        # Roots and strangers: the zoo's pre-training recipe (a high peak rate, weight decay 0.1).
        model = fam.new_root(_vit_cfg(r) if r.arch == "vit" else _llama_cfg(r), node.task)
        return model, train(model, loss, held_out, steps=node.steps, lr=node.lr, weight_decay=0.1)
    model = fam.child_of(parent_model, node.task, parent_task)
    fast = fam.head_prefix if (r.arch == "vit" and r.head == "new-fast") else None
    if node.method == "lora":
        alpha = float(r.lora_rank * (2 if r.lora_alpha == "2r" else 1))
        apply_lora(model, LORA_TARGET_SETS[r.arch][r.lora_targets], r.lora_rank, alpha, fam.head_prefix)
        if fam.train_head_with_lora:
            for n, prm in model.named_parameters():
                if n.startswith(fam.head_prefix):
                    prm.requires_grad_(True)
    elif node.method == "partial":
        lower = "vit.encoder.layer." if r.arch == "vit" else "model.layers."
        frozen = {f"{lower}{i}." for i in range(r.layers // 2)}
        frozen |= {"vit.embeddings.", "model.embed_tokens."}
        for n, prm in model.named_parameters():
            prm.requires_grad_(not any(n.startswith(f) for f in frozen))
    log = train(model, loss, held_out, steps=node.steps, lr=node.lr, weight_decay=r.weight_decay, optimizer=r.optimizer,
                schedule=r.schedule, fast_prefix=fast, fast_lr_factor=10.0)
    if node.method == "lora":
        merge_lora(model)
    for prm in model.parameters():
        prm.requires_grad_(True)
    return model, log


def model_id(collection: str, index: int, taken: set[str]) -> str:
    """A random-looking, deterministic id (it reveals nothing about the tree)."""
    h = hashlib.sha256(f"variety|{collection}|{index}".encode()).hexdigest()
    n = 6
    while f"m-{h[:n]}" in taken:
        n += 1
    return f"m-{h[:n]}"


def generate_collection(c: Collection, out_dir: Path, dtype: str = "float32", threads: int = 1) -> Path:
    """Train and write a collection to ``out_dir / c.name`` (skipped when its ``truth.json`` says it
    was made from the same plan). Returns the folder."""
    folder = Path(out_dir) / c.name
    fingerprint = hashlib.sha256(json.dumps([[asdict(r), s] for r, s in c.trees] + [list(c.strangers), dtype],
                                            sort_keys=True).encode()).hexdigest()[:16]
    truth = folder / "truth.json"
    if truth.exists() and json.loads(truth.read_text()).get("meta", {}).get("fingerprint") == fingerprint:
        return folder
    nodes = plan_collection(c)
    t0 = time.perf_counter()
    taken: set[str] = set()
    ids = []
    for n in nodes:
        ids.append(model_id(c.name, n.index, taken))
        taken.add(ids[-1])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    models: dict[int, torch.nn.Module] = {}
    meta_models: dict[str, dict[str, Any]] = {}
    try:
        for n in nodes:
            parent = None if n.parent is None else models[n.parent]
            model, log = _train(n, parent, None if n.parent is None else nodes[n.parent].task)
            models[n.index] = model
            fam = FAMILIES[n.recipe.arch]
            pid = None if n.parent is None else ids[n.parent]
            card = model_card(ids[n.index], pid, fam.name, getattr(n.task, "name", "task"), n.method)
            log = {"model_id": ids[n.index], "base_model": pid, "method": n.method, "recipe": n.recipe.name,
                   **{k: v for k, v in log.items() if k != "losses"}}
            write_model(folder / ids[n.index], fam.state_dict(model), fam.hf_config(model, dtype), card, log, dtype)
            meta_models[ids[n.index]] = {"parent": pid, "tree": n.tree, "method": n.method, "recipe": n.recipe.name,
                                         "steps": n.steps, "lr": n.lr}
    finally:
        torch.set_num_threads(old)
    edges = [(ids[n.parent], ids[n.index]) for n in nodes if n.parent is not None]
    n_trees = max(n.tree for n in nodes) + 1
    trees = []
    for t in range(n_trees):
        members = [n for n in nodes if n.tree == t]
        r = members[0].recipe
        trees.append({"root": ids[members[0].index], "architecture": r.arch, "regime": r.regime,
                      "recipe": r.name if len(members) > 1 else "stranger", "models": [ids[m.index] for m in members],
                      "singleton": len(members) == 1})
    meta = {"split": c.name, "fingerprint": fingerprint, "trees": trees, "models": meta_models,
            "recipes": {r.name: asdict(r) for r, _ in c.trees}, "n_models": len(nodes), "n_edges": len(edges),
            "regime": {t["root"]: t["regime"] for t in trees}, "dtype": dtype,
            "generation_seconds": round(time.perf_counter() - t0, 2)}
    write_truth(folder, edges, meta)
    return folder
