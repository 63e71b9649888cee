"""Readers: one :class:`~mother_core.io.base.ModelReader` per checkpoint format, behind :func:`open_model`.

* safetensors (single file or shards): tensors are listed from the JSON headers and read lazily with
  ``os.preadv`` of the byte range the header gives (only the requested rows are read, no memory map);
  at most one shard is open at a time.
* PyTorch pickles (single file or shards): the restricted pickle machine of :mod:`mother_core.io.unpickler`
  (never ``torch.load`` nor :mod:`pickle`: nothing from the file is imported, called or allowed to change
  process state; sizes and strides are checked before allocation). Pickles are held whole (mapped for
  zip files); for shards, one shard at a time.
* PEFT LoRA adapters: the base model's tensors with the adapter merged in (:mod:`mother_core.io.lora`).

Names are normalised with :func:`~mother_core.io.names.normalise_name`. Reading a name the model does not
have raises ``KeyError``, and a bad row range ``ValueError``: those are caller bugs, not user errors.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from typing import Iterable, Mapping, TypeVar

import numpy as np
import torch

from mother_core.errors import MissingBaseModelError, NoTensorsError, UnreadableCheckpointError
from mother_core.io.base import ModelReader, ModelRef, TensorInfo
from mother_core.io.staged import ShortRead, decode, pieces
from mother_core.io.names import normalise_name
from mother_core.io.quant_scheme import model_config
from mother_core.io.safetensors_header import TensorEntry, describe_dtype, read_header
from mother_core.io.sniff import check_torch_file
from mother_core.io.sd_single_file import read_unet
from mother_core.io.statedict import find_state_dict
from mother_core.io.unpickler import load_legacy, load_zip


def normalised_names(raw_names: Iterable[str]) -> dict[str, str]:
    """Map raw names to normalised names without collisions.

    When several raw names of one model normalise to the same name, the one already in normal form (or
    else the first) gets it and the others keep their raw name, so no tensor is hidden.
    """
    raw_list = list(raw_names)
    wanted = {raw: normalise_name(raw) for raw in raw_list}
    taken: dict[str, str] = {}
    order = sorted(range(len(raw_list)), key=lambda i: (raw_list[i] != wanted[raw_list[i]], i))
    for raw in (raw_list[i] for i in order):
        norm = wanted[raw]
        if norm in taken:
            norm = raw
        taken[norm] = raw
    return {raw: norm for norm, raw in taken.items()}


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:limit]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _unreadable(path: str, e: BaseException | str) -> UnreadableCheckpointError:
    why = e if isinstance(e, str) else f"{type(e).__name__}: {_first_line(e)}"
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated or corrupt: re-download or "
        "remove it.", path,
    )


def _require_floats(ref: ModelRef, infos: Mapping[str, TensorInfo], notes: Iterable[str] = ()) -> None:
    if not any(i.is_float for i in infos.values()):
        where = ref.files[0] if len(ref.files) == 1 else ref.path
        kinds = sorted({_kind_of(i.dtype) for i in infos.values()})
        found = f"{len(infos)} tensors of {', '.join(kinds)}" if infos else "no tensors we can read"
        extra = "".join(f" {n}" for n in notes)
        raise NoTensorsError(
            f"{where} holds no tensors in a floating-point format we compare (float16/32/64, bfloat16); "
            f"it has {found}.{extra} There are no weights to compare: remove it from the set.", where,
        )


def _kind_of(dtype: str) -> str:
    """How a dtype is named to users: fp8 formats are "fp8", integer/bool buffers say so."""
    if dtype.startswith("float8"):
        return "fp8"
    if dtype.startswith(("int", "uint", "bool")):
        return "integer/bool buffers"
    return dtype


def _unsupported_note(path: str, entries: Iterable[TensorEntry]) -> str:
    entries = list(entries)
    kinds = sorted({describe_dtype(e.code) for e in entries})
    names = ", ".join(repr(e.name[:60]) for e in entries[:3]) + (" ..." if len(entries) > 3 else "")
    return (f"{path}: {len(entries)} tensor(s) ({names}) are stored as {', '.join(kinds)}, which we do not "
            "compare; they were left out.")


#: Input-embedding module names (the last part before ``.weight``, after :func:`normalise_name`) an untied
#: ``lm_head`` can be an alias of: Llama-style, GPT-2, BLOOM / BERT, GPT-NeoX, T5.
TIED_EMBEDDINGS = frozenset({"embed_tokens", "wte", "word_embeddings", "embed_in", "shared"})

_R = TypeVar("_R", bound="_Reader")


class _Reader:
    """Shared bookkeeping: infos keyed by normalised name, row checks, context manager."""

    ref: ModelRef

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        self._infos: dict[str, TensorInfo] = {}
        self._where: dict[str, tuple[str, str]] = {}  # normalised name -> (file, raw name)
        #: Per-tensor problems the reader worked around (tensors left out); reported as Problems.
        self.notes: list[str] = []

    def _add_file(self, path: str, shapes: Mapping[str, tuple[tuple[int, ...], str]],
                  model_names: Iterable[str] | None = None) -> None:
        # A Stable Diffusion single-file checkpoint: its UNet under the diffusers names (sd_single_file.py),
        # the block structure read from every shard's names (``model_names``) where the model has several.
        unet = read_unet(shapes, model_names)
        if unet is not None and unet.note:
            self.notes.append(f"{path}: {unet.note}")
        source = {n: n for n in shapes} if unet is None else unet.names  # listed name -> raw name
        listed = {n: shapes[raw] for n, raw in source.items()}
        for name, norm in normalised_names(listed).items():
            if norm in self._infos:  # the same tensor in two shards: the first wins, as HF does
                continue
            shape, dtype = listed[name]
            self._infos[norm] = TensorInfo(norm, tuple(shape), dtype)
            self._where[norm] = (path, source[name])

    def _drop_tied_aliases(self) -> None:
        """Leave out the names a checkpoint stores a tied weight under a second (or third) time.

        ``torch.save(model.state_dict())`` (and transformers 4's pickles) write a tied tensor under each of
        its names, where ``save_pretrained``'s safetensors keep one: an encoder-decoder's
        ``encoder.embed_tokens`` / ``decoder.embed_tokens`` beside ``shared`` (transformers ties them in
        every such model: T5, BART, ...), and ``lm_head`` beside the input embeddings when the config says
        ``tie_word_embeddings``. Kept, the same weights in two layouts differ by whole tensors (the pickle
        reads as having more layers), so a copy is read as a fine-tune and its tree is rebuilt around it.
        Only a name with its tie target present at the same shape is left out: what transformers loads.
        """
        infos = self._infos
        drop: set[str] = set()
        shared = infos.get("shared.weight")
        if shared is not None:
            drop |= {n for n in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
                     if n in infos and infos[n].shape == shared.shape}
        head = infos.get("lm_head.weight")
        if head is not None and model_config(self.ref.files[0]).get("tie_word_embeddings") is True:
            if any(n != "lm_head.weight" and n not in drop and info.shape == head.shape
                   and n.removesuffix(".weight").rsplit(".", 1)[-1] in TIED_EMBEDDINGS for n, info in infos.items()):
                drop.add("lm_head.weight")
        for name in drop:
            del infos[name]
            self._where.pop(name, None)

    def tensor_infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def _locate(self, name: str, rows: tuple[int, int] | None) -> tuple[str, str, TensorInfo]:
        info = self._infos.get(name)
        if info is None:
            raise KeyError(f"Model {self.ref.id!r} has no tensor {name!r}.")
        if rows is not None:
            start, stop = rows
            if not info.shape or not 0 <= start <= stop <= info.shape[0]:
                raise ValueError(f"Rows {rows} out of range for {name!r} of shape {info.shape}.")
        path, raw = self._where[name]
        return path, raw, info

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ref.id!r} ({self.ref.format})>"


class SafetensorsReader(_Reader):
    """Lazy reader of one or more ``.safetensors`` files (shards); at most one file open at a time.

    Tensors are read with ``os.preadv`` straight from the byte ranges the JSON header gives (a row range
    of a C-contiguous tensor is one contiguous range), never through a memory map: mapped pages would
    count in the process's resident memory (8 GB of models read through mmap look like 8 GB of RSS) and
    cost a page fault per 4 KiB. :meth:`read_into` fills a caller's buffer with no intermediate copy.
    """

    def __init__(self, ref: ModelRef) -> None:
        super().__init__(ref)
        self._spans: dict[str, tuple[int, int]] = {}  # normalised name -> absolute (start, stop) bytes
        every = [n for path in ref.files for n in read_header(path).shapes()] if len(ref.files) > 1 else None
        for path in ref.files:
            header = read_header(path)  # validated once per file (memoised: discovery already parsed it)
            self._add_file(path, header.shapes(), every)
            entries = {t.name: t for t in header.tensors}
            for norm, (p, raw) in self._where.items():
                if p == path and norm not in self._spans:
                    self._spans[norm] = (entries[raw].start, entries[raw].stop)
            if header.unsupported:
                self.notes.append(_unsupported_note(path, header.unsupported))
        self._drop_tied_aliases()
        _require_floats(ref, self._infos, self.notes)
        self._open_path: str | None = None
        self._handle: io.FileIO | None = None

    def _file(self, path: str) -> io.FileIO:
        if self._open_path != path:
            self.close()
            try:
                self._handle = io.FileIO(path, "rb")
            except OSError as e:
                raise _unreadable(path, e) from e
            self._open_path = path
        assert self._handle is not None
        return self._handle

    def _byte_range(self, name: str, rows: tuple[int, int] | None) -> tuple[str, TensorInfo, tuple[int, ...], int, int]:
        path, _, info = self._locate(name, rows)
        start, stop = self._spans[name]
        shape = info.shape
        if rows is not None:
            row_bytes = (stop - start) // max(info.shape[0], 1)
            start, stop = start + rows[0] * row_bytes, start + rows[1] * row_bytes
            shape = (rows[1] - rows[0], *info.shape[1:])
        return path, info, shape, start, stop

    def _pread(self, path: str, target: memoryview, offset: int) -> None:
        fh = self._file(path)
        done, size = 0, len(target)
        try:
            while done < size:
                if _HAS_PREADV:
                    n = os.preadv(fh.fileno(), [target[done:]], offset + done)
                else:  # Windows: no positional read in os
                    fh.seek(offset + done)
                    n = fh.readinto(target[done:])
                if n <= 0:
                    raise OSError(f"the file ends {size - done} bytes before the tensor does")
                done += n
        except OSError as e:
            raise _unreadable(path, e) from e

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        path, info, shape, start, stop = self._byte_range(name, rows)
        dtype = getattr(torch, info.dtype)  # the header parser admits only dtypes torch has
        out = torch.empty(shape, dtype=dtype)
        if stop > start:
            self._pread(path, _bytes_of(out), start)
        return out  # a fresh tensor: the caller may keep it or change it in place

    def read_into(self, name: str, rows: tuple[int, int] | None, out: torch.Tensor) -> torch.Tensor:
        """Read ``name`` (rows ``[start, stop)``) into ``out``, a contiguous CPU tensor of the stored dtype
        with exactly as many elements; returns ``out`` viewed with the tensor's (row-range) shape."""
        path, info, shape, start, stop = self._byte_range(name, rows)
        dtype = getattr(torch, info.dtype)
        if out.dtype != dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"read_into needs a contiguous CPU {dtype} buffer, got {out.dtype} on {out.device}.")
        if out.numel() * out.element_size() != stop - start:
            raise ValueError(f"Buffer of {out.numel()} elements does not fit {name!r} rows {rows} {shape}.")
        if stop > start:
            self._pread(path, _bytes_of(out), start)
        return out.view(shape)

    def prefetch(self, name: str, rows: tuple[int, int] | None = None) -> None:
        """Ask the OS to start reading ``name`` (rows) in the background (``POSIX_FADV_WILLNEED``).

        Lets a pass queue large reads for the next chunk of every model while it reduces this one (cold
        disks serve deep queues of large requests far faster than one small synchronous read at a time).
        A hint only: does nothing where unsupported, or when the tensor lives in a shard other than the
        open one (that would close the file another read is using).
        """
        if not _HAS_FADVISE:
            return
        path, _, _, start, stop = self._byte_range(name, rows)
        if self._open_path not in (None, path) or stop <= start:
            return
        try:
            os.posix_fadvise(self._file(path).fileno(), start, stop - start, os.POSIX_FADV_WILLNEED)
        except (OSError, UnreadableCheckpointError):
            pass  # a hint: the read itself reports real problems

    def pieces(self, name: str, rows: tuple[int, int] | None, unit: int) -> Iterator[tuple[int, np.ndarray]]:
        """The stored bytes of ``name`` (rows) in cache-sized pieces of whole ``unit``-byte units, for a
        decoder to read each while it is cached (:func:`~mother_core.io.staged.pieces`: ``(first unit,
        bytes)``, the bytes valid until the next piece)."""
        path, _, _, start, stop = self._byte_range(name, rows)
        try:
            yield from pieces(self._file(path), start, stop, unit)
        except ShortRead as e:
            raise _unreadable(path, e) from e

    def decode_pieces(self, name: str, rows: tuple[int, int] | None, unit: int,
                      fn: Callable[[int, np.ndarray], None], threads: int | None = None) -> None:
        """The stored bytes of ``name`` (rows) in cache-sized pieces of whole ``unit``-byte units, each
        passed to ``fn(first unit, bytes)`` as it arrives, by up to ``threads`` threads at once
        (:func:`~mother_core.io.staged.decode`; ``fn`` writes each piece's own part of its output)."""
        path, _, _, start, stop = self._byte_range(name, rows)
        try:
            decode(self._file(path), start, stop, unit, fn, threads)
        except ShortRead as e:
            raise _unreadable(path, e) from e

    def close(self) -> None:
        handle, self._handle, self._open_path = self._handle, None, None
        if handle is not None:
            handle.close()


_HAS_PREADV = hasattr(os, "preadv")
_HAS_FADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_WILLNEED")


def _bytes_of(t: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor's storage (any dtype, bf16 included)."""
    return t.reshape(-1).view(torch.uint8).numpy().data.cast("B")


def load_torch_file(path: str) -> dict[str, torch.Tensor]:
    """Load the model weights of one PyTorch pickle, never executing code from it.

    Parameters
    ----------
    path : str
        A ``.bin`` / ``.pt`` / ``.pth`` / ``.pth.tar`` / ``.ckpt`` file.

    Returns
    -------
    dict of str to Tensor
        Raw names to tensors (see :func:`mother_core.io.statedict.find_state_dict` for which dict is
        taken from a training checkpoint).

    Raises
    ------
    UnreadableCheckpointError
        Truncated, corrupt or foreign file.
    NoTensorsError
        The file loads but holds no tensors.
    """
    kind = check_torch_file(path)
    try:
        obj = load_zip(path) if kind == "zip" else load_legacy(path)
    except pickle.UnpicklingError as e:
        raise UnreadableCheckpointError(
            f"Cannot read {path}: {_first_line(e)}. The file is damaged or was crafted to misuse the loader "
            "(nothing in it was run): re-download it or remove it from the set.", path) from None
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        raise _unreadable(path, e) from None
    state = find_state_dict(obj)
    if not state:
        raise NoTensorsError(
            f"{path} holds no tensors (found {type(obj).__name__}): it is not a model checkpoint. Remove it "
            "from the set.", path,
        )
    return state


class TorchReader(_Reader):
    """Reader of PyTorch pickles (one file, or shards of which one is held at a time)."""

    def __init__(self, ref: ModelRef) -> None:
        super().__init__(ref)
        self._loaded_path: str | None = None
        self._tensors: dict[str, torch.Tensor] = {}
        for path in ref.files:
            state = self._load(path)
            self._add_file(path, {k: (tuple(t.shape), _dtype_name(t.dtype)) for k, t in state.items()})
        self._drop_tied_aliases()
        _require_floats(ref, self._infos)

    def _load(self, path: str) -> dict[str, torch.Tensor]:
        if self._loaded_path != path:
            self.close()
            self._tensors = load_torch_file(path)
            self._loaded_path = path
        return self._tensors

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        path, raw, _ = self._locate(name, rows)
        t = self._load(path)[raw].detach()
        if rows is not None:
            t = t[rows[0]:rows[1]]
        # A copy: callers may work in place, and the cached (possibly memory-mapped) tensor must not change.
        return t.clone(memory_format=torch.contiguous_format)

    def close(self) -> None:
        self._tensors = {}
        self._loaded_path = None


def open_model(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """Open a model found by :func:`~mother_core.io.discovery.discover` for reading.

    Parameters
    ----------
    ref : ModelRef
        The model.
    base : ModelReader, optional
        For a ``"peft-lora"`` adapter, a reader of its base model (the adapter is merged into it). The
        caller keeps ownership of ``base``: closing the adapter's reader does not close it.

    Returns
    -------
    ModelReader
        A reader; use it as a context manager or call ``close()``.

    Raises
    ------
    MissingBaseModelError
        A LoRA adapter without ``base``.
    UnreadableCheckpointError, NoTensorsError
        The checkpoint cannot be used.

    Examples
    --------
    >>> with open_model(ref) as reader:  # doctest: +SKIP
    ...     infos = reader.tensor_infos()
    ...     first_rows = reader.read("layers.0.mlp.up_proj.weight", rows=(0, 16))
    """
    from mother_core.io.registry import entry_for  # the registry names this module's openers

    entry = entry_for(ref)
    if entry.needs_base and base is None:
        wanted = ref.base_id or "named in its adapter_config.json"
        raise MissingBaseModelError(
            f"{ref.path} is a LoRA adapter: add its base model ({wanted}) to the paths you give, "
            "or open it with open_model(ref, base=reader_of_the_base).",
            ref.path,
        )
    return entry.opener()(ref, base)


def open_safetensors(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """A reader of ``.safetensors`` files (single or sharded): plain, or quantized and dequantized while
    read (:mod:`mother_core.io.quantized`; the scheme is found from the headers, whatever ``ref.format``
    says)."""
    reader = SafetensorsReader(ref)
    from mother_core.io.quantized import QuantizedReader, detect_scheme  # small; no third-party imports

    if detect_scheme({n: (i.shape, i.dtype) for n, i in reader.tensor_infos().items()}) is None:
        return _wrap(reader)
    return _wrap(QuantizedReader(reader))


def open_torch(ref: ModelRef, base: ModelReader | None = None) -> ModelReader:
    """A reader of PyTorch pickles (single file or shards); Flux / SD3 single files under diffusers' names,
    mixture-of-experts blocks with their experts stacked."""
    return _wrap(TorchReader(ref))


def _wrap(reader: ModelReader) -> ModelReader:
    """``reader`` under the names every format shares: Flux / SD3 single files under diffusers' names
    (:mod:`.dit_single_file_reader`), mixture-of-experts blocks one tensor per projection (:mod:`.experts`)."""
    from mother_core.io import dit_single_file_reader, experts

    return experts.wrap(dit_single_file_reader.wrap(reader))


__all__ = ["open_model", "open_safetensors", "open_torch", "load_torch_file", "normalised_names",
           "SafetensorsReader", "TorchReader"]
