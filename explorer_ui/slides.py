"""The tree as a slide: PNG, PDF or SVG with its legend, drawn by matplotlib (no browser, no network).

The slide shows what the screen shows: the same :class:`~explorer_ui.graph.GraphData` (folded
subtrees, positions, colours, dash patterns, legend rows), so a 1,000-model set gives a readable 16:9
slide instead of an 18,000-pixel strip. matplotlib renders all three formats itself; plotly's kaleido
would need a Chrome binary at export time.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from explorer_ui.graph import GraphData

FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}
SLIDE_INCHES = (13.333, 7.5)  # a 16:9 slide (PowerPoint/Keynote default)
# The drawing's area in screen pixels of the app's canvas at zoom 1 (labels of 15 px there are 9 pt here, 1/8
# inch): the axes' 13.1 x 5.9 inches. Used to choose the arrangement the slide fits (graph.arranged).
CANVAS_PX = (1568.0, 711.0)


def _dashes(pattern: Any) -> Any:
    return (0, tuple(pattern)) if isinstance(pattern, list) and pattern else "solid"


def _color(c: Any) -> str:
    if isinstance(c, dict):
        c = c.get("color") or c.get("background") or "#444444"
    return str(c)[:7]


def tree_figure(data: GraphData, legend: list[tuple[str, str, str]], title: str = "", *, dark: bool = False,
                font_pt: float = 9.0) -> plt.Figure:
    """A 16:9 figure of the drawing ``data`` with ``legend`` rows (:func:`explorer_ui.graph.legend_items`)."""
    fg, bg = ("#F2F2F2", "#14161A") if dark else ("#1A1A1A", "white")
    fig, ax = plt.subplots(figsize=SLIDE_INCHES, facecolor=bg)
    ax.set_facecolor(bg)
    ax.set_axis_off()
    pos = {n["id"]: (float(n["x"]), -float(n["y"])) for n in data.nodes}
    for e in data.edges:
        a, b = pos.get(e["from"]), pos.get(e["to"])
        if a is None or b is None:
            continue
        color = _color(e.get("color"))
        alpha = float((e.get("color") or {}).get("opacity", 1.0)) if isinstance(e.get("color"), dict) else 1.0
        ax.annotate("", xy=b, xytext=a, zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": color, "alpha": alpha, "shrinkA": 9, "shrinkB": 9,
                                "lw": 0.5 + 0.35 * float(e.get("width", 1.0)),
                                "linestyle": _dashes(e.get("dashes")),
                                "connectionstyle": "arc3,rad=0.25" if "smooth" in e else "arc3"})
    for n in data.nodes:
        x, y = pos[n["id"]]
        col = n.get("color") or {}
        # Names are data: a folder named "a$\frac{$" must be drawn as it is, not parsed as mathtext (which
        # raised a ValueError on the Export page).
        ax.text(x, y, str(n.get("label", n["id"])), ha="center", va="center", fontsize=font_pt, color="#1A1A1A",
                alpha=float(n.get("opacity", 1.0)), zorder=2, parse_math=False,
                bbox={"boxstyle": "round,pad=0.3", "fc": _color(col.get("background", "#EEF4FB")),
                      "ec": _color(col.get("border", "#777777")), "lw": 0.6 * float(n.get("borderWidth", 1)),
                      "alpha": float(n.get("opacity", 1.0))})
    if pos:
        xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
        padx, pady = max(60.0, (max(xs) - min(xs)) * 0.04), max(40.0, (max(ys) - min(ys)) * 0.06)
        ax.set_xlim(min(xs) - padx, max(xs) + padx)
        ax.set_ylim(min(ys) - pady, max(ys) + pady)
    handles: list[Artist] = []
    for kind, what, text in legend:
        if kind == "line":
            handles.append(Line2D([], [], color=what, lw=3, label=text))
        elif kind == "dots":
            handles.append(Line2D([], [], color=what, lw=2, linestyle=":", label=text))
        elif kind == "dash":
            import json

            handles.append(Line2D([], [], color="#666666", lw=2, linestyle=_dashes(json.loads(what)), label=text))
        elif kind in ("box", "fold"):
            handles.append(Patch(fc="none", ec=what, lw=2, linestyle="--" if kind == "fold" else "-", label=text))
        else:
            handles.append(Line2D([], [], color="none", label=text))
    bottom = _fitted_legend(fig, handles, font_pt + 1, fg) if handles else 0.08
    if title:
        fig.suptitle(title, fontsize=font_pt + 9, color=fg, x=0.02, ha="left", fontweight="bold", parse_math=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92 if title else 0.98, bottom=bottom)
    return fig


def _fitted_legend(fig: plt.Figure, handles: list[Artist], font_pt: float, fg: str) -> float:
    """The legend under the tree, in 4 columns, in a smaller font (then fewer columns) until it fits the
    slide's width; returns the axes' bottom (figure fraction) that clears it.

    A set whose legend held the status rows and the fold row ("dashed box, ▸ +k = k models folded below
    (double-click opens ...)") drew four columns wider than the slide: the first and last were cut at both
    edges of the exported PNG (the 279-model result's Export preview, benchmarks/RESULTS.md)."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ncol, size in [(4, font_pt), (4, font_pt - 1), (4, font_pt - 2), (3, font_pt - 2), (2, font_pt - 2)]:
        for old in list(fig.legends):  # the previous try's (remove() edits the list)
            old.remove()
        leg = fig.legend(handles=handles, loc="lower center", ncol=min(ncol, len(handles)), frameon=False,
                         fontsize=size, labelcolor=fg)
        leg.set_zorder(3)
        for label in leg.get_texts():  # "family 0 (root <a model id>)": data again
            label.set_parse_math(False)
        box = leg.get_window_extent(renderer).transformed(fig.transFigure.inverted())
        if box.x0 >= 0.005 and box.x1 <= 0.995:
            break
    return max(0.08, box.y1 + 0.02)


def render(fig: plt.Figure, fmt: str, dpi: int = 150) -> bytes:
    """The figure as ``png`` (1,999 x 1,125 px at 150 dpi), ``pdf`` or ``svg`` bytes; the figure is closed."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, not {fmt!r}")
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, facecolor=fig.get_facecolor())
    finally:
        plt.close(fig)
    return buf.getvalue()
