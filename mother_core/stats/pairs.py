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
from mother_core.stats.sketch_store import shared_slots

#: Bytes of decoded (float32) models kept between pairs.
LRU_BYTES = 512 << 20


class _Loaded:
    """A bounded LRU of whole models as {slot key: float32 vector}."""

    def __init__(self, load: Callable[[int], dict[str, np.ndarray]], limit: int) -> None:
        self._load, self._limit = load, limit
        self._lru: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.reads = 0

    def get(self, m: int) -> dict[str, np.ndarray]:
        hit = self._lru.get(m)
        if hit is not None:
            self._lru.move_to_end(m)
            return hit
        tensors = self._load(m)
        self.reads += 1
        self._lru[m] = tensors
        self._bytes += sum(t.nbytes for t in tensors.values())
        while self._bytes > self._limit and len(self._lru) > 2:
            _, old = self._lru.popitem(last=False)
            self._bytes -= sum(t.nbytes for t in old.values())
        return tensors


def _read_model(ref: ModelRef, base: ModelRef | None, wanted: set[str]) -> dict[str, np.ndarray]:
    # One torch thread for the small per-tensor conversions (as in the fingerprint pass, device.py).
    with contextlib.ExitStack() as stack, one_torch_thread():
        base_reader = stack.enter_context(open_model(base)) if base is not None else None
        reader = stack.enter_context(open_model(ref, base=base_reader))
        out = {}
        for info in reader.tensor_infos().values():
            sk = slot_key(info.name, tuple(info.shape))
            if sk in wanted:
                out[sk] = reader.read(info.name).reshape(-1).to(torch.float32).numpy()
        return out


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
        values[int(p)] = np.array([_sq(ta[s], tb[s]) for s in shared_slots(fps[a], fps[b])])
    return values, failed, loaded.reads


def _sq(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b||^2 accumulated in float64 (the difference itself is exact to float32 rounding). A plain
    reduction, not a BLAS dot: a multithreaded BLAS call per pair spins threads on a busy machine (100x)."""
    d = (a - b).astype(np.float64)
    return float(np.square(d).sum())
