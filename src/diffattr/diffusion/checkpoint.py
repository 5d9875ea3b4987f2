"""Model directories: written atomically, with their metadata read in one place.

Every model directory holds ``diffattr.json`` (what made the model: the run config, the
dataset, steps, timings) next to the family's own files (for pixel-space models, diffusers'
``DDPMPipeline`` layout: ``model_index.json``, ``scheduler/``, ``unet/``), and optionally the
state needed to continue training::

    training/<weights>/                raw (non-EMA) weights
    training/optimizer.pt              Adam state (tensors only; loaded with weights_only)
    training/state.json                the EMA step

``write_model_dir`` builds the directory in a temporary sibling and renames it into place,
so a kill at any moment leaves either the old or the new model, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffattr.errors import DiffattrError

META = "diffattr.json"


def is_model_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a model written by diffattr (its ``diffattr.json``)."""
    return (Path(directory) / META).is_file()


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The ``diffattr.json`` of a model directory; a missing or broken file is a one-line
    error saying what to do."""
    path = Path(directory) / META
    if not path.is_file():
        raise DiffattrError(
            f"{directory} is not a diffattr model directory ({META} missing; make one with "
            "`diffattr train`)"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffattrError(f"{path} is unreadable ({e}); delete {directory} to redo it") from None
    if not isinstance(meta, dict):
        raise DiffattrError(f"{path} is not a JSON object; delete {directory} to redo it")
    return meta


def meta_value(directory: str | Path, *keys: str) -> Any:
    """A nested value of a model directory's metadata (None if absent or unreadable)."""
    try:
        node: Any = read_meta(directory)
    except DiffattrError:
        return None
    for k in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(k)
    return node


def write_model_dir(
    out_dir: str | Path, fill: Callable[[Path], None], meta: dict[str, Any] | None
) -> Path:
    """Create ``out_dir`` atomically: ``fill(tmp)`` writes the contents, then the metadata
    is written and the directory renamed into place (replacing an old one)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        fill(tmp)
        (tmp / META).write_text(json.dumps(meta or {}, indent=2, sort_keys=True))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_training_state(
    directory: Path, optimizer_state: dict | None, ema_step: int, has_raw: bool
) -> None:
    """The optimizer state and EMA step under ``directory/training``."""
    if optimizer_state is None and not has_raw:
        return
    (directory / "training").mkdir(parents=True, exist_ok=True)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / "training" / "optimizer.pt")
    (directory / "training" / "state.json").write_text(json.dumps({"ema_step": int(ema_step)}))


def read_training_state(directory: Path, device: str | torch.device) -> tuple[dict | None, int]:
    """(optimizer state or None, EMA step) written by ``write_training_state``."""
    opt_path = directory / "training" / "optimizer.pt"
    state_path = directory / "training" / "state.json"
    opt = None
    if opt_path.exists():
        try:
            opt = torch.load(opt_path, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
            raise DiffattrError(
                f"{opt_path} is unreadable ({type(e).__name__}); delete {directory} to redo it"
            ) from None
    step = 0
    if state_path.exists():
        try:
            step = int(json.loads(state_path.read_text()).get("ema_step", 0))
        except (ValueError, AttributeError, json.JSONDecodeError):
            raise DiffattrError(
                f"{state_path} is unreadable; delete {directory} to redo it"
            ) from None
    return opt, step


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        if not dst.is_dir():
            raise DiffattrError(f"{dst} is a file where a model directory belongs; remove it")
        old = dst.with_name(f".{dst.name}.old.{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
