"""Hostile and broken inputs, each written next to a good set of ten small models with a known tree.

Every generator ``make(folder) -> Case`` writes one bad input (a file or a model folder) into ``folder``
and says what must happen to it: whether it is refused (and the words its message must contain), or read
with some of its tensors set aside, or read whole. Used by ``tests/test_hostile.py`` and
``benchmarks/hostile.py`` (which prints time and memory per case).

The good set: ``m0`` is the root; every other model is its parent plus a fine-tuning step (a low-rank
update plus small dense noise, as a full fine-tune leaves), in safetensors model folders.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import threading
import time
import traceback
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from mother_core.errors import MotherError
from mother_core.pipeline import recover_paths

#: The known tree of the good set: child -> parent.
PARENTS: dict[str, str | None] = {"m0": None, "m1": "m0", "m2": "m0", "m3": "m1", "m4": "m1", "m5": "m2",
                                   "m6": "m2", "m7": "m3", "m8": "m5", "m9": "m6"}
HIDDEN, INTER, LAYERS = 32, 64, 2


def _shapes() -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (INTER, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{proj}.weight"] = (HIDDEN, HIDDEN)
        out[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        out[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
        out[p + "input_layernorm.weight"] = (HIDDEN,)
    return out


def good_states(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """The ten state dicts of the good set (float32), keyed by model id."""
    g = torch.Generator().manual_seed(seed)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for mid, parent in PARENTS.items():
        if parent is None:
            states[mid] = {k: torch.randn(s, generator=g) * 0.02 for k, s in _shapes().items()}
            continue
        child = {}
        for k, w in states[parent].items():
            if w.dim() == 2:
                a = torch.randn(w.shape[0], 4, generator=g)
                b = torch.randn(4, w.shape[1], generator=g)
                step = 0.004 * (a @ b) / 2 + 0.001 * torch.randn(w.shape, generator=g)
            else:
                step = 0.002 * torch.randn(w.shape, generator=g)
            child[k] = w + step
        states[mid] = child
    return states


def write_good_set(folder: Path, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    states = good_states(seed)
    for mid, sd in states.items():
        (folder / mid).mkdir(parents=True, exist_ok=True)
        save_file(sd, str(folder / mid / "model.safetensors"))
    return states


@dataclass(frozen=True)
class Case:
    """What a bad input must do.

    Attributes
    ----------
    name : str
        The model id (or file name) of the bad input.
    outcome : str
        ``"refused"`` (a Problem, the model is not in the result), ``"partial"`` (a Problem, the model is
        in the result with some tensors set aside) or ``"read"`` (read, e.g. an adapter whose hostile
        regex is matched literally).
    words : tuple of str
        Words the Problem's message must contain (case-insensitive).
    most_problems : int or None
        At most this many Problems may name it (a flood of notes from one file is bounded).
    """

    name: str
    outcome: str
    words: tuple[str, ...] = ()
    most_problems: int | None = None


# --- torch pickles ------------------------------------------------------------------------------------

def _torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
               compress: dict[str, int] | None = None) -> None:
    """A zip-format torch file with the given pickle and storage records."""
    stem = "archive"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{stem}/data.pkl", data_pkl)
        zf.writestr(f"{stem}/byteorder", "little")
        for key, raw in (storages or {}).items():
            kind = (compress or {}).get(key, zipfile.ZIP_STORED)
            zf.writestr(zipfile.ZipInfo(f"{stem}/data/{key}"), raw, compress_type=kind)
        zf.writestr(f"{stem}/version", "3\n")


def _clean_pickle(sd: dict[str, torch.Tensor]) -> tuple[bytes, dict[str, bytes]]:
    """data.pkl and storages of ``torch.save(sd)`` (protocol 2)."""
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as zf:
        names = zf.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        prefix = pkl[: -len("data.pkl")]
        storages = {n[len(prefix) + 5:]: zf.read(n) for n in names if n.startswith(prefix + "data/")}
        return zf.read(pkl), storages


def _with_prefix(folder: Path, name: str, sd: dict[str, torch.Tensor], prefix: bytes) -> Path:
    """A torch file that loads ``sd`` normally after ``prefix`` (opcodes with a net stack effect of 0)."""
    pkl, storages = _clean_pickle(sd)
    assert pkl[:2] == b"\x80\x02"
    path = folder / f"{name}.pt"
    _torch_zip(path, pkl[:2] + prefix + pkl[2:], storages)
    return path


def _unicode(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def poison_defaults(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """BUILD with slot state on torch's tensor-rebuild function: changes its defaults process-wide in any
    unpickler that lets BUILD reach a global (62 bytes)."""
    prefix = (b"ctorch._utils\n_rebuild_tensor_v2\n" + b"N}" + _unicode("__defaults__") + b"\x88\x85s" + b"\x86b0")
    _with_prefix(folder, "poison-defaults", sd, prefix)
    return Case("poison-defaults", "refused", ("change",))


def poison_storage_class(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """BUILD on a storage class: would replace ``torch.FloatStorage.__init__`` for every later load."""
    prefix = b"ctorch\nFloatStorage\n" + b"N}" + _unicode("__init__") + b"N" + b"s\x86b0"
    _with_prefix(folder, "poison-storage", sd, prefix)
    return Case("poison-storage", "refused", ("change",))


def poison_setitems(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """SETITEMS aimed at the OrderedDict class itself."""
    prefix = b"ccollections\nOrderedDict\n" + b"(" + _unicode("x") + b"Nu0"
    _with_prefix(folder, "poison-setitems", sd, prefix)
    return Case("poison-setitems", "refused", ("change",))


class _Storage:
    def __init__(self, pid: tuple) -> None:
        self.pid = pid


class _Rebuild:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _Call:
    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> object:
        return obj.pid if isinstance(obj, _Storage) else None


def _crafted(obj: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def list_bomb(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A 100-byte pickle asking for ``list(range(60_000_000))`` (2.6 GB as Python ints)."""
    _torch_zip(folder / "list-bomb.pt", _crafted({"w": _Call(list, _Call(range, 60_000_000))}))
    return Case("list-bomb", "refused", ("list() called",))


def bytearray_bomb(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """``bytearray(10**10)``: torch's own weights_only loader calls it (10 GB)."""
    _torch_zip(folder / "bytearray-bomb.pt", _crafted({"w": _Call(bytearray, 10**10)}))
    return Case("bytearray-bomb", "refused", ("bytearray() called",))


def stride_zero(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A 1-element storage viewed as 100000 x 100000 with stride 0 (1e10 elements read, from 1.6 KB)."""
    st = _Storage(("storage", torch.FloatStorage, "0", "cpu", 1))
    obj = {"w": _Rebuild(st, 0, (100_000, 100_000), (0, 0))}
    _torch_zip(folder / "stride-zero.pt", _crafted(obj), {"0": b"\0\0\0\0"})
    return Case("stride-zero", "refused", ("stride",))


def huge_storage_claim(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A storage claiming 10**12 elements in a small zip."""
    st = _Storage(("storage", torch.FloatStorage, "0", "cpu", 10**12))
    obj = {"w": _Rebuild(st, 0, (10**6, 10**6), (10**6, 1))}
    _torch_zip(folder / "huge-claim.pt", _crafted(obj), {"0": b"\0" * 64})
    return Case("huge-claim", "refused", ("claims",))


def legacy_huge_storage(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """The legacy (pre-zip) format with a storage claiming 10**12 elements: allocated before the data."""
    st = _Storage(("storage", torch.FloatStorage, "0", "cpu", 10**12, None))
    buf = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(part, buf, protocol=2)
    _Pickler(buf, protocol=2).dump({"w": _Rebuild(st, 0, (10,), (1,))})
    pickle.dump(["0"], buf, protocol=2)
    buf.write(struct.pack("<q", 10) + b"\0" * 40)
    (folder / "legacy-huge.pt").write_bytes(buf.getvalue())
    return Case("legacy-huge", "refused", ("claim",))


def zip_bomb(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A deflated storage member of 256 MB of zeros in a file of ~250 KB."""
    n = 256 * 1024 * 1024
    st = _Storage(("storage", torch.FloatStorage, "0", "cpu", n // 4))
    pkl = _crafted({"w": _Rebuild(st, 0, (n // 4,), (1,))})
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    raw = b"".join(comp.compress(chunk) for _ in range(n >> 20)) + comp.flush()
    path = folder / "zip-bomb.pt"
    _torch_zip(path, pkl, {})
    # Append the member by hand: zipfile would deflate the 256 MB itself (slow); we give it raw deflate.
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size, info.compress_size, info.CRC = n, len(raw), zlib.crc32(bytes(0))
        zf.fp.seek(zf.start_dir)  # type: ignore[union-attr]
        info.header_offset = zf.start_dir
        zf.fp.write(info.FileHeader())  # type: ignore[union-attr]
        zf.fp.write(raw)  # type: ignore[union-attr]
        zf.start_dir = zf.fp.tell()  # type: ignore[union-attr]
        zf.filelist.append(info)
        zf.NameToInfo[info.filename] = info
        zf._didModify = True
    return Case("zip-bomb", "refused", ("zip bomb",))


def nested_pickle(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """200 000 nested lists (a recursive loader overflows the stack), beside real weights."""
    depth = 200_000
    pkl, storages = _clean_pickle(sd)
    body = b"]" * depth + b"a" * (depth - 1)  # EMPTY_LIST x depth, APPEND x depth-1: one nested list
    # {"nest": <nested>, "state_dict": <the clean dict>}: the clean pickle's body (without PROTO/STOP)
    data = b"\x80\x02}(" + _unicode("nest") + body + _unicode("state_dict") + pkl[2:-1] + b"u."
    _torch_zip(folder / "nested.pt", data, storages)
    return Case("nested", "read")


def shared_reference_bomb(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A DAG of shared references: 12 KB on disk, 1000**6 paths to walk naively."""
    out = bytearray(b"\x80\x02]q\x000")  # level 0: [] memoised as 0, popped
    for level in range(1, 7):  # level k: a list of 1000 references to level k - 1
        out += b"(" + (b"h" + bytes([level - 1])) * 1000 + b"lq" + bytes([level]) + (b"0" if level < 6 else b"")
    out += b"."
    _torch_zip(folder / "shared-refs.pt", bytes(out))
    return Case("shared-refs", "refused", ("no tensors",))


def foreign_opcode(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """An extension-registry opcode (EXT1), which a checkpoint never uses."""
    _torch_zip(folder / "ext-opcode.pt", b"\x80\x02\x82\x01.")
    return Case("ext-opcode", "refused", ("opcode",))


def random_bytes(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    # Byte 8 is "{" (as a safetensors header starts), the hard case for the sniffer: noise is noise anyway.
    noise = random.Random(11)
    (folder / "noise.bin").write_bytes(b"JUNK" + noise.randbytes(4) + b"{" + noise.randbytes(4087))
    return Case("noise", "refused", ("not a pytorch checkpoint",))


def truncated_zip(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    buf = io.BytesIO()
    torch.save(sd, buf)
    (folder / "cut.pt").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return Case("cut", "refused", ("zip",))


# --- safetensors ---------------------------------------------------------------------------------------

def _st(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def unknown_dtypes(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    header = {"a": {"dtype": "C64", "shape": [4], "data_offsets": [0, 32]},
              "b": {"dtype": "F8_E8M0", "shape": [4], "data_offsets": [32, 36]},
              "c": {"dtype": "Q4_K", "shape": [3], "data_offsets": [36, 40]}}
    _st(folder / "odd-dtypes" / "model.safetensors", header, b"\0" * 40)
    return Case("odd-dtypes", "refused", ("complex64", "fp8", "q4_k"))


def fp8_only(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    t = {k: v.to(torch.float8_e4m3fn) for k, v in sd.items()}
    (folder / "fp8").mkdir()
    save_file(t, str(folder / "fp8" / "model.safetensors"))
    return Case("fp8", "refused", ("fp8",))


def tensor_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """300,000 one-value float tensors in an 18 MB header (within safetensors' own limits). Before: read,
    each tensor at a fixed ~0.2-0.8 ms (84 s for a third of this beside the good ten) and each of its slots
    added to every pair's statistics; now refused as soon as its header is decoded."""
    header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(300_000)}
    _st(folder / "tensor-flood" / "model.safetensors", header, b"\0" * (4 * 300_000))
    return Case("tensor-flood", "refused", ("300,000 entries", "limit is 250,000"))


def deep_header(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    deep = b"[" * 100_000 + b"]" * 100_000
    p = folder / "deep-header" / "model.safetensors"
    p.parent.mkdir()
    p.write_bytes(struct.pack("<Q", len(deep)) + deep)
    return Case("deep-header", "refused", ("nests deeper",))


def overlapping(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
              "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    _st(folder / "overlap" / "model.safetensors", header, b"\0" * 24)
    return Case("overlap", "refused", ("overlap",))


def negative_dims(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    header = {"a": {"dtype": "F32", "shape": [-4, -1], "data_offsets": [0, 16]}}
    _st(folder / "negative" / "model.safetensors", header, b"\0" * 16)
    return Case("negative", "refused", ("invalid shape",))


def sparse_claim(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A sparse file whose header claims 4 TB of tensor data (its real size is a few KB)."""
    header = {"a": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}
    p = folder / "sparse" / "model.safetensors"
    _st(p, header, b"")
    with open(p, "r+b") as f:
        f.truncate(4096)
    return Case("sparse", "refused", ("truncated",))


def gguf_huge_counts(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GGUF header claiming 2**60 tensors and 2**60 metadata entries in 64 bytes."""
    (folder / "gguf-counts.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**60, 2**60) + b"\0" * 40)
    return Case("gguf-counts", "refused", ("gguf",))


def gguf_huge_string(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GGUF metadata key whose length claims 2**62 bytes."""
    body = struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"general.name"
    (folder / "gguf-string.gguf").write_bytes(b"GGUF" + body + b"\0" * 64)
    return Case("gguf-string", "refused", ("gguf",))


def gguf_parts_of_two(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """Two whole GGUF files renamed as the two parts of one split model (two downloads mixed up)."""
    from format_factory import write_gguf

    for k, shift in ((1, 0.0), (2, 0.01)):
        write_gguf({n: v + shift for n, v in sd.items()}, folder / f"gguf-parts-{k:05d}-of-00002.gguf")
    return Case("gguf-parts", "refused", ("different downloads",))


# --- values --------------------------------------------------------------------------------------------

def all_nan(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    (folder / "all-nan").mkdir()
    save_file({k: torch.full_like(v, float("nan")) for k, v in sd.items()},
              str(folder / "all-nan" / "model.safetensors"))
    return Case("all-nan", "partial", ("nan", "set aside"))


def few_nonfinite(folder: Path, sd: dict[str, torch.Tensor], states: dict | None = None) -> Case:
    """A fine-tune of leaf m7 with a few NaN and Inf values in two tensors."""
    leaf = (states or good_states())["m7"]
    g = torch.Generator().manual_seed(7)
    child = {k: v + 0.001 * torch.randn(v.shape, generator=g) for k, v in leaf.items()}
    child["model.layers.0.self_attn.q_proj.weight"][3, 5] = float("nan")
    child["model.layers.1.mlp.up_proj.weight"][0, :4] = float("inf")
    (folder / "few-nan").mkdir()
    save_file(child, str(folder / "few-nan" / "model.safetensors"))
    return Case("few-nan", "partial", ("nan", "2 tensor"))


# --- PEFT ----------------------------------------------------------------------------------------------

def _adapter(folder: Path, name: str, config: dict, base_sd: dict[str, torch.Tensor]) -> Path:
    out = folder / name
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps(config))
    g = torch.Generator().manual_seed(3)
    tensors = {}
    for k in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"):
        w = base_sd[k + ".weight"]
        tensors[f"base_model.model.{k}.lora_A.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.01
        tensors[f"base_model.model.{k}.lora_B.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.01
    save_file(tensors, str(out / "adapter_model.safetensors"))
    return out


def peft_wrong_types(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    config = {"peft_type": "LORA", "base_model_name_or_path": "m9", "r": "eight", "lora_alpha": [16],
              "rank_pattern": ["not", "a", "map"], "target_modules": ["q_proj", "v_proj"]}
    _adapter(folder, "peft-types", config, good_states()["m9"])
    return Case("peft-types", "refused", ("positive number",))


def peft_redos(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A rank_pattern whose regex backtracks catastrophically on the module names (minutes per match)."""
    config = {"peft_type": "LORA", "base_model_name_or_path": "m9", "r": 4, "lora_alpha": 8,
              "rank_pattern": {"(.*a.*)*(.*_)*(.*)*q$": 2, "(a+)+$": 2, "(\\w+\\.?)+!": 2},
              "target_modules": ["q_proj", "v_proj"]}
    _adapter(folder, "peft-redos", config, good_states()["m9"])
    return Case("peft-redos", "read")


def loha_shapes(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT LoHa adapter whose second product has another shape than the first (w1_b one column short)."""
    out = folder / "loha-shapes"
    out.mkdir()
    g = torch.Generator().manual_seed(5)
    base = good_states()["m9"]
    tensors = {}
    for k in ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"):
        rows, cols = base[k + ".weight"].shape
        for part, shape in (("hada_w1_a", (rows, 4)), ("hada_w1_b", (4, cols - 1)), ("hada_w2_a", (rows, 4)),
                            ("hada_w2_b", (4, cols))):
            tensors[f"base_model.model.{k}.{part}"] = torch.randn(*shape, generator=g) * 0.1
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LOHA", "base_model_name_or_path": "m9",
                                                         "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}))
    return Case("loha-shapes", "refused", ("loha", "shape"))


def _other_adapter(folder: Path, name: str, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    out = folder / name
    out.mkdir()
    save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "m9", **config}))


def oft_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT OFT adapter whose second block parameters are cut (27 entries: no block size has that many)."""
    g = torch.Generator().manual_seed(6)
    tensors = {"base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight": torch.randn(4, 28, generator=g) * 0.1,
               "base_model.model.model.layers.1.self_attn.q_proj.oft_R.weight": torch.randn(4, 27, generator=g) * 0.1}
    _other_adapter(folder, "oft-cut", {"peft_type": "OFT", "r": 0, "oft_block_size": 8}, tensors)
    return Case("oft-cut", "refused", ("oft_r", "damaged"))


def boft_wrong_blocks(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT BOFT adapter whose blocks cover 36 inputs of a 32-input layer."""
    g = torch.Generator().manual_seed(7)
    k = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{k}.boft_R": torch.randn(1, 9, 4, 4, generator=g) * 0.1, f"{k}.boft_s": torch.ones(HIDDEN, 1)}
    _other_adapter(folder, "boft-blocks", {"peft_type": "BOFT", "boft_block_size": 4}, tensors)
    return Case("boft-blocks", "refused", ("boft-blocks", "shape"))


def vera_lambda_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT VeRA adapter whose ``vera_lambda_b`` is one entry short of the layer's outputs."""
    g = torch.Generator().manual_seed(8)
    k = "base_model.model.model.layers.0.self_attn.v_proj"
    tensors = {f"{k}.vera_lambda_b": torch.randn(HIDDEN - 1, generator=g), f"{k}.vera_lambda_d": torch.ones(4),
               "base_model.vera_A": torch.randn(4, INTER, generator=g), "base_model.vera_B": torch.randn(INTER, 4)}
    _other_adapter(folder, "vera-cut", {"peft_type": "VERA", "r": 4}, tensors)
    return Case("vera-cut", "refused", ("lambda_b", "damaged"))


def hra_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT HRA adapter whose reflection vectors are one entry short of the layer's inputs."""
    g = torch.Generator().manual_seed(9)
    tensors = {"base_model.model.model.layers.0.self_attn.k_proj.hra_u": torch.randn(HIDDEN - 1, 4, generator=g)}
    _other_adapter(folder, "hra-cut", {"peft_type": "HRA", "r": 4}, tensors)
    return Case("hra-cut", "refused", ("hra-cut", "shape"))


# --- quantized safetensors -----------------------------------------------------------------------------

def _gptq_folder(folder: Path, name: str, state: dict[str, torch.Tensor], bits: object = 4) -> None:
    (folder / name).mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name / "model.safetensors"))
    (folder / name / "config.json").write_text(json.dumps(
        {"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": bits, "group_size": 32}}))


def gptq_bits_word(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GPTQ model whose config gives ``"bits": "four"`` (before: a ValueError that sank the whole run)."""
    from format_factory import gptq_state

    _gptq_folder(folder, "gptq-bits", gptq_state(sd)[0], bits="four")
    return Case("gptq-bits", "refused", ("'bits'", "whole number"))


def gptq_scales_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GPTQ model whose ``scales`` keep one column (before: broadcast as one scale for every output and
    read without a word)."""
    from format_factory import gptq_state

    state = gptq_state(sd)[0]
    for k in [k for k in state if k.endswith(".scales")]:
        state[k] = state[k][:, :1]
    _gptq_folder(folder, "gptq-scales", state)
    return Case("gptq-scales", "partial", ("gptq", "layout", "left out"))


def bnb4_absmax_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A bitsandbytes nf4 model whose block scales were cut to one (before: broadcast over every block and
    read without a word)."""
    from format_factory import bnb_state

    state = bnb_state(sd, "nf4")
    for k in [k for k in state if k.endswith(".weight.absmax")]:
        state[k] = state[k][:1].contiguous()
    (folder / "bnb4-absmax").mkdir()
    save_file(state, str(folder / "bnb4-absmax" / "model.safetensors"))
    return Case("bnb4-absmax", "partial", ("bitsandbytes", "absmax", "left out"))


def quanto4_shift_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """An optimum-quanto int4 model whose per-group shifts were cut to one row (before: broadcast)."""
    from format_factory import quanto_state

    state = quanto_state(sd, "qint4")
    for k in [k for k in state if k.endswith("._shift")]:
        state[k] = state[k][:1].contiguous()
    (folder / "quanto4-shift").mkdir()
    save_file(state, str(folder / "quanto4-shift" / "model.safetensors"))
    return Case("quanto4-shift", "partial", ("quanto", "left out"))


# --- files and folders ---------------------------------------------------------------------------------

def fifo(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    (folder / "pipe").mkdir()
    os.mkfifo(folder / "pipe" / "model.safetensors")
    return Case("pipe", "refused", ("named pipe",))


def fifo_config(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A readable model whose config.json is a FIFO (reading it would block discovery forever)."""
    leaf = good_states()["m8"]
    (folder / "fifo-config").mkdir()
    save_file({k: v + 0.001 for k, v in leaf.items()}, str(folder / "fifo-config" / "model.safetensors"))
    os.mkfifo(folder / "fifo-config" / "config.json")
    return Case("fifo-config", "read")


def symlink_loop(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    os.symlink("loop.safetensors", folder / "loop.safetensors")
    return Case("loop", "refused", ("loops",))


def dangling_link(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    os.symlink("/nonexistent/elsewhere.safetensors", folder / "dangling.safetensors")
    return Case("dangling", "refused", ("does not exist",))


def bad_index(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A shard index naming a file outside the model's folder (an absolute path)."""
    (folder / "escape").mkdir()
    (folder / "escape" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "/etc/hostname"}}))
    return Case("escape", "refused", ("outside",))


def deep_config(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A readable model whose config.json nests 100 000 deep (json.loads would overflow the stack)."""
    leaf = good_states()["m4"]
    (folder / "deep-config").mkdir()
    save_file({k: v + 0.001 for k, v in leaf.items()}, str(folder / "deep-config" / "model.safetensors"))
    (folder / "deep-config" / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    return Case("deep-config", "read")


# --- the newer readers (branch hostile2) ----------------------------------------------------------------
# GGUF written byte by byte (the gguf package's writer refuses what a hostile file holds): header, metadata,
# tensor directory, padding to the alignment, data.

def _gguf_str(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def _gguf_raw(path: Path, kv: list[tuple[str, int, bytes]], tensors: list[tuple[str, list[int], int, int]],
              data: bytes, alignment: int = 32, n_tensors: int | None = None) -> None:
    """A GGUF v3 file: ``kv`` (key, value type, packed value), ``tensors`` (name, dims innermost first, type,
    offset), ``data`` after padding to ``alignment``; ``n_tensors`` overrides the count in the header."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors, len(kv))
    for key, vtype, value in kv:
        out += _gguf_str(key.encode()) + struct.pack("<I", vtype) + value
    for name, dims, qtype, offset in tensors:
        out += _gguf_str(name.encode()) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        out += struct.pack("<IQ", qtype, offset)
    pad = (-len(out)) % alignment if alignment > 0 else 0
    path.write_bytes(out + b"\0" * pad + data)


_ARCH = ("general.architecture", 8, _gguf_str(b"llama"))


def gguf_shape_overflow(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A float32 GGUF tensor of 32 x 2**32 x 2**32 values: the element count wraps to 0 in int64, so its byte
    size reads as 0 and every bound on its size passes, while the planner sizes a chunk row of 512 GB."""
    _gguf_raw(folder / "gguf-overflow.gguf", [_ARCH], [("token_embd.weight", [32, 2**32, 2**32], 0, 0)], b"\0" * 128)
    return Case("gguf-overflow", "refused", ("gguf",))


def gguf_alignment_zero(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """``general.alignment`` 0 (the data offset is computed modulo it)."""
    _gguf_raw(folder / "gguf-align0.gguf", [_ARCH, ("general.alignment", 4, struct.pack("<I", 0))],
              [("token_embd.weight", [32, 2], 0, 0)], b"\0" * 256)
    return Case("gguf-align0", "refused", ("alignment",))


def gguf_alignment_odd(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """``general.alignment`` 2**31 + 1 (not a power of two: a padding of up to 2 GB before the data)."""
    _gguf_raw(folder / "gguf-align-odd.gguf", [_ARCH, ("general.alignment", 4, struct.pack("<I", 2**31 + 1))],
              [("token_embd.weight", [32, 2], 0, 0)], b"\0" * 256)
    return Case("gguf-align-odd", "refused", ("alignment",))


def gguf_long_metadata(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GGUF file whose ``general.name`` is a real 32 MB string and which holds one tensor of 2**40 rows."""
    big = b"N" * (32 * 2**20)
    _gguf_raw(folder / "gguf-long-name.gguf", [_ARCH, ("general.name", 8, _gguf_str(big))],
              [("token_embd.weight", [32, 2**40], 0, 0)], b"\0" * 256)
    return Case("gguf-long-name", "refused", ("gguf",))


def gguf_count_lie(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GGUF header announcing three tensors and holding one."""
    _gguf_raw(folder / "gguf-count.gguf", [_ARCH], [("token_embd.weight", [32, 2], 0, 0)], b"\0" * 256, n_tensors=3)
    return Case("gguf-count", "refused", ("gguf",))


def gguf_zero_dims(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """Tensors of no dimension and of a 0-long one (no values), beside nothing else."""
    _gguf_raw(folder / "gguf-empty.gguf", [_ARCH], [("token_embd.weight", [32, 0], 0, 0), ("output.weight", [], 0, 0)],
              b"\0" * 64)
    return Case("gguf-empty", "refused", ("0 values per row",))


def gguf_q4k_nan(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A real Q4_K GGUF (the compiled kernels) of a fine-tune of m9 whose every block scale is NaN."""
    from format_factory import write_gguf

    wide = {k: v.repeat(1, 8) if v.dim() == 2 and v.shape[1] == HIDDEN else v for k, v in sd.items()}
    path = write_gguf(wide, folder / "gguf-nan.gguf", qtype="Q8_0",
                      force_types={k: "Q4_K" for k, v in wide.items() if v.dim() == 2 and v.shape[1] % 256 == 0})
    import gguf

    # Every block's scale d (an f16, first in Q8_0's 34-byte and Q4_K's 144-byte blocks) set to NaN.
    blocks = {gguf.GGMLQuantizationType.Q8_0: 34, gguf.GGMLQuantizationType.Q4_K: 144}
    reader = gguf.GGUFReader(str(path))
    raw = bytearray(path.read_bytes())
    for t in reader.tensors:
        size = blocks.get(gguf.GGMLQuantizationType(int(t.tensor_type)))
        for b in range(t.data_offset, t.data_offset + t.n_bytes, size) if size else ():
            raw[b:b + 2] = b"\x00\x7e"
    del reader
    path.write_bytes(bytes(raw))
    return Case("gguf-nan", "partial", ("nan",))


def index_dotdot(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A shard index naming a sibling model's file through ``..`` (relative, so not caught as absolute)."""
    (folder / "dotdot").mkdir()
    (folder / "dotdot" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "../m0/model.safetensors" for k in sd}}))
    return Case("dotdot", "refused", ("outside",))


def index_self(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A shard index whose shard is the index itself."""
    (folder / "self-index").mkdir()
    (folder / "self-index" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "model.safetensors.index.json" for k in sd}}))
    return Case("self-index", "refused", ("not a weight file",))


def index_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A shard index of 400,000 entries over 400,000 shard names, none of which exists."""
    (folder / "index-flood").mkdir()
    (folder / "index-flood" / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"t{i}": f"model-{i:06d}-of-400000.safetensors" for i in range(400_000)}}))
    return Case("index-flood", "refused", ("missing",))


def st_shape_overflow(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A safetensors entry of 2**32 x 2**32 x 2**4 float32 values over 4 bytes (the product wraps in 64 bits)."""
    header = {"a": {"dtype": "F32", "shape": [2**32, 2**32, 2**4], "data_offsets": [0, 4]}}
    _st(folder / "st-overflow" / "model.safetensors", header, b"\0" * 4)
    return Case("st-overflow", "refused", ("4 bytes",))


def bnb4_state_lie(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A bitsandbytes nf4 model whose JSON quant states claim a block size of 0 and a 2**40 x 2**40 weight."""
    from format_factory import bnb_state

    state = bnb_state(sd, "nf4")
    for k in [k for k in state if ".quant_state.bitsandbytes__" in k]:
        meta = json.loads(bytes(state[k].numpy()).decode())
        meta["blocksize"] = 0
        state[k] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    first = next(k for k in state if ".quant_state.bitsandbytes__" in k)
    meta = json.loads(bytes(state[first].numpy()).decode())
    meta["shape"] = [2**40, 2**40]
    state[first] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    (folder / "bnb4-state").mkdir()
    save_file(state, str(folder / "bnb4-state" / "model.safetensors"))
    return Case("bnb4-state", "partial", ("bitsandbytes", "block size is 0", "left out"))


def _ct_scale_cut(folder: Path, name: str, sd: dict[str, torch.Tensor], args: dict, fmt: str,
                  damage: Callable[[dict[str, torch.Tensor]], None] = lambda state: None) -> None:
    """``sd`` compressed by compressed-tensors (``args``, ``fmt``), ``damage`` done, and the first weight's
    scales cut to one row, saved with its config as model folder ``name``."""
    from format_factory import compressed_tensors_state

    state, qconfig, _ = compressed_tensors_state(sd, args, fmt)
    damage(state)
    cut = next(k for k in sorted(state) if k.endswith(".weight_scale"))
    state[cut] = state[cut][:1].contiguous()
    (folder / name).mkdir()
    save_file(state, str(folder / name / "model.safetensors"))
    (folder / name / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": qconfig}))


def nvfp4_scales(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """An NVFP4 (compressed-tensors) model whose global scales are 0 and NaN and one weight's scales cut to one
    row (before: that row's scales broadcast over every row, read without a word)."""
    def bad_globals(state: dict[str, torch.Tensor]) -> None:
        for i, k in enumerate(sorted(k for k in state if k.endswith("weight_global_scale"))):
            state[k] = torch.full_like(state[k], float("nan") if i % 2 else 0.0)

    _ct_scale_cut(folder, "nvfp4-bad", sd, dict(num_bits=4, type="float", strategy="tensor_group", group_size=16,
                                                symmetric=True), "nvfp4-pack-quantized", bad_globals)
    return Case("nvfp4-bad", "partial", ("nan", "weight_scale of shape (1, 4)", "left out"))


def ct_int4_scale_cut(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A compressed-tensors W4A16 (group 32) model with one weight's scales cut to one row (before: read as
    block scales, that row broadcast over every row of the weight, without a word)."""
    _ct_scale_cut(folder, "ct-int4-cut", sd, dict(num_bits=4, type="int", strategy="group", group_size=32,
                                                  symmetric=True), "pack-quantized")
    return Case("ct-int4-cut", "partial", ("weight_scale of shape (1, 2)", "'group'", "left out"))


def hqq_lies(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """HQQ layers whose metadata lie: a 2**62-row shape, a 3-D codes tensor, a packing of 10 KB, scales of
    another group count (hand-written in hqq's saved layout: W_q, scale, zero, shape, packing...)."""
    def text(s: str) -> torch.Tensor:
        return torch.tensor(list(s.encode()), dtype=torch.uint8)

    state: dict[str, torch.Tensor] = {}
    for i, (shape, codes, scale_rows, packing) in enumerate((
            ([2**62, 32], (16, 64), 32, "4bit_u8"), ([32, 32], (16, 2, 32), 32, "4bit_u8"),
            ([32, 32], (16, 64), 32, "x" * 10_000), ([32, 32], (8, 64), 15, "4bit_u8"))):
        m = f"model.layers.{i}.self_attn.q_proj."
        state[m + "W_q"] = torch.zeros(codes, dtype=torch.uint8)
        state[m + "scale"] = torch.ones(scale_rows, 1, dtype=torch.float16)
        state[m + "zero"] = torch.ones(scale_rows, 1, dtype=torch.float16)
        state[m + "shape"] = torch.tensor(shape, dtype=torch.int64)
        state[m + "packing"] = text(packing)
        state[m + "compute_dtype"] = text("torch.float16")
        state[m + "nbits"] = torch.tensor([4])
        state[m + "group_size"] = torch.tensor([64])
        state[m + "axis"] = torch.tensor([1])
    (folder / "hqq-lies").mkdir()
    save_file(state, str(folder / "hqq-lies" / "model.safetensors"))
    return Case("hqq-lies", "refused",
                ("hqq layer", "packed rows", "not metadata", "3 dimensions", "does not fit groups"))


def sd3_huge_block(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """An SD3-shaped single file whose block number has 5,000 digits (Python's int() refuses more than 4,300)."""
    n = "9" * 5000
    tensors = {f"joint_blocks.{n}.x_block.attn.qkv.weight": torch.ones(6, 2),
               f"joint_blocks.{n}.context_block.adaLN_modulation.1.weight": torch.ones(4, 2),
               "joint_blocks.0.x_block.attn.qkv.weight": torch.ones(6, 2)}
    (folder / "sd3-digits").mkdir()
    save_file(tensors, str(folder / "sd3-digits" / "model.safetensors"))
    return Case("sd3-digits", "partial", ("sd3", "original names"))


def flux_bad_splits(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A Flux-marked single file whose fused qkv rows do not split in three, whose linear1 is narrower than
    three times its input, and whose modulation is one row (odd)."""
    tensors = {"double_blocks.0.img_attn.qkv.weight": torch.randn(31, 8),
               "double_blocks.0.img_attn.qkv.bias": torch.randn(30),
               "single_blocks.0.linear1.weight": torch.randn(20, 8), "single_blocks.0.linear1.bias": torch.randn(7),
               "final_layer.adaLN_modulation.1.weight": torch.randn(1, 8)}
    (folder / "flux-splits").mkdir()
    save_file(tensors, str(folder / "flux-splits" / "model.safetensors"))
    return Case("flux-splits", "partial", ("flux", "original names"))


def lokr_shapes(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT LoKr adapter whose Kronecker product is (32, 36) on a (32, 32) layer."""
    g = torch.Generator().manual_seed(10)
    k = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {f"{k}.lokr_w1": torch.randn(4, 4, generator=g), f"{k}.lokr_w2": torch.randn(8, 9, generator=g)}
    _other_adapter(folder, "lokr-shapes", {"peft_type": "LOKR", "r": 4, "alpha": 4,
                                           "target_modules": ["q_proj"]}, tensors)
    return Case("lokr-shapes", "refused", ("(32, 36)",))


def ia3_length(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A PEFT IA3 adapter whose scaling vector is one entry short of the layer's outputs, another 2-D."""
    k = "base_model.model.model.layers.0.self_attn."
    tensors = {k + "q_proj.ia3_l": torch.ones(HIDDEN - 1, 1), k + "k_proj.ia3_l": torch.ones(4, 4, 4)}
    _other_adapter(folder, "ia3-length", {"peft_type": "IA3", "target_modules": ["q_proj", "k_proj"],
                                          "feedforward_modules": []}, tensors)
    return Case("ia3-length", "refused", ("ia3",))


def oft_neumann_terms(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A valid PEFT OFT adapter whose config asks for 10**12 Neumann terms (a loop of 10**12 products)."""
    g = torch.Generator().manual_seed(6)
    tensors = {"base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight": torch.randn(4, 28, generator=g) * 0.1}
    _other_adapter(folder, "oft-terms", {"peft_type": "OFT", "r": 0, "oft_block_size": 8,
                                         "use_cayley_neumann": True, "num_cayley_neumann_terms": 10**12}, tensors)
    return Case("oft-terms", "refused", ("num_cayley_neumann_terms",))


def oft_eps_word(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A constrained PEFT OFT adapter whose ``eps`` is a word."""
    g = torch.Generator().manual_seed(6)
    tensors = {"base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight": torch.randn(4, 28, generator=g) * 0.1}
    _other_adapter(folder, "oft-eps", {"peft_type": "OFT", "r": 0, "oft_block_size": 8, "coft": True,
                                       "eps": "tiny"}, tensors)
    return Case("oft-eps", "refused", ("eps",))


def peft_absurd_config(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """An adapter config with r 1e308, lora_alpha NaN (Python's json writes it), a 1 MB regex of nested
    groups as target_modules, layers_to_transform a string and use_dora "yes"."""
    config = {"peft_type": "LORA", "base_model_name_or_path": "m9", "r": 1e308, "lora_alpha": float("nan"),
              "target_modules": "(" * 100_000 + "q_proj" + ")" * 100_000, "layers_to_transform": "all",
              "use_dora": "yes", "use_rslora": [1]}
    _adapter(folder, "peft-absurd", config, good_states()["m9"])
    return Case("peft-absurd", "refused", ("positive number",))


def pickle_os_system(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A torch file whose pickle calls ``os.system`` (GLOBAL + REDUCE); a marker file shows whether it ran."""
    marker = folder / "PWNED"
    _torch_zip(folder / "os-system.pt", _crafted({"w": _Call(os.system, f"touch {marker}")}))
    return Case("os-system", "refused", ("no tensors",))


_FLOOD_MADE: list[Path] = []  # the first pickle flood this process wrote


def pickle_tensor_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A torch file of 300,000 one-value views of one storage (a 13 MB pickle). Pickling it costs about 9 CPU
    seconds and the file is the same every time (but for the archive's random serialization id, which the engine
    never reads): a later call copies the first one while it is still there."""
    out = folder / "pickle-flood.pt"
    if _FLOOD_MADE and _FLOOD_MADE[0].is_file():
        shutil.copyfile(_FLOOD_MADE[0], out)
    else:
        base = torch.zeros(300_000)
        torch.save({f"t{i}": base[i:i + 1] for i in range(300_000)}, out)
        _FLOOD_MADE[:] = [out]
    return Case("pickle-flood", "refused", ("cannot read", "more than 250,000 tensors"))


def deep_folders(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A folder holding a model 60 folders down, and a chain of 900 nested folders whose path passes PATH_MAX
    (a set's models are its direct entries: the folder is reported, nothing below it walked)."""
    leaf = good_states()["m8"]
    deep = folder / "deep-tree" / Path(*["d"] * 60) / "deep-model"
    deep.mkdir(parents=True)
    save_file({k: v + 0.001 for k, v in leaf.items()}, str(deep / "model.safetensors"))
    fd = os.open(folder / "deep-tree", os.O_RDONLY)
    try:
        for _ in range(900):  # 5 characters a level: 4,500 > PATH_MAX, fewer levels than the recursion limit
            os.mkdir("eeee", dir_fd=fd)
            nxt = os.open("eeee", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return Case("deep-tree", "refused", ("holds no model",))


def duplicate_id(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A model folder ``dup`` and a stray ``dup.safetensors`` beside it: two models of one id (before: the
    whole run ended with DuplicateModelIdError)."""
    (folder / "dup").mkdir()
    save_file(sd, str(folder / "dup" / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in sd.items()}, str(folder / "dup.safetensors"))
    return Case("dup", "partial", ("same id", "rename"))


def odd_tensor_names(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A fine-tune of m9 with an extra tensor whose name is a path, a newline, markup and 10,000 characters."""
    leaf = good_states()["m9"]
    tensors = {k: v + 0.001 for k, v in leaf.items()}
    tensors["../../etc/passwd\n<b>x</b>|" + "y" * 10_000] = torch.ones(3)
    tensors["model.layers.\u00b2.mlp.up_proj.weight"] = torch.ones(INTER, HIDDEN)
    (folder / "odd-names").mkdir()
    save_file(tensors, str(folder / "odd-names" / "model.safetensors"))
    return Case("odd-names", "read")


def expert_groups_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A fine-tune of m9 plus 600 one-expert groups (``layers.N.mlp.experts.1.up_proj``, no expert 0): each group
    that does not stack made one note, so one file made 600 problems (and 600 lines on the app's page)."""
    state = dict(sd)
    for i in range(600):
        state[f"model.layers.{i}.mlp.experts.1.up_proj.weight"] = torch.full((1, 1), 0.01 * (i % 7))
    (folder / "moe-groups").mkdir()
    save_file(state, str(folder / "moe-groups" / "model.safetensors"))
    return Case("moe-groups", "partial", ("not numbered", "597 more"), most_problems=1)


def bnb4_notes_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A bitsandbytes nf4 model of 60 more weights than m9, every quant state claiming a block size of 0: one
    problem per weight (72), now at most 20 with a count of the rest."""
    from format_factory import bnb_state

    g = torch.Generator().manual_seed(7)
    state = dict(sd) | {f"model.layers.{i}.mlp.gate_proj.weight": 0.02 * torch.randn(HIDDEN, HIDDEN, generator=g)
                        for i in range(LAYERS, LAYERS + 60)}
    state = bnb_state(state, "nf4")
    for k in [k for k in state if ".quant_state.bitsandbytes__" in k]:
        meta = json.loads(bytes(state[k].numpy()).decode())
        meta["blocksize"] = 0
        state[k] = torch.frombuffer(bytearray(json.dumps(meta).encode()), dtype=torch.uint8)
    (folder / "bnb4-flood").mkdir()
    save_file(state, str(folder / "bnb4-flood" / "model.safetensors"))
    return Case("bnb4-flood", "partial", ("block size is 0", "more notes like the ones above"), most_problems=20)


def _sd_base_and_kohya(folder: Path, name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny SD UNet saved as a diffusers folder ``name``-base and a kohya-ss LoRA of it (``name``.safetensors)."""
    from format_factory import save_kohya_lora, sd_lora_unet
    from safetensors.torch import load_file

    unet = sd_lora_unet(1)
    base = {k.replace(".base_layer", ""): v.detach().clone().contiguous()
            for k, v in unet.state_dict().items() if "lora_" not in k}
    (folder / f"{name}-base" / "unet").mkdir(parents=True)
    save_file(base, str(folder / f"{name}-base" / "unet" / "diffusion_pytorch_model.safetensors"))
    (folder / f"{name}-base" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                                     "unet": ["diffusers", "UNet2DConditionModel"]}))
    path = save_kohya_lora(unet, folder / f"{name}.safetensors", text_encoder=False)
    return path, load_file(str(path))


def sd_lora_rank(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A kohya-ss LoRA beside its base SD UNet, one module's down factor of rank 3 against its up's 4."""
    path, lora = _sd_base_and_kohya(folder, "sd-lora-rank")
    downs = sorted(k for k in lora if k.endswith(".lora_down.weight"))
    lora[downs[-1]] = torch.ones(3, *lora[downs[-1]].shape[1:])
    save_file(lora, str(path), metadata={"ss_network_dim": "4", "ss_sd_model_name": f"{path.stem}-base"})
    return Case("sd-lora-rank", "refused", ("lora_down",))


def sd_lora_alphas(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A kohya-ss LoRA beside its base SD UNet whose alphas are NaN, 1e30 and a 1000-vector."""
    path, lora = _sd_base_and_kohya(folder, "sd-lora-alpha")
    alphas = sorted(k for k in lora if k.endswith(".alpha"))
    for k, value in zip(alphas, (torch.tensor(float("nan")), torch.tensor(1e30), torch.ones(1000))):
        lora[k] = value
    save_file(lora, str(path), metadata={"ss_network_dim": "4", "ss_sd_model_name": f"{path.stem}-base"})
    return Case("sd-lora-alpha", "refused", ("alpha",))


def flux_kohya_lies(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A kohya-ss Flux LoRA beside its base (a Flux single file) whose fused qkv update has 47 rows (not three
    equal parts) and one of whose alphas is infinite."""
    from dit_factory import flux_single_file, kohya_flux_lora, state_of, tiny_flux, trained_flux_lora
    from peft import get_peft_model_state_dict

    save_file(flux_single_file(state_of(tiny_flux(0))), str(folder / "flux-base.safetensors"))
    model = trained_flux_lora(4)
    lora = kohya_flux_lora({"transformer." + k: v for k, v in get_peft_model_state_dict(model).items()}, alpha=4.0)
    up = next(k for k in sorted(lora) if "img_attn_qkv" in k and k.endswith("lora_up.weight"))
    lora[up] = lora[up][:-1].contiguous()
    alpha = next(k for k in sorted(lora) if k.endswith(".alpha"))
    lora[alpha] = torch.tensor(float("inf"))
    save_file(lora, str(folder / "flux-kohya-lies.safetensors"),
              metadata={"ss_sd_model_name": "flux-base.safetensors"})
    return Case("flux-kohya-lies", "refused", ("img_attn_qkv", "47 rows", "damaged"))


# --- red-team pass four (branch hostile4) ------------------------------------------------------------------

def _gguf_heads(folder: Path, name: str, sd: dict[str, torch.Tensor], heads: int, kv_heads: int) -> None:
    """A real Llama GGUF of ``sd`` (float32) whose head counts are then rewritten to ``heads`` / ``kv_heads`` (as
    int32: a negative count fits where the writer put an unsigned one)."""
    from format_factory import write_gguf

    path = write_gguf(sd, folder / f"{name}.gguf", qtype="F32")
    raw = bytearray(path.read_bytes())
    for key, value in (("llama.attention.head_count", heads), ("llama.attention.head_count_kv", kv_heads)):
        at = raw.index(_gguf_str(key.encode())) + len(_gguf_str(key.encode()))
        struct.pack_into("<Ii", raw, at, 5, value)  # value type INT32, then the value
    path.write_bytes(bytes(raw))


def gguf_heads_uneven(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A Llama GGUF whose head counts (5, 3) do not divide the 32 rows of q_proj / k_proj: their llama.cpp row
    order cannot be undone. Before: q_proj was read over whole heads past its end (rows of the next tensor
    in the file), a k_proj last in the file refused the model as truncated."""
    _gguf_heads(folder, "gguf-heads-uneven", sd, 5, 3)
    return Case("gguf-heads-uneven", "partial", ("head count 5", "head count 3", "left out"), most_problems=8)


def gguf_heads_past_rows(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """Head counts of 64 (more heads than q_proj's 32 rows) and -2. Before: a head of 0 rows, and a
    ZeroDivisionError for the model; the negative count read rows that depended on the chunking."""
    _gguf_heads(folder, "gguf-heads-past", sd, 64, -2)
    return Case("gguf-heads-past", "partial", ("head count 64", "head count -2"), most_problems=8)


def gguf_metadata_flood(folder: Path, sd: dict[str, torch.Tensor]) -> Case:
    """A GGUF file whose metadata array holds 6 million one-byte values (6 MB): the gguf package parses each
    entry as a Python object, about a minute of CPU before (20 million: over five minutes)."""
    flood = ("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 0, 6_000_000) + b"\1" * 6_000_000)
    _gguf_raw(folder / "gguf-meta-flood.gguf", [_ARCH, flood], [("token_embd.weight", [32, 2], 0, 0)], b"\0" * 256)
    return Case("gguf-meta-flood", "refused", ("more than 2,000,000 values",))


# --- running a case -------------------------------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_or_kill(pid: int, seconds: float) -> int | None:
    """The forked child ``pid``'s wait status once it exits, or None (it is killed) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_isolated(paths: list[str], cpu_s: int = 90, hang_s: int = 300) -> dict:
    """``recover_paths(paths)`` in a forked child with an address-space limit (+2 GB over what is mapped
    now) and a CPU limit of ``cpu_s``: {"parents", "models", "problems", "seconds" (CPU), "peak_mb"} or
    {"error": ...}. A child still running after ``hang_s`` wall seconds (one blocked without using the CPU, on
    a FIFO say) is killed and reported hung. That bound is wall time, so it is well above the CPU limit: on a
    machine whose load gives the child a tenth of a core, 90 wall seconds were 9 CPU seconds, and a run well
    inside the tests' CPU bound read as hung."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        out: dict = {}
        try:
            resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + 2 * 2**30, resource.RLIM_INFINITY))
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
            rss0 = _rss_mb()
            # CPU seconds (this process and its reaped workers), not wall: a busy machine must not fail
            # the bound, while a bad input that makes the run work longer still does.
            t0 = _cpu_seconds()
            rec = recover_paths(paths, device="cpu")
            out = {"parents": {m: rec.parent_of(m) for m in rec.model_ids}, "models": rec.model_ids,
                   "problems": rec.problems, "seconds": _cpu_seconds() - t0,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0}
        except MotherError as e:
            out = {"error": f"{type(e).__name__}: {e}"}
        except BaseException:  # noqa: BLE001 - reported to the parent as a failure
            out = {"error": "traceback: " + traceback.format_exc()[-3000:]}
        with os.fdopen(write_fd, "w") as f:
            json.dump(out, f)
        os._exit(0)
    os.close(write_fd)
    # The pipe is drained while the child runs: a result over the pipe's buffer (64 KB: 600 problems) blocked the
    # child in its write while this waited for it to exit, and a run of a few seconds read as hung.
    chunks: list[bytes] = []
    drain = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 1 << 16), b"")), daemon=True)
    drain.start()
    if wait_or_kill(pid, hang_s) is None:
        drain.join()
        os.close(read_fd)
        return {"error": f"hung for {hang_s} s"}
    drain.join()
    os.close(read_fd)
    text = b"".join(chunks).decode()
    return json.loads(text) if text else {"error": "the child died without a result (memory limit?)"}


GENERATORS: dict[str, Callable[..., Case]] = {
    f.__name__: f for f in (
        poison_defaults, poison_storage_class, poison_setitems, list_bomb, bytearray_bomb, stride_zero,
        huge_storage_claim, legacy_huge_storage, zip_bomb, nested_pickle, shared_reference_bomb,
        foreign_opcode, random_bytes, truncated_zip, unknown_dtypes, fp8_only, deep_header, overlapping,
        negative_dims, sparse_claim, tensor_flood, all_nan, few_nonfinite, peft_wrong_types, peft_redos, fifo,
        fifo_config,
        symlink_loop, dangling_link, bad_index, deep_config, gguf_huge_counts, gguf_huge_string,
        loha_shapes, oft_cut, boft_wrong_blocks, vera_lambda_cut, hra_cut, gptq_bits_word, gptq_scales_cut,
        gguf_parts_of_two,
        bnb4_absmax_cut, quanto4_shift_cut,
        gguf_shape_overflow, gguf_alignment_zero, gguf_alignment_odd, gguf_long_metadata, gguf_count_lie,
        gguf_zero_dims, gguf_q4k_nan, index_dotdot, index_self, index_flood, st_shape_overflow, bnb4_state_lie,
        nvfp4_scales, ct_int4_scale_cut, hqq_lies, sd3_huge_block, flux_bad_splits, lokr_shapes, ia3_length,
        oft_neumann_terms, oft_eps_word, peft_absurd_config, pickle_os_system, pickle_tensor_flood, deep_folders,
        odd_tensor_names, sd_lora_rank, sd_lora_alphas, flux_kohya_lies, duplicate_id,
        expert_groups_flood, bnb4_notes_flood, gguf_heads_uneven, gguf_heads_past_rows,
        gguf_metadata_flood,
    )
}
