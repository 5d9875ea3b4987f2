"""``make_estimator`` and ``fit``: an estimator from a name or settings, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Attribution
from diffattr.estimators.base import Estimator
from diffattr.estimators.settings import ESTIMATORS, EstimatorSettings, estimator_settings
from diffattr.estimators.table import CoalitionTable


def make_estimator(estimator: str | EstimatorSettings | Estimator, **options: Any) -> Estimator:
    """A coalition estimator from a registry name and options, settings, or itself.

    Unknown names or options are one-line ``DiffattrError`` messages.
    """
    if isinstance(estimator, Estimator):
        if options:
            raise DiffattrError("options go into the settings an estimator is built from")
        return estimator
    if isinstance(estimator, str):
        settings = estimator_settings(estimator, **options)
    elif isinstance(estimator, EstimatorSettings):
        settings = ESTIMATORS.parse(estimator.to_dict() | options) if options else estimator
    else:
        raise DiffattrError(f"expected an estimator name or settings, got {estimator!r}")
    return settings.build()


def fit(
    estimator: str | EstimatorSettings | Estimator,
    data: Any,
    values: Any = None,
    v0: Any = None,
    v1: Any = None,
    *,
    names: Sequence[str] | None = None,
    behaviors: Sequence[str | None] | None = None,
    pair_ids: Any = None,
    **options: Any,
) -> Attribution | list[Attribution]:
    """``make_estimator(estimator, **options).fit(data, values, v0=..., v1=..., ...)``."""
    est = make_estimator(estimator, **options)
    if isinstance(data, CoalitionTable):
        return est.fit(data)
    return est.fit(data, values, v0=v0, v1=v1, names=names, behaviors=behaviors, pair_ids=pair_ids)
