"""The paper's diversity entropy (Ward clusters) and the LAION aesthetic head, on arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, ward
from scipy.spatial.distance import squareform

from diffattr.behaviors.aesthetic import aesthetic_scores, load_head, statistic
from diffattr.behaviors.diversity import assign_ward, diversity_entropy, ward_clusters
from diffattr.errors import DiffattrError


def _blobs(k: int, per: int, dim: int = 16, seed: int = 0):
    """k tight groups around orthogonal directions (so cosine similarity separates them)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:k] * 5.0
    pts = np.concatenate([c + 0.05 * rng.normal(size=(per, dim)) for c in centres])
    return pts, np.repeat(np.arange(k), per)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_evenly_spread_set_has_entropy_log2_k_and_one_cluster_zero(k):
    ref, truth = _blobs(k, 30)
    labels, max_sim = ward_clusters(ref, k)
    # Ward recovers the groups exactly (same partition, other numbering).
    assert len(set(zip(labels, truth, strict=True))) == k
    gen, _ = _blobs(k, 12, seed=1)  # 12 images of every group
    assert diversity_entropy(gen, ref, labels, max_sim, k) == pytest.approx(math.log2(k))
    one = gen[:12]  # all from the first group
    assert diversity_entropy(one, ref, labels, max_sim, k) == pytest.approx(0.0)


def test_ward_matches_the_authors_recipe_with_dot_products():
    """similarity='dot' reproduces calculate_diversity_score: ward() on max(sim) - sim of raw
    dot products, fcluster maxclust, smallest mean distance to the members."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(60, 8))
    gen = rng.normal(size=(25, 8))
    sim = ref @ ref.T
    dist = np.max(sim) - sim
    np.fill_diagonal(dist, 0)
    expected_labels = fcluster(ward(squareform(dist, checks=False)), 6, criterion="maxclust")
    labels, max_sim = ward_clusters(ref, 6, similarity="dot")
    np.testing.assert_array_equal(labels, expected_labels - 1)
    assert max_sim == pytest.approx(np.max(sim))
    d_new = np.max(sim) - gen @ ref.T
    expected = [
        int(np.argmin([d[expected_labels == c].mean() for c in range(1, 7)])) for d in d_new
    ]
    np.testing.assert_array_equal(assign_ward(gen, ref, labels, max_sim, 6, "dot"), expected)
    counts = np.bincount(expected, minlength=6) / len(expected)
    h = -np.sum(counts * np.log2(counts + np.finfo(float).eps))
    assert diversity_entropy(gen, ref, labels, max_sim, 6, "dot") == pytest.approx(h, abs=1e-9)


def test_cosine_ward_ignores_embedding_length():
    ref, _ = _blobs(3, 20)
    labels, max_sim = ward_clusters(ref, 3)
    gen, _ = _blobs(3, 5, seed=2)
    a = assign_ward(gen, ref, labels, max_sim, 3)
    b = assign_ward(gen * 7.0, ref, labels, max_sim, 3)
    np.testing.assert_array_equal(a, b)


def test_ward_bad_input_is_a_clear_error():
    with pytest.raises(DiffattrError, match="number of clusters"):
        ward_clusters(np.zeros((5, 3)), 6)
    with pytest.raises(DiffattrError, match="cosine"):
        ward_clusters(np.ones((5, 3)), 2, similarity="euclid")


# ----------------------------------------------------------------------------- aesthetic


def _head(tmp_path, w, b, name="head.safetensors", keys=("weight", "bias")):
    from safetensors.torch import save_file

    state = {
        keys[0]: torch.tensor([w], dtype=torch.float32),
        keys[1]: torch.tensor([b], dtype=torch.float32),
    }
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(state, path)
    else:
        torch.save(state, path)
    return path


def test_head_score_is_w_dot_normalised_embedding_plus_b(tmp_path):
    w = np.zeros(768)
    w[0], w[1] = 3.0, 4.0
    path = _head(tmp_path, w.tolist(), 1.5)
    weight, bias = load_head(path)
    e = np.zeros((2, 768))
    e[0, 0] = 10.0  # unit direction e0 -> 3 + 1.5
    e[1, :2] = [3.0, 4.0]  # (0.6, 0.8) -> 0.6 * 3 + 0.8 * 4 + 1.5 = 6.5
    np.testing.assert_allclose(aesthetic_scores(e, weight, bias), [4.5, 6.5], rtol=1e-6)
    # The same head as a torch state dict with LAION's prefixes-free keys, loaded safely.
    pth = _head(tmp_path, w.tolist(), 1.5, "sa_0_4_vit_l_14_linear.pth")
    w2, b2 = load_head(pth)
    np.testing.assert_allclose(w2, weight)
    assert b2 == pytest.approx(bias)


def test_statistics_of_scores():
    scores = np.arange(1, 101, dtype=float)
    assert statistic(scores, "mean") == pytest.approx(50.5)
    assert statistic(scores, "p50") == pytest.approx(50.5)
    assert statistic(scores, "p90") == pytest.approx(np.percentile(scores, 90))
    with pytest.raises(DiffattrError, match="unknown statistic"):
        statistic(scores, "p99")


def test_bad_heads_are_clear_errors(tmp_path):
    with pytest.raises(DiffattrError, match="aesthetic head not found"):
        load_head(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(DiffattrError, match="cannot read aesthetic head"):
        load_head(tmp_path / "junk.pth")
    wide = _head(tmp_path, [[0.0] * 768] * 2, 0.0, "two.safetensors")
    with pytest.raises(DiffattrError, match="not a linear"):
        load_head(wide)
    weight, bias = load_head(_head(tmp_path, [1.0] * 512, 0.0, "b32.safetensors"))
    with pytest.raises(DiffattrError, match="768"):
        aesthetic_scores(np.ones((2, 768)), weight, bias)


def test_pickled_objects_are_refused(tmp_path):
    """weights_only=True: a .pth holding arbitrary Python objects is not unpickled."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(DiffattrError, match="cannot read aesthetic head"):
        load_head(path)
