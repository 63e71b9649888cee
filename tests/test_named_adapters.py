"""Several named PEFT adapters saved in one folder are each a model (issue 14: "never lost work").

``PeftModel.save_pretrained`` writes the adapter named ``default`` at the top of the folder and every other
adapter in a sub-folder of its name, each with its own ``adapter_config.json``. Discovery read the top one
and silently dropped the others (the fifth stress set, ``benchmarks/elsewhere5_set.py``). The adapters here
are made by PEFT itself on a tiny Llama and trained for a few steps.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from checkpoint_factory import adam_steps, tiny_llama
from mother_core import RecoverySettings, compute_statistics, discover, recover

pytestmark = pytest.mark.xdist_group("named-adapters")


@pytest.fixture(scope="module")
def adapter_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("named")
    from transformers import LlamaForCausalLM

    adam_steps(tiny_llama(seed=0), seed=1, steps=5, lr=3e-3).save_pretrained(root / "base")
    base = LlamaForCausalLM.from_pretrained(root / "base")  # PEFT records this path as the adapters' base
    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}
    torch.manual_seed(2)
    model = get_peft_model(base, LoraConfig(**config))
    model.add_adapter("second", LoraConfig(**config))
    for name, seed in (("default", 3), ("second", 4)):
        model.set_adapter(name)
        adam_steps(model, seed=seed, steps=6, lr=3e-3)
    model.save_pretrained(root / "two")  # default at the top, second in two/second
    model.save_pretrained(root / "only", selected_adapters=["second"])  # no default: only/second
    return root


def test_every_named_adapter_is_a_model_on_its_base(adapter_set: Path) -> None:
    assert (adapter_set / "two" / "second" / "adapter_config.json").is_file()  # PEFT's layout, as described
    found = discover([adapter_set])
    ids = sorted(m.id for m in found.models)
    assert ids == ["base", "only/second", "two", "two/second"], (ids, found.problems)
    assert not found.problems
    assert {m.id: m.format for m in found.models if m.id != "base"} == dict.fromkeys(
        ["only/second", "two", "two/second"], "peft-lora")

    result = recover(compute_statistics(found.models), RecoverySettings())
    parents = {e.child: e.parent for e in result.edges}
    assert parents == {"two": "base", "two/second": "base", "only/second": "base"}, parents


def test_a_folder_of_a_set_that_is_one_adapter_keeps_its_name(adapter_set: Path) -> None:
    # The set's own folder is never read as a folder of named adapters: its sub-folders are its models.
    found = discover([adapter_set / "two"])
    assert sorted(m.id for m in found.models) == ["two", "two/second"]


def test_an_adapter_named_with_a_slash_nests_its_folder_and_is_read(adapter_set: Path, tmp_path: Path) -> None:
    # PEFT writes the adapter ``x/y`` to ``folder/x/y`` (``os.path.join(save_directory, name)``): inside the
    # adapter ``x`` when there is one, else inside a plain folder ``x``. Discovery read neither nor said so.
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}
    torch.manual_seed(5)
    model = get_peft_model(LlamaForCausalLM.from_pretrained(adapter_set / "base"), LoraConfig(**config))
    for name in ("second", "second/inner", "plain/deep"):
        model.add_adapter(name, LoraConfig(**config))
    for seed, name in enumerate(("default", "second", "second/inner", "plain/deep"), start=6):
        model.set_adapter(name)
        adam_steps(model, seed=seed, steps=2, lr=3e-3)
    model.save_pretrained(tmp_path / "nest")
    assert (tmp_path / "nest" / "second" / "inner" / "adapter_config.json").is_file()  # PEFT's layout
    assert not (tmp_path / "nest" / "plain" / "adapter_config.json").exists()

    found = discover([tmp_path])
    assert not found.problems
    assert sorted(m.id for m in found.models) == ["nest", "nest/plain/deep", "nest/second", "nest/second/inner"]
    assert {m.format for m in found.models} == {"peft-lora"}

    # Past the bound the walk stops and says so, naming the folder (never a silent skip).
    from mother_core.io.discovery import NAMED_ADAPTER_DEPTH

    deep = tmp_path.parent / f"{tmp_path.name}-deep"
    shutil.copytree(tmp_path / "nest" / "second" / "inner",
                    deep / "entry" / Path(*"abcdefghijkl"[:NAMED_ADAPTER_DEPTH]) / "far")
    found = discover([deep, tmp_path / "nest"])
    said = [p.message for p in found.problems if "/far" in p.message]
    assert len(said) == 1 and f"more than {NAMED_ADAPTER_DEPTH} folders below" in said[0], found.problems
    assert len(found.models) == 4


def test_a_folder_holding_no_model_is_listed_once(adapter_set: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # An entry that is not one model (named adapters saved without a ``default``, or an empty folder) was
    # listed to look for a model, then again to walk it for named adapters; the set's own folder twice too.
    import os
    from collections import Counter

    shutil.copytree(adapter_set / "only", tmp_path / "set" / "only")
    (tmp_path / "set" / "empty").mkdir()
    listed: Counter[str] = Counter()
    listdir = os.listdir

    def counting(path: str | os.PathLike[str] = ".") -> list[str]:
        listed[os.path.realpath(path)] += 1
        return listdir(path)

    monkeypatch.setattr(os, "listdir", counting)
    found = discover([tmp_path / "set"])
    assert [m.id for m in found.models] == ["only/second"]
    assert [Path(p.path).name for p in found.problems] == ["empty"]  # said once, as before
    twice = {p: n for p, n in listed.items() if n > 1}
    assert not twice, twice
    assert listed[os.path.realpath(tmp_path / "set" / "only")] == 1


def test_the_walk_for_named_adapters_lists_a_bounded_number_of_folders_and_says_where_it_stopped(
        adapter_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A set's entry that holds no model is walked for named adapters; one holding a large tree of other folders
    # (9,840 empty ones: 0.6-1.7 s) is walked only so far, and the stop is a problem naming the entry.
    from mother_core.io import discovery

    entry = tmp_path / "set" / "entry"
    shutil.copytree(adapter_set / "only" / "second", entry / "a")
    (entry / "b" / "c" / "d").mkdir(parents=True)
    shutil.copytree(adapter_set / "only" / "second", entry / "z")
    monkeypatch.setattr(discovery, "NAMED_ADAPTER_FOLDERS", 5)  # a, b, b/c, b/c/d, z
    found = discover([tmp_path / "set"])
    assert sorted(m.id for m in found.models) == ["entry/a", "entry/z"] and not found.problems, found.problems

    monkeypatch.setattr(discovery, "NAMED_ADAPTER_FOLDERS", 3)  # a, b, b/c: z is past the stop
    found = discover([tmp_path / "set"])
    assert [m.id for m in found.models] == ["entry/a"]
    said = [p for p in found.problems if "Stopped looking" in p.message]
    assert len(said) == 1 and said[0].path == str(entry) and "after 3 folders" in said[0].message, found.problems
    assert len(found.problems) == 1
