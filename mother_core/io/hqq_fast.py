"""A compiled decoder of HQQ's codes packed down the rows (:mod:`mother_core.io.hqq_quantized`).

HQQ packs the codes of a grouped weight down its rows (row ``i`` of the grouped matrix sits in one slot of
row ``i % P`` of ``W_q``), so the compiled decoder of codes packed along a row
(:mod:`mother_core.io.compressed_fast`) does not apply. With one scale and zero per grouped row (HQQ's
default ``axis`` 1), a row's codes take only ``2 ** bits`` values: the caller computes them in torch, as
the library does (``(code - zero) * scale`` in the compute dtype), into a small table per row, and this
kernel makes the one pass that remains: each code is shifted out of its stored word and looks its value up
(a word read, a float write), with the GIL released so that the pass's workers decode at once. The values
are the torch path's, bit for bit, since the table holds the same torch results (``tests/test_hqq_quantized.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNEL: Callable[..., None] | None = None


def _build() -> Callable[..., None]:
    from numba import njit

    @njit(cache=True, nogil=True)
    def gather(words: np.ndarray, source_row: np.ndarray, shift: np.ndarray, mask: int, table: np.ndarray,
               offset: int, out: np.ndarray) -> None:  # pragma: no cover - compiled
        cols = words.shape[1]
        n = out.shape[0]
        for i in range(source_row.shape[0]):
            w = words[source_row[i]]
            s = shift[i]
            t = table[i]
            base = i * cols - offset  # the flat position of this grouped row's first code in ``out``
            j0 = max(0, -base)
            j1 = min(cols, n - base)
            for j in range(j0, j1):
                out[base + j] = t[(np.int64(w[j]) >> s) & mask]

    return gather


def gather(words: np.ndarray, source_row: np.ndarray, shift: np.ndarray, bits: int, table: np.ndarray,
           offset: int, out: np.ndarray) -> np.ndarray:
    """``out[i * C + j - offset] = table[i, (words[source_row[i], j] >> shift[i]) & (2 ** bits - 1)]`` for
    the positions that fall in ``out``.

    Parameters
    ----------
    words : numpy.ndarray
        uint8 or int32 (stored rows, C): the packed rows a chunk needs.
    source_row, shift : numpy.ndarray
        int64 (rows,): for each grouped row of the chunk, its row in ``words`` and the shift of its slot.
    bits : int
        Bits a code.
    table : numpy.ndarray
        float32 (rows, 2 ** bits): each grouped row's value of each code.
    offset : int
        Flat position of ``out[0]`` from the first grouped row's first code.
    out : numpy.ndarray
        float32, 1-D, contiguous: filled in place and returned.
    """
    rows = source_row.shape[0]
    if words.ndim != 2 or words.dtype not in (np.uint8, np.int32) or shift.shape != (rows,) \
            or table.shape != (rows, 1 << bits) or table.dtype != np.float32 or out.dtype != np.float32 \
            or out.ndim != 1 or not out.flags.c_contiguous or offset < 0 \
            or (rows and (source_row.min() < 0 or source_row.max() >= words.shape[0])) \
            or offset + out.shape[0] > rows * words.shape[1]:
        raise ValueError(f"gather: words {words.dtype}{words.shape}, table {table.dtype}{table.shape}, "
                         f"out {out.dtype}{out.shape} do not fit {rows} rows of {bits}-bit codes")
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    _KERNEL(np.ascontiguousarray(words), np.ascontiguousarray(source_row, dtype=np.int64),
            np.ascontiguousarray(shift, dtype=np.int64), (1 << bits) - 1, np.ascontiguousarray(table), offset, out)
    return out
