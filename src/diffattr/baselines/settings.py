"""Typed settings of the baselines the method is judged against (pydantic only, no torch).

Baselines are their own kind, registered explicitly in :data:`BASELINES` (not among the
coalition estimators of :data:`diffattr.estimators.settings.ESTIMATORS`): they score the
full model (or its training data) directly and need no table of evaluated coalitions.
``settings.build()`` is the :class:`diffattr.baselines.api.Baseline` that runs them. A run's
``[attribution] estimators`` list takes names of both kinds
(:func:`diffattr.config.parse_attribution_entry`).

Registry names (aliases in brackets):

========================== ==========================================================
``trak``                   TRAK on the diffusion loss (Park et al. 2023; as adapted to
                           diffusion by Georgiev et al. 2023 and Zheng et al. 2024)
``d-trak`` [dtrak]         D-TRAK: output = mean squared norm of the predicted noise
``journey-trak`` [journey] Journey-TRAK: generated gradients along the DDIM trajectory
``relative-influence``     TRAK score / ||K^-1 phi_train|| (Barshan et al. 2020)
``renormalized-influence`` TRAK score / ||phi_train|| (Hammoudeh & Lowd 2022)
``gradient-similarity``    cosine of projected gradients [grad-sim]
``pixel-similarity``       cosine of flattened images [pixel]
``feature-similarity``     cosine of features (``space``: cnn, inception, clip:<dir>)
``property-heuristic``     the behaviour measured on each player's own images [heuristic]
``das``                    Diffusion Attribution Score (Lin et al. 2025): the change of the
                           generated image's predicted noise when the image is left out
``ekfac-influence`` [ekfac] influence functions with EK-FAC curvature (Mlodozeniec et al.
                           2025; kronfluence, the ``ekfac`` extra)
========================== ==========================================================

Sign convention: a larger value means the player is more responsible for the full model's
generated images (TRAK family: upweighting the player's images lowers the generated
images' loss / raises their output; similarities: its images look more like the generated
ones) or, for the heuristic, that its own images score higher on the behaviour. LDS then
expects the behaviour of a coalition to rise with the sum of its members' values; a
baseline whose values do not track the behaviour in that direction gets a negative LDS.
The one exception: a local behaviour that is a loss or a distance to the full model's
image (``mse``, ``nrmse``, ``denoising-loss``; per generated image or their mean) gets the
negated values, since keeping an image a generated image depends on lowers it
(``diffattr.baselines.api.orient_local``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry

Aggregation = Literal["sum", "mean", "max"]


class BaselineSettings(Component):
    """Settings shared by every baseline.

    ``aggregation``: how a player's per-image scores become its value: ``sum``, ``mean``
    or ``max`` over the player's training images (of the scores averaged over the
    generated images). ``aggregate_per_generated``: aggregate over the player's images
    for each generated image first and then average over generated images (the same for
    ``sum``/``mean``; for ``max`` it is the mean over generated images of the best match).
    """

    kind: ClassVar[str] = "baseline"
    implementation: ClassVar[str | None] = "diffattr.baselines.api:Baseline"
    #: ``gradient``, ``similarity`` or ``heuristic`` (what inputs the baseline needs).
    family: ClassVar[str] = ""
    #: ``"module:function"`` computing the local scores of a baseline with its own module
    #: (``function(settings, target, cache_dir, progress) -> LocalScores``)
    local_implementation: ClassVar[str | None] = None

    aggregation: Aggregation = "mean"
    aggregate_per_generated: bool = False

    @property
    def label(self) -> str:
        """Name plus the aggregation, e.g. ``pixel-similarity[max]``: tells table rows apart."""
        return f"{self.name}[{self.aggregation}]"

    def build(self) -> Any:
        """The :class:`~diffattr.baselines.api.Baseline` these settings describe."""
        return self.implementation_class()(self)

    def family_problem(self, family: object) -> str | None:
        """Why this baseline cannot score models of ``family`` (its settings), or None."""
        return None

    def check_available(self) -> None:
        """A one-line error when an optional package the baseline needs is missing."""


class GradientSettings(BaselineSettings):
    """TRAK-type baselines: projected per-example gradients of the full model.

    ``timesteps``: number of fixed timesteps ``t_k = k * T // timesteps`` (D-TRAK's
    uniform scheme) at which the output is differentiated, each with a fixed noise
    (seeded by ``seed``): with ``shared_noise`` the same noise for every training and
    generated example (common random numbers, as D-TRAK's per-timestep reseeding), else
    one per example (seeded by its index and role); the feature of an example is the
    gradient averaged over its probes. ``projection_dim``: dimension of the
    random (Gaussian, JL) projection of the gradients (traker's projectors; ``projector``
    ``auto`` = ``cuda`` on a GPU with fast_jl, else ``basic``; ``none`` keeps the full
    gradient — tiny models only). ``buffer_mb``: gradients gathered before each projection
    call (larger = fewer regenerations of the random matrix; on a GPU with a 35 M-parameter
    model give it several GB). ``regularization``: lambda of the kernel
    ``(Phi^T Phi + lambda I)^-1`` (0.5 as in the paper's code). ``batch_size``: probes
    (example x timestep) differentiated per call; ``per_example``: ``vmap``
    (``torch.func``), ``loop`` (one backward pass per example) or ``auto`` (vmap, falling
    back to the loop when vmap fails on the model).
    """

    family: ClassVar[str] = "gradient"
    #: Output function of the training (and, except Journey-TRAK, generated) examples.
    output_function: ClassVar[str] = "loss"
    #: How features become scores: ``trak``, ``relative``, ``renormalized`` or ``cosine``.
    score: ClassVar[str] = "trak"

    aggregation: Aggregation = "sum"
    projection_dim: int = Field(default=1024, gt=0)
    timesteps: int = Field(default=10, gt=0)
    seed: int = Field(default=0, ge=0)
    shared_noise: bool = True
    regularization: float = Field(default=0.5, ge=0.0)
    projector: Literal["auto", "basic", "cuda", "none"] = "auto"
    buffer_mb: int = Field(default=1024, gt=0)
    batch_size: int = Field(default=32, gt=0)
    per_example: Literal["auto", "vmap", "loop"] = "auto"

    @property
    def train_output(self) -> str:
        return self.output_function

    @property
    def gen_output(self) -> str:
        return self.output_function


class TrakSettings(GradientSettings):
    """TRAK: loss gradients of training and generated images; score phi_g K^-1 phi_i."""

    name: Literal["trak"] = "trak"


class DTrakSettings(GradientSettings):
    """D-TRAK: the output is the mean squared norm of the predicted noise (both sides)."""

    name: Literal["d-trak"] = "d-trak"
    output_function: ClassVar[str] = "squared-norm"


class JourneyTrakSettings(GradientSettings):
    """Journey-TRAK: a generated image's gradient is averaged over ``journey_points``
    evenly spaced steps of its own DDIM trajectory, each at the step's ``x_t`` and ``t``;
    ``journey_output`` ``loss`` = squared error to the noise that takes the final sample to
    that ``x_t``, ``squared-norm`` = D-TRAK's output. Training features are TRAK's."""

    name: Literal["journey-trak"] = "journey-trak"
    journey_points: int = Field(default=10, gt=0)
    journey_output: Literal["loss", "squared-norm"] = "loss"

    @property
    def gen_output(self) -> str:
        return self.journey_output


class _ChosenOutput(GradientSettings):
    output: Literal["loss", "squared-norm"] = "loss"

    @property
    def train_output(self) -> str:
        return self.output

    @property
    def gen_output(self) -> str:
        return self.output


class RelativeInfluenceSettings(_ChosenOutput):
    """Relative influence (Barshan et al. 2020): TRAK score / ||K^-1 phi_train||."""

    name: Literal["relative-influence"] = "relative-influence"
    score: ClassVar[str] = "relative"


class RenormalizedInfluenceSettings(_ChosenOutput):
    """Renormalized influence (Hammoudeh & Lowd 2022): TRAK score / ||phi_train||."""

    name: Literal["renormalized-influence"] = "renormalized-influence"
    score: ClassVar[str] = "renormalized"


class GradientSimilaritySettings(_ChosenOutput):
    """Cosine similarity of projected gradients (no kernel; ``regularization`` unused)."""

    name: Literal["gradient-similarity"] = "gradient-similarity"
    score: ClassVar[str] = "cosine"
    aggregation: Aggregation = "mean"


class PixelSimilaritySettings(BaselineSettings):
    """Cosine similarity of the flattened images in [-1, 1] (pixel space, not latents)."""

    name: Literal["pixel-similarity"] = "pixel-similarity"
    family: ClassVar[str] = "similarity"


class FeatureSimilaritySettings(BaselineSettings):
    """Cosine similarity in a feature space. ``space`` names it (``cnn``, ``inception``:
    the package's offline extractors, passed in by the caller as ``features``;
    ``clip:<local model directory>``: a local CLIP image encoder loaded here)."""

    name: Literal["feature-similarity"] = "feature-similarity"
    family: ClassVar[str] = "similarity"
    space: str = Field(default="cnn", min_length=1)
    batch_size: int = Field(default=256, gt=0)


class PropertyHeuristicSettings(BaselineSettings):
    """The behaviour measured on each player's own training images.

    A player's images (in index order) are cut into consecutive chunks of ``chunk_size``
    images (the last one may be smaller; ``0`` = all of them in one chunk); the behaviour
    is measured on each chunk as if it were a set of generated images, and
    ``aggregation`` takes the ``mean`` ("avg"), ``max`` or ``sum`` over the chunks. With
    ``chunk_size = 1`` this is the paper's per-image heuristic (e.g. avg/max aesthetic
    score of an artist's paintings); with ``0`` it is the behaviour of the player's data
    as a whole (avg = max).
    """

    name: Literal["property-heuristic"] = "property-heuristic"
    family: ClassVar[str] = "heuristic"
    chunk_size: int = Field(default=1, ge=0)


def _layer_patterns(v: list[str] | None) -> list[str] | None:
    if v is not None and (not v or any(not p.strip() for p in v)):
        raise ValueError("give layer name patterns (fnmatch), or leave layers unset for all")
    return v


class DASSettings(GradientSettings):
    """DAS, the Diffusion Attribution Score (Lin, Tao, Dong & Xu, ICLR 2025): how much the
    full model's predicted noise for a generated image changes when a training image is
    left out, through the model's linearisation and one Newton step of the least-squares
    training objective. With ``Phi`` the projected gradients of the training images'
    predicted noise (its mean over pixels, DAS's scalar output, averaged over the
    ``timesteps`` probes), ``psi_g`` the generated image's and ``r_i`` training image i's
    residual (root mean squared error of its predicted noise over the same probes)::

        DAS(g, i) = psi_g (Phi^T Phi + lambda I)^-1 phi_i r_i  [ / (1 - h_i) ]

    ``regularization`` is the damping lambda; ``leverage`` divides by ``1 - h_i``,
    ``h_i = phi_i (Phi^T Phi + lambda I)^-1 phi_i`` (the exact leave-one-out step of a
    linear least-squares fit; the public code's default leaves it out). ``layers``: fnmatch
    patterns of the parameter names to differentiate (default: every trainable parameter;
    the text-to-image family's LoRA adapters)."""

    name: Literal["das"] = "das"
    local_implementation: ClassVar[str | None] = "diffattr.baselines.das:das_local"
    output_function: ClassVar[str] = "mean"
    score: ClassVar[str] = "das"
    leverage: bool = False
    layers: list[str] | None = None

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[str] | None) -> list[str] | None:
        return _layer_patterns(v)


class EKFACSettings(BaselineSettings):
    """Influence functions with Kronecker-factored curvature (Mlodozeniec, Eschenhagen, Bae,
    Immer, Krueger & Turner, ICLR 2025; Grosse et al. 2023), computed by ``kronfluence``
    (``pip install 'diffattr[ekfac]'``). The curvature is the generalised Gauss-Newton of
    the diffusion training loss over the training images' probes (``timesteps`` fixed
    timesteps, each with a fixed noise), approximated per layer by Kronecker factors with
    eigenvalue correction (``strategy = "ekfac"``) or without (``"kfac"``); the score of a
    training image for a generated one is ``grad f_g^T (G + damping I)^-1 grad L_i`` with
    ``f_g`` the generated image's loss over the same probes (positive: upweighting the
    image lowers that loss). ``damping``: None = kronfluence's 0.1 x mean eigenvalue.
    ``layers``: fnmatch patterns of the ``nn.Linear`` / ``nn.Conv2d`` module names to
    track (default: all). The factors are fitted once per model, data and these settings
    and kept in the run's cache."""

    name: Literal["ekfac-influence"] = "ekfac-influence"
    local_implementation: ClassVar[str | None] = "diffattr.baselines.ekfac:ekfac_local"
    family: ClassVar[str] = "gradient"
    aggregation: Aggregation = "sum"
    strategy: Literal["ekfac", "kfac"] = "ekfac"
    timesteps: int = Field(default=10, gt=0)
    seed: int = Field(default=0, ge=0)
    shared_noise: bool = True
    damping: float | None = Field(default=None, gt=0.0)
    layers: list[str] | None = None
    batch_size: int = Field(default=32, gt=0)
    query_gb: float = Field(
        default=2.0,
        gt=0.0,
        description="memory (GiB) for the preconditioned gradients of generated probes held "
        "at once: kronfluence passes over all training probes once per that many (more: "
        "fewer passes; the scores do not change)",
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[str] | None) -> list[str] | None:
        return _layer_patterns(v)

    def family_problem(self, family: object) -> str | None:
        """Why this baseline cannot score ``family``'s models (checked with the config)."""
        if getattr(family, "name", None) == "text-to-image":
            return (
                "ekfac-influence tracks nn.Linear / nn.Conv2d layers (kronfluence), and the "
                "text-to-image family applies its LoRA as plain matrices; use das, trak or "
                "d-trak for it"
            )
        return None

    @staticmethod
    def check_available() -> None:
        """A one-line error when kronfluence is not installed."""
        import importlib.util

        if importlib.util.find_spec("kronfluence") is None:
            raise DiffattrError(EKFAC_EXTRA)


EKFAC_EXTRA = (
    "ekfac-influence needs kronfluence: pip install 'diffattr[ekfac]' (with a CPU build of "
    "torch: pip install einops einconv opt-einsum && pip install --no-deps kronfluence)"
)

BASELINES: ComponentRegistry[BaselineSettings] = ComponentRegistry("baseline", BaselineSettings)
for _cls, _aliases in (
    (TrakSettings, ()),
    (DTrakSettings, ("dtrak",)),
    (JourneyTrakSettings, ("journey",)),
    (RelativeInfluenceSettings, ()),
    (RenormalizedInfluenceSettings, ()),
    (GradientSimilaritySettings, ("grad-sim",)),
    (PixelSimilaritySettings, ("pixel",)),
    (FeatureSimilaritySettings, ()),
    (PropertyHeuristicSettings, ("heuristic",)),
    (DASSettings, ()),
    (EKFACSettings, ("ekfac",)),
):
    BASELINES.register(_cls, aliases=_aliases)
del _cls, _aliases


def parse_baseline(value: object, where: str = "baseline") -> BaselineSettings:
    """A name, table or settings object -> baseline settings; one-line error otherwise."""
    return BASELINES.parse(value, where)
