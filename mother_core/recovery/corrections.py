"""Local corrections: a user's forbid, flip or "use this parent" changes as little of the tree as it must.

Re-solving the whole arborescence under one more constraint can move edges far from the one the
user touched: forbidding a wrong edge may re-root the tree (every edge's direction cue is weighed
again), and flipping an edge reverses the path up to the root. A user correcting one edge expects the
rest to stay (issue 12, item 7). Starting from the current tree:

- a **forced** edge p -> c that flips the current edge c -> p: p takes c's place (c's parent becomes
  p's parent, or p becomes the root) and c hangs under p; every other edge stays;
- any other **forced** edge p -> c ("use this parent"): c moves under p with its subtree, unless p
  descends from c (then only a global solve can honour it); across trees, the trees join;
- a **forbidden** edge p -> c: c takes its next-best allowed parent (the cheapest in the solver's cost
  among the models that do not descend from it); the root stays the root.

The result is checked against every constraint; when a local edit cannot honour them (or a fixed
root, or constraints were removed rather than added), :func:`local_edit` returns None and the caller
solves globally (:func:`mother_core.recovery.recover.resolve`).
"""

from __future__ import annotations

import numpy as np

from mother_core.recovery.result import Constraints
from mother_core.walk import Forest


def _descendants(parent: np.ndarray, node: int) -> set[int]:
    return Forest.from_parent_array(parent).descendants(node)


def is_extension(old: Constraints, new: Constraints) -> bool:
    """Whether ``new`` only adds forced or forbidden edges to ``old`` (same fixed roots)."""
    return (set(new.roots) == set(old.roots) and set(old.forced) <= set(new.forced)
            and set(old.forbidden) <= set(new.forbidden))


def local_edit(parent: np.ndarray, labels: np.ndarray, cost: np.ndarray,
               forced: list[tuple[int, int]], forbidden: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The current tree ``parent`` (``-1`` for roots) edited to honour ``forced`` and ``forbidden``
    (index pairs parent, child) with as few changes as possible; ``None`` if a local edit cannot.

    Parameters
    ----------
    parent : ndarray of int (N,)
        The current forest.
    labels : ndarray of int (N,)
        Tree of each model (forced edges across trees join them).
    cost : ndarray (N, N)
        The solver's cost ``cost[p, c]``; a forbidden child's next parent is its cheapest allowed one.

    Returns
    -------
    (parent, labels) or None
    """
    parent = parent.copy()
    labels = labels.copy()
    banned = set(forbidden)
    # Flips first: p -> c forced where c is p's parent now.
    for p, c in forced:
        if parent[p] == c:
            if (parent[c], p) in banned:
                return None
            parent[p] = parent[c]
            parent[c] = p
    for p, c in forced:
        if parent[c] == p:
            continue
        if p == c or p in _descendants(parent, c):
            return None
        if labels[p] != labels[c]:  # c and its subtree join p's tree; the rest of c's tree stays
            labels[list(_descendants(parent, c) | {c})] = labels[p]
        parent[c] = p
    pinned = {c for _, c in forced}
    for p, c in forbidden:
        if parent[c] != p:
            continue
        if c in pinned:
            return None
        below = _descendants(parent, c) | {c}
        members = np.flatnonzero(labels == labels[c])
        options = [q for q in members if q not in below and (q, c) not in banned and np.isfinite(cost[q, c])]
        if not options:
            return None
        parent[c] = min(options, key=lambda q: cost[q, c])
    if any(parent[c] != p for p, c in forced) or any(parent[c] == p for p, c in forbidden):
        return None
    for c in range(len(parent)):  # acyclic: every walk up ends at a root
        seen, v = set(), c
        while parent[v] >= 0:
            if v in seen:
                return None
            seen.add(v)
            v = int(parent[v])
    return parent, labels
