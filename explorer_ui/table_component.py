"""The ranked edge table as a small two-way component (``st.components.v2``): a plain HTML table whose
rows are clickable, in place of a data grid.

Why not ``st.dataframe``: mounting and unmounting its data grid (a canvas, column measuring, the Arrow
decoder) was ~0.08 s of the browser's main thread on every switch to or from the Tree page, a third of
the switch (benchmarks/RESULTS.md, "Page switches, third pass"); a static table of the same rows costs a
few milliseconds. What the grid offered and this keeps: a scrolling box of fixed height with a sticky
header, one row per edge in the given order (least confident first), click a row to select it (the row
stays marked, as the grid's selection did), click a column header to sort by it (again: the other way).
Rows are added 150 at a time as the box is scrolled near its end, so a 1,000-edge table mounts as fast as
a small one.

The component sends one trigger, ``event`` = ``{"row": i, "t": ms}``, ``i`` being the row's index in
the order the rows were given. Like the graph (:mod:`explorer_ui.graph_component`), the table is only
rebuilt in the browser when its ``key`` (the rows' identity) changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from explorer_ui.graph_component import trigger_event

_CSS = """
.mt-cap {font: 16px/1.6 "Source Sans", sans-serif; margin: 0 0 8px 0;}
.mt-scroll {overflow: auto; border: 1px solid rgba(49,51,63,.15); border-radius: 6px;}
.mt-table {border-collapse: collapse; width: 100%; font: 14px/1.5 "Source Sans", sans-serif; color: inherit;}
.mt-table th {position: sticky; top: 0; background: #F6F7F9; color: #1A1A1A; text-align: left; font-weight: 600;
              cursor: pointer; user-select: none; white-space: nowrap; padding: 4px 10px;
              border-bottom: 1px solid rgba(49,51,63,.2);}
.mt-table td {padding: 4px 10px; border-bottom: 1px solid rgba(49,51,63,.08); white-space: nowrap;}
.mt-table td.mt-num, .mt-table th.mt-num {text-align: right; font-variant-numeric: tabular-nums;}
.mt-table tbody tr {cursor: pointer;}
.mt-table tbody tr:hover {background: rgba(255,75,75,.06);}
.mt-static .mt-table tbody tr {cursor: auto;}
.mt-static .mt-table tbody tr:hover {background: none;}
.mt-table tbody tr.mt-sel {background: rgba(255,75,75,.14);}
"""

_JS = r"""
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
const esc = s => String(s).replace(/[&<>"']/g, c => ESC[c]);

function body(root, st, d) {
  const order = d.rows.map((_, i) => i);
  if (st.sort) {
    const [c, dir] = st.sort, num = d.numeric[c];
    const v = i => d.rows[i][c];
    order.sort((a, b) => {
      const x = v(a), y = v(b);
      if (x === y) return a - b;
      if (x === null || x === '') return 1;  // empty cells last, either way
      if (y === null || y === '') return -1;
      return (num ? x - y : String(x).localeCompare(String(y))) * dir;
    });
  }
  st.order = order;
  st.shown = 0;
  root.querySelector('tbody').innerHTML = '';
  more(root, st, d);
  root.querySelectorAll('th').forEach((th, c) => {
    th.textContent = d.columns[c] + (st.sort && st.sort[0] === c ? (st.sort[1] > 0 ? ' ▲' : ' ▼') : '');
  });
}

// Rows are added a chunk at a time, the next one as the box is scrolled near its end: a 1,000-edge table
// then mounts as fast as a small one.
const CHUNK = 150;
function more(root, st, d) {
  const parts = [];
  const end = Math.min(st.order.length, st.shown + CHUNK);
  for (const i of st.order.slice(st.shown, end)) {
    const r = d.rows[i];
    parts.push('<tr data-row="' + i + '"' + (i === st.picked ? ' class="mt-sel"' : '') + '>');
    for (let c = 0; c < r.length; c++) {
      const x = r[c] === null ? '' : (d.numeric[c] ? d.text[c](r[c]) : r[c]);
      parts.push(d.numeric[c] ? '<td class="mt-num">' : '<td>', esc(x), '</td>');
    }
    parts.push('</tr>');
  }
  st.shown = end;
  root.querySelector('tbody').insertAdjacentHTML('beforeend', parts.join(''));
}

export default function (component) {
  const {data, parentElement, setTriggerValue} = component;
  let root = parentElement.querySelector('.mt-root');
  if (!root) {
    root = document.createElement('div');
    root.className = 'mt-root';
    root.innerHTML = '<div class="mt-cap"></div><div class="mt-scroll"><table class="mt-table"><thead><tr></tr>' +
      '</thead><tbody></tbody></table></div>';
    parentElement.appendChild(root);
  }
  const st = root.__mt || (root.__mt = {});
  root.querySelector('.mt-scroll').style.maxHeight = data.height + 'px';
  const cap = root.querySelector('.mt-cap');  // [bold, plain]: the table's heading, one element with it
  cap.style.display = data.caption ? '' : 'none';
  if (data.caption) cap.innerHTML = '<b>' + esc(data.caption[0]) + '</b>' + esc(data.caption[1]);
  data.text = data.digits.map(n => (x => Number(x).toFixed(n)));
  if (st.key !== data.key) {
    st.key = data.key; st.sort = null; st.picked = null;
    root.querySelector('thead tr').innerHTML = data.columns.map(
      (c, i) => '<th' + (data.numeric[i] ? ' class="mt-num"' : '') + ' data-col="' + i + '"></th>').join('');
    body(root, st, data);
  }
  const box = root.querySelector('.mt-scroll');
  box.onscroll = () => {
    if (st.shown < st.order.length && box.scrollTop + box.clientHeight > box.scrollHeight - 300) more(root, st, data);
  };
  root.querySelector('thead').onclick = e => {
    const th = e.target.closest('th');
    if (!th) return;
    const c = Number(th.dataset.col);
    st.sort = st.sort && st.sort[0] === c ? [c, -st.sort[1]] : [c, 1];
    body(root, st, data);
  };
  root.classList.toggle('mt-static', !data.clickable);
  root.querySelector('tbody').onclick = e => {
    if (!data.clickable) return;
    const tr = e.target.closest('tr');
    if (!tr) return;
    const prev = root.querySelector('tr.mt-sel');
    if (prev) prev.classList.remove('mt-sel');
    tr.classList.add('mt-sel');
    st.picked = Number(tr.dataset.row);
    setTriggerValue('event', {row: st.picked, t: Date.now()});
  };
}
"""


@functools.cache
def _mount() -> Callable[..., Any]:
    """The component, declared once per process, on first use (not at import)."""
    return st.components.v2.component("mother_table", css=_CSS, js=_JS, isolate_styles=False)


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    key: str,
    data_key: str,
    height: int,
    on_row: Callable[[int], None] | None = None,
    digits: Sequence[int | None] | None = None,
    caption: tuple[str, str] | None = None,
) -> None:
    """Draw ``rows`` under ``columns`` and call ``on_row(i)`` (before the rerun) when row ``i`` is clicked.

    Parameters
    ----------
    columns : sequence of str
        Column headers.
    rows : sequence of sequences
        Cell values: ``str``, a number (shown with ``digits``), or ``None`` (an empty cell, sorted last).
    key : str
        Widget key.
    data_key : str
        Identity of ``rows``: the browser rebuilds the table (and forgets its sort) only when it changes.
    height : int
        Maximum height of the scrolling box in CSS pixels.
    on_row : callable, optional
        Receives the index (in ``rows``) of a clicked row; ``None``: rows are not clickable (a static
        table that still sorts).
    digits : sequence of int or None, optional
        Per column: decimals of a numeric column, ``None`` for text (default: every column is text).
    caption : (str, str), optional
        A heading above the table, its first part in bold (plain text, escaped): part of the same element
        rather than a markdown element of its own.
    """
    digits = list(digits) if digits is not None else [None] * len(columns)

    def _changed() -> None:
        event = trigger_event(key)
        row = event.get("row") if isinstance(event, dict) else None
        if on_row is not None and isinstance(row, int) and 0 <= row < len(rows):
            on_row(row)

    payload = {
        "key": data_key,
        "columns": list(columns),
        "rows": [list(r) for r in rows],
        "height": height,
        "numeric": [d is not None for d in digits],
        "digits": [d or 0 for d in digits],
        "clickable": on_row is not None,
        "caption": list(caption) if caption else None,
    }
    _mount()(key=key, data=payload, on_event_change=_changed)
