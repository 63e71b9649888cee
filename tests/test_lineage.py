"""mother_core.lineage: declared vs recovered parents."""

from __future__ import annotations

import doctest

import mother_core.lineage as lineage_mod
from mother_core.lineage import compare_declared, declared_edges, edge_lineage, findings, match_model_id
from mother_core.recovery.result import Edge, ModelNode, Recovery


def _rec(declared: dict, edges: list) -> Recovery:
    ids = sorted({*declared, *(x for e in edges for x in e)})
    kids = {c for _, c in edges}
    return Recovery([ModelNode(i, "", 0, 0.0, i not in kids, declared_parent=declared.get(i)) for i in ids],
                    [Edge(p, c, 1.0, 1.0, 1.0, 1.0) for p, c in edges], [])


def test_docstring_example():
    assert doctest.testmod(lineage_mod).failed == 0


def test_every_status():
    rec = _rec({"base": None, "chat": "org/base", "code": None, "instr": "code", "py": "code",
                "ext": "meta/llama-elsewhere", "root2": "meta/not-here"},
               [("base", "chat"), ("base", "code"), ("instr", "code"), ("base", "py"), ("base", "ext")])
    rows = {r.model: r for r in compare_declared(rec)}
    assert rows["base"].status == "agree"
    assert rows["chat"].status == "agree" and rows["chat"].declared_in_set == "base"  # hub id -> folder
    assert rows["code"].status == "undocumented"
    assert rows["instr"].status == "conflict" and "Reversed" in rows["instr"].note
    assert rows["py"].status == "conflict" and "base" in rows["py"].note
    assert rows["ext"].status == "external"
    assert rows["root2"].status == "agree"
    assert edge_lineage(rec)[("base", "chat")] == "agree"
    assert edge_lineage(rec)[("base", "py")] == "conflict"
    assert set(declared_edges(rec)) == {("base", "chat"), ("code", "instr"), ("code", "py")}
    assert len(findings(list(rows.values()))) == 2


def test_declared_root_recovered_as_child_is_a_conflict():
    rows = {r.model: r for r in compare_declared(_rec({"a": None, "b": "a"}, [("b", "a")]))}
    assert rows["b"].status == "conflict"  # declares a, but a descends from b: reversed
    assert rows["a"].status == "undocumented"


def test_match_model_id():
    ids = ["Llama-2-7b-hf", "codellama/CodeLlama-7b-hf", "x/dup", "y/dup"]
    assert match_model_id("meta-llama/Llama-2-7b-hf", ids) == "Llama-2-7b-hf"
    assert match_model_id("CodeLlama-7b-hf", ids) == "codellama/CodeLlama-7b-hf"
    assert match_model_id("CODELLAMA/codellama-7b-HF", ids) == "codellama/CodeLlama-7b-hf"
    assert match_model_id("z/dup", ids) is None  # ambiguous tail
    assert match_model_id(None, ids) is None and match_model_id("nothing", ids) is None


def test_input_not_mutated():
    rec = _rec({"a": None, "b": "a"}, [("a", "b")])
    before = rec.to_dict()
    compare_declared(rec)
    assert rec.to_dict() == before


def test_declared_path_reads_as_the_model_it_names_in_the_graph_tooltip():
    """appux3's leftover: an adapter's declared parent (its config's base path on another machine) showed
    as that path where the set holds the model it names; the graph's hover text names the model now."""
    from explorer_ui.graph import node_tooltip

    rec = _rec({"base": None, "lora": "/home/someone/runs/base/", "self": "/x/self", "gone": "org/elsewhere"},
               [("base", "lora"), ("base", "self"), ("base", "gone")])
    tips = {m.id: node_tooltip(m, rec, m.is_root).splitlines() for m in rec.models}
    assert tips["lora"][-2:] == ["declared parent: base", "  declared as: /home/someone/runs/base/"]
    assert tips["gone"][-1] == "declared parent: org/elsewhere"  # not in the set: as written, once
    assert tips["self"][-1] == "declared parent: /x/self"  # naming itself names no model of the set


def test_the_as_written_column_only_where_a_declaration_reads_otherwise():
    from explorer_ui.views import declared_cells, declared_frame

    same = declared_frame([{"model": "b", **declared_cells("a", "a")}, {"model": "c", **declared_cells(None, None)}])
    assert list(same.columns) == ["model", "declared parent"]
    other = declared_frame([{"model": "b", **declared_cells("/runs/a", "a")}])
    assert other.to_dict("records") == [{"model": "b", "declared parent": "a", "declared as written": "/runs/a"}]
