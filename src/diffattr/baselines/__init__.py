"""Baselines the sFT Shapley values are judged against (Lin et al., ICLR 2025, Sec. 4).

Gradient-based, on the full model (projected per-example gradients, traker's projectors):
TRAK, D-TRAK, Journey-TRAK, relative influence, renormalized influence and gradient
similarity. Similarity-based: pixel and feature-space cosine similarity. And the property
heuristic (the behaviour measured on each player's own training images).

* :class:`DiffusionTarget` — the model, schedule, ``eps_fn``, parameters, training and
  generated examples (and the DDIM trajectory, :func:`record_trajectory`);
* :func:`attribute` ``(settings, target, players, *, behaviors, features, measure,
  cache_dir) -> list[Attribution]``;
* traker's phases, for a gradient or similarity baseline: :func:`featurize` ``(settings,
  target, role)`` -> the training (``"train"``) or generated (``"gen"``) examples'
  features, cached by content; :func:`score` ``(settings, train_features, gen_features)``
  -> (G, N) local scores; :func:`local_scores` runs both (DAS and EK-FAC their own);
* settings classes in :mod:`diffattr.baselines.settings` (pydantic only), registered in
  their own registry ``BASELINES``; ``settings.build()`` is a :class:`Baseline`.

Local scores (generated x training) are averaged over the generated images and aggregated
to players by ``sum``, ``mean`` or ``max`` over each player's images. A larger value means
more responsible for the generated images (TRAK family, similarities) or a higher
behaviour of the player's own images (heuristic); see :mod:`diffattr.baselines.settings`.

This package imports torch only when :func:`attribute`, the target or the gradient code is
first used, so ``import diffattr.baselines.settings`` stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "attribute": "diffattr.baselines.api",
    "Baseline": "diffattr.baselines.api",
    "BASELINES": "diffattr.baselines.settings",
    "featurize": "diffattr.baselines.api",
    "gradient_features": "diffattr.baselines.api",
    "score": "diffattr.baselines.api",
    "similarity_features": "diffattr.baselines.api",
    "local_scores": "diffattr.baselines.api",
    "LocalScores": "diffattr.baselines.api",
    "DiffusionTarget": "diffattr.baselines.target",
    "Trajectory": "diffattr.baselines.target",
    "record_trajectory": "diffattr.baselines.target",
    "unet_eps": "diffattr.baselines.target",
    "aggregate_local": "diffattr.baselines.scores",
    "gradient_scores": "diffattr.baselines.scores",
    "ClipFeatures": "diffattr.baselines.clip",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'diffattr.baselines' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
