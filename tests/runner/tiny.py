"""A tiny folder dataset and run configuration for end-to-end tests of the CLI (seconds per
run with one torch thread), and helpers to run ``diffattr`` in a subprocess."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CONTRIBUTORS = ("ann", "bo", "cy")

TINY = """\
[data]
name = "folder"
path = "{data}"

[train]
steps = 20
batch_size = 16
checkpoint_every = 10

[sample]
num_samples = 16
ddim_steps = 2
batch_size = 16

[attribution]
subsets = 6

[method]
name = "sft"
finetune_steps = 4
steps = 3
"""


def write_images(folder: Path, n: int, level: int, seed: int, size: int = 8) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.clip(rng.random((size, size)) * 60 + level, 0, 255).astype(np.uint8)
        Image.fromarray(a, "L").save(folder / f"{i}.png")


def make_folder(root: Path, contributors=CONTRIBUTORS, per: int = 8, size: int = 8) -> Path:
    """One subfolder of ``per`` grey size x size PNGs per contributor (distinct levels)."""
    for c, who in enumerate(contributors):
        write_images(root / who, per, 40 + 70 * c, seed=c, size=size)
    return root


def make_config(path: Path, data: Path, extra: str = "") -> Path:
    path.write_text(TINY.format(data=str(data).replace("\\", "/")) + extra)
    return path


def env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: one thread (2 shared cores), the source on the
    path whatever the working directory."""
    e = dict(os.environ)
    src = str(REPO / "src")
    e["PYTHONPATH"] = src + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="40")
    e.pop("DIFFATTR_FAULT", None)
    e.update(extra)
    return e


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffattr.cli", *map(str, args)]


def run_cli(*args, cwd=None, timeout: float = 600, **env_extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli(*args),
        env=env(**env_extra),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_values(run_dir: Path) -> list[dict[str, str]]:
    with open(Path(run_dir) / "values.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` is read-only: a read-only bind mount in a
    private mount namespace as root (root ignores file modes), file modes otherwise."""
    import pytest

    folder = Path(folder)
    if os.getuid() != 0:
        for p in folder.iterdir():
            os.chmod(p, 0o444 if p.is_file() else 0o555)
        os.chmod(folder, 0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to make a read-only mount as root")
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c"]
    # cd again: a working directory inside the folder would still be the writable one
    script = 'mount --bind -o ro "$0" "$0" && cd "$(pwd)" && exec "$@"'
    probe = subprocess.run([*prefix, script, str(folder), "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr[-200:]!r}")
    return [*prefix, script, str(folder)]
