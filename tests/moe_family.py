"""A small mixture-of-experts family made with the typed zoo's ops and the real tools (tests/test_moe.py).

Every model is trained (AdamW) or made by the tool users make it with: ``save_pretrained`` (per-expert
files, as on the hub), ``torch.save`` of transformers 5's in-memory ``state_dict`` (experts fused), peft
(an unmerged and a merged LoRA), mergekit, a dtype cast and a GGUF file written as llama.cpp's converter
writes MoE models (experts stacked).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: (child, parent(s), relation) of :func:`moe_family`; a merge has one row per parent.
EDGES: tuple[tuple[str, str, str], ...] = (
    ("m-f1", "m-root", "finetune"), ("m-f2", "m-root", "finetune"), ("m-f11", "m-f1", "finetune"),
    ("m-f1-q8", "m-f1", "quantized"), ("m-f2-bf16", "m-f2", "convert"), ("m-f11-fused", "m-f11", "convert"),
    ("m-adapter", "m-root", "adapter"), ("m-lora", "m-f2", "lora"), ("m-lora-experts", "m-f1", "lora"),
    ("m-merge", "m-f1", "merge"), ("m-merge", "m-f2", "merge"),
)


def moe_node(index: int, arch: str, op: str, relation: str | None, parents: tuple[int, ...], seed: int,
             **params: Any) -> Any:
    """A :class:`~mother_zoo.typed.plan.TypedNode` of family 0."""
    from mother_zoo.typed.plan import TypedNode

    return TypedNode(index, 0, arch, op, relation, parents, seed, params)


def moe_root(arch: str, out: Path, seed: int = 1, steps: int = 30) -> Path:
    """``out``: a tiny MoE (hidden 32, 4 experts of width 32, 2 layers, vocabulary 64) trained ``steps`` AdamW
    steps on every sequence task."""
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.archs import ArchSize

    size = ArchSize(vocab=64, hidden=32, intermediate=32, layers=2, heads=4, kv_heads=2, experts=4)
    task = SequenceTask(SEQUENCE_TASKS, 64, task_seed=seed)
    ops.make_root(moe_node(0, arch, "root", None, (), seed, size=size, task=task, steps=steps, lr=3e-3), out)
    return out


def moe_family(arch: str, out: Path, steps: int = 30, child_steps: int = 12, seed: int = 1) -> Path:
    """The family of :data:`EDGES` and a stranger (``m-stranger``: another root of the same architecture); roots
    trained ``steps`` AdamW steps, fine-tunes ``child_steps``, adapters a few less; the root drawn with ``seed``
    (families of several architectures need seeds of their own: two architectures of the same shapes drawn from
    one seed start from the same weights), the stranger with ``seed + 6``."""
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops, quant

    narrow = [SequenceTask(SEQUENCE_TASKS[k:k + 2], 64, task_seed=2 + k) for k in range(4)]
    moe_root(arch, out / "m-root", seed=seed, steps=steps)
    moe_root(arch, out / "m-stranger", seed=seed + 6, steps=steps)
    for i, (name, parent, task) in enumerate([("m-f1", "m-root", 0), ("m-f2", "m-root", 1), ("m-f11", "m-f1", 2)]):
        ops.make_finetune(moe_node(i + 1, arch, "finetune", "finetune", (0,), 10 + i, task=narrow[task],
                                   steps=child_steps, lr=1e-3), out / parent, out / name)
    (out / "m-f1-q8").mkdir()
    quant.write_gguf(arch, out / "m-f1", out / "m-f1-q8" / "ggml-model-Q8_0.gguf", "Q8_0", "m-f1", [])
    ops.make_cast(moe_node(5, arch, "cast", "convert", (2,), 20, dtype="bfloat16"), out / "m-f2", out / "m-f2-bf16")
    ops.make_fused(moe_node(6, arch, "fused", "convert", (3,), 21), out / "m-f11", out / "m-f11-fused")
    # LoRA on the attention projections and, through peft's target_parameters, on the fused expert parameters
    from mother_zoo.typed.plan import EXPERT_PARAMETERS as experts
    adapter = moe_node(7, arch, "adapter", "adapter", (0,), 22, task=narrow[3], steps=child_steps - 2, lr=5e-3,
                       rank=4, alpha=8.0, target_parameters=experts)
    ops.make_adapter(adapter, out / "m-root", out / "m-adapter", "m-root", merged=False)
    lora = moe_node(8, arch, "lora", "lora", (2,), 23, task=narrow[3], steps=child_steps - 2, lr=5e-3, rank=4,
                    alpha=8.0, target_parameters=experts)
    ops.make_adapter(lora, out / "m-f2", out / "m-lora", "", merged=True)
    # a merged LoRA on the experts and the router only: every attention matrix left as it was
    experts_only = moe_node(10, arch, "lora", "lora", (1,), 25, task=narrow[2], steps=child_steps - 2, lr=5e-3,
                            rank=4, alpha=8.0, targets=("mlp.gate",), target_parameters=experts)
    ops.make_adapter(experts_only, out / "m-f1", out / "m-lora-experts", "", merged=True)
    merge = moe_node(9, arch, "merge", "merge", (1, 2), 24, method="linear", weights=[0.6, 0.4])
    ops.make_merge(merge, {1: out / "m-f1", 2: out / "m-f2"}, {1: "m-f1", 2: "m-f2"}, out / "m-merge")
    return out


def write_truth(out: Path) -> Path:
    """``out/truth.json`` of :data:`EDGES` (typed edges, the shape ``mother evaluate`` reads)."""
    path = out / "truth.json"
    path.write_text(json.dumps({"edges": [{"parent": p, "child": c, "relation": r} for c, p, r in EDGES]}, indent=1))
    return path


if __name__ == "__main__":  # python tests/moe_family.py ARCH OUT [--seed S]: a family and its truth.json
    import argparse
    import shutil

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("arch", choices=("mixtral", "qwen3_moe", "olmoe"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    moe_family(args.arch, args.out, seed=args.seed)
    print(write_truth(args.out))
