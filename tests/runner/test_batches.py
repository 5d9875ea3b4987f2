"""Coalition jobs run in batches whose models train side by side ([executor] jobs_per_batch):
the same values as one job at a time, one committed row per coalition, and a batch killed
midway resumes to the same values."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import one_thread, small_cfg
from diffattr.config import RunConfig
from diffattr.runner import run_attribution
from diffattr.runner.batching import describe, resolve
from diffattr.runner.job import JobSpec, group_specs
from diffattr.runner.run import Run
from diffattr.store import Store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _spec(key: str, method: str = "sft", steps: int = 15) -> JobSpec:
    return JobSpec(key=key, kind="fit", mask="1", method=method, settings={"steps": steps})


def test_batches_hold_one_stacking_method_with_one_setting():
    specs = [
        _spec("full", "full"),
        _spec("a"),
        _spec("b"),
        _spec("r", "retrain"),
        _spec("c"),
        _spec("x", steps=30),
        _spec("d"),
        _spec("e"),
    ]
    units = group_specs(specs, 3)
    assert [[s.key for s in u] for u in units] == [
        ["full"],
        ["a", "b", "c"],
        ["r"],
        ["x"],
        ["d", "e"],
    ]
    assert [[s.key for s in u] for u in group_specs(specs, 1)] == [[s.key] for s in specs]


def test_the_plan_says_how_models_train_and_why():
    cpu = RunConfig()
    assert describe(cpu).startswith("one at a time (automatic: on a CPU")
    assert resolve(cpu, cpu.method) == 1
    four = cpu.with_overrides(executor={"name": "inline", "jobs_per_batch": 4})
    assert describe(four) == "4 per batch (jobs_per_batch)"
    assert resolve(four, four.method) == 4
    retrain = four.with_overrides(method={"name": "retrain"})
    assert "retrain method" in describe(retrain) and "does not apply" in describe(retrain)
    assert resolve(retrain, retrain.method) == 1


def _values(run_dir) -> np.ndarray:
    import json

    payload = json.loads((run_dir / "values.json").read_text())
    return np.array([v for a in payload["attributions"] for v in a["values"]])


def _fit(run_dir) -> dict:
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        return {r.key: r for r in s.records() if r.kind == "fit"}


def test_models_side_by_side_give_the_values_of_one_at_a_time(tmp_path, full_model):
    cfg = small_cfg(full_model, **{"attribution.estimators": ["loo"]})
    side = cfg.with_overrides(executor={"name": "inline", "jobs_per_batch": 4})
    with one_thread():
        alone = run_attribution(cfg, tmp_path / "alone", progress=False)
        batched = run_attribution(side, tmp_path / "side", progress=False)
    assert alone.failed == batched.failed == 0
    a, b = _fit(tmp_path / "alone"), _fit(tmp_path / "side")
    assert a.keys() == b.keys() and len(a) == 10  # the same jobs, one row per coalition
    assert sorted(r.extra.get("batch", 1) for r in b.values()) == [2] * 2 + [4] * 8
    assert all("batch" not in r.extra for r in a.values())
    for key, r in a.items():
        for name, v in r.behaviors.items():
            assert b[key].behaviors[name] == pytest.approx(v, rel=1e-4, abs=1e-4), name
        assert b[key].extra["n_kept"] == r.extra["n_kept"]
    np.testing.assert_allclose(
        _values(tmp_path / "side"), _values(tmp_path / "alone"), rtol=1e-3, atol=1e-3
    )
    # the report says which jobs' times are shares of a batch
    from diffattr.report.inputs import read_store

    cost = read_store(tmp_path / "side" / "store.sqlite").costs["sft"]
    assert (cost.batched, cost.batch, cost.jobs) == (10, 4, 11)
    assert read_store(tmp_path / "alone" / "store.sqlite").costs["sft"].batched == 0


def test_a_batch_killed_midway_resumes_to_the_same_values(tmp_path, full_model):
    cfg = small_cfg(full_model, **{"attribution.estimators": ["loo"]})
    side = cfg.with_overrides(executor={"name": "inline", "jobs_per_batch": 4})

    class Killed(Exception):
        pass

    def kill_after_two_rows(desc, i, total, rec):
        if rec.kind == "fit" and sum(1 for _ in _fit(tmp_path / "killed")) >= 2:
            raise Killed  # the driver dies with the rest of the batch's rows uncommitted

    with one_thread():
        with pytest.raises(Killed):
            with Run(side, tmp_path / "killed", progress=False) as run:
                run.on_job = kill_after_two_rows
                run.attribute()
        assert len(_fit(tmp_path / "killed")) == 2
        resumed = run_attribution(side, tmp_path / "killed", progress=False)
        clean = run_attribution(side, tmp_path / "clean", progress=False)
    assert resumed.failed == clean.failed == 0
    a, b = _fit(tmp_path / "killed"), _fit(tmp_path / "clean")
    assert a.keys() == b.keys() and len(a) == 10
    for key, r in a.items():
        for name, v in r.behaviors.items():
            assert b[key].behaviors[name] == pytest.approx(v, rel=1e-4, abs=1e-4), name
    np.testing.assert_allclose(
        _values(tmp_path / "killed"), _values(tmp_path / "clean"), rtol=1e-3, atol=1e-3
    )


def test_on_a_gpu_the_batch_fills_half_the_free_memory_per_worker(monkeypatch):
    import torch

    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * gib, 16 * gib))
    cfg = RunConfig().with_overrides(device="cuda", executor={"name": "process", "workers": 2})
    assert describe(cfg).startswith("automatic: as many as half the free GPU memory")
    # 8 GiB free, half of it shared by 2 workers: 2 GiB each, 256 MiB a model -> 8
    assert resolve(cfg, cfg.method, lambda: gib // 4) == 8
    assert resolve(cfg, cfg.method, lambda: 64) == 32  # capped (MAX_AUTO)
    assert resolve(cfg, cfg.method, lambda: 16 * gib) == 1  # never below one
    fixed = cfg.with_overrides(executor={"name": "process", "workers": 2, "jobs_per_batch": 3})
    assert resolve(fixed, fixed.method, lambda: 1 / 0) == 3  # set: nothing measured


def test_a_batch_that_fails_runs_its_jobs_one_at_a_time(tmp_path, full_model, monkeypatch):
    from diffattr.runner.job import Worker

    def out_of_memory(self, specs, recs):
        raise RuntimeError("out of memory (injected)")

    monkeypatch.setattr(Worker, "models_for", out_of_memory)
    cfg = small_cfg(full_model, **{"attribution.estimators": ["loo"]})
    side = cfg.with_overrides(executor={"name": "inline", "jobs_per_batch": 4})
    with one_thread():
        summary = run_attribution(side, tmp_path / "run", progress=False)
    assert summary.failed == 0
    fit = _fit(tmp_path / "run")
    assert len(fit) == 10
    assert all("out of memory (injected)" in r.extra["batch_error"] for r in fit.values())
    assert all("batch" not in r.extra for r in fit.values())
