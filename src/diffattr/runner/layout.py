"""Where a run keeps what it shares between jobs (torch-free: the plan and the run both use it)."""

from __future__ import annotations

from pathlib import Path

from diffattr.counterfactual.settings import MethodSettings
from diffattr.fileio import content_key


def settings_digest(settings: dict) -> str:
    """Ten hex digits of the SHA-256 of ``settings`` as sorted JSON."""
    return content_key(settings, length=10)


def shared_work_dir(run_dir: str | Path, settings: MethodSettings, data_digest: str) -> Path:
    """Where a method's one-time shared work lives: ``shared/<method>-<digest of its shared
    settings and the data>`` (the plan verifies it before any work, ``prepare`` fills it)."""
    shared = {**settings.shared_settings(), "data_digest": data_digest}
    return Path(run_dir) / "shared" / f"{settings.name}-{settings_digest(shared)}"
