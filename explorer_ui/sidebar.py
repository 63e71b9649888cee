"""The shared sidebar: pick a model set and settings, run (or reuse) the recovery, return a context.

Every page starts with ``ctx = page("Title")``; it returns a :class:`Loaded` (or ``None`` while nothing
is recovered yet, after telling the user why). Engine errors are shown in the page, never as tracebacks.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from mother_core.errors import MotherError
from mother_core.lineage import declared_edges, edge_lineage, match_model_id
from mother_core.recovery.features import LAYER_SELECTIONS as LAYERS
from mother_core.recovery.recover import METHODS, REGIMES
from mother_core.recovery.result import Constraints, Recovery, RecoverySettings

from explorer_ui import engine, sources
from explorer_ui.sources import ModelSet

SOURCES = ("Demo sets", "Local folder", "Hugging Face cache", "Paper presets", "Saved result")
DEVICES = ("auto", "cpu", "cuda")
USE_RANK = ("auto", "never", "always")
TALK_CSS = """<style>
html, body, [class*="css"], .stMarkdown p, .stCaption, li {font-size: 1.35rem !important;}
h1 {font-size: 3rem !important;} h2 {font-size: 2.3rem !important;}
[data-testid="stMainBlockContainer"] {max-width: 100% !important; padding: 1rem 2rem !important;}
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


def _widget(fn: Any, label: str, key: str, default: Any, **kw: Any) -> Any:
    _persist(key, default)
    options = kw.get("options")
    if options is not None and st.session_state[key] not in list(options):  # e.g. a folder that went away
        st.session_state[key] = default if default in list(options) else list(options)[0]
    return fn(label, key=key, on_change=_remember, args=(key,), **kw)


def _pick_demo() -> ModelSet | None:
    sets = sources.demo_sets()
    if not sets:
        st.sidebar.info("No demo sets in assets/demo/ yet.")
        return None
    labels = [s.label for s in sets]
    name = _widget(st.sidebar.selectbox, "Demo set", "demo", labels[0], options=labels)
    return sets[labels.index(name)] if name in labels else sets[0]


def _pick_folder() -> ModelSet | None:
    roots = sources.browse_roots()
    if not roots:
        st.sidebar.warning("No browsable folders: set MOTHER_BROWSE_ROOTS.")
        return None
    folders = [f for r in roots for f in sources.list_folders(r)]
    folder = _widget(st.sidebar.selectbox, "Folder with models", "folder", folders[0], options=folders,
                     help="Only folders under MOTHER_BROWSE_ROOTS are listed.")
    if folder not in folders:
        return None
    sources.within_roots(folder, roots)
    return ModelSet("folder", Path(folder).name, (folder,), truth=sources.truth_for(folder))


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
    return ModelSet("hf", f"{arch} ({len(paths)} cached models)", paths) if paths else None


def _pick_preset() -> ModelSet | None:
    from mother_core.presets import PRESETS

    keys = [p.key for p in PRESETS]
    key = _widget(st.sidebar.selectbox, "Family", "preset", keys[0], options=keys,
                  format_func=lambda k: next(p.title for p in PRESETS if p.key == k))
    preset = next(p for p in PRESETS if p.key == key)
    st.session_state["_preset_view"] = (preset, engine.preset_availability(preset.key))
    avail = st.session_state["_preset_view"][1]
    if not avail.complete:
        return None
    return ModelSet("preset", preset.title, tuple(avail.found[h] for h in preset.hub_ids),
                    component=preset.component, known_edges=preset.edges, regime=preset.regime)


def _pick_result() -> ModelSet | None:
    files = sources.list_result_files()
    up = st.sidebar.file_uploader("Upload a result.json", type=["json"], key="upload")
    if up is not None:
        data = up.getvalue()
        dest = Path(engine.CACHE_DIR) / "uploads" / f"{hashlib.sha1(data).hexdigest()[:16]}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return ModelSet("result", up.name, result=str(dest), auto_run=True)
    if not files:
        st.sidebar.info("No result*.json under the browsable folders; upload one.")
        return None
    path = _widget(st.sidebar.selectbox, "Saved result", "result_file", files[0], options=files)
    if path not in files:
        return None
    truth = Path(path).with_name("truth.json")
    return ModelSet("result", Path(path).name, result=path,
                    truth=str(truth) if truth.is_file() else None, auto_run=True)


def _settings(ms: ModelSet | None) -> tuple[RecoverySettings, str]:
    with st.sidebar.expander("Recovery settings", expanded=False):
        disabled = ms is not None and ms.kind == "result"
        default_regime = ms.regime if ms is not None and ms.regime else "auto"
        regime = _widget(st.selectbox, "Kurtosis regime", "regime", default_regime, options=REGIMES,
                         disabled=disabled, help="specialization: kurtosis falls parent -> child; "
                         "generalization: it rises; auto: inferred per tree.")
        method = _widget(st.selectbox, "Method", "method", "mother+", options=METHODS, disabled=disabled,
                         help="mother+: robust distance (rank of differences for LoRA trees) places edges, "
                         "kurtosis and norm growth orient them; paper: the published method.")
        use_rank = _widget(st.selectbox, "Rank distance (LoRA)", "use_rank", "auto", options=USE_RANK,
                           disabled=disabled, help="auto: used for trees whose models differ at low rank.")
        own = _widget(st.checkbox, "Set lambda myself", "own_lambda", False, disabled=disabled)
        lam = _widget(st.slider, "lambda (direction penalty)", "lambda", 0.3, min_value=0.0,
                      max_value=2.0, step=0.05, disabled=disabled or not own)
        layers = _widget(st.selectbox, "Layers", "layers", "matrices", options=LAYERS, disabled=disabled)
        refine = _widget(st.checkbox, "Refine by additivity", "refine", True, disabled=disabled,
                         help="Move attachments while squared distances add up better along the tree "
                         "(fine-tuning steps add nearly orthogonal updates). Off: the arborescence as solved.")
        n_trees = _widget(st.number_input, "Number of trees (0 = find from data)", "n_trees", 0,
                          min_value=0, max_value=1000, step=1, disabled=disabled)
        device = _widget(st.selectbox, "Device", "device", "auto", options=DEVICES, disabled=disabled)
        st.caption(f"Compute device: **{engine.device_description(device)}**")
    wanted = {"regime": regime, "method": method, "use_rank": use_rank, "layers": layers,
              "n_trees": int(n_trees) or None, "refine": bool(refine)}
    if own:
        wanted["lambda_"] = float(lam)
    return RecoverySettings(**wanted), device


def pick_model_set() -> tuple[ModelSet | None, RecoverySettings, str]:
    """The sidebar model-set picker and settings."""
    st.sidebar.header("Model set")
    src = _widget(st.sidebar.radio, "Source", "source", SOURCES[0], options=SOURCES)
    picker = {"Demo sets": _pick_demo, "Local folder": _pick_folder, "Hugging Face cache": _pick_hf,
              "Paper presets": _pick_preset, "Saved result": _pick_result}[src]
    ms = picker()
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


def _statuses(rec: Recovery, truth: Any, reference: str) -> dict[tuple[str, str], str]:
    if not truth:
        return {}
    if reference == "declared lineage":
        out = dict(edge_lineage(rec))
        have = set(out)
        out.update({e: "missing" for e in truth if e not in have})
        return out
    from mother_core.evaluate import edge_status

    return dict(edge_status(rec, list(truth)))


def page(title: str, *, heading: str | None = None, caption: str | None = None, icon: str = "🌳",
         talk: bool = False) -> Loaded | None:
    """Set up a page (config, heading, sidebar), recover or reuse the tree, and return what to render.

    The heading is drawn first so that a first run's progress display appears under it.
    """
    st.set_page_config(page_title=f"{title} · MoTHer Explorer", page_icon=icon, layout="wide",
                       initial_sidebar_state="collapsed" if talk else "auto")
    if talk:
        st.markdown(TALK_CSS, unsafe_allow_html=True)
    if heading:
        st.title(heading)
    if caption:
        st.caption(caption)
    try:
        st.session_state["_why_none"] = "error"
        ms, settings, device = pick_model_set()
        if ms is None:
            src = st.session_state.get("source")
            st.session_state["_why_none"] = "preset" if src == "Paper presets" else "empty"
            return None
        st.session_state["_model_set"] = ms
        requested = st.session_state.setdefault("_requested", set())
        ready = ms.auto_run or ms.key in requested or ms.kind == "result" or engine.have_statistics(ms, device)
        if not ready:
            if st.sidebar.button("Recover the tree", type="primary", key=f"run_{ms.key}"):
                requested.add(ms.key)
                ready = True
        if not ready:
            st.session_state["_pending"] = ms
            st.session_state["_why_none"] = "pending"
            return None
        st.session_state.pop("_pending", None)
        base_key, base = engine.recovery(ms, settings, device)
        cons_all = st.session_state.setdefault("_constraints", {})
        constraints = cons_all.get(base_key, Constraints())
        try:
            key, rec = engine.constrained(base_key, base, constraints)
        except MotherError as e:
            previous = st.session_state.setdefault("_constraints_prev", {}).get(base_key, Constraints())
            st.warning(f"These constraints cannot all hold: {e} The last change was undone.")
            cons_all[base_key] = constraints = previous
            key, rec = engine.constrained(base_key, base, constraints)
        truth, ref = _truth(ms, rec)
        st.session_state["_why_none"] = None
        return Loaded(ms, base_key, base, key, rec, constraints, truth, ref, _statuses(rec, truth, ref), device)
    except MotherError as e:
        st.error(str(e))
        return None
    except Exception as e:  # never a traceback in the page; the log keeps the details
        logging.getLogger(__name__).exception("recovery failed")
        st.error(engine.error_message(e))
        return None


def set_constraints(ctx: Loaded, constraints: Constraints) -> None:
    """Store new constraints for this recovery (the next rerun re-solves); keep the old ones to undo."""
    st.session_state.setdefault("_constraints_prev", {})[ctx.base_key] = ctx.constraints
    st.session_state.setdefault("_constraints", {})[ctx.base_key] = constraints
