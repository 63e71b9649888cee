"""An unmerged adapter whose declared base the weights contradict (branch ``declaredbase``; benchmarks/RESULTS.md, "An
adapter whose declared base the weights contradict").

The engine reads an unmerged PEFT adapter as its declared base plus its update, so its distance to that base can never
contradict the declaration. Its merged copy can: here a LoRA trained by PEFT on one fine-tune of a tiny Llama names the
other fine-tune (its sibling) in ``adapter_config.json`` (as the third stress set's VeRA does), and the set also holds
PEFT's ``merge_and_unload()`` of it on its real base. A second adapter, trained on the base it names and with no merged
copy, is the control: nothing contradicts it, and it keeps the calibrated config-base confidence.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checkpoint_factory import adam_steps
from format_factory import load_llama
from mother_core import RecoverySettings, recover_paths
from mother_core.relations.calibration import CONFIDENCE, DECLARED_CONTRADICTED

pytestmark = pytest.mark.xdist_group("declared-base")

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root -> sib-a, sib-b (full fine-tunes); ``wrong``: a LoRA trained on sib-b that names sib-a; ``merged``: it
    merged into sib-b by PEFT; ``honest``: a LoRA trained on sib-a that names sib-a."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("declared-base")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    adam_steps(LlamaForCausalLM(config), 1, 6, 1e-2).save_pretrained(root / "root")
    for seed, name in ((2, "sib-a"), (3, "sib-b")):
        adam_steps(load_llama(root / "root"), seed, 4, 3e-3).save_pretrained(root / name)
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    for seed, name, base in ((4, "wrong", "sib-b"), (5, "honest", "sib-a")):
        torch.manual_seed(seed)
        model = adam_steps(get_peft_model(load_llama(root / base), LoraConfig(**lora)), seed, 4, 1e-2)
        model.save_pretrained(root / name)
        cfg = json.loads((root / name / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = "sib-a"  # the wrong adapter's declaration names its real base's sibling
        (root / name / "adapter_config.json").write_text(json.dumps(cfg))
        if name == "wrong":
            model.merge_and_unload().save_pretrained(root / "merged")
    return root


def test_contradicted_declared_base_loses_its_confidence(made):
    """The adapter whose merged copy sits one update from sib-b, not from the declared sib-a, is read on sib-a far below
    the config-base confidence (0.979 before), its evidence naming sib-b and the merged copy; the honest adapter keeps
    0.979 and the merged copy its LoRA edge from sib-b."""
    result = recover_paths([made], RecoverySettings())
    edges = {e.child: e for e in result.edges}
    links = {result.model_ids[link["child"]]: link for link in result.problem.links}
    wrong = edges["wrong"]
    assert wrong.relation == "adapter" and wrong.parent == "sib-a", wrong
    assert wrong.relation_confidence < 0.5, wrong
    evidence = links["wrong"]["evidence"]
    assert DECLARED_CONTRADICTED in evidence and "'merged' is 'sib-b' plus" in evidence, evidence
    honest = edges["honest"]
    assert honest.relation == "adapter" and honest.parent == "sib-a", honest
    assert honest.relation_confidence == CONFIDENCE["adapter: config base"], honest
    assert DECLARED_CONTRADICTED not in links["honest"]["evidence"]
    assert edges["merged"].parent == "sib-b", edges["merged"]
