"""A file's bytes in small pieces that stay in the core's cache, for the decoders of quantized formats.

A quantized chunk (GGUF blocks, int8 codes with their scales) is decoded into the pass's float32 chunk
buffer. Its bytes are read with ``preadv`` in pieces of about :data:`PIECE_BYTES` (whole blocks or rows)
into one reused buffer per thread, and each piece is decoded as soon as it has arrived: the copy out of the
page cache lands in the L2 cache and the decoder reads it from there, so reading the bytes costs what a
``read()`` into a small buffer costs (less than the same ``read()`` into a chunk-sized buffer, whose
stores go out to memory). ``benchmarks/RESULTS.md`` ("Reading quantized formats") has the measurements:

* a staging buffer the size of the chunk (megabytes): its copy costs as much as the ``read()`` it is
  measured against, and the decoder reads it back from memory;
* decoding straight from a memory map of the file (the former way here): no copy, but each chunk's pages
  had to be mapped (``MADV_POPULATE_READ``) and let go of (``MADV_DONTNEED``, to keep the resident set
  bounded). That cost depends on the size of the page cache's folios: 0.02 s per GB on a freshly booted
  machine, 0.14 s per GB (more than a ``read()`` of the same bytes) once memory was fragmented, and the
  map's decode ran 1.3-1.6x slower than decoding the same bytes from pieces.

Decoding is parallel over pieces (:func:`decode`): reading a chunk's bytes is one stream from the disk,
but warm it is a copy out of the page cache, and each piece's copy and decode are independent of the
others' (the copy into a thread's own staging buffer, the decode into its own slice of the output), so
up to :func:`decode_threads` threads share a chunk's pieces, taking the next piece as each finishes. The
threads are a process-wide pool (the pass's two workers draw on the same threads, and count against the
setting: :func:`shared_by`); the calling thread decodes too and never waits for a helper that has not
started, so a busy pool costs nothing but the parallelism. Values are the same bit for bit whatever the
number of threads: each value is decoded by the same kernel from the same bytes, only by another thread
(``tests/test_formats.py``).

Resident memory stays at one piece per thread. A file cut short after its header was read gives a short
read, reported by the caller (:class:`ShortRead`), never a SIGBUS.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from mother_core.device import settle_torch_threads

#: Bytes read per piece: a quarter of a core's L2 (1 MiB here), so the piece stays cached while it is
#: decoded; 64-256 KiB measured alike, 512 KiB and more slower (``benchmarks/RESULTS.md``).
PIECE_BYTES = 256 << 10

_LOCAL = threading.local()  # one staging buffer per thread (the pass reads from two workers)
_HAS_PREADV = hasattr(os, "preadv")
#: A read that returns at once with what the page cache holds, never waiting for the disk (Linux 4.14+).
_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


#: Decode threads asked for (the ``decode_threads`` run setting, :mod:`mother_core.settings`); 0: every
#: core this process may run on. Set by :func:`set_decode_threads`.
_THREADS_ASKED = 0
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (helpers, process id, pool)
_POOL_LOCK = threading.Lock()
_CALLERS = 0  # threads that call decode() at once, each on its own chunk (the pass's workers): shared_by()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def set_decode_threads(threads: int) -> None:
    """How many threads decode one chunk of a quantized format (the ``decode_threads`` run setting):
    0 for every core available to the process, 1 for the calling thread alone."""
    global _THREADS_ASKED
    if threads < 0:
        from mother_core.errors import InputError

        raise InputError(f"decode threads must be 0 (every core available) or more, got {threads}")
    _THREADS_ASKED = int(threads)


def decode_threads() -> int:
    """The threads that decode one chunk (:func:`set_decode_threads`); 1 where there is no positional
    read (Windows: the pieces would share the file's position)."""
    if not _HAS_PREADV:
        return 1
    return _THREADS_ASKED or available_cores()


@contextmanager
def shared_by(callers: int) -> Iterator[None]:
    """While ``callers`` threads each decode their own chunks at once (the pass's two workers), the helpers
    are the threads left over: ``decode_threads() - callers`` of them, so the threads decoding never
    outnumber the threads asked for. On two cores the pass's workers then decode alone, as before the
    setting: one helper beside them made the pass slower (``benchmarks/RESULTS.md``)."""
    global _CALLERS
    with _POOL_LOCK:
        _CALLERS += callers
    try:
        yield
    finally:
        with _POOL_LOCK:
            _CALLERS -= callers


def _helpers() -> int:
    """Helper threads one decode() call may use besides its caller."""
    return decode_threads() - max(1, _CALLERS)


def _pool(helpers: int) -> ThreadPoolExecutor:
    """The process-wide helper threads, made (again) when the number asked for changes."""
    global _POOL
    with _POOL_LOCK:
        # A forked child has the parent's pool object but not its threads: it makes its own.
        if _POOL is None or _POOL[:2] != (helpers, os.getpid()):
            settle_torch_threads()  # the helpers' decoders may call torch
            old = _POOL
            _POOL = (helpers, os.getpid(), ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="mother-decode"))
            if old is not None and old[1] == os.getpid():
                old[2].shutdown(wait=False)  # its queued helpers still run, find the work done and return
        return _POOL[2]


class ShortRead(OSError):
    """The file ended before the bytes asked for (cut short after its header was read)."""


def _staging(nbytes: int) -> np.ndarray:
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _LOCAL.buf = np.empty(max(nbytes, PIECE_BYTES), dtype=np.uint8)
    return buf


def pieces(handle: io.FileIO, start: int, stop: int, unit: int) -> Iterator[tuple[int, np.ndarray]]:
    """Bytes ``[start, stop)`` of an open file, read in pieces of whole ``unit``-byte units (blocks, rows).

    Yields ``(first unit, bytes)`` for each piece: ``bytes`` is a uint8 view of this thread's staging
    buffer, valid until the next piece is read.

    Raises
    ------
    ShortRead
        The file ends before ``stop``.
    ValueError
        ``stop - start`` is not a whole number of units.
    """
    total, per_piece = _piece_bytes(start, stop, unit)
    buf = _staging(per_piece)
    for off in range(0, total, per_piece):
        yield off // unit, _read_piece(handle, buf, start, off, min(per_piece, total - off), total)


def _piece_bytes(start: int, stop: int, unit: int) -> tuple[int, int]:
    """Bytes of the range, and bytes per piece (whole units)."""
    total = stop - start
    if unit <= 0 or total % unit:
        raise ValueError(f"{total} bytes are not whole units of {unit} bytes")
    return total, max(1, PIECE_BYTES // unit) * unit


def _read_piece(handle: io.FileIO, buf: np.ndarray, start: int, off: int, n: int, total: int) -> np.ndarray:
    """Bytes ``[start + off, start + off + n)`` of the file into ``buf[:n]``."""
    piece = buf[:n]
    view = memoryview(piece)  # type: ignore[arg-type]  # a numpy array is a buffer
    done = 0
    while done < n:
        if _HAS_PREADV:
            got = os.preadv(handle.fileno(), [view[done:]], start + off + done)
        else:  # Windows: no positional read in os (decode_threads() is 1 there)
            handle.seek(start + off + done)
            got = handle.readinto(view[done:])
        if not got:
            raise ShortRead(f"the file ends {total - off - done} bytes before the range read")
        done += got
    return piece


def _read_cached(handle: io.FileIO, buf: np.ndarray, start: int, off: int, n: int) -> np.ndarray | None:
    """Bytes ``[start + off, start + off + n)`` into ``buf[:n]`` if the page cache holds them all now,
    else None, without waiting for the disk (``RWF_NOWAIT``; None too where the file system refuses it)."""
    piece = buf[:n]
    try:
        got = os.preadv(handle.fileno(), [memoryview(piece)], start + off, _NOWAIT)  # type: ignore[arg-type]
    except OSError:  # EAGAIN: not all in memory; EOPNOTSUPP: no such reads here
        return None
    return piece if got == n else None


class _Shared:
    """The pieces of one :func:`decode` call, taken one at a time by whichever thread is free."""

    def __init__(self, count: int) -> None:
        self.cond = threading.Condition()
        self.next = itertools.count()  # next() on it is atomic under the GIL: no lock per piece
        self.count = count
        self.active = 0  # helpers inside run()
        self.closed = False  # the caller is done: helpers that start later return at once
        self.error: BaseException | None = None
        self.left: list[int] = []  # pieces a helper found not in memory: read by the caller, in order

    def take(self) -> int | None:
        k = next(self.next)
        return None if self.error is not None or k >= self.count else k


def decode(
    handle: io.FileIO,
    start: int,
    stop: int,
    unit: int,
    fn: Callable[[int, np.ndarray], None],
    threads: int | None = None,
) -> None:
    """Bytes ``[start, stop)`` of an open file read in pieces of whole ``unit``-byte units, each passed to
    ``fn(first unit, bytes)`` as soon as it has arrived, by up to ``threads`` threads at once.

    ``fn`` decodes a piece into its own part of the output (a numba kernel that releases the GIL); the
    bytes are a view of the calling thread's staging buffer, valid during the call. ``threads`` defaults
    to :func:`decode_threads`; the calling thread takes pieces too, and the helpers of the process-wide
    pool join while they are free, so with one thread (or one piece) this is :func:`pieces` in a loop.
    Helpers take only pieces the page cache already holds (a cold file is read by the caller alone, in
    order); a piece a helper finds missing is handed back to the caller.

    Raises
    ------
    ShortRead
        The file ends before ``stop`` (after every thread has stopped).
    ValueError
        ``stop - start`` is not a whole number of units.
    """
    total, per_piece = _piece_bytes(start, stop, unit)
    count = -(-total // per_piece)
    helpers = _helpers() if threads is None else max(1, threads) - 1
    wanted = min(helpers + 1, count)
    if wanted <= 1 or not _HAS_PREADV:
        for first, piece in pieces(handle, start, stop, unit):
            fn(first, piece)
        return
    shared = _Shared(count)

    def run(helper: bool) -> None:
        with shared.cond:
            if helper and shared.closed:
                return
            shared.active += helper
        try:
            buf = _staging(per_piece)
            while (k := shared.take()) is not None:
                off = k * per_piece
                n = min(per_piece, total - off)
                if helper and _NOWAIT:
                    # Helpers take only pieces already in memory: a cold file stays one sequential stream
                    # of the caller's reads (two threads' interleaved reads of a cold file defeat the
                    # kernel's read-ahead: the cold Q4_K pair took 2.4x longer so, benchmarks/RESULTS.md).
                    piece = _read_cached(handle, buf, start, off, n)
                    if piece is None:
                        shared.left.append(k)
                        return
                else:
                    piece = _read_piece(handle, buf, start, off, n, total)
                fn(off // unit, piece)
        except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
            with shared.cond:
                shared.error = shared.error or e
        finally:
            with shared.cond:
                shared.active -= helper
                shared.cond.notify_all()

    pool = _pool(helpers)  # sized by the setting, not by this range: made once per setting
    for _ in range(wanted - 1):
        pool.submit(run, True)
    run(False)
    with shared.cond:
        shared.closed = True
        while shared.active:  # a helper still decoding a piece into the caller's output
            shared.cond.wait()
    if shared.error is not None:
        raise shared.error
    buf = _staging(per_piece)
    for k in sorted(shared.left):  # handed back by helpers: not in memory when they tried
        off = k * per_piece
        fn(off // unit, _read_piece(handle, buf, start, off, min(per_piece, total - off), total))
