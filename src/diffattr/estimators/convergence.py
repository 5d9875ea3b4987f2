"""How an estimate settles as rows are added (Covert & Lee 2021, Sec. 4, in spirit).

``convergence_report`` refits an estimator on growing prefixes of a table — the
samplers' prefix property makes a prefix a smaller run of the same design — and reports
for each prefix the estimate, its mean standard error, and how much it moved since the
previous prefix: the largest absolute change and the Spearman rank correlation of the
two estimates. A ranking that has stopped moving (Spearman near 1) is the practical
stopping rule for expensive utilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from diffattr.errors import DiffattrError
from diffattr.estimators import make_estimator
from diffattr.estimators.attribution import as_masks, as_values


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def prefix_sizes(n_rows: int, steps: int, smallest: int = 2) -> list[int]:
    """``steps`` prefix lengths, geometric from ``n_rows / 2^(steps-1)`` to ``n_rows``."""
    if steps < 1:
        raise DiffattrError(f"steps must be >= 1, got {steps}")
    lo = max(min(smallest, n_rows), n_rows / 2 ** (steps - 1))
    sizes = np.unique(np.round(np.geomspace(lo, n_rows, steps)).astype(int))
    return [int(s) for s in sizes if s >= 1]


def convergence_report(
    estimator: Any,
    masks: Any,
    values: Any,
    v0: float | None = None,
    v1: float | None = None,
    steps: int | Sequence[int] = 6,
    names: Sequence[str] | None = None,
    pair_ids: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Fit ``estimator`` on growing prefixes of the table; one dict per prefix.

    ``estimator`` is a registry name (with ``options``), settings or an estimator
    (``diffattr.estimators.make_estimator``); ``values`` must be one column
    (``(M,)``); ``steps`` is a number of geometrically spaced prefixes or explicit
    prefix lengths. Each dict holds ``rows``, ``values``, ``stderr`` (lists, NaN as None),
    ``mean_stderr``, ``max_abs_change`` and ``spearman`` (versus the previous successful
    prefix; None for the first) and ``error`` (the message when a prefix was too small
    for the estimator, else None).
    """

    est = make_estimator(estimator, **options)
    z = as_masks(masks)
    y, single = as_values(values, z.shape[0])
    if not single:
        raise DiffattrError("convergence_report takes one value column; pick one behavior")
    m = z.shape[0]
    if isinstance(steps, (int, np.integer)):
        sizes = prefix_sizes(m, int(steps))
    else:
        sizes = sorted({int(s) for s in steps})
        if not sizes or sizes[0] < 1 or sizes[-1] > m:
            raise DiffattrError(f"prefix lengths must lie in 1..{m}, got {list(steps)}")
    report: list[dict[str, Any]] = []
    prev: np.ndarray | None = None
    for size in sizes:
        entry: dict[str, Any] = {"rows": size, "values": None, "stderr": None}
        entry.update(mean_stderr=None, max_abs_change=None, spearman=None, error=None)
        try:
            ids = None if pair_ids is None else np.asarray(pair_ids)[:size]
            att = est.fit(z[:size], y[:size, 0], v0=v0, v1=v1, names=names, pair_ids=ids)
        except DiffattrError as exc:
            entry["error"] = str(exc)
            report.append(entry)
            continue
        assert not isinstance(att, list)
        entry["values"] = [float(v) for v in att.values]
        entry["stderr"] = [_finite_or_none(s) for s in att.stderr]
        finite = att.stderr[np.isfinite(att.stderr)]
        entry["mean_stderr"] = float(finite.mean()) if finite.size else None
        if prev is not None:
            entry["max_abs_change"] = float(np.abs(att.values - prev).max())
            if np.ptp(att.values) > 0 and np.ptp(prev) > 0:
                entry["spearman"] = _finite_or_none(spearmanr(prev, att.values).statistic)
        prev = att.values
        report.append(entry)
    return report
