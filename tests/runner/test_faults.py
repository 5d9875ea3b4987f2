"""Fault injection: a run killed with SIGKILL again and again -- during the full model's
training, while it writes a model directory, during pruning and the all-data fine-tune,
during a job, just before and just after a job's store commit, and at random moments --
resumed each time, ends with the values of an uninterrupted run, and no finished job is
ever run or recorded twice.

Named kill points (``DIFFATTR_FAULT=point:k``, ``diffattr.fileio.fault_point``) kill the
process the k-th time it passes them: ``model_dir.rename`` (a model directory is complete
in its temporary folder: full-model checkpoints, the null model, the pruned model and its
fine-tune checkpoints), ``model_dir.swap`` (between moving the old directory aside and
moving the new one in), ``store.put`` (a job finished, its row not yet committed) and
``store.committed`` (just after a commit)."""

import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
from tiny import cli, env, make_config, make_folder, read_values, run_cli

from diffattr.errors import DiffattrError
from diffattr.store import Store

SCHEDULE = [
    "random",  # a random moment once the run holds its lock: start-up, data, full-model training
    "model_dir.rename:1",  # the first full-model checkpoint (step 10 of 20), or the next
    "model_dir.rename:2",  # the next model written after resuming (training resumed)
    "model_dir.swap:1",  # a model half replaced: the old one must come back
    "model_dir.rename:2",  # the null model / the pruned model
    "model_dir.rename:2",  # the pruned model's all-data fine-tune
    "store.put:1",  # the first reference job done, not committed
    "random",  # a random moment after the next job's commit: during a job
    "store.committed:2",  # just after a commit
    "store.put:3",  # a coalition job done, not committed
    "store.committed:3",
]


def _snapshot(run_dir):
    path = run_dir / "store.sqlite"
    if not path.exists():
        return {}
    try:
        with Store(path, readonly=True) as s:
            return {r.key: (r.status, r.finished) for r in s.records(status=None)}
    except DiffattrError:  # the run is creating it this very moment
        return {}


@pytest.mark.slow
def test_killed_again_and_again_resumes_to_the_uninterrupted_values(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    clean = run_cli("run", cfg, "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]

    run_dir = tmp_path / "killed"
    killed = 0
    seen: dict = {}

    def check_no_job_redone():
        now = _snapshot(run_dir)
        for key, (status, finished) in seen.items():
            if status == "done":  # a finished job is never run or written again
                assert now[key] == (status, finished), key
        seen.update(now)

    rng = random.Random(0)
    for step in SCHEDULE:
        if step == "random":
            # wait for the run to get somewhere (the store, or one more record), then kill
            # it a random moment later
            before = len(_snapshot(run_dir))
            p = subprocess.Popen(
                cli("run", cfg, "--out", run_dir),
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while p.poll() is None:
                # the lock is taken before any work; the store opens after the models
                started = (run_dir / "run.lock").exists()
                if (before == 0 and started) or len(_snapshot(run_dir)) > before:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            rc = p.wait()
            err = ""
        else:
            res = run_cli("run", cfg, "--out", run_dir, DIFFATTR_FAULT=step)
            rc, err = res.returncode, res.stderr[-2000:]
        assert rc in (0, -signal.SIGKILL), (step, rc, err)
        killed += rc == -signal.SIGKILL
        check_no_job_redone()
        assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name and p.is_file()]
    assert killed >= len(SCHEDULE) - 2, killed

    final = run_cli("run", cfg, "--out", run_dir)
    assert final.returncode == 0, final.stderr[-2000:]
    check_no_job_redone()
    with Store(run_dir / "store.sqlite", readonly=True) as s:
        recs = s.records(status=None)
        planned = s.get_meta("planned")
    assert all(r.status == "done" for r in recs)
    assert len({r.key for r in recs}) == len(recs) and set(planned) <= {r.key for r in recs}
    # model folders left half-written by the kills are gone or were put back
    assert not [p for p in run_dir.rglob(".*tmp-*")]
    a, b = read_values(tmp_path / "clean"), read_values(run_dir)
    assert [(r["player"], r["behavior"]) for r in a] == [(r["player"], r["behavior"]) for r in b]
    np.testing.assert_allclose(
        [float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-4, atol=1e-6
    )
