"""Typed settings of the coalition samplers (the ``sampler`` table of an estimator).

Each sampler owns a settings class registered in ``SAMPLERS`` under its name; the class
names the code that draws the rows (``implementation``) and builds it with
``build(n_players, seed)``. A config names a sampler by a string or a table::

    sampler = "leverage"
    sampler = { name = "datamodel", alpha = 0.25 }

Registry names: ``shapley-kernel`` (``paired``, default true), ``leverage`` (Musco &
Witter 2025; always paired; ``balanced``), ``datamodel`` (``alpha``), ``uniform`` (alias
``banzhaf``; ``p``), ``loo``, ``add-one-in`` (alias ``aoi``), ``permutation``.

This module imports only pydantic and ``diffattr.settings``: a run plan is validated
without numpy work or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationError

from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry

if TYPE_CHECKING:
    from diffattr.coalitions.base import CoalitionSampler


class SamplerSettings(Component):
    """Settings every coalition sampler shares; subclasses add the sampler's options.

    ``paired_rows`` (class variable; overridden by a ``paired`` field where the sampler has
    one): whether the sampler emits (mask, complement) pairs in rows ``2j, 2j + 1``.
    """

    kind: ClassVar[str] = "coalition sampler"
    paired_rows: ClassVar[bool] = False

    @property
    def is_paired(self) -> bool:
        """Whether rows ``2j`` and ``2j + 1`` are a mask and its complement."""
        return bool(getattr(self, "paired", self.paired_rows))

    def options(self) -> dict[str, Any]:
        """The sampler class's keyword options (every field but ``name``)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "name"}

    def build(self, n_players: int, seed: int = 0) -> CoalitionSampler:
        """The sampler over ``n_players`` players whose rows depend only on ``(seed, row)``."""
        return self.implementation_class()(n_players, seed, **self.options())


SAMPLERS: ComponentRegistry[SamplerSettings] = ComponentRegistry(
    "coalition sampler", SamplerSettings
)


class ShapleyKernelSamplerSettings(SamplerSettings):
    """Shapley-kernel coalitions (Lundberg & Lee 2017); ``paired``: complements interleaved
    (Covert & Lee 2021), the default; ``replace``: i.i.d. draws that may repeat a coalition
    (the paper's design) instead of distinct ones (default; rows post-stratified by size)."""

    name: Literal["shapley-kernel"] = "shapley-kernel"
    implementation: ClassVar[str] = "diffattr.coalitions.shapley_kernel:ShapleyKernelSampler"
    paired: bool = True
    replace: bool = Field(False, description="i.i.d. draws (may repeat) instead of distinct")


class LeverageSamplerSettings(SamplerSettings):
    """Leverage-score pairs without replacement (Musco & Witter 2025); ``balanced``: the
    coalitions of one size are consecutive blocks of random permutations, so every player
    is in them equally often (default), else independent uniform draws."""

    name: Literal["leverage"] = "leverage"
    implementation: ClassVar[str] = "diffattr.coalitions.leverage:LeverageSampler"
    paired_rows: ClassVar[bool] = True
    balanced: bool = True


class DatamodelSamplerSettings(SamplerSettings):
    """Uniform subsets keeping ``floor(alpha n)`` players (Ilyas et al. 2022)."""

    name: Literal["datamodel"] = "datamodel"
    implementation: ClassVar[str] = "diffattr.coalitions.datamodel:DatamodelSampler"
    alpha: float = Field(0.5, gt=0.0, lt=1.0, description="fraction of players kept")
    replace: bool = Field(False, description="i.i.d. draws (may repeat) instead of distinct")


class UniformSamplerSettings(SamplerSettings):
    """Each player kept independently with probability ``p`` (Wang & Jia 2023)."""

    name: Literal["uniform"] = "uniform"
    implementation: ClassVar[str] = "diffattr.coalitions.banzhaf:UniformSampler"
    p: float = Field(0.5, gt=0.0, lt=1.0, description="probability of keeping a player")
    replace: bool = Field(
        False, description="i.i.d. draws (may repeat) instead of distinct ones (p = 0.5 only)"
    )


class LeaveOneOutSamplerSettings(SamplerSettings):
    """The ``n`` leave-one-out coalitions."""

    name: Literal["loo"] = "loo"
    implementation: ClassVar[str] = "diffattr.coalitions.loo:LeaveOneOutSampler"


class AddOneInSamplerSettings(SamplerSettings):
    """The ``n`` single-player coalitions."""

    name: Literal["add-one-in"] = "add-one-in"
    implementation: ClassVar[str] = "diffattr.coalitions.add_one_in:AddOneInSampler"


class PermutationSamplerSettings(SamplerSettings):
    """Prefix chains of random permutations (Castro et al. 2009)."""

    name: Literal["permutation"] = "permutation"
    implementation: ClassVar[str] = "diffattr.coalitions.permutation:PermutationSampler"


SAMPLERS.register(ShapleyKernelSamplerSettings)
SAMPLERS.register(LeverageSamplerSettings)
SAMPLERS.register(DatamodelSamplerSettings)
SAMPLERS.register(UniformSamplerSettings, aliases=("banzhaf",))
SAMPLERS.register(LeaveOneOutSamplerSettings)
SAMPLERS.register(AddOneInSamplerSettings, aliases=("aoi",))
SAMPLERS.register(PermutationSamplerSettings)


def parse_sampler(value: Any) -> SamplerSettings:
    """A sampler name, table or settings object -> settings, for use inside a validator.

    Errors are plain ``ValueError``s without a location prefix, or a pydantic
    ``ValidationError`` whose locations are relative to the sampler table, so that pydantic
    reports them under the field that holds the sampler (``estimators[0].sampler.p``).
    """
    if isinstance(value, SamplerSettings):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        raise ValueError(f"expected a coalition sampler name or a table with 'name', got {value!r}")
    if "name" not in value:
        raise ValueError(f"missing 'name'; choose one of: {', '.join(SAMPLERS.names())}")
    try:
        cls = SAMPLERS.get(str(value["name"]))
    except DiffattrError as e:
        raise ValueError(str(e)) from None
    data = dict(value, name=cls.model_fields["name"].default)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(cls.model_fields))
            raise ValueError(
                f"unknown setting {str(err['loc'][-1])!r} for sampler {data['name']!r}; "
                f"known: {known}"
            ) from None
        raise


def make_sampler(name: str, n_players: int, seed: int = 0, **settings: Any) -> CoalitionSampler:
    """``SAMPLERS.parse({"name": name, **settings}).build(n_players, seed)``.

    Unknown names or settings are one-line ``DiffattrError`` messages.
    """
    return SAMPLERS.parse({"name": name, **settings}, where=f"sampler {name!r}").build(
        n_players, seed
    )
