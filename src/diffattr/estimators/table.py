"""Tables of evaluated coalitions as CSV.

Format: a header row, then one row per evaluated coalition. Every column is a player
(entries ``0``/``1``; ``0.0``/``1.0`` accepted) except the value columns: either one
column named ``value``, or one or more named ``value:<behavior>`` (several behaviors
evaluated on the same coalitions), optionally alongside a plain ``value``. Example::

    alice,bob,carol,value
    0,0,0,0.0
    1,0,1,2.5
    1,1,1,4.0

Rows whose mask is all 0 give ``v0 = v(empty)`` and rows whose mask is all 1 give
``v1 = v(all)`` (the mean when there are several); they stay in the table, where they
also serve estimators that use them (exact values, Banzhaf). Explicit ``v0``/``v1``
override them. Errors are one-line :class:`DiffattrError` messages naming the line and
column.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import (
    as_masks,
    as_values,
    atomic_write_text,
    resolve_endpoint,
    resolve_names,
)


@dataclass
class CoalitionTable:
    """Masks ``(M, n)`` bool, values ``(M, K)``, player names, behaviors, and v0/v1 ``(K,)``."""

    masks: np.ndarray
    values: np.ndarray
    names: list[str]
    behaviors: list[str | None]
    v0: np.ndarray | None
    v1: np.ndarray | None

    @property
    def n_players(self) -> int:
        return int(self.masks.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.masks.shape[0])

    def fit_values(self) -> np.ndarray:
        """Values as estimators take them: ``(M,)`` for one behavior, else ``(M, K)``."""
        return self.values[:, 0] if self.values.shape[1] == 1 else self.values

    def fit_endpoint(self, which: str) -> float | np.ndarray | None:
        """``v0``/``v1`` as estimators take them: a float for one behavior, else ``(K,)``."""
        arr = self.v0 if which == "v0" else self.v1
        if arr is None:
            return None
        return float(arr[0]) if arr.size == 1 else arr


def _is_value_column(name: str) -> bool:
    return name == "value" or name.startswith("value:")


def _parse_bit(text: str, row: int, col: str) -> bool:
    t = text.strip()
    if t in ("0", "1"):
        return t == "1"
    try:
        x = float(t)
    except ValueError:
        x = math.nan
    if x == 0.0 or x == 1.0:
        return x == 1.0
    raise DiffattrError(f"table line {row}, player column {col!r}: expected 0 or 1, got {text!r}")


def _parse_value(text: str, row: int, col: str) -> float:
    try:
        x = float(text.strip())
    except ValueError:
        raise DiffattrError(
            f"table line {row}, column {col!r}: value {text!r} is not a number"
        ) from None
    if not math.isfinite(x):
        raise DiffattrError(f"table line {row}, column {col!r}: value {text!r} is not finite")
    return x


def read_table_csv(
    path: str | os.PathLike[str],
    v0: float | Sequence[float] | None = None,
    v1: float | Sequence[float] | None = None,
) -> CoalitionTable:
    """Read a coalition table CSV (see the module doc); ``v0``/``v1`` override the table's."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DiffattrError(f"table {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DiffattrError(f"cannot read table {str(path)!r}: {exc}") from None
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(cell.strip() for cell in r)]
    if not numbered:
        raise DiffattrError(f"table {str(path)!r} is empty")
    header = [h.strip() for h in numbered[0][1]]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DiffattrError(f"table {str(path)!r}: column {dup!r} appears more than once")
    value_cols = [j for j, h in enumerate(header) if _is_value_column(h)]
    player_cols = [j for j, h in enumerate(header) if not _is_value_column(h)]
    if not value_cols:
        raise DiffattrError(
            f"table {str(path)!r} has no 'value' column (or 'value:<behavior>' columns)"
        )
    if not player_cols:
        raise DiffattrError(f"table {str(path)!r} has no player columns")
    if any(not header[j] for j in player_cols):
        raise DiffattrError(f"table {str(path)!r} has a player column without a name")
    body = numbered[1:]
    if not body:
        raise DiffattrError(f"table {str(path)!r} has a header but no rows")
    m = len(body)
    masks = np.zeros((m, len(player_cols)), dtype=bool)
    values = np.zeros((m, len(value_cols)))
    for r, (line, cells) in enumerate(body):
        if len(cells) != len(header):
            raise DiffattrError(
                f"table line {line} has {len(cells)} cells; the header has {len(header)}"
            )
        for c, j in enumerate(player_cols):
            masks[r, c] = _parse_bit(cells[j], line, header[j])
        for c, j in enumerate(value_cols):
            values[r, c] = _parse_value(cells[j], line, header[j])
    names = [header[j] for j in player_cols]
    behaviors: list[str | None] = [
        None if header[j] == "value" else header[j][len("value:") :] for j in value_cols
    ]
    v0s, _ = resolve_endpoint(v0, masks, values, full=False, label="v0")
    v1s, _ = resolve_endpoint(v1, masks, values, full=True, label="v1")
    return CoalitionTable(masks, values, names, behaviors, v0s, v1s)


def write_table_csv(
    path: str | os.PathLike[str],
    masks: Any,
    values: Any,
    names: Sequence[str] | None = None,
    behaviors: Sequence[str | None] | None = None,
) -> None:
    """Write masks and values in the format :func:`read_table_csv` reads (atomically).

    One value column is named ``value`` unless a behavior name is given; several columns
    are named ``value:<behavior>`` (behaviors default to ``0, 1, ...``).
    """
    z = as_masks(masks)
    y, _ = as_values(values, z.shape[0])
    names = resolve_names(names, z.shape[1])
    clash = [x for x in names if _is_value_column(x)]
    if clash:
        raise DiffattrError(f"player name {clash[0]!r} would be read as a value column")
    k = y.shape[1]
    if behaviors is None:
        behaviors = [None] if k == 1 else [str(j) for j in range(k)]
    if len(behaviors) != k:
        raise DiffattrError(f"{len(behaviors)} behavior names for {k} value columns")
    value_names = ["value" if b is None else f"value:{b}" for b in behaviors]
    if len(set(value_names)) != k:
        raise DiffattrError("value column names must be distinct")
    lines = [",".join(_cell(x) for x in [*names, *value_names])]
    bits = np.where(z, "1", "0")
    for r in range(z.shape[0]):
        lines.append(",".join([*bits[r], *(repr(float(v)) for v in y[r])]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _cell(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
