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

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "class_entropy": "diffattr.behaviors.diversity:class_entropy",
    "cluster_entropy": "diffattr.behaviors.diversity:cluster_entropy",
    "entropy_bits": "diffattr.behaviors.diversity:entropy_bits",
    "ClassifierExtractor": "diffattr.behaviors.features:ClassifierExtractor",
    "FeatureExtractor": "diffattr.behaviors.features:FeatureExtractor",
    "get_extractor": "diffattr.behaviors.features:get_extractor",
    "fid_from_features": "diffattr.behaviors.fid:fid_from_features",
    "frechet_distance": "diffattr.behaviors.fid:frechet_distance",
    "gaussian_stats": "diffattr.behaviors.fid:gaussian_stats",
    "inception_score": "diffattr.behaviors.inception_score:inception_score",
    "denoising_loss": "diffattr.behaviors.local:denoising_loss",
    "local_behaviors": "diffattr.behaviors.local:local_behaviors",
    "mse": "diffattr.behaviors.local:mse",
    "nrmse": "diffattr.behaviors.local:nrmse",
    "ssim": "diffattr.behaviors.local:ssim",
    "density_coverage": "diffattr.behaviors.precision_recall:density_coverage",
    "knn_radii": "diffattr.behaviors.precision_recall:knn_radii",
    "precision_recall": "diffattr.behaviors.precision_recall:precision_recall",
    "BEHAVIORS": "diffattr.behaviors.suite:BEHAVIORS",
    "Behavior": "diffattr.behaviors.suite:Behavior",
    "BehaviorSuite": "diffattr.behaviors.suite:BehaviorSuite",
    "ModelMeasurement": "diffattr.behaviors.suite:ModelMeasurement",
    "RealStats": "diffattr.behaviors.suite:RealStats",
    "SuiteOptions": "diffattr.behaviors.suite:SuiteOptions",
    "behavior_key": "diffattr.behaviors.suite:behavior_key",
    "clear_memory_cache": "diffattr.behaviors.suite:clear_memory_cache",
    "get_suite": "diffattr.behaviors.suite:get_suite",
    "measure_images": "diffattr.behaviors.suite:measure_images",
    "measure_model": "diffattr.behaviors.suite:measure_model",
    "parse_names": "diffattr.behaviors.suite:parse_names",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
