"""The tree as a slide: PNG, PDF or SVG with its legend, drawn by matplotlib (no browser, no network).

The slide shows what the screen shows: the same :class:`~explorer_ui.graph.GraphData` (folded
subtrees, positions, colours, dash patterns, legend rows), so a 1,000-model set gives a readable 16:9
slide instead of an 18,000-pixel strip. matplotlib renders all three formats itself; plotly's kaleido
would need a Chrome binary at export time.
"""

from __future__ import annotations

import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.lines import Line2D
from matplotlib import patheffects
from matplotlib.patches import FancyBboxPatch, Patch

from explorer_ui.graph import (DARK_BG, DARK_DASH, DARK_INK, DARK_SWATCH_FILL, LIGHT_INK, LONE_EDGE, LONE_FILL,
                               GraphData, label_cell, label_font, lone_title)

FORMATS = {"png": "image/png", "pdf": "application/pdf", "svg": "image/svg+xml"}
SLIDE_INCHES = (13.333, 7.5)  # a 16:9 slide (PowerPoint/Keynote default)
# The drawing's area in screen pixels of the app's canvas at zoom 1 (labels of 15 px there are 9 pt here, 1/8
# inch): the axes' 13.1 x 5.9 inches. Used to choose the arrangement the slide fits (graph.arranged).
CANVAS_PX = (1568.0, 711.0)


def _dashes(pattern: Any, scale: float = 1.0) -> Any:
    """A vis dash pattern (canvas px) as a matplotlib line style; matplotlib multiplies it by the line's width,
    ``scale`` undoes that (an edge's pattern is already sized for its width: graph.vis_dashes)."""
    return (0, tuple(max(0.5, float(v) * scale) for v in pattern)) if isinstance(pattern, list) and pattern \
        else "solid"


def _color(c: Any) -> str:
    if isinstance(c, dict):
        c = c.get("color") or c.get("background") or "#444444"
    return str(c)[:7]


def tree_figure(data: GraphData, legend: list[tuple[str, str, str]], title: str = "", *, dark: bool = False,
                font_pt: float = 9.0) -> plt.Figure:
    """A 16:9 figure of the drawing ``data`` with ``legend`` rows (:func:`explorer_ui.graph.legend_items`).

    The drawing fills the slide and its labels take the size its columns leave them (at most ``font_pt``;
    smaller still, measured, until no two boxes overlap), so boxes keep the gaps the layout gave them at any
    size of set. Each family of two or more shown models sits on a tinted box named by
    its root and size (``data.families``), as on the app's graph."""
    fg, bg = (DARK_INK, DARK_BG) if dark else (LIGHT_INK, "white")
    fig, ax = plt.subplots(figsize=SLIDE_INCHES, facecolor=bg)
    ax.set_facecolor(bg)
    ax.set_axis_off()
    handles = _legend_handles(legend, dark)
    bottom = _fitted_legend(fig, handles, font_pt + 1, fg) if handles else 0.08
    if title:
        fig.suptitle(title, fontsize=font_pt + 9, color=fg, x=0.02, ha="left", fontweight="bold", parse_math=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.92 if title else 0.98, bottom=bottom)
    # The lone models' band is laid out where the app's canvas has it (graph.lone_band): drawn here, not moved.
    lone = list(data.lone)
    pos = {n["id"]: (float(n["x"]), -float(n["y"])) for n in data.nodes}
    size = _fit_view(fig, ax, data, pos, font_pt, boxed=len(data.families) > 1 or bool(lone))
    texts = {}
    for n in data.nodes:
        x, y = pos[n["id"]]
        col = n.get("color") or {}
        # Names are data: a folder named "a$\frac{$" must be drawn as it is, not parsed as mathtext (which
        # raised a ValueError on the Export page).
        texts[n["id"]] = ax.text(
            x, y, str(n.get("label", n["id"])), ha="center", va="center", fontsize=size, color=LIGHT_INK,
            alpha=float(n.get("opacity", 1.0)), zorder=2, parse_math=False, linespacing=1.1,
            bbox={"boxstyle": "round,pad=0.3", "fc": _color(col.get("background", "#EEF4FB")),
                  "ec": _color(col.get("border", "#777777")), "lw": 0.6 * float(n.get("borderWidth", 1)),
                  # a folded subtree's box is dashed, as the legend says ("dashed box, ▸ +k = ...")
                  "ls": "--" if (n.get("shapeProperties") or {}).get("borderDashes") else "-",
                  "alpha": float(n.get("opacity", 1.0))})
    size = _apart(fig, list(texts.values()), size)
    font = label_font(data)
    k = min(1.0, size / font_pt)  # edges thin and arrows shrink with the labels they join
    for e in data.edges:
        a, b = pos.get(e["from"]), pos.get(e["to"])
        if a is None or b is None:
            continue
        color = _color(e.get("color"))
        alpha = float((e.get("color") or {}).get("opacity", 1.0)) if isinstance(e.get("color"), dict) else 1.0
        lw = (0.5 + 0.35 * float(e.get("width", 1.0))) * max(0.4, k)
        # Dashes as long (on the slide) as the app draws them at this zoom: the edges' own patterns (up to 20
        # canvas px a dash) taken as points and multiplied by the width left one dash per edge.
        ax.annotate("", xy=b, xytext=a, zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": color, "alpha": alpha, "shrinkA": 9 * k,
                                "shrinkB": 9 * k, "mutation_scale": 10 * max(0.5, k), "lw": lw,
                                "linestyle": _dashes(e.get("dashes"), size / font / lw),
                                "connectionstyle": "arc3,rad=0.25" if "smooth" in e else "arc3"})
    _draw_families(fig, ax, data, texts, size, fg, bg, dark)
    if lone:
        _draw_band(fig, ax, [texts[m] for m in lone], lone_title(len(lone)), size, fg, bg, dark)
    return fig


def _draw_band(fig: plt.Figure, ax: plt.Axes, texts: list[Any], title: str, size: float, fg: str, bg: str,
               dark: bool) -> None:
    """The lone models' grid on a neutral box (grey: no family colour) named ``title`` above its left corner,
    as a family's box is named."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    label = _named_box(fig, ax, [_box(t, renderer) for t in texts], size, title, fg, dark,
                       fill=LONE_EDGE if dark else LONE_FILL, edge=LONE_EDGE, edge_alpha=0.8)
    label.set_path_effects([patheffects.withStroke(linewidth=2, foreground=bg)])


def _legend_handles(legend: list[tuple[str, str, str]], dark: bool = False) -> list[Artist]:
    handles: list[Artist] = []
    for kind, what, text in legend:
        if kind == "line":
            handles.append(Line2D([], [], color=what, lw=3, label=text))
        elif kind == "dots":
            handles.append(Line2D([], [], color=what, lw=2, linestyle=":", label=text))
        elif kind == "dash":
            handles.append(Line2D([], [], color=DARK_DASH if dark else "#666666", lw=2,
                                  linestyle=_dashes(json.loads(what)), label=text))
        elif kind in ("box", "fold"):
            # On a dark slide a box swatch gets a model's light fill: the root's #222 border on it, as drawn.
            handles.append(Patch(fc=DARK_SWATCH_FILL if dark else "none", ec=what, lw=2,
                                 linestyle="--" if kind == "fold" else "-", label=text))
        else:
            handles.append(Line2D([], [], color="none", label=text))
    return handles


def _fit_view(fig: plt.Figure, ax: plt.Axes, data: GraphData, pos: dict[str, tuple[float, float]],
              font_pt: float, boxed: bool) -> float:
    """Zoom the axes to the whole drawing, centred, with a margin of half a label (and the family boxes'
    padding) on every side; returns the label size to start from (points): the app's label (``font`` canvas
    px, grown by ``label_growth``) at the horizontal zoom, at most ``font_pt``.

    The slide drew every label at ``font_pt`` whatever the drawing's width was squeezed into: on the
    279-model result (90 models shown, 1.8 times wider than the slide at 9 pt) folded two-line boxes covered
    their neighbours and the lone roots at the bottom right were drawn on top of each other. A label's room
    is its column (the layout gives each label its width); across, rows are 80 canvas px a generation for a
    box of ~35, so the height is stretched to fill the slide as before (one scale for both, as the app
    zooms, left a set of three tall trees a narrow strip of 5.7-pt labels) and :func:`_apart` measures."""
    if not pos:
        return font_pt
    font = label_font(data)
    cell = label_cell(data)
    lines = max(str(n.get("label", "")).count("\n") + 1 for n in data.nodes)
    # Margins in points, sized for the largest label: half a box (two lines for a folded one) and, when
    # ``boxed`` (family boxes or the lone models' band), their boxes' padding and the names above the top row.
    half = font_pt * (0.6 * lines + 0.5) + (0.9 * font_pt if boxed else 0.0)
    top, bottom = half + (1.5 * font_pt if boxed else 0.0), half
    side = 0.9 * font_pt if boxed else 0.0
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    box = ax.get_position()  # figure fraction
    fw, fh = fig.get_size_inches()
    wpt, hpt = box.width * fw * 72, box.height * fh * 72
    most = font_pt / font * 1.6  # points per canvas px: fit() zooms in no further than 1.6
    sx = min((wpt - 2 * side) / (max(xs) - min(xs) + cell), most)
    sy = min((hpt - top - bottom) / max(max(ys) - min(ys), 1.0), most)
    x0, x1 = min(xs) - cell / 2 - side / sx, max(xs) + cell / 2 + side / sx
    y0, y1 = min(ys) - bottom / sy, max(ys) + top / sy
    spare_x, spare_y = wpt / sx - (x1 - x0), hpt / sy - (y1 - y0)  # centred
    ax.set_xlim(x0 - spare_x / 2, x1 + spare_x / 2)
    ax.set_ylim(y0 - spare_y / 2, y1 + spare_y / 2)
    return min(font_pt, font * sx * max(1.0, float(data.label_growth)))


def _apart(fig: plt.Figure, texts: list[Any], size: float, floor: float = 3.0) -> float:
    """Shrink the labels ``texts`` (``size`` pt) until no two boxes overlap, measured as drawn (the layout's
    column comes from a character count, and a label's real width depends on its letters); the size used."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    while size > floor:
        boxes = [_box(t, renderer) for t in texts]
        order = sorted(range(len(boxes)), key=lambda i: boxes[i][0])
        clash = False
        for j, i in enumerate(order):  # sweep by left edge: O(n log n + overlaps)
            for k in order[j + 1:]:
                if boxes[k][0] >= boxes[i][2]:
                    break
                if boxes[k][1] < boxes[i][3] and boxes[i][1] < boxes[k][3]:
                    clash = True
                    break
            if clash:
                break
        if not clash:
            break
        size = max(floor, size * 0.9)
        for t in texts:
            t.set_fontsize(size)
    return size


def _box(t: Any, renderer: Any) -> tuple[float, float, float, float]:
    """A label's box (its text plus the 0.3 em pad and the border) in display pixels: x0, y0, x1, y1."""
    bb = t.get_window_extent(renderer)
    pad = (0.3 * t.get_fontsize() + 0.5) * t.figure.dpi / 72
    return bb.x0 - pad, bb.y0 - pad, bb.x1 + pad, bb.y1 + pad


def _draw_families(fig: plt.Figure, ax: plt.Axes, data: GraphData, texts: dict[str, Any], size: float, fg: str,
                   bg: str, dark: bool) -> None:
    """Each family of two or more shown models on a tinted rounded box, its name (root and size) above it,
    largest first and none drawn over another (graph_component's drawFamilies, on paper)."""
    if len(data.families) < 2:
        return
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    members: dict[Any, list[str]] = {}
    for n in data.nodes:
        members.setdefault(n.get("family"), []).append(n["id"])
    taken: list[tuple[float, float, float, float]] = []
    for f in data.families:
        boxes = [_box(texts[m], renderer) for m in members.get(f["id"], []) if m in texts]
        if not boxes:
            continue
        label = _named_box(fig, ax, boxes, size, str(f.get("label", "")), fg, dark,
                           fill=_color(f.get("color", "#EEEEEE")), edge=_color(f.get("edge", "#777777")),
                           edge_alpha=0.55)
        lb = label.get_window_extent(renderer)
        if any(lb.x0 < t[2] and t[0] < lb.x1 and lb.y0 < t[3] and t[1] < lb.y1 for t in taken):
            label.remove()  # another family's name is there: its box still says which models belong together
            continue
        taken.append((lb.x0, lb.y0, lb.x1, lb.y1))
        label.set_path_effects([patheffects.withStroke(linewidth=2, foreground=bg)])


def _named_box(fig: plt.Figure, ax: plt.Axes, boxes: list[tuple[float, float, float, float]], size: float,
               name: str, fg: str, dark: bool, *, fill: str, edge: str, edge_alpha: float) -> Any:
    """A tinted rounded box around the label ``boxes`` (display px, :func:`_box`) and their padding, outlined in
    ``edge``, with ``name`` (``size`` pt, bold) above its left corner: a family's box or the lone models' band.
    Returns the name's text, without its halo (a family's name that would cover another's is removed first)."""
    pad = 0.8 * size * fig.dpi / 72  # display px
    x0, y0 = min(b[0] for b in boxes) - pad, min(b[1] for b in boxes) - pad
    x1, y1 = max(b[2] for b in boxes) + pad, max(b[3] for b in boxes) + pad
    (dx0, dy0), (dx1, dy1) = ax.transData.inverted().transform([(x0, y0), (x1, y1)])
    ax.add_patch(FancyBboxPatch((dx0, dy0), dx1 - dx0, dy1 - dy0, boxstyle="round,pad=0", zorder=0,
                                fc=fill, alpha=0.16 if dark else 0.45, lw=0))
    ax.add_patch(FancyBboxPatch((dx0, dy0), dx1 - dx0, dy1 - dy0, boxstyle="round,pad=0", zorder=0,
                                fc="none", ec=edge, alpha=edge_alpha, lw=0.8))
    return ax.text(dx0, dy1, name, ha="left", va="bottom", fontsize=size, fontweight="bold", color=fg,
                   zorder=2.5, parse_math=False)


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
