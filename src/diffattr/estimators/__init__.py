"""Attribution estimators: tables of evaluated coalitions in, per-player values out.

Every estimator is chosen by its typed settings, registered in ``ESTIMATORS``
(:mod:`diffattr.estimators.settings`), and built by ``settings.build()``::

    est = ESTIMATORS.parse({"name": "shapley", "sampler": "leverage"}).build()
    est.min_rows(n_players)            # rows below which it cannot identify the values
    atts = est.fit(table)              # CoalitionTable -> one Attribution per behavior
    att = est.fit(masks, values, v0=v0, v1=v1)   # array form

``make_estimator(name, **options)`` and ``fit(name, masks, values, ..., **options)`` are the
same in one call. Registry names:

* ``shapley`` — KernelSHAP closed form (Covert & Lee 2021, eq. 7); ``shapley-kernel``
  rows (weight 1) or ``leverage`` rows (Musco & Witter 2025, post-stratified weights);
* ``shapley-cv`` — KernelSHAP with size control variates (regression adjustment);
* ``permutation-shapley`` — permutation sampling, prefix-chain rows;
* ``banzhaf`` — ±1/2-coded regression, uniform rows (Wang & Jia 2023);
* ``banzhaf-msr`` — maximum sample reuse, uniform rows (Wang & Jia 2023);
* ``datamodel`` — ridge datamodel, fixed-fraction rows (Ilyas et al. 2022);
* ``loo`` / ``aoi`` — leave-one-out / add-one-in, matched by mask content.

Shapley and Banzhaf estimators return exact values (``settings["exact_table"] = True``)
when the table holds every coalition; their standard error is then the replicate noise
(NaN when each coalition was evaluated once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import (
    Attribution,
    attributions_csv_text,
    write_attributions_csv,
)
from diffattr.estimators.banzhaf import BanzhafMSR, BanzhafRegression
from diffattr.estimators.base import Estimator, Fit
from diffattr.estimators.convergence import convergence_report
from diffattr.estimators.datamodel import Datamodel
from diffattr.estimators.exact import (
    all_subsets,
    banzhaf_from_table,
    exact_banzhaf,
    exact_shapley,
    shapley_from_table,
)
from diffattr.estimators.kernel_shap import KernelShap
from diffattr.estimators.loo import AddOneIn, LeaveOneOut
from diffattr.estimators.permutation import PermutationShapley
from diffattr.estimators.settings import (
    ESTIMATORS,
    AddOneInSettings,
    BanzhafMSRSettings,
    BanzhafSettings,
    CoalitionEstimatorSettings,
    DatamodelSettings,
    EstimatorSettings,
    LeaveOneOutSettings,
    PermutationShapleySettings,
    ShapleyCVSettings,
    ShapleySettings,
    estimator_settings,
)
from diffattr.estimators.shapley_cv import ShapleyCV
from diffattr.estimators.table import CoalitionTable, read_table_csv, write_table_csv

__all__ = [
    "ESTIMATORS",
    "AddOneIn",
    "AddOneInSettings",
    "Attribution",
    "BanzhafMSR",
    "BanzhafMSRSettings",
    "BanzhafRegression",
    "BanzhafSettings",
    "CoalitionEstimatorSettings",
    "CoalitionTable",
    "Datamodel",
    "DatamodelSettings",
    "Estimator",
    "EstimatorSettings",
    "Fit",
    "KernelShap",
    "LeaveOneOut",
    "LeaveOneOutSettings",
    "PermutationShapley",
    "PermutationShapleySettings",
    "ShapleyCV",
    "ShapleyCVSettings",
    "ShapleySettings",
    "all_subsets",
    "attributions_csv_text",
    "banzhaf_from_table",
    "convergence_report",
    "estimator_settings",
    "exact_banzhaf",
    "exact_shapley",
    "fit",
    "make_estimator",
    "read_table_csv",
    "shapley_from_table",
    "write_attributions_csv",
    "write_table_csv",
]


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
    if not settings.uses_coalitions:
        raise DiffattrError(f"estimator {settings.name!r} does not fit coalition tables")
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
