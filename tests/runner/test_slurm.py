"""The SLURM executor's settings, its sbatch parameters and how it maps lost tasks to
failed records (submitit's in-process ``debug`` cluster; the local cluster's end-to-end
equality with the inline executor is in test_reliability.py)."""

import os

import pytest

from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.runner import executors as ex_mod
from diffattr.runner.job import JobContext, JobSpec, record_for
from diffattr.runner.settings import EXECUTORS, SlurmSettings

pytest.importorskip("submitit")


def test_settings_parse_and_check():
    cfg = RunConfig().with_overrides(
        executor={
            "name": "slurm",
            "partition": "gpu",
            "time": 30,
            "gpus_per_job": 1,
            "cpus_per_job": 4,
            "extra_sbatch": {"account": "proj"},
        }
    )
    assert isinstance(cfg.executor, SlurmSettings) and cfg.executor.partition == "gpu"
    assert "slurm" in EXECUTORS.names()
    with pytest.raises(DiffattrError, match="without dashes"):
        RunConfig().with_overrides(executor={"name": "slurm", "extra_sbatch": {"--account": "x"}})
    with pytest.raises(DiffattrError, match="unknown setting"):
        RunConfig().with_overrides(executor={"name": "slurm", "gpus": 1})


def test_no_slurm_here_is_one_line_before_any_work(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(DiffattrError, match="no SLURM") as e:
        SlurmSettings().check()
    assert "\n" not in str(e.value) and "cluster = 'local'" in str(e.value)
    SlurmSettings(cluster="local").check()


def test_sbatch_parameters(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(fake / "srun", 0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    settings = SlurmSettings(
        partition="gpu",
        time=30,
        gpus_per_job=1,
        cpus_per_job=4,
        mem_gb=8,
        extra_sbatch={"account": "proj"},
        setup=["module load cuda"],
    )
    ctx = JobContext(config={}, full_dir="", null_dir="", work_dir="", run_dir=str(tmp_path))
    sub = ex_mod.SlurmExecutor(settings)._executor(ctx)
    text = sub._executor._make_submission_file_text("cmd", "uid")
    for line in (
        "--partition=gpu",
        "--time=30",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--account=proj",
        "--mem=8GB",
        "module load cuda",
    ):
        assert line in text, line
    assert str(tmp_path / "slurm") in text  # logs under the run directory
    no_gpu = ex_mod.SlurmExecutor(SlurmSettings())._executor(ctx)
    assert "gpus-per-node" not in no_gpu._executor._make_submission_file_text("cmd", "uid")


def _specs(n):
    return [JobSpec(key=f"k{i}", kind="fit", mask="01", method="sft") for i in range(n)]


class FakeJob:
    def __init__(self, fn, args):
        self.fn, self.args, self.job_id = fn, args, f"job{id(self)}"
        self.polls = 0

    def done(self):
        self.polls += 1
        return self.polls > 1  # running at the first look

    def result(self):
        return self.fn(*self.args)


class FakeSubmitit:
    """What the driver needs of a submitit executor: submit() and batch()."""

    def __init__(self, log, live):
        self.log, self.live = log, live

    def submit(self, fn, *args):
        self.log.append(("submit", [s.key for s in args[0]]))
        self.log.append(("live", self.live()))
        return FakeJob(fn, args)

    def batch(self):
        import contextlib

        self.log.append(("batch", None))
        return contextlib.nullcontext()


@pytest.mark.parametrize("cluster", ["local", "slurm"])
def test_tasks_chunk_jobs_and_a_lost_task_fails_only_its_jobs(tmp_path, monkeypatch, cluster):
    def fake_execute_jobs(specs, ctx, threads):
        assert threads == 3
        if "k2" in [s.key for s in specs]:
            raise RuntimeError("task 7 timed out\nslurmstepd: CANCELLED DUE TO TIME LIMIT")
        return [record_for(s, status="done", behaviors={"v": 1.0}) for s in specs]

    log = []
    monkeypatch.setattr(ex_mod, "execute_jobs", fake_execute_jobs)
    monkeypatch.setattr(
        ex_mod.SlurmExecutor,
        "_executor",
        lambda self, ctx: FakeSubmitit(log, lambda: len(self._live)),
    )
    settings = SlurmSettings(
        cluster=cluster, jobs_per_task=2, array_parallelism=2, cpus_per_job=3, poll_seconds=0.01
    )
    executor = ex_mod.SlurmExecutor(settings)
    recs = {}
    for r in executor.run(_specs(5), JobContext({}, "", "", "", run_dir=str(tmp_path))):
        assert r.key not in recs
        recs[r.key] = r
    executor.close()
    submitted = [keys for what, keys in log if what == "submit"]
    assert submitted == [["k0", "k1"], ["k2", "k3"], ["k4"]]
    if cluster == "slurm":  # one array, SLURM keeps array_parallelism running
        assert log[0] == ("batch", None)
    else:  # local: never more than array_parallelism tasks started at once
        assert ("batch", None) not in log
        assert max(n for what, n in log if what == "live") == 1  # 2 after this submit
    assert sorted(recs) == ["k0", "k1", "k2", "k3", "k4"]
    assert {k for k, r in recs.items() if r.status == "failed"} == {"k2", "k3"}
    assert recs["k2"].error.startswith("RuntimeError: task ") and "timed out" in recs["k2"].error
    assert "\n" not in recs["k2"].error
