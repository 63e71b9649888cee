"""Minimum spanning arborescence (directed minimum spanning tree/forest) on a dense cost matrix.

This is the tree step of MoTHer (docs/METHOD.md, "Cost and tree"): given ``cost[p, c]``, the cost of the edge
p -> c, find the parent of every model so that the edges form a rooted tree (or forest) of least total
cost.

Algorithm
---------
Chu & Liu (1965) / Edmonds (1967): every node takes its cheapest entering edge; a cycle among those
edges is contracted into one supernode whose entering costs are reduced by the cost of the cycle edge
they would replace; repeat, then expand. We organise it as Tarjan (1977), "Finding optimum branchings",
Networks 7, with the correction of Camerini, Fratta & Maffioli (1979): grow a path of (super)nodes by
following each one's cheapest entering edge; when the path meets itself the cycle is contracted at once.
On a dense matrix each step is one vectorised operation on a length-N vector and there are at most
2N steps, so the solve is O(N^2) time with an O(N) Python loop, and O(N^2) memory (one float copy of
the matrix). Gabow, Galil, Spencer & Tarjan (1986), Combinatorica 6, give O(E + V log V) for sparse
graphs; on our complete graphs E = V^2, so the dense form is already optimal.

Roots are modelled by a virtual super-root with an edge into every node: its cost is ``root_cost[c]``
when the caller prices roots (the solver then chooses how many trees), else a constant ``M`` larger than
any difference between two trees' costs, so that the optimum uses exactly one root whenever one root is
possible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import SupportsIndex, SupportsInt

import numpy as np

from mother_core.errors import ConstraintError, InputError, ModelRefs

__all__ = ["minimum_spanning_arborescence", "tree_cost"]

_INF = np.inf


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def minimum_spanning_arborescence(
    cost: np.ndarray,
    *,
    forced: Iterable[tuple[int, int]] = (),
    forbidden: Iterable[tuple[int, int]] = (),
    roots: Iterable[int] | None = None,
    root_cost: np.ndarray | None = None,
) -> np.ndarray:
    """Minimum-cost spanning arborescence (or forest) of a dense digraph, with constraints.

    Chu-Liu/Edmonds contraction (Chu & Liu 1965; Edmonds 1967) in Tarjan's (1977) path-growing form,
    vectorised over a dense matrix: O(N^2) time and memory. See the module docstring.

    Parameters
    ----------
    cost : ndarray, shape (N, N)
        ``cost[p, c]`` is the cost of the edge p -> c (p becomes the parent of c). ``+inf`` means the
        edge is not allowed. The diagonal is ignored. Never modified.
    forced : iterable of (int, int), optional
        Edges (parent, child) that must be in the result.
    forbidden : iterable of (int, int), optional
        Edges (parent, child) that must not be in the result.
    roots : iterable of int, optional
        Nodes that must be roots (no parent). Without ``root_cost`` the roots are then exactly these
        nodes; with ``root_cost`` the solver may add more roots.
    root_cost : ndarray, shape (N,), optional
        ``root_cost[c]`` is the cost of making c a root (``+inf``: c may not be a root). When given, the
        solver chooses how many roots (a forest); when omitted, the result has exactly one root (or
        exactly ``roots``).

    Returns
    -------
    parent : ndarray of int64, shape (N,)
        ``parent[c]`` is the parent of c, ``-1`` for a root.

    Raises
    ------
    InputError
        ``cost`` is not a square matrix, contains NaN or ``-inf``, or ``root_cost`` has the wrong shape.
    ConstraintError
        The constraints contradict each other (a node forced to have two parents, forced edges forming
        a cycle, an edge both forced and forbidden, ...) or no arborescence of finite cost honours
        them; the message names the constraint or the models at fault.

    Examples
    --------
    >>> import numpy as np
    >>> cost = np.array([[0.0, 1.0, 5.0], [9.0, 0.0, 1.0], [9.0, 9.0, 0.0]])
    >>> minimum_spanning_arborescence(cost).tolist()
    [-1, 0, 1]
    >>> minimum_spanning_arborescence(cost, forced=[(0, 2)]).tolist()
    [-1, 0, 0]
    """
    c = _validated_cost(cost)  # (N, N) float64 copy
    n = c.shape[0]
    rc = _validated_root_cost(root_cost, n)
    cons = _validated_constraints(c, rc, n, forced, forbidden, roots)
    if n == 0:
        return np.empty(0, dtype=np.int64)

    single_root = rc is None and not cons.roots
    win = _entering_costs(c, rc, cons, single_root)  # (N+1, N+1), win[child, parent]
    try:
        parent = _edmonds(win, root=n)[:n]
    except _Unreachable as e:
        raise _infeasible(c, rc, cons, e.members) from None

    parent[parent == n] = -1
    if single_root and int((parent < 0).sum()) > 1:
        raise _not_one_tree(parent, cons)
    return parent


def tree_cost(cost: np.ndarray, parent: np.ndarray, root_cost: np.ndarray | None = None) -> float:
    """Total cost of a parent array: the sum of ``cost[parent[c], c]``, plus ``root_cost`` of the roots.

    Parameters
    ----------
    cost : ndarray, shape (N, N)
        As for :func:`minimum_spanning_arborescence`.
    parent : ndarray of int, shape (N,)
        ``-1`` marks a root.
    root_cost : ndarray, shape (N,), optional
        Cost of each root; roots cost nothing when omitted.

    Returns
    -------
    float
        The total (``inf`` if the tree uses a forbidden edge).
    """
    c = np.asarray(cost, dtype=np.float64)
    p = np.asarray(parent, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or p.shape != (c.shape[0],):
        raise InputError(f"tree_cost needs an (N, N) cost and an (N,) parent array; got {c.shape} and {p.shape}.")
    if ((p < -1) | (p >= c.shape[0])).any():
        raise InputError("parent entries must be -1 (root) or a model index 0..N-1.")
    kids = np.flatnonzero(p >= 0)
    total = float(c[p[kids], kids].sum())
    if root_cost is not None:
        total += float(np.asarray(root_cost, dtype=np.float64)[p < 0].sum())
    return total


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Constraints:
    forced: dict[int, int]  # child -> parent
    forbidden: frozenset[tuple[int, int]]
    roots: frozenset[int]


def _validated_cost(cost: np.ndarray) -> np.ndarray:
    c = np.array(cost, dtype=np.float64, copy=True)  # the copy is what keeps the input untouched
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise InputError(f"The cost matrix must be square (N, N); got shape {c.shape}.")
    np.fill_diagonal(c, _INF)
    if np.isnan(c).any():
        raise InputError("The cost matrix contains NaN; use +inf for edges that are not allowed.")
    if np.isneginf(c).any():
        raise InputError("The cost matrix contains -inf; costs must be finite or +inf (not allowed).")
    return c


def _validated_root_cost(root_cost: np.ndarray | None, n: int) -> np.ndarray | None:
    if root_cost is None:
        return None
    rc = np.array(root_cost, dtype=np.float64, copy=True).reshape(-1)
    if rc.shape != (n,):
        raise InputError(f"root_cost must have one entry per model ({n}); got shape {np.shape(root_cost)}.")
    if np.isnan(rc).any() or np.isneginf(rc).any():
        raise InputError("root_cost contains NaN or -inf; use +inf for 'may not be a root'.")
    return rc


def _index(i: object, n: int, what: str) -> int:
    try:
        if not isinstance(i, (SupportsInt, SupportsIndex, str, bytes)):
            raise TypeError
        k = int(i)
    except (TypeError, ValueError):
        raise ConstraintError(f"{what} refers to {i!r}, which is not a model index.") from None
    if not 0 <= k < n:
        raise ConstraintError(f"{what} refers to model index {k}, but there are only {n} models.")
    return k


def _edge(e: object, n: int, what: str) -> tuple[int, int]:
    pair = tuple(e) if isinstance(e, Iterable) else ()
    try:
        raw_p, raw_c = pair
    except ValueError:
        raise ConstraintError(f"A {what} edge must be a (parent, child) pair; got {e!r}.") from None
    p, c = _index(raw_p, n, f"{what} edge {(raw_p, raw_c)}"), _index(raw_c, n, f"{what} edge {(raw_p, raw_c)}")
    if p == c:
        raise ConstraintError.about("The {what} edge {edge} is a self-loop; a model cannot be its own parent.",
                                    {"what": what}, edge=(p, c))
    return p, c


def _validated_constraints(
    c: np.ndarray,
    rc: np.ndarray | None,
    n: int,
    forced: Iterable[tuple[int, int]],
    forbidden: Iterable[tuple[int, int]],
    roots: Iterable[int] | None,
) -> _Constraints:
    bad = frozenset(_edge(e, n, "forbidden") for e in forbidden)
    root_set = frozenset(_index(r, n, "A forced root") for r in (() if roots is None else roots))
    fmap: dict[int, int] = {}
    for e in forced:
        p, ch = _edge(e, n, "forced")
        if ch in fmap and fmap[ch] != p:
            raise ConstraintError.about(
                "Model {child} is forced to have two parents ({first} and {second}); a model has at most one parent.",
                child=ch, first=fmap[ch], second=p,
            )
        if (p, ch) in bad:
            raise ConstraintError.about("The edge {edge} is both forced and forbidden.", edge=(p, ch))
        if ch in root_set:
            raise ConstraintError.about("Model {child} is forced to be a root, but the edge {edge} forces it a parent.",
                                        child=ch, edge=(p, ch))
        if not np.isfinite(c[p, ch]):
            raise ConstraintError.about("The forced edge {edge} has infinite cost: the cost model does not allow it.",
                                        edge=(p, ch))
        fmap[ch] = p
    _check_forced_acyclic(fmap)
    if rc is not None:
        for r in sorted(root_set):
            if not np.isfinite(rc[r]):
                raise ConstraintError.about(
                    "Model {root} is forced to be a root, but root_cost[{index}] is +inf (not allowed).",
                    {"index": r}, root=r)
    return _Constraints(fmap, bad, root_set)


def _check_forced_acyclic(fmap: dict[int, int]) -> None:
    # Follow forced parents from every node; meeting a node of the current walk closes a cycle.
    state: dict[int, int] = {}  # 1: on the current walk, 2: known to end outside any cycle
    for start in fmap:
        walk = []
        x: int | None = start
        while x is not None and state.get(x) is None:
            state[x] = 1
            walk.append(x)
            x = fmap.get(x)
        if x is not None and state[x] == 1:
            cyc = walk[walk.index(x):][::-1]  # in edge direction, parent -> child
            i = cyc.index(min(cyc))
            cyc = cyc[i:] + cyc[:i]
            raise ConstraintError.about("The forced edges form a cycle ({cycle:chain}); a family tree has no cycles.",
                                        cycle=[*cyc, cyc[0]])
        for v in walk:
            state[v] = 2


# --------------------------------------------------------------------------------------------------
# the solver
# --------------------------------------------------------------------------------------------------
def _entering_costs(c: np.ndarray, rc: np.ndarray | None, cons: _Constraints, single_root: bool) -> np.ndarray:
    """Transposed costs with the super-root as node N and the constraints applied as +inf."""
    n = c.shape[0]
    win = np.full((n + 1, n + 1), _INF)  # win[child, parent]; row N (into the super-root) stays inf
    win[:n, :n] = c.T
    if rc is not None:
        win[:n, n] = rc
    elif cons.roots:
        win[list(cons.roots), n] = 0.0
    for p, ch in cons.forbidden:
        win[ch, p] = _INF
    for r in cons.roots:
        win[r, :n] = _INF
    for ch, p in cons.forced.items():
        keep = win[ch, p]
        win[ch, :] = _INF
        win[ch, p] = keep
    if single_root:
        win[:n, n] = _big_root_cost(win[:n, :n])
        for ch in cons.forced:
            win[ch, n] = _INF
    return win


def _big_root_cost(w: np.ndarray) -> float:
    # A tree with one more root swaps a real edge (>= lo) for a root edge; with M > (N-1)*hi - (N-2)*lo
    # the extra root never pays, so the optimum has one root whenever one root is feasible.
    finite = w[np.isfinite(w)]
    if finite.size == 0:
        return 1.0
    hi, lo = float(finite.max()), float(finite.min())
    m = w.shape[0] * (abs(hi) + abs(lo) + 1.0)
    if not np.isfinite(m):
        raise InputError("The cost matrix has values too large to solve in float64; rescale it.")
    return m


class _Unreachable(Exception):
    """A (super)node has no finite entering edge: no arborescence of finite cost exists."""

    def __init__(self, members: np.ndarray) -> None:
        super().__init__()
        self.members = members


def _edmonds(win: np.ndarray, root: int) -> np.ndarray:
    """Path-growing Chu-Liu/Edmonds (Tarjan 1977) on ``win[child, parent]``, modified in place.

    Returns the parent of every node (``parent[root]`` is -1) of a minimum arborescence rooted at
    ``root``. Supernode ids: original nodes 0..n-1, contractions n, n+1, ...; a supernode reuses the
    row of ``win`` of its first member.
    """
    n = win.shape[0]
    cols = np.arange(n)
    uf = list(range(n))  # union-find over supernode ids (path-compressed)
    cpar = [-1] * n  # contraction forest: the supernode each one was contracted into
    row_of = list(range(n))
    members: list[np.ndarray] = [np.array([v]) for v in range(n)]
    heads: list[np.ndarray | None] = [None] * n  # per source: original child the cheapest edge enters
    in_p = [-1] * n  # chosen entering edge of each supernode (original parent, original child)
    in_c = [-1] * n
    done = [False] * n  # already connected to the root
    on_path = [False] * n
    done[root] = True

    def find(x: int) -> int:
        r = x
        while uf[r] != r:
            r = uf[r]
        while uf[x] != r:
            uf[x], x = r, uf[x]
        return r

    for start in range(n):
        a = find(start)
        if done[a]:
            continue
        path = [a]
        on_path[a] = True
        while True:
            row = win[row_of[a]]
            j = int(row.argmin())
            w = row[j]
            if w == _INF:
                raise _Unreachable(members[a])
            row -= w  # reduce: entering costs are now relative to the chosen edge
            h = heads[a]
            in_p[a], in_c[a] = j, (a if h is None else int(h[j]))
            b = find(j)
            if done[b]:
                for x in path:
                    done[x], on_path[x] = True, False
                break
            if not on_path[b]:
                path.append(b)
                on_path[b] = True
                a = b
                continue
            k = path.index(b)
            s = _contract(win, path[k:], cols, uf, cpar, row_of, members, heads, in_p, in_c, done, on_path)
            del path[k:]
            path.append(s)
            on_path[s] = True
            a = s

    return _expand(in_p, in_c, cpar, n, root)


def _contract(
    win: np.ndarray,
    cycle: list[int],
    cols: np.ndarray,
    uf: list[int],
    cpar: list[int],
    row_of: list[int],
    members: list[np.ndarray],
    heads: list[np.ndarray | None],
    in_p: list[int],
    in_c: list[int],
    done: list[bool],
    on_path: list[bool],
) -> int:
    """Merge the supernodes of ``cycle`` into a new one and return its id."""
    s = len(uf)
    rows = win[[row_of[x] for x in cycle]]  # (m, n) reduced entering costs of the members
    pick = rows.argmin(axis=0)  # cheapest member to enter, per source
    new_row = rows[pick, cols]
    member_heads = np.stack([np.full(len(cols), x) if (h := heads[x]) is None else h for x in cycle])
    inside = np.concatenate([members[x] for x in cycle])
    new_row[inside] = _INF  # edges inside the supernode do not enter it
    win[row_of[cycle[0]]] = new_row
    for x in cycle:
        uf[x] = s
        cpar[x] = s
        on_path[x] = False
    uf.append(s)
    cpar.append(-1)
    row_of.append(row_of[cycle[0]])
    members.append(inside)
    heads.append(member_heads[pick, cols])
    in_p.append(-1)
    in_c.append(-1)
    done.append(False)
    on_path.append(False)
    return s


def _expand(in_p: list[int], in_c: list[int], cpar: list[int], n: int, root: int) -> np.ndarray:
    # Top-down over the contraction forest (a supernode's id is larger than its members'): a kept edge
    # entering original node c replaces the cycle edges of every supernode between c and its owner.
    parent = np.full(n, -1, dtype=np.int64)
    removed = [False] * len(cpar)
    for s in range(len(cpar) - 1, -1, -1):
        if s == root or removed[s]:
            continue
        c = in_c[s]
        parent[c] = in_p[s]
        x = c
        while x != s:
            removed[x] = True
            x = cpar[x]
    return parent


# --------------------------------------------------------------------------------------------------
# explaining infeasibility
# --------------------------------------------------------------------------------------------------
def _infeasible(c: np.ndarray, rc: np.ndarray | None, cons: _Constraints, members: np.ndarray) -> ConstraintError:
    """Say which models cannot be attached, and whether the user's constraints are the reason."""
    group = {int(x) for x in members if x < c.shape[0]}
    others = np.setdiff1d(np.arange(c.shape[0]), list(group))
    g = sorted(group)
    by_cost = bool(np.isfinite(c[np.ix_(others, np.array(g, dtype=np.int64))]).any()) if others.size else False
    may_root = rc is not None and bool(np.isfinite(rc[g]).any())
    what = "model {group:names}" if len(g) == 1 else "models {group:names}"
    refs: dict[str, ModelRefs] = {"group": list(g)}
    if by_cost or may_root or (rc is None and cons.roots):
        blame = []
        fb = [e for e in cons.forbidden if e[1] in group and e[0] not in group]
        if fb:
            blame.append("forbidden edges {forbidden}")
            refs["forbidden"] = list(sorted(fb)[:8])
        fr = [x for x in g if x in cons.roots]
        if fr:
            blame.append("forced roots {roots}")
            refs["roots"] = fr
        fe = [(p, ch) for ch, p in cons.forced.items() if ch in group]
        if fe:
            blame.append("forced edges {forced}")
            refs["forced"] = list(sorted(fe)[:8])
        if cons.roots and rc is None:
            blame.append("only the forced roots {only:names} may be roots")
            refs["only"] = sorted(cons.roots)
        why = "; ".join(blame) or "the constraints"
        return ConstraintError.about(
            f"No valid tree: {what} cannot get a parent or be a root because of the constraints ({why}). "
            "Remove or change one of them.", **refs)
    return ConstraintError.about(
        f"No valid tree: every edge into {what} from the other models has infinite cost, and they "
        "may not be roots. Check the cost matrix (e.g. incompatible architectures), or allow roots with root_cost.",
        **refs)


def _not_one_tree(parent: np.ndarray, cons: _Constraints) -> ConstraintError:
    roots = np.flatnonzero(parent < 0)
    extra = " given the forced/forbidden edges" if (cons.forced or cons.forbidden) else ""
    return ConstraintError.about(
        f"No single tree spans all models{extra}: at least {{count}} roots are needed "
        "(e.g. models {roots:names}), because no allowed (finite-cost) edge connects their groups. "
        "Pass root_cost to recover a forest, or relax the constraints.",
        {"count": len(roots)}, roots=[int(r) for r in roots])
