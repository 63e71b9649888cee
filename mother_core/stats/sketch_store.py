"""The store of fingerprints and exact candidate-pair distances: a SQLite file in the cache folder.

It sits beside the statistics cache (:mod:`mother_core.stats.cache`) as
``mother-sketch-v1.sqlite``, keyed the same way (model keys: file identity), so a re-run reads no
weights and adding a model reads only that model. Several processes may write it at once (the
workers of :mod:`mother_core.distributed`): write-ahead log, waits on the lock, one short transaction
per write. Every value is validated on read; an invalid row is treated as missing (recomputed).
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from mother_core.errors import ResultFormatError
from mother_core.stats.fingerprint import Fingerprint
from mother_core.stats.sketch import SketchSpec, slot_numel

STORE_VERSION = 1


def shared_slots(a: Fingerprint, b: Fingerprint) -> list[str]:
    """The slots two models share, in the order pair rows are stored."""
    return sorted(set(a.slots) & set(b.slots))


class SketchStore:
    """Fingerprints (per model) and exact squared distances (per candidate pair)."""

    def __init__(self, directory: str | Path, busy_seconds: float = 120.0) -> None:
        self.path = Path(directory) / f"mother-sketch-v{STORE_VERSION}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_seconds, isolation_level=None)
            if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._db.execute("PRAGMA journal_mode=WAL")
            # A store is a cache: in WAL mode, NORMAL still never corrupts it, and a power cut loses at
            # most the last writes (recomputed) instead of paying an fsync per commit (17 ms a model here).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS fingerprint (
                    model TEXT PRIMARY KEY, spec TEXT, slots TEXT, moments BLOB, sketches BLOB, notes TEXT);
                CREATE TABLE IF NOT EXISTS pair (a TEXT, b TEXT, data BLOB, PRIMARY KEY (a, b));
                """
            )
        except sqlite3.DatabaseError as e:
            raise ResultFormatError(f"The sketch store {self.path} cannot be used ({str(e)[:200]}). Delete it; "
                                    "it will be rebuilt.", self.path) from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "SketchStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- fingerprints --------------------------------------------------------------------------
    def put_fingerprints(self, fps: Iterable[Fingerprint]) -> None:
        rows = [(fp.key, json.dumps([fp.spec.dim, fp.spec.seed]), json.dumps(list(fp.slots)),
                 np.ascontiguousarray(fp.moments, dtype=np.float64).tobytes(),
                 np.concatenate([s.astype(np.float32) for s in fp.sketches]).tobytes() if fp.sketches else b"",
                 json.dumps(list(fp.notes))) for fp in fps]
        self._write("INSERT OR REPLACE INTO fingerprint VALUES (?,?,?,?,?,?)", rows)

    def fingerprints(self, keys: Iterable[str], spec: SketchSpec) -> dict[str, Fingerprint]:
        """Stored fingerprints of ``keys`` made under ``spec`` (others, and invalid rows, are missing)."""
        want = list(dict.fromkeys(keys))
        out: dict[str, Fingerprint] = {}
        for i in range(0, len(want), 500):
            chunk = want[i:i + 500]
            q = f"SELECT * FROM fingerprint WHERE model IN ({','.join('?' * len(chunk))})"
            for row in self._db.execute(q, chunk):
                fp = _fingerprint_row(row, spec)
                if fp is not None:
                    out[fp.key] = fp
        return out

    # --- exact pair distances ------------------------------------------------------------------
    def put_pairs(self, rows: Mapping[tuple[str, str], np.ndarray]) -> None:
        """(key a, key b) -> squared distances over :func:`shared_slots` (float64)."""
        data = []
        for (a, b), v in rows.items():
            if a > b:
                a, b = b, a
            data.append((a, b, np.ascontiguousarray(v, dtype=np.float64).tobytes()))
        self._write("INSERT OR REPLACE INTO pair VALUES (?,?,?)", data)

    def pairs(self, wanted: Iterable[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        """Stored rows of the wanted pairs, keyed (a, b) with a < b."""
        keys = sorted({(a, b) if a < b else (b, a) for a, b in wanted})
        out: dict[tuple[str, str], np.ndarray] = {}
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_pair (a TEXT, b TEXT, PRIMARY KEY (a, b))")
        self._db.execute("DELETE FROM wanted_pair")
        self._db.executemany("INSERT INTO wanted_pair VALUES (?,?)", keys)
        for a, b, data in self._db.execute(
                "SELECT p.a, p.b, p.data FROM pair p JOIN wanted_pair w ON p.a = w.a AND p.b = w.b"):
            if isinstance(data, bytes) and len(data) % 8 == 0:
                v = np.frombuffer(data, dtype=np.float64)
                if (np.isfinite(v) & (v >= 0)).all():
                    out[(a, b)] = v
        return out

    def _write(self, sql: str, rows: list) -> None:
        if not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.Error as e:  # results are already computed: a store that cannot be written costs a re-read
            warnings.warn(f"Could not write the sketch store {self.path}: {e}. Results are unaffected.",
                          RuntimeWarning, stacklevel=3)


def _fingerprint_row(row: tuple, spec: SketchSpec) -> Fingerprint | None:
    key, spec_text, slots_text, moments, sketches, notes = row
    try:
        if json.loads(spec_text) != [spec.dim, spec.seed]:
            return None
        slots = tuple(str(s) for s in json.loads(slots_text))
        mom = np.frombuffer(moments, dtype=np.float64).reshape(-1, 5)
        flat = np.frombuffer(sketches, dtype=np.float32)
        widths = [spec.width(slot_numel(s)) for s in slots]
        if len(mom) != len(slots) or sum(widths) != len(flat) or not np.isfinite(mom).all():
            return None
        parts = np.split(flat, np.cumsum(widths)[:-1]) if slots else []
        return Fingerprint(key, slots, mom, tuple(parts), spec, tuple(json.loads(notes or "[]")))
    except (TypeError, ValueError, json.JSONDecodeError):
        return None

