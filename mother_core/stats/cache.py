"""On-disk cache of the streaming pass, so a re-run reads nothing and a new model costs O(N) reads.

Per-model statistics are keyed by (model identity, tensor slot) and per-pair distances and counts of
exactly equal entries by (identity a, identity b, slot). A model's identity is its files' (path, size, mtime) — or their
content hash when asked — plus everything that changes its tensors (component, LoRA base).
Stored in SQLite (stdlib, one file, safe against a crash half-way through a write).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mother_core.errors import CacheBusyError, ResultFormatError
from mother_core.io.base import ModelRef
from mother_core.io.registry import reader_revision

# Bump when the meaning of a cached number changes. 4: pairs hold (squared distance, equal entries).
CACHE_VERSION = 4
#: Caches up to this size are integrity-checked (``PRAGMA quick_check``) when opened; larger ones rely
#: on SQLite's own checks as pages are read (a damaged page then raises, and the run goes on without it).
QUICK_CHECK_BYTES = 512 * 1024 * 1024
_COLUMNS = {
    "model_slot": ["model", "slot", "n", "mean", "m2", "m3", "m4"],
    "slot_name": ["id", "slot"],
    "pair_blob": ["a", "b", "ids", "data"],
    "model_skeleton": ["model", "slot", "k1", "k2", "data"],
}


def model_key(ref: ModelRef, base: ModelRef | None = None, content_hash: bool = False) -> str:
    """A stable key for the tensors a model yields.

    It changes with the files (path, size, mtime, or their content hash), everything that changes
    their tensors (format, component, LoRA base) and the revision of the reader that decodes them, so
    statistics cached by an older reader are never reused after its values changed.
    """
    parts: list = [CACHE_VERSION, ref.format, ref.component, reader_revision(ref)]
    for f in ref.identity():
        parts.append(_sha256_file(f.path) if content_hash else [f.path, f.size, f.mtime_ns])
    if base is not None:
        parts.append(model_key(base, content_hash=content_hash))
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


def slot_key(name: str, shape: Sequence[int]) -> str:
    """The cache's key of a tensor slot, ``"name|d1,d2"``: one name with another shape is another slot."""
    return f"{name}|{','.join(map(str, shape))}"


#: Most digests :func:`_sha256_file` keeps.
_HASHED_MAX = 4096
_hashed: dict[tuple[str, int, int, int, int, int], str] = {}


def _sha256_file(path: str) -> str:
    """The file's SHA-256, hashed once per process while its (device, inode, size, mtime, ctime) stay the
    same: an adapter's key holds its base's key, so a base with many LoRAs (a Stable Diffusion UNet) was
    read whole once per adapter. Every write to a file changes its ctime, which no tool sets back."""
    st = os.stat(path)
    key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _hashed.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
        digest = h.hexdigest()
        if len(_hashed) >= _HASHED_MAX:
            _hashed.clear()
        _hashed[key] = digest
    return digest


class StatsCache:
    """A SQLite file of cached per-model and per-pair statistics."""

    def __init__(self, directory: str | Path, busy_seconds: float = 120.0) -> None:
        self.path = Path(directory) / f"mother-stats-v{CACHE_VERSION}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Several processes (app sessions, parallel test workers) may share one cache: wait for
            # a writer instead of failing, and let readers run beside it (write-ahead log).
            # Autocommit: reads never leave a transaction open that a later write would have to
            # upgrade (SQLite answers such an upgrade "locked" at once instead of waiting).
            self._db = sqlite3.connect(self.path, timeout=busy_seconds, isolation_level=None)
            # Switching to WAL and creating the schema need an exclusive lock, and SQLite answers
            # "locked" at once there (its busy handler is not consulted) when another process is
            # opening the same new file: retry for a while, and skip both once they are done.
            _retry_while_locked(self._open_schema, busy_seconds)
            self._check()
        except sqlite3.OperationalError as e:
            if _is_lock_contention(e):
                raise CacheBusyError(
                    f"The statistics cache {self.path} stayed locked by another process for "
                    f"{busy_seconds:.0f} s. Wait for that run to finish, or give another cache folder.",
                    self.path,
                ) from e
            raise self._damaged(e) from e
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e

    def _open_schema(self) -> None:
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._db.execute("PRAGMA journal_mode=WAL")
        have = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"model_slot", "slot_name", "pair_blob", "model_skeleton"} <= have:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS model_slot (
                    model TEXT, slot TEXT, n REAL, mean REAL, m2 REAL, m3 REAL, m4 REAL,
                    PRIMARY KEY (model, slot));
                CREATE TABLE IF NOT EXISTS slot_name (id INTEGER PRIMARY KEY, slot TEXT UNIQUE);
                CREATE TABLE IF NOT EXISTS pair_blob (
                    a TEXT, b TEXT, ids BLOB, data BLOB, PRIMARY KEY (a, b));
                CREATE TABLE IF NOT EXISTS model_skeleton (
                    model TEXT, slot TEXT, k1 INTEGER, k2 INTEGER, data BLOB, PRIMARY KEY (model, slot));
                """
            )

    def _check(self) -> None:
        """Refuse a cache whose tables are not ours, or (when small enough) whose pages are damaged."""
        self.rejected = 0  # rows that failed validation on read (recomputed, never used)
        for table, columns in _COLUMNS.items():
            have = [row[1] for row in self._db.execute(f"PRAGMA table_info({table})")]
            if have != columns:
                raise sqlite3.DatabaseError(f"table {table} has columns {have}, expected {columns}")
        if self.path.stat().st_size <= QUICK_CHECK_BYTES:
            verdict = self._db.execute("PRAGMA quick_check").fetchone()
            if not verdict or verdict[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {str(verdict[0] if verdict else None)[:200]}")

    def _damaged(self, e: sqlite3.Error | Exception) -> ResultFormatError:
        return ResultFormatError(
            f"The statistics cache {self.path} is damaged ({str(e)[:200]}). Delete it; it will be rebuilt.",
            self.path)

    @classmethod
    def open_or_rebuild(cls, directory: str | Path, busy_seconds: float = 120.0) -> tuple[StatsCache, str | None]:
        """Open the cache; a damaged one is set aside (renamed ``*.damaged-<time>``) and a new one made.

        Returns the cache and, when one was set aside, a note saying so (for the run's problems).
        """
        try:
            return cls(directory, busy_seconds), None
        except ResultFormatError as e:
            aside = set_aside(Path(directory) / f"mother-stats-v{CACHE_VERSION}.sqlite")
            return cls(directory, busy_seconds), (f"{e.message.split(' Delete it')[0]} It was set aside as "
                                                  f"{aside} and a new cache was started; this run reads "
                                                  "every model again.")

    def close(self) -> None:
        self._db.close()

    # --- reads -------------------------------------------------------------------------------
    def model_stats(self, keys: Iterable[str]) -> dict[tuple[str, str], tuple[float, ...]]:
        """(model key, slot key) -> (n, mean, m2, m3, m4)."""
        out: dict[tuple[str, str], tuple[float, ...]] = {}
        with self._reading():
            for chunk in _chunks(list(set(keys)), 500):
                q = f"SELECT * FROM model_slot WHERE model IN ({','.join('?' * len(chunk))})"
                for row in self._db.execute(q, chunk):
                    if _valid_moments(row):
                        out[(row[0], row[1])] = tuple(float(v) for v in row[2:])
                    else:
                        self.rejected += 1
        return out

    def skeletons(self, keys: Iterable[str]) -> dict[tuple[str, str], np.ndarray]:
        """(model key, slot key) -> the model's skeleton of that slot (float32, k1 x k2)."""
        out: dict[tuple[str, str], np.ndarray] = {}
        with self._reading():
            for chunk in _chunks(list(set(keys)), 500):
                q = f"SELECT * FROM model_skeleton WHERE model IN ({','.join('?' * len(chunk))})"
                for model, slot, k1, k2, data in self._db.execute(q, chunk):
                    if (isinstance(k1, int) and isinstance(k2, int) and k1 > 0 and k2 > 0
                            and isinstance(data, bytes) and len(data) == 4 * k1 * k2):
                        arr = np.frombuffer(data, dtype=np.float32).reshape(k1, k2)
                        if np.isfinite(arr).all():
                            out[(model, slot)] = arr
                            continue
                    self.rejected += 1
        return out

    def pair_dists(self, keys: Iterable[str]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(key a, key b) with a < b -> (slot ids (K,), values (K, 2): squared distance and count of
        exactly equal entries, NaN where unknown), for pairs within ``keys``.

        One row per pair holds all its slots (int32 ids + float64 value pairs): a few hundred models
        make tens of thousands of rows, not millions (one per pair and tensor).
        """
        out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        with self._reading():
            self._want(keys)
            rows = self._db.execute(
                "SELECT a, b, ids, data FROM pair_blob "
                "WHERE a IN (SELECT k FROM wanted) AND b IN (SELECT k FROM wanted)"
            )
            top = self._max_slot_id()
            for a, b, ids, data in rows:
                pair = _valid_pair(ids, data, top)
                if pair is None:
                    self.rejected += 1
                else:
                    out[(a, b)] = pair
        return out

    def slot_names(self) -> dict[int, str]:
        """Slot id -> slot key (see :func:`slot_key`)."""
        with self._reading():
            return {i: s for i, s in self._db.execute("SELECT id, slot FROM slot_name")
                    if isinstance(i, int) and i >= 0 and isinstance(s, str)}

    def _max_slot_id(self) -> int:
        top = self._db.execute("SELECT MAX(id) FROM slot_name").fetchone()[0]
        return top if isinstance(top, int) else -1

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Damage found while reading (a malformed page) is a :class:`ResultFormatError`, which the
        pass answers by running without the cache (and setting it aside)."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _is_lock_contention(e):
                raise
            raise self._damaged(e) from None

    def _want(self, keys: Iterable[str]) -> None:
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (k TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM wanted")
        self._db.executemany("INSERT INTO wanted VALUES (?)", [(k,) for k in sorted(set(keys))])

    # --- writes ------------------------------------------------------------------------------
    def _put_pairs(self, pair_rows: Iterable[tuple[str, str, str, float, float]]) -> None:
        """Merge per-(pair, slot) (distance, equal entries) into the pairs' rows (inside the caller's
        transaction)."""
        grouped: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
        for a, b, sk, d, e in pair_rows:
            grouped.setdefault((a, b) if a < b else (b, a), {})[sk] = (d, e)
        if not grouped:
            return
        names = {sk for v in grouped.values() for sk in v}
        self._db.executemany("INSERT OR IGNORE INTO slot_name (slot) VALUES (?)", [(n,) for n in names])
        id_of = {slot: i for i, slot in self.slot_names().items()}
        merged: dict[tuple[str, str], dict[int, tuple[float, float]]] = {}
        existing = self.pair_dists({k for pair in grouped for k in pair})
        for pair, values in grouped.items():
            old = existing.get(pair)
            row = {} if old is None else {i: (float(v[0]), float(v[1])) for i, v in zip(old[0].tolist(), old[1])}
            row.update({id_of[sk]: de for sk, de in values.items()})
            merged[pair] = row
        self._db.executemany("INSERT OR REPLACE INTO pair_blob VALUES (?,?,?,?)", _pair_blobs(merged))

    def put(
        self,
        model_rows: Iterable[tuple[str, str, float, float, float, float, float]],
        pair_rows: Iterable[tuple[str, str, str, float, float]],
        skeleton_rows: Iterable[tuple[str, str, np.ndarray]] = (),
    ) -> None:
        """Store results. A cache that cannot be written (locked too long, disk full) only costs the
        next run a re-read: it warns and never fails the run whose results are already computed."""
        try:
            self._db.execute("BEGIN IMMEDIATE")  # take the write lock up front (waits up to the timeout)
            with self._db:  # commits, or rolls back on error
                self._db.executemany("INSERT OR REPLACE INTO model_slot VALUES (?,?,?,?,?,?,?)", model_rows)
                self._put_pairs(pair_rows)
                self._db.executemany(
                    "INSERT OR REPLACE INTO model_skeleton VALUES (?,?,?,?,?)",
                    ((m, s, a.shape[0], a.shape[1], np.ascontiguousarray(a, dtype=np.float32).tobytes())
                     for m, s, a in skeleton_rows),
                )
        except sqlite3.Error as e:
            warnings.warn(f"Could not write the statistics cache {self.path}: {e}. Results are "
                          "unaffected; the next run reads these models again.", RuntimeWarning, stacklevel=2)


def _valid_moments(row: tuple) -> bool:
    """A cached (model, slot, n, mean, m2, m3, m4) row is usable: real numbers, n > 0, m2 and m4 >= 0."""
    values = row[2:]
    if len(values) != 5 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return False
    if not all(np.isfinite(values)):
        return False
    n, _, m2, _, m4 = values
    return n > 0 and m2 >= 0 and m4 >= 0


def _valid_pair(ids: object, data: object, top: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A cached pair row's (slot ids, (distance, equal entries) per slot), or None when the blobs are not
    consistent. Distances are finite and >= 0; a count is >= 0 or NaN (not counted: very many models)."""
    if not isinstance(ids, bytes) or not isinstance(data, bytes) or len(ids) % 4 or len(data) % 16:
        return None
    slot_ids = np.frombuffer(ids, dtype=np.int32)
    values = np.frombuffer(data, dtype=np.float64).reshape(-1, 2)
    if len(slot_ids) != len(values) or (len(slot_ids) and (slot_ids.min() < 0 or slot_ids.max() > top)):
        return None
    dist, equal = values[:, 0], values[:, 1]
    if not (np.isfinite(dist) & (dist >= 0)).all() or not (np.isnan(equal) | (equal >= 0)).all():
        return None
    return slot_ids, values


def set_aside(path: Path) -> Path:
    """Rename a damaged cache file (and its write-ahead log) out of the way; returns the new name."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(str(path) + suffix).replace(str(aside) + suffix)
        except FileNotFoundError:
            pass
    return aside


def _pair_blobs(by_pair: dict[tuple[str, str], dict[int, tuple[float, float]]],
                ) -> Iterable[tuple[str, str, bytes, bytes]]:
    for (a, b), values in by_pair.items():
        ids = np.fromiter(values.keys(), dtype=np.int32, count=len(values))
        data = np.array(list(values.values()), dtype=np.float64).reshape(-1, 2)
        yield a, b, ids.tobytes(), data.tobytes()


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _is_lock_contention(e: sqlite3.Error) -> bool:
    text = str(e).lower()
    return "locked" in text or "busy" in text


def _retry_while_locked(step, seconds: float) -> None:
    """Run ``step`` until it does not fail with lock contention, backing off up to ``seconds``."""
    deadline = time.monotonic() + seconds
    pause = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as e:
            if not _is_lock_contention(e) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
