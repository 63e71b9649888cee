"""Hostile names through the app's own pages (red-team pass three, branch hostile3).

Model ids come from folder names and declared parents from model cards: both are data an attacker writes.
``st.table`` renders every cell as markdown (a model's card, its alternative parents), so a name there must
be escaped like everywhere else; the Export page draws names with matplotlib, whose mathtext parsed a name
holding ``$...$`` (and raised on one it could not parse).
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("streamlit")

from test_app import app, demo_root, graph_payload, use_folder, write_family  # noqa: E402,F401

IMG = "![x](x.png)"  # a folder name: no '/' possible
MATH = "a$\\frac{$b"  # mathtext cannot parse it: matplotlib raised ValueError on the Export page
DECLARED = "![y](https://example.org/y.png)"  # a model card's base_model: any text
EDGES = [("base", IMG), ("base", "code"), (IMG, MATH), ("code", "code-py")]
UNESCAPED = re.compile(r"(?<!\\)!(?<!\\)\[|(?<!\\)\$")  # an image or LaTeX that markdown would render


def _cells(table) -> list[str]:
    df = table.value
    return [str(x) for x in [*df.index, *df.to_numpy().ravel()]]


def test_hostile_names_in_the_cards_tables_and_the_slide(app, tmp_path):  # noqa: F811 - the fixture
    fam = write_family(tmp_path / "fam", edges=EDGES, declared={"code": DECLARED, MATH: IMG})
    at = use_folder(app, fam)
    at.sidebar.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("app_pages/1_Tree.py").run()
    ids = [n["id"] for n in graph_payload(at)["nodes"]]
    assert {IMG, MATH, "code"} <= set(ids)
    shown = []
    for model in ids:
        at.selectbox(key="find_tree").set_value(model).run()
        assert not at.exception, (model, [e.value for e in at.exception])
        cells = [c for t in at.table for c in _cells(t)]
        shown += cells
        assert not [c for c in cells if UNESCAPED.search(c)], (model, cells)
    text = " ".join(shown).replace("\\", "")
    assert IMG in text and MATH.replace("\\", "") in text and DECLARED in text  # all there, escaped
    at.switch_page("app_pages/6_Export.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("PNG" in b.label for b in at.get("download_button"))


# --- escape2: plotly texts and declared parents written as paths ---------------------------------------------
BOLD = "<b>bold"  # plotly.js drew it bold (a folder name holds no '/', so no closing tag or link here)
RUN_PATH = "/home/someone/runs/base"  # an adapter config's base_model_name_or_path: a path on another machine


def _frame_cells(at) -> list[dict]:
    return [row for df in at.dataframe for row in df.value.to_dict("records")]


def test_plotly_figures_and_declared_paths_through_the_pages(app, tmp_path):  # noqa: F811 - the fixture
    fam = write_family(tmp_path / "fam", edges=[("base", BOLD), ("base", "code"), ("code", "code-py")],
                       declared={"code": RUN_PATH, "code-py": "code"})
    at = use_folder(app, fam)
    listing = [r for r in _frame_cells(at) if r.get("model") == "code"]  # the folder listing, before a run
    assert listing and listing[0]["declared parent"] == "base" and listing[0]["declared as written"] == RUN_PATH
    at.sidebar.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("app_pages/5_Matrices.py").run()
    assert not at.exception, [e.value for e in at.exception]
    specs = [el.proto.spec for el in at.get("plotly_chart")]
    assert len(specs) == 2 and all("&#60;b&#62;bold" in s for s in specs), specs
    assert not [s for s in specs if "<b>" in s]
    rows = {r["model"]: r for r in _frame_cells(at) if "recovered parent" in r}
    assert (rows["code"]["declared parent"], rows["code"]["declared as written"]) == ("base", RUN_PATH)
    assert (rows["code-py"]["declared parent"], rows["code-py"]["declared as written"]) == ("code", "")
    at.switch_page("app_pages/3_Lineage.py").run()
    assert not at.exception, [e.value for e in at.exception]
    lineage = {r["model"]: r for r in _frame_cells(at) if "note" in r}
    assert (lineage["code"]["declared parent"], lineage["code"]["declared as written"]) == ("base", RUN_PATH)
    at.switch_page("app_pages/1_Tree.py").run()
    at.selectbox(key="find_tree").set_value("code").run()
    assert not at.exception, [e.value for e in at.exception]
    card = {str(k): str(v) for t in at.table for k, v in t.value.iloc[:, 0].items()}
    assert card.get("Declared parent") == "base" and card.get("Declared as written", "").replace("\\", "") == RUN_PATH


# --- hostile4: deep links naming what the set does not hold ------------------------------------------------
LINKS = {"script edge": {"parent": "<script>alert(1)</script>", "child": "<img src=x onerror=alert(2)>"},
         "image model": {"model": "![y](https://example.org/y.png)"},
         "long edge": {"parent": "p" * 200_000, "child": "c" * 10}}


@pytest.mark.parametrize("link", sorted(LINKS))
def test_a_link_to_what_the_set_does_not_hold_says_so_and_selects_nothing(app, link):  # noqa: F811
    """A deep link's edge or model that is not in the tree (a stale link, another set's ids, made-up text) showed
    the tree with nothing selected and no word why; it is now said once, escaped and cut, and the link's
    selection is cleared from the URL. Nothing of it is rendered as HTML or markdown on any page."""
    app.query_params.update(LINKS[link])
    at = app.run()
    assert not at.exception, [e.value for e in at.exception]
    said = [w.value for w in at.warning if "The link selects" in w.value]
    assert len(said) == 1 and "not in this tree" in said[0] and len(said[0]) < 1000, said
    assert not UNESCAPED.search(said[0]) and not re.search(r"(?<!\\)<", said[0]), said  # markdown-escaped
    assert at.session_state["_selection"].edge is None and at.session_state["_selection"].node is None
    assert not {"parent", "child", "model"} & set(at.query_params)
    for page in ("app_pages/2_Edge.py", "app_pages/1_Tree.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert not [w for w in at.warning if "The link selects" in w.value]  # once


# --- hostile5: model ids that name a property every JavaScript object has ---------------------------------
PROTO_IDS = ("__proto__", "hasOwnProperty", "toString", "constructor", "valueOf")  # folder names or result ids


def _chromium_page(html_path, run):  # noqa: ANN001, ANN202
    """``run(page)`` on ``html_path`` in Chromium (skipped where Chromium or playwright is missing)."""
    from pathlib import Path

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html_path.as_uri())
            return run(page), errors
        finally:
            browser.close()


_DRAWN = """() => { const net = window.network; return {drawn: net.body.nodeIndices.length, nodes: window.nodes.length,
  boxed: window.nodes.getIds().filter(i => { const b = net.getBoundingBox(i); return b && isFinite(b.left); }).length};
}"""


@pytest.mark.parametrize("where", ["app graph", "exported page"])
def test_models_named_like_javascript_object_properties_are_drawn(tmp_path, where):
    """vis-network keeps nodes in plain objects keyed by id: a model named ``__proto__`` set the object's
    prototype, ``hasOwnProperty`` / ``toString`` / ``constructor`` / ``valueOf`` were left out of its drawing list;
    each was not drawn (its family's box held its children and edges pointing at nothing: 7 of 12 nodes drawn).
    The app's graph (the component's own script, mounted on a plain page) and the exported page draw all 12."""
    import json

    from test_graph import forest

    from explorer_ui import graph_component as gc
    from explorer_ui.graph import build_graph, tree_html, vis_source

    a, b, c, d, e = PROTO_IDS
    rec = forest([(a, "a1"), (a, "a2"), (b, "b1"), (b, "b2"), (c, "c1"), ("r", d), (d, "d1"), ("r", e)])
    page_path = tmp_path / "graph.html"
    if where == "exported page":
        page_path.write_text(tree_html(rec), encoding="utf-8")
    else:
        data = build_graph(rec)
        js, css = vis_source()
        payload = gc.component_data(data, height=500, lib={"url": None, "js": js, "css": css}, selected={"node": a})
        mount = gc._JS.replace("export default function", "window.mount = function")  # as Streamlit calls it
        text = json.dumps(payload).replace("</", "<\\/")
        page_path.write_text(
            f"<html><head><style>{gc._CSS}</style></head><body><div id='host' style='width:900px'></div>"
            f"<script type='module'>{mount}\nwindow.mount({{data: {text}, "
            "parentElement: document.getElementById('host'), "
            "setTriggerValue: (k, v) => (window.sent = window.sent || []).push(v)});</script></body></html>",
            encoding="utf-8")

    def run(page):  # noqa: ANN001, ANN202
        page.wait_for_function("() => window.network && window.nodes && window.nodes.length > 0", timeout=60_000)
        page.wait_for_timeout(300)
        got = page.evaluate(_DRAWN)
        if where == "app graph":  # the selected model, named __proto__, reached the canvas' selection
            got["selected"] = page.evaluate("() => document.querySelector('.mg-root').dataset.selectedNode")
            # a click on it (vis names it by its vis id) reaches Python as the model's own id
            got["clicked"] = page.evaluate("""() => {
              const v = window.nodes.getIds().find(i => i.endsWith('__proto__'));
              window.network.emit('click', {nodes: [v], edges: []}); return window.sent.map(e => e.id); }""")
        return got

    got, errors = _chromium_page(page_path, run)
    assert not errors, errors
    assert got["nodes"] == 12 and got["drawn"] == 12 and got["boxed"] == 12, got
    if where == "app graph":
        assert got["selected"] == a and got["clicked"] == [a], got
