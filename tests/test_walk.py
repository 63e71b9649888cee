"""The one forest type (mother_core/walk.py): its walks agree with brute force on random forests, and
malformed edge lists (unknown nodes, self loops, second parents, cycles) are handled as documented."""

from __future__ import annotations

import numpy as np
import pytest

from mother_core.walk import Forest, components


def _random_parent(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    parent = np.full(n, -1)
    for k in range(1, n):
        if rng.random() < 0.85:  # some extra roots
            parent[order[k]] = order[rng.integers(0, k)]
    return parent


def _brute_ancestors(parent: np.ndarray, c: int) -> list[int]:
    out = []
    while parent[c] >= 0:
        c = int(parent[c])
        out.append(c)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_walks_match_brute_force(seed):
    parent = _random_parent(30, seed)
    f = Forest.from_parent_array(parent)
    assert set(f.roots) == {i for i in range(30) if parent[i] < 0}
    for c in range(30):
        assert f.ancestors(c) == _brute_ancestors(parent, c)
        assert f.descendants(c) == {d for d in range(30) if c in _brute_ancestors(parent, d)}
    sizes = f.subtree_sizes()
    assert all(sizes[c] == 1 + len(f.descendants(c)) for c in range(30))
    order = list(f.preorder())
    assert sorted(order) == list(range(30))
    assert all(order.index(int(parent[c])) < order.index(c) for c in range(30) if parent[c] >= 0)


def test_malformed_edges_are_ignored_first_parent_wins():
    f = Forest.from_edges(["a", "b", "c"], [("a", "b"), ("c", "b"), ("b", "b"), ("x", "c"), ("a", "y")])
    assert dict(f.parent) == {"b": "a"} and f.roots == ("a", "c")


def test_cycles_are_cut_only_when_asked():
    edges = [("a", "b"), ("b", "a"), ("c", "d")]
    plain = Forest.from_edges(["a", "b", "c", "d"], edges)
    assert plain.roots == ("c",) and list(plain.preorder()) == ["c", "d"]
    assert plain.descendants("a") == {"a", "b"}  # on a cycle: itself below itself
    cut = Forest.from_edges(["a", "b", "c", "d"], edges, cut_cycles=True)
    assert cut.roots == ("a", "c") and list(cut.preorder()) == ["a", "b", "c", "d"]
    assert cut.subtree_sizes() == {"a": 2, "b": 1, "c": 2, "d": 1}


def test_components_include_nodes_only_edges_name():
    labels = components(["a", "b", "c"], [("a", "b"), ("d", "e")])
    assert labels["a"] == labels["b"] and labels["d"] == labels["e"]
    assert len({labels["a"], labels["c"], labels["d"]}) == 3
