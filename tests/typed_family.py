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


def qwen3_finetunes(out: Path, made: list[tuple[str, str, int, int, float]]) -> None:
    """Each ``(name, parent, task, steps, lr)`` of ``made`` as ``out/name``: a float32 fine-tune of ``out/parent``
    trained ``steps`` AdamW steps at ``lr`` on the pair of sequence tasks starting at ``task`` (node ``k + 1``,
    seed ``10 + k`` for the ``k``-th entry)."""
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops

    for i, (name, parent, task, steps, lr) in enumerate(made):
        pair = SequenceTask(SEQUENCE_TASKS[task:task + 2], 64, task_seed=2 + task)
        ops.make_finetune(qwen3_node(i + 1, "finetune", "finetune", (0,), 10 + i, task=pair, steps=steps, lr=lr,
                                     store="float32"), out / parent, out / name)


def qwen3_family(tmp_path_factory: Any, name: str) -> Path:
    """A fresh folder ``name`` holding ``m-root`` (:func:`qwen3_root`); skips the test without transformers or
    mergekit (the families' merges are mergekit's)."""
    import pytest

    for mod in ("transformers", "mergekit"):
        pytest.importorskip(mod)
    out = tmp_path_factory.mktemp(name)
    qwen3_root(out)
    return out


def qwen3_task_arithmetic(out: Path, index: int, slots: dict[int, str], weights: list[float], name: str,
                          seed: int | None = None) -> None:
    """mergekit task arithmetic ``base + sum w_i (M_i - base)`` into ``out / name`` (float32); ``slots``: the
    plan's node index -> model name of the base, then each M_i, in ``weights``' order."""
    from mother_zoo.typed import ops

    merge = qwen3_node(index, "merge", "merge", tuple(slots), index if seed is None else seed,
                       method="task_arithmetic", weights=weights, base=0, store="float32")
    ops.make_merge(merge, {k: out / model for k, model in slots.items()}, dict(slots), out / name)
