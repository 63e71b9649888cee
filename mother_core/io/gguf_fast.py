"""Compiled dequantizers for the most common GGUF types (Q8_0, Q4_0, Q4_K), bit-identical to ``gguf``'s.

:func:`gguf.quants.dequantize` is written with numpy over groups of 16 rows: correct for every type, but
it makes several full-size temporaries per block and runs at a few hundred million values a second, ten
times slower than reading the bytes. These numba kernels decode one block at a time straight into the
output (one pass, no temporaries, the GIL released so both pass workers decode at once). They follow the
block layouts of ggml (``ggml-common.h``: ``block_q8_0``, ``block_q4_0``, ``block_q4_K``) exactly as the
package's numpy code reads them, and ``tests/test_formats.py`` checks they agree with it bit for bit.
Every other type goes through the package.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_KERNELS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] | None = None


def _build() -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]]:
    from numba import njit

    @njit(cache=True, nogil=True)
    def q8_0(src: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(d.shape[0]):
            s = d[b]
            base = b * 34 + 2
            o = b * 32
            for i in range(32):
                v = np.int32(src[base + i])
                if v > 127:
                    v -= 256
                out[o + i] = np.float32(v) * s

    @njit(cache=True, nogil=True)
    def q4_0(src: np.ndarray, d: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        for b in range(d.shape[0]):
            s = d[b]
            base = b * 18 + 2
            o = b * 32
            for i in range(16):
                q = src[base + i]
                out[o + i] = np.float32(np.int32(q & 0x0F) - 8) * s
                out[o + 16 + i] = np.float32(np.int32(q >> 4) - 8) * s

    @njit(cache=True, nogil=True)
    def q4_k(src: np.ndarray, dd: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
        sc = np.empty(8, dtype=np.float32)
        mn = np.empty(8, dtype=np.float32)
        for b in range(dd.shape[0]):
            d = dd[b, 0]
            dmin = dd[b, 1]
            s = b * 144 + 4  # 12 bytes of 6-bit scales and mins
            for j in range(4):
                lo = src[s + j]
                mid = src[s + 4 + j]
                hi = src[s + 8 + j]
                sc[j] = d * np.float32(lo & 0x3F)
                mn[j] = dmin * np.float32(mid & 0x3F)
                sc[4 + j] = d * np.float32((hi & 0x0F) | ((lo >> 2) & 0x30))
                mn[4 + j] = dmin * np.float32((hi >> 4) | ((mid >> 2) & 0x30))
            qs = b * 144 + 16
            o = b * 256
            for c in range(4):
                for i in range(32):
                    q = src[qs + c * 32 + i]
                    out[o + (2 * c) * 32 + i] = sc[2 * c] * np.float32(q & 0x0F) - mn[2 * c]
                    out[o + (2 * c + 1) * 32 + i] = sc[2 * c + 1] * np.float32(q >> 4) - mn[2 * c + 1]

    return {"Q8_0": q8_0, "Q4_0": q4_0, "Q4_K": q4_k}


_LAYOUT = {"Q8_0": (34, 32, 1), "Q4_0": (18, 32, 1), "Q4_K": (144, 256, 2)}  # bytes, values, f16 scales


def supports(qtype_name: str) -> bool:
    """Whether a compiled kernel decodes this type (and numba is there to compile it)."""
    if qtype_name not in _LAYOUT:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def dequantize(data: np.ndarray, qtype_name: str, out: np.ndarray | None = None) -> np.ndarray:
    """Decode whole blocks of ``qtype_name`` (``data``: uint8, a multiple of the block size) to float32.

    ``out``, when given, is a contiguous float32 array of exactly that many values, filled in place (the
    pass's chunk buffer: no intermediate copy).

    Returns
    -------
    numpy.ndarray
        1-D float32, ``len(data) / block_bytes * block_values`` values, as :func:`gguf.quants.dequantize`.
    """
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    nbytes, nvalues, nscales = _LAYOUT[qtype_name]
    src = np.ascontiguousarray(data).reshape(-1)
    blocks = src.reshape(-1, nbytes)
    # The f16 scales at the start of each block, widened once by numpy (1/17 - 1/72 of the bytes).
    scales = np.ascontiguousarray(blocks[:, : 2 * nscales]).view(np.float16).astype(np.float32)
    if out is None:
        out = np.empty(len(blocks) * nvalues, dtype=np.float32)
    elif out.dtype != np.float32 or out.size != len(blocks) * nvalues or not out.flags.c_contiguous:
        raise ValueError(f"output buffer of {out.size} {out.dtype} does not fit {len(blocks) * nvalues} values")
    out = out.reshape(-1)
    _KERNELS[qtype_name](src, scales.reshape(len(blocks), nscales)[:, 0] if nscales == 1 else scales, out)
    return out
