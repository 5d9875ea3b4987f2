"""Typed estimator settings: registry, samplers they accept, build(), min_rows, fit(table)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from diffattr.coalitions import LeverageSampler, ShapleyKernelSampler
from diffattr.errors import DiffattrError
from diffattr.estimators import (
    ESTIMATORS,
    BanzhafRegression,
    CoalitionTable,
    Datamodel,
    KernelShap,
    ShapleyCV,
    ShapleySettings,
    fit,
    make_estimator,
)
from diffattr.estimators.settings import CoalitionEstimatorSettings

NAMES = [
    "aoi",
    "banzhaf",
    "banzhaf-msr",
    "datamodel",
    "loo",
    "permutation-shapley",
    "shapley",
    "shapley-cv",
    "tree-shapley",
]


def test_registry_names_and_default_samplers():
    assert ESTIMATORS.names() == NAMES  # coalition estimators only: baselines are apart
    defaults = {name: ESTIMATORS.parse(name).sampler.to_dict() for name in NAMES}
    assert defaults == {
        "aoi": {"name": "add-one-in"},
        "banzhaf": {"name": "uniform", "p": 0.5, "replace": False},
        "banzhaf-msr": {"name": "uniform", "p": 0.5, "replace": False},
        "datamodel": {"name": "datamodel", "alpha": 0.5, "replace": False},
        "loo": {"name": "loo"},
        "permutation-shapley": {"name": "permutation"},
        "shapley": {"name": "shapley-kernel", "paired": True, "replace": False},
        "shapley-cv": {"name": "leverage", "balanced": True},
        "tree-shapley": {"name": "uniform", "p": 0.5, "replace": False},
    }
    for name in NAMES:
        assert issubclass(ESTIMATORS.get(name), CoalitionEstimatorSettings)


def test_settings_round_trip_through_plain_data():
    s = ESTIMATORS.parse(
        {"name": "shapley", "sampler": {"name": "leverage", "balanced": False}, "subsets": 64}
    )
    d = s.to_dict()
    assert d["sampler"] == {"name": "leverage", "balanced": False} and d["subsets"] == 64
    assert ESTIMATORS.parse(d) == s
    assert ESTIMATORS.parse({"name": "banzhaf", "sampler": "banzhaf"}).sampler.name == "uniform"
    assert ESTIMATORS.parse({"name": "aoi", "sampler": "aoi"}).sampler.name == "add-one-in"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"name": "shapley", "sampler": "uniform"},
            "estimators[0].sampler: shapley needs shapley-kernel or leverage rows, got uniform",
        ),
        (
            {"name": "banzhaf", "sampler": "datamodel"},
            "estimators[0].sampler: banzhaf needs uniform rows, got datamodel",
        ),
        (
            {"name": "datamodel", "sampler": {"name": "datamodel", "alpha": 1.5}},
            "estimators[0].sampler.alpha: Input should be less than 1",
        ),
        (
            {"name": "shapley", "sampler": {"name": "leverage", "paired": True}},
            "estimators[0].sampler: unknown setting 'paired' for sampler 'leverage'; known:",
        ),
        (
            {"name": "shapley", "sampler": "nope"},
            "estimators[0].sampler: unknown coalition sampler 'nope'",
        ),
        ({"name": "shapley", "subsets": 0}, "estimators[0].subsets: Input should be greater"),
        (
            {"name": "shapley", "paired": "sometimes"},
            "estimators[0].paired: must be true, false or 'auto', got 'sometimes'",
        ),
        ({"name": "shapley-cv", "size_terms": 9}, "estimators[0].size_terms: Input should be less"),
        ({"name": "datamodel", "ridge": -1}, "estimators[0].ridge: Input should be greater"),
        ({"name": "datamodel", "ridge_grid": [1, -2]}, "estimators[0].ridge_grid: penalties"),
        (
            {"name": "shapley", "stderrr": True},
            "estimators[0].stderrr: unknown setting 'stderrr' (did you mean 'stderr'?)",
        ),
        (
            {"name": "shap"},
            "estimators[0].name: unknown estimator 'shap' (did you mean 'shapley'?)",
        ),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_key(value, message):
    with pytest.raises(DiffattrError) as err:
        ESTIMATORS.parse(value, where="estimators[0]")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ("shapley", KernelShap),
        ({"name": "shapley-cv", "sampler": "leverage"}, ShapleyCV),
        ("banzhaf", BanzhafRegression),
        ({"name": "datamodel", "ridge": 0.5}, Datamodel),
    ],
)
def test_build_returns_the_estimator_holding_its_settings(value, cls):
    settings = ESTIMATORS.parse(value)
    est = settings.build()
    assert type(est) is cls and est.settings is settings and est.name == settings.name
    with pytest.raises(DiffattrError, match="needs ShapleySettings"):
        KernelShap(ESTIMATORS.parse("banzhaf"))


@pytest.mark.parametrize(
    ("value", "n", "rows"),
    [
        # fitted endpoints (the default) add one unknown, drop the constraint: n pairs, or
        # n + 1 unpaired rows
        ("shapley", 10, 20),
        ({"name": "shapley", "sampler": "leverage"}, 10, 20),
        ({"name": "shapley", "sampler": {"name": "shapley-kernel", "paired": False}}, 10, 11),
        ({"name": "shapley", "paired": False}, 10, 11),
        ("shapley-cv", 20, 40),
        ({"name": "shapley", "endpoints": "given"}, 10, 18),
        ({"name": "shapley", "endpoints": "given", "paired": False}, 10, 9),
        ({"name": "shapley-cv", "endpoints": "given"}, 20, 38),
        ("permutation-shapley", 10, 9),
        ("banzhaf", 2000, 2002),
        ("banzhaf-msr", 2000, 2),
        ("datamodel", 2000, 3),
        ("loo", 7, 7),
        ("aoi", 7, 7),
        ("shapley", 1, 0),
    ],
)
def test_min_rows(value, n, rows):
    assert ESTIMATORS.parse(value).build().min_rows(n) == rows


@pytest.mark.parametrize("name", NAMES)
def test_one_row_below_min_rows_cannot_be_fitted(name):
    n = 6
    settings = ESTIMATORS.parse(name)
    est = settings.build()
    need = est.min_rows(n)
    sampler = settings.sampler.build(n, seed=0)
    z = sampler.sample(need - 1)
    y = z.astype(float) @ np.arange(1.0, n + 1)
    with pytest.raises(DiffattrError):
        est.fit(z, y, v0=0.0, v1=21.0)
    # and with enough rows from its own sampler it fits
    z = sampler.sample(max(need, 1) * 4 if sampler.n_required is None else sampler.n_required)
    att = est.fit(z, z.astype(float) @ np.arange(1.0, n + 1), v0=0.0, v1=21.0)
    assert att.values.shape == (n,)


def test_check_rows_refuses_a_plan_before_any_training():
    settings = ESTIMATORS.parse({"name": "shapley", "subsets": 10})
    m = settings.rows_for(default_subsets=48, n_players=10)
    assert m == 10
    with pytest.raises(DiffattrError) as err:
        settings.check_rows(10, m, where="estimators[0]")
    assert str(err.value) == (
        "estimators[0]: 10 coalitions cannot identify shapley values of 10 players; it needs "
        "at least 20 (set subsets >= 20)"
    )
    settings.check_rows(10, 20)
    loo = ESTIMATORS.parse({"name": "loo", "subsets": 3})
    assert loo.rows_for(48, 10) == 10  # the fixed LOO design
    assert ESTIMATORS.parse("banzhaf").rows_for(48, 10) == 48


def test_draw_gives_the_masks_and_pair_ids_a_run_evaluates():
    settings = ESTIMATORS.parse({"name": "shapley", "sampler": "leverage", "subsets": 24})
    masks, ids = settings.draw(10, default_subsets=48, seed=3)
    np.testing.assert_array_equal(masks, LeverageSampler(10, seed=3).sample(24))
    np.testing.assert_array_equal(ids, np.arange(24) // 2)
    masks, ids = ESTIMATORS.parse("banzhaf").draw(10, default_subsets=48, seed=3)
    assert masks.shape == (48, 10) and ids is None
    with pytest.raises(DiffattrError, match="estimators\\[1\\]: 16 coalitions cannot identify"):
        ESTIMATORS.parse("shapley").draw(10, 16, seed=0, where="estimators[1]")
    masks, _ = ESTIMATORS.parse({"name": "loo", "subsets": 3}).draw(5, 48, seed=0)
    assert masks.shape == (5, 5)


def test_fit_table_returns_one_attribution_per_behavior():
    n = 6
    sampler = ShapleyKernelSampler(n, seed=1, paired=True)
    z = sampler.sample(40)
    w = np.arange(1.0, n + 1)
    y = np.column_stack([z @ w, z @ w[::-1]])
    table = CoalitionTable(
        z,
        y,
        names=list("abcdef"),
        behaviors=["fid", "is"],
        v0=[0.0, 0.0],
        v1=[21.0, 21.0],
        pair_ids=sampler.pair_ids(np.arange(40)),
    )
    atts = make_estimator("shapley").fit(table)
    assert [a.behavior for a in atts] == ["fid", "is"] and atts[0].names == list("abcdef")
    np.testing.assert_allclose(atts[0].values, w, atol=1e-9)
    np.testing.assert_allclose(atts[1].values, w[::-1], atol=1e-9)
    s = atts[0].settings
    assert (
        s["sampler"] == {"name": "shapley-kernel", "paired": True, "replace": False}
        and s["rows"] == 40
    )
    assert s["pairing"] == "pair_ids"
    # the array form returns a single attribution for one value column
    one = make_estimator("shapley").fit(z, y[:, 0], v0=0.0, v1=21.0)
    np.testing.assert_allclose(one.values, atts[0].values)
    with pytest.raises(DiffattrError, match="takes the table alone"):
        make_estimator("shapley").fit(table, v0=1.0)


def test_module_fit_accepts_names_settings_and_estimators():
    z = LeverageSampler(5, seed=0).sample(30)
    y = z @ np.arange(5.0)
    a = fit("shapley", z, y, 0.0, 10.0, sampler="leverage")
    b = fit(ShapleySettings(sampler="leverage"), z, y, 0.0, 10.0)
    c = fit(make_estimator("shapley", sampler="leverage"), z, y, 0.0, 10.0)
    np.testing.assert_allclose(a.values, b.values)
    np.testing.assert_allclose(a.values, c.values)
    with pytest.raises(DiffattrError, match="unknown setting 'nope'"):
        fit("shapley", z, y, 0.0, 10.0, nope=1)


def test_settings_modules_import_only_pydantic_and_settings():
    import ast
    from pathlib import Path

    import diffattr.coalitions.settings as cs
    import diffattr.estimators.settings as es

    allowed = {
        "__future__",
        "typing",
        "pydantic",
        "diffattr.settings",
        "diffattr.errors",
        "diffattr.coalitions.settings",
        "diffattr.coalitions.base",  # under TYPE_CHECKING only
        "diffattr.estimators.base",  # under TYPE_CHECKING only
    }
    for module in (cs, es):
        tree = ast.parse(Path(module.__file__).read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert found <= allowed, found - allowed


def test_estimator_packages_do_not_import_torch():
    code = (
        "import sys; import diffattr.estimators, diffattr.coalitions; "
        "from diffattr.estimators import make_estimator; make_estimator('shapley'); "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
