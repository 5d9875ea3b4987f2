"""Tables of evaluated coalitions: :class:`CoalitionTable` and its CSV form.

A :class:`CoalitionTable` is what every coalition estimator's ``fit(table)`` reads:

* ``masks`` ``(M, n)`` bool — row ``r`` is the coalition of the ``r``-th evaluation;
* ``values`` ``(M, K)`` float — ``K`` behaviors evaluated on each coalition (a 1-D array is
  one behavior);
* ``names`` (``n`` distinct player names, default ``"0" .. "n-1"``) and ``behaviors``
  (``K`` names or None);
* ``v0``/``v1`` ``(K,)`` — explicit ``v(empty)``/``v(all players)`` (the null and the full
  model); when None, estimators use the mean of the table's all-0/all-1 rows;
* ``pair_ids`` ``(M,)`` int or None — antithetic pairs: two rows with the same id are a
  mask and its complement. A paired sampler gives them as ``sampler.pair_ids(stream_rows)``
  (row ``r`` of its stream is in pair ``r // 2``). Rows may come in any order and any row
  may be missing (a failed job, a row dropped because it equals a test mask): KernelSHAP
  then drops the partner of a missing row and keeps every complete pair. Without
  ``pair_ids`` it finds pairs as consecutive complementary rows (the order a paired
  sampler writes them), again dropping a row whose partner is missing.

CSV format: a header row, then one row per evaluated coalition. Every column is a player
(entries ``0``/``1``; ``0.0``/``1.0`` accepted) except the value columns — either one
column named ``value``, or one or more named ``value:<behavior>`` — and an optional
``pair_id`` column (non-negative integers). Example::

    alice,bob,carol,value
    0,0,0,0.0
    1,0,1,2.5
    1,1,1,4.0

Files are read with the ``csv`` module as UTF-8 with an optional byte-order mark (a BOM
never ends up in the first player's name) and written with the ``csv`` module, so names
holding commas, quotes, newlines or any unicode round-trip; leading and trailing
whitespace of header cells is not significant. Rows whose mask is all 0 (all 1) give
``v0`` (``v1``) unless explicit values are passed; they stay in the table, where also
estimators that use them as ordinary rows (Banzhaf, exact values) see them. Errors are
one-line :class:`DiffattrError` messages naming the line and column.
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
    csv_text,
    resolve_endpoint,
    resolve_names,
)

PAIR_COLUMN = "pair_id"


@dataclass
class CoalitionTable:
    """Evaluated coalitions: masks ``(M, n)``, values ``(M, K)`` and what goes with them.

    See the module doc. The constructor validates and normalises its arguments: masks to
    bool, a 1-D ``values`` to one column, ``v0``/``v1`` (a number or one per behavior) to
    ``(K,)`` arrays, ``pair_ids`` to int64.
    """

    masks: np.ndarray
    values: np.ndarray
    names: list[str] | None = None
    behaviors: list[str | None] | None = None
    v0: np.ndarray | None = None
    v1: np.ndarray | None = None
    pair_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.masks = as_masks(self.masks)
        m, n = self.masks.shape
        self.values, _ = as_values(self.values, m)
        k = self.values.shape[1]
        self.names = resolve_names(self.names, n)
        if self.behaviors is None:
            self.behaviors = [None] * k
        self.behaviors = [None if b is None else str(b) for b in self.behaviors]
        if len(self.behaviors) != k:
            raise DiffattrError(f"{len(self.behaviors)} behavior names for {k} value columns")
        self.v0 = _explicit_endpoint(self.v0, k, "v0")
        self.v1 = _explicit_endpoint(self.v1, k, "v1")
        if self.pair_ids is not None:
            ids = np.asarray(self.pair_ids)
            if ids.shape != (m,):
                raise DiffattrError(f"pair_ids has shape {ids.shape}; the table has {m} rows")
            if ids.size and (
                not np.issubdtype(ids.dtype, np.integer)
                and not (np.issubdtype(ids.dtype, np.floating) and (ids == np.round(ids)).all())
            ):
                raise DiffattrError(f"pair_ids must be integers, got dtype {ids.dtype}")
            ids = ids.astype(np.int64)
            if (ids < 0).any():
                raise DiffattrError("pair_ids must be >= 0")
            self.pair_ids = ids

    @classmethod
    def from_arrays(
        cls,
        masks: Any,
        values: Any,
        v0: Any = None,
        v1: Any = None,
        names: Sequence[str] | None = None,
        behaviors: Sequence[str | None] | None = None,
        pair_ids: Any = None,
    ) -> CoalitionTable:
        """Keyword-friendly constructor (same validation as the dataclass)."""
        return cls(
            masks,
            values,
            None if names is None else list(names),
            None if behaviors is None else list(behaviors),
            v0,
            v1,
            pair_ids,
        )

    @property
    def n_players(self) -> int:
        return int(self.masks.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.masks.shape[0])

    @property
    def n_behaviors(self) -> int:
        return int(self.values.shape[1])

    def endpoint(self, which: str) -> tuple[np.ndarray | None, int]:
        """``(v0 or v1 per behavior, rows it is the mean of)``; 0 rows when it is explicit,
        ``(None, 0)`` when neither an explicit value nor an all-0/all-1 row exists."""
        if which not in ("v0", "v1"):
            raise DiffattrError(f"endpoint must be 'v0' or 'v1', got {which!r}")
        given = self.v0 if which == "v0" else self.v1
        if given is not None:
            return given, 0
        return resolve_endpoint(None, self.masks, self.values, full=which == "v1", label=which)

    def endpoint_rows(self, which: str) -> np.ndarray:
        """Indices of the all-0 (``v0``) or all-1 (``v1``) rows."""
        rows = ~self.masks.any(axis=1) if which == "v0" else self.masks.all(axis=1)
        return np.flatnonzero(rows)

    def select(self, rows: Any) -> CoalitionTable:
        """The table restricted to ``rows`` (indices or a bool mask), pair ids kept."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return CoalitionTable(
            self.masks[idx],
            self.values[idx],
            list(self.names or []),
            list(self.behaviors or []),
            self.v0,
            self.v1,
            None if self.pair_ids is None else self.pair_ids[idx],
        )

    def fit_values(self) -> np.ndarray:
        """Values as the array form of ``fit`` takes them: ``(M,)`` for one behavior."""
        return self.values[:, 0] if self.values.shape[1] == 1 else self.values

    def fit_endpoint(self, which: str) -> float | np.ndarray | None:
        """``v0``/``v1`` (explicit or from all-0/all-1 rows): a float for one behavior."""
        arr, _ = self.endpoint(which)
        if arr is None:
            return None
        return float(arr[0]) if arr.size == 1 else arr


def _explicit_endpoint(given: Any, k: int, label: str) -> np.ndarray | None:
    if given is None:
        return None
    try:
        arr = np.asarray(given, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DiffattrError(f"{label} must be a number or one number per behavior") from None
    if arr.size == 1:
        arr = np.repeat(arr, k)
    if arr.size != k:
        raise DiffattrError(f"{label} has {arr.size} entries for {k} value columns")
    if not np.isfinite(arr).all():
        raise DiffattrError(f"{label} must be finite, got {given!r}")
    return arr


def _is_value_column(name: str) -> bool:
    return name == "value" or name.startswith("value:")


def _is_reserved(name: str) -> bool:
    return _is_value_column(name) or name == PAIR_COLUMN


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


def _parse_pair(text: str, row: int) -> int:
    t = text.strip()
    if not t.isdigit():
        raise DiffattrError(
            f"table line {row}, column {PAIR_COLUMN!r}: expected an integer >= 0, got {text!r}"
        )
    return int(t)


def read_csv_rows(path: str | os.PathLike[str], what: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a CSV as ``(line number, cells)``; UTF-8 with an optional BOM.

    Line numbers count physical lines, so a quoted cell spanning lines is reported where
    its row starts.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            out = []
            line = 1
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    out.append((line, cells))
                line = reader.line_num + 1
    except FileNotFoundError:
        raise DiffattrError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DiffattrError(f"cannot read {what} {str(path)!r}: {exc}") from None
    return out


def read_table_csv(
    path: str | os.PathLike[str],
    v0: float | Sequence[float] | None = None,
    v1: float | Sequence[float] | None = None,
) -> CoalitionTable:
    """Read a coalition table CSV (see the module doc); ``v0``/``v1`` are explicit endpoints
    (otherwise the estimators use the table's all-0/all-1 rows)."""
    numbered = read_csv_rows(path, "table")
    if not numbered:
        raise DiffattrError(f"table {str(path)!r} is empty")
    header = [h.strip() for h in numbered[0][1]]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DiffattrError(f"table {str(path)!r}: column {dup!r} appears more than once")
    value_cols = [j for j, h in enumerate(header) if _is_value_column(h)]
    player_cols = [j for j, h in enumerate(header) if not _is_reserved(h)]
    pair_col = header.index(PAIR_COLUMN) if PAIR_COLUMN in header else None
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
    pairs = np.zeros(m, dtype=np.int64) if pair_col is not None else None
    for r, (line, cells) in enumerate(body):
        if len(cells) != len(header):
            raise DiffattrError(
                f"table line {line} has {len(cells)} cells; the header has {len(header)}"
            )
        for c, j in enumerate(player_cols):
            masks[r, c] = _parse_bit(cells[j], line, header[j])
        for c, j in enumerate(value_cols):
            values[r, c] = _parse_value(cells[j], line, header[j])
        if pairs is not None and pair_col is not None:
            pairs[r] = _parse_pair(cells[pair_col], line)
    names = [header[j] for j in player_cols]
    behaviors: list[str | None] = [
        None if header[j] == "value" else header[j][len("value:") :] for j in value_cols
    ]
    return CoalitionTable(masks, values, names, behaviors, v0, v1, pairs)


def write_table_csv(
    path: str | os.PathLike[str],
    masks: Any,
    values: Any = None,
    names: Sequence[str] | None = None,
    behaviors: Sequence[str | None] | None = None,
    pair_ids: Any = None,
) -> None:
    """Write masks and values in the format :func:`read_table_csv` reads (atomically).

    ``masks`` may also be a :class:`CoalitionTable` (then nothing else is passed; explicit
    ``v0``/``v1`` are not written). One value column is named ``value`` unless a behavior
    name is given; several columns are named ``value:<behavior>`` (behaviors default to
    ``0, 1, ...``). With ``pair_ids`` a ``pair_id`` column is written.
    """
    if isinstance(masks, CoalitionTable):
        if values is not None or names is not None or behaviors is not None:
            raise DiffattrError("write_table_csv(path, table) takes no other arguments")
        tbl = masks
        z, y, names, pair_ids = tbl.masks, tbl.values, tbl.names, tbl.pair_ids
        behaviors = tbl.behaviors if tbl.n_behaviors > 1 or tbl.behaviors != [None] else None
    else:
        z = as_masks(masks)
        y, _ = as_values(values, z.shape[0])
    names = resolve_names(names, z.shape[1])
    clash = [x for x in names if _is_reserved(x.strip())]
    if clash:
        raise DiffattrError(f"player name {clash[0]!r} would be read as a value or pair column")
    bad = [x for x in names if x != x.strip()]
    if bad:
        raise DiffattrError(f"player name {bad[0]!r} has leading or trailing whitespace")
    k = y.shape[1]
    if behaviors is None:
        behaviors = [None] if k == 1 else [str(j) for j in range(k)]
    if len(behaviors) != k:
        raise DiffattrError(f"{len(behaviors)} behavior names for {k} value columns")
    value_names = ["value" if b is None else f"value:{b}" for b in behaviors]
    if len(set(value_names)) != k:
        raise DiffattrError("value column names must be distinct")
    header = [*names, *value_names]
    ids = None
    if pair_ids is not None:
        ids = CoalitionTable(z, y, names, list(behaviors), None, None, pair_ids).pair_ids
        header.append(PAIR_COLUMN)
    bits = np.where(z, "1", "0")
    rows: list[list[str]] = [header]
    for r in range(z.shape[0]):
        row = [*bits[r], *(repr(float(v)) for v in y[r])]
        if ids is not None:
            row.append(str(int(ids[r])))
        rows.append(row)
    atomic_write_text(path, csv_text(rows))
