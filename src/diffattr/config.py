"""Configuration as pydantic models: a config is the constructor arguments of a run.

Every section round-trips to TOML (``RunConfig.from_toml`` / ``to_toml``); ``diffattr init``
writes a commented default. Paths come from the config, CLI flags or ``DIFFATTR_HOME``
(default ``./runs``), never from constants.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from diffattr.errors import DiffattrError

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "folder")


def home() -> Path:
    """Root for runs and caches: ``$DIFFATTR_HOME`` or ``./runs``."""
    return Path(os.environ.get("DIFFATTR_HOME", "runs"))


def cache_dir() -> Path:
    return home() / "cache"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    dataset: str = Field(
        "digits", description="digits | fashion-mnist | cifar10 | cifar100 | folder"
    )
    path: str | None = Field(
        None,
        description="local data: Fashion-MNIST IDX dir, CIFAR pickle dir, image folder or CSV",
    )
    image_size: int | None = Field(None, description="resize images to this square size")
    classes: list[int] | None = Field(
        None, description="keep only these class ids (relabelled 0..k-1)"
    )
    subset: str | None = Field(None, description="named subset, e.g. 'cifar20' for cifar100")
    limit_per_class: int | None = Field(None, description="cap images per class (fashion-mnist)")
    players: Literal["sample", "contributor"] = Field(
        "contributor",
        description="unit of credit: each image, or each contributor (class/folder/CSV)",
    )

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of: {', '.join(DATASETS)}")
        return v


class ModelConfig(Section):
    preset: str = Field("tiny", description="tiny | small | ddpm-cifar")
    seed: int = Field(0, description="initialisation seed (also the null model's)")


class TrainConfig(Section):
    steps: int = Field(4000, ge=1, description="optimisation steps")
    batch_size: int = Field(
        128,
        ge=1,
        description="images per step (digits, IS: 128 x 4,000 steps 8.0; 64 x 3,000 steps 7.0)",
    )
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clipping")
    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="EMA max decay; warm-up min(decay, (1+s)/(10+s))"
    )
    hflip: bool = Field(False, description="random horizontal flips (off for digits)")
    seed: int = Field(0, description="seed of batches, timesteps and noise")
    checkpoint_every: int = Field(1000, ge=1, description="steps between resumable checkpoints")


class SampleConfig(Section):
    num_samples: int = Field(1000, ge=1, description="images generated per model")
    ddim_steps: int = Field(100, ge=1, description="DDIM steps (eta = 0)")
    batch_size: int = Field(500, ge=1)
    seed: int = Field(0, description="sample i always starts from the noise of (seed, i)")


class AttributionConfig(Section):
    full_model: str | None = Field(
        None, description="existing full-model directory to attribute (default: train one)"
    )
    method: str = Field("sft", description="counterfactual method: sft | retrain | ft | ga | lora")
    method_settings: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="settings per counterfactual method, e.g. { sft = { steps = 200 } }",
    )

    def settings_for(self, method: str | None = None) -> dict[str, Any]:
        """The settings of ``method`` (default: the configured one); {} if none are given."""
        return dict(self.method_settings.get(method or self.method, {}))

    estimators: list[str] = Field(
        default_factory=lambda: ["shapley"],
        description="shapley | permutation-shapley | banzhaf | banzhaf-msr | datamodel | loo | aoi",
    )
    subsets: int = Field(48, ge=1, description="coalitions drawn from each estimator's sampler (M)")
    seed: int = Field(0, description="seed of the coalition samplers and the jobs")


class BehaviorConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["fid", "is"],
        description="global behaviors F, measured in the offline classifier's feature space",
    )


class ExecutorConfig(Section):
    name: str = Field("inline", description="inline | process | ray")
    workers: int = Field(2, ge=1, description="parallel jobs (process executor)")
    ray_address: str | None = Field(None, description="join this Ray cluster (default: local)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per job (ray)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per job, fractional allowed (ray)")


class RunConfig(Section):
    """The whole configuration of a run; each section is one stage's arguments."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
    behaviors: BehaviorConfig = Field(default_factory=BehaviorConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps")

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise DiffattrError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise DiffattrError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise DiffattrError(f"{source}: {loc}: {err['msg']}") from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def commented_toml(self) -> str:
        """TOML with each field's description as a comment; unset optional fields commented out."""
        lines = ["# diffattr configuration (diffattr init). Every key is optional.", ""]
        top = {k: v for k, v in type(self).model_fields.items() if not _is_section(v.annotation)}
        for name, field in top.items():
            lines += _field_lines(name, field, getattr(self, name))
        for name in type(self).model_fields:
            if name in top:
                continue
            section = getattr(self, name)
            lines += ["", f"[{name}]"]
            for fname, f in type(section).model_fields.items():
                lines += _field_lines(fname, f, getattr(section, fname))
        return "\n".join(lines) + "\n"

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """Return a copy with dotted keys replaced, e.g. ``{"data.dataset": "digits"}``."""
        data = self.model_dump(mode="json")
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return type(self).from_dict(data, source="override")


def _inline(value: Any) -> str:
    """A TOML value on one line (tables inline), so it stays inside its section."""
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_inline(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return tomli_w.dumps({"x": value})[4:].strip()


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


def _field_lines(name: str, field: Any, value: Any) -> list[str]:
    out = []
    if field.description:
        out.append(f"# {field.description}")
    if value is None:
        out.append(f"# {name} =")
    else:
        dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        out.append(f"{name} = {_inline(dumped)}")
    return out
