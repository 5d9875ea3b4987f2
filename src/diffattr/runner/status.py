"""``diffattr status``: done, pending and failed jobs of a run directory.

Reads the store read-only (``Store(path, readonly=True)``), so it works on a read-only run
directory and while a run holds the directory's lock (it then names the run).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diffattr.errors import DiffattrError
from diffattr.runner.lock import describe, lock_holder
from diffattr.store import Store


def _store_path(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DiffattrError(f"{run_dir} is a file, not a run directory")
    path = run_dir / "store.sqlite"
    if not path.exists():
        raise DiffattrError(f"{run_dir} has no store.sqlite: not a run directory (diffattr run)")
    return path


def status_counts(run_dir: str | Path) -> dict[str, dict[str, int]]:
    """kind -> {'done', 'failed', 'pending'} counts over the jobs the run planned."""
    with Store(_store_path(run_dir), readonly=True) as store:
        planned: dict[str, str] = store.get_meta("planned", {}) or {}
        rows = {r.key: r for r in store.records(status=None)}
    counts: dict[str, Counter] = {}
    for key, kind in planned.items():
        c = counts.setdefault(kind, Counter())
        rec = rows.get(key)
        c["pending" if rec is None else rec.status] += 1
    for key, rec in rows.items():
        if key not in planned:
            counts.setdefault(rec.kind, Counter())[rec.status] += 1
    return {
        k: {s: int(c.get(s, 0)) for s in ("done", "failed", "pending")} for k, c in counts.items()
    }


def run_status(run_dir: str | Path) -> None:

    counts = status_counts(run_dir)
    out = Console()
    table = Table(title=escape(f"jobs in {run_dir}"))
    for col in ("kind", "done", "failed", "pending"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind, c in sorted(counts.items()):
        table.add_row(kind, str(c["done"]), str(c["failed"]), str(c["pending"]))
    out.print(table)
    holder = lock_holder(run_dir)
    if holder is not None:
        out.print(f"running: {describe(holder)}", highlight=False, markup=False, soft_wrap=True)
    with Store(_store_path(run_dir), readonly=True) as store:
        for rec in store.records(status="failed")[:10]:
            first = (rec.error or "").splitlines()[0] if rec.error else ""
            out.print(
                f"failed {rec.kind} {rec.method} mask={rec.mask}: {first}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
