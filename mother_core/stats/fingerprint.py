"""The per-model pass: one read of a model gives its moments and its sketches (its *fingerprint*).

Unlike the tensor-major pass of :mod:`mother_core.stats.execute`, which reads the same rows of every
model together to compute every pair's distance, this pass needs one model at a time. That is what
makes it linear in N, incremental (a new model is read alone) and trivially distributable (each model
is a task: :mod:`mother_core.distributed`). Pair distances are then computed exactly only for the
candidate pairs the sketches choose (:mod:`mother_core.stats.pairs`, docs/SCALE.md).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from mother_core.device import one_torch_thread
from mother_core.errors import MotherError
from mother_core.io.base import ModelReader, ModelRef, NotingReader
from mother_core.io.readers import open_model
from mother_core.stats.cache import model_key, slot_key
from mother_core.stats.plan import DEFAULT_CHUNK_ELEMENTS, row_chunks
from mother_core.stats.running_moments import Moments
from mother_core.stats.sketch import SketchSpec, kernels, sketch_into


@dataclass(frozen=True, eq=False)
class Fingerprint:
    """One model's per-tensor moments and sketches.

    Attributes
    ----------
    key : str
        The model's cache key (:func:`mother_core.stats.cache.model_key`): file identity.
    slots : tuple of str
        Slot keys (``name|shape``, :func:`~mother_core.stats.cache.slot_key`) of its float tensors, sorted.
    moments : ndarray (T, 5) float64
        Per slot: count, mean and central moment sums M2, M3, M4 (:class:`~.running_moments.Moments`).
    sketches : tuple of ndarray (float32)
        Per slot, the tensor's sketch (:mod:`mother_core.stats.sketch`), ``spec.width(numel)`` numbers.
    spec : SketchSpec
    notes : tuple of str
        Tensors left out (non-finite values, unreadable), for the run's problems.
    nbytes : int
        Bytes read.
    """

    key: str
    slots: tuple[str, ...]
    moments: np.ndarray
    sketches: tuple[np.ndarray, ...]
    spec: SketchSpec = SketchSpec()
    notes: tuple[str, ...] = ()
    nbytes: int = 0


def fingerprint_model(ref: ModelRef, base: ModelRef | None = None, *, spec: SketchSpec = SketchSpec(),
                      content_hash: bool = False, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> Fingerprint:
    """Read one model once and return its :class:`Fingerprint`.

    Parameters
    ----------
    ref : ModelRef
        The model (any format :func:`mother_core.io.readers.open_model` reads).
    base : ModelRef, optional
        For a LoRA adapter, its base model.
    spec : SketchSpec
        Sketch size and seed: the same for every model of a set.
    content_hash : bool
        Key the model on file content instead of path, size and mtime.
    chunk_elements : int
        Elements read at a time, bounding memory whatever the tensor size.

    Raises
    ------
    MotherError
        The model cannot be opened or read (callers report it as a ``Problem``).
    """
    key = model_key(ref, base, content_hash)
    # One torch thread: a model's tensors are small, and converting each on two spin-waiting threads cost
    # 3.5 ms per 65k-element tensor on a busy machine (~50 us on one).
    with contextlib.ExitStack() as stack, one_torch_thread():
        base_reader = stack.enter_context(open_model(base)) if base is not None else None
        reader = stack.enter_context(open_model(ref, base=base_reader))
        return _fingerprint(reader, key, spec, chunk_elements)


def _fingerprint(reader: ModelReader, key: str, spec: SketchSpec, chunk_elements: int) -> Fingerprint:
    infos = sorted((i for i in reader.tensor_infos().values() if i.is_float and i.numel > 0),
                   key=lambda i: (i.name, tuple(i.shape)))
    notes = list(reader.notes) if isinstance(reader, NotingReader) else []
    slots, rows, sketches = [], [], []
    nbytes = 0
    for info in infos:
        sk = slot_key(info.name, tuple(info.shape))
        numel = int(info.numel)
        acc = np.zeros(spec.width(numel), dtype=np.float64)
        mom: Moments | None = None
        start = 0
        try:
            for rows_range in row_chunks(tuple(info.shape), chunk_elements):
                x = reader.read(info.name, rows_range).reshape(-1).to(torch.float32).numpy()
                part = _moments(x)
                mom = part if mom is None else mom.combine(part)
                sketch_into(acc, x, start, numel, sk, spec)
                start += x.size
                nbytes += int(info.nbytes * x.size / numel)
        except MotherError as e:
            notes.append(f"{info.name}: {e}")
            continue
        assert mom is not None
        values = (mom.n[0], mom.mean[0], mom.m2[0], mom.m3[0], mom.m4[0])
        if not all(math.isfinite(v) for v in values) or not np.isfinite(acc).all():
            notes.append(f"{info.name} holds NaN or infinite values; it was left out of this model's comparisons.")
            continue
        slots.append(sk)
        rows.append(values)
        sketches.append(acc.astype(np.float32))
    return Fingerprint(key, tuple(slots), np.array(rows, dtype=np.float64).reshape(-1, 5), tuple(sketches),
                       spec, tuple(notes), nbytes)


def _moments(x: np.ndarray) -> Moments:
    """Moments of one float32 chunk in float64: the compiled kernel (two passes, no temporaries) where
    numba is available, else numpy (a single model's chunk is small, and torch's reductions on a busy
    machine pay thread start-up per call, 10x slower here)."""
    one = lambda a: np.array([float(a)])  # noqa: E731
    k = kernels()
    if k is not None and x.size:
        mean, m2, m3, m4 = k.chunk_moments(np.ascontiguousarray(x, dtype=np.float32))
        return Moments(one(x.size), one(mean), one(m2), one(m3), one(m4))
    d = x.astype(np.float64)
    mean = d.mean()
    d -= mean  # in place: one float64 copy of the chunk in all
    d2 = d * d
    return Moments(one(d.size), one(mean), one(d2.sum()), one((d2 * d).sum()), one((d2 * d2).sum()))
