"""Exact per-tensor squared distances of candidate pairs only: the targeted second read (docs/SCALE.md).

Models are visited in reverse Cuthill-McKee order of the candidate graph, so that a model's
candidates are visited near it, and kept in a bounded LRU of decoded tensors: each model is read about
once even though it takes part in ~2k pairs, and memory stays at the LRU's bound whatever N.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import reverse_cuthill_mckee

from mother_core.device import one_torch_thread
from mother_core.errors import MotherError
from mother_core.io.base import ModelRef
from mother_core.io.readers import open_model
from mother_core.stats.cache import slot_key
from mother_core.stats.fingerprint import Fingerprint
from mother_core.stats.sketch import kernels
from mother_core.stats.sketch_store import shared_slots

#: Bytes of decoded (float32) models kept between pairs.
LRU_BYTES = 512 << 20


class _Flat:
    """One model's wanted tensors as one float32 vector: ``where[slot] = (start, length)``, and for
    :func:`segment_sq`, the starts and lengths in sorted-slot order (the order of a pair's values when
    both models hold the same slots, the usual case)."""

    __slots__ = ("vector", "where", "slots", "starts", "lengths")

    def __init__(self, vector: np.ndarray, where: dict[str, tuple[int, int]]) -> None:
        self.vector, self.where = vector, where
        self.slots = tuple(sorted(where))
        self.starts = np.array([where[s][0] for s in self.slots], dtype=np.int64)
        self.lengths = np.array([where[s][1] for s in self.slots], dtype=np.int64)

    def spans(self, slots: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        if tuple(slots) == self.slots:
            return self.starts, self.lengths
        return (np.array([self.where[s][0] for s in slots], dtype=np.int64),
                np.array([self.where[s][1] for s in slots], dtype=np.int64))


class _Loaded:
    """A bounded LRU of whole models (:class:`_Flat`)."""

    def __init__(self, load: Callable[[int], _Flat], limit: int) -> None:
        self._load, self._limit = load, limit
        self._lru: OrderedDict[int, _Flat] = OrderedDict()
        self._bytes = 0
        self.reads = 0

    def get(self, m: int) -> _Flat:
        hit = self._lru.get(m)
        if hit is not None:
            self._lru.move_to_end(m)
            return hit
        flat = self._load(m)
        self.reads += 1
        self._lru[m] = flat
        self._bytes += flat.vector.nbytes
        while self._bytes > self._limit and len(self._lru) > 2:
            _, old = self._lru.popitem(last=False)
            self._bytes -= old.vector.nbytes
        return flat


def _read_model(ref: ModelRef, base: ModelRef | None, wanted: set[str]) -> _Flat:
    # One torch thread for the small per-tensor conversions (as in the fingerprint pass, device.py).
    with contextlib.ExitStack() as stack, one_torch_thread():
        base_reader = stack.enter_context(open_model(base)) if base is not None else None
        reader = stack.enter_context(open_model(ref, base=base_reader))
        take = [(slot_key(i.name, tuple(i.shape)), i) for i in reader.tensor_infos().values()]
        take = [(sk, i) for sk, i in take if sk in wanted]
        where: dict[str, tuple[int, int]] = {}
        total = 0
        for sk, info in take:
            where[sk] = (total, int(info.numel))
            total += int(info.numel)
        vector = np.empty(total, dtype=np.float32)
        dest = torch.from_numpy(vector)
        for sk, info in take:
            start, length = where[sk]
            # Widened straight into the model's vector (no float32 copy of each tensor first).
            dest[start:start + length].copy_(reader.read(info.name).reshape(-1))
        return _Flat(vector, where)


def visit_order(n: int, pairs: np.ndarray) -> np.ndarray:
    """Reverse Cuthill-McKee order of the candidate graph (neighbours close together)."""
    if len(pairs) == 0:
        return np.arange(n)
    g = csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return np.asarray(reverse_cuthill_mckee(g + g.T, symmetric_mode=True))


def exact_pair_distances(refs: Sequence[ModelRef], fps: Sequence[Fingerprint], pairs: np.ndarray,
                         bases: Sequence[ModelRef | None] | None = None, lru_bytes: int = LRU_BYTES
                         ) -> tuple[dict[int, np.ndarray], dict[int, str], int]:
    """Squared distances ||W_a - W_b||^2 per shared slot of each pair (a, b) of ``pairs`` (P, 2).

    Returns
    -------
    values : dict pair index -> ndarray float64
        Over :func:`mother_core.stats.sketch_store.shared_slots` of the pair's two fingerprints.
    failed : dict model index -> message
        Models that could not be read again (their pairs are missing from ``values``).
    reads : int
        Models read (each about once: the LRU's hit rate).
    """
    bases = bases if bases is not None else [None] * len(refs)
    failed: dict[int, str] = {}
    loaded = _Loaded(lambda m: _read_model(refs[m], bases[m], set(fps[m].slots)), lru_bytes)
    rank = np.empty(len(refs), dtype=np.int64)
    rank[visit_order(len(refs), pairs)] = np.arange(len(refs))
    order = np.lexsort((rank[pairs].max(axis=1), rank[pairs].min(axis=1))) if len(pairs) else np.zeros(0, int)
    values: dict[int, np.ndarray] = {}
    for p in order:
        a, b = int(pairs[p, 0]), int(pairs[p, 1])
        if a in failed or b in failed:
            continue
        try:
            ta = loaded.get(a)
        except MotherError as e:
            failed[a] = str(e)
            continue
        try:
            tb = loaded.get(b)
        except MotherError as e:
            failed[b] = str(e)
            continue
        values[int(p)] = segment_sq(ta, tb, shared_slots(fps[a], fps[b]))
    return values, failed, loaded.reads


def segment_sq(a: _Flat, b: _Flat, slots: Sequence[str]) -> np.ndarray:
    """Per slot of ``slots``, ||a - b||^2 (float64; each difference exact to float32 rounding): one
    compiled call per pair where numba is available, else numpy per slot. Never a BLAS dot: a
    multithreaded BLAS call per pair spins threads on a busy machine (100x)."""
    a_start, length = a.spans(slots)
    b_start, _ = b.spans(slots)
    out = np.empty(len(length), dtype=np.float64)
    k = kernels()
    if k is not None:
        k.segment_sq(a.vector, a_start, b.vector, b_start, length, out)
        return out
    for s, (i, j, n) in enumerate(zip(a_start, b_start, length)):
        d = (a.vector[i:i + n] - b.vector[j:j + n]).astype(np.float64)
        out[s] = float(np.square(d).sum())
    return out
