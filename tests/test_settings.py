"""One settings schema: library, CLI, app, README and benchmark rows all agree (issue 10, item 1)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from mother_core.cli import build_parser, settings_from_args
from mother_core.settings import (
    SETTINGS, RecoverySettings, ablation_rows, markdown_table, recovery_settings, setting,
)

ROOT = Path(__file__).resolve().parent.parent


def test_library_defaults_are_the_schema_defaults():
    lib = RecoverySettings()
    assert [s.name for s in recovery_settings()] == [f.name for f in fields(RecoverySettings)]
    for s in recovery_settings():
        assert getattr(lib, s.name) == s.default, s.name
        if s.choices and not s.open_choices:
            assert s.default in s.choices


def _recover_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["recover"]


def test_cli_options_are_made_from_the_schema():
    parser = _recover_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for s in SETTINGS:
        action = by_dest[s.name]
        assert s.flag in action.option_strings
        if s.choices and not s.open_choices:
            assert tuple(action.choices) == s.choices
    args = parser.parse_args(["some/models"])
    assert settings_from_args(args) == RecoverySettings()
    assert args.device == setting("device").default
    changed = parser.parse_args(["m", "--layers", "all", "--no-refine", "--lambda", "0.5", "--n-trees", "3",
                                 "--direction-cues", "norm"])
    assert settings_from_args(changed) == RecoverySettings(layers="all", refine=False, lambda_=0.5, n_trees=3,
                                                           direction_cues="norm")
    with pytest.raises(SystemExit):
        parser.parse_args(["m", "--regime", "sideways"])


def test_readme_table_is_the_schema_table():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", readme, re.S)
    assert block is not None, "README.md lost its settings table markers"
    assert block.group(1) == markdown_table(), "regenerate the table: python -m mother_core.settings"


def test_benchmark_rows_cover_every_choice():
    rows = dict(ablation_rows())
    assert rows["ours (mother+, defaults)"] == RecoverySettings()
    for s in recovery_settings():
        for choice in s.choices:
            if choice != s.default:
                assert getattr(rows[f"{s.name}={choice}"], s.name) == choice


def test_app_widgets_start_at_the_schema_defaults():
    from streamlit.testing.v1 import AppTest

    def script():
        import streamlit as st

        from explorer_ui.settings_widgets import settings_widgets

        st.session_state["out"] = settings_widgets()

    at = AppTest.from_function(script).run()
    assert not at.exception
    chosen, run = at.session_state["out"]
    assert chosen == RecoverySettings()
    assert run == {s.name: s.default for s in SETTINGS if s.scope == "run"}
    assert set(run) == {"device", "decode_threads"}
    labels = {w.label for w in at.selectbox} | {w.label for w in at.checkbox} | {w.label for w in at.slider}
    assert {s.label for s in SETTINGS if s.choices or s.type in (bool, float)} <= labels
    at.selectbox(key="layers").set_value("all").run()
    at.checkbox(key="refine").uncheck().run()
    chosen, _ = at.session_state["out"]
    assert chosen == RecoverySettings(layers="all", refine=False)
