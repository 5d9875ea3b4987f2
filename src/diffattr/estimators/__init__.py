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
* ``tree-shapley`` — Shapley values of a gradient-boosted-tree surrogate (SurrogateSHAP;
  needs the ``tree`` extra);
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

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "Attribution": "diffattr.estimators.attribution:Attribution",
    "attributions_csv_text": "diffattr.estimators.attribution:attributions_csv_text",
    "write_attributions_csv": "diffattr.estimators.attribution:write_attributions_csv",
    "BanzhafMSR": "diffattr.estimators.banzhaf:BanzhafMSR",
    "BanzhafRegression": "diffattr.estimators.banzhaf:BanzhafRegression",
    "Estimator": "diffattr.estimators.base:Estimator",
    "Fit": "diffattr.estimators.base:Fit",
    "convergence_report": "diffattr.estimators.convergence:convergence_report",
    "Datamodel": "diffattr.estimators.datamodel:Datamodel",
    "all_subsets": "diffattr.estimators.exact:all_subsets",
    "banzhaf_from_table": "diffattr.estimators.exact:banzhaf_from_table",
    "exact_banzhaf": "diffattr.estimators.exact:exact_banzhaf",
    "exact_shapley": "diffattr.estimators.exact:exact_shapley",
    "shapley_from_table": "diffattr.estimators.exact:shapley_from_table",
    "KernelShap": "diffattr.estimators.kernel_shap:KernelShap",
    "AddOneIn": "diffattr.estimators.loo:AddOneIn",
    "LeaveOneOut": "diffattr.estimators.loo:LeaveOneOut",
    "PermutationShapley": "diffattr.estimators.permutation:PermutationShapley",
    "ESTIMATORS": "diffattr.estimators.settings:ESTIMATORS",
    "AddOneInSettings": "diffattr.estimators.settings:AddOneInSettings",
    "BanzhafMSRSettings": "diffattr.estimators.settings:BanzhafMSRSettings",
    "BanzhafSettings": "diffattr.estimators.settings:BanzhafSettings",
    "CoalitionEstimatorSettings": "diffattr.estimators.settings:CoalitionEstimatorSettings",
    "DatamodelSettings": "diffattr.estimators.settings:DatamodelSettings",
    "EstimatorSettings": "diffattr.estimators.settings:EstimatorSettings",
    "LeaveOneOutSettings": "diffattr.estimators.settings:LeaveOneOutSettings",
    "PermutationShapleySettings": "diffattr.estimators.settings:PermutationShapleySettings",
    "ShapleyCVSettings": "diffattr.estimators.settings:ShapleyCVSettings",
    "ShapleySettings": "diffattr.estimators.settings:ShapleySettings",
    "estimator_settings": "diffattr.estimators.settings:estimator_settings",
    "ShapleyCV": "diffattr.estimators.shapley_cv:ShapleyCV",
    "TreeShapley": "diffattr.estimators.tree_shapley:TreeShapley",
    "TreeShapleySettings": "diffattr.estimators.settings:TreeShapleySettings",
    "CoalitionTable": "diffattr.estimators.table:CoalitionTable",
    "read_table_csv": "diffattr.estimators.table:read_table_csv",
    "write_table_csv": "diffattr.estimators.table:write_table_csv",
    "make_estimator": "diffattr.estimators.build:make_estimator",
    "fit": "diffattr.estimators.build:fit",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
