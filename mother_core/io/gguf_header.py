"""The header of a GGUF file (metadata and tensor directory), read without torch.

Split from :mod:`mother_core.io.gguf_reader` so that discovery (``mother scan``) validates GGUF files
with the ``gguf`` package and numpy only: importing the reader imports torch (seconds on a busy
machine), which a scan that reads no tensor does not need.

The header is walked here by byte arithmetic (:func:`parse_header`): the few numbers and strings the
engine uses are read, the tokenizer's arrays (hundreds of thousands of strings, scores, types) stepped over by
their counts and length prefixes, the tensor directory read whole. ``gguf.GGUFReader`` built a numpy view
per array entry: 8-9 CPU s for a real 128k-262k-token tokenizer, paid by every scan and every run, against
milliseconds here. The package stays the source of the type tables (value types, quantization types and
their block sizes) and of dequantization; the walk makes its checks with its messages (bad magic, an
unknown version, duplicate keys or tensors, an unknown value or tensor type, ``general.alignment``) and
those a corrupt download or a crafted file needs besides (counts the file cannot hold, lengths and values
running past its end, more than :data:`MAX_METADATA_ENTRIES` values). :func:`read_header` adds the checks of
the tensors (every one inside the file, sizes consistent with its type's block size), and maps names to
those of the transformers checkpoint the file was converted from (:mod:`mother_core.io.gguf_names`).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from mother_core.errors import UnreadableCheckpointError

#: Architectures whose q/k rows llama.cpp's converter permutes: ``LlamaModel`` and the classes deriving from it
#: that keep its ``modify_tensors`` with ``undo_permute`` left on (Granite, Arcee, SmolLM3, Llama-embed; not
#: Llama 4, Apertus or Mistral's own format, which switch it off, nor AFMoE, which writes its tensors itself),
#: and those calling ``LlamaModel.permute`` themselves (Deci, MiniCPM).
PERMUTED_QK: frozenset[str] = frozenset({"llama", "granite", "granitemoe", "deci", "arcee", "smollm3",
                                         "llama-embed", "minicpm"})
_PERMUTED_SUFFIXES = (".q_proj.weight", ".q_proj.bias", ".k_proj.weight", ".k_proj.bias")
#: GPT-2 weights the converter transposes (HF ``Conv1D`` stores (in, out)).
_TRANSPOSED_SUFFIXES = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")
_TRANSPOSED_ARCHS = frozenset({"gpt2"})
#: Architectures whose converter writes every ``*norm.weight`` as 1 + w (``GemmaModel``, ``Gemma2Model``,
#: ``Gemma3Model`` in ``convert_hf_to_gguf.py``: HF's Gemma RMSNorm scales by (1 + w), llama.cpp's by w), and
#: ``NemotronModel`` likewise ("Adding +1 to LayerNorm's weights here to implement layernorm1p": HF's
#: ``NemotronLayerNorm1P`` scales by (1 + w); its biases are written as they are; transformers' own GGUF loader
#: subtracts the one back for ``nemotron`` as for ``gemma2`` / ``gemma3``).
NORM_PLUS_ONE: frozenset[str] = frozenset({"gemma", "gemma2", "gemma3", "nemotron"})
#: Architectures whose fused ``query_key_value`` rows the converter regroups from per-head (q, k, v) to all
#: q, all k, all v (``GPTNeoXModel`` and ``BloomModel``: "Map bloom-style qkv_linear to gpt-style").
REGROUPED_QKV: frozenset[str] = frozenset({"gptneox", "bloom"})
#: Architectures whose fused ``query_key_value`` holds one group per kv head (the group's query heads, then its
#: key, then its value: Falcon-40B / 180B's ``new_decoder_architecture``, Falcon-7B's multi-query with one
#: group), regrouped by the converter to all q, all k, all v (``FalconModel.modify_tensors``).
GROUPED_QKV: frozenset[str] = frozenset({"falcon"})


#: Most entries the metadata's arrays may hold over a whole file. The ``gguf`` package parsed every array entry
#: as a Python object (10-16 us each on a busy 2-core machine): a crafted array of 20 million bytes took over
#: five minutes to open. The header is now walked here (:func:`parse_header`: arrays of numbers stepped over
#: at once, strings at about 0.1 us each), but the bound stays: the largest real tokenizers hold under a
#: million (Gemma 3: 262,144 tokens, scores and types; Qwen2.5: 151,936 tokens and types, 151,387 merges), so a
#: header past it is not a model's.
MAX_METADATA_ENTRIES = 2_000_000
#: Fewest bytes one metadata entry (a key of no characters, its type, a one-byte value) and one tensor's entry
#: of the directory (no name, no dimension, its type and offset) take: a header's counts must fit the file.
_MIN_KV_BYTES, _MIN_TENSOR_BYTES = 8 + 4 + 1, 8 + 4 + 4 + 8
#: The field names ``gguf.GGUFReader`` gives the header's own counts: a metadata key spelling one of them is a
#: duplicate there, and so here.
_RESERVED_KEYS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array, stepped over without reading its values (a tokenizer's strings and scores)."""

    item_type: int  # gguf.GGUFValueType value of its entries
    count: int


@dataclass(frozen=True)
class RawTensor:
    """One entry of a GGUF file's tensor directory, as ``gguf.GGUFReader`` reads it."""

    name: str
    dims: tuple[int, ...]  # innermost first, as stored (the package's ``ReaderTensor.shape``)
    qtype: int  # gguf.GGMLQuantizationType value
    offset: int  # absolute byte offset of its data (the package's ``data_offset``)


@dataclass(frozen=True)
class RawHeader:
    """A GGUF file's header as stored: its metadata (numbers and strings; arrays stepped over) and its tensor
    directory. :func:`read_header` derives what the engine uses from it."""

    version: int
    #: key -> int, float, bool or str (None: a string that is not UTF-8, which the package cannot give either), or
    #: a :class:`GGUFArray`; in the file's order
    fields: dict[str, object]
    tensors: tuple[RawTensor, ...]
    alignment: int
    data_offset: int  # where the tensor data starts (after the directory, padded to the alignment)
    entries: int  # metadata values, arrays' entries included (the count :data:`MAX_METADATA_ENTRIES` bounds)
    big_endian: bool = False  # written for a big-endian machine (s390x): header and tensor data swapped


class TooManyEntries(ValueError):
    """A header whose metadata holds more values than the bound it is walked with."""

    def __init__(self, entries: int) -> None:
        super().__init__(f"at least {entries:,} metadata values")
        self.entries = entries


class UnknownTensorType(ValueError):
    """A tensor stored in a GGUF type the installed ``gguf`` package does not know (newer than it): not a
    broken file, so its message says to update the package rather than to re-download."""

    def __init__(self, name: str, qtype: int) -> None:
        super().__init__(f"tensor {name!r} has type {qtype}")
        self.qtype = qtype


def metadata_entries(path: str, stop: int = MAX_METADATA_ENTRIES) -> int:
    """The values of a GGUF file's metadata (array entries, nested ones included), counted from its bytes
    without parsing them, or the first count past ``stop``. Arrays of fixed-size values are stepped over at
    once; strings one by one. A header that ends early or holds an unknown type ends the count there.
    """
    try:
        with _walk(path, stop) as walk:
            with contextlib.suppress(ValueError):  # TooManyEntries included: the count so far is the answer
                walk.metadata()
            return walk.total
    except ValueError:  # not a GGUF file, or too short to be one: nothing to count
        return 0


def parse_header(path: str, stop: int = MAX_METADATA_ENTRIES) -> RawHeader:
    """Walk a GGUF file's header by byte arithmetic: the metadata's numbers and strings, its arrays stepped over
    (numbers by count x size, strings by their length prefixes), and the tensor directory.

    Checks what ``gguf.GGUFReader`` checks, with its messages (magic, version, duplicate keys and tensors, value
    types, ``general.alignment`` a power of two) and what a corrupt or crafted file needs besides (counts the
    file cannot hold, a length or value running past its end, more than ``stop`` metadata values), without
    building a Python object per array entry: the package takes seconds for a real tokenizer (8.98 CPU s for
    a Gemma-3-sized one at load 10), this walk milliseconds. The type tables are the package's.

    Raises
    ------
    TooManyEntries
        More than ``stop`` metadata values.
    ValueError
        Any other fault of the header (the message says which).
    """
    with _walk(path, stop) as walk:
        return walk.header()


@contextlib.contextmanager
def _walk(path: str, stop: int) -> Iterator[_Walk]:
    """The walk of ``path``'s header over a read-only memory map, unmapped on leaving (the map holds its own
    handle of the file, which is closed at once)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise ValueError(f"the file is {size} bytes, shorter than a GGUF header")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with buf:
        yield _Walk(buf, stop)


class _Walk:
    """One pass over a header's bytes (a read-only memory map), ``offs`` the position reached."""

    def __init__(self, buf: mmap.mmap, stop: int) -> None:
        from gguf import GGUF_MAGIC, GGUFReader, GGUFValueType

        self.buf, self.stop, self.end = buf, stop, len(buf)
        if struct.unpack_from("<I", buf, 0)[0] != GGUF_MAGIC:
            raise ValueError("GGUF magic invalid")
        # The package reads files of the other byte order too: a version whose low half is 0 is swapped.
        self.order = ">" if struct.unpack_from("<I", buf, 4)[0] & 0xFFFF == 0 else "<"
        # The numpy type (so its size) of each scalar value type, as the package's own parser reads them.
        self.scalars = {int(t): np.dtype(self.order + np.dtype(np_type).str[1:])
                        for t, np_type in GGUFReader.gguf_scalar_to_np.items()}
        self.string, self.array = int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)
        self.u32, self.u64 = struct.Struct(self.order + "I"), struct.Struct(self.order + "Q")
        self.version = int(self.u32.unpack_from(buf, 4)[0])
        self.offs, self.total = 8, 0
        self.n_tensors = 0  # the directory's count, once metadata() has read it
        self.types: dict[str, int] = {}  # metadata key -> its value type

    def _take(self, n: int, what: str) -> int:
        """Step over ``n`` bytes of ``what``; the position they start at."""
        at = self.offs
        if n < 0 or at + n > self.end:
            raise ValueError(f"{what} at byte {at}: {n:,} bytes claimed, past the end of the {self.end}-byte file")
        self.offs = at + n
        return at

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.stop:
            raise TooManyEntries(self.total)

    def _uint(self, s: struct.Struct, what: str) -> int:
        return int(s.unpack_from(self.buf, self._take(s.size, what))[0])

    def _bytes(self, what: str) -> bytes:
        """A string's bytes (its u64 length, then them)."""
        n = self._uint(self.u64, f"the length of {what}")
        at = self._take(n, what)
        return self.buf[at:at + n]

    def metadata(self) -> dict[str, object]:
        """Every metadata entry, the position then at the tensor directory."""
        n_tensors = self._uint(self.u64, "the tensor count")
        n_kv = self._uint(self.u64, "the metadata count")
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > self.end - self.offs:
            raise ValueError(f"it claims {n_kv:,} metadata entries and {n_tensors:,} tensors, more than its "
                             f"{self.end:,} bytes can hold")
        self.n_tensors = n_tensors
        fields: dict[str, object] = {}
        for _ in range(n_kv):
            at = self.offs
            key = str(self._bytes("a metadata key"), encoding="utf-8")
            if key in fields or key in _RESERVED_KEYS:
                raise ValueError(f"Duplicate {key} already in list at offset {at}")
            vtype = self._uint(self.u32, f"the type of {key!r}")
            self.types[key] = vtype
            fields[key] = self._value(key, vtype)
        return fields

    def _value(self, key: str, vtype: int) -> object:
        """A top-level value: a number or a string read, an array stepped over."""
        from gguf import GGUFValueType

        GGUFValueType(vtype)  # an unknown type: the package's ValueError
        self._count(vtype != self.array)  # an array counts its entries
        scalar = self.scalars.get(vtype)
        if scalar is not None:
            at = self._take(scalar.itemsize, f"the value of {key!r}")
            return np.frombuffer(self.buf[at:at + scalar.itemsize], scalar)[0].item()
        if vtype == self.string:
            raw = self._bytes(f"the value of {key!r}")
            try:
                return str(raw, encoding="utf-8")
            except UnicodeDecodeError:
                return None  # the package's reader fails on it when asked: the key reads as absent
        item_type = self._uint(self.u32, f"the array type of {key!r}")
        count = self._uint(self.u64, f"the array length of {key!r}")
        self._count(count)
        self._skip(key, item_type, count)
        return GGUFArray(item_type, count)

    def _skip(self, key: str, item_type: int, count: int) -> None:
        """Step over ``count`` array entries of ``item_type`` (arrays of arrays too, depth first, as stored)."""
        from gguf import GGUFValueType

        stack = [(item_type, count)]  # (value type, values of it still to step over)
        while stack:
            vtype, n = stack.pop()
            if n == 0:
                continue  # the package never looks at an empty array's type
            GGUFValueType(vtype)
            scalar = self.scalars.get(vtype)
            if scalar is not None:
                self._take(scalar.itemsize * n, f"the {n:,} values of {key!r}")
            elif vtype == self.string:
                self._strings(key, n)
            else:  # an array of arrays: this one's entries, then its n - 1 siblings
                if n > 1:
                    stack.append((vtype, n - 1))
                inner = self._uint(self.u32, f"an array type inside {key!r}")
                inner_n = self._uint(self.u64, f"an array length inside {key!r}")
                self._count(inner_n)
                stack.append((inner, inner_n))

    def _strings(self, key: str, n: int) -> None:
        """Step over ``n`` strings: each length read, nothing else (0.08 us a string against the package's
        ~30 us; a numba loop takes 0.01 us but costs 0.13 s to import, more than a whole tokenizer's walk)."""
        unpack, buf, offs = self.u64.unpack_from, self.buf, self.offs
        try:
            for _ in range(n):
                offs += 8 + unpack(buf, offs)[0]  # past the end: the next unpack raises
        except struct.error:
            offs = self.end + 1
        if offs > self.end:
            raise ValueError(f"the {n:,} strings of {key!r} from byte {self.offs} run past the end of the "
                             f"{self.end}-byte file")
        self.offs = offs

    def header(self) -> RawHeader:
        """The whole header: metadata, tensor directory, alignment, where the data starts."""
        from gguf import GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType
        from gguf.gguf_reader import READER_SUPPORTED_VERSIONS

        if self.version not in READER_SUPPORTED_VERSIONS:
            raise ValueError(f"Sorry, file appears to be version {self.version} which we cannot handle")
        fields = self.metadata()
        tensors: list[tuple[str, tuple[int, ...], int, int]] = []
        for k in range(self.n_tensors):
            name = str(self._bytes(f"the name of tensor {k}"), encoding="utf-8")
            n_dims = self._uint(self.u32, f"the dimensions of tensor {name!r}")
            at = self._take(8 * n_dims, f"the {n_dims:,} dimensions of tensor {name!r}")
            dims = struct.unpack_from(f"{self.order}{n_dims}Q", self.buf, at)
            qtype = self._uint(self.u32, f"the type of tensor {name!r}")
            offset = self._uint(self.u64, f"the offset of tensor {name!r}")
            tensors.append((name, dims, qtype, offset))
        alignment = GGUF_DEFAULT_ALIGNMENT
        if "general.alignment" in fields:
            if self.types["general.alignment"] != GGUFValueType.UINT32:
                raise ValueError("Bad type for general.alignment field")
            alignment = int(fields["general.alignment"])  # type: ignore[call-overload]
            if alignment == 0 or alignment & (alignment - 1):
                raise ValueError("Invalid alignment: must be a non-zero power of two")
        data_offset = self.offs + (-self.offs) % alignment
        seen: set[str] = set()
        out = []
        for name, dims, qtype, offset in tensors:
            if name in seen:
                raise ValueError(f"Found duplicated tensor with name {name}")
            seen.add(name)
            try:
                GGMLQuantizationType(qtype)
            except ValueError:
                raise UnknownTensorType(name, qtype) from None
            out.append(RawTensor(name, dims, qtype, data_offset + offset))
        return RawHeader(self.version, fields, tuple(out), alignment, data_offset, self.total, self.order == ">")


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
    plus_one: bool = False  # stored as 1 + w (NORM_PLUS_ONE)
    regroup_heads: int = 0  # > 0: fused q/k/v rows regrouped by the converter for this many heads (REGROUPED_QKV)
    regroup_groups: int = 0  # kv groups of those heads (GROUPED_QKV); 0: one group per head (REGROUPED_QKV)
    big_endian: bool = False  # its values' bytes in big-endian order (:func:`to_little_endian` before decoding)


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file holds, from its header only."""

    architecture: str
    file_type: str | None  # e.g. "Q4_K_M" from general.file_type
    tensors: dict[str, GGUFTensor]  # transformers (raw, not normalised) name -> tensor
    unsupported: dict[str, str]  # transformers name -> quantization type the package cannot dequantize
    metadata: dict[str, str]  # a few string keys (general.name, general.base_model.*) for people
    head_count: int | None = None  # {arch}.attention.head_count
    head_count_kv: int | None = None
    split_count: int = 1  # split.count: files of a model split by gguf-split / GGUFWriter(split_max_*)
    split_no: int = 0  # split.no: this file's place among them
    #: transformers name -> why it is left out though its type is read (a head count its rows cannot take)
    left_out: dict[str, str] = field(default_factory=dict)
    big_endian: bool = False  # a file written for a big-endian machine (:data:`BIG_ENDIAN_FIELDS`)

    @property
    def scheme(self) -> str:
        """The quantization: the declared file type, else the type holding the most weights."""
        if self.file_type:
            return self.file_type
        sizes: dict[str, int] = {}
        for t in self.tensors.values():
            sizes[t.qtype_name] = sizes.get(t.qtype_name, 0) + t.nbytes
        return max(sizes, key=lambda k: sizes[k]) if sizes else "unknown"


def read_header(path: str, first: GGUFHeader | None = None) -> GGUFHeader:
    """Read a GGUF file's header (:func:`parse_header`), keep what the engine uses and check it against the
    file size.

    ``first``: the header of the first file of a split model (``split.no`` 0), whose architecture, file type
    and head counts the later files do not repeat (llama.cpp's ``gguf-split`` writes them once).

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
        raw_header = parse_header(path)
    except TooManyEntries as e:
        raise _unreadable(path, f"its metadata holds more than {MAX_METADATA_ENTRIES:,} values (at least "
                                f"{e.entries:,}; the largest real tokenizers hold under a million), which no "
                                "model's header does") from e
    except OSError as e:
        raise _unreadable(path, f"its GGUF header cannot be read ({type(e).__name__}: {str(e)[:200]})") from e
    except UnknownTensorType as e:
        raise UnreadableCheckpointError(
            f"Cannot read {path}: a tensor is stored in a GGUF type the installed gguf package does not "
            f"know ({str(e)[:120]}). Update the "
            "package (pip install -U gguf) or convert the file to a common type (Q8_0, Q4_K).", path) from e
    except (ValueError, OverflowError, struct.error) as e:
        raise _unreadable(path, f"its GGUF header is not valid ({type(e).__name__}: {str(e)[:200]})") from e
    fields = raw_header.fields
    arch = fields.get("general.architecture")
    arch = arch if isinstance(arch, str) else first.architecture if first is not None else "unknown"
    ft = fields.get("general.file_type")
    file_type = first.file_type if first is not None else None
    if isinstance(ft, int):
        try:
            file_type = gguf.LlamaFileType(int(ft)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = None
    n_head = _int_field(fields, f"{arch}.attention.head_count")
    n_kv = _int_field(fields, f"{arch}.attention.head_count_kv")
    if first is not None:
        n_head, n_kv = n_head or first.head_count, n_kv or first.head_count_kv
    split_count = _int_field(fields, "split.count") or 1
    split_no = _int_field(fields, "split.no") or 0
    metadata = {k: v for k, v in fields.items() if k.startswith(("general.name", "general.base_model"))
                and isinstance(v, str)}
    names = transformers_names(arch, [t.name for t in raw_header.tensors])
    tensors: dict[str, GGUFTensor] = {}
    unsupported: dict[str, str] = {}
    left_out: dict[str, str] = {}
    for t in raw_header.tensors:
        qtype = gguf.GGMLQuantizationType(t.qtype)
        ne = list(t.dims)  # innermost first
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if not ne or ne[0] % block != 0:
            raise _unreadable(path, f"tensor {t.name!r} has {ne[0] if ne else 0} values per row, not a "
                                    f"multiple of {qtype.name}'s block of {block}")
        row_bytes = ne[0] // block * type_size
        nbytes = row_bytes * math.prod(ne[1:])  # Python integers: 2**32 x 2**32 rows do not wrap to 0
        offset = t.offset
        if offset + nbytes > size:
            raise _unreadable(path, f"tensor {t.name!r} ends at byte {offset + nbytes} of a {size}-byte file")
        name = names.get(t.name, t.name)
        # The rows are put back in the source's order with the file's head counts only where they split
        # the rows as the converter did; a count that cannot (0, negative, more heads than rows, not dividing
        # them) is a damaged or crafted file: those rows cannot be ordered, so they are left out with a note
        # (before, they were compared in another order, heads past the tensor's end were read, or the read
        # divided by zero). So is an absent count: llama.cpp's converter always writes head_count and
        # permutes k with it where head_count_kv is absent (``LlamaModel.permute``; its loader defaults
        # head_count_kv the same way), but defines no order without head_count (read as stored before).
        permuted = arch in PERMUTED_QK and name.endswith(_PERMUTED_SUFFIXES)
        claim: int | None = None  # the q/k permutation's head count the file gives for this tensor
        if permuted and ".q_proj." in name:
            claim = n_head
        elif permuted:
            claim = n_kv if n_kv is not None else n_head
        transposed = arch in _TRANSPOSED_ARCHS and name.endswith(_TRANSPOSED_SUFFIXES) and len(ne) == 2
        # The architecture's claim holds for vectors only: a tensor of two or more dimensions named
        # ``*norm.weight`` is no norm, read as stored, in chunks (a crafted 8192 x 8192 one was read whole to
        # undo the + 1: 901 MB peak against 340, 14 s against 4).
        plus_one = arch in NORM_PLUS_ONE and name.endswith("norm.weight") and len(ne) == 1
        fused_qkv = name.endswith((".query_key_value.weight", ".query_key_value.bias"))
        regroup_claim = n_head if arch in REGROUPED_QKV | GROUPED_QKV and fused_qkv else None
        # Falcon without a kv head count is Falcon-7B's multi-query: one group.
        groups = (1 if n_kv is None else n_kv) if arch in GROUPED_QKV and regroup_claim is not None else 0
        why = _heads_misfit(ne[-1], claim, regroup_claim, groups,
                            f"{arch}.attention.head_count" if permuted and claim is None else None)
        heads, regroup = claim or 0, regroup_claim or 0
        if why:
            left_out[name] = why
            continue
        info = GGUFTensor(t.name, int(qtype), qtype.name, tuple(reversed(ne)), offset, nbytes, row_bytes,
                          heads, transposed, plus_one, regroup, groups, raw_header.big_endian)
        if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) \
                and qtype not in _type_traits:
            unsupported[name] = qtype.name
            continue
        tensors[name] = info
    return GGUFHeader(arch, file_type, tensors, unsupported, metadata, n_head, n_kv, split_count, split_no, left_out,
                      raw_header.big_endian)


#: The tensor types whose big-endian bytes are known, as llama.cpp's ``gguf-py/gguf/scripts/gguf_convert_endian.py``
#: (the one tool converting GGUF files between byte orders) swaps them: the byte offsets, inside one block, of its
#: 16-bit fields (f16 scales: Q4_0's and Q8_0's ``d``, Q4_K's ``d`` and ``dmin``, Q6_K's ``d`` after its 208 bytes
#: of codes); the rest of a block is bytes, the same in either order (MXFP4's and NVFP4's scales are bytes too).
#: F32, F16 and BF16 are words of 4, 2 and 2 bytes. Every other type (Q4_1, Q5_0, Q5_K, IQ*...) the script
#: refuses ("Cannot handle type"): no tool defines its big-endian layout (``GGUFWriter(endianess=BIG)`` byteswaps
#: the uint8 array it is handed, so leaves blocks as they were quantized), so such a file is refused, not guessed.
BIG_ENDIAN_FIELDS: dict[str, tuple[int, ...]] = {"Q4_0": (0,), "Q8_0": (0,), "Q4_K": (0, 2), "Q6_K": (208,),
                                                 "MXFP4": (), "NVFP4": ()}
_BIG_ENDIAN_WORDS = {"F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}


def big_endian_readable(qtype_name: str) -> bool:
    """Whether a big-endian file's tensors of ``qtype_name`` are read (:data:`BIG_ENDIAN_FIELDS`)."""
    return qtype_name in BIG_ENDIAN_FIELDS or qtype_name in _BIG_ENDIAN_WORDS


def to_little_endian(buf: np.ndarray, qtype_name: str) -> np.ndarray:
    """Swap, in place, the multi-byte fields of whole stored ``qtype_name`` values or blocks (``buf``: contiguous
    uint8) from big- to little-endian order, as ``gguf_convert_endian.py`` does, so the little-endian decoders
    read them. Returns ``buf``.

    Raises
    ------
    ValueError
        A type whose big-endian layout is not known (:func:`big_endian_readable`), or not whole blocks.
    """
    flat = buf.reshape(-1)  # a view: ``buf`` is contiguous
    word = _BIG_ENDIAN_WORDS.get(qtype_name)
    if word is not None:
        flat.view(word).byteswap(inplace=True)
        return buf
    if qtype_name not in BIG_ENDIAN_FIELDS:
        raise ValueError(f"the big-endian layout of {qtype_name} blocks is not known")
    import gguf

    size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qtype_name]][1]
    if flat.size % size:
        raise ValueError(f"{flat.size} bytes are not whole {qtype_name} blocks of {size} bytes")
    blocks = flat.reshape(-1, size)  # (blocks, bytes of one)
    for at in BIG_ENDIAN_FIELDS[qtype_name]:
        high = blocks[:, at].copy()  # the two bytes of the field exchanged
        blocks[:, at] = blocks[:, at + 1]
        blocks[:, at + 1] = high
    return buf


def _heads_misfit(rows: int, heads: int | None, regroup: int | None, groups: int,
                  no_count: str | None = None) -> str | None:
    """Why a tensor's rows cannot be put back in the source's order with the file's head counts, or None.

    ``rows``: the tensor's outermost length; ``heads``: the head count of the q/k permutation the file gives
    for it (None: not permuted, or none given); ``regroup`` / ``groups``: the fused qkv regrouping's query
    heads (None: not regrouped) and kv groups (0: one group per head); ``no_count``: the metadata key of the
    head count a permuted tensor's file does not give (None: not permuted, or given).
    """
    if no_count is not None:
        return (f"has {rows} rows in llama.cpp's q/k row order and the file gives no head count ({no_count}, "
                "which llama.cpp's converter always writes), so that order cannot be undone")
    if heads is not None and (heads <= 0 or rows % heads or (rows // heads) % 2):
        return (f"has {rows} rows, which the file's head count {heads} does not split into heads of an even "
                "size, so llama.cpp's q/k row order cannot be undone")
    g = groups or regroup or 0
    if regroup is not None and (regroup <= 0 or g <= 0 or regroup % g or rows % (regroup + 2 * g)):
        return (f"has {rows} rows, which the file's head counts ({regroup} heads, {g} kv groups) do not split "
                "into query, key and value heads, so the converter's row order cannot be undone")
    return None


def _int_field(fields: dict[str, object], key: str) -> int | None:
    value = fields.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_byte_order(path: str, header: GGUFHeader) -> None:
    """Refuse a big-endian file holding a tensor type whose big-endian layout is not known
    (:func:`big_endian_readable`): read as little-endian its values would be wrong, with nothing to show it.
    Asked by discovery (so `mother scan` lists the file as a problem, not as a model) and by the reader (every
    part of a split model)."""
    if not header.big_endian:
        return
    types = {t.qtype_name for t in header.tensors.values()} | set(header.unsupported.values())
    unknown = sorted(q for q in types if not big_endian_readable(q))
    if unknown:
        *known, last = [*_BIG_ENDIAN_WORDS, *BIG_ENDIAN_FIELDS]  # the types big_endian_readable takes
        raise UnreadableCheckpointError(
            f"Cannot read {path}: it is a big-endian GGUF (written for s390x or another big-endian machine) with "
            f"{', '.join(unknown)} tensors, whose big-endian block layout is not known here (llama.cpp's "
            f"gguf_convert_endian.py, as the installed gguf package ships it, swaps only {', '.join(known)} and "
            f"{last}), so their values cannot be read reliably. Use a little-endian "
            "GGUF of the model (convert_hf_to_gguf.py without --bigendian, or gguf_convert_endian.py MODEL little "
            "where it takes the file's types) or remove it from the set.", path)
