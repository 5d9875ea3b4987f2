"""``diffattr run --profile``: one job under the torch profiler, written into the run."""

import json

import pytest

from conftest import small_cfg
from diffattr.runner import run_attribution
from diffattr.runner.profile import render, split
from diffattr.store import Store


def test_profiled_run_writes_the_split_and_commits_the_job_once(tmp_path, full_model):
    summary = run_attribution(small_cfg(full_model), tmp_path / "run", progress=False, profile=True)
    assert summary.failed == 0 and summary.profile is not None
    payload = json.loads((tmp_path / "run" / "profile.json").read_text())
    assert payload == summary.profile
    assert payload["status"] == "done" and payload["committed"]
    assert payload["job"]["kind"] == "fit"
    s = payload["seconds"]
    for stage in ("train", "sample", "measure", "store"):
        assert s[stage] is not None and s[stage] >= 0
    assert s["train"] > 0 and s["sample"] > 0
    shares = sum(s[k + "_share"] for k in ("train", "sample", "measure", "store", "other"))
    assert shares == pytest.approx(1.0, abs=1e-3)
    names = [r["name"] for r in payload["top_operators"]]
    assert names and any(n.startswith("aten::") for n in names)
    assert not any(n.startswith("diffattr.") for n in names)  # stage markers left out
    assert "aten::" in (tmp_path / "run" / "profile.txt").read_text()
    # the job's arithmetic: both stages counted, the ratio the FLOPs set
    g = payload["gflop"]
    assert "error" not in g and g["train"] > 0 and g["sample"] > 0
    assert g["job_over_sampling"] == pytest.approx((g["train"] + g["sample"]) / g["sample"], 1e-3)
    assert "arithmetic: train" in render(payload)
    # the profiled job is an ordinary committed job: each planned job once, none failed
    with Store(tmp_path / "run" / "store.sqlite") as store:
        assert store.count() == summary.jobs
        assert not store.records(status="failed")
    assert (tmp_path / "run" / "values.csv").is_file()
    # a run whose jobs are all done profiles one again without committing it twice
    again = run_attribution(small_cfg(full_model), tmp_path / "run", progress=False, profile=True)
    assert again.profile["status"] == "done" and not again.profile["committed"]
    assert "train" in render(again.profile)


def test_split_shares_and_unknown_stages():
    s = split(2.0, 1.0, 0.5, 0.5, 4.0)
    assert s["total"] == 4.5 and s["other"] == pytest.approx(0.5)
    assert s["train_share"] == pytest.approx(2.0 / 4.5, abs=1e-4)
    s = split(None, 1.0, None, 0.0, 1.0)  # a job that failed before training ended
    assert s["train"] is None and s["train_share"] is None and s["other"] == 0.0
