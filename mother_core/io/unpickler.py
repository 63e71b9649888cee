"""A restricted pickle machine for PyTorch checkpoints: tensors out, nothing imported, called or changed.

Every torch pickle (``torch.save`` zip files and the legacy pre-zip format) is read by this module, not by
``torch.load`` nor by :mod:`pickle`. Why our own machine (a loop over :func:`pickletools.genops`, which
only decodes opcodes): the C unpickler runs ``BUILD``/``SETITEM`` on whatever object the stream names, so
a checkpoint could set attributes on the very torch functions it is allowed to name (changing how every
later tensor is rebuilt, process-wide), and both it and ``torch.load(weights_only=True)`` call allowed
constructors with any argument (``bytearray(10**11)``). Here:

* a **global** resolves to an inert token, never to the real object: an allow-listed *pure constructor*
  (containers, tensor rebuild, storage types, dtypes), whose arguments are checked before it runs, or, for
  anything else (a user's ``Config``, ``argparse.Namespace``, an ``nn.Module`` class), an unknown-global
  token whose "instances" are :class:`Placeholder` records of what the pickle gave them;
* ``BUILD``, ``SETITEM(S)``, ``APPEND(S)`` and ``ADDITEMS`` act only on containers and placeholders this
  very load created; aimed at a global they refuse the file (a checkpoint never needs that);
* every object costs its size against a **memory budget** proportional to the pickle's own size, and every
  tensor's element count and strides are checked against its storage (no stride-0 or overlapping view
  claiming more elements than the storage holds); storages are checked against the zip member or the
  file's remaining bytes **before** anything is allocated;
* zip members stored uncompressed (what ``torch.save`` writes) are mapped, not copied.

Refusals raise :class:`pickle.UnpicklingError` with a message fit for a user.
"""

from __future__ import annotations

import _compat_pickle
import io
import mmap
import os
import pickle
import pickletools
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import torch

from mother_core.io.safetensors_header import MAX_TENSORS

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Objects a pickle may build: this many bytes per byte of pickle, plus a fixed allowance.
BUDGET_PER_PICKLE_BYTE = 64
BUDGET_FIXED = 64 * 1024 * 1024
#: All tensors of a file together may claim at most this many times the file's bytes (tied weights share
#: storage; a file of a million views of one storage would otherwise cost a million reads of it).
MAX_VIEW_FACTOR = 4
MAX_RANK = 16
#: Largest data.pkl we read (a state dict's pickle holds names and shapes: a few MB for the largest LLMs).
MAX_PICKLE_BYTES = 512 * 1024 * 1024
#: Pickle operations a load may run: an allowance, plus this many for each tensor it has rebuilt. The machine is
#: pure Python (a few microseconds an operation), so the operations, not the bytes, are what a file costs; a
#: ``torch.save`` of a state dict runs ~40 operations a tensor, of a whole ``nn.Module`` ~160, of a checkpoint
#: with its AdamW state ~130 (GPT-2, measured); the allowance holds the non-tensor rest of a real checkpoint
#: (hyper-parameters, a vocabulary of 100,000 entries) many times over. Junk that rebuilds no tensors is refused
#: after the allowance (seconds) instead of running to the byte limit (minutes).
OPS_ALLOWANCE = 1_000_000
OPS_PER_TENSOR = 400


class Placeholder:
    """Stands in for an object of a class we refuse to import; keeps only what the pickle gave it.

    Attributes
    ----------
    module, qualname : str
        The class the pickle named.
    args, kwargs : tuple, dict
        Constructor arguments (``REDUCE`` / ``NEWOBJ``).
    state : Any
        What ``BUILD`` gave it (an ``nn.Module``'s ``__dict__`` holds ``_parameters``, ...).
    items, list : dict, list
        What ``SETITEMS`` / ``APPENDS`` gave it (dict or list subclasses).
    """

    __slots__ = ("args", "items", "kwargs", "list", "module", "qualname", "state")

    def __init__(self, module: str, qualname: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None):
        self.module, self.qualname = module, qualname
        self.args, self.kwargs = args, kwargs or {}
        self.state: Any = None
        self.items: dict[Any, Any] = {}
        self.list: list[Any] = []

    def __repr__(self) -> str:
        return f"<placeholder {self.module}.{self.qualname}>"


@dataclass(frozen=True, eq=False)
class _Unknown:
    """A global we do not resolve: calling it makes a :class:`Placeholder`."""

    module: str
    name: str


@dataclass(frozen=True, eq=False)
class _Allowed:
    """An allow-listed global: ``fn`` runs only with checked arguments (it checks them itself)."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True, eq=False)
class _StorageType:
    name: str
    dtype: torch.dtype


class _Refused(pickle.UnpicklingError):
    pass


def _refuse(why: str) -> _Refused:
    return _Refused(why)


# --- allow-listed pure constructors (arguments checked) ---------------------------------------------------

def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _container(kind: type) -> Callable[..., Any]:
    def make(*args: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset, dict)):
            try:
                return kind(args[0])
            except (TypeError, ValueError) as e:
                raise _refuse(f"{kind.__name__}() of {type(args[0]).__name__} failed ({e})") from None
        raise _refuse(f"{kind.__name__}() called with {len(args)} argument(s) of types "
                      f"{[type(a).__name__ for a in args]}")
    return make


def _bytearray(*args: Any) -> bytearray:
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return bytearray(args[0], "latin-1")
    if not args:
        return bytearray()
    raise _refuse("bytearray() called with something other than bytes (a size would allocate it)")


def _codecs_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    if isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8") and not rest:
        return text.encode(encoding)
    raise _refuse("_codecs.encode() called with unexpected arguments")


def _number(kind: type) -> Callable[..., Any]:
    def make(*args: Any) -> Any:
        if len(args) <= 2 and all(isinstance(a, (int, float)) for a in args):
            return kind(*args)
        raise _refuse(f"{kind.__name__}() called with unexpected arguments")
    return make


def _slice(*args: Any) -> slice:
    if len(args) <= 3 and all(a is None or _is_int(a) for a in args):
        return slice(*args)
    raise _refuse("slice() called with unexpected arguments")


def _size(*args: Any) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (list, tuple)) and all(_is_int(d) for d in args[0]):
        return tuple(args[0])
    if not args:
        return ()
    raise _refuse("torch.Size() called with something other than a list of integers")


def _device(*args: Any) -> str:
    if args and isinstance(args[0], str) and len(args[0]) < 64:
        return args[0]
    return "cpu"


def _layout(name: Any) -> str:
    return str(name)[:64]


def _object(*args: Any) -> Any:
    return _OBJECT


_OBJECT = object()


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects): only ever a placeholder of an unknown class."""
    if isinstance(cls, _Unknown):
        return Placeholder(cls.module, cls.name)
    raise _refuse("copyreg._reconstructor aimed at an allowed global")


def _parameter(data: Any = None, *rest: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return data
    raise _refuse("a Parameter built from something other than a tensor")


def _from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """Tensor subclasses: rebuild the plain tensor; the (untrusted) subclass and its state are dropped."""
    if not isinstance(args, tuple):
        raise _refuse("_rebuild_from_type_v2 with non-tuple arguments")
    return _Machine.current().call(func, args)


def _storage_elements(storage: Any) -> torch.storage.TypedStorage:
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _refuse(f"a tensor rebuilt from {type(storage).__name__}, not from a storage of this file")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` with every number checked against the storage first."""
    st = _storage_elements(storage)
    if isinstance(size, list):
        size = tuple(size)
    if isinstance(stride, list):
        stride = tuple(stride)
    if not (_is_int(offset) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) <= MAX_RANK and all(_is_int(d) and d >= 0 for d in size)
            and all(_is_int(s) and s >= 0 for s in stride) and offset >= 0):
        raise _refuse("a tensor with an invalid offset, shape or stride")
    numel = 1
    for d in size:
        numel *= d
    available = st._untyped_storage.nbytes() // st.dtype.itemsize
    if numel:
        extent = offset + sum((d - 1) * s for d, s in zip(size, stride, strict=True)) + 1
        if extent > available:
            raise _refuse(f"a tensor of shape {size} with strides {stride} reaches element {extent} of a "
                          f"storage of {available}")
        if numel > available:
            raise _refuse(f"a tensor of shape {size} claims {numel} elements from a storage of {available} "
                          "(stride-0 or overlapping view)")
    machine = _Machine.current()
    machine.charge_view(numel * st.dtype.itemsize)
    machine.tensors += 1
    machine.ops_left += OPS_PER_TENSOR
    if machine.tensors > MAX_TENSORS:  # stop here: rebuilding the rest costs seconds and is refused after
        raise _refuse(f"it holds more than {MAX_TENSORS:,} tensors, more than any real checkpoint (a tensor flood?)")
    t = torch.empty((0,), dtype=st.dtype)
    if numel:
        t.set_(st._untyped_storage, offset, size, stride)
    else:
        t = torch.empty(size, dtype=st.dtype)
    return t


def _rebuild_tensor_v1(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor(storage, offset, size, stride)


_STORAGE_NAMES = {
    "Double": torch.float64, "Float": torch.float32, "Half": torch.float16, "BFloat16": torch.bfloat16,
    "Long": torch.int64, "Int": torch.int32, "Short": torch.int16, "Char": torch.int8, "Byte": torch.uint8,
    "Bool": torch.bool, "ComplexFloat": torch.complex64, "ComplexDouble": torch.complex128,
}


def _globals() -> dict[str, Any]:
    table: dict[str, Any] = {}
    constructors: dict[str, Callable[..., Any]] = {
        "collections.OrderedDict": _container(OrderedDict), "builtins.dict": _container(dict),
        "builtins.list": _container(list), "builtins.tuple": _container(tuple), "builtins.set": _container(set),
        "builtins.frozenset": _container(frozenset), "builtins.bytearray": _bytearray,
        "_codecs.encode": _codecs_encode, "builtins.complex": _number(complex), "builtins.float": _number(float),
        "builtins.slice": _slice, "builtins.object": _object, "copyreg._reconstructor": _reconstructor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor, "torch._utils._rebuild_tensor": _rebuild_tensor_v1,
        "torch._utils._rebuild_parameter": _parameter,
        "torch._utils._rebuild_parameter_with_state": _parameter,
        "torch.nn.parameter.Parameter": _parameter, "torch._tensor._rebuild_from_type_v2": _from_type_v2,
        "torch.Size": _size, "torch.device": _device, "torch.serialization._get_layout": _layout,
    }
    for name, fn in constructors.items():
        table[name] = _Allowed(name, fn)
    for short, dtype in _STORAGE_NAMES.items():
        for prefix in ("torch.", "torch.cuda."):
            table[f"{prefix}{short}Storage"] = _StorageType(f"{prefix}{short}Storage", dtype)
    table["torch.UntypedStorage"] = _StorageType("torch.UntypedStorage", torch.uint8)
    table["torch.storage.UntypedStorage"] = table["torch.UntypedStorage"]
    for attr in dir(torch):  # dtypes are immutable C objects: handing them out changes nothing
        value = getattr(torch, attr, None)
        if isinstance(value, torch.dtype):
            table[f"torch.{attr}"] = value
    return table


_GLOBALS = _globals()


# --- the machine ----------------------------------------------------------------------------------------

class _Machine:
    """One load: stack, memo, budget. Not thread-shared (each load makes its own)."""

    _local = threading.local()  # the machine running in this thread (loads may run in several threads)

    def __init__(self, persistent_load: Callable[[Any], Any], pickle_bytes: int, view_budget: int) -> None:
        self.persistent_load = persistent_load
        self.budget = BUDGET_PER_PICKLE_BYTE * pickle_bytes + BUDGET_FIXED
        self.view_budget = view_budget
        self.tensors = 0  # tensors rebuilt so far
        self.ops_left = OPS_ALLOWANCE

    @classmethod
    def current(cls) -> _Machine:
        return cls._local.stack[-1]

    def charge(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise _refuse("it builds far more objects than its size explains (a memory bomb?)")

    def charge_view(self, nbytes: int) -> None:
        self.view_budget -= nbytes
        if self.view_budget < 0:
            raise _refuse("its tensors claim several times more bytes than the file holds (overlapping views?)")

    def call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        self.charge(16 * (len(args) + 1))
        if isinstance(func, _Unknown):
            return Placeholder(func.module, func.name, args, kwargs)
        if isinstance(func, _Allowed):
            if kwargs:
                raise _refuse(f"{func.name} called with keyword arguments")
            return func.fn(*args)
        if isinstance(func, _StorageType):
            raise _refuse(f"it constructs a storage ({func.name}) directly")
        raise _refuse(f"it calls a {type(func).__name__}, which is not a constructor")

    def run(self, file: Any) -> Any:
        stack = _Machine._local.__dict__.setdefault("stack", [])
        stack.append(self)
        try:
            return self._run(file)
        finally:
            stack.pop()

    def _run(self, file: Any) -> Any:
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}

        def pop_mark() -> list[Any]:
            if not marks:
                raise _refuse("a MARK is missing")
            at = marks.pop()
            items = stack[at:]
            del stack[at:]
            return items

        def pop() -> Any:
            if not stack or (marks and len(stack) <= marks[-1]):
                raise _refuse("the pickle stack underflows")
            return stack.pop()

        for op, arg, _pos in _ops(file):
            name = op.name
            self.charge(8)
            self.ops_left -= 1
            if self.ops_left < 0:
                raise _refuse(f"it runs far more pickle operations than its {self.tensors:,} tensors explain "
                              "(junk? A real checkpoint holding a log or a dataset beside its weights: save the "
                              "state dict alone, e.g. as safetensors)")
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1:
                    raise _refuse("the pickle ends with a malformed stack")
                return stack[0]
            if name == "MARK":
                marks.append(len(stack))
            elif name == "POP":
                pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1] if stack else _underflow())
            elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
                stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"):
                stack.append(arg)  # genops decoded it (protocol 0's INT 01/00 as a bool)
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                          "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                self.charge(len(arg))
                stack.append(bytearray(arg) if name == "BYTEARRAY8" else arg)
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    _underflow()
                tup = tuple(stack[-n:])
                del stack[-n:]
                stack.append(tup)
            elif name in _FROM_MARK:  # a container of everything above the mark
                per_item, build = _FROM_MARK[name]
                items = pop_mark()
                self.charge(per_item * len(items))
                stack.append(build(items))
            elif name in ("APPEND", "APPENDS"):
                items = [pop()] if name == "APPEND" else pop_mark()
                self.charge(8 * len(items))
                target = stack[-1] if stack else _underflow()
                if type(target) is list:
                    target.extend(items)
                elif isinstance(target, Placeholder):
                    target.list.extend(items)
                else:
                    raise _refuse(f"it appends to {_what(target)}")
            elif name in ("SETITEM", "SETITEMS"):
                if name == "SETITEM":
                    value, key = pop(), pop()
                    items = [key, value]
                else:
                    items = pop_mark()
                self.charge(16 * len(items))
                target = stack[-1] if stack else _underflow()
                if type(target) in (dict, OrderedDict):
                    target.update(_dict_from(items))
                elif isinstance(target, Placeholder):
                    target.items.update(_dict_from(items))
                else:
                    raise _refuse(f"it sets items on {_what(target)}")
            elif name == "ADDITEMS":
                items = pop_mark()
                self.charge(16 * len(items))
                target = stack[-1] if stack else _underflow()
                if type(target) is not set:
                    raise _refuse(f"it adds items to {_what(target)}")
                target.update(_hashable(i) for i in items)
            elif name in ("GLOBAL", "INST"):
                module, _, qual = str(arg).partition(" ")
                glob = _resolve(module, qual)
                if name == "GLOBAL":
                    stack.append(glob)
                else:
                    stack.append(self.call(glob, tuple(pop_mark())))
            elif name == "STACK_GLOBAL":
                qual, module = pop(), pop()
                if not (isinstance(module, str) and isinstance(qual, str)):
                    raise _refuse("STACK_GLOBAL with non-string names")
                stack.append(_resolve(module, qual))
            elif name == "REDUCE":
                args = pop()
                func = pop()
                if not isinstance(args, tuple):
                    raise _refuse("REDUCE with non-tuple arguments")
                stack.append(self.call(func, args))
            elif name == "NEWOBJ":
                args = pop()
                cls = pop()
                stack.append(self.call(cls, args if isinstance(args, tuple) else (args,)))
            elif name == "NEWOBJ_EX":
                kwargs, args, cls = pop(), pop(), pop()
                if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                    raise _refuse("NEWOBJ_EX with non-string keywords")
                stack.append(self.call(cls, tuple(args), dict(kwargs)))
            elif name == "OBJ":
                items = pop_mark()
                if not items:
                    raise _refuse("OBJ without a class")
                stack.append(self.call(items[0], tuple(items[1:])))
            elif name == "BUILD":
                state = pop()
                target = stack[-1] if stack else _underflow()
                _build(target, state)
            elif name in ("PERSID", "BINPERSID"):
                pid = arg if name == "PERSID" else pop()
                stack.append(self.persistent_load(pid))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not stack:
                    _underflow()
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                if not stack:
                    _underflow()
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                key = int(arg)
                if key not in memo:
                    raise _refuse(f"memo entry {key} is read before it is written")
                stack.append(memo[key])
            else:  # EXT1/2/4 (extension registry), out-of-band buffers: never written by torch.save
                raise _refuse(f"it uses the pickle opcode {name}, which a checkpoint never needs")
        raise _refuse("the pickle ends without STOP (truncated)")


def _underflow() -> Any:
    raise _refuse("the pickle stack underflows")


def _what(obj: Any) -> str:
    if isinstance(obj, (_Allowed, _StorageType)):
        return f"the global {obj.name} (an attempt to change it)"
    if isinstance(obj, _Unknown):
        return f"the global {obj.module}.{obj.name} (an attempt to change it)"
    if isinstance(obj, torch.dtype):
        return f"the global {obj} (an attempt to change it)"
    return f"a {type(obj).__name__}"


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise _refuse(f"a {type(key).__name__} used as a dict key or set member") from None
    return key


def _dict_from(items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise _refuse("a dict with an odd number of keys and values")
    return {_hashable(items[i]): items[i + 1] for i in range(0, len(items), 2)}


def _frozenset_from(items: list[Any]) -> frozenset[Any]:
    return frozenset(_hashable(i) for i in items)


def _list_from(items: list[Any]) -> list[Any]:
    return items  # pop_mark already made a fresh list


#: Opcodes that build a container from the items above the last mark: budget charged per item, builder.
_FROM_MARK: dict[str, tuple[int, Callable[[list[Any]], Any]]] = {
    "TUPLE": (8, tuple), "LIST": (8, _list_from), "DICT": (16, _dict_from), "FROZENSET": (16, _frozenset_from),
}


def _build(target: Any, state: Any) -> None:
    """``BUILD``: only a placeholder made by this load takes state; containers and tensors (a state dict's
    ``_metadata``, a Parameter's hooks) ignore it; anything resolved from a global refuses the file."""
    if isinstance(target, Placeholder):
        target.state = state
    elif type(target) in (dict, OrderedDict) or isinstance(target, torch.Tensor):
        return
    else:
        raise _refuse(f"it tries to set the state of {_what(target)}")


def _resolve(module: str, qual: str) -> Any:
    if module == "torch.tensor":  # renamed module, as torch.load maps it
        module = "torch._tensor"
    # Protocol 2 pickles name Python 2 modules (``__builtin__.set``): map them as pickle's fix_imports does.
    if (module, qual) in _compat_pickle.NAME_MAPPING:
        module, qual = _compat_pickle.NAME_MAPPING[(module, qual)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    found = _GLOBALS.get(f"{module}.{qual}")
    return found if found is not None else _Unknown(module[:200], qual[:200])


def _ops(file: Any) -> Iterator[tuple[Any, Any, Any]]:
    """Opcodes and their decoded arguments; decoding errors (truncation, bad lengths) become refusals."""
    it = pickletools.genops(file)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except (ValueError, EOFError, struct.error, UnicodeDecodeError) as e:
            raise _refuse(f"the pickle is malformed ({str(e)[:120]})") from None
        yield item


def _load(file: Any, persistent_load: Callable[[Any], Any], pickle_bytes: int, view_budget: int) -> Any:
    try:
        return _Machine(persistent_load, pickle_bytes, view_budget).run(file)
    except RecursionError:
        raise _refuse("it nests objects too deeply") from None
    except (MemoryError, OverflowError) as e:
        raise _refuse(f"it claims an impossible size ({type(e).__name__})") from None


# --- storages --------------------------------------------------------------------------------------------

def _typed(untyped: torch.UntypedStorage, dtype: torch.dtype) -> torch.storage.TypedStorage:
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _ascii(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("ascii", "replace")
    if isinstance(x, str):
        return x
    raise _refuse(f"a storage key of type {type(x).__name__}")


def _storage_type(x: Any) -> torch.dtype:
    if isinstance(x, _StorageType):
        return x.dtype
    raise _refuse(f"a storage of unknown type {_what(x)}")


def _member_data_offset(mm: mmap.mmap, info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes start: after its local header (30 bytes + name + extra field)."""
    at = info.header_offset
    local = mm[at:at + 30]
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise _refuse(f"the zip member {info.filename[:80]!r} has a damaged local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return at + 30 + name_len + extra_len


def load_zip(path: str) -> Any:
    """Load a zip-format torch checkpoint (``torch.save`` since 1.6) without trusting it.

    Uncompressed members (what ``torch.save`` writes) are mapped copy-on-write: tensors share the file's
    pages and nothing a caller does to them reaches the file.
    """
    size = os.path.getsize(path)
    if not size:
        raise _refuse("the file is empty")
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)  # tensors keep it alive; closed with them
        infos = {i.filename: i for i in zf.infolist()}
        pkl = next((n for n in infos if n.endswith("data.pkl") and n.count("/") == 1), None)
        if pkl is None:
            raise _refuse("no data.pkl record in the archive")
        prefix = pkl[: -len("data.pkl")]
        big_endian = f"{prefix}byteorder" in infos and zf.read(f"{prefix}byteorder") == b"big"
        cache: dict[str, torch.storage.TypedStorage] = {}

        def load_storage(pid: Any) -> Any:
            if not isinstance(pid, tuple) or len(pid) != 5 or _ascii(pid[0]) != "storage":
                raise _refuse(f"an unexpected persistent id {str(pid)[:80]}")
            dtype = _storage_type(pid[1])
            key = _ascii(pid[2])
            if key in cache:
                return cache[key]
            info = infos.get(f"{prefix}data/{key}")
            if info is None:
                raise _refuse(f"storage {key[:40]!r} is not in the archive")
            numel = pid[4]
            if not _is_int(numel) or numel < 0 or numel * dtype.itemsize > info.file_size:
                raise _refuse(f"storage {key[:40]!r} claims {numel} elements but holds {info.file_size} bytes")
            nbytes = numel * dtype.itemsize
            if info.compress_type == zipfile.ZIP_STORED and nbytes:
                start = _member_data_offset(mm, info)
                if start + nbytes > size:
                    raise _refuse(f"storage {key[:40]!r} runs past the end of the file")
                raw = torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=start)
            elif nbytes:
                raw = torch.frombuffer(bytearray(zf.read(info)[:nbytes]), dtype=torch.uint8)
            else:
                raw = torch.empty(0, dtype=torch.uint8)
            if big_endian and dtype.itemsize > 1:
                raw = raw.view(-1, dtype.itemsize).flip(1).contiguous().view(-1)
            cache[key] = _typed(raw.untyped_storage(), dtype)
            return cache[key]

        info = infos[pkl]
        if info.file_size > MAX_PICKLE_BYTES:
            raise _refuse(f"its data.pkl is {info.file_size} bytes (the limit is {MAX_PICKLE_BYTES})")
        data = zf.read(info)
        return _load(io.BytesIO(data), load_storage, len(data), MAX_VIEW_FACTOR * size + BUDGET_FIXED)


def load_legacy(path: str) -> Any:
    """Load a legacy (pre-zip, ``_use_new_zipfile_serialization=False``) torch file without trusting it.

    Each storage's size is checked against the bytes left in the file before it is allocated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        if not size:
            raise _refuse("the file is empty")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    roots: dict[str, torch.storage.TypedStorage] = {}
    allocated = 0

    def load_storage(pid: Any) -> Any:
        nonlocal allocated
        if not isinstance(pid, tuple) or not pid:
            raise _refuse(f"an unexpected persistent id {str(pid)[:80]}")
        typename = _ascii(pid[0])
        if typename == "module":  # source of a pickled nn.Module class: ignored, as torch does
            return None
        if typename != "storage" or len(pid) != 6:
            raise _refuse(f"an unexpected persistent id {str(pid)[:80]}")
        dtype = _storage_type(pid[1])
        root_key, numel, view_metadata = _ascii(pid[2]), pid[4], pid[5]
        if root_key not in roots:
            if not _is_int(numel) or numel < 0:
                raise _refuse(f"storage {root_key[:40]!r} has an invalid size")
            allocated += numel * dtype.itemsize
            if allocated > size:
                raise _refuse(f"its storages claim {allocated} bytes but the file holds {size}")
            roots[root_key] = _typed(torch.UntypedStorage(numel * dtype.itemsize), dtype)
        storage = roots[root_key]
        if view_metadata is not None:
            if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3
                    and _is_int(view_metadata[1]) and _is_int(view_metadata[2])):
                raise _refuse("a storage view with invalid metadata")
            _view_key, offset, view_size = view_metadata
            if offset < 0 or view_size < 0 or (offset + view_size) * dtype.itemsize > storage._untyped_storage.nbytes():
                raise _refuse("a storage view outside its storage")
            start = offset * dtype.itemsize
            storage = _typed(storage._untyped_storage[start:start + view_size * dtype.itemsize], dtype)
        return storage

    with mm:
        if _load(mm, _no_storage, 64, 0) != _LEGACY_MAGIC:
            raise _refuse("not a torch legacy file (bad magic number)")
        _load(mm, _no_storage, 64, 0)  # protocol version
        _load(mm, _no_storage, 4096, 0)  # sys info
        start = mm.tell()
        result = _load(mm, load_storage, size - start, MAX_VIEW_FACTOR * size + BUDGET_FIXED)
        keys = _load(mm, _no_storage, size - mm.tell(), 0)
        if not isinstance(keys, list):
            raise _refuse("its storage key list is malformed")
        for key in keys:
            storage = roots.get(_ascii(key))
            if storage is None:
                raise _refuse(f"storage {str(key)[:40]!r} is listed but never used")
            # Each storage: int64 element count, then the raw little-endian bytes.
            (count,) = struct.unpack("<q", _read_exact(mm, 8))
            nbytes = count * storage.dtype.itemsize
            if count < 0 or nbytes != storage._untyped_storage.nbytes():
                raise _refuse(f"storage {str(key)[:40]!r} holds {count} elements, not as many as its header says")
            raw = _read_exact(mm, nbytes)
            if raw:
                storage._untyped_storage.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage())
    return result


def _no_storage(pid: Any) -> Any:
    raise _refuse("a persistent id in a torch file header")


def _read_exact(f: BinaryIO | mmap.mmap, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _refuse("the file ends early (truncated)")
    return data


__all__ = ["Placeholder", "load_legacy", "load_zip"]
