"""tree-shapley: Shapley values of a gradient-boosted-tree surrogate (SurrogateSHAP)."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from diffattr.coalitions import UniformSampler
from diffattr.errors import DiffattrError
from diffattr.estimators import all_subsets, fit, shapley_from_table

pytest.importorskip("xgboost")
pytest.importorskip("shap")

N = 6


def interaction_game(z: np.ndarray) -> np.ndarray:
    """Additive weights, a pair term (+2 on players 0, 1), a triple (-1.5 on 2, 3, 4)."""
    z = np.atleast_2d(z).astype(float)
    w = np.array([0.5, -1.0, 2.0, 0.3, -0.7, 1.2])
    return z @ w + 2.0 * z[:, 0] * z[:, 1] - 1.5 * z[:, 2] * z[:, 3] * z[:, 4]


def test_exact_on_an_additive_game_from_a_complete_table():
    w = np.array([0.5, -1.0, 2.0, 0.3, -0.7, 1.2])
    z = all_subsets(N)
    y = 3.0 + z @ w
    att = fit("tree-shapley", z[1:-1], y[1:-1], v0=y[0], v1=y[-1], use_exact=False, n_bootstrap=0)
    np.testing.assert_allclose(att.values, w, atol=2e-3)
    assert att.settings["exact"] is False and att.settings["surrogate_r2"] > 0.9999


def test_stumps_are_exact_on_an_additive_game_from_a_sample():
    # depth-1 trees sum to an additive function: a sample that separates the players is enough
    w = np.array([0.5, -1.0, 2.0, 0.3, -0.7, 1.2])
    z = UniformSampler(N, seed=3).sample(24)
    y = 3.0 + z @ w
    att = fit(
        "tree-shapley", z, y, v0=3.0, v1=3.0 + w.sum(), max_depth=1, subsample=1.0, n_bootstrap=0
    )
    np.testing.assert_allclose(att.values, w, atol=2e-3)


def test_known_interactions_are_recovered():
    z = all_subsets(N)
    y = interaction_game(z)
    att = fit("tree-shapley", z[1:-1], y[1:-1], v0=y[0], v1=y[-1], use_exact=False, n_bootstrap=0)
    np.testing.assert_allclose(att.values, shapley_from_table(y), atol=5e-3)
    inter = np.array(att.settings["interactions"])
    assert inter.shape == (N, N)
    np.testing.assert_allclose(inter, inter.T, atol=1e-12)
    np.testing.assert_allclose(inter.sum(axis=1), att.values, atol=1e-9)  # rows sum to phi
    # shap's convention: half the Shapley interaction index off the diagonal
    assert inter[0, 1] == pytest.approx(1.0, abs=5e-3)  # a pair term of 2
    for i, j in [(2, 3), (2, 4), (3, 4)]:  # a triple of -1.5: index -1.5 / 2 each pair
        assert inter[i, j] == pytest.approx(-0.375, abs=5e-3)
    assert np.abs(inter[5, :5]).max() < 5e-3  # player 5 interacts with no one


def test_tree_values_match_shap_interventional_treeshap():
    import shap
    import xgboost

    from diffattr.estimators.tree_shapley import leaf_terms, unanimity_values

    z = UniformSampler(N, seed=1).sample(40).astype(np.float32)
    y = interaction_game(z)
    model = xgboost.XGBRegressor(n_estimators=50, max_depth=4, random_state=0).fit(z, y)
    explainer = shap.TreeExplainer(
        model, data=np.zeros((1, N), np.float32), feature_perturbation="interventional"
    )
    expected = explainer.shap_values(np.ones((1, N), np.float32)).reshape(-1)
    phi, sii = unanimity_values(leaf_terms(model.get_booster(), N), N)
    np.testing.assert_allclose(phi, expected, atol=1e-5)
    # and the values sum to f(1) - f(0) of the fitted trees
    ends = model.predict(np.array([[0] * N, [1] * N], np.float32))
    assert phi.sum() == pytest.approx(float(ends[1] - ends[0]), abs=1e-4)


def test_efficiency_is_exact_and_the_bootstrap_gives_a_standard_error():
    z = UniformSampler(N, seed=2).sample(40)
    y = interaction_game(z) + 0.2 * np.random.default_rng(0).normal(size=40)
    att = fit("tree-shapley", z, y, v0=-1.0, v1=7.0, n_bootstrap=8, n_estimators=100)
    assert att.values.sum() == pytest.approx(8.0, abs=1e-9)
    assert att.settings["stderr_method"] == "bootstrap"
    assert np.isfinite(att.stderr).all() and (att.stderr > 0).all()
    again = fit("tree-shapley", z, y, v0=-1.0, v1=7.0, n_bootstrap=8, n_estimators=100)
    np.testing.assert_array_equal(att.values, again.values)  # deterministic for a seed


def test_players_the_rows_never_separate_are_an_error():
    z = UniformSampler(N, seed=0).sample(30)
    z[:, 4] = z[:, 1]
    with pytest.raises(DiffattrError, match="players 'b' and 'e' are in exactly the same"):
        fit("tree-shapley", z, z.sum(axis=1), v0=0.0, v1=6.0, names=list("abcdef"))


def test_missing_extra_is_one_line(monkeypatch):
    real = builtins.__import__

    def no_xgboost(name, *args, **kwargs):
        if name == "xgboost":
            raise ImportError("no xgboost")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_xgboost)
    z = UniformSampler(N, seed=0).sample(30)
    with pytest.raises(DiffattrError, match=r"pip install 'diffattr\[tree\]'$"):
        fit("tree-shapley", z, z.sum(axis=1), v0=0.0, v1=6.0, use_exact=False)
