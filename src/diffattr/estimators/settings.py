"""Typed settings of the attribution estimators (the ``[[estimators]]`` tables of a run).

Each estimator owns a settings class registered in ``ESTIMATORS`` by its name; the class
names the code that fits it (``implementation``) and ``build()`` returns that estimator.
Coalition estimators (Shapley, Banzhaf, datamodels, LOO, AOI) derive from
:class:`CoalitionEstimatorSettings`: they carry the settings of the coalition sampler whose
rows they need (``sampler``, validated against the class variable ``samplers``), an
optional ``subsets`` (the number of coalitions ``M`` for this estimator, overriding the
run's), and the bootstrap options. Baselines that score the trained model directly
(TRAK-type, similarity, heuristics) are a kind of their own, registered in
``diffattr.baselines.settings.BASELINES``; a run's ``[attribution] estimators`` list may
name either kind.

A run plan names an estimator by a string or a table::

    [[estimators]]
    name = "shapley"
    sampler = "leverage"          # or { name = "shapley-kernel", paired = true }
    subsets = 64

Registry names: ``shapley`` (KernelSHAP), ``shapley-cv`` (KernelSHAP with size control
variates), ``tree-shapley`` (a tree surrogate's Shapley values), ``permutation-shapley``,
``banzhaf``, ``banzhaf-msr``, ``datamodel``, ``loo``, ``aoi``.

What a run does with an estimator's settings ``s`` (``n`` players, the run's ``M`` and
seed)::

    masks, pair_ids = s.draw(n, M, seed, where="estimators[0]")  # refuses an M that
    #   cannot identify the values (one line, before any training): s.check_rows
    ...evaluate the masks; drop failed jobs and rows equal to test masks...
    table = CoalitionTable(masks[kept], values, names, behaviors, v0, v1, pair_ids[kept])
    attributions = s.build().fit(table)   # one Attribution per behavior

(``pair_ids`` is None for unpaired samplers; ``s.rows_for(M, n)`` is the number of rows,
``s.build().min_rows(n)`` the smallest that can identify the values.)

This module imports only pydantic and the other settings modules: a run plan is validated
without numpy work or torch.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator

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
    parse_sampler,
)
from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry


class EstimatorSettings(Component):
    """Settings every estimator shares: each fits a table of evaluated coalitions."""

    kind: ClassVar[str] = "estimator"

    def build(self) -> Any:
        """The estimator object these settings describe (``implementation(settings)``)."""
        return self.implementation_class()(self)


ESTIMATORS: ComponentRegistry[EstimatorSettings] = ComponentRegistry("estimator", EstimatorSettings)


class CoalitionEstimatorSettings(EstimatorSettings):
    """An estimator fitted on a table of evaluated coalitions drawn by ``sampler``.

    * ``sampler``: the coalition sampler whose rows the estimator reads (one of the class
      variable ``samplers``; default: the one it was designed for);
    * ``subsets``: the number of coalitions ``M`` to evaluate for this estimator (None:
      the run's); ignored by samplers with a fixed design (LOO, AOI: ``n`` rows);
    * ``n_bootstrap``: bootstrap resamples for standard errors (0: the estimator's closed
      form); ``seed``: the bootstrap's seed.
    """

    samplers: ClassVar[tuple[str, ...]] = ()
    default_sampler: ClassVar[type[SamplerSettings]] = SamplerSettings

    sampler: SerializeAsAny[SamplerSettings] = Field(
        default=None, validate_default=True, description="coalition sampler of the rows"
    )
    subsets: int | None = Field(None, ge=1, description="coalitions M for this estimator")
    n_bootstrap: int = Field(0, ge=0, description="bootstrap resamples (0: closed form)")
    seed: int = Field(0, ge=0, description="seed of the bootstrap")

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler(cls, value: Any) -> SamplerSettings:
        if value is None:
            return cls.default_sampler()
        parsed = parse_sampler(value)
        if cls.samplers and parsed.name not in cls.samplers:
            name = cls.model_fields["name"].default
            raise ValueError(f"{name} needs {' or '.join(cls.samplers)} rows, got {parsed.name}")
        return parsed

    def build(self) -> Any:
        return self.implementation_class()(self)

    def rows_for(self, default_subsets: int, n_players: int) -> int:
        """The number of coalitions this estimator's sampler should draw: ``subsets`` (or
        the run's ``default_subsets``), or the fixed design size of LOO/AOI (``n``)."""
        if self.sampler.name in ("loo", "add-one-in"):
            return int(n_players)
        return int(self.subsets if self.subsets is not None else default_subsets)

    def check_rows(self, n_players: int, m: int, where: str | None = None) -> None:
        """Refuse, with a one-line ``DiffattrError``, ``m`` coalitions that cannot identify
        ``n_players`` values (fewer than ``build().min_rows(n_players)``)."""
        need = self.build().min_rows(n_players)
        if m < need:
            where = where or f"estimator {self.name!r}"
            raise DiffattrError(
                f"{where}: {m} coalitions cannot identify {self.name} values of "
                f"{n_players} players; it needs at least {need} (set subsets >= {need})"
            )

    def draw(
        self, n_players: int, default_subsets: int, seed: int, where: str | None = None
    ) -> tuple[Any, Any]:
        """The coalitions a run evaluates for this estimator: ``(masks (M, n) bool, pair
        ids (M,) or None)``, after :meth:`check_rows` (a one-line error if ``M`` cannot
        identify the values). Row ``r`` depends only on ``(seed, r)``; the pair ids go into
        ``CoalitionTable.pair_ids`` with the rows that were evaluated."""
        m = self.rows_for(default_subsets, n_players)
        self.check_rows(n_players, m, where)
        sampler = self.sampler.build(n_players, seed)
        masks = sampler.sample(m)
        return masks, sampler.pair_ids(list(range(masks.shape[0])))


class ShapleySettings(CoalitionEstimatorSettings):
    """KernelSHAP closed form (Covert & Lee 2021, eq. 7; paper Eq. 5), weighted for the
    sampler: ``shapley-kernel`` rows weigh 1 each, ``leverage`` rows are post-stratified
    (Musco & Witter 2025).

    * ``paired``: ``"auto"`` (pairs from the table's ``pair_ids``, else from consecutive
      complementary rows when they make up at least 3/4 of the table), ``true`` (require
      pairs; a row whose partner is missing is dropped), ``false`` (independent rows);
    * ``endpoints``: ``"fitted"`` (an endpoint control variate: the regression's own
      intercept and total, then the same constant added to every value so that they sum
      to ``v1 - v0``; exact in the limit, robust to a null model far off the coalitions'
      trend) or ``"given"`` (the true ``v0``, ``v1`` in the constraint: Covert & Lee's
      eq. 7, the paper's); see ``diffattr.estimators.kernel_shap``;
    * ``stderr``: closed-form sandwich standard errors (False: NaN, cheaper for huge n);
    * ``use_exact``: a table holding every coalition gives exact values;
    * ``chunk_rows``: rows per BLAS block.
    """

    name: Literal["shapley"] = "shapley"
    implementation: ClassVar[str] = "diffattr.estimators.kernel_shap:KernelShap"
    samplers: ClassVar[tuple[str, ...]] = ("shapley-kernel", "leverage")
    default_sampler: ClassVar[type[SamplerSettings]] = ShapleyKernelSamplerSettings

    endpoints: Literal["fitted", "given"] = "fitted"
    paired: bool | Literal["auto"] = "auto"
    stderr: bool = True
    use_exact: bool = True
    chunk_rows: int = Field(4096, ge=2)

    @field_validator("paired", mode="before")
    @classmethod
    def _paired(cls, value: Any) -> bool | str:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f"must be true, false or 'auto', got {value!r}")


class ShapleyCVSettings(ShapleySettings):
    """KernelSHAP with size control variates (``diffattr.estimators.shapley_cv``); its
    default sampler is ``leverage`` (the most accurate pair in BENCHMARKS.md).

    ``size_terms``: the most control variates ``b_p(|S|)`` of each parity (odd ones for
    paired rows, odd and even for unpaired rows); how many are used is chosen by
    leave-one-out cross-validation, 0 giving plain KernelSHAP.
    """

    name: Literal["shapley-cv"] = "shapley-cv"  # type: ignore[assignment]
    implementation: ClassVar[str] = "diffattr.estimators.shapley_cv:ShapleyCV"
    default_sampler: ClassVar[type[SamplerSettings]] = LeverageSamplerSettings

    size_terms: int = Field(3, ge=0, le=4)


class TreeShapleySettings(CoalitionEstimatorSettings):
    """Shapley values of a gradient-boosted-tree surrogate of the coalition table
    (SurrogateSHAP, Lu et al. 2026; ``diffattr.estimators.tree_shapley``): xgboost trees
    fitted to the rows plus the empty and full coalitions, interventional TreeSHAP against
    the all-absent background (shap), pairwise interaction values, efficiency restored
    to ``v1 - v0``, a bootstrap standard error. Needs ``pip install 'diffattr[tree]'``.

    * ``n_estimators``, ``max_depth``, ``learning_rate``, ``subsample``, ``reg_alpha``,
      ``reg_lambda``, ``min_child_weight``: the trees (defaults: the research code's);
    * ``n_bootstrap``: refits for the standard error (0: NaN); ``seed``: trees and
      bootstrap;
    * ``endpoints``: ``"given"`` (the empty and full coalitions are rows of the trees'
      training set, with ``v0`` and ``v1``: the research code's) or ``"fitted"`` (they are
      not; the trees extrapolate to them and the values are shifted to ``v1 - v0``, as for
      ``shapley``: an off-trend null model is not handed to the players the trees split on);
    * ``interactions``: compute pairwise interaction values (for at most
      ``interactions_max_players`` players), stored in the attribution's settings;
    * ``use_exact``: a table holding every coalition gives exact values.
    """

    name: Literal["tree-shapley"] = "tree-shapley"
    implementation: ClassVar[str] = "diffattr.estimators.tree_shapley:TreeShapley"
    samplers: ClassVar[tuple[str, ...]] = ("uniform", "shapley-kernel", "leverage", "datamodel")
    default_sampler: ClassVar[type[SamplerSettings]] = UniformSamplerSettings

    endpoints: Literal["fitted", "given"] = "fitted"
    n_estimators: int = Field(900, ge=1)
    max_depth: int = Field(5, ge=1, le=16)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    subsample: float = Field(0.8, gt=0.0, le=1.0)
    reg_alpha: float = Field(0.0, ge=0.0)
    reg_lambda: float = Field(1.0, ge=0.0)
    min_child_weight: float = Field(1.0, ge=0.0)
    n_bootstrap: int = Field(30, ge=0, description="bootstrap refits (0: no standard error)")
    interactions: bool = True
    interactions_max_players: int = Field(64, ge=2)
    use_exact: bool = True


class PermutationShapleySettings(CoalitionEstimatorSettings):
    """Permutation-sampling Shapley values (Castro et al. 2009); ``use_exact``;
    ``endpoints`` as for ``shapley`` (``"fitted"``: the chains' marginals taken against the
    endpoints of the rows' trend, then the constant shift to ``v1 - v0``)."""

    name: Literal["permutation-shapley"] = "permutation-shapley"
    implementation: ClassVar[str] = "diffattr.estimators.permutation:PermutationShapley"
    samplers: ClassVar[tuple[str, ...]] = ("permutation",)
    default_sampler: ClassVar[type[SamplerSettings]] = PermutationSamplerSettings

    endpoints: Literal["fitted", "given"] = "fitted"
    use_exact: bool = True


class BanzhafSettings(CoalitionEstimatorSettings):
    """Banzhaf values by ±1/2-coded least squares (Wang & Jia 2023); ``stderr`` (HC1 sandwich;
    False: NaN, cheaper for huge n), ``use_exact``."""

    name: Literal["banzhaf"] = "banzhaf"
    implementation: ClassVar[str] = "diffattr.estimators.banzhaf:BanzhafRegression"
    samplers: ClassVar[tuple[str, ...]] = ("uniform",)
    default_sampler: ClassVar[type[SamplerSettings]] = UniformSamplerSettings

    stderr: bool = True
    use_exact: bool = True


class BanzhafMSRSettings(CoalitionEstimatorSettings):
    """Banzhaf values by maximum sample reuse (Wang & Jia 2023, Alg. 1); ``use_exact``."""

    name: Literal["banzhaf-msr"] = "banzhaf-msr"
    implementation: ClassVar[str] = "diffattr.estimators.banzhaf:BanzhafMSR"
    samplers: ClassVar[tuple[str, ...]] = ("uniform",)
    default_sampler: ClassVar[type[SamplerSettings]] = UniformSamplerSettings

    use_exact: bool = True


class DatamodelSettings(CoalitionEstimatorSettings):
    """Ridge datamodel (Ilyas et al. 2022; the paper's ``RidgeCV``, digest §3.6).

    ``ridge``: a fixed penalty (skips cross-validation); ``ridge_grid``: the penalties
    tried by efficient leave-one-out CV (default: a log grid scaled to the design).
    """

    name: Literal["datamodel"] = "datamodel"
    implementation: ClassVar[str] = "diffattr.estimators.datamodel:Datamodel"
    samplers: ClassVar[tuple[str, ...]] = ("datamodel", "uniform")
    default_sampler: ClassVar[type[SamplerSettings]] = DatamodelSamplerSettings

    ridge: float | None = Field(None, ge=0.0)
    ridge_grid: list[float] | None = Field(None, min_length=1)

    @field_validator("ridge_grid")
    @classmethod
    def _grid(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(not (x >= 0.0 and x < float("inf")) for x in value):
            raise ValueError(f"penalties must be finite numbers >= 0, got {value}")
        return value


class LeaveOneOutSettings(CoalitionEstimatorSettings):
    """``phi_i = v1 - v(N \\ {i})``."""

    name: Literal["loo"] = "loo"
    implementation: ClassVar[str] = "diffattr.estimators.loo:LeaveOneOut"
    samplers: ClassVar[tuple[str, ...]] = ("loo",)
    default_sampler: ClassVar[type[SamplerSettings]] = LeaveOneOutSamplerSettings


class AddOneInSettings(CoalitionEstimatorSettings):
    """``phi_i = v({i}) - v0``."""

    name: Literal["aoi"] = "aoi"
    implementation: ClassVar[str] = "diffattr.estimators.loo:AddOneIn"
    samplers: ClassVar[tuple[str, ...]] = ("add-one-in",)
    default_sampler: ClassVar[type[SamplerSettings]] = AddOneInSamplerSettings


for _cls in (
    ShapleySettings,
    ShapleyCVSettings,
    TreeShapleySettings,
    PermutationShapleySettings,
    BanzhafSettings,
    BanzhafMSRSettings,
    DatamodelSettings,
    LeaveOneOutSettings,
    AddOneInSettings,
):
    ESTIMATORS.register(_cls)
del _cls


def estimator_settings(name: str, **options: Any) -> EstimatorSettings:
    """``ESTIMATORS.parse({"name": name, **options})`` with errors prefixed by the name."""
    return ESTIMATORS.parse({"name": name, **options}, where=f"estimator {name!r}")


__all__ = [
    "ESTIMATORS",
    "SAMPLERS",
    "AddOneInSettings",
    "BanzhafMSRSettings",
    "BanzhafSettings",
    "CoalitionEstimatorSettings",
    "DatamodelSettings",
    "EstimatorSettings",
    "LeaveOneOutSettings",
    "PermutationShapleySettings",
    "ShapleyCVSettings",
    "ShapleySettings",
    "TreeShapleySettings",
    "estimator_settings",
]
