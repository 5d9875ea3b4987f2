"""Attributions (one value and standard error per player), their files, and input checks.

An estimator (``diffattr.estimators.base.Estimator``) reads a table of evaluated
coalitions and returns an :class:`Attribution` per behavior. CSV files are written and read
with the ``csv`` module (UTF-8; a byte-order mark on input is ignored), so player names
holding commas, quotes, newlines or any unicode round-trip.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text as _atomic_write_text

#: The largest number of players for which a table can hold every subset (2^20 rows).
MAX_EXACT_PLAYERS = 20


def _json_safe(obj: Any) -> Any:
    """Plain Python data for JSON: numpy scalars/arrays converted, NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomic write into an existing directory (a missing one is a user error here)."""
    parent = Path(path).parent if str(Path(path).parent) else Path(".")
    if not parent.is_dir():
        raise DiffattrError(f"output directory {str(parent)!r} does not exist")
    _atomic_write_text(path, text, mkdir=False)


def _fmt(x: float) -> str:
    return repr(float(x))


@dataclass
class Attribution:
    """Per-player attribution values with standard errors.

    ``values`` and ``stderr`` are ``(n,)`` float arrays (``stderr`` is NaN where an
    estimator has none); ``names`` the players; ``estimator`` the registry name;
    ``settings`` what the estimate depends on (estimator options, rows used, whether
    the values are exact); ``behavior`` the value column, or None for a single one.
    """

    values: np.ndarray
    stderr: np.ndarray
    names: list[str]
    estimator: str
    settings: dict[str, Any] = field(default_factory=dict)
    behavior: str | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        self.stderr = np.asarray(self.stderr, dtype=np.float64).reshape(-1)
        self.names = [str(x) for x in self.names]
        n = self.values.shape[0]
        if self.stderr.shape[0] != n or len(self.names) != n:
            raise DiffattrError(
                f"attribution has {n} values, {self.stderr.shape[0]} standard errors "
                f"and {len(self.names)} names; they must match"
            )

    @property
    def n_players(self) -> int:
        return int(self.values.shape[0])

    def ranking(self) -> np.ndarray:
        """Player indices by value, largest first (ties keep player order)."""
        return np.argsort(-self.values, kind="stable")

    def sorted(self) -> Attribution:
        """A new Attribution with players reordered by value, largest first."""
        order = self.ranking()
        return Attribution(
            values=self.values[order].copy(),
            stderr=self.stderr[order].copy(),
            names=[self.names[i] for i in order],
            estimator=self.estimator,
            settings=dict(self.settings),
            behavior=self.behavior,
        )

    def total(self) -> float:
        """Sum of the values (``v1 - v0`` for efficient estimators)."""
        return float(self.values.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN standard errors become None."""
        return _json_safe(
            {
                "estimator": self.estimator,
                "behavior": self.behavior,
                "settings": self.settings,
                "names": self.names,
                "values": self.values,
                "stderr": self.stderr,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attribution:
        """Inverse of :meth:`to_dict`."""
        try:
            stderr = [np.nan if s is None else s for s in d["stderr"]]
            return cls(
                values=np.asarray(d["values"], dtype=np.float64),
                stderr=np.asarray(stderr, dtype=np.float64),
                names=list(d["names"]),
                estimator=str(d["estimator"]),
                settings=dict(d.get("settings") or {}),
                behavior=d.get("behavior"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DiffattrError(f"not an attribution dict: {exc}") from None

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Attribution:
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffattrError(f"cannot read attribution JSON {str(path)!r}: {exc}") from None
        return cls.from_dict(d)

    def csv_text(self) -> str:
        rows: list[list[str]] = [["player", "value", "stderr"]]
        rows += [
            [name, _fmt(v), _fmt(s)] for name, v, s in zip(self.names, self.values, self.stderr)
        ]
        return csv_text(rows)

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write columns ``player,value,stderr`` (NaN stderr as ``nan``), atomically."""
        atomic_write_text(path, self.csv_text())

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        estimator: str = "csv",
        behavior: str | None = None,
    ) -> Attribution:
        """Read a ``player,value,stderr`` CSV (``stderr`` optional) written by :meth:`to_csv`."""
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DiffattrError(f"cannot read attribution CSV {str(path)!r}: {exc}") from None
        if not rows or "player" not in rows[0] or "value" not in rows[0]:
            raise DiffattrError(f"{str(path)!r} needs columns player,value[,stderr]")
        try:
            values = [float(r["value"]) for r in rows]
            stderr = [float(r["stderr"]) if r.get("stderr") else np.nan for r in rows]
        except ValueError as exc:
            raise DiffattrError(f"{str(path)!r}: non-numeric entry ({exc})") from None
        return cls(
            values=np.asarray(values),
            stderr=np.asarray(stderr),
            names=[r["player"] for r in rows],
            estimator=estimator,
            behavior=behavior,
        )


def csv_text(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as CSV text (``csv`` module, minimal quoting, ``\\n`` line ends)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def attributions_csv_text(attributions: Sequence[Attribution]) -> str:
    """One attribution: ``player,value,stderr``; several: ``behavior,player,value,stderr``."""
    if len(attributions) == 1:
        return attributions[0].csv_text()
    rows: list[list[str]] = [["behavior", "player", "value", "stderr"]]
    for k, a in enumerate(attributions):
        b = a.behavior if a.behavior is not None else str(k)
        rows += [[b, name, _fmt(v), _fmt(s)] for name, v, s in zip(a.names, a.values, a.stderr)]
    return csv_text(rows)


def write_attributions_csv(
    path: str | os.PathLike[str], attributions: Attribution | Sequence[Attribution]
) -> None:
    """Write one or several attributions as CSV (see :func:`attributions_csv_text`)."""
    if isinstance(attributions, Attribution):
        attributions = [attributions]
    atomic_write_text(path, attributions_csv_text(list(attributions)))


# --------------------------------------------------------------------------- validation


def as_masks(masks: Any) -> np.ndarray:
    """``masks`` as an ``(M, n)`` bool array; entries must be 0/1 or bool."""
    arr = np.asarray(masks)
    if arr.ndim != 2:
        raise DiffattrError(f"masks must be a 2-D (rows, players) array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise DiffattrError("masks have no players (0 columns)")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise DiffattrError(f"masks must be bool or 0/1 numbers, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DiffattrError(f"masks must be 0/1; row {r} player {c} is {arr[r, c]!r}")
    return arr.astype(bool)


def as_values(values: Any, n_rows: int) -> tuple[np.ndarray, bool]:
    """``values`` as ``(M, K)`` float64 and whether the input was 1-D."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DiffattrError("values must be numbers") from None
    single = arr.ndim == 1
    if single:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DiffattrError(f"values must be (rows,) or (rows, behaviors), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise DiffattrError(f"masks have {n_rows} rows but values have {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise DiffattrError("values have no columns")
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DiffattrError(f"values must be finite; row {r} column {c} is {arr[r, c]}")
    return arr, single


def resolve_names(names: Sequence[str] | None, n: int) -> list[str]:
    """Player names (default ``"0" .. "n-1"``); must be ``n`` distinct strings."""
    if names is None:
        return [str(i) for i in range(n)]
    names = [str(x) for x in names]
    if len(names) != n:
        raise DiffattrError(f"{len(names)} player names for {n} players")
    if len(set(names)) != n:
        dup = next(x for x in names if names.count(x) > 1)
        raise DiffattrError(f"player name {dup!r} appears more than once")
    return names


def resolve_endpoint(
    given: Any, masks: np.ndarray, values: np.ndarray, full: bool, label: str
) -> tuple[np.ndarray | None, int]:
    """``v0`` (``full=False``) or ``v1`` (``full=True``) per value column.

    An explicit value wins (a number, or one number per column); otherwise the mean of
    the table's all-0 (all-1) rows; otherwise None. Also returns how many table rows
    gave it (0 when explicit or missing).
    """
    k = values.shape[1]
    if given is not None:
        try:
            arr = np.asarray(given, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DiffattrError(f"{label} must be a number, got {given!r}") from None
        if arr.size == 1:
            arr = np.repeat(arr, k)
        if arr.size != k:
            raise DiffattrError(f"{label} has {arr.size} entries for {k} value columns")
        if not np.isfinite(arr).all():
            raise DiffattrError(f"{label} must be finite, got {given!r}")
        return arr, 0
    rows = masks.all(axis=1) if full else ~masks.any(axis=1)
    count = int(rows.sum())
    if count == 0:
        return None, 0
    return values[rows].mean(axis=0), count


def subset_codes(masks: np.ndarray) -> np.ndarray:
    """Each mask as an integer, bit ``i`` = player ``i`` (needs ``n <= 62``)."""
    n = masks.shape[1]
    if n > 62:
        raise DiffattrError(f"cannot code subsets of {n} > 62 players as integers")
    weights = np.left_shift(np.int64(1), np.arange(n, dtype=np.int64))
    return masks.astype(np.int64) @ weights
