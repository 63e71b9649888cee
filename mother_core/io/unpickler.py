"""A restricted unpickler for PyTorch checkpoints that ``torch.load(weights_only=True)`` refuses.

Training checkpoints often pickle objects of classes the reader cannot (and must not) import: an
``argparse.Namespace`` of hyper-parameters, a user's ``Config`` class, a whole ``nn.Module``. Loading
them with plain :mod:`pickle` would import and run code from the checkpoint. This unpickler:

* resolves only torch's own allow-list of globals (tensor rebuild functions, storage types, dtypes,
  ``OrderedDict``; the list ``torch.load(weights_only=True)`` itself trusts), plus a few inert builtins;
* replaces **every other global** by an inert placeholder class that is never imported: calling,
  instantiating or ``BUILD``-ing it only records its arguments and state;
* reconstructs tensor storages itself, both from the zip format (``data/<key>`` records) and from the
  legacy pre-zip format (storages appended after the pickle).

Nothing from the checkpoint is ever imported or called.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import torch
from torch._weights_only_unpickler import _get_allowed_globals

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class Placeholder:
    """Stands in for an object of a class we refuse to import; keeps only what the pickle gave it."""

    _module: str = "?"
    _qualname: str = "?"

    # Pickle's NEWOBJ calls ``cls.__new__`` without ``__init__``: the record is set up here.
    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.items = {}
        obj.list = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: dict[Any, Any]
    list: list[Any]

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEMS on a dict subclass
        self.items[key] = value

    def append(self, value: Any) -> None:  # APPENDS on a list subclass
        self.list.append(value)

    def extend(self, values: Any) -> None:
        self.list.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder {self._module}.{self._qualname}>"


_placeholder_classes: dict[tuple[str, str], type[Placeholder]] = {}


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    key = (module, name)
    if key not in _placeholder_classes:
        cls = type(f"Placeholder[{module}.{name}]", (Placeholder,), {"_module": module, "_qualname": name})
        _placeholder_classes[key] = cls
    return _placeholder_classes[key]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` without calling ``base.__new__`` on anything but a placeholder."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        return cls()
    return _placeholder_class("copyreg", "_reconstructor")(cls, base, state)


def _safe_rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """Tensor subclasses: rebuild the plain tensor; drop the (untrusted) subclass and its state.

    ``func`` comes from :meth:`RestrictedUnpickler.find_class`, so it is a torch rebuild function or an
    inert placeholder class.
    """
    return func(*args)


def _inert_defaultdict(factory: Any = None, *args: Any) -> dict:
    """``defaultdict(factory)`` would call the factory on a missing key; a plain dict calls nothing."""
    return dict(*args)


_EXTRA_ALLOWED: dict[str, Any] = {
    "copyreg._reconstructor": _safe_reconstructor,
    "torch._tensor._rebuild_from_type_v2": _safe_rebuild_from_type_v2,
    "collections.defaultdict": _inert_defaultdict,
    "builtins.object": object,
    "builtins.dict": dict,
    "builtins.list": list,
    "builtins.tuple": tuple,
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "builtins.range": range,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickle with torch's allow-list; every other global becomes an inert :class:`Placeholder`."""

    def __init__(self, file: BinaryIO, load_storage: Any) -> None:
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._allowed = {**_get_allowed_globals(), **_EXTRA_ALLOWED}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.tensor":  # renamed module, as torch.load maps it
            module = "torch._tensor"
        obj = self._allowed.get(f"{module}.{name}")
        if obj is not None:
            return obj
        return _placeholder_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self._load_storage(pid)


def _dtype_of(storage_type: Any) -> torch.dtype:
    if storage_type is torch.UntypedStorage:
        return torch.uint8
    dtype = getattr(storage_type, "dtype", None)
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
    return dtype


def _typed(untyped: torch.UntypedStorage, dtype: torch.dtype) -> torch.storage.TypedStorage:
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def load_zip(path: str) -> Any:
    """Load a zip-format torch checkpoint (``torch.save`` since 1.6) without trusting it."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl") and n.count("/") == 1), None)
        if pkl is None:
            raise pickle.UnpicklingError("no data.pkl record in the archive")
        prefix = pkl[: -len("data.pkl")]
        big_endian = f"{prefix}byteorder" in names and zf.read(f"{prefix}byteorder") == b"big"
        cache: dict[str, torch.storage.TypedStorage] = {}

        def load_storage(pid: Any) -> Any:
            if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
            storage_type, key, _location, _numel = pid[1:5]
            key = _ascii(key)
            dtype = _dtype_of(storage_type)
            if key not in cache:
                raw = bytearray(zf.read(f"{prefix}data/{key}"))
                untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
                if big_endian and dtype.itemsize > 1:
                    swapped = torch.frombuffer(raw, dtype=torch.uint8).view(-1, dtype.itemsize).flip(1)
                    untyped = swapped.contiguous().untyped_storage()
                cache[key] = _typed(untyped, dtype)
            return cache[key]

        with zf.open(pkl) as f:
            return RestrictedUnpickler(io.BytesIO(f.read()), load_storage).load()


def load_legacy(path: str) -> Any:
    """Load a legacy (pre-zip, ``_use_new_zipfile_serialization=False``) torch file without trusting it."""
    roots: dict[str, torch.storage.TypedStorage] = {}

    def load_storage(pid: Any) -> Any:
        typename = _ascii(pid[0])
        if typename == "module":  # source of a pickled nn.Module class: ignored, as torch does
            return pid[1]
        if typename != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, root_key, _location, numel, view_metadata = pid[1:6]
        root_key = _ascii(root_key)
        dtype = _dtype_of(storage_type)
        if root_key not in roots:
            roots[root_key] = _typed(torch.UntypedStorage(numel * dtype.itemsize), dtype)
        storage = roots[root_key]
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            start = offset * dtype.itemsize
            storage = _typed(storage._untyped_storage[start:start + view_size * dtype.itemsize], dtype)
        return storage

    with open(path, "rb") as f:
        plain = _PlainUnpickler
        if plain(f).load() != _LEGACY_MAGIC:
            raise pickle.UnpicklingError("not a torch legacy file (bad magic number)")
        plain(f).load()  # protocol version
        plain(f).load()  # sys info
        result = RestrictedUnpickler(f, load_storage).load()
        keys = plain(f).load()
        for key in keys:
            storage = roots[_ascii(key)]
            # Each storage: int64 element count, then the raw little-endian bytes.
            (count,) = struct.unpack("<q", _read_exact(f, 8))
            raw = bytearray(_read_exact(f, count * storage.dtype.itemsize))
            if raw:
                storage._untyped_storage.copy_(torch.frombuffer(raw, dtype=torch.uint8).untyped_storage())
    return result


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy header pickles (ints, a dict of sizes, a list of keys): no globals at all."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a torch file header")


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("file ends early")
    return data


def _ascii(x: Any) -> str:
    return x.decode("ascii") if isinstance(x, bytes) else str(x)
