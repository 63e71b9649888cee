"""Failures found by the third stress set made without our generator (``benchmarks/elsewhere3_set.py``), each
reproduced with the real tools by the set's own recipe (small T5 v1.1 models trained a few dozen steps).

- transformers casts a T5 to fp16 with its ``wo`` projections kept in float32 (``_keep_in_fp32_modules``): those
  matrices hold the source's values bit for bit, the rest moved by fp16's rounding, which read as a partial
  update (a merged LoRA's untouched layers), so the cast was no conversion and its tree was rebuilt around it.
- ``torch.save(model.state_dict())`` writes a tied weight under each of its names (T5's ``shared``,
  ``encoder.embed_tokens``, ``decoder.embed_tokens`` and a tied ``lm_head``); ``save_pretrained`` writes one.
- PEFT AdaLoRA adapters were refused at discovery.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.io.readers import open_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from elsewhere3_set import Spec, build  # noqa: E402

ROOT = Spec("root", "pretrain", args={"family": "t5", "seed": 202, "steps": 15, "lr": 2e-3})
FT = Spec("ft", "finetune", ("root",), "finetune", {"tasks": [21], "steps": 10, "lr": 1e-3})


def _make(specs: list[Spec], out: Path) -> None:
    folders: dict[str, Path] = {}
    family: dict[str, str] = {}
    for sp in specs:
        folders[sp.role] = out / sp.role
        family[sp.role] = build(sp, folders, folders[sp.role], family, {s.role: s.role for s in specs})


def _recovered(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Each child's recovered (parent, relation) pairs, by folder name."""
    found = discover([folder])
    assert not found.problems, found.problems
    rec = recover(compute_statistics(found, device="cpu"), RecoverySettings())
    name = {m.id: Path(m.path).name for m in rec.models}
    out: dict[str, list[tuple[str, str]]] = {}
    for e in rec.edges:
        out.setdefault(name[e.child], []).append((name[e.parent], e.relation))
    return {k: sorted(v) for k, v in out.items()}


def test_fp16_cast_keeping_modules_in_fp32_is_a_conversion(tmp_path: Path) -> None:
    """An fp16 cast of a T5 (its ``wo`` matrices kept in float32 by transformers) converts its source; it is no
    partial update of it, nor the parent of the source's parent."""
    _make([ROOT, FT, Spec("ft_fp16", "cast", ("ft",), "convert", {"dtype": "float16"})], tmp_path)
    with open_model(discover([tmp_path / "ft_fp16"]).models[0]) as r:
        dtypes = {i.dtype for i in r.tensor_infos().values()}
    assert dtypes == {"float16", "float32"}, dtypes  # the cast this test is about: mixed storage
    got = _recovered(tmp_path)
    assert got.get("ft_fp16") == [("ft", "convert")], got
    assert all(p != "ft_fp16" for parents in got.values() for p, _ in parents), got
    # (which of root and ft is the parent is the direction cue's business, not this test's)


def test_tied_weights_saved_under_every_name_are_read_once(tmp_path: Path) -> None:
    """The same T5 saved by ``save_pretrained`` (safetensors, ``shared`` once) and by ``torch.save`` of its state
    dict in three shards with an index (``shared``, both ``embed_tokens`` and the tied ``lm_head``) lists the
    same tensors."""
    _make([ROOT, Spec("bin", "bin_shards", ("root",), "convert")], tmp_path)
    refs = {Path(r.path).name: r for r in discover([tmp_path]).models}
    assert refs["bin"].format.startswith("torch"), refs["bin"].format
    with open_model(refs["root"]) as a, open_model(refs["bin"]) as b:
        assert set(a.tensor_infos()) == set(b.tensor_infos())
        assert "encoder.embed_tokens.weight" not in b.tensor_infos()
    assert _recovered(tmp_path).get("bin") == [("root", "convert")]


def test_adalora_adapter_read_as_peft_merges_it(tmp_path: Path) -> None:
    """A PEFT AdaLoRA adapter (budget pruned during training, saved pruned with its rank masks) is read merged
    into its base exactly as PEFT's ``merge_and_unload`` writes it, and recovered as that base's adapter."""
    _make([ROOT, FT,
           Spec("ada", "adapter", ("ft",), "adapter", {"tasks": [24], "steps": 40, "lr": 3e-3, "kind": "adalora"}),
           Spec("ada_merged", "fold", ("ft", "ada"), "lora", truth=("ft",))], tmp_path)
    found = discover([tmp_path])
    assert not found.problems, found.problems
    refs = {Path(r.path).name: r for r in found.models}
    assert refs["ada"].format == "peft-lora:adalora"
    with open_model(refs["ft"]) as base, open_model(refs["ada"], base) as ada, open_model(refs["ada_merged"]) as m:
        worst = max(float((ada.read(n).float() - m.read(n).float()).abs().max()) for n in m.tensor_infos())
    assert worst < 1e-6, worst
    got = _recovered(tmp_path)
    assert got.get("ada") == [("ft", "adapter")], got
