"""Model ids and layer names in the app's plotly figures are drawn as written (red-team pass three's leftover).

plotly.js draws every text of a figure (title, legend, hover label, axis tick) with a small HTML subset:
``<b>`` is bold, ``<br>`` a line break, ``<a href=...>`` a link. A result file's ids and layer names are
anyone's text (a result.json id can hold the ``/`` a folder name cannot), so a figure carries them as
entities (:func:`explorer_ui.safe_text.chart`), which plotly.js draws back as the characters themselves.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re

import plotly.graph_objects as go
import pytest

pytest.importorskip("streamlit")

from test_app import write_family  # noqa: E402

from explorer_ui import plots  # noqa: E402
from explorer_ui.safe_text import chart  # noqa: E402
from mother_core import RecoverySettings, recover_paths  # noqa: E402
from mother_core.recovery.result import LayerInfo, Recovery  # noqa: E402

LINK = '<a href="https://example.org">x</a>'
BOLD = "<b>x</b>"
MATH = "$y$ & &lt;z"  # LaTeX where MathJax is loaded; an entity plotly.js would decode to '<'
LAYER = "<i>layers.0</i><br>q_proj"
OURS = re.compile(r"<(?!br>|extra>|/extra>)")  # any tag but the figures' own line breaks and hover boxes


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    return []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Recovery:
    """A real recovery of a small family whose result file was given hostile ids and a hostile layer name."""
    tmp = tmp_path_factory.mktemp("chart")
    family = write_family(tmp / "fam")
    rec = recover_paths([family], RecoverySettings(), device="cpu")
    rec.save(tmp / "result.json")
    text = (tmp / "result.json").read_text()
    for old, new in (("chat", LINK), ("code", BOLD), ("code-py", MATH)):  # whole JSON strings only
        text = text.replace(json.dumps(old), json.dumps(new))
    (tmp / "result.json").write_text(text)
    rec = Recovery.load(tmp / "result.json")
    assert {LINK, BOLD, MATH} <= set(rec.model_ids)
    layers = [dataclasses.replace(rec.layers[0], name=LAYER), *rec.layers[1:]]
    assert isinstance(layers[0], LayerInfo)
    return dataclasses.replace(rec, layers=layers)


def _figures(rec: Recovery) -> list[go.Figure]:
    figs = [plots.distance_heatmap(rec), plots.kurtosis_models(rec), plots.edge_confidence(rec)]
    for e in rec.edges:
        figs += [plots.kurtosis_layers(rec, e), plots.layer_votes(rec, e), plots.layer_distance(rec, e)]
    return figs


def test_every_figure_draws_hostile_ids_and_layer_names_literally(hostile):
    figs = _figures(hostile)
    texts = [s for f in figs for s in _strings(f.to_plotly_json())]
    assert not [s for s in texts if OURS.search(s)]
    assert not [s for s in texts if "$" in s]
    shown = {html.unescape(s) for s in texts}  # what plotly.js draws: entities decoded
    for name in (LINK, BOLD, MATH, LAYER):
        assert any(name in s for s in shown), name
    # The escaped id, decoded once, is the id: '&lt;' in an id stays four characters on screen.
    assert chart(MATH) == "&#36;y&#36; &#38; &#38;lt;z" and html.unescape(chart(MATH)) == MATH
    heat, bars = figs[0], figs[1]
    assert heat.data and LINK in html.unescape(" ".join(heat.data[0].x))  # drawn, with the ids as its columns
    assert heat.layout.xaxis.type == heat.layout.yaxis.type == bars.layout.xaxis.type == "category"
