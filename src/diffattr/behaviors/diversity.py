"""Diversity of a set of generated images as an entropy in bits.

* class entropy: entropy (log2) of the histogram of the classifier's predicted classes;
  log2 C when every class is generated equally often, 0 when only one is.
* cluster entropy: the paper's CelebA-HQ diversity behaviour. A fixed reference set's
  features are clustered into K groups (K = 20 in the paper); every generated image is
  assigned to a cluster and F is the entropy (log2) of the cluster proportions.

Clustering choice: the paper clusters BLIP embeddings with Ward linkage and assigns an image
to the cluster with the smallest mean distance to its members. Here the clusters come from
k-means (scikit-learn ``KMeans``, fixed ``random_state``, 10 initialisations) and images go
to the nearest centre. Both minimise within-cluster variance (Ward greedily, k-means
iteratively); k-means scales to the whole training set in seconds, and nearest-centre
assignment is its own decision rule, so only the K centres have to be kept (and cached).
"""

from __future__ import annotations

import numpy as np
import torch

from diffattr.errors import DiffattrError


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (counts or proportions); 0 log 0 = 0."""
    c = np.asarray(counts, dtype=np.float64).ravel()
    if c.size == 0 or (c < 0).any() or c.sum() <= 0:
        raise DiffattrError("entropy needs a non-empty histogram with a positive total")
    p = c[c > 0] / c.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def class_entropy(probs: np.ndarray) -> float:
    """Entropy (bits) of the histogram of predicted classes argmax_y p(y|x) over C classes."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[0] == 0:
        raise DiffattrError(f"probabilities must be (N, C) with N >= 1, got shape {p.shape}")
    return entropy_bits(np.bincount(p.argmax(axis=1), minlength=p.shape[1]))


def fit_clusters(
    reference: np.ndarray, num_clusters: int = 20, seed: int = 0, max_points: int = 20000
) -> np.ndarray:
    """K-means centres (K, d) of a fixed reference set's features (seeded, deterministic).

    At most ``max_points`` reference points (a seeded subsample) are clustered.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2:
        raise DiffattrError(f"reference features must be (N, d), got shape {x.shape}")
    if not 1 <= num_clusters <= x.shape[0]:
        raise DiffattrError(
            f"number of clusters must be in 1..{x.shape[0]} (reference points), got {num_clusters}"
        )
    if x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x = x[keep]
    km = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit(x)
    return km.cluster_centers_


def assign_clusters(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) for each feature vector."""
    f = torch.as_tensor(np.asarray(features, dtype=np.float64))
    c = torch.as_tensor(np.asarray(centres, dtype=np.float64))
    if f.ndim != 2 or c.ndim != 2 or f.shape[1] != c.shape[1]:
        raise DiffattrError(
            f"features {tuple(f.shape)} and centres {tuple(c.shape)} must be (N, d) and (K, d)"
        )
    return torch.cdist(f, c).argmin(dim=1).numpy()


def cluster_entropy(features: np.ndarray, centres: np.ndarray) -> float:
    """Entropy (bits) of the proportions of generated images per reference cluster."""
    labels = assign_clusters(features, centres)
    return entropy_bits(np.bincount(labels, minlength=np.asarray(centres).shape[0]))
