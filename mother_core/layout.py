"""Positions for drawing a recovered forest: a tidy hierarchical layout, roots on top.

The layout is deterministic (children ordered by id, trees by their root's id), so a tree drawn twice
is drawn the same way: the app turns vis.js physics off and uses these positions as they are.

Each tree is laid out on its own by a classic leaf-slot algorithm: leaves take consecutive columns
(left to right, in child order), and every parent sits midway between its first and last child. Trees
are then placed side by side, ``forest_gap`` columns apart, wrapping into rows if ``max_width`` is given
(:func:`wrap_width` picks it for a target aspect ratio); models with no edge at all come after the trees,
side by side without gaps (a strip: a graph of declared parents, where most models declare none, would
otherwise open on a row of lone roots with the families off screen). Depth grows downwards (``y`` = depth).

Examples
--------
>>> tree_layout_edges(["a", "b", "c"], [("a", "b"), ("a", "c")])
{'a': (0.5, 0.0), 'b': (0.0, 1.0), 'c': (1.0, 1.0)}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from mother_core.walk import Forest

if TYPE_CHECKING:  # pragma: no cover
    from mother_core.recovery.result import Recovery

__all__ = ["forest_positions", "tree_layout", "tree_layout_edges", "tree_order", "tree_order_edges", "wrap_width"]


def _forest(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> tuple[list[str], Forest[str]]:
    """Roots (sorted) and the forest, children sorted (:class:`~mother_core.walk.Forest`: unknown nodes,
    self loops and second parents ignored); nodes on cycles become extra roots, after the others."""
    edges = list(edges)
    order = sorted(set(nodes))
    plain = Forest.from_edges(order, edges)
    cut = Forest.from_edges(order, edges, cut_cycles=True)
    roots = list(plain.roots)
    return roots + [n for n in cut.roots if n not in set(roots)], cut


def _layout_tree(root: str, children: Mapping[str, Sequence[str]]) -> dict[str, tuple[float, int]]:
    """One tree from column 0: (column, depth) per node."""
    pos: dict[str, tuple[float, int]] = {}
    next_col = 0.0
    # Iterative post-order: leaves take the next column, parents centre over their children.
    stack: list[tuple[str, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, expanded = stack.pop()
        kids = children.get(node, [])
        if not kids:
            pos[node] = (next_col, depth)
            next_col += 1
        elif not expanded:
            stack.append((node, depth, True))
            for kid in reversed(kids):
                stack.append((kid, depth + 1, False))
        else:
            xs = [pos[k][0] for k in kids]
            pos[node] = ((min(xs) + max(xs)) / 2.0, depth)
    return pos


def tree_layout_edges(
    nodes: Sequence[str],
    edges: Iterable[tuple[str, str]],
    *,
    x_gap: float = 1.0,
    y_gap: float = 1.0,
    forest_gap: float = 1.0,
    max_width: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Tidy top-down layout of a forest given as node ids and (parent, child) edges.

    Parameters
    ----------
    nodes : sequence of str
        Every node id; nodes without edges are drawn as one-node trees.
    edges : iterable of (str, str)
        Directed edges parent -> child. Edges to unknown nodes, second parents and cycles are ignored
        (a node on a cycle becomes a root) so that any input can be drawn.
    x_gap, y_gap : float
        Horizontal distance between neighbouring leaves, vertical distance between generations.
    forest_gap : float
        Extra empty columns between two trees (and empty generations between two rows of trees); none
        between two lone models (nodes without edges), which come after every tree.
    max_width : float, optional
        Wrap: start a new row of trees below when the next tree would end beyond this many columns
        (a wide forest then fits a screen). ``None``: one row.

    Returns
    -------
    dict of str to (float, float)
        ``(x, y)`` per node, in the order of ``nodes``; ``y = depth * y_gap`` for the first row (roots
        at ``y = 0``, i.e. on top when y grows down).
    """
    roots, forest = _forest(nodes, edges)
    # Trees first (by root id), then the lone models, packed side by side (the strip).
    alone = [r for r in roots if not forest.children.get(r)]
    roots = [r for r in roots if forest.children.get(r)] + alone
    lone = set(alone)
    pos: dict[str, tuple[float, float]] = {}
    col, row_top, row_depth = 0.0, 0.0, 0
    for root in roots:
        tree = _layout_tree(root, forest.children)
        width = max(c for c, _ in tree.values()) + 1
        depth = max(d for _, d in tree.values())
        if max_width is not None and col > 0 and col + width > max_width:
            row_top += row_depth + 1 + forest_gap
            col, row_depth = 0.0, 0
        for n, (c, d) in tree.items():
            pos[n] = ((col + c) * x_gap, (row_top + d) * y_gap)
        col += width + (0.0 if root in lone else forest_gap)
        row_depth = max(row_depth, depth)
    return {n: pos[n] for n in nodes}  # in the caller's order


def wrap_width(nodes: Sequence[str], edges: Iterable[tuple[str, str]], aspect: float,
               x_gap: float = 1.0, y_gap: float = 1.0) -> float | None:
    """The ``max_width`` whose wrapped layout's width / height is closest to ``aspect`` (e.g. a canvas'
    pixel aspect, with ``x_gap``/``y_gap`` in pixels); ``None`` when one row is best."""
    edges = list(edges)
    one_row = tree_layout_edges(nodes, edges)
    if not one_row:
        return None
    total = max(x for x, _ in one_row.values()) + 1
    best, best_err = None, float("inf")
    for rows in range(1, 6):
        limit = None if rows == 1 else total / rows + 1
        pos = tree_layout_edges(nodes, edges, max_width=limit)
        w = (max(x for x, _ in pos.values()) + 1) * x_gap
        h = (max(y for _, y in pos.values()) + 1) * y_gap
        err = abs(math.log(w / h / aspect))
        if err < best_err - 1e-9:
            best, best_err = limit, err
    return best


def tree_layout(recovery: "Recovery", *, x_gap: float = 1.0, y_gap: float = 1.0, forest_gap: float = 1.0,
                max_width: float | None = None) -> dict[str, tuple[float, float]]:
    """Positions for every model of a :class:`~mother_core.recovery.result.Recovery`.

    Roots on top, each recovered tree drawn as a tidy tree, trees side by side (in the order of their
    root ids). The keyword arguments are those of :func:`tree_layout_edges`.

    Parameters
    ----------
    recovery : Recovery
        The recovered forest.

    Returns
    -------
    dict of str to (float, float)
        ``(x, y)`` per model id, ``y`` growing downwards with depth.
    """
    return tree_layout_edges(recovery.model_ids, [(e.parent, e.child) for e in recovery.edges], x_gap=x_gap,
                             y_gap=y_gap, forest_gap=forest_gap, max_width=max_width)


def tree_order_edges(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Node ids in depth-first pre-order, tree after tree (the order used to sort matrices)."""
    roots, forest = _forest(nodes, edges)
    return list(forest.preorder(roots))


def tree_order(recovery: "Recovery") -> list[str]:
    """Model ids of a recovery in depth-first pre-order, tree after tree."""
    return tree_order_edges(recovery.model_ids, [(e.parent, e.child) for e in recovery.edges])


ORIENTATIONS = ("top-down", "left-right", "radial")


def forest_positions(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    *,
    orientation: str = "top-down",
    lengths: dict[tuple[str, str], float] | None = None,
    max_width: float | None = None,
) -> dict[str, tuple[float, float]]:
    """Positions of a forest in one of three layouts, with branch lengths by generation or by distance.

    Built on :func:`tree_layout_edges` (leaf columns, parents centred over their children): the depth
    axis is either the number of edges from the root, or, with ``lengths``, the summed edge lengths
    scaled so that a mean edge spans one generation (a phylogram, as in iTOL or Nextstrain).

    Parameters
    ----------
    nodes, edges : as for :func:`tree_layout_edges`
    orientation : {"top-down", "left-right", "radial"}
        Roots on top, roots on the left, or roots in the centre with leaves on a circle (several trees
        share the circle, each in its own sector).
    lengths : dict of (str, str) to float, optional
        Branch length per edge (e.g. the recovered distance). Missing or non-finite lengths count as
        the mean.
    max_width : float, optional
        Wrap wide forests into rows (top-down / left-right only).

    Returns
    -------
    dict of str to (float, float)
        ``(x, y)`` per node in grid units (one leaf column / one generation apart), y growing downwards.

    Examples
    --------
    >>> forest_positions(["a", "b", "c"], [("a", "b"), ("a", "c")], orientation="left-right")
    {'a': (0.0, 0.5), 'b': (1.0, 0.0), 'c': (1.0, 1.0)}
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, not {orientation!r}")
    edges = list(edges)
    wrap = None if orientation == "radial" else max_width
    pos = tree_layout_edges(nodes, edges, max_width=wrap)
    if not pos:
        return pos
    if lengths:
        roots, forest = _forest(nodes, edges)
        finite = [v for v in lengths.values() if math.isfinite(v) and v > 0]
        mean = sum(finite) / len(finite) if finite else 1.0
        depth: dict[str, float] = {}
        for r in roots:
            depth[r] = pos[r][1]
            for c in forest.preorder([r]):  # a parent before its children
                if c != r:
                    p = forest.parent[c]
                    v = lengths.get((p, c), mean)
                    depth[c] = depth[p] + ((v if math.isfinite(v) and v > 0 else mean) / mean)
        pos = {n: (x, depth.get(n, y)) for n, (x, y) in pos.items()}
    if orientation == "left-right":
        return {n: (y, x) for n, (x, y) in pos.items()}
    if orientation == "radial":
        xs = [x for x, _ in pos.values()]
        lo, span = min(xs), max(xs) - min(xs) + 1.0
        deepest = max((y for _, y in pos.values()), default=0.0) or 1.0
        # Leaves one unit apart on the outer ring; several roots sit on a small inner ring.
        ring = max(1.0, span / (2 * math.pi * deepest))
        several = len({n for n in nodes} - {c for _, c in edges}) > 1
        out: dict[str, tuple[float, float]] = {}
        for n, (x, y) in pos.items():
            angle = 2 * math.pi * (x - lo) / span
            radius = (y + (1.0 if several else 0.0)) * ring
            out[n] = (round(radius * math.cos(angle), 6), round(radius * math.sin(angle), 6))
        return out
    return pos
