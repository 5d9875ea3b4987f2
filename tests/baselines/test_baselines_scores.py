"""Kernel scores and the aggregation of local scores to players, against hand computations."""

import numpy as np
import pytest
import torch

from diffattr.baselines.scores import (
    aggregate_local,
    cosine_scores,
    gradient_scores,
    kernel_features,
    player_members,
)
from diffattr.data.players import Players
from diffattr.errors import DiffattrError

LOCAL = np.array(
    [
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [3.0, 0.0, -1.0, 2.0, 1.0],
    ]
)
MEMBERS = [np.array([0, 2]), np.array([1]), np.array([3, 4])]


def test_sum_mean_max_match_hand_computation():
    # mean over generated images: [2, 1, 1, 3, 3]
    values, stderr = aggregate_local(LOCAL, MEMBERS, "sum")
    np.testing.assert_allclose(values, [3.0, 1.0, 6.0])
    # per generated image sums: g0 = [4, 2, 9], g1 = [2, 0, 3]
    np.testing.assert_allclose(stderr, np.std([[4, 2, 9], [2, 0, 3]], axis=0, ddof=1) / np.sqrt(2))
    values, _ = aggregate_local(LOCAL, MEMBERS, "mean")
    np.testing.assert_allclose(values, [1.5, 1.0, 3.0])
    values, stderr = aggregate_local(LOCAL, MEMBERS, "max")
    np.testing.assert_allclose(values, [2.0, 1.0, 3.0])
    assert np.isnan(stderr).all()
    # max per generated image first: g0 = [3, 2, 5], g1 = [3, 0, 2] -> mean [3, 1, 3.5]
    values, stderr = aggregate_local(LOCAL, MEMBERS, "max", per_generated=True)
    np.testing.assert_allclose(values, [3.0, 1.0, 3.5])
    np.testing.assert_allclose(stderr, [0.0, 1.0, 1.5])
    # sum and mean do not depend on the order
    for how in ("sum", "mean"):
        a = aggregate_local(LOCAL, MEMBERS, how)[0]
        b = aggregate_local(LOCAL, MEMBERS, how, per_generated=True)[0]
        np.testing.assert_allclose(a, b)


def test_unknown_aggregation_is_one_line_error():
    with pytest.raises(DiffattrError, match="aggregation") as err:
        aggregate_local(LOCAL, MEMBERS, "median")
    assert "\n" not in str(err.value)


def test_single_generated_image_has_no_stderr():
    values, stderr = aggregate_local(LOCAL[:1], MEMBERS, "sum")
    np.testing.assert_allclose(values, [4.0, 2.0, 9.0])
    assert np.isnan(stderr).all()


def test_player_members_from_players_and_lists():
    players = Players(("a", "b"), (np.array([0, 2]), np.array([1])), "contributor", 3)
    names, members = player_members(players, 3)
    assert names == ["a", "b"] and [m.tolist() for m in members] == [[0, 2], [1]]
    names, members = player_members([[0], [1, 2]], 3)
    assert names == ["0", "1"]
    with pytest.raises(DiffattrError, match="outside"):
        player_members([[0], [3]], 3)
    with pytest.raises(DiffattrError, match="cover 3"):
        player_members(players, 4)


def test_kernel_scores_match_explicit_formulas():
    g = torch.Generator().manual_seed(0)
    for n, k in ((6, 4), (3, 8)):  # primal (N >= k) and dual (N < k) forms
        phi = torch.randn(n, k, generator=g, dtype=torch.float64)
        psi = torch.randn(5, k, generator=g, dtype=torch.float64)
        lam = 0.3
        kinv = torch.linalg.inv(phi.T @ phi + lam * torch.eye(k, dtype=torch.float64))
        expect = (psi @ kinv @ phi.T).numpy()
        np.testing.assert_allclose(gradient_scores(phi, psi, "trak", lam), expect, rtol=1e-8)
        np.testing.assert_allclose(kernel_features(phi, lam), (kinv @ phi.T).numpy(), rtol=1e-8)
        rel = expect / (kinv @ phi.T).norm(dim=0).numpy()[None]
        np.testing.assert_allclose(gradient_scores(phi, psi, "relative", lam), rel, rtol=1e-8)
        ren = expect / phi.norm(dim=1).numpy()[None]
        np.testing.assert_allclose(gradient_scores(phi, psi, "renormalized", lam), ren, rtol=1e-8)
        cos = torch.nn.functional.cosine_similarity(psi[:, None], phi[None], dim=-1).numpy()
        np.testing.assert_allclose(gradient_scores(phi, psi, "cosine"), cos, rtol=1e-8)


def test_zero_regularization_on_rank_deficient_features_is_finite():
    phi = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    psi = torch.tensor([[1.0, 1.0, 0.0]])
    out = gradient_scores(phi, psi, "trak", 0.0)
    np.testing.assert_allclose(out, [[0.5, 0.5]], atol=1e-8)


def test_cosine_scores_of_flattened_images():
    a = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 2.0]]]])
    b = torch.tensor([[[[3.0, 0.0]]], [[[1.0, 1.0]]]])
    np.testing.assert_allclose(cosine_scores(a, b), [[1.0, 2**-0.5], [0.0, 2**-0.5]])
