"""The reliability signals a run prints beside its values."""

from __future__ import annotations

import numpy as np
import pytest

from diffattr.estimators import ESTIMATORS, CoalitionTable, all_subsets
from diffattr.estimators.reliability import THRESHOLDS, advice, assess, summary

N = 10


def _table(settings, m, seed, noise, w):
    masks, pair_ids = settings.draw(N, m, seed)
    rng = np.random.default_rng(seed + 1)
    y = 30.0 / (1.0 + 0.3 * masks.sum(axis=1)) - masks @ w + noise * rng.normal(size=len(masks))
    return CoalitionTable(
        masks, y, names=[f"p{i}" for i in range(N)], v0=80.0, v1=10.0, pair_ids=pair_ids
    )


def _assess(settings, table):
    atts = settings.build().fit(table)
    return assess(settings, table, atts)[0]


def test_a_well_determined_fit_is_reported_stable():
    w = np.linspace(0.5, 5.0, N)
    s = ESTIMATORS.parse({"name": "shapley", "subsets": 200})
    rel = _assess(s, _table(s, 200, 0, 0.05, w))
    assert rel.rank_stability > 0.95 and rel.held_out_spearman > 0.9
    assert rel.halves_agreement > 0.9 and rel.folds == 5
    assert rel.below() == [] and advice("shapley", "fid", rel.to_dict()) is None


def test_a_noisy_fit_with_few_coalitions_is_flagged_with_what_to_do():
    w = np.linspace(0.0, 0.2, N)  # tiny differences between players, much noise
    s = ESTIMATORS.parse({"name": "shapley"})
    rel = _assess(s, _table(s, 32, 3, 3.0, w))
    below = rel.below()
    assert below, rel
    line = advice("shapley", "fid[x]", rel.to_dict())
    assert line.startswith("shapley values of fid[x] look unreliable (")
    assert "--subsets" in line and "\n" not in line
    for key in below:
        assert getattr(rel, key) < THRESHOLDS[key]


def test_signals_the_rows_cannot_support_are_none_with_a_reason():
    w = np.linspace(0.5, 5.0, N)
    s = ESTIMATORS.parse({"name": "shapley", "subsets": 28})
    rel = _assess(s, _table(s, 28, 0, 0.5, w))  # 14 pairs: a half (7 pairs) cannot fit
    assert rel.halves_agreement is None
    assert any(n.startswith("halves:") for n in rel.notes)
    assert "n/a" in summary(rel.to_dict())


def test_exact_tables_and_fixed_designs():
    z = all_subsets(5)
    y = z @ np.arange(5.0)
    s = ESTIMATORS.parse("shapley")
    t = CoalitionTable(z, y)
    rel = assess(s, t, s.build().fit(t))[0]
    assert rel.rank_stability == rel.held_out_spearman == rel.halves_agreement == 1.0
    loo = ESTIMATORS.parse("loo")
    z = ~np.eye(5, dtype=bool)
    t = CoalitionTable(z, z @ np.arange(5.0), v1=10.0)
    rel = assess(loo, t, loo.build().fit(t))[0]
    assert rel.held_out_spearman is None and any("fixed design" in n for n in rel.notes)


@pytest.mark.parametrize("name", ["shapley-cv", "permutation-shapley", "banzhaf", "datamodel"])
def test_every_coalition_estimator_gets_signals(name):
    w = np.linspace(0.5, 5.0, N)
    s = ESTIMATORS.parse({"name": name})
    m = 180 if name != "permutation-shapley" else 9 * 20
    rel = _assess(s, _table(s, m, 1, 0.05, w))
    assert rel.held_out_spearman is not None and rel.halves_agreement is not None
    assert rel.held_out_spearman > 0.5 and rel.halves_agreement > 0.8


def test_the_cli_prints_the_signals_and_one_warning_line(tmp_path):
    import subprocess
    import sys

    from diffattr.estimators import write_table_csv

    w = np.linspace(0.0, 0.2, N)
    s = ESTIMATORS.parse({"name": "shapley"})
    t = _table(s, 32, 3, 3.0, w)
    path = tmp_path / "t.csv"
    write_table_csv(path, t.masks, t.values[:, 0], pair_ids=t.pair_ids)
    cmd = [sys.executable, "-m", "diffattr.cli", "estimate", str(path), "--v0", "80", "--v1", "10"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "reliability: rank stability" in proc.stdout
    warn = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "look unreliable" in warn[0]


def test_a_runs_ranked_table_prints_the_signals_and_warns_below_threshold():
    """``diffattr run`` prints one reliability line per behavior under its ranked table (from
    the signals the run recorded in each attribution's settings) and warns once per
    unreliable fit; a fit without recorded signals prints no such line."""
    import io

    from rich.console import Console

    from diffattr.cli import print_reliability
    from diffattr.errors import DiffattrWarning

    s = ESTIMATORS.parse({"name": "shapley"})
    noisy = _table(s, 32, 3, 3.0, np.linspace(0.0, 0.2, N))
    (a,) = s.build().fit(noisy)
    a.settings["reliability"] = assess(s, noisy, [a])[0].to_dict()
    buf = io.StringIO()
    with pytest.warns(DiffattrWarning, match="look unreliable") as caught:
        print_reliability(Console(file=buf, width=200), "shapley", [a])
    assert len(caught) == 1
    assert buf.getvalue().strip().startswith("reliability: rank stability")  # no behavior
    a.behavior = "fid[x]"
    buf = io.StringIO()
    with pytest.warns(DiffattrWarning, match="shapley values of fid"):
        print_reliability(Console(file=buf, width=200), "shapley", [a])
    assert buf.getvalue().strip().startswith("reliability of fid[x]: rank stability")
    del a.settings["reliability"]
    buf = io.StringIO()
    print_reliability(Console(file=buf, width=200), "shapley", [a])
    assert buf.getvalue() == ""


def test_the_warning_never_prints_a_value_that_reads_as_its_threshold():
    """0.797 below 0.8 prints as "0.797 < 0.8", not "0.80 < 0.8"."""
    limit = THRESHOLDS["rank_stability"]
    rel = {"below": ["rank_stability"], "rank_stability": limit - 0.003}
    line = advice("shapley-cv", "is[x]", rel)
    assert f"rank stability {limit - 0.003:.3f} < {limit}" in line
    rel["rank_stability"] = limit - 0.25
    assert f"rank stability {limit - 0.25:.2f} < {limit}" in advice("shapley-cv", None, rel)
