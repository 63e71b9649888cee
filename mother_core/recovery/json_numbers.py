"""How ``result.json`` holds numbers: JSON has no NaN or infinity, so NaN is written as ``null`` and an
infinity as the string ``"inf"`` or ``"-inf"`` (the schema's ``_NUM``, :mod:`.schema`); reading turns
them back."""

from __future__ import annotations

import json
import math
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
    """A matrix written as lists of result.json numbers (rows), read back as an array of ``dtype``."""
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
