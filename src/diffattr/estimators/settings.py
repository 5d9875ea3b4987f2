"""Typed settings of the attribution estimators (the ``[[estimators]]`` tables of a run).

Each estimator owns a settings class registered in ``ESTIMATORS`` by its name; the class
names the code that fits it (``implementation``). Coalition estimators (Shapley, Banzhaf,
datamodels, LOO, AOI) also carry the settings of the coalition sampler whose rows they
need; baselines that score the trained model directly (TRAK-type, similarity,
heuristics; ``diffattr.baselines``) register here too and need no sampler.

This module imports only pydantic: a run plan is validated without torch.
"""

from __future__ import annotations

from typing import ClassVar

from diffattr.settings import Component, ComponentRegistry


class EstimatorSettings(Component):
    """Settings every estimator shares. ``uses_coalitions``: whether it fits a table of
    evaluated coalitions (True) or scores the full model directly (baselines)."""

    kind: ClassVar[str] = "estimator"
    uses_coalitions: ClassVar[bool] = True


ESTIMATORS: ComponentRegistry[EstimatorSettings] = ComponentRegistry("estimator", EstimatorSettings)


# Provisional settings of the coalition estimators (name, sampler and its defaults).
_SAMPLER_OF = {
    "shapley": ("shapley-kernel", {"paired": True}),
    "permutation-shapley": ("permutation", {}),
    "banzhaf": ("uniform", {}),
    "banzhaf-msr": ("uniform", {}),
    "datamodel": ("datamodel", {"alpha": 0.5}),
    "loo": ("loo", {}),
    "aoi": ("add-one-in", {}),
}


def _provisional(estimator: str) -> type[EstimatorSettings]:
    from typing import Literal

    from pydantic import Field, create_model

    cls = create_model(
        f"{estimator.title().replace('-', '')}Settings",
        __base__=EstimatorSettings,
        name=(Literal[estimator], estimator),
        subsets=(int | None, Field(None, ge=1, description="coalitions (default: the run's)")),
    )
    cls.sampler_name = _SAMPLER_OF[estimator][0]
    cls.sampler_defaults = _SAMPLER_OF[estimator][1]
    return cls


for _name in _SAMPLER_OF:
    ESTIMATORS.register(_provisional(_name))
