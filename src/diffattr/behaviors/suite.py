"""The behavior suite of a run: ``build_suite(settings, dataset, device=, cache_dir=)``.

``build_suite`` checks the settings (``check_settings``), builds (loads or trains, cached)
each feature space the behaviors need, computes the reference statistics in each space
(cached), prepares every behavior, and returns a ``BehaviorSuite``:

* ``suite.keys()``: output keys in ``measure`` order, e.g. ``["fid[digits-cnn]", ...]``
  (the global behaviors; the local ones are measured by ``local_suite.LocalSuite``);
* ``suite.measure(images)``: ``{key: value}`` for (N, C, H, W) images in [-1, 1];
* ``suite.describe()``: feature spaces (name, cache key, held-out accuracy of a classifier),
  reference identity and behaviors, for reports;
* ``suite.higher_is_better(key)``.

Suites are kept in memory per (settings, dataset content, device, cache_dir), so a runner
may call ``build_suite`` for every job: the spaces and statistics are built once per process.

Cache layout under ``cache_dir`` (the run's cache folder or ``$DIFFATTR_HOME/cache``)::

    features/<space key>/classifier.safetensors, classifier.json     (CNN spaces)
    features/<space key>/autoencoder.safetensors, autoencoder.json   (label-free space)
    features/<space key>/reference-<ref>.safetensors, .json           (features, Gaussian)
    features/<space key>/kmeans-<ref>-k<K>-s<seed>.safetensors
    features/<space key>/ward-<ref>-k<K>-<similarity>-m<max>-s<seed>.safetensors
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffattr.behaviors.features import FeatureExtractor, tensor_digest
from diffattr.behaviors.features import clear_memory_cache as _clear_extractors
from diffattr.behaviors.measures import Measure, Measured
from diffattr.behaviors.reference import SpaceReference, reference_images
from diffattr.behaviors.resolve import behavior_key, behavior_space, check_settings
from diffattr.behaviors.settings import (
    BEHAVIORS,
    ORDER,
    BehaviorSettings,
    BehaviorsSettings,
    parse_behaviors,
)
from diffattr.data import load_dataset
from diffattr.data.settings import parse_data
from diffattr.diffusion.settings import SampleConfig
from diffattr.errors import DiffattrError
from diffattr.families.settings import family_of
from diffattr.settings import format_validation_error


@dataclass
class _Entry:
    key: str
    settings: BehaviorSettings
    space: str  # id of the space in BehaviorSuite.spaces
    measure: Measure


class BehaviorSuite:
    """Measures global behaviors of generated images against fixed reference statistics."""

    def __init__(
        self,
        settings: BehaviorsSettings,
        spaces: dict[str, SpaceReference],
        entries: list[_Entry],
        reference: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.spaces = spaces
        self.entries = entries
        self.reference = reference

    def keys(self) -> list[str]:
        """Output keys, in ``measure`` order: ``name[feature space]``."""
        return [e.key for e in self.entries]

    def higher_is_better(self, key: str) -> bool:
        for e in self.entries:
            if e.key == key:
                return e.settings.higher_is_better
        raise DiffattrError(f"no behavior {key!r} in this suite; it has: {', '.join(self.keys())}")

    @property
    def extractors(self) -> dict[str, FeatureExtractor]:
        return {sid: ref.extractor for sid, ref in self.spaces.items()}

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        """``{key: value}`` of every behavior for ``images`` (N, C, H, W) in [-1, 1]."""
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[0] < 2:
            raise DiffattrError(
                f"need at least 2 images as (N, C, H, W) to measure, got {tuple(images.shape)}"
            )
        if not torch.isfinite(images).all():
            raise DiffattrError("images contain NaN or infinite values")
        measured: dict[str, Measured] = {}
        out: dict[str, float] = {}
        for e in self.entries:
            if e.space not in measured:
                ext = self.spaces[e.space].extractor
                f, p = ext.features_and_probs(images, self.settings.batch_size)
                measured[e.space] = Measured(f, p, ext.name)
            out[e.key] = float(e.measure(measured[e.space]))
        return out

    __call__ = measure

    def describe(self) -> dict[str, Any]:
        """Feature spaces, reference and behaviors, as plain data for reports."""
        spaces = []
        for ref in self.spaces.values():
            d = ref.extractor.describe()
            d["reference"] = ref.description
            spaces.append(d)
        return {
            "reference": self.reference,
            "spaces": spaces,
            "behaviors": {
                e.key: {
                    "settings": e.settings.to_dict(),
                    "space": self.spaces[e.space].extractor.name,
                    "higher_is_better": e.settings.higher_is_better,
                    "description": e.settings.description,
                }
                for e in self.entries
            },
            "manifold_size": self.settings.manifold_size or "number of generated images",
        }


# ----------------------------------------------------------------------------- building

_SUITES: dict[tuple, BehaviorSuite] = {}


def clear_memory_cache() -> None:
    """Forget suites and extractors kept in memory (disk caches stay)."""

    _SUITES.clear()
    _clear_extractors()


def _dataset_id(dataset) -> tuple:
    sem = dataset.semantic_labels
    return (
        dataset.name,
        tensor_digest(dataset.images),
        tensor_digest(dataset.labels),
        None if sem is None else tensor_digest(sem),
    )


def build_suite(
    settings: BehaviorsSettings | dict | None,
    dataset,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | Path,
) -> BehaviorSuite:
    """The behavior suite of a run whose training data are ``dataset`` (an ``ImageDataset``).

    Args:
        settings: the ``[behaviors]`` section (``BehaviorsSettings`` or its table).
        dataset: the run's training data; its name and semantic labels choose ``auto``,
            its images are the ``"train"`` reference and train the package's spaces.
        device: torch device of the feature extractors.
        cache_dir: folder of the caches (``features/...``): the run's cache folder or
            ``$DIFFATTR_HOME/cache``. Nothing is written anywhere else.
    """
    has_labels = dataset.semantic_labels is not None
    settings = parse_behaviors(settings).resolved(dataset.name, has_labels)
    check_settings(settings, dataset.name, has_labels)
    cache_dir = Path(cache_dir).expanduser()
    memo = (
        settings.model_dump_json(),
        _dataset_id(dataset),
        str(torch.device(device)),
        str(cache_dir.resolve()),
    )
    hit = _SUITES.get(memo)
    if hit is not None:
        return hit
    images, ref_identity = reference_images(settings.reference, dataset)
    spaces: dict[str, SpaceReference] = {}
    entries: list[_Entry] = []
    for b in settings.measure:
        if b.local:  # one value per image against the full model's: local_suite.py
            continue
        space = behavior_space(b, settings, dataset.name, has_labels)
        sid = space.model_dump_json()
        if sid not in spaces:
            builder = space.implementation_class()
            extractor = builder(
                space, dataset, device=device, cache_dir=cache_dir, seed=settings.seed
            )
            spaces[sid] = SpaceReference(
                extractor,
                images,
                ref_identity,
                cache_dir=cache_dir,
                seed=settings.seed,
                batch_size=settings.batch_size,
            )
        ref = spaces[sid]
        measure = type(b).implementation_class()(b, ref, settings.manifold_size)
        entries.append(_Entry(behavior_key(b.name, ref.extractor.name), b, sid, measure))
    suite = BehaviorSuite(settings, spaces, entries, ref_identity)
    _SUITES[memo] = suite
    return suite


def suite_for_extractor(
    extractor: FeatureExtractor,
    reference: torch.Tensor,
    measure: list | None = None,
    *,
    cache_dir: str | Path,
    manifold_size: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> BehaviorSuite:
    """A suite in the space of a given extractor (experiments, diagnostics): ``reference``
    images (N, C, H, W) in [-1, 1], ``measure`` as in ``BehaviorsSettings``. Unlike
    ``build_suite`` nothing guards the choice of space -- a classifier of contributors
    built here measures contributor separability, not quality. ``extractor.key`` must
    identify its weights (e.g. ``features.module_digest(model)``): it keys the reference
    cache."""
    settings = parse_behaviors(
        {
            "measure": measure or ["fid"],
            "manifold_size": manifold_size,
            "seed": seed,
            "batch_size": batch_size,
        }
    )
    for i, b in enumerate(settings.measure):
        if b.needs_probs and not extractor.has_probs:
            raise DiffattrError(
                f"measure[{i}]: {b.name} needs class probabilities; {extractor.name} has none"
            )
    ident = {"reference": "images", "images": tensor_digest(reference), "n": len(reference)}
    ref = SpaceReference(
        extractor, reference, ident, cache_dir=cache_dir, seed=seed, batch_size=batch_size
    )
    entries = [
        _Entry(
            behavior_key(b.name, extractor.name),
            b,
            "space",
            type(b).implementation_class()(b, ref, manifold_size),
        )
        for b in settings.measure
    ]
    return BehaviorSuite(settings, {"space": ref}, entries, ident)


def supported_behaviors(space_has_probs: bool) -> list[str]:
    """Behaviors measurable with default settings in a space (no aesthetic: needs a head)."""
    out = []
    for name in ORDER:
        cls = BEHAVIORS.get(name)
        if cls.needs_space is not None or (cls.needs_probs and not space_has_probs):
            continue
        out.append(name)
    return out


# ----------------------------------------------------------------------------- model dirs


def _stored_sections(meta: dict, model_dir: Path):
    """(DataSettings or None, SampleConfig) from a model's stored run config.

    Only the ``data`` and ``sample`` sections are read, so configs written by other
    versions (more or fewer sections) still load.
    """
    from pydantic import ValidationError

    config = meta.get("config") if isinstance(meta, dict) else None
    config = config if isinstance(config, dict) else {}
    where = f"{model_dir}/diffattr.json: config"
    try:
        data = parse_data(config["data"], f"{where}: data") if "data" in config else None
        sample = SampleConfig.model_validate(config.get("sample") or {})
    except ValidationError as e:
        raise DiffattrError(f"{where}: {format_validation_error(e, 'sample')}") from None
    return data, sample


@dataclass
class ModelMeasurement:
    """Behaviors of one model's samples with the settings and time it took."""

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
    settings: BehaviorsSettings | dict | None = None,
    cache_dir: str | Path,
    device: str | torch.device = "cpu",
    ddim_steps: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    data_cfg=None,
    keep_images: bool = False,
) -> ModelMeasurement:
    """Load a model directory, sample it with its stored sample config, measure the samples.

    The sample settings (number, DDIM steps, seed, batch size) and the dataset come from the
    ``config`` stored in the model's ``diffattr.json``; each argument given here overrides
    its value. Timings: ``load_s``, ``generate_s``, ``measure_s`` (seconds).
    """

    settings = parse_behaviors(settings)
    local = [b.name for b in settings.measure or () if b.local]
    if local:
        raise DiffattrError(
            f"{local[0]} is a local behavior: it compares a model's images with the full "
            "model's images for the same seeds, so it is measured in a run (diffattr run)"
        )
    t0 = time.perf_counter()
    family = family_of(model_dir, str(device))
    loaded = family.load(model_dir)
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
    suite = build_suite(settings, load_dataset(data_cfg), device=device, cache_dir=cache_dir)
    t1 = time.perf_counter()
    images = family.sample(loaded.model, n, seed=sd, ddim_steps=steps, batch_size=bs)
    t_gen = time.perf_counter() - t1
    t2 = time.perf_counter()
    values = suite.measure(images)
    t_measure = time.perf_counter() - t2
    return ModelMeasurement(
        behaviors=values,
        timings={"load_s": t_load, "generate_s": t_gen, "measure_s": t_measure},
        num_samples=n,
        sample={"num_samples": n, "ddim_steps": steps, "seed": sd, "batch_size": bs},
        data=data_cfg.model_dump(mode="json", exclude_none=True),
        images=images if keep_images else None,
    )
