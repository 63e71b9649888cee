"""Say what a path really is before opening it: opening a FIFO blocks forever, a symlink loop or a
dangling link fails with a cryptic errno, and a device file can stream without end.

Used by discovery and every reader so that such a path becomes a clear :class:`~mother_core.io.base.Problem`
("a named pipe (FIFO), not a file") rather than a hang or "missing".
"""

from __future__ import annotations

import errno
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
