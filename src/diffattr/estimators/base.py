"""The estimator interface: typed settings in, ``fit(table) -> list[Attribution]`` out.

An estimator is built from its settings (``diffattr.estimators.settings``):
``ESTIMATORS.parse("shapley").build()`` or ``KernelShap(ShapleySettings(...))``. It reads a
:class:`~diffattr.estimators.table.CoalitionTable` of evaluated coalitions and returns one
:class:`~diffattr.estimators.attribution.Attribution` per behavior column; it never
evaluates the utility. The array form ``fit(masks, values, v0=, v1=, names=, behaviors=,
pair_ids=)`` builds the table first and returns a single Attribution for 1-D ``values``.

``min_rows(n_players)`` is the number of sampled rows below which the estimator cannot
identify the values of ``n_players`` players, so a run can refuse a plan before any
training (``CoalitionEstimatorSettings.check_rows``).

Exact values (Shapley 1953; Banzhaf 1965): a table that holds every coalition strictly
between the empty and the full one (and ``v0``/``v1``, explicit or as rows) gives the
exact Shapley/Banzhaf values of the table's game (``settings["exact_table"] = True``).
Their standard error is the evaluation noise propagated through the exact linear map
``phi = L v``: ``Var(phi_i) = s^2 sum_S L_iS^2 / r_S`` with ``r_S`` the replicates of
coalition ``S`` and ``s^2`` the pooled within-coalition variance of the replicated ones
(explicit ``v0``/``v1`` count as noiseless). When no coalition is replicated the noise
cannot be determined and the standard error is NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import MAX_EXACT_PLAYERS, Attribution, _json_safe, subset_codes
from diffattr.estimators.exact import (
    _popcount,
    banzhaf_from_table,
    shapley_from_table,
    shapley_weights,
)
from diffattr.estimators.settings import CoalitionEstimatorSettings
from diffattr.estimators.table import CoalitionTable


@dataclass
class Fit:
    """What ``Estimator._fit`` returns: ``(K, n)`` values and stderrs plus extra settings."""

    values: np.ndarray
    stderr: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def bootstrap_std(
    fit_units: Any, n_units: int, n_bootstrap: int, seed: int, shape: tuple[int, ...]
) -> np.ndarray:
    """Std (ddof=1) over ``n_bootstrap`` refits on units resampled with replacement.

    ``fit_units(idx)`` refits on the unit indices ``idx`` and returns an array of
    ``shape``. A refit that fails (too few distinct units) is redrawn up to 3 times.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(7919,))))
    draws = []
    for _ in range(n_bootstrap):
        for attempt in range(4):
            idx = rng.integers(0, n_units, size=n_units)
            try:
                draws.append(np.asarray(fit_units(idx)).reshape(shape))
                break
            except (DiffattrError, np.linalg.LinAlgError):
                if attempt == 3:
                    raise DiffattrError(
                        "bootstrap refits keep failing; the table has too few rows"
                    ) from None
    if len(draws) < 2:
        return np.full(shape, np.nan)
    return np.std(np.stack(draws), axis=0, ddof=1)


def exact_table_fit(
    table: CoalitionTable, kind: str, v0: np.ndarray | None, v1: np.ndarray | None
) -> Fit | None:
    """Exact Shapley (``kind="shapley"``) or Banzhaf values if the table holds every
    coalition, with replicate-variance standard errors (module doc); else None."""
    z, y = table.masks, table.values
    m, n = z.shape
    if n > MAX_EXACT_PLAYERS or m < (1 << n) - 2 or v0 is None or v1 is None:
        return None
    codes = subset_codes(z)
    counts = np.bincount(codes, minlength=1 << n).astype(np.float64)
    explicit0, explicit1 = table.v0 is not None, table.v1 is not None
    inner = counts[1:-1]
    if (
        (inner == 0).any()
        or (counts[0] == 0 and not explicit0)
        or (counts[-1] == 0 and not explicit1)
    ):
        return None

    k = y.shape[1]
    sums = np.stack([np.bincount(codes, weights=y[:, j], minlength=1 << n) for j in range(k)], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[0], means[-1] = v0, v1
    fn = shapley_from_table if kind == "shapley" else banzhaf_from_table
    vals = np.asarray(fn(means)).T  # (K, n)
    # pooled within-coalition variance of the replicated coalitions (explicit ends excluded)
    inv_r = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
    use = counts.copy()
    if explicit0:
        inv_r[0], use[0] = 0.0, 0.0
    if explicit1:
        inv_r[-1], use[-1] = 0.0, 0.0
    rows = use[codes] > 0
    dev = y[rows] - means[codes[rows]]
    df = int((use[use > 0] - 1).sum())
    info: dict[str, Any] = {"exact": True, "exact_table": True, "exact_value": kind}
    info.update(solver="exact enumeration", rank=n, identified=True)
    if df == 0:
        se = np.full((k, n), np.nan)
        info["stderr_method"] = "none: each coalition evaluated once, noise not determinable"
        return Fit(vals, se, info)
    s2 = (dev**2).sum(axis=0) / df  # (K,)
    pc = _popcount(np.arange(1 << n, dtype=np.int64), n)
    if kind == "shapley":
        w = shapley_weights(n)  # w[s], s = 0 .. n-1
        w_in = np.where(pc >= 1, w[np.clip(pc - 1, 0, n - 1)], 0.0) ** 2 * inv_r
        w_out = np.where(pc <= n - 1, w[np.clip(pc, 0, n - 1)], 0.0) ** 2 * inv_r
        codes_all = np.arange(1 << n, dtype=np.int64)
        q = np.empty(n)
        for i in range(n):
            has = ((codes_all >> i) & 1).astype(bool)
            q[i] = w_in[has].sum() + w_out[~has].sum()
    else:
        q = np.full(n, inv_r.sum() * 0.25 ** (n - 1))
    se = np.sqrt(np.outer(s2, q))
    info["stderr_method"] = "replicates (pooled within-coalition variance)"
    info["replicate_df"] = df
    return Fit(vals, se, info)


class Estimator(ABC):
    """Base class of the coalition estimators; built from typed settings.

    Subclasses set ``settings_class`` (their settings model, used when no settings are
    given), ``needs_v0``/``needs_v1``, ``exact_kind`` (``"shapley"``/``"banzhaf"`` when a
    table holding every coalition should give exact values) and implement ``_fit`` and
    ``min_rows``.
    """

    settings_class: ClassVar[type[CoalitionEstimatorSettings]] = CoalitionEstimatorSettings
    needs_v0: ClassVar[bool] = False
    needs_v1: ClassVar[bool] = False
    exact_kind: ClassVar[str | None] = None

    def __init__(self, settings: CoalitionEstimatorSettings | None = None) -> None:
        if settings is None:
            settings = self.settings_class()
        if not isinstance(settings, self.settings_class):
            raise DiffattrError(
                f"{type(self).__name__} needs {self.settings_class.__name__}, "
                f"got {type(settings).__name__}"
            )
        self.settings = settings

    @property
    def name(self) -> str:
        return self.settings.name

    @abstractmethod
    def min_rows(self, n_players: int) -> int:
        """Sampled rows below which this estimator cannot identify ``n_players`` values."""

    def fit(
        self,
        data: CoalitionTable | Any,
        values: Any = None,
        *,
        v0: Any = None,
        v1: Any = None,
        names: Sequence[str] | None = None,
        behaviors: Sequence[str | None] | None = None,
        pair_ids: Any = None,
    ) -> Attribution | list[Attribution]:
        """Estimate attributions from a table of evaluated coalitions.

        ``fit(table)`` returns one Attribution per behavior column (a list). The array form
        ``fit(masks, values, v0=, v1=, names=, behaviors=, pair_ids=)`` takes ``masks``
        ``(M, n)`` bool/0-1 and ``values`` ``(M,)`` (returns one Attribution) or ``(M, K)``
        (returns a list); ``v0``/``v1`` are ``v(empty)``/``v(all)`` — a number or one per
        column; when omitted the table's all-0/all-1 rows give them.
        """
        if isinstance(data, CoalitionTable):
            if values is not None or v0 is not None or v1 is not None or names is not None:
                raise DiffattrError("fit(table) takes the table alone; its fields hold the rest")
            if behaviors is not None or pair_ids is not None:
                raise DiffattrError("fit(table) takes the table alone; its fields hold the rest")
            return self.fit_table(data)
        if values is None:
            raise DiffattrError("fit(masks, values): values are missing")
        single = np.ndim(values) == 1
        table = CoalitionTable.from_arrays(data, values, v0, v1, names, behaviors, pair_ids)
        out = self.fit_table(table)
        return out[0] if single else out

    __call__ = fit

    def fit_table(self, table: CoalitionTable) -> list[Attribution]:
        """One Attribution per behavior column of ``table`` (see :meth:`fit`)."""
        if not isinstance(table, CoalitionTable):
            raise DiffattrError(f"expected a CoalitionTable, got {type(table).__name__}")
        if table.n_rows == 0:
            raise DiffattrError("the table has no rows")
        n, k = table.n_players, table.n_behaviors
        v0s, _ = table.endpoint("v0")
        v1s, _ = table.endpoint("v1")
        if self.needs_v0 and v0s is None:
            raise DiffattrError(
                f"estimator {self.name!r} needs v0 = v(empty coalition): pass v0 or "
                "include an all-0 row in the table"
            )
        if self.needs_v1 and v1s is None:
            raise DiffattrError(
                f"estimator {self.name!r} needs v1 = v(all players): pass v1 or "
                "include an all-1 row in the table"
            )
        result = None
        if self.exact_kind is not None and getattr(self.settings, "use_exact", False):
            result = exact_table_fit(table, self.exact_kind, v0s, v1s)
        if result is None:
            result = self._fit(table, v0s, v1s)
        info = self.settings.to_dict()
        info.update(result.info)
        info.setdefault("exact", False)
        info.setdefault("exact_table", False)
        info["rows"] = table.n_rows
        settings = _json_safe(info)
        assert result.values.shape == (k, n), (result.values.shape, (k, n))
        return [
            Attribution(
                values=result.values[j],
                stderr=result.stderr[j],
                names=list(table.names or []),
                estimator=self.name,
                settings=dict(settings),
                behavior=(table.behaviors or [None] * k)[j],
            )
            for j in range(k)
        ]

    @abstractmethod
    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        """``(K, n)`` values and standard errors from a table with endpoints resolved."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"
