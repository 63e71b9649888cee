"""The interactive tree: pyvis/vis-network HTML with computed positions, fully offline.

pyvis' templates link vis-network and Bootstrap from CDNs: every external ``<script src>`` /
``<link href>`` is stripped and vis-network is taken from the pyvis package's own copy instead, either
inlined (a self-contained page) or linked from a URL the app serves itself (see
:mod:`explorer_ui.static`), so the page makes no request beyond the app's own server. Physics is off;
positions come from :func:`mother_core.layout.tree_layout`, so the tree never jitters and is drawn the
same way each time.
"""

from __future__ import annotations

import functools
import html as _html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyvis
from pyvis.network import Network

from mother_core.layout import tree_layout, wrap_width
from mother_core.recovery.result import Edge, Recovery

# Colours (colour-blind friendly, Okabe-Ito).
STATUS_COLORS = {
    "correct": "#009E73", "agree": "#009E73",
    "flipped": "#E69F00", "external": "#56B4E9",
    "wrong": "#D55E00", "conflict": "#D55E00",
    "missing": "#999999", "undocumented": "#7F7F7F",
}
STATUS_TEXT = {
    "correct": "correct (in the truth)", "flipped": "right pair, wrong direction", "wrong": "not in the truth",
    "missing": "in the reference, not recovered", "agree": "agrees with the declared parent",
    "conflict": "conflicts with the declared parent", "undocumented": "no parent declared",
    "external": "declared parent is outside this set",
}
TREE_COLORS = ["#DCEBFA", "#FDE7D2", "#DFF3E4", "#F3E1F5", "#FFF6CC", "#E3E3E3", "#D6F0F5", "#F9DADA"]
SELECTED = "#7B2CBF"
X_SCALE, Y_SCALE = 100.0, 130.0  # px per leaf column / per generation

_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>", re.I | re.S)
_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*/?>", re.I | re.S)
_EMPTY_HEADING = re.compile(r"<center>\s*<h1>\s*</h1>\s*</center>", re.I)


@dataclass(frozen=True)
class VisAssets:
    """The vis-network build that ships inside the installed pyvis package."""

    folder: Path  # .../pyvis/templates/lib/vis-<version>/

    @property
    def version(self) -> str:
        return self.folder.name.removeprefix("vis-")

    @property
    def files(self) -> tuple[Path, ...]:
        return self.folder / "vis-network.min.js", self.folder / "vis-network.css"


@functools.cache
def vis_assets() -> VisAssets:
    """The vis-network build that pyvis' own offline (``in_line``) template includes."""
    templates = Path(pyvis.__file__).parent / "templates"
    found = re.search(r"include\s+'lib/(vis-[\w.]+)/vis-network\.min\.js'",
                      (templates / "template.html").read_text(encoding="utf-8"))
    return VisAssets(templates / "lib" / (found.group(1) if found else "vis-9.1.2"))


@functools.cache
def _inline_assets() -> str:
    js, css = (f.read_text(encoding="utf-8") for f in vis_assets().files)
    return f"<style>{css}</style>\n<script>{js}</script>"


def asset_tags(served_at: str | None) -> str:
    """The ``<head>`` tags that load vis-network: linked from ``served_at`` (a URL folder ending in
    ``/``, served by the app) or, when ``None``, inlined so the page stands alone."""
    if served_at is None:
        return _inline_assets()
    src = _html.escape(served_at, quote=True)
    return (f'<link rel="stylesheet" href="{src}vis-network.css">\n'
            f'<script src="{src}vis-network.min.js"></script>')


def short_name(model_id: str, limit: int = 22) -> str:
    """A node label: hub ids lose their organisation (``org/name`` -> ``name``), long names are cut."""
    name = model_id.rsplit("/", 1)[-1] if len(model_id) > limit else model_id
    return name if len(name) <= limit + 6 else name[: limit + 5] + "…"


def _js(value: object) -> str:
    """JSON for inlining in a <script> (no "</script>" break-out from model names)."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def strip_external(html: str) -> str:
    """Remove every ``<script src=http...>`` and ``<link href=http...>`` (CDN) tag."""
    html = _EXTERNAL_SCRIPT.sub("", html)
    html = _EXTERNAL_LINK.sub("", html)
    return _EMPTY_HEADING.sub("", html)


def external_refs(html: str) -> list[str]:
    """External resources an HTML page would load (should be empty)."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)",
                      html, re.I)


def confidence_color(c: float) -> str:
    """Light orange (unsure) to dark blue (sure)."""
    c = 0.0 if c is None or math.isnan(c) else min(max(c, 0.0), 1.0)
    lo, hi = (230, 159, 0), (0, 64, 140)
    r, g, b = (round(lo[i] + (hi[i] - lo[i]) * c) for i in range(3))
    return f"#{r:02x}{g:02x}{b:02x}"


def edge_width(c: float) -> float:
    return 1.0 + 6.0 * (0.0 if c is None or math.isnan(c) else min(max(c, 0.0), 1.0))


def _fmt(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}g}"


def edge_tooltip(e: Edge, status: str | None) -> str:
    lines = [f"{e.parent} → {e.child}", f"distance {_fmt(e.distance)}",
             f"confidence {_fmt(e.confidence, 2)} (placement {_fmt(e.placement_confidence, 2)}, "
             f"direction {_fmt(e.direction_confidence, 2)})"]
    if status:
        lines.append(f"{status}: {STATUS_TEXT.get(status, '')}")
    if e.constrained:
        lines.append("set by you (constraint)")
    return "\n".join(lines)


def _legend(statuses: Iterable[str], reference: str) -> str:
    items = [f'<span class="sw" style="background:{confidence_color(0.1)}"></span>low confidence',
             f'<span class="sw" style="background:{confidence_color(0.95)}"></span>high confidence',
             "width = confidence", "■ bold border = root"]
    shown = [s for s in ("correct", "agree", "flipped", "wrong", "conflict", "undocumented", "external", "missing")
             if s in set(statuses)]
    if shown:
        items = [f'<span class="sw" style="background:{STATUS_COLORS[s]}"></span>{s}' for s in shown]
        items += ["width = confidence", "dashed = missing", "■ bold border = root"]
        items.insert(0, f"<b>vs {_html.escape(reference)}:</b>")
    return '<div id="legend">' + " &nbsp; ".join(items) + "</div>"


_TOOLBAR_CSS = """
<style>
 body {margin:0; font-family: sans-serif;}
 #mynetwork {border:none !important; float:none !important;}
 .card {border:none;}
 #toolbar {position:absolute; top:6px; left:6px; z-index:10; display:flex; gap:6px; font-size:13px;}
 #toolbar input {font-size:13px; padding:2px 6px; width:180px;}
 #toolbar button {font-size:13px; cursor:pointer;}
 #legend {position:absolute; bottom:4px; left:6px; z-index:10; font-size:12px; background:rgba(255,255,255,.85);
          padding:3px 6px; border-radius:4px;}
 .sw {display:inline-block; width:18px; height:4px; margin:0 4px 2px 0; vertical-align:middle;}
 :fullscreen #mynetwork, :-webkit-full-screen #mynetwork {height:100vh !important;}
 #wrap {position:relative;}
</style>"""

_TOOLBAR_JS = """
<script>
(function(){
  var ids = %(ids)s, cur = {edge: null, node: null}, saved = {};
  function find(q){
    if(!q) {network.unselectAll(); return;}
    q = q.toLowerCase();
    var hit = ids.filter(function(i){return i.toLowerCase() === q;})[0] ||
              ids.filter(function(i){return i.toLowerCase().indexOf(q) >= 0;})[0];
    if(hit){ network.selectNodes([hit]); network.focus(hit, {scale: 1.1, animation: true}); }
  }
  function emphasise(id, on){
    var e = edges.get(id); if(!e) return;
    if(on){ saved[id] = {width: e.width, color: e.color};
            edges.update({id: id, width: (e.width || 1) + 4, color: {color: '%(sel)s', highlight: '%(sel)s'}}); }
    else if(saved[id]){ edges.update({id: id, width: saved[id].width, color: saved[id].color}); delete saved[id]; }
  }
  // The Streamlit page writes the selected edge / model into a hidden marker (class "mother-sel");
  // reading it here keeps this iframe's HTML constant, so selecting an edge never reloads the graph.
  function sync(){
    var el = null;
    try { el = window.parent.document.querySelector('.mother-sel'); } catch(err) { return; }
    var edge = el ? (el.getAttribute('data-edge') || null) : null;
    var node = el ? (el.getAttribute('data-node') || null) : null;
    if(edge !== cur.edge){ if(cur.edge) emphasise(cur.edge, false); if(edge) emphasise(edge, true); cur.edge = edge;
                           document.body.setAttribute('data-selected-edge', edge || ''); }
    if(node !== cur.node){ cur.node = node;
      if(node && ids.indexOf(node) >= 0){
        network.selectNodes([node]); network.focus(node, {scale: 1.0, animation: true}); }
      else { network.unselectAll(); fit(); } }
  }
  document.getElementById('search').addEventListener('change', function(e){ find(e.target.value); });
  document.getElementById('search').addEventListener('keyup', function(e){ if(e.key==='Enter') find(e.target.value); });
  document.getElementById('fit').onclick = function(){ fit(); };
  document.getElementById('fs').onclick = function(){
    var el = document.getElementById('wrap');
    if(document.fullscreenElement){ document.exitFullscreen(); }
    else if(el.requestFullscreen){ el.requestFullscreen().then(function(){ setTimeout(fit, 200); }); }
  };
  function fit(){ network.fit(); network.moveTo({scale: Math.min(1.4, network.getScale() * 0.9)}); }
  network.once('afterDrawing', function(){
    fit(); sync(); setInterval(sync, 100);
    document.body.setAttribute('data-drawn', '1');
  });
  network.redraw();  // the first frame may already be drawn: draw once more so the hook above runs
})();
</script>"""


def tree_html(
    rec: Recovery,
    *,
    statuses: dict[tuple[str, str], str] | None = None,
    reference: str = "",
    selected: tuple[str, str] | None = None,
    height: int = 620,
    font_size: int = 15,
    aspect: float = 1.8,
    served_at: str | None = None,
) -> str:
    """Self-contained HTML of the recovered forest.

    Parameters
    ----------
    rec : Recovery
        What to draw.
    statuses : dict, optional
        (parent, child) -> ``"correct"|"flipped"|"wrong"|"missing"`` (truth) or
        ``"agree"|"conflict"|"undocumented"|"external"`` (declared lineage). ``"missing"`` entries that
        are not recovered edges are drawn dashed.
    reference : str
        What the statuses compare against (legend text).
    selected : (str, str), optional
        An edge to emphasise in the static HTML. In the app, selection is synced live instead: the page
        writes a hidden ``<div class="mother-sel" data-edge="p->c" data-node="id">`` (see
        :func:`selection_marker`) that the graph reads, so the iframe is not rebuilt on every click.
    height : int
        Pixel height of the canvas.
    font_size : int
        Label font size (talk mode uses a larger one).
    aspect : float
        Width / height the canvas is expected to have: a wide forest wraps into rows to fit it.
    served_at : str, optional
        A URL folder (ending in ``/``) where the app serves :func:`vis_assets` (the browser then caches
        the 690 kB library instead of receiving it inside every page). ``None`` inlines it: the HTML
        stands alone, with no request at all.
    """
    statuses = statuses or {}
    pairs = [(e.parent, e.child) for e in rec.edges]
    longest = max((len(short_name(i)) for i in rec.model_ids), default=8)
    x_scale = max(X_SCALE, longest * font_size * 0.62 + 26)  # labels never overlap their neighbours
    y_scale = Y_SCALE * max(1.0, font_size / 15)
    pos = tree_layout(rec, max_width=wrap_width(rec.model_ids, pairs, aspect, x_scale, y_scale))
    tree_of = {m.id: m.tree for m in rec.models}
    roots = set(rec.roots)
    # "remote" keeps pyvis' template small (its "in_line" mode makes Jinja lex the whole library on every
    # call); the CDN tags it writes are stripped below and replaced by ``asset_tags(served_at)``.
    net = Network(height=f"{height}px", width="100%", directed=True, cdn_resources="remote")
    for m in rec.models:
        x, y = pos[m.id]
        title = (f"{m.id}\nkurtosis {_fmt(m.kurtosis)}\ntree {m.tree}" + ("\nroot" if m.id in roots else "")
                 + (f"\ndeclared parent: {m.declared_parent}" if m.declared_parent else ""))
        color = TREE_COLORS[tree_of.get(m.id, 0) % len(TREE_COLORS)]
        net.add_node(m.id, label=f"{short_name(m.id)}\nku {_fmt(m.kurtosis)}", title=title, x=x * x_scale,
                     y=y * y_scale,
                     shape="box", physics=False, borderWidth=3 if m.id in roots else 1,
                     color={"background": color, "border": "#222222" if m.id in roots else "#777777",
                            "highlight": {"background": "#FFE08A", "border": SELECTED}},
                     font={"size": font_size, "face": "sans-serif"})
    recovered = set()
    for e in rec.edges:
        st_ = statuses.get((e.parent, e.child))
        recovered.add((e.parent, e.child))
        is_sel = selected == (e.parent, e.child)
        color = SELECTED if is_sel else (STATUS_COLORS.get(st_, "#444") if st_ else confidence_color(e.confidence))
        net.add_edge(e.parent, e.child, id=edge_id(e.parent, e.child), title=edge_tooltip(e, st_),
                     width=edge_width(e.confidence) + (4 if is_sel else 0),
                     color={"color": color, "highlight": SELECTED},
                     dashes=bool(e.constrained) and not is_sel)
    ids = set(rec.model_ids)
    for (p, c), s in statuses.items():
        if s == "missing" and (p, c) not in recovered and p in ids and c in ids:
            net.add_edge(p, c, id=f"{p}->{c} (missing)", title=f"{p} → {c}\nmissing: {STATUS_TEXT['missing']}",
                         width=1.5, dashes=True, color={"color": STATUS_COLORS["missing"]})
    net.set_options(json.dumps({
        "physics": {"enabled": False},
        "layout": {"hierarchical": {"enabled": False}},
        "interaction": {"hover": True, "tooltipDelay": 80, "navigationButtons": False, "multiselect": False},
        "edges": {"arrows": {"to": {"enabled": True, "scaleFactor": 0.7}},
                  "smooth": {"enabled": True, "type": "cubicBezier", "forceDirection": "vertical", "roundness": 0.4}},
        "nodes": {"margin": 8},
    }))
    html = strip_external(net.generate_html())
    toolbar = ('<div id="toolbar"><input id="search" list="ids" placeholder="Find a model…">'
               '<datalist id="ids">' + "".join(f'<option value="{_html.escape(i)}">' for i in rec.model_ids)
               + '</datalist><button id="fit">Fit</button><button id="fs">Fullscreen</button></div>')
    html = html.replace('<div class="card" style="width: 100%">',
                        '<div id="wrap">' + toolbar + _legend(statuses.values(), reference)
                        + '<div class="card" style="width: 100%">', 1)
    html = html.replace("</head>", asset_tags(served_at) + _TOOLBAR_CSS + "</head>", 1)
    if html.count('<div id="wrap">') == 1:
        html = html.replace("</body>", "</div></body>", 1)
    js = _TOOLBAR_JS % {"ids": _js(rec.model_ids), "sel": SELECTED}
    return html.replace("</body>", js + "</body>", 1)


def edge_id(parent: str, child: str) -> str:
    """The vis-network id of a recovered edge."""
    return f"{parent}->{child}"


def selection_marker(selected: tuple[str, str] | None, node: str | None) -> str:
    """Hidden HTML the graph iframe polls for the current selection."""
    edge = edge_id(*selected) if selected else ""
    return (f'<div class="mother-sel" style="display:none" data-edge="{_html.escape(edge, quote=True)}" '
            f'data-node="{_html.escape(node or "", quote=True)}"></div>')
