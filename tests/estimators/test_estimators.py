"""Estimators against known truths: textbook games, brute-force definitions, exact values."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from diffattr.coalitions import (
    AddOneInSampler,
    DatamodelSampler,
    LeaveOneOutSampler,
    PermutationSampler,
    ShapleyKernelSampler,
    UniformSampler,
)
from diffattr.errors import DiffattrError
from diffattr.estimators import (
    ESTIMATORS,
    Attribution,
    all_subsets,
    banzhaf_from_table,
    convergence_report,
    exact_banzhaf,
    exact_shapley,
    fit,
    read_table_csv,
    shapley_from_table,
    write_table_csv,
)

# --------------------------------------------------------------------------- games


def codes_of(masks: np.ndarray) -> np.ndarray:
    return masks.astype(np.int64) @ (1 << np.arange(masks.shape[1], dtype=np.int64))


class TableGame:
    """A random non-additive game: an independent random value for every subset."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.table = np.random.default_rng(seed).normal(size=1 << n)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        return self.table[codes_of(np.atleast_2d(masks))]

    def one(self, mask: np.ndarray) -> float:
        return float(self(mask)[0])

    @property
    def v0(self) -> float:
        return float(self.table[0])

    @property
    def v1(self) -> float:
        return float(self.table[-1])


def voting_game(weights, quota):
    w = np.asarray(weights, dtype=float)
    return lambda mask: float(np.asarray(mask, dtype=float) @ w >= quota)


def brute_shapley(v, n):
    """Average marginal contribution over all n! orders (the definition)."""
    phi = np.zeros(n)
    perms = list(itertools.permutations(range(n)))
    for perm in perms:
        mask = np.zeros(n, dtype=bool)
        before = v(mask)
        for i in perm:
            mask[i] = True
            after = v(mask)
            phi[i] += after - before
            before = after
    return phi / len(perms)


def brute_banzhaf(v, n):
    """Mean marginal contribution over all subsets of the other players (the definition)."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            for subset in itertools.combinations(others, r):
                mask = np.zeros(n, dtype=bool)
                mask[list(subset)] = True
                without = v(mask)
                mask[i] = True
                phi[i] += v(mask) - without
        phi[i] /= 2 ** (n - 1)
    return phi


# --------------------------------------------------------------------------- exact values


def test_exact_values_of_an_additive_game_are_its_weights():
    w = np.array([0.3, -1.2, 2.0, 0.0, 5.5])
    np.testing.assert_allclose(exact_shapley(lambda m: 7.0 + m @ w, 5), w, atol=1e-12)
    np.testing.assert_allclose(exact_banzhaf(lambda m: 7.0 + m @ w, 5), w, atol=1e-12)


def test_weighted_voting_game_by_hand():
    # weights [3,2,1,1], quota 4. Player A (3) is pivotal after any coalition of weight 1..3
    # of the others: 3 singletons and 3 pairs, each with Shapley weight 1!2!/4! = 1/12 -> 1/2.
    # B, C, D are pivotal after {A} (1/12) and after one pair of weight 2 or 3 (1/12) -> 1/6.
    v = voting_game([3, 2, 1, 1], 4)
    np.testing.assert_allclose(exact_shapley(v, 4), [1 / 2, 1 / 6, 1 / 6, 1 / 6], atol=1e-12)
    # Banzhaf: swings / 2^(n-1) = 6/8 for A and 2/8 for each of the others
    np.testing.assert_allclose(exact_banzhaf(v, 4), [3 / 4, 1 / 4, 1 / 4, 1 / 4], atol=1e-12)


def test_glove_game_textbook_values():
    # one left glove (player 0), two right gloves; a pair is worth 1: Shapley (2/3, 1/6, 1/6)
    def v(mask):
        return float(mask[0] and (mask[1] or mask[2]))

    np.testing.assert_allclose(exact_shapley(v, 3), [2 / 3, 1 / 6, 1 / 6], atol=1e-12)
    np.testing.assert_allclose(exact_banzhaf(v, 3), [3 / 4, 1 / 4, 1 / 4], atol=1e-12)


def test_exact_matches_brute_force_definitions_on_a_random_game():
    game = TableGame(6, seed=11)
    phi = exact_shapley(game.one, 6)
    np.testing.assert_allclose(phi, brute_shapley(game.one, 6), atol=1e-12)
    np.testing.assert_allclose(phi.sum(), game.v1 - game.v0, atol=1e-12)
    np.testing.assert_allclose(exact_banzhaf(game, 6, vectorized=True), brute_banzhaf(game.one, 6))
    np.testing.assert_allclose(shapley_from_table(game.table), phi, atol=1e-12)
    np.testing.assert_allclose(banzhaf_from_table(game.table), brute_banzhaf(game.one, 6))


def test_exact_refuses_too_many_players():
    with pytest.raises(DiffattrError, match="too many"):
        exact_shapley(lambda m: 0.0, 30)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("shapley", "shapley"),
        ("permutation-shapley", "shapley"),
        ("banzhaf", "banzhaf"),
        ("banzhaf-msr", "banzhaf"),
    ],
)
def test_full_enumeration_tables_give_exact_values(name, kind):
    game = TableGame(5, seed=2)
    truth = brute_shapley(game.one, 5) if kind == "shapley" else brute_banzhaf(game.one, 5)
    z = all_subsets(5)
    rng = np.random.default_rng(0)
    z = np.vstack([z, z[rng.integers(0, 32, 20)]])[rng.permutation(52)]  # shuffled, duplicates
    att = fit(name, z, game(z))
    np.testing.assert_allclose(att.values, truth, atol=1e-12)
    assert att.settings["exact"] is True and (att.stderr == 0).all()
    # an explicit v1 overrides the table's full row
    if kind == "shapley":
        att = fit(name, z, game(z), v1=game.v1 + 1.0)
        assert att.values.sum() == pytest.approx(game.v1 + 1.0 - game.v0, abs=1e-12)


# --------------------------------------------------------------------------- KernelSHAP


@pytest.mark.parametrize("paired", [True, False])
def test_kernel_shap_within_its_standard_error(paired):
    game = TableGame(8, seed=4)
    truth = shapley_from_table(game.table)
    z = ShapleyKernelSampler(8, seed=1, paired=paired, replace=True).sample(6000)
    # 6000 draws hold all 254 coalitions; use_exact=False keeps the sampling estimator
    att = fit("shapley", z, game(z), v0=game.v0, v1=game.v1, use_exact=False)
    assert att.settings["paired"] is paired and att.settings["stderr_method"] == "sandwich"
    assert att.values.sum() == pytest.approx(game.v1 - game.v0, abs=1e-9)
    assert (np.abs(att.values - truth) < 4 * att.stderr + 1e-3).all()
    assert att.stderr.max() < 0.1
    boot = fit(
        "shapley", z, game(z), v0=game.v0, v1=game.v1, n_bootstrap=60, seed=3, use_exact=False
    )
    np.testing.assert_allclose(boot.values, att.values)
    assert boot.settings["stderr_method"] == "bootstrap"
    np.testing.assert_allclose(boot.stderr, att.stderr, rtol=0.5)


def test_kernel_shap_standard_error_is_calibrated():
    # the spread of estimates over independent runs matches the closed-form stderr
    game = TableGame(6, seed=8)
    estimates, stderrs = [], []
    for seed in range(30):
        z = ShapleyKernelSampler(6, seed=seed, paired=True, replace=True).sample(300)
        att = fit("shapley", z, game(z), v0=game.v0, v1=game.v1)
        estimates.append(att.values)
        stderrs.append(att.stderr)
    ratio = np.std(estimates, axis=0, ddof=1) / np.mean(stderrs, axis=0)
    assert 0.6 < ratio.mean() < 1.5


def test_kernel_shap_recovers_an_additive_game_exactly():
    w = np.random.default_rng(0).normal(size=12)
    z = ShapleyKernelSampler(12, seed=0).sample(60)
    att = fit("shapley", z, 1.0 + z @ w, v0=1.0, v1=1.0 + w.sum())
    np.testing.assert_allclose(att.values, w, atol=1e-9)
    np.testing.assert_allclose(att.stderr, 0.0, atol=1e-6)


def test_kernel_shap_ignores_empty_and_full_rows_and_reads_v0_v1_from_them():
    game = TableGame(6, seed=1)
    z = ShapleyKernelSampler(6, seed=2, paired=True, replace=True).sample(400)
    att = fit("shapley", z, game(z), v0=game.v0, v1=game.v1)
    ends = np.array([[False] * 6, [True] * 6])
    z2 = np.vstack([ends, z])
    att2 = fit("shapley", z2, game(z2))
    np.testing.assert_allclose(att2.values, att.values, atol=1e-12)
    assert att2.settings["rows_excluded"] == 2 and att2.settings["paired"] is True


def test_kernel_shap_errors():
    z = ShapleyKernelSampler(6, seed=2, replace=True).sample(50)
    y = np.arange(50.0)
    with pytest.raises(DiffattrError, match="needs v0"):
        fit("shapley", z, y, v1=1.0)
    with pytest.raises(DiffattrError, match="needs v1"):
        fit("shapley", z, y, v0=1.0)
    unpaired = {"name": "shapley-kernel", "paired": False}
    with pytest.raises(
        DiffattrError, match=r"4 rows over 6 players is not identified \(rank \d < 7"
    ):
        fit("shapley", z[:4], y[:4], v0=0.0, v1=1.0, sampler=unpaired)
    with pytest.raises(DiffattrError, match="not used: 48 rows without their pair partner"):
        fit("shapley", z, y, v0=0.0, v1=1.0, paired=True)
    with pytest.raises(DiffattrError, match="no row has its complement"):
        fit("shapley", z[:7], y[:7], v0=0.0, v1=1.0, paired=True)
    with pytest.raises(
        DiffattrError, match="unknown setting 'bootstrap' .did you mean 'n_bootstrap'"
    ):
        fit("shapley", z, y, v0=0.0, v1=1.0, bootstrap=3)


# --------------------------------------------------------------------------- permutation


def test_permutation_shapley_within_its_standard_error():
    game = TableGame(7, seed=5)
    truth = shapley_from_table(game.table)
    z = PermutationSampler(7, seed=0).sample_permutations(800)
    att = fit("permutation-shapley", z, game(z), v0=game.v0, v1=game.v1, use_exact=False)
    assert att.settings["permutations"] == 800
    assert att.values.sum() == pytest.approx(game.v1 - game.v0, abs=1e-9)
    assert (np.abs(att.values - truth) < 4 * att.stderr + 1e-9).all()


def test_permutation_shapley_reads_chains_and_skips_other_rows():
    game = TableGame(5, seed=6)
    sampler = PermutationSampler(5, seed=1)
    z = sampler.sample(4 * 10 + 2)  # ten chains and the start of an eleventh
    ends = np.array([[False] * 5, [True] * 5])
    z2 = np.vstack([ends, z])
    att = fit("permutation-shapley", z2, game(z2))
    assert att.settings["permutations"] == 10 and att.settings["rows_ignored"] == 4
    # one chain telescopes: its marginal contributions are the estimate
    one = fit("permutation-shapley", z[:4], game(z[:4]), v0=game.v0, v1=game.v1)
    perm = sampler.permutation(0)
    values = [game.v0, *game(z[:4]), game.v1]
    expected = np.empty(5)
    expected[perm] = np.diff(values)
    np.testing.assert_allclose(one.values, expected)
    assert np.isnan(one.stderr).all()
    with pytest.raises(DiffattrError, match="no complete permutation chain"):
        fit("permutation-shapley", z[::-1][:8], game(z[::-1][:8]), v0=0.0, v1=1.0)


# --------------------------------------------------------------------------- Banzhaf


@pytest.mark.parametrize("name", ["banzhaf", "banzhaf-msr"])
def test_banzhaf_estimators_within_their_standard_error(name):
    game = TableGame(10, seed=7)
    truth = banzhaf_from_table(game.table)
    z = UniformSampler(10, seed=3, replace=True).sample(4000)
    att = fit(name, z, game(z), use_exact=False)
    assert att.settings["exact"] is False
    assert (np.abs(att.values - truth) < 4 * att.stderr + 1e-9).all()
    assert att.stderr.max() < 0.06
    boot = fit(name, z, game(z), use_exact=False, n_bootstrap=50)
    np.testing.assert_allclose(boot.stderr, att.stderr, rtol=0.5)


def test_banzhaf_regression_is_exact_on_additive_games_and_msr_is_unbiased():
    w = np.random.default_rng(1).normal(size=9)
    z = UniformSampler(9, seed=0).sample(300)
    np.testing.assert_allclose(fit("banzhaf", z, 2.0 + z @ w).values, w, atol=1e-9)
    msr = fit("banzhaf-msr", z, 2.0 + z @ w)
    assert (np.abs(msr.values - w) < 4 * msr.stderr).all()


def test_banzhaf_errors_name_the_player():
    z = UniformSampler(4, seed=0, replace=True).sample(40)
    z[:, 2] = True
    with pytest.raises(DiffattrError, match="player 'c' is in every row"):
        fit("banzhaf-msr", z, np.arange(40.0), names=["a", "b", "c", "d"])
    with pytest.raises(DiffattrError, match="at least n\\+2"):
        fit("banzhaf", z[:4], np.arange(4.0))


# --------------------------------------------------------------------------- datamodel


def test_datamodel_recovers_a_linear_game():
    rng = np.random.default_rng(3)
    w = rng.normal(size=10)
    z = UniformSampler(10, seed=1, replace=True).sample(2000)
    y = 0.5 + z @ w + 0.05 * rng.normal(size=2000)
    att = fit("datamodel", z, y, n_bootstrap=30)
    np.testing.assert_allclose(att.values, w, atol=0.02)
    assert (att.stderr > 0).all() and (att.stderr < 0.01).all()
    # fixed-size coalitions identify the weights up to a common shift (module doc)
    z = DatamodelSampler(10, seed=1, alpha=0.5, replace=True).sample(2000)
    y = 0.5 + z @ w + 0.05 * rng.normal(size=2000)
    att = fit("datamodel", z, y)
    assert att.settings["fixed_size"] is True and np.isnan(att.stderr).all()
    np.testing.assert_allclose(att.values - att.values.mean(), w - w.mean(), atol=0.02)


def test_datamodel_cross_validation_prefers_strong_penalty_for_pure_noise():
    rng = np.random.default_rng(0)
    z = UniformSampler(20, seed=0).sample(60)
    att = fit("datamodel", z, rng.normal(size=60))
    fixed = fit("datamodel", z, rng.normal(size=60), ridge=1e-8)
    assert np.abs(att.values).max() < np.abs(fixed.values).max()


# --------------------------------------------------------------------------- LOO / AOI


def test_loo_and_aoi_are_exact_and_order_free():
    game = TableGame(6, seed=9)
    rng = np.random.default_rng(0)
    loo_rows = LeaveOneOutSampler(6).sample(6)
    aoi_rows = AddOneInSampler(6).sample(6)
    noise = UniformSampler(6, seed=0).sample(10)
    z = np.vstack([loo_rows, aoi_rows, noise, [[True] * 6], [[False] * 6]])
    z = z[rng.permutation(z.shape[0])]
    loo = fit("loo", z, game(z))
    aoi = fit("aoi", z, game(z))
    np.testing.assert_allclose(loo.values, game.v1 - game(loo_rows), atol=1e-12)
    np.testing.assert_allclose(aoi.values, game(aoi_rows) - game.v0, atol=1e-12)
    assert np.isnan(loo.stderr).all()
    explicit = fit("loo", loo_rows, game(loo_rows), v1=10.0)
    np.testing.assert_allclose(explicit.values, 10.0 - game(loo_rows))


def test_loo_replicates_give_standard_errors():
    rows = np.vstack([LeaveOneOutSampler(3).sample(3)] * 2)
    y = np.array([1.0, 2.0, 3.0, 1.2, 2.2, 3.4])
    att = fit("loo", rows, y, v1=5.0)
    np.testing.assert_allclose(att.values, [5 - 1.1, 5 - 2.1, 5 - 3.2])
    np.testing.assert_allclose(att.stderr, [0.1, 0.1, 0.2])


def test_loo_and_aoi_missing_rows_name_the_player():
    rows = LeaveOneOutSampler(4).sample(4)
    with pytest.raises(DiffattrError, match="all players except 'p2'"):
        fit("loo", np.delete(rows, 2, axis=0), np.ones(3), v1=1.0, names=["p0", "p1", "p2", "p3"])
    with pytest.raises(DiffattrError, match="only 'b'"):
        fit("aoi", AddOneInSampler(3).sample(1), np.ones(1), v0=0.0, names=["a", "b", "c"])
    with pytest.raises(DiffattrError, match="needs v1"):
        fit("loo", rows, np.ones(4))


# --------------------------------------------------------------------------- common behaviour


def test_multiple_behaviors_give_one_attribution_each():
    game_a, game_b = TableGame(6, seed=1), TableGame(6, seed=2)
    z = ShapleyKernelSampler(6, seed=0, paired=True, replace=True).sample(300)
    y = np.column_stack([game_a(z), game_b(z)])
    atts = fit(
        "shapley",
        z,
        y,
        v0=[game_a.v0, game_b.v0],
        v1=[game_a.v1, game_b.v1],
        behaviors=["fid", "loss"],
    )
    assert [a.behavior for a in atts] == ["fid", "loss"]
    single = fit("shapley", z, game_b(z), v0=game_b.v0, v1=game_b.v1)
    np.testing.assert_allclose(atts[1].values, single.values, atol=1e-10)
    np.testing.assert_allclose(atts[1].stderr, single.stderr, rtol=1e-6)
    with pytest.raises(DiffattrError, match="2 entries for 3 value columns"):
        fit("shapley", z, np.column_stack([y, y[:, 0]]), v0=[0.0, 0.0], v1=1.0)


@pytest.mark.parametrize(
    ("masks", "values", "match"),
    [
        (np.ones((3, 2)), np.ones(4), "3 rows but values have 4"),
        (np.full((3, 2), 2), np.ones(3), "must be 0/1"),
        (np.ones(3), np.ones(3), "2-D"),
        (np.ones((2, 2)), [1.0, np.nan], "finite"),
        (np.zeros((0, 3)), np.zeros(0), "no rows"),
    ],
)
def test_input_errors(masks, values, match):
    with pytest.raises(DiffattrError, match=match):
        fit("banzhaf-msr", masks, values)


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(DiffattrError, match="unknown estimator 'nope'"):
        ESTIMATORS.get("nope")
    assert set(ESTIMATORS.names()) == {
        "shapley",
        "shapley-cv",
        "tree-shapley",
        "permutation-shapley",
        "banzhaf",
        "banzhaf-msr",
        "datamodel",
        "loo",
        "aoi",
    }


# --------------------------------------------------------------------------- Attribution


def test_attribution_ranking_io_roundtrip(tmp_path):
    att = Attribution(
        values=np.array([0.5, 2.0, -1.0]),
        stderr=np.array([0.1, np.nan, 0.3]),
        names=["a", "b,c", "d"],
        estimator="shapley",
        settings={"rows": 10},
        behavior="fid",
    )
    np.testing.assert_array_equal(att.ranking(), [1, 0, 2])
    s = att.sorted()
    assert s.names == ["b,c", "a", "d"] and s.values.tolist() == [2.0, 0.5, -1.0]
    att.to_csv(tmp_path / "a.csv")
    header = (tmp_path / "a.csv").read_text().splitlines()[0]
    assert header == "player,value,stderr"
    back = Attribution.from_csv(tmp_path / "a.csv")
    assert back.names == att.names
    np.testing.assert_array_equal(back.values, att.values)
    np.testing.assert_array_equal(back.stderr, att.stderr)
    att.to_json(tmp_path / "a.json")
    d = json.loads((tmp_path / "a.json").read_text())
    assert d["stderr"][1] is None and d["behavior"] == "fid"
    again = Attribution.from_json(tmp_path / "a.json")
    np.testing.assert_array_equal(again.stderr, att.stderr)
    assert again.settings == {"rows": 10} and again.estimator == "shapley"
    with pytest.raises(DiffattrError):
        Attribution(values=np.zeros(2), stderr=np.zeros(3), names=["a", "b"], estimator="x")


# --------------------------------------------------------------------------- convergence


def test_convergence_report_settles():
    game = TableGame(6, seed=3)
    game.table = 0.3 * game.table + all_subsets(6) @ np.arange(6.0)  # well-separated values
    z = ShapleyKernelSampler(6, seed=0, paired=True, replace=True).sample(4000)
    report = convergence_report(
        "shapley", z, game(z), v0=game.v0, v1=game.v1, steps=[4, 500, 4000], use_exact=False
    )
    assert [r["rows"] for r in report] == [4, 500, 4000]
    assert report[0]["error"] is not None and report[0]["values"] is None
    assert report[1]["spearman"] is None and report[1]["error"] is None
    assert report[2]["spearman"] == pytest.approx(1.0)
    assert report[2]["mean_stderr"] < report[1]["mean_stderr"]
    json.dumps(report)  # JSON-ready
    truth = shapley_from_table(game.table)
    assert np.abs(np.array(report[2]["values"]) - truth).max() < 0.1
    auto = convergence_report("permutation-shapley", *_perm_table(game), steps=3)
    assert len(auto) == 3 and auto[-1]["rows"] == 500


def _perm_table(game):
    z = PermutationSampler(6, seed=0).sample_permutations(100)
    return z, game(z), game.v0, game.v1


# --------------------------------------------------------------------------- tables


def test_table_csv_roundtrip_and_endpoints(tmp_path):
    game = TableGame(4, seed=0)
    z = np.vstack([[[False] * 4], UniformSampler(4, seed=0).sample(10), [[True] * 4]])
    path = tmp_path / "t.csv"
    write_table_csv(path, z, game(z), names=["w", "x", "y", "z"])
    tbl = read_table_csv(path)
    np.testing.assert_array_equal(tbl.masks, z)
    np.testing.assert_allclose(tbl.fit_values(), game(z))
    assert tbl.names == ["w", "x", "y", "z"] and tbl.behaviors == [None]
    assert tbl.fit_endpoint("v0") == pytest.approx(game.v0)
    assert tbl.fit_endpoint("v1") == pytest.approx(game.v1)
    assert read_table_csv(path, v0=3.0).fit_endpoint("v0") == 3.0


def test_table_csv_several_behaviors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,value:fid,value:loss\n0,0,1,2\n1,1,3,5\n1,0,2,2.5\n")
    tbl = read_table_csv(path)
    assert tbl.behaviors == ["fid", "loss"] and tbl.fit_values().shape == (3, 2)
    assert tbl.v0 is None and tbl.v1 is None  # no explicit endpoints: from the rows
    np.testing.assert_allclose(tbl.endpoint("v0")[0], [1, 2])
    np.testing.assert_allclose(tbl.endpoint("v1")[0], [3, 5])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b,score\n0,1,2\n", "no 'value' column"),
        ("a,b,value\n0,2,1\n", "line 2, player column 'b': expected 0 or 1"),
        ("a,b,value\n\n0,1,1\n1,1,x\n", "line 4, column 'value': value 'x' is not a number"),
        ("a,b,value\n0,1,nan\n", "not finite"),
        ("", "is empty"),
        ("a,b,value\n", "no rows"),
        ("a,b,value\n0,1\n", "has 2 cells"),
        ("a,a,value\n0,1,1\n", "appears more than once"),
    ],
)
def test_table_csv_errors(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DiffattrError, match=match):
        read_table_csv(path)


def test_missing_table_file(tmp_path):
    with pytest.raises(DiffattrError, match="does not exist"):
        read_table_csv(tmp_path / "none.csv")


def test_shapley_weights_sum_to_one():
    from diffattr.estimators.exact import shapley_weights

    for n in (1, 2, 5, 12):
        w = shapley_weights(n)
        assert sum(w[s] * math.comb(n - 1, s) for s in range(n)) == pytest.approx(1.0)


def test_blas_gram_helpers_match_plain_products():
    from diffattr.estimators.kernel_rows import kernel_gram
    from diffattr.estimators.linalg import Solver, gram_binary, gram_float

    rng = np.random.default_rng(0)
    z = rng.random((700, 37)) < 0.4
    zf = z.astype(float)
    np.testing.assert_array_equal(gram_binary(z, chunk_rows=64), zf.T @ zf)
    pairs = np.empty((600, 37), dtype=bool)
    pairs[0::2], pairs[1::2] = z[:300], ~z[:300]
    pf = pairs.astype(float)
    np.testing.assert_array_equal(kernel_gram(pairs, paired=True, chunk_rows=64), pf.T @ pf)
    g = rng.normal(size=(700, 37))
    for single, tol in ((False, 1e-10), (True, 1e-4)):
        gg, total, rows = gram_float((g[s : s + 100] for s in range(0, 700, 100)), 37, single)
        np.testing.assert_allclose(gg, g.T @ g, rtol=tol, atol=tol * 700)
        np.testing.assert_allclose(total, g.sum(axis=0), atol=1e-9)
        assert rows == 700
    a = zf.T @ zf + np.eye(37)
    np.testing.assert_allclose(Solver(a).inverse(), np.linalg.inv(a), atol=1e-12)
