"""Global behaviours F of a set of generated images, measured against real images.

``BEHAVIORS`` names every global behaviour as the paper does; ``BehaviorSuite`` holds one
feature extractor and the real reference statistics and measures image sets against them;
``measure_images`` and ``measure_model`` are the entry points the pipeline calls (hundreds of
times per process: the extractor and the statistics are loaded once and kept in memory).

Output keys carry the feature space: ``fid[digits-cnn]``, ``is[digits-cnn]``, ...

Real reference statistics (``RealStats``) are computed from the dataset's training images
(or a given reference set) once per extractor and cached under
``cache_dir()/features/<extractor key>/real-<reference key>.*``: the Gaussian (mean,
covariance) for FID, a seeded subsample of at most ``manifold_size`` real features with their
k-NN radii for precision/recall (k = 3) and density/coverage (k = 5), and the k-means centres
for the cluster entropy.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.behaviors.diversity import class_entropy, cluster_entropy, fit_clusters
from diffattr.behaviors.features import (
    FeatureExtractor,
    atomic_save_tensors,
    atomic_write_text,
    dataset_identity,
    features_dir,
    get_extractor,
    stable_hash,
)
from diffattr.behaviors.fid import frechet_distance, gaussian_stats
from diffattr.behaviors.inception_score import inception_score
from diffattr.behaviors.precision_recall import density_coverage, knn_radii
from diffattr.behaviors.precision_recall import precision as _precision
from diffattr.behaviors.precision_recall import recall as _recall
from diffattr.data import dataset_key
from diffattr.data.settings import DataSettings as DataConfig
from diffattr.data.settings import DigitsData, parse_data
from diffattr.errors import DiffattrError
from diffattr.registry import Registry

STATS_VERSION = 1
# Canonical order of the global behaviours (tables and default output).
ORDER = (
    "fid",
    "is",
    "precision",
    "recall",
    "density",
    "coverage",
    "class-entropy",
    "cluster-entropy",
)


@dataclass(frozen=True)
class SuiteOptions:
    """Settings of the behaviours (all part of the real statistics' cache key).

    Attributes:
        pr_k: neighbourhood size of precision and recall (Kynkaanniemi et al. 2019: 3).
        dc_k: neighbourhood size of density and coverage (Naeem et al. 2020: 5).
        manifold_size: real points (seeded subsample) forming the real k-NN manifold.
        num_clusters: k-means clusters of the real features for the cluster entropy (20).
        is_splits: Inception Score splits (the paper: 1).
        seed: seed of the manifold subsample and of k-means.
    """

    pr_k: int = 3
    dc_k: int = 5
    manifold_size: int = 5000
    num_clusters: int = 20
    is_splits: int = 1
    seed: int = 0

    def stats_fields(self) -> dict[str, int]:
        return {
            "pr_k": self.pr_k,
            "dc_k": self.dc_k,
            "manifold_size": self.manifold_size,
            "num_clusters": self.num_clusters,
            "seed": self.seed,
        }


@dataclass
class RealStats:
    """Statistics of the real reference features that every behaviour compares against."""

    mu: np.ndarray
    sigma: np.ndarray
    manifold: np.ndarray
    radii_pr: np.ndarray
    radii_dc: np.ndarray
    centres: np.ndarray
    num_real: int
    info: dict[str, Any] = field(default_factory=dict)

    TENSORS = ("mu", "sigma", "manifold", "radii_pr", "radii_dc", "centres")

    @classmethod
    def compute(cls, features: np.ndarray, options: SuiteOptions, info=None) -> RealStats:
        feats = np.asarray(features, dtype=np.float64)
        n = feats.shape[0]
        need = max(options.pr_k, options.dc_k) + 1
        if n < need or n < options.num_clusters:
            raise DiffattrError(
                f"the real reference has {n} images; at least {max(need, options.num_clusters)} "
                "are needed (k-NN radii and clusters)"
            )
        mu, sigma = gaussian_stats(feats)
        if n > options.manifold_size:
            rng = np.random.default_rng(options.seed)
            manifold = feats[np.sort(rng.choice(n, options.manifold_size, replace=False))]
        else:
            manifold = feats
        return cls(
            mu=mu,
            sigma=sigma,
            manifold=manifold,
            radii_pr=knn_radii(manifold, options.pr_k),
            radii_dc=knn_radii(manifold, options.dc_k),
            centres=fit_clusters(feats, options.num_clusters, seed=options.seed),
            num_real=n,
            info=dict(info or {}),
        )

    def save(self, stem: Path) -> None:
        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in self.TENSORS
        }
        atomic_save_tensors(stem.with_suffix(".safetensors"), tensors)
        record = dict(self.info, num_real=self.num_real, version=STATS_VERSION)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True))

    @classmethod
    def load(cls, stem: Path) -> RealStats:
        from safetensors.torch import load_file

        record = json.loads(stem.with_suffix(".json").read_text())
        if record.get("version") != STATS_VERSION:
            raise ValueError("old statistics format")
        t = load_file(stem.with_suffix(".safetensors"))
        arrays = {k: t[k].numpy() for k in cls.TENSORS}
        return cls(**arrays, num_real=int(record["num_real"]), info=record)


# ----------------------------------------------------------------------------- behaviours


class Measured:
    """Generated images' features and probabilities with the real statistics; shared
    intermediate results (radii, density/coverage) are computed once."""

    def __init__(
        self,
        features: np.ndarray,
        probs: np.ndarray | None,
        stats: RealStats,
        options: SuiteOptions,
    ) -> None:
        self.features = np.asarray(features, dtype=np.float64)
        self._probs = probs
        self.stats = stats
        self.options = options

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            raise DiffattrError("this behaviour needs a classifier's probabilities")
        return self._probs

    @cached_property
    def density_coverage(self) -> tuple[float, float]:
        s = self.stats
        return density_coverage(s.manifold, self.features, self.options.dc_k, s.radii_dc)


@dataclass(frozen=True)
class Behavior:
    """A global behaviour F: a function of the measured images -> one number."""

    name: str
    compute: Callable[[Measured], float]
    higher_is_better: bool
    needs_probs: bool
    description: str


BEHAVIORS: Registry[Behavior] = Registry("behavior")


def _register(name: str, higher: bool, needs_probs: bool, description: str):
    def deco(fn: Callable[[Measured], float]) -> Callable[[Measured], float]:
        BEHAVIORS.register(name)(Behavior(name, fn, higher, needs_probs, description))
        return fn

    return deco


@_register("fid", False, False, "Frechet distance to the real features (Heusel et al. 2017)")
def _fid(m: Measured) -> float:
    mu, sigma = gaussian_stats(m.features)
    return frechet_distance(mu, sigma, m.stats.mu, m.stats.sigma)


@_register("is", True, True, "Inception Score with the classifier (Salimans et al. 2016)")
def _is(m: Measured) -> float:
    return inception_score(m.probs, min(m.options.is_splits, len(m.probs)))[0]


@_register("precision", True, False, "share inside the real k-NN manifold (Kynkaanniemi 2019)")
def _prec(m: Measured) -> float:
    return _precision(m.stats.manifold, m.features, m.options.pr_k, m.stats.radii_pr)


@_register("recall", True, False, "share of real inside the generated manifold (Kynkaanniemi)")
def _rec(m: Measured) -> float:
    if len(m.features) <= m.options.pr_k:
        raise DiffattrError(f"recall needs more than {m.options.pr_k} generated images")
    return _recall(m.stats.manifold, m.features, m.options.pr_k)


@_register("density", True, False, "mean count of real k-NN balls holding an image (Naeem 2020)")
def _density(m: Measured) -> float:
    return m.density_coverage[0]


@_register("coverage", True, False, "share of real k-NN balls holding an image (Naeem 2020)")
def _coverage(m: Measured) -> float:
    return m.density_coverage[1]


@_register("class-entropy", True, True, "entropy (bits) of the predicted-class histogram")
def _class_entropy(m: Measured) -> float:
    return class_entropy(m.probs)


@_register("cluster-entropy", True, False, "entropy (bits) of the real-cluster proportions")
def _cluster_entropy(m: Measured) -> float:
    return cluster_entropy(m.features, m.stats.centres)


def behavior_key(name: str, extractor_name: str) -> str:
    """Output key of a behaviour in a feature space, e.g. ``fid[digits-cnn]``."""
    return f"{name}[{extractor_name}]"


def parse_names(names: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Behaviour names (all when None; a comma-separated string is split); unknown -> error."""
    if names is None:
        known = BEHAVIORS.names()
        return [n for n in ORDER if n in known] + [n for n in known if n not in ORDER]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise DiffattrError("no behaviour named; choose from: " + ", ".join(BEHAVIORS.names()))
    out = []
    for n in names:
        BEHAVIORS.get(n)
        if n not in out:
            out.append(n)
    return out


# ----------------------------------------------------------------------------- the suite


def _tensor_digest(x: torch.Tensor) -> str:
    a = np.ascontiguousarray(x.detach().cpu().float().numpy())
    h = hashlib.sha256(str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


class BehaviorSuite:
    """Measures global behaviours of generated images against fixed real statistics."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        stats: RealStats,
        names: list[str] | None = None,
        options: SuiteOptions | None = None,
    ) -> None:
        self.extractor = extractor
        self.stats = stats
        self.options = options or SuiteOptions()
        self.names = parse_names(names)
        self._check_probs(self.names)

    def _check_probs(self, names: list[str]) -> None:
        if not self.extractor.has_probs:
            bad = [n for n in names if BEHAVIORS.get(n).needs_probs]
            if bad:
                raise DiffattrError(
                    f"behaviours {', '.join(bad)} need a classifier; {self.extractor.name} has none"
                )

    @classmethod
    def for_dataset(
        cls,
        data_cfg: DataConfig | None = None,
        names: list[str] | None = None,
        device: str | torch.device = "cpu",
        reference: Any = None,
        *,
        kind: str = "cnn",
        dataset=None,
        options: SuiteOptions | None = None,
        inception_weights: str | Path | None = None,
    ) -> BehaviorSuite:
        """Suite of a dataset's extractor with the real statistics of its training images
        (or of ``reference``: an ``ImageDataset`` or (N, C, H, W) tensor in [-1, 1])."""
        from diffattr.data import load_dataset

        data_cfg = data_cfg or DigitsData()
        options = options or SuiteOptions()
        if dataset is None:
            dataset = load_dataset(data_cfg)
        extractor = get_extractor(
            data_cfg, kind, device, dataset, inception_weights=inception_weights
        )
        if reference is None:
            ref_images = dataset.images
            ref_id: dict[str, Any] = {"dataset": dataset_identity(data_cfg, dataset)}
        else:
            ref_images = getattr(reference, "images", reference)
            if not torch.is_tensor(ref_images):
                raise DiffattrError("reference must be an ImageDataset or an image tensor")
            ref_id = {"images": _tensor_digest(ref_images), "n": int(ref_images.shape[0])}
        stats = real_stats(extractor, ref_images, ref_id, options)
        return cls(extractor, stats, names, options)

    def keys(self, names: list[str] | None = None) -> list[str]:
        return [behavior_key(n, self.extractor.name) for n in parse_names(names or self.names)]

    def measure(
        self, images: torch.Tensor, names: list[str] | str | None = None, batch_size: int = 500
    ) -> dict[str, float]:
        """{``name[feature space]``: value} for every requested behaviour of ``images``."""
        names = parse_names(names) if names is not None else self.names
        self._check_probs(names)
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[0] < 2:
            raise DiffattrError(
                f"need at least 2 images as (N, C, H, W) to measure, got {tuple(images.shape)}"
            )
        if not torch.isfinite(images).all():
            raise DiffattrError("images contain NaN or infinite values")
        feats, probs = self.extractor.features_and_probs(images, batch_size)
        m = Measured(feats, probs, self.stats, self.options)
        return {
            behavior_key(n, self.extractor.name): float(BEHAVIORS.get(n).compute(m)) for n in names
        }

    __call__ = measure


def real_stats(
    extractor: FeatureExtractor,
    images: torch.Tensor,
    reference_id: dict[str, Any],
    options: SuiteOptions | None = None,
) -> RealStats:
    """Real statistics of ``images`` in ``extractor``'s space, from the disk cache or computed.

    The cache file is ``features_dir(extractor.key)/real-<hash(reference_id, options)>``.
    """
    options = options or SuiteOptions()
    ref_key = stable_hash(
        {"reference": reference_id, "options": options.stats_fields(), "version": STATS_VERSION}
    )
    stem = features_dir(extractor.key) / f"real-{ref_key}"
    if stem.with_suffix(".json").is_file():
        try:
            return RealStats.load(stem)
        except (OSError, KeyError, ValueError, RuntimeError):
            pass  # unreadable or outdated cache entry: recompute and overwrite it
    feats, probs = extractor.features_and_probs(images)
    info: dict[str, Any] = {
        "extractor": extractor.name,
        "extractor_key": extractor.key,
        "reference": reference_id,
        "options": options.stats_fields(),
    }
    if probs is not None:
        info["is_real"] = inception_score(probs, 1)[0]
        info["class_entropy_real"] = class_entropy(probs)
    stats = RealStats.compute(feats, options, info)
    stats.info["cluster_entropy_real"] = cluster_entropy(feats, stats.centres)
    stats.save(stem)
    return stats


# ----------------------------------------------------------------------------- entry points

_SUITES: dict[tuple, tuple[Any, BehaviorSuite]] = {}


def clear_memory_cache() -> None:
    """Forget suites and extractors kept in memory (disk caches stay)."""
    from diffattr.behaviors.features import clear_memory_cache as _clear_extractors

    _SUITES.clear()
    _clear_extractors()


def get_suite(
    data_cfg: DataConfig | None = None,
    device: str | torch.device = "cpu",
    reference: Any = None,
    *,
    kind: str = "cnn",
    options: SuiteOptions | None = None,
    inception_weights: str | Path | None = None,
) -> BehaviorSuite:
    """The process-wide suite of (dataset, device, reference, kind, options), built once."""
    data_cfg = data_cfg or DigitsData()
    options = options or SuiteOptions()
    key = (
        json.dumps(dataset_key(data_cfg), sort_keys=True),
        str(torch.device(device)),
        id(reference) if reference is not None else None,
        kind,
        options,
        str(inception_weights) if inception_weights is not None else None,
    )
    hit = _SUITES.get(key)
    if hit is not None and hit[0] is reference:
        return hit[1]
    suite = BehaviorSuite.for_dataset(
        data_cfg,
        None,
        device,
        reference,
        kind=kind,
        options=options,
        inception_weights=inception_weights,
    )
    _SUITES[key] = (reference, suite)  # holding the reference keeps its id() from being reused
    return suite


def measure_images(
    images: torch.Tensor,
    data_cfg: DataConfig | None = None,
    names: list[str] | str | None = None,
    device: str | torch.device = "cpu",
    reference: Any = None,
    *,
    kind: str = "cnn",
    options: SuiteOptions | None = None,
    inception_weights: str | Path | None = None,
) -> dict[str, float]:
    """Global behaviours of generated ``images`` (N, C, H, W) in [-1, 1].

    Compared against the training images of ``data_cfg`` (default digits) or ``reference``
    (an ``ImageDataset`` or image tensor). ``names``: behaviours to compute (default all of
    ``BEHAVIORS``). Returns ``{"fid[digits-cnn]": ..., "is[digits-cnn]": ..., ...}``.
    """
    suite = get_suite(
        data_cfg, device, reference, kind=kind, options=options, inception_weights=inception_weights
    )
    return suite.measure(images, names)


def _stored_sections(meta: dict, model_dir: Path):
    """(DataConfig or None, SampleConfig) from a model's stored run config.

    Only the ``data`` and ``sample`` sections are read, so configs written by other
    versions (more or fewer sections) still load.
    """
    from pydantic import ValidationError

    from diffattr.config import SampleConfig

    config = meta.get("config") if isinstance(meta, dict) else None
    config = config if isinstance(config, dict) else {}
    try:
        data = parse_data(config["data"]) if "data" in config else None
        sample = SampleConfig.model_validate(config.get("sample") or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise DiffattrError(f"{model_dir}/diffattr.json: config: {loc}: {err['msg']}") from None
    return data, sample


@dataclass
class ModelMeasurement:
    """Behaviours of one model's samples with the settings and time it took."""

    behaviors: dict[str, float]
    timings: dict[str, float]
    num_samples: int
    sample: dict[str, Any]
    data: dict[str, Any]
    images: torch.Tensor | None = None


def measure_model(
    model_dir: str | Path,
    num_samples: int | None = None,
    *,
    names: list[str] | str | None = None,
    device: str | torch.device = "cpu",
    ddim_steps: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    data_cfg: DataConfig | None = None,
    reference: Any = None,
    kind: str = "cnn",
    options: SuiteOptions | None = None,
    inception_weights: str | Path | None = None,
    keep_images: bool = False,
) -> ModelMeasurement:
    """Load a model directory, sample it with its stored sample config, measure the samples.

    The sample settings (number, DDIM steps, seed, batch size) and the dataset come from the
    ``config`` stored in the model's ``diffattr.json``; each argument given here overrides
    its value. Timings: ``load_s``, ``generate_s``, ``measure_s`` (seconds).
    """
    from diffattr.diffusion.checkpoint import load_model
    from diffattr.diffusion.sample import generate

    names = parse_names(names)
    t0 = time.perf_counter()
    loaded = load_model(model_dir, device)
    t_load = time.perf_counter() - t0
    data_stored, sample_cfg = _stored_sections(loaded.meta, Path(model_dir))
    if data_cfg is None:
        if data_stored is None:
            raise DiffattrError(
                f"{model_dir}/diffattr.json has no data config; pass the dataset (--dataset)"
            )
        data_cfg = data_stored
    n = num_samples if num_samples is not None else sample_cfg.num_samples
    steps = ddim_steps if ddim_steps is not None else sample_cfg.ddim_steps
    sd = seed if seed is not None else sample_cfg.seed
    bs = batch_size if batch_size is not None else sample_cfg.batch_size
    if n < 2:
        raise DiffattrError(f"need at least 2 samples to measure, got {n}")
    suite = get_suite(
        data_cfg, device, reference, kind=kind, options=options, inception_weights=inception_weights
    )
    t1 = time.perf_counter()
    images = generate(loaded.unet, n, ddim_steps=steps, seed=sd, batch_size=bs, device=device)
    t_gen = time.perf_counter() - t1
    t2 = time.perf_counter()
    values = suite.measure(images, names)
    t_measure = time.perf_counter() - t2
    return ModelMeasurement(
        behaviors=values,
        timings={"load_s": t_load, "generate_s": t_gen, "measure_s": t_measure},
        num_samples=n,
        sample={"num_samples": n, "ddim_steps": steps, "seed": sd, "batch_size": bs},
        data=data_cfg.model_dump(mode="json", exclude_none=True),
        images=images if keep_images else None,
    )
