"""Rendering blocks shared by pages (tables, the tree iframe, edge evidence, constraint controls).

pandas and plotly are imported where they are used: the home page (the cold-start path) draws its tree
before it needs them. Derived artefacts (HTML, tables) are ``st.cache_data``-cached on the recovery's ``key`` string (the
recovery itself is passed as an unhashed ``_rec``), so switching pages or edges never recomputes them.
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import streamlit as st

from mother_core.errors import MotherError
from mother_core.lineage import compare_declared
from mother_core.recovery.result import Constraints, Edge, Recovery

from explorer_ui import graph, static
from explorer_ui.sidebar import Loaded, set_constraints
from explorer_ui.sources import human_bytes

if TYPE_CHECKING:
    import pandas as pd

STATUS_ICON = {"correct": "✓", "agree": "✓", "flipped": "⇄", "wrong": "✗", "conflict": "✗",
               "missing": "–", "undocumented": "?", "external": "↗"}


def _st_key(statuses: dict) -> tuple:
    return tuple(sorted(statuses.items()))


def label(e: Edge | tuple[str, str]) -> str:
    p, c = (e.parent, e.child) if hasattr(e, "child") else e  # duck-typed: survives module reloads
    return f"{p} → {c}"


def _num(x: float, nd: int = 3) -> float | None:
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
    """A sentence for an edge kept although another parent is cheaper pairwise ("" otherwise)."""
    alt, gap = best_alternative(e, own)
    if gap is None or gap >= 0:
        return ""
    why = ("you set this one" if e.constrained else
           "the whole tree fits the measured distances better with this one (refinement by additivity)")
    return f" `{alt}` is closer pairwise (extra cost {gap:.3g}), but {why}."


@st.cache_data(show_spinner=False, max_entries=64)
def edge_table(key: str, statuses: tuple, _rec: Recovery) -> pd.DataFrame:
    """All edges, least confident first, with their best alternative parent."""
    import pandas as pd

    st_map = dict(statuses)
    rows = []
    for e in sorted(_rec.edges, key=lambda e: (_num(e.confidence) is None, e.confidence)):
        alt, gap = best_alternative(e, own_cost(_rec, e))
        s = st_map.get((e.parent, e.child), "")
        rows.append({"edge": label(e), "confidence": _num(e.confidence, 2),
                     "placement": _num(e.placement_confidence, 2), "direction": _num(e.direction_confidence, 2),
                     "distance": _num(e.distance, 4), "status": f"{STATUS_ICON.get(s, '')} {s}".strip(),
                     "best alternative parent": alt, "extra cost": gap, "set by you": e.constrained})
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False, max_entries=64)
def tree_html(key: str, statuses: tuple, reference: str, height: int, font_size: int, aspect: float,
              served_at: str | None, _rec: Recovery) -> str:
    return graph.tree_html(_rec, statuses=dict(statuses), reference=reference, height=height,
                           font_size=font_size, aspect=aspect, served_at=served_at)


def tree(ctx: Loaded, *, height: int = 560, font_size: int = 15, highlight: str | None = None,
         aspect: float = 1.8, inline_library: bool = False) -> None:
    """The interactive tree (pyvis in an iframe); the selected edge / model are synced into it live.

    vis-network is linked from the app's static files (fetched once, kept by the browser, compiled off
    the main thread) unless ``inline_library``: the home page inlines it, because on a cold start its
    tree would otherwise wait for that request behind the server building the rest of the page, and
    then behind the browser evaluating the plot bundle.
    """
    sel = st.session_state.get("sel_edge")
    sel = sel if sel and ctx.rec.edge(*sel) else None
    st.html(graph.selection_marker(sel, highlight))
    served_at = None if inline_library else static.vis_url()
    html = tree_html(ctx.key, _st_key(ctx.statuses), ctx.reference, height, font_size, aspect, served_at, ctx.rec)
    st.iframe(html, height=height + 12)


def summary(ctx: Loaded) -> None:
    """Headline numbers, the accuracy against the reference, and skipped inputs."""
    rec = ctx.rec
    c = st.columns(5)
    c[0].metric("Models", len(rec.models))
    c[1].metric("Edges", len(rec.edges))
    c[2].metric("Trees", len(rec.trees) or len(rec.roots))
    confs = [e.confidence for e in rec.edges if not math.isnan(e.confidence)]
    c[3].metric("Mean confidence", f"{sum(confs) / len(confs):.2f}" if confs else "n/a")
    if ctx.truth and ctx.reference != "declared lineage":
        from mother_core.evaluate import evaluate

        ev = evaluate(rec, list(ctx.truth))
        c[4].metric(f"Edges correct vs {ctx.reference}", f"{ev.directed_accuracy:.0%}",
                    help=f"Undirected (right pair, any direction): {ev.undirected_accuracy:.0%}")
    elif ctx.reference == "declared lineage":
        rows = compare_declared(rec)
        c[4].metric("Agree with declared parents", f"{sum(r.status == 'agree' for r in rows)}/{len(rows)}")
    problems(rec)


def problems(rec: Recovery) -> None:
    """Inputs that were skipped (the rest was used)."""
    if rec.problems:
        with st.expander(f"{len(rec.problems)} input(s) skipped — the rest was used", expanded=True):
            for p in rec.problems:
                st.markdown(f"- `{p.get('path', '?')}`: {p.get('message', '')}")


def discovery_table(discovery) -> None:
    """Models found in a folder, before anything is read."""
    import pandas as pd

    rows = []
    for m in discovery.models:
        try:
            size = human_bytes(m.size_bytes)
        except OSError:
            size = "?"
        rows.append({"model": m.id, "format": m.format, "architecture": m.architecture or "unknown",
                     "size": size, "declared parent": m.declared_parent or "", "path": m.path})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for p in discovery.problems:
        st.warning(f"Skipped `{p.path}`: {p.message}")


def _on_pick(key: str, edges: list[tuple[str, str]]) -> None:
    lab = st.session_state.get(key)
    st.session_state["sel_edge"] = next((e for e in edges if label(e) == lab), None)


def _on_table(key: str, order: list[tuple[str, str]]) -> None:
    rows = st.session_state[key].selection.rows
    if rows:
        st.session_state["sel_edge"] = order[rows[0]]


def edge_picker(ctx: Loaded, *, table: bool = True, height: int = 420) -> Edge | None:
    """A selectbox (and optionally the ranked table) choosing the edge; both stay in sync."""
    rec = ctx.rec
    if not rec.edges:
        st.info("No edges: every model was recovered as its own root.")
        return None
    df = edge_table(ctx.key, _st_key(ctx.statuses), rec)
    order = [tuple(x.split(" → ", 1)) for x in df["edge"]]
    sel = st.session_state.get("sel_edge")
    if sel not in order:
        sel = order[0]
        st.session_state["sel_edge"] = sel
    # The selectbox's key follows the selection, so a selection made elsewhere (the table, a flip)
    # starts a fresh widget at the right index instead of fighting the browser's copy of the value.
    pkey = f"edge_pick::{label(sel)}"
    st.selectbox("Edge", [label(e) for e in order], index=order.index(sel), key=pkey, on_change=_on_pick,
                 args=(pkey, order), help="Least confident first. Selecting one highlights it in the tree.")
    if table:
        tkey = f"edge_table_{ctx.key}"
        st.dataframe(df, hide_index=True, height=height, key=tkey, on_select=partial(_on_table, tkey, order),
                     selection_mode="single-row", column_order=["edge", "confidence", "status",
                                                                "best alternative parent", "distance"])
    return rec.edge(*sel)


def least_confident(ctx: Loaded, rows: int = 3) -> None:
    """The few edges most worth a second look, with their best alternative parent (the home page's
    pointer into the Ambiguous and Edge pages), beside how confident the recovery is overall."""
    if not ctx.rec.edges:
        return
    from explorer_ui import plots

    df = edge_table(ctx.key, _st_key(ctx.statuses), ctx.rec).head(rows)
    left, right = st.columns([3, 2])
    left.markdown("**Least confident edges**")
    left.dataframe(df, hide_index=True, column_order=["edge", "confidence", "status", "best alternative parent"])
    right.plotly_chart(plots.edge_confidence(ctx.rec), key=f"conf_{ctx.key}")


def edge_evidence(ctx: Loaded, e: Edge, *, full: bool = True) -> None:
    """Why the edge is there: confidence parts, per-layer kurtosis, votes, distances, alternatives."""
    import pandas as pd

    from explorer_ui import plots

    s = ctx.statuses.get((e.parent, e.child))
    c = st.columns(4)
    c[0].metric("Confidence", f"{e.confidence:.2f}")
    c[1].metric("Placement", f"{e.placement_confidence:.2f}", help="Is the child attached to the right model?")
    c[2].metric("Direction", f"{e.direction_confidence:.2f}", help="Is the parent really the parent?")
    c[3].metric("Distance", f"{e.distance:.4g}")
    note = f"Kurtosis {e.kurtosis_parent:.4g} (parent) → {e.kurtosis_child:.4g} (child); layers voting " \
           f"for this direction: {e.layers_voting_forward}, against: {e.layers_voting_backward}."
    if s:
        note += f" Versus {ctx.reference}: **{s}** ({graph.STATUS_TEXT.get(s, '')})."
    if e.constrained:
        note += " This edge was set by a constraint."
    note += contested_note(e, own_cost(ctx.rec, e))
    st.markdown(note)
    st.plotly_chart(plots.kurtosis_layers(ctx.rec, e), key=f"ku_{ctx.key}")
    if not full:
        return
    left, right = st.columns(2)
    left.plotly_chart(plots.layer_votes(ctx.rec, e), key=f"votes_{ctx.key}")
    right.plotly_chart(plots.layer_distance(ctx.rec, e), key=f"dist_{ctx.key}")
    st.markdown("**Ranked alternative parents** for " + f"`{e.child}` (lower cost is better)")
    rows = [{"parent": a.parent or "(no parent: a root)", "cost": _num(a.cost, 4),
             "distance": _num(a.distance, 4), "chosen": "✓" if a.parent == e.parent else ""}
            for a in e.alternatives]
    if not any(r["chosen"] for r in rows):
        rows.append({"parent": e.parent, "cost": _num(own_cost(ctx.rec, e), 4), "distance": _num(e.distance, 4),
                     "chosen": "✓"})
    rows.sort(key=lambda r: (r["cost"] is None, r["cost"] if r["cost"] is not None else 0.0))
    st.dataframe(pd.DataFrame([{"rank": i + 1, **r} for i, r in enumerate(rows)]), hide_index=True)


def constraint_controls(ctx: Loaded, e: Edge) -> None:
    """Flip / force / forbid / fix a root, then re-solve and report what changed."""
    cons = ctx.constraints
    before = {(x.parent, x.child) for x in ctx.rec.edges}
    c = st.columns(4)
    new = None
    focus = None
    if c[0].button("Flip this edge", key="flip"):
        new, focus = cons.flipped(e.parent, e.child), (e.child, e.parent)
    if c[1].button("Forbid this edge", key="forbid"):
        new = Constraints(cons.forced, tuple(cons.forbidden) + ((e.parent, e.child),), cons.roots)
    if c[2].button(f"Make {e.child} a root", key="root"):
        new = Constraints(cons.forced, cons.forbidden, tuple(cons.roots) + (e.child,))
    if c[3].button("Clear all constraints", key="clear", disabled=cons == Constraints()):
        new = Constraints()
    with st.form("force"):
        ids = ctx.rec.model_ids
        fc = st.columns(2)
        parent = fc[0].selectbox("Force parent", ids, index=ids.index(e.parent), key=f"fp_{label(e)}")
        child = fc[1].selectbox("of child", ids, index=ids.index(e.child), key=f"fc_{label(e)}")
        if st.form_submit_button("Force this edge"):
            if parent == child:
                st.warning("A model cannot be its own parent.")
            else:
                new = Constraints(tuple(x for x in cons.forced if x[1] != child) + ((parent, child),),
                                  cons.forbidden, tuple(r for r in cons.roots if r != child))
                focus = (parent, child)
    if new is not None:
        set_constraints(ctx, new)
        st.session_state["_before_edges"] = (ctx.base_key, before)
        if focus is not None:
            st.session_state["sel_edge"] = focus
        st.rerun()


def what_changed(ctx: Loaded) -> None:
    """Edges added and removed by the last re-solve."""
    base_key, before = st.session_state.get("_before_edges") or (None, None)
    if before is None or base_key != ctx.base_key:
        return
    after = {(x.parent, x.child) for x in ctx.rec.edges}
    added, removed = sorted(after - before), sorted(before - after)
    if not added and not removed:
        st.info("Re-solved: the tree did not change.")
    else:
        st.success("Re-solved. Added: " + (", ".join(label(x) for x in added) or "none")
                   + ". Removed: " + (", ".join(label(x) for x in removed) or "none") + ".")
    cons = ctx.constraints
    if cons != Constraints():
        st.caption(f"Active constraints: forced {[label(x) for x in cons.forced]}, forbidden "
                   f"{[label(x) for x in cons.forbidden]}, roots {list(cons.roots)}")


def not_ready() -> None:
    """Explain why there is no tree yet: a set waiting for "Recover", a preset missing weights, ..."""
    why = st.session_state.get("_why_none")
    if why == "pending":
        ms = st.session_state.get("_pending")
        st.subheader(f"Models in {ms.label}")
        try:
            from explorer_ui.engine import discover_set
            from explorer_ui.sources import fingerprint

            discovery_table(discover_set(ms.paths, ms.component, fingerprint(ms.paths)))
        except MotherError as e:
            st.error(str(e))
            return
        st.info("Check the list, adjust the settings if needed, then press **Recover the tree** in the sidebar.")
    elif why == "preset":
        preset, avail = st.session_state["_preset_view"]
        preset_info(preset, avail)
    elif why == "empty":
        st.info("Pick a model set in the sidebar.")


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
        st.code("\n".join(f"huggingface-cli download {h}" for h in avail.missing), language="bash")


def page(title: str, **kwargs) -> Loaded:
    """:func:`explorer_ui.sidebar.page`, and when there is no tree yet, say why and stop the page."""
    from explorer_ui.sidebar import page as set_up

    ctx = set_up(title, **kwargs)
    if ctx is None:
        not_ready()
        st.stop()
    return ctx
