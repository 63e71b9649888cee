"""How ``result.json`` holds numbers: JSON has no NaN or infinity, so NaN is written as ``null`` and an
infinity as the string ``"inf"`` or ``"-inf"`` (the schema's ``_NUM``, :mod:`.schema`); reading turns
them back."""

from __future__ import annotations

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
