"""The header of a GGUF file (metadata and tensor directory), read without torch.

Split from :mod:`mother_core.io.gguf_reader` so that discovery (``mother scan``) validates GGUF files
with the ``gguf`` package and numpy only: importing the reader imports torch (seconds on a busy
machine), which a scan that reads no tensor does not need.

The header is parsed by :class:`gguf.GGUFReader`, whose own checks refuse a bad magic, an unknown
version or a duplicate tensor; :func:`read_header` adds the ones a corrupt download needs (every tensor
inside the file, sizes consistent with its type's block size), and maps names to those of the
transformers checkpoint the file was converted from (:mod:`mother_core.io.gguf_names`).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field

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


#: Most entries the metadata's arrays may hold over a whole file. The ``gguf`` package parses every array entry
#: as a Python object (10-16 us each on a busy 2-core machine): a crafted array of 20 million bytes took over
#: five minutes to open. The largest real tokenizers hold under a million (Gemma 3: 262,144 tokens, scores and
#: types; Qwen2.5: 151,936 tokens and types, 151,387 merges).
MAX_METADATA_ENTRIES = 2_000_000


def metadata_entries(path: str, stop: int = MAX_METADATA_ENTRIES) -> int:
    """The values of a GGUF file's metadata (array entries, nested ones included), counted from its bytes
    without parsing them, or the first count past ``stop``. Arrays of fixed-size values are stepped over at
    once; strings one by one. A header that ends early or holds an unknown type ends the count (the
    package's own parser then refuses the file).
    """
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 24:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _count_entries(buf, stop)


def _count_entries(buf: mmap.mmap, stop: int) -> int:
    from gguf import GGUFReader, GGUFValueType

    # Bytes of each scalar value type, as the package's own parser reads them (it is imported lazily: optional).
    scalar_bytes = {int(t): np.dtype(np_type).itemsize for t, np_type in GGUFReader.gguf_scalar_to_np.items()}
    string, array = int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)
    end = len(buf)
    order = "<" if struct.unpack_from("<I", buf, 4)[0] < 0x10000 else ">"  # the package reads big-endian files
    u32, u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")
    n_kv = u64.unpack_from(buf, 16)[0]
    offs, total = 24, 0
    try:
        for _ in range(min(n_kv, end)):
            offs += 8 + u64.unpack_from(buf, offs)[0]  # the key
            if offs > end:
                return total
            stack = [(u32.unpack_from(buf, offs)[0], 1)]  # (value type, values of it still to step over)
            offs += 4
            total += stack[0][0] != array  # an array counts its entries
            while stack:
                vtype, n = stack.pop()
                if vtype in scalar_bytes:
                    offs += scalar_bytes[vtype] * n
                elif vtype == string:
                    for _ in range(n):
                        offs += 8 + u64.unpack_from(buf, offs)[0]
                        if offs > end:
                            return total
                elif vtype == array and n:
                    if n > 1:
                        stack.append((array, n - 1))  # the array's next siblings, after this one's entries
                    itype, count = u32.unpack_from(buf, offs)[0], u64.unpack_from(buf, offs + 4)[0]
                    offs += 12
                    total += count
                    if total > stop:
                        return total
                    stack.append((itype, count))
                elif vtype != array:
                    return total
                if offs > end:
                    return total
    except (struct.error, OverflowError):  # the header ends early, or a length past any file: the package says so
        pass
    return total


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


def read_header(path: str, first: GGUFHeader | None = None) -> GGUFHeader:
    """Parse a GGUF file's header with the ``gguf`` package and check it against the file size.

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
        entries = metadata_entries(path)
    except (OSError, ValueError) as e:
        raise _unreadable(path, f"its GGUF header cannot be read ({type(e).__name__}: {str(e)[:200]})") from e
    if entries > MAX_METADATA_ENTRIES:
        raise _unreadable(path, f"its metadata holds more than {MAX_METADATA_ENTRIES:,} values (at least "
                                f"{entries:,}; the largest real tokenizers hold under a million), which would "
                                "take minutes to parse")
    try:
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
        arch = arch if isinstance(arch, str) else first.architecture if first is not None else "unknown"
        ft = _field(reader, "general.file_type")
        file_type = first.file_type if first is not None else None
        if isinstance(ft, (int, np.integer)):
            try:
                file_type = gguf.LlamaFileType(int(ft)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                file_type = None
        n_head = _int_field(reader, f"{arch}.attention.head_count")
        n_kv = _int_field(reader, f"{arch}.attention.head_count_kv")
        if first is not None:
            n_head, n_kv = n_head or first.head_count, n_kv or first.head_count_kv
        split_count = _int_field(reader, "split.count") or 1
        split_no = _int_field(reader, "split.no") or 0
        metadata = {k: v for k in reader.fields if k.startswith(("general.name", "general.base_model"))
                    and isinstance(v := _field(reader, k), str)}
        raw = list(reader.tensors)
        names = transformers_names(arch, [t.name for t in raw])
        tensors: dict[str, GGUFTensor] = {}
        unsupported: dict[str, str] = {}
        left_out: dict[str, str] = {}
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
            plus_one = arch in NORM_PLUS_ONE and name.endswith("norm.weight")
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
                              heads, transposed, plus_one, regroup, groups)
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
    return GGUFHeader(arch, file_type, tensors, unsupported, metadata, n_head, n_kv, split_count, split_no, left_out)


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


def _int_field(reader, key: str) -> int | None:
    value = _field(reader, key)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None
