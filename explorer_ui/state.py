"""The app's state, in one place: every ``st.session_state`` key the pages use is read and written here.

Pages never touch ``st.session_state`` themselves. They get what to render from
:func:`explorer_ui.sidebar.page` (a :class:`~explorer_ui.sidebar.Loaded` context, or a
:class:`NotReady` saying why there is nothing to draw yet) and change the app through the small
functions below. Edges are identified by ``(parent, child)`` tuples everywhere; the selection is
mirrored into the page URL's query parameters (``?set=…&parent=…&child=…`` or ``&model=…``) so that a
link opens the same set on the same edge.

Widget values of the shared sidebar are the one exception: Streamlit owns them under their widget keys
(see :func:`explorer_ui.sidebar._widget`), and this module only seeds them from a shared link.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import streamlit as st

from mother_core.recovery.result import Constraints, Recovery

EdgeKey = tuple[str, str]
Why = Literal["pending", "preset", "empty", "error"]

# Session-state keys (private to this module).
_SELECTION = "_selection"
_LINK_SELECTION = "_link_selection"  # what a shared link selected, until its first tree checks it
_CONSTRAINTS = "_constraints"
_CONSTRAINTS_PREV = "_constraints_prev"
_REQUESTED = "_requested"
_BEFORE = "_before_edges"
_VIEW = "_graph_view"
_COLLAPSE = "_collapse"
_PRESET = "_preset_view"
_URL_APPLIED = "_url_applied"
_SEL_COUNT = "_selection_count"
_SEL_ORIGIN = "_selection_origin"
_GRAPH_SENT = "_graph_sent"

# Query parameters (the shareable part of the state).
Q_SOURCE, Q_SET, Q_PARENT, Q_CHILD, Q_MODEL = "source", "set", "parent", "child", "model"


@dataclass(frozen=True)
class Selection:
    """What the user looks at: one edge, or one model (its card), or nothing."""

    edge: EdgeKey | None = None
    node: str | None = None


@dataclass(frozen=True)
class NotReady:
    """Why a page has no tree to draw.

    Attributes
    ----------
    why : {"pending", "preset", "empty", "error"}
        ``pending``: a set waits for "Recover the tree"; ``preset``: a paper preset misses weights;
        ``empty``: nothing picked; ``error``: the recovery failed (the message is already shown).
    detail : object
        What the explanation needs: the pending :class:`~explorer_ui.sources.ModelSet`, the
        ``(preset, availability)`` pair, or (``empty``) the source picked in the sidebar.
    """

    why: Why
    detail: Any = None


@dataclass(frozen=True)
class GraphView:
    """How the tree is drawn (graph toolbar): layout, branch length, colouring, search focus."""

    layout: str = "auto"  # auto (top-down, or left-right where only that is readable whole) | top-down | ...
    branch: str = "edges"  # edges (one generation per edge) | distance
    color_by: str = "auto"  # auto | family | relation | confidence | agreement
    focus: str | None = None  # a model whose ancestors and descendants are highlighted


@dataclass(frozen=True)
class Collapse:
    """Which subtrees are folded: ``None`` fields mean "the automatic choice for this size"."""

    folded: frozenset[str] = field(default_factory=frozenset)
    opened: frozenset[str] = field(default_factory=frozenset)


# --- selection ------------------------------------------------------------------------------------
def selection() -> Selection:
    """The current selection (empty at first)."""
    sel = st.session_state.get(_SELECTION)
    return sel if isinstance(sel, Selection) else Selection()


def select_edge(edge: EdgeKey | None, *, origin: str | None = None) -> None:
    """Select an edge ``(parent, child)`` (its evidence opens); the URL follows.

    ``origin``: the key of the graph widget where the user clicked it (that graph already shows it).
    """
    _set_selection(Selection(edge=tuple(edge) if edge else None), origin)  # type: ignore[arg-type]


def select_node(node: str | None, *, origin: str | None = None) -> None:
    """Select a model (its card opens); the URL follows. ``origin`` as in :func:`select_edge`."""
    _set_selection(Selection(node=node), origin)


def _set_selection(sel: Selection, origin: str | None) -> None:
    st.session_state[_SELECTION] = sel
    st.session_state[_SEL_COUNT] = st.session_state.get(_SEL_COUNT, 0) + 1
    st.session_state[_SEL_ORIGIN] = origin
    _write_url()


def full_run() -> None:
    """A whole page runs (not a fragment): graph widgets may be mounted afresh (a page switch), so every
    graph gets the current selection, even the one the last click came from."""
    st.session_state[_SEL_ORIGIN] = None


def graph_selection(graph_key: str, drawing: str, fresh: dict | None) -> dict | None:
    """The selection to send to the graph widget ``graph_key`` showing ``drawing`` (``GraphData.key``).

    A click in a graph is already shown by that graph: it gets the value it got last, unchanged, so the
    browser receives the same element (Streamlit sends a repeated element as a hash, and the widget
    does nothing) instead of the whole drawing again. Any other selection (a table row, a search, a link,
    the other graph) is sent as ``fresh`` with a counter, so that selecting again what the graph showed
    before a click in it still moves its highlight back.
    """
    sent = st.session_state.setdefault(_GRAPH_SENT, {})
    last = sent.get(graph_key)
    if st.session_state.get(_SEL_ORIGIN) == graph_key and last is not None and last[0] == drawing:
        return last[1]
    value = None if fresh is None else {**fresh, "n": st.session_state.get(_SEL_COUNT, 0)}
    sent[graph_key] = (drawing, value)
    return value


# --- the shareable link ---------------------------------------------------------------------------
def _write_url() -> None:
    sel = selection()
    qp = st.query_params
    for k in (Q_PARENT, Q_CHILD, Q_MODEL):
        if k in qp:
            del qp[k]
    if sel.edge:
        qp[Q_PARENT], qp[Q_CHILD] = sel.edge
    elif sel.node:
        qp[Q_MODEL] = sel.node


def set_in_url(source: str, name: str) -> None:
    """Record the open model set in the URL (so a copied link opens it)."""
    qp = st.query_params
    if qp.get(Q_SOURCE) != source or qp.get(Q_SET) != name:
        qp[Q_SOURCE], qp[Q_SET] = source, name


def url_request() -> tuple[str | None, str | None]:
    """The ``(source, set)`` a link asks for, once per session (``(None, None)`` afterwards)."""
    if st.session_state.get(_URL_APPLIED):
        return None, None
    st.session_state[_URL_APPLIED] = True
    qp = st.query_params
    parent, child, model = qp.get(Q_PARENT), qp.get(Q_CHILD), qp.get(Q_MODEL)
    if parent and child:
        st.session_state[_SELECTION] = st.session_state[_LINK_SELECTION] = Selection(edge=(parent, child))
    elif model:
        st.session_state[_SELECTION] = st.session_state[_LINK_SELECTION] = Selection(node=model)
    return qp.get(Q_SOURCE), qp.get(Q_SET)


def link_selection_missing(rec: Recovery) -> str | None:
    """Once, after a link's first tree: what the link selected that the tree ``rec`` does not hold (the
    selection is then cleared, URL included), or None. A link to an edge or model not in the set (a stale
    link, ids of another set, text made up) showed the tree with nothing selected and no word why."""
    sel = st.session_state.pop(_LINK_SELECTION, None)
    if not isinstance(sel, Selection) or st.session_state.get(_SELECTION) != sel:
        return None  # no link, or the user has selected something since: the tree is not looked at
    if sel.edge is not None and tuple(sel.edge) not in {(e.parent, e.child) for e in rec.edges}:
        missing = f"the edge {sel.edge[0]} → {sel.edge[1]}"
    elif sel.node is not None and sel.node not in rec.model_ids:
        missing = f"the model {sel.node}"
    else:
        return None
    _set_selection(Selection(), None)
    return missing


# --- constraints (per recovery) -------------------------------------------------------------------
def constraints(base_key: str) -> Constraints:
    """The user's constraints on the recovery ``base_key``."""
    return st.session_state.setdefault(_CONSTRAINTS, {}).get(base_key, Constraints())


def previous_constraints(base_key: str) -> Constraints:
    return st.session_state.setdefault(_CONSTRAINTS_PREV, {}).get(base_key, Constraints())


def set_constraints(base_key: str, old: Constraints, new: Constraints) -> None:
    """Store new constraints (the next rerun re-solves); keep the old ones to undo."""
    st.session_state.setdefault(_CONSTRAINTS_PREV, {})[base_key] = old
    st.session_state.setdefault(_CONSTRAINTS, {})[base_key] = new


def undo_constraints(base_key: str) -> Constraints:
    """Back to the previous constraints (after an impossible set)."""
    prev = previous_constraints(base_key)
    st.session_state.setdefault(_CONSTRAINTS, {})[base_key] = prev
    return prev


def remember_edges_before(base_key: str, edges: set[EdgeKey]) -> None:
    st.session_state[_BEFORE] = (base_key, edges)


def edges_before(base_key: str) -> set[EdgeKey] | None:
    """The edges before the last re-solve of ``base_key`` (``None`` if it was not re-solved)."""
    got = st.session_state.get(_BEFORE)
    return got[1] if got and got[0] == base_key else None


# --- runs the user asked for ----------------------------------------------------------------------
def requested(set_key: str) -> bool:
    return set_key in st.session_state.setdefault(_REQUESTED, set())


def request(set_key: str) -> None:
    st.session_state.setdefault(_REQUESTED, set()).add(set_key)


def preset_view(value: Any = None) -> Any:
    """The last preset shown (``(preset, availability)``); stores ``value`` when given."""
    if value is not None:
        st.session_state[_PRESET] = value
    return st.session_state.get(_PRESET)


# --- how the graph is drawn -----------------------------------------------------------------------
def graph_view() -> GraphView:
    view = st.session_state.get(_VIEW)
    return view if isinstance(view, GraphView) else GraphView()


def set_graph_view(view: GraphView) -> None:
    st.session_state[_VIEW] = view


def collapse(rec_key: str) -> Collapse:
    return st.session_state.setdefault(_COLLAPSE, {}).get(rec_key, Collapse())


def toggle_collapse(rec_key: str, node: str, currently_folded: bool) -> None:
    """Open a folded subtree or fold an open one (remembered per recovery)."""
    c = collapse(rec_key)
    if currently_folded:
        c = Collapse(c.folded - {node}, c.opened | {node})
    else:
        c = Collapse(c.folded | {node}, c.opened - {node})
    st.session_state.setdefault(_COLLAPSE, {})[rec_key] = c


def open_path(rec_key: str, nodes: set[str]) -> None:
    """Unfold every subtree in ``nodes`` (the ancestors of a model the user wants to see)."""
    c = collapse(rec_key)
    st.session_state.setdefault(_COLLAPSE, {})[rec_key] = Collapse(c.folded - nodes, c.opened | nodes)
