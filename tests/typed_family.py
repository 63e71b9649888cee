"""Small Qwen3 families made with the typed zoo's own ops (real training; tests of profile D's rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def qwen3_node(index: int, op: str, relation: str | None, parents: tuple[int, ...], seed: int, **params: Any) -> Any:
    """A :class:`~mother_zoo.typed.plan.TypedNode` of family 0, architecture ``qwen3``."""
    from mother_zoo.typed.plan import TypedNode

    return TypedNode(index, 0, "qwen3", op, relation, parents, seed, params)


def qwen3_root(out: Path) -> Path:
    """``out/m-root``: a Qwen3 (hidden 64, 2 layers, vocabulary 64) trained 40 AdamW steps on every sequence task."""
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.archs import ArchSize

    size = ArchSize(vocab=64, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2)
    task = SequenceTask(SEQUENCE_TASKS, 64, task_seed=1)
    ops.make_root(qwen3_node(0, "root", None, (), 1, size=size, task=task, steps=40, lr=3e-3), out / "m-root")
    return out / "m-root"
