"""Cheap checks of weight files that read headers only, never tensor data.

Discovery uses them to report a truncated or foreign file as a problem before any pass starts; the
readers use :func:`safetensors_header` to list tensors without opening them.
"""

from __future__ import annotations

import os
import zipfile

from mother_core.errors import UnreadableCheckpointError
from mother_core.io.filekind import not_a_regular_file
from mother_core.io.safetensors_header import DTYPES, read_header

#: safetensors dtype codes -> torch dtype names (``TensorInfo.dtype``); see :mod:`.safetensors_header`.
SAFETENSORS_DTYPES: dict[str, str] = {code: name for code, (name, _) in DTYPES.items()}


def _unreadable(path: str, why: str) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"Cannot read {path}: {why}. The file is truncated or corrupt: re-download or remove it.", path
    )


def safetensors_header(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor names, shapes and dtypes of a ``.safetensors`` file, from its validated JSON header.

    A thin view of :func:`mother_core.io.safetensors_header.read_header` (the one parser; memoised, so
    calling both costs one parse). Tensors of dtypes the engine does not compare are left out.

    Raises
    ------
    UnreadableCheckpointError
        If the header is malformed or the file is shorter than the header says (truncated download).
    """
    return read_header(path).shapes()


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
    why = not_a_regular_file(path)
    if why:
        raise _unreadable(path, why)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise _unreadable(path, e.strerror or str(e)) from e
    if magic[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as zf:
                if not any(n.endswith("data.pkl") for n in zf.namelist()):
                    raise _unreadable(path, "it is a zip archive without a torch data.pkl record")
                check_zip_members(path, zf)
        except zipfile.BadZipFile as e:
            raise _unreadable(path, f"its zip directory is damaged ({e})") from e
        return "zip"
    if magic[:1] == b"\x80":  # pickle protocol >= 2 opcode
        return "legacy"
    if len(magic) == 4 and magic[3:4] == b"\x00" and looks_like_safetensors(path):
        raise _unreadable(path, "it is a safetensors file with a PyTorch extension; rename it to .safetensors")
    raise _unreadable(path, "it is not a PyTorch checkpoint (neither zip nor pickle)")


#: A member may expand at most this much (torch stores members uncompressed; deflated weights shrink ~10%).
MAX_ZIP_RATIO = 8
#: Slack for tiny compressed members (a pickle of names compresses well).
ZIP_SLACK_BYTES = 16 * 1024 * 1024


def check_zip_members(path: str, zf: zipfile.ZipFile) -> None:
    """Refuse a zip whose directory claims more than the file can hold (a zip bomb), before reading.

    ``torch.save`` stores members uncompressed, so each member's size equals its stored size; a member
    that would expand more than :data:`MAX_ZIP_RATIO` times (plus :data:`ZIP_SLACK_BYTES`) is not a
    checkpoint but a bomb.
    """
    total = 0
    for info in zf.infolist():
        limit = info.compress_size * MAX_ZIP_RATIO + ZIP_SLACK_BYTES
        if info.file_size > limit:
            raise _unreadable(path, f"its zip member {info.filename[:80]!r} would expand from "
                                    f"{info.compress_size} to {info.file_size} bytes (a zip bomb?)")
        total += info.compress_size
    size = os.path.getsize(path)
    if total > size:
        raise _unreadable(path, f"its zip directory claims {total} bytes of members but the file holds {size}")


def looks_like_safetensors(path: str) -> bool:
    """True when the file starts like a safetensors file: an 8-byte header length that fits the file, then ``{``.

    The length check matters: one random file in 256 has ``{`` at byte 8, and such noise must stay "not a
    PyTorch checkpoint" rather than become a safetensors file with a broken header.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) != 9 or head[8:9] != b"{":
        return False
    header_bytes = int.from_bytes(head[:8], "little")
    return header_bytes + 8 <= size
