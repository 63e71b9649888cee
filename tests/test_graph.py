"""The tree drawing (explorer_ui.graph, mother_core.layout.forest_positions): folding, layouts,
relations, several parents, legend. Recoveries are built from the result dataclasses directly."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("pyvis")

from explorer_ui.graph import FOLD_BUDGET, RELATIONS, Forest, build_graph, fold, vis_dashes
from mother_core.layout import forest_positions
from mother_core.recovery.result import Edge, ModelNode, Recovery, TreeInfo


def forest(edges: list[tuple[str, str]], relations: dict | None = None, weights: dict | None = None) -> Recovery:
    ids = sorted({x for e in edges for x in e})
    relations, weights = relations or {}, weights or {}
    es = [Edge(p, c, 0.1 + 0.01 * i, 0.8, 0.9, 0.9, relation=relations.get((p, c), "finetune"),
               merge_weight=weights.get((p, c))) for i, (p, c) in enumerate(edges)]
    children = {c for _, c in edges}
    models = [ModelNode(i, f"/m/{i}", 0, 1.0, i not in children) for i in ids]
    return Recovery(models, es, [TreeInfo(0, tuple(ids), next(i for i in ids if i not in children), "specialization",
                                          0.9)])


def test_large_families_fold_within_the_budget_and_open_on_request():
    edges = [("r", f"a{i}") for i in range(30)] + [(f"a{i}", f"b{i}_{j}") for i in range(30) for j in range(5)]
    f = Forest.of(forest(edges))
    shown, hidden = fold(f, budget=40)
    assert len(shown) <= 40 and set(hidden) and sum(hidden.values()) + len(shown) == 181
    assert all(h in shown for h in hidden)  # a folded subtree is shown by its top model
    opened = next(iter(hidden))
    shown2, hidden2 = fold(f, budget=40, opened={opened})
    assert opened not in hidden2 and set(f.children[opened]) <= set(shown2)
    assert len(fold(f, budget=FOLD_BUDGET * 10)[0]) == 181 and not fold(f, budget=FOLD_BUDGET * 10)[1]


def test_search_focus_opens_the_path_and_fades_the_rest():
    edges = [("r", f"a{i}") for i in range(30)] + [(f"a{i}", f"b{i}_{j}") for i in range(30) for j in range(5)]
    data = build_graph(forest(edges), focus="b7_3", budget=40)
    nodes = {n["id"]: n for n in data.nodes}
    assert {"r", "a7", "b7_3"} <= set(nodes)  # ancestors opened for it
    assert nodes["b7_3"]["opacity"] == 1 and nodes["a7"]["opacity"] == 1 and nodes["a8"]["opacity"] < 1


@pytest.mark.parametrize("layout", ["top-down", "left-right", "radial"])
def test_layouts_place_every_model_apart(layout):
    edges = [("r", "a"), ("r", "b"), ("a", "c"), ("a", "d"), ("x", "y")]
    pos = forest_positions(sorted({n for e in edges for n in e}), edges, orientation=layout)
    pts = list(pos.values())
    assert len(set(pts)) == len(pts)
    if layout == "left-right":
        assert pos["r"][0] < pos["a"][0] < pos["c"][0]  # depth grows to the right
    elif layout == "top-down":
        assert pos["r"][1] < pos["a"][1] < pos["c"][1]


def test_branch_length_by_distance_makes_long_edges_long():
    pos = forest_positions(["r", "a", "b"], [("r", "a"), ("r", "b")], lengths={("r", "a"): 1.0, ("r", "b"): 3.0})
    assert math.isclose(pos["a"][1] - pos["r"][1], 0.5) and math.isclose(pos["b"][1] - pos["r"][1], 1.5)


def test_relations_styles_several_parents_and_legend():
    edges = [("base", "ft"), ("base", "q"), ("ft", "m"), ("base", "m")]
    rec = forest(edges, relations={("base", "q"): "quantized", ("ft", "m"): "merge", ("base", "m"): "merge"},
                 weights={("ft", "m"): 0.7, ("base", "m"): 0.3})
    data = build_graph(rec, color_by="relation")
    drawn = {(e["from"], e["to"]): e for e in data.edges}
    assert {("ft", "m"), ("base", "m")} <= set(drawn)  # both parents of the merge drawn
    assert drawn[("base", "q")]["dashes"] == vis_dashes(RELATIONS["quantized"][1], drawn[("base", "q")]["width"])
    assert drawn[("ft", "m")]["color"]["color"] == RELATIONS["merge"][0]
    assert "smooth" in drawn[("base", "m")] and "smooth" not in drawn[("ft", "m")]  # the heavier parent places it
    texts = [t for _, _, t in data.legend_rows]
    assert RELATIONS["quantized"][2] in texts and "selected" in texts and "width = confidence" in texts
    assert set(data.edge_ids.values()) == set(edges)


def test_an_edge_tooltip_says_its_status_once() -> None:
    """The tooltip names an edge's status in its own words, not "correct: correct (in the truth)"."""
    from explorer_ui.graph import edge_tooltip

    edge = Edge(parent="a", child="b", distance=0.1, confidence=0.9, placement_confidence=0.9,
                direction_confidence=0.9)
    tip = edge_tooltip(edge, "correct")
    assert "correct (in the truth)" in tip
    assert "correct: correct" not in tip


def test_auto_layout_offers_the_browser_top_down_first_then_left_to_right():
    """Layout "auto" draws top-down and sends every wrapping of both directions, top-down first, each with
    its label growth: the browser keeps top-down unless only left to right is readable whole."""
    edges = [("r", f"c{i}") for i in range(3)] + [(f"c{i}", f"g{i}{j}") for i in range(3) for j in range(3)]
    rec = forest(edges)
    auto = build_graph(rec, layout="auto")
    down = build_graph(rec, layout="top-down")
    assert [(n["x"], n["y"]) for n in auto.nodes] == [(n["x"], n["y"]) for n in down.nodes]
    dirs = [a["dir"] for a in auto.arrangements]
    assert dirs[0] == "vertical" and "horizontal" in dirs and dirs == sorted(dirs, reverse=True), dirs
    first = auto.arrangements[0]["pos"]
    assert {n["id"]: [n["x"], n["y"]] for n in auto.nodes} == first
    assert all(a["growth"] >= 1.0 for a in auto.arrangements)
    assert auto.options["edges"]["smooth"]["forceDirection"] == "vertical"
    assert not any(a["dir"] == "horizontal" for a in down.arrangements)


def test_an_edge_tooltip_names_its_relation_in_words() -> None:
    """The graph's tooltip says how the child was made as the card and the tables do ("pruned", "merged LoRA"),
    not the stored word ("relation: prune"); the stored word stays on the drawn edge as data."""
    edges = [("base", "p"), ("base", "l")]
    rec = forest(edges, relations={("base", "p"): "prune", ("base", "l"): "lora"})
    drawn = {(e["from"], e["to"]): e for e in build_graph(rec).edges}
    assert "how it was made: pruned" in drawn[("base", "p")]["title"]
    assert "how it was made: merged LoRA" in drawn[("base", "l")]["title"]
    assert "relation: prune" not in drawn[("base", "p")]["title"]
    assert drawn[("base", "p")]["relation"] == "prune" and drawn[("base", "l")]["relation"] == "lora"


def star(n: int) -> Recovery:
    """One root with ``n`` children: a single wide, shallow tree no wrapping splits."""
    return forest([("root", f"leaf-{i:02d}") for i in range(n)])


def test_a_slide_of_a_wide_shallow_tree_is_drawn_left_to_right_with_layout_auto():
    """With layout "auto" the slide drew the first arrangement (top-down) whatever fit: 25 leaves top-down need
    0.69 zoom on a slide's area (10.4-px labels, under the readable 12), left to right they read (12.2 px). The
    slide takes the arrangement the browser would take for a canvas of its size; a small tree stays top-down."""
    from explorer_ui.graph import arranged, pick_arrangement
    from explorer_ui.slides import CANVAS_PX

    data = build_graph(star(25), layout="auto", aspect=16 / 9)
    assert data.arrangements and data.arrangements[0]["dir"] == "vertical"
    i = pick_arrangement(data, *CANVAS_PX)
    assert data.arrangements[i]["dir"] == "horizontal"
    slide = arranged(data, *CANVAS_PX)
    xs = {round(n["x"], 1) for n in slide.nodes if n["id"] != "root"}
    assert len(xs) == 1, xs  # left to right: every leaf one generation right of the root, same x
    assert slide.options["edges"]["smooth"]["forceDirection"] == "horizontal"
    small = build_graph(star(4), layout="auto", aspect=16 / 9)
    assert arranged(small, *CANVAS_PX) is small  # top-down fits: nothing changes


def test_the_exported_page_chooses_its_arrangement_as_the_app_does():
    """The interactive page carries the arrangements and the app's own picking rule (it was drawn top-down with
    layout "auto", whatever the app showed); with one way to draw it, no script."""
    from explorer_ui.graph import ARRANGE_JS, tree_html

    html = tree_html(star(20), layout="auto")
    assert ARRANGE_JS.strip() in html and '"dir": "horizontal"' in html and "pickArrangement(d.list" in html
    assert "pickArrangement" not in tree_html(star(20), layout="top-down")


def test_the_drawing_names_each_family_of_two_or_more_models_largest_first():
    """Zoomed out past readable model names, the browser boxes and names each family (recovered tree): the
    drawing carries every family of two or more shown models, with its root and size (folded models
    counted), largest first, and each model carries its family."""
    big = [("r1", f"a{i}") for i in range(6)] + [(f"a{i}", f"b{i}_{j}") for i in range(6) for j in range(5)]
    small = [("r2", "c0"), ("r2", "c1")]
    rec = forest(big + small)
    trees = [TreeInfo(0, tuple(sorted({x for e in big for x in e})), "r1", "specialization", 0.9),
             TreeInfo(1, ("c0", "c1", "r2"), "r2", "specialization", 0.9),
             TreeInfo(2, ("z",), "z", "specialization", 0.9)]
    every = [*rec.models, ModelNode("z", "/m/z", 0, 1.0, True)]
    models = [ModelNode(m.id, m.path, t.id, 1.0, m.id == t.root) for t in trees for m in every if m.id in t.members]
    rec = Recovery(models, rec.edges, trees)
    data = build_graph(rec, budget=12)
    assert [f["label"] for f in data.families] == ["r1 · 37 models", "r2 · 3 models"]  # not the lone z
    assert {n["id"]: n["family"] for n in data.nodes}["c0"] == 1
    assert data.families[0]["color"] != data.families[1]["color"]


def families(shapes: list[tuple[int, int]]) -> Recovery:
    """A forest of several families (recovered trees), one per ``(children, grandchildren each)``, named like
    a real set's folders ("m-" and 6 hex digits), so subtrees fold and families are boxed as on a large set."""
    import hashlib

    def name(*k: int) -> str:
        return "m-" + hashlib.sha1(repr(k).encode()).hexdigest()[:6]

    edges, trees, models = [], [], []
    for t, (kids, grand) in enumerate(shapes):
        root = name(t)
        fam = [root]
        for i in range(kids):
            fam.append(name(t, i))
            edges.append((root, name(t, i)))
            for j in range(grand):
                fam.append(name(t, i, j))
                edges.append((name(t, i), name(t, i, j)))
        trees.append(TreeInfo(t, tuple(fam), root, "specialization", 0.9))
        models += [ModelNode(m, f"/m/{m}", t, 1.0, m == root) for m in fam]
    es = [Edge(p, c, 0.1 + 0.001 * i, 0.8, 0.9, 0.9) for i, (p, c) in enumerate(edges)]
    return Recovery(models, es, trees)


def test_no_two_boxes_of_a_large_sets_slide_overlap():
    """The 279-model result's slide (90 of its models shown, 21 families) drew every label at 9 pt whatever
    the drawing's extent was squeezed into: folded two-line boxes ("▸ +8") ran into their neighbours and the
    lone roots at the bottom right were drawn on top of each other (62 overlapping pairs there; 61 here on main), and
    no family was boxed. The slide now zooms as the app does (one scale for positions and labels) and names
    the families; labels stay readable (over 5 pt, 10 px in the 150-dpi PNG)."""
    from explorer_ui import slides
    from explorer_ui.graph import arranged

    rec = families([(6, 3)] * 13 + [(1, 1)] * 8)  # 13 families of 25, 8 of 3: 349 models
    data = arranged(build_graph(rec, aspect=16 / 9), *slides.CANVAS_PX)
    assert len(data.nodes) == FOLD_BUDGET and len(data.families) > 1
    assert any("\n▸ +" in n["label"] for n in data.nodes)  # folded subtrees: two-line boxes
    fig = slides.tree_figure(data, list(data.legend_rows), "big")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.axes[0].texts if t.get_bbox_patch() is not None]
    assert len(texts) == len(data.nodes)
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in texts]
    over = [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].overlaps(boxes[j])]
    assert not over, (len(over), over[:3])
    assert min(t.get_fontsize() for t in texts) >= 5
    axes = fig.axes[0].get_window_extent(renderer)
    drawn = boxes + [p.get_window_extent(renderer) for p in fig.axes[0].patches]  # with the family boxes
    assert all(axes.x0 <= b.x0 and b.x1 <= axes.x1 and axes.y0 <= b.y0 and b.y1 <= axes.y1 for b in drawn)
    named = [t for t in fig.axes[0].texts if t.get_bbox_patch() is None and t.get_text()]  # not the edges ("")
    assert sum(t.get_text().endswith("· 25 models") for t in named) >= 10  # families named as in the app
    names = [t.get_window_extent(renderer) for t in named]
    assert not any(a.overlaps(b) for i, a in enumerate(names) for b in names[i + 1:] + boxes)
    slides.render(fig, "png")


@pytest.mark.parametrize("lone", [0, 3, 40])
def test_a_slides_lone_models_sit_in_a_named_band_under_the_families(lone):
    """appux5: models with no parent and no child were packed after the trees in a strip that wrapped (one
    row, a last one alone below), mixed with families folded to their root: it read as an accident. They now
    sit in a grid on a band of their own under everything else, named "40 unrelated models (no parent, no
    child found)"; no two boxes overlap at 1280x720 or 1920x1080 (96 and 144 dpi), all inside the slide."""
    from explorer_ui import slides
    from explorer_ui.graph import arranged

    rec = families([(6, 3)] * 13 + [(1, 1)] * 8 + [(0, 0)] * lone)  # folded families beside the lone ones
    data = arranged(build_graph(rec, aspect=16 / 9), *slides.CANVAS_PX)
    lone_ids = {n["id"] for n in data.nodes} - {e["from"] for e in data.edges} - {e["to"] for e in data.edges} \
        - set(data.folded)
    assert len(lone_ids) == lone
    for dpi in (96, 144):
        fig = slides.tree_figure(data, list(data.legend_rows), "lone")
        fig.set_dpi(dpi)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        boxes = {t.get_text().split("\n")[0]: t.get_bbox_patch().get_window_extent(renderer)
                 for t in ax.texts if t.get_bbox_patch() is not None}
        assert len(boxes) == len(data.nodes)
        drawn = list(boxes.values())
        assert not any(a.overlaps(b) for i, a in enumerate(drawn) for b in drawn[i + 1:])
        band = [t for t in ax.texts if "unrelated model" in t.get_text()]
        if not lone:
            assert not band
            continue
        assert band[0].get_text() == f"{lone} unrelated model{'s' if lone > 1 else ''} (no parent, no child found)"
        mine = [boxes[m] for m in lone_ids]
        others = [b for m, b in boxes.items() if m not in lone_ids]
        assert max(b.y1 for b in mine) < min(b.y0 for b in others)  # all under the families (y grows up)
        per_row = [sum(round(b.y0) == r for b in mine) for r in sorted({round(b.y0) for b in mine}, reverse=True)]
        assert all(n == per_row[0] for n in per_row[:-1]) and per_row[-1] <= per_row[0]  # a grid, full rows
        assert len({round((b.x0 + b.x1) / 2) for b in mine}) == per_row[0]  # in columns
        name = band[0].get_window_extent(renderer)
        assert name.y0 >= max(b.y1 for b in mine) and not any(name.overlaps(b) for b in drawn)
        axes = ax.get_window_extent(renderer)
        patches = [p.get_window_extent(renderer) for p in ax.patches]
        assert all(axes.x0 <= b.x0 and b.x1 <= axes.x1 and axes.y0 <= b.y0 and b.y1 <= axes.y1
                   for b in drawn + patches)
        band_box = next(p for p in patches if all(p.x0 <= b.x0 and b.x1 <= p.x1 for b in mine)
                        and p.y0 <= min(b.y0 for b in mine) and max(b.y1 for b in mine) <= p.y1)
        assert band_box.y1 <= name.y0 + 1 and min(b.y0 for b in others) > band_box.y1
        assert min(t.get_fontsize() for t in ax.texts if t.get_bbox_patch() is not None) >= 5
        slides.render(fig, "png")


@pytest.mark.parametrize("lone", [0, 3, 40])
@pytest.mark.parametrize("layout", ["top-down", "auto", "left-right"])
def test_the_canvas_puts_lone_models_in_a_band_under_the_families(lone, layout):
    """lonecanvas: the app's canvas packed models with no parent and no child after the trees in a strip that
    wrapped like them (the slide had its band since appux5). Every arrangement the browser may draw now holds
    them (``GraphData.lone``, in drawing order) in a grid of full rows two generations under every other model,
    no two of their boxes overlapping (a box as wide as the browser draws a root's label: 0.64 em a character
    and 3-px borders, grown as far as the arrangement lets labels grow); the folded roots keep their own grid
    above it; the slide draws the same positions (one layout decision for both)."""
    from explorer_ui.graph import GEN_PX, lone_title

    rec = families([(2, 1)] * 3 + [(6, 3)] * 6 + [(0, 0)] * lone)  # some folded to their root (budget)
    data = build_graph(rec, layout=layout, budget=40, aspect=16 / 9)
    ends = {e["from"] for e in data.edges} | {e["to"] for e in data.edges}
    expect = [n["id"] for n in data.nodes if n["id"] not in ends and n["id"] not in data.folded]
    assert list(data.lone) == expect and len(expect) == lone
    assert data.folded and lone_title(1) == "1 unrelated model (no parent, no child found)"
    font = data.options["nodes"]["font"]["size"]
    labels = {n["id"]: n["label"] for n in data.nodes}
    arrangements = [a["pos"] for a in data.arrangements] or [{n["id"]: [n["x"], n["y"]] for n in data.nodes}]
    assert {n["id"]: [n["x"], n["y"]] for n in data.nodes} == arrangements[0]  # the drawn one is the first
    for i, pos in enumerate(arrangements):
        growth = data.arrangements[i]["growth"] if data.arrangements else data.label_growth
        mine = [pos[m] for m in data.lone]
        others = [xy for m, xy in pos.items() if m not in set(data.lone)]
        if not lone:
            continue
        assert min(y for _, y in mine) >= max(y for _, y in others) + 2 * GEN_PX - 1e-6  # under, room for the name
        width = max(len(labels[m].split("\n")[0]) for m in data.lone) * font * 0.64 * growth + 2 * 8 + 2 * 3
        height = font * growth + 2 * 8 + 2 * 3
        assert not [(a, b) for j, a in enumerate(mine) for b in mine[j + 1:]
                    if abs(a[0] - b[0]) < width and abs(a[1] - b[1]) < height]
        rows = sorted({y for _, y in mine})
        per_row = [sum(y == r for _, y in mine) for r in rows]
        assert all(k == per_row[0] for k in per_row[:-1]) and per_row[-1] <= per_row[0]  # a grid of full rows
        assert len({x for x, _ in mine}) == per_row[0]  # in columns
        folded = [pos[m] for m in data.folded if m not in ends]
        assert all(y < min(r for r in rows) for _, y in folded)  # the folded roots' grid stays above the band


def test_a_dark_drawing_keeps_every_edge_and_legend_line_visible():
    """appux5: talk mode and a dark slide drew confident edges in #00408C on #14161A (1.9:1), the legend's
    "high confidence" swatch as dark; the root's legend box was a #222 outline on the dark page. Every edge
    and legend line of a dark drawing now stands out from its background by WCAG's 3:1 for marks, in each
    colouring, and the light drawing is unchanged."""
    from explorer_ui import slides
    from explorer_ui.graph import DARK_BG, confidence_color, contrast

    rec = families([(3, 2)] * 3 + [(0, 0)] * 2)
    for mode in ("confidence", "family", "relation"):
        dark, light = build_graph(rec, dark=True, color_by=mode), build_graph(rec, color_by=mode)
        colours = [e["color"]["color"] for e in dark.edges]
        colours += [w for k, w, _ in dark.legend_rows if k in ("line", "dots")]
        assert colours and min(contrast(c, DARK_BG) for c in colours) >= 3.0, mode
        if mode == "confidence":  # the light drawing keeps the scale's own colours (each edge 0.8)
            assert {e["color"]["color"] for e in light.edges} == {confidence_color(0.8)}
    fig = slides.tree_figure(dark, list(dark.legend_rows), "dark", dark=True)
    box = next(h for h in fig.legends[0].legend_handles if h.get_label() == "bold border = root")
    assert box.get_facecolor()[3] > 0  # a filled swatch (a model's light fill), not a dark outline on dark
    slides.render(fig, "png")
