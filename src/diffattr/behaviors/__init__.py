"""Model behaviors F: global properties of a model's generated images, all offline.

Settings (pydantic only, cheap): ``diffattr.behaviors.settings`` -- the feature spaces
(``FEATURES``), the behaviors (``BEHAVIORS``), the ``[behaviors]`` section
(``BehaviorsSettings``) and ``check_settings``. The module docstring there explains which
feature space ``auto`` picks and why.

Measuring (torch): ``build_suite(settings, dataset, device=..., cache_dir=...)`` returns a
``BehaviorSuite`` whose ``measure(images)`` gives ``{"fid[digits-cnn]": ..., ...}``.

Local behaviors (``local``): per-image MSE, NRMSE and SSIM (Wang et al. 2004) against the
full model's image for the same seed, and a model's denoising loss on fixed images.

Importing this package is cheap: names are loaded from their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # settings (pydantic only)
    "BEHAVIORS": "settings",
    "FEATURES": "settings",
    "BehaviorSettings": "settings",
    "BehaviorsSettings": "settings",
    "FeatureSettings": "settings",
    "behavior_key": "settings",
    "check_settings": "settings",
    "parse_behaviors": "settings",
    "resolve_features": "settings",
    "suite_keys": "settings",
    # suite
    "BehaviorSuite": "suite",
    "ModelMeasurement": "suite",
    "build_suite": "suite",
    "clear_memory_cache": "suite",
    "measure_model": "suite",
    # features
    "ClassifierExtractor": "features",
    "FeatureExtractor": "features",
    # metrics
    "class_entropy": "diversity",
    "cluster_entropy": "diversity",
    "diversity_entropy": "diversity",
    "entropy_bits": "diversity",
    "fid_from_features": "fid",
    "frechet_distance": "fid",
    "gaussian_stats": "fid",
    "inception_score": "inception_score",
    "denoising_loss": "local",
    "local_behaviors": "local",
    "mse": "local",
    "nrmse": "local",
    "ssim": "local",
    "density_coverage": "precision_recall",
    "knn_radii": "precision_recall",
    "precision_recall": "precision_recall",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffattr.behaviors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"diffattr.behaviors.{module}"), name)
