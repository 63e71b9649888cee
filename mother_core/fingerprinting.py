"""Thousands of models: fingerprints -> candidate pairs -> exact pair statistics -> sparse recovery.

The path :func:`mother_core.pipeline.recover_paths` takes above
:data:`mother_core.pipeline.SPARSE_ABOVE` models (or when asked, ``candidates=k``), docs/SCALE.md:

1. each model is read once (:func:`~mother_core.stats.fingerprint.fingerprint_model`): moments and
   per-tensor sketches, kept in the sketch store of the cache folder; a store hit reads nothing, so
   adding a model to a set reads that model only (plus its candidates' tensors for step 3);
2. each model's ``k`` nearest neighbours by sketch distance are its candidates
   (:mod:`mother_core.recovery.candidates`);
3. exact per-tensor squared distances of candidate pairs (:mod:`mother_core.stats.pairs`), stored too;
4. recovery on the candidate graph (:mod:`mother_core.recovery.sparse`).

Step 1 is a map over models: pass ``mapper`` (e.g. :func:`mother_core.distributed.dask_mapper`) to
run it on a cluster whose workers write to the same store.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mother_core.errors import MotherError, TooFewModelsError
from mother_core.io.base import Discovery, ModelRef, Problem
from mother_core.io.discovery import base_model, discover
from mother_core.io.registry import needs_base
from mother_core.recovery.candidates import DEFAULT_K, candidate_pairs, embedding, nearest_neighbours
from mother_core.recovery.result import Recovery, RecoverySettings
from mother_core.recovery.sparse import SparseStatistics, recover_sparse
from mother_core.stats.cache import model_key
from mother_core.stats.fingerprint import Fingerprint, fingerprint_model
from mother_core.stats.pairs import exact_pair_distances
from mother_core.stats.sketch import SketchSpec
from mother_core.stats.sketch_store import SketchStore

#: A map over fingerprinting jobs: ``mapper(fn, jobs)`` returns ``[fn(job) for job in jobs]``, in order.
Mapper = Callable[[Callable[["FingerprintJob"], "JobResult"], Sequence["FingerprintJob"]], list["JobResult"]]


@dataclass(frozen=True)
class FingerprintJob:
    """One model to fingerprint, self-contained so a worker on another machine can run it."""

    ref: ModelRef
    base: ModelRef | None
    spec: SketchSpec
    content_hash: bool
    store_dir: str | None  # workers write the fingerprint here (a folder every worker reaches)


@dataclass(frozen=True)
class JobResult:
    """A worker's answer: the fingerprint (None when it went to the store), or why the model failed."""

    key: str
    fingerprint: Fingerprint | None = None
    error: str | None = None


def run_job(job: FingerprintJob) -> JobResult:
    """Fingerprint one model; with a store, write it there and return only the key (small messages)."""
    key = model_key(job.ref, job.base, job.content_hash)
    try:
        fp = fingerprint_model(job.ref, job.base, spec=job.spec, content_hash=job.content_hash)
    except MotherError as e:
        return JobResult(key, None, str(e))
    if job.store_dir is None:
        return JobResult(key, fp)
    with SketchStore(job.store_dir) as store:
        store.put_fingerprints([fp])
    return JobResult(key)


def serial_mapper(fn: Callable[[FingerprintJob], JobResult], jobs: Sequence[FingerprintJob]) -> list[JobResult]:
    return [fn(j) for j in jobs]


#: Fingerprints computed in this process are written to the store this many at a time.
STORE_BATCH = 256
#: While a model is fingerprinted, the OS is asked to read the files of the one this many places later
#: (``POSIX_FADV_WILLNEED``), at most :data:`READ_AHEAD_BYTES` of each: models come one small file at a
#: time, so from a cold page cache every read otherwise waits for the disk alone.
READ_AHEAD = 8
READ_AHEAD_BYTES = 64 << 20
_HAS_FADVISE = hasattr(os, "posix_fadvise") and hasattr(os, "POSIX_FADV_WILLNEED")


def _hint(ref: ModelRef) -> None:
    """Queue a background read of the start of ``ref``'s files (a hint: failures are ignored)."""
    if not _HAS_FADVISE:
        return
    for f in ref.files:
        try:
            fd = os.open(f, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, READ_AHEAD_BYTES, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


def _run_here(jobs: Sequence[FingerprintJob], store: SketchStore | None) -> list[JobResult]:
    """Run ``jobs`` in this process, writing their fingerprints to ``store`` every :data:`STORE_BATCH`
    models (an interrupted run keeps all but the last batch)."""
    results: list[JobResult] = []
    pending: list[Fingerprint] = []
    for job in jobs[:READ_AHEAD]:
        _hint(job.ref)
    for i, job in enumerate(jobs):
        if i + READ_AHEAD < len(jobs):
            _hint(jobs[i + READ_AHEAD].ref)
        res = run_job(job)
        results.append(res)
        if res.fingerprint is not None:
            pending.append(res.fingerprint)
        if store is not None and (len(pending) >= STORE_BATCH or (job is jobs[-1] and pending)):
            store.put_fingerprints(pending)
            pending = []
    return results


def fingerprint_all(refs: Sequence[ModelRef], *, spec: SketchSpec = SketchSpec(), cache_dir: str | Path | None = None,
                    content_hash: bool = False, mapper: Mapper | None = None
                    ) -> tuple[list[ModelRef], list[Fingerprint], list[Problem], dict]:
    """Fingerprints of ``refs`` (from the store where present, else by reading each model once).

    Returns the models that could be read, their fingerprints, the problems and figures
    (``models_read``, ``bytes_read``).
    """
    problems: list[Problem] = []
    by_id = {r.id: r for r in refs}
    bases: list[ModelRef | None] = []
    usable: list[ModelRef] = []
    for r in refs:
        base = _base_ref(r, by_id)
        if base is None and needs_base(r):
            problems.append(Problem(r.path, f"LoRA adapter {r.path} needs its base model {r.base_id!r}, which is "
                                            "not in the set. Add the base model's folder to the paths you give."))
            continue
        usable.append(r)
        bases.append(base)
    keys = [model_key(r, b, content_hash) for r, b in zip(usable, bases)]
    store = SketchStore(cache_dir) if cache_dir is not None else None
    try:
        have = store.fingerprints(keys, spec) if store is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in have]
        # Workers write to the store themselves; in this process, fingerprints come back and are stored
        # in batches (one transaction per batch rather than a connection and a commit per model).
        store_dir = None if store is None or mapper is None else str(cache_dir)
        jobs = [FingerprintJob(usable[i], bases[i], spec, content_hash, store_dir) for i in todo]
        results = mapper(run_job, jobs) if mapper is not None else _run_here(jobs, store)
        errors = {}
        for i, res in zip(todo, results):
            if res.error is not None:
                errors[i] = res.error
            elif res.fingerprint is not None:
                have[keys[i]] = res.fingerprint
        if store is not None and store_dir is not None and len(errors) < len(todo):
            have.update(store.fingerprints([keys[i] for i in todo if i not in errors], spec))
    finally:
        if store is not None:
            store.close()
    out_refs, fps = [], []
    nbytes = 0
    for i, (ref, key) in enumerate(zip(usable, keys)):
        if i in errors:
            problems.append(Problem(ref.path, errors[i]))
            continue
        fp = have.get(key)
        if fp is None:
            problems.append(Problem(ref.path, f"{ref.id}: its fingerprint was not found in the store after it was "
                                              "computed (was the cache folder shared with the workers?)."))
            continue
        if not fp.slots:
            problems.append(Problem(ref.path, f"{ref.path} holds no readable floating-point weights; it was skipped."))
            continue
        problems.extend(Problem(ref.path, note) for note in fp.notes)
        out_refs.append(ref)
        fps.append(fp)
        nbytes += fp.nbytes
    return out_refs, fps, problems, {"models_read": len(todo), "bytes_read": nbytes if todo else 0}


def sparse_statistics(models: Discovery | Sequence[ModelRef], *, k: int = DEFAULT_K, spec: SketchSpec = SketchSpec(),
                      cache_dir: str | Path | None = None, content_hash: bool = False,
                      mapper: Mapper | None = None, timings: dict | None = None) -> SparseStatistics:
    """Steps 1-3 of the module docstring: per-model pass, candidates, exact candidate pairs.

    Parameters
    ----------
    k : int
        Candidate parents per model (:data:`mother_core.recovery.candidates.DEFAULT_K`).
    timings : dict, optional
        Filled with seconds per stage (``fingerprint``, ``candidates``, ``pairs``, ``assemble``) and the
        process's CPU seconds in the first three (``fingerprint_cpu``, ...: less swayed by a busy machine).
    """
    refs = list(models.models) if isinstance(models, Discovery) else list(models)
    problems: list[Problem] = list(models.problems) if isinstance(models, Discovery) else []
    timings = timings if timings is not None else {}
    t0, c0 = time.perf_counter(), time.process_time()
    good, fps, more, figures = fingerprint_all(refs, spec=spec, cache_dir=cache_dir, content_hash=content_hash,
                                               mapper=mapper)
    problems += more
    if len(good) < 2:
        raise TooFewModelsError(f"Recovery needs at least two readable models; {len(good)} could be read. "
                                "Add more models (a folder of model folders works).")
    t1, c1 = time.perf_counter(), time.process_time()
    slots = sorted({s for fp in fps for s in fp.slots})
    matrices = [s for s in slots if "," in s.rsplit("|", 1)[1]] or slots
    neighbours = nearest_neighbours(embedding(fps, matrices), k)
    pairs = candidate_pairs(neighbours)
    t2, c2 = time.perf_counter(), time.process_time()
    keys = [fp.key for fp in fps]
    values: dict[int, np.ndarray] = {}
    store = SketchStore(cache_dir) if cache_dir is not None else None
    pair_reads = pair_bytes = 0
    try:
        stored = store.pairs((keys[a], keys[b]) for a, b in pairs) if store is not None else {}
        for p, (a, b) in enumerate(pairs):
            key = (keys[a], keys[b]) if keys[a] < keys[b] else (keys[b], keys[a])
            v = stored.get(key)
            if v is not None and len(v) == len(set(fps[a].slots) & set(fps[b].slots)):
                values[p] = v
        missing = np.array([p for p in range(len(pairs)) if p not in values], dtype=np.int64)
        if len(missing):
            by_id = {r.id: r for r in good}
            bases = [_base_ref(r, by_id) for r in good]
            new, failed, pair_reads = exact_pair_distances(good, fps, pairs[missing], bases)
            for m, message in sorted(failed.items()):
                problems.append(Problem(good[m].path, f"{good[m].id} could not be read again for its candidate "
                                                      f"pairs ({message}); it is left without them."))
            for local, v in new.items():
                values[int(missing[local])] = v
            involved = {int(x) for row in pairs[missing] for x in row}
            pair_bytes = int(sum(_size(good[m]) for m in involved))
            if store is not None:
                store.put_pairs({(keys[pairs[p][0]], keys[pairs[p][1]]): values[p]
                                 for p in (int(missing[i]) for i in new)})
    finally:
        if store is not None:
            store.close()
    t3, c3 = time.perf_counter(), time.process_time()
    settings = {"k": k, "sketch_dim": spec.dim, "sketch_seed": spec.seed, "pairs": len(pairs),
                "models_fingerprinted": figures["models_read"], "fingerprint_bytes": figures["bytes_read"],
                "pair_models_read": pair_reads, "pair_bytes_estimate": pair_bytes,
                "bytes_read": figures["bytes_read"] + pair_bytes, "cached": cache_dir is not None}
    stats = SparseStatistics.assemble(good, fps, pairs, values, problems, settings)
    timings.update(fingerprint=t1 - t0, candidates=t2 - t1, pairs=t3 - t2, assemble=time.perf_counter() - t3,
                   fingerprint_cpu=c1 - c0, candidates_cpu=c2 - c1, pairs_cpu=c3 - c2)
    return stats


def _size(ref: ModelRef) -> int:
    total = 0
    for f in ref.files:
        try:
            total += os.stat(f).st_size
        except OSError:
            pass
    return total


def recover_at_scale(paths: Sequence[str | os.PathLike[str]], settings: RecoverySettings = RecoverySettings(), *,
                     k: int = DEFAULT_K, cache_dir: str | Path | None = None, content_hash: bool = False,
                     component: str | None = None, roots: Sequence[str | os.PathLike[str]] | None = None,
                     mapper: Mapper | None = None, spec: SketchSpec = SketchSpec()) -> Recovery:
    """Discover, fingerprint, compare candidate pairs and recover: linear in the number of models."""
    start = time.perf_counter()
    found = discover(paths, component=component, roots=roots)
    stats = sparse_statistics(found, k=k, spec=spec, cache_dir=cache_dir, content_hash=content_hash, mapper=mapper)
    result = recover_sparse(stats, settings)
    result.run_seconds = time.perf_counter() - start
    return result


def _base_ref(ref: ModelRef, by_id: dict[str, ModelRef]) -> ModelRef | None:
    """The base an adapter is read on (:func:`~mother_core.io.discovery.base_model`); None for other models."""
    return base_model(ref, by_id) if needs_base(ref) else None
