"""One writer per run directory: ``RUN_DIR/run.lock``.

A run (``diffattr run``, and evaluations that add jobs: ``lds``, ``counterfactual``,
``curve``) takes the lock before it writes anything; a second one on the same directory
stops with a one-line error naming the holder (pid, host, command, start time). Readers
(``diffattr status``, ``report``) never take it.

The lock is an exclusive ``flock`` on the file, which the kernel drops when the holder
exits in any way (SIGKILL included), so a killed run never leaves a stale lock behind on a
local file system. The file also records its owner (pid, host, start time, the process's
start tick); where the file system offers no ``flock``, that record decides: a lock whose
pid is dead on this host (or reused by another process) is stale and taken over, one held
from another host is respected (delete the file if that run is gone). A clean exit removes
the file. The lock is re-entrant within a process (the CLI takes it before planning, the
run again when it starts).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from diffattr.errors import DiffattrError
from diffattr.fileio import check_dir_path

LOCK_NAME = "run.lock"

_HELD: dict[str, list] = {}  # resolved lock path -> [fd, count] held by this process


def _proc_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _owner_record() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "started_unix": round(time.time(), 3),
        "proc_start": _proc_start(os.getpid()),
        "command": " ".join(["diffattr", *sys.argv[1:]])[:200],
    }


def _read_record(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 65536, 0)
        rec = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def owner_alive(rec: dict[str, Any]) -> bool:
    """Whether the recorded owner may still run: another host's owner always may; on this
    host, its pid must exist and (where known) have the recorded start time."""
    if rec.get("host") != socket.gethostname():
        return True
    try:
        pid = int(rec.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = rec.get("proc_start")
    now = _proc_start(pid)
    return not (start is not None and now is not None and int(start) != now)


def describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "another process"
    cmd = rec.get("command") or "diffattr"
    return f"{cmd!r} (pid {rec.get('pid')} on {rec.get('host')}, since {rec.get('started')})"


class RunLock:
    """The lock of one run directory; ``acquire()`` / ``release()`` or a ``with`` block."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._key: str | None = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise a one-line error naming who holds it."""
        if self._key is not None:
            return self
        check_dir_path(self.run_dir, "run directory")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self._unwritable(e) from None
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._key = key
            return self
        fd = self._lock_file()
        _HELD[key] = [fd, 1]
        self._key = key
        return self

    def _unwritable(self, e: OSError) -> DiffattrError:
        return DiffattrError(
            f"run directory {self.run_dir} is not writable ({e.strerror or e}); give a writable "
            "--out (diffattr status and report read a read-only run directory)"
        )

    def _lock_file(self) -> int:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except IsADirectoryError:
                raise DiffattrError(
                    f"{self.path} is a directory where the run's lock file belongs; remove it"
                ) from None
            except OSError as e:
                raise self._unwritable(e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                rec = _read_record(fd)
                os.close(fd)
                raise self._held_error(rec) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    os.close(fd)
                    raise self._unwritable(e) from None
                # No flock on this file system: the owner's record decides.
                rec = _read_record(fd)
                if rec and owner_alive(rec) and rec.get("pid") != os.getpid():
                    os.close(fd)
                    raise self._held_error(rec, no_flock=True) from None
            # The holder removes the file when it releases: lock the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            data = json.dumps(_owner_record()).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            return fd

    def _held_error(self, rec: dict[str, Any] | None, no_flock: bool = False) -> DiffattrError:
        extra = ""
        if no_flock and rec and rec.get("host") != socket.gethostname():
            extra = f"; if that run is gone, delete {self.path}"
        return DiffattrError(
            f"{self.run_dir} is in use by {describe(rec)}: one run writes to a run directory "
            f"at a time; wait for it or stop it, or use another --out (diffattr status and "
            f"report work meanwhile){extra}"
        )

    def release(self) -> None:
        if self._key is None:
            return
        key, self._key = self._key, None
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        fd = entry[0]
        del _HELD[key]
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock


def lock_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The record of the process holding ``run_dir``'s lock, or None when none does (read
    only: works on a read-only run directory)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        rec = _read_record(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return rec or {}
        except OSError:
            return rec if rec and owner_alive(rec) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
