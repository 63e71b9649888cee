"""Planning the streaming pass: which tensor slots to read, from which models, in which chunks.

The plan is pure data (frozen, hashable tasks); :mod:`mother_core.stats.execute` runs it. Keeping
them apart lets the cache strike out work before anything is read, and lets tests inspect a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from mother_core.io.base import TensorInfo
from mother_core.io.names import layer_kind
from mother_core.stats.result import TensorMeta

# Rows are read in chunks of at most this many elements per model, so peak memory is about
# (models x chunk) whatever the model size: a 128k x 8k embedding is never held whole.
DEFAULT_CHUNK_ELEMENTS = 1 << 21  # 2M elements = 8 MiB per model in float32
# ... and at most this many elements across all the models of a chunk, so that the two float32 chunk
# buffers of the pass stay near 2 x 128 MiB whether 8 or 500 models are compared. Smaller chunks also
# start the overlap of reading and reducing sooner; below ~1M elements per chunk, per-chunk overhead shows.
MAX_CHUNK_TOTAL_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class TensorTask:
    """Read one tensor slot from some models, chunk by chunk, and update their statistics.

    Attributes
    ----------
    slot : int
        Index into :attr:`Plan.slots`.
    models : tuple of int
        Indices of the models to read (those holding the slot whose results are not cached).
    chunks : tuple of (int, int) or (None,)
        Row ranges of the first dimension; ``(None,)`` reads the tensor whole (scalars).
    nbytes : int
        Bytes this task reads from disk, across all its models.
    """

    slot: int
    models: tuple[int, ...]
    chunks: tuple[tuple[int, int] | None, ...]
    nbytes: int


@dataclass(frozen=True)
class Plan:
    """Slots (tensor name + shape, with the models holding each) and the tasks to run."""

    slots: tuple[TensorMeta, ...]
    holders: tuple[tuple[int, ...], ...]  # per slot, the models that hold it
    tasks: tuple[TensorTask, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tasks)


def collect_slots(
    tensor_infos: Sequence[Mapping[str, TensorInfo]],
) -> tuple[tuple[TensorMeta, ...], tuple[tuple[int, ...], ...], dict[tuple[int, int], TensorInfo]]:
    """Group the float tensors of every model into slots keyed by (name, shape).

    Models are compared only on tensors they share by name *and* shape: a new classification head
    with a different number of classes is a different slot, not a comparison.
    """
    by_key: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    infos: dict[tuple[tuple[str, tuple[int, ...]], int], TensorInfo] = {}
    for m, tensors in enumerate(tensor_infos):
        for info in tensors.values():
            if not info.is_float or info.numel == 0:
                continue
            key = (info.name, tuple(info.shape))
            by_key.setdefault(key, []).append(m)
            infos[(key, m)] = info
    keys = sorted(by_key)
    slots = tuple(TensorMeta(name, shape, layer_kind(name, shape)) for name, shape in keys)
    holders = tuple(tuple(by_key[k]) for k in keys)
    slot_infos = {(s, m): infos[(k, m)] for s, k in enumerate(keys) for m in by_key[k]}
    return slots, holders, slot_infos


def row_chunks(shape: tuple[int, ...], chunk_elements: int) -> tuple[tuple[int, int] | None, ...]:
    """Split the first dimension so that each chunk holds at most ``chunk_elements`` elements."""
    if len(shape) == 0:
        return (None,)
    rows = shape[0]
    per_row = 1
    for d in shape[1:]:
        per_row *= d
    step = max(1, chunk_elements // max(per_row, 1))
    return tuple((start, min(rows, start + step)) for start in range(0, rows, step))


def build_plan(
    tensor_infos: Sequence[Mapping[str, TensorInfo]],
    needs_reading: Mapping[int, Sequence[int]] | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Plan:
    """Plan the pass over models with the given tensor listings.

    Parameters
    ----------
    tensor_infos : sequence of mappings
        ``tensor_infos[m]`` is model m's ``ModelReader.tensor_infos()``.
    needs_reading : mapping slot -> model indices, optional
        What the cache could not supply; by default every holder of every slot is read.
    chunk_elements : int
        Upper bound on elements per model per chunk (lowered so that a chunk of all the task's models
        holds at most :data:`MAX_CHUNK_TOTAL_ELEMENTS`).
    """
    slots, holders, slot_infos = collect_slots(tensor_infos)
    tasks = []
    for s, (meta, who) in enumerate(zip(slots, holders)):
        models = tuple(who if needs_reading is None else sorted(needs_reading.get(s, ())))
        if not models:
            continue
        nbytes = sum(slot_infos[(s, m)].nbytes for m in models)
        per_model = max(1, min(chunk_elements, MAX_CHUNK_TOTAL_ELEMENTS // len(models)))
        tasks.append(TensorTask(s, models, row_chunks(meta.shape, per_model), nbytes))
    return Plan(slots, holders, tuple(tasks))
