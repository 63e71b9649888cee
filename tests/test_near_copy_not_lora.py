"""A near-copy fine-tune stored in another dtype is not a merged LoRA (issue 11, confidence honesty).

On a held-out typed profile D set a fine-tune of 4 AdamW steps at lr 7.7e-5, stored in bf16, was read as a
merged LoRA of its parent (reversed, at the ``lora`` kind's calibrated 0.983). Between dtypes "untouched"
means "within rounding"; an update at the rounding's own scale leaves some matrices within it by chance, and
its changed layers, barely above the rank floor, read low rank. The family below is real training: a tiny
Granite root trained for 30 AdamW steps, fine-tunes of it, a PEFT LoRA merged by PEFT (all stored in fp32),
and the near-copy: 4 AdamW steps at lr 7.7e-5 from one fine-tune, stored in bf16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from checkpoint_factory import adam_steps
from mother_core import compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("near-copy-not-lora")


def _load(folder: Path) -> Any:
    from transformers import GraniteForCausalLM

    return GraniteForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The family's statistics, typed links and recovery."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import GraniteConfig, GraniteForCausalLM

    from mother_core.recovery.typed import links_of

    d = tmp_path_factory.mktemp("near-copy")
    torch.manual_seed(0)
    cfg = GraniteConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    adam_steps(GraniteForCausalLM(cfg), 100, 30, 2e-3).save_pretrained(d / "m-root")
    for seed, name in ((1, "m-ft1"), (2, "m-ft2"), (3, "m-ft3")):
        adam_steps(_load(d / "m-root"), seed, 10, 1e-3).save_pretrained(d / name)
    adam_steps(_load(d / "m-ft1"), 7, 10, 1e-3).save_pretrained(d / "m-ft1-ft")
    torch.manual_seed(3)
    peft = get_peft_model(_load(d / "m-root"), LoraConfig(r=4, lora_alpha=8,
                                                          target_modules=["q_proj", "v_proj", "o_proj", "up_proj"]))
    adam_steps(peft, 3, 8, 3e-3).merge_and_unload().save_pretrained(d / "m-lora")
    adam_steps(_load(d / "m-ft2"), 11, 4, 7.7e-5).to(torch.bfloat16).save_pretrained(d / "m-near")
    stats = compute_statistics(discover([d]), device="cpu")
    rec = recover(stats)
    ids = list(stats.model_ids)
    # the typed links the recovery solved with (relations/detect.py, decided before the forest)
    links = {ids[x.child]: (ids[x.parents[0]], x.relation) for x in links_of(rec.problem)}
    return {"stats": stats, "links": links, "ids": ids, "rec": rec}


def test_near_copy_in_another_dtype_reads_no_untouched_layers(family: dict[str, Any]) -> None:
    """Its matrices that stayed within bf16 rounding of the fp32 parent are not "untouched": the changed ones
    moved by about two rounding steps only (before: 29% untouched, every changed layer low rank)."""
    from mother_core.relations.evidence import pair_layers, storage_roundoff
    from mother_core.relations.lowrank import untouched_share, untouched_tolerance

    stats, ids = family["stats"], family["ids"]
    pl, u = pair_layers(stats), storage_roundoff(stats)
    p, c = ids.index("m-ft2"), ids.index("m-near")
    assert untouched_tolerance(u, p, c) > 0  # the two are stored in different dtypes
    assert untouched_share(stats, pl.rel[:, p, c], untouched_tolerance(u, p, c)) == 0.0
    # the merged LoRA (same dtype as its base) keeps its untouched layers
    r, lo = ids.index("m-root"), ids.index("m-lora")
    assert untouched_share(stats, pl.rel[:, r, lo], untouched_tolerance(u, r, lo)) > 0.5


def test_near_copy_is_not_read_as_a_merged_lora(family: dict[str, Any]) -> None:
    """No ``lora`` link and no ``lora`` edge touches the near-copy (before: ``m-ft2 -> m-near`` typed ``lora`` at
    0.983), while the merged LoRA keeps its link to its base."""
    links = family["links"]
    assert "m-near" not in links and links.get("m-ft2", (None, None))[1] is not Relation.LORA
    assert links["m-lora"] == ("m-root", Relation.LORA)
    near = [e for e in family["rec"].edges if "m-near" in (e.parent, e.child)]
    assert near and all(e.relation == Relation.FINETUNE.value for e in near)
    lora = [e for e in family["rec"].edges if e.child == "m-lora"]
    assert [(e.parent, e.relation) for e in lora] == [("m-root", Relation.LORA.value)]


def test_one_family(family: dict[str, Any]) -> None:
    """Every model is read and the family is one tree."""
    assert not family["stats"].problems
    assert len({m.tree for m in family["rec"].models}) == 1
