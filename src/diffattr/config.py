"""The run configuration: one typed settings object per registered thing, checked up front.

A ``RunConfig`` holds the settings of everything a run uses. Registered things are tagged
unions keyed by ``name`` (``[data]``, ``[family]``, ``[method]``, ``[[attribution.estimators]]``,
``[executor]``): the name picks the settings class, whose fields are then validated, so a
typo in a name or a key is a one-line error naming the key and the choices, before torch is
even imported. ``RunConfig`` round-trips to TOML (``from_toml`` / ``to_toml``) and
``diffattr init`` writes a commented default.

Where a run's settings come from (``build_config``): the run preset (``RUN_PRESETS``;
``default`` unless named), then the config file's keys, then command-line flags. Merging
is by key, except that a tagged table whose ``name`` changes is replaced, not merged: a
file that says ``[method] name = "ft"`` gets ft's defaults (plus ``[methods.ft]`` from the
layers below), never sft's keys.

Paths come from the config, CLI flags or ``DIFFATTR_HOME`` (default ``./runs``), never from
constants.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from diffattr.baselines.settings import BASELINES, BaselineSettings
from diffattr.behaviors.settings import BehaviorsSettings
from diffattr.counterfactual.settings import METHODS, MethodSettings, SFTSettings
from diffattr.data.settings import DATASETS, DataSettings, DigitsData
from diffattr.diffusion.settings import SampleConfig, TrainConfig
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import (
    ESTIMATORS,
    CoalitionEstimatorSettings,
    EstimatorSettings,
)
from diffattr.families.settings import FAMILIES, FamilySettings, UnconditionalSettings
from diffattr.runner.settings import EXECUTORS, ExecutorSettings, InlineSettings
from diffattr.settings import Component, ComponentRegistry, Settings, format_validation_error

__all__ = [
    "AttributionConfig",
    "RUN_PRESETS",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "build_config",
    "home",
]


def home() -> Path:
    """Root for runs and shared caches: ``$DIFFATTR_HOME`` or ``./runs``."""
    return Path(os.environ.get("DIFFATTR_HOME", "runs"))


def _parse_tagged(registry: ComponentRegistry, where: str):
    def parse(value: Any) -> Any:
        return registry.parse(value, where)

    return parse


class AttributionConfig(Settings):
    """Which model is attributed, with how many coalitions, by which estimators."""

    full_model: str | None = Field(
        None, description="existing full-model directory to attribute (default: train one)"
    )
    subsets: int = Field(48, ge=1, description="coalitions drawn from each estimator's sampler (M)")
    seed: int = Field(0, description="seed of the coalition samplers and the jobs")
    v1: Literal["full", "method"] = Field(
        "full",
        description="v1 = F(all players): the full model (full) or the method on all players",
    )
    until_stderr: float | dict[str, float] | None = Field(
        None,
        description="adaptive stopping: add coalitions in rounds until every player's "
        "standard error is below this (a number, or one per behavior name); needs max_subsets",
    )
    max_subsets: int | None = Field(
        None, ge=1, description="the most coalitions adaptive stopping may draw per estimator"
    )
    round_subsets: int | None = Field(
        None, ge=2, description="coalitions added per round (default: the initial subsets)"
    )
    local: Literal["per-image", "mean"] = Field(
        "per-image",
        description="local behaviors (ssim, mse, ...): one attribution per generated image "
        "(per-image; diffattr lds scores each image and averages) or one for their mean",
    )
    local_images: int | None = Field(
        None,
        ge=1,
        description="per-image: attribute the first this many generated images (default: all)",
    )
    estimators: list[SerializeAsAny[EstimatorSettings | BaselineSettings]] = Field(
        # shapley-cv: the most accurate Shapley estimator at the budgets runs use on the
        # recorded complete game (BENCHMARKS.md, "The recorded complete game")
        default_factory=lambda: [ESTIMATORS.parse("shapley-cv")],
        min_length=1,
        description=f"estimators: {' | '.join(ESTIMATORS.names())}, or baselines: "
        f"{' | '.join(BASELINES.names())} (a name or a table; default shapley-cv)",
    )

    @model_validator(mode="after")
    def _stopping(self) -> AttributionConfig:
        if self.until_stderr is not None:
            limits = (
                self.until_stderr.values()
                if isinstance(self.until_stderr, dict)
                else [self.until_stderr]
            )
            if any(not v > 0 for v in limits):
                raise ValueError("until_stderr must be positive")
            if self.max_subsets is None:
                raise ValueError("until_stderr needs max_subsets (the budget of coalitions)")
            if self.max_subsets < self.subsets:
                raise ValueError(
                    f"max_subsets ({self.max_subsets}) is below subsets ({self.subsets})"
                )
        return self

    @field_validator("estimators", mode="before")
    @classmethod
    def _estimators(cls, v: Any) -> Any:
        if isinstance(v, str | dict | EstimatorSettings):
            v = [v]
        if not isinstance(v, list | tuple):
            return v
        out = [parse_attribution_entry(x, f"estimators[{i}]") for i, x in enumerate(v)]
        names = [e.name for e in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DiffattrError(f"estimators: {', '.join(dup)} listed more than once")
        return out

    @property
    def fitted(self) -> list[CoalitionEstimatorSettings]:
        """The estimators fitted on tables of evaluated coalitions, in the listed order."""
        return fitted_estimators(self.estimators)

    @property
    def baselines(self) -> list[BaselineSettings]:
        """The baselines, which score the full model and need no coalitions."""
        return listed_baselines(self.estimators)

    def where(self, entry: EstimatorSettings | BaselineSettings) -> str:
        """``attribution.estimators[i]``: where ``entry`` is listed (for error messages)."""
        for i, e in enumerate(self.estimators):
            if e is entry or e == entry:
                return f"attribution.estimators[{i}]"
        return f"{entry.kind} {entry.name!r}"


def parse_attribution_entry(value: Any, where: str) -> EstimatorSettings | BaselineSettings:
    """One entry of ``[attribution] estimators``: a coalition estimator (``ESTIMATORS``) or a
    baseline (``BASELINES``), by name, table or settings; an unknown name is one line naming
    the choices of both kinds."""
    if isinstance(value, EstimatorSettings | BaselineSettings):
        return value
    name = value.get("name") if isinstance(value, dict) else value
    if isinstance(name, str) and name in BASELINES:
        return BASELINES.parse(value, where)
    if isinstance(name, str) and name not in ESTIMATORS:
        import difflib

        choices = [*ESTIMATORS.names(), *BASELINES.names()]
        hint = difflib.get_close_matches(name, choices, n=1)
        raise DiffattrError(
            f"{where}.name: unknown estimator {name!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; choose one of: {', '.join(ESTIMATORS.names())}, or a baseline: "
            + ", ".join(BASELINES.names())
        )
    return ESTIMATORS.parse(value, where)


def fitted_estimators(entries: list[Any]) -> list[CoalitionEstimatorSettings]:
    """The coalition estimators among ``entries`` (settings of either kind), in order."""
    return [e for e in entries if isinstance(e, CoalitionEstimatorSettings)]


def listed_baselines(entries: list[Any]) -> list[BaselineSettings]:
    """The baselines among ``entries`` (settings of either kind), in order."""
    return [e for e in entries if isinstance(e, BaselineSettings)]


class RunConfig(Settings):
    """The whole configuration of a run; each section is one stage's or thing's settings."""

    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps")
    data: SerializeAsAny[DataSettings] = Field(default_factory=DigitsData)
    family: SerializeAsAny[FamilySettings] = Field(default_factory=UnconditionalSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    method: SerializeAsAny[MethodSettings] = Field(default_factory=SFTSettings)
    methods: dict[str, SerializeAsAny[MethodSettings]] = Field(
        default_factory=dict,
        description="settings of other methods, used when an evaluation runs them (lds, curve)",
    )
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    behaviors: BehaviorsSettings = Field(default_factory=BehaviorsSettings)
    executor: SerializeAsAny[ExecutorSettings] = Field(default_factory=InlineSettings)

    _data = field_validator("data", mode="before")(_parse_tagged(DATASETS, "data"))
    _family = field_validator("family", mode="before")(_parse_tagged(FAMILIES, "family"))
    _method = field_validator("method", mode="before")(_parse_tagged(METHODS, "method"))
    _executor = field_validator("executor", mode="before")(_parse_tagged(EXECUTORS, "executor"))

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out = {}
        for name, settings in v.items():
            if isinstance(settings, dict):
                settings = {"name": name, **settings}
            parsed = METHODS.parse(settings, f"methods.{name}")
            if parsed.name != METHODS.canonical(name):
                raise DiffattrError(f"methods.{name}: holds settings of {parsed.name!r}")
            out[parsed.name] = parsed
        return out

    @model_validator(mode="after")
    def _one_place_per_method(self) -> RunConfig:
        if self.method.name in self.methods:
            raise DiffattrError(
                f"methods.{self.method.name}: the run's method is set in [method]; "
                f"remove [methods.{self.method.name}]"
            )
        return self

    @model_validator(mode="after")
    def _method_fits_family(self) -> RunConfig:
        problem = self.method.family_problem(self.family)
        if problem is not None:
            raise DiffattrError(problem)
        return self

    @model_validator(mode="after")
    def _estimators_fit_family(self) -> RunConfig:
        for b in self.attribution.baselines:  # baselines that need a model kind
            problem = b.family_problem(self.family)
            if problem is not None:
                raise DiffattrError(f"{self.attribution.where(b)}: {problem}")
        return self

    # ------------------------------------------------------------------ access

    def method_settings(self, name: str | None = None) -> MethodSettings:
        """Settings of method ``name`` (default: the run's): ``[method]`` if it is that
        method, else ``[methods.<name>]``, else its defaults."""
        if name is None or METHODS.canonical(name) == self.method.name:
            return self.method
        name = METHODS.canonical(name)
        return self.methods.get(name) or METHODS.parse(name, "method")

    def with_method(self, name: str) -> RunConfig:
        """This config with ``name`` as the run's method (its settings as above)."""
        chosen = self.method_settings(name)
        methods = {k: v for k, v in self.methods.items() if k != chosen.name}
        if self.method.name != chosen.name:
            methods[self.method.name] = self.method
        return self.model_copy(update={"method": chosen, "methods": methods})

    # ------------------------------------------------------------------ (de)serialisation

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(read_toml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise DiffattrError(f"{source}: {format_validation_error(e, '', cls)}") from None
        except DiffattrError as e:
            raise DiffattrError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A copy with dotted keys replaced, e.g. ``{"train.steps": 10}``; None is skipped.

        Tagged tables follow ``merge``: ``{"method": {"name": "ft"}}`` (or
        ``{"method.name": "ft"}``) switches the method to ft with its settings.
        """
        layer = dotted_to_nested({k: v for k, v in overrides.items() if v is not None})
        return type(self).from_dict(merge(self.to_dict(), layer), source="override")

    def commented_toml(self) -> str:
        """TOML with each field's description as a comment; unset optional fields and the
        choices of every tagged table shown as comments."""
        return _commented(self)


TAGGED = {
    "data": DATASETS,
    "family": FAMILIES,
    "method": METHODS,
    "executor": EXECUTORS,
}


# --------------------------------------------------------------------------- merging


def dotted_to_nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DiffattrError(f"{key}: {p} is not a table")
        node[leaf] = value
    return out


def _tag(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("name")
    return None


def merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``layer`` on top of ``base`` (both plain config dicts); returns a new dict.

    Tables merge key by key. A tagged table (``data``, ``family``, ``method``,
    ``executor``) whose new ``name`` differs from the base's is replaced; a method switched
    that way starts from ``[methods.<name>]`` of the base when there is one, and the
    previous method moves to ``[methods]``.
    """
    out = copy.deepcopy(base)
    for key, new in layer.items():
        old = out.get(key)
        if key in TAGGED and _tag(new) is not None:
            new_tbl = {"name": new} if isinstance(new, str) else dict(new)
            old_name = _tag(old)
            canonical = TAGGED[key].canonical(str(new_tbl["name"]))
            if old_name is not None and TAGGED[key].canonical(old_name) == canonical:
                out[key] = merge(old if isinstance(old, dict) else {}, new_tbl)
            elif key == "method":
                methods = dict(out.get("methods") or {})
                start = dict(methods.pop(canonical, {}) or {})
                if isinstance(old, dict) and old.get("name"):
                    methods[old["name"]] = {k: v for k, v in old.items() if k != "name"}
                out["methods"] = methods
                out[key] = merge(start, new_tbl)
            else:
                out[key] = new_tbl
        elif isinstance(new, dict) and isinstance(old, dict):
            out[key] = merge(old, new)
        else:
            out[key] = copy.deepcopy(new)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DiffattrError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DiffattrError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise DiffattrError(f"{path}: invalid TOML: {e}") from None


# --------------------------------------------------------------------------- presets

#: Run presets: plain config layers under a config file's keys.
RUN_PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default: digits, 10 class contributors, sFT, Shapley values (shapley-cv), FID
    # and IS; M = 64 (at 32, shapley-cv's values have no standard errors and rank the
    # classes far less like the exact values: BENCHMARKS.md, "The recorded complete game");
    # 500 images with 25 DDIM steps per model instead of the paper's 100 (its cost:
    # BENCHMARKS.md, "The main job"); sFT prunes half the channels (16 of the tiny UNet's
    # 32: a whole block of the CPU's convolution kernels), which halves a job's cost at the
    # same fidelity to retraining as pruning 0.3 (BENCHMARKS.md, "sFT on the default preset"),
    # and fine-tunes each coalition at 1.5x the full model's learning rate (0.003): IS
    # fidelity higher on all six fine-tune seeds tried, FID's +0.009 on the mean (two seeds
    # higher, four within 0.006), at the same cost ("The knobs around the preset").
    "default": {
        "sample": {"num_samples": 500, "ddim_steps": 25},
        "attribution": {"subsets": 64},
        "method": {"name": "sft", "finetune_steps": 500, "steps": 200, "ratio": 0.5, "lr": 3e-3},
        "methods": {"ft": {"steps": 200}, "lora": {"steps": 200}},
    },
    # A small version for first tries and tests (minutes on a CPU). sFT prunes half the
    # channels and fine-tunes k = 100 steps: against k = 50 at pruning 0.3 (until
    # 2026-12-07) the same cost per job and Pearson with retraining 0.89 / 0.91 (FID / IS)
    # instead of 0.74 / 0.84 (BENCHMARKS.md, "The quick preset").
    "quick": {
        "train": {"steps": 800, "batch_size": 64, "checkpoint_every": 400},
        "sample": {"num_samples": 256, "ddim_steps": 20, "batch_size": 256},
        "attribution": {"subsets": 32},
        "method": {"name": "sft", "finetune_steps": 200, "steps": 100, "ratio": 0.5},
        "methods": {"ft": {"steps": 50}, "lora": {"steps": 50}},
    },
    # Class-conditional demo (SurrogateSHAP's CIFAR-20 setting in miniature): digits, 10
    # class players, a class-conditional UNet with label dropout 0.1 and guidance 1.4, sFT
    # with k = 50 at pruning 0.5 (1.7x cheaper per job than pruning 0.3, no less faithful to
    # retraining: BENCHMARKS.md, "The quick preset"); `--method surrogate` on the same run is
    # the training-free counterfactual (the full model sampled with each coalition's labels).
    "conditional-quick": {
        "family": {"name": "conditional"},
        "train": {"steps": 800, "batch_size": 64, "checkpoint_every": 400},
        "sample": {"num_samples": 256, "ddim_steps": 20, "batch_size": 256},
        "attribution": {"subsets": 32},
        "method": {"name": "sft", "finetune_steps": 200, "steps": 50, "ratio": 0.5},
        "methods": {"ft": {"steps": 50}, "lora": {"steps": 50}},
    },
    # The paper's sampling protocol (1,000 images, 100 DDIM steps), M = 100, and sFT with
    # the research code's EMA handling (the all-data model's EMA carried into each
    # fine-tune; see FineTuneSettings for what that dilutes).
    "paper": {
        "sample": {"num_samples": 1000, "ddim_steps": 100},
        "attribution": {"subsets": 100},
        "method": {"name": "sft", "finetune_steps": 1000, "steps": 200, "ema": "carry"},
    },
    # The latent-diffusion demo (the paper's CelebA-HQ branch in miniature): Fashion-MNIST at
    # 16 px (200 images per class, 10 class contributors), the package's own AutoencoderKL
    # (4x4x4 latents, trained once and cached), a latent UNet with attention, sFT with
    # head-grouped pruning at 0.5, diversity entropy and FID in the offline classifier's
    # space (its cost: BENCHMARKS.md, "Latent diffusion").
    "latent-quick": {
        "data": {"name": "fashion-mnist", "image_size": 16, "limit_per_class": 200},
        "family": {"name": "latent", "autoencoder": "train", "architecture": "latent-tiny"},
        "train": {"steps": 1500, "batch_size": 64, "lr": 1e-3, "checkpoint_every": 500},
        "sample": {"num_samples": 256, "ddim_steps": 20, "batch_size": 256},
        "attribution": {"subsets": 24},
        "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 300, "steps": 100},
        "methods": {"ft": {"steps": 100}, "lora": {"steps": 100}},
        "behaviors": {"measure": ["diversity-entropy", "fid"]},
    },
    # A larger latent run (a GPU, or hours on a CPU): Fashion-MNIST at 32 px (600 per class),
    # 8x8x4 latents of a wider own autoencoder, the latent-small UNet, the paper's sampling
    # protocol for diversity (1,000 images) with 50 DDIM steps, M = 48.
    "latent": {
        "data": {"name": "fashion-mnist", "image_size": 32, "limit_per_class": 600},
        "family": {
            "name": "latent",
            "autoencoder": "train",
            "architecture": "latent-small",
            "ae_width": 32,
            "ae_steps": 3000,
            "ae_batch_size": 64,
        },
        "train": {"steps": 6000, "batch_size": 128, "lr": 5e-4, "checkpoint_every": 1000},
        "sample": {"num_samples": 1000, "ddim_steps": 50, "batch_size": 500},
        "attribution": {"subsets": 48},
        "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 1000, "steps": 300},
        "methods": {"ft": {"steps": 300}, "lora": {"steps": 300}},
        "behaviors": {"measure": ["diversity-entropy", "fid"]},
    },
    # Text-to-image: the embedded demo (a small Stable-Diffusion-style base the package
    # pretrains on Fashion-MNIST tops, trousers and bags; a LoRA on the attention projections
    # trained on the footwear of 20 artists, 4 of whom upload noisy images); v0 = the base
    # without LoRA. sFT prunes the LoRA to half its parameters (the paper's ArtBench
    # setting); FID and IS in the fashion-mnist-cnn space (its cost: BENCHMARKS.md,
    # "Text-to-image").
    "t2i-quick": {
        "data": {"name": "t2i-demo"},
        "family": {
            "name": "text-to-image",
            "rank": 8,
            "demo": {"vae_steps": 600, "unet_steps": 1200},
        },
        "train": {
            "steps": 400,
            "batch_size": 32,
            "lr": 5e-3,
            "ema_decay": 0.99,
            "checkpoint_every": 400,
        },
        "sample": {"num_samples": 128, "ddim_steps": 15, "batch_size": 128},
        "attribution": {"subsets": 40},
        "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 100, "steps": 50},
        "methods": {"ft": {"steps": 50}},
        "behaviors": {"features": "fashion-mnist-cnn"},
    },
    # The same demo at the default sizes: a better base and LoRA, more samples and subsets
    # (not yet timed: BENCHMARKS.md has the quick demo's cost).
    "t2i": {
        "data": {"name": "t2i-demo"},
        "family": {"name": "text-to-image", "rank": 8},
        "train": {
            "steps": 1000,
            "batch_size": 32,
            "lr": 5e-3,
            "ema_decay": 0.995,
            "checkpoint_every": 500,
        },
        "sample": {"num_samples": 256, "ddim_steps": 25, "batch_size": 256},
        "attribution": {"subsets": 64},
        "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 200, "steps": 100},
        "methods": {"ft": {"steps": 100}},
        "behaviors": {"features": "fashion-mnist-cnn"},
    },
}


# The prompt-level surrogate demo (issue 25): the same base and recipe, but six artists
# who each draw one class (pullover, dress, coat, sandal, sneaker, ankle boot; the last
# uploads noisy images), captioned "a photo of a <class>", so each artist's captions say
# what distinguishes them; every model is prompted with its own data's captions
# (generate_with = "captions"), so `--method surrogate` on the same run is the
# training-free game: the full LoRA prompted with each coalition's captions.
RUN_PRESETS["t2i-captions-quick"] = merge(
    copy.deepcopy(RUN_PRESETS["t2i-quick"]),
    {
        "data": {"caption": "class", "classes": [2, 3, 4, 5, 7, 9], "contributors": 6, "noisy": 1},
        "family": {"generate_with": "captions"},
        "attribution": {"subsets": 24},
    },
)


def preset_layer(preset: str) -> dict[str, Any]:
    if preset not in RUN_PRESETS:
        raise DiffattrError(
            f"unknown run preset {preset!r}; choose one of: {', '.join(RUN_PRESETS)}"
        )
    return copy.deepcopy(RUN_PRESETS[preset])


def build_config(
    config: str | Path | dict[str, Any] | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """A run's config: the preset (``default`` unless named), the config file's keys on
    top (a key the file sets wins over the preset), then ``overrides`` (dotted keys, e.g.
    from CLI flags; None values are skipped). Each layer is validated on its own first, so
    an error names the file or flag that caused it. ``config`` may also be the file's
    content as a dict (the Python API), named ``config`` in errors."""
    base = merge(RunConfig().to_dict(), preset_layer(preset or "default"))
    if config is not None:
        layer = copy.deepcopy(config) if isinstance(config, dict) else read_toml(config)
        source = "config" if isinstance(config, dict) else str(config)
        merged = merge(base, layer)
        RunConfig.from_dict(merged, source=source)
        base = merged
    if overrides:
        layer = dotted_to_nested({k: v for k, v in overrides.items() if v is not None})
        base = merge(base, layer)
        return RunConfig.from_dict(base, source="command line")
    source = "config" if isinstance(config, dict) else str(config) if config else "preset"
    return RunConfig.from_dict(base, source=source)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``--set key=value``: the value is read as TOML (``3``, ``0.5``, ``"x"``, ``[1, 2]``,
    ``true``), falling back to a plain string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DiffattrError(f"--set {text!r}: expected KEY=VALUE, e.g. method.steps=100")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


# --------------------------------------------------------------------------- commented TOML


def _inline(value: Any) -> str:
    """A TOML value on one line (tables inline), so it stays inside its section."""
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"x": value})[4:].strip()


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else tomli_w.dumps({k: 0})[:-5]


def _field_lines(name: str, field: Any, value: Any) -> list[str]:
    out = []
    if field.description:
        out.append(f"# {field.description}")
    if value is None:
        out.append(f"# {_key(name)} =")
    else:
        dumped = _plain(value)
        if isinstance(dumped, list) and dumped and all(isinstance(x, dict) for x in dumped):
            dumped = [_compact(x) for x in dumped]
        out.append(f"{_key(name)} = {_inline(dumped)}")
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Settings):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _compact(table: dict[str, Any]) -> Any:
    """A tagged table with only its name -> the bare name (``"shapley"``)."""
    return table["name"] if set(table) == {"name"} else table


def _section_lines(title: str, section: Settings, registry: ComponentRegistry | None) -> list[str]:
    lines = ["", f"[{title}]"]
    if isinstance(section, Component) and registry is not None:
        lines.append(f"# {registry.kind}: {' | '.join(registry.names())}")
        doc = (type(section).__doc__ or "").strip().splitlines()
        if doc:
            first = doc[0].removeprefix(f"``{section.name}``: ")
            lines.append(f"# {section.name}: {first}")
    for fname, f in type(section).model_fields.items():
        lines += _field_lines(fname, f, getattr(section, fname))
    if isinstance(section, Component) and registry is not None:
        for other in registry.names():
            if other == section.name:
                continue
            cls = registry.get(other)
            opts = {
                k: None if f.is_required() else f.get_default(call_default_factory=True)
                for k, f in cls.model_fields.items()
                if k != "name" and k not in type(section).model_fields
            }
            shown = ", ".join(
                f"{k} = {_inline(v)}" if v is not None else f"{k} = ..." for k, v in opts.items()
            )
            lines.append(f"# with name = {other!r}: {shown or 'no other settings'}")
    return lines


def _commented(cfg: RunConfig) -> str:
    lines = ["# diffattr configuration (diffattr init). Every key is optional.", ""]
    fields = type(cfg).model_fields
    lines += _field_lines("device", fields["device"], cfg.device)
    for name in fields:
        if name in ("device", "methods"):
            continue
        section = getattr(cfg, name)
        lines += _section_lines(name, section, TAGGED.get(name))
    lines += [
        "",
        "# [methods.<name>]: settings of other counterfactual methods, used when an",
        "# evaluation runs them beside the run's method (diffattr lds --method ft, curve)",
    ]
    for name, settings in cfg.methods.items():
        lines += ["", f"[methods.{_key(name)}]"]
        for fname, f in type(settings).model_fields.items():
            if fname != "name":
                lines += _field_lines(fname, f, getattr(settings, fname))
    return "\n".join(lines) + "\n"
