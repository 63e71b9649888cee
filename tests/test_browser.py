"""The real app in a real browser: server start -> demo tree drawn -> select an edge -> its kurtosis plot.

Marked ``browser``; skipped (with the reason) when ``/usr/bin/chromium`` or Playwright is missing.
Install the browser with ``apt-get install -y --no-install-recommends chromium`` (never
``playwright install``). Screenshots and timings go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
if not (ROOT / "assets" / "demo").is_dir() and not os.environ.get("MOTHER_DEMO_ROOT"):
    pytest.skip("no demo sets in assets/demo/", allow_module_level=True)

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """``streamlit run app.py`` on a free port; yields (url, seconds from spawn to healthy, spawn time)."""
    port = _free_port()
    streamlit = Path(sys.executable).with_name("streamlit")
    cmd = [str(streamlit), "run", "app.py", "--server.port", str(port), "--server.headless", "true",
           "--server.address", "127.0.0.1"]
    # Extra server flags, for ablations (e.g. "--runner.postScriptGC true"); see benchmarks/RESULTS.md.
    cmd += shlex.split(os.environ.get("MOTHER_BROWSER_SERVER_ARGS", ""))
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / "server.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start; see {ARTIFACTS / 'server.log'}")
            time.sleep(0.1)
        yield url, time.monotonic() - t0, t0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settled(page) -> None:
    """Wait until Streamlit has finished the current run."""
    page.wait_for_timeout(50)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=30_000)


def _wait_plot_title(page, text: str) -> None:
    """Wait (polling every animation frame, not Playwright's coarse back-off) for a plot title."""
    page.wait_for_function(
        "t => Array.from(document.querySelectorAll('.gtitle')).some(e => e.textContent.includes(t))",
        arg=text, polling="raf", timeout=30_000)


def _tree_drawn(page, timeout: float = 30_000) -> None:
    frame = page.frame_locator("iframe").first
    frame.locator("canvas").first.wait_for(timeout=timeout)
    frame.locator('body[data-drawn="1"]').wait_for(state="attached", timeout=timeout)


# In-page latency, as browsers define it for interactions (INP): from the input event's timestamp to the
# first animation frame that shows the result. Playwright's own wall clock adds its protocol round trips
# and polling back-off; it is recorded too (the *_wall_s keys), as an upper bound.
_ARM = """(newTree) => {
  for (const f of document.querySelectorAll('iframe')) {  // with a new tree, the one drawn before does not count
    try { if (newTree) f.contentDocument.body.dataset.stale = '1'; else delete f.contentDocument.body.dataset.stale; }
    catch (e) {}
  }
  window.__motherInputAt = null;
  document.addEventListener('pointerdown', e => { window.__motherInputAt = e.timeStamp; },
                            {capture: true, once: true});
}"""
_SHOWN = """([heading, plot, edge, tree]) => {
  if (window.__motherInputAt === null) return false;
  const fresh = !tree || Array.from(document.querySelectorAll('iframe')).some(f => {
    try { const b = f.contentDocument.body;
          return b.dataset.drawn === '1' && !b.dataset.stale && (!edge || b.dataset.selectedEdge === edge); }
    catch (e) { return false; } });
  const ok = fresh
    && (!heading || Array.from(document.querySelectorAll('h1')).some(h => h.textContent.trim() === heading))
    && (!plot || Array.from(document.querySelectorAll('.gtitle')).some(e => e.textContent.includes(plot)));
  return ok ? (performance.now() - window.__motherInputAt) / 1000 : false;
}"""


def _arm(page, *, new_tree: bool = False) -> float:
    """Time the next pointer input in the page; with ``new_tree``, only a tree drawn after it counts."""
    page.evaluate(_ARM, new_tree)
    return time.monotonic()


def _shown(page, *, heading: str = "", plot: str = "", edge: str = "", tree: bool = False) -> float:
    """Seconds from the armed input to the first frame showing all of: the heading, a drawn tree (with
    ``edge`` highlighted in it), the plot title. Each part is optional."""
    return round(page.wait_for_function(_SHOWN, arg=[heading, plot, edge, tree or bool(edge)], polling="raf",
                                        timeout=30_000).json_value(), 3)


def test_demo_tree_edge_and_offline(server):
    url, t_health, t_spawn = server
    timings: dict[str, float] = {"server_healthy_s": round(t_health, 2)}
    requests: list[str] = []
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1500, "height": 1500})
        page.on("request", lambda r: requests.append(r.url))

        t = time.monotonic()
        page.goto(url)
        page.get_by_role("heading", name="MoTHer Explorer").wait_for(timeout=60_000)
        timings["page_to_heading_s"] = round(time.monotonic() - t, 2)
        _tree_drawn(page, timeout=60_000)
        timings["page_to_tree_s"] = round(time.monotonic() - t, 2)
        timings["cold_start_to_tree_s"] = round(time.monotonic() - t_spawn, 2)
        # The home page is complete once its confidence histogram is drawn; interactions start there.
        _wait_plot_title(page, "Confidence of the")
        _settled(page)
        timings["cold_start_to_complete_s"] = round(time.monotonic() - t_spawn, 2)
        page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

        # Switch page: the Tree page with the ranked edge table (its first visit).
        t = _arm(page, new_tree=True)
        page.get_by_test_id("stSidebarNav").get_by_text("Tree", exact=True).click()
        timings["switch_page_s"] = _shown(page, heading="Tree", tree=True)
        timings["switch_page_complete_s"] = _shown(page, heading="Tree", plot="Kurtosis per layer: ", tree=True)
        timings["switch_page_wall_s"] = round(time.monotonic() - t, 2)
        _settled(page)
        _tree_drawn(page)
        charts = page.get_by_test_id("stPlotlyChart")
        charts.first.wait_for()

        # Select another edge in the selectbox; its kurtosis plot must follow.
        box = page.get_by_test_id("stSelectbox").filter(has_text="Edge").first
        box.click()
        options = page.get_by_role("option")
        options.first.wait_for()
        labels = options.all_inner_texts()
        assert len(labels) >= 2, labels
        target = labels[1].strip()
        t = _arm(page)
        page.get_by_role("option", name=target, exact=True).click()
        timings["select_edge_s"] = _shown(page, plot=f"Kurtosis per layer: {target}")
        edge_id = target.replace(" → ", "->")
        frame = page.frame_locator("iframe").first
        frame.locator(f'body[data-selected-edge="{edge_id}"]').wait_for(state="attached")
        timings["select_edge_wall_s"] = round(time.monotonic() - t, 2)
        _settled(page)

        # A second selection (warm: every chunk of the front end already loaded), highlighted in the tree.
        box.click()
        options.first.wait_for()
        target = labels[0].strip()
        t = _arm(page)
        page.get_by_role("option", name=target, exact=True).click()
        timings["select_edge_again_s"] = _shown(page, plot=f"Kurtosis per layer: {target}",
                                                edge=target.replace(" → ", "->"))
        timings["select_edge_again_wall_s"] = round(time.monotonic() - t, 2)
        _settled(page)

        # Click a row of the ranked edge table (a canvas grid): the plot and the selectbox follow.
        grid = page.get_by_test_id("stDataFrame").first.bounding_box()
        page.mouse.click(grid["x"] + 14, grid["y"] + 35 * 3 + 17)  # row 3's selection checkbox
        page.wait_for_function(
            "t => { const k = Array.from(document.querySelectorAll('.gtitle')).find("
            "e => e.textContent.startsWith('Kurtosis per layer: ')); return k && !k.textContent.endsWith(t); }",
            arg=target, polling="raf", timeout=30_000)
        _settled(page)
        title = [t for t in page.locator(".gtitle").evaluate_all("els => els.map(e => e.textContent)")
                 if t.startswith("Kurtosis per layer: ")][0]
        picked = title.removeprefix("Kurtosis per layer: ")
        # The grid is canvas-drawn: assert the click selected *another listed edge* and everything
        # followed, not which row pixel geometry hit (row heights vary with fonts and zoom).
        assert picked != target and picked in [x.strip() for x in labels], (picked, labels)
        assert picked in page.get_by_test_id("stSelectbox").filter(has_text="Edge").first.inner_html()
        page.screenshot(path=str(ARTIFACTS / "tree_edge.png"), full_page=True)

        # Switch to another page (no tree there) to measure a page switch without the tree.
        t = time.monotonic()
        page.get_by_test_id("stSidebarNav").get_by_text("Ambiguous", exact=False).click()
        page.get_by_role("heading", name="Ambiguous edges").wait_for()
        _settled(page)
        timings["switch_page_no_tree_wall_s"] = round(time.monotonic() - t, 2)

        # Back to the Tree page (visited before).
        t = _arm(page, new_tree=True)
        page.get_by_test_id("stSidebarNav").get_by_text("Tree", exact=True).click()
        timings["switch_page_again_s"] = _shown(page, heading="Tree", tree=True)
        timings["switch_page_again_wall_s"] = round(time.monotonic() - t, 2)
        _settled(page)

        # First visits to the other pages: each shows its heading, finishes its run and draws every plot,
        # with no error on the page.
        for nav, heading in (("Edge", "Edge"), ("Lineage", "Declared vs recovered"), ("Matrices", "Matrices"),
                             ("Export", "Export")):
            t = _arm(page)
            page.get_by_test_id("stSidebarNav").get_by_text(nav, exact=True).click()
            timings[f"first_visit_{nav.lower()}_s"] = _shown(page, heading=heading)
            _settled(page)
            page.wait_for_function("() => Array.from(document.querySelectorAll('[data-testid=stPlotlyChart]'))"
                                   ".every(c => c.querySelector('.main-svg'))", polling="raf", timeout=30_000)
            timings[f"first_visit_{nav.lower()}_done_wall_s"] = round(time.monotonic() - t, 2)
            assert not page.get_by_test_id("stException").count(), nav
            assert not page.get_by_test_id("stAlertContentError").count(), nav
        browser.close()

    outside = sorted({u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
                      and urlparse(u).hostname not in LOCAL_HOSTS})
    timings["load_average_1min"] = round(os.getloadavg()[0], 2)
    timings["server_args"] = os.environ.get("MOTHER_BROWSER_SERVER_ARGS", "")  # the CI box is shared: context for the numbers
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
    print("browser timings:", timings)
    assert not outside, f"requests left localhost: {outside}"
    if os.environ.get("MOTHER_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        shutil.copy(ARTIFACTS / "tree_edge.png", ROOT / "assets" / "screenshot.png")
    # Targets: cold start < 10 s, interactions < 0.5 s (met on an idle 2-core box). The limits asserted
    # here are looser because CI shares its cores with other jobs; timings.json keeps the real numbers.
    assert timings["cold_start_to_tree_s"] < 25, timings
    assert max(timings["select_edge_again_s"], timings["switch_page_again_s"]) < 2.0, timings
