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


def test_values_pinned_across_refactors(tmp_path, full_model):
    """The small run's values equal the ones the code gave before the run-plan / family
    refactor (tests/runner/pinned_small_values.csv: commit 814325b, 24 paired coalitions,
    2 torch threads). Standard errors are not pinned: they now carry the U / (U - (n-1))
    degrees-of-freedom correction of the sandwich estimator."""
    import torch

    if torch.get_num_threads() != 2:
        pytest.skip("the pinned values were made with 2 torch threads")
    run_attribution(small_cfg(full_model), tmp_path / "run", progress=False)
    pinned = list(
        csv.DictReader(open(os.path.join(os.path.dirname(__file__), "pinned_small_values.csv")))
    )
    got = read_values(tmp_path / "run")
    assert [(r["player"], r["behavior"], r["estimator"]) for r in got] == [
        (r["player"], r["behavior"], r["estimator"]) for r in pinned
    ]
    np.testing.assert_allclose(
        [float(r["value"]) for r in got], [float(r["value"]) for r in pinned], rtol=2e-3, atol=1e-3
    )


def test_until_stderr_adds_rounds_and_resumes(tmp_path, full_model):
    """Adaptive stopping: rounds of coalitions until every stderr is below the threshold or
    the budget is spent; a second call replays the rounds from the store."""
    easy = small_cfg(
        full_model,
        **{"attribution.until_stderr": 1e6, "attribution.max_subsets": 30},
    )
    s = run_attribution(easy, tmp_path / "easy", progress=False)
    rounds = json.loads((tmp_path / "easy" / "summary.json").read_text())["stopping_rounds"]
    assert [r["subsets"] for r in rounds] == [24] and rounds[0]["below"]
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
