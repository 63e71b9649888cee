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

Resident memory stays at one piece per thread. A file cut short after its header was read gives a short
read, reported by the caller (:class:`ShortRead`), never a SIGBUS.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import numpy as np

#: Bytes read per piece: a quarter of a core's L2 (1 MiB here), so the piece stays cached while it is
#: decoded; 64-256 KiB measured alike, 512 KiB and more slower (``benchmarks/RESULTS.md``).
PIECE_BYTES = 256 << 10

_LOCAL = threading.local()  # one staging buffer per thread (the pass reads from two workers)
_HAS_PREADV = hasattr(os, "preadv")


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
    total = stop - start
    if unit <= 0 or total % unit:
        raise ValueError(f"{total} bytes are not whole units of {unit} bytes")
    per_piece = max(1, PIECE_BYTES // unit) * unit
    buf = _staging(per_piece)
    fd = handle.fileno()
    for off in range(0, total, per_piece):
        n = min(per_piece, total - off)
        piece = buf[:n]
        view = memoryview(piece)  # type: ignore[arg-type]  # a numpy array is a buffer
        done = 0
        while done < n:
            if _HAS_PREADV:
                got = os.preadv(fd, [view[done:]], start + off + done)
            else:  # Windows: no positional read in os (the pass reads one model from one thread at a time)
                handle.seek(start + off + done)
                got = handle.readinto(view[done:])
            if not got:
                raise ShortRead(f"the file ends {total - off - done} bytes before the range read")
            done += got
        yield off // unit, piece
