"""Say what a path really is before opening it: opening a FIFO blocks forever, a symlink loop or a
dangling link fails with a cryptic errno, and a device file can stream without end.

Used by discovery and every reader so that such a path becomes a clear :class:`~mother_core.io.base.Problem`
("a named pipe (FIFO), not a file") rather than a hang or "missing".
"""

from __future__ import annotations

import errno
import json
import os
import stat


def not_a_regular_file(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a weight file, or None when it is a regular file.

    Never opens the path (so never blocks on a FIFO).

    Examples
    --------
    >>> not_a_regular_file("/dev/null")
    'it is a character device, not a regular file'
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "it is a symbolic link that loops back on itself"
        if e.errno == errno.ENOENT:
            if os.path.islink(path):
                return f"it is a symbolic link to {os.readlink(path)!r}, which does not exist"
            return "it does not exist"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return e.strerror or str(e)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return f"it is {what}, not a regular file"
    return "it is not a regular file"


#: Largest metadata file read (config.json, an index of shards, adapter_config.json).
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_text_file(path: str | os.PathLike[str], limit: int) -> str:
    """At most ``limit`` characters of a regular file as text (undecodable bytes replaced).

    Never opens a FIFO or a device (that could block forever). Raises OSError with a readable message.
    """
    why = not_a_regular_file(path)
    if why:
        raise OSError(why)
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(limit)


def read_bytes_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a result or truth file).

    Never opens a FIFO or a device: a ``result.json`` linked to ``/dev/zero`` read without end (the app's
    memory) and one that is a FIFO blocked its page forever. Raises OSError with a readable message
    (``FileNotFoundError`` when there is nothing at ``path``).
    """
    why = not_a_regular_file(path)
    if why == "it does not exist":
        raise FileNotFoundError(errno.ENOENT, why, str(path))
    if why:
        raise OSError(why)
    with open(path, "rb") as f:
        # Asked for ``limit + 1`` bytes, ``read`` allocated that much first (1 GiB for every result opened, however
        # small): ask for what the file holds, one more to see it is past the limit
        data = f.read(min(limit, os.fstat(f.fileno()).st_size) + 1)
    if len(data) > limit:
        raise OSError(f"it is larger than {limit:,} bytes")
    return data


def read_json_file(path: str | os.PathLike[str]) -> object:
    """A JSON metadata file (config.json and the like), parsed with the same care as weights: a size
    limit, no FIFOs, and deep nesting (which overflows ``json``'s recursion) reported as ValueError.

    Raises OSError when it cannot be read, ValueError when it is not (reasonable) JSON.
    """
    text = read_text_file(path, MAX_JSON_BYTES + 1)
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"it is larger than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it nests too deeply") from None
