"""Files the package writes and reads: atomic writes with the user's umask, JSON read with
one-line errors, where caches go, and the fault points of the kill tests.

* ``atomic_write_text``: a temporary sibling, then ``os.replace`` (never a half-written
  file); the file gets the mode an ordinary ``open()`` would give it (``0666 & ~umask``),
  not ``mkstemp``'s private ``0600``. Temporary siblings are named after their host and
  pid (``tmp_prefix``), so those a killed process left are removed by the next write
  (``remove_stale_tmp``).
* ``read_json``: a JSON file, or a one-line ``DiffattrError`` naming it and what to do.
* ``content_key``: hex digits of the SHA-256 of a record's sorted JSON (cache keys).
* ``cache_home``: the shared cache folder of commands that have no run directory.
* ``fault_point``: a named point where ``DIFFATTR_FAULT=name:k`` kills the process (SIGKILL)
  the k-th time it is reached -- for the fault-injection tests; a no-op otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffattr.errors import DiffattrError


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0666 & ~umask``."""
    return 0o666 & ~umask()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def tmp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of ``name`` made by this process."""
    return f".{name}.tmp-{_host()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_tmp(parent: Path, name: str) -> list[Path]:
    """Temporary siblings of ``parent/name`` left by dead processes of this host."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.tmp-{_host()}-(\d+)-")
    out = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return []
    for p in entries:
        m = pattern.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            out.append(p)
    return sorted(out)


def remove_stale_tmp(parent: Path, name: str) -> None:
    """Remove the temporary siblings of ``parent/name`` that killed processes left."""
    for p in stale_tmp(parent, name):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str, mkdir: bool = True) -> None:
    """Write ``text`` to ``path`` atomically; with ``mkdir`` create the parent folder.

    The file is created with the user's umask (as ``open`` would), so a group-shared run
    directory stays readable by the group.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise DiffattrError(f"{path} is a directory where a file belongs; remove it")
    remove_stale_tmp(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def not_utf8_error(path: str | os.PathLike[str], exc: UnicodeDecodeError) -> DiffattrError:
    """The one-line error of a text file (a data CSV, a coalition table) that is not UTF-8:
    where the first bad byte is and the remedy, the same for every reader."""
    return DiffattrError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and rerun")


def check_utf8_file(path: str | os.PathLike[str]) -> None:
    """``not_utf8_error`` for a file that does not decode as UTF-8 (nothing if it does, or
    if it cannot be read: the reader says why)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return
    try:
        data.decode("utf-8")  # a byte-order mark is valid UTF-8: offsets stay the file's
    except UnicodeDecodeError as e:
        raise not_utf8_error(path, e) from None


def read_json(path: str | os.PathLike[str], what: str = "", fix: str | None = None) -> Any:
    """The parsed JSON at ``path``; missing is ``None``; empty, truncated or not UTF-8 is a
    one-line error naming the file and ``fix`` (default: delete it, the run redoes it)."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        raise DiffattrError(f"{path} is a directory where a JSON file belongs; remove it")
    todo = fix or "delete it and rerun (the run redoes that part)"
    try:
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise DiffattrError(f"{path} is empty{_what(what)}; {todo}")
        return json.loads(text)
    except UnicodeDecodeError:
        raise DiffattrError(f"{path} is not UTF-8 text{_what(what)}; {todo}") from None
    except json.JSONDecodeError as e:
        raise DiffattrError(
            f"{path} is not valid JSON (line {e.lineno}: {e.msg}){_what(what)}; {todo}"
        ) from None
    except OSError as e:
        raise DiffattrError(f"cannot read {path}: {e.strerror or e}") from None


def _what(what: str) -> str:
    return f" ({what})" if what else ""


def content_key(record: Any, length: int = 20, default: Callable[[Any], Any] | None = None) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``record`` as JSON with sorted keys
    (``json.dumps``' default separators; ``default`` as in ``json.dumps``, e.g. ``str``).
    A cache key: changing the encoding changes every key written before."""
    text = json.dumps(record, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_sha256(path: str | os.PathLike[str], into: Any = None) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks; with ``into`` (a hashlib
    object) the bytes are fed to it instead and its hex digest so far is returned."""
    h = into if into is not None else hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_home() -> Path:
    """Shared caches of commands without a run directory (``diffattr train``, ``measure``):
    ``$DIFFATTR_HOME/cache``, else ``$XDG_CACHE_HOME/diffattr``, else ``~/.cache/diffattr``
    -- never the current directory."""
    if os.environ.get("DIFFATTR_HOME"):
        return Path(os.environ["DIFFATTR_HOME"]).expanduser() / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "diffattr"


def check_dir_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a directory or does not exist yet (no parent a file either);
    a one-line error when a file stands where the directory belongs."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise DiffattrError(
                    f"{what} {path}: {p} is a file where a directory belongs; "
                    "give another path or remove it"
                )
            break
    return path


_FAULT_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL the k-th time ``name`` is reached when the
    environment says ``DIFFATTR_FAULT=name:k`` (tests of resumption); a no-op otherwise."""
    spec = os.environ.get("DIFFATTR_FAULT")
    if not spec:
        return
    target, _, k = spec.rpartition(":")
    if target != name:
        return
    _FAULT_COUNTS[name] = _FAULT_COUNTS.get(name, 0) + 1
    if _FAULT_COUNTS[name] >= int(k or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
