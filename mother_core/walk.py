"""The one forest type and its walks: roots, children, ancestors, descendants, pre-order, subtree sizes.

A recovered forest is one parent per model (a merge's other parents are extra edges beside it); the
solver (model indices), the corrections, the layout, the exports, the evaluation and the app all walk
it through :class:`Forest` rather than each keeping its own children lists. Connected components of
an undirected edge list (trees of a truth file) come from networkx.

Examples
--------
>>> f = Forest.from_edges(["a", "b", "c", "d"], [("a", "b"), ("b", "c")])
>>> f.roots, f.children_of("a"), sorted(f.descendants("a")), f.ancestors("c")
(('a', 'd'), ('b',), ['b', 'c'], ['b', 'a'])
>>> list(f.preorder()), f.subtree_sizes()["a"]
(['a', 'b', 'c', 'd'], 3)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import networkx as nx
import numpy as np

__all__ = ["Forest", "components"]

N = TypeVar("N", bound=Hashable)


@dataclass(frozen=True)
class Forest(Generic[N]):
    """A forest given as one parent per node.

    Attributes
    ----------
    nodes : tuple
        Every node, in the order children and roots are listed in.
    parent : mapping
        Child -> parent; nodes without an entry are roots.
    """

    nodes: tuple[N, ...]
    parent: Mapping[N, N]
    _children: dict[N, tuple[N, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kids: dict[N, list[N]] = {}
        for n in self.nodes:
            p = self.parent.get(n)
            if p is not None:
                kids.setdefault(p, []).append(n)
        object.__setattr__(self, "_children", {p: tuple(c) for p, c in kids.items()})

    @classmethod
    def from_edges(cls, nodes: Iterable[N], edges: Iterable[tuple[N, N]], *, cut_cycles: bool = False) -> Forest[N]:
        """The forest of ``(parent, child)`` edges over ``nodes``.

        An edge naming a node not in ``nodes``, a self loop, or a second parent of a child (the first
        edge wins) is not a forest edge and is ignored. With ``cut_cycles``, nodes on a cycle (not
        reachable from any root) become roots, the first in node order first, until every node is
        reachable.
        """
        order = tuple(nodes)
        known = set(order)
        parent: dict[N, N] = {}
        for p, c in edges:
            if p in known and c in known and p != c and c not in parent:
                parent[c] = p
        forest = cls(order, parent)
        if cut_cycles:
            reached = forest.reachable(forest.roots)
            for n in order:
                if n not in reached:
                    parent.pop(n, None)
                    forest = cls(order, dict(parent))
                    reached |= forest.reachable([n])
        return forest

    @classmethod
    def from_parent_array(cls, parent: np.ndarray) -> Forest[int]:
        """The forest of a parent array over model indices (``parent[c]`` is ``c``'s parent, -1 a root)."""
        return Forest(tuple(range(len(parent))), {c: int(p) for c, p in enumerate(parent) if p >= 0})

    @property
    def roots(self) -> tuple[N, ...]:
        return tuple(n for n in self.nodes if n not in self.parent)

    def children_of(self, node: N) -> tuple[N, ...]:
        return self._children.get(node, ())

    @property
    def children(self) -> Mapping[N, tuple[N, ...]]:
        """Parent -> its children (only nodes that have some)."""
        return self._children

    def ancestors(self, node: N) -> list[N]:
        """Parent, grandparent, ... up to the root (stops before repeating a node on a cycle)."""
        out, seen = [], {node}
        while node in self.parent and self.parent[node] not in seen:
            node = self.parent[node]
            seen.add(node)
            out.append(node)
        return out

    def descendants(self, node: N) -> set[N]:
        """Every node below ``node`` (``node`` itself only when it lies on a cycle)."""
        return self.reachable(self.children_of(node))

    def reachable(self, starts: Iterable[N]) -> set[N]:
        """``starts`` and everything below them."""
        seen: set[N] = set()
        stack = list(starts)
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(self.children_of(n))
        return seen

    def preorder(self, roots: Sequence[N] | None = None) -> Iterator[N]:
        """Depth-first pre-order from ``roots`` (default: every root), children in node order.
        Nodes not reachable from them (on a cycle) are not visited."""
        stack = list(reversed(self.roots if roots is None else roots))
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(self.children_of(n)))

    def subtree_sizes(self) -> dict[N, int]:
        """Subtree size (the node included) of every node; a node on a cycle counts alone."""
        size: dict[N, int] = {}
        for n in reversed(list(self.preorder())):
            size[n] = 1 + sum(size[c] for c in self.children_of(n))
        for n in self.nodes:
            size.setdefault(n, 1)
        return size


def components(nodes: Iterable[N], edges: Iterable[tuple[N, N]]) -> dict[N, int]:
    """Component number of every node of an undirected edge list (nodes only edges name included).

    >>> sorted(components(["a", "b", "c"], [("a", "b")]).items())
    [('a', 0), ('b', 0), ('c', 1)]
    """
    g: nx.Graph = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return {n: i for i, comp in enumerate(nx.connected_components(g)) for n in comp}
