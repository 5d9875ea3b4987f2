"""The code of each behavior (named by ``BehaviorSettings.implementation``).

A measure is built once per suite from its settings and the ``SpaceReference`` of its
feature space (loading files and fitting clusterings there, so a bad file fails before any
image is measured), then called on the generated images' ``Measured`` features.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from diffattr.behaviors.aesthetic import aesthetic_scores, load_head, statistic
from diffattr.behaviors.diversity import class_entropy, cluster_entropy, diversity_entropy
from diffattr.behaviors.fid import frechet_distance, gaussian_stats
from diffattr.behaviors.inception_score import inception_score
from diffattr.behaviors.precision_recall import density_coverage, precision, recall
from diffattr.behaviors.reference import SpaceReference
from diffattr.errors import DiffattrError


class Measured:
    """Generated images' features (float64) and class probabilities in one space; shared
    intermediate results are computed once (``cache``)."""

    def __init__(self, features: np.ndarray, probs: np.ndarray | None, space: str) -> None:
        self.features = np.asarray(features, dtype=np.float64)
        self._probs = probs
        self.space = space
        self.cache: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self.features)

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            raise DiffattrError(f"the feature space {self.space} has no class probabilities")
        return self._probs


class Measure(ABC):
    """Base: ``__init__`` prepares, ``__call__`` measures."""

    def __init__(self, settings, ref: SpaceReference, manifold_size: int | None = None) -> None:
        self.settings = settings
        self.ref = ref
        self.manifold_size = manifold_size

    def manifold(self, m: Measured, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The reference manifold: ``manifold_size`` points, default as many as generated."""
        size = self.manifold_size or len(m)
        return self.ref.manifold(size, k)

    @abstractmethod
    def __call__(self, m: Measured) -> float:
        """The behavior's value for the generated images ``m``."""


class FID(Measure):
    def __call__(self, m: Measured) -> float:
        mu, sigma = gaussian_stats(m.features)
        return frechet_distance(mu, sigma, self.ref.mu, self.ref.sigma)


class InceptionScore(Measure):
    def __call__(self, m: Measured) -> float:
        return inception_score(m.probs, min(self.settings.splits, len(m)))[0]


class Precision(Measure):
    def __call__(self, m: Measured) -> float:
        points, radii = self.manifold(m, self.settings.k)
        return precision(points, m.features, self.settings.k, radii)


class Recall(Measure):
    def __call__(self, m: Measured) -> float:
        k = self.settings.k
        if len(m) <= k:
            raise DiffattrError(f"recall needs more than {k} generated images, got {len(m)}")
        points, _ = self.manifold(m, k)
        return recall(points, m.features, k)


class _DensityCoverage(Measure):
    index = 0

    def __call__(self, m: Measured) -> float:
        k = self.settings.k
        points, radii = self.manifold(m, k)
        key = ("density-coverage", len(points), k)
        if key not in m.cache:
            m.cache[key] = density_coverage(points, m.features, k, radii)
        return m.cache[key][self.index]


class Density(_DensityCoverage):
    index = 0


class Coverage(_DensityCoverage):
    index = 1


class ClassEntropy(Measure):
    def __call__(self, m: Measured) -> float:
        return class_entropy(m.probs)


class ClusterEntropy(Measure):
    def __init__(self, settings, ref: SpaceReference, manifold_size: int | None = None) -> None:
        super().__init__(settings, ref, manifold_size)
        self.centres = ref.kmeans(settings.clusters)

    def __call__(self, m: Measured) -> float:
        return cluster_entropy(m.features, self.centres)


class DiversityEntropy(Measure):
    def __init__(self, settings, ref: SpaceReference, manifold_size: int | None = None) -> None:
        super().__init__(settings, ref, manifold_size)
        s = settings
        self.points, self.labels, self.max_sim = ref.ward(s.clusters, s.similarity, s.max_reference)

    def __call__(self, m: Measured) -> float:
        s = self.settings
        return diversity_entropy(
            m.features, self.points, self.labels, self.max_sim, s.clusters, s.similarity
        )


class Aesthetic(Measure):
    def __init__(self, settings, ref: SpaceReference, manifold_size: int | None = None) -> None:

        super().__init__(settings, ref, manifold_size)
        self.weight, self.bias = load_head(settings.head)
        dim = ref.features.shape[1]
        if dim != self.weight.shape[0]:
            raise DiffattrError(
                f"{settings.head}: the aesthetic head takes {self.weight.shape[0]}-d CLIP "
                f"embeddings (ViT-L/14), and this CLIP gives {dim}-d ones"
            )

    def __call__(self, m: Measured) -> float:

        key = ("aesthetic", self.settings.head)
        if key not in m.cache:
            m.cache[key] = aesthetic_scores(m.features, self.weight, self.bias)
        return statistic(m.cache[key], self.settings.statistic)
