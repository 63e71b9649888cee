"""The shared sidebar: pick a model set and settings, run (or reuse) the recovery, return a context.

Every page starts with ``ctx = page("Title")``; it returns a :class:`Loaded`, or a
:class:`~explorer_ui.state.NotReady` saying why there is nothing to draw yet. Engine errors are shown in
the page, never as tracebacks. Session state is owned by :mod:`explorer_ui.state`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from explorer_ui import engine, sources, state
from explorer_ui.safe_text import md, plain
from explorer_ui.settings_widgets import settings_widgets
from explorer_ui.sources import ModelSet
from explorer_ui.state import NotReady
from mother_core.errors import MotherError
from mother_core.lineage import declared_edges, edge_lineage, match_model_id
from mother_core.recovery.result import RESULT_HEAD_BYTES, Constraints, Recovery, RecoverySettings
from mother_core.statuses import EdgeStatus

SOURCES = ("Demo sets", "Local folder", "Hugging Face cache", "Paper presets", "Saved result")
TALK_CSS = """<style>
html, body, [class*="css"], .stMarkdown p, .stCaption, li {font-size: 1.35rem !important;}
h1 {font-size: 2.4rem !important; padding: 0 0 .2rem 0 !important;} h2 {font-size: 2rem !important;}
[data-testid="stMainBlockContainer"] {max-width: 100% !important; padding: .6rem 2rem 0 2rem !important;}
header[data-testid="stHeader"] {display: none !important;}
[data-testid="stMain"], [data-testid="stAppViewContainer"] {background: #0E1013 !important; color: #EEE !important;}
[data-testid="stMain"] h1, [data-testid="stMain"] p, [data-testid="stMain"] strong {color: #EEE !important;}
</style>"""


@dataclass
class Loaded:
    """What a page renders: the model set, the current recovery and what it is compared against."""

    model_set: ModelSet
    base_key: str
    base: Recovery
    key: str
    rec: Recovery
    constraints: Constraints
    truth: tuple[tuple[str, str], ...] | None
    reference: str  # "truth file", "preset", "declared lineage" or ""
    statuses: dict[tuple[str, str], str] = field(default_factory=dict)
    device: str = "auto"


def _persist(key: str, default: Any) -> None:
    """Keep a sidebar widget's value across pages (Streamlit drops state of widgets not on a page)."""
    keep = f"_keep_{key}"
    if keep in st.session_state:
        st.session_state[key] = st.session_state[keep]  # re-assert: a new page's widget starts fresh
    elif key not in st.session_state:
        st.session_state[key] = default
    st.session_state[keep] = st.session_state[key]


def _remember(key: str) -> None:
    st.session_state[f"_keep_{key}"] = st.session_state[key]


def _valid(value: Any, default: Any, options: Any) -> Any:
    """``value`` if it is one of ``options`` (or there are none), else ``default`` or the first option (e.g.
    a folder that went away)."""
    if options is None or value in list(options):
        return value
    return default if default in list(options) else list(options)[0]


def _widget(fn: Any, label: str, key: str, default: Any, **kw: Any) -> Any:
    _persist(key, default)
    value = _valid(st.session_state[key], default, kw.get("options"))
    if value is not st.session_state[key]:  # written only when out of the options
        st.session_state[key] = value
    return fn(label, key=key, on_change=_remember, args=(key,), **kw)


def _pick_demo() -> ModelSet | None:
    sets = sources.demo_sets()
    if not sets:
        st.sidebar.info("No demo sets in assets/demo/ yet.")
        return None
    labels = [s.label for s in sets]
    name = _widget(st.sidebar.selectbox, "Demo set", "demo", labels[0], options=labels, format_func=plain)
    return sets[labels.index(name)] if name in labels else sets[0]


def _pick_folder() -> ModelSet | None:
    roots = sources.browse_roots()
    if not roots:
        st.sidebar.warning("No browsable folders: set MOTHER_BROWSE_ROOTS.")
        return None
    # Folders holding weights first, so the picker never opens on an empty folder.
    folders = [f for r in roots for f in sources.list_folders(r)]
    with_weights = [f for f in folders if sources.has_weights(f)]
    options = with_weights or folders
    typed = _widget(st.sidebar.text_input, "Path to a folder of models", "folder_path", "",
                    placeholder=str(roots[0]),
                                  help="Any folder under " + ", ".join(str(r) for r in roots)
                                  + " (MOTHER_BROWSE_ROOTS).")
    if typed.strip():
        folder = str(sources.within_roots(typed.strip(), roots))
        if not Path(folder).is_dir():
            st.sidebar.warning(f"{md(typed)} is not a folder.")
            return None
    else:
        folder = _widget(st.sidebar.selectbox, "Folder with models", "folder", options[0], options=options,
                         help="Folders under MOTHER_BROWSE_ROOTS that hold weight files.", format_func=plain)
        if folder not in options:
            return None
        sources.within_roots(folder, roots)
    return ModelSet("folder", Path(folder).name, (folder,), truth=_truth_file(folder, roots))


def _truth_file(folder: str | None, roots: list[Path]) -> str | None:
    """A truth file: the set's own ``truth.json``, or one the user attaches (any set)."""
    up = st.sidebar.file_uploader("Attach a truth file (optional)", type=["json"], key="truth_upload",
                                  help='{"edges": [["parent", "child"], ...]}: the tree is then scored '
                                  "against it.")
    if up is not None:
        data = up.getvalue()
        dest = Path(engine.CACHE_DIR) / "truth" / f"{hashlib.sha1(data).hexdigest()[:16]}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return str(dest)
    return sources.truth_for(folder) if folder else None


def _pick_hf() -> ModelSet | None:
    models = [m for m in engine.hf_cache_models() if m.has_weights]
    if not models:
        st.sidebar.info("No models with weights in the local Hugging Face cache.")
        return None
    archs = sorted({m.architecture for m in models})
    arch = _widget(st.sidebar.selectbox, "Architecture", "hf_arch", archs[0], options=archs)
    group = [m.repo_id for m in models if m.architecture == arch]
    chosen = st.sidebar.multiselect("Models", group, default=group, key=f"hf_models_{arch}")
    paths = tuple(m.path for m in models if m.repo_id in chosen)
    truth = _truth_file(None, [])
    return ModelSet("hf", f"{arch} ({len(paths)} cached models)", paths, truth=truth) if paths else None


def _pick_preset() -> ModelSet | None:
    from mother_core.presets import PRESETS

    keys = [p.key for p in PRESETS]
    key = _widget(st.sidebar.selectbox, "Family", "preset", keys[0], options=keys,
                  format_func=lambda k: next(p.title for p in PRESETS if p.key == k))
    preset = next(p for p in PRESETS if p.key == key)
    avail = state.preset_view((preset, engine.preset_availability(preset.key)))[1]
    if not avail.complete:
        return None
    return ModelSet("preset", preset.title, tuple(avail.found[h] for h in preset.hub_ids),
                    component=preset.component, known_edges=preset.edges, regime=preset.regime)


#: What the saved-result list holds, and what it leaves to the uploader: a file is listed by the marker the writer
#: puts first (``sources.list_result_files``, a bounded read). A result rewritten with sorted keys (jq -S,
#: ``json.dump(..., sort_keys=True)``) has it after the matrices and edges, ~88% into the file (a 13-model result:
#: byte 149,882 of 169,378), so no bounded read finds it there; it still loads, by upload.
RESULT_LIST_HELP = (f"The `*.json` files under the browsable folders that open with a result's marker, "
                    f'`{{"format": "mother-recovery", "version": N` (read from each file\'s first '
                    f"{RESULT_HEAD_BYTES // 1024} KB), as `mother recover --out` and the Export page write it. "
                    "A result rewritten with its keys sorted (`jq -S`, `json.dump(..., sort_keys=True)`) has the "
                    "marker near its end and is not listed: open it with **Upload a result.json**.")


def _pick_result() -> ModelSet | None:
    files = sources.list_result_files()
    up = st.sidebar.file_uploader("Upload a result.json", type=["json"], key="upload",
                                  help="Any saved result, including one whose keys were sorted (not listed under "
                                       "Saved result).")
    if up is not None:
        data = up.getvalue()
        dest = Path(engine.CACHE_DIR) / "uploads" / f"{hashlib.sha1(data).hexdigest()[:16]}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return ModelSet("result", up.name, result=str(dest), auto_run=True)
    if not files:
        st.sidebar.info("No saved result (a JSON written by `mother recover --out` or the Export page) under "
                        "the browsable folders; upload one (a result rewritten with sorted keys is opened that way).")
        return None
    path = _widget(st.sidebar.selectbox, "Saved result", "result_file", files[0], options=files, format_func=plain,
                   help=RESULT_LIST_HELP)
    if path not in files:
        return None
    truth = _truth_file(str(Path(path).parent), [])
    return ModelSet("result", Path(path).name, result=path, truth=truth, auto_run=True)


def _kept(fn: Any, label: str, key: str, default: Any, **kw: Any) -> Any:
    """A setting's value without its widget (the settings are folded away): what the user last set in it
    (:func:`_widget` keeps it), else ``default``."""
    return _valid(st.session_state.get(f"_keep_{key}", default), default, kw.get("options"))


def _settings(ms: ModelSet | None) -> tuple[RecoverySettings, str]:
    """The recovery settings. Their widgets are drawn only while the expander is open (opening it reruns):
    13 widgets on every page run and page switch were a third of what the browser renders per run."""
    box = st.sidebar.expander("Recovery settings", key="settings_open", on_change="rerun")
    disabled = ms is not None and ms.kind == "result"
    preset = {"regime": ms.regime} if ms is not None and ms.regime else {}
    if box.open:
        with box:
            settings, run = settings_widgets(_widget, disabled=disabled, defaults=preset)
    else:
        settings, run = settings_widgets(_kept, disabled=disabled, defaults=preset)
    device = str(run["device"])
    from mother_core.io.staged import set_decode_threads  # a process-wide limit: the machine's cores

    set_decode_threads(int(run["decode_threads"]))
    st.sidebar.caption(f"Compute device: **{engine.device_description(device)}**")
    return settings, device


_SOURCE_IN_URL = {"Demo sets": "demo", "Local folder": "folder", "Saved result": "result"}
_WIDGET_OF = {"demo": "demo", "folder": "folder", "result": "result_file"}


def _apply_link() -> None:
    """A shared link (``?source=demo&set=vit-tree&parent=…&child=…``) opens that set on that edge."""
    source, name = state.url_request()
    label = next((k for k, v in _SOURCE_IN_URL.items() if v == source), None)
    if label is None or source is None or not name:
        return
    st.session_state["_keep_source"] = label
    st.session_state[f"_keep_{_WIDGET_OF[source]}"] = name  # the pickers check it is offered
    st.session_state["_link_set"] = (label, name)  # to say so when they do not offer it


# What a link's set must be, when the picker does not offer it (said beside the set shown instead).
_OFFERED = {"Demo sets": "one of the demo sets",
            "Local folder": "a folder with models under the folders this app may browse (MOTHER_BROWSE_ROOTS)",
            "Saved result": "a result file under the folders this app may browse (MOTHER_BROWSE_ROOTS)"}


def _link_fallback(src: str, ms: ModelSet | None) -> None:
    """A link to a set the picker does not offer (a folder outside the browse roots, an empty one, a demo
    set that is gone) opened another set without a word: the user read someone else's tree as the one
    shared. Say it, once."""
    asked = st.session_state.pop("_link_set", None)
    if not asked or asked[0] != src:
        return
    if ms is not None and asked[1] in (ms.label, ms.result, *ms.paths):
        return
    instead = f": showing {md(ms.label)} instead" if ms is not None else ""
    st.warning(f"The link asks for {md(asked[1])}, which is not {_OFFERED[src]}{instead}.")


def pick_model_set() -> tuple[ModelSet | None, RecoverySettings, str]:
    """The sidebar model-set picker and settings."""
    _apply_link()
    # The radio's label is the section's heading: a header above it was one more element to send and render
    # on every page run and switch.
    src = _widget(st.sidebar.radio, "**Model set**", "source", SOURCES[0], options=SOURCES)
    picker = {"Demo sets": _pick_demo, "Local folder": _pick_folder, "Hugging Face cache": _pick_hf,
              "Paper presets": _pick_preset, "Saved result": _pick_result}[src]
    ms = picker()
    _link_fallback(src, ms)
    settings, device = _settings(ms)
    return ms, settings, device


def _truth(ms: ModelSet, rec: Recovery) -> tuple[tuple[tuple[str, str], ...] | None, str]:
    ids = rec.model_ids
    raw: tuple[tuple[str, str], ...] = ()
    ref = ""
    if ms.truth and Path(ms.truth).is_file():
        raw, ref = engine.load_truth(ms.truth, Path(ms.truth).stat().st_mtime), "truth file"
    elif ms.known_edges:
        raw, ref = ms.known_edges, "preset"
    if raw:
        mapped = tuple((match_model_id(p, ids) or p, match_model_id(c, ids) or c) for p, c in raw)
        return mapped, ref
    decl = tuple(declared_edges(rec))
    return (decl, "declared lineage") if decl else (None, "")


@st.cache_data(show_spinner=False, max_entries=32)
def _reference(key: str, ms: ModelSet, truth_mtime: float, _rec: Recovery) -> tuple[Any, str, tuple]:
    """What the tree is compared against and each edge's status, once per recovery (matching declared
    parents to model ids costs seconds at 1,000 models: never on every click)."""
    truth, ref = _truth(ms, _rec)
    return truth, ref, tuple(_statuses(_rec, truth, ref).items())


def _statuses(rec: Recovery, truth: Any, reference: str) -> dict[tuple[str, str], str]:
    if not truth:
        return {}
    if reference == "declared lineage":
        out = dict(edge_lineage(rec))
        have = set(out)
        out.update({e: EdgeStatus.MISSING.value for e in truth if e not in have})
        return out
    from mother_core.evaluate import edge_status

    return dict(edge_status(rec, list(truth)))


def page(title: str, *, heading: str | None = None, caption: str | None = None, icon: str = "🌳",
         talk: bool = False) -> Loaded | NotReady:
    """Set up a page (heading, sidebar), recover or reuse the tree, and return what to render.

    The heading is drawn first so that a first run's progress display appears under it.
    """
    state.full_run()
    if talk:
        st.markdown(TALK_CSS, unsafe_allow_html=True)
    if heading:
        st.title(heading)
    if caption:
        st.caption(caption)
    try:
        ms, settings, device = pick_model_set()
        if ms is None:
            src = st.session_state.get("source")
            return NotReady("preset", state.preset_view()) if src == "Paper presets" else NotReady("empty", src)
        ready = ms.auto_run or state.requested(ms.key) or ms.kind == "result" or engine.have_statistics(ms, device)
        if not ready:
            if st.sidebar.button("Recover the tree", type="primary", key=f"run_{ms.key}"):
                state.request(ms.key)
                ready = True
        if not ready:
            return NotReady("pending", ms)
        if ms.kind in ("demo", "folder", "result"):
            state.set_in_url(ms.kind, ms.label if ms.kind == "demo" else (ms.result or ms.paths[0]))
        base_key, base = engine.recovery(ms, settings, device, transient=talk)
        if ms.kind == "demo":  # the other demo sets, in the background: a first visit finds them ready
            engine.warm_demo_sets(sources.demo_sets(), settings, device)
        constraints = state.constraints(base_key)
        try:
            key, rec = engine.constrained(base_key, base, constraints)
        except MotherError as e:
            st.warning(f"These constraints cannot all hold: {md(e)} The last change was undone.")
            constraints = state.undo_constraints(base_key)
            key, rec = engine.constrained(base_key, base, constraints)
        mtime = Path(ms.truth).stat().st_mtime if ms.truth and Path(ms.truth).is_file() else 0.0
        truth, ref, statuses = _reference(key, ms, mtime, rec)
        missing = state.link_selection_missing(rec)
        if missing:
            shown = missing if len(missing) <= 300 else missing[:300] + "…"
            st.warning(f"The link selects {md(shown)}, which is not in this tree: nothing is selected.")
        engine.freeze_heap()
        return Loaded(ms, base_key, base, key, rec, constraints, truth, ref, dict(statuses), device)
    except MotherError as e:
        st.error(md(e))
        return NotReady("error")
    except Exception as e:  # never a traceback in the page; the log keeps the details
        logging.getLogger(__name__).exception("recovery failed")
        st.error(md(engine.error_message(e)))
        return NotReady("error")

