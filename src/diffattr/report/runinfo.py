"""The run itself: stage timings of every ``diffattr run`` call (resumes included) beside the
last call's, the run's status from ``summary.json``, and the configuration as one readable
key / value table per section."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from diffattr.report.common import fmt, note, num, seconds, table

MAX_CALL_COLUMNS = 6


def _stage_order(dicts: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            if k != "at":
                seen.setdefault(k, None)
    stages = [k for k in seen if k != "total"]
    return stages + (["total"] if "total" in seen else [])


def sum_calls(calls: list[dict[str, Any]]) -> dict[str, float]:
    """Stage seconds summed over calls (the ``at`` time stamps left out)."""
    total: dict[str, float] = {}
    for c in calls:
        for k, v in c.items():
            if k != "at":
                total[k] = total.get(k, 0.0) + num(v)
    return total


def render_timings(summary: dict[str, Any] | None, calls: list[dict[str, Any]] | None) -> str:
    """Stage timings. ``calls`` is the store's meta ``timings`` list (one dict per call,
    the source of the sums); without it, ``summary.json``'s ``timings_all_calls``."""
    summary = summary or {}
    last = summary.get("timings") or (calls[-1] if calls else {})
    notes = []
    if calls:
        total = sum_calls(calls)
        n_calls = len(calls)
    elif summary.get("timings_all_calls"):
        total = dict(summary["timings_all_calls"])
        n_calls = None
    else:
        total = None
        n_calls = None
        notes.append("Only the last call's timings are recorded (summary.json has no sums).")
    if not last and not total:
        return ""
    per_call = calls if calls and 1 < len(calls) <= MAX_CALL_COLUMNS else None
    stages = _stage_order([*(calls or []), last, total or {}])
    header = ["stage", "last call"]
    if per_call:
        header += [f"call {i + 1}" + _at(c) for i, c in enumerate(per_call)]
    if total is not None:
        header.append(
            f"sum of {n_calls} call{'s' if n_calls != 1 else ''}" if n_calls else "sum of all calls"
        )
    rows = []
    for s in stages:
        row = [s, seconds(last.get(s)) if s in last else "—"]
        if per_call:
            row += [seconds(c.get(s)) if s in c else "—" for c in per_call]
        if total is not None:
            row.append(seconds(total.get(s)) if s in total else "—")
        rows.append(row)
    parts = [
        "<h3>Timings</h3>",
        "<p>Seconds per stage of <code>diffattr run</code>: the last call, and summed over every "
        "call of the run directory (each resume adds its own; a call killed before it ended "
        "records none).</p>",
        table(rows, header, cls="timings"),
    ]
    parts += [note(n) for n in notes]
    return "".join(parts)


def _at(call: dict[str, Any]) -> str:
    at = num(call.get("at"))
    if at != at:  # NaN
        return ""
    return time.strftime(" (%Y-%m-%d %H:%M UTC)", time.gmtime(at))


def render_status(summary: dict[str, Any] | None) -> str:
    """Jobs, failures and estimator errors of the last ``diffattr run`` call."""
    if not summary:
        return ""
    rows = [
        ["jobs planned", summary.get("jobs", "n/a")],
        ["failed jobs", summary.get("failed", "n/a")],
    ]
    if summary.get("first_failure"):
        rows.append(["first failure", summary["first_failure"]])
    for e in summary.get("estimator_errors") or []:
        rows.append(["estimator not fitted", e])
    return "<h3>Status</h3>" + table(rows, None, cls="kv")


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        if not value:
            yield prefix, "{}"
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            label = f"{prefix}[{i}]"
            if isinstance(v, dict) and "name" in v:
                label += f" {v['name']}"
                v = {k: x for k, x in v.items() if k != "name"}
                if not v:
                    yield label, "(defaults)"
                    continue
            yield from _flatten(v, label)
    elif isinstance(value, list):
        yield prefix, ", ".join(fmt(v) for v in value) if value else "[]"
    else:
        yield prefix, value


def render_settings(config: dict[str, Any]) -> str:
    """The run configuration (``RunConfig.to_dict()``), one key / value table per section;
    top-level values (e.g. ``device``) go to a 'run' table."""
    if not config:
        return ""
    top = [(k, v) for k, v in config.items() if not isinstance(v, (dict, list))]
    sections = [(k, v) for k, v in config.items() if isinstance(v, (dict, list)) and v]
    tables = []
    if top:
        tables.append(table([[k, fmt(v)] for k, v in top], ["run", ""], cls="kv"))
    for name, sec in sections:
        rows = [[k or name, fmt(v)] for k, v in _flatten(sec, "")]
        tables.append(table(rows, [name, ""], cls="kv"))
    return (
        f'<h3>Settings</h3><div class="settings">{"".join(f"<div>{t}</div>" for t in tables)}</div>'
    )


def render_run(config: dict, summary: dict | None, calls: list[dict] | None) -> str:
    parts = [
        "<h2>Run</h2>",
        render_status(summary),
        render_timings(summary, calls),
        render_settings(config),
    ]
    return "".join(parts) if any(parts[1:]) else ""
