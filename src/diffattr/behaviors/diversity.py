"""Diversity of a set of generated images as an entropy in bits.

* class entropy: entropy (log2) of the histogram of the classifier's predicted classes;
  log2 C when every class is generated equally often, 0 when only one is.
* diversity entropy (``diversity-entropy``): the paper's CelebA-HQ property, exactly as the
  authors' code computes it (``calculate_diversity_score``):

  1. embed a fixed reference image set (the paper: BLIP-VQA-base pooled vision output;
     here any feature space);
  2. similarities ``sim`` between the reference embeddings (cosine by default; the
     authors' code takes raw dot products of the pooled outputs: ``similarity = "dot"``),
     distance ``max(sim) - sim`` with a zero diagonal;
  3. Ward hierarchical clustering of that distance matrix (``scipy.cluster.hierarchy.ward``)
     cut into K clusters (``fcluster(..., K, criterion="maxclust")``; K = 20 in the paper);
  4. each generated image goes to the cluster with the smallest *mean* distance
     ``max(sim) - sim(image, member)`` to its members (``max(sim)`` of the reference);
  5. F = entropy (log2) of the generated images' cluster proportions: log2 K when they
     spread evenly over the clusters, 0 when all fall into one.

  Ward clustering needs the full distance matrix, so at most ``max_reference`` reference
  images (a seeded subsample; 5,000 -> 100 MB) are clustered.
* cluster entropy (``cluster-entropy``): a cheaper variant for large reference sets --
  k-means (scikit-learn, fixed ``random_state``, 10 initialisations) of the reference
  features and nearest-centre assignment; only the K centres are kept.
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


# ----------------------------------------------------------------------------- Ward (the paper)


def _similarity(a: np.ndarray, b: np.ndarray, similarity: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if similarity == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    elif similarity != "dot":
        raise DiffattrError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
    return a @ b.T


def ward_clusters(
    reference: np.ndarray, num_clusters: int = 20, similarity: str = "cosine"
) -> tuple[np.ndarray, float]:
    """Ward clusters of reference embeddings on the distance ``max(sim) - sim``.

    Returns the cluster of each reference point (0..K-1) and ``max(sim)``, the offset that
    turns similarities of new images into distances.
    """
    from scipy.cluster.hierarchy import fcluster, ward
    from scipy.spatial.distance import squareform

    x = np.asarray(reference, dtype=np.float64)
    if x.ndim != 2:
        raise DiffattrError(f"reference features must be (N, d), got shape {x.shape}")
    if not 1 <= num_clusters <= x.shape[0] or x.shape[0] < 2:
        raise DiffattrError(
            f"number of clusters must be in 1..{x.shape[0]} (reference points), got {num_clusters}"
        )
    sim = _similarity(x, x, similarity)
    max_sim = float(sim.max())
    dist = max_sim - sim
    dist = (dist + dist.T) / 2  # exact symmetry for squareform
    np.fill_diagonal(dist, 0.0)
    linkage = ward(squareform(np.clip(dist, 0.0, None), checks=False))
    labels = fcluster(linkage, num_clusters, criterion="maxclust").astype(np.int64) - 1
    return labels, max_sim


def assign_ward(
    features: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    max_sim: float,
    num_clusters: int,
    similarity: str = "cosine",
) -> np.ndarray:
    """Cluster of each image: smallest mean distance ``max_sim - sim`` to the members."""
    f = np.asarray(features, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != r.shape[1]:
        raise DiffattrError(f"features {f.shape} and reference {r.shape} must be (N, d) and (M, d)")
    labels = np.asarray(labels, dtype=np.int64)
    onehot = np.zeros((r.shape[0], num_clusters))
    onehot[np.arange(r.shape[0]), labels] = 1.0
    counts = onehot.sum(axis=0)
    out = np.empty(f.shape[0], dtype=np.int64)
    for s in range(0, f.shape[0], 1024):
        dist = max_sim - _similarity(f[s : s + 1024], r, similarity)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (dist @ onehot) / counts
        mean[:, counts == 0] = np.inf  # maxclust may return fewer clusters than asked
        out[s : s + 1024] = mean.argmin(axis=1)
    return out


def diversity_entropy(
    features: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray,
    max_sim: float,
    num_clusters: int,
    similarity: str = "cosine",
) -> float:
    """Entropy (bits) of the generated images' proportions over the reference's Ward
    clusters (the paper's CelebA-HQ diversity)."""
    assigned = assign_ward(features, reference, labels, max_sim, num_clusters, similarity)
    return entropy_bits(np.bincount(assigned, minlength=num_clusters))
