"""Files the app serves itself (Streamlit's ``server.enableStaticServing``), so the browser caches them.

The tree iframe needs vis-network (a 470 kB script and a 220 kB stylesheet). Inlined, they travel
inside every tree page over the websocket and are parsed again each time; served from ``static/``
beside ``app.py``, the browser fetches them once per session and keeps them. The files are copied
from the installed pyvis package on first use, so the repository carries no second copy of the
library. When static serving is off or the folder cannot be written (a read-only install), the
tree inlines them instead: slower to switch pages, otherwise the same.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import streamlit as st

from explorer_ui.graph import vis_assets

STATIC_ROUTE = "app/static/"  # Streamlit's fixed route, relative so a server.baseUrlPath still works

log = logging.getLogger(__name__)


def vis_url() -> str | None:
    """The URL folder where the app serves vis-network, or ``None`` when the page must inline it."""
    if not st.get_option("server.enableStaticServing"):
        return None
    return _publish_vis(app_root() / "static")


def app_root() -> Path:
    """The folder of the app's main script (Streamlit serves ``<it>/static``), also when this package is
    installed elsewhere; the checkout's root outside a script run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    main = getattr(ctx, "main_script_path", None) if ctx is not None else None
    return Path(main).resolve().parent if main else Path(__file__).resolve().parent.parent


@functools.cache
def _publish_vis(static_dir: Path) -> str | None:
    assets = vis_assets()
    name = f"vis-network-{assets.version}"
    target = static_dir / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        for src in assets.files:
            dest = target / src.name
            if not dest.exists() or dest.stat().st_size != src.stat().st_size:
                # copy2 keeps the old modification time, so the browser's heuristic cache lifetime
                # (a fraction of the file's age) is long and it rarely asks again.
                tmp = dest.with_suffix(dest.suffix + ".part")
                shutil.copy2(src, tmp)
                tmp.replace(dest)
    except OSError as e:
        log.warning("cannot publish vis-network under %s (%s): the tree page inlines it instead", target, e)
        return None
    # Streamlit serves the page at /<page> and the iframe's srcdoc resolves URLs against it, so a
    # relative URL lands on <base>/app/static/... with or without a baseUrlPath.
    return f"{STATIC_ROUTE}{name}/"
