"""Rendering blocks shared by pages (tables, the tree iframe, edge evidence, constraint controls).

pandas and plotly are imported where they are used: the home page (the cold-start path) draws its tree
before it needs them. Derived artefacts (HTML, tables) are ``st.cache_data``-cached on the recovery's ``key``
string (the recovery itself is passed as an unhashed ``_rec``), so switching pages or edges never recomputes
them.
"""

from __future__ import annotations

import hashlib
import math
from functools import partial
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import streamlit as st

from explorer_ui import graph, state, static
from explorer_ui.graph_component import graph as graph_widget
from explorer_ui.table_component import table
from explorer_ui.safe_text import md, plain
from explorer_ui.sidebar import Loaded
from explorer_ui.sources import human_bytes
from explorer_ui.state import GraphView, NotReady
from mother_core.errors import MotherError
from mother_core.io.base import ModelRef
from mother_core.lineage import IdMatcher, LineageRow, compare_declared, declared_in_set, declared_text
from mother_core.recovery.confidence import TIE_PLACEMENT
from mother_core.recovery.result import Constraints, Edge, Recovery
from mother_core.statuses import STATUS_INFO, EdgeStatus

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

STATUS_ICON = {str(s): info.icon for s, info in STATUS_INFO.items()}


def st_key(statuses: dict) -> tuple:
    return tuple(sorted(statuses.items()))


def label(e: Edge | tuple[str, str]) -> str:
    p, c = e if isinstance(e, tuple) else (e.parent, e.child)  # not isinstance(Edge): survives module reloads
    return f"{p} → {c}"


def _num(x: float | None, nd: int = 3) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def own_cost(rec: Recovery, e: Edge) -> float | None:
    """What the solver paid for the recovered edge (from the cost matrix, else the alternatives)."""
    if rec.cost_matrix is not None:
        ids = rec.model_ids
        v = float(rec.cost_matrix[ids.index(e.parent), ids.index(e.child)])
        return None if math.isnan(v) or math.isinf(v) else v
    return next((a.cost for a in e.alternatives if a.parent == e.parent), None)


def best_alternative(e: Edge, own: float | None) -> tuple[str, float | None]:
    """The cheapest other parent of the child (``"(root)"`` for no parent) and its extra cost."""
    for a in e.alternatives:
        if a.parent != e.parent:
            gap = None if own is None or math.isinf(a.cost) else a.cost - own
            return (a.parent or "(root)"), _num(gap, 4)
    return "—", None


def contested_note(e: Edge, own: float | None) -> str:
    """A sentence for an edge kept although another parent is cheaper pairwise ("" otherwise).

    The gap is the exact one: rounded to 4 decimals (as the tables show it) a cheaper parent 1e-5 away read
    as no gap, and the Edge page ranked the chosen parent second without a word why."""
    other = next((a for a in e.alternatives if a.parent != e.parent), None)
    if other is None or own is None or math.isinf(other.cost) or other.cost >= own:
        return ""
    alt, gap = other.parent or "(root)", other.cost - own
    why = ("you set this one" if e.constrained else
           "the shape of the weight difference chose this one among near-tied candidates" if e.chosen_by_tie else
           "the whole tree fits the measured distances better with this one (refinement by additivity)")
    return f" {md(alt)} is closer pairwise (extra cost {gap:.3g}), but {why}."


@st.cache_data(show_spinner=False, max_entries=64)
def edge_table(key: str, statuses: tuple, _rec: Recovery) -> pd.DataFrame:
    """All edges, least confident first, with their best alternative parent."""
    import pandas as pd

    st_map = dict(statuses)
    rows = []
    for e in sorted(_rec.edges, key=lambda e: (_num(e.confidence) is None, e.confidence)):
        alt, gap = best_alternative(e, own_cost(_rec, e))
        s = st_map.get((e.parent, e.child), "")
        rows.append({"edge": label(e), "parent": e.parent, "child": e.child, "relation": graph.relation_label(e),
                     "confidence": _num(e.confidence, 2),
                     "placement": _num(e.placement_confidence, 2), "direction": _num(e.direction_confidence, 2),
                     "distance": _num(e.distance, 4), "status": f"{STATUS_ICON.get(s, '')} {s}".strip(),
                     "best alternative parent": alt, "extra cost": gap, "set by you": e.constrained})
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False, max_entries=64)
def graph_data(key: str, statuses: tuple, reference: str, view: GraphView, folded: frozenset, opened: frozenset,
               font_size: int, aspect: float, dark: bool, _rec: Recovery, height: int | None = None) -> graph.GraphData:
    """The drawing of a recovery (cached per recovery, view and folding: a click never rebuilds it)."""
    return graph.build_graph(_rec, statuses=dict(statuses), reference=reference, layout=view.layout,
                             branch=view.branch, color_by=view.color_by, focus=view.focus, folded=folded,
                             opened=opened, font_size=font_size, aspect=aspect, dark=dark, height=height)


@st.cache_data(show_spinner=False, max_entries=16)
def slide(key: str, statuses: tuple, reference: str, view: GraphView, fmt: str, title: str,
          _rec: Recovery) -> bytes:
    """The tree as a 16:9 slide with its legend (:mod:`explorer_ui.slides`), as the screen shows it."""
    from explorer_ui import slides

    data = graph_data(key, statuses, reference, view, frozenset(), frozenset(), 15, 16 / 9, False, _rec)
    data = graph.arranged(data, *slides.CANVAS_PX)  # layout "auto": the arrangement the slide's area fits
    return slides.render(slides.tree_figure(data, list(data.legend_rows), title), fmt)


@st.cache_data(show_spinner=False, max_entries=4)
def export_files(key: str, _rec: Recovery) -> tuple[tuple[str, str, str, str], ...]:
    """The Export page's text files, (what, file suffix, data, mime) each, made once per result: the page
    rebuilt them on every rerun (the result JSON of a large set alone takes a second)."""
    import json

    from mother_core import export

    return (
        ("Result (JSON, reload it here or in the CLI)", "result.json",
         json.dumps(_rec.to_dict(), indent=1, allow_nan=False), "application/json"),
        ("GraphML (Gephi, yEd, networkx)", "graphml", export.to_graphml(_rec), "application/xml"),
        ("Newick (phylogenetics tools)", "nwk", export.to_newick(_rec), "text/plain"),
        ("Suggested base_model: lines for model cards", "base_model.txt", export.base_model_lines(_rec),
         "text/plain"),
    )


@st.cache_data(show_spinner=False, max_entries=4)
def tree_page(key: str, statuses: tuple, reference: str, view: GraphView, _rec: Recovery) -> str:
    """The interactive tree as one offline HTML page (:func:`explorer_ui.graph.tree_html`), made once per
    result and view."""
    return graph.tree_html(_rec, statuses=dict(statuses), reference=reference, layout=view.layout,
                           branch=view.branch, color_by=view.color_by)


def selected_edge(ctx: Loaded) -> Edge | None:
    """The selected edge, when it is an edge of the current tree."""
    sel = state.selection()
    return ctx.rec.edge(*sel.edge) if sel.edge else None


def selected_model(ctx: Loaded) -> str | None:
    sel = state.selection()
    return sel.node if sel.node in set(ctx.rec.model_ids) else None


def ranked_edges(ctx: Loaded) -> list[tuple[str, str]]:
    """Edges least confident first (the order of the tables and of talk mode's arrow keys)."""
    df = edge_table(ctx.key, st_key(ctx.statuses), ctx.rec)
    return list(zip(df["parent"], df["child"])) if len(df) else []


def _on_graph_event(ctx: Loaded, data: graph.GraphData, graph_key: str):
    def handle(event: dict) -> None:
        kind = event.get("type")
        if kind == "node" and event.get("id") in set(ctx.rec.model_ids):
            state.select_node(str(event["id"]), origin=graph_key)
        elif kind == "edge":
            state.select_edge((str(event.get("parent")), str(event.get("child"))), origin=graph_key)
        elif kind == "toggle" and event.get("id") in set(ctx.rec.model_ids):
            node = str(event["id"])
            if node in data.folded or graph.Forest.of(ctx.rec).children.get(node):
                state.toggle_collapse(ctx.key, node, node in data.folded)
        elif kind == "step":
            order = ranked_edges(ctx)
            if order:
                cur = state.selection().edge
                i = order.index(cur) if cur in order else -1
                state.select_edge(order[(i + int(event.get("delta", 1))) % len(order)])
    return handle


def graph_controls(ctx: Loaded, where: str) -> GraphView:
    """The graph's toolbar: find a model (with its lineage), layout, branch length, colour."""
    view = state.graph_view()
    ids = sorted(ctx.rec.model_ids)
    # One horizontal row, not columns: a block per row instead of one per cell (fewer elements to mount on
    # every page switch).
    row = st.container(horizontal=True)
    pick = row.selectbox("Find a model", ["—"] + ids,
                         index=(ids.index(view.focus) + 1) if view.focus in ids else 0, key=f"find_{where}",
                         help="Shows the model with its ancestors and descendants (the rest fades), "
                         "opens folded subtrees above it and its card.")
    layout = row.selectbox("Layout", graph.LAYOUTS, width=180, index=graph.LAYOUTS.index(view.layout),
                           key=f"layout_{where}", help="auto: top-down, or left to right when only that shows "
                           "the whole tree with readable labels in this window (a wide, shallow tree).")
    branch = row.selectbox("Branch length", graph.BRANCHES, index=graph.BRANCHES.index(view.branch), width=180,
                           key=f"branch_{where}", format_func=lambda b: {"edges": "one per edge",
                                                                         "distance": "distance"}[b])
    color = row.selectbox("Colour edges by", graph.COLOR_MODES, index=graph.COLOR_MODES.index(view.color_by),
                          width=180, key=f"color_{where}")
    focus = None if pick == "—" else pick
    # A select box with options always holds one; None only in Streamlit's signature.
    new = GraphView(layout or view.layout, branch or view.branch, color or view.color_by, focus)
    if new != view:
        state.set_graph_view(new)
        if focus and focus != view.focus:
            state.select_node(focus)
    return new


def explore(ctx: Loaded, *, where: str, height: int, aspect: float = 1.8, table: bool = False,
            table_height: int = 420, overview: bool = False) -> None:
    """The tree with the selection beside it; graph controls above; optionally an edge search and the ranked
    edge table below.

    Two nested fragments (``st.fragment``), so that each interaction sends and re-renders as little as
    possible (in the browser, re-rendering elements costs more than the script run; see
    ``benchmarks/RESULTS.md``): a click in the graph reruns only :func:`_tree_and_selection` (the graph,
    whose drawing is not rebuilt, and the card or evidence); a control, the edge search or a table row
    reruns :func:`_explore`, which redraws the graph part too. ``overview``: with nothing selected, the
    panel shows the histogram of edge confidence (which also loads the chart library before the first
    click needs it: seconds under load).
    """
    _explore(ctx, where, height, aspect, table, table_height, overview)


@st.fragment
def _explore(ctx: Loaded, where: str, height: int, aspect: float, table: bool, table_height: int,
             overview: bool) -> None:
    graph_controls(ctx, where)
    _tree_and_selection(ctx, where, height, aspect, overview)
    if table and ctx.rec.edges:
        st.markdown("**Edges, least confident first**: click a row (or an edge in the tree) for its evidence")
        edge_search(ctx)
        edge_rank_table(ctx, height=table_height)


@st.fragment
def _tree_and_selection(ctx: Loaded, where: str, height: int, aspect: float, overview: bool) -> None:
    left, right = st.columns([3, 2])
    with left:
        tree(ctx, height=height, where=where, aspect=aspect, controls=False)
    with right:
        selection_panel(ctx, overview=overview)


def tree(ctx: Loaded, *, height: int = 560, font_size: int = 15, aspect: float = 1.8, where: str = "main",
         controls: bool = True, dark: bool = False, keys: bool = False, inline_library: bool = False) -> None:
    """The interactive tree: clicks select models and edges, double-clicks fold subtrees.

    vis-network is linked from the app's static files (fetched once per browser session) unless
    ``inline_library`` or static serving is off.
    """
    view = graph_controls(ctx, where) if controls else state.graph_view()
    fold = state.collapse(ctx.key)
    sel = state.selection()
    data = graph_data(ctx.key, st_key(ctx.statuses), ctx.reference, view, fold.folded, fold.opened, font_size,
                      aspect, dark, ctx.rec, height)
    hidden_sel = [m for m in ((sel.node,) if sel.node else tuple(sel.edge or ())) if m in data.hidden]
    if hidden_sel:  # a model selected elsewhere lies in a folded subtree: open the path to it
        forest = graph.Forest.of(ctx.rec)
        state.open_path(ctx.key, {a for m in hidden_sel for a in forest.ancestors(m)})
        fold = state.collapse(ctx.key)
        data = graph_data(ctx.key, st_key(ctx.statuses), ctx.reference, view, fold.folded, fold.opened,
                          font_size, aspect, dark, ctx.rec, height)
    gkey = f"graph_{where}"
    selected = state.graph_selection(gkey, data.key, {"edge": list(sel.edge), "reveal": True}
                                     if sel.edge and data.edge_id(sel.edge)
                                     else {"node": sel.node, "reveal": True} if sel.node else None)
    lib = None if inline_library else static.vis_url()
    graph_widget(data, key=gkey, height=height, lib_url=lib, selected=selected,
                 on_event=_on_graph_event(ctx, data, gkey), dark=dark, big=font_size >= 20, keys=keys)
    # Not in talk mode: it has no "Find a model" box, the legend already explains the dashed boxes, and at
    # talk type these two lines pushed the arrow-key line off a 1280x720 screen.
    if data.folded and controls:
        st.caption(f"{len(data.hidden)} of {len(ctx.rec.models)} models are folded into {len(data.folded)} "
                   "subtrees (dashed boxes, ▸ +k): double-click one to open it, or find a model above.")


def tree_on_demand(ctx: Loaded, title: str, **kw) -> None:
    """:func:`tree` in an expander, drawn only while it is open (opening it reruns the page).

    A closed expander's content is still sent and mounted: vis-network would lay out and draw a hidden
    tree on every run of the page (a page switch, each constraint), ~0.1-0.2 s of the browser's time.
    """
    box = st.expander(title, key=f"open_{kw.get('where', 'main')}_tree", on_change="rerun")
    if box.open:
        with box:
            tree(ctx, **kw)


SCREENS = {"1280 × 720": 400, "1920 × 1080": 780}  # canvas px so title + tree + edge line fit the screen


def talk(ctx: Loaded) -> None:
    """Talk mode: title line, the tree (dark, large type, arrow keys), one line on the selected edge."""
    screen = st.sidebar.radio("Projector", list(SCREENS), key="talk_screen", horizontal=True,
                              help="Sizes the tree so the page fits the screen without scrolling.")
    rec = ctx.rec
    n_trees = len(rec.trees) or len(rec.roots)
    st.title(md(ctx.model_set.label))
    st.markdown(f"{len(rec.models)} models · {len(rec.edges)} recovered edges · "
                f"{n_trees} tree(s)" + (f" · compared with the {ctx.reference}" if ctx.reference else ""))
    _talk_tree(ctx, SCREENS[screen or next(iter(SCREENS))])


@st.fragment
def _talk_tree(ctx: Loaded, height: int) -> None:
    """The talk tree and its edge line: an arrow key reruns only this fragment, not the sidebar."""
    rec = ctx.rec
    tree(ctx, height=height, font_size=22, aspect=16 / 7, where="talk", controls=False, dark=True, keys=True)
    edge = selected_edge(ctx)
    if edge is None:
        st.markdown("→ / ← steps through the edges, least confident first.")
        return
    order = ranked_edges(ctx)
    rank = order.index((edge.parent, edge.child)) + 1 if (edge.parent, edge.child) in order else 0
    alt, gap = best_alternative(edge, own_cost(rec, edge))
    # Names with non-breaking hyphens: at talk type the line wrapped inside a name ("m-" / "0643d0").
    def name(m: str) -> str:
        return md(m).replace("-", "\u2011")

    st.markdown(f"**{name(edge.parent)} → {name(edge.child)}** · confidence **{edge.confidence:.2f}** "
                f"({rank} of {len(order)}, least confident first) · best alternative parent: {name(alt)}"
                + (f" (extra cost {gap:.3g})" if gap is not None else "") + " · → / ← for the next")


@st.cache_data(show_spinner=False, max_entries=16)
def declared_graph(key: str, _rec: Recovery) -> tuple[Recovery, dict]:
    """The declared lineage drawn as a graph of its own (same models; one edge per declared parent in
    the set), with each declared edge's status against the recovered tree."""
    from dataclasses import replace

    from mother_core.lineage import declared_edges

    recovered = {(e.parent, e.child) for e in _rec.edges}
    nan = math.nan
    edges = [Edge(p, c, nan, nan, nan, nan) for p, c in declared_edges(_rec)]
    statuses = {(e.parent, e.child): (EdgeStatus.AGREE if (e.parent, e.child) in recovered else
                                      EdgeStatus.FLIPPED if (e.child, e.parent) in recovered else EdgeStatus.CONFLICT
                                      ).value for e in edges}
    return replace(_rec, edges=edges, constraints=Constraints()), statuses


@st.cache_data(show_spinner=False, max_entries=16)
def lineage_rows(key: str, _rec: Recovery) -> tuple[list, dict]:
    """``compare_declared`` and ``edge_lineage`` of a recovery, once per result (~5 ms at 2,000 models)."""
    from mother_core.lineage import edge_lineage

    return compare_declared(_rec), dict(edge_lineage(_rec))


def lineage_diff(ctx: Loaded) -> None:
    """Declared and recovered trees side by side (same models, same selection), disagreements listed."""
    rows, recovered_status = lineage_rows(ctx.key, ctx.rec)
    declared, d_status = declared_graph(ctx.key, ctx.rec)
    left, right = st.columns(2)
    with left:
        st.markdown("**Declared** (model cards and configs) — green: the weights agree; red: they do not")
        if declared.edges:
            _diff_graph(ctx, declared, d_status, "declared", "declared")
        else:
            st.info("No model in this set declares a parent.")
    with right:
        st.markdown("**Recovered** (from the weights) — coloured by agreement with the declared parent")
        _diff_graph(ctx, ctx.rec, recovered_status, "declared lineage", "recovered")
    bad = [r for r in rows if r.status in (EdgeStatus.CONFLICT, EdgeStatus.EXTERNAL)]
    st.subheader(f"Disagreements ({len(bad)})")
    if not bad:
        st.success("None: every declared parent in the set matches the weights.")
    else:
        df = lineage_frame(bad)
        order = [r.model for r in bad]
        st.dataframe(df, hide_index=True, width="stretch", key=f"disagree_{ctx.key}", selection_mode="single-row",
                     on_select=partial(_on_disagreement, f"disagree_{ctx.key}", order))
        st.caption("Click a row (or a model in either graph) for its card.")


def _on_disagreement(key: str, order: list[str]) -> None:
    rows = st.session_state[key].selection.rows
    if rows:
        state.select_node(order[rows[0]])


def _diff_graph(ctx: Loaded, rec: Recovery, statuses: dict, reference: str, where: str) -> None:
    view = state.graph_view()
    fold = state.collapse(ctx.key)
    sel = state.selection()
    data = graph_data(f"{ctx.key}:{where}", st_key(statuses), reference, GraphView(view.layout, view.branch,
                      "agreement", view.focus), fold.folded, fold.opened, 13, 1.0, False, rec, 460)
    gkey = f"graph_{where}"
    selected = state.graph_selection(gkey, data.key, {"edge": list(sel.edge)} if sel.edge and data.edge_id(sel.edge)
                                     else {"node": sel.node, "reveal": True} if sel.node else None)
    graph_widget(data, key=gkey, height=460, lib_url=static.vis_url(), selected=selected,
                 on_event=_on_graph_event(ctx, data, gkey))


def selection_panel(ctx: Loaded, *, full: bool = False, overview: bool = False) -> None:
    """What is selected: a model's card, or an edge's evidence (nothing: a hint, and with ``overview``
    the histogram of edge confidence)."""
    node, edge = selected_model(ctx), selected_edge(ctx)
    if node:
        node_card(ctx, node)
    elif edge is not None:
        st.subheader(f"Edge {md(label(edge))}")
        edge_evidence(ctx, edge, full=full)
        if not full:
            st.page_link("app_pages/2_Edge.py", label="All evidence, and flip / force / forbid this edge →")
    else:
        st.caption("Click a model in the tree for its card, or an edge for its evidence.")
        if overview and ctx.rec.edges:
            from explorer_ui import plots

            st.plotly_chart(plots.edge_confidence(ctx.rec), key=f"overview_{ctx.key}")


def node_card(ctx: Loaded, model: str) -> None:
    """A model's card: where it is, its recovered parent(s) and how sure, what else it could descend from."""
    import pandas as pd

    rec = ctx.rec
    m = next(x for x in rec.models if x.id == model)
    parents = [e for e in rec.edges if e.child == model]
    kids = [e.child for e in rec.edges if e.parent == model]
    st.subheader(f"Model {md(model)}")
    # One table, not a row of metrics: each metric is a few more elements to render and a label whose
    # width the browser measures (a forced layout) on every click.
    conf = parents[0].confidence if parents else None
    # st.table renders every cell as markdown: each name, path and declared parent (data from the models'
    # folders and cards) goes through md(), or a declared parent "![x](https://...)" was an image request.
    rows = [("Recovered parent", ", ".join(f"{md(e.parent)} ({graph.relation_label(e)}"
                                           + (f", weight {e.merge_weight:.2f}" if getattr(e, "merge_weight", None)
                                              is not None else "")
                                           + (f", confidence {e.confidence:.2f}" if len(parents) > 1 else "") + ")"
                                           for e in parents) or "(root)"),
            ("Confidence of its edge", "(a root)" if conf is None else f"{conf:.2f}") if len(parents) < 2 else
            # a merge: each parent's own is above; this is the merge's (that the model is a merge at all)
            ("Confidence that it is a merge", f"{parents[0].relation_confidence:.2f}"),
            *_declared_rows(m.id, m.declared_parent, rec.model_ids),
            ("Children", ", ".join(md(k) for k in sorted(kids)) or "(none)"), ("Family (tree)", str(m.tree)),
            ("Format", md(m.format or "?")), ("Parameters", f"{m.n_params:,}" if m.n_params else "?"),
            ("Size on disk", _disk_size(m.path)), ("Kurtosis", _fmt_num(m.kurtosis)), ("Path", md(m.path))]
    st.table(pd.DataFrame(rows, columns=["", "value"]).set_index(""))
    for e in parents:
        if e.chosen_by_tie:
            st.markdown(tie_note(e))
    if parents:  # a callback, not st.rerun(): inside a fragment only the fragment reruns
        st.button(f"Open the evidence of {md(parents[0].parent)} → {md(model)}", key=f"card_edge_{model}",
                  on_click=state.select_edge, args=((parents[0].parent, model),))
    if m.alternatives:
        st.markdown("**Alternative parents** (lower cost is better)")
        # A static table, not a data grid: a few rows, and mounting a grid costs ~0.1 s per click in the browser.
        st.table(pd.DataFrame([{"parent": md(a.parent) if a.parent else "(root)", "cost": _fmt_num(a.cost),
                                "distance": _fmt_num(a.distance)} for a in m.alternatives]).set_index("parent"))


def declared_cells(declared: str | None, in_set: str | None) -> dict[str, str]:
    """A declared parent as two table columns (:func:`~mother_core.lineage.declared_text`): the model of the
    set it names, else the text as written; and the text as written where it differs (an adapter's config
    names its base by a path on the machine it was trained on), else empty. Plain text (data grids)."""
    shown, written = declared_text(declared, in_set)
    return {"declared parent": plain(shown), "declared as written": plain(written)}


def declared_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A table of :func:`declared_cells` rows, without the "declared as written" column when every row's
    declaration already reads as written (most sets: a column of blanks)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if "declared as written" in df and not df["declared as written"].astype(bool).any():
        df = df.drop(columns="declared as written")
    return df


def lineage_frame(rows: list[LineageRow]) -> pd.DataFrame:
    """The Lineage page's tables (its disagreements, every model): one row per
    :class:`~mother_core.lineage.LineageRow`, the declared parent as :func:`declared_cells`."""
    return declared_frame([{"model": r.model, "status": f"{STATUS_ICON[r.status]} {r.status}",
                            **declared_cells(r.declared_parent, r.declared_in_set),
                            "recovered parent": r.recovered_parent or "(root)", "note": r.note} for r in rows])


def model_rows(rec: Recovery) -> list[dict[str, Any]]:
    """The Matrices page's table of models: one row each, the declared parent as :func:`declared_cells`."""
    parents = {e.child: e.parent for e in rec.edges}
    match, roots = IdMatcher(rec.model_ids), set(rec.roots)
    return [{"model": m.id, "tree": m.tree, "root": m.id in roots, "recovered parent": parents.get(m.id, ""),
             **declared_cells(m.declared_parent, declared_in_set(m.id, m.declared_parent, match)),
             "kurtosis": m.kurtosis, "format": m.format, "parameters": m.n_params, "path": m.path}
            for m in rec.models]


def _declared_rows(model: str, declared: str | None, ids: list[str]) -> list[tuple[str, str]]:
    """The model card's declared parent (markdown cells): the model of the set it names, and the text as
    written on a second row where it differs."""
    shown, written = declared_text(declared, declared_in_set(model, declared, IdMatcher(ids)))
    rows = [("Declared parent", md(shown) if shown else "(none declared)")]
    return rows + [("Declared as written", md(written))] if written else rows


def _fmt_num(x: float | None) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{v:.4g}"


def _disk_size(path: str) -> str:
    import os

    try:
        if os.path.isfile(path):
            return human_bytes(os.path.getsize(path))
        total = sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
        return human_bytes(total)
    except OSError:
        return "?"


def summary(ctx: Loaded) -> None:
    """Headline numbers, the accuracy against the reference, and skipped inputs."""
    rec = ctx.rec
    c = st.columns(5)
    c[0].metric("Models", len(rec.models))
    c[1].metric("Edges", len(rec.edges))
    c[2].metric("Trees", len(rec.trees) or len(rec.roots))
    confs = [e.confidence for e in rec.edges if not math.isnan(e.confidence)]
    c[3].metric("Mean confidence", f"{sum(confs) / len(confs):.2f}" if confs else "n/a",
                help="Each edge's confidence, 0 to 1, is placement (is the child attached to the right model?) "
                     "times direction (is the parent really the parent?), calibrated on sets of known lineage. "
                     "Read an edge below 0.5 as a question: *Ambiguous edges* lists them, least confident first.")
    if ctx.truth and ctx.reference != "declared lineage":
        from mother_core.evaluate import evaluate

        ev = evaluate(rec, list(ctx.truth))
        c[4].metric(f"Edges correct vs {ctx.reference}", f"{ev.directed_accuracy:.0%}",
                    help=f"Undirected (right pair, any direction): {ev.undirected_accuracy:.0%}. "
                         f"Wrong among edges shown at confidence >= 0.8: {ev.n_confident_wrong} of "
                         f"{ev.n_confident}.")
    elif ctx.reference == "declared lineage":
        rows = lineage_rows(ctx.key, rec)[0]
        c[4].metric("Agree with declared parents", f"{sum(r.status == 'agree' for r in rows)}/{len(rows)}")
    problems(rec)


def problems(rec: Recovery) -> None:
    """Notes on how the whole result was made (``Recovery.notes``), and inputs that were skipped (the
    rest was used)."""
    for note in rec.notes:
        st.info(md(note))
    if rec.problems:
        with st.expander(f"{len(rec.problems)} input(s) skipped — the rest was used", expanded=True):
            for p in rec.problems:
                st.markdown(f"- {md(p.get('path', '?'))}: {md(p.get('message', ''))}")


def architecture_text(m: ModelRef, by_id: Mapping[str, ModelRef]) -> str:
    """What the folder listing says of a model's architecture. An adapter stores none (only low-rank factors
    and the base's name): it reads "adapter on <base>", with the base's architecture when the base is in the
    set, instead of "unknown"; a model whose config names none reads "not in its config"."""
    if m.architecture:
        return m.architecture
    if m.base_id:
        base = by_id.get(m.base_id) or next((b for b in by_id.values() if b.path == m.base_id), None)
        arch = f"{base.architecture}, " if base is not None and base.architecture else ""
        return f"{arch}adapter on {m.base_id}"
    return "not in its config"


def discovery_table(discovery) -> None:
    """Models found in a folder, before anything is read."""
    rows = []
    by_id = {m.id: m for m in discovery.models}
    match = IdMatcher(list(by_id))
    for m in discovery.models:
        try:
            size = human_bytes(m.size_bytes)
        except OSError:
            size = "?"
        rows.append({"model": plain(m.id), "format": m.format, "architecture": plain(architecture_text(m, by_id)),
                     "size": size, **declared_cells(m.declared_parent, declared_in_set(m.id, m.declared_parent, match)),
                     "path": plain(m.path)})
    st.dataframe(declared_frame(rows), hide_index=True, width="stretch")
    for p in discovery.problems:
        st.warning(f"Skipped {md(p.path)}: {md(p.message)}")


def _on_pick(key: str, order: list[tuple[str, str]]) -> None:
    i = st.session_state.get(key)
    if isinstance(i, int) and 0 <= i < len(order):
        state.select_edge(order[i])


def _on_search(key: str, order: list[tuple[str, str]]) -> None:
    _on_pick(key, order)
    st.session_state[key] = None  # a search box, not a second copy of the selection: it empties again


def edge_search(ctx: Loaded) -> None:
    """Type to find an edge (least confident first); picking one selects it and the box empties again.

    Unlike a selectbox showing the selection, it never goes stale when the graph changes the selection,
    so it sits outside the graph's fragment and is not re-sent on every click.
    """
    df = edge_table(ctx.key, st_key(ctx.statuses), ctx.rec)
    order = list(zip(df["parent"], df["child"]))
    key = f"edge_search_{ctx.key}"
    st.selectbox("Edge", list(range(len(order))), index=None, key=key, format_func=lambda i: label(order[i]),
                 placeholder=f"Type to find one of {len(order):,} edges", on_change=_on_search, args=(key, order),
                 label_visibility="collapsed")


RANK_COLUMNS = ("edge", "confidence", "status", "best alternative parent", "distance")


@st.cache_data(show_spinner=False, max_entries=64)
def _rank_rows(key: str, statuses: tuple, _rec: Recovery) -> list[list]:
    """The ranked table's cells (plain values; ``None`` for a missing number), least confident first."""
    df = edge_table(key, statuses, _rec)
    return [[(None if math.isnan(v) else float(v)) if isinstance(v, float) else v for v in row]
            for row in df[list(RANK_COLUMNS)].itertuples(index=False, name=None)]


def edge_rank_table(ctx: Loaded, *, height: int = 420) -> None:
    """The ranked edge table; clicking a row selects its edge (a plain HTML table: see
    :mod:`explorer_ui.table_component` for why not a data grid)."""
    order = ranked_edges(ctx)
    statuses = st_key(ctx.statuses)
    rows = _rank_rows(ctx.key, statuses, ctx.rec)
    ident = hashlib.sha1(repr(statuses).encode()).hexdigest()[:12]
    table(RANK_COLUMNS, rows, key=f"edge_table_{ctx.key}", data_key=f"{ctx.key}:{ident}",
          height=height, on_row=lambda i: state.select_edge(order[i]), digits=(None, 2, None, None, 4))


def edge_picker(ctx: Loaded) -> Edge | None:
    """A selectbox showing and choosing the selected edge (the first, least confident one by default)."""
    rec = ctx.rec
    if not rec.edges:
        st.info("No edges: every model was recovered as its own root.")
        return None
    df = edge_table(ctx.key, st_key(ctx.statuses), rec)
    order = list(zip(df["parent"], df["child"]))
    sel = state.selection().edge
    if sel not in order:
        sel = order[0]
        if state.selection().node is None:
            state.select_edge(sel)
    # One key, its value set from the selection before the widget is drawn: a selection made elsewhere
    # (the graph, a flip) moves the box without remounting it (a fresh key re-sent every option).
    pkey = f"edge_pick_{ctx.key}"
    st.session_state[pkey] = order.index(sel)
    st.selectbox("Edge", list(range(len(order))), key=pkey, format_func=lambda i: label(order[i]),
                 on_change=_on_pick, args=(pkey, order),
                 help="Least confident first. Selecting one highlights it in the tree.")
    return rec.edge(*sel)


def ambiguous_table(ctx: Loaded) -> None:
    """Every edge, least confident first; clicking a row opens that edge on the Edge page (its evidence, and
    the controls to flip, force or forbid it)."""
    df = edge_table(ctx.key, st_key(ctx.statuses), ctx.rec)
    if df.empty:
        st.info("No edges to rank: every model was recovered as its own root.")
        return
    st.caption("Click a row for the edge's evidence and to correct it.")
    bar = st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="%.2f")
    picked = st.dataframe(df, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                          key=f"ambiguous_{ctx.key}", column_config={"confidence": bar},
                          column_order=[c for c in df.columns if c not in ("parent", "child")])
    rows = picked.selection.rows if picked is not None else []
    if rows:
        state.select_edge((df["parent"].iloc[rows[0]], df["child"].iloc[rows[0]]))
        st.switch_page("app_pages/2_Edge.py")
    weak = df[df["confidence"].fillna(0) < 0.5]
    st.markdown(f"**{len(weak)}** of {len(df)} edges have confidence below 0.5.")


def _on_worst(key: str, order: list[tuple[str, str]]) -> None:
    rows = st.session_state[key].selection.rows
    if rows:
        state.select_edge(order[rows[0]])


def least_confident(ctx: Loaded, rows: int = 3) -> None:
    """The few edges most worth a second look, with their best alternative parent (the home page's
    pointer into the Ambiguous and Edge pages), beside how confident the recovery is overall."""
    if not ctx.rec.edges:
        return
    from explorer_ui import plots

    df = edge_table(ctx.key, st_key(ctx.statuses), ctx.rec).head(rows)
    left, right = st.columns([3, 2])
    left.markdown("**Least confident edges**: click one for its evidence beside the tree")
    order = list(zip(df["parent"], df["child"]))
    key = f"worst_{ctx.key}"
    left.dataframe(df, hide_index=True, column_order=["edge", "relation", "confidence", "status",
                                                      "best alternative parent"],
                   on_select=partial(_on_worst, key, order), selection_mode="single-row", key=key)
    right.plotly_chart(plots.edge_confidence(ctx.rec), key=f"conf_{ctx.key}")


#: How the Edge page names each direction cue (``Edge.cues``; mother_core.recovery.recover.cue_votes).
CUE_NAMES = {"kurtosis": "kurtosis", "norm": "norm growth", "scale": "scale", "effective_rank": "effective rank",
             "subspace": "update in the child's own directions"}


def cue_note(e: Edge) -> str:
    """One sentence with each direction cue's vote on the edge (issue 12 item 4), empty without votes: a
    mark says at a glance which way each one points."""
    if not e.cues:
        return ""
    votes = ", ".join(f"{CUE_NAMES.get(k, k)} {v:+.2f} {'✓' if round(v, 2) > 0 else '✗' if round(v, 2) < 0 else '·'}"
                      for k, v in e.cues.items())
    return f" Each cue's vote, from -1 (against, ✗) to +1 (for this direction, ✓): {votes}."


#: The ``--relations`` detector that types each relation (pruned and distilled children: the shape one).
_DETECTOR = {"prune": "shape", "distill": "shape"}


def relation_line(rec: Recovery, e: Edge) -> str:
    """How the child was made from this parent (markdown): the relation, what its detector read, how sure it
    is, and for a merge every parent with its weight and own confidence (this edge is one of them)."""
    r = graph.relation(e)
    # The detector's detail ("linear 0.56/0.44") beside the short label, else the legend's longer words.
    line = "**How it was made:** " + (f"{graph.relation_label(e)} ({md(e.relation_detail)})" if e.relation_detail
                                      else graph.RELATIONS[r][2])
    if not math.isnan(e.relation_confidence):
        line += f", {'that it is a merge' if r == 'merge' else 'relation'} confidence {e.relation_confidence:.2f}"
    line += "."
    if r == "merge":
        parents = [x for x in rec.edges if x.child == e.child and graph.relation(x) == "merge"]
        parts = []
        for x in sorted(parents, key=lambda x: -(x.merge_weight or 0.0)):
            what = ([f"weight {x.merge_weight:.2f}"] if x.merge_weight is not None else []) + \
                   [f"confidence {x.confidence:.2f}"]
            this = x.parent == e.parent
            parts.append(("**" if this else "") + md(x.parent) + ("** (this edge; " if this else " (")
                         + ", ".join(what) + ")")
        line += f" {len(parents)} parents: " + "; ".join(parts) + "."
    return line


#: Why such an edge's placement confidence is not its distance margin (confidence.TIE_PLACEMENT).
_TIE_COUNTED = (f" Its placement confidence ({TIE_PLACEMENT:.2f}, times its distance from the unrelated threshold) "
                "is the share of parents chosen this way that were right on the fitting collections, not the "
                "distance margin, which favours another candidate by construction.")


def tie_note(e: Edge) -> str:
    """A paragraph (markdown) for an edge whose parent was re-chosen among near-tied candidates by the
    kurtosis of the weight difference (``Edge.tie_kurtosis``; mother_core/recovery/ties.py), not by
    distance; empty for every other edge."""
    if not e.chosen_by_tie:
        return ""
    if getattr(e, "tie_spectral", False):
        return ("**Moved from a chain to a sibling of its parent by the spectrum of the weight difference, not "
                f"by distance.** Distance placed this model under {md(e.tie_displaced or '')}; its difference to "
                f"{md(e.parent)} spreads over fewer directions (a lower effective rank, like one fine-tune's "
                f"update) than its difference to {md(e.tie_displaced or '')}, which reads like two runs' "
                "difference: siblings on a line, not a chain." + _TIE_COUNTED)
    if e.tie_lifted:
        values = "; ".join(f"{md(m)} " + (f"{v:+.2f}" if math.isfinite(v) else "n/a")
                           + (" (chosen)" if m == e.parent else " (parent by distance)" if m == e.tie_displaced else "")
                           for m, v in e.tie_kurtosis.items())
        return ("**Moved from a chain to a sibling of its parent by the shape of the weight difference "
                "(Adam-like updates), not by distance.** Distance placed this model under "
                f"{md(e.tie_displaced or '')}; in most layers its difference to {md(e.parent)} reads the more "
                "platykurtic (flat-tailed, like one fine-tune's update), and its difference to "
                f"{md(e.tie_displaced or '')} like two runs' difference: siblings on a line, not a chain. "
                f"Mean excess kurtosis over the layers of child − candidate: {values}." + _TIE_COUNTED)
    values = "; ".join(f"{md(m)} " + (f"{v:+.2f}" if math.isfinite(v) else "n/a")
                       + (" (chosen)" if m == e.parent else " (nearest by distance)" if m == e.tie_displaced else "")
                       for m, v in e.tie_kurtosis.items())
    return (f"**Parent chosen among {len(e.tie_kurtosis)} near-tied candidates by the shape of the weight "
            "difference (Adam-like updates), not by distance.** The layers could not tell these candidates "
            "apart beyond their noise; in a tree whose updates read Adam-like, a true parent's difference to "
            "its child is the most platykurtic (flat-tailed), and the chosen one's reads so against each other "
            "candidate in most layers. Mean excess kurtosis over the layers of the difference child − "
            f"candidate (lower: more like one fine-tune's update): {values}." + _TIE_COUNTED)


def edge_evidence(ctx: Loaded, e: Edge, *, full: bool = True) -> None:
    """Why the edge is there: confidence parts, per-layer kurtosis, votes, distances, alternatives."""

    s = ctx.statuses.get((e.parent, e.child))
    # One markdown element (lines, not a row of metrics: seven elements, each label measured by the browser):
    # the panel beside the tree redraws it on every click, the Edge page on every page switch and constraint.
    lines = [relation_line(ctx.rec, e)]
    conf = (f"**Confidence {e.confidence:.2f}**: placement {e.placement_confidence:.2f} (is the child attached "
            f"to the right model?), direction {e.direction_confidence:.2f} (is the parent really the parent?).")
    if s:
        conf += f" Versus {ctx.reference}: {graph.status_phrase(s, strong='**')}." + truth_parent_note(ctx, e, s)
    if e.constrained:
        conf += " This edge was set by a constraint."
    lines.append(conf)
    typed = "" if graph.relation(e) == "finetune" else (
        f"the {_DETECTOR.get(graph.relation(e), graph.relation(e))} detector reads it from what it recognises "
        "(docs/RELATIONS.md); the fine-tune cues that follow are shown for reference and may disagree: ")
    # A merge with "8 layers against" under "direction 0.99" read as a contradiction without this.
    # "Kurtosis 2.78 -> 1.17" beside a plot of per-layer values near 0-1 did not say what it was: the sum
    # (Recovery.models' kurtosis, the Matrices page's bars).
    lines.append(f"**Direction:** {typed}sum of per-layer excess kurtosis {e.kurtosis_parent:.4g} (parent) → "
                 f"{e.kurtosis_child:.4g} (child); "
                 f"{e.layers_voting_forward} layers vote for this direction, {e.layers_voting_backward} against."
                 + cue_note(e))
    place = f"**Placement:** distance {e.distance:.4g}."
    doubt = getattr(e, "parent_note", "")
    if graph.relation(e) == "merge" and doubt:
        place += f" This parent is in doubt: {md(doubt)}."
    place += contested_note(e, own_cost(ctx.rec, e))
    lines.append(place)
    st.markdown("  \n".join(lines))
    if e.chosen_by_tie:
        st.markdown(tie_note(e))
    st.plotly_chart(evidence_figure("kurtosis", ctx.key, e.parent, e.child, ctx.rec, e), key=f"ku_{ctx.key}")
    if not full:
        return
    # Drawn only while open (as the trees on demand): two more plotly charts in the page's first frame
    # cost every page switch and constraint ~0.1 s of the browser's time (issue 13 item 8); the
    # kurtosis chart above carries the edge's direction evidence. Once opened it stays open.
    box = st.expander("Layer votes and distance per layer", key="open_layer_charts", on_change="rerun")
    if box.open:
        with box:
            left, right = st.columns(2)
            left.plotly_chart(evidence_figure("votes", ctx.key, e.parent, e.child, ctx.rec, e),
                              key=f"votes_{ctx.key}")
            right.plotly_chart(evidence_figure("distance", ctx.key, e.parent, e.child, ctx.rec, e),
                               key=f"dist_{ctx.key}")
    rows = alternative_rows(ctx.rec, e)
    # The ranked table's component (already loaded on the Tree page), not clickable: neither a data grid (~0.1 s
    # of the browser's time to mount under load) nor st.table, which renders every cell as markdown (28 here).
    table(["rank", "parent", "cost", "distance", "chosen"],
          [[i + 1, r["parent"], r["cost"], r["distance"], r["chosen"]] for i, r in enumerate(rows)],
          key=f"alternatives_{ctx.key}", data_key=f"{ctx.key}:{e.parent}:{e.child}", height=400,
          digits=(0, None, 4, 4, None),
          caption=("Ranked alternative parents", f" for {e.child} (lower cost is better)"))


@st.cache_resource(show_spinner=False, max_entries=768)
def evidence_figure(kind: str, key: str, parent: str, child: str, _rec: Recovery, _edge: Edge) -> go.Figure:
    """One of an edge's evidence figures (``"kurtosis"``, ``"votes"``, ``"distance"``), built once per
    recovery and edge (a click back to an edge, a page switch or a constraint undone reuses it).
    ``cache_resource``: ``st.plotly_chart`` only reads the figure, and unpickling a copy (as ``cache_data``
    would) re-validates every trace."""
    from explorer_ui import plots

    make = {"kurtosis": plots.kurtosis_layers, "votes": plots.layer_votes, "distance": plots.layer_distance}[kind]
    return make(_rec, _edge)


def constraint_controls(ctx: Loaded, e: Edge) -> None:
    """Flip / force / forbid / fix a root, then re-solve and report what changed.

    Every control stores its constraints in a callback (``on_click``), before the page runs: the run that
    follows re-solves and draws the result. Storing them in the page body and calling ``st.rerun()``
    ran the whole page twice per click (twice the elements for the browser to render: ~0.3-0.6 s more
    under load, ``benchmarks/RESULTS.md``).
    """
    cons = ctx.constraints
    before = frozenset((x.parent, x.child) for x in ctx.rec.edges)
    apply = partial(_constrain, ctx.base_key, cons, before)
    # Rows as horizontal containers, not columns: one block per row instead of one per cell (fewer
    # elements for the browser to mount on every page switch and constraint).
    c = st.container(horizontal=True)
    c.button("Flip this edge", key="flip", on_click=apply, args=(cons.flipped(e.parent, e.child),
                                                                 (e.child, e.parent)))
    c.button("Forbid this edge", key="forbid", on_click=apply,
             args=(cons.forbidding(e.parent, e.child),))
    c.button(f"Make {md(e.child)} a root", key="root", on_click=apply,
             args=(cons.with_root(e.child),))
    c.button("Clear all constraints", key="clear", disabled=cons == Constraints(), on_click=apply,
             args=(Constraints(),))
    # The ranked alternatives, one click each (the form below needed the parent picked among every model).
    alts = [a.parent for a in e.alternatives if a.parent and a.parent != e.parent][:3]
    if alts:
        ranks = alternative_ranks(ctx.rec, e)
        u = st.container(horizontal=True, vertical_alignment="center")
        u.markdown("Use another parent:")
        for i, p in enumerate(alts):
            u.button(f"{md(p)} (rank {ranks.get(p)})", key=f"use_parent_{i}", on_click=apply,
                     args=(cons.with_parent(p, e.child), (p, e.child)),
                     help=f"Move {e.child} (with its subtree) under {p} and re-solve the rest.")
    with st.form("force"):
        ids = ctx.rec.model_ids
        fc = st.container(horizontal=True)
        pkey, ckey = f"fp_{label(e)}", f"fc_{label(e)}"
        parent = fc.selectbox("Force parent", ids, index=ids.index(e.parent), key=pkey)
        child = fc.selectbox("of child", ids, index=ids.index(e.child), key=ckey)
        if st.form_submit_button("Force this edge", on_click=_force, args=(apply, cons, pkey, ckey)) \
                and parent == child:
            st.warning("A model cannot be its own parent.")


def alternative_rows(rec: Recovery, e: Edge) -> list[dict[str, Any]]:
    """The child's candidate parents, cheapest first, the chosen one marked (and added if the engine did not
    rank it): the Edge page's table, and the ranks its buttons and notes quote."""
    rows: list[dict[str, Any]] = [
        {"parent": a.parent or "(no parent: a root)", "cost": _num(a.cost, 4), "distance": _num(a.distance, 4),
         "chosen": "✓" if a.parent == e.parent else ""} for a in e.alternatives]
    if not any(r["chosen"] for r in rows):
        rows.append({"parent": e.parent, "cost": _num(own_cost(rec, e), 4), "distance": _num(e.distance, 4),
                     "chosen": "✓"})
    rows.sort(key=lambda r: (r["cost"] is None, r["cost"] if r["cost"] is not None else 0.0))
    return rows


def alternative_ranks(rec: Recovery, e: Edge) -> dict[str, int]:
    """Each candidate parent's rank (1: cheapest) in :func:`alternative_rows`."""
    return {r["parent"]: i + 1 for i, r in enumerate(alternative_rows(rec, e))}


def truth_parent_note(ctx: Loaded, e: Edge, status: str) -> str:
    """For an edge the truth file calls wrong: which parent the truth gives the child (and its rank among
    the alternatives), so the fix is one click away ("wrong (not in the truth)" said nothing of it)."""
    if status != EdgeStatus.WRONG or not ctx.truth:
        return ""
    parents = [p for p, c in ctx.truth if c == e.child]
    if not parents:
        return f" The truth has {md(e.child)} as a root."
    ranked = alternative_ranks(ctx.rec, e)
    ranks = {p: ranked.get(p) for p in parents}
    return " The truth's parent of " + md(e.child) + ": " + ", ".join(
        md(p) + (f" (rank {ranks[p]} of the ranked parents)" if ranks[p] else " (not among the ranked parents)")
        for p in parents) + "."


def _constrain(base_key: str, old: Constraints, before: frozenset[tuple[str, str]], new: Constraints,
               focus: tuple[str, str] | None = None) -> None:
    """A constraint control's callback: store ``new`` (``old`` kept to undo), the edges before, and
    select ``focus``; the page run that follows re-solves."""
    state.set_constraints(base_key, old, new)
    state.remember_edges_before(base_key, set(before))
    if focus is not None:
        state.select_edge(focus)


def _force(apply: partial, cons: Constraints, pkey: str, ckey: str) -> None:
    """The force form's callback: the chosen parent of the chosen child (a model is never its own)."""
    parent, child = st.session_state.get(pkey), st.session_state.get(ckey)
    if parent is None or child is None or parent == child:
        return  # the page says why
    apply(cons.with_parent(parent, child), (parent, child))


def what_changed(ctx: Loaded) -> None:
    """Edges added and removed by the last re-solve."""
    before = state.edges_before(ctx.base_key)
    if before is None:
        return
    after = {(x.parent, x.child) for x in ctx.rec.edges}
    added, removed = sorted(after - before), sorted(before - after)
    if not added and not removed:
        st.info("Re-solved: the tree did not change.")
    else:
        st.success("Re-solved. Added: " + (", ".join(md(label(x)) for x in added) or "none")
                   + ". Removed: " + (", ".join(md(label(x)) for x in removed) or "none") + ".")
    cons = ctx.constraints
    if cons != Constraints():
        st.caption(md(constraints_text(cons)))


def constraints_text(cons: Constraints) -> str:
    """The user's constraints in words ("Your corrections: forced a → b; forbidden c → d; root e."): the caption
    showed Python lists ("forced ['a → b'], forbidden [], roots []")."""
    parts = [f"{what} {', '.join(items)}" for what, items in (
        ("forced", [label(x) for x in cons.forced]), ("forbidden", [label(x) for x in cons.forbidden]),
        ("made a root:", list(cons.roots))) if items]
    return "Your corrections: " + "; ".join(parts) + "."


def not_ready(why: NotReady) -> None:
    """Explain why there is no tree yet: a set waiting for "Recover", a preset missing weights, ..."""
    if why.why == "pending":
        ms = why.detail
        st.subheader(f"Models in {md(ms.label)}")
        try:
            from explorer_ui.engine import discover_set
            from explorer_ui.sources import fingerprint

            discovery_table(discover_set(ms.paths, ms.component, fingerprint(ms.paths)))
        except MotherError as e:
            st.error(md(e))
            return
        st.info("Check the list, adjust the settings if needed, then press **Recover the tree** in the sidebar.")
    elif why.why == "preset" and why.detail:
        preset_info(*why.detail)
    elif why.why == "empty":
        st.info(empty_message(why.detail))


def empty_message(source: str | None) -> str:
    """What to do when the source picked in the sidebar offers nothing (markdown). "Pick a model set in
    the sidebar" told someone who had just picked the Hugging Face cache nothing they could act on."""
    if source == "Hugging Face cache":
        import os

        from huggingface_hub import constants

        where = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
        return (f"The Hugging Face cache at {md(where)} holds no model with weights. This app downloads "
                "nothing: fetch models with `hf download <id>` (on a machine with network access, then copy "
                "the cache here), or start the app with `HF_HUB_CACHE` set to another cache. Meanwhile, "
                "*Demo sets* in the sidebar has trees ready to explore.")
    if source == "Local folder":
        from explorer_ui.sources import browse_roots

        roots = ", ".join(md(r) for r in browse_roots()) or "(none)"
        return (f"Type the path of a folder of models under {roots}, or pick one from the list in the sidebar. "
                "Other folders: start the app with `MOTHER_BROWSE_ROOTS` naming them.")
    if source == "Saved result":
        return ("No saved result to open: upload a `result.json` in the sidebar, or write one with "
                "`mother recover <folder> --out result.json` into a browsable folder.")
    return "Pick a model set in the sidebar."


def about_preset() -> None:
    """The open preset's details in an expander (home page)."""
    shown = state.preset_view()
    if shown:
        with st.expander("About this family"):
            preset_info(*shown)


def preset_info(preset, avail) -> None:
    """A paper preset: hub ids, known tree, what is in the local cache and what is missing."""
    import pandas as pd

    st.subheader(preset.title)
    st.markdown(f"Regime: **{preset.regime}**" + (f", component `{preset.component}`" if preset.component else "")
                + f". {preset.note}")
    st.markdown("**Known tree:** " + ", ".join(f"`{p}` → `{c}`" for p, c in preset.edges))
    st.dataframe(pd.DataFrame([{"hub id": h, "in local cache": "✓" if h in avail.found else "✗ missing",
                                "path": avail.found.get(h, "")} for h in preset.hub_ids]), hide_index=True)
    if avail.missing:
        st.warning(f"{len(avail.missing)} of {len(preset.hub_ids)} models are not in the local Hugging Face "
                   "cache, so this family cannot run here. On a machine with network access, run:")
        st.code("\n".join(f"hf download {h}" for h in avail.missing), language="bash")
        st.caption("`hf` comes with huggingface_hub ≥ 0.34 (`pip install -U huggingface_hub`); the models land "
                   "in the cache this app scans (HF_HUB_CACHE).")


def page(title: str, **kwargs) -> Loaded:
    """:func:`explorer_ui.sidebar.page`, and when there is no tree yet, say why and stop the page."""
    from explorer_ui.sidebar import page as set_up

    ctx = set_up(title, **kwargs)
    if isinstance(ctx, NotReady):
        not_ready(ctx)
        st.stop()
    return ctx
