"""Coalition samplers: which subsets of players a run evaluates.

A sampler is chosen by its typed settings, registered in ``SAMPLERS``
(:mod:`diffattr.coalitions.settings`), and built as
``SAMPLERS.parse(value).build(n_players, seed)`` (or ``make_sampler(name, n, seed, **kw)``).
Every sampler has ``sample(m) -> (m, n_players) bool``, ``rows(start, stop)``,
``settings()``, ``name``, ``paired`` and ``pair_ids(rows)``. Rows depend only on
``(seed, row)``, so the first ``m`` rows of ``sample(m2)`` equal ``sample(m)``: raising the
number of coalitions extends a run.

Registry names: ``shapley-kernel`` (``paired``), ``leverage``, ``datamodel`` (``alpha``),
``uniform`` (alias ``banzhaf``; ``p``), ``loo``, ``add-one-in`` (alias ``aoi``),
``permutation``. Each estimator's settings name the sampler whose rows it needs
(``diffattr.estimators.settings``).
"""

from __future__ import annotations

from diffattr.coalitions.add_one_in import AddOneInSampler
from diffattr.coalitions.banzhaf import UniformSampler
from diffattr.coalitions.base import CoalitionSampler
from diffattr.coalitions.datamodel import DatamodelSampler, kept_players
from diffattr.coalitions.leverage import LeverageSampler
from diffattr.coalitions.loo import LeaveOneOutSampler
from diffattr.coalitions.permutation import PermutationSampler
from diffattr.coalitions.settings import (
    SAMPLERS,
    AddOneInSamplerSettings,
    DatamodelSamplerSettings,
    LeaveOneOutSamplerSettings,
    LeverageSamplerSettings,
    PermutationSamplerSettings,
    SamplerSettings,
    ShapleyKernelSamplerSettings,
    UniformSamplerSettings,
    make_sampler,
)
from diffattr.coalitions.shapley_kernel import ShapleyKernelSampler, shapley_kernel_size_probs

__all__ = [
    "SAMPLERS",
    "AddOneInSampler",
    "AddOneInSamplerSettings",
    "CoalitionSampler",
    "DatamodelSampler",
    "DatamodelSamplerSettings",
    "LeaveOneOutSampler",
    "LeaveOneOutSamplerSettings",
    "LeverageSampler",
    "LeverageSamplerSettings",
    "PermutationSampler",
    "PermutationSamplerSettings",
    "SamplerSettings",
    "ShapleyKernelSampler",
    "ShapleyKernelSamplerSettings",
    "UniformSampler",
    "UniformSamplerSettings",
    "kept_players",
    "make_sampler",
    "shapley_kernel_size_probs",
]
