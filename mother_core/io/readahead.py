"""Read-ahead hints issued by one background thread, so the thread that decodes never waits on them.

The pass hints the next chunks of every model (``POSIX_FADV_WILLNEED``) while it reduces the current
one, so a cold file's bytes arrive while the CPU works. The hint is not free for the caller: the kernel
allocates the page-cache pages and submits the reads inside the call, and it sleeps there when the
device's request queue is full, which is exactly when a cold disk is the bottleneck. Measured on a
shared disk (``benchmarks/RESULTS.md``, "Reading quantized checkpoints"), a decoder that hinted
inline stalled in these calls; one thread that takes the hints from a short queue keeps the device
busy and the decoder decoding.

Each queued hint holds its own duplicate of the file descriptor (closed after the hint), so a reader
that closes its file meanwhile can never have the hint land on another file that reused the number.
Hints are dropped when the queue is full (the device is that far behind: more hints would not help)
and in a child after ``fork`` until it hints again (the thread is not inherited; a new one starts).
"""

from __future__ import annotations

import os
import queue
import threading

#: Hints waiting at most (about 4 chunks ahead for each of a pass's models and workers).
PENDING_MAX = 64

_queue: queue.Queue[tuple[int, int, int]] | None = None
_lock = threading.Lock()


def _work(q: queue.Queue[tuple[int, int, int]]) -> None:
    while True:
        fd, offset, length = q.get()
        try:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # a hint: the read itself reports real problems
        finally:
            os.close(fd)
            q.task_done()


def _started() -> queue.Queue[tuple[int, int, int]]:
    global _queue
    with _lock:
        if _queue is None:
            q: queue.Queue[tuple[int, int, int]] = queue.Queue(maxsize=PENDING_MAX)
            threading.Thread(target=_work, args=(q,), name="mother-readahead", daemon=True).start()
            _queue = q
        return _queue


def _forget_in_child() -> None:
    global _queue, _lock
    _queue, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def available() -> bool:
    """Whether the OS takes read-ahead hints (``posix_fadvise``: Linux and most Unixes, not Windows)."""
    return hasattr(os, "posix_fadvise")


def hint(fileno: int, offset: int, length: int) -> None:
    """Ask the OS to start reading ``length`` bytes at ``offset`` of the open file ``fileno``, from the
    background thread; returns at once. A hint only: it may be dropped, and it never raises."""
    if length <= 0 or not available():
        return
    try:
        fd = os.dup(fileno)
    except OSError:
        return
    try:
        _started().put_nowait((fd, offset, length))
    except queue.Full:
        os.close(fd)


def settle() -> None:
    """Wait until every queued hint has been issued and its descriptor closed."""
    q = _queue
    if q is not None:
        q.join()
