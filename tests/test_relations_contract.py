"""The relation contract: one vocabulary, typed edges in result.json, old results still loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mother_core.errors import InputError
from mother_core.recovery.result import Edge, ModelNode, Recovery, TreeInfo
from mother_core.relations import RELATIONS, SINGLE_PARENT, Relation, parse_relation

DOC = Path(__file__).resolve().parents[1] / "docs" / "RELATIONS.md"


def test_vocabulary_is_the_issue_list_and_each_word_is_described():
    assert [r.value for r in Relation] == [
        "finetune", "adapter", "lora", "quantized", "convert", "merge", "prune", "distill"]
    assert set(RELATIONS) == set(Relation)
    for r, info in RELATIONS.items():
        assert info.relation is r and info.description and info.evidence and info.label
    assert Relation.MERGE not in SINGLE_PARENT and len(SINGLE_PARENT) == len(Relation) - 1


def test_every_relation_is_documented_once_in_docs():
    text = DOC.read_text()
    for r in Relation:
        assert f"`{r.value}`" in text, f"docs/RELATIONS.md does not document {r.value}"


@pytest.mark.parametrize(("word", "expected"), [
    ("finetune", Relation.FINETUNE), ("Fine-Tune", Relation.FINETUNE), ("quantization", Relation.QUANTIZED),
    ("merged", Relation.MERGE), (None, Relation.FINETUNE), ("", Relation.FINETUNE), (Relation.LORA, Relation.LORA)])
def test_parse_relation(word, expected):
    assert parse_relation(word) is expected


def test_unknown_relation_is_a_clear_error():
    with pytest.raises(InputError, match="Unknown relation 'sibling'.*finetune, adapter"):
        parse_relation("sibling")
    with pytest.raises(InputError):
        Edge("a", "b", 1.0, 0.5, 0.5, 0.5, relation="sibling")


def _merge_result() -> Recovery:
    nodes = [ModelNode(m, f"/m/{m}", 0, 0.0, m in ("a", "b")) for m in ("a", "b", "m", "q")]
    edges = [
        Edge("a", "m", 1.0, 0.9, 0.9, 0.9, relation="merge", relation_detail="linear 0.60/0.40",
             relation_confidence=0.95, merge_weight=0.6),
        Edge("b", "m", 1.2, 0.9, 0.9, 0.9, relation=Relation.MERGE, relation_detail="linear 0.60/0.40",
             relation_confidence=0.95, merge_weight=0.4),
        Edge("m", "q", 0.01, 0.99, 0.99, 0.99, relation="quantized", relation_detail="gguf:Q4_0",
             relation_confidence=0.99),
    ]
    return Recovery(models=nodes, edges=edges, trees=[TreeInfo(0, ("a", "b", "m", "q"), "a", "specialization", 0.5)])


def test_typed_edges_round_trip_through_result_json(tmp_path):
    rec = _merge_result()
    rec.run_seconds = 1.5
    rec.save(tmp_path / "r.json")
    raw = json.loads((tmp_path / "r.json").read_text())
    assert raw["edges"][0]["relation"] == "merge" and raw["edges"][0]["merge_weight"] == 0.6
    assert raw["edges"][2]["merge_weight"] is None and raw["run_seconds"] == 1.5
    back = Recovery.load(tmp_path / "r.json")
    assert back.edges == rec.edges
    assert back.parents_of("m") == ["a", "b"] and back.parent_of("m") == "a"
    assert back.parents_of("a") == [] and back.parent_of("q") == "m"
    assert back.relation_of("q") == "quantized" and back.relation_of("a") is None
    assert back.roots == ["a", "b"]


def test_results_written_before_relations_still_load(tmp_path):
    raw = _merge_result().to_dict()
    for e in raw["edges"]:
        for k in ("relation", "relation_detail", "relation_confidence", "merge_weight"):
            del e[k]
    del raw["run_seconds"]
    (tmp_path / "old.json").write_text(json.dumps(raw))
    old = Recovery.load(tmp_path / "old.json")
    assert all(e.relation == "finetune" and e.relation_detail == "" and math.isnan(e.relation_confidence)
               and e.merge_weight is None for e in old.edges)
    assert math.isnan(old.run_seconds)
