"""End-to-end tests of the evaluation commands on a tiny digits run."""

import json
import shutil

import numpy as np

from diffattr.evaluate.common import held_out_masks
from diffattr.evaluate.lds import LDSProtocol, run_lds
from diffattr.store import Store


def test_held_out_masks_are_distinct_datamodel_subsets():
    m = held_out_masks(10, 0.5, 100, seed=0)
    assert m.shape == (100, 10) and (m.sum(1) == 5).all()
    assert len({r.tobytes() for r in m}) == 100
    assert (held_out_masks(10, 0.5, 100, seed=0) == m).all()
    # fewer distinct subsets exist than asked for: all of them, once each
    small = held_out_masks(5, 0.4, 50, seed=0)
    assert len(small) == 10 and len({r.tobytes() for r in small}) == 10


def test_lds_retrains_and_scores(evaluated_run):
    run_dir, lds, _ = evaluated_run
    assert lds["failed_jobs"] == 0
    combos = {(r["method"], r["estimator"]) for r in lds["results"]}
    assert combos == {("sft", "shapley"), ("sft", "loo")}
    for r in lds["results"]:
        assert -100 <= r["lds"] <= 100 and r["n_test"] == 4
    assert {f["method"] for f in lds["fidelity"]} == {"sft"}
    # one retraining seed: no seed-to-seed agreement to show, rather than a made-up number
    assert all(f["retrain_agreement"] is None for f in lds["fidelity"])
    assert all(f["pearson_per_seed"] is None for f in lds["fidelity"])
    assert lds["cost"]["sft"]["speedup_vs_retrain"] > 1
    with Store(run_dir / "store.sqlite") as s:
        test_rows = [r for r in s.records() if r.kind == "test"]
        assert len(test_rows) == 4 and all(r.method == "retrain" for r in test_rows)
    # a second call retrains nothing
    again = run_lds(run_dir, LDSProtocol((0.5,), 4, 1), progress=False).to_dict()
    with Store(run_dir / "store.sqlite") as s:
        assert len([r for r in s.records() if r.kind == "test"]) == 4
    assert [r["lds"] for r in again["results"]] == [r["lds"] for r in lds["results"]]


def test_counterfactual_removes_top_players(evaluated_run):
    run_dir, _, cf = evaluated_run
    values = json.loads((run_dir / "values.json").read_text())
    shap = next(
        a
        for a in values["attributions"]
        if a["estimator"] == "shapley" and a["behavior"].startswith("fid")
    )
    best_first = np.argsort(np.asarray(shap["values"]))  # lower FID is better
    expected = {shap["names"][i] for i in best_first[:4]}
    (res,) = cf["results"]
    assert set(res["removed"]) == expected
    assert all(np.isfinite(c["mean"]) for c in res["relative_change_pct"].values())


def test_lds_cli_fits_more_subsets(evaluated_run, tmp_path):
    """`diffattr lds --subsets M` runs the extra coalitions and fits on them; the
    retrained test subsets are reused."""
    from typer.testing import CliRunner

    from diffattr.cli import app

    shared, lds, _ = evaluated_run
    run_dir = tmp_path / "run"  # a copy: the run is shared with other tests
    shutil.copytree(shared, run_dir)
    before = next(r["fit_rows"] for r in lds["results"] if r["estimator"] == "shapley")
    args = ["lds", str(run_dir), "--test-subsets", "4", "--seeds", "1", "--estimator", "shapley"]
    result = CliRunner().invoke(app, [*args, "--subsets", "30", "--no-fidelity"])
    assert result.exit_code == 0, result.output
    out = json.loads((run_dir / "lds.json").read_text())
    rows = {r["fit_rows"] for r in out["results"] if r["estimator"] == "shapley"}
    assert rows and min(rows) > before
    with Store(run_dir / "store.sqlite") as s:
        assert len([r for r in s.records() if r.kind == "test"]) == 4
    bad = CliRunner().invoke(app, [*args, "--subsets", "0"])
    assert bad.exit_code != 0 and "--subsets must be at least 1" in str(bad.exception)
    # the protocol was the same (4 subsets, 1 seed): earlier results are kept beside
    assert {(r["method"], r["estimator"]) for r in out["results"]} >= {("sft", "loo")}
