"""Cached wrappers around the engine: each heavy step runs once per input, whatever the widgets do.

Two caches:

* ``st.cache_data`` for cheap-to-pickle, hashable-keyed calls (discovery, truth files, the HF cache
  scan, every derived table/figure/HTML, keyed on a recovery's ``key`` string).
* a process-wide LRU store (``st.cache_resource``) for the statistics pass and recoveries: the pass
  reports live progress into the page, which a ``cache_data`` function may not do (its elements would
  be replayed on every hit). Stored objects are treated as read-only.

Once a demo set is shown, the other demo sets are recovered in a background thread (:func:`warm_demo_sets`),
so that a first visit to one finds its tree ready (recovering a demo set takes 1-3 s under load; the issue
asks for at most 0.5 s per click). Each heavy step holds a lock per key: a page that needs a set the
warm-up is reading waits for it instead of reading it twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from mother_core.errors import MotherError
from mother_core.recovery.result import Constraints, Recovery, RecoverySettings

from explorer_ui.sources import ModelSet, fingerprint, human_bytes

CACHE_DIR = str(Path(__file__).resolve().parent.parent / ".mother_cache")


class _LRU:
    """A small thread-safe LRU dict."""

    def __init__(self, maxsize: int = 24) -> None:
        self.maxsize = maxsize
        self._d: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.maxsize:
                self._d.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _store() -> _LRU:
    return _LRU()


_GUARD = threading.Lock()
_STEP_LOCKS: dict[str, threading.Lock] = {}
_WARMED: set[str] = set()


def _step_lock(key: str) -> threading.Lock:
    """The lock of one heavy step (a statistics pass, a recovery), shared by page runs and the warm-up."""
    with _GUARD:
        return _STEP_LOCKS.setdefault(key, threading.Lock())


def _wait_for(lock: threading.Lock) -> None:
    """Acquire ``lock``; while another run or the background warm-up holds it, say so in the page.

    Returns holding ``lock``, or raises holding nothing: a page left while it waited (another page opened,
    the tab reloaded) has its run stopped by an exception from the spinner's exit, *after* the lock was
    taken and before the caller's ``try``. The lock then stayed taken for good and every later visit to the
    set waited on "Preparing this set in the background…" with nothing running (appux5: the typed demo
    after two quick page switches, until the server was restarted).
    """
    if lock.acquire(blocking=False):
        return
    got = False
    try:
        with st.spinner("Preparing this set in the background…"):
            lock.acquire()
            got = True
    except BaseException:
        if got:
            lock.release()
        raise


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, default=repr, sort_keys=True).encode()).hexdigest()[:20]


# --- small cached calls ----------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def discover_set(paths: tuple[str, ...], component: str | None, fp: str) -> Any:
    """``mother_core.discover`` on a set of paths (``fp`` makes the key change when files change), confined
    to the folders the app may read (``sources.read_roots``)."""
    return _discover(paths, component)


def _discover(paths: tuple[str, ...], component: str | None) -> Any:
    from mother_core import discover

    from explorer_ui.sources import read_roots

    return discover(list(paths), component=component, roots=[str(r) for r in read_roots()])


@st.cache_data(show_spinner=False, max_entries=32)
def load_truth(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
    from mother_core.evaluate import load_truth as _load

    return tuple((str(p), str(c)) for p, c in _load(path))


def _hf_cache_dir() -> str | None:
    return os.environ.get("HF_HUB_CACHE") or None


def hf_cache_models() -> list:
    """Models in the local Hugging Face cache (rescanned at most every 30 s)."""
    return _hf_cache_models(_hf_cache_dir())


@st.cache_data(show_spinner=False, ttl=30)
def _hf_cache_models(cache_dir: str | None) -> list:
    from mother_core.presets import scan_hf_cache

    return scan_hf_cache(cache_dir)


def preset_availability(preset_key: str) -> Any:
    """Which models of a preset are in the local cache."""
    return _preset_availability(preset_key, _hf_cache_dir())


@st.cache_data(show_spinner=False, ttl=30)
def _preset_availability(preset_key: str, cache_dir: str | None) -> Any:
    from mother_core.presets import find_in_hf_cache, get_preset

    return find_in_hf_cache(get_preset(preset_key), cache_dir)


@st.cache_data(show_spinner=False)
def device_description(device: str) -> str:
    from mother_core.device import describe_device

    return describe_device(device)


# --- progress --------------------------------------------------------------------------------------
def progress_text(p: Any) -> str:
    """One line for a :class:`mother_core.Progress`: stage, tensors, bytes, ETA, device."""
    parts = [str(p.stage).capitalize()]
    if p.tensors_total:
        parts.append(f"{p.tensors_done}/{p.tensors_total} tensors")
    if p.bytes_total:
        parts.append(f"{human_bytes(p.bytes_read)} of {human_bytes(p.bytes_total)}")
    parts.append(f"{p.elapsed_s:.1f} s elapsed")
    if p.eta_s is not None:
        parts.append(f"about {p.eta_s:.0f} s left")
    parts.append(f"on {p.device}")
    return " · ".join(parts)


def _progress_callback(bar: Any, line: Any) -> Callable[[Any], None]:
    last = [0.0]

    def cb(p: Any) -> None:
        now = time.monotonic()
        done = p.tensors_total and p.tensors_done >= p.tensors_total
        if now - last[0] < 0.1 and not done:
            return
        last[0] = now
        frac = (p.bytes_read / p.bytes_total) if p.bytes_total else (
            p.tensors_done / p.tensors_total if p.tensors_total else 0.0)
        bar.progress(min(max(float(frac), 0.0), 1.0))
        line.caption(progress_text(p))

    return cb


# --- the heavy steps -------------------------------------------------------------------------------
def stats_key(ms: ModelSet, device: str) -> str:
    return _key("stats", ms.paths, ms.component, fingerprint(ms.paths), device)


def have_statistics(ms: ModelSet, device: str) -> bool:
    return _store().get(stats_key(ms, device)) is not None


def statistics(ms: ModelSet, device: str, *, transient: bool = False) -> tuple[str, Any]:
    """The statistics pass for a model set, with live progress in the page (once per set/device).

    ``transient``: the progress display is removed when done and its summary becomes a toast (talk
    mode: the page must fit the projector, and a click there reruns only the tree, not the page).
    """
    key = stats_key(ms, device)
    return key, _made_once(_store(), key, lambda: _read_statistics(ms, device, transient), in_page=True)


def _made_once(store: _LRU, key: str, make: Callable[[], Any], *, in_page: bool) -> Any:
    """``store``'s value for ``key``, made by ``make()`` when absent, by one thread at a time per key: page
    runs and the background warm-up share the locks, so a set being read is waited for (``in_page``: with
    a spinner), then found, never read twice."""
    hit = store.get(key)
    if hit is not None:
        return hit
    lock = _step_lock(key)
    if in_page:
        _wait_for(lock)
    else:
        lock.acquire()
    try:
        hit = store.get(key)  # made by the other side meanwhile?
        if hit is None:
            hit = make()
            store.put(key, hit)
        return hit
    finally:
        lock.release()


def _read_statistics(ms: ModelSet, device: str, transient: bool) -> Any:
    from mother_core import compute_statistics

    discovery = discover_set(ms.paths, ms.component, fingerprint(ms.paths))
    holder = st.empty()
    with holder.status(f"Reading the weights of {len(discovery.models)} models…", expanded=True) as status:
        bar, line = st.progress(0.0), st.empty()
        t0 = time.monotonic()
        stats = compute_statistics(discovery, device=device, cache_dir=CACHE_DIR,
                                   progress=_progress_callback(bar, line))
        done = f"Read {len(stats.models)} models in {time.monotonic() - t0:.1f} s"
        status.update(label=done, state="complete", expanded=False)
    if transient:
        holder.empty()
        st.toast(done)
    return stats


def displayable(rec: Recovery) -> Recovery:
    """``rec`` with every path and problem text printable (a non-UTF-8 file name reaches Python as lone
    surrogates, which no page can send to the browser): shown escaped, e.g. ``caf\\xe9``. Ids are
    printable already (discovery and the result schema see to it)."""
    import dataclasses

    from explorer_ui.safe_text import plain

    bad = any(not m.path.isprintable() for m in rec.models) or any(
        not str(v).isprintable() for p in rec.problems for v in p.values())
    if not bad:
        return rec
    models = [dataclasses.replace(m, path=plain(m.path)) for m in rec.models]
    problems = [{k: plain(v) for k, v in p.items()} for p in rec.problems]
    return dataclasses.replace(rec, models=models, problems=problems)


def recovery(ms: ModelSet, settings: RecoverySettings, device: str, *,
             transient: bool = False) -> tuple[str, Recovery]:
    """The unconstrained recovery of a model set (from a saved result, or statistics + recover);
    ``transient``: see :func:`statistics`."""
    if ms.kind == "result":
        path = ms.result or ""
        key = _key("result", path, Path(path).stat().st_mtime_ns if Path(path).exists() else 0)
        hit = _store().get(key)
        if hit is None:
            hit = displayable(Recovery.load(path))
            _store().put(key, hit)
        return key, hit
    skey, stats = statistics(ms, device, transient=transient)
    key = _recovery_key(skey, settings)
    return key, _made_once(_store(), key, lambda: _recover(stats, settings), in_page=True)


def _recovery_key(stats_key: str, settings: RecoverySettings) -> str:
    return _key("rec", stats_key, asdict(settings))


def _recover(stats: Any, settings: RecoverySettings) -> Recovery:
    from mother_core import recover

    return displayable(recover(stats, settings=settings))


def warm_demo_sets(sets: list[ModelSet], settings: RecoverySettings, device: str) -> None:
    """Recover ``sets`` (the demo sets) with these settings in a background thread, once per server process
    and settings, so that a first visit to one finds its tree ready. Off with ``MOTHER_WARM_DEMOS=0``.

    The thread starts a few seconds later (the browser is still drawing the page that started it), runs at a
    lower priority than page runs (``nice`` +10 on Linux) and skips what is stored.
    """
    if os.environ.get("MOTHER_WARM_DEMOS", "1") == "0" or not sets:
        return
    tag = _key("warm", [s.key for s in sets], asdict(settings), device)
    with _GUARD:
        if tag in _WARMED:
            return
        _WARMED.add(tag)
    threading.Thread(target=_warm, args=(_store(), sets, settings, device), name="mother-warm-demos",
                     daemon=True).start()


_WARM_DELAY_S = 3.0  # let the browser draw the first page before the warm-up takes CPU


def _warm(store: _LRU, sets: list[ModelSet], settings: RecoverySettings, device: str) -> None:
    time.sleep(_WARM_DELAY_S)
    try:
        tid = threading.get_native_id()  # Linux: the priority of this thread only
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):
        pass
    from mother_core import compute_statistics

    for ms in sets:
        try:
            skey = stats_key(ms, device)
            stats = _made_once(store, skey, lambda: compute_statistics(_discover(ms.paths, ms.component), device=device,
                                                                     cache_dir=CACHE_DIR), in_page=False)
            _made_once(store, _recovery_key(skey, settings), lambda: _recover(stats, settings), in_page=False)
        except Exception:  # a set that fails here fails again, with its message, when the user opens it
            logging.getLogger(__name__).warning("warming demo set %s failed", ms.label, exc_info=True)
    import gc

    gc.freeze()  # the warmed statistics and recoveries are long-lived too (see freeze_heap)


def constrained(base_key: str, base: Recovery, constraints: Constraints) -> tuple[str, Recovery]:
    """``resolve`` the base recovery under user constraints (fast; cached per constraint set)."""
    if constraints == Constraints():
        return base_key, base
    key = _key("resolve", base_key, asdict(constraints))
    hit = _store().get(key)
    if hit is None:
        from mother_core import resolve

        hit = resolve(base, constraints)
        _store().put(key, hit)
    return key, hit


_FROZE = threading.Event()


def freeze_heap() -> None:
    """Once per server process, after the first page's recovery: move every object alive now out of the
    cyclic garbage collector's reach (``gc.freeze``), and again when the demo warm-up is done.

    torch, plotly, pandas and the recoveries leave a few hundred thousand long-lived objects; Python's
    full collection walks all of them (0.12-0.66 s seen at load 5-7 on the 2-core machine), stalling
    whichever page run allocates past the threshold (Streamlit's own collection after every run is off,
    ``.streamlit/config.toml``). Frozen objects are still freed by reference counting; only garbage
    cycles among them (none expected in these long-lived modules and caches) would be kept.
    """
    if not _FROZE.is_set():
        _FROZE.set()
        import gc

        gc.freeze()


def get(key: str) -> Any:
    """A stored object by key (``None`` if evicted)."""
    return _store().get(key)


def error_message(e: BaseException) -> str:
    """What to show for an engine error (``str`` of a :class:`MotherError`)."""
    return str(e) if isinstance(e, MotherError) else f"Unexpected error: {type(e).__name__}: {e}"
