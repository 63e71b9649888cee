"""Plotly figures of a recovery: per-layer evidence for an edge, matrices, kurtosis per model.

Every model id and layer name in a figure goes through :func:`explorer_ui.safe_text.chart`: plotly draws
its texts (titles, legends, hovers, axis ticks) with a small HTML subset, links included.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from mother_core.layout import tree_order
from explorer_ui.safe_text import chart
from mother_core.recovery.result import Edge, Recovery

PARENT, CHILD = "#0072B2", "#D55E00"
FORWARD, BACKWARD = "#009E73", "#CC79A7"


def _layer_names(rec: Recovery, n: int) -> list[str]:
    names = [chart(layer.name) for layer in rec.layers]  # a result file's layer names are data too
    return names if len(names) == n else [f"layer {i}" for i in range(n)]


def _layout(title: str, height: int = 320, *, legend: bool = False, fixed: bool = True) -> dict:
    """Title on top, the legend (if any) on its own line under it, fixed margins.

    No ``template``: ``st.plotly_chart`` styles the figure with the app's theme in the browser, and
    validating a named template deep-copies it on every figure (0.1-0.5 s per click under load). Fixed
    margins (``autoexpand`` off, room for the title, legend and axis titles): otherwise plotly.js lays
    the chart out, measures what sticks out and lays it out again (half of its drawing time per click),
    and a legend beside the title overlapped it in a narrow column. ``fixed=False`` for charts whose
    axes are labelled with model ids (the matrices): their margins grow with the ids.
    """
    top = 62 if legend else 38
    return dict(title=dict(text=title, x=0, xanchor="left", xref="paper", y=1 - 8 / height, yanchor="top"),
                height=height, margin=dict(l=58, r=10, t=top, b=48, autoexpand=not fixed),
                legend=dict(orientation="h", y=1, x=0, xanchor="left", yanchor="bottom"))


def _style(fig: go.Figure, title: str, height: int = 320, *, legend: bool = False, fixed: bool = True) -> go.Figure:
    fig.update_layout(**_layout(title, height, legend=legend, fixed=fixed))
    return fig


def _empty(title: str) -> go.Figure:
    """A titled figure without data (the result lacks what it would show), built without validation: a
    forced edge has no layer votes or distances, and validating the layout cost ~25 ms per chart."""
    return go.Figure(dict(data=[], layout=_layout(title)), _validate=False)


def _values(a: np.ndarray) -> list:
    """Plain floats for a figure built without validation (NaN as a gap, as plotly draws it)."""
    return [None if not math.isfinite(v) else v for v in a.tolist()]


def regime_of(rec: Recovery, model_id: str) -> str:
    """The regime of the tree holding ``model_id`` (``"specialization"`` if unknown)."""
    tree = next((m.tree for m in rec.models if m.id == model_id), None)
    for t in rec.trees:
        if t.id == tree and t.regime in ("specialization", "generalization"):
            return t.regime
    r = rec.settings.regime
    return r if r in ("specialization", "generalization") else "specialization"


def _edge_kurtosis(rec: Recovery, edge: Edge) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-layer kurtosis of the edge's parent and child and the layer names, or None when the result
    carries no per-layer kurtosis."""
    if rec.layer_kurtosis is None or not len(rec.layer_kurtosis):
        return None
    k = np.asarray(rec.layer_kurtosis, dtype=float)
    ids = rec.model_ids
    return k[ids.index(edge.parent)], k[ids.index(edge.child)], np.array(_layer_names(rec, k.shape[1]), dtype=object)


def kurtosis_layers(rec: Recovery, edge: Edge) -> go.Figure:
    """Per-layer excess kurtosis of the parent and the child.

    Drawn on every edge click, so it is built from plain lists without plotly's property validation
    (``_validate=False``; every value here is ours and of the right type): validating the traces and
    converting numpy arrays cost 0.15-0.3 s per click under load, against ~0.02 s.
    """
    found = _edge_kurtosis(rec, edge)
    if found is None:
        return _empty("Per-layer kurtosis (not in this result)")
    pk, ck, names = found
    # Layers both models have: a layer only one has (a classifier head of another shape, an adapter's own
    # tensors) has nothing to compare, and drawn alone it was a stray dot with a gap in each line.
    cols = np.flatnonzero(np.isfinite(pk) & np.isfinite(ck))
    alone = int((np.isfinite(pk) ^ np.isfinite(ck)).sum())
    layer_names = [str(n) for n in names[cols]]
    traces = [dict(type="scatter", x=list(range(cols.size)), y=_values(y[cols]), mode="lines+markers",
                   name=f"{role}: {chart(mid)}", line=dict(color=color), marker=dict(size=4), customdata=layer_names,
                   hovertemplate="%{customdata}<br>kurtosis %{y:.3g}<extra></extra>")
              for y, color, role, mid in ((pk, PARENT, "parent", edge.parent), (ck, CHILD, "child", edge.child))]
    layout = _layout(f"Kurtosis per layer: {chart(edge.parent)} → {chart(edge.child)}", legend=True)
    # Short enough for the panel beside the tree (~60 characters): a longer title ran off both sides.
    xtitle = (f"layer both have (hover for its name); {alone} only in one: not drawn" if alone else
              "layer (in model order; hover for its name)")
    layout.update(xaxis=dict(title=dict(text=xtitle)),
                  yaxis=dict(title=dict(text="excess kurtosis")))
    return go.Figure(dict(data=traces, layout=layout), _validate=False)


def _bars(title: str, x: list, y: list, colors: list | str, names: list, hover: str,
          yaxis: str | None = None) -> go.Figure:
    """A bar chart built from plain lists without plotly's property validation (as :func:`kurtosis_layers`:
    drawn on every visit of an edge's evidence, where validating cost 10-35 ms per chart under load)."""
    trace = dict(type="bar", x=x, y=y, marker=dict(color=colors), customdata=names, showlegend=False,
                 hovertemplate=hover)
    layout = _layout(title)
    if yaxis:
        layout.update(yaxis=dict(title=dict(text=yaxis)))
    return go.Figure(dict(data=[trace], layout=layout), _validate=False)


def layer_votes(rec: Recovery, edge: Edge) -> go.Figure:
    """Each voting layer's kurtosis change child - parent, coloured by the vote the engine counted
    (``Edge.layer_votes``: the same votes as the sentence above the chart, never recomputed here)."""
    found = _edge_kurtosis(rec, edge)
    votes = np.asarray(getattr(edge, "layer_votes", ()) or (), dtype=int)
    if found is None or not votes.size or votes.size != found[0].size:
        return _empty("Layer votes (not in this result: recover again to see them)")
    pk, ck, names = found
    cols = np.flatnonzero(votes != 0)
    diff = np.nan_to_num((ck - pk)[cols])
    forward, against = int((votes > 0).sum()), int((votes < 0).sum())
    return _bars(f"Layer votes: {forward} for this direction (green), {against} against", list(range(len(diff))),
                 diff.tolist(), [FORWARD if v > 0 else BACKWARD for v in votes[cols]],
                 [str(n) for n in names[cols]], "%{customdata}<br>child - parent %{y:.3g}<extra></extra>")


def layer_distance(rec: Recovery, edge: Edge) -> go.Figure:
    """Per-layer distance between parent and child."""
    d = np.asarray(edge.layer_distance, dtype=float)
    if not d.size:
        return _empty("Per-layer distance (not in this result)")
    cols = np.flatnonzero(np.isfinite(d))
    names = np.array(_layer_names(rec, d.size), dtype=object)[cols]
    return _bars("Distance per layer", list(range(cols.size)), d[cols].tolist(), PARENT, [str(n) for n in names],
                 "%{customdata}<br>distance %{y:.3g}<extra></extra>", yaxis="distance")


def edge_confidence(rec: Recovery) -> go.Figure:
    """How sure the recovery is of its edges: a histogram of edge confidence (tenths, 0 to 1)."""
    conf = [e.confidence for e in rec.edges if not math.isnan(e.confidence)]
    fig = go.Figure(go.Histogram(x=conf, xbins=dict(start=0.0, end=1.0, size=0.1), marker_color=PARENT,
                                 hovertemplate="confidence %{x}<br>%{y} edge(s)<extra></extra>"))
    fig.update_xaxes(title="edge confidence", range=[0, 1])
    fig.update_yaxes(title="edges")
    return _style(fig, f"Confidence of the {len(conf)} edges", height=260)


def distance_heatmap(rec: Recovery) -> go.Figure:
    """Pairwise distance matrix, rows and columns in tree order."""
    fig = go.Figure()
    if rec.distance_matrix is None:
        return _style(fig, "Distance matrix (not in this result)")
    ids = rec.model_ids
    order = tree_order(rec)
    idx = [ids.index(i) for i in order]
    d = np.asarray(rec.distance_matrix, dtype=float)[np.ix_(idx, idx)]
    labels = [chart(i) for i in order]
    fig.add_trace(go.Heatmap(z=d, x=labels, y=labels, colorscale="Viridis_r",
                             hovertemplate="%{y} ↔ %{x}<br>distance %{z:.3g}<extra></extra>"))
    # Categories, always: ids such as "1" or "2024-01-05" were read as numbers or dates (a numeric axis).
    fig.update_xaxes(type="category")
    fig.update_yaxes(autorange="reversed", type="category")
    return _style(fig, "Distance between models (ordered by tree)", height=heatmap_height(len(order)), fixed=False)


#: The heatmap's tallest drawing: one 18-px labelled row per model up to ~48 models; past that the rows
#: shrink (plotly then labels every few) and a cell's hover names its two models. 18 px a row made the
#: 279-model result's heatmap 5,142 px high: seven 720-px screens before the kurtosis chart and models.
HEATMAP_MAX_HEIGHT = 1000


def heatmap_height(n: int) -> int:
    """The distance heatmap's height in px for ``n`` models."""
    return min(HEATMAP_MAX_HEIGHT, max(420, 18 * n + 120))


def distance_note(rec: Recovery) -> str:
    """What the heatmap's blank cells are, when it has any ("" otherwise): pairs with no layer in common
    (different architectures) have no distance; the page showed white squares without a word."""
    if rec.distance_matrix is None:
        return ""
    d = np.asarray(rec.distance_matrix, dtype=float)
    off = ~np.eye(len(d), dtype=bool)
    blank = int((~np.isfinite(d[off])).sum()) // 2
    if not blank:
        return ""
    return (f"Blank cells: {blank} pair(s) of models share no layer (different architectures or shapes), so "
            "there is no distance between them. Yellow is close, dark is far.")


def kurtosis_models(rec: Recovery) -> go.Figure:
    """Total kurtosis per model, in tree order, coloured by tree."""
    order = tree_order(rec)
    by_id = {m.id: m for m in rec.models}
    ku = [by_id[i].kurtosis for i in order]
    fig = go.Figure(go.Bar(x=[chart(i) for i in order], y=[None if math.isnan(v) else v for v in ku],
                           marker_color=[f"hsl({(by_id[i].tree * 67) % 360},55%,55%)" for i in order],
                           hovertemplate="%{x}<br>kurtosis %{y:.4g}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(title="sum of per-layer excess kurtosis")
    return _style(fig, "Kurtosis per model (tree order)", height=380, fixed=False)
