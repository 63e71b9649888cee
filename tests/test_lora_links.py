"""Merged LoRAs placed by the layers they left untouched (issue 11, profile C: a merged LoRA's typed link).

``merge_and_unload`` (PEFT) writes every layer an adapter did not target bit for bit, so the model a
LoRA was merged into holds those layers; of the relatives that hold them (its base, the base's
ancestors through the same layers, sibling LoRAs), the base is the one it differs from at the lowest
summed rank (the MoTHer paper's LoRA distance). The models below are tiny Llamas trained for a few
steps with AdamW (fine-tunes) and with real PEFT adapters (LoRA, DoRA) merged by PEFT, stored in bf16
as profile C stores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from checkpoint_factory import adam_steps
from mother_core import RecoverySettings, compute_statistics, discover, recover
from mother_core.relations import Relation

pytestmark = pytest.mark.xdist_group("lora-links")

ATTN_MLP = ["q_proj", "v_proj", "o_proj", "up_proj"]


def _train(model: Any, seed: int, steps: int, lr: float) -> Any:
    """A few AdamW steps of next-token prediction on one fixed random batch (the task of ``seed``)."""
    return adam_steps(model, seed, steps, lr)


def _load(folder: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)


def _save(model: Any, folder: Path) -> None:
    model.to(torch.bfloat16).save_pretrained(folder)


def _lora(parent: Path, out: Path, seed: int, targets: list[str], **extra: Any) -> None:
    """A PEFT LoRA (or DoRA) trained on ``parent``, merged by PEFT and saved in bf16."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(_load(parent), LoraConfig(r=4, lora_alpha=8, target_modules=targets, **extra))
    _train(model, seed, 8, 3e-3)
    _save(model.merge_and_unload(), out)


def _finetune(parent: Path, out: Path, seed: int) -> None:
    _save(_train(_load(parent), seed, 3, 1e-3), out)


def _m_family(d: Path, root: Any) -> None:
    """The ``m-`` family under ``d`` from ``root``: three fine-tunes of it, one of a fine-tune, a LoRA on the
    root, a LoRA merged into that LoRA, a sibling LoRA on partly other layers, a LoRA on a fine-tune, a
    merged DoRA on the root, and a fine-tune of the first LoRA."""
    _save(root, d / "m-root")
    for name, seed in (("m-ft1", 1), ("m-ft2", 2), ("m-ft3", 9)):
        _finetune(d / "m-root", d / name, seed)
    _finetune(d / "m-ft1", d / "m-ft-of-ft", 10)
    _lora(d / "m-root", d / "m-lora", 3, ATTN_MLP)
    _lora(d / "m-lora", d / "m-lora-of-lora", 4, ATTN_MLP)
    _lora(d / "m-root", d / "m-lora-sib", 5, ["q_proj", "k_proj", "gate_proj"])
    _lora(d / "m-ft1", d / "m-lora-of-ft", 6, ATTN_MLP)
    _lora(d / "m-root", d / "m-dora", 7, ATTN_MLP, use_dora=True)
    _finetune(d / "m-lora", d / "m-ft-of-lora", 8)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One family of mostly full fine-tunes (the root, three fine-tunes of it, one of a fine-tune, one of a
    merged LoRA) with five merged LoRAs: a LoRA on the root, a LoRA merged into that LoRA (a chain), a
    sibling LoRA on partly other layers, a LoRA on a fine-tune and a merged DoRA; its statistics, typed
    findings and recovery."""
    pytest.importorskip("peft")
    from transformers import LlamaConfig, LlamaForCausalLM

    from mother_core.recovery.forest import split_into_trees
    from mother_core.recovery.features import pair_evidence, select_layers
    from mother_core.relations.detect import detect_relations

    d = tmp_path_factory.mktemp("lora-links")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    _m_family(d, LlamaForCausalLM(cfg))
    stats = compute_statistics(discover([d]), device="cpu")
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers, None))
    labels, _ = split_into_trees(ev.relative, None)
    ids = list(stats.model_ids)
    findings = detect_relations(stats, labels)
    links = {ids[x.child]: (ids[x.parents[0]], x.relation) for x in findings.links}
    return {"stats": stats, "links": links, "labels": labels, "ids": ids, "rec": recover(stats)}


TRUE_LORA_PARENTS = {"m-lora": "m-root", "m-lora-of-lora": "m-lora", "m-lora-sib": "m-root",
                     "m-lora-of-ft": "m-ft1", "m-dora": "m-root"}


def test_one_family(family: dict[str, Any]) -> None:
    """Every model is read and the family is one tree."""
    assert not family["stats"].problems
    assert len(set(np.asarray(family["labels"]).tolist())) == 1


def test_each_merged_lora_is_linked_to_its_base(family: dict[str, Any]) -> None:
    """Each merged LoRA (and the merged DoRA) gets a typed ``lora`` link, decided before the forest, to the
    model it was merged into: the relative holding its untouched layers at the lowest summed rank. A LoRA
    merged into a merged LoRA goes to that LoRA, not to the root which holds the same untouched layers;
    sibling LoRAs go to their base, not to each other. (Before: no link; the forest alone placed them.)"""
    got = {c: p for c, (p, r) in family["links"].items() if r is Relation.LORA}
    assert got == TRUE_LORA_PARENTS


def test_full_fine_tunes_get_no_lora_link(family: dict[str, Any]) -> None:
    """A full fine-tune trains every matrix: no link, and its forest edge is a ``finetune``."""
    assert not {"m-ft1", "m-ft2", "m-ft3", "m-ft-of-ft", "m-ft-of-lora"} & set(family["links"])
    edges = {e.child: (e.parent, e.relation) for e in family["rec"].edges}
    assert edges["m-ft1"] == ("m-root", Relation.FINETUNE.value)
    assert edges["m-ft2"] == ("m-root", Relation.FINETUNE.value)


def test_recovered_graph_places_every_merged_lora(family: dict[str, Any]) -> None:
    """In the recovered graph each merged LoRA hangs under its base as a ``lora`` edge, and a linked LoRA
    still parents what was trained from it (a fine-tune of a merged LoRA, a LoRA merged into it)."""
    edges = {e.child: (e.parent, e.relation) for e in family["rec"].edges}
    for child, parent in TRUE_LORA_PARENTS.items():
        assert edges[child] == (parent, Relation.LORA.value), child
    assert edges["m-ft-of-lora"][0] == "m-lora"


def test_every_layer_of_a_far_moved_dora_reads_low_rank(tmp_path: Path) -> None:
    """PEFT's merge of a DoRA of rank 20 on every linear layer of a 64-wide Llama (bf16), whose update has a
    few dominant directions (A's rows scaled over e^2 .. e^-2) and whose magnitudes moved far (x e^(0.5 N)):
    every changed layer reads low rank after the DoRA row rescaling. (Before: the refits' basis stopped at
    the spectral gap inside the span of A and 3 of the 14 layers stayed full rank, as the Gemma DoRA of
    profile C seed 5, whose low-rank share fell to 0.48 and which was not found before the forest.)"""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from mother_core.relations.detect import label_edge
    from mother_core.relations.evidence import pair_layers

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    _save(LlamaForCausalLM(cfg), tmp_path / "m-base")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(_load(tmp_path / "m-base"), LoraConfig(r=20, lora_alpha=20, target_modules=targets,
                                                                  use_dora=True))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
            if "lora_A" in n:
                p.mul_(torch.exp(torch.linspace(2, -2, p.shape[0]))[:, None])
            if "lora_magnitude" in n:
                p.mul_(torch.exp(0.5 * torch.randn_like(p)))
    _save(model.merge_and_unload(), tmp_path / "m-merged")
    stats = compute_statistics(discover([tmp_path]), device="cpu")
    ids = list(stats.model_ids)
    relation, detail, _, _ = label_edge(stats, pair_layers(stats), ids.index("m-base"), ids.index("m-merged"))
    assert relation is Relation.LORA
    assert detail == "14 layers changed, 14 low rank after a DoRA-style row rescaling"


@pytest.fixture(scope="module")
def trained_root_families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two families in one folder, each on a root trained 30 AdamW steps (its weights then hold Adam's
    structured updates, not an isotropic init). ``m-``: the family of :func:`family` (five merged LoRAs
    among full fine-tunes, a merged DoRA on the root). ``b-``: a LoRA of rank 8 on the root and a sibling
    of rank 1 on three of its four target modules, among three fine-tunes; the sibling differs from the
    LoRA at rank 8 + 1 where the base differs at 8, a close runner-up. Returns the typed links."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from mother_core.recovery.features import pair_evidence, select_layers
    from mother_core.recovery.forest import split_into_trees
    from mother_core.relations.detect import detect_relations

    d = tmp_path_factory.mktemp("lora-links-trained")
    cfg = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    _m_family(d, _train(LlamaForCausalLM(cfg), 0, 30, 3e-3))

    torch.manual_seed(1)
    _save(_train(LlamaForCausalLM(cfg), 101, 30, 3e-3), d / "b-root")
    for name, seed in (("b-ft1", 11), ("b-ft2", 12), ("b-ft3", 13)):
        _finetune(d / "b-root", d / name, seed)
    for name, seed, r, targets in (("b-lora8", 14, 8, ATTN_MLP), ("b-lora1", 15, 1, ["q_proj", "v_proj", "up_proj"])):
        torch.manual_seed(seed)
        model = get_peft_model(_load(d / "b-root"), LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
        _train(model, seed, 8, 3e-3)
        _save(model.merge_and_unload(), d / name)

    stats = compute_statistics(discover([d]), device="cpu")
    ev = pair_evidence(stats, select_layers(stats, RecoverySettings().layers, None))
    labels, _ = split_into_trees(ev.relative, None)
    ids = list(stats.model_ids)
    return {ids[x.child]: (ids[x.parents[0]], x.confidence) for x in detect_relations(stats, labels).links
            if x.relation is Relation.LORA}


def test_merged_dora_on_a_trained_root_goes_to_its_base(trained_root_families: dict[str, Any]) -> None:
    """PEFT merges a DoRA as ``diag(m / ||W + B A||_row) (W + B A)``, so the DoRA differs from its base at
    rank r only after each output row is rescaled. The summed rank that chooses the base must be the
    *settled* rescaled rank: the first least-squares scale fit leaves ``diag(bias) W``, which on a trained
    root read 20-33 of 48 per layer (under the low-rank threshold, where the refits stopped), so the
    DoRA differed from its base at 200 and from the sibling LoRA ``m-lora`` at 152 and was linked to
    the sibling at 0.98. Settled: 32 (4 x 8 layers) against 56 and 65. Every other LoRA keeps its base."""
    got = {c: p for c, (p, _) in trained_root_families.items() if c.startswith("m-")}
    assert got == TRUE_LORA_PARENTS
    assert trained_root_families["m-dora"][1] >= 0.9  # 32 against 56: a clear margin


def test_a_link_with_a_close_runner_up_reads_under_0_9(trained_root_families: dict[str, Any]) -> None:
    """A LoRA of rank 8 whose sibling of rank 1 also holds its untouched layers: the base differs at 8 per
    layer, the sibling at 9 on the three modules it targeted (64 against 70). The base is chosen, but
    the summed ranks are within a tenth of each other, so the link's confidence falls under 0.9 (a link
    with one such relative, or a clear margin, keeps the calibrated rate)."""
    parent, conf = trained_root_families["b-lora8"]
    assert parent == "b-root"
    assert conf < 0.9
    assert trained_root_families["b-lora1"] == ("b-root", pytest.approx(trained_root_families["m-lora"][1]))
    assert trained_root_families["m-lora"][1] >= 0.9


def test_pair_test_and_remembered_refits_give_the_profile(family: dict[str, Any]) -> None:
    """The shortcuts of the low-rank profile change no answer: on every ordered pair of the family (merged
    LoRAs, a merged DoRA, full fine-tunes), :func:`reads_low_rank`, which refits only until the answer is
    known, answers as the whole profile does (alone and with the untouched-share bar of ``label_edge``),
    and profiles inside :func:`remembered_rescales` (each pair asked twice and in both orders, settled and
    not) equal those computed without it."""
    from mother_core.relations.evidence import pair_layers, storage_roundoff
    from mother_core.relations.lowrank import (
        LORA_UNTOUCHED, lowrank_profile, reads_low_rank, remembered_rescales,
    )

    stats = family["stats"]
    pl, u = pair_layers(stats), storage_roundoff(stats)
    pairs = [(p, c) for p in range(stats.n_models) for c in range(stats.n_models) if p != c]
    plain = {(p, c, s): lowrank_profile(stats, pl, p, c, u, settle=s) for p, c in pairs for s in (False, True)}
    answers = {True: 0, False: 0}
    for p, c in pairs:
        prof = plain[(p, c, False)]
        assert reads_low_rank(stats, pl, p, c, u) == bool(prof.changed and prof.low >= 0.5), (p, c)
        bar = bool(prof.changed and prof.untouched >= LORA_UNTOUCHED and prof.low >= 0.5)
        assert reads_low_rank(stats, pl, p, c, u, untouched=LORA_UNTOUCHED) == bar, (p, c)
        answers[bar] += 1
    assert answers[True] >= 10 and answers[False] >= 10  # both answers are exercised (LoRAs both ways)
    assert sum(prof.rescaled > 0 for prof in plain.values()) > 0  # and the refits (the merged DoRA)
    with remembered_rescales():
        for _ in range(2):
            for (p, c, s), prof in plain.items():
                assert reads_low_rank(stats, pl, p, c, u) == bool(prof.changed and prof.low >= 0.5)
                assert lowrank_profile(stats, pl, p, c, u, settle=s) == prof, (p, c, s)


def test_one_blas_thread_limits_and_restores() -> None:
    """numpy's BLAS runs on one thread inside :func:`one_blas_thread` and on as many as before after it, and
    a product's entries are the same bits either way (the refits' projections: a 96 x 96 skeleton off 40
    of its singular directions)."""
    from threadpoolctl import threadpool_info

    from mother_core.device import one_blas_thread

    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()
    rng = np.random.default_rng(0)
    a, basis = rng.standard_normal((96, 96)), np.linalg.qr(rng.standard_normal((96, 40)))[0].T.copy()
    threaded = a - (a @ basis.T) @ basis
    with one_blas_thread():
        assert set(blas_threads()) <= {1}
        single = a - (a @ basis.T) @ basis
    assert blas_threads() == before
    assert np.array_equal(single, threaded)


def test_one_torch_thread_limits_and_restores() -> None:
    """torch runs on one intra-op thread inside :func:`one_torch_thread` and on as many as before after it. The
    test processes run torch on one thread (tests/conftest.py), where the context has nothing to restore: the
    test sets two threads first, so the restore is checked whatever the process's setting."""
    from mother_core.device import one_torch_thread

    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_torch_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(outer)
