"""End-to-end reliability of ``diffattr run`` on a tiny folder dataset (seconds per run):
results follow the data, failures are reported, caches stay out of the working directory,
the SLURM executor (submitit's local cluster) gives the inline executor's values."""

import json
import subprocess
import sys

import numpy as np
import pytest
from tiny import (
    env,
    error_lines,
    make_config,
    make_folder,
    read_only_prefix,
    read_values,
    run_cli,
    write_images,
)
from typer.testing import CliRunner

from conftest import one_thread
from diffattr.config import build_config
from diffattr.runner import run_attribution
from diffattr.store import Store


@pytest.fixture
def tiny(tmp_path):
    data = make_folder(tmp_path / "data")
    return data, make_config(tmp_path / "c.toml", data)


def _keys(run_dir):
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        return {r.key for r in s.records(status=None)}


def test_changed_data_under_an_old_run_directory_is_refused(tmp_path, tiny):
    data, cfg = tiny
    run_dir = tmp_path / "run"
    res = run_cli("run", cfg, "--out", run_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    before = (run_dir / "values.csv").read_text()
    # overwrite one contributor's images (same names, same sizes) and rerun into the same --out
    write_images(data / "bo", 8, level=200, seed=99)
    res = run_cli("run", cfg, "--out", run_dir)
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = error_lines(res.stderr)
    assert "the data changed since this run was made" in line and str(run_dir) in line
    assert (run_dir / "values.csv").read_text() == before  # never old numbers, untouched
    # the same through the full model's record when the store is gone (e.g. killed early)
    keys = _keys(run_dir)
    for p in run_dir.glob("store.sqlite*"):
        p.unlink()
    res = run_cli("run", cfg, "--out", run_dir)
    assert res.returncode == 2, res.stderr[-2000:]
    assert str(run_dir / "full") in error_lines(res.stderr)[0]
    # a new --out follows the data: every job key is new, and so are the values
    res = run_cli("run", cfg, "--out", tmp_path / "new")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not keys & _keys(tmp_path / "new")
    assert (tmp_path / "new" / "values.csv").read_text() != before


def test_failed_jobs_are_counted_with_the_first_reason(tmp_path, tiny, monkeypatch):
    from diffattr.cli import app
    from diffattr.runner.job import Worker

    real = Worker.measure
    calls = {"n": 0}

    def flaky(self, images):
        calls["n"] += 1
        if calls["n"] in (4, 6):
            raise RuntimeError(f"injected failure {calls['n']}")
        return real(self, images)

    monkeypatch.setattr(Worker, "measure", flaky)
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(tiny[1]), "--out", str(run_dir)])
    assert res.exit_code == 1, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert "2 job(s) failed; first: RuntimeError: injected failure 4;" in err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["first_failure"].startswith(
        "RuntimeError: injected failure 4"
    )


def test_caches_stay_out_of_a_read_only_working_directory(tmp_path, tiny):
    data, cfg = tiny
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    prefix = read_only_prefix(cwd)
    e = env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    e.pop("DIFFATTR_HOME")

    def cli(*args):
        return subprocess.run(
            [*prefix, sys.executable, "-m", "diffattr.cli", *map(str, args)],
            env=e,
            cwd=cwd,
            capture_output=True,
            text=True,
        )

    res = cli("train", "--config", cfg, "--out", tmp_path / "model")
    assert res.returncode == 0, res.stderr[-2000:]
    assert list((tmp_path / "xdg" / "diffattr" / "data-digests").glob("*.json"))
    res = cli("run", cfg, "--out", tmp_path / "run", "--full-model", tmp_path / "model")
    assert res.returncode == 0, res.stderr[-2000:]
    assert list((tmp_path / "run" / "cache").iterdir())
    # without --out, the default place is refused in one line, not a traceback
    res = cli("run", cfg)
    assert res.returncode == 2 and "pass --out" in error_lines(res.stderr)[0], res.stderr
    assert list(cwd.iterdir()) == []


def test_slurm_local_cluster_matches_inline(tmp_path, tiny):
    pytest.importorskip("submitit")
    cfg = build_config(tiny[1])
    slurm_cfg = cfg.with_overrides(
        executor={
            "name": "slurm",
            "cluster": "local",
            "jobs_per_task": 2,
            "array_parallelism": 2,
            "poll_seconds": 0.2,
        }
    )
    with one_thread():  # as each SLURM task (cpus_per_job = 1)
        inline = run_attribution(cfg, tmp_path / "inline", progress=False)
        via = run_attribution(slurm_cfg, tmp_path / "slurm", progress=False)
    assert inline.failed == via.failed == 0
    a, b = read_values(tmp_path / "inline"), read_values(tmp_path / "slurm")
    assert [r["player"] for r in a] == [r["player"] for r in b]
    np.testing.assert_allclose(
        [float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-4, atol=1e-6
    )
    assert _keys(tmp_path / "inline") == _keys(tmp_path / "slurm")
    assert list((tmp_path / "slurm" / "slurm").iterdir())  # submitit's logs in the run dir
