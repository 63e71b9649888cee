"""A file's bytes through a memory map, one chunk at a time, for the decoders of quantized formats.

A quantized chunk is decoded (GGUF blocks, int8 codes times their scales) into the pass's float32 buffer.
Read with ``preadv`` its bytes are first copied from the page cache into a staging buffer: as much work
again as reading the file (``benchmarks/formats.py``). Mapped, the decoder reads the page cache itself.
Plain tensors are still read with ``preadv`` (``readers.SafetensorsReader``): they are copied once anyway.

Resident memory stays bounded: the pages of a chunk are mapped in one call before it is decoded
(``MADV_POPULATE_READ``, Linux 5.14+, where the kernel has it) and let go of right after
(``MADV_DONTNEED``: they stay in the page cache but leave the process), so the mapped part of the
resident set is the chunks in flight, not the file. A file cut short after its header was read would
make a mapped read raise SIGBUS (no Python error): :meth:`FileMap.view` checks the size first and
returns None, and the caller reads with ``preadv``, which reports the short file.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux's value where Python does not name it
#: After this many bytes viewed, every page of the map is let go of (see :meth:`FileMap.view`).
RELEASE_EVERY = 32 << 20


class FileMap:
    """A private, never written map of one open file (``fileno``), or nothing where mapping is refused."""

    def __init__(self, fileno: int) -> None:
        self._map: mmap.mmap | None = None
        self._bytes: np.ndarray | None = None
        self._populate = True
        self._viewed = 0  # bytes viewed since the last release of the whole map
        self._fileno = fileno
        self._lock = threading.Lock()  # the pass's two workers may map the same file at once
        self._failed = not hasattr(mmap.mmap, "madvise")  # Windows: no madvise, no bounded residency

    def _array(self) -> np.ndarray | None:
        with self._lock:
            if self._bytes is None and not self._failed:
                try:
                    # Copy-on-write and never written: numpy sees it writable, as the compiled kernels'
                    # signatures want, and the file can never be changed through it.
                    self._map = mmap.mmap(self._fileno, 0, access=mmap.ACCESS_COPY)
                    self._bytes = np.frombuffer(self._map, dtype=np.uint8)
                except (OSError, ValueError):
                    self._failed = True
            return self._bytes

    @staticmethod
    def _pages(start: int, stop: int) -> tuple[int, int]:
        first = start // mmap.PAGESIZE * mmap.PAGESIZE
        return first, stop - first

    @contextmanager
    def view(self, start: int, stop: int) -> Iterator[np.ndarray | None]:
        """Bytes ``[start, stop)`` of the file as a uint8 array, valid inside the ``with`` block only (its
        pages are released on leaving it); None where the file is not mapped or is now shorter than
        ``stop``."""
        arr = self._array()
        if arr is None or stop > arr.size or os.fstat(self._fileno).st_size < stop:
            yield None
            return
        assert self._map is not None
        if self._populate:
            try:
                self._map.madvise(_POPULATE_READ, *self._pages(start, stop))
            except OSError:
                self._populate = False  # an older kernel: the pages fault in as they are read
        try:
            yield arr[start:stop]
        finally:
            # The chunk's pages, and now and then all pages: the kernel also maps neighbours of a faulted
            # page ("fault-around") and the pass's two workers read pieces of many tensors, so releasing
            # exact windows alone let ~80 MB of mapped pages gather during a 2 GB pass. A page another
            # worker is reading meanwhile is faulted in again, from the page cache.
            with self._lock:
                self._viewed += stop - start
                whole = self._viewed >= RELEASE_EVERY
                if whole:
                    self._viewed = 0
            try:
                self._map.madvise(mmap.MADV_DONTNEED, *((0, len(self._map)) if whole else self._pages(start, stop)))
            except (OSError, ValueError):
                pass  # closed meanwhile, or a hint refused: the pages go with the map

    def close(self) -> None:
        mapped, self._map, self._bytes = self._map, None, None
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:
                pass  # a view of it is still alive somewhere: the map goes with it
