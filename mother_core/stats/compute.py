"""``compute_statistics``: open models, consult the cache, plan, execute, assemble.

The only entry point of the streaming pass. Everything a run skips (unreadable files, models with
no float tensors, a file that breaks half-way) is reported in ``WeightStatistics.problems``.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mother_core.device import resolve_device
from mother_core.errors import (
    CacheBusyError,
    MissingBaseModelError,
    MotherError,
    ResultFormatError,
    TooFewModelsError,
)
from mother_core.io.base import (
    Discovery,
    ModelReader,
    ModelRef,
    NotingReader,
    Problem,
    ShapeAdoptingReader,
    TensorInfo,
)
from mother_core.io.discovery import base_model, names_itself
from mother_core.io.readers import open_model
from mother_core.io.registry import needs_base
from mother_core.stats.bounds import drop_oversized_models
from mother_core.stats.cache import StatsCache, model_key, set_aside, slot_key
from mother_core.stats.execute import PassOutput, execute_plan
from mother_core.stats.plan import DEFAULT_CHUNK_ELEMENTS, Plan, build_plan, collect_slots
from mother_core.stats.progress import Progress, ProgressCallback
from mother_core.stats.result import TensorMeta, WeightStatistics
from mother_core.stats.running_moments import summarise_moments
from mother_core.stats.skeleton import UNIT_ROUNDOFF, slot_skeleton
from mother_core.timing import stage


def compute_statistics(
    models: Discovery | Sequence[ModelRef],
    *,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    content_hash: bool = False,
    progress: ProgressCallback | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    decode_threads: int | None = None,
) -> WeightStatistics:
    """Per-model per-tensor statistics and per-pair per-tensor distances, in one streaming pass.

    The steps, each a function below: open the models (:func:`_open_models`), consult the cache
    (:class:`CacheSession`), plan what to read (:func:`_plan_pass`), execute the plan
    (:func:`~mother_core.stats.execute.execute_plan`), assemble the result (:func:`_assemble_result`).

    Parameters
    ----------
    models : Discovery or sequence of ModelRef
        What :func:`mother_core.io.discovery.discover` found; its problems are carried over.
    device : {"auto", "cpu", "cuda"}
        Where the reductions run; results agree across devices to ~1e-6 relative.
    cache_dir : path, optional
        Folder of the statistics cache. With it, a re-run of the same set reads nothing and adding a
        model reads the new model plus each tensor it shares with the others once.
    content_hash : bool
        Key the cache on file content (SHA-256) instead of path, size and mtime.
    progress : callable, optional
        Called with :class:`~mother_core.stats.progress.Progress` after each tensor.
    chunk_elements : int
        Elements per model per chunk; bounds peak memory to about models x chunk x 4 bytes.
    decode_threads : int, optional
        Threads that decode a chunk of a quantized file (0: every core available; the values are the
        same either way). Process-wide (:func:`mother_core.io.staged.set_decode_threads`); None leaves
        it as it is.

    Raises
    ------
    TooFewModelsError
        If fewer than two models could be read.
    """
    if decode_threads is not None:
        from mother_core.io.staged import set_decode_threads

        set_decode_threads(decode_threads)
    refs = list(models.models) if isinstance(models, Discovery) else list(models)
    problems: list[Problem] = list(models.problems) if isinstance(models, Discovery) else []
    dev = resolve_device(device)
    started = time.perf_counter()
    if progress is not None:
        progress(Progress("opening models", 0, 0, 0, 0, time.perf_counter() - started, None, str(dev)))
    with contextlib.ExitStack() as stack:
        with stage("opening models"):
            readers, listings, keys = _open_models(refs, problems, stack, content_hash)
        with stage("planning"):
            cache = CacheSession.open(cache_dir, keys, problems)
            stack.callback(cache.close)
            plan, known, known_equal = _plan_pass(listings, cache, chunk_elements)
        with stage("read + reduce"):
            out = execute_plan(plan, readers, dev, progress)
        with stage("assembling statistics"):
            cache.store(plan, out, known)
            stats = _assemble_result([r.ref for r in readers], listings, plan, out, cache, known, known_equal,
                                     problems)
        stats.settings = {
            "device": str(dev), "chunk_elements": chunk_elements, "bytes_read": out.bytes_read,
            "seconds": time.perf_counter() - started, "cached": cache.used,
        }
        return stats


def _open_models(refs: list[ModelRef], problems: list[Problem], stack: contextlib.ExitStack, content_hash: bool,
                 ) -> tuple[list[ModelReader], list[Mapping[str, TensorInfo]], list[str]]:
    """Step 1: open every model, list its tensors and key it for the cache.

    Unreadable models and models without float weights become ``problems``; fewer than two readable
    models is an error. Returns the readers, their tensor listings and their cache keys (one each).
    """
    readers, base_refs = _open_all(refs, problems, stack)
    listings: list[Mapping[str, TensorInfo]] = [r.tensor_infos() for r in readers]
    _drop_models_without_floats(readers, listings, problems)
    drop_oversized_models(readers, listings, problems)
    if len(readers) < 2:
        raise TooFewModelsError(_too_few_message(len(readers), problems))
    keys = [model_key(r.ref, base_refs.get(r.ref.id), content_hash) for r in readers]
    return readers, listings, keys


def _plan_pass(listings: Sequence[Mapping[str, TensorInfo]], cache: CacheSession, chunk_elements: int,
               ) -> tuple[Plan, np.ndarray, np.ndarray]:
    """Step 2: what to read. Tensors whose statistics and pair distances the cache holds (or that two
    copies of one file share) are left out of the plan. Returns the plan and the (T, N, N) squared
    distances and counts of equal entries known without reading (NaN elsewhere)."""
    slots, holders, _ = collect_slots(listings)
    known, known_equal = cache.known_pairs(slots)
    plan = build_plan(listings, cache.to_read(slots, holders, known), chunk_elements)
    return plan, known, known_equal


def _assemble_result(refs: list[ModelRef], listings: Sequence[Mapping[str, TensorInfo]], plan: Plan,
                     out: PassOutput, cache: CacheSession, known: np.ndarray, known_equal: np.ndarray,
                     problems: list[Problem]) -> WeightStatistics:
    """Step 4: the pass's output and the cached values as one :class:`WeightStatistics` over the models
    that were read to the end; models that failed mid-pass become ``problems``."""
    for m, message in sorted(out.failed.items()):
        problems.append(Problem(refs[m].path, message))
    problems.extend(_nonfinite_problems(refs, plan, out.nonfinite, set(out.failed)))
    stats = _assemble(refs, plan, out, cache, known, known_equal)
    stats.skeletons = _assemble_skeletons(plan, out, cache)
    if cache.misshapen and cache.cache is not None:
        problems.append(Problem(str(cache.cache.path), f"{cache.misshapen} cached value(s) in {cache.cache.path} "
                                                       "were invalid (a sketch of another shape than its tensor's); "
                                                       "they were computed again."))
    stats.roundoff = np.array([_roundoff(listing) for listing in listings])
    stats.finer = _finer(listings, stats.tensors, stats.roundoff)
    del known, known_equal  # (T, N, N) each: as large as the result's distances
    keep = [m for m in range(len(refs)) if m not in out.failed]
    if len(keep) < 2:
        raise TooFewModelsError(_too_few_message(len(keep), problems))
    stats = _subset(stats, keep)
    stats.problems = problems
    return stats


class CacheSession:
    """One run's use of the statistics cache (:mod:`mother_core.stats.cache`): open and check it, read
    what it knows about this run's models, say which distances are known without reading, and write back
    what the pass computed and the cache lacked.

    A run never fails because of its cache: with no ``cache_dir``, a cache another process holds too
    long, or one that cannot be made, the session is empty (nothing known, nothing stored); a cache
    found damaged on open or while reading is set aside (a note in the problems says where) and this
    run goes on without it.
    """

    def __init__(self, cache: StatsCache | None, keys: Sequence[str]) -> None:
        self.cache = cache
        self.keys = list(keys)  # per model of the run
        self.models: dict[tuple[str, str], tuple[float, ...]] = {}  # (model key, slot key) -> moments
        self.pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # key pair -> (slot ids, values)
        self.skeletons: dict[tuple[str, str], np.ndarray] = {}
        self.slot_names: dict[int, str] = {}  # cache slot id -> slot key
        self.misshapen = 0  # cached skeletons of another shape than their slot's: read again

    @classmethod
    def open(cls, cache_dir: str | Path | None, keys: Sequence[str], problems: list[Problem]) -> CacheSession:
        """Open the cache in ``cache_dir`` (if any) and read what it holds for ``keys``."""
        session = cls(cls._open_cache(cache_dir, problems), keys)
        session._read(problems)
        return session

    @property
    def used(self) -> bool:
        return self.cache is not None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    @staticmethod
    def _open_cache(cache_dir: str | Path | None, problems: list[Problem]) -> StatsCache | None:
        """The cache, or None when there is none or another process holds it too long: a busy cache
        costs this run its reuse of earlier work, never the run itself. A damaged cache is set aside and a
        new one started (a note in ``problems`` says so); one that cannot be made at all is skipped."""
        if cache_dir is None:
            return None
        try:
            cache, note = StatsCache.open_or_rebuild(cache_dir)
        except CacheBusyError as e:
            # stacklevel 4: the line that called compute_statistics
            warnings.warn(f"{e} Running without the cache this time.", RuntimeWarning, stacklevel=4)
            return None
        except (ResultFormatError, OSError) as e:
            problems.append(Problem(str(cache_dir), f"The statistics cache in {cache_dir} cannot be used ({e}); "
                                                    "this run goes on without it."))
            return None
        if note:
            problems.append(Problem(str(cache.path), note))
        return cache

    def _read(self, problems: list[Problem]) -> None:
        """Read the cached values of this run's models; damage found while reading sets the cache aside."""
        cache = self.cache
        if cache is None:
            return
        try:
            self.models, self.pairs = cache.model_stats(self.keys), cache.pair_dists(self.keys)
            self.skeletons, self.slot_names = cache.skeletons(self.keys), cache.slot_names()
        except ResultFormatError as e:  # damage found while reading: this run goes on without it
            cache.close()
            aside = set_aside(cache.path)
            problems.append(Problem(str(cache.path), f"{e.message.split(' Delete it')[0]} It was set aside as "
                                                     f"{aside}; the next run starts a new cache."))
            self.models, self.pairs, self.skeletons, self.slot_names = {}, {}, {}, {}
            self.cache = None
            return
        if cache.rejected:
            problems.append(Problem(str(cache.path), f"{cache.rejected} cached value(s) in {cache.path} "
                                                     "were invalid (NULL, negative, non-finite or of the "
                                                     "wrong size); they were computed again."))

    def known_pairs(self, slots: Sequence[TensorMeta]) -> tuple[np.ndarray, np.ndarray]:
        """(T, N, N) squared distances and counts of exactly equal entries known without reading: cached
        pairs, and (0, every entry) between two models with the same key (one file given twice); NaN
        elsewhere. One row per cached pair, filled with array writes."""
        keys = self.keys
        n, t = len(keys), len(slots)
        known = np.full((t, n, n), np.nan)
        known_equal = np.full((t, n, n), np.nan)
        by_key: dict[str, list[int]] = {}
        for m, k in enumerate(keys):
            by_key.setdefault(k, []).append(m)
        numel = np.array([meta.numel for meta in slots], dtype=np.float64)
        for members in by_key.values():
            if len(members) > 1:
                idx = np.array(members)
                known[:, idx[:, None], idx[None, :]] = 0.0
                known_equal[:, idx[:, None], idx[None, :]] = numel[:, None, None]
        if self.pairs and self.slot_names:
            slot_of = {slot_key(meta.name, meta.shape): s for s, meta in enumerate(slots)}
            lookup = np.full(max(self.slot_names) + 1, -1, dtype=np.int64)  # cache slot id -> slot index here
            for i, sk in self.slot_names.items():
                lookup[i] = slot_of.get(sk, -1)
            for (ka, kb), (ids, values) in self.pairs.items():
                s_idx = lookup[ids]
                ok = s_idx >= 0
                for a in by_key.get(ka, ()):
                    for b in by_key.get(kb, ()):
                        known[s_idx[ok], a, b] = values[ok, 0]
                        known[s_idx[ok], b, a] = values[ok, 0]
                        known_equal[s_idx[ok], a, b] = values[ok, 1]
                        known_equal[s_idx[ok], b, a] = values[ok, 1]
        return known, known_equal

    def to_read(self, slots: Sequence[TensorMeta], holders: Sequence[Sequence[int]], known: np.ndarray,
                ) -> dict[int, list[int]]:
        """Per slot, the models whose tensor must be read: those the cache lacks (statistics or
        skeleton), and cached ones in a pair whose distance is not known."""
        keys = self.keys
        needs: dict[int, list[int]] = {}
        for s, (meta, who) in enumerate(zip(slots, holders)):
            sk = slot_key(meta.name, meta.shape)
            index = slot_skeleton(meta)
            wants_skeleton = index is not None
            if index is not None:  # a cache file may lie about a skeleton's shape (its bytes still add up):
                want = (len(index[0]), len(index[1]))  # taken as it was, it ended the run (a ValueError)
                for m in who:
                    got = self.skeletons.get((keys[m], sk))
                    if got is not None and got.shape != want:
                        del self.skeletons[(keys[m], sk)]
                        self.misshapen += 1
            read = {m for m in who if (keys[m], sk) not in self.models
                    or (wants_skeleton and (keys[m], sk) not in self.skeletons)}
            if len(read) < len(who):  # some holders are cached: read those in a pair the cache lacks
                idx = np.array(who)
                sub = known[s][np.ix_(idx, idx)]
                np.fill_diagonal(sub, 0.0)
                read.update(idx[np.isnan(sub).any(axis=1)].tolist())
            if read:
                needs[s] = sorted(read)
        return needs

    def store(self, plan: Plan, out: PassOutput, known: np.ndarray) -> None:
        """Write what this pass computed and the cache lacks (re-writing known rows cost seconds at
        scale). Nothing without a cache."""
        if self.cache is None:
            return
        keys = self.keys
        model_rows = []
        for (s, m), v in out.moments.items():
            meta = plan.slots[s]
            sk = slot_key(meta.name, meta.shape)
            if (keys[m], sk) not in self.models:
                model_rows.append((keys[m], sk, *v))
        pair_rows = []
        key_arr = np.array(keys, dtype=object)
        for s, (who, mat) in out.sq_dist.items():
            if len(who) < 2:
                continue
            equal = out.equal[s][1]
            sk = slot_key(plan.slots[s].name, plan.slots[s].shape)
            idx = np.array(who, dtype=int)
            new = np.triu(np.isnan(known[s][np.ix_(idx, idx)]), k=1)  # pairs the cache lacks (same-key pairs are 0)
            for a_i, b_i in zip(*np.nonzero(new)):
                pair_rows.append((key_arr[idx[a_i]], key_arr[idx[b_i]], sk, float(mat[a_i, b_i]),
                                  float(equal[a_i, b_i])))
        skeleton_rows = []
        for s, (who, values) in out.skeletons.items():
            sk = slot_key(plan.slots[s].name, plan.slots[s].shape)
            skeleton_rows += [(keys[m], sk, values[i]) for i, m in enumerate(who)
                              if (keys[m], sk) not in self.skeletons]
        self.cache.put(model_rows, pair_rows, skeleton_rows)


def _open_all(refs: list[ModelRef], problems: list[Problem], stack: contextlib.ExitStack
              ) -> tuple[list[ModelReader], dict[str, ModelRef]]:
    """Open every model; LoRA adapters are opened on top of their base's reader."""
    by_id = {r.id: r for r in refs}
    readers: list[ModelReader] = []
    base_refs: dict[str, ModelRef] = {}
    for ref in refs:
        try:
            base_reader = None
            if needs_base(ref):
                base = _find_base(ref, by_id)
                base_reader = stack.enter_context(open_model(base))
                base_refs[ref.id] = base
            readers.append(stack.enter_context(open_model(ref, base=base_reader)))
        except MotherError as e:
            problems.append(Problem(ref.path, str(e)))
        except Exception as e:  # noqa: BLE001 - a file no reader foresaw must not sink the other models
            problems.append(Problem(ref.path, f"{ref.path} could not be opened ({type(e).__name__}: {str(e)[:200]}): "
                                              "its files do not follow their format's layout. Re-export the model, "
                                              "or remove it from the set; the other models are read."))
    # Quantized weights that do not store their shape take it from the other models (mother_core/io/quantized.py).
    shapes = {n: i.shape for r in readers for n, i in r.tensor_infos().items() if len(i.shape) == 2}
    for reader in readers:
        if isinstance(reader, ShapeAdoptingReader):
            reader.adopt_shapes(shapes)
        # Tensors a reader left out (a dtype we do not compare, an impossible stride, a quantization it
        # cannot decode) are reported.
        if isinstance(reader, NotingReader):
            problems.extend(bounded_notes(reader.ref.path, reader.notes))
    return readers, base_refs


#: At most this many problems per model from its reader's notes; the rest are counted in one more.
MAX_NOTES_PER_MODEL = 20


def bounded_notes(path: str, notes: Sequence[str]) -> list[Problem]:
    """One Problem per note of a model's reader, at most :data:`MAX_NOTES_PER_MODEL`: a file whose 5,000
    quantized weights each lie about their scales made 5,000 problems (and as many lines on the app's page).

    Examples
    --------
    >>> [p.message for p in bounded_notes("m", [f"note {i}" for i in range(3)])]
    ['note 0', 'note 1', 'note 2']
    >>> bounded_notes("m", [f"note {i}" for i in range(1000)])[-1].message[:61]
    'm: 981 more notes like the ones above about this model (1,000'
    """
    if len(notes) <= MAX_NOTES_PER_MODEL:
        return [Problem(path, note) for note in notes]
    kept = MAX_NOTES_PER_MODEL - 1
    return [Problem(path, note) for note in notes[:kept]] + [Problem(path, (
        f"{path}: {len(notes) - kept:,} more notes like the ones above about this model ({len(notes):,} in all, "
        "the rest not listed); the model was read with what they leave."))]


def _find_base(ref: ModelRef, by_id: dict[str, ModelRef]) -> ModelRef:
    want = ref.base_id or ""
    found = base_model(ref, by_id)
    if found is not None:
        return found
    if (itself := names_itself(ref, list(by_id))) is not None:
        raise MissingBaseModelError(
            f"LoRA adapter {ref.path} names itself as its base model ({itself[0]!r} in {itself[1]} is this "
            "adapter), so its base is not known. Correct the base's name there and add the base model's "
            "folder to the paths you give.", ref.path)
    if ref.container == "sd-lora":
        from mother_core.io.sd_lora import missing_base_message

        raise MissingBaseModelError(missing_base_message(ref, [r for r in by_id.values() if not needs_base(r)]),
                                    ref.path)
    raise MissingBaseModelError(
        f"LoRA adapter {ref.path} needs its base model {want or '(unnamed)'!r}, which is not in the set. "
        "Add the base model's folder to the paths you give.", ref.path)


def _drop_models_without_floats(readers: list[ModelReader], listings: list, problems: list[Problem]) -> None:
    for i in reversed(range(len(readers))):
        if not any(t.is_float and t.numel > 0 for t in listings[i].values()):
            problems.append(Problem(readers[i].ref.path,
                                    f"{readers[i].ref.path} holds no floating-point weights; it was skipped."))
            del readers[i], listings[i]


def _nonfinite_problems(refs: list[ModelRef], plan, nonfinite: dict[int, set[int]], failed: set[int]) -> list[Problem]:
    """One Problem per model with NaN/Inf tensors: those tensors were left out of its comparisons (every
    other tensor, and every other model's comparisons, are computed as if the values were absent)."""
    by_model: dict[int, list[str]] = {}
    for s, models in sorted(nonfinite.items()):
        for m in models:
            if m not in failed:
                by_model.setdefault(m, []).append(plan.slots[s].name)
    out = []
    for m, names in sorted(by_model.items()):
        total = sum(m in who for who in plan.holders)
        shown = ", ".join(repr(n[:80]) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        whole = " (every tensor it shares: the model has no usable weights)" if total == len(names) else ""
        out.append(Problem(refs[m].path, f"{refs[m].id}: {len(names)} tensor(s) hold NaN or infinite values "
                                          f"({shown}){whole}; they were set aside for this model only, so its "
                                          "placement rests on its other tensors. Check how the file was made."))
    return out


def _too_few_message(n: int, problems: list[Problem]) -> str:
    msg = f"Recovery needs at least two readable models; {n} could be read."
    if problems:
        msg += " Skipped: " + "; ".join(f"{p.path}: {p.message}" for p in problems[:5])
    return msg + " Add more models (a folder of model folders works)."


def _assemble(refs: list[ModelRef], plan: Plan, out: PassOutput, cache: CacheSession, known: np.ndarray,
              known_equal: np.ndarray) -> WeightStatistics:
    keys, cached_models = cache.keys, cache.models
    n, t = len(refs), len(plan.slots)
    present = np.zeros((n, t), dtype=bool)
    mom = np.full((5, n, t), np.nan)
    sq = np.full((t, n, n), np.nan)
    equal = np.full((t, n, n), np.nan)
    for s, (meta, who) in enumerate(zip(plan.slots, plan.holders)):
        sk = slot_key(meta.name, meta.shape)
        for m in who:
            present[m, s] = True
            v = out.moments.get((s, m)) or cached_models.get((keys[m], sk))
            if v is not None:
                mom[:, m, s] = v
        read = out.sq_dist.get(s)
        if read is None or len(read[0]) < len(who):  # some pairs come from the cache (or are unread)
            idx = np.array(who, dtype=int)
            block = known[s][np.ix_(idx, idx)]
            np.fill_diagonal(block, 0.0)
            sq[s][np.ix_(idx, idx)] = block
            block = known_equal[s][np.ix_(idx, idx)]
            np.fill_diagonal(block, meta.numel)
            equal[s][np.ix_(idx, idx)] = block
        if read is not None and len(read[0]):
            idx = np.array(read[0], dtype=int)
            sq[s][np.ix_(idx, idx)] = read[1]
            equal[s][np.ix_(idx, idx)] = out.equal[s][1]
    cnt, mean, m2, _, m4 = mom
    var, kurt, norm = summarise_moments(cnt, mean, m2, m4, present)
    return WeightStatistics(models=list(refs), tensors=list(plan.slots), present=present, mean=mean,
                            var=var, kurtosis=kurt, norm=norm, sq_dist=sq, equal=equal)


def _assemble_skeletons(plan: Plan, out: PassOutput, cache: CacheSession) -> dict[int, np.ndarray]:
    keys, cached_skel = cache.keys, cache.skeletons
    skeletons: dict[int, np.ndarray] = {}
    n = len(keys)
    for s, (meta, who) in enumerate(zip(plan.slots, plan.holders)):
        index = slot_skeleton(meta)
        if index is None:
            continue
        arr = np.full((n, len(index[0]), len(index[1])), np.nan, dtype=np.float32)
        sk = slot_key(meta.name, meta.shape)
        for m in who:
            cached = cached_skel.get((keys[m], sk))
            if cached is not None:
                arr[m] = cached
        if s in out.skeletons:
            who_read, values = out.skeletons[s]
            if len(who_read):
                arr[np.array(who_read)] = values
        skeletons[s] = arr
    return skeletons


def _roundoff(listing) -> float:
    """Unit roundoff of the coarsest float dtype a model stores."""
    return max((UNIT_ROUNDOFF.get(t.dtype, 2.0**-8) for t in listing.values() if t.is_float), default=2.0**-24)


def _finer(listings: Sequence[Mapping[str, TensorInfo]], slots: Sequence, roundoff: np.ndarray) -> np.ndarray:
    """(N, T): the slots each model stores in a float dtype finer than its coarsest (known from the listings
    alone, so a warm cache gives the same answer)."""
    out = np.zeros((len(listings), len(slots)), dtype=bool)
    for m, listing in enumerate(listings):
        if len({t.dtype for t in listing.values() if t.is_float}) < 2:
            continue  # one float dtype (most models): nothing finer than its coarsest
        for t, slot in enumerate(slots):
            info = listing.get(slot.name)
            if info is not None and info.is_float and tuple(info.shape) == tuple(slot.shape):
                out[m, t] = UNIT_ROUNDOFF.get(info.dtype, 2.0**-8) < roundoff[m]
    return out


def _subset(stats: WeightStatistics, keep: list[int]) -> WeightStatistics:
    if len(keep) == stats.n_models:
        return stats
    idx = np.array(keep)
    cols = stats.present[idx].any(axis=0)
    return WeightStatistics(
        models=[stats.models[i] for i in keep],
        tensors=[t for t, c in zip(stats.tensors, cols) if c],
        present=stats.present[idx][:, cols], mean=stats.mean[idx][:, cols], var=stats.var[idx][:, cols],
        kurtosis=stats.kurtosis[idx][:, cols], norm=stats.norm[idx][:, cols],
        sq_dist=stats.sq_dist[cols][:, idx][:, :, idx],
        equal=None if stats.equal is None else stats.equal[cols][:, idx][:, :, idx],
        skeletons={new_s: stats.skeletons[int(old_s)][idx] for new_s, old_s in
                   enumerate(np.flatnonzero(cols)) if int(old_s) in stats.skeletons},
        roundoff=None if stats.roundoff is None else stats.roundoff[idx],
        finer=None if stats.finer is None else stats.finer[idx][:, cols],
    )
