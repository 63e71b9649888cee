"""Cheap checks of weight files that read headers only, never tensor data.

Discovery uses them to report a truncated or foreign file as a problem before any pass starts; the
readers use :func:`safetensors_header` to list tensors without opening them.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile

from mother_core.errors import UnreadableCheckpointError

#: safetensors dtype codes -> torch dtype names (``TensorInfo.dtype``).
SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}

_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


def _unreadable(path: str, why: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated or corrupt: re-download or remove it.", path
    )


def safetensors_header(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor names, shapes and dtypes of a ``.safetensors`` file, from its JSON header only.

    Parameters
    ----------
    path : str
        A ``.safetensors`` file.

    Returns
    -------
    dict
        Raw tensor name -> (shape, torch dtype name), in header order.

    Raises
    ------
    UnreadableCheckpointError
        If the header is malformed or the file is shorter than the header says (truncated download).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise _unreadable(path, "the file is shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise _unreadable(path, "the header length is impossible for this file size")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _unreadable(path, f"its safetensors header is not valid ({e})") from e
    if not isinstance(header, dict):
        raise _unreadable(path, "its safetensors header is not a JSON object")
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(d) for d in meta["shape"])
            dtype = SAFETENSORS_DTYPES.get(meta["dtype"], str(meta["dtype"]).lower())
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise _unreadable(path, f"the header entry for {name!r} is malformed") from e
        out[name] = (shape, dtype)
    if 8 + n + end > size:
        raise _unreadable(path, f"it holds {size} bytes but its header describes {8 + n + end}")
    return out


def check_torch_file(path: str) -> str:
    """Say whether a PyTorch checkpoint looks readable, from its first bytes (and zip directory).

    Returns
    -------
    str
        ``"zip"`` for the zip format (``torch.save`` since 1.6), ``"legacy"`` for the pre-zip pickle
        format.

    Raises
    ------
    UnreadableCheckpointError
        If the file is neither (foreign or corrupt), or a zip whose directory is missing (truncated).
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise _unreadable(path, str(e)) from e
    if magic[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                if not any(n.endswith("data.pkl") for n in zf.namelist()):
                    raise _unreadable(path, "it is a zip archive without a torch data.pkl record")
        except zipfile.BadZipFile as e:
            raise _unreadable(path, f"its zip directory is damaged ({e})") from e
        return "zip"
    if magic[:1] == b"\x80":  # pickle protocol >= 2 opcode
        return "legacy"
    if len(magic) == 4 and magic[3:4] == b"\x00" and looks_like_safetensors(path):
        raise _unreadable(path, "it is a safetensors file with a PyTorch extension; rename it to .safetensors")
    raise _unreadable(path, "it is not a PyTorch checkpoint (neither zip nor pickle)")


def looks_like_safetensors(path: str) -> bool:
    """True when the file starts like a safetensors file (8-byte length, then ``{``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"
