"""On-disk cache of the streaming pass, so a re-run reads nothing and a new model costs O(N) reads.

Per-model statistics are keyed by (model identity, tensor slot) and per-pair distances by
(identity a, identity b, slot). A model's identity is its files' (path, size, mtime) — or their
content hash when asked — plus everything that changes its tensors (component, LoRA base).
Stored in SQLite (stdlib, one file, safe against a crash half-way through a write).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mother_core.errors import CacheBusyError, ResultFormatError
from mother_core.io.base import ModelRef

# Bump when the meaning of a cached number changes.
CACHE_VERSION = 3


def model_key(ref: ModelRef, base: ModelRef | None = None, content_hash: bool = False) -> str:
    """A stable key for the tensors a model yields."""
    parts: list = [CACHE_VERSION, ref.format, ref.component]
    for f in ref.identity():
        parts.append(_sha256_file(f.path) if content_hash else [f.path, f.size, f.mtime_ns])
    if base is not None:
        parts.append(model_key(base, content_hash=content_hash))
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()


def slot_key(name: str, shape: Sequence[int]) -> str:
    return f"{name}|{','.join(map(str, shape))}"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


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

    def _damaged(self, e: sqlite3.Error) -> ResultFormatError:
        return ResultFormatError(
            f"The statistics cache {self.path} is damaged ({e}). Delete it; it will be rebuilt.", self.path)

    def close(self) -> None:
        self._db.close()

    # --- reads -------------------------------------------------------------------------------
    def model_stats(self, keys: Iterable[str]) -> dict[tuple[str, str], tuple[float, ...]]:
        """(model key, slot key) -> (n, mean, m2, m3, m4)."""
        out: dict[tuple[str, str], tuple[float, ...]] = {}
        for chunk in _chunks(list(set(keys)), 500):
            q = f"SELECT * FROM model_slot WHERE model IN ({','.join('?' * len(chunk))})"
            for row in self._db.execute(q, chunk):
                out[(row[0], row[1])] = tuple(row[2:])
        return out

    def skeletons(self, keys: Iterable[str]) -> dict[tuple[str, str], np.ndarray]:
        """(model key, slot key) -> the model's skeleton of that slot (float32, k1 x k2)."""
        out: dict[tuple[str, str], np.ndarray] = {}
        for chunk in _chunks(list(set(keys)), 500):
            q = f"SELECT * FROM model_skeleton WHERE model IN ({','.join('?' * len(chunk))})"
            for model, slot, k1, k2, data in self._db.execute(q, chunk):
                out[(model, slot)] = np.frombuffer(data, dtype=np.float32).reshape(k1, k2)
        return out

    def pair_dists(self, keys: Iterable[str]) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(key a, key b) with a < b -> (slot ids, squared distances), for pairs within ``keys``.

        One row per pair holds all its slots (int32 ids + float64 values): a few hundred models
        make tens of thousands of rows, not millions (one per pair and tensor).
        """
        self._want(keys)
        rows = self._db.execute(
            "SELECT a, b, ids, data FROM pair_blob "
            "WHERE a IN (SELECT k FROM wanted) AND b IN (SELECT k FROM wanted)"
        )
        return {(a, b): (np.frombuffer(ids, dtype=np.int32), np.frombuffer(data, dtype=np.float64))
                for a, b, ids, data in rows}

    def slot_names(self) -> dict[int, str]:
        """Slot id -> slot key (see :func:`slot_key`)."""
        return dict(self._db.execute("SELECT id, slot FROM slot_name"))

    def _want(self, keys: Iterable[str]) -> None:
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (k TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM wanted")
        self._db.executemany("INSERT INTO wanted VALUES (?)", [(k,) for k in sorted(set(keys))])

    # --- writes ------------------------------------------------------------------------------
    def _put_pairs(self, pair_rows: Iterable[tuple[str, str, str, float]]) -> None:
        """Merge per-(pair, slot) distances into the pairs' rows (inside the caller's transaction)."""
        grouped: dict[tuple[str, str], dict[str, float]] = {}
        for a, b, sk, d in pair_rows:
            grouped.setdefault((a, b) if a < b else (b, a), {})[sk] = d
        if not grouped:
            return
        names = {sk for v in grouped.values() for sk in v}
        self._db.executemany("INSERT OR IGNORE INTO slot_name (slot) VALUES (?)", [(n,) for n in names])
        id_of = {slot: i for i, slot in self.slot_names().items()}
        merged: dict[tuple[str, str], dict[int, float]] = {}
        existing = self.pair_dists({k for pair in grouped for k in pair})
        for pair, values in grouped.items():
            old = existing.get(pair)
            row = {} if old is None else dict(zip(old[0].tolist(), old[1].tolist()))
            row.update({id_of[sk]: d for sk, d in values.items()})
            merged[pair] = row
        self._db.executemany("INSERT OR REPLACE INTO pair_blob VALUES (?,?,?,?)", _pair_blobs(merged))

    def put(
        self,
        model_rows: Iterable[tuple[str, str, float, float, float, float, float]],
        pair_rows: Iterable[tuple[str, str, str, float]],
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


def _pair_blobs(by_pair: dict[tuple[str, str], dict[int, float]]) -> Iterable[tuple[str, str, bytes, bytes]]:
    for (a, b), values in by_pair.items():
        ids = np.fromiter(values.keys(), dtype=np.int32, count=len(values))
        data = np.fromiter(values.values(), dtype=np.float64, count=len(values))
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
