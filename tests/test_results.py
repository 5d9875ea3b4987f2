"""Results as Python objects (diffattr.results): DataFrames with pinned columns and dtypes,
and the figures, drawn by the report's own functions, on hand-made run directories."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import diffattr
from diffattr.errors import DiffattrError
from diffattr.results import COLUMNS
from report.test_report import FID, IS, NAMES, _lds_report, make_run

matplotlib.use("Agg")


@pytest.fixture
def run_dir(tmp_path):
    """A run directory with values, an LDS, a compute curve and a counterfactual."""
    from diffattr.evaluate.budget import CurvePoint, CurveReport
    from diffattr.evaluate.counterfactual import CounterfactualReport, Removal

    run = make_run(tmp_path)
    (run / "lds.json").write_text(json.dumps(_lds_report().to_dict()))
    points = [
        CurvePoint("retrain", 40.0, 6, FID, None, False, "not identified"),
        CurvePoint("retrain", 80.0, 18, FID, 35.0, True),
        CurvePoint("sft", 40.0, 30, FID, 20.0, True),
    ]
    costs = {"sft": {"prepare_seconds": 5.0, "seconds_per_job": 1.1, "subsets": 30}}
    curve = CurveReport(["retrain", "sft"], costs, points, test_subsets=16, seeds=1)
    (run / "compute_curve.json").write_text(json.dumps(curve.to_dict()))
    change = {FID: {"mean": 35.0, "sd": 2.0, "ci95": 4.0, "value": 10.8}}
    cf = CounterfactualReport("top", 0.4, 2, [Removal("shapley", FID, ["2", "4"], 2, change)])
    (run / "counterfactual-top.json").write_text(json.dumps(cf.to_dict()))
    return run


def test_values_as_a_dataframe_with_pinned_columns_and_dtypes(run_dir):
    values = diffattr.open_run(run_dir).values
    df = values.to_pandas()
    assert list(df.columns) == list(COLUMNS)
    assert list(df.columns[:5]) == ["player", "behavior", "estimator", "value", "stderr"]
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "player": "string",
        "behavior": "string",
        "estimator": "string",
        "value": "float64",
        "stderr": "float64",
        "rank": "int64",
        "ci95_low": "float64",
        "ci95_high": "float64",
        "lower_is_better": "bool",
        "method": "string",
    }
    assert len(df) == 4 * len(NAMES)
    payload = json.loads((run_dir / "values.json").read_text())
    a = payload["attributions"][0]  # shapley, FID: lower is better, so rank 1 is the lowest
    rows = df[(df.estimator == "shapley") & (df.behavior == FID)].set_index("player")
    np.testing.assert_allclose(rows.loc[NAMES, "value"], a["values"])
    assert rows["value"].idxmin() == rows["rank"].idxmin() and rows["lower_is_better"].all()
    assert rows.loc[NAMES[-1], "stderr"] != rows.loc[NAMES[-1], "stderr"]  # None -> NaN
    ok = rows.loc[NAMES[0]]
    assert ok.ci95_low == pytest.approx(ok.value - 1.96 * ok.stderr)
    is_rows = df[(df.estimator == "shapley") & (df.behavior == IS)]
    assert is_rows.loc[is_rows["value"].idxmax(), "rank"] == 1  # higher is better
    assert set(df["method"]) == {"sft"}
    assert values.estimators == ["shapley", "datamodel", "banzhaf"]
    assert values.get("datamodel").behavior == FID


def test_choosing_an_attribution_names_the_choices(run_dir):
    values = diffattr.open_run(run_dir).values
    assert values.get("shapley", "fid").behavior == FID  # a behavior by its name
    with pytest.raises(DiffattrError, match=r"2 attributions match estimator='shapley'; name"):
        values.get("shapley")
    with pytest.raises(DiffattrError, match=r"no attribution matches estimator='tmc'; there are"):
        values.get("tmc")


def test_each_figure_draws_and_returns_a_figure(run_dir):
    res = diffattr.open_run(run_dir)
    values = res.values
    figs = {
        "values": values.plot("shapley", "fid"),
        "values, few shown": values.plot("banzhaf", limit=4),
        "contributors": values.plot_contributors("shapley", "fid", k=2, images=3),
        "lds": res.lds_results.plot("shapley"),
        "fidelity": res.lds_results.plot_fidelity(),
        "curve": res.curve_results.plot(),
        "counterfactual": res.counterfactual_results("top").plot(),
        "samples": res.plot_samples(),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        assert fig.axes, name
        fig.canvas.draw()  # renders without error
    bars = figs["values"].axes[0].patches
    assert len(bars) == len(NAMES)
    labels = [t.get_text() for t in figs["values, few shown"].axes[0].get_yticklabels()]
    assert len(labels) == 5 and labels[2] == "… 6 more …"
    assert len(figs["contributors"].axes) == 4  # the top and bottom 2 players
    assert len(figs["lds"].axes[0].collections[0].get_offsets()) == 16
    assert len(figs["samples"].axes) == 3  # null, full, the method on all players


def test_figures_draw_into_given_axes(run_dir):
    values = diffattr.open_run(run_dir).values
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert values.plot("datamodel", ax=ax) is fig
    assert len(ax.patches) == len(NAMES)


def test_evaluations_as_dataframes(run_dir):
    res = diffattr.open_run(run_dir)
    lds = res.lds_results.to_pandas()
    assert list(lds.columns[:5]) == ["alpha", "method", "estimator", "behavior", "lds"]
    assert lds["lds"].tolist() == [41.25, 41.25] and str(lds["fit_rows"].dtype) == "Int64"
    curve = res.curve_results.to_pandas()
    assert curve["identified"].tolist() == [False, True, True]
    assert str(curve["subsets"].dtype) == "int64"
    cf = res.counterfactual_results("top").to_pandas()
    assert cf.loc[0, "removed"] == ["2", "4"] and cf.loc[0, "change_pct"] == 35.0
    fid = res.lds_results.fidelity_to_pandas()
    assert fid[["method", "pearson", "n"]].values.tolist() == [["sft", 0.8, 16]]
    assert fid[["pearson_one_retrain_seed", "retrain_seed_to_seed"]].isna().all(axis=None)


def test_fidelity_frame_carries_retraining_seed_agreement(run_dir):
    report = _lds_report()
    report.fidelity[0].pearson_per_seed = 0.71
    report.fidelity[0].retrain_agreement = {"pearson": 0.74, "pairs": 3}
    (run_dir / "lds.json").write_text(json.dumps(report.to_dict()))
    fid = diffattr.open_run(run_dir).lds_results.fidelity_to_pandas()
    assert fid.loc[0, "pearson_one_retrain_seed"] == 0.71
    assert fid.loc[0, "retrain_seed_to_seed"] == 0.74
    assert str(fid["n"].dtype) == "int64" and str(fid["behavior"].dtype) == "string"


def _files(run_dir):
    """Every file and its modification time (SQLite's read-only -shm/-wal index aside)."""
    return sorted(
        (p.relative_to(run_dir), p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if not p.name.endswith(("-shm", "-wal"))
    )


def test_a_run_directory_is_opened_read_only(run_dir):
    before = _files(run_dir)
    res = diffattr.open_run(run_dir)
    res.values.to_pandas()
    assert res.status()["reference"]["done"] == 2
    res.plot_samples()
    res.lds_results.to_pandas()
    assert _files(run_dir) == before
    with pytest.raises(DiffattrError, match=r"counterfactual-bottom.json not found: run"):
        res.counterfactual_results("bottom")
    with pytest.raises(DiffattrError, match="is not a run directory"):
        diffattr.open_run(run_dir / "nope")


def test_the_report_uses_the_same_figures(run_dir, tmp_path, monkeypatch):
    """The HTML report draws its LDS, fidelity, curve and counterfactual plots with the
    functions the results' plot methods call."""
    import diffattr.report.counterfactual as cf_mod
    import diffattr.report.curve as curve_mod
    import diffattr.report.lds as lds_mod

    drawn = []
    for mod, name in [
        (lds_mod, "lds_figure"),
        (lds_mod, "fidelity_figure"),
        (curve_mod, "curve_figure"),
        (cf_mod, "change_figure"),
    ]:
        original = getattr(mod, name)

        def spy(*a, _original=original, _name=name, **k):
            drawn.append(_name)
            return _original(*a, **k)

        monkeypatch.setattr(mod, name, spy)
    path = diffattr.open_run(run_dir).report(tmp_path / "r.html")
    assert path.is_file()
    assert sorted(set(drawn)) == ["change_figure", "curve_figure", "fidelity_figure", "lds_figure"]
