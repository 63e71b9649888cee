"""Tests of the dense Chu-Liu/Edmonds solver: known answers, networkx cross-checks, brute force with
constraints, invariants, error messages and speed."""

from __future__ import annotations

import itertools
import time

import networkx as nx
import numpy as np
import pytest

from mother_core.errors import ConstraintError, InputError, MotherError
from mother_core.recovery.arborescence import minimum_spanning_arborescence, tree_cost

SUPER = -1  # node name of the virtual super-root in the networkx reference graphs


# --- helpers --------------------------------------------------------------------------------------
def random_cost(rng: np.random.Generator, n: int, kind: str, p_inf: float = 0.0) -> np.ndarray:
    if kind == "float":
        c = rng.random((n, n))
    elif kind == "ties":  # few distinct values: many equal-cost optima
        c = rng.integers(0, 4, (n, n)).astype(float)
    elif kind == "metric":  # symmetric, like a weight distance
        x = rng.random((n, 3))
        c = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    else:
        raise ValueError(kind)
    c[rng.random((n, n)) < p_inf] = np.inf
    return c


def networkx_cost(cost: np.ndarray, root_cost: np.ndarray | None = None) -> float | None:
    """Reference optimum by networkx (None: no arborescence). networkx mutates weights: build a fresh graph."""
    n = len(cost)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for p, c in zip(*np.nonzero(np.isfinite(cost))):
        if p != c:
            g.add_edge(int(p), int(c), weight=float(cost[p, c]))
    if root_cost is not None:
        g.add_node(SUPER)
        for c in np.flatnonzero(np.isfinite(root_cost)):
            g.add_edge(SUPER, int(c), weight=float(root_cost[c]))
    try:
        t = nx.minimum_spanning_arborescence(g, preserve_attrs=True)
    except nx.NetworkXException:
        return None
    return sum(d["weight"] for _, _, d in t.edges(data=True))


def brute_force(cost, forced=(), forbidden=(), roots=None, root_cost=None) -> float | None:
    """Optimum by enumerating every parent assignment (N <= 6); None when nothing is feasible."""
    n = len(cost)
    a = np.array(list(itertools.product(range(-1, n), repeat=n)), dtype=np.int64)  # (K, n)
    idx = np.arange(n)
    ok = (a != idx).all(1)
    reach = np.tile(idx, (len(a), 1))
    for _ in range(n):  # after n parent hops every node of an acyclic assignment is at -1
        reach = np.where(reach >= 0, np.take_along_axis(a, np.maximum(reach, 0), 1), -1)
    ok &= (reach == -1).all(1)
    for p, c in forced:
        ok &= a[:, c] == p
    for p, c in forbidden:
        ok &= a[:, c] != p
    is_root = a == -1
    if roots:
        ok &= is_root[:, list(roots)].all(1)
    if root_cost is None:
        ok &= is_root.sum(1) == (len(set(roots)) if roots else 1)
        if roots:
            ok &= is_root.sum(1) == is_root[:, list(set(roots))].sum(1)
    c = np.where(is_root, 0.0, cost[np.maximum(a, 0), idx])
    if root_cost is not None:
        c = c + np.where(is_root, root_cost[idx], 0.0)
    total = c.sum(1)[ok]
    best = total.min() if total.size else np.inf
    return float(best) if np.isfinite(best) else None


def assert_valid(parent: np.ndarray, n: int, n_roots: int | None = 1) -> None:
    assert parent.shape == (n,) and parent.dtype == np.int64
    roots = np.flatnonzero(parent < 0)
    if n_roots is not None:
        assert len(roots) == n_roots
    assert int((parent >= 0).sum()) == n - len(roots)
    g = nx.DiGraph((int(p), c) for c, p in enumerate(parent) if p >= 0)
    g.add_nodes_from(range(n))
    assert nx.is_forest(g.to_undirected()) and nx.is_directed_acyclic_graph(g)


# --- known answers --------------------------------------------------------------------------------
def test_chain_and_forced_edge():
    cost = np.array([[0.0, 1.0, 5.0], [9.0, 0.0, 1.0], [9.0, 9.0, 0.0]])
    assert minimum_spanning_arborescence(cost).tolist() == [-1, 0, 1]
    assert minimum_spanning_arborescence(cost, forced=[(0, 2)]).tolist() == [-1, 0, 0]
    assert minimum_spanning_arborescence(cost, forbidden=[(1, 2)]).tolist() == [-1, 0, 0]


def test_cycle_is_broken_at_the_cheapest_entry():
    # 1 <-> 2 are each other's cheapest parents; entering the pair from 0 is cheaper into 2.
    cost = np.full((3, 3), np.inf)
    cost[1, 2] = cost[2, 1] = 1.0
    cost[0, 1], cost[0, 2] = 10.0, 4.0
    assert minimum_spanning_arborescence(cost).tolist() == [-1, 2, 0]


def test_empty_and_single_model():
    assert minimum_spanning_arborescence(np.zeros((0, 0))).shape == (0,)
    assert minimum_spanning_arborescence(np.zeros((1, 1))).tolist() == [-1]
    assert minimum_spanning_arborescence(np.zeros((1, 1)), root_cost=np.array([3.0])).tolist() == [-1]


def test_diagonal_is_ignored():
    cost = np.array([[-100.0, 1.0], [2.0, -100.0]])
    assert minimum_spanning_arborescence(cost).tolist() == [-1, 0]


# --- cross-checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["float", "ties", "metric"])
def test_matches_networkx_single_tree(kind):
    rng = np.random.default_rng({"float": 1, "ties": 2, "metric": 3}[kind])
    for trial in range(120):
        n = int(rng.integers(2, 11))
        cost = random_cost(rng, n, kind, p_inf=0.25 if trial % 3 == 0 else 0.0)
        before = cost.copy()
        ref = networkx_cost(cost)
        if ref is None:
            with pytest.raises(ConstraintError):
                minimum_spanning_arborescence(cost)
        else:
            parent = minimum_spanning_arborescence(cost)
            assert_valid(parent, n)
            assert tree_cost(cost, parent) == pytest.approx(ref, abs=1e-9)
        np.testing.assert_array_equal(cost, before)


@pytest.mark.parametrize("kind", ["float", "ties"])
def test_matches_networkx_forest_with_root_cost(kind):
    rng = np.random.default_rng(7 if kind == "float" else 8)
    for trial in range(100):
        n = int(rng.integers(1, 10))
        cost = random_cost(rng, n, kind, p_inf=0.3 if trial % 2 else 0.0)
        root_cost = rng.random(n) * 2 if kind == "float" else rng.integers(0, 5, n).astype(float)
        if trial % 4 == 0:
            root_cost[rng.random(n) < 0.5] = np.inf
        rc_before = root_cost.copy()
        ref = networkx_cost(cost, root_cost)
        if ref is None:
            with pytest.raises(ConstraintError):
                minimum_spanning_arborescence(cost, root_cost=root_cost)
            continue
        parent = minimum_spanning_arborescence(cost, root_cost=root_cost)
        assert_valid(parent, n, n_roots=None)
        assert tree_cost(cost, parent, root_cost) == pytest.approx(ref, abs=1e-9)
        np.testing.assert_array_equal(root_cost, rc_before)


def random_constraints(rng, n):
    pairs = [(p, c) for p in range(n) for c in range(n) if p != c]
    pick = lambda k: [pairs[i] for i in rng.choice(len(pairs), size=min(k, len(pairs)), replace=False)]  # noqa: E731
    forced = pick(int(rng.integers(0, 3)))
    forbidden = pick(int(rng.integers(0, 5)))
    roots = None if rng.random() < 0.5 else [int(x) for x in rng.choice(n, int(rng.integers(1, 3)), replace=False)]
    return forced, forbidden, roots


@pytest.mark.parametrize("with_root_cost", [False, True])
def test_constraints_match_brute_force(with_root_cost):
    rng = np.random.default_rng(11 + with_root_cost)
    n_feasible = n_infeasible = 0
    for trial in range(150):
        n = int(rng.integers(2, 7 if trial % 5 == 0 else 6))
        cost = random_cost(rng, n, "ties" if trial % 2 else "float", p_inf=0.15)
        root_cost = rng.random(n) * 1.5 if with_root_cost else None
        forced, forbidden, roots = random_constraints(rng, n)
        ref = brute_force(cost, forced, forbidden, roots, root_cost)
        kwargs = dict(forced=forced, forbidden=forbidden, roots=roots, root_cost=root_cost)
        if ref is None:
            n_infeasible += 1
            with pytest.raises(ConstraintError):
                minimum_spanning_arborescence(cost, **kwargs)
            continue
        n_feasible += 1
        parent = minimum_spanning_arborescence(cost, **kwargs)
        assert_valid(parent, n, n_roots=None)
        assert tree_cost(cost, parent, root_cost) == pytest.approx(ref, abs=1e-9)
        assert all(parent[c] == p for p, c in forced)
        assert all(parent[c] != p for p, c in forbidden)
        assert all(parent[r] == -1 for r in roots or ())
        if root_cost is None:
            assert set(np.flatnonzero(parent < 0)) == (set(roots) if roots else set(np.flatnonzero(parent < 0)))
            assert (parent < 0).sum() == (len(set(roots)) if roots else 1)
    assert n_feasible > 50 and n_infeasible > 5  # both branches were exercised


def test_constraints_match_networkx_medium():
    """N = 10..30 with forced/forbidden edges and a forced root, against networkx on a graph where the
    constraints are edits (forbidden: removed; forced: the only edge into its child) plus a super-root
    with big equal edges (one root) or a single free edge into the forced root."""
    rng = np.random.default_rng(21)
    checked = 0
    for trial in range(60):
        n = int(rng.integers(10, 31))
        cost = random_cost(rng, n, "ties" if trial % 2 else "float", p_inf=0.3)
        forced = [(int(p), int(c)) for p, c in rng.integers(0, n, (2, 2)) if p != c and np.isfinite(cost[p, c])]
        forbidden = [(int(p), int(c)) for p, c in rng.integers(0, n, (15, 2)) if p != c]
        roots = [int(rng.integers(n))] if trial % 3 == 0 else None
        children = [c for _, c in forced]
        if len(set(children)) < len(children) or set(forced) & set(forbidden) or (roots and roots[0] in children):
            continue
        w = cost.copy()
        for p, c in forbidden:
            w[p, c] = np.inf
        for p, c in forced:
            w[:, c], w[p, c] = np.inf, cost[p, c]
        super_root = np.full(n, 1e4)
        super_root[children] = np.inf
        if roots:
            w[:, roots[0]] = np.inf
            super_root[:] = np.inf
            super_root[roots[0]] = 0.0
        ref = networkx_cost(w, super_root)
        n_big = 0 if ref is None else int(ref // 1e4)  # super-root edges of cost 1e4 = roots chosen
        kwargs = dict(forced=forced, forbidden=forbidden, roots=roots)
        if ref is None or (not roots and n_big != 1):
            with pytest.raises(ConstraintError):
                minimum_spanning_arborescence(cost, **kwargs)
            continue
        parent = minimum_spanning_arborescence(cost, **kwargs)
        assert_valid(parent, n)
        assert tree_cost(cost, parent) == pytest.approx(ref - (0 if roots else 1e4), abs=1e-7)
        checked += 1
    assert checked > 30


def test_invariants_and_input_unchanged_medium():
    rng = np.random.default_rng(5)
    for n in (40, 150):
        cost = rng.random((n, n))
        cost[rng.random((n, n)) < 0.5] = np.inf
        root_cost = np.full(n, 0.9)
        before, rc_before = cost.copy(), root_cost.copy()
        parent = minimum_spanning_arborescence(cost, forbidden=[(0, 1)], root_cost=root_cost)
        assert_valid(parent, n, n_roots=None)
        assert parent[1] != 0
        np.testing.assert_array_equal(cost, before)
        np.testing.assert_array_equal(root_cost, rc_before)


def test_networkx_medium_random():
    rng = np.random.default_rng(9)
    cost = rng.random((60, 60))
    assert tree_cost(cost, minimum_spanning_arborescence(cost)) == pytest.approx(networkx_cost(cost), abs=1e-9)


def test_accepts_lists_and_integer_costs():
    parent = minimum_spanning_arborescence([[0, 1], [5, 0]], forced=[np.array([0, 1])], roots=[np.int64(0)])
    assert parent.tolist() == [-1, 0]
    parent = minimum_spanning_arborescence(np.ones((3, 3)), forced=np.array([[0, 1]]), roots=np.array([0, 2]))
    assert parent.tolist() == [-1, 0, -1]


# --- roots ----------------------------------------------------------------------------------------
def test_forced_roots_are_exactly_the_roots_without_root_cost():
    cost = np.ones((4, 4))
    parent = minimum_spanning_arborescence(cost, roots=[1, 3])
    assert set(np.flatnonzero(parent < 0)) == {1, 3}


def test_root_cost_lets_the_solver_choose_a_forest():
    # two clusters {0,1}, {2,3}: cheap inside, expensive across; a root costs 5
    cost = np.full((4, 4), 100.0)
    cost[0, 1] = cost[1, 0] = cost[2, 3] = cost[3, 2] = 1.0
    parent = minimum_spanning_arborescence(cost, root_cost=np.full(4, 5.0))
    assert (parent < 0).sum() == 2
    assert tree_cost(cost, parent, np.full(4, 5.0)) == 12.0
    # roots so cheap that everything is a root
    assert (minimum_spanning_arborescence(cost, root_cost=np.zeros(4)) < 0).all()


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(forced=[(0, 2), (1, 2)]), "forced to have two parents"),
        (dict(forced=[(0, 1), (1, 2), (2, 0)]), r"cycle \(0 -> 1 -> 2 -> 0\)"),
        (dict(forced=[(0, 1)], forbidden=[(0, 1)]), "both forced and forbidden"),
        (dict(forced=[(0, 1)], roots=[1]), "forced to be a root"),
        (dict(forced=[(1, 1)]), "self-loop"),
        (dict(forbidden=[(0, 9)]), "only 4 models"),
        (dict(forced=[(0,)]), r"\(parent, child\) pair"),
        (dict(roots=["a"]), "not a model index"),
        (dict(roots=[0], root_cost=np.array([np.inf, 1, 1, 1])), r"root_cost\[0\] is \+inf"),
    ],
)
def test_contradictory_constraints(kwargs, match):
    with pytest.raises(ConstraintError, match=match):
        minimum_spanning_arborescence(np.ones((4, 4)), **kwargs)


def test_forced_edge_with_infinite_cost():
    cost = np.ones((3, 3))
    cost[0, 1] = np.inf
    with pytest.raises(ConstraintError, match=r"forced edge \(0, 1\) has infinite cost"):
        minimum_spanning_arborescence(cost, forced=[(0, 1)])


def test_all_parents_forbidden_blames_the_forbidden_edges():
    with pytest.raises(ConstraintError, match=r"model 2 .*forbidden edges \[\(0, 2\), \(1, 2\)\]"):
        minimum_spanning_arborescence(np.ones((3, 3)), forbidden=[(0, 2), (1, 2)], roots=[0])


def test_unreachable_by_cost_blames_the_cost_matrix():
    cost = np.ones((3, 3))
    cost[:, 2] = np.inf
    with pytest.raises(ConstraintError, match="infinite cost"):
        minimum_spanning_arborescence(cost, root_cost=np.array([1.0, 1.0, np.inf]))


def test_two_components_cannot_make_one_tree():
    cost = np.full((4, 4), np.inf)
    cost[0, 1] = cost[2, 3] = 1.0
    with pytest.raises(ConstraintError, match="No single tree spans all models.*root_cost"):
        minimum_spanning_arborescence(cost)
    assert (minimum_spanning_arborescence(cost, root_cost=np.full(4, 10.0)) < 0).sum() == 2


@pytest.mark.parametrize(
    "cost", [np.ones((2, 3)), np.array([[0, np.nan], [1, 0]]), np.array([[0, -np.inf], [1, 0]])]
)
def test_bad_cost_matrix(cost):
    with pytest.raises(InputError):
        minimum_spanning_arborescence(cost)


def test_bad_root_cost_shape():
    with pytest.raises(InputError, match="one entry per model"):
        minimum_spanning_arborescence(np.ones((3, 3)), root_cost=np.ones(2))


def test_errors_are_mother_errors():
    assert issubclass(ConstraintError, MotherError) and issubclass(InputError, MotherError)


# --- tree_cost ------------------------------------------------------------------------------------
def test_tree_cost():
    cost = np.array([[0.0, 2.0, 3.0], [1.0, 0.0, 4.0], [1.0, 1.0, 0.0]])
    assert tree_cost(cost, np.array([-1, 0, 0])) == 5.0
    assert tree_cost(cost, np.array([-1, 0, -1]), root_cost=np.array([1.0, 1.0, 7.0])) == 10.0
    with pytest.raises(InputError):
        tree_cost(cost, np.array([-1, 0]))
    with pytest.raises(InputError, match="-1"):
        tree_cost(cost, np.array([-1, 0, 3]))


# --- speed ----------------------------------------------------------------------------------------
def test_n1000_is_fast():
    cost = np.random.default_rng(0).random((1000, 1000))
    # CPU seconds of this process, not wall: on a busy machine (the suite's two workers beside other jobs) the
    # wall time of a 0.1 s solve is whatever share of a core the process gets.
    t = time.process_time()
    parent = minimum_spanning_arborescence(cost)
    assert time.process_time() - t < 2.0  # target from the Performance issue; measured ~0.1 s
    assert_valid(parent, 1000)
