"""Tesseract LSTM models (``.traineddata``): the recognizer's weight matrices, parsed, never executed.

A ``.traineddata`` file is Tesseract's component archive (``TessdataManager``): an ``int32`` count of
entries, one ``int64`` offset per entry (-1 where absent), then the components. Entry 17 is the LSTM
recognizer, which begins with its network, serialized layer by layer (``Network::Serialize`` in
Tesseract's ``src/lstm/network.cpp``): a type name, flags, sizes and a layer name, then what the layer
type adds: a list of sub-layers (``Series``, ``Parallel``, ``Reversed``...; ``plumbing.cpp``), a weight
matrix (``FullyConnected``: output layers, the convolution's non-linearity), four gate matrices
(``LSTM``: CI, GI, GF1, GO, plus GFS in 2-D), or a few integers (``Input``, ``Convolve``, ``Maxpool``).

A weight matrix (``weightmatrix.cpp``) is ``(outputs, inputs + 1)`` with the bias as the last column,
stored either as float64 (``tessdata_best`` and fine-tuned models) or as int8 codes with one float64
scale per output row (the integer models of ``tessdata`` / ``tessdata_fast``, made from float ones by
``ConvertToInt``: ``code = round(w / scale)``, ``scale = max|row| / 127``). The int8 ones are read
dequantized (``code * scale``) and named ``tesseract:int8``: the relation detectors then treat them as
quantized copies. Tensors are named by their path in the network (``Series.4.Lfx96.CI.weight``), the
same in every model of one network specification, so a fine-tune compares with its base layer by layer.

Only the structure is read when a model is discovered (the weights are skipped by offset, each bounded
by the component's size), and only the rows asked for afterwards, with ``os.pread``. Files in the
pre-4.0 float format (no ``kDoubleFlag``) or holding no LSTM network (legacy-only models) are refused
with a message saying so.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo

#: ``TessdataType`` index of the LSTM recognizer, and of the version string (tessdatamanager.h).
LSTM_ENTRY = 17
VERSION_ENTRY = 23
#: A file with more entries than this is not a (little-endian) Tesseract 4+ archive.
MAX_ENTRIES = 64
#: Bounds on what one network may claim, so a corrupt file cannot make the parser recurse or loop.
MAX_DEPTH = 32
MAX_LAYERS = 4096
MAX_STRING = 1024

# Weight-matrix mode bits (weightmatrix.cpp).
_INT8_FLAG = 1
_ADAM_FLAG = 4
_DOUBLE_FLAG = 128
# Network flag: Plumbing layers store one learning rate per sub-layer (network.h, NF_LAYER_SPECIFIC_LR).
_LAYER_SPECIFIC_LR = 64
_TS_ENABLED = 1  # TrainingState: only an enabled layer stores its updates after its weights

# Layer type names (Network::kTypeNames), grouped by what the layer serializes after the common part.
_TYPE_NAMES = ("Invalid", "Input", "Convolve", "Maxpool", "Parallel", "Replicated", "ParBidiLSTM",
               "DepParUDLSTM", "Par2dLSTM", "Series", "Reconfig", "RTLReversed", "TTBReversed", "XYTranspose",
               "LSTM", "SummLSTM", "Logistic", "LinLogistic", "LinTanh", "Tanh", "Relu", "Linear", "Softmax",
               "SoftmaxNoCTC", "LSTMSoftmax", "LSTMBinarySoftmax", "TensorFlow")
_PLUMBING = {"Parallel", "Replicated", "ParBidiLSTM", "DepParUDLSTM", "Par2dLSTM", "Series", "RTLReversed",
             "TTBReversed", "XYTranspose"}
_LSTM = {"LSTM", "SummLSTM", "LSTMSoftmax", "LSTMBinarySoftmax"}
_FULLY_CONNECTED = {"Logistic", "LinLogistic", "LinTanh", "Tanh", "Relu", "Linear", "Softmax", "SoftmaxNoCTC"}
_TWO_INTS = {"Convolve", "Maxpool", "Reconfig"}  # half_x, half_y or x_scale, y_scale
_GATES = ("CI", "GI", "GF1", "GO", "GFS")
_UNSAFE = re.compile(r"[^A-Za-z0-9_,+-]")


@dataclass(frozen=True)
class TessMatrix:
    """One weight matrix: where its values are and how they are stored."""

    name: str
    shape: tuple[int, int]  # (outputs, inputs + 1): the last column is the bias
    offset: int  # absolute offset of the first value (row-major)
    int8: bool  # int8 codes with a float64 scale per row, else float64 values
    scales_offset: int = -1  # absolute offset of the row scales (int8 only)

    @property
    def itemsize(self) -> int:
        return 1 if self.int8 else 8


@dataclass(frozen=True)
class TessHeader:
    """What a ``.traineddata`` file's LSTM network holds, read from its structure only."""

    version: str  # the VERSION entry (language, training date, network specification), or ""
    matrices: dict[str, TessMatrix]

    @property
    def scheme(self) -> str | None:
        """``"int8"`` for an integer model, None for float weights."""
        return "int8" if any(m.int8 for m in self.matrices.values()) else None


def _unreadable(path: str, why: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated, corrupt or not a Tesseract 4/5 LSTM model: "
        "re-download or remove it.", path)


class _Cursor:
    """Bounded little-endian reads of one component: small fields are read, arrays are skipped."""

    def __init__(self, fh: io.FileIO, path: str, start: int, end: int) -> None:
        self.fh, self.path, self.pos, self.end = fh, path, start, end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _unreadable(self.path, "the LSTM network runs past the end of its component")
        data = os.pread(self.fh.fileno(), n, self.pos)
        if len(data) != n:
            raise _unreadable(self.path, "the file ends inside the LSTM network")
        self.pos += n
        return data

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns where they began."""
        if n < 0 or self.pos + n > self.end:
            raise _unreadable(self.path, "a weight matrix claims more bytes than its component holds")
        at, self.pos = self.pos, self.pos + n
        return at

    def u8(self) -> int:
        return self.take(1)[0]

    def i32(self) -> int:
        return int(struct.unpack("<i", self.take(4))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def string(self) -> str:
        n = self.u32()
        if n > MAX_STRING:
            raise _unreadable(self.path, f"a layer name claims {n} bytes")
        return self.take(n).decode("latin-1")


class _Parser:
    """Walks the serialized network (``Network::CreateFromFile`` and each layer's ``DeSerialize``)."""

    def __init__(self, cur: _Cursor) -> None:
        self.cur = cur
        self.layers = 0
        self.matrices: dict[str, TessMatrix] = {}

    def network(self, prefix: str, depth: int) -> None:
        cur = self.cur
        self.layers += 1
        if depth > MAX_DEPTH or self.layers > MAX_LAYERS:
            raise _unreadable(cur.path, "the network nests too deep or has too many layers")
        code = struct.unpack("<b", cur.take(1))[0]
        if code == 0:  # NT_NONE: the type follows by name
            kind = cur.string()
        elif 0 < code < len(_TYPE_NAMES):
            kind = _TYPE_NAMES[code]
        else:
            raise _unreadable(cur.path, f"unknown layer type code {code}")
        training = cur.u8() == _TS_ENABLED
        cur.u8()  # needs_to_backprop
        flags, ni, no, _n_weights = cur.i32(), cur.i32(), cur.i32(), cur.i32()
        name = _UNSAFE.sub("_", cur.string())[:80] or kind
        path = f"{prefix}{name}"
        if kind in _PLUMBING:
            n = cur.u32()
            if n > MAX_LAYERS:
                raise _unreadable(cur.path, f"a {kind} layer claims {n} sub-layers")
            for i in range(n):
                self.network(f"{path}.{i}.", depth + 1)
            if flags & _LAYER_SPECIFIC_LR:
                cur.skip(4 * cur.u32())  # std::vector<float> of learning rates
        elif kind == "Input":
            cur.skip(20)  # StaticShape: batch, height, width, depth, loss type
        elif kind in _TWO_INTS:
            cur.skip(8)
        elif kind in _FULLY_CONNECTED:
            self.matrix(f"{path}.weight", training)
        elif kind in _LSTM:
            na = cur.i32()
            nf = no if kind == "LSTMSoftmax" else (math.ceil(math.log2(max(no, 1))) if kind == "LSTMBinarySoftmax"
                                                   else 0)
            two_d = False
            for gate in _GATES:
                if gate == "GFS" and not two_d:
                    continue
                m = self.matrix(f"{path}.{gate}.weight", training)
                if gate == "CI":
                    two_d = na - nf == ni + 2 * m.shape[0]
            if kind in ("LSTMSoftmax", "LSTMBinarySoftmax"):
                self.network(f"{path}.softmax.", depth + 1)
        else:  # TensorFlow (an external graph) or a type this reader does not know
            raise _unreadable(cur.path, f"layer type {kind!r} is not a Tesseract LSTM layer this reader knows")

    def matrix(self, name: str, training: bool) -> TessMatrix:
        cur = self.cur
        mode = cur.u8()
        if not mode & _DOUBLE_FLAG:
            raise UnreadableCheckpointError(
                f"{cur.path} is in Tesseract's pre-4.0 weight format, which this reader does not decode; "
                "convert it with a current lstmtraining (--stop_training) or leave it out.", cur.path)
        int8 = bool(mode & _INT8_FLAG)
        d1, d2 = cur.u32(), cur.u32()
        item = 1 if int8 else 8
        cur.skip(item)  # the array's "empty" value
        offset = cur.skip(d1 * d2 * item)
        scales = -1
        if int8:
            n = cur.u32()
            if n < d1:
                raise _unreadable(cur.path, f"matrix {name!r} has {n} scales for {d1} rows")
            scales = cur.skip(8 * n)
        elif training:  # updates, then Adam's running squares: same layout as the weights
            for _ in range(2 if mode & _ADAM_FLAG else 1):
                e1, e2 = cur.u32(), cur.u32()
                cur.skip(8 + 8 * e1 * e2)
        if d1 == 0 or d2 == 0:
            raise _unreadable(cur.path, f"matrix {name!r} is empty")
        m = TessMatrix(name, (d1, d2), offset, int8, scales)
        self.matrices[name] = m
        return m


def _directory(fh: io.FileIO, path: str, size: int) -> tuple[int, int, str]:
    """(start, end) of the LSTM component and the version string."""
    head = os.pread(fh.fileno(), 4, 0)
    if len(head) != 4:
        raise _unreadable(path, "the file is too short")
    n = struct.unpack("<i", head)[0]
    if not 0 < n <= MAX_ENTRIES:
        raise _unreadable(path, f"it claims {n} components")
    raw = os.pread(fh.fileno(), 8 * n, 4)
    if len(raw) != 8 * n:
        raise _unreadable(path, "the component table is cut short")
    offsets = struct.unpack(f"<{n}q", raw)
    if any(o >= size for o in offsets) or any(-1 > o or 0 <= o < 4 + 8 * n for o in offsets):
        raise _unreadable(path, "a component lies outside the file")
    if n <= LSTM_ENTRY or offsets[LSTM_ENTRY] < 0:
        raise UnreadableCheckpointError(
            f"{path} holds no LSTM network (a legacy-engine-only model): nothing to compare. Use a Tesseract 4/5 "
            "model (tessdata, tessdata_best or tessdata_fast).", path)

    def end_of(i: int) -> int:
        return min([o for o in offsets if o > offsets[i]] + [size])

    version = ""
    if n > VERSION_ENTRY and offsets[VERSION_ENTRY] >= 0:
        v0 = offsets[VERSION_ENTRY]
        version = os.pread(fh.fileno(), min(end_of(VERSION_ENTRY) - v0, 256), v0).decode("latin-1")
    return offsets[LSTM_ENTRY], end_of(LSTM_ENTRY), version.strip()


def read_header(path: str) -> TessHeader:
    """The network's weight matrices (names, shapes, where they are) and the file's version string.

    Raises
    ------
    UnreadableCheckpointError
        Not a Tesseract 4/5 archive, a network that runs past its component, the pre-4.0 format, or an
        archive without an LSTM network (a legacy-engine-only model).
    """
    try:
        fh = io.FileIO(path, "rb")
    except OSError as e:
        raise _unreadable(path, str(e)) from e
    with fh:
        size = os.fstat(fh.fileno()).st_size
        start, end, version = _directory(fh, path, size)
        parser = _Parser(_Cursor(fh, path, start, end))
        parser.network("", 0)
    if not parser.matrices:
        raise UnreadableCheckpointError(f"{path}: its LSTM network has no weight matrix: nothing to compare.", path)
    return TessHeader(version, parser.matrices)


class TesseractReader:
    """A :class:`~mother_core.io.base.ModelReader` of one ``.traineddata`` file (float32 weights)."""

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        self.path = ref.files[0]
        self.header = read_header(self.path)
        self._infos = {n: TensorInfo(n, m.shape, "float32") for n, m in self.header.matrices.items()}
        self._handle: io.FileIO | None = None

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _pread(self, n: int, offset: int) -> bytes:
        if self._handle is None:
            try:
                self._handle = io.FileIO(self.path, "rb")
            except OSError as e:
                raise _unreadable(self.path, str(e)) from e
        data = os.pread(self._handle.fileno(), n, offset)
        if len(data) != n:
            raise _unreadable(self.path, "the file ends inside a weight matrix")
        return data

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        m = self.header.matrices.get(name)
        if m is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        d1, d2 = m.shape
        r0, r1 = rows if rows is not None else (0, d1)
        if not 0 <= r0 <= r1 <= d1:
            raise ValueError(f"Rows {rows} out of range for {name!r} of shape {m.shape}.")
        raw = self._pread((r1 - r0) * d2 * m.itemsize, m.offset + r0 * d2 * m.itemsize)
        if m.int8:
            codes = np.frombuffer(raw, dtype=np.int8).reshape(r1 - r0, d2)
            scales = np.frombuffer(self._pread(8 * (r1 - r0), m.scales_offset + 8 * r0), dtype="<f8")
            values = codes.astype(np.float32) * scales.astype(np.float32)[:, None]
        else:
            values = np.frombuffer(raw, dtype="<f8").reshape(r1 - r0, d2).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(values))

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> TesseractReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<TesseractReader {self.ref.id!r} ({self.ref.format})>"


def open_tesseract(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """The registry's opener of ``"tesseract"`` files."""
    return TesseractReader(ref)
