"""The sidebar's recovery settings, one widget per setting of the schema (:mod:`mother_core.settings`).

:func:`settings_widgets` draws them in the current Streamlit container and returns the
:class:`RecoverySettings` and run options they say; labels, choices, defaults and help all come from
the schema, so the app cannot drift from the CLI and the library (``tests/test_settings.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from mother_core.settings import SETTINGS, RecoverySettings, Setting

#: ``widget(fn, label, key, default, **kwargs)``: draws ``fn`` (a Streamlit widget) under ``key``
#: starting at ``default`` and returns its value; the sidebar's keeps values across pages.
Widget = Callable[..., Any]


def key_of(s: Setting) -> str:
    """The session-state key of a setting's widget (``lambda`` for ``lambda_``)."""
    return s.name.rstrip("_")


def _plain(fn: Any, label: str, key: str, default: Any, **kw: Any) -> Any:
    """A Streamlit widget starting at ``default`` (the sidebar's own ``widget`` persists it too)."""
    if "options" in kw:
        return fn(label, key=key, index=list(kw["options"]).index(default), **kw)
    return fn(label, key=key, value=default, **kw)


def settings_widgets(widget: Widget | None = None, *, disabled: bool = False,
                     defaults: Mapping[str, Any] | None = None) -> tuple[RecoverySettings, dict[str, Any]]:
    """One widget per setting; returns the recovery settings and the run options (``{"device": ...}``).

    Parameters
    ----------
    widget : callable, optional
        How to draw a widget (the sidebar passes one that persists values across pages); by default
        plain Streamlit widgets.
    disabled : bool
        Show the settings without letting them change (a saved result).
    defaults : mapping, optional
        Defaults that differ for this model set, by setting name (a preset's regime).
    """
    draw = widget or _plain
    over = dict(defaults or {})
    recovery: dict[str, Any] = {}
    run: dict[str, Any] = {}
    for s in SETTINGS:
        key = key_of(s)
        default = over.get(s.name, s.default)
        value: Any
        if s.choices:
            value = draw(st.selectbox, s.label, key, default, options=s.choices, disabled=disabled, help=s.help)
        elif s.type is bool:
            value = bool(draw(st.checkbox, s.label, key, bool(default), disabled=disabled, help=s.help))
        elif s.type is float:
            # The slider starts at the default and counts only once the user says so (a checkbox), so
            # a rerun with other settings keeps the default exactly.
            own = draw(st.checkbox, f"Set {s.label.split(' (')[0]} myself", f"own_{key}", False, disabled=disabled)
            lam = draw(st.slider, s.label, key, float(default), min_value=float(s.minimum or 0.0),
                       max_value=float(s.maximum or 1.0), step=float(s.step or 0.01),
                       disabled=disabled or not own, help=s.help)
            value = float(lam) if own else default
        elif s.type is int:
            n = draw(st.number_input, f"{s.label} (0 = find from data)" if s.optional else s.label, key,
                     int(default or 0), min_value=int(s.minimum or 0), max_value=int(s.maximum or 10**6),
                     step=int(s.step or 1), disabled=disabled, help=s.help)
            value = (int(n) or None) if s.optional else int(n)
        else:
            text = draw(st.text_input, s.label, key, default or "", disabled=disabled, help=s.help)
            value = (text.strip() or None) if s.optional else text
        (recovery if s.scope == "recovery" else run)[s.name] = value
    return RecoverySettings(**recovery), run
