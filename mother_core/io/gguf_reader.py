"""GGUF files (llama.cpp), read and dequantized with the ``gguf`` package, under transformers names.

The header (metadata and tensor directory) is walked by :mod:`mother_core.io.gguf_header` by byte arithmetic,
with the ``gguf`` package's checks (bad magic, an unknown version, a duplicate tensor) and the ones a corrupt
download needs (every tensor inside the file, sizes consistent with its type's block size), stepping over
the tokenizer's arrays, without importing torch, so that discovery does not. The tensor bytes are then
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
* GPT-2's ``Conv1D`` weights are stored transposed by the converter; they are transposed back;
* the converter's other per-architecture rewrites are undone too (:func:`_undo_converter`): Gemma's and
  Nemotron's norm weights written as 1 + w, GPT-NeoX's and BLOOM's fused ``query_key_value`` rows regrouped
  from per-head (q, k, v) to all q, all k, all v, Falcon's from per kv group (the group's q heads, k, v)
  likewise.

A big-endian file (s390x; llama.cpp's ``gguf_convert_endian.py``) has its bytes swapped to little-endian as they
are read (:func:`~mother_core.io.gguf_header.to_little_endian`, the fields that script swaps), then decoded as any
other; one holding a type whose big-endian layout is not known is refused.

A tensor type the package cannot dequantize is listed with the model's problems (the rest of the model is
read); a file none of whose weights can be read is refused with a message naming the types.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Mapping

import numpy as np
import torch

from mother_core.errors import NoTensorsError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo

# The header read needs no torch (discovery imports it alone); re-exported here, where it was defined.
from mother_core.io.gguf_header import (  # noqa: F401
    PERMUTED_QK,
    GGUFHeader,
    GGUFTensor,
    check_byte_order,
    _unreadable,
    read_header,
    to_little_endian,
)
from mother_core.io.staged import ShortRead


def _as_row(t: GGUFTensor) -> GGUFTensor:
    """A 1-D (or 0-D) tensor seen as one row of a 2-D one."""
    return GGUFTensor(t.gguf_name, t.qtype, t.qtype_name, (1, max(1, int(np.prod(t.shape, dtype=np.int64)))),
                      t.offset, t.nbytes, t.row_bytes, big_endian=t.big_endian)


def _outer_bytes(t: GGUFTensor) -> int:
    """Stored bytes of one row of ``t``'s outermost dimension (every inner row of it; 2-D or more)."""
    inner = int(np.prod(t.shape[1:-1], dtype=np.int64)) if len(t.shape) > 2 else 1
    return t.row_bytes * inner


def _as_stored(t: GGUFTensor) -> bool:
    """Whether a row of the file is a row of the tensor (2-D or more, no converter rewrite to undo), so that
    a row range is one byte range, read (and decoded) as it lies."""
    return len(t.shape) >= 2 and not (t.permute_heads or t.transposed or t.regroup_heads or t.plus_one)


def _unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's ``permute``: GGUF row ``h*hd + 2j + t`` holds HF row ``h*hd + t*hd/2 + j``."""
    rows = w.shape[0]
    if heads <= 0 or rows % heads or (rows // heads) % 2:
        return w
    hd = rows // heads
    return w.reshape(heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _regroup_rows(w: np.ndarray, heads: int, groups: int = 0) -> np.ndarray:
    """Undo the converter's ``query_key_value`` regrouping: GGUF rows [all q; all k; all v] back to HF's
    per-group [q of the group's heads; k_g; v_g] (``groups`` kv groups of ``heads`` query heads; 0: one group
    per head, GPT-NeoX's and BLOOM's per-head [q_h; k_h; v_h])."""
    groups = groups or heads
    rows = w.shape[0]
    if heads <= 0 or heads % groups or rows % (heads + 2 * groups):
        return w
    hd = rows // (heads + 2 * groups)
    rest = w.shape[1:]
    q = w[: heads * hd].reshape(groups, heads // groups, hd, *rest)  # (groups, heads / groups, hd, ...)
    k = w[heads * hd: (heads + groups) * hd].reshape(groups, 1, hd, *rest)
    v = w[(heads + groups) * hd:].reshape(groups, 1, hd, *rest)
    return np.concatenate((q, k, v), axis=1).reshape(w.shape)


def _undo_converter(t: GGUFTensor, data: np.ndarray) -> np.ndarray:
    """The tensor as the transformers checkpoint held it, from the whole stored tensor (rewrites listed in
    the module docstring; none of them depends on the quantization)."""
    if t.transposed:
        data = data.T
    if t.regroup_heads:
        data = _regroup_rows(data, t.regroup_heads, t.regroup_groups)
    if t.plus_one:
        data = (data - np.float32(1.0)).astype(data.dtype, copy=False)
    return data


class GGUFReader:
    """A :class:`~mother_core.io.base.ModelReader` of one ``.gguf`` model (weights dequantized to float32):
    one file, or the files of a model split by llama.cpp's ``gguf-split`` (``-00001-of-00003.gguf``; the
    first holds the metadata, each its share of the tensors)."""

    def __init__(self, ref: ModelRef) -> None:
        from mother_core.io.readers import normalised_names

        self.ref = ref
        self.path = ref.files[0]
        self.header = read_header(self.path)
        headers = [(self.path, self.header)] + [(f, read_header(f, self.header)) for f in ref.files[1:]]
        if self.header.split_count < len(ref.files):
            raise UnreadableCheckpointError(
                f"{ref.path}: {len(ref.files)} files are named as parts of one split GGUF model, but its first "
                f"part says the model is {self.header.split_count} file(s): the parts come from different "
                "downloads or were renamed. Keep only the parts of one model (gguf-split names them "
                "-0000k-of-0000n.gguf).", ref.path)
        if self.header.split_count > len(ref.files):
            raise UnreadableCheckpointError(
                f"{ref.path}: the GGUF file says the model is split in {self.header.split_count} files and "
                f"{len(ref.files)} are there. Download the missing parts (same name, -0000k-of-0000n.gguf).",
                ref.path)
        for path, header in headers:
            check_byte_order(path, header)
        self._tensors: dict[str, GGUFTensor] = {}
        self._infos: dict[str, TensorInfo] = {}
        self._file_of: dict[str, str] = {}  # GGUF tensor name -> the file holding it
        unsupported: dict[str, str] = {}
        left_out: dict[str, str] = {}
        for path, header in headers:
            unsupported.update(header.unsupported)
            left_out.update(header.left_out)
            for raw, norm in normalised_names(header.tensors).items():
                t = header.tensors[raw]
                shape = (t.shape[1], t.shape[0]) if t.transposed else t.shape
                dtype = "float16" if t.qtype_name == "F16" else "float32"
                self._tensors[norm] = t
                self._infos[norm] = TensorInfo(norm, shape, dtype)
                self._file_of[t.gguf_name] = path
        self.notes = [
            f"{ref.path}: tensor {name!r} is stored as {q}, which the gguf package cannot dequantize; it is left "
            "out of the comparison." for name, q in sorted(unsupported.items())]
        self.notes += [f"{ref.path}: tensor {name!r} {why}; it is left out of the comparison (the file's head "
                       "counts are missing or damaged: re-convert the model)."
                       for name, why in sorted(left_out.items())]
        if not self._infos and left_out and not unsupported:
            raise NoTensorsError(
                f"{ref.path}: no tensor's rows can be ordered with the file's head counts "
                f"({min(left_out.items())[1]}): the file is damaged. Re-convert the model or "
                "remove it from the set.", ref.path)
        if not self._infos:
            kinds = ", ".join(sorted(set(unsupported.values()))) or "none"
            raise NoTensorsError(
                f"{ref.path} holds no tensor we can dequantize (types: {kinds}). Convert it with a supported "
                "quantization (e.g. Q8_0, Q4_K) or remove it from the set.", ref.path)
        self._handles: dict[str, io.FileIO] = {}
        self._cached: tuple[str, torch.Tensor] | None = None  # last whole tensor read (rewritten ones)
        self._local = threading.local()  # per-thread staging buffer of raw blocks (the pass reads from two)

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _file(self, t: GGUFTensor) -> io.FileIO:
        """The open file holding tensor ``t`` (opened on first use, kept until :meth:`close`)."""
        path = self._path(t)
        handle = self._handles.get(path)
        if handle is None:
            try:
                handle = self._handles[path] = io.FileIO(path, "rb")
            except OSError as e:
                raise _unreadable(path, str(e)) from e
        return handle

    def half_width(self, name: str) -> bool:
        """Whether ``name`` holds 4- to 6-bit codes (:data:`~mother_core.io.gguf_fast.HALF_TYPES`), whose
        values this reader rounds to bfloat16 whatever the output (listed as float32, the
        quantization's own grid being 10-70x coarser), so that :meth:`read_into` may also fill a bfloat16
        buffer with the same values at half the stores: the pass does when every model of the tensor may
        (``stats/execute.py``)."""
        from mother_core.io import gguf_fast

        t = self._tensors.get(name)
        return t is not None and t.qtype_name in gguf_fast.HALF_TYPES

    def coded(self, name: str) -> str | None:
        """``name``'s block type when its rows can be handed over as stored (:meth:`read_codes`) for the pass to
        decode inside its statistics kernel: a 4- to 6-bit type of :data:`~mother_core.io.gguf_fast.HALF_TYPES`
        with a compiled decoder, 2-D or more, stored as the transformers checkpoint held it (no converter
        rewrite to undo: a row of the file is a row of the tensor); else None."""
        from mother_core.io import gguf_fast

        t = self._tensors.get(name)
        if t is None or not hasattr(os, "preadv") or not _as_stored(t) or not gguf_fast.half_width(t.qtype_name):
            return None
        return t.qtype_name

    def read_codes(self, name: str, rows: tuple[int, int], out: np.ndarray) -> np.ndarray:
        """The stored blocks of rows ``[start, stop)`` of a :meth:`coded` tensor into ``out`` (uint8, exactly
        their bytes), with ``preadv``: what :meth:`read_into` decodes, left for the caller to decode."""
        t = self._tensors[name]
        r0, r1 = rows
        per_outer = _outer_bytes(t)
        if self.coded(name) is None or not 0 <= r0 <= r1 <= t.shape[0] or out.nbytes != (r1 - r0) * per_outer:
            raise ValueError(f"read_codes needs rows of a coded tensor and a buffer of their bytes, got {name!r} "
                             f"rows {rows} and {out.nbytes} bytes.")
        self._pread(t, t.offset + r0 * per_outer, memoryview(out.reshape(-1)))  # type: ignore[arg-type]
        if t.big_endian:  # the kernels read little-endian scales
            to_little_endian(out, t.qtype_name)
        return out

    def _pread(self, t: GGUFTensor, start: int, view: memoryview) -> None:
        """Fill ``view`` with the bytes of ``t``'s file from ``start`` (``preadv`` until done)."""
        fh, done = self._file(t), 0
        while done < view.nbytes:
            n = os.preadv(fh.fileno(), [view[done:]], start + done)
            if n <= 0:
                raise _unreadable(self._path(t), f"the file ends inside tensor {t.gguf_name!r}")
            done += n

    def _read_rows(self, t: GGUFTensor, r0: int, r1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Stored rows ``[r0, r1)`` (outermost dimension), dequantized, shape (r1 - r0, *inner); decoded
        straight into ``out`` (float32, as many values; or uint16: bfloat16 bits of a half-width type) when
        given and a compiled kernel takes the type. Values of a half-width type are rounded to bfloat16
        (:meth:`half_width`) on every path."""
        import gguf

        if len(t.shape) <= 1:  # one stored row: read it whole, slice the values
            return self._read_rows(_as_row(t), 0, 1).reshape(-1)[r0:r1]
        per_outer = _outer_bytes(t)
        quantized = t.qtype_name not in ("F16", "F32")
        from mother_core.io import gguf_fast

        start, stop = t.offset + r0 * per_outer, t.offset + r1 * per_outer
        rounded = t.qtype_name in gguf_fast.HALF_TYPES
        if quantized and out is not None and gguf_fast.supports(t.qtype_name) and not t.big_endian:
            # Read in cache-sized pieces, each decoded into the caller's buffer as it arrives (staged.py).
            try:
                gguf_fast.dequantize_file(self._file(t), start, stop, t.qtype_name, out, rounded=rounded)
            except ShortRead as e:
                raise _unreadable(self._path(t), f"the file ends inside tensor {t.gguf_name!r}") from e
            except ValueError as e:
                raise _unreadable(self._path(t), f"tensor {t.gguf_name!r} ({t.qtype_name}) could not be "
                                             f"dequantized ({e})") from e
            return out.reshape((r1 - r0, *t.shape[1:]))
        if quantized and out is not None:  # decoded at once: the bytes go to this thread's reused buffer
            staging = getattr(self._local, "staging", None)
            if staging is None or staging.size < (r1 - r0) * per_outer:
                staging = self._local.staging = np.empty((r1 - r0) * per_outer, dtype=np.uint8)
            buf = staging[: (r1 - r0) * per_outer]
        else:  # returned (F16 / F32 views of it) or kept: a buffer of its own
            buf = np.empty((r1 - r0) * per_outer, dtype=np.uint8)
        self._pread(t, start, buf.data)
        if t.big_endian:  # swapped whole (decoded at once, not in staged pieces), then read as little-endian
            to_little_endian(buf, t.qtype_name)
        shape = (r1 - r0, *t.shape[1:]) if len(t.shape) > 1 else (r1 - r0,)
        qtype = gguf.GGMLQuantizationType(t.qtype)
        if qtype == gguf.GGMLQuantizationType.F16:
            return buf.view(np.float16).reshape(shape)
        if qtype == gguf.GGMLQuantizationType.F32:
            return buf.view(np.float32).reshape(shape)
        try:
            if gguf_fast.supports(t.qtype_name):  # compiled, bit-identical to the package's numpy code
                # (``out`` is None here but for a big-endian file: others with ``out`` were decoded in pieces above)
                return gguf_fast.dequantize(buf, t.qtype_name, out, rounded=rounded).reshape(shape)
            out = gguf.quants.dequantize(buf.reshape(-1, t.row_bytes), qtype)
            if rounded:  # as the compiled path rounds (no numba here)
                out = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).bfloat16().float().numpy()
        except Exception as e:
            raise _unreadable(self._path(t), f"tensor {t.gguf_name!r} ({t.qtype_name}) could not be dequantized "
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
        if t.transposed or t.regroup_heads or t.plus_one:
            # Rewritten by the converter (a transpose: rows of the transpose are columns on disk): read whole
            # once, undone, sliced per chunk.
            if self._cached is None or self._cached[0] != name:
                self._cached = None
                whole = np.asarray(self._read_rows(t, 0, t.shape[0] if t.shape else 1)).reshape(t.shape)
                self._cached = (name, torch.from_numpy(np.ascontiguousarray(_undo_converter(t, whole))))
            return self._cached[1][r0:r1].clone() if info.shape else self._cached[1].clone()
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
        buffer), or of bfloat16 where :meth:`half_width` (the same values); rows of a type with a compiled
        kernel (:mod:`~mother_core.io.gguf_fast`), in their stored order, are decoded straight into it."""
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        t = self._tensors[name]
        r0, r1 = rows if rows is not None else (0, info.shape[0] if info.shape else 1)
        shape = (r1 - r0, *info.shape[1:]) if info.shape else ()
        half = out.dtype == torch.bfloat16 and self.half_width(name)
        listed = out.dtype == getattr(torch, info.dtype) or half
        if not listed or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"read_into needs a contiguous CPU {info.dtype} buffer, got {out.dtype} on {out.device}.")
        direct = _as_stored(t) and rows is not None and 0 <= r0 <= r1 <= info.shape[0]
        from mother_core.io import gguf_fast

        if direct and gguf_fast.supports(t.qtype_name):
            flat = out.view(torch.int16).numpy().view(np.uint16) if half else out.numpy()
            self._read_rows(t, r0, r1, flat.reshape(-1))
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
        per_outer = _outer_bytes(t)
        r0, r1 = rows if rows is not None else (0, t.shape[0])
        if t.permute_heads:  # whole heads are read around the rows
            hd = t.shape[0] // t.permute_heads
            r0, r1 = r0 // hd * hd, min(t.shape[0], -(-r1 // hd) * hd)
        try:
            os.posix_fadvise(self._file(t).fileno(), t.offset + r0 * per_outer, (r1 - r0) * per_outer,
                             os.POSIX_FADV_WILLNEED)
        except (OSError, UnreadableCheckpointError):
            pass  # a hint: the read itself reports real problems

    def _path(self, t: GGUFTensor) -> str:
        """The file of the model holding tensor ``t`` (a split model's part)."""
        return self._file_of.get(t.gguf_name, self.path)

    def close(self) -> None:
        handles, self._handles, self._cached = self._handles, {}, None
        for handle in handles.values():
            handle.close()

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<GGUFReader {self.ref.id!r} ({self.ref.format})>"


def open_gguf(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """The registry's opener of ``"gguf"`` files (experts fused as ``gate_up`` split like a transformers file's,
    :mod:`.experts`)."""
    from mother_core.io import experts

    return experts.wrap(GGUFReader(ref))
