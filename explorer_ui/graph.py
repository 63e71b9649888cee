"""The tree as a vis-network graph: built with pyvis, positions computed here, physics off.

pyvis builds the network (nodes, edges, options; the design card's choice); the app draws it through
its own two-way component (:mod:`explorer_ui.graph_component`), so clicks reach Python. Everything the
picture shows is decided here, in Python, from the recovery and a :class:`~explorer_ui.state.GraphView`:

* **what is shown**: subtrees beyond a size are folded into their top model ("+k"), so a 1,000-model
  set opens readable; the user opens or folds any subtree (double-click), and a searched or selected
  model's ancestors are opened for it;
* **where**: :func:`mother_core.layout.forest_positions` (top-down, left-right or radial; branch length
  by edge count or by distance), scaled so labels never overlap their neighbours;
* **how**: edge colour by confidence, agreement with a reference, family or relation; one dash
  pattern per relation; width = confidence; a legend that explains every mark.

Nothing is fetched from a CDN: pyvis' templates link vis-network from one, so the standalone HTML
(:func:`tree_html`) strips those tags and inlines pyvis' own copy of the library.
"""

from __future__ import annotations

import functools
import hashlib
import html as _html
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyvis
from pyvis.network import Network

from mother_core.layout import forest_positions, wrap_width
from mother_core.lineage import IdMatcher, declared_in_set, declared_text
from mother_core.recovery.result import Edge, ModelNode, Recovery
from mother_core import walk
from mother_core.statuses import STATUS_INFO, EdgeStatus

EdgeKey = tuple[str, str]

# Colours (colour-blind friendly, Okabe-Ito), one per verdict of the status words (mother_core/statuses.py).
VERDICT_COLORS = {"right": "#009E73", "direction": "#E69F00", "outside": "#56B4E9", "wrong": "#D55E00",
                  "absent": "#999999", "unknown": "#7F7F7F"}
STATUS_COLORS = {str(s): VERDICT_COLORS[info.verdict] for s, info in STATUS_INFO.items()}
STATUS_TEXT = {str(s): info.meaning for s, info in STATUS_INFO.items()}
# Legend order: right, then direction, then wrong, then unknown (a missing edge is never drawn).
LEGEND_STATUSES = (EdgeStatus.CORRECT, EdgeStatus.AGREE, EdgeStatus.FLIPPED, EdgeStatus.WRONG, EdgeStatus.CONFLICT,
                   EdgeStatus.UNDOCUMENTED, EdgeStatus.EXTERNAL)
# Relation vocabulary (the typed-graph issue): colour and dash pattern of each; ``False`` = solid.
RELATIONS: dict[str, tuple[str, Any, str]] = {
    "finetune": ("#0072B2", False, "fine-tune (all weights trained)"),
    "adapter": ("#56B4E9", [10, 4], "adapter"),
    "lora": ("#009E73", [4, 4], "LoRA (merged low-rank update)"),
    "quantized": ("#E69F00", [2, 4], "quantized copy"),
    "convert": ("#7F7F7F", [12, 3, 2, 3], "format conversion"),
    "merge": ("#CC79A7", [14, 5], "merge (several parents)"),
    "prune": ("#D55E00", [6, 2, 2, 2], "pruned"),
    "distill": ("#8C564B", [2, 2, 8, 2], "distilled"),
}
TREE_COLORS = ["#DCEBFA", "#FDE7D2", "#DFF3E4", "#F3E1F5", "#FFF6CC", "#E3E3E3", "#D6F0F5", "#F9DADA"]
FAMILY_EDGE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#B8860B", "#555555", "#56B4E9", "#D55E00"]
SELECTED = "#7B2CBF"  # purple: the selected edge / model (in the legend too)
FOCUS = "#FFB000"  # amber border: the searched model; its ancestors and descendants stay opaque
COLOR_MODES = ("auto", "confidence", "agreement", "family", "relation")
BRANCHES = ("edges", "distance")
LAYOUTS = ("auto", "top-down", "left-right", "radial")
FOLD_BUDGET = 90  # models shown before subtrees fold, at most (the canvas may allow fewer)
GEN_PX = 80.0  # one generation top-down at font 15: a box (~30 px) and its edge (110 made forests too tall)
MIN_LABEL_PX = 11  # labels smaller than this on screen are not drawn (hover still names the model)
LABEL_GROWTH = 1.8  # how much labels may grow (in canvas units, into free space) when zoomed out
PACKING = 0.5  # share of a canvas a wrapped forest fills (rows of unequal trees leave gaps)

_EXTERNAL_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script>",
                              re.IGNORECASE | re.DOTALL)
_EXTERNAL_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*/?>", re.IGNORECASE | re.DOTALL)
_EMPTY_HEADING = re.compile(r"<center>\s*<h1>\s*</h1>\s*</center>", re.IGNORECASE)


# --- the library ----------------------------------------------------------------------------------
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
def vis_source() -> tuple[str, str]:
    """``(javascript, css)`` of :func:`vis_assets`, for pages that must inline them."""
    js, css = (f.read_text(encoding="utf-8") for f in vis_assets().files)
    return js, css


def strip_external(html: str) -> str:
    """Remove every ``<script src=http...>`` and ``<link href=http...>`` (CDN) tag."""
    html = _EXTERNAL_SCRIPT.sub("", html)
    html = _EXTERNAL_LINK.sub("", html)
    return _EMPTY_HEADING.sub("", html)


def external_refs(html: str) -> list[str]:
    """External resources an HTML page would load (should be empty)."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)",
                      html, re.IGNORECASE)


# --- small helpers --------------------------------------------------------------------------------
def short_name(model_id: str, limit: int = 22) -> str:
    """A node label: hub ids lose their organisation (``org/name`` -> ``name``), long names are cut."""
    name = model_id.rsplit("/", 1)[-1] if len(model_id) > limit else model_id
    return name if len(name) <= limit + 6 else name[: limit + 5] + "…"


def confidence_color(c: float | None) -> str:
    """Light orange (unsure) to dark blue (sure)."""
    c = 0.0 if c is None or math.isnan(c) else min(max(c, 0.0), 1.0)
    lo, hi = (230, 159, 0), (0, 64, 140)
    r, g, b = (round(lo[i] + (hi[i] - lo[i]) * c) for i in range(3))
    return f"#{r:02x}{g:02x}{b:02x}"


# The two palettes' own colours, used by the app's graph (graph_component's CSS), the slides and the edges'
# labels here (graph_component's family names, in JavaScript, write the first three again).
DARK_BG = "#14161A"  # the talk-mode canvas and a dark slide
DARK_INK = "#F2F2F2"  # text on DARK_BG (16:1)
LIGHT_INK = "#1A1A1A"  # text on white and on the models' light fills (17:1 on white)
DARK_DASH = "#BBBBBB"  # a dash-pattern legend swatch on DARK_BG (9:1; the light theme's grey is 2.4-3.2:1 there)
#: A box legend swatch's fill on DARK_BG: a model's light fill (:data:`TREE_COLORS`), so that the root's #222 border
#: drawn on it shows, as on the canvas (on DARK_BG itself it was invisible).
DARK_SWATCH_FILL = TREE_COLORS[0]
#: The lone models' band (:func:`lone_band`): no family's colour, a neutral grey box outlined in LONE_EDGE (its
#: fill on DARK_BG too), on the app's canvas (graph_component's ``drawFamilies``) as on the slide.
LONE_FILL = "#D9DCE1"
LONE_EDGE = "#8A8F98"


def _luminance(color: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    def f(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    hi, lo = sorted((_luminance(a[:7]), _luminance(b[:7])), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def on_dark(color: str, bg: str = DARK_BG, ratio: float = 3.0) -> str:
    """``color`` (``#rrggbb``) mixed towards white until it stands out from ``bg`` by ``ratio`` (WCAG's 3:1 for
    lines and marks), else unchanged: the confident end of :func:`confidence_color` (#00408C) is 1.9:1 on the
    talk-mode canvas, its edges and legend swatch all but invisible there.

    >>> on_dark("#00408c"), on_dark("#e69f00")
    ('#3366a3', '#e69f00')
    """
    if not (isinstance(color, str) and color.startswith("#") and len(color) >= 7):
        return color
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    for step in range(11):
        mixed = "#" + "".join(f"{round(v + (255 - v) * step / 10):02x}" for v in rgb)
        if contrast(mixed, bg) >= ratio:
            return mixed
    return "#ffffff"


def edge_width(c: float | None) -> float:
    return 1.0 + 6.0 * (0.0 if c is None or math.isnan(c) else min(max(c, 0.0), 1.0))


def vis_dashes(pattern: Any, width: float) -> Any:
    """A relation's dash pattern (``RELATIONS``) for an edge ``width`` pixels wide, as vis-network draws it.

    vis strokes dashed edges with round caps, which grow every dash by the line's width and eat as much of
    every gap: at the widths of confident edges (up to 7 px) the patterns' 3-5 px gaps vanished and every
    relation looked solid. Dashes scale with the width (from 3 px up) and each gap gains the width back, so
    each relation keeps its look at every width. ``False`` (solid) stays solid.
    """
    if not pattern:
        return False
    k = max(1.0, width / 3.0)
    return [round(v * k + (width if i % 2 else 0.0), 1) for i, v in enumerate(pattern)]


def _fmt(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}g}"


def relation(e: Edge) -> str:
    """The edge's relation (``finetune`` until the engine types edges)."""
    r = getattr(e, "relation", None) or "finetune"
    return r if r in RELATIONS else "finetune"


def relation_label(e: Edge) -> str:
    """The edge's relation in words ("fine-tune", "pruned", "merged LoRA"): the card, the edge tables and the
    tooltip name it so; the stored word (:func:`relation`: "prune", "lora") is the file's and the tests'."""
    from mother_core.relations.vocabulary import parse_relation

    return parse_relation(relation(e)).info.label


def merge_parent_lines(e: Edge) -> list[str]:
    """For a merge parent's edge: the merge's own confidence beside this parent's (the edge's), and what puts the
    parent in doubt (``parent_note``); nothing for other edges."""
    if relation(e) != "merge":
        return []
    out = [f"merge confidence {_fmt(getattr(e, 'relation_confidence', math.nan), 2)} (that the child is a merge); "
           f"this parent {_fmt(e.confidence, 2)}"]
    note = getattr(e, "parent_note", "")  # getattr: survives module reloads, as relation() does
    if note:
        out.append(f"this parent is in doubt: {note}")
    return out


def status_phrase(status: str, strong: str = "") -> str:
    """An edge status named once with its meaning: "correct (in the truth)", "wrong (not in the truth)".

    Some meanings begin with the status's own name (:data:`STATUS_TEXT`): "correct: correct (in the truth)"
    read it twice. ``strong`` wraps the name (``"**"``: bold in markdown)."""
    meaning = STATUS_TEXT.get(status, "")
    name = f"{strong}{status}{strong}"
    if meaning.startswith(status):
        return name + meaning[len(status):]
    return f"{name} ({meaning})" if meaning else name


def edge_tooltip(e: Edge, status: str | None) -> str:
    lines = [f"{e.parent} → {e.child}", f"how it was made: {relation_label(e)}", f"distance {_fmt(e.distance)}",
             (f"confidence {_fmt(e.confidence, 2)} (placement {_fmt(e.placement_confidence, 2)}, "
              f"direction {_fmt(e.direction_confidence, 2)})")]
    weight = getattr(e, "merge_weight", None)
    if weight is not None and not (isinstance(weight, float) and math.isnan(weight)):
        lines.append(f"merge weight {_fmt(weight, 2)}")
    lines += merge_parent_lines(e)
    if status:
        lines.append(status_phrase(status))
    if e.constrained:
        lines.append("set by you (constraint)")
    if getattr(e, "tie_spectral", False):  # getattr: survives module reloads, as relation() does
        lines.append("moved from a chain to a sibling of its parent by the spectrum of the weight difference, "
                     "not by distance")
    elif getattr(e, "tie_lifted", False):
        lines.append("moved from a chain to a sibling of its parent by the shape of the weight difference, "
                     "not by distance")
    elif getattr(e, "tie_kurtosis", None):
        lines.append(f"parent chosen among {len(e.tie_kurtosis)} near-tied candidates by the shape of the "
                     "weight difference, not by distance")
    return "\n".join(lines)


# --- the forest and what is folded ----------------------------------------------------------------
@dataclass(frozen=True)
class Forest:
    """The recovered forest for drawing: one primary parent per model (a merge child's heaviest
    parent places it), every parent edge kept for drawing."""

    ids: tuple[str, ...]
    primary: dict[str, str]  # child -> the parent that places it
    children: dict[str, tuple[str, ...]]
    roots: tuple[str, ...]

    @classmethod
    def of(cls, rec: Recovery) -> Forest:
        best: dict[str, Edge] = {}
        for e in rec.edges:
            w = getattr(e, "merge_weight", None)
            old = best.get(e.child)
            if old is None or (w is not None and w > (getattr(old, "merge_weight", None) or -1.0)):
                best[e.child] = e
        primary = {c: e.parent for c, e in best.items()}
        kids: dict[str, list[str]] = defaultdict(list)
        for c, p in primary.items():
            kids[p].append(c)
        ids = tuple(rec.model_ids)
        roots = tuple(i for i in ids if i not in primary)
        return cls(ids, primary, {p: tuple(sorted(v)) for p, v in kids.items()}, roots)

    @functools.cached_property
    def _walk(self) -> walk.Forest[str]:
        return walk.Forest(self.ids, self.primary)  # the engine's walks (mother_core/walk.py)

    def ancestors(self, node: str) -> list[str]:
        return self._walk.ancestors(node)

    def descendants(self, node: str) -> set[str]:
        return self._walk.descendants(node)

    def sizes(self) -> dict[str, int]:
        """Subtree size (the model included) of every model; one on a cycle is drawn alone."""
        return self._walk.subtree_sizes()


def fold(forest: Forest, *, folded: Iterable[str] = (), opened: Iterable[str] = (),
         budget: int = FOLD_BUDGET) -> tuple[list[str], dict[str, int]]:
    """Which models to show, and which shown models stand for a folded subtree (with its hidden count).

    Generation by generation from the roots, a model's children are shown while the total stays within
    ``budget`` (bigger subtrees first, so families stay together); ``opened`` models always show their
    children, ``folded`` ones never do. Small sets show everything.
    """
    folded, opened = set(folded), set(opened)
    size = forest.sizes()
    shown: list[str] = list(forest.roots)
    frontier = sorted(forest.roots, key=lambda r: -size[r])
    count = len(shown)
    hidden: dict[str, int] = {}
    while frontier:
        nxt: list[str] = []
        for v in frontier:
            kids = list(forest.children.get(v, ()))
            if not kids:
                continue
            if v not in folded and (v in opened or count + len(kids) <= budget):
                shown.extend(kids)
                count += len(kids)
                nxt.extend(kids)
            else:
                hidden[v] = size[v] - 1
        frontier = sorted(nxt, key=lambda r: -size[r])
    under = set().union(*(forest.descendants(h) for h in hidden)) if hidden else set()
    shown += [i for i in forest.ids if i not in set(shown) and i not in under]  # cycles: drawn alone
    order = {m: k for k, m in enumerate(forest.ids)}
    return sorted(set(shown), key=order.__getitem__), hidden


# --- building the network -------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphData:
    """What the graph component draws (JSON-ready), and what the page needs to know about it."""

    key: str  # changes exactly when the drawing changes (the browser keeps its view otherwise)
    nodes: list[dict]
    edges: list[dict]
    options: dict
    legend: str  # HTML, every model name escaped
    edge_ids: dict[str, EdgeKey] = field(default_factory=dict)  # vis edge id -> (parent, child)
    folded: dict[str, int] = field(default_factory=dict)  # shown model -> models hidden under it
    hidden: frozenset[str] = frozenset()
    legend_rows: tuple[tuple[str, str, str], ...] = ()  # (kind, colour or pattern, text): for slides
    label_growth: float = 1.0  # how much labels may grow when zoomed out without reaching a neighbour
    # The same forest wrapped into other numbers of rows, or left to right with layout "auto"
    # ({"pos": {id: [x, y]}, "dir", "growth"}), the drawn one first: the browser draws the one that fits
    # its canvas best (:func:`_arrange`; empty: only one way to draw it).
    arrangements: tuple[dict, ...] = ()
    # One per family (recovered tree) of two or more shown models, largest first: ``{"id": tree id, "label":
    # "m-478868 · 31 models", "color": fill, "edge": border}``. The browser draws each family's models on a
    # tinted box under this label, so a forest zoomed out past readable model names still reads as families.
    families: tuple[dict, ...] = ()
    # The lone models (no parent, no child, nothing folded under them), in drawing order: laid out in a grid under
    # everything else (:func:`lone_band`) and drawn on a grey box named :func:`lone_title`.
    lone: tuple[str, ...] = ()

    def edge_id(self, edge: EdgeKey | None) -> str | None:
        if edge is None:
            return None
        return next((i for i, e in self.edge_ids.items() if e == tuple(edge)), None)


def family_color(tree: int) -> str:
    """The strong colour of family (recovered tree) ``tree``: its edges and legend line in the family view."""
    return FAMILY_EDGE[tree % len(FAMILY_EDGE)]


def node_fill(tree: int, mode: str) -> str:
    """The fill of a model of family ``tree``: its family's colour, tinted, in the family view (so the edges
    drawn in it stand out), else the soft per-tree colour."""
    return family_color(tree) + "55" if mode == "family" else TREE_COLORS[tree % len(TREE_COLORS)]


def _edge_color(e: Edge, status: str | None, mode: str, family: int) -> str:
    if mode == "agreement" and status:
        return STATUS_COLORS.get(status, "#444444")
    if mode == "family":
        return family_color(family)
    if mode == "relation":
        return RELATIONS[relation(e)][0]
    return confidence_color(e.confidence)


def resolve_mode(mode: str, statuses: dict) -> str:
    """``auto``: agreement with the reference when there is one, else confidence."""
    if mode == "auto" or mode not in COLOR_MODES:
        return "agreement" if statuses else "confidence"
    return "confidence" if mode == "agreement" and not statuses else mode


def build_graph(
    rec: Recovery,
    *,
    statuses: dict[EdgeKey, str] | None = None,
    reference: str = "",
    layout: str = "top-down",
    branch: str = "edges",
    color_by: str = "auto",
    focus: str | None = None,
    folded: Iterable[str] = (),
    opened: Iterable[str] = (),
    budget: int = FOLD_BUDGET,
    font_size: int = 15,
    aspect: float = 1.8,
    dark: bool = False,
    height: int | None = None,
) -> GraphData:
    """The drawing of a recovery: folded subtrees, positions, colours and legend (see the module doc).

    Parameters
    ----------
    rec : Recovery
        What to draw. Several edges into one child (a merge) are all drawn; the heaviest places it.
    statuses : dict, optional
        ``(parent, child) -> status`` against a truth or the declared lineage; ``"missing"`` edges that
        were not recovered are drawn dotted and curved, above the tree's own edges.
    layout, branch, color_by : str
        :data:`LAYOUTS` (``"auto"``: top-down, or left to right in a canvas where only that is readable
        whole; the browser decides), :data:`BRANCHES`, :data:`COLOR_MODES`.
    focus : str, optional
        A model shown with its ancestors and descendants; the rest is faded.
    folded, opened : iterable of str
        The user's choices of subtrees to fold or open (see :func:`fold`).
    font_size : int
        Label size in canvas pixels at zoom 1 (talk mode uses a larger one).
    aspect : float
        Width / height of the canvas: a wide forest wraps into rows to fit it.
    dark : bool
        Light labels on a dark background (talk mode).
    height : int, optional
        Canvas height in pixels: folding then also keeps the models shown below the roots within what
        the canvas (``height * aspect`` wide) holds with every label at least :data:`MIN_LABEL_PX` on
        screen (:func:`readable_capacity`), so a large set opens with few, readable models.
    """
    statuses = statuses or {}
    mode = resolve_mode(color_by, statuses)
    forest = Forest.of(rec)
    models = {m.id: m for m in rec.models}
    focus = focus if focus in models else None
    opened = set(opened) | (set(forest.ancestors(focus)) if focus else set())
    if height:
        cell_w = max(70.0, max((len(short_name(i)) for i in forest.ids), default=8) * font_size * 0.6 + 24)
        # The folding budget keeps the cell it was sized with (110 px a generation): with the tighter
        # drawing it admitted every model of the typed demo in talk mode, too many to read whole.
        room = readable_capacity(height, aspect, font_size, cell_w, 110.0 * max(1.0, font_size / 15))
        budget = min(budget, len(forest.roots) + room)  # every root is shown; room for that many more
    shown, hidden_under = fold(forest, folded=folded, opened=opened, budget=budget)
    shown_set = set(shown)
    lineage = ({focus} | set(forest.ancestors(focus)) | forest.descendants(focus)) if focus else None

    primary_edges = [(forest.primary[c], c) for c in shown if c in forest.primary and forest.primary[c] in shown_set]
    lengths = ({(e.parent, e.child): e.distance for e in rec.edges} if branch == "distance" else None)
    longest = max((len(short_name(i)) for i in shown), default=8)
    label_px = longest * font_size * 0.6 + 24  # label width: neighbours never overlap
    arrangements: tuple[dict, ...] = ()
    if layout == "radial":
        unit = font_size * 3.0
        raw = forest_positions(shown, primary_edges, orientation=layout, lengths=lengths)
        pos = {n: (x * unit * 2.2, y * unit * 2.2) for n, (x, y) in raw.items()}
        growth = 1.0
    else:
        pos, growth, arrangements = _arrange(shown, primary_edges, layout, lengths, font_size, label_px, aspect)

    text = DARK_INK if dark else LIGHT_INK

    def ink(color: str) -> str:  # a line's colour as this drawing draws it
        return on_dark(color) if dark else color

    net = Network(directed=True, cdn_resources="remote")
    match = IdMatcher(rec.model_ids)  # once: every tooltip names the model its declared parent matches
    for mid in shown:
        m = models[mid]
        x, y = pos[mid]
        is_root = mid not in forest.primary
        fill = node_fill(m.tree, mode)
        n_hidden = hidden_under.get(mid, 0)
        label = short_name(mid) + (f"\n▸ +{n_hidden}" if n_hidden else "")  # the legend explains it
        faded = lineage is not None and mid not in lineage
        border = FOCUS if mid == focus else ("#222222" if is_root else "#777777")
        net.add_node(mid, label=label, title=node_tooltip(m, rec, is_root, n_hidden, match), x=round(x, 1),
                     y=round(y, 1), shape="box", physics=False,
                     borderWidth=4 if mid == focus else (3 if is_root else 1),
                     shapeProperties={"borderDashes": [5, 3] if n_hidden else False},
                     color={"background": fill, "border": border,
                            "highlight": {"background": "#E9D8FD", "border": SELECTED}},
                     opacity=0.25 if faded else 1.0, family=m.tree,
                     font={"face": "sans-serif", "color": LIGHT_INK})
    edge_ids: dict[str, EdgeKey] = {}
    drawn: set[EdgeKey] = set()
    for i, e in enumerate(rec.edges):
        if e.parent not in shown_set or e.child not in shown_set:
            continue
        key = (e.parent, e.child)
        drawn.add(key)
        s = statuses.get(key)
        eid = f"e{i}"
        edge_ids[eid] = key
        color = ink(_edge_color(e, s, mode, models[e.child].tree))
        faded = lineage is not None and not (e.parent in lineage and e.child in lineage)
        extra_parent = forest.primary.get(e.child) != e.parent
        width = round(edge_width(e.confidence), 2)
        net.add_edge(e.parent, e.child, id=eid, title=edge_tooltip(e, s), width=width, relation=relation(e),
                     color={"color": color, "highlight": SELECTED, "hover": color, "opacity": 0.2 if faded else 1.0},
                     dashes=vis_dashes(RELATIONS[relation(e)][1], width),
                     label="✎ set by you" if e.constrained else None,
                     font={"size": max(10, font_size - 3), "color": text, "strokeWidth": 0} if e.constrained else None,
                     smooth={"enabled": True, "type": "curvedCW", "roundness": 0.25} if extra_parent else None)
    n_missing = 0
    for (p, c), s in statuses.items():
        if s == EdgeStatus.MISSING and (p, c) not in drawn and p in shown_set and c in shown_set:
            n_missing += 1
            eid = f"m{n_missing}"
            edge_ids[eid] = (p, c)
            net.add_edge(p, c, id=eid, title=f"{p} → {c}\nmissing: {STATUS_TEXT['missing']}", width=2.5,
                         dashes=[2, 5], color={"color": ink(STATUS_COLORS[EdgeStatus.MISSING]), "highlight": SELECTED},
                         smooth={"enabled": True, "type": "curvedCCW", "roundness": 0.35})
    nodes = [_clean(n) for n in net.nodes]
    edges = [_clean(e) for e in net.edges]
    # Lone models (no parent, no child) in a named band under the families, in every arrangement the browser
    # may pick (and the slide draws): the layout's wrapped strip of them read as an accident.
    labels = {n["id"]: str(n.get("label", "")) for n in nodes}
    ends = [(e["from"], e["to"]) for e in edges]
    pos, lone = lone_band(shown, labels, ends, hidden_under, {n["id"]: (n["x"], n["y"]) for n in nodes},
                          font_size, aspect, round(min(LABEL_GROWTH, max(1.0, growth)), 3))  # as label_growth
    if lone:
        nodes = [{**n, "x": round(pos[n["id"]][0], 1), "y": round(pos[n["id"]][1], 1)} for n in nodes]
        # Each arrangement with the band shaped for the page's guess of the canvas, then (for the browser to pick
        # where it fits better) for a canvas 2.5 times as wide: talk mode's canvas is ~5:1 where the page guesses
        # 16:7, and a band of 40 in 4 rows under the trees left the drawing at half the zoom of the old strip.
        banded: list[dict] = []
        for wide in (1.0, 2.5):
            for a in arrangements:
                alt = {**a, "pos": {m: [round(x, 1), round(y, 1)] for m, (x, y) in lone_band(
                    shown, labels, ends, hidden_under, {m: (xy[0], xy[1]) for m, xy in a["pos"].items()},
                    font_size, aspect * wide, a["growth"])[0].items()}}
                if alt not in banded:
                    banded.append(alt)
        arrangements = tuple(banded)
    edges.sort(key=lambda e: 1 if str(e.get("id", "")).startswith("m") else 0)  # missing on top
    options = _options(font_size, "top-down" if layout == "auto" else layout)
    rows = tuple(legend_items(statuses, reference, mode, rec, folded_any=bool(hidden_under), focus=focus, dark=dark))
    legend = _legend_markup(rows)
    digest = hashlib.sha1(json.dumps([nodes, edges, options, legend], sort_keys=True, default=str).encode())
    hidden = frozenset(set(forest.ids) - shown_set)
    return GraphData(digest.hexdigest()[:16], nodes, edges, options, legend, edge_ids, hidden_under, hidden, rows,
                     round(min(LABEL_GROWTH, max(1.0, growth)), 3), arrangements,
                     families_of(rec, shown_set, mode), tuple(lone))


def lone_title(n: int) -> str:
    """The name of the lone models' band (the app's canvas and the slide): ``"3 unrelated models (no parent, no
    child found)"``."""
    return f"{n} unrelated model{'s' if n != 1 else ''} (no parent, no child found)"


def lone_band(order: list[str], labels: dict[str, str], edges: Iterable[EdgeKey], folded: dict[str, int],
              pos: dict[str, tuple[float, float]], font: float, aspect: float,
              growth: float = 1.0) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """Positions (canvas px, y down) with the lone models (no parent, no child, nothing folded under them) in a
    grid under everything else, and those models in drawing order; the one home of that decision for the app's
    canvas and the slide (:func:`build_graph` applies it to every arrangement, the slide draws what it gets).

    The layout packs models without an edge after the trees in a strip that wraps like them: on a slide and on
    the canvas it read as an accident, one row of boxes with a last one alone below, mixed with families folded
    to their root ("m-0466ed ▸ +2"). Those folded roots keep a grid of their own right under the trees; the lone
    models get theirs below, two generations down (room for the band's name), boxed and named
    (:func:`lone_title`) by the canvas' ``drawFamilies`` and the slide's ``_draw_band``. Columns are the labels'
    width (as the layout's); the band is as wide as the trees, wider when the whole drawing then fits a canvas
    of ``aspect`` (width / height) at a larger zoom.

    Parameters
    ----------
    order : list of str
        The models drawn, in drawing order.
    labels : dict
        Model -> its label (a folded one has a second line).
    edges : iterable of (str, str)
        Every edge drawn (a model at either end of one is not lone).
    folded : dict
        Shown model -> models folded under it.
    pos : dict
        Model -> ``(x, y)`` as laid out.
    font : float
        Label size in canvas px (the grid's cells and rows grow with it).
    aspect : float
        Width / height of the canvas the drawing is meant for.
    growth : float
        How much the arrangement lets labels grow zoomed out (``GraphData.label_growth``): the grid's columns
        leave room for that (left to right, 1.12: the band's grown boxes touched their neighbours).
    """
    linked = {x for e in edges for x in e}
    loose = [m for m in order if m not in linked]
    lone = [m for m in loose if not folded.get(m)]
    if not lone:
        return pos, []
    # A column wider than the layout's (0.6 em a character, 24 px): every lone model is a root, its border bold
    # (3 px a side), and its "m-" + hex digits are 0.64 em wide in the browser's sans-serif; at 0.6 em and 24 px
    # the band's boxes overlapped their neighbours on the canvas (105 px boxes 97 px apart).
    cell = label_chars(labels.get(m, "") for m in order) * font * 0.72 * max(1.0, growth) + 32
    gen = GEN_PX * max(1.0, font / 15)
    rest = {k: v for k, v in pos.items() if k in linked}
    x0 = min((x for x, _ in rest.values()), default=0.0)
    width = max((x for x, _ in rest.values()), default=x0) - x0 + cell
    bottom = max((y for _, y in rest.values()), default=-gen)
    out = dict(rest)

    def grid(ids: list[str], top: float, row: float, fit: bool = False) -> float:
        """``ids`` in rows from ``top``; the y of the last row. ``fit``: as many columns as make the whole drawing
        (what is already placed and this grid) fit a canvas of ``aspect`` at the largest zoom (a near tie keeps
        fewer): in talk mode's wide canvas a grid shaped by its own count (8 x 5 for 40) left the drawing
        at half the zoom the layout's strip had."""
        cols = max(1, int(width // cell), math.ceil(math.sqrt(len(ids) * aspect * row / cell)))
        if fit:
            y0 = min((y for _, y in out.values()), default=top)
            cols, best = max(1, min(int(width // cell), len(ids))), 0.0
            for c in range(cols, len(ids) + 1):
                rows = math.ceil(len(ids) / c)
                zoom = min(aspect / max(width, c * cell), 1 / (top - y0 + rows * row))
                if zoom > best * 1.02:
                    cols, best = c, zoom
        cols = min(cols, len(ids))
        for i, m in enumerate(ids):
            out[m] = (x0 + (i % cols) * cell, top + (i // cols) * row)
        return top + (len(ids) - 1) // cols * row

    folds = [m for m in loose if folded.get(m)]
    if folds:  # families folded to their root: drawn as the strip drew them, but as a grid of their own
        bottom = grid(folds, bottom + 1.5 * gen, gen)
    # Two generations down: room for the box above's padding, the band's name and its own padding.
    grid(lone, bottom + 2 * gen if out.keys() - set(lone) else 0.0, 0.75 * gen, fit=True)
    return {m: out[m] for m in order}, lone


def families_of(rec: Recovery, shown: set[str], mode: str = "confidence") -> tuple[dict, ...]:
    """The families (recovered trees) the drawing groups: those with two or more shown models, largest first,
    each labelled with its root and its size (folded models counted), in its models' fill colour."""
    # A lone shown model needs no box: its own label names it.
    kept = sorted((t for t in rec.trees if sum(1 for m in t.members if m in shown) >= 2),
                  key=lambda t: (-len(t.members), t.id))
    return tuple({"id": t.id, "label": f"{short_name(t.root)} · {len(t.members)} models",
                  "color": node_fill(t.id, mode), "edge": family_color(t.id)} for t in kept)


def _arrange(shown: list[str], primary_edges: list[EdgeKey], layout: str, lengths: dict | None, font_size: int,
             label_px: float, aspect: float) -> tuple[dict[str, tuple[float, float]], float, tuple[dict, ...]]:
    """Positions (canvas px) of the drawing, how far its labels may grow, and its alternatives for the browser
    (``{"pos": {id: [x, y]}, "dir": "vertical" | "horizontal", "growth": g}``, the drawn one first).

    The alternatives are the forest wrapped into 1-6 rows and, for ``layout="auto"``, the same left to right
    (a single tree wider than the canvas, whose leaves no wrapping splits). ``aspect`` is the page's guess of
    the canvas' width / height; the real one depends on the window (a 614 px column at 1500 px, 482 px at
    1280): a forest wrapped for the guess opened zoomed in to its top-left corner when the canvas was
    narrower. The browser measures it and picks (:mod:`explorer_ui.graph_component`).
    """
    orientations = ("top-down", "left-right") if layout == "auto" else (layout,)
    drawn: dict[str, tuple[float, float]] = {}
    drawn_growth = 1.0
    out: list[dict] = []
    for orientation in orientations:
        pos, growth, options = _wrappings(shown, primary_edges, orientation, lengths, font_size, label_px, aspect)
        if not out:
            drawn, drawn_growth = pos, growth
        out += [{"pos": {n: [round(x, 1), round(y, 1)] for n, (x, y) in o.items()},
                 "dir": "horizontal" if orientation == "left-right" else "vertical",
                 "growth": round(min(LABEL_GROWTH, max(1.0, growth)), 3)} for o in options]
    return drawn, drawn_growth, tuple(out) if len(out) > 1 else ()


def _wrappings(shown: list[str], primary_edges: list[EdgeKey], layout: str, lengths: dict | None, font_size: int,
               label_px: float, aspect: float) -> tuple[dict[str, tuple[float, float]], float,
                                                        list[dict[str, tuple[float, float]]]]:
    """One orientation: positions wrapped for ``aspect``, label growth, and every distinct wrapping (1-6 rows,
    the first one first)."""
    if layout == "left-right":
        col, gen = font_size * 2.6, label_px + 50
        growth = col / (font_size * 1.25 + 16)
        guess = wrap_width(shown, primary_edges, 1 / aspect, col, gen)
    else:
        col, gen = max(70.0, label_px), GEN_PX * max(1.0, font_size / 15)
        growth = col / label_px
        guess = wrap_width(shown, primary_edges, aspect, col, gen)

    def place(width: float | None) -> dict[str, tuple[float, float]]:
        raw = forest_positions(shown, primary_edges, orientation=layout, lengths=lengths, max_width=width)
        if layout == "left-right":
            return {n: (x * gen, y * col) for n, (x, y) in raw.items()}
        return {n: (x * col, y * gen) for n, (x, y) in raw.items()}

    pos = place(guess)
    one_row = forest_positions(shown, primary_edges, orientation="top-down", max_width=None)
    total = max((x for x, _ in one_row.values()), default=0.0) + 1
    seen = {tuple(sorted(pos.items()))}
    options = [pos]
    for rows in range(1, 7):
        alt = place(None if rows == 1 else total / rows + 1)
        sig = tuple(sorted(alt.items()))
        if sig not in seen:
            seen.add(sig)
            options.append(alt)
    return pos, growth, options


def readable_capacity(height: int, aspect: float, font_size: int, cell_w: float, cell_h: float) -> int:
    """How many models a ``height`` x ``height * aspect`` canvas shows with labels still readable.

    Labels of ``font_size`` canvas pixels are :data:`MIN_LABEL_PX` on screen at zoom
    ``MIN_LABEL_PX / font_size``; at that zoom each model's cell (``cell_w`` x ``cell_h`` canvas pixels)
    takes its share of the canvas, of which a wrapped forest fills about :data:`PACKING`.
    """
    zoom = MIN_LABEL_PX / font_size
    return max(1, int(PACKING * height * height * aspect / (cell_w * cell_h * zoom * zoom)))


# The choice among ``GraphData.arrangements`` for a canvas of a given size, in the browser (the app's graph and
# the exported page) and in Python (the slide): one rule, written twice, kept alike by the tests.
ARRANGE_JS = r"""
// The index of the arrangement (d.arrangements: wrappings, and with layout "auto" the same left to right) that
// fits a w x h canvas best: the largest zoom (a near tie keeps the earlier: fewer rows); the first direction
// (top-down) stays unless it cannot be read whole and the other can (a single wide tree).
function pickArrangement(list, w, h, font, threshold, labels) {
  if (list.length < 2 || !w || !h) return 0;
  const cell = Math.max(...labels.map(l => String(l || '').split('\n')[0].length)) * font * 0.6 + 24;
  const scores = list.map((a, i) => {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const [x, y] of Object.values(a.pos)) {
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    const s = Math.min(1.6, w / (x1 - x0 + cell), h / (y1 - y0 + 3 * font));  // fit() zooms to 1.6 at most
    return {i, s, dir: a.dir, readable: s * font * a.growth >= threshold};
  });
  const best = cands => cands.reduce((b, x) => (x.s > b.s * 1.02 ? x : b));
  let pick = best(scores.filter(x => x.dir === list[0].dir));
  const other = scores.filter(x => x.dir !== list[0].dir);
  if (!pick.readable && other.length && best(other).readable) pick = best(other);
  return pick.i;
}
"""


def label_font(data: GraphData) -> float:
    """The size of ``data``'s labels in canvas px (its options' node font, 15 when unset)."""
    return float(data.options.get("nodes", {}).get("font", {}).get("size", 15))


def label_chars(labels: Iterable[object]) -> int:
    """The characters of the longest of ``labels``' first lines (a folded model's label has a second): what a
    column's width is sized by, in the layout's grid (:func:`label_cell`) and the lone models' (:func:`lone_band`)."""
    return max(len(str(label).split("\n")[0]) for label in labels)


def label_cell(data: GraphData) -> float:
    """The width of one column of ``data`` in canvas px: its longest label's first line at 0.6 em a character
    and a 24-px gap, as the layout sizes its columns (:data:`ARRANGE_JS`'s ``cell``, in the browser)."""
    return label_chars(n.get("label", "") for n in data.nodes) * label_font(data) * 0.6 + 24


def pick_arrangement(data: GraphData, width: float, height: float) -> int:
    """Which of ``data.arrangements`` a ``width`` x ``height`` canvas draws (0: the first, or none to choose):
    :data:`ARRANGE_JS`'s rule, for drawings made without a browser (the slide)."""
    items = data.arrangements
    if len(items) < 2 or width <= 0 or height <= 0:
        return 0
    font = float(data.options["nodes"]["font"]["size"])
    threshold = float(data.options["nodes"]["scaling"]["label"]["drawThreshold"])
    cell = label_cell(data)
    scores = []
    for i, a in enumerate(items):
        xs = [p[0] for p in a["pos"].values()]
        ys = [p[1] for p in a["pos"].values()]
        s = min(1.6, width / (max(xs) - min(xs) + cell), height / (max(ys) - min(ys) + 3 * font))
        scores.append((i, s, a["dir"], s * font * a["growth"] >= threshold))

    def best(cands: list[tuple[int, float, str, bool]]) -> tuple[int, float, str, bool]:
        out = cands[0]
        for x in cands[1:]:
            if x[1] > out[1] * 1.02:
                out = x
        return out

    pick = best([x for x in scores if x[2] == items[0]["dir"]])
    other = [x for x in scores if x[2] != items[0]["dir"]]
    if not pick[3] and other and best(other)[3]:
        pick = best(other)
    return pick[0]


def arranged(data: GraphData, width: float, height: float) -> GraphData:
    """``data`` drawn as a ``width`` x ``height`` canvas draws it (:func:`pick_arrangement`): positions, edge
    curves and label growth of the chosen arrangement; ``data`` itself when it is the first."""
    i = pick_arrangement(data, width, height)
    if i == 0:
        return data
    a = data.arrangements[i]
    nodes = [{**n, "x": a["pos"][n["id"]][0], "y": a["pos"][n["id"]][1]} if n["id"] in a["pos"] else n
             for n in data.nodes]
    options = json.loads(json.dumps(data.options))
    if options["edges"]["smooth"].get("enabled"):
        options["edges"]["smooth"]["forceDirection"] = a["dir"]
    return replace(data, nodes=nodes, options=options, label_growth=float(a["growth"]))


def _clean(item: dict) -> dict:
    return {k: v for k, v in item.items() if v is not None}


def _options(font_size: int, layout: str) -> dict:
    forward = {"top-down": "vertical", "left-right": "horizontal"}.get(layout, "none")
    smooth = ({"enabled": True, "type": "cubicBezier", "forceDirection": forward, "roundness": 0.4}
              if forward != "none" else {"enabled": False})
    return {
        "physics": {"enabled": False},
        "layout": {"hierarchical": {"enabled": False}, "improvedLayout": False},
        "interaction": {"hover": True, "tooltipDelay": 120, "multiselect": False, "navigationButtons": False,
                        "selectConnectedEdges": False, "hideEdgesOnDrag": False, "zoomSpeed": 0.6},
        "edges": {"arrows": {"to": {"enabled": True, "scaleFactor": 0.7}}, "smooth": smooth,
                  "selectionWidth": 4, "hoverWidth": 1.5},
        # Labels keep at least MIN_LABEL_PX on screen: zoomed out, the page enlarges them (up to
        # LABEL_GROWTH x) and below that hides them rather than draw them unreadable.
        "nodes": {"margin": 8, "font": {"size": font_size},
                  # vis fades a label from drawThreshold down to drawThreshold - 1 px and hides it below:
                  # full colour from MIN_LABEL_PX + 1, nothing under MIN_LABEL_PX.
                  "scaling": {"label": {"enabled": False, "drawThreshold": MIN_LABEL_PX + 1,
                                        "maxVisible": 2 * font_size + 6}}},
    }


def node_tooltip(m: ModelNode, rec: Recovery, is_root: bool, n_hidden: int = 0, match: IdMatcher | None = None) -> str:
    """A node's hover text. Its declared parent reads as the model of the set it names, with the text as
    written (a path on another machine) on the next line; ``match``: the set's ids, built once per graph."""
    fmt = f"format {m.format or '?'}"
    lines = [m.id, f"{fmt} · {m.n_params:,} parameters" if m.n_params else fmt,
             f"family (tree) {m.tree}" + (" · root" if is_root else ""), f"kurtosis {_fmt(m.kurtosis)}"]
    if m.declared_parent:
        shown, written = declared_text(m.declared_parent, declared_in_set(
            m.id, m.declared_parent, match if match is not None else IdMatcher(rec.model_ids)))
        lines.append(f"declared parent: {shown}")
        if written:
            lines.append(f"  declared as: {written}")
    if n_hidden:
        lines.append(f"{n_hidden} models folded below: double-click to open")
    return "\n".join(lines)


def legend_items(statuses: dict, reference: str, mode: str, rec: Recovery, *, folded_any: bool = False,
                 focus: str | None = None, dark: bool = False) -> list[tuple[str, str, str]]:
    """The legend as ``(kind, colour or pattern, text)`` rows: every mark the graph can show; ``dark``: line
    colours as a dark drawing draws them (:func:`on_dark`)."""
    if dark:
        return [(k, on_dark(w) if k in ("line", "dots") else w, t)
                for k, w, t in legend_items(statuses, reference, mode, rec, folded_any=folded_any, focus=focus)]
    items: list[tuple[str, str, str]] = []
    if mode == "agreement":
        shown = [str(s) for s in LEGEND_STATUSES if s in set(statuses.values())]
        items += [("line", STATUS_COLORS[s], f"{s} vs {reference}") for s in shown]
    elif mode == "family":
        items += [("line", family_color(t.id), f"family {t.id} (root {t.root})")
                  for t in rec.trees[:8]]
    elif mode == "relation":
        present = sorted({relation(e) for e in rec.edges})
        items += [("line", RELATIONS[r][0], RELATIONS[r][2]) for r in present]
    else:
        items += [("line", confidence_color(0.1), "low confidence"), ("line", confidence_color(0.95),
                                                                       "high confidence")]
    # One swatch per relation drawn, in its own pattern (fine-tunes solid), whatever colours the edges.
    kinds = {relation(e) for e in rec.edges}
    present = [r for r in RELATIONS if r in kinds] if kinds - {"finetune"} else []
    items += [("dash", json.dumps(RELATIONS[r][1]), RELATIONS[r][2]) for r in present]
    if EdgeStatus.MISSING in set(statuses.values()):
        items.append(("dots", STATUS_COLORS[EdgeStatus.MISSING], f"in the {reference}, not recovered (curved)"))
    items += [("text", "", "width = confidence"), ("box", "#222222", "bold border = root"),
              ("line", SELECTED, "selected")]
    if folded_any:
        items.append(("fold", "#777777", "dashed box, ▸ +k = k models folded below (double-click opens)"))
    if focus:
        items.append(("box", FOCUS, "searched model; faded = outside its lineage"))
    if any(e.constrained for e in rec.edges):
        items.append(("text", "", "✎ = set by you"))
    return items


def legend_html(statuses: dict, reference: str, mode: str, rec: Recovery, *, folded_any: bool = False,
                focus: str | None = None, dark: bool = False) -> str:
    """The legend (:func:`legend_items`) as the HTML of the graph's legend strip."""
    return _legend_markup(legend_items(statuses, reference, mode, rec, folded_any=folded_any, focus=focus,
                                       dark=dark))


def _legend_markup(rows: Iterable[tuple[str, str, str]]) -> str:
    """Legend ``rows`` (:func:`legend_items`) as HTML, each row's text escaped."""
    out = []
    for kind, what, text in rows:
        t = _html.escape(text)
        if kind == "line":
            out.append(f'<span class="mg-sw" style="background:{what}"></span>{t}')
        elif kind == "dots":
            out.append(f'<span class="mg-sw mg-dots" style="border-color:{what}"></span>{t}')
        elif kind == "dash":  # the relation's own pattern (a CSS dashed border draws one pattern for all)
            dash = " ".join(str(v) for v in vis_dashes(json.loads(what), 2.5) or [30, 0])
            out.append(f'<svg class="mg-dash" width="30" height="6" aria-hidden="true"><line x1="0" y1="3" x2="30" '
                       f'y2="3" stroke="currentColor" stroke-width="2.5" stroke-linecap="round" '
                       f'stroke-dasharray="{dash}"/></svg>{t}')
        elif kind in ("box", "fold"):
            style = "dashed" if kind == "fold" else "solid"
            out.append(f'<span class="mg-box" style="border:2px {style} {what}"></span>{t}')
        else:
            out.append(t)
    return " &nbsp; ".join(f'<span class="mg-item">{x}</span>' for x in out)


def lineage_of(rec: Recovery, model: str) -> tuple[list[str], list[str]]:
    """A model's ancestors (nearest first) and descendants (sorted)."""
    f = Forest.of(rec)
    return f.ancestors(model), sorted(f.descendants(model))


# --- a standalone page (download) -----------------------------------------------------------------
#: The properties every JavaScript object has (``Object.prototype``'s): vis-network keeps nodes in plain objects
#: keyed by id, where a model named ``__proto__`` set the prototype and one named ``hasOwnProperty`` shadowed the
#: method vis calls, and the model was not drawn. Such ids go to vis with :data:`VIS_MARK` in front: here for the
#: exported page, and for the app's graph through the table :func:`vis_id_table` gives its script (one rule, this
#: one: the script only looks ids up in that table, both ways).
JS_OBJECT_PROPERTIES = frozenset({
    "__proto__", "constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable", "toLocaleString",
    "toString", "valueOf", "__defineGetter__", "__defineSetter__", "__lookupGetter__", "__lookupSetter__"})
VIS_MARK = "\u2063"  # INVISIBLE SEPARATOR: shown as nothing where vis writes an id


def vis_id(model: str) -> str:
    """The id vis-network is given for ``model`` (see :data:`JS_OBJECT_PROPERTIES`).

    >>> vis_id("m1"), vis_id("__proto__") == VIS_MARK + "__proto__"
    ('m1', True)
    """
    return VIS_MARK + model if model in JS_OBJECT_PROPERTIES or model.startswith(VIS_MARK) else model


def vis_id_table(data: GraphData) -> list[list[str]]:
    """``[model, vis id]`` for each model of ``data`` whose :func:`vis_id` is not its own id (most often none).

    The app's graph component is given this table and maps ids through it, model to vis id on the way in and
    back on the way out (a click): it holds no rule of its own that could drift from :func:`vis_id`. Pairs,
    not an object, so that a model named ``__proto__`` is a key like any other in the script's ``Map``.
    """
    return [[n["id"], v] for n in data.nodes if (v := vis_id(n["id"])) != n["id"]]


def tree_html(rec: Recovery, *, statuses: dict[EdgeKey, str] | None = None, reference: str = "",
              height: int = 620, **view: Any) -> str:
    """A self-contained interactive HTML page of the tree (pyvis' template, CDN tags stripped,
    vis-network inlined): opens offline in any browser, makes no request."""
    data = build_graph(rec, statuses=statuses, reference=reference, **view)
    net = Network(height=f"{height}px", width="100%", directed=True, cdn_resources="remote")
    net.nodes = [{**n, "id": vis_id(n["id"])} for n in data.nodes]
    net.edges = [{**e, "from": vis_id(e["from"]), "to": vis_id(e["to"])} for e in data.edges]
    net.set_options(json.dumps(data.options))
    html = strip_external(net.generate_html())
    js, css = vis_source()
    html = html.replace("</head>", f"<style>{css}</style>\n<script>{js}</script>\n</head>", 1)
    legend = f'<div style="font:12px sans-serif;padding:4px">{data.legend}</div>'
    html = html.replace("</body>", legend + _arrange_script(data) + "</body>", 1)
    return html


def _arrange_script(data: GraphData) -> str:
    """The exported page draws the arrangement its window fits, as the app's graph does (with layout "auto" it
    was always top-down, whatever the app showed); nothing when there is one way to draw it."""
    if len(data.arrangements) < 2:
        return ""
    arrangements = [{**a, "pos": {vis_id(m): xy for m, xy in a["pos"].items()}} for a in data.arrangements]
    payload = json.dumps({"list": arrangements, "font": data.options["nodes"]["font"]["size"],
                          "threshold": data.options["nodes"]["scaling"]["label"]["drawThreshold"],
                          "smooth": data.options["edges"]["smooth"].get("enabled", False),
                          "labels": [n.get("label", "") for n in data.nodes]}).replace("</", "<\\/")
    return (f"<script>{ARRANGE_JS}\n(function () {{\n  const d = {payload};\n"
            "  const c = document.getElementById('mynetwork');\n"
            "  const i = pickArrangement(d.list, c.clientWidth, c.clientHeight, d.font, d.threshold, d.labels);\n"
            "  const a = d.list[i];\n  document.body.dataset.arrangement = String(i);\n"
            "  document.body.dataset.direction = a.dir;\n  if (i === 0) return;\n"
            "  nodes.update(Object.entries(a.pos).map(([id, [x, y]]) => ({id, x, y})));\n"
            "  if (d.smooth) network.setOptions({edges: {smooth: {forceDirection: a.dir}}});\n"
            "  network.fit();\n})();\n</script>")
