"""Running a :class:`~mother_core.stats.plan.Plan`: one read of each byte, statistics on the device.

Tensor-major: for each slot, the same rows are read from every model that holds it, turned into
an (M, n) float32 chunk, reduced to moments and pairwise distances, and freed. A reader thread
fills the next chunk while the current one is reduced (torch and the readers release the GIL),
into a ring of reused buffers (fresh allocations cost ~0.4 s/GB).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from mother_core.errors import MotherError
from mother_core.io.base import ModelReader
from mother_core.stats.moments import Moments, pairwise_sq_dist
from mother_core.stats.plan import Plan, TensorTask
from mother_core.stats.progress import Progress, ProgressCallback


@dataclass
class PassOutput:
    """Raw results of the pass, keyed by slot and model index (global indices)."""

    moments: dict[tuple[int, int], tuple[float, float, float, float, float]] = field(default_factory=dict)
    sq_dist: dict[int, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0


@dataclass
class _Chunk:
    task: TensorTask
    index: int
    models: list[int]  # models whose rows are in `data`, in order
    data: torch.Tensor | None  # (len(models), n) float32 on the compute device
    errors: dict[int, str]
    nbytes: int


class _BufferRing:
    """Two reusable host buffers (pinned when feeding a GPU), grown on demand."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = [None, None]

    def get(self, slot: int, rows: int, cols: int) -> torch.Tensor:
        need = rows * cols
        buf = self.buffers[slot]
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, dtype=torch.float32, pin_memory=self.pin)
            self.buffers[slot] = buf
        return buf[:need].view(rows, cols)


def execute_plan(
    plan: Plan,
    readers: Sequence[ModelReader],
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> PassOutput:
    """Run every task of ``plan``, reading each needed byte once.

    A model that fails to read is recorded in ``PassOutput.failed`` and dropped from the rest of the
    pass; the other models carry on (one broken file must not sink a run of fifty).
    """
    out = PassOutput()
    start = time.perf_counter()
    ring = _BufferRing(pin=device.type == "cuda")
    total_bytes = plan.nbytes
    steps = [(task, i) for task in plan.tasks for i in range(len(task.chunks))]
    tasks_done = 0
    state: dict[int, _TaskState] = {}

    def report(stage: str) -> None:
        if progress is None:
            return
        elapsed = time.perf_counter() - start
        eta = None
        if out.bytes_read > 0 and total_bytes > 0:
            eta = elapsed * (total_bytes - out.bytes_read) / out.bytes_read
        progress(Progress(stage, tasks_done, len(plan.tasks), out.bytes_read, total_bytes, elapsed,
                          eta, str(device)))

    report("reading")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mother-reader") as pool:
        pending: Future | None = None
        for k, (task, ci) in enumerate(steps):
            if pending is None:
                pending = pool.submit(_load, task, ci, plan, readers, ring, k % 2, device, dict(out.failed))
            chunk: _Chunk = pending.result()
            pending = None
            if k + 1 < len(steps):
                # Read ahead into the other buffer while this chunk is reduced.
                nt, nci = steps[k + 1]
                known_failed = {**out.failed, **chunk.errors}
                pending = pool.submit(_load, nt, nci, plan, readers, ring, (k + 1) % 2, device, known_failed)
            out.failed.update(chunk.errors)
            out.bytes_read += chunk.nbytes
            st = state.setdefault(task.slot, _TaskState())
            st.add(chunk)
            if ci == len(task.chunks) - 1:
                st.finish(task, out)
                del state[task.slot]
                tasks_done += 1
                report("reading")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - start
    report("done")
    return out


def _load(task: TensorTask, ci: int, plan: Plan, readers: Sequence[ModelReader], ring: _BufferRing,
          slot: int, device: torch.device, failed: dict[int, str]) -> _Chunk:
    meta = plan.slots[task.slot]
    rows = task.chunks[ci]
    models = [m for m in task.models if m not in failed]
    errors: dict[int, str] = {}
    parts: list[torch.Tensor] = []
    kept: list[int] = []
    nbytes = 0
    for m in models:
        try:
            t = readers[m].read(meta.name, rows)
        except MotherError as e:
            errors[m] = str(e)
            continue
        except Exception as e:  # a reader bug or I/O error must not sink the other models
            errors[m] = f"Could not read tensor {meta.name!r} from {readers[m].ref.path}: {e}"
            continue
        parts.append(t)
        kept.append(m)
        nbytes += t.numel() * t.element_size()
    if not parts:
        return _Chunk(task, ci, [], None, errors, nbytes)
    n = parts[0].numel()
    buf = ring.get(slot, len(parts), n)
    for row, t in zip(buf, parts):
        row.copy_(t.reshape(-1))  # converts bf16/fp16 -> fp32 in the same pass
    data = buf.to(device, non_blocking=True) if device.type == "cuda" else buf
    return _Chunk(task, ci, kept, data, errors, nbytes)


class _TaskState:
    """Accumulates one slot's moments and distances over its chunks."""

    def __init__(self) -> None:
        self.moments: dict[int, Moments] = {}
        self.dist: dict[tuple[int, int], float] = {}
        self.dropped: set[int] = set()

    def add(self, chunk: _Chunk) -> None:
        self.dropped.update(chunk.errors)
        if chunk.data is None:
            return
        mom = Moments.of_chunk(chunk.data)
        d = pairwise_sq_dist(chunk.data)
        for a, m in enumerate(chunk.models):
            one = Moments(mom.n[a : a + 1], mom.mean[a : a + 1], mom.m2[a : a + 1], mom.m3[a : a + 1],
                          mom.m4[a : a + 1])
            self.moments[m] = self.moments[m].combine(one) if m in self.moments else one
            for b in range(a + 1, len(chunk.models)):
                key = (m, chunk.models[b])
                self.dist[key] = self.dist.get(key, 0.0) + float(d[a, b])

    def finish(self, task: TensorTask, out: PassOutput) -> None:
        ok = [m for m in task.models if m not in self.dropped and m in self.moments]
        for m in ok:
            mo = self.moments[m]
            out.moments[(task.slot, m)] = (float(mo.n[0]), float(mo.mean[0]), float(mo.m2[0]),
                                           float(mo.m3[0]), float(mo.m4[0]))
        mat = np.zeros((len(ok), len(ok)))
        for a in range(len(ok)):
            for b in range(a + 1, len(ok)):
                mat[a, b] = mat[b, a] = self.dist[(ok[a], ok[b])]
        out.sq_dist[task.slot] = (tuple(ok), mat)


