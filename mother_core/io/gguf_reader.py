"""GGUF files (llama.cpp), read and dequantized with the ``gguf`` package, under transformers names.

The header (metadata and tensor directory) is parsed by :class:`gguf.GGUFReader`, whose own checks refuse a
bad magic, an unknown version or a duplicate tensor; this module adds the ones a corrupt download needs
(every tensor inside the file, sizes consistent with its type's block size). The tensor bytes are then
read with ``os.preadv`` of the rows asked for (a row range of a GGUF tensor is one byte range: blocks run
along the innermost dimension), or, where the pass decodes them into its own buffer, in cache-sized pieces
each decoded as it arrives (:mod:`mother_core.io.staged`), never through the package's memory map, so
resident memory stays at one chunk per model, and dequantized with
:func:`gguf.quants.dequantize` to float32 (Q8_0, Q4_0/1, Q5_0/1, Q4_K, Q5_K, Q6_K and BF16 with the
compiled, bit-identical kernels of :mod:`mother_core.io.gguf_fast`).

Names and layouts are those of the transformers checkpoint the file was converted from, so a GGUF file and
its safetensors source compare tensor by tensor:

* names come from the ``gguf`` package's own tables (:mod:`mother_core.io.gguf_names`);
* llama.cpp's converter permutes the rows of ``q_proj`` / ``k_proj`` of Llama-family models (rotary
  halves interleaved per head, ``LlamaModel.permute`` in ``convert_hf_to_gguf.py``); the permutation is
  undone here for the architectures in :data:`PERMUTED_QK`, with the head counts of the file's metadata;
* GPT-2's ``Conv1D`` weights are stored transposed by the converter; they are transposed back.

A tensor type the package cannot dequantize is listed with the model's problems (the rest of the model is
read); a file none of whose weights can be read is refused with a message naming the types.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from mother_core.errors import NoTensorsError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo
from mother_core.io.staged import ShortRead

#: Architectures whose q/k rows llama.cpp's converter permutes (classes deriving from ``LlamaModel``).
PERMUTED_QK: frozenset[str] = frozenset({"llama", "granite", "granitemoe", "deci"})
#: GPT-2 weights the converter transposes (HF ``Conv1D`` stores (in, out)).
_TRANSPOSED_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
_TRANSPOSED_ARCHS = frozenset({"gpt2"})


def _unreadable(path: str, why: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated, corrupt or not a GGUF file: re-download or "
        "remove it.", path)


@dataclass(frozen=True)
class GGUFTensor:
    """Where one tensor lives in the file and how it is stored."""

    gguf_name: str
    qtype: int  # gguf.GGMLQuantizationType value
    qtype_name: str
    shape: tuple[int, ...]  # torch order (outermost first) of the stored tensor
    offset: int  # absolute byte offset
    nbytes: int
    row_bytes: int  # bytes of one stored row (innermost dimension)
    permute_heads: int = 0  # > 0: rows permuted by llama.cpp for this many heads
    transposed: bool = False


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file holds, from its header only."""

    architecture: str
    file_type: str | None  # e.g. "Q4_K_M" from general.file_type
    tensors: dict[str, GGUFTensor]  # transformers (raw, not normalised) name -> tensor
    unsupported: dict[str, str]  # transformers name -> quantization type the package cannot dequantize
    metadata: dict[str, str]  # a few string keys (general.name, general.base_model.*) for people

    @property
    def scheme(self) -> str:
        """The quantization: the declared file type, else the type holding the most weights."""
        if self.file_type:
            return self.file_type
        sizes: dict[str, int] = {}
        for t in self.tensors.values():
            sizes[t.qtype_name] = sizes.get(t.qtype_name, 0) + t.nbytes
        return max(sizes, key=lambda k: sizes[k]) if sizes else "unknown"


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # noqa: BLE001 - a malformed value is treated as absent
        return None


def read_header(path: str) -> GGUFHeader:
    """Parse a GGUF file's header with the ``gguf`` package and check it against the file size.

    Raises
    ------
    UnreadableCheckpointError
        Not a GGUF file, a version or layout the package refuses, or tensors beyond the end of the file.
    """
    try:
        import gguf
        from gguf.quants import _type_traits  # the types the package can dequantize

        from mother_core.io.gguf_names import transformers_names
    except ImportError as e:  # an optional dependency: its absence costs the GGUF files only
        raise UnreadableCheckpointError(
            f"Cannot read {path}: reading GGUF files needs the gguf package, which is not installed or does not "
            f"import ({type(e).__name__}: {str(e)[:160]}). Install it (pip install gguf) or remove the file "
            "from the set.", path) from e

    try:
        size = os.path.getsize(path)
        reader = gguf.GGUFReader(path, "r")
    except (OSError, ValueError, KeyError, IndexError, TypeError, OverflowError) as e:
        if "GGMLQuantizationType" in str(e):  # a type newer than the installed package, not a broken file
            raise UnreadableCheckpointError(
                f"Cannot read {path}: a tensor is stored in a GGUF type the installed gguf package does not "
                f"know ({str(e)[:120]}). Update the "
                "package (pip install -U gguf) or convert the file to a common type (Q8_0, Q4_K).", path) from e
        raise _unreadable(path, f"its GGUF header is not valid ({type(e).__name__}: {str(e)[:200]})") from e
    try:
        arch = _field(reader, "general.architecture")
        arch = arch if isinstance(arch, str) else "unknown"
        ft = _field(reader, "general.file_type")
        file_type = None
        if isinstance(ft, (int, np.integer)):
            try:
                file_type = gguf.LlamaFileType(int(ft)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                file_type = None
        n_head = _field(reader, f"{arch}.attention.head_count")
        n_kv = _field(reader, f"{arch}.attention.head_count_kv")
        metadata = {k: v for k in reader.fields if k.startswith(("general.name", "general.base_model"))
                    and isinstance(v := _field(reader, k), str)}
        raw = list(reader.tensors)
        names = transformers_names(arch, [t.name for t in raw])
        tensors: dict[str, GGUFTensor] = {}
        unsupported: dict[str, str] = {}
        for t in raw:
            qtype = gguf.GGMLQuantizationType(int(t.tensor_type))
            ne = [int(d) for d in t.shape]  # innermost first
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            if not ne or ne[0] % block != 0:
                raise _unreadable(path, f"tensor {t.name!r} has {ne[0] if ne else 0} values per row, not a "
                                        f"multiple of {qtype.name}'s block of {block}")
            row_bytes = ne[0] // block * type_size
            nbytes = row_bytes * int(np.prod(ne[1:], dtype=np.int64))
            offset = int(t.data_offset)
            if offset < 0 or offset + nbytes > size:
                raise _unreadable(path, f"tensor {t.name!r} ends at byte {offset + nbytes} of a {size}-byte file")
            name = names.get(t.name, t.name)
            heads = 0
            if arch in PERMUTED_QK and name.endswith((".q_proj.weight", ".q_proj.bias")) and n_head:
                heads = int(n_head)
            elif arch in PERMUTED_QK and name.endswith((".k_proj.weight", ".k_proj.bias")) and (n_kv or n_head):
                heads = int(n_kv or n_head)
            transposed = arch in _TRANSPOSED_ARCHS and name.endswith(_TRANSPOSED_SUFFIXES) and len(ne) == 2
            info = GGUFTensor(t.name, int(qtype), qtype.name, tuple(reversed(ne)), offset, nbytes, row_bytes,
                              heads, transposed)
            if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) \
                    and qtype not in _type_traits:
                unsupported[name] = qtype.name
                continue
            tensors[name] = info
    finally:
        mm = getattr(reader, "data", None)
        del reader
        if mm is not None and getattr(mm, "_mmap", None) is not None:
            try:
                mm._mmap.close()
            except (BufferError, ValueError):
                pass  # views still alive: the map goes when they do
    return GGUFHeader(arch, file_type, tensors, unsupported, metadata)


def _as_row(t: GGUFTensor) -> GGUFTensor:
    """A 1-D (or 0-D) tensor seen as one row of a 2-D one."""
    return GGUFTensor(t.gguf_name, t.qtype, t.qtype_name, (1, max(1, int(np.prod(t.shape, dtype=np.int64)))),
                      t.offset, t.nbytes, t.row_bytes)


def _unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: GGUF row ``h*hd + 2j + t`` holds HF row ``h*hd + t*hd/2 + j``."""
    rows = w.shape[0]
    if heads <= 0 or rows % heads or (rows // heads) % 2:
        return w
    hd = rows // heads
    return w.reshape(heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFReader:
    """A :class:`~mother_core.io.base.ModelReader` of one ``.gguf`` file (weights dequantized to float32)."""

    def __init__(self, ref: ModelRef) -> None:
        from mother_core.io.readers import normalised_names

        self.ref = ref
        self.path = ref.files[0]
        self.header = read_header(self.path)
        self._tensors: dict[str, GGUFTensor] = {}
        self._infos: dict[str, TensorInfo] = {}
        for raw, norm in normalised_names(self.header.tensors).items():
            t = self.header.tensors[raw]
            shape = (t.shape[1], t.shape[0]) if t.transposed else t.shape
            dtype = "float16" if t.qtype_name == "F16" else "float32"
            self._tensors[norm] = t
            self._infos[norm] = TensorInfo(norm, shape, dtype)
        self.notes = [
            f"{ref.path}: tensor {name!r} is stored as {q}, which the gguf package cannot dequantize; it is left "
            "out of the comparison." for name, q in sorted(self.header.unsupported.items())]
        if not self._infos:
            kinds = ", ".join(sorted(set(self.header.unsupported.values()))) or "none"
            raise NoTensorsError(
                f"{ref.path} holds no tensor we can dequantize (types: {kinds}). Convert it with a supported "
                "quantization (e.g. Q8_0, Q4_K) or remove it from the set.", ref.path)
        self._handle: io.FileIO | None = None
        self._cached: tuple[str, torch.Tensor] | None = None  # last whole tensor read (transposed ones)
        self._local = threading.local()  # per-thread staging buffer of raw blocks (the pass reads from two)

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _file(self) -> io.FileIO:
        if self._handle is None:
            try:
                self._handle = io.FileIO(self.path, "rb")
            except OSError as e:
                raise _unreadable(self.path, str(e)) from e
        return self._handle

    def _read_rows(self, t: GGUFTensor, r0: int, r1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored rows ``[r0, r1)`` (outermost dimension), dequantized, shape (r1 - r0, *inner); decoded
        straight into ``out`` (float32, as many values) when given and a compiled kernel takes the type."""
        import gguf

        if len(t.shape) <= 1:  # one stored row: read it whole, slice the values
            return self._read_rows(_as_row(t), 0, 1).reshape(-1)[r0:r1]
        inner = int(np.prod(t.shape[1:-1], dtype=np.int64)) if len(t.shape) > 2 else 1
        per_outer = t.row_bytes * inner
        quantized = t.qtype_name not in ("F16", "F32")
        from mother_core.io import gguf_fast

        start, stop = t.offset + r0 * per_outer, t.offset + r1 * per_outer
        if quantized and out is not None and gguf_fast.supports(t.qtype_name):
            # Read in cache-sized pieces, each decoded into the caller's buffer as it arrives (staged.py).
            try:
                gguf_fast.dequantize_file(self._file(), start, stop, t.qtype_name, out)
            except ShortRead as e:
                raise _unreadable(self.path, f"the file ends inside tensor {t.gguf_name!r}") from e
            except ValueError as e:
                raise _unreadable(self.path, f"tensor {t.gguf_name!r} ({t.qtype_name}) could not be "
                                             f"dequantized ({e})") from e
            return out.reshape((r1 - r0, *t.shape[1:]))
        if quantized and out is not None:  # decoded at once: the bytes go to this thread's reused buffer
            staging = getattr(self._local, "staging", None)
            if staging is None or staging.size < (r1 - r0) * per_outer:
                staging = self._local.staging = np.empty((r1 - r0) * per_outer, dtype=np.uint8)
            buf = staging[: (r1 - r0) * per_outer]
        else:  # returned (F16 / F32 views of it) or kept: a buffer of its own
            buf = np.empty((r1 - r0) * per_outer, dtype=np.uint8)
        fh, done = self._file(), 0
        while done < buf.nbytes:
            n = os.preadv(fh.fileno(), [buf.data[done:]], start + done)
            if n <= 0:
                raise _unreadable(self.path, f"the file ends inside tensor {t.gguf_name!r}")
            done += n
        shape = (r1 - r0, *t.shape[1:]) if len(t.shape) > 1 else (r1 - r0,)
        qtype = gguf.GGMLQuantizationType(t.qtype)
        if qtype == gguf.GGMLQuantizationType.F16:
            return buf.view(np.float16).reshape(shape)
        if qtype == gguf.GGMLQuantizationType.F32:
            return buf.view(np.float32).reshape(shape)
        try:
            if gguf_fast.supports(t.qtype_name):  # compiled, bit-identical to the package's numpy code
                return gguf_fast.dequantize(buf, t.qtype_name, out).reshape(shape)
            out = gguf.quants.dequantize(buf.reshape(-1, t.row_bytes), qtype)
        except Exception as e:
            raise _unreadable(self.path, f"tensor {t.gguf_name!r} ({t.qtype_name}) could not be dequantized "
                                         f"({type(e).__name__}: {str(e)[:160]})") from e
        return out.reshape(shape)

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        n_rows = info.shape[0] if info.shape else 1
        r0, r1 = rows if rows is not None else (0, n_rows)
        if rows is not None and (not info.shape or not 0 <= r0 <= r1 <= n_rows):
            raise ValueError(f"Rows {rows} out of range for {name!r} of shape {info.shape}.")
        t = self._tensors[name]
        if t.transposed:  # rows of the transpose are columns on disk: read whole once, slice per chunk
            if self._cached is None or self._cached[0] != name:
                self._cached = None
                self._cached = (name, torch.from_numpy(np.ascontiguousarray(self._read_rows(t, 0, t.shape[0]).T)))
            return self._cached[1][r0:r1].clone()
        if not info.shape:
            return torch.from_numpy(np.array(self._read_rows(t, 0, 1).reshape(())))
        if t.permute_heads:
            hd = info.shape[0] // t.permute_heads
            h0, h1 = r0 // hd * hd, -(-r1 // hd) * hd  # whole heads around the rows asked for
            block = _unpermute_rows(self._read_rows(t, h0, h1), (h1 - h0) // hd)
            return torch.from_numpy(np.ascontiguousarray(block[r0 - h0:r1 - h0]))
        return torch.from_numpy(np.ascontiguousarray(self._read_rows(t, r0, r1)))

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read ``name`` (rows) into a caller's contiguous CPU buffer of the listed dtype (the pass's chunk
        buffer); rows of a type with a compiled kernel (:mod:`~mother_core.io.gguf_fast`), in their stored
        order, are decoded straight into it."""
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        t = self._tensors[name]
        r0, r1 = rows if rows is not None else (0, info.shape[0] if info.shape else 1)
        shape = (r1 - r0, *info.shape[1:]) if info.shape else ()
        if out.dtype != getattr(torch, info.dtype) or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"read_into needs a contiguous CPU {info.dtype} buffer, got {out.dtype} on {out.device}.")
        direct = (len(info.shape) >= 2 and not t.permute_heads and not t.transposed and out.dtype == torch.float32
                  and rows is not None and 0 <= r0 <= r1 <= info.shape[0])
        from mother_core.io import gguf_fast

        if direct and gguf_fast.supports(t.qtype_name):
            self._read_rows(t, r0, r1, out.numpy().reshape(-1))
            return out.view(shape)
        data = self.read(name, rows)
        if data.numel() != out.numel():
            raise ValueError(f"Buffer of {out.numel()} elements does not fit {name!r} rows {rows}.")
        out.copy_(data.reshape(out.shape))
        return out.view(shape)

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None:
        """Ask the OS to start reading the bytes of ``name`` (rows) now (``POSIX_FADV_WILLNEED``), so a cold
        file's next chunk arrives while this one is decoded. A hint only."""
        t = self._tensors.get(name)
        if t is None or not hasattr(os, "posix_fadvise") or len(t.shape) < 2 or t.transposed:
            return
        inner = int(np.prod(t.shape[1:-1], dtype=np.int64)) if len(t.shape) > 2 else 1
        per_outer = t.row_bytes * inner
        r0, r1 = rows if rows is not None else (0, t.shape[0])
        if t.permute_heads:  # whole heads are read around the rows
            hd = t.shape[0] // t.permute_heads
            r0, r1 = r0 // hd * hd, min(t.shape[0], -(-r1 // hd) * hd)
        try:
            os.posix_fadvise(self._file().fileno(), t.offset + r0 * per_outer, (r1 - r0) * per_outer,
                             os.POSIX_FADV_WILLNEED)
        except (OSError, UnreadableCheckpointError):
            pass  # a hint: the read itself reports real problems

    def close(self) -> None:
        handle, self._handle, self._cached = self._handle, None, None
        if handle is not None:
            handle.close()

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<GGUFReader {self.ref.id!r} ({self.ref.format})>"


def open_gguf(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """The registry's opener of ``"gguf"`` files."""
    return GGUFReader(ref)
