"""Running a :class:`~mother_core.stats.plan.Plan`: one read of each byte, statistics on the device.

Tensor-major: for each slot, the same rows are read from every model that holds it and reduced to
moments and pairwise distances. Two workers take alternate chunks, so one reads while the other
computes (``os.preadv``, ``torch`` ops and the numba kernel all release the GIL). While reads come
from the disk, a read-ahead thread (:class:`_ReadAhead`) hints the plan's next chunks to the OS, up to
:data:`READ_AHEAD_BYTES` ahead, so the disk always has large requests queued whatever the workers do;
and a chunk read from the disk before the fused kernel has loaded waits for it rather than taking the
torch path, which would take the CPU the load needs while saving no disk time.

- **Fused CPU path** (bf16/fp32 sets large enough, see :mod:`~mother_core.stats.fused`): a chunk is
  read in pieces of whole rows (:data:`PIECE_BYTES` across models) into a small staging buffer in its
  stored dtype, and each piece goes through the kernel while it is still in cache. Where every model holds
  the slot as GGUF blocks of one 4- to 6-bit type, the pieces are read as those blocks and decoded inside
  the kernel (:mod:`~mother_core.stats.fused_codes`; the same statistics bit for bit, no piece of values).
- **Chunk path** (GPU, fp16, readers without ``read_into``, or while numba is still loading): the
  chunk is read into one of a ring of two reused buffers (fresh allocations cost ~0.4 s/GB in page
  faults) as float32 (half precision widened piece by piece through a small cache-resident staging
  buffer) and reduced by :class:`~mother_core.stats.moments.ChunkReducer`. On CUDA the ring is pinned
  and copied with ``non_blocking=True``; the copy of chunk k is complete before its buffer is refilled
  for chunk k + 2, because reducing chunk k ends with a device-to-host transfer of its results. (While
  numba loads, chunks the kernel will take are read in their stored dtype and widened by the reducer.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, Sequence, TypeVar

import numpy as np
import torch

from mother_core.device import one_torch_thread, settle_torch_threads
from mother_core.errors import MotherError
from mother_core.io import staged
from mother_core.io.base import BufferReader, CodedReader, HalfWidthReader, ModelReader, PrefetchingReader
from mother_core.stats import fused, fused_codes
from mother_core.stats.bounds import physical_memory
from mother_core.stats.moments import BLOCK_ELEMENTS, ChunkReducer, Moments
from mother_core.stats.plan import Plan, TensorTask
from mother_core.stats.progress import Progress, ProgressCallback
from mother_core.stats.skeleton import gather, slot_skeleton


#: Workers of the pass, each reading and reducing its own batch of chunks (batch b's buffer and reducer
#: are b % 2's).
_WORKERS = 2

#: Consecutive chunks smaller than this go to a worker together, up to this many bytes in all. Handing a
#: chunk to a worker and folding its result costs ~0.5-0.8 ms whatever its size: a file of 100,000 tiny
#: tensors (mixture-of-experts checkpoints hold tens of thousands; a hostile one can hold millions in a
#: small header) spent 84 s of a 0.3 s run on it, one future per tensor.
BATCH_BYTES = 1 << 20


@dataclass
class PassOutput:
    """Raw results of the pass, keyed by slot and model index (global indices)."""

    moments: dict[tuple[int, int], tuple[float, float, float, float, float]] = field(default_factory=dict)
    sq_dist: dict[int, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)
    #: slot -> (models, (M, M) counts of exactly equal entries; the diagonal holds the slot's size).
    equal: dict[int, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)
    skeletons: dict[int, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    #: slot -> models whose tensor in that slot holds NaN/Inf: set aside for that slot only.
    nonfinite: dict[int, set[int]] = field(default_factory=dict)
    bytes_read: int = 0
    seconds: float = 0.0


@dataclass
class _Chunk:
    task: TensorTask
    index: int
    models: list[int]  # models whose rows are in `data`, in order
    data: torch.Tensor | None  # (len(models), n) float32 on the compute device, or stored dtype (fused)
    errors: dict[int, str]
    nbytes: int


# Bytes of stored (half-precision) data widened to float32 at a time: stays in L2 between read and copy.
STAGING_BYTES = 1 << 19


class _Staging:
    """A small reusable byte buffer that half-precision pieces are read into before widening."""

    def __init__(self) -> None:
        self.buf = torch.empty(STAGING_BYTES, dtype=torch.uint8)

    def get(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if self.buf.numel() < nbytes:
            self.buf = torch.empty(nbytes, dtype=torch.uint8)
        return self.buf[:nbytes].view(dtype)


class _BufferRing:
    """Two reusable host buffers (pinned when feeding a GPU), grown on demand, each with its staging buffer."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.staging = [_Staging(), _Staging()]

    def staging_for(self, slot: int) -> _Staging:
        return self.staging[slot]

    def get(self, slot: int, rows: int, cols: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        need = rows * cols * torch.empty((), dtype=dtype).element_size()
        buf = self.buffers[slot]
        if buf is None or buf.numel() < need:
            self.buffers[slot] = None  # let the old one go before the new one is allocated
            buf = torch.empty(need, dtype=torch.uint8, pin_memory=self.pin)
            self.buffers[slot] = buf
        return buf[:need].view(dtype).view(rows, cols)


def execute_plan(
    plan: Plan,
    readers: Sequence[ModelReader],
    device: torch.device,
    progress: ProgressCallback | None = None,
) -> PassOutput:
    """Run every task of ``plan``, reading each needed byte once.

    Two workers each take a whole chunk (read it and reduce it) while the other does the next one, so
    reading one chunk overlaps reducing the other and both CPU cores (or the CPU and the GPU) stay busy;
    results are accumulated here, in plan order, so they do not depend on timing. On the CPU, torch runs
    one intra-op thread per worker during the pass (small cache-blocked ops gain nothing from more, and
    two workers already fill two cores); the setting is restored afterwards.

    The steps: set the pass up (:func:`_set_up`: buffers, reducers, which path reduces), run the chunks
    two at a time (:func:`_run_chunks`, each chunk by :func:`_read_and_reduce`), and fold each reduced
    chunk into its slot's results in plan order (:class:`_TaskState`).

    A model that fails to read is recorded in ``PassOutput.failed`` and dropped from the rest of the
    pass; the other models carry on (one broken file must not sink a run of fifty).
    """
    settle_torch_threads()  # before the kernel-load, read-ahead and worker threads below touch torch
    out = PassOutput()
    report = _Reporter(plan, out, device, progress)
    run = _set_up(plan, readers, device)
    report("reading")
    if (run.use_fused or run.load_for_equal) and not fused.ready():
        # Load numba and the cached kernels (~1 s) in the background. Meanwhile a chunk read from memory
        # takes the torch path (widened on the fly), so the load overlaps useful work; a chunk that came
        # from the disk waits for the kernel instead (see _read_and_reduce).
        run.kernel_load = threading.Thread(target=fused.warm_up, args=(run.fused_dtypes or {torch.float32},),
                                           name="mother-kernel-load", daemon=True)
        run.kernel_load.start()
    coded = sorted(t for t, v in run.coded_values.items() if v >= fused_codes.WORTH_COMPILING_VALUES
                   and not fused_codes.ready(t))
    if run.use_fused and coded:
        # Compile the kernels that decode GGUF blocks inside the reduction (~1-2 CPU s a type, no disk
        # cache); until they are ready those slots are read as bfloat16 pieces, with the same results.
        threading.Thread(target=fused_codes.warm_up_quietly, args=(coded,), name="mother-codes-load",
                         daemon=True).start()
    # On CPU the chunks are reduced by our own worker threads; torch's intra-op threads would compete.
    # The two workers decode quantized chunks themselves: decode helpers only take the cores left over.
    torch_threads = one_torch_thread() if device.type == "cpu" else contextlib.nullcontext()
    with torch_threads, _ReadAhead(run, out.failed) as ahead, staged.shared_by(_WORKERS):
        _run_chunks(run, out, report, ahead)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - report.start
    report("done")
    return out


class _Reporter:
    """Progress reports of one pass: tasks done, bytes read, time left at the current read rate."""

    def __init__(self, plan: Plan, out: PassOutput, device: torch.device, progress: ProgressCallback | None) -> None:
        self.plan, self.out, self.device, self.progress = plan, out, device, progress
        self.start = time.perf_counter()
        self.tasks_done = 0

    def __call__(self, stage: str) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        total_bytes, done_bytes = self.plan.nbytes, self.out.bytes_read
        eta = elapsed * (total_bytes - done_bytes) / done_bytes if done_bytes > 0 and total_bytes > 0 else None
        self.progress(Progress(stage, self.tasks_done, len(self.plan.tasks), done_bytes, total_bytes, elapsed,
                               eta, str(self.device)))


@dataclass
class _PassRun:
    """Everything the chunks of one pass share: the plan's chunks in order, per-worker buffers and
    reducers, one lock per reader, and which reduction path the pass may take."""

    plan: Plan
    readers: Sequence[ModelReader]
    device: torch.device
    steps: list[tuple[TensorTask, int]]  # (task, chunk index) in plan order
    batches: list[range]  # consecutive steps handed to a worker together (see BATCH_BYTES)
    ring: _BufferRing
    reducers: list[ChunkReducer]  # one per worker
    locks: list[threading.Lock]  # readers switch shards: one call at a time per reader
    use_fused: bool
    fused_dtypes: set[torch.dtype]
    load_for_equal: bool  # load the kernels for the chunk path's counts of equal entries alone
    skeletons: dict[int, tuple[np.ndarray, np.ndarray]]  # slot -> skeleton rows and columns
    read_rate: _ReadRate
    #: values of the slots whose every model hands over GGUF blocks of one type (``_coded_type``), by type
    coded_values: dict[str, int] = field(default_factory=dict)
    kernel_load: threading.Thread | None = None  # loading numba and the fused kernels, while it runs


def _set_up(plan: Plan, readers: Sequence[ModelReader], device: torch.device) -> _PassRun:
    """Step 1: the buffers, reducers and locks of a pass, and whether the fused kernel is worth
    loading for it (enough bf16/fp32 values, :data:`~mother_core.stats.fused.WORTH_LOADING_VALUES`)."""
    block = BLOCK_ELEMENTS if device.type == "cpu" else 1 << 26  # GPUs want few, large kernels
    steps = [(task, i) for task in plan.tasks for i in range(len(task.chunks))]
    fused_values, fused_dtypes = _fused_work(plan, readers, device)
    use_fused = bool(fused_dtypes) and (fused.ready() or fused_values >= fused.WORTH_LOADING_VALUES)
    # Chunks of more models than the fused kernel takes still count their equal entries with it (torch
    # compares row against rows, several times slower on the CPU): load it for them when they are many.
    wide = sum(_task_values(plan, t) for t in plan.tasks if fused.MAX_MODELS < len(t.models) <= fused.MAX_EQUAL_MODELS)
    load_for_equal = device.type == "cpu" and fused.enabled() and wide >= fused.WORTH_LOADING_VALUES
    coded_values: dict[str, int] = {}
    for task in plan.tasks if use_fused else ():
        name = plan.slots[task.slot].name
        if _kernel_dtype(name, task.models, readers, device) == torch.bfloat16:  # as _read_and_reduce picks
            qtype = _coded_type(name, task.models, readers)
            if qtype is not None:
                coded_values[qtype] = coded_values.get(qtype, 0) + _task_values(plan, task)
    return _PassRun(
        plan=plan, readers=readers, device=device, coded_values=coded_values,
        steps=steps, batches=_batches([_step_bytes(plan, step) for step in steps]),
        ring=_BufferRing(pin=device.type == "cuda"),
        reducers=[ChunkReducer(block, use_fused), ChunkReducer(block, use_fused)],
        locks=[threading.Lock() for _ in readers],
        use_fused=use_fused, fused_dtypes=fused_dtypes, load_for_equal=load_for_equal,
        skeletons={t.slot: ix for t in plan.tasks if (ix := slot_skeleton(plan.slots[t.slot])) is not None},
        read_rate=_ReadRate(),
    )


def _run_chunks(run: _PassRun, out: PassOutput, report: _Reporter, ahead: "_ReadAhead") -> None:
    """Step 2: two workers read and reduce alternate batches of chunks; each reduced chunk is folded into
    its slot's results here, in plan order, and a slot's results go to ``out`` after its last chunk.
    ``ahead`` hears which chunk was last handed to a worker (it hints the chunks after it)."""
    steps, batches = run.steps, run.batches
    state: dict[int, _TaskState] = {}
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="mother-pass") as pool:
        pending: dict[int, Future] = {}
        for b in range(min(2, len(batches))):
            pending[b] = pool.submit(_read_and_reduce_batch, run, b, {})
            ahead.started(batches[b][-1])
        for b, batch in enumerate(batches):
            reduced: list[_Reduced] = pending.pop(b).result()
            for done in reduced:
                for m, message in done.errors.items():
                    out.failed.setdefault(m, message)
            if b + 2 < len(batches):
                # Batch b's buffer and reducer are free again: batch b + 2 may use them.
                pending[b + 2] = pool.submit(_read_and_reduce_batch, run, b + 2, dict(out.failed))
                ahead.started(batches[b + 2][-1])
            for k, done in zip(batch, reduced):
                task, ci = steps[k]
                out.bytes_read += done.nbytes
                st = state.setdefault(task.slot, _TaskState(task, run.skeletons.get(task.slot)))
                st.add(done)
                if ci == len(task.chunks) - 1:
                    st.finish(task, out)
                    del state[task.slot]
                    report.tasks_done += 1
                    report("reading")


def _batches(step_bytes: Sequence[int]) -> list[range]:
    """Consecutive steps grouped so that each group holds one step of :data:`BATCH_BYTES` or more, or
    small steps up to that many bytes in all (plan order kept)."""
    batches: list[range] = []
    start, total = 0, 0
    for k, nbytes in enumerate(step_bytes):
        if k > start and total + nbytes > BATCH_BYTES:
            batches.append(range(start, k))
            start, total = k, 0
        total += nbytes
    if start < len(step_bytes):
        batches.append(range(start, len(step_bytes)))
    return batches


def _step_bytes(plan: Plan, step: tuple[TensorTask, int]) -> int:
    """Bytes one chunk reads, over all its models (the task's bytes, shared out by rows)."""
    task, ci = step
    rows = task.chunks[ci]
    shape = plan.slots[task.slot].shape
    first_dim = shape[0] if shape else 1
    return task.nbytes if rows is None else task.nbytes * (rows[1] - rows[0]) // max(first_dim, 1)


def _read_and_reduce_batch(run: _PassRun, b: int, failed: dict[int, str]) -> list[_Reduced]:
    """One worker's job: read and reduce the chunks of batch ``b`` in order, with batch ``b``'s buffer
    and reducer; a model that fails in one chunk is not read again in the batch's later chunks."""
    failed = dict(failed)
    reduced = []
    for k in run.batches[b]:
        done = _read_and_reduce(run, k, b % 2, failed)
        for m, message in done.errors.items():
            failed.setdefault(m, message)
        reduced.append(done)
    return reduced


def _read_and_reduce(run: _PassRun, k: int, slot: int, failed: dict[int, str]) -> _Reduced:
    """Read chunk ``k`` of the pass from the models not in ``failed`` into worker ``slot``'s buffer and
    reduce it, through the fused kernel when it takes the chunk, else through the chunk path."""
    plan, readers, steps, locks, read_rate = run.plan, run.readers, run.steps, run.locks, run.read_rate
    task, ci = steps[k]
    began = time.perf_counter()
    models = [m for m in task.models if m not in failed]
    rows = task.chunks[ci]
    stored = (_kernel_dtype(plan.slots[task.slot].name, models, readers, run.device)
              if run.use_fused and fused.ready() and rows is not None and models else None)
    if stored is not None and rows is not None:  # the fused path: pieces straight into the kernel
        coded = _coded_type(plan.slots[task.slot].name, models, readers) if stored == torch.bfloat16 else None
        try:
            # Every model's stored blocks, decoded inside the kernel, once its kernel is compiled; else values.
            held: torch.dtype | str = coded if coded is not None and fused_codes.ready(coded) else stored
            return _stream_reduce(task, rows, plan, readers, models, held, run.ring.staging_for(slot), locks,
                                  run.skeletons.get(task.slot), read_rate)
        except _StreamFailed:
            pass  # a model failed mid-chunk: the chunk path below reports it and carries on
    chunk = _load(task, ci, plan, readers, run.ring, slot, run.device, failed, locks, run.use_fused)
    read_rate.add(chunk.nbytes, time.perf_counter() - began)
    loading = run.kernel_load
    if loading is not None and not fused.ready() and read_rate.disk_bound():
        # The disk, not the CPU, sets the pace: reducing this chunk on the torch path (widened, several
        # times the kernel's CPU) would take the cores numba is loading on, while the read-ahead thread
        # keeps the disk busy anyway. Wait for the kernel (or for its load to fail: torch path then).
        loading.join()
    return _reduce(chunk, run.reducers[slot], plan.slots[task.slot].shape, run.skeletons.get(task.slot))


class _ReadRate:
    """A running estimate of how fast chunks are read, to tell page-cache reads from disk reads."""

    # Above this, reads come from memory (page cache: 5+ GB/s here) or from a disk fast enough that
    # read-ahead hints gain nothing; below it (cold SATA/NVMe reads here: ~1.3-1.5 GB/s), hints help.
    DISK_BOUND_BELOW = 3e9  # bytes per second

    def __init__(self) -> None:
        # Decaying sums, so large chunks weigh by their bytes and small ones (a bias: all per-call
        # overhead) do not drag the rate down. Workers update them unlocked: an estimate either way.
        self.nbytes = 0.0
        self.seconds = 0.0

    def add(self, nbytes: int, seconds: float) -> None:
        self.nbytes = 0.8 * self.nbytes + nbytes
        self.seconds = 0.8 * self.seconds + seconds

    def disk_bound(self) -> bool:
        """True until the first chunk is in (hint it) and while reads run below disk-bound speed."""
        return self.seconds <= 0 or self.nbytes / self.seconds < self.DISK_BOUND_BELOW


@dataclass
class _Reduced:
    """A chunk reduced to moments and squared distances over ``models``."""

    models: list[int]
    moments: Moments | None
    sq_dist: np.ndarray | None
    equal: np.ndarray | None  # (M, M) counts of exactly equal entries
    errors: dict[int, str]
    nbytes: int
    skeleton: tuple[np.ndarray, np.ndarray] | None = None  # (skeleton rows held, values (M, r, k2))
    nonfinite: tuple[int, ...] = ()  # models whose rows in this chunk hold NaN/Inf (not in `models`)


def _nonfinite(mom: Moments) -> np.ndarray:
    """(M,) True for models whose chunk holds NaN/Inf (or values so large their moments overflow)."""
    return ~(np.isfinite(mom.mean) & np.isfinite(mom.m2) & np.isfinite(mom.m4))


def _reduce(chunk: _Chunk, reducer: ChunkReducer, shape: tuple[int, ...],
            skeleton: tuple[np.ndarray, np.ndarray] | None) -> _Reduced:
    if chunk.data is None:
        return _Reduced([], None, None, None, chunk.errors, chunk.nbytes)
    models, data = chunk.models, chunk.data
    mom, d, eq = reducer.reduce(data)
    bad = _nonfinite(mom)
    nonfinite: tuple[int, ...] = ()
    if bad.any():
        # Distances are centred on the chunk's cross-model mean: one NaN row would poison every pair.
        # Reduce again without the non-finite rows; those models are set aside for this slot only.
        keep = np.flatnonzero(~bad)
        nonfinite = tuple(models[i] for i in np.flatnonzero(bad))
        models = [models[i] for i in keep]
        if not models:
            return _Reduced([], None, None, None, chunk.errors, chunk.nbytes, None, nonfinite)
        data = data[torch.as_tensor(keep, device=data.device)]
        mom, d, eq = reducer.reduce(data)
    rows = chunk.task.chunks[chunk.index]
    sk = gather(data, shape, rows, skeleton) if skeleton is not None else None
    return _Reduced(models, mom, d, eq, chunk.errors, chunk.nbytes, sk, nonfinite)



def _read_ahead_bytes() -> int:
    """1 GiB, or a sixteenth of the machine's memory where that is less (hinted pages are page cache,
    not the process's memory, but pages evicted before they are used are read twice)."""
    return min(1 << 30, physical_memory() // 16)


# Bytes of the plan's next chunks the read-ahead thread keeps hinted to the OS beyond the chunk last
# handed to a worker. Cold disks serve deep queues of large requests faster than one read at a time
# (8 x GPT-2 small bf16, reading the plan's byte ranges in order without reducing: 3.0-5.4 s with no
# hints, 1.7-3.2 s with 64 MB-1 GB hinted ahead, against 1.7-7.1 s for a cold `cat` in the same minutes),
# and the disk must keep reading while the workers wait for the kernel's load (~1-2.7 s at the start of
# a cold pass: ~0.6-1.6 GB at this disk's 0.6 GB/s), hence the large window.
READ_AHEAD_BYTES = _read_ahead_bytes()


class _ReadAhead:
    """A thread that hints the plan's chunks to the OS (``prefetch``, in plan order) up to
    :data:`READ_AHEAD_BYTES` beyond the chunk last handed to a worker, while reads look disk-bound.

    The hints are queued reads (``POSIX_FADV_WILLNEED``): the disk fills the page cache in the background
    with many large requests in flight, whatever the workers are doing meanwhile. When reads come from
    memory (a warm page cache) hinting stops: a hint walks the page cache even when every page is there.
    A context manager: the thread starts on entering and is stopped and joined on leaving.
    """

    def __init__(self, run: _PassRun, failed: dict[int, str]) -> None:
        self.run, self.failed = run, failed  # ``failed`` is the pass's own dict: models dropped so far
        ends, total = [], 0
        for step in run.steps:
            total += _step_bytes(run.plan, step)
            ends.append(total)
        self.starts = [0] + ends[:-1]  # bytes of the plan before each chunk
        self.handed = 0  # the chunk last handed to a worker
        self.closed = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._hint_all, name="mother-read-ahead", daemon=True)

    def __enter__(self) -> "_ReadAhead":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join()

    def started(self, k: int) -> None:
        """Chunk ``k`` was handed to a worker: hint up to :data:`READ_AHEAD_BYTES` beyond it."""
        with self.cond:
            self.handed = max(self.handed, k)
            self.cond.notify()

    def _hint_all(self) -> None:
        run = self.run
        for j, step in enumerate(run.steps):
            with self.cond:
                while not self.closed and self.starts[j] - self.starts[self.handed] > READ_AHEAD_BYTES:
                    self.cond.wait()
                if self.closed:
                    return
                if j < self.handed - 1:
                    continue  # both workers are past it: read already
            if run.read_rate.disk_bound():
                _prefetch(run.plan, step, run.readers, run.locks, self.failed)

# Bytes of all models' rows read and reduced at a time when streaming a chunk: the two workers' pieces
# stay in L3 between the read and the kernel instead of a whole chunk going out to memory and back.
# Measured on the 8 x 505M bf16 set, warm, steady state: 2.0 s at 1 MB (per-piece overhead), 1.3-1.5 s
# at 4-8 MB, 1.6 s at 16 MB and for whole chunks, 2.2 s on the chunk path.
PIECE_BYTES = 1 << 22


class _StreamFailed(Exception):
    """A model could not be read while streaming a chunk; the chunk is redone on the chunk path."""


def _stream_reduce(task: TensorTask, rows: tuple[int, int], plan: Plan, readers: Sequence[ModelReader],
                   models: list[int], stored: torch.dtype | str, staging: _Staging, locks: Sequence[threading.Lock],
                   skeleton: tuple[np.ndarray, np.ndarray] | None, read_rate: "_ReadRate") -> _Reduced:
    """Read ``rows`` (one chunk of ``task``) of ``models`` in pieces of whole rows (about :data:`PIECE_BYTES`
    across models) into a small staging buffer, and fold each piece into the fused kernel while it is still
    in cache. ``stored``: the dtype every model stores the slot as (the pieces are values), or the GGUF block
    type every model holds it in (the pieces are the stored blocks, decoded inside the kernel:
    :class:`_CodedPieces`)."""
    meta = plan.slots[task.slot]
    start, stop = rows
    per_row = _chunk_numel(meta.shape, (0, 1))
    pieces: _Pieces[Any] = (_CodedPieces(stored, len(models), per_row, (stop - start) * per_row)
                            if isinstance(stored, str) else
                            _ValuePieces(stored, len(models), per_row, (stop - start) * per_row))
    piece_rows = _piece_rows(len(models), per_row, pieces.value_bytes)
    found: list[tuple[np.ndarray, np.ndarray]] = []  # skeleton entries, piece by piece
    nbytes, reading = 0, 0.0
    for r0 in range(start, stop, piece_rows):
        r1 = min(stop, r0 + piece_rows)
        piece = pieces.piece(staging, r1 - r0)
        began = time.perf_counter()
        for i, m in enumerate(models):
            with _stream_read(locks[m]):
                pieces.read(readers[m], meta.name, (r0, r1), piece[i])
        reading += time.perf_counter() - began
        nbytes += len(models) * (r1 - r0) * pieces.row_bytes
        pieces.add(piece, (r1 - r0) * per_row)
        if skeleton is not None:
            found.append(pieces.gather(piece, meta.shape, (r0, r1), skeleton))
    read_rate.add(nbytes, reading)
    return _streamed(models, pieces.finish(), found if skeleton is not None else None, nbytes)


_P = TypeVar("_P", torch.Tensor, np.ndarray)


class _Pieces(Generic[_P]):
    """What :func:`_stream_reduce` does with one chunk's pieces, the part that depends on what they hold:
    values in their stored dtype (:class:`_ValuePieces`) or GGUF blocks decoded inside the kernel
    (:class:`_CodedPieces`). One per chunk: it holds the chunk's reduction.

    Attributes
    ----------
    value_bytes : int
        Bytes per value that pieces are cut by (:func:`_piece_rows`).
    row_bytes : int
        Bytes one model's row takes in a piece (what is read).
    """

    value_bytes: int
    row_bytes: int

    def piece(self, staging: _Staging, rows: int) -> _P:
        """The (M, ...) buffer of a piece of ``rows`` rows of every model, in ``staging``."""
        raise NotImplementedError

    def read(self, reader: ModelReader, name: str, rows: tuple[int, int], out: _P) -> None:
        """Read ``rows`` of ``name`` from one model into its row ``out`` of the piece."""
        raise NotImplementedError

    def add(self, piece: _P, width: int) -> None:
        """Fold a piece of ``width`` values per model into the chunk's reduction."""
        raise NotImplementedError

    def gather(self, piece: _P, shape: tuple[int, ...], rows: tuple[int, int],
               skeleton: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The skeleton entries inside a piece holding ``rows`` of the slot (as :func:`gather`)."""
        raise NotImplementedError

    def finish(self) -> tuple[Moments, np.ndarray, np.ndarray]:
        """Moments, squared distances and equal-entry counts of the chunk."""
        raise NotImplementedError


class _ValuePieces(_Pieces[torch.Tensor]):
    """Pieces of values in the ``dtype`` every model stores them in (each a
    :class:`~mother_core.io.base.BufferReader`), reduced by :class:`~mother_core.stats.fused.StreamReduction`."""

    def __init__(self, dtype: torch.dtype, models: int, per_row: int, columns: int) -> None:
        self.dtype, self.models, self.per_row = dtype, models, per_row
        self.value_bytes = torch.empty((), dtype=dtype).element_size()
        self.row_bytes = per_row * self.value_bytes
        self.reduction = fused.StreamReduction(models, True, columns)

    def piece(self, staging: _Staging, rows: int) -> torch.Tensor:
        width = rows * self.per_row
        return staging.get(self.dtype, self.models * width).view(self.models, width)

    def read(self, reader: ModelReader, name: str, rows: tuple[int, int], out: torch.Tensor) -> None:
        assert isinstance(reader, BufferReader)  # _kernel_dtype chose this path for such readers
        reader.read_into(name, rows, out)

    def add(self, piece: torch.Tensor, width: int) -> None:
        self.reduction.add(piece)

    def gather(self, piece: torch.Tensor, shape: tuple[int, ...], rows: tuple[int, int],
               skeleton: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return gather(piece, shape, rows, skeleton)

    def finish(self) -> tuple[Moments, np.ndarray, np.ndarray]:
        return self.reduction.finish()


class _CodedPieces(_Pieces[np.ndarray]):
    """Pieces of GGUF 4- to 6-bit blocks of type ``qtype`` (every model a :class:`~mother_core.io.base.CodedReader`),
    decoded inside the kernel (:class:`~mother_core.stats.fused_codes.CodedReduction`). A piece holds the rows
    of a bfloat16 piece, so the kernel's blocks are the same: the statistics of :class:`_ValuePieces` of the
    same rows read as bfloat16, bit for bit, without the piece of values."""

    value_bytes = 2  # cut as the bfloat16 pieces are

    def __init__(self, qtype: str, models: int, per_row: int, columns: int) -> None:
        self.qtype, self.models = qtype, models
        self.row_bytes = fused_codes.stored_bytes(qtype, per_row)
        self.reduction = fused_codes.CodedReduction(qtype, models, True, columns)

    def piece(self, staging: _Staging, rows: int) -> np.ndarray:
        return staging.get(torch.uint8, self.models * rows * self.row_bytes).numpy().reshape(self.models, -1)

    def read(self, reader: ModelReader, name: str, rows: tuple[int, int], out: np.ndarray) -> None:
        assert isinstance(reader, CodedReader)  # _coded_type chose this path for such readers
        reader.read_codes(name, rows, out)

    def add(self, piece: np.ndarray, width: int) -> None:
        self.reduction.add(piece, width)

    def gather(self, piece: np.ndarray, shape: tuple[int, ...], rows: tuple[int, int],
               skeleton: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return fused_codes.gather(piece, self.qtype, shape, rows, skeleton)

    def finish(self) -> tuple[Moments, np.ndarray, np.ndarray]:
        return self.reduction.finish()


def _piece_rows(models: int, per_row: int, elsize: int) -> int:
    """Rows of a streamed piece: about :data:`PIECE_BYTES` of ``models`` rows of ``per_row`` values of
    ``elsize`` bytes. The coded path cuts its pieces as the bfloat16 path does (``elsize`` 2), so that the
    kernel's blocks, and so the statistics bit for bit, are the same."""
    return max(1, PIECE_BYTES // max(1, models * per_row * elsize))


@contextlib.contextmanager
def _stream_read(lock: threading.Lock) -> Iterator[None]:
    """One model's read of a streamed piece, under its reader's lock; any failure is a :class:`_StreamFailed`
    (the chunk path reads the chunk again and reports it)."""
    try:
        with lock:
            yield
    except Exception as e:  # noqa: BLE001 - reported by the chunk path, which reads it again
        raise _StreamFailed(str(e)) from e


def _streamed(models: list[int], reduced: tuple[Moments, np.ndarray, np.ndarray],
              found: list[tuple[np.ndarray, np.ndarray]] | None, nbytes: int) -> _Reduced:
    """A streamed chunk's results (``found``: its skeleton entries piece by piece, None without a skeleton);
    a chunk holding NaN/Inf is a :class:`_StreamFailed` (the chunk path reduces it again without those rows)."""
    moments, dist, equal = reduced
    if _nonfinite(moments).any():
        raise _StreamFailed("NaN/Inf values")
    sk = None if found is None else (np.concatenate([p for p, _ in found]),
                                     np.concatenate([v for _, v in found], axis=1))
    return _Reduced(models, moments, dist, equal, {}, nbytes, sk)


def _coded_type(name: str, models: Sequence[int], readers: Sequence[ModelReader]) -> str | None:
    """The block type of ``name`` when every model hands over its stored blocks of it, all of one type that
    :mod:`~mother_core.stats.fused_codes` decodes (:class:`~mother_core.io.base.CodedReader`); else None."""
    types = {reader.coded(name) if isinstance(reader, CodedReader) else None for reader in (readers[m] for m in models)}
    qtype = types.pop() if len(types) == 1 else None
    return qtype if qtype in fused_codes.TYPES and fused_codes.enabled() else None


def _prefetch(plan: Plan, step: tuple[TensorTask, int], readers: Sequence[ModelReader],
              locks: Sequence[threading.Lock], failed: dict[int, str]) -> None:
    """Queue background reads of one chunk for every model whose reader supports it (a hint)."""
    task, ci = step
    name, rows = plan.slots[task.slot].name, task.chunks[ci]
    for m in task.models:
        reader = readers[m]
        if isinstance(reader, PrefetchingReader) and m not in failed:
            with locks[m]:
                try:
                    reader.prefetch(name, rows)
                except Exception:  # noqa: BLE001 - a hint must never fail the pass
                    pass


def _load(task: TensorTask, ci: int, plan: Plan, readers: Sequence[ModelReader], ring: _BufferRing,
          slot: int, device: torch.device, failed: dict[int, str], locks: Sequence[threading.Lock],
          use_fused: bool) -> _Chunk:
    meta = plan.slots[task.slot]
    rows = task.chunks[ci]
    models = [m for m in task.models if m not in failed]
    errors: dict[int, str] = {}
    kept: list[int] = []
    nbytes = 0
    if not models:
        return _Chunk(task, ci, [], None, errors, 0)
    n = _chunk_numel(meta.shape, rows)
    buf = ring.get(slot, len(models), n, _chunk_dtype(meta.name, models, readers, device, use_fused))
    for m in models:
        row = buf[len(kept)]  # rows of models that fail are overwritten by the next model
        try:
            nbytes += _fill_row(readers[m], meta.name, rows, row, ring.staging_for(slot), locks[m])
        except MotherError as e:
            errors[m] = str(e)
            continue
        except Exception as e:  # a reader bug or I/O error must not sink the other models
            errors[m] = (f"Could not read tensor {meta.name!r} from {readers[m].ref.path} ({type(e).__name__}: "
                         f"{str(e)[:200]}): the file does not follow its format's layout. Re-export the model, "
                         "or remove it from the set; the other models are read.")
            continue
        kept.append(m)
    if not kept:
        return _Chunk(task, ci, [], None, errors, nbytes)
    host = buf[: len(kept)]
    # On a GPU, half precision crosses the bus as stored (half the bytes of float32) and is widened there.
    data = host.to(device, non_blocking=True).float() if device.type == "cuda" else host
    return _Chunk(task, ci, kept, data, errors, nbytes)


def _fused_work(plan: Plan, readers: Sequence[ModelReader], device: torch.device) -> tuple[int, set[torch.dtype]]:
    """How many values the fused kernel could reduce in this pass, and in which dtypes."""
    values, dtypes = 0, set()
    for task in plan.tasks:
        m = len(task.models)
        dtype = _chunk_dtype(plan.slots[task.slot].name, task.models, readers, device, True)
        if fused.accepts(dtype, m, device):  # bf16 as stored, or float32 (as stored or widened)
            dtypes.add(dtype)
            values += _task_values(plan, task)
    return values, dtypes


def _task_values(plan: Plan, task: TensorTask) -> int:
    """Values the pass reduces for ``task``: every model's rows of every chunk."""
    return len(task.models) * sum(_chunk_numel(plan.slots[task.slot].shape, rows) for rows in task.chunks)


def _chunk_dtype(name: str, models: Sequence[int], readers: Sequence[ModelReader],
                 device: torch.device, use_fused: bool) -> torch.dtype:
    """The chunk's dtype in host memory: the stored one when the fused kernel reduces it as stored (no
    widened copy at all) or when a GPU widens it (:func:`_load`), float32 otherwise."""
    if device.type == "cuda":
        stored = _stored_dtype(name, models, readers)
        return stored if stored in (torch.bfloat16, torch.float16) else torch.float32
    kernel = _kernel_dtype(name, models, readers, device) if use_fused else None
    return torch.float32 if kernel is None else kernel


def _kernel_dtype(name: str, models: Sequence[int], readers: Sequence[ModelReader],
                  device: torch.device) -> torch.dtype | None:
    """The dtype every model stores ``name`` in, when the fused kernel takes it as stored; else None."""
    stored = _stored_dtype(name, models, readers)
    return stored if stored is not None and fused.accepts(stored, len(models), device) else None


def _stored_dtype(name: str, models: Sequence[int], readers: Sequence[ModelReader]) -> torch.dtype | None:
    """The dtype every model stores ``name`` in, when they all can read it straight into a buffer; else None.

    A model whose reader rounds ``name``'s values to bfloat16 (``half_width``: 4- to 6-bit GGUF codes,
    listed as float32) counts as bfloat16 when every other model stores bfloat16 or is such a model too,
    so the chunk is read at half width (half the decoder's stores, half the kernel's reads; the values are
    the same either way), and as its listed float32 beside a float32 model."""
    stored, half = set(), 0
    for m in models:
        info = readers[m].tensor_infos().get(name)
        if info is None or not isinstance(readers[m], BufferReader):
            return None
        if _half_width(readers[m], name):
            half += 1
        else:
            stored.add(info.dtype)
    if half and stored <= {"bfloat16"}:
        return torch.bfloat16
    if half:
        stored.add("float32")
    return getattr(torch, stored.pop(), None) if len(stored) == 1 else None


def _half_width(reader: ModelReader, name: str) -> bool:
    """Whether ``reader`` fills a bfloat16 buffer with ``name``'s values as they are (GGUF's 4- to 6-bit
    codes, :meth:`~mother_core.io.gguf_reader.GGUFReader.half_width`)."""
    return isinstance(reader, HalfWidthReader) and reader.half_width(name)


def _chunk_numel(shape: tuple[int, ...], rows: tuple[int, int] | None) -> int:
    n = 1
    for d in shape[1:] if rows is not None else shape:
        n *= d
    return n * (rows[1] - rows[0]) if rows is not None else n


def _fill_row(reader: ModelReader, name: str, rows: tuple[int, int] | None, row: torch.Tensor,
              staging: "_Staging", lock: threading.Lock) -> int:
    """Read ``name`` (``rows``) of one model into ``row`` (flat, float32 or the stored dtype); returns
    the bytes read."""
    read_into = reader.read_into if isinstance(reader, BufferReader) else None
    info = reader.tensor_infos().get(name)
    if read_into is None or info is None:
        with lock:
            t = reader.read(name, rows)
        row.copy_(t.reshape(-1))  # converts bf16/fp16 -> fp32 in the same pass
        return t.numel() * t.element_size()
    dtype = getattr(torch, info.dtype)
    if dtype == row.dtype or (row.dtype == torch.bfloat16 and _half_width(reader, name)):
        with lock:
            read_into(name, rows, row)  # straight into the chunk buffer
        return row.numel() * row.element_size()
    # Half precision (or float64): read pieces of whole rows into the staging buffer, widen each into place.
    if rows is None:  # a scalar or a tensor read whole: one piece
        start, stop, per_row = 0, 1, row.numel()
    else:
        start, stop = rows
        per_row = row.numel() // max(stop - start, 1)
    elsize = torch.empty((), dtype=dtype).element_size()
    step = max(1, STAGING_BYTES // max(per_row * elsize, 1))
    for r0 in range(start, stop, step):
        r1 = min(stop, r0 + step)
        piece = staging.get(dtype, (r1 - r0) * per_row)
        with lock:
            read_into(name, None if rows is None else (r0, r1), piece)
        row[(r0 - start) * per_row : (r1 - start) * per_row].copy_(piece)
    return row.numel() * elsize


class _TaskState:
    """Accumulates one slot's moments and distances over its chunks (arrays over ``task.models``)."""

    def __init__(self, task: TensorTask, skeleton: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.pos = {m: i for i, m in enumerate(task.models)}
        k = len(task.models)
        self.moments: Moments | None = None  # over task.models; n == 0 where nothing was added yet
        self.dist = np.zeros((k, k))
        self.equal = np.zeros((k, k))
        self.dropped: set[int] = set()
        self.nonfinite: set[int] = set()
        self.skeleton = (None if skeleton is None else
                         np.full((k, len(skeleton[0]), len(skeleton[1])), np.nan, dtype=np.float32))

    def add(self, chunk: "_Reduced") -> None:
        self.dropped.update(chunk.errors)
        self.nonfinite.update(chunk.nonfinite)
        if chunk.moments is None or chunk.sq_dist is None or chunk.equal is None:
            return
        mom, d = chunk.moments, chunk.sq_dist
        idx = np.array([self.pos[m] for m in chunk.models])
        if self.moments is None and len(idx) == len(self.pos):
            # The usual first (often only) chunk: every model read, in task order. Take its results as
            # they are (a slot's fixed cost, paid per tensor: many files hold thousands of small ones).
            self.dist, self.equal = np.array(d, dtype=np.float64), np.array(chunk.equal, dtype=np.float64)
            self.moments = Moments(*(np.array(a, dtype=np.float64) for a in (mom.n, mom.mean, mom.m2, mom.m3, mom.m4)))
            if self.skeleton is not None and chunk.skeleton is not None:
                positions, values = chunk.skeleton
                self.skeleton[:, positions] = values
            return
        self.dist[np.ix_(idx, idx)] += d
        self.equal[np.ix_(idx, idx)] += chunk.equal
        if self.skeleton is not None and chunk.skeleton is not None:
            positions, values = chunk.skeleton
            self.skeleton[idx[:, None], positions[None, :]] = values
        if self.moments is None:
            k = len(self.pos)
            self.moments = Moments(*(np.zeros(k) for _ in range(5)))
        old = self.moments
        cur = Moments(old.n[idx], old.mean[idx], old.m2[idx], old.m3[idx], old.m4[idx])
        new = _combine_or_take(cur, mom)
        for field_name in ("n", "mean", "m2", "m3", "m4"):
            getattr(old, field_name)[idx] = getattr(new, field_name)

    def finish(self, task: TensorTask, out: PassOutput) -> None:
        if self.nonfinite - self.dropped:
            out.nonfinite[task.slot] = self.nonfinite - self.dropped
        mo = self.moments
        ok: list[int] = []
        if mo is not None:  # None: no chunk of this slot was read
            ok = [m for m in task.models if m not in self.dropped and m not in self.nonfinite and mo.n[self.pos[m]] > 0]
            for m in ok:
                i = self.pos[m]
                out.moments[(task.slot, m)] = (float(mo.n[i]), float(mo.mean[i]), float(mo.m2[i]),
                                               float(mo.m3[i]), float(mo.m4[i]))
        idx = np.array([self.pos[m] for m in ok], dtype=int)
        out.sq_dist[task.slot] = (tuple(ok), self.dist[np.ix_(idx, idx)].copy())
        out.equal[task.slot] = (tuple(ok), self.equal[np.ix_(idx, idx)].copy())
        if self.skeleton is not None:
            out.skeletons[task.slot] = (tuple(ok), self.skeleton[idx])


def _combine_or_take(cur: Moments, new: Moments) -> Moments:
    """``cur.combine(new)`` where ``cur`` has data, ``new`` where it is still empty (n == 0)."""
    empty = cur.n == 0
    if empty.all():
        return new
    merged = cur.combine(new)
    if not empty.any():
        return merged

    def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(empty, b, a)

    return Moments(pick(merged.n, new.n), pick(merged.mean, new.mean), pick(merged.m2, new.m2),
                   pick(merged.m3, new.m3), pick(merged.m4, new.m4))
