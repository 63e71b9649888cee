"""The typed zoo (mother_zoo.typed): every file is what its tool wrote, and truth.json says how.

One small set is made per session (tests/conftest.py ``small_typed_zoo``); each test then checks one
relation against an independent computation: the GGUF dequantizes to its source, a merge equals
mergekit's formula, an adapter merges into its base to give the merged child, casts and copies equal
their parents, quantized checkpoints dequantize close to their sources.
"""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mother_core.relations import Relation
from mother_zoo.cli import main as zoo_main
from mother_zoo.typed import PROFILES, plan_typed

pytestmark = pytest.mark.xdist_group("typed-zoo")


def _truth(d: Path) -> dict[str, Any]:
    return json.loads((d / "truth.json").read_text())


def _by_op(d: Path, op: str) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v) for k, v in _truth(d)["meta"]["models"].items() if v["op"] == op]


def _st(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_plan_is_deterministic_and_profiles_differ() -> None:
    a, b = plan_typed("small", 0), plan_typed("small", 0)
    assert [(n.op, n.parents, n.seed) for n in a] == [(n.op, n.parents, n.seed) for n in b]
    other = plan_typed("small", 1)
    assert {n.arch for n in a} != {n.arch for n in other}  # held-out set: other architectures
    assert PROFILES["A"].ranks != PROFILES["B"].ranks
    full = plan_typed("full", 0)
    assert len({n.arch for n in full}) >= 4 and "llama" in {n.arch for n in full}
    assert {n.relation for n in full if n.relation} == {r.value for r in Relation}


def test_profile_s_plans_layer_stacks_among_the_other_relations() -> None:
    """Profile S (layer stacks): per family a two-parent stack with slices of different lengths, a stack of a
    fine-tune and its parent, a depth up-scaling of one model, a stack's fine-tune with its cast, quantized
    copies of stacks; a distractor as deep as the stacks. The other profiles' plans do not change."""
    nodes = plan_typed("small", 400, "S")
    stacks = [n for n in nodes if n.params.get("method") == "passthrough"]
    assert len(stacks) == 6 and {n.arch for n in stacks} == {"llama", "mistral"}
    for n in stacks:
        layers = sum(b - a for _, a, b in n.params["slices"])
        assert n.relation == "merge" and layers > 4  # deeper than every parent (4 layers)
        assert set(n.parents) == {m for m, _, _ in n.params["slices"]}
    assert sum(len(n.parents) == 1 for n in stacks) == 2  # the depth up-scalings
    assert any(len({b - a for _, a, b in n.params["slices"]}) > 1 for n in stacks)  # slices of different lengths
    ids = {n.index for n in stacks}
    assert {n.op for n in nodes if set(n.parents) & ids} >= {"finetune", "gguf"}
    assert max(n.params["size"].layers for n in nodes if n.op == "root") == 6  # the deep distractor
    assert not any(n.params.get("method") == "passthrough" for p in "ABCDE" for n in plan_typed("small", 7, p))


def test_truth_matches_folders(small_typed_zoo: Path) -> None:
    d = small_typed_zoo
    truth = _truth(d)
    models = truth["meta"]["models"]
    folders = {p.name for p in d.iterdir() if p.is_dir()}
    assert folders == set(models) == set(truth["families"])
    parents: dict[str, list[str]] = {}
    for e in truth["edges"]:
        assert e["parent"] in models and e["child"] in models
        assert e["relation"] in {r.value for r in Relation}
        parents.setdefault(e["child"], []).append(e["parent"])
        assert truth["families"][e["parent"]] == truth["families"][e["child"]]
    for mid, kids in parents.items():
        rel = models[mid]["relation"]
        assert (len(kids) >= 2) == (rel == "merge"), f"{mid}: only merges have several parents"
    ids = set(models)
    for mid in models:
        assert re.fullmatch(r"m-[0-9a-f]{6,}", mid)
        for f in (d / mid).iterdir():  # no lineage hint in any file name
            assert not any(i in f.name for i in ids), f
    roots = [m for m in models if m not in parents]
    assert len(roots) == truth["meta"]["n_families"] >= 4  # three families plus a distractor
    assert len({models[r]["architecture"] for r in roots}) < len(roots)  # a same-architecture distractor


def test_models_load_with_transformers_under_real_names(small_typed_zoo: Path) -> None:
    from transformers import AutoConfig

    seen = set()
    for mid, m in _truth(small_typed_zoo)["meta"]["models"].items():
        if m["op"] in ("root", "finetune", "merge", "lora"):
            cfg = AutoConfig.from_pretrained(str(small_typed_zoo / mid), local_files_only=True)
            seen.add(cfg.architectures[0])
    assert {"LlamaForCausalLM", "GPT2LMHeadModel", "BertForSequenceClassification"} <= seen
    llama = next(k for k, v in _truth(small_typed_zoo)["meta"]["models"].items()
                 if v["op"] == "root" and v["architecture"] == "llama")
    cfg = json.loads((small_typed_zoo / llama / "config.json").read_text())
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # grouped-query attention


def test_gguf_dequantizes_close_to_its_source(small_typed_zoo: Path) -> None:
    import gguf

    from mother_zoo.typed.quant import gguf_tensors

    d = small_typed_zoo
    seen_types = set()
    for mid, m in _by_op(d, "gguf"):
        src = d / m["parents"][0]
        cfg = json.loads((src / "config.json").read_text())
        expected = dict(gguf_tensors(m["architecture"], _st(src), cfg))
        (path,) = (d / mid).glob("*.gguf")
        reader = gguf.GGUFReader(str(path))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        assert arch == {"llama": "llama", "gpt2": "gpt2", "bert": "bert", "mistral": "llama"}[m["architecture"]]
        assert {t.name for t in reader.tensors} == set(expected)
        qtype = m["params"]["qtype"]
        for t in reader.tensors:
            seen_types.add(t.tensor_type.name)
            deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).reshape(expected[t.name].shape)
            tol = 0.02 if t.tensor_type.name in ("Q8_0", "F16", "F32") else 0.2
            assert _rel(deq, expected[t.name]) < tol, (mid, t.name, t.tensor_type.name)
        assert qtype in seen_types
    assert {"Q8_0", "Q4_0", "F32"} <= seen_types


def test_gguf_names_are_llama_cpp_names(small_typed_zoo: Path) -> None:
    import gguf

    d = small_typed_zoo
    names = set()
    for mid, _ in _by_op(d, "gguf"):
        (path,) = (d / mid).glob("*.gguf")
        names |= {t.name for t in gguf.GGUFReader(str(path)).tensors}
    assert {"token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "output_norm.weight"} <= names


def _merge_formula(cfg: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.Tensor | None:
    method = cfg["merge_method"]
    if method == "linear":
        ws = [m["parameters"]["weight"] for m in cfg["models"]]
        xs = [tensors[m["model"]] for m in cfg["models"]]
        return sum(w * x for w, x in zip(ws, xs)) / sum(ws)
    if method == "task_arithmetic":
        base = tensors[cfg["base_model"]]
        return base + sum(m["parameters"]["weight"] * (tensors[m["model"]] - base) for m in cfg["models"])
    if method == "slerp":
        t = cfg["parameters"]["t"]
        a, b = tensors[cfg["models"][0]["model"]], tensors[cfg["models"][1]["model"]]
        an, bn = a / a.norm(), b / b.norm()
        omega = torch.arccos((an * bn).sum().clamp(-1, 1))
        so = torch.sin(omega)
        return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
    return None  # TIES / DARE: random or magnitude-trimmed task vectors (checked below)


def test_merges_follow_mergekit_formulas(small_typed_zoo: Path) -> None:
    import yaml

    d = small_typed_zoo
    checked = 0
    for mid, m in _by_op(d, "merge"):
        cfg = yaml.safe_load((d / mid / "mergekit_config.yml").read_text())
        assert cfg["merge_method"] == m["params"]["method"]
        parents = {p: _st(d / p) for p in m["parents"]}
        child = _st(d / mid)
        name = next(k for k in child if k.endswith(("layers.0.self_attn.q_proj.weight", "h.0.attn.c_attn.weight",
                                                      "layer.0.attention.self.query.weight")))
        expected = _merge_formula(cfg, {p: s[name] for p, s in parents.items()})
        if expected is not None:
            assert _rel(child[name], expected) < 1e-4, (mid, cfg["merge_method"])
            checked += 1
        else:  # sparsified task vectors: the child moves from the base, but less than the parents combined
            base = parents[cfg["base_model"]][name]
            delta = child[name] - base
            assert 0 < float(delta.norm()) and float((delta == 0).float().mean()) < 1.0
        assert 2 <= len(m["parents"]) <= 3
    assert checked >= 3


def test_unmerged_adapter_merges_into_its_base(small_typed_zoo: Path) -> None:
    from peft import PeftModel

    from mother_zoo.typed.ops import load

    d = small_typed_zoo
    plan = plan_typed("small", 0)
    truth = _truth(d)
    ids = list(truth["meta"]["models"])  # plan order
    n = 0
    for node in plan:
        if node.op != "lora" or node.params.get("from_adapter") is None:
            continue
        adapter, base, merged = ids[node.params["from_adapter"]], ids[node.parents[0]], ids[node.index]
        files = {p.name for p in (d / adapter).iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
        acfg = json.loads((d / adapter / "adapter_config.json").read_text())
        assert acfg["peft_type"] == "LORA" and acfg["base_model_name_or_path"]
        assert acfg["r"] == plan[node.params["from_adapter"]].params["rank"]
        model = PeftModel.from_pretrained(load(node.arch, d / base), str(d / adapter)).merge_and_unload()
        ours = {k: v for k, v in model.state_dict().items()}
        theirs = _st(d / merged)
        base_st = _st(d / base)
        changed = 0
        for k, v in theirs.items():
            assert torch.allclose(ours[k], v, atol=1e-6), k
            if not torch.equal(v, base_st[k]):
                changed += 1
        assert changed > 0
        n += 1
    assert n == 3


def test_conversions_are_the_parent(small_typed_zoo: Path) -> None:
    d = small_typed_zoo
    for mid, m in _by_op(d, "cast"):
        parent, child = _st(d / m["parents"][0]), _st(d / mid)
        dtype = getattr(torch, m["params"]["dtype"])
        assert all(torch.equal(child[k], parent[k].to(dtype)) for k in parent)
        assert json.loads((d / mid / "config.json").read_text())["dtype"] == m["params"]["dtype"]
    for mid, m in _by_op(d, "bin"):
        sd = torch.load(d / mid / "pytorch_model.bin", weights_only=True)
        parent = _st(d / m["parents"][0])
        assert set(sd) == set(parent) and all(torch.equal(sd[k], parent[k]) for k in parent)
    for mid, m in _by_op(d, "copy"):
        src = d / m["parents"][0]
        cmp = filecmp.dircmp(src, d / mid)
        assert not cmp.left_only and not cmp.right_only
        assert all(filecmp.cmp(src / f, d / mid / f, shallow=False) for f in cmp.common_files)


def test_quantized_checkpoints_dequantize_close(small_typed_zoo: Path) -> None:
    d = small_typed_zoo
    ops = {m["op"] for _, m in _truth(d)["meta"]["models"].items()}
    assert {"quanto", "bnb"} <= ops
    for mid, m in _by_op(d, "quanto"):
        qmap = json.loads((d / mid / "quanto_qmap.json").read_text())
        st, parent = _st(d / mid), _st(d / m["parents"][0])
        layer = next(iter(qmap))
        data, scale = st[layer + ".weight._data"], st[layer + ".weight._scale"]
        assert qmap[layer]["weights"] == "qint8" and data.dtype == torch.int8
        assert _rel(data.float() * scale, parent[layer + ".weight"]) < 0.02
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Params4bit

    for mid, m in _by_op(d, "bnb"):
        st, parent = _st(d / mid), _st(d / m["parents"][0])
        cfg = json.loads((d / mid / "config.json").read_text())
        assert cfg["quantization_config"]["quant_method"] == "bitsandbytes"
        name = next(k[: -len(".absmax")] for k in st if k.endswith(".weight.absmax"))
        qs = {k[len(name) + 1:]: v for k, v in st.items() if k.startswith(name + ".")}
        p = Params4bit.from_prequantized(st[name], qs, requires_grad=False, device="cpu")
        w = bnbf.dequantize_4bit(p.data, p.quant_state)
        ref = parent[name]
        if ref.shape != w.shape:  # GPT-2's Conv1D is stored (in, out)
            ref = ref.T
        assert _rel(w.float(), ref) < 0.2, name


def test_pruned_child_is_narrower_and_starts_from_its_parent(small_typed_zoo: Path) -> None:
    d = small_typed_zoo
    for mid, m in _by_op(d, "prune"):
        c_cfg = json.loads((d / mid / "config.json").read_text())
        p_cfg = json.loads((d / m["parents"][0] / "config.json").read_text())
        key = "n_inner" if "n_inner" in c_cfg else "intermediate_size"
        assert c_cfg[key] < p_cfg[key]
        child, parent = _st(d / mid), _st(d / m["parents"][0])
        same_shape = [k for k in child if k in parent and child[k].shape == parent[k].shape and child[k].ndim == 2]
        # Trained after pruning, yet far closer to its parent than two unrelated inits would be.
        assert max(_rel(child[k], parent[k]) for k in same_shape) < 0.5


def test_cli_typed_rejects_dtype(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["typed", "--out", str(tmp_path), "--dtype", "float16"]) == 2
    assert "--dtype" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_shipped_typed_demo_is_consistent() -> None:
    folder = Path(__file__).resolve().parent.parent / "assets" / "demo" / "typed"
    if not folder.is_dir():
        pytest.skip(f"{folder} not generated (mother zoo demo)")
    truth = _truth(folder)
    assert {p.name for p in folder.iterdir() if p.is_dir()} == set(truth["meta"]["models"])
    assert {e["relation"] for e in truth["edges"]} >= {"finetune", "adapter", "lora", "merge", "quantized", "convert"}
    assert any(folder.glob("*/*.gguf")) and any(folder.glob("*/adapter_config.json"))
