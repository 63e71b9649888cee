"""The tree as a two-way Streamlit component (``st.components.v2``): clicks reach Python, no polling.

The component runs in the app's own page (no iframe): it loads vis-network once per page (from the
app's ``static/`` folder, or inlined when static serving is off; never from a CDN), draws the
:class:`~explorer_ui.graph.GraphData` built in Python, and sends one trigger, ``event``, per user
action:

* ``{"type": "node", "id": m}``: a model was clicked (its card opens);
* ``{"type": "edge", "parent": p, "child": c}``: an edge was clicked (its evidence opens);
* ``{"type": "toggle", "id": m}``: a model was double-clicked (its subtree folds or opens);
* ``{"type": "step", "delta": ±1}``: an arrow key in talk mode (the next least confident edge).

Selection flows the other way as data: when Python selects an edge or a model (from a table, a search,
a link), the browser highlights it without rebuilding the drawing (the network is rebuilt only when
``GraphData.key`` changes). A click in the graph is highlighted by the canvas itself; Python then
sends that graph the same element as before (:func:`explorer_ui.state.graph_selection`), so a click
re-sends and redoes nothing in the browser but the card or evidence. As pyvis pages do, the vis
``network`` (and its ``nodes``/``edges`` DataSets) are globals of the page, so browser tests and
benchmarks can drive them.

The legend is a strip under the canvas, never drawn over it: ``fit`` places the whole tree in the canvas,
so its lowest row stays visible (an overlaid legend hid it in talk mode at 1280x720).

The graph is a white card (a dark one in talk mode) whatever the app's theme: it drew on the page's own
background, so in Streamlit's dark theme its legend (#222 text), family names and the dark root borders
sat on #0E1117 (contrast 1.2:1).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from typing import Any

import streamlit as st

from explorer_ui.graph import (ARRANGE_JS, DARK_BG, DARK_DASH, DARK_SWATCH_FILL, LONE_EDGE, LONE_FILL, SELECTED,
                               GraphData, lone_title, vis_id_table, vis_source)

_CSS = string.Template("""
.mg-wrap {position: relative; width: 100%; border: 1px solid rgba(128,128,128,.25); border-radius: 6px;
          overflow: hidden; box-sizing: border-box; display: flex; flex-direction: column; background: #FFFFFF;}
.mg-wrap.mg-dark {background: $dark_bg; border-color: #333;}
.mg-stage {position: relative; flex: 1 1 auto; min-height: 0;}
.mg-canvas {position: absolute; inset: 0;}
.mg-tools {position: absolute; top: 6px; right: 6px; z-index: 5; display: flex; gap: 6px;}
.mg-note {position: absolute; left: 0; right: 84px; top: 0; z-index: 4; font: 12px/1.6 sans-serif; padding: 2px 8px;
           color: #222; background: rgba(255,246,204,.95);}
.mg-tools button {font: 13px sans-serif; cursor: pointer; padding: 2px 8px; border-radius: 4px;
                  border: 1px solid #999; background: rgba(255,255,255,.9); color: #222;}
.mg-legend {flex: 0 0 auto; font: 12px/1.6 sans-serif; color: #222; padding: 3px 8px;
            border-top: 1px solid rgba(128,128,128,.25);}
.mg-dark .mg-legend {color: #EEE; border-top-color: #333;}
.mg-big .mg-legend {font-size: 18px;}
.mg-item {white-space: nowrap; display: inline-block;}
.mg-sw {display: inline-block; width: 22px; height: 4px; margin: 0 5px 3px 0; vertical-align: middle;}
.mg-sw.mg-dots {height: 0; border-top: 3px dotted; background: none !important;}
.mg-dash {display: inline-block; margin: 0 5px 1px 0; vertical-align: middle; color: #555;}
.mg-dark .mg-dash {color: $dark_dash;}
.mg-box {display: inline-block; width: 14px; height: 10px; margin: 0 5px 0 0; vertical-align: middle;}
.mg-dark .mg-box {background: $dark_swatch;}
div.vis-tooltip {white-space: pre-line; font: 13px sans-serif; max-width: 420px;}
""").substitute(dark_bg=DARK_BG, dark_dash=DARK_DASH, dark_swatch=DARK_SWATCH_FILL)  # talk mode's, from graph's palette

# One module per page: ``VIS`` caches the library load across mounts and reruns.
_JS = ARRANGE_JS + r"""
// vis-network keeps nodes in plain objects keyed by their ids: a model named "__proto__" (a folder name, a
// result.json id) set such an object's prototype, one named "hasOwnProperty" shadowed the method vis calls on it,
// and the model was not drawn (its box empty, its edges gone). Python decides which ids go to vis renamed
// (graph.vis_id, the one rule, also the exported page's) and sends the pairs (d.vis_ids, [model, vis id]): here
// they are only looked up, model id to vis id into the graph and back for what leaves it.
const ID_TABLES = new WeakMap();  // one drawing's data -> its two lookups, built once
function idTables(d) {
  let t = ID_TABLES.get(d);
  if (!t) {
    const pairs = d.vis_ids || [];
    t = {toVis: new Map(pairs), toModel: new Map(pairs.map(([m, v]) => [v, m]))};
    ID_TABLES.set(d, t);
  }
  return t;
}
function visId(d, id) { const t = idTables(d).toVis; return t.has(id) ? t.get(id) : id; }
function modelId(d, v) { const t = idTables(d).toModel; return t.has(v) ? t.get(v) : v; }

const LONE = '\u2063lone';  // the lone models' band among the families (no family id is a string)
let VIS = null;
function loadVis(lib) {
  if (window.vis && window.vis.Network) return Promise.resolve(window.vis);
  if (VIS) return VIS;
  VIS = new Promise((resolve, reject) => {
    const css = document.createElement('style');
    const s = document.createElement('script');
    if (lib.url) {
      const link = document.createElement('link');
      link.rel = 'stylesheet'; link.href = lib.url + 'vis-network.css';
      document.head.appendChild(link);
      s.src = lib.url + 'vis-network.min.js';
      s.onload = () => resolve(window.vis);
      s.onerror = () => { VIS = null; reject(new Error('vis-network did not load from ' + lib.url)); };
      document.head.appendChild(s);
    } else {
      css.textContent = lib.css; document.head.appendChild(css);
      s.textContent = lib.js; document.head.appendChild(s);
      resolve(window.vis);
    }
  });
  return VIS;
}

function build(root, st, d) {
  const wrap = root.querySelector('.mg-wrap');
  wrap.style.height = d.height + 'px';
  wrap.classList.toggle('mg-dark', !!d.dark);
  wrap.classList.toggle('mg-big', !!d.big);
  root.querySelector('.mg-legend').innerHTML = d.legend;  // built and escaped in Python
  if (st.network) { st.network.destroy(); }
  const nodes = new vis.DataSet(d.nodes.map(n => ({...n, id: visId(d, n.id)})));
  const edges = new vis.DataSet(d.edges.map(e => ({...e, from: visId(d, e.from), to: visId(d, e.to)})));
  arrange(root, d, nodes);
  const net = new vis.Network(root.querySelector('.mg-canvas'), {nodes, edges}, d.options);
  st.network = net; st.key = d.key; st.edgeIds = d.edge_ids; st.sel = null; st.font = null; st.reveal = null;
  st.lone = d.lone || [];  // the band's models (tests)
  window.network = net; window.nodes = nodes; window.edges = edges;  // as pyvis pages: tests drive them
  root.dataset.drawn = '0';
  // A click selects in the canvas at once (vis highlights it) and tells Python, which does not send the
  // selection back to this graph (the element stays the same: nothing to re-send or redo).
  net.on('click', p => {
    if (p.nodes.length) {
      const id = modelId(d, p.nodes[0]);
      mark(root, {node: id});
      centreLater(st, d, [id]);
      st.send('event', {type: 'node', id, t: Date.now()});
    } else if (p.edges.length && st.edgeIds[p.edges[0]]) {
      const [parent, child] = st.edgeIds[p.edges[0]];
      mark(root, {edge: [parent, child]});
      centreLater(st, d, [parent, child]);
      st.send('event', {type: 'edge', parent, child, t: Date.now()});
    }
  });
  const members = {};  // family id -> its models' ids, once per drawing (not per frame)
  for (const n of d.nodes) (members[n.family] = members[n.family] || []).push(visId(d, n.id));
  members[LONE] = (d.lone || []).map(id => visId(d, id));
  net.on('beforeDrawing', ctx => drawFamilies(root, st, d, ctx, members));
  net.on('zoom', () => relabel(st, d));
  net.on('animationFinished', () => { relabel(st, d); hidePopup(net); });  // a centring moveTo sends no 'zoom'
  // vis keeps the visible area when its canvas resizes (the scale follows the size): size the labels again.
  net.on('resize', () => relabel(st, d));
  net.on('doubleClick', p => {
    clearTimeout(st.centring);  // a double-click folds or opens: do not move the tree under the pointer
    if (p.nodes.length) st.send('event', {type: 'toggle', id: modelId(d, p.nodes[0]), t: Date.now()});
  });
  net.once('afterDrawing', () => {
    fit(st, d);
    // A selection that came with this drawing (an arrow key or a table row that opened a folded subtree):
    // bring it into sight after the first view, which would otherwise undo it.
    if (st.reveal) { centre(st, d, st.reveal, false); st.reveal = null; }
    root.dataset.drawn = '1';
    window.__motherDrawnAt = performance.now();
  });
}

// Python wraps a wide forest into rows for a guess of the canvas' shape; the canvas is narrower or wider
// with the window (a 614 px column at 1500 px, 482 px at 1280). Draw the arrangement (d.arrangements, the
// guess first: wrappings, and with layout "auto" the same left to right) that fits this canvas best, so a
// forest whose labels are readable whole opens whole instead of zoomed in to its top-left corner. The first
// direction (top-down) stays unless it cannot be read whole and the other can (a single wide tree).
function arrange(root, d, nodes, net) {
  const list = d.arrangements || [];
  const c = root.querySelector('.mg-canvas'), w = c.clientWidth, h = c.clientHeight;
  if (list.length < 2 || !w || !h) return;
  const i = pickArrangement(list, w, h, d.options.nodes.font.size, d.options.nodes.scaling.label.drawThreshold,
                            d.nodes.map(n => n.label));
  const a = list[i];
  root.dataset.arrangement = String(i); root.dataset.direction = a.dir;
  d.label_growth = a.growth;
  if (d.options.edges.smooth.enabled) {
    d.options.edges.smooth.forceDirection = a.dir;
    if (net) net.setOptions({edges: {smooth: d.options.edges.smooth}});
  }
  nodes.update(Object.entries(a.pos).map(([id, [x, y]]) => ({id: visId(d, id), x, y})));
}

// Labels scale with zoom but never drop below the readable size on screen: zoomed out, they grow in
// canvas units into the free space around them (up to d.label_growth x, computed from the layout so a
// grown label never reaches its neighbour); further out they are hidden, never drawn faded (vis fades a
// label between drawThreshold - 1 and drawThreshold px): the family labels name the groups instead.
function relabel(st, d) {
  const net = st.network, s = net.getScale(), base = d.options.nodes.font.size;
  const threshold = d.options.nodes.scaling.label.drawThreshold, min = threshold + 1;
  const grown = base * d.label_growth;
  const size = base * s >= min ? base : grown * s >= min ? min / s : Math.min(grown, (threshold - 1.5) / s);
  // Within 0.05 screen px: no redraw of every label per zoom step, and never a label left just under the threshold.
  if (Math.abs((st.font || base) - size) * s > 0.05) { st.font = size; net.setOptions({nodes: {font: {size}}}); }
  // The overview's note says names are too small to draw: zoomed in to where they are drawn, it goes.
  const root = net.body.container.closest('.mg-root');
  const overview = root.dataset.overview === '1' && s < readableScale(d) / 1.02;
  root.querySelector('.mg-note').style.display = overview ? '' : 'none';
}

// The zoom from which model names are drawn (grown as far as the layout allows), at full colour.
function readableScale(d, margin = 1.01) {
  // 1% over for a centring: an animated zoom ends a hair short of its target.
  return margin * (d.options.nodes.scaling.label.drawThreshold + 1) / (d.options.nodes.font.size * d.label_growth);
}

// The box (canvas units) around the given models, or every model.
function boxOf(net, ids) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const id of ids) {
    const b = net.getBoundingBox(id);
    if (!b) continue;
    x0 = Math.min(x0, b.left); y0 = Math.min(y0, b.top); x1 = Math.max(x1, b.right); y1 = Math.max(y1, b.bottom);
  }
  return {x0, y0, x1, y1};
}

// The first view (and Fit): the whole forest. When its model names are readable at the zoom that shows it
// whole, that is all; when not (a large set in a small canvas), the whole forest still, with its families
// boxed and named (drawFamilies) and a note on how to read names: a click centres a model at a readable
// zoom. It used to open at the readable zoom on the forest's top-left corner, where a large set showed one
// family of many and nothing said how big the rest was.
function fit(st, d) {
  const net = st.network, root = net.body.container.closest('.mg-root');
  const note = root.querySelector('.mg-note');
  const w = net.body.container.clientWidth, h = net.body.container.clientHeight;
  const b = boxOf(net, window.nodes.getIds());
  note.style.display = 'none';
  root.dataset.overview = '0';
  if (!isFinite(b.x0) || !w || !h) { net.fit({animation: false}); relabel(st, d); return; }
  // The lone models' grey box reaches 10 canvas px past its models (16 screen px at the largest zoom, 1.6): more
  // margin, or its sides and bottom touched the canvas' edges.
  const band = (d.lone || []).length ? 16 : 0;
  const place = (top) => {  // the scale and centre that show the box whole, ``top`` px free above it
    const pad = 14 + band, s = Math.min(1.6, (w - 2 * pad) / Math.max(1, b.x1 - b.x0),
                                 (h - top - pad) / Math.max(1, b.y1 - b.y0));
    return {scale: s, position: {x: (b.x0 + b.x1) / 2, y: (b.y0 + b.y1) / 2 - (top - pad) / 2 / s}};
  };
  // Room for the top row's family names, or for the band's name when lone models are all there is.
  const onlyLone = (d.lone || []).length > 0 && d.lone.length === d.nodes.length;
  const named = (d.families && d.families.length > 1) || onlyLone ? 24 : 0;
  const readable = readableScale(d, 1);
  let view = place(14 + named);
  // Readable whole only without room for the top names: readable it is (drawFamilies keeps those names in sight).
  if (view.scale < readable && place(14).scale >= readable) view = place(14);
  else if (view.scale < readable) {  // names too small to draw: the overview, under the note
    note.style.display = '';
    root.dataset.overview = '1';
    view = place(note.offsetHeight + 8 + named);
  }
  net.moveTo({...view, animation: false});
  relabel(st, d);
}

// Centre models (a clicked one, or an edge's two ends) at a zoom where their names are drawn: from the
// overview a click shows the model among its named neighbours. Deferred a moment so that a double-click
// (fold / open) lands where the first click was.
// A tooltip shown before a centring moved the tree names whatever edge then lies under the resting pointer
// (an edge click showed another edge's tooltip beside the clicked one's evidence): hide it; the next mouse move
// shows the right one. vis has no public call for it (interactionHandler.popup, vis-network 9.1.2).
function hidePopup(net) {
  const ih = net.interactionHandler;
  if (ih && ih.popup) { clearTimeout(ih.popupTimer); ih.popup.hide(); ih.popupObj = undefined; }
}

function centreLater(st, d, ids) {
  clearTimeout(st.centring);
  st.centring = setTimeout(() => centre(st, d, ids, true), 260);
}

function centre(st, d, ids, always) {
  const net = st.network;
  if (!net) return;
  const known = ids.map(id => visId(d, id)).filter(id => window.nodes.get(id));  // model ids in, vis ids from here
  if (!known.length) return;
  const b = boxOf(net, known), s = net.getScale(), scale = Math.max(s, readableScale(d));
  const c = net.body.container, pos = {x: (b.x0 + b.x1) / 2, y: (b.y0 + b.y1) / 2};
  const dom = net.canvasToDOM(pos);
  const out = dom.x < 20 || dom.y < 20 || dom.x > c.clientWidth - 20 || dom.y > c.clientHeight - 20;
  if (!always && !out && scale === s) return;  // in sight at a readable zoom: leave the view alone
  net.moveTo({position: pos, scale, animation: {duration: 250, easingFunction: 'easeInOutQuad'}});
}

// Each family of two or more shown models on a tinted, rounded box, its root and size above it in screen-size
// type (largest families first, none drawn over another, none past the forest's right edge): zoomed out past
// readable model names, the forest still reads as named families; zoomed in, the name says whose box it is.
// The lone models (no parent, no child: d.lone, laid out by Python in a grid under everything else) get a grey box
// of the same kind, named "40 unrelated models (no parent, no child found)", as the slide draws them.
function drawFamilies(root, st, d, ctx, members) {
  const band = (d.lone || []).length ? [{id: LONE, ...d.lone_band}] : [];  // its name and colours: Python's
  const fams = ((d.families || []).length >= 2 ? d.families : []).concat(band);
  root.dataset.lone = '0';
  if (!fams.length || !st.network) { root.dataset.families = '0'; return; }
  const net = st.network, s = net.getScale();
  const pad = 10;
  const boxes = fams.map(f => [f, boxOf(net, members[f.id] || [])]).filter(([, b]) => isFinite(b.x0));
  const left = Math.min(...boxes.map(([, b]) => b.x0)) - pad;
  const right = Math.max(...boxes.map(([, b]) => b.x1)) + pad, top = net.DOMtoCanvas({x: 0, y: 0}).y;
  ctx.save();
  for (const [f, b] of boxes) {
    ctx.beginPath();
    const x = b.x0 - pad, y = b.y0 - pad, bw = b.x1 - b.x0 + 2 * pad, bh = b.y1 - b.y0 + 2 * pad;
    if (ctx.roundRect) ctx.roundRect(x, y, bw, bh, 12); else ctx.rect(x, y, bw, bh);
    ctx.globalAlpha = d.dark ? 0.16 : 0.45; ctx.fillStyle = f.color; ctx.fill();
    ctx.globalAlpha = 0.55; ctx.lineWidth = 1.5 / s; ctx.strokeStyle = f.edge; ctx.stroke();
  }
  ctx.globalAlpha = 1;
  let named = 0;
  const px = d.big ? 18 : 13, taken = [];
  ctx.font = `bold ${px / s}px sans-serif`; ctx.textBaseline = 'bottom'; ctx.lineJoin = 'round';
  for (const [f, b] of boxes) {
    const tw = ctx.measureText(f.label).width, x = Math.max(left, Math.min(b.x0 - pad, right - tw));
    if (b.y1 + pad < top + (px + 4) / s) continue;  // the box is above the view: no name pinned to its top
    const y = Math.max(b.y0 - pad - 2 / s, top + (px + 4) / s), r = {x0: x, x1: x + tw, y0: y - (px + 2) / s, y1: y};
    if (taken.some(t => r.x0 < t.x1 && t.x0 < r.x1 && r.y0 < t.y1 && t.y0 < r.y1)) continue;
    taken.push(r);
    if (f.id === LONE) root.dataset.lone = '1'; else named++;
    ctx.lineWidth = 4 / s; ctx.strokeStyle = d.dark ? '#14161A' : '#FFFFFF'; ctx.strokeText(f.label, x, y);
    ctx.fillStyle = d.dark ? '#F2F2F2' : '#1A1A1A'; ctx.fillText(f.label, x, y);
  }
  ctx.restore();
  root.dataset.families = String(named);  // how many family names are drawn (tests); data-lone: the band's (0/1)
}

// What the canvas shows as selected, for tests and benchmarks (data-selected-edge / data-selected-node).
function mark(root, sel) {
  delete root.dataset.selectedEdge; delete root.dataset.selectedNode;
  if (sel && sel.edge) root.dataset.selectedEdge = JSON.stringify(sel.edge);
  else if (sel && sel.node) root.dataset.selectedNode = sel.node;
}

function select(root, st, sel, data) {
  const net = st.network;
  const want = JSON.stringify(sel || null);
  if (st.sel === want) return;
  st.sel = want;
  let edgeId = null;
  if (sel && sel.edge) {
    for (const [id, pc] of Object.entries(st.edgeIds)) {
      if (pc[0] === sel.edge[0] && pc[1] === sel.edge[1]) { edgeId = id; break; }
    }
  }
  if (edgeId) {
    net.setSelection({nodes: [], edges: [edgeId]}, {unselectAll: true, highlightEdges: false});
    mark(root, {edge: sel.edge});
  } else if (sel && sel.node && window.nodes.get(visId(data, sel.node))) {
    net.setSelection({nodes: [visId(data, sel.node)], edges: []}, {unselectAll: true, highlightEdges: false});
    mark(root, {node: sel.node});
  } else {
    net.unselectAll();
    mark(root, null);
  }
  if (sel && sel.reveal) {  // chosen elsewhere (a table, a search, talk mode's arrows): bring it into sight
    const ids = sel.node ? [sel.node] : (sel.edge || []);
    if (root.dataset.drawn === '1') centre(st, data, ids, false); else st.reveal = ids;
  }
}

export default function (component) {
  const {data, parentElement, setTriggerValue} = component;
  let root = parentElement.querySelector('.mg-root');
  if (!root) {
    root = document.createElement('div');
    root.className = 'mg-root';
    // The note lies over the canvas' top strip (left of the buttons; the zoomed-in view starts below it): shown
    // in the flow, it shrank the canvas after the zoom was set, vis scaled the drawing down with it and the
    // labels fell under the draw threshold (faded).
    root.innerHTML = '<div class="mg-wrap"><div class="mg-stage"><div class="mg-canvas"></div>' +
      '<div class="mg-tools"><button class="mg-fit" title="Show the whole tree">Fit</button>' +
      '<button class="mg-fs" title="Full screen" aria-label="Full screen">' +
      // an inline icon: the "square four corners" glyph (U+26F6) is missing from common Linux fonts
      '<svg width="12" height="12" viewBox="0 0 12 12" fill="none" stroke="currentColor" stroke-width="1.6">' +
      '<path d="M1 4V1h3M8 1h3v3M11 8v3H8M4 11H1V8"/></svg></button></div>' +
      '<div class="mg-note" style="display:none">The whole forest, families boxed: too many models to name ' +
      'here. <b>Click</b> a model to centre it among named neighbours, scroll to zoom, <b>Fit</b> to come back.' +
      '</div></div><div class="mg-legend"></div></div>';
    parentElement.appendChild(root);
  }
  const st = root.__mother || (root.__mother = {});
  st.send = setTriggerValue;
  root.querySelector('.mg-fit').onclick = () => st.network && fit(st, data);
  root.querySelector('.mg-fs').onclick = () => {
    const w = root.querySelector('.mg-wrap');
    if (document.fullscreenElement) document.exitFullscreen();
    else if (w.requestFullscreen) w.requestFullscreen().then(() => setTimeout(() => {
      if (window.nodes) arrange(root, data, window.nodes, st.network);
      fit(st, data);
    }, 200));
  };
  if (data.keys && !st.keys) {
    st.keys = (e) => {
      const tag = (e.target && e.target.tagName) || '';
      if (/INPUT|TEXTAREA|SELECT/.test(tag)) return;
      const delta = {ArrowRight: 1, ArrowDown: 1, PageDown: 1, ' ': 1, ArrowLeft: -1, ArrowUp: -1, PageUp: -1}[e.key];
      if (delta) { e.preventDefault(); st.send('event', {type: 'step', delta, t: Date.now()}); }
    };
    document.addEventListener('keydown', st.keys);
  } else if (!data.keys && st.keys) {
    document.removeEventListener('keydown', st.keys); st.keys = null;
  }
  if (st.key !== data.key) window.__motherDataAt = performance.now();
  loadVis(data.lib).then(() => {
    if (st.key !== data.key) build(root, st, data);
    select(root, st, data.selected, data);
  }).catch(err => { root.textContent = 'The graph library could not load: ' + err.message; });
  return () => { if (st.keys) document.removeEventListener('keydown', st.keys); st.keys = null;
                 if (st.network) st.network.destroy(); st.network = null; st.key = null; };
}
"""


def trigger_event(key: str) -> Any:
    """The ``event`` trigger last sent by the component with widget ``key`` (``None`` if none); shared with
    :mod:`explorer_ui.table_component`."""
    value = st.session_state.get(key)
    event = getattr(value, "event", None) if value is not None else None
    if event is None and isinstance(value, dict):
        event = value.get("event")
    return event


@functools.cache
def _mount() -> Callable[..., Any]:
    """The component, declared once per process, on first use (not at import)."""
    return st.components.v2.component("mother_graph", css=_CSS, js=_JS, isolate_styles=False)


def graph(data: GraphData, *, key: str, height: int, lib_url: str | None, selected: dict | None,
          on_event: Callable[[dict], None], dark: bool = False, big: bool = False, keys: bool = False) -> None:
    """Draw ``data`` and call ``on_event(event)`` (before the rerun) for each click in it.

    Parameters
    ----------
    data : GraphData
        The drawing (:func:`explorer_ui.graph.build_graph`).
    key : str
        Widget key (one per place a page draws a graph).
    height : int
        Canvas height in CSS pixels.
    lib_url : str or None
        Where the app serves vis-network (:func:`explorer_ui.static.vis_url`); ``None`` inlines it.
    selected : dict or None
        ``{"edge": [p, c]}`` or ``{"node": m}`` (plus ``"reveal": True`` to pan to it).
    on_event : callable
        Receives the event dict described in the module docstring.
    dark, big, keys : bool
        Talk mode: dark canvas, large legend, arrow keys step through edges.
    """
    if lib_url is None:
        js, css = vis_source()
        lib: dict[str, Any] = {"url": None, "js": js, "css": css}
    else:
        lib = {"url": lib_url}

    def _changed() -> None:
        event = trigger_event(key)
        if isinstance(event, dict):
            on_event(event)

    _mount()(key=key, data=component_data(data, height=height, lib=lib, selected=selected, dark=dark, big=big,
                                           keys=keys), height=height + 4, on_event_change=_changed)


def component_data(data: GraphData, *, height: int, lib: dict[str, Any], selected: dict | None, dark: bool = False,
                   big: bool = False, keys: bool = False) -> dict[str, Any]:
    """What the component's script is given to draw ``data`` (the arguments as :func:`graph`'s; ``lib`` where
    vis-network comes from: ``{"url": ...}`` or ``{"url": None, "js": ..., "css": ...}``). ``vis_ids`` holds the
    models vis is given under another id (:func:`explorer_ui.graph.vis_id_table`), the script's only source for it."""
    return {"key": data.key, "nodes": data.nodes, "edges": data.edges, "options": data.options,
            "legend": data.legend, "edge_ids": {i: list(e) for i, e in data.edge_ids.items()},
            "height": height, "lib": lib, "selected": selected, "dark": dark, "big": big, "keys": keys,
            "selected_color": SELECTED, "label_growth": data.label_growth,
            "families": list(data.families), "lone": list(data.lone),
            "lone_band": {"label": lone_title(len(data.lone)), "color": LONE_EDGE if dark else LONE_FILL,
                          "edge": LONE_EDGE},
            "arrangements": list(data.arrangements), "vis_ids": vis_id_table(data)}
