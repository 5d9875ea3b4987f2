"""End-to-end tests of ``diffattr run`` on digits with a very small configuration."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import one_thread, small_cfg
from diffattr.estimators.settings import ESTIMATORS
from diffattr.runner import run_attribution
from diffattr.store import Store


def read_values(run_dir):
    with open(run_dir / "values.csv") as f:
        return list(csv.DictReader(f))


def test_run_gives_efficient_shapley_values(tmp_path, full_model):
    summary = run_attribution(small_cfg(full_model), tmp_path / "run", progress=False)
    assert summary.failed == 0
    payload = json.loads((tmp_path / "run" / "values.json").read_text())
    assert set(payload["v0"]) == set(payload["v1"]) and len(payload["v1"]) == 2
    assert any(k.startswith("fid[") for k in payload["v1"])
    for a in summary.attributions:
        assert a.estimator == "shapley" and len(a.values) == 10
        assert np.all(np.isfinite(a.values))
        diff = payload["v1"][a.behavior] - payload["v0"][a.behavior]
        assert a.values.sum() == pytest.approx(diff, abs=1e-6)
    rows = read_values(tmp_path / "run")
    assert list(rows[0]) == ["player", "behavior", "estimator", "value", "stderr"]
    assert len(rows) == 20
    # a second call finds everything done and changes nothing
    before = (tmp_path / "run" / "values.csv").read_text()
    with Store(tmp_path / "run" / "store.sqlite") as s:
        n = s.count()
    again = run_attribution(small_cfg(full_model), tmp_path / "run", progress=False)
    assert again.failed == 0 and (tmp_path / "run" / "values.csv").read_text() == before
    with Store(tmp_path / "run" / "store.sqlite") as s:
        assert s.count() == n


def test_raising_m_extends_and_new_settings_make_new_keys(tmp_path, full_model):
    run_attribution(small_cfg(full_model), tmp_path / "run", progress=False)
    with Store(tmp_path / "run" / "store.sqlite") as s:
        first = {r.key for r in s.records() if r.kind == "fit"}
    run_attribution(
        small_cfg(full_model, **{"attribution.subsets": 30}), tmp_path / "run", progress=False
    )
    with Store(tmp_path / "run" / "store.sqlite") as s:
        second = {r.key for r in s.records() if r.kind == "fit"}
    rows = ESTIMATORS.parse("shapley").sampler.build(10, 0).sample(30)
    new = {r.tobytes() for r in rows[24:]} - {r.tobytes() for r in rows[:24]}
    assert first <= second and len(second) - len(first) == len(new) > 0


def test_failed_job_is_recorded_and_others_finish(tmp_path, full_model, monkeypatch):
    from diffattr.runner.job import Worker

    calls = {"n": 0}
    real_measure = Worker.measure

    def flaky_measure(self, images):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("injected failure")
        return real_measure(self, images)

    monkeypatch.setattr(Worker, "measure", flaky_measure)
    cfg = small_cfg(full_model, **{"attribution.subsets": 26})
    summary = run_attribution(cfg, tmp_path / "run", progress=False)
    assert summary.failed == 1 and not summary.errors
    assert "injected failure" in summary.first_error
    with Store(tmp_path / "run" / "store.sqlite") as s:
        failed = s.records(status="failed")
        assert len(failed) == 1 and "injected failure" in failed[0].error
        assert s.count("done") == summary.jobs - 1
    # a re-run redoes only the failed job and succeeds
    monkeypatch.setattr(Worker, "measure", real_measure)
    again = run_attribution(cfg, tmp_path / "run", progress=False)
    assert again.failed == 0
    with Store(tmp_path / "run" / "store.sqlite") as s:
        assert s.count("done") == again.jobs and s.count("failed") == 0


def _cli(*args, env=None):
    return [sys.executable, "-m", "diffattr.cli", *args]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, full_model):
    cfg = small_cfg(full_model, **{"attribution.subsets": 26})
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(cfg.to_toml())
    import torch

    # the test's thread count: an oversubscribed OpenMP pool on shared cores is very slow
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(torch.get_num_threads()))
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli("run", str(cfg_path), "--out", str(run_dir)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        if (run_dir / "store.sqlite").exists():
            with Store(run_dir / "store.sqlite") as s:
                if sum(1 for r in s.records() if r.kind == "fit") >= 2:
                    break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Store(run_dir / "store.sqlite") as s:
        assert s.count("done") < 26 + 3
    res = subprocess.run(
        _cli("run", str(cfg_path), "--out", str(run_dir)), env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    with Store(run_dir / "store.sqlite") as s:
        fit = [r for r in s.records(status=None) if r.kind == "fit"]
        sampler = ESTIMATORS.parse("shapley").sampler.build(10, 0)
        expected = {m.tobytes() for m in sampler.sample(26)}
        assert len(fit) == len({r.key for r in fit}) == len(expected)
    clean = run_attribution(cfg, tmp_path / "clean", progress=False)
    assert clean.failed == 0
    a, b = read_values(run_dir), read_values(tmp_path / "clean")
    assert [r["player"] for r in a] == [r["player"] for r in b]
    # Equal up to float reduction order (the CLI process may use another thread count).
    np.testing.assert_allclose(
        [float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-4, atol=1e-6
    )


def test_ray_matches_inline(tmp_path, full_model):
    pytest.importorskip("ray")
    # leave-one-out: 10 coalition jobs are enough to compare two executors
    cfg = small_cfg(full_model, **{"attribution.estimators": ["loo"]})
    ray_cfg = cfg.with_overrides(executor={"name": "ray", "workers": 2})
    with one_thread():
        inline = run_attribution(cfg, tmp_path / "inline", progress=False)
        via_ray = run_attribution(ray_cfg, tmp_path / "ray", progress=False)
    assert inline.failed == via_ray.failed == 0
    a, b = read_values(tmp_path / "inline"), read_values(tmp_path / "ray")
    np.testing.assert_allclose(
        [float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    """`diffattr run --preset quick` on digits: finite values, efficiency, exit code 0."""
    res = subprocess.run(
        _cli("run", "--preset", "quick", "--out", str(tmp_path / "quick")),
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "players ranked by their contribution" in res.stdout
    payload = json.loads((tmp_path / "quick" / "values.json").read_text())
    assert len(payload["attributions"]) == 2
    for a in payload["attributions"]:
        vals = np.asarray(a["values"], dtype=float)
        assert len(vals) == 10 and np.isfinite(vals).all()
        diff = payload["v1"][a["behavior"]] - payload["v0"][a["behavior"]]
        assert vals.sum() == pytest.approx(diff, abs=1e-6)


PINNED = os.path.join(os.path.dirname(__file__), "pinned_small_table.csv")
PINNED_VALUES = os.path.join(os.path.dirname(__file__), "pinned_small_values.csv")
#: The estimators pinned on the committed table (label -> settings).
PINNED_ESTIMATORS = {
    "shapley": {"name": "shapley"},
    "shapley[endpoints=given]": {"name": "shapley", "endpoints": "given"},
    "shapley-cv": {"name": "shapley-cv", "sampler": "shapley-kernel"},
    "datamodel": {"name": "datamodel", "sampler": "uniform"},
}
#: Relative tolerance of a job's behaviors between machines. Jobs run at one torch thread
#: whatever the driver's count, so on the machine that made the table the run reproduces it
#: bit for bit (checked at 1 and 2 driver threads). Another processor's kernels sum in
#: another order; 5 % is an allowance for that, not a measurement.
JOB_RTOL = 0.05


def _pinned_fits(table) -> list[dict]:
    from diffattr.estimators import ESTIMATORS

    rows = []
    for label, settings in PINNED_ESTIMATORS.items():
        for a in ESTIMATORS.parse(settings).build().fit(table):
            for player, v, se in zip(a.names, a.values, a.stderr):
                rows.append(
                    {
                        "player": player,
                        "behavior": a.behavior,
                        "estimator": label,
                        "value": v,
                        "stderr": se,
                    }
                )
    return rows


def test_estimators_pinned_on_a_committed_table():
    """The estimators on the small run's committed coalition table give the committed
    values: pure floating-point linear algebra on fixed inputs, so this holds on any
    machine to 1e-9 and catches a real change of any estimator. Regenerate both files
    (after an intended change) from a finished small run with ``PYTHONPATH=tests python
    tests/runner/test_run.py --pin RUN_DIR``."""
    from diffattr.estimators import read_table_csv

    got = _pinned_fits(read_table_csv(PINNED))
    with open(PINNED_VALUES) as f:
        pinned = list(csv.DictReader(f))
    key = [(r["player"], r["behavior"], r["estimator"]) for r in pinned]
    assert [(r["player"], r["behavior"], r["estimator"]) for r in got] == key
    for g, p in zip(got, pinned):
        assert g["value"] == pytest.approx(float(p["value"]), rel=1e-9, abs=1e-12)
        se = float(p["stderr"]) if p["stderr"] not in ("", "nan") else float("nan")
        if np.isnan(se):
            assert np.isnan(g["stderr"])
        else:
            assert g["stderr"] == pytest.approx(se, rel=1e-9, abs=1e-12)


def test_small_run_reproduces_the_committed_table(tmp_path, full_model):
    """The small run draws the committed table's coalitions and its jobs give the committed
    behaviors to the tolerance the arithmetic supports across machines (``JOB_RTOL``); its
    values are the estimator applied to its own table, exactly."""
    from diffattr.estimators import ESTIMATORS, read_table_csv
    from diffattr.runner.run import Run

    pinned = read_table_csv(PINNED)
    with Run(small_cfg(full_model), tmp_path / "run", progress=False) as run:
        summary = run.attribute()
        table = run.table(run.jobs(), "shapley")
    inner = pinned.masks.any(axis=1) & ~pinned.masks.all(axis=1)
    np.testing.assert_array_equal(table.masks, pinned.masks[inner])
    np.testing.assert_array_equal(table.pair_ids, pinned.pair_ids[inner])
    np.testing.assert_allclose(table.values, pinned.values[inner], rtol=JOB_RTOL)
    np.testing.assert_allclose(table.v0, pinned.values[~pinned.masks.any(axis=1)][0], rtol=JOB_RTOL)
    own = ESTIMATORS.parse("shapley").build().fit(table)
    for a, b in zip(summary.attributions, own):
        np.testing.assert_array_equal(a.values, b.values)


def _pin(run_dir: str) -> None:
    """Write the committed table and values from a finished small run (``--pin``)."""
    from diffattr.estimators import read_table_csv, write_table_csv
    from diffattr.evaluate.common import open_run

    with open_run(run_dir, progress=False) as run:
        t = run.table(run.jobs(), "shapley")
    n = t.n_players
    masks = np.vstack([t.masks, np.zeros((1, n), bool), np.ones((1, n), bool)])
    values = np.vstack([t.values, t.v0[None], t.v1[None]])
    ids = np.r_[t.pair_ids, 10**6, 10**6 + 1]
    write_table_csv(PINNED, masks, values, names=t.names, behaviors=t.behaviors, pair_ids=ids)
    rows = _pinned_fits(read_table_csv(PINNED))
    with open(PINNED_VALUES, "w", newline="") as f:
        w = csv.DictWriter(f, ["player", "behavior", "estimator", "value", "stderr"])
        w.writeheader()
        for r in rows:
            w.writerow({**r, "value": repr(float(r["value"])), "stderr": repr(float(r["stderr"]))})


def test_until_stderr_adds_rounds_and_resumes(tmp_path, full_model):
    """Adaptive stopping: rounds of coalitions until every stderr is below the threshold or
    the budget is spent; a standard error the rows cannot determine (NaN) is never below it;
    a second call replays the rounds from the store."""
    easy = small_cfg(
        full_model,
        **{
            "attribution.until_stderr": 1e6,
            "attribution.max_subsets": 40,
            "attribution.round_subsets": 6,
        },
    )
    s = run_attribution(easy, tmp_path / "easy", progress=False)
    rounds = json.loads((tmp_path / "easy" / "summary.json").read_text())["stopping_rounds"]
    # 24 paired rows are 12 pairs over 10 fitted directions: 2 residual dof < 5, so the
    # first round's standard errors are NaN and the run goes on; 30 rows (15 pairs) earn them
    assert [r["subsets"] for r in rounds] == [24, 30]
    assert not rounds[0]["below"] and rounds[-1]["below"]
    hard = small_cfg(
        full_model,
        **{
            "attribution.until_stderr": 1e-9,
            "attribution.max_subsets": 30,
            "attribution.round_subsets": 4,
        },
    )
    s = run_attribution(hard, tmp_path / "hard", progress=False)
    summary = json.loads((tmp_path / "hard" / "summary.json").read_text())
    assert [r["subsets"] for r in summary["stopping_rounds"]] == [24, 28, 30]
    assert not summary["stopping_rounds"][-1]["below"] and s.failed == 0
    rows = ESTIMATORS.parse("shapley").sampler.build(10, 0).sample(30)
    with Store(tmp_path / "hard" / "store.sqlite") as st:
        fit = {r.mask for r in st.records() if r.kind == "fit"}
        n_before = st.count()
    assert fit == {"".join("1" if b else "0" for b in r) for r in rows}
    again = run_attribution(hard, tmp_path / "hard", progress=False)
    with Store(tmp_path / "hard" / "store.sqlite") as st:
        assert st.count() == n_before
    assert again.timings.get("jobs", 0.0) < 1.0


if __name__ == "__main__":  # PYTHONPATH=tests python tests/runner/test_run.py --pin RUN_DIR
    if len(sys.argv) == 3 and sys.argv[1] == "--pin":
        _pin(sys.argv[2])


def test_a_run_built_in_python_is_checked_like_the_cli(tmp_path):
    """``Run(cfg, dir)`` runs the CLI's cheap checks before any work: a missing full model
    is a one-line error and nothing is written."""
    import torch

    from conftest import SMALL
    from diffattr.config import RunConfig
    from diffattr.errors import DiffattrError
    from diffattr.runner.run import Run

    with pytest.raises(DiffattrError, match="attribution.full_model: .* does not exist"):
        Run(small_cfg(tmp_path / "missing"), tmp_path / "run")
    if not torch.cuda.is_available():  # a device this machine lacks
        with pytest.raises(DiffattrError, match="cuda"):
            Run(RunConfig().with_overrides(**SMALL, device="cuda"), tmp_path / "r")
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


def test_the_printed_plan_counts_the_jobs_the_run_runs(tmp_path, full_model):
    """``diffattr run --dry-run``'s job count is the number of specs the run executes,
    with estimators whose rows overlap (shared coalitions are one job)."""
    from diffattr.runner.plan import make_plan
    from diffattr.runner.run import Run

    cfg = small_cfg(
        full_model,
        **{"attribution.estimators": ["shapley", "loo", "banzhaf"], "attribution.subsets": 24},
    )
    printed = make_plan(cfg, tmp_path / "run")
    with Run(cfg, tmp_path / "run", progress=False) as run:
        specs = run.jobs().specs()
    assert printed.jobs == len(specs) == len({s.key for s in specs})
    assert sum(1 for s in specs if s.kind == "fit") == printed.jobs - 3


def test_a_baseline_listed_before_an_estimator_runs_in_that_order_and_resumes(tmp_path, full_model):
    """Baselines are their own kind: no coalitions in the plan, scored on the full model,
    values in the listed order, and a resumed run writes the same values.json (its timings
    go to summary.json)."""
    from diffattr.runner.plan import make_plan

    cfg = small_cfg(full_model, **{"attribution.estimators": ["pixel-similarity", "shapley"]})
    printed = make_plan(cfg, tmp_path / "run")
    assert [(e.name, e.rows) for e in printed.estimators] == [
        ("pixel-similarity", 0),
        ("shapley", 24),
    ]
    first = run_attribution(cfg, tmp_path / "run", progress=False)
    assert first.failed == 0 and first.values_written
    assert [a.estimator for a in first.attributions][:2] == ["pixel-similarity"] * 2
    assert {a.estimator for a in first.attributions[2:]} == {"shapley"}
    values = (tmp_path / "run" / "values.json").read_text()
    costs = json.loads((tmp_path / "run" / "summary.json").read_text())["baseline_costs"]
    assert set(costs) == {"pixel-similarity[mean]"}
    assert set(costs["pixel-similarity[mean]"]["seconds"]) == {"featurize", "score", "wall"}
    assert "seconds" not in json.loads(values)["attributions"][0]["settings"]
    again = run_attribution(cfg, tmp_path / "run", progress=False)
    assert again.failed == 0 and (tmp_path / "run" / "values.json").read_text() == values


def test_the_run_executes_the_plans_resolution(tmp_path, full_model, monkeypatch):
    """``diffattr run`` resolves once: the data are loaded (and hashed) by the plan, and the
    run built with the plan's resolution loads them no more and runs its drawn rows."""
    import diffattr.data as data_pkg
    from diffattr.runner.plan import make_plan
    from diffattr.runner.run import Run

    cfg = small_cfg(full_model)
    plan = make_plan(cfg, tmp_path / "run")
    loads = []
    real = data_pkg.load_dataset
    monkeypatch.setattr(data_pkg, "load_dataset", lambda *a, **k: loads.append(1) or real(*a, **k))
    with Run(cfg, tmp_path / "run", progress=False, resolution=plan.resolution) as run:
        jp = run.jobs()
        assert run.data_digest == plan.resolution.digest
    (est,) = cfg.attribution.fitted
    masks, _ = plan.resolution.rows(est)
    assert [s.mask for s in jp.fit[est.name]] == [
        "".join("1" if b else "0" for b in r) for r in masks
    ]
    assert loads == [] and plan.jobs == len(jp.specs())
    with pytest.raises(ValueError, match="another configuration"):
        Run(small_cfg(full_model), tmp_path / "run", resolution=plan.resolution)
