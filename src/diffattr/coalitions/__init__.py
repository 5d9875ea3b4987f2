"""Coalition samplers: which subsets of players a run evaluates.

Every sampler is built as ``SAMPLERS.get(name)(n_players, seed, **settings)`` and has
``sample(m) -> (m, n_players) bool``, ``rows(start, stop)``, ``settings()`` and ``name``.
Rows depend only on ``(seed, row)``, so the first ``m`` rows of ``sample(m2)`` equal
``sample(m)``: raising the number of coalitions extends a run.

Registry names: ``shapley-kernel`` (``paired=`` option), ``datamodel`` (``alpha=``),
``uniform`` (alias ``banzhaf``; ``p=``), ``loo``, ``add-one-in`` (alias ``aoi``),
``permutation``. ``SAMPLER_FOR_ESTIMATOR`` names the sampler (and its settings) whose
rows each estimator in ``diffattr.estimators.ESTIMATORS`` expects.
"""

from __future__ import annotations

from typing import Any

from diffattr.coalitions.add_one_in import AddOneInSampler
from diffattr.coalitions.banzhaf import UniformSampler
from diffattr.coalitions.base import CoalitionSampler
from diffattr.coalitions.datamodel import DatamodelSampler
from diffattr.coalitions.loo import LeaveOneOutSampler
from diffattr.coalitions.permutation import PermutationSampler
from diffattr.coalitions.shapley_kernel import ShapleyKernelSampler, shapley_kernel_size_probs
from diffattr.errors import DiffattrError
from diffattr.registry import Registry

__all__ = [
    "SAMPLERS",
    "SAMPLER_FOR_ESTIMATOR",
    "AddOneInSampler",
    "CoalitionSampler",
    "DatamodelSampler",
    "LeaveOneOutSampler",
    "PermutationSampler",
    "ShapleyKernelSampler",
    "UniformSampler",
    "make_sampler",
    "sampler_for_estimator",
    "shapley_kernel_size_probs",
]

SAMPLERS: Registry[type[CoalitionSampler]] = Registry("coalition sampler")
SAMPLERS.register("shapley-kernel")(ShapleyKernelSampler)
SAMPLERS.register("datamodel")(DatamodelSampler)
SAMPLERS.register("uniform")(UniformSampler)
SAMPLERS.register("banzhaf")(UniformSampler)
SAMPLERS.register("loo")(LeaveOneOutSampler)
SAMPLERS.register("add-one-in")(AddOneInSampler)
SAMPLERS.register("aoi")(AddOneInSampler)
SAMPLERS.register("permutation")(PermutationSampler)

#: estimator name -> (sampler name, sampler settings) producing the rows it expects.
SAMPLER_FOR_ESTIMATOR: dict[str, tuple[str, dict[str, Any]]] = {
    "shapley": ("shapley-kernel", {"paired": True}),
    "permutation-shapley": ("permutation", {}),
    "banzhaf": ("uniform", {}),
    "banzhaf-msr": ("uniform", {}),
    "datamodel": ("datamodel", {"alpha": 0.5}),
    "loo": ("loo", {}),
    "aoi": ("add-one-in", {}),
}


def make_sampler(name: str, n_players: int, seed: int = 0, **settings: Any) -> CoalitionSampler:
    """Build the sampler registered as ``name``; unknown settings are a DiffattrError."""
    cls = SAMPLERS.get(name)
    try:
        return cls(n_players, seed, **settings)
    except TypeError as exc:
        raise DiffattrError(f"bad settings for sampler {name!r}: {exc}") from None


def sampler_for_estimator(
    estimator: str, n_players: int, seed: int = 0, **settings: Any
) -> CoalitionSampler:
    """The sampler an estimator expects, with its default settings updated by ``settings``."""
    if estimator not in SAMPLER_FOR_ESTIMATOR:
        raise DiffattrError(
            f"unknown estimator {estimator!r}; choose one of: "
            f"{', '.join(sorted(SAMPLER_FOR_ESTIMATOR))}"
        )
    name, defaults = SAMPLER_FOR_ESTIMATOR[estimator]
    return make_sampler(name, n_players, seed, **{**defaults, **settings})
