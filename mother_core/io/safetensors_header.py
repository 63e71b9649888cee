"""The one validating parser of safetensors headers: every reader of ``.safetensors`` files uses it.

Format (https://github.com/huggingface/safetensors#format): 8 bytes little-endian ``N``, then ``N`` bytes
of UTF-8 JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the byte buffer; offsets are relative to the buffer's start.

This parser enforces what the ``safetensors`` library enforces, and a little more, **before any tensor
byte is read**:

* the header is at most :data:`MAX_HEADER_BYTES` long, valid UTF-8 JSON, nested at most
  :data:`MAX_JSON_DEPTH` deep (a deeply nested header must not exhaust the stack) and holds at most
  :data:`MAX_TENSORS` entries;
* every entry has a string dtype, a list of non-negative integer dimensions (at most :data:`MAX_RANK`)
  and two integer offsets with ``0 <= begin <= end``;
* the byte ranges of the tensors do not overlap, and all lie inside the **real** file (its size as the OS
  reports it, so a sparse file claiming terabytes is refused before anything waits for it);
* for a dtype whose element size is known, ``end - begin`` is exactly ``numel * itemsize``.

A dtype code the engine cannot compare (complex ``C64``, ``F8_E8M0``, a code from a newer library or a
made-up one) is *not* an error of the file: the tensor is listed in :attr:`SafetensorsHeader.unsupported`
and left out of :attr:`SafetensorsHeader.tensors`, so the caller reports it as a problem for that tensor
and reads the rest of the model.

Headers are parsed once per file content: :func:`read_header` keeps recent results (up to
:data:`_CACHE_ENTRIES` tensor entries) keyed by (path, device, inode, size, mtime), so discovery, the
reader and a second read share one parse.

Examples
--------
>>> header = read_header("model.safetensors")  # doctest: +SKIP
>>> [(t.name, t.dtype, t.shape) for t in header.tensors][:1]  # doctest: +SKIP
[('embed.weight', 'float32', (32, 32))]
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.filekind import not_a_regular_file

#: The ``safetensors`` library's own limit on the JSON header.
MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Deepest JSON nesting accepted (a real header is 3 deep: object -> entry -> shape list).
MAX_JSON_DEPTH = 16
#: Most tensors one file may declare. Real files hold a few thousand per shard; the largest real model
#: holds ~150,000 in all (a 384-expert model of 61 layers, with per-expert scales). Checked right after
#: the JSON is decoded: validating a header entry by entry costs ~15 us an entry, read twice a run.
MAX_TENSORS = 250_000
#: Most dimensions a tensor may have.
MAX_RANK = 16

#: safetensors dtype code -> (torch dtype name, bytes per element). Only these are read as tensors.
DTYPES: Mapping[str, tuple[str, int]] = MappingProxyType({
    "F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "U16": ("uint16", 2), "U32": ("uint32", 4), "U64": ("uint64", 8), "BOOL": ("bool", 1),
    "F8_E4M3": ("float8_e4m3fn", 1), "F8_E5M2": ("float8_e5m2", 1),
})

#: Codes the safetensors format defines that the engine does not compare, with a readable name and the
#: element size in bits (used only to check the byte count).
KNOWN_UNSUPPORTED: Mapping[str, tuple[str, int]] = MappingProxyType({
    "C64": ("complex64", 64), "C128": ("complex128", 128), "F8_E8M0": ("fp8 (E8M0 scale)", 8),
    "F4": ("fp4", 4), "F6_E2M3": ("fp6 (E2M3)", 6), "F6_E3M2": ("fp6 (E3M2)", 6),
})


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file, as its (validated) header describes it.

    Attributes
    ----------
    name : str
        The raw name in the file (not normalised).
    code : str
        The safetensors dtype code, e.g. ``"BF16"``.
    dtype : str
        The torch dtype name (``TensorInfo.dtype``), e.g. ``"bfloat16"``; for an unsupported code, the
        code itself lower-cased.
    shape : tuple of int
    start, stop : int
        Absolute byte offsets of the tensor's data in the file (``stop - start`` bytes).
    """

    name: str
    code: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    stop: int

    @property
    def nbytes(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: the tensors the engine can read, and those it cannot.

    Attributes
    ----------
    path : str
    file_size : int
        The file's real size in bytes.
    tensors : tuple of TensorEntry
        Tensors with a supported dtype, in header order.
    unsupported : tuple of TensorEntry
        Tensors whose dtype code the engine does not compare (see :func:`describe_dtype`).
    metadata : Mapping of str to str
        The ``__metadata__`` entry (empty when absent).
    """

    path: str
    file_size: int
    tensors: tuple[TensorEntry, ...]
    unsupported: tuple[TensorEntry, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Raw name -> (shape, torch dtype name) of the supported tensors."""
        return {t.name: (t.shape, t.dtype) for t in self.tensors}


def describe_dtype(code: str) -> str:
    """A readable name for a safetensors dtype code (``"F8_E4M3"`` -> ``"fp8 (E4M3)"``)."""
    if code.startswith("F8_"):
        return f"fp8 ({code[3:]})"
    if code in KNOWN_UNSUPPORTED:
        return KNOWN_UNSUPPORTED[code][0]
    if code in DTYPES:
        return DTYPES[code][0]
    return f"unknown dtype code {code[:40]!r}"


def _bad(path: str, why: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated, corrupt or not a safetensors file: "
        "re-download or remove it.", path,
    )


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


# Depth change per byte: +1 for "[" and "{", -1 for "]" and "}", 0 otherwise (a table lookup: two
# np.isin calls per header were a third of parsing a small header).
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[0x5B, 0x7B]] = 1
_DEPTH_STEP[[0x5D, 0x7D]] = -1


def json_depth_ok(text: str, limit: int) -> bool:
    """True when the JSON text nests at most ``limit`` deep, checked (vectorised, linear) before
    ``json.loads`` could recurse: brackets inside strings are removed first, then the running depth of
    the remaining brackets is a cumulative sum."""
    bare = _STRING.sub("", text).encode("utf-8")
    step = _DEPTH_STEP[np.frombuffer(bare, dtype=np.uint8)]
    return not step.size or int(np.cumsum(step, dtype=np.int64).max()) <= limit


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(data: bytes, file_size: int, path: str = "<bytes>") -> SafetensorsHeader:
    """Validate a safetensors header given as the file's first bytes.

    Parameters
    ----------
    data : bytes
        At least the first ``8 + N`` bytes of the file (more is ignored).
    file_size : int
        The file's real size in bytes: every tensor must end inside it.
    path : str
        Named in error messages.

    Returns
    -------
    SafetensorsHeader

    Raises
    ------
    UnreadableCheckpointError
        Whatever the file says that is impossible or unsafe (see the module docstring).
    """
    if len(data) < 8 or file_size < 8:
        raise _bad(path, "the file is shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise _bad(path, f"its header claims {n} bytes (the limit is {MAX_HEADER_BYTES})")
    if 8 + n > file_size or 8 + n > len(data):
        raise _bad(path, f"its header claims {n} bytes but the file holds only {file_size}")
    try:
        text = bytes(data[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(path, "its header is not UTF-8 text") from None
    if not json_depth_ok(text, MAX_JSON_DEPTH):
        raise _bad(path, f"its header nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise _bad(path, f"its header is not valid JSON ({str(e)[:120]})") from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    if len(header) > MAX_TENSORS + 1:
        raise _bad(path, f"its header declares {len(header):,} entries (the limit is {MAX_TENSORS:,}, more than "
                         "any real checkpoint holds)")
    base = 8 + n
    buffer_size = file_size - base
    metadata: dict[str, str] = {}
    good: list[TensorEntry] = []
    other: list[TensorEntry] = []
    for name, meta in header.items():
        if name == "__metadata__":
            if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
                raise _bad(path, "its __metadata__ is not a map of strings")
            metadata = dict(meta or {})
            continue
        entry = _entry(path, name, meta, base, buffer_size)
        (good if entry.code in DTYPES else other).append(entry)
    spans = sorted((e.start, e.stop, e.name) for e in good + other if e.stop > e.start)
    for (s0, e0, n0), (s1, _, n1) in itertools.pairwise(spans):
        if s1 < e0:
            raise _bad(path, f"the data of tensors {n0[:80]!r} and {n1[:80]!r} overlap")
    return SafetensorsHeader(path, file_size, tuple(good), tuple(other), MappingProxyType(metadata))


def _entry(path: str, name: str, meta: Any, base: int, buffer_size: int) -> TensorEntry:
    shown = repr(name[:80])
    if not isinstance(meta, dict):
        raise _bad(path, f"the header entry for {shown} is not an object")
    code, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if not isinstance(code, str) or not code or len(code) > 40:
        raise _bad(path, f"the header entry for {shown} has no valid dtype")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_is_int(d) and d >= 0 for d in shape):
        raise _bad(path, f"the header entry for {shown} has an invalid shape (negative, non-integer or "
                         f"more than {MAX_RANK} dimensions)")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise _bad(path, f"the header entry for {shown} has invalid data offsets")
    begin, end = offsets
    if end > buffer_size:
        raise _bad(path, f"tensor {shown} ends at byte {base + end} but the file holds only {base + buffer_size} "
                         "(truncated download?)")
    numel = 1
    for d in shape:
        numel *= d
    bits = DTYPES[code][1] * 8 if code in DTYPES else KNOWN_UNSUPPORTED.get(code, ("", 0))[1]
    if bits and (numel * bits + 7) // 8 != end - begin:
        raise _bad(path, f"its header gives tensor {shown} {end - begin} bytes for shape {tuple(shape)} "
                         f"of {describe_dtype(code)}")
    dtype = DTYPES[code][0] if code in DTYPES else code.lower()
    return TensorEntry(name, code, dtype, tuple(shape), base + begin, base + end)


# --- once per file content ---------------------------------------------------------------------------

#: Parsed headers kept, bounded by the tensor entries they hold (~0.3 KB each, so ~60 MB at most): a
#: set of 10,000 small models (60,000 entries) keeps every header from discovery to the fingerprint pass
#: and the candidate pairs' second read, where a bound of 512 files re-parsed each header twice.
_CACHE_ENTRIES = 200_000
_cache: OrderedDict[tuple[str, int, int, int, int], SafetensorsHeader] = OrderedDict()
_cache_entries = 0
_lock = threading.Lock()


def _size_of(header: SafetensorsHeader) -> int:
    return 1 + len(header.tensors) + len(header.unsupported)


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of a ``.safetensors`` file (memoised per file identity).

    Reads at most ``8 + N`` bytes, never tensor data.

    Raises
    ------
    UnreadableCheckpointError
        The file cannot be opened, is not a regular file, or its header is invalid.
    """
    path = os.fspath(path)
    why = not_a_regular_file(path)
    if why:
        raise _bad(path, why)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            with _lock:
                hit = _cache.get(key)
                if hit is not None:
                    _cache.move_to_end(key)
                    return hit
            head = f.read(8)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                if n <= MAX_HEADER_BYTES and 8 + n <= st.st_size:
                    head += f.read(n)
    except OSError as e:
        raise _bad(path, f"{e.strerror or e}") from None
    header = parse_header(head, st.st_size, path)
    global _cache_entries
    with _lock:
        if key not in _cache:
            _cache[key] = header
            _cache_entries += _size_of(header)
        while _cache_entries > _CACHE_ENTRIES and len(_cache) > 1:
            _, old = _cache.popitem(last=False)
            _cache_entries -= _size_of(old)
    return header


__all__ = [
    "DTYPES",
    "KNOWN_UNSUPPORTED",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_RANK",
    "MAX_TENSORS",
    "SafetensorsHeader",
    "TensorEntry",
    "describe_dtype",
    "parse_header",
    "read_header",
]
