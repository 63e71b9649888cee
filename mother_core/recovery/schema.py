"""Validation of ``result.json`` before it is trusted: a JSON Schema for the shape, then graph checks.

A result file may come from anywhere (an upload in the app, a shared folder). :func:`check_result`
refuses, with a message naming the offending place, anything :class:`~mother_core.recovery.result.Recovery`
could not represent or the pages could not draw: wrong types (a confidence given as a list, an integer
id), duplicate ids, an edge to an unknown model, a self-loop, a cycle,
matrices of the wrong size. The contract itself is documented in :mod:`mother_core.recovery.result`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import numpy as np

from mother_core.errors import InputError, ResultFormatError
from mother_core.relations.vocabulary import parse_relation

#: The strings a number may be written as (infinities, and NaN from other writers; ours writes NaN as null).
_SPECIAL = ("inf", "-inf", "nan", "NaN")
_NUM = {"anyOf": [{"type": "number"}, {"type": "null"}, {"enum": list(_SPECIAL)}]}
_NUM_ARRAY = {"type": "array", "items": _NUM}
_ID = {"type": "string", "minLength": 1, "maxLength": 2000}
_OPT_ID = {"anyOf": [_ID, {"type": "null"}]}
_ALT = {"type": "object", "required": ["parent", "cost", "distance"],
        "properties": {"parent": _OPT_ID, "cost": _NUM, "distance": _NUM}}
_MATRIX = {"anyOf": [{"type": "null"}, {"type": "array", "items": _NUM_ARRAY}]}
_PAIRS = {"type": "array", "items": {"type": "array", "items": _ID, "minItems": 2, "maxItems": 2}}

#: The shape of a result file (fields may be added by newer versions: extra keys are allowed).
RESULT_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["models", "edges"],
    "properties": {
        "format": {"type": "string"},
        "version": {"type": "integer"},
        "models": {"type": "array", "items": {
            "type": "object", "required": ["id", "path", "tree", "kurtosis", "is_root"],
            "properties": {
                "id": _ID, "path": {"type": "string"}, "tree": {"type": "integer"}, "kurtosis": _NUM,
                "is_root": {"type": "boolean"}, "declared_parent": _OPT_ID, "format": {"type": "string"},
                "n_params": {"type": "integer", "minimum": 0}, "alternatives": {"type": "array", "items": _ALT},
            }}},
        "edges": {"type": "array", "items": {
            "type": "object",
            "required": ["parent", "child", "distance", "confidence", "placement_confidence",
                         "direction_confidence"],
            "properties": {
                "parent": _ID, "child": _ID, "distance": _NUM, "confidence": _NUM,
                "placement_confidence": _NUM, "direction_confidence": _NUM, "kurtosis_parent": _NUM,
                "kurtosis_child": _NUM, "layers_voting_forward": {"type": "integer"},
                "layers_voting_backward": {"type": "integer"}, "constrained": {"type": "boolean"},
                "alternatives": {"type": "array", "items": _ALT},
                "layer_distance": _NUM_ARRAY,
                "relation": {"type": "string"}, "relation_detail": {"type": "string"},
                "relation_confidence": _NUM, "merge_weight": _NUM, "parent_note": {"type": "string"},
                "tie_kurtosis": {"type": "object", "additionalProperties": _NUM}, "tie_displaced": _OPT_ID,
                "tie_lifted": {"type": "boolean"}, "tie_spectral": {"type": "boolean"},
            }}},
        "trees": {"type": "array", "items": {
            "type": "object", "required": ["id", "members", "root", "regime", "regime_confidence"],
            "properties": {"id": {"type": "integer"}, "members": {"type": "array", "items": _ID},
                           "root": _ID, "regime": {"type": "string"}, "regime_confidence": _NUM}}},
        "settings": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "constraints": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
            "forced": _PAIRS, "forbidden": _PAIRS, "roots": {"type": "array", "items": _ID}}}]},
        "problems": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
            "type": "object", "required": ["path", "message"],
            "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}}]},
        "layers": {"anyOf": [{"type": "null"}, {"type": "array", "items": {
            "type": "object", "required": ["name", "shape", "kind"],
            "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                           "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}}}}}]},
        "layer_kurtosis": _MATRIX, "distance_matrix": _MATRIX, "cost_matrix": _MATRIX,
        "extra": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "run_seconds": _NUM,
        "notes": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "string"}}]},
    },
}

#: The long number arrays (matrices: n x n and n x layers cells; each edge's per-layer distances). The
#: schema validator checked each cell against ``_NUM``'s three-way ``anyOf``: on a 279-model result
#: (237,000 cells) that was 8 s of the 9 s it took to open it (17 s under a profiler), before any page
#: drew. :func:`_number_error` checks the same cells in one plain pass; the validator sees them as arrays.
#: Both are read off ``RESULT_SCHEMA`` (the fields declared ``_MATRIX`` / ``_NUM_ARRAY``): it stays the one
#: place a number array is declared.
_NUMBER_ARRAYS = tuple(k for k, v in RESULT_SCHEMA["properties"].items() if v is _MATRIX)
_EDGE_NUMBER_ARRAYS = tuple(k for k, v in RESULT_SCHEMA["properties"]["edges"]["items"]["properties"].items()
                            if v is _NUM_ARRAY)


def _shape_only(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``RESULT_SCHEMA`` with the long number arrays' cells left to :func:`_number_error`."""
    props = dict(schema["properties"])
    for key in _NUMBER_ARRAYS:
        props[key] = {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "array"}}]}
    edge = dict(props["edges"]["items"])
    edge["properties"] = {**edge["properties"], **{k: {"type": "array"} for k in _EDGE_NUMBER_ARRAYS}}
    props["edges"] = {**props["edges"], "items": edge}
    return {**schema, "properties": props}


_VALIDATOR = jsonschema.Draft202012Validator(_shape_only(RESULT_SCHEMA))
_SPECIAL_SET = frozenset(_SPECIAL)


def _not_number(x: Any) -> bool:
    """Whether ``x`` is not what ``_NUM`` accepts (bool is no number in JSON Schema, as here)."""
    t = type(x)
    return not (t is float or t is int or x is None or (t is str and x in _SPECIAL_SET))


def _number_error(d: dict[str, Any]) -> tuple[str, Any] | None:
    """The first cell of a long number array that is not a number, null or a spelled infinity/NaN."""
    for key in _NUMBER_ARRAYS:
        if isinstance(d.get(key), np.ndarray):
            continue  # read row by row from plain numbers only (json_numbers.loads_result): every cell one
        for i, row in enumerate(d.get(key) or ()):
            for j, x in enumerate(row):
                if _not_number(x):
                    return f"{key}[{i}][{j}]", x
    for k, e in enumerate(d["edges"]):
        for key in _EDGE_NUMBER_ARRAYS:
            for j, x in enumerate(e.get(key) or ()):
                if _not_number(x):
                    return f"edges[{k}].{key}[{j}]", x
    return None


def _bad(where: str, what: str) -> ResultFormatError:
    return ResultFormatError(f"This is not a valid MoTHer result: {where}: {what}. Re-create it with "
                             "`mother recover --out result.json`.")


def check_result(d: Any) -> None:
    """Raise :class:`ResultFormatError` unless ``d`` is a well-formed result (see the module docstring)."""
    if not isinstance(d, dict):
        raise _bad("the file", f"it holds a JSON {type(d).__name__}, not an object with 'models' and 'edges'")
    # A matrix read as an array (json_numbers.loads_result) holds only numbers of equal rows: the validator,
    # which knows no arrays, sees it as an empty list; its size is checked below as any matrix's is.
    shown = {**d, **{k: [] for k in _NUMBER_ARRAYS if isinstance(d.get(k), np.ndarray)}}
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(shown))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path) or "the file"
        raise _bad(where.lstrip("."), error.message[:300])
    bad_number = _number_error(d)
    if bad_number is not None:
        raise _bad(bad_number[0], f"{str(bad_number[1])[:100]!r} is not a number, null, or 'inf', '-inf', 'nan'")
    ids = [m["id"] for m in d["models"]]
    for k, i in enumerate(ids):
        if not i.isprintable():  # discovery makes every id printable: this one was written by hand
            raise _bad(f"models[{k}].id", f"{i.encode('utf-8', 'backslashreplace')[:100]!r} holds control "
                                          "or undecodable characters")
    known: set[str] = set()
    for i in ids:  # one pass: ``ids.count`` per id was quadratic (20,000 ids and one repeated: 11 s)
        if i in known:
            raise _bad("models", f"the id {i[:100]!r} appears twice")
        known.add(i)
    parents: dict[str, list[tuple[str, str]]] = {}
    for k, e in enumerate(d["edges"]):
        for end in ("parent", "child"):
            if e[end] not in known:
                raise _bad(f"edges[{k}].{end}", f"{e[end][:100]!r} is not one of the models")
        if e["parent"] == e["child"]:
            raise _bad(f"edges[{k}]", f"{e['child'][:100]!r} is its own parent")
        for m in [*(e.get("tie_kurtosis") or {}), e.get("tie_displaced")]:
            if m is not None and m not in known:
                raise _bad(f"edges[{k}].tie_kurtosis", f"{m[:100]!r} is not one of the models")
        try:  # Edge() refuses a word that names no relation: say where, as for every other field
            parse_relation(e.get("relation"))
        except InputError as err:
            raise _bad(f"edges[{k}].relation", str(err)[:300]) from None
        parents.setdefault(e["child"], []).append((e["parent"], str(e.get("relation", "finetune"))))
    _check_acyclic({c: [p for p, _ in ps] for c, ps in parents.items()})
    for k, t in enumerate(d.get("trees") or []):
        unknown = [m for m in t["members"] + [t["root"]] if m not in known]
        if unknown:
            raise _bad(f"trees[{k}]", f"{unknown[0][:100]!r} is not one of the models")
    n = len(ids)
    for key in ("distance_matrix", "cost_matrix"):
        m = d.get(key)
        if m is not None and (len(m) != n or any(len(row) != n for row in m)):
            raise _bad(key, f"it is not {n} x {n} (one row and column per model)")
    lk = d.get("layer_kurtosis")
    if lk is not None and len(lk) != n:
        raise _bad("layer_kurtosis", f"it has {len(lk)} rows for {n} models")
    widths = {len(row) for row in (() if lk is None else lk)}
    if len(widths) > 1:  # a ragged matrix made numpy refuse it with a bare ValueError out of the loader
        raise _bad("layer_kurtosis", f"its rows differ in length ({', '.join(map(str, sorted(widths)[:5]))}); "
                                     "each holds one value per layer")


def _check_acyclic(parents: dict[str, list[str]]) -> None:
    """Refuse a cycle of edges (iteratively: a long chain must not exhaust the stack)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in parents:
        if state.get(start):
            continue
        path = [(start, iter(parents.get(start, ())))]
        state[start] = 1
        while path:
            node, it = path[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                path.pop()
            elif state.get(nxt) == 1:
                raise _bad("edges", f"they form a cycle through {nxt[:100]!r}")
            elif not state.get(nxt):
                state[nxt] = 1
                path.append((nxt, iter(parents.get(nxt, ()))))
