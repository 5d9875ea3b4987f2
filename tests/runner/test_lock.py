"""One writer per run directory: the lock names its holder, dies with it, and is taken
over when its record names a dead process."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from tiny import env

from diffattr.errors import DiffattrError
from diffattr.runner import lock as lock_mod
from diffattr.runner.lock import LOCK_NAME, RunLock, lock_holder

HOLD = """
import sys, time
from diffattr.runner.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(run_dir):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], env=env(), stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_told_who_holds_the_lock_until_it_dies(tmp_path):
    run_dir = tmp_path / "run"
    p = _holder(run_dir)
    try:
        with pytest.raises(DiffattrError) as e:
            RunLock(run_dir).acquire()
        msg = str(e.value)
        assert "\n" not in msg and f"pid {p.pid}" in msg and socket.gethostname() in msg
        assert "in use" in msg and "status" in msg
        holder = lock_holder(run_dir)
        assert holder["pid"] == p.pid and holder["host"] == socket.gethostname()
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    # killed: its record is still there, but nobody holds the lock any more
    assert (run_dir / LOCK_NAME).exists() and lock_holder(run_dir) is None
    with RunLock(run_dir) as lk:
        assert lk.held and json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (run_dir / LOCK_NAME).exists()  # a clean release removes the file


def test_reentrant_within_a_process(tmp_path):
    a = RunLock(tmp_path / "run").acquire()
    b = RunLock(tmp_path / "run").acquire()
    b.release()
    assert (tmp_path / "run" / LOCK_NAME).exists()
    a.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_without_flock_the_record_decides(tmp_path, monkeypatch):
    """On a file system without flock: a dead pid on this host is a stale lock (taken
    over), a live one or another host's is respected."""

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}
    (run_dir / LOCK_NAME).write_text(json.dumps(record))
    with RunLock(run_dir):
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": sleeper.pid, "host": socket.gethostname(), "started": "now"}
        (run_dir / LOCK_NAME).write_text(json.dumps(record))
        with pytest.raises(DiffattrError, match=f"pid {sleeper.pid}"):
            RunLock(run_dir).acquire()
        # a reused pid (another start time) is not the owner
        record["proc_start"] = 1
        (run_dir / LOCK_NAME).write_text(json.dumps(record))
        RunLock(run_dir).acquire().release()
    finally:
        sleeper.kill()
        sleeper.wait()
    other = {"pid": 1, "host": "elsewhere.example", "started": "now"}
    (run_dir / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(DiffattrError, match="delete .*run.lock"):
        RunLock(run_dir).acquire()


def test_a_file_where_the_run_directory_belongs(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(DiffattrError, match="is a file where a directory belongs"):
        RunLock(tmp_path / "out").acquire()
