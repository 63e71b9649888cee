"""mother_core.layout: tidy hierarchical positions, roots on top, trees side by side, deterministic."""

from __future__ import annotations

import doctest
import itertools
import random

import mother_core.layout as layout_mod
from mother_core.layout import tree_layout, tree_layout_edges, tree_order, tree_order_edges, wrap_width
from mother_core.recovery.result import Edge, ModelNode, Recovery


def _rec(nodes, edges):
    return Recovery([ModelNode(n, "", 0, 0.0, True) for n in nodes],
                    [Edge(p, c, 1.0, 1.0, 1.0, 1.0) for p, c in edges], [])


VTHR_LIKE = [("r", f"c{i}") for i in range(4)] + [(f"c{i}", f"g{i}{j}") for i in range(4) for j in range(4)]


def test_docstring_example():
    assert doctest.testmod(layout_mod).failed == 0


def test_roots_on_top_and_children_one_level_below():
    nodes = ["r"] + [c for _, c in VTHR_LIKE]
    pos = tree_layout_edges(nodes, VTHR_LIKE)
    assert pos["r"][1] == 0.0
    for p, c in VTHR_LIKE:
        assert pos[c][1] == pos[p][1] + 1.0


def test_parent_centred_over_children_and_no_overlap():
    nodes = ["r"] + [c for _, c in VTHR_LIKE]
    pos = tree_layout_edges(nodes, VTHR_LIKE)
    for i in range(4):
        xs = [pos[f"g{i}{j}"][0] for j in range(4)]
        assert pos[f"c{i}"][0] == (min(xs) + max(xs)) / 2
    assert len({pos[n] for n in nodes}) == len(nodes)  # no two nodes share a position


def test_forest_side_by_side_without_overlap():
    edges = [("a", "a1"), ("a", "a2"), ("b", "b1")]
    pos = tree_layout_edges(["b1", "a2", "b", "a1", "a", "lonely"], edges, forest_gap=1.0)
    a_xs = [pos[n][0] for n in ("a", "a1", "a2")]
    b_xs = [pos[n][0] for n in ("b", "b1")]
    assert max(a_xs) < min(b_xs) < pos["lonely"][0]  # trees ordered by root id, separated
    assert pos["lonely"] == (max(b_xs) + 2.0, 0.0)


def test_deterministic_whatever_the_input_order():
    nodes = ["r"] + [c for _, c in VTHR_LIKE]
    want = tree_layout_edges(nodes, VTHR_LIKE)
    rng = random.Random(1)
    for _ in range(5):
        n, e = nodes[:], VTHR_LIKE[:]
        rng.shuffle(n)
        rng.shuffle(e)
        assert tree_layout_edges(n, e) == want


def test_bad_input_still_drawn():
    # a cycle, a second parent, a self loop and an unknown node: every node still gets a position
    pos = tree_layout_edges(["a", "b", "c", "d"], [("a", "b"), ("b", "a"), ("c", "b"), ("d", "d"), ("x", "c")])
    assert set(pos) == {"a", "b", "c", "d"}
    assert tree_layout_edges([], []) == {}


def test_recovery_wrapper_and_tree_order():
    nodes = ["r"] + [c for _, c in VTHR_LIKE]
    rec = _rec(nodes, VTHR_LIKE)
    assert tree_layout(rec) == tree_layout_edges(nodes, VTHR_LIKE)
    order = tree_order(rec)
    assert order[:3] == ["r", "c0", "g00"] and sorted(order) == sorted(nodes)
    for p, c in VTHR_LIKE:
        assert order.index(p) < order.index(c)
    assert tree_order_edges(["b", "a"], []) == ["a", "b"]


def test_scales_to_a_thousand_models():
    nodes = [str(i) for i in range(1000)]
    edges = [(str((i - 1) // 3), str(i)) for i in range(1, 1000)]
    pos = tree_layout_edges(nodes, edges)
    assert len(pos) == 1000 and len(set(pos.values())) == 1000
    assert all(pos[c][1] > pos[p][1] for p, c in itertools.islice(edges, 50))


def test_wrap_into_rows_for_a_wide_forest():
    nodes = [f"t{i}" for i in range(6)] + [f"t{i}c{j}" for i in range(6) for j in range(3)]
    edges = [(f"t{i}", f"t{i}c{j}") for i in range(6) for j in range(3)]
    pos = tree_layout_edges(nodes, edges, max_width=8)
    rows = sorted({pos[f"t{i}"][1] for i in range(6)})
    assert len(rows) == 3 and max(x for x, _ in pos.values()) < 8  # 2 trees (3 + gap + 3) per row
    for p, c in edges:
        assert pos[c][1] == pos[p][1] + 1 and len(set(pos.values())) == len(nodes)
    assert wrap_width(nodes, edges, aspect=10.0) is None  # a very wide canvas: one row
    wide = wrap_width(nodes, edges, aspect=1.0)
    assert wide is not None and len({tree_layout_edges(nodes, edges, max_width=wide)[f"t{i}"][1] for i in range(6)}) > 1


def test_lone_models_come_after_the_trees_in_a_strip():
    # A declared-lineage graph: most models declare no parent. Sorted by id among the trees, the lone
    # ones used to open the drawing (a row of lone roots, the family to the right, off screen).
    lone = [f"a{i}" for i in range(6)]
    edges = [("m", "m1"), ("m", "m2"), ("m1", "m3")]
    nodes = lone + ["m", "m1", "m2", "m3"]
    pos = tree_layout_edges(nodes, edges)
    assert pos["m"][0] < min(pos[n][0] for n in lone)  # the family first
    xs = sorted(pos[n][0] for n in lone)
    assert [b - a for a, b in zip(xs, xs[1:])] == [1.0] * 5  # side by side, no gaps
    assert {pos[n][1] for n in lone} == {0.0}
    wrapped = tree_layout_edges(nodes, edges, max_width=4)  # a strip wraps like the trees
    assert pos["m"] == wrapped["m"] and max(wrapped[n][0] for n in lone) < 4
