"""Failures found by the fourth stress set made without our generator (``benchmarks/elsewhere4_set.py``), each
reproduced with the real tools by the set's own recipe (small SmolLM3 and DeepSeek-V3 models trained a few dozen
steps).

- A fine-tune at a large learning rate (Adagrad at 0.05) moved so far from its family that the forest put it,
  and a mergekit SLERP taking it as one input, in a tree of their own: merges were sought within a tree only,
  so the SLERP was read as the far input's fine-tune.
- A PEFT prompt-tuning adapter (no weight change at all) was refused with advice to merge it, which PEFT
  cannot do for prompt learning.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from mother_core import RecoverySettings, compute_statistics, discover, recover

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from elsewhere4_set import Item, make  # noqa: E402


def _make(items: list[Item], out: Path) -> None:
    where: dict[str, Path] = {}
    arch_of: dict[str, str] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (models of width 64: more threads only wait on each other)
    try:
        for it in items:
            where[it.name] = out / it.name
            arch_of[it.name] = make(it, where, where[it.name], arch_of, {i.name: i.name for i in items})
    finally:
        torch.set_num_threads(threads)


def test_merge_whose_inputs_the_forest_split_is_found(tmp_path: Path) -> None:
    """A SLERP of a fine-tune and a far fine-tune (Adagrad at lr 0.05) of one SmolLM3 root: the far input and
    the merge form a tree of their own, yet the merge is read with both inputs, and the far input under the
    root."""
    _make([Item("root", "pretrain", kw={"arch": "smollm3", "seed": 13, "steps": 60, "lr": 2e-3}),
           Item("a", "finetune", ("root",), "finetune", {"tasks": [31], "steps": 30, "lr": 1e-3}),
           Item("a2", "finetune", ("a",), "finetune", {"tasks": [32], "steps": 25, "lr": 8e-4}),
           Item("c", "finetune", ("root",), "finetune", {"tasks": [33], "steps": 25, "lr": 8e-4}),
           Item("far", "finetune", ("root",), "finetune", {"tasks": [34], "steps": 40, "lr": 5e-2, "opt": "adagrad"}),
           Item("mix", "merge", ("a", "far"), "merge", {"method": "slerp"})], tmp_path)
    found = discover([tmp_path])
    assert not found.problems, found.problems
    rec = recover(compute_statistics(found, device="cpu"), RecoverySettings())
    name = {m.id: Path(m.path).name for m in rec.models}
    got: dict[str, list[tuple[str, str]]] = {}
    for e in rec.edges:
        got.setdefault(name[e.child], []).append((name[e.parent], e.relation))
    assert sorted(got.get("mix", [])) == [("a", "merge"), ("far", "merge")], got
    assert got.get("far") == [("root", "finetune")], got


def test_prompt_tuning_adapter_is_refused_naming_its_declared_base(tmp_path: Path) -> None:
    """A PEFT prompt-tuning adapter carries virtual-token embeddings only: discovery says it changes no weight
    and names the base its config declares, and does not ask for a merge PEFT cannot make."""
    _make([Item("root", "pretrain", kw={"arch": "deepseek_v3", "seed": 11, "steps": 3, "lr": 2e-3}),
           Item("prompt", "adapter", ("root",), "adapter", {"tasks": [24], "steps": 3, "lr": 1e-2, "kind": "prompt"})],
          tmp_path)
    found = discover([tmp_path])
    assert [Path(m.path).name for m in found.models] == ["root"]
    (message,) = [p.message for p in found.problems if "prompt" in p.path]
    assert "PROMPT_TUNING" in message and "changes none of its weights" in message, message
    assert str(tmp_path / "root") in message, message
    assert "merge_and_unload" not in message, message
