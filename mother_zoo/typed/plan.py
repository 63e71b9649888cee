"""The plan of a typed model set: which models, made from which, by which tool, with which settings.

Every random choice is drawn here from the set's seed, in a fixed order, before anything is trained.
Two *profiles* make disjoint collections: even seeds (profile ``A``, for fitting thresholds) and odd
seeds (profile ``B``, for the held-out report) differ in architectures, widths, LoRA ranks and targets,
merge methods and weights and quantization types, not only in their random draws.

A family (one root trained from scratch) holds, after MDGBench's mix of relations (method.md):

- full fine-tunes of the root and a fine-tune of a fine-tune (``finetune``);
- PEFT LoRA adapters saved unmerged (``adapter``), and adapters merged into the weights with
  ``merge_and_unload`` (``lora``; one of them is the same adapter that is also shipped unmerged);
- mergekit merges (``merge``): a two-model linear or SLERP merge, and a TIES / DARE / task-arithmetic
  merge on the root as base (the base counts as a parent: its weights enter the formula);
- GGUF files (Q8_0 and a 4-bit type), optimum-quanto and bitsandbytes checkpoints (``quantized``);
- a bf16 or fp16 cast, a PyTorch ``.bin`` copy and a byte-identical duplicate (``convert``);
- a child with a narrower MLP (``prune``) and one with fewer layers trained on its parent's logits
  (``distill``), both initialised from the parent and then trained.

Unrelated roots of the same architectures (independently initialised and trained) are distractors,
some with children of their own.

Profile ``C`` (``--profile C``; issue 11: "scored on typed model sets built with these tools
elsewhere") is made to differ from both the way other people's sets do, with the same real tools:
other architectures (Phi-3's fused projections, Gemma's (1 + w) norms and tied head, StarCoder2's
biased LayerNorms, OPT without llama.cpp support; GPT-NeoX's per-head fused QKV among the
distractors), wider and deeper models, every trained or merged model stored in bf16 as hub
checkpoints are, rsLoRA and DoRA adapters with other ranks and targets
(MLP included), an adapter trained on a fine-tune, merges of three or four parents with the methods
A and B never use (Model Stock, DELLA, Model Breadcrumbs, SCE, NuSLERP, Multi-SLERP, Karcher), a merge
quantized afterwards, GGUF Q5_1 / MXFP4, LLM.int8 from bitsandbytes, quanto int4 / int8 of a
fine-tune of a fine-tune, casts both down (fp16) and up (fp32) from bf16, and more distractors.

Profile ``D`` (``--profile D``; issue 11, second round) differs from A, B and C the way hub collections
do, again with the real tools only: architectures none of them uses (Qwen3 with per-head q/k norms and a
tied head, Granite with its multipliers, OLMo2 with norms after attention and MLP, Gemma 2 with four norms
per layer, a Llama 3.2-style tied-head Llama among the distractors); storage dtype drawn per model
(bf16, fp16 or fp32, as uploads differ); some checkpoints sharded (``max_shard_size``); fine-tunes at
learning rates and step counts an order of magnitude apart; a chain of three fine-tunes; a fine-tune
whose vocabulary was extended (``resize_token_embeddings`` plus new tokens, then trained); a sequence
classifier (new ``score`` head) fine-tuned from a causal-LM parent; task arithmetic with a negative
weight (a task vector subtracted); a merge of a merge; a GGUF of a merged LoRA; a QLoRA (an adapter
trained on the dequantized weights of a bitsandbytes NF4 checkpoint, merged: its parent is the quantized
model); hqq 4-bit; GGUF Q4_0 / Q5_0 / Q8_0.

Profile ``E`` (``--profile E``; issue 11, "the formats users have") is made of mixture-of-experts families
(Mixtral, Qwen3-MoE, OLMoE: 4 experts, 8 in the full size, two routed per token), in the layouts their
files come in: ``save_pretrained``'s per-expert tensors, transformers 5's fused ``state_dict`` saved with
``torch.save`` (``fused``), mergekit's output, GGUF with the experts stacked (Q8_0 and a 4-bit type);
adapters on the attention and, through peft's ``target_parameters``, on the fused expert parameters
(shipped unmerged and merged), a two-parent merge, a task arithmetic on the root, a bf16 cast and a
byte-identical copy; distractors of the same architectures, one with children. No pruned or distilled
child (removing experts is another operation).

Profile ``S`` (``--profile S``; issue 11, layer stacks) holds layer-stacking merges made with mergekit's
``passthrough`` method (``slices`` of layer ranges, relation ``merge``) among the other typed relations:
per family (Llama and Mistral, 4 layers; mergekit 0.1.5 cannot write a Qwen2 stack's config under the
installed transformers, whose ``layer_types`` keep the parents' length) a two-parent frankenmerge of two
fine-tunes with slices of different lengths drawn per family, a stack of a fine-tune of a fine-tune and its
parent, a SOLAR-style depth up-scaling of one model (overlapping ranges of it), a fine-tune of a stack and
a bf16 cast of that fine-tune, a GGUF Q8_0 of a stack and a quanto copy of another, beside a fine-tune
tree, an adapter and the same adapter merged, a two-parent linear merge (same depth: not a stack), GGUF of
the root and a depth-pruned student (one layer dropped, trained: shallower than its teacher). Distractors:
roots of the families' depth and one as deep as the stacks (its layers its own), each with a fine-tune.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mother_core.relations import Relation

from ..data import SEQUENCE_TASKS, SequenceTask
from .archs import ARCHS, ArchSize

# The truth file's words are the engine's relation vocabulary (docs/RELATIONS.md).
RELATIONS = tuple(r.value for r in Relation)


@dataclass(frozen=True)
class TypedNode:
    """One model of the plan.

    Attributes
    ----------
    index : int
        Position in the plan (every parent comes first).
    family : int
        Index of the family (one root trained from scratch and everything made from it).
    arch : str
        Key of :data:`~mother_zoo.typed.archs.ARCHS`.
    op : str
        How it is made: ``root``, ``finetune``, ``adapter``, ``lora``, ``merge``, ``gguf``, ``quanto``,
        ``bnb``, ``cast``, ``bin``, ``copy``, ``prune``, ``distill``.
    relation : str or None
        The truth relation to its parents (one of :data:`RELATIONS`); None for a root.
    parents : tuple of int
        Parent indices (several only for merges; the merge base first when there is one).
    seed : int
        The node's own seed (initialisation, data order, adapter init, DARE's random drops).
    params : dict
        Op settings (task, steps, lr, rank, method, weights, quantization type, dtype...).
    """

    index: int
    family: int
    arch: str
    op: str
    relation: str | None
    parents: tuple[int, ...]
    seed: int
    params: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Profile:
    """Generator settings that differ between the fitting (A) and held-out (B) collections."""

    name: str
    archs_full: tuple[str, ...]
    archs_small: tuple[str, ...]
    size_full: dict[str, int]
    size_small: dict[str, int]
    ranks: tuple[int, ...]
    two_parent_methods: tuple[str, ...]
    base_methods: tuple[str, ...]
    weight_range: tuple[float, float]
    gguf_4bit: tuple[str, ...]
    quanto_weights: tuple[str, ...]
    bnb_types: tuple[str, ...]
    cast_dtypes: tuple[str, ...]
    #: ``ab``: :meth:`TypedPlanner.family`; ``c``: :meth:`TypedPlanner.family_c`; ``d``: ``family_d``; ``e``:
    #: ``family_e``.
    recipe: str = "ab"
    #: Storage dtype of trained and merged models (None: float32, as trained).
    store: str | None = None
    #: PEFT LoRA variants drawn per adapter (None: plain LoRA).
    lora_variants: tuple[str | None, ...] = (None,)
    #: Merges of three or more inputs without a base.
    multi_methods: tuple[str, ...] = ()
    #: Distractor roots, and how many of them have children, per size (overrides the size's own).
    distractors: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Architectures of the distractors, in turn (default: the families').
    distractor_archs: tuple[str, ...] = ()
    #: Storage dtypes drawn per trained or merged model (profile D; overrides ``store`` when set).
    store_choices: tuple[str, ...] = ()
    #: Extra layers of the deep distractor (profile S: as deep as the stacks, its own layers; 0: none).
    deep_distractor: int = 0
    #: Fine-tune learning-rate and step ranges (None: :data:`LR` and the size's ``child_steps``).
    finetune_lr: tuple[float, float] | None = None
    finetune_steps: tuple[int, int] | None = None


PROFILES: dict[str, Profile] = {
    "A": Profile(
        name="A",
        archs_full=("llama", "qwen2", "gpt2", "bert"),
        archs_small=("llama", "gpt2", "bert"),
        size_full={"vocab": 64, "hidden": 64, "intermediate": 128, "layers": 2, "heads": 4, "kv_heads": 2},
        size_small={"vocab": 64, "hidden": 32, "intermediate": 64, "layers": 2, "heads": 4, "kv_heads": 2},
        ranks=(4, 8),
        two_parent_methods=("linear", "slerp"),
        base_methods=("ties", "task_arithmetic", "dare_ties"),
        weight_range=(0.25, 0.75),
        gguf_4bit=("Q4_0",),
        quanto_weights=("qint8",),
        bnb_types=("nf4",),
        cast_dtypes=("bfloat16",),
    ),
    "B": Profile(
        name="B",
        archs_full=("mistral", "qwen2", "gpt2", "bert"),
        archs_small=("mistral", "gpt2", "bert"),
        size_full={"vocab": 64, "hidden": 64, "intermediate": 192, "layers": 2, "heads": 8, "kv_heads": 2},
        size_small={"vocab": 64, "hidden": 32, "intermediate": 96, "layers": 2, "heads": 4, "kv_heads": 1},
        ranks=(2, 16),
        two_parent_methods=("slerp", "linear"),
        base_methods=("dare_linear", "ties", "task_arithmetic"),
        weight_range=(0.15, 0.85),
        gguf_4bit=("Q4_1", "Q5_0"),
        quanto_weights=("qint4", "qint8"),
        bnb_types=("fp4", "nf4"),
        cast_dtypes=("float16", "bfloat16"),
    ),
    "C": Profile(
        name="C",
        archs_full=("phi3", "gemma", "starcoder2", "opt"),
        archs_small=("phi3", "gemma", "starcoder2", "opt"),
        size_full={"vocab": 96, "hidden": 96, "intermediate": 256, "layers": 4, "heads": 6, "kv_heads": 2},
        size_small={"vocab": 80, "hidden": 64, "intermediate": 160, "layers": 3, "heads": 4, "kv_heads": 2},
        ranks=(6, 12, 20),
        two_parent_methods=("nuslerp",),
        base_methods=("model_stock", "della", "breadcrumbs_ties", "sce", "della_linear", "breadcrumbs"),
        weight_range=(0.2, 0.6),
        gguf_4bit=("Q5_1", "MXFP4"),
        quanto_weights=("qint4", "qint8"),
        bnb_types=("int8",),
        cast_dtypes=("float16", "float32"),
        recipe="c",
        store="bfloat16",
        lora_variants=("rslora", "dora", None),
        multi_methods=("multislerp", "karcher", "linear"),
        distractors={"small": (3, 2), "full": (6, 3)},
        distractor_archs=("gpt_neox", "gemma", "opt", "phi3", "starcoder2", "gpt_neox"),
    ),
    "D": Profile(
        name="D",
        archs_full=("qwen3", "granite", "olmo2", "gemma2"),
        archs_small=("qwen3", "granite", "olmo2", "gemma2"),
        size_full={"vocab": 96, "hidden": 128, "intermediate": 320, "layers": 3, "heads": 8, "kv_heads": 2},
        size_small={"vocab": 96, "hidden": 96, "intermediate": 224, "layers": 2, "heads": 6, "kv_heads": 2},
        ranks=(4, 8, 32),
        two_parent_methods=("slerp", "linear"),
        base_methods=("ties", "dare_ties", "task_arithmetic"),
        weight_range=(0.3, 0.7),
        gguf_4bit=("Q4_0", "Q5_0"),
        quanto_weights=("qint8",),
        bnb_types=("nf4",),
        cast_dtypes=("bfloat16", "float16"),
        recipe="d",
        store="bfloat16",
        lora_variants=(None, None, "rslora"),
        distractors={"small": (4, 2), "full": (6, 3)},
        distractor_archs=("llama_tied", "qwen3", "olmo2", "granite", "gemma2", "llama_tied"),
        store_choices=("bfloat16", "bfloat16", "float16", "float32"),
        finetune_lr=(5e-5, 4e-3),
        finetune_steps=(4, 40),
    ),
    "E": Profile(
        name="E",
        archs_full=("mixtral", "qwen3_moe", "olmoe"),
        archs_small=("mixtral", "qwen3_moe", "olmoe"),
        # ``intermediate`` is each expert's width; hidden sizes are whole GGUF blocks (32)
        size_full={"vocab": 64, "hidden": 64, "intermediate": 64, "layers": 3, "heads": 4, "kv_heads": 2,
                   "experts": 8},
        size_small={"vocab": 64, "hidden": 64, "intermediate": 32, "layers": 2, "heads": 4, "kv_heads": 2,
                    "experts": 4},
        ranks=(4, 8),
        two_parent_methods=("linear", "slerp"),
        base_methods=("task_arithmetic",),
        weight_range=(0.3, 0.7),
        gguf_4bit=("Q4_0", "Q5_0"),
        quanto_weights=("qint8",),
        bnb_types=("nf4",),
        cast_dtypes=("bfloat16",),
        recipe="e",
        distractors={"small": (3, 1), "full": (3, 2)},
    ),
    "S": Profile(
        name="S",
        archs_full=("llama", "mistral", "llama"),
        archs_small=("llama", "mistral"),
        size_full={"vocab": 64, "hidden": 64, "intermediate": 128, "layers": 6, "heads": 4, "kv_heads": 2},
        size_small={"vocab": 64, "hidden": 32, "intermediate": 64, "layers": 4, "heads": 4, "kv_heads": 2},
        ranks=(4, 8),
        two_parent_methods=("linear",),
        base_methods=("task_arithmetic",),
        weight_range=(0.3, 0.7),
        gguf_4bit=("Q4_0",),
        quanto_weights=("qint8",),
        bnb_types=("nf4",),
        cast_dtypes=("bfloat16",),
        recipe="s",
        distractors={"small": (2, 2), "full": (3, 3)},
        deep_distractor=2,
    ),
}


@dataclass(frozen=True)
class TypedSize:
    """What ``--size`` changes."""

    name: str
    root_steps: tuple[int, int]
    child_steps: tuple[int, int]
    distractors: int
    distractor_children: int
    full_recipe: bool


TYPED_SIZES: dict[str, TypedSize] = {
    "full": TypedSize("full", root_steps=(180, 240), child_steps=(30, 50), distractors=4, distractor_children=2,
                      full_recipe=True),
    "small": TypedSize("small", root_steps=(50, 60), child_steps=(10, 14), distractors=1, distractor_children=0,
                       full_recipe=False),
}

BATCH = 12
#: The fused expert parameters of transformers 5's mixture-of-experts blocks, as peft's ``target_parameters``.
EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
LR = {"root": (1.5e-3, 3e-3), "finetune": (2e-4, 1e-3), "lora": (2e-3, 6e-3), "prune": (3e-4, 1e-3)}


def profile_for(seed: int, profile: str = "auto") -> Profile:
    """The named profile; ``auto``: even seeds use profile A (fitting), odd seeds profile B (held-out)."""
    if profile != "auto":
        return PROFILES[profile]
    return PROFILES["A" if seed % 2 == 0 else "B"]


class TypedPlanner:
    """Draws the nodes of one typed set from one seeded NumPy generator, in a fixed order."""

    def __init__(self, seed: int, size: TypedSize, profile: str = "auto") -> None:
        self.seed, self.size, self.profile = seed, size, profile_for(seed, profile)
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(b"typed")]))
        self.nodes: list[TypedNode] = []
        self.n_families = 0

    # ------------------------------------------------------------------ draws
    def _seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1))

    def _lr(self, kind: str) -> float:
        lo, hi = LR[kind]
        return float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def _steps(self, r: tuple[int, int]) -> int:
        return int(self.rng.integers(r[0], r[1] + 1))

    def _pick(self, options: tuple[Any, ...]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def _weights(self, n: int) -> list[float]:
        lo, hi = self.profile.weight_range
        return [round(float(w), 3) for w in self.rng.uniform(lo, hi, size=n)]

    def _narrow_task(self, vocab: int) -> SequenceTask:
        k = int(self.rng.integers(2, 4))
        kinds = tuple(str(t) for t in self.rng.choice(SEQUENCE_TASKS, size=k, replace=False))
        return SequenceTask(kinds, vocab, task_seed=self._seed())

    # ------------------------------------------------------------------ nodes
    def add(
        self, family: int, arch: str, op: str, relation: str | None, parents: tuple[int, ...], **params: Any
    ) -> int:
        if self.profile.store is not None and op in ("root", "finetune", "lora", "merge", "prune", "distill",
                                                     "vocab", "classify", "qlora"):
            params["store"] = self._pick(self.profile.store_choices) if self.profile.store_choices and op != "root" \
                else self.profile.store
        node = TypedNode(len(self.nodes), family, arch, op, relation, parents, self._seed(), params)
        self.nodes.append(node)
        return node.index

    def root(self, arch: str, size: ArchSize) -> tuple[int, int]:
        fam = self.n_families
        self.n_families += 1
        task = SequenceTask(SEQUENCE_TASKS, size.vocab, task_seed=self._seed())
        r = self.add(fam, arch, "root", None, (), size=size, task=task,
                     steps=self._steps(self.size.root_steps), lr=self._lr("root"))
        return fam, r

    def finetune(self, fam: int, arch: str, parent: int, vocab: int, op: str = "finetune", **extra: Any) -> int:
        p = self.profile
        if p.finetune_lr is None:  # (draw order as it always was: task, steps, lr; same seed, same set)
            task = self._narrow_task(vocab)
            steps, lr = self._steps(self.size.child_steps), self._lr("finetune")
        else:  # profile D: learning rates and step counts an order of magnitude apart
            steps = self._steps(p.finetune_steps or self.size.child_steps)
            lr = float(np.exp(self.rng.uniform(np.log(p.finetune_lr[0]), np.log(p.finetune_lr[1]))))
            task = self._narrow_task(vocab)
        return self.add(fam, arch, op, "finetune", (parent,), task=task, steps=steps, lr=lr, **extra)

    def adapter(self, fam: int, arch: str, parent: int, vocab: int, op: str, declared: str | None = None,
                from_adapter: int | None = None, experts: bool = False) -> int:
        """``experts``: the adapter also targets a mixture-of-experts model's fused expert parameters (peft's
        ``target_parameters``)."""
        rank = int(self._pick(self.profile.ranks))
        extra: dict[str, Any] = {"target_parameters": EXPERT_PARAMETERS} if experts else {}
        if self.profile.recipe in ("c", "d"):
            # A merged copy of a shipped adapter is that adapter: same variant (drawn for the adapter).
            variant = self.nodes[from_adapter].params.get("variant") if from_adapter is not None \
                else self._pick(self.profile.lora_variants)
            extra = {**extra, "variant": variant} if variant else extra
        return self.add(fam, arch, op, "adapter" if op == "adapter" else "lora", (parent,),
                        task=self._narrow_task(vocab), steps=self._steps(self.size.child_steps), lr=self._lr("lora"),
                        rank=rank, alpha=float(2 * rank if self.rng.random() < 0.5 else rank),
                        declared_base=declared, from_adapter=from_adapter, **extra)

    def merge(self, fam: int, arch: str, method: str, models: tuple[int, ...], base: int | None) -> int:
        weights = self._weights(len(models))
        params: dict[str, Any] = {"method": method, "weights": weights, "base": base}
        if method == "slerp":
            params["t"] = round(float(self.rng.uniform(0.3, 0.7)), 3)
        if method in ("ties", "dare_ties", "dare_linear", "della", "della_linear", "breadcrumbs",
                      "breadcrumbs_ties"):
            params["density"] = round(float(self.rng.uniform(0.4, 0.8)), 3)
        if method in ("della", "della_linear"):  # DELLA's keep probabilities span density +- epsilon
            params["epsilon"] = round(float(self.rng.uniform(0.05, min(0.2, 1 - params["density"]))), 3)
        if method in ("breadcrumbs", "breadcrumbs_ties"):  # the share of largest entries dropped as outliers
            params["gamma"] = round(float(self.rng.uniform(0.005, 0.05)), 3)
        if method == "sce":
            params["select_topk"] = round(float(self.rng.uniform(0.3, 0.9)), 3)
        parents = ((base,) if base is not None and base not in models else ()) + models
        return self.add(fam, arch, "merge", "merge", parents, **params)

    def pruned(self, fam: int, arch: str, parent: int, vocab: int) -> int:
        """A child with a narrower MLP (a random share of its units kept), trained after pruning."""
        return self.add(fam, arch, "prune", "prune", (parent,), keep=round(float(self.rng.uniform(0.5, 0.75)), 3),
                        task=self._narrow_task(vocab), steps=self._steps(self.size.child_steps), lr=self._lr("prune"))

    def distilled(self, fam: int, arch: str, parent: int, size: ArchSize) -> int:
        """A child with one layer dropped, trained on a sequence task."""
        return self.add(fam, arch, "distill", "distill", (parent,), drop_layer=int(self.rng.integers(size.layers)),
                        task=SequenceTask(SEQUENCE_TASKS, size.vocab, task_seed=self._seed()),
                        steps=self._steps(self.size.child_steps), lr=self._lr("prune"))

    def family(self, arch: str, size: ArchSize) -> None:
        """One family: see the module docstring for its members."""
        p, full, V = self.profile, self.size.full_recipe, size.vocab
        fam, r = self.root(arch, size)
        f1 = self.finetune(fam, arch, r, V)
        f2 = self.finetune(fam, arch, r, V)
        f11 = self.finetune(fam, arch, f1, V)
        # The adapter's config names its base: the base's id in the set, or a hub-like id not in it.
        a1 = self.adapter(fam, arch, r, V, "adapter", declared="parent" if self.rng.random() < 0.5 else "external")
        l1 = self.adapter(fam, arch, r, V, "lora", from_adapter=a1)  # the same adapter, merged
        if full:
            self.adapter(fam, arch, f1, V, "adapter", declared="external" if self.rng.random() < 0.5 else "parent")
            l2 = self.adapter(fam, arch, f2, V, "lora")
        else:
            l2 = l1
        two = self._pick(p.two_parent_methods)
        self.merge(fam, arch, two, (f1, f2), base=None)
        self.merge(fam, arch, self._pick(p.base_methods), (f11, l2), base=r)
        if full:
            self.merge(fam, arch, "linear", (f1, f2, l1), base=None)
        self.add(fam, arch, "gguf", "quantized", (r,), qtype="Q8_0")
        self.add(fam, arch, "gguf", "quantized", (f2,), qtype=self._pick(p.gguf_4bit))
        if arch == "gpt2":  # quanto quantizes nn.Linear only, GPT-2's Conv1D stays float: bitsandbytes instead
            self.add(fam, arch, "bnb", "quantized", (f1,), quant_type=self._pick(p.bnb_types))
        else:
            self.add(fam, arch, "quanto", "quantized", (f1,), weights=self._pick(p.quanto_weights))
        if full:
            self.add(fam, arch, "bnb", "quantized", (f11,), quant_type=self._pick(p.bnb_types))
        self.add(fam, arch, "cast", "convert", (self._pick((r, f1)),), dtype=self._pick(p.cast_dtypes))
        self.add(fam, arch, "bin", "convert", (f2,))
        self.add(fam, arch, "copy", "convert", (f11,))
        self.pruned(fam, arch, f1, V)
        if full:
            self.distilled(fam, arch, r, size)

    def family_c(self, arch: str, size: ArchSize) -> None:
        """One family of profile C (module docstring): a deeper fine-tune tree, adapters on the root and on
        a fine-tune, a two-parent NuSLERP, a merge of three or four models without a base, a merge of
        three task vectors on the root, a quantized merge, and every quantizer and cast."""
        p, full, V = self.profile, self.size.full_recipe, size.vocab
        spec_gguf = ARCHS[arch].gguf_arch is not None
        fam, r = self.root(arch, size)
        f1 = self.finetune(fam, arch, r, V)
        f2 = self.finetune(fam, arch, r, V)
        f11 = self.finetune(fam, arch, f1, V)
        f21 = self.finetune(fam, arch, f2, V)
        a1 = self.adapter(fam, arch, r, V, "adapter", declared="parent" if self.rng.random() < 0.5 else "external")
        l1 = self.adapter(fam, arch, r, V, "lora", from_adapter=a1)
        self.adapter(fam, arch, f1, V, "adapter", declared="parent")  # an adapter trained on a fine-tune
        l2 = self.adapter(fam, arch, f2, V, "lora")
        self.merge(fam, arch, self._pick(p.two_parent_methods), (f11, f21), base=None)
        multi = (f1, f2, l1, f21) if self.rng.random() < 0.5 else (f1, f2, l1)
        self.merge(fam, arch, self._pick(p.multi_methods), multi, base=None)
        based = self.merge(fam, arch, self._pick(p.base_methods), (f11, l2, f21), base=r)
        if full:
            self.merge(fam, arch, self._pick(p.base_methods), (f1, f2), base=r)
        if spec_gguf:
            self.add(fam, arch, "gguf", "quantized", (r,), qtype="Q8_0")
            self.add(fam, arch, "gguf", "quantized", (f2,), qtype=self._pick(p.gguf_4bit))
            self.add(fam, arch, "gguf", "quantized", (based,), qtype="Q8_0")  # a merge quantized afterwards
        else:  # llama.cpp cannot convert this architecture: quanto and bitsandbytes only
            self.add(fam, arch, "quanto", "quantized", (r,), weights="qint8")
            self.add(fam, arch, "bnb", "quantized", (based,), quant_type="nf4")
        self.add(fam, arch, "bnb", "quantized", (f1,), quant_type=self._pick(p.bnb_types))
        self.add(fam, arch, "quanto", "quantized", (f11,), weights=self._pick(p.quanto_weights))
        self.add(fam, arch, "cast", "convert", (r,), dtype="float16")
        self.add(fam, arch, "cast", "convert", (f21,), dtype="float32")  # an upcast: bf16 values on an fp32 grid
        self.add(fam, arch, "bin", "convert", (f2,))
        self.add(fam, arch, "copy", "convert", (l2,))
        if ARCHS[arch].mlp_up:
            self.pruned(fam, arch, f1, V)
        if full:
            self.distilled(fam, arch, f2, size)

    def family_d(self, arch: str, size: ArchSize) -> None:
        """One family of profile D (module docstring): a chain of three fine-tunes, a vocabulary-extended
        fine-tune, a sequence classifier, adapters and merged LoRAs, a QLoRA on an NF4 checkpoint, a
        two-parent merge, a task arithmetic with a subtracted task vector, a merge of a merge, GGUF (one of
        a merged LoRA), hqq, casts and copies; some checkpoints sharded."""
        p, full, V = self.profile, self.size.full_recipe, size.vocab
        fam, r = self.root(arch, size)
        f1 = self.finetune(fam, arch, r, V, shard=bool(self.rng.random() < 0.5))
        f2 = self.finetune(fam, arch, r, V)
        f11 = self.finetune(fam, arch, f1, V)
        f111 = self.finetune(fam, arch, f11, V, shard=bool(self.rng.random() < 0.5))  # a chain of three
        f21 = self.finetune(fam, arch, f2, V)
        # New tokens added (resize_token_embeddings), then every weight trained on a task that uses them.
        self.finetune(fam, arch, self._pick((r, f2)), V, op="vocab", new_tokens=int(self.rng.integers(4, 17)))
        if f"{arch}_cls" in ARCHS:  # a classifier with a new head, fine-tuned from the causal LM
            self.finetune(fam, f"{arch}_cls", self._pick((r, f1)), V, op="classify")
        self.adapter(fam, arch, r, V, "adapter", declared="parent" if self.rng.random() < 0.5 else "external")
        l1 = self.adapter(fam, arch, f1, V, "lora")
        if full:
            self.adapter(fam, arch, f11, V, "adapter", declared="parent")
        nf4 = self.add(fam, arch, "bnb", "quantized", (f2,), quant_type="nf4")
        self.adapter(fam, arch, nf4, V, "qlora")  # QLoRA: trained on the dequantized NF4 weights, merged
        m1 = self.merge(fam, arch, self._pick(p.two_parent_methods), (f11, f2), base=None)
        ta = self.merge(fam, arch, "task_arithmetic", (f111, f21), base=r)
        w = self.nodes[ta].params["weights"]
        w[int(self.rng.integers(2))] *= -1  # one task vector subtracted ("forgetting by negation")
        self.merge(fam, arch, self._pick(p.two_parent_methods), (m1, f21), base=None)  # a merge of a merge
        if full:
            self.merge(fam, arch, self._pick(p.base_methods), (f1, f21), base=r)
        self.add(fam, arch, "gguf", "quantized", (r,), qtype="Q8_0")
        self.add(fam, arch, "gguf", "quantized", (l1,), qtype=self._pick(p.gguf_4bit))  # a merged LoRA, as GGUF
        self.add(fam, arch, "gguf", "quantized", (m1,), qtype="Q8_0")
        if not ARCHS[arch].tied:  # hqq's writer cannot save a tied head (shared tensors)
            self.add(fam, arch, "hqq", "quantized", (f11,), bits=4, group=32)
        else:
            self.add(fam, arch, "quanto", "quantized", (f11,), weights="qint8")
        src = self._pick((f1, f21))
        # A cast changes the storage dtype: to one the source is not stored in.
        dtypes = tuple(d for d in p.cast_dtypes + ("float32",) if d != self.nodes[src].params["store"])
        self.add(fam, arch, "cast", "convert", (src,), dtype=self._pick(dtypes))
        self.add(fam, arch, "copy", "convert", (f111,))
        self.pruned(fam, arch, f21, V)
        if full:
            self.distilled(fam, arch, f2, size)

    def family_e(self, arch: str, size: ArchSize) -> None:
        """One family of profile E (module docstring): mixture-of-experts models in every layout their files
        come in."""
        p, full, V = self.profile, self.size.full_recipe, size.vocab
        fam, r = self.root(arch, size)
        f1 = self.finetune(fam, arch, r, V)
        f2 = self.finetune(fam, arch, r, V)
        f11 = self.finetune(fam, arch, f1, V)
        a1 = self.adapter(fam, arch, r, V, "adapter", declared="parent" if self.rng.random() < 0.5 else "external",
                          experts=True)
        self.adapter(fam, arch, r, V, "lora", from_adapter=a1, experts=True)  # the same adapter, merged
        l2 = self.adapter(fam, arch, f2, V, "lora", experts=bool(self.rng.random() < 0.5))
        self.merge(fam, arch, self._pick(p.two_parent_methods), (f11, f2), base=None)
        self.merge(fam, arch, self._pick(p.base_methods), (f1, l2), base=r)
        self.add(fam, arch, "gguf", "quantized", (r,), qtype="Q8_0")
        self.add(fam, arch, "gguf", "quantized", (f2,), qtype=self._pick(p.gguf_4bit))
        self.add(fam, arch, "cast", "convert", (f1,), dtype=self._pick(p.cast_dtypes))
        self.add(fam, arch, "fused", "convert", (f11,))  # transformers 5's in-memory layout, torch.save
        self.add(fam, arch, "copy", "convert", (f2,))
        if full:
            f21 = self.finetune(fam, arch, f2, V)
            self.add(fam, arch, "gguf", "quantized", (f21,), qtype="Q8_0")

    def stack(self, fam: int, arch: str, slices: tuple[tuple[int, int, int], ...]) -> int:
        """A mergekit ``passthrough`` merge stacking each ``(model, start, end)`` layer range in order; its
        parents are the models whose layers it holds, in order of first use (relation ``merge``)."""
        parents = tuple(dict.fromkeys(m for m, _, _ in slices))
        return self.add(fam, arch, "merge", "merge", parents, method="passthrough",
                        slices=[[int(m), int(a), int(b)] for m, a, b in slices])

    def family_s(self, arch: str, size: ArchSize) -> None:
        """One family of profile S (module docstring): layer stacks among the other typed relations."""
        p, L, V = self.profile, size.layers, size.vocab
        fam, r = self.root(arch, size)
        f1 = self.finetune(fam, arch, r, V)
        f2 = self.finetune(fam, arch, r, V)
        f11 = self.finetune(fam, arch, f1, V)
        a1 = self.adapter(fam, arch, r, V, "adapter", declared="parent" if self.rng.random() < 0.5 else "external")
        self.adapter(fam, arch, r, V, "lora", from_adapter=a1)
        # Two fine-tunes' slices, overlapping, of different lengths: f1 [0, cut) then f2 [start, L).
        cut = int(self.rng.integers(2, L))
        start = int(self.rng.integers(1, cut))
        s1 = self.stack(fam, arch, ((f1, 0, cut), (f2, start, L)))
        # A fine-tune of a fine-tune and its parent: f11 [0, k) then f1 [j, L) (or the other way round).
        k = int(self.rng.integers(2, L))
        j = int(self.rng.integers(1, k))
        first, second = (f11, f1) if self.rng.random() < 0.5 else (f1, f11)
        s2 = self.stack(fam, arch, ((first, 0, k), (second, j, L)))
        # SOLAR-style depth up-scaling: one model's [0, L - d) then its [d, L), overlapping (d < L / 2).
        d = int(self.rng.integers(1, (L + 1) // 2))
        src = self._pick((r, f2))
        up = self.stack(fam, arch, ((src, 0, L - d), (src, d, L)))
        s1ft = self.finetune(fam, arch, s1, V)
        self.add(fam, arch, "cast", "convert", (s1ft,), dtype=self._pick(p.cast_dtypes))
        self.add(fam, arch, "gguf", "quantized", (self._pick((s2, up)),), qtype="Q8_0")
        self.add(fam, arch, "quanto", "quantized", (self._pick((s1, s1ft)),), weights=self._pick(p.quanto_weights))
        self.merge(fam, arch, self._pick(p.two_parent_methods), (f11, f2), base=None)  # same depth: not a stack
        self.add(fam, arch, "gguf", "quantized", (r,), qtype="Q8_0")
        self.distilled(fam, arch, f2, size)  # a depth-pruned student: its teacher is deeper, no stack of it

    def distractor(self, arch: str, size: ArchSize, children: bool) -> None:
        """An unrelated root of a family's architecture and size, trained from its own initialisation."""
        fam, r = self.root(arch, size)
        if children:
            f = self.finetune(fam, arch, r, size.vocab)
            if ARCHS[arch].gguf_arch is not None:
                self.add(fam, arch, "gguf", "quantized", (f,), qtype="Q8_0")
            else:
                self.add(fam, arch, "bnb", "quantized", (f,), quant_type="int8")

    def plan(self) -> list[TypedNode]:
        p = self.profile
        full = self.size.full_recipe
        archs = p.archs_full if full else p.archs_small
        size = ArchSize(**(p.size_full if full else p.size_small))
        for arch in archs:
            {"c": self.family_c, "d": self.family_d, "e": self.family_e,
             "s": self.family_s}.get(p.recipe, self.family)(arch, size)
        n, with_children = p.distractors.get(self.size.name, (self.size.distractors, self.size.distractor_children))
        d_archs = p.distractor_archs or archs
        for k in range(n):
            arch = d_archs[k % len(d_archs)]
            self.distractor(arch, size, children=k < with_children)
        if p.deep_distractor:  # as deep as the stacks, its layers its own
            deep = ArchSize(**{**(p.size_full if full else p.size_small), "layers": size.layers + p.deep_distractor})
            self.distractor(archs[0], deep, children=True)
        return self.nodes


def plan_typed(size: str = "full", seed: int = 0, profile: str = "auto") -> list[TypedNode]:
    """The nodes of a typed set (no training): see :func:`~mother_zoo.typed.generate.generate_typed`.

    ``profile``: ``auto`` (seed parity: A for even seeds, B for odd ones), or ``A``, ``B``, ``C``, ``D``, ``E``, ``S``.
    """
    return TypedPlanner(seed, TYPED_SIZES[size], profile).plan()
