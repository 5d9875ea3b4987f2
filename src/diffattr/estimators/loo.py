"""Leave-one-out and add-one-in attributions, read from a table by mask content.

* ``loo``: ``phi_i = v1 - v(N \\ {i})`` (Koh & Liang 2017 call its first-order
  approximation the influence function).
* ``aoi`` (add-one-in): ``phi_i = v({i}) - v0``.

Rows are matched by what their masks hold, never by their order: the row of player
``i`` is any row whose mask is "everyone but ``i``" (LOO) or "only ``i``" (AOI); other
rows are ignored. Replicated rows are averaged. A missing row is an error naming the
player. ``v1``/``v0`` come from the table's explicit endpoints or from its all-1/all-0 rows.

Standard error: the standard error of the difference of two means,
``sqrt(sem(player rows)^2 + sem(endpoint)^2)``. It is NaN — not determinable — when the
player's coalition was evaluated once, or when the endpoint is the value of a single
table row. An explicit ``v1``/``v0`` (the full/null model a run evaluated) is taken as a
constant: its error is common to every player, so it shifts all values alike and no
ranking; ``settings["endpoint_noise"]`` says which case applied.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit
from diffattr.estimators.settings import AddOneInSettings, LeaveOneOutSettings
from diffattr.estimators.table import CoalitionTable


def _sem(values: np.ndarray) -> np.ndarray:
    """Standard error of the mean per column; NaN below two rows."""
    if values.shape[0] < 2:
        return np.full(values.shape[1], np.nan)
    return values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


class _SingleChange(Estimator):
    """Shared code of LOO and AOI: one required mask per player."""

    #: True for LOO (masks of size n-1, compared with v1), False for AOI.
    leave_out: ClassVar[bool] = True

    def min_rows(self, n_players: int) -> int:
        return n_players

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        z, y = table.masks, table.values
        names = list(table.names or [])
        m, n = z.shape
        k = y.shape[1]
        sizes = z.sum(axis=1)
        target = n - 1 if self.leave_out else 1
        rows = np.flatnonzero(sizes == target)
        player = np.argmin(z[rows], axis=1) if self.leave_out else np.argmax(z[rows], axis=1)
        counts = np.bincount(player, minlength=n)
        missing = np.flatnonzero(counts == 0)
        if missing.size:
            i = int(missing[0])
            want = f"all players except {names[i]!r}" if self.leave_out else f"only {names[i]!r}"
            more = f" (and {missing.size - 1} more players)" if missing.size > 1 else ""
            raise DiffattrError(
                f"{self.name} needs a row whose coalition holds {want}; the table has none{more}"
            )
        which = "v1" if self.leave_out else "v0"
        endpoint = v1 if self.leave_out else v0
        assert endpoint is not None
        explicit = (table.v1 if self.leave_out else table.v0) is not None
        if explicit:
            end_sem = np.zeros(k)
            noise = f"explicit {which}: taken as a constant"
        else:
            end_sem = _sem(y[table.endpoint_rows(which)])
            reps = table.endpoint_rows(which).size
            noise = f"{which} from {reps} table row{'s' if reps != 1 else ''}"
        vals = np.empty((k, n))
        se = np.empty((k, n))
        for i in range(n):
            yi = y[rows[player == i]]
            mean = yi.mean(axis=0)
            vals[:, i] = endpoint - mean if self.leave_out else mean - endpoint
            se[:, i] = np.sqrt(_sem(yi) ** 2 + end_sem**2)  # NaN if either is undetermined
        info = {
            "rows_used": int(rows.size),
            "rows_ignored": int(m - rows.size),
            "endpoint_noise": noise,
            "stderr_method": "replicates" if np.isfinite(se).any() else "none: single rows",
        }
        return Fit(vals, se, info)


class LeaveOneOut(_SingleChange):
    """``phi_i = v1 - v(all but i)``; registry name ``loo``. Needs ``v1`` and ``n`` rows."""

    settings_class = LeaveOneOutSettings
    needs_v1 = True
    leave_out = True


class AddOneIn(_SingleChange):
    """``phi_i = v({i}) - v0``; registry name ``aoi``. Needs ``v0`` and ``n`` rows."""

    settings_class = AddOneInSettings
    needs_v0 = True
    leave_out = False
