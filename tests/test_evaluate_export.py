"""Tests of evaluation against a truth file and of the exports (node-link, GraphML, Newick, base_model)."""

from __future__ import annotations

import io
import json
import math
import re
import sys

import networkx as nx
import newick
import numpy as np
import pytest

from mother_core.errors import ResultFormatError
from mother_core.evaluate import (
    adjusted_rand_index,
    confidence_auroc,
    edge_status,
    evaluate,
    format_evaluation,
    TruthEdge,
    load_truth,
    load_truth_edges,
)
from mother_core.export import base_model_lines, to_graphml, to_networkx, to_newick, to_node_link
from mother_core.recovery.result import Alternative, Edge, ModelNode, Recovery, TreeInfo


# --- building Recovery values ---------------------------------------------------------------------
def make_recovery(models: list[str], edges: list[tuple[str, str]], conf: dict | None = None,
                  dist: dict | None = None) -> Recovery:
    conf, dist = conf or {}, dist or {}
    children = {c for _, c in edges}
    tree_of = nx.DiGraph(edges)
    tree_of.add_nodes_from(models)
    comps = [sorted(c, key=models.index) for c in nx.weakly_connected_components(tree_of)]
    comps.sort(key=lambda c: models.index(c[0]))
    label = {m: i for i, c in enumerate(comps) for m in c}
    nodes = [ModelNode(id=m, path=f"/models/{m}", tree=label[m], kurtosis=0.5 * i, is_root=m not in children)
             for i, m in enumerate(models)]
    es = [Edge(parent=p, child=c, distance=dist.get((p, c), 0.1 * (i + 1)), confidence=conf.get((p, c), 0.8),
               placement_confidence=0.9, direction_confidence=0.7,
               alternatives=(Alternative(parent=None, cost=2.0, distance=3.0), Alternative("x", 1.5, 1.0)),
               layer_distance=(0.1, math.nan))
          for i, (p, c) in enumerate(edges)]
    trees = [TreeInfo(id=i, members=tuple(c), root=next(m for m in c if m not in children),
                      regime="specialization", regime_confidence=0.6) for i, c in enumerate(comps)]
    return Recovery(models=nodes, edges=es, trees=trees)


SPECIAL = ["org/base model", "org/child:v1", "fork (2)", "it's", "brack[et]", "under_score", "comma,x", "plain-1.0"]


@pytest.fixture
def forest() -> Recovery:
    """Two trees with awkward ids plus a single-model tree."""
    s = SPECIAL
    edges = [(s[0], s[1]), (s[0], s[2]), (s[1], s[3]), (s[4], s[5]), (s[4], s[6]), (s[2], s[7])]
    conf = {(s[0], s[2]): math.nan}
    dist = {(s[4], s[6]): math.nan}
    return make_recovery(s + ["solo"], edges, conf=conf, dist=dist)


def write_truth(tmp_path, obj) -> str:
    p = tmp_path / "truth.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


# --- load_truth -----------------------------------------------------------------------------------
def test_load_truth_pairs_and_objects(tmp_path):
    path = write_truth(tmp_path, {"edges": [["a", "b"], {"parent": "b", "child": "c"}, ["a", "b"]]})
    assert load_truth(path) == [("a", "b"), ("b", "c")]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "Cannot read truth file"),
        ({"nodes": []}, "no 'edges' list"),
        ([["a", "b"]], "no 'edges' list"),
        ({"edges": [["a"]]}, r"edge #0 .*pair of model ids"),
        ({"edges": [["a", 3]]}, "pair of model ids"),
        ({"edges": [["a", "a"]]}, "self-loop"),
        ({"edges": [["a", "b"], ["b", "a"]]}, "cycle"),
        ({"edges": [["a", "b"], ["x", "c"], ["b", "c"], ["c", "a"]]}, "cycle"),
        ({"edges": [{"parent": "a", "child": "b", "relation": "cousin"}]}, "Unknown relation 'cousin'"),
    ],
)
def test_load_truth_bad_files(tmp_path, content, match):
    with pytest.raises(ResultFormatError, match=match) as err:
        load_truth(write_truth(tmp_path, content))
    assert err.value.path is not None


def test_load_truth_typed_edges_with_several_parents(tmp_path):
    path = write_truth(tmp_path, {"edges": [
        {"parent": "a", "child": "m", "relation": "merge"}, {"parent": "b", "child": "m", "relation": "merge"},
        {"parent": "m", "child": "q", "relation": "Quantized"}, ["a", "b"], {"parent": "a", "child": "m"}]})
    assert load_truth_edges(path) == [
        TruthEdge("a", "m", "merge"), TruthEdge("b", "m", "merge"), TruthEdge("m", "q", "quantized"),
        TruthEdge("a", "b", None)]
    assert load_truth(path) == [("a", "m"), ("b", "m"), ("m", "q"), ("a", "b")]


def test_load_truth_missing_file(tmp_path):
    with pytest.raises(ResultFormatError, match=r"does not exist.*\"edges\""):
        load_truth(tmp_path / "nope.json")


# --- edge_status and evaluate ---------------------------------------------------------------------
def test_perfect_recovery():
    r = make_recovery(["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("c", "d")])
    ev = evaluate(r, [("a", "b"), ("a", "c"), ("c", "d")])
    assert ev.directed_accuracy == ev.undirected_accuracy == 1.0
    assert ev.root_precision == ev.root_recall == 1.0
    assert ev.adjusted_rand_index == 1.0
    assert set(ev.edge_status.values()) == {"correct"}
    assert (ev.n_truth_edges, ev.n_models, ev.n_recovered_edges) == (3, 4, 3)


def test_statuses_and_accuracies():
    truth = [("a", "b"), ("b", "c"), ("a", "d"), ("d", "e")]
    # recovered: a->b and b->c correct, e->d flipped, a->e wrong; a->d then missing
    r = make_recovery(["a", "b", "c", "d", "e"], [("a", "b"), ("b", "c"), ("e", "d"), ("a", "e")])
    st = edge_status(r, truth)
    assert st == {("a", "b"): "correct", ("b", "c"): "correct", ("e", "d"): "flipped", ("a", "e"): "wrong",
                  ("a", "d"): "missing"}
    ev = evaluate(r, truth)
    assert ev.directed_accuracy == 2 / 4
    assert ev.undirected_accuracy == 3 / 4
    assert (ev.n_correct, ev.n_flipped, ev.n_wrong, ev.n_missing) == (2, 1, 1, 1)
    assert ev.root_precision == ev.root_recall == 1.0  # roots {a} on both sides


def test_root_scores_only_over_models_in_both():
    truth = [("a", "b"), ("c", "d")]  # true roots a, c
    r = make_recovery(["a", "b", "c", "d", "x"], [("a", "b"), ("b", "c"), ("c", "d")])  # roots a, x
    ev = evaluate(r, truth)
    assert ev.root_precision == 1.0  # x is not in the truth: not counted
    assert ev.root_recall == 0.5  # c was given a parent


def test_truth_models_missing_from_result():
    r = make_recovery(["a", "b"], [("a", "b")])
    ev = evaluate(r, [("a", "b"), ("b", "ghost")])
    assert ev.models_not_in_result == ("ghost",)
    assert ev.directed_accuracy == 0.5
    assert "ghost" in format_evaluation(ev)


def _calibration_case() -> tuple[list[str], list[tuple[str, str]], dict, list[tuple[str, str]]]:
    """Six edges at confidences 0.1 ... 1.0 and NaN; against the truth a, d, e are correct, b flipped, c wrong."""
    edges = [("r", m) for m in "abcdef"]
    conf = dict(zip(edges, [0.1, 0.3, 0.5, 0.9, 1.0, math.nan]))
    return list("rabcdef"), edges, conf, [("r", "a"), ("r", "d"), ("r", "e"), ("b", "r")]


def test_calibration_bins_and_ece():
    models, edges, conf, truth = _calibration_case()
    ev = evaluate(make_recovery(models, edges, conf=conf), truth)
    bins = ev.calibration
    assert [(b.lo, b.hi) for b in bins] == [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]
    assert [b.n_edges for b in bins] == [1, 1, 1, 0, 2]  # NaN confidence left out; 1.0 in the last bin
    assert bins[0].fraction_correct == 1.0 and bins[1].fraction_correct == 0.0
    assert bins[4].mean_confidence == pytest.approx(0.95) and bins[4].fraction_correct == 1.0
    assert math.isnan(bins[3].mean_confidence)
    expected = (abs(0.1 - 1) + abs(0.3 - 0) + abs(0.5 - 0) + 2 * abs(0.95 - 1)) / 5
    assert ev.expected_calibration_error == pytest.approx(expected)


def test_confidence_auroc_and_confident_wrong_edges():
    models, edges, conf, truth = _calibration_case()
    ev = evaluate(make_recovery(models, edges, conf=conf), truth)
    # right edges at 0.1, 0.9, 1.0 against wrong ones at 0.3, 0.5: 4 of the 6 pairs ordered right
    assert ev.confidence_auroc == pytest.approx(4 / 6)
    assert (ev.n_confident, ev.n_confident_wrong) == (2, 0)
    conf[("r", "b")] = 0.85  # a flipped edge said with confidence
    ev = evaluate(make_recovery(models, edges, conf=conf), truth)
    assert (ev.n_confident, ev.n_confident_wrong) == (3, 1)
    assert "wrong among edges at >= 0.8: 1 of 3" in format_evaluation(ev)
    assert math.isnan(confidence_auroc(np.array([0.2, 0.9]), np.array([True, True])))  # nothing to separate
    assert confidence_auroc(np.array([0.2, 0.2]), np.array([True, False])) == 0.5  # a tie counts half


def test_empty_truth_and_empty_result():
    r = make_recovery(["a"], [])
    ev = evaluate(r, [])
    assert math.isnan(ev.directed_accuracy) and math.isnan(ev.expected_calibration_error)
    text = format_evaluation(ev)
    assert "n/a" in text and "Directed accuracy" in text


def test_format_evaluation_lists_problem_edges_and_truncates():
    models = [f"m{i}" for i in range(30)]
    r = make_recovery(models, [(models[i + 1], models[i]) for i in range(29)])  # every edge flipped
    ev = evaluate(r, [(models[i], models[i + 1]) for i in range(29)])
    text = format_evaluation(ev, max_edges=5)
    assert "Directed accuracy" in text and "0.0%" in text and "Undirected accuracy" in text
    assert "flipped  m1 -> m0" in text and "... and 24 more" in text
    assert "expected calibration error" in text


def test_evaluate_after_json_round_trip(tmp_path, forest):
    forest.save(tmp_path / "result.json")
    truth = [(e.parent, e.child) for e in forest.edges]
    ev = evaluate(Recovery.load(tmp_path / "result.json"), truth)
    assert ev.directed_accuracy == 1.0


# --- adjusted Rand index --------------------------------------------------------------------------
def test_ari_known_values():
    # sklearn's documented examples: ([0,0,1,1], [0,0,1,2]) -> 0.5714..., ([0,0,1,1], [0,1,0,1]) -> -0.5
    truth = [("a", "b"), ("c", "d")]
    assert adjusted_rand_index({"a": 0, "b": 0, "c": 1, "d": 2}, truth) == pytest.approx(4 / 7)
    assert adjusted_rand_index({"a": 0, "b": 1, "c": 0, "d": 1}, truth) == pytest.approx(-0.5)


def test_ari_input_kinds_and_isolated_models(forest):
    truth = [(e.parent, e.child) for e in forest.edges]  # "solo" is in no truth edge: a tree by itself
    assert adjusted_rand_index(forest, truth) == 1.0
    assert adjusted_rand_index(forest.trees, truth) == 1.0
    assert adjusted_rand_index([list(t.members) for t in forest.trees], truth) == 1.0
    merged = [list(forest.trees[0].members) + list(forest.trees[2].members), list(forest.trees[1].members)]
    assert adjusted_rand_index(merged, truth) < 1.0


def test_ari_trivial_partitions():
    assert adjusted_rand_index({"a": 0, "b": 0}, [("a", "b")]) == 1.0
    assert adjusted_rand_index({"a": 0, "b": 1}, []) == 1.0
    assert adjusted_rand_index({"a": 0}, []) == 1.0
    with pytest.raises(ResultFormatError):
        adjusted_rand_index(["ab"], [])


# --- exports --------------------------------------------------------------------------------------
def newick_pairs(text: str) -> tuple[list[str], set[tuple[str, str]], dict[str, newick.Node]]:
    roots, pairs, nodes = [], set(), {}
    for tree in newick.loads(text):
        roots.append(tree.unquoted_name)
        for node in tree.walk():
            nodes[node.unquoted_name] = node
            pairs.update((node.unquoted_name, k.unquoted_name) for k in node.descendants)
    return roots, pairs, nodes


def test_newick_round_trip_with_special_ids(forest):
    text = to_newick(forest)
    lines = text.splitlines()
    assert len(lines) == 3 and all(line.endswith(";") for line in lines)
    roots, pairs, nodes = newick_pairs(text)
    assert roots == ["org/base model", "brack[et]", "solo"]
    assert pairs == {(e.parent, e.child) for e in forest.edges}
    for e in forest.edges:
        node = nodes[e.child]
        if math.isfinite(e.distance):
            assert node.length == pytest.approx(e.distance)
        if math.isfinite(e.confidence):
            assert float(node.properties["support"]) == pytest.approx(e.confidence, abs=5e-4)
        else:
            assert "support" not in node.properties
    assert "'it''s'" in text and "'under_score'" in text and "plain-1.0" in text


# Discovery writes an undecodable folder-name byte as ``\xff``; the ids around it hold each character
# Newick reserves, alone and beside an underscore or another backslash.
BACKSLASHED = ["caf\\xffe", "back\\slash_x", "trail\\", "\\\\two", "q'uote", "pa(ren", "clo)se", "co:lon",
               "semi;colon", "com,ma", "a space", "brack[", "et]"]


def test_newick_reads_back_ids_with_backslashes_and_reserved_characters():
    """hostile3's leftover: `newick` (1.11) read ``\\`` inside a quoted label as an escape ("Unterminated
    quote!") and refused the whole export of a set with one such folder name."""
    ids = BACKSLASHED
    r = make_recovery(ids, [(ids[0], c) for c in ids[1:7]] + [(ids[3], c) for c in ids[7:]])
    roots, pairs, nodes = newick_pairs(to_newick(r))
    assert roots == [ids[0]]
    assert sorted(nodes) == sorted(ids)
    assert pairs == {(e.parent, e.child) for e in r.edges}


NASTY = ["tab\there", "new\nline", "dq\"uote", "h#sh", "amp&=", "ünï", "two  blanks", "'lead", "trail'", "_under_",
         "[&&NHX:x=1]", "a;b,c:d", "\\", "x\\_y"]
UNREADABLE = ["C:\\models\\my model", "back\\slash (v2)", "it\\'s", "a\\b;c"]


def _standard_labels(text: str) -> list[str]:
    """The quoted labels of a Newick text as the standard reads them: every character itself, '' a quote."""
    return [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", text)]


def test_newick_says_which_ids_no_label_carries_through_the_newick_package(tmp_path, capsys):
    """appux5: an id with a backslash *and* a blank (or one of ``()[]':;,``) has no Newick form the `newick`
    package (1.11) reads back: quoted, it takes ``\\`` as an escape; bare, the blank splits the label. Every
    other nasty id round-trips through ``newick.loads``; those few are written as the standard says (quoted,
    a quote doubled, the backslash literal) and the export says so, naming them, on the Export page and
    on the CLI's stderr."""
    from mother_core.cli import main
    from mother_core.export import newick_unreadable, newick_unreadable_note

    ids = NASTY + BACKSLASHED
    assert newick_unreadable(ids) == [] and newick_unreadable_note(make_recovery(ids, [])) is None
    r = make_recovery(ids, [(ids[0], c) for c in ids[1:9]] + [(ids[9], c) for c in ids[10:]])
    roots, pairs, nodes = newick_pairs(to_newick(r))
    assert sorted(nodes) == sorted(ids) and pairs == {(e.parent, e.child) for e in r.edges}

    bad = make_recovery(["root"] + UNREADABLE, [("root", m) for m in UNREADABLE])
    assert newick_unreadable(bad.model_ids) == UNREADABLE
    text = to_newick(bad)
    assert set(UNREADABLE) <= set(_standard_labels(text))  # the standard's form, backslashes literal
    for m in UNREADABLE:  # and truly no form of it that the package reads back: quoted or bare
        for label in ("'" + m.replace("'", "''") + "'", m, "'" + m.replace("'", "\\'") + "'"):
            try:
                back = [n.unquoted_name for n in newick.loads(f"({label}:1)root;")[0].walk()]
            except ValueError:
                continue
            assert m not in back, label
    note = newick_unreadable_note(bad)
    assert note.startswith("4 model id(s) hold a backslash") and f"“{UNREADABLE[0]}”" in note
    assert "and 1 more" in note and "GraphML" in note
    path = tmp_path / "bad.json"
    bad.save(path)
    assert main(["export", str(path), "--format", "newick"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == text and "warning: 4 model id(s)" in err


def test_newick_nhx_after_length():
    r = make_recovery(["p", "c"], [("p", "c")], conf={("p", "c"): 0.93}, dist={("p", "c"): 0.25})
    assert to_newick(r) == "(c:0.25[&&NHX:support=0.930])p;"


def test_newick_single_model_and_deep_chain():
    assert to_newick(make_recovery(["only one"], [])) == "'only one';"
    chain = [f"m{i}" for i in range(1200)]
    text = to_newick(make_recovery(chain, list(zip(chain, chain[1:]))))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # newick's parser recurses per level too
    try:
        _, pairs, _ = newick_pairs(text)
    finally:
        sys.setrecursionlimit(limit)
    assert len(pairs) == 1199 and sys.getrecursionlimit() == limit


def test_newick_rejects_a_cycle():
    r = make_recovery(["a", "b", "c"], [("a", "b")])
    r.edges.append(Edge("c", "a", 1.0, 0.5, 0.5, 0.5))
    r.edges.append(Edge("b", "c", 1.0, 0.5, 0.5, 0.5))  # a -> b -> c -> a, no root
    with pytest.raises(ResultFormatError, match="cycle"):
        to_newick(r)
    r2 = make_recovery(["a", "b"], [("a", "b")])
    r2.edges.append(Edge("b", "ghost", 1.0, 0.5, 0.5, 0.5))
    with pytest.raises(ResultFormatError, match="not"):
        to_newick(r2)
    with pytest.raises(ResultFormatError):
        to_networkx(r2)


def test_graphml_round_trip(forest):
    text = to_graphml(forest)
    assert "None" not in text and ">nan<" not in text.lower()
    g = nx.read_graphml(io.BytesIO(text.encode("utf-8")))
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == set(forest.model_ids)
    assert set(g.edges) == {(e.parent, e.child) for e in forest.edges}
    e0 = forest.edges[0]
    d = g.edges[e0.parent, e0.child]
    assert d["distance"] == pytest.approx(e0.distance) and d["confidence"] == pytest.approx(e0.confidence)
    assert json.loads(d["alternatives"])[0] == {"parent": None, "cost": 2.0, "distance": 3.0}
    assert json.loads(d["layer_distance"]) == [0.1, None]
    assert "confidence" not in g.edges[SPECIAL[0], SPECIAL[2]]  # NaN is left out, not written as "nan"
    assert g.nodes["org/child:v1"]["path"] == "/models/org/child:v1"
    assert g.nodes["org/base model"]["is_root"] is True


def test_graphml_coerces_numpy_scalars():
    r = make_recovery(["a", "b"], [("a", "b")])
    r.models[0] = ModelNode(id="a", path="p", tree=np.int64(0), kurtosis=np.float32(1.5), is_root=np.bool_(True),
                            n_params=np.int64(7))
    r.edges[0] = Edge("a", "b", np.float32(0.5), 1, 0.5, 0.5)  # int confidence: still written as double
    g = nx.read_graphml(io.BytesIO(to_graphml(r).encode()))
    assert g.nodes["a"]["n_params"] == 7 and g.nodes["a"]["kurtosis"] == 1.5
    assert isinstance(g.edges["a", "b"]["confidence"], float)


def test_node_link_round_trip(forest):
    data = to_node_link(forest)
    text = json.dumps(data, allow_nan=False)  # strict JSON
    g = nx.node_link_graph(json.loads(text), edges="edges")
    assert g.is_directed()
    assert set(g.edges) == {(e.parent, e.child) for e in forest.edges}
    assert g.nodes["fork (2)"]["tree"] == 0
    assert g.graph["roots"] == ["org/base model", "brack[et]", "solo"]
    assert g.edges[SPECIAL[0], SPECIAL[2]]["confidence"] is None


def test_to_networkx_attributes(forest):
    g = to_networkx(forest)
    assert g.number_of_nodes() == 9 and g.number_of_edges() == 6
    assert g.nodes["solo"]["is_root"] and g.nodes["solo"]["path"] == "/models/solo"
    assert g.edges[SPECIAL[0], SPECIAL[1]]["alternatives"][1]["parent"] == "x"
    assert g.graph["format"] == "mother-recovery"


def test_base_model_lines(forest):
    text = base_model_lines(forest)
    blocks = text.strip().split("\n\n")
    assert len(blocks) == 6  # one per non-root model
    assert blocks[0] == ('# org/child:v1 (recovered parent, fine-tune, confidence 0.80)\nbase_model: "org/base model"'
                         "\nbase_model_relation: finetune")
    assert "# fork (2) (recovered parent, fine-tune, confidence unknown)" in text
    assert "base_model: org/child:v1" not in text and 'base_model: "org/child:v1"' in text
    assert "# solo" not in text and "# org/base model" not in text
    assert base_model_lines(make_recovery(["a"], [])) == ""


def test_base_model_lines_plain_id():
    r = make_recovery(["org/base", "org/ft"], [("org/base", "org/ft")])
    assert base_model_lines(r) == ("# org/ft (recovered parent, fine-tune, confidence 0.80)\nbase_model: org/base\n"
                                   "base_model_relation: finetune\n")


# --- typed graphs: MDGBench scores --------------------------------------------------------------
def test_typed_scores_with_a_merge_and_relations():
    # truth: a -> b (finetune), a -> m and x -> m (merge), m -> q (quantized); x a root
    truth = [TruthEdge("a", "b", "finetune"), TruthEdge("a", "m", "merge"), TruthEdge("x", "m", "merge"),
             TruthEdge("m", "q", "quantized")]
    nodes = [ModelNode(m, f"/m/{m}", 0, 0.0, m in ("a", "x")) for m in ("a", "b", "m", "q", "x")]
    edges = [Edge("a", "b", 1.0, 0.9, 0.9, 0.9, relation="finetune"),
             Edge("a", "m", 1.0, 0.9, 0.9, 0.9, relation="merge", merge_weight=0.5),
             Edge("m", "x", 1.0, 0.9, 0.9, 0.9, relation="finetune"),  # the other parent taken for a child
             Edge("m", "q", 1.0, 0.9, 0.9, 0.9, relation="convert")]  # right pair, wrong relation
    rec = Recovery(models=nodes, edges=edges, trees=[TreeInfo(0, ("a", "b", "m", "q", "x"), "a", "specialization", 1)])
    rec.run_seconds = 2.0
    ev = evaluate(rec, truth)
    assert ev.n_correct == 3 and ev.edge_precision == 3 / 4 and ev.edge_recall == 3 / 4
    assert ev.edge_f1 == pytest.approx(0.75)
    # descendants: a -> {b, m, q} all reachable; x -> {m, q}: none reachable (m -> x instead)
    assert ev.reachability == pytest.approx((1.0 + 0.0 + 1.0) / 3)  # a, x, m
    assert ev.relation_accuracy == pytest.approx(2 / 3) and ev.n_relation_known == 3
    assert ev.per_relation == {"finetune": (1, 1, 1), "merge": (2, 1, 1), "quantized": (1, 1, 0)}
    text = format_evaluation(ev)
    assert "Edge F1" in text and "Reachability" in text and "quantized" in text and "2.0 s" in text
    # plain pairs: no relation known, the type-agnostic scores unchanged
    plain = evaluate(rec, [(t.parent, t.child) for t in truth])
    assert plain.edge_f1 == ev.edge_f1 and math.isnan(plain.relation_accuracy)


def _typed_network() -> Recovery:
    nodes = [ModelNode(m, f"/m/{m}", 0, 0.0, m in ("a", "b")) for m in ("a", "b", "m", "q", "c", "f")]
    edges = [
        Edge("a", "m", 1.0, 0.9, 0.9, 0.9, relation="merge", relation_detail="linear 0.60/0.40", merge_weight=0.6),
        Edge("b", "m", 2.0, 0.8, 0.9, 0.9, relation="merge", relation_detail="linear 0.60/0.40", merge_weight=0.4),
        Edge("m", "q", 0.1, 0.99, 0.99, 0.99, relation="quantized", relation_detail="Q4_0"),
        Edge("a", "c", 0.0, 0.99, 0.99, 0.99, relation="convert", relation_detail="fp32 -> bf16"),
        Edge("m", "f", 0.5, 0.7, 0.7, 0.7),
    ]
    return Recovery(models=nodes, edges=edges,
                    trees=[TreeInfo(0, tuple(n.id for n in nodes), "a", "specialization", 1)])


def test_base_model_lines_typed():
    blocks = base_model_lines(_typed_network()).strip().split("\n\n")
    assert blocks[0] == ("# m (recovered parents, merge linear 0.60/0.40, confidence 0.90)\n"
                         "base_model:\n- a\n- b\nbase_model_relation: merge")
    assert blocks[1].endswith("base_model: m\nbase_model_relation: quantized") and "quantized Q4_0" in blocks[1]
    assert blocks[2] == "# c (recovered parent, conversion fp32 -> bf16, confidence 0.99)\nbase_model: a"


def test_newick_writes_a_merge_as_a_hybrid_node():
    text = to_newick(_typed_network())
    assert text.splitlines() == ["((q:0.1[&&NHX:support=0.990],f:0.5[&&NHX:support=0.700])m#H1:1[&&NHX:support=0.900],"
                                 "c:0[&&NHX:support=0.990])a;",
                                 "(m#H1:2[&&NHX:support=0.800])b;"]
    trees = newick.loads(text)
    assert [t.name for t in trees] == ["a", "b"]
    r = _typed_network()
    r.edges.append(Edge("b", "f", 1.0, 0.5, 0.5, 0.5))  # two parents without a merge
    with pytest.raises(ResultFormatError, match="two parents.*without a merge"):
        to_newick(r)


def test_graph_exports_keep_relations_and_every_parent():
    r = _typed_network()
    g = nx.read_graphml(io.BytesIO(to_graphml(r).encode("utf-8")))
    assert {(u, v) for u, v in g.edges} == {(e.parent, e.child) for e in r.edges}
    assert g.edges["a", "m"]["relation"] == "merge" and g.edges["a", "m"]["merge_weight"] == 0.6
    assert g.edges["m", "q"]["relation_detail"] == "Q4_0" and "merge_weight" not in g.edges["m", "q"]
    data = json.loads(json.dumps(to_node_link(r), allow_nan=False))
    rel = {(e["source"], e["target"]): e["relation"] for e in data["edges"]}
    assert rel[("b", "m")] == "merge" and rel[("m", "f")] == "finetune" and rel[("a", "c")] == "convert"
