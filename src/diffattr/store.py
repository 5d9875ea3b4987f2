"""The results store: SQLite (WAL), one row per finished job, keyed by content.

The store is the single source of truth for a run: estimators and evaluations read it,
never in-memory results. Each row is committed in its own transaction when its job ends,
so killing the process (SIGKILL included) loses at most the jobs in flight and never
leaves a half-written row. One process writes (the run's driver); workers only compute.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
"""


def mask_to_str(mask: Sequence[bool] | np.ndarray) -> str:
    return "".join("1" if bool(b) else "0" for b in mask)


def str_to_mask(s: str) -> np.ndarray:
    return np.array([c == "1" for c in s], dtype=bool)


def job_key(**parts: Any) -> str:
    """Content address of a job: a hash of everything that determines its result."""
    payload = json.dumps({"schema": SCHEMA_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


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

    @property
    def mask_array(self) -> np.ndarray:
        return str_to_mask(self.mask)


class Store:
    """SQLite store in WAL mode; safe for one writer and many readers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")
        self._con.executescript(_SCHEMA)
        stored = self.get_meta("schema_version")
        if stored is None:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif int(stored) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema {stored}, expected {SCHEMA_VERSION}")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------
    def set_meta(self, name: str, value: Any) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO meta(name, value) VALUES (?, ?)", (name, json.dumps(value))
        )

    def get_meta(self, name: str, default: Any = None) -> Any:
        row = self._con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- jobs -------------------------------------------------------------------------
    def put(self, rec: JobRecord) -> None:
        """Insert or replace one job row atomically (a failed job may be retried)."""
        rec.finished = rec.finished or time.time()
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

    def get(self, key: str) -> JobRecord | None:
        row = self._con.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return None if row is None else _record(row)

    def done_keys(self, keys: Iterable[str] | None = None) -> set[str]:
        rows = self._con.execute("SELECT key FROM jobs WHERE status = 'done'").fetchall()
        done = {r[0] for r in rows}
        return done if keys is None else done & set(keys)

    def records(
        self, keys: Iterable[str] | None = None, status: str | None = "done"
    ) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs", []
        if status is not None:
            sql += " WHERE status = ?"
            args.append(status)
        rows = [_record(r) for r in self._con.execute(sql + " ORDER BY finished", args)]
        if keys is None:
            return rows
        wanted = list(keys)
        by_key = {r.key: r for r in rows}
        return [by_key[k] for k in wanted if k in by_key]

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        return self._con.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)
        ).fetchone()[0]


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
