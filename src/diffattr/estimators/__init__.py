"""Attribution estimators: tables of evaluated coalitions in, per-player values out.

``ESTIMATORS.get(name).fit(masks, values, v0=None, v1=None, names=None, behaviors=None,
**settings)`` returns an :class:`Attribution` (``values`` 1-D) or a list of them (one
per column of 2-D ``values``). Registry names:

* ``shapley`` — KernelSHAP closed form (Covert & Lee 2021, eq. 7), Shapley-kernel rows;
* ``permutation-shapley`` — permutation sampling, prefix-chain rows;
* ``banzhaf`` — ±1/2-coded regression, uniform rows (Wang & Jia 2023);
* ``banzhaf-msr`` — maximum sample reuse, uniform rows (Wang & Jia 2023);
* ``datamodel`` — ridge datamodel, fixed-fraction rows (Ilyas et al. 2022);
* ``loo`` / ``aoi`` — leave-one-out / add-one-in, matched by mask content.

Shapley and Banzhaf estimators return exact values (standard error 0,
``settings["exact"] = True``) when the table holds every subset of its players.
``diffattr.coalitions.SAMPLER_FOR_ESTIMATOR`` names the sampler each one expects.
"""

from __future__ import annotations

from typing import Any

from diffattr.estimators.attribution import (
    Attribution,
    Estimator,
    attributions_csv_text,
    write_attributions_csv,
)
from diffattr.estimators.banzhaf import BanzhafMSR, BanzhafRegression
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
from diffattr.estimators.table import CoalitionTable, read_table_csv, write_table_csv
from diffattr.registry import Registry

__all__ = [
    "ESTIMATORS",
    "AddOneIn",
    "Attribution",
    "BanzhafMSR",
    "BanzhafRegression",
    "CoalitionTable",
    "Datamodel",
    "Estimator",
    "KernelShap",
    "LeaveOneOut",
    "PermutationShapley",
    "all_subsets",
    "attributions_csv_text",
    "banzhaf_from_table",
    "convergence_report",
    "exact_banzhaf",
    "exact_shapley",
    "fit",
    "read_table_csv",
    "shapley_from_table",
    "write_attributions_csv",
    "write_table_csv",
]

ESTIMATORS: Registry[Estimator] = Registry("estimator")
for _est in (
    KernelShap(),
    PermutationShapley(),
    BanzhafRegression(),
    BanzhafMSR(),
    Datamodel(),
    LeaveOneOut(),
    AddOneIn(),
):
    ESTIMATORS.register(_est.name)(_est)
del _est


def fit(
    estimator: str, masks: Any, values: Any, v0: Any = None, v1: Any = None, **kwargs: Any
) -> Attribution | list[Attribution]:
    """``ESTIMATORS.get(estimator).fit(masks, values, v0, v1, **kwargs)``."""
    return ESTIMATORS.get(estimator).fit(masks, values, v0=v0, v1=v1, **kwargs)
