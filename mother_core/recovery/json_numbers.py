"""How ``result.json`` holds numbers: JSON has no NaN or infinity, so NaN is written as ``null`` and an
infinity as the string ``"inf"`` or ``"-inf"`` (the schema's ``_NUM``, :mod:`.schema`); reading turns
them back."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np


def to_json_number(x: Any) -> Any:
    """A float (Python or numpy) as result.json holds it; anything else unchanged."""
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


def from_json_number(x: Any) -> float:
    """The float a result.json number stands for: ``null`` is NaN, ``"inf"`` / ``"-inf"`` infinities."""
    return math.nan if x is None else float(x)


def matrix_from_json(rows: Any, dtype: type = np.float64) -> np.ndarray:
    """A matrix written as lists of result.json numbers (rows), read back as an array of ``dtype``; an array
    (:func:`loads_result` reads a result's matrices as float64 arrays) is taken as it is."""
    if isinstance(rows, np.ndarray):
        if np.dtype(dtype).kind in "iu" and not (np.abs(rows) < 2.0**63).all():  # NaN, inf, past int64
            raise ValueError("a count is NaN, infinite or past 64-bit integers")  # np.array(lists) refused them
        return rows if rows.dtype == dtype else rows.astype(dtype)
    return np.array([[from_json_number(x) for x in row] for row in rows], dtype=dtype)


#: Digits from which an integer literal is read as the float it stands for (:func:`loads`): more than any
#: count or index a result holds (int64 has 19), and below Python's 4,300-digit limit on parsing an int.
_LONG_INT_DIGITS = 19


def _json_int(text: str) -> int | float:
    """An integer literal: as an int, or as a float when it has :data:`_LONG_INT_DIGITS` digits or more (inf past
    1.8e308). A literal of 10**400 was an int that no matrix, ``float()`` or array could hold (an
    ``OverflowError`` out of the loader), one of 5,000 digits a ``ValueError`` out of ``json`` itself."""
    return int(text) if len(text.lstrip("-")) < _LONG_INT_DIGITS else float(text)


def loads(text: str | bytes) -> Any:
    """A result or truth file's JSON, as ``json.loads`` reads it but for long integer literals (:func:`_json_int`)
    and deep nesting: every failure is a :class:`ValueError` whose message says what is wrong.

    >>> loads('{"n": ' + '9' * 400 + ', "m": 3}')
    {'n': inf, 'm': 3}
    """
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ValueError("it nests too deeply to be one") from None


# --- Reading a result's matrices without a Python float per cell ------------------------------------------
# ``json.loads`` makes every cell of an N x N matrix a Python float in a list (32 bytes against the ~20 to 25
# characters the writer spends on it), and the arrays were then built from those lists through a second list
# per row: 9 bytes of memory per byte of file at the peak (540 MB for 58 MB, branch hostile5). A result's
# bulk is its matrices, so :func:`loads_result` reads each row of plain numbers by itself: it finds them in
# the text (lexically, outside strings), lets ``json`` parse the rest with the constant ``NaN`` in each row's
# place (handed back as the row, in order, by ``parse_constant``), and puts a float64 array where a whole
# matrix of equal rows is expected (:data:`MATRIX_KEYS`); every other row goes back to the lists
# ``json.loads`` would have made. A row's cells are exactly what the schema's ``_NUM`` accepts (a JSON number,
# ``null``, ``"inf"``, ``"-inf"``, ``"nan"``, ``"NaN"``); anything else in a row (a ``true``, ``"1.0"``, a
# nested list) leaves it to the lists and the schema, as before.

#: Where a result holds (N, N) or (N, layers) matrices: top-level keys, and keys of its ``extra``
#: (:meth:`mother_core.recovery.problem.RecoveryProblem.to_json`; ``cue_votes`` maps a cue to one).
MATRIX_KEYS = ("layer_kurtosis", "distance_matrix", "cost_matrix")
EXTRA_MATRIX_KEYS = ("relative_distance", "direction_evidence", "votes_up", "shared_layers", "squared_distance")

_NUMBER = r'-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|null|"(?:-?inf|nan|NaN)"'
# A JSON string (skipped whole, so no row is found inside one), a bare constant (``NaN``, ``Infinity``,
# ``-Infinity``: ``json`` calls ``parse_constant`` for it too) or a row of one or more plain numbers. Possessive
# quantifiers: no backtracking state kept per cell, so a row of millions of cells costs no stack.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|NaN|-?Infinity|\[[ \t\n\r]*+(?:' + _NUMBER + r')(?:[ \t\n\r]*+,'
                    r'[ \t\n\r]*+(?:' + _NUMBER + r'))*+[ \t\n\r]*+\]', re.DOTALL)


class _Row:
    """Where a row of plain numbers stood in the text (a span :data:`_TOKEN` matched), as ``json`` hands it back:
    an object of this module's type, which no string or number of the file can spell."""

    __slots__ = ("start", "end")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


def _row(text: str) -> np.ndarray:
    """One row of plain numbers (a span :data:`_TOKEN` matched) as float64, read as :func:`matrix_from_json` does."""
    cells = json.loads(text, parse_int=_json_int)
    if '"' in text or "n" in text:  # null or a spelled infinity / NaN among the cells
        cells = [from_json_number(x) for x in cells]
    return np.array(cells, dtype=np.float64)


def loads_result(text: str) -> Any:
    """A result file's JSON as :func:`loads` reads it, but for its matrices (:data:`MATRIX_KEYS`, and
    :data:`EXTRA_MATRIX_KEYS` and ``cue_votes`` in ``extra``): a matrix whose rows are all plain numbers of one
    length is a float64 array, read one row at a time (memory: the text plus 8 bytes a cell, not a list of
    Python floats); any other matrix stays lists, for the schema to judge as before.

    >>> d = loads_result('{"distance_matrix": [[0, 1.5], [null, "inf"]], "layers": [{"shape": [2, 3]}]}')
    >>> d["distance_matrix"]
    array([[0. , 1.5],
           [nan, inf]])
    >>> d["layers"]
    [{'shape': [2, 3]}]
    """
    # Each row is replaced by the bare constant ``NaN``, and ``json`` hands the rows back through
    # ``parse_constant``, which it calls in the text's order: a row becomes a :class:`_Row` where it stood, and
    # a constant of the file's own the float ``json`` makes of it.
    turns: list[_Row | float] = []
    pieces: list[str] = []
    last = 0
    for m in _TOKEN.finditer(text):
        first = text[m.start()]
        if first == "[":
            pieces += [text[last:m.start()], "NaN"]
            turns.append(_Row(*m.span()))
            last = m.end()
        elif first != '"':
            turns.append(float(m.group().replace("Infinity", "inf")))
    if not pieces:  # no row
        return loads(text)
    pieces.append(text[last:])
    turn = iter(turns)
    try:
        d = json.loads("".join(pieces), parse_int=_json_int, parse_constant=lambda _: next(turn))
    except RecursionError:
        raise ValueError("it nests too deeply to be one") from None
    del pieces

    def listed(r: _Row) -> Any:
        """The list ``json.loads`` makes of row ``r``."""
        return json.loads(text[r.start:r.end], parse_int=_json_int)

    def matrix(x: Any) -> Any:
        """An array where ``x`` is a list of rows of one length; else ``x`` with lists put back."""
        if type(x) is not list or not x or not all(type(r) is _Row for r in x):
            return restore(x)
        out: np.ndarray | None = None
        for i, r in enumerate(x):
            row = _row(text[r.start:r.end])
            if out is None:
                out = np.empty((len(x), len(row)), dtype=np.float64)  # (N, width)
            if len(row) != out.shape[1]:  # ragged: the lists, for the schema's message
                return [listed(r) for r in x]
            out[i] = row
        return out

    def restore(x: Any) -> Any:
        """``x`` with every row back as the list ``json.loads`` makes of it (iteratively: any depth)."""
        if type(x) is _Row:  # the file itself may be one row ("[1, 2]"): the schema says what it holds
            return listed(x)
        stack = [x]
        while stack:
            node = stack.pop()
            items = node.items() if type(node) is dict else enumerate(node) if type(node) is list else ()
            for key, v in list(items):
                if type(v) is _Row:
                    node[key] = listed(v)
                elif type(v) in (dict, list):
                    stack.append(v)
        return x

    if type(d) is dict:
        for key in MATRIX_KEYS:
            if key in d:
                d[key] = matrix(d[key])
        extra = d.get("extra")
        if type(extra) is dict:
            for key in EXTRA_MATRIX_KEYS:
                if key in extra:
                    extra[key] = matrix(extra[key])
            votes = extra.get("cue_votes")
            if type(votes) is dict:
                for key in votes:
                    votes[key] = matrix(votes[key])
    return restore(d)
