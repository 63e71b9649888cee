"""A merged LoRA parents only models that carry its update (issue 11: fine-tune edges of typed sets;
mother_core/recovery/typed.lora_without_its_update).

Profile C seed 21 of the typed zoo, made with the real tools (``mother zoo typed``: transformers training,
PEFT, mergekit, gguf): its first family's root has a merged LoRA child and a fine-tune trained beside it.
The fine-tune lies nearer the root than the LoRA (0.00192 against 0.00198), but the direction penalty
hung it under the LoRA (confidence 0.17). A model trained from a merged LoRA starts from its base plus the
LoRA's update and lies nearer the LoRA unless its training undid more than half of that update.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("typed-zoo-c21")


@pytest.fixture(scope="module")
def family(tmp_path_factory: Any) -> Path:
    """The first family of profile C seed 21 (its models linked into a folder of their own, with the truth)."""
    for mod in ("transformers", "peft", "mergekit", "gguf"):
        pytest.importorskip(mod)
    from mother_zoo.typed.generate import generate_typed

    folder = generate_typed(tmp_path_factory.mktemp("typed-c21"), size="small", seed=21, profile="C")
    truth = json.loads((folder / "truth.json").read_text())
    first = tmp_path_factory.mktemp("family-0")
    for m, f in truth["families"].items():
        if f == 0:
            (first / m).symlink_to(folder / m)
    mine = {m for m, f in truth["families"].items() if f == 0}
    truth["edges"] = [e for e in truth["edges"] if e["child"] in mine]
    (first / "truth.json").write_text(json.dumps(truth))
    return first


def _fine_tunes_beside_a_lora(edges: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(base, merged LoRA, fine-tune) of the truth: a base with a merged-LoRA child and a fine-tune child."""
    rel = lambda e: e.get("relation") or "finetune"  # noqa: E731
    loras = [(e["parent"], e["child"]) for e in edges if rel(e) == "lora"]
    return [(p, lora, e["child"]) for p, lora in loras for e in edges if e["parent"] == p and rel(e) == "finetune"]


def test_a_fine_tune_beside_a_merged_lora_is_its_base_child(family: Path) -> None:
    """Every fine-tune of a model with a merged LoRA child hangs under that model, not under the LoRA;
    without the rule the set's one such fine-tune nearer the base than the LoRA hung under the LoRA."""
    from mother_core import compute_statistics, discover, recover

    edges = json.loads((family / "truth.json").read_text())["edges"]
    beside = _fine_tunes_beside_a_lora(edges)
    assert beside
    rec = recover(compute_statistics(discover([family]), device="cpu"))
    parent = {e.child: e.parent for e in rec.edges}
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    d = np.asarray(rec.distance_matrix)
    assert any(d[ix[p], ix[c]] < d[ix[lora], ix[c]] for p, lora, c in beside)  # the case the rule is for
    for p, lora, c in beside:
        assert (parent[lora], parent[c]) == (p, p)  # the LoRA read on its base, the fine-tune beside it
    # The rule names exactly the LoRA -> fine-tune edges whose fine-tune lies nearer the base.
    from mother_core.recovery.typed import links_of, lora_without_its_update

    pairs = set(lora_without_its_update(links_of(rec.problem), d, set()))
    for p, lora, c in beside:
        assert ((ix[lora], ix[c]) in pairs) == bool(d[ix[p], ix[c]] < d[ix[lora], ix[c]])


def test_a_model_trained_from_a_merged_lora_stays_its_child(family: Path, tmp_path: Path) -> None:
    """A fine-tune trained *from* the merged LoRA (6 AdamW steps, real training) carries its update, lies
    nearer it than its base and stays its child: the rule takes away no parent the weights support."""
    from mother_core import compute_statistics, discover, recover
    from mother_zoo.data import SEQUENCE_TASKS, SequenceTask
    from mother_zoo.typed import ops
    from mother_zoo.typed.plan import TypedNode

    truth = json.loads((family / "truth.json").read_text())
    edges = truth["edges"]
    p, lora, _ = _fine_tunes_beside_a_lora(edges)[0]
    meta = truth["meta"]["models"][p]
    arch, vocab = meta["architecture"], meta["params"]["size"]["vocab"]
    for m in (p, lora):
        (tmp_path / m).symlink_to((family / m).resolve())
    for m in {e["child"] for e in edges if e["parent"] == p and (e.get("relation") or "finetune") == "finetune"}:
        (tmp_path / m).symlink_to((family / m).resolve())
    node = TypedNode(90, 0, arch, "finetune", "finetune", (1,), 90,
                     {"task": SequenceTask(SEQUENCE_TASKS[:2], vocab, task_seed=9), "steps": 6, "lr": 3e-4,
                      "store": "float32"})
    ops.make_finetune(node, tmp_path / lora, tmp_path / "m-onlora")
    rec = recover(compute_statistics(discover([tmp_path]), device="cpu"))
    ix = {m: i for i, m in enumerate(rec.model_ids)}
    d = np.asarray(rec.distance_matrix)
    assert d[ix[lora], ix["m-onlora"]] < d[ix[p], ix["m-onlora"]]
    assert rec.parent_of("m-onlora") == lora
