"""The one validating safetensors header parser: edge cases named after what they break, and a
property-based corner (hypothesis): any bytes give a header or an ``UnreadableCheckpointError``, never
another exception, and an accepted header's tensors lie inside the file without overlapping."""

from __future__ import annotations

import itertools
import json
import os
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.safetensors_header import (
    DTYPES,
    MAX_JSON_DEPTH,
    SafetensorsHeader,
    describe_dtype,
    parse_header,
    read_header,
)


def blob(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: str, shape: list, begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def parse(b: bytes) -> SafetensorsHeader:
    return parse_header(b, len(b), "x.safetensors")


def test_agrees_with_the_library_on_a_real_file(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.zeros(5, dtype=torch.bfloat16), "c": torch.ones(2, dtype=torch.int64)}
    save_file(tensors, str(path), metadata={"format": "pt"})
    header = read_header(path)
    assert header.shapes() == {"a": ((3, 4), "float32"), "b": ((5,), "bfloat16"), "c": ((2,), "int64")}
    assert dict(header.metadata) == {"format": "pt"}
    raw = path.read_bytes()
    for t in header.tensors:  # offsets are absolute: the bytes there are the tensor's
        got = torch.frombuffer(bytearray(raw[t.start:t.stop]), dtype=getattr(torch, t.dtype)).reshape(t.shape)
        assert torch.equal(got, tensors[t.name])


def test_parsed_once_per_file_content(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": torch.randn(2)}, str(path))
    assert read_header(path) is read_header(str(path))  # memoised: discovery and reader share one parse
    save_file({"a": torch.randn(3)}, str(path))
    os.utime(path, ns=(1, 1))  # a changed file is parsed again
    assert read_header(path).tensors[0].shape == (3,)


@pytest.mark.parametrize("header, why", [
    ({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, "overlap"),
    ({"a": entry("F32", [-2], 0, 8)}, "invalid shape"),
    ({"a": entry("F32", [2.0], 0, 8)}, "invalid shape"),
    ({"a": entry("F32", [2], 8, 0)}, "invalid data offsets"),
    ({"a": entry("F32", [2], -8, 0)}, "invalid data offsets"),
    ({"a": entry("F32", [3], 0, 8)}, "bytes for shape"),
    ({"a": entry("F32", [2], 0, 8 + 10**15)}, "truncated"),
    ({"a": {"dtype": "F32"}}, "invalid shape"),
    ({"a": [1, 2]}, "not an object"),
    ({"__metadata__": {"k": 1}}, "__metadata__"),
    ({"a": entry("F32", [1] * 17, 0, 4)}, "invalid shape"),
])
def test_impossible_headers_are_refused(header, why):
    with pytest.raises(UnreadableCheckpointError, match=why):
        parse(blob(header, b"\0" * 16))


def test_deep_nesting_is_refused_without_recursing():
    deep = b"[" * 100_000 + b"]" * 100_000
    b = struct.pack("<Q", len(deep)) + deep
    with pytest.raises(UnreadableCheckpointError, match=f"deeper than {MAX_JSON_DEPTH}"):
        parse(b)


def test_huge_claims_are_refused_before_reading(tmp_path):
    path = tmp_path / "sparse.safetensors"
    head = blob({"a": entry("F32", [2**40], 0, 4 * 2**40)})
    with open(path, "wb") as f:  # a sparse file whose header claims 4 TB: refused from its real size
        f.write(head)
        f.truncate(len(head) + 4096)
    with pytest.raises(UnreadableCheckpointError, match="truncated"):
        read_header(path)
    with pytest.raises(UnreadableCheckpointError, match="header claims"):
        parse(struct.pack("<Q", 2**62) + b"{}")


def test_unknown_dtypes_are_listed_apart_not_fatal():
    header = parse(blob({"w": entry("F32", [2], 0, 8), "z": entry("C64", [2], 8, 24),
                         "s": entry("F8_E8M0", [4], 24, 28), "q": entry("WHAT", [3], 28, 31)}, b"\0" * 31))
    assert [t.name for t in header.tensors] == ["w"]
    assert {t.name: t.code for t in header.unsupported} == {"z": "C64", "s": "F8_E8M0", "q": "WHAT"}
    assert describe_dtype("F8_E4M3") == "fp8 (E4M3)" and describe_dtype("C64") == "complex64"
    with pytest.raises(UnreadableCheckpointError, match="bytes for shape"):  # a known size is still checked
        parse(blob({"z": entry("C64", [2], 0, 8)}, b"\0" * 8))


@pytest.mark.parametrize("kind", ["fifo", "loop", "folder"])
def test_special_files_are_named_for_what_they_are(tmp_path, kind):
    path = tmp_path / "x.safetensors"
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block forever
    elif kind == "loop":
        os.symlink(path, path)
    else:
        path.mkdir()
    want = {"fifo": "named pipe", "loop": "loops back", "folder": "a folder"}[kind]
    with pytest.raises(UnreadableCheckpointError, match=want):
        read_header(path)


# --- property-based ------------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_bytes_give_a_header_or_a_clear_error(data):
    try:
        header = parse(data)
    except UnreadableCheckpointError as e:
        assert "x.safetensors" in str(e)
        return
    assert isinstance(header, SafetensorsHeader)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                     max_leaves=20)
_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(sorted(DTYPES) + ["C64", "F4", "??"]) | _json,
    "shape": st.lists(st.integers(-3, 6), max_size=4) | _json,
    "data_offsets": st.lists(st.integers(-10, 200), min_size=2, max_size=2) | _json,
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=6), _entry | _json, max_size=6), st.integers(0, 300))
def test_structured_headers_are_consistent_when_accepted(header, data_len):
    b = blob(header, b"\0" * data_len)
    try:
        got = parse(b)
    except UnreadableCheckpointError:
        return
    spans = sorted((t.start, t.stop) for t in got.tensors + got.unsupported)
    for start, stop in spans:
        assert len(b) >= stop >= start >= len(b) - data_len
    for (_, e0), (s1, _) in itertools.pairwise(spans):
        assert s1 >= e0
    for t in got.tensors:
        numel = 1
        for d in t.shape:
            numel *= d
        assert t.nbytes == numel * DTYPES[t.code][1] and isinstance(getattr(torch, t.dtype), torch.dtype)
