"""The results store: SQLite (WAL), one row per finished job, keyed by content.

The store is the single source of truth for a run: estimators and evaluations read it,
never in-memory results. Each row is committed in its own transaction when its job ends,
so killing the process (SIGKILL included) loses at most the jobs in flight and never
leaves a half-written row. One process writes (the run's driver, holding the run's lock,
``diffattr.runner.lock``); workers only compute.

``Store(path, readonly=True)`` opens the file with SQLite's ``mode=ro`` URI; where the
folder is read-only and SQLite cannot create the WAL index there, it reads the file
``immutable=1``, or a private copy of the file and its WAL when a killed run left one,
so ``diffattr status`` and ``report`` work on a read-only run directory and beside a
running writer. A file that is not a SQLite database, or a truncated one, is a one-line
``DiffattrError`` naming it: delete it and the run redoes its jobs.

Local behaviors (one value per generated image, ``JobRecord.local``) are kept compactly in
their own table, ``local_values``: one row per (job, behavior) holding the values as
little-endian float32 bytes, written in the job row's transaction. Stores made before that
table existed read as jobs without local values (and gain the table when opened for
writing); older readers ignore it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.fileio import content_key, fault_point

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- 'fit', 'test', 'reference', 'counterfactual', ...
    mask TEXT NOT NULL,          -- '0110...' over players ('' for reference models)
    method TEXT NOT NULL,
    settings TEXT NOT NULL,      -- JSON of the method's settings
    seed INTEGER NOT NULL,
    behaviors TEXT,              -- JSON name -> value
    t_train REAL, t_sample REAL, t_measure REAL, t_total REAL,
    status TEXT NOT NULL,        -- 'done' or 'failed'
    error TEXT,
    extra TEXT,                  -- JSON, free-form (model info, label)
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS local_values (
    key TEXT NOT NULL,           -- the job's key
    behavior TEXT NOT NULL,      -- e.g. 'ssim[pixel]'
    n INTEGER NOT NULL,          -- generated images
    data BLOB NOT NULL,          -- n little-endian float32 values, image order
    PRIMARY KEY (key, behavior)
);
"""

#: Storage type of local values (4 bytes per generated image and behavior).
LOCAL_DTYPE = np.dtype("<f4")


def pack_local(values: np.ndarray) -> bytes:
    """Per-image values as the bytes ``local_values.data`` holds."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64), dtype=LOCAL_DTYPE).tobytes()


def unpack_local(data: bytes, n: int) -> np.ndarray:
    out = np.frombuffer(data, dtype=LOCAL_DTYPE)
    if out.size != n:
        raise ValueError(f"{out.size} local values stored where {n} were written")
    return out.astype(np.float64)


def mask_to_str(mask: Sequence[bool] | np.ndarray) -> str:
    return "".join("1" if bool(b) else "0" for b in mask)


def str_to_mask(s: str) -> np.ndarray:
    return np.array([c == "1" for c in s], dtype=bool)


def job_key(**parts: Any) -> str:
    """Content address of a job: a hash of everything that determines its result."""
    return content_key({"schema": SCHEMA_VERSION, **parts}, length=32, default=str)


@dataclass
class JobRecord:
    key: str
    kind: str
    mask: str
    method: str
    settings: dict
    seed: int
    behaviors: dict[str, float] = field(default_factory=dict)
    t_train: float = 0.0
    t_sample: float = 0.0
    t_measure: float = 0.0
    t_total: float = 0.0
    status: str = "done"
    error: str | None = None
    extra: dict = field(default_factory=dict)
    finished: float = 0.0
    #: local behaviors: key -> one value per generated image (the ``local_values`` table)
    local: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mask_array(self) -> np.ndarray:
        return str_to_mask(self.mask)


class Store:
    """SQLite store in WAL mode; safe for one writer and many readers.

    ``readonly=None`` (the default) opens read-write unless the file or its folder cannot
    be written (a read-only run directory), then read-only; ``True`` always read-only (the
    file must exist), ``False`` always read-write (a one-line error where that is
    impossible).
    """

    def __init__(self, path: str | Path, readonly: bool | None = None) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise DiffattrError(
                f"{self.path} is a directory where the run's store (a SQLite file) belongs; "
                "remove it"
            )
        if readonly is None:
            readonly = self.path.is_file() and not _writable(self.path)
        self.readonly = readonly
        self._con: sqlite3.Connection | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._has_local: bool | None = None
        try:
            if readonly:
                self._open_readonly()
            else:
                self._open_readwrite()
        except sqlite3.DatabaseError as e:
            self.close()
            raise self._error(e) from None
        except BaseException:
            self.close()
            raise

    def _open_readwrite(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DiffattrError(
                f"cannot create {self.path.parent} for the run's store ({e.strerror or e})"
            ) from None
        if self.path.exists() and not _writable(self.path):
            raise DiffattrError(
                f"{self.path} is read-only: this command writes to the run directory; give a "
                "writable --out (diffattr status and report read a read-only one)"
            )
        self._con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.executescript(_SCHEMA)
        stored = self.get_meta("schema_version")
        if stored is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        else:
            self._check_schema(stored)

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise DiffattrError(f"{self.path} not found: not a run directory (diffattr run)")
        uri = "file:" + urllib.parse.quote(str(self.path.resolve())) + "?mode=ro"
        query = "SELECT value FROM meta WHERE name = 'schema_version'"
        try:
            self._con = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            row = self._con.execute(query).fetchone()
        except sqlite3.OperationalError as e:
            # WAL needs its index file (-shm) beside the database; in a read-only folder
            # SQLite cannot create it, and then reads the file as immutable (no writer can
            # be changing a file in a folder nobody can write).
            if not ("readonly" in str(e) or "unable to open" in str(e)):
                raise
            if self._con is not None:
                self._con.close()
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                # rows committed to the WAL of a killed run are not in the main file:
                # read a private copy of both (nothing is written beside the original)
                self._tmp = tempfile.TemporaryDirectory(prefix="diffattr-store-")
                copy = Path(self._tmp.name) / self.path.name
                shutil.copyfile(self.path, copy)
                shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
                self._con = sqlite3.connect(copy, isolation_level=None)
            else:
                self._con = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
            row = self._con.execute(query).fetchone()
        if row is not None:
            self._check_schema(json.loads(row[0]))

    def _check_schema(self, stored: Any) -> None:
        if int(stored) != SCHEMA_VERSION:
            raise DiffattrError(
                f"{self.path} has store schema {stored}, this diffattr reads {SCHEMA_VERSION}; "
                "use the diffattr version that made it, or a new --out"
            )

    def _error(self, e: sqlite3.DatabaseError) -> DiffattrError:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, sqlite3.OperationalError) and "locked" in msg:
            return DiffattrError(f"{self.path} is locked by another process ({msg}); try again")
        if isinstance(e, sqlite3.OperationalError) and "readonly" in msg:
            return DiffattrError(
                f"{self.path} is read-only ({msg}); give a writable --out to run, or use "
                "diffattr status / report to read it"
            )
        return DiffattrError(
            f"{self.path} is not a readable run store ({msg}); delete it (and its -wal/-shm "
            "files) and rerun: the run redoes its jobs"
        )

    def _q(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        if self._con is None:
            raise DiffattrError(f"{self.path}: the store is closed")
        try:
            return self._con.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    def _writing(self) -> None:
        if self.readonly:
            raise DiffattrError(f"{self.path} is open read-only; this command cannot write to it")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------
    def set_meta(self, name: str, value: Any) -> None:
        self._writing()
        self._q("INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, json.dumps(value)))

    def get_meta(self, name: str, default: Any = None) -> Any:
        row = self._q("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except json.JSONDecodeError:
            raise DiffattrError(
                f"{self.path}: meta entry {name!r} is not valid JSON; delete the store and rerun"
            ) from None

    # -- jobs -------------------------------------------------------------------------
    def put(self, rec: JobRecord) -> None:
        """Insert or replace one job row atomically (a failed job may be retried)."""
        self._writing()
        rec.finished = rec.finished or time.time()
        fault_point("store.put")
        try:
            self._put(rec)
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None
        fault_point("store.committed")

    def _put(self, rec: JobRecord) -> None:
        with self._con:  # one transaction
            self._con.execute("BEGIN IMMEDIATE")
            self._con.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    rec.key,
                    rec.kind,
                    rec.mask,
                    rec.method,
                    json.dumps(rec.settings, sort_keys=True),
                    int(rec.seed),
                    json.dumps(rec.behaviors, sort_keys=True),
                    rec.t_train,
                    rec.t_sample,
                    rec.t_measure,
                    rec.t_total,
                    rec.status,
                    rec.error,
                    json.dumps(rec.extra, sort_keys=True),
                    rec.finished,
                ),
            )
            self._con.execute("DELETE FROM local_values WHERE key = ?", (rec.key,))
            self._con.executemany(
                "INSERT INTO local_values VALUES (?,?,?,?)",
                [
                    (rec.key, name, int(np.asarray(v).size), pack_local(v))
                    for name, v in sorted(rec.local.items())
                ],
            )

    def get(self, key: str) -> JobRecord | None:
        row = self._q("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        rec = _record(row)
        self._attach_local([rec])
        return rec

    def _local_table(self) -> bool:
        """Whether the store has the local values table (stores made before it had none)."""
        if self._has_local is None:
            row = self._q(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'local_values'"
            ).fetchone()
            self._has_local = row is not None
        return self._has_local

    def _attach_local(self, recs: list[JobRecord]) -> None:
        """Fill ``rec.local`` of ``recs`` from the local values table."""
        if not recs or not self._local_table():
            return
        by_key = {r.key: r for r in recs}
        keys = list(by_key)
        for lo in range(0, len(keys), 500):
            part = keys[lo : lo + 500]
            rows = self._q(
                "SELECT key, behavior, n, data FROM local_values WHERE key IN "
                f"({','.join('?' * len(part))})",
                part,
            ).fetchall()
            for key, behavior, n, data in rows:
                try:
                    by_key[key].local[behavior] = unpack_local(data, n)
                except ValueError as e:
                    raise DiffattrError(
                        f"{self.path}: local values of job {key} are damaged ({e}); delete "
                        "the store and rerun"
                    ) from None

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        rows = self._q("SELECT key FROM jobs WHERE status = 'done'").fetchall()
        done = {r[0] for r in rows}
        return done if keys is None else done & set(keys)

    def records(
        self, keys: Iterable[str] | None = None, status: str | None = "done"
    ) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs", []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        rows = [_record(r) for r in self._q(sql + " ORDER BY finished", args).fetchall()]
        if keys is None:
            self._attach_local(rows)
            return rows
        wanted = list(keys)
        by_key = {r.key: r for r in rows}
        out = [by_key[k] for k in wanted if k in by_key]
        self._attach_local(out)
        return out

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._q("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return self._q("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]


def _record(row: tuple) -> JobRecord:
    return JobRecord(
        key=row[0],
        kind=row[1],
        mask=row[2],
        method=row[3],
        settings=json.loads(row[4]),
        seed=row[5],
        behaviors=json.loads(row[6]) if row[6] else {},
        t_train=row[7] or 0.0,
        t_sample=row[8] or 0.0,
        t_measure=row[9] or 0.0,
        t_total=row[10] or 0.0,
        status=row[11],
        error=row[12],
        extra=json.loads(row[13]) if row[13] else {},
        finished=row[14],
    )


def _writable(path: Path) -> bool:
    """Whether ``path`` and its folder can be written (WAL creates files beside it)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
