"""values.csv and values.json: the attributions of a run, written with the csv module.

``values.csv`` has one row per (player, behavior, estimator): ``player,behavior,estimator,
value,stderr`` (quotes, commas, newlines and any unicode in player names round-trip through
``csv``); ``values.json`` holds the same attributions with their settings, v0 and v1, the
method's own all-players value and the configuration.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

COLUMNS = ["player", "behavior", "estimator", "value", "stderr"]


def _num(x: float) -> str:
    x = float(x)
    return "nan" if math.isnan(x) else f"{x:.10g}"


def values_csv_text(attributions: list) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for a in attributions:
        for name, v, s in zip(a.names, a.values, a.stderr):
            w.writerow([name, a.behavior, a.estimator, _num(v), _num(s)])
    return buf.getvalue()


def write_values(run_dir: Path, attributions: list, payload: dict[str, Any]) -> None:
    """values.csv and values.json (``payload`` plus the attributions), atomically."""
    atomic_write_text(Path(run_dir) / "values.csv", values_csv_text(attributions))
    out = dict(payload, attributions=[a.to_dict() for a in attributions])
    atomic_write_text(Path(run_dir) / "values.json", json.dumps(out, indent=2, default=float))


def read_values_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a values.csv (dicts keyed by ``COLUMNS``)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise DiffattrError(f"{path} is not UTF-8 text") from None
    except OSError as e:
        raise DiffattrError(f"cannot read {path}: {e}") from None
    return rows


def read_values(run_dir: str | Path) -> dict[str, Any]:
    """The parsed values.json of a run; missing, empty, broken or without attributions is a
    one-line error."""
    path = Path(run_dir) / "values.json"
    if not path.is_file():
        raise DiffattrError(f"{path} not found: run `diffattr run` first")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffattrError(
            f"{path} is unreadable ({type(e).__name__}); delete it and rerun `diffattr run` "
            "(finished jobs are kept)"
        ) from None
    atts = payload.get("attributions") if isinstance(payload, dict) else None
    if not isinstance(atts, list) or not atts:
        raise DiffattrError(f"{path} holds no attributions; delete it and rerun `diffattr run`")
    return payload
