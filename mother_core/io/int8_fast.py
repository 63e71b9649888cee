"""A compiled widen-and-scale kernel for int8 weights with one scale per row (bitsandbytes int8, quanto int8).

``W[r] = float32(q[r]) * scale[r]`` is two passes over a float32 chunk in torch (widen with ``copy_``, then
``mul_``; ``torch.mul(int8, float, out=...)`` is slower still: it casts element by element), about three
times the cost of reading the int8 bytes. This numba kernel makes one pass: it reads each code once and
writes each float once, with the GIL released so both pass workers decode at once. The products are the
same float32 operations as the torch path, so the values are bit-identical (``tests/test_formats.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNEL: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None


def available() -> bool:
    """Whether numba is there to compile the kernel."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _build() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    from numba import njit

    @njit(cache=True, nogil=True)
    def scale_rows(q: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        rows, cols = out.shape
        for r in range(rows):
            s = scale[r]
            for c in range(cols):
                out[r, c] = np.float32(q[r, c]) * s

    return scale_rows


def kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """The compiled kernel itself, for a caller that has checked its arguments (int8 (r, c), float32 (r,),
    float32 (r, c), all contiguous) and calls it once per small piece: no checks per call."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _build()
    return _KERNEL


def scale_rows(q: np.ndarray, scale: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[r, :] = float32(q[r, :]) * scale[r]``.

    Parameters
    ----------
    q : numpy.ndarray
        int8, (rows, cols), contiguous.
    scale : numpy.ndarray
        float32, (rows,) (one per row; a scalar scale broadcast by the caller).
    out : numpy.ndarray
        float32, (rows, cols), contiguous; filled in place and returned.
    """
    if q.shape != out.shape or q.ndim != 2 or scale.shape != (q.shape[0],) or out.dtype != np.float32 \
            or q.dtype != np.int8 or scale.dtype != np.float32:
        raise ValueError(f"scale_rows needs int8 (r, c), float32 (r,), float32 (r, c); got {q.dtype}{q.shape}, "
                         f"{scale.dtype}{scale.shape}, {out.dtype}{out.shape}")
    kernel()(np.ascontiguousarray(q), np.ascontiguousarray(scale), out)
    return out
