"""Model behaviours F: global properties of a model's generated images, all offline.

Global behaviours (``BEHAVIORS``; keys carry the feature space, e.g. ``fid[digits-cnn]``):
``fid`` (Heusel et al. 2017), ``is`` (Salimans et al. 2016), ``precision`` / ``recall``
(Kynkaanniemi et al. 2019), ``density`` / ``coverage`` (Naeem et al. 2020),
``class-entropy`` and ``cluster-entropy`` (diversity, in bits). They are measured in the
space of a small CNN classifier trained on the dataset itself (``features``), or of
pytorch-fid's Inception-v3 from a local weights file (``inception``).

Local behaviours (``local``): per-image MSE, NRMSE and SSIM (Wang et al. 2004) against the
full model's image for the same seed, and a model's denoising loss on fixed images.

Entry points for the pipeline: ``measure_images(images, data_cfg)`` and
``measure_model(model_dir)``.
"""

from __future__ import annotations

from diffattr.behaviors.diversity import class_entropy, cluster_entropy, entropy_bits
from diffattr.behaviors.features import (
    ClassifierExtractor,
    FeatureExtractor,
    get_extractor,
)
from diffattr.behaviors.fid import fid_from_features, frechet_distance, gaussian_stats
from diffattr.behaviors.inception_score import inception_score
from diffattr.behaviors.local import denoising_loss, local_behaviors, mse, nrmse, ssim
from diffattr.behaviors.precision_recall import density_coverage, knn_radii, precision_recall
from diffattr.behaviors.suite import (
    BEHAVIORS,
    Behavior,
    BehaviorSuite,
    ModelMeasurement,
    RealStats,
    SuiteOptions,
    behavior_key,
    clear_memory_cache,
    get_suite,
    measure_images,
    measure_model,
    parse_names,
)

__all__ = [
    "BEHAVIORS",
    "Behavior",
    "BehaviorSuite",
    "ClassifierExtractor",
    "FeatureExtractor",
    "ModelMeasurement",
    "RealStats",
    "SuiteOptions",
    "behavior_key",
    "class_entropy",
    "clear_memory_cache",
    "cluster_entropy",
    "denoising_loss",
    "density_coverage",
    "entropy_bits",
    "fid_from_features",
    "frechet_distance",
    "gaussian_stats",
    "get_extractor",
    "get_suite",
    "inception_score",
    "knn_radii",
    "local_behaviors",
    "measure_images",
    "measure_model",
    "mse",
    "nrmse",
    "parse_names",
    "precision_recall",
    "ssim",
]
