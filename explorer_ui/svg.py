"""A static SVG of the recovered tree for slides (no browser, no kaleido: text generated from the layout)."""

from __future__ import annotations

import html
import math

from mother_core.layout import tree_layout, wrap_width
from mother_core.recovery.result import Recovery

from explorer_ui.graph import STATUS_COLORS, confidence_color, edge_width

NODE_W, NODE_H, X_STEP, Y_STEP, PAD = 170.0, 46.0, 190.0, 120.0, 30.0


def tree_svg(rec: Recovery, statuses: dict[tuple[str, str], str] | None = None, title: str = "") -> str:
    """The forest as a standalone SVG document (roots on top, edges coloured by status or confidence).

    Parameters
    ----------
    rec : Recovery
        What to draw.
    statuses : dict, optional
        (parent, child) -> status, as for :func:`explorer_ui.graph.tree_html`; ``"missing"`` edges are
        drawn dashed.
    title : str
        A caption on top.
    """
    statuses = statuses or {}
    pairs = [(e.parent, e.child) for e in rec.edges]
    pos = tree_layout(rec, max_width=wrap_width(rec.model_ids, pairs, 16 / 9, X_STEP, Y_STEP))
    if not pos:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    top = PAD + (30 if title else 0)
    width = (max(xs) - min(xs)) * X_STEP + NODE_W + 2 * PAD
    height = (max(ys) - min(ys)) * Y_STEP + NODE_H + top + PAD

    def at(mid: str) -> tuple[float, float]:
        x, y = pos[mid]
        return PAD + (x - min(xs)) * X_STEP + NODE_W / 2, top + (y - min(ys)) * Y_STEP + NODE_H / 2

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>']
    if title:
        out.append(f'<text x="{PAD}" y="{PAD + 8}" font-size="20" font-weight="bold">{html.escape(title)}</text>')
    drawn = set()
    lines = [(e.parent, e.child, statuses.get((e.parent, e.child)), e.confidence, False) for e in rec.edges]
    lines += [(p, c, s, math.nan, True) for (p, c), s in statuses.items()
              if s == "missing" and p in pos and c in pos and (p, c) not in {(e.parent, e.child) for e in rec.edges}]
    palette = _colors(lines)
    out.append('<defs>' + "".join(
        f'<marker id="a{i}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        f'<path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
        for i, c in enumerate(palette)) + '</defs>')
    for p, c, s, conf, missing in lines:
        if p not in pos or c not in pos or (p, c) in drawn:
            continue
        drawn.add((p, c))
        (x1, y1), (x2, y2) = at(p), at(c)
        color = STATUS_COLORS.get(s, "#444") if s else confidence_color(conf)
        width = 1.5 if missing else edge_width(conf) * 0.6
        dash = ' stroke-dasharray="6,4"' if missing else ""
        out.append(f'<line x1="{x1:.1f}" y1="{y1 + NODE_H / 2:.1f}" x2="{x2:.1f}" y2="{y2 - NODE_H / 2:.1f}" '
                   f'stroke="{color}" stroke-width="{width:.1f}"{dash} marker-end="url(#a{palette.index(color)})"/>')
    roots = set(rec.roots)
    for m in rec.models:
        x, y = at(m.id)
        bw = 2.5 if m.id in roots else 1
        ku = "n/a" if math.isnan(m.kurtosis) else f"{m.kurtosis:.3g}"
        out.append(f'<rect x="{x - NODE_W / 2:.1f}" y="{y - NODE_H / 2:.1f}" width="{NODE_W}" height="{NODE_H}" '
                   f'rx="6" fill="#EEF4FB" stroke="#222" stroke-width="{bw}"/>')
        name = m.id if len(m.id) <= 24 else "…" + m.id[-23:]
        out.append(f'<text x="{x:.1f}" y="{y - 3:.1f}" font-size="13" text-anchor="middle">{html.escape(name)}</text>')
        out.append(f'<text x="{x:.1f}" y="{y + 14:.1f}" font-size="11" fill="#555" text-anchor="middle">ku {ku}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _colors(lines: list) -> list[str]:
    seen: list[str] = []
    for _, _, s, conf, _m in lines:
        c = STATUS_COLORS.get(s, "#444") if s else confidence_color(conf)
        if c not in seen:
            seen.append(c)
    return seen
