"""A saved result loads in memory proportional to its size (branch resultmem).

``Recovery.load`` made every matrix cell a Python float in a list before the arrays (and ``read_bytes_file``
allocated its 1 GiB limit for every file): 4 to 9 bytes of memory per byte of file (540 MB for a 58 MB result of
2,000 models, branch hostile5), so one result near ``MAX_RESULT_BYTES`` could take the app down. Matrices are now
read a row at a time into arrays (``json_numbers.loads_result``). Results here are real: the demo set recovered by
the engine, written by ``Recovery.save``, and that result tiled to 150 models (``benchmarks/result_load_memory.py``).
"""

from __future__ import annotations

import json
import math
import sys
import tracemalloc
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from mother_core.recovery.json_numbers import loads, loads_result
from mother_core.recovery.result import Recovery

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """The demo set's real result (14 models), the same tiled to 150 (``indent=1``, as saved) and the 150 written
    compactly (no indent: hostile5's 9-bytes-per-byte file was compact JSON)."""
    from mother_core.pipeline import recover_paths

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from result_load_memory import tiled

    folder = tmp_path_factory.mktemp("resultmem")
    rec = recover_paths([str(ROOT / "assets" / "demo" / "vit-tree")])
    rec.save(folder / "demo.json")
    big = tiled(rec, 150)
    big.save(folder / "tiled.json")
    (folder / "compact.json").write_text(json.dumps(big.to_dict(), allow_nan=False, separators=(",", ":")))
    return {p.stem: p for p in folder.iterdir()}


def _as_main_read_it(path: Path) -> Recovery:
    """The result as main read it: every number of the file a Python object (``loads``), then the arrays."""
    return Recovery.from_dict(loads(path.read_bytes().decode("utf-8")))


def _assert_same(a, b, where: str = "result") -> None:
    """``a`` and ``b`` equal in every field, arrays in dtype, shape and values (NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if is_dataclass(a):
        for f in fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", ["demo", "tiled", "compact"])
def test_a_saved_result_loads_as_before_field_by_field_with_its_matrices_read_as_arrays(results, name):
    path = results[name]
    new = Recovery.load(path)
    _assert_same(new, _as_main_read_it(path))
    assert new.problem is not None and new.problem.cue_votes and new.layers
    d = loads_result(path.read_text())  # the matrices never became lists of floats
    assert all(isinstance(d[k], np.ndarray) for k in ("distance_matrix", "cost_matrix", "layer_kurtosis"))
    assert all(isinstance(d["extra"][k], np.ndarray) for k in ("relative_distance", "direction_evidence",
                                                                "votes_up", "shared_layers"))
    assert all(isinstance(v, np.ndarray) for v in d["extra"]["cue_votes"].values())
    assert isinstance(d["layers"][0]["shape"], list) and isinstance(d["extra"]["tree_of"], list)  # not matrices


@pytest.mark.parametrize("name", ["tiled", "compact"])
def test_loading_a_result_takes_at_most_three_bytes_of_memory_per_byte_of_file(results, name):
    """Counted by ``tracemalloc`` (every object and array the load makes, the file's bytes included), so the
    machine's load does not move it. About 2x here; main: 3.7x (tiled), 9x (compact), and its 1 GiB read buffer."""
    Recovery.load(results["demo"])  # what the first load imports is not the load's cost
    size = results[name].stat().st_size
    tracemalloc.start()
    try:
        rec = Recovery.load(results[name])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rec.models) == 150
    assert peak <= 3 * size, f"{peak / size:.1f} bytes per byte of a {size / 2**20:.1f} MB file"


def test_text_that_looks_like_a_row_inside_strings_is_left_alone(tmp_path, results):
    """A row of numbers is found outside strings only: ids, paths and notes holding ``[1, 2]`` or a placeholder's
    look come back as written, and a matrix cell spelled otherwise than a number is still refused."""
    from mother_core.errors import ResultFormatError

    d = json.loads(results["demo"].read_text())
    old = d["models"][0]["id"]
    new = '[1.0, 2.5] "[3]" \\"[4]\\" [null, "inf"]'
    text = json.dumps(d).replace(json.dumps(old), json.dumps(new))
    d2 = json.loads(text)
    d2["notes"] = ["[0.5, null]", "x\\\"[1]", "\x00row-0:0"]
    (tmp_path / "r.json").write_text(json.dumps(d2))
    rec = Recovery.load(tmp_path / "r.json")
    assert rec.models[0].id == new and rec.notes == d2["notes"]
    _assert_same(rec, _as_main_read_it(tmp_path / "r.json"))
    d2["distance_matrix"][1][0] = "1.0"
    (tmp_path / "r.json").write_text(json.dumps(d2))
    with pytest.raises(ResultFormatError, match=r"distance_matrix\[1\]\[0\]"):
        Recovery.load(tmp_path / "r.json")


@pytest.mark.parametrize("raw", ["[1.0, 2.5]", "[[1.0, 2.5], [3, null]]"])
def test_a_file_that_is_itself_a_row_or_a_matrix_reads_as_lists_and_is_refused(tmp_path, raw):
    from mother_core.errors import ResultFormatError

    (tmp_path / "r.json").write_text(raw)
    assert loads_result(raw) == loads(raw)  # the lists, not a placeholder
    with pytest.raises(ResultFormatError, match="not a MoTHer result: expected a JSON object"):
        Recovery.load(tmp_path / "r.json")
