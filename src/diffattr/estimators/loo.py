"""Leave-one-out and add-one-in attributions, read from a table by mask content.

* ``loo``: ``phi_i = v1 - v(N \\ {i})`` (Koh & Liang 2017 call its first-order
  approximation the influence function).
* ``aoi`` (add-one-in): ``phi_i = v({i}) - v0``.

Rows are matched by what their masks hold, never by their order: the row of player
``i`` is any row whose mask is "everyone but ``i``" (LOO) or "only ``i``" (AOI); other
rows are ignored. Replicated rows are averaged. A missing row is an error naming the
player. ``v1``/``v0`` come from the arguments or from all-1/all-0 rows.

Standard error: NaN unless player ``i``'s row is replicated; then the standard error of
its mean, combined in quadrature with that of ``v1``/``v0`` when the endpoint is itself
the mean of at least two table rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Estimator, Fit


def _sem(values: np.ndarray) -> np.ndarray:
    """Standard error of the mean per column; NaN below two rows."""
    if values.shape[0] < 2:
        return np.full(values.shape[1], np.nan)
    return values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])


class _SingleChange(Estimator):
    """Shared code of LOO and AOI: one required mask per player."""

    #: True for LOO (masks of size n-1, compared with v1), False for AOI.
    leave_out: ClassVar[bool] = True

    def _fit(
        self,
        z: np.ndarray,
        y: np.ndarray,
        v0: np.ndarray | None,
        v1: np.ndarray | None,
        opts: dict[str, Any],
        names: list[str],
    ) -> Fit:
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
        endpoint = v1 if self.leave_out else v0
        assert endpoint is not None
        end_rows = z.all(axis=1) if self.leave_out else ~z.any(axis=1)
        given = opts["_v1_given"] if self.leave_out else opts["_v0_given"]
        end_sem = np.zeros(k) if given else _sem(y[end_rows])
        vals = np.empty((k, n))
        se = np.empty((k, n))
        for i in range(n):
            yi = y[rows[player == i]]
            mean = yi.mean(axis=0)
            vals[:, i] = endpoint - mean if self.leave_out else mean - endpoint
            sem_i = _sem(yi)
            se[:, i] = np.sqrt(sem_i**2 + np.nan_to_num(end_sem) ** 2)
        info = {"rows_used": int(rows.size), "rows_ignored": int(m - rows.size)}
        return Fit(vals, se, info)


class LeaveOneOut(_SingleChange):
    """``phi_i = v1 - v(all but i)``; registry name ``loo``. Needs ``v1``."""

    name: ClassVar[str] = "loo"
    needs_v1: ClassVar[bool] = True
    leave_out: ClassVar[bool] = True


class AddOneIn(_SingleChange):
    """``phi_i = v({i}) - v0``; registry name ``aoi``. Needs ``v0``."""

    name: ClassVar[str] = "aoi"
    needs_v0: ClassVar[bool] = True
    leave_out: ClassVar[bool] = False
