"""What the report reads from a run directory, read-only.

* ``values.json`` (required: ``diffattr run``), ``summary.json`` (written with it),
  ``profile.json`` (``diffattr run --profile``);
* the evaluations' results when present: ``lds.json`` (``diffattr lds``),
  ``counterfactual-top.json`` / ``counterfactual-bottom.json`` (``diffattr counterfactual``),
  ``compute_curve.json`` (``diffattr curve``);
* from ``store.sqlite``: the finished reference jobs (full, null, the method on all
  players) and counterfactual retrains, whose sample grids are ``grids/<key>.png``, and
  the meta ``timings`` list (one entry per ``diffattr run`` call, resumes included).

A missing optional file leaves its section out; a missing ``values.json`` or any present
but unreadable file is a one-line :class:`DiffattrError` naming the command to rerun.

The store is opened read-only with SQLite URIs (never through ``diffattr.store.Store``,
which creates and migrates), so the report writes nothing to the run directory, works on a
read-only one, and can run while ``diffattr run`` is writing: see :func:`_open_read_only`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from diffattr.errors import DiffattrError

#: File name -> the command that writes it (what to run when it is missing or broken).
PRODUCERS = {
    "values.json": "diffattr run",
    "summary.json": "diffattr run",
    "lds.json": "diffattr lds",
    "counterfactual-top.json": "diffattr counterfactual --remove top",
    "counterfactual-bottom.json": "diffattr counterfactual --remove bottom",
    "compute_curve.json": "diffattr curve",
    "store.sqlite": "diffattr run",
    "profile.json": "diffattr run --profile",
}


def broken(path: Path, why: str) -> DiffattrError:
    cmd = PRODUCERS.get(path.name, "the command that wrote it")
    return DiffattrError(f"{path} is unreadable ({why}); rerun `{cmd}`")


def read_json(path: Path, required: bool = False) -> Any:
    """The parsed JSON object of ``path``; None when absent (unless ``required``)."""
    if not path.is_file():
        if required:
            raise DiffattrError(
                f"{path} not found: run `{PRODUCERS.get(path.name, 'diffattr run')}` first"
            )
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise broken(path, type(e).__name__) from None
    if not isinstance(data, dict):
        raise broken(path, "not a JSON object")
    return check_layout(path, data)


#: The keys each results file must hold: top level, and in every item of its lists
#: (``curves`` of compute_curve.json is a dict of lists).
LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "values.json": {
        "": ("attributions",),
        "attributions": ("estimator", "behavior", "names", "values", "stderr"),
    },
    "lds.json": {
        "": ("protocol", "results"),
        "results": ("alpha", "method", "estimator", "behavior", "lds"),
        "fidelity": ("method", "behavior", "pearson", "spearman", "mae", "n"),
    },
    "compute_curve.json": {
        "": ("curves",),
        "curves": ("method", "behavior", "budget_seconds", "subsets", "lds", "identified"),
    },
    "counterfactual.json": {
        "": ("remove", "fraction", "results"),
        "results": ("estimator", "ranked_by", "removed", "seeds_done", "relative_change_pct"),
    },
}


def check_layout(path: Path, data: dict) -> dict:
    """``data`` if it holds the keys :data:`LAYOUTS` lists for its file, else a one-line
    error naming the first missing key and the command that rewrites the file."""
    name = "counterfactual.json" if path.name.startswith("counterfactual-") else path.name
    layout = LAYOUTS.get(name, {})
    for field_name, keys in layout.items():
        if not field_name:
            items: list = [data]
        else:
            value = data.get(field_name) or []
            if isinstance(value, dict):
                value = [x for v in value.values() for x in (v if isinstance(v, list) else [v])]
            items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            where = f"{field_name}[{i}]" if field_name else "the top level"
            if not isinstance(item, dict):
                raise broken(path, f"{where} is not an object")
            missing = [k for k in keys if k not in item]
            if missing:
                raise broken(path, f"{where} has no {missing[0]!r}")
    return data


@dataclass(frozen=True)
class JobRow:
    """One finished job of the store, as far as the report needs it."""

    key: str
    kind: str
    mask: str
    method: str
    seed: int
    behaviors: dict[str, float]
    finished: float


@dataclass(frozen=True)
class JobCost:
    """Measured seconds per job of one counterfactual method (its coalition jobs and its
    all-players job): means over ``jobs`` finished jobs."""

    method: str
    jobs: int
    train: float  # building the coalition's model (0 for a training-free method)
    sample: float
    measure: float
    total: float
    #: jobs whose model trained side by side with others (``[executor] jobs_per_batch``),
    #: and the largest such batch: their train and sample times are shares of a batch
    batched: int = 0
    batch: int = 1


@dataclass
class StoreView:
    """The rows and meta of ``store.sqlite`` the report renders."""

    jobs: list[JobRow] = field(default_factory=list)  # reference, method-all, counterfactual
    timing_calls: list[dict[str, float]] | None = None  # meta 'timings': one dict per call
    config: dict | None = None
    costs: dict[str, JobCost] = field(default_factory=dict)  # method -> cost per job

    def of(self, kind: str | None = None, method: str | None = None) -> list[JobRow]:
        return [
            j
            for j in self.jobs
            if (kind is None or j.kind == kind) and (method is None or j.method == method)
        ]


_JOBS_SQL = (
    "SELECT key, kind, mask, method, seed, behaviors, finished FROM jobs WHERE status = 'done' "
    "AND (method IN ('full', 'null') OR kind IN ('reference', 'method-all', 'counterfactual')) "
    "ORDER BY finished"
)


_COST_SQL = (
    "SELECT method, COUNT(*), AVG(t_train), AVG(t_sample), AVG(t_measure), AVG(t_total), "
    "SUM(COALESCE(json_extract(extra, '$.batch'), 1) > 1), "
    "MAX(COALESCE(json_extract(extra, '$.batch'), 1)) "
    "FROM jobs WHERE status = 'done' AND kind IN ('fit', 'method-all') GROUP BY method"
)


@contextmanager
def _open_read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the store that creates nothing beside it.

    No ``-wal`` file: every committed row is in the main file and no writer is open, so it
    is read ``immutable=1`` (SQLite then makes no ``-shm`` / ``-wal``). A ``-wal`` file (a
    run in progress, or one killed): ``mode=ro`` reads it through the writer's ``-shm``;
    where that cannot be opened (a read-only file system, where nobody writes) the store
    and its ``-wal`` are copied to a temporary folder and read there.
    """
    uri = "file:" + quote(str(path.resolve()))
    wal = path.with_name(path.name + "-wal")
    if not wal.exists():
        con = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True)
    else:
        try:
            con = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=30)
            con.execute("SELECT 1 FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            with tempfile.TemporaryDirectory(prefix="diffattr-report-") as tmp:
                copy = Path(tmp) / path.name
                shutil.copyfile(path, copy)
                shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
                con = sqlite3.connect(copy)
                try:
                    yield con
                finally:
                    con.close()
            return
    try:
        yield con
    finally:
        con.close()


def read_store(path: Path) -> StoreView | None:
    """The finished reference / counterfactual jobs and the timings meta; None if absent."""
    if not path.is_file():
        return None
    try:
        with _open_read_only(path) as con:
            rows = con.execute(_JOBS_SQL).fetchall()
            meta = dict(con.execute("SELECT name, value FROM meta").fetchall())
            cost_rows = con.execute(_COST_SQL).fetchall()
        jobs = [
            JobRow(
                key=r[0],
                kind=r[1],
                mask=r[2],
                method=r[3],
                seed=int(r[4]),
                behaviors=json.loads(r[5]) if r[5] else {},
                finished=float(r[6]),
            )
            for r in rows
        ]
        timings = json.loads(meta["timings"]) if "timings" in meta else None
        config = json.loads(meta["config"]) if "config" in meta else None
        costs = {
            str(r[0]): JobCost(
                str(r[0]),
                int(r[1]),
                *(float(x or 0.0) for x in r[2:6]),
                batched=int(r[6] or 0),
                batch=int(r[7] or 1),
            )
            for r in cost_rows
        }
    except (sqlite3.Error, json.JSONDecodeError, TypeError, ValueError) as e:
        raise broken(path, f"{type(e).__name__}: {e}") from None
    if timings is not None and not (
        isinstance(timings, list) and all(isinstance(c, dict) for c in timings)
    ):
        raise broken(path, "meta 'timings' is not a list of per-call dicts")
    return StoreView(jobs, timings, config, costs)


@dataclass
class ReportInputs:
    """Everything a report renders, each as the JSON layout its producer writes."""

    run_dir: Path
    values: dict
    summary: dict | None = None
    lds: dict | None = None
    counterfactual: dict[str, dict] = field(default_factory=dict)  # 'top' / 'bottom'
    curve: dict | None = None
    store: StoreView | None = None
    profile: dict | None = None

    @property
    def config(self) -> dict:
        return dict(self.values.get("config") or {})

    @property
    def method(self) -> str | None:
        m = self.config.get("method")
        return m.get("name") if isinstance(m, dict) else None

    def grid(self, key: str | None) -> Path | None:
        p = self.run_dir / "grids" / f"{key}.png"
        return p if key and p.is_file() else None


def load_inputs(run_dir: str | Path) -> ReportInputs:
    """Read a run directory (nothing is written); see the module docstring."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DiffattrError(f"{run_dir} is not a directory: run `diffattr run` first")
    values = read_json(run_dir / "values.json", required=True)
    atts = values.get("attributions")
    if not isinstance(atts, list) or not atts:
        raise DiffattrError(
            f"{run_dir / 'values.json'} holds no attributions; delete it and rerun `diffattr run`"
        )
    inputs = ReportInputs(
        run_dir=run_dir,
        values=values,
        summary=read_json(run_dir / "summary.json"),
        lds=read_json(run_dir / "lds.json"),
        curve=read_json(run_dir / "compute_curve.json"),
        store=read_store(run_dir / "store.sqlite"),
        profile=read_json(run_dir / "profile.json"),
    )
    for remove in ("top", "bottom"):
        cf = read_json(run_dir / f"counterfactual-{remove}.json")
        if cf is not None:
            inputs.counterfactual[remove] = cf
    return inputs
