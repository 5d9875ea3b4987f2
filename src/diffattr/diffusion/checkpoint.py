"""Model directories: written atomically, with their metadata read in one place.

Every model directory holds ``diffattr.json`` (what made the model: the run config, the
dataset, steps, timings) next to the family's own files (for pixel-space models, diffusers'
``DDPMPipeline`` layout: ``model_index.json``, ``scheduler/``, ``unet/``), and optionally the
state needed to continue training::

    training/<weights>/                raw (non-EMA) weights
    training/optimizer.pt              Adam state (tensors only; loaded with weights_only)
    training/state.json                the EMA step, and whether optimizer.pt was written

``write_model_dir`` builds the directory in a temporary sibling and renames it into place,
so a kill at any moment leaves either the old or the new model, never a half-written one.
A directory damaged afterwards (a weights file missing or truncated, ``optimizer.pt``
missing or unreadable) is a one-line ``DiffattrError`` naming the file, raised by
``read_meta`` / ``read_training_state`` before anything loads it: delete the directory and
the run redoes it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffattr.errors import DiffattrError
from diffattr.fileio import fault_point, remove_stale_tmp, stale_tmp, tmp_prefix, umask

META = "diffattr.json"
#: Files whose presence in a folder means the folder is a model component needing weights.
COMPONENT_MARKERS = ("config.json", "pruned.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def is_model_dir(directory: str | Path) -> bool:
    """Whether ``directory`` holds a model written by diffattr (its ``diffattr.json``)."""
    return (Path(directory) / META).is_file()


def read_meta(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The ``diffattr.json`` of a model directory; a missing or broken file is a one-line
    error saying what to do. With ``verify`` the weight files are checked too (every
    component folder has its weights, no safetensors file is truncated): see
    ``verify_model_files``."""
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
    if verify:
        verify_model_files(directory)
    return meta


def verify_model_files(directory: str | Path, fix: str | None = None) -> None:
    """A one-line error naming the first damaged file of a model directory: a component
    folder (with ``config.json``, ``pruned.json`` or ``adapter_config.json``) without a
    weights file, or a ``.safetensors`` file shorter than its header says. Cheap: reads
    only the headers. ``fix`` says what to do (default: delete the directory, which a run
    redoes)."""
    root = Path(directory)
    fix = fix or f"delete {root} to redo it (a run retrains or re-prepares what it made)"
    for folder in sorted({p.parent for m in COMPONENT_MARKERS for p in root.rglob(m)}):
        if not any(f.suffix in WEIGHT_SUFFIXES for f in folder.iterdir() if f.is_file()):
            raise DiffattrError(f"{folder} has no weights file (missing); {fix}")
    for f in sorted(root.rglob("*.safetensors")):
        problem = _safetensors_problem(f)
        if problem:
            raise DiffattrError(f"{f} is {problem}; {fix}")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be complete (None if its size matches its header)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"truncated ({size} bytes, header of {n} bytes)"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable ({type(e).__name__})"
    if not isinstance(header, dict):
        return "not a safetensors file"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not isinstance(offsets, list) or len(offsets) != 2:
            return "not a safetensors file"
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        return f"truncated ({size} of {8 + n + end} bytes)"
    return None


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
    recover_model_dir(out)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out.name), dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        fill(tmp)
        (tmp / META).write_text(json.dumps(meta or {}, indent=2, sort_keys=True))
        fault_point("model_dir.rename")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_training_state(
    directory: Path, optimizer_state: dict | None, ema_step: int, has_raw: bool
) -> None:
    """The optimizer state and EMA step under ``directory/training``."""
    if optimizer_state is None and not has_raw:
        return
    (directory / "training").mkdir(parents=True, exist_ok=True)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / "training" / "optimizer.pt")
    state = {"ema_step": int(ema_step), "optimizer": optimizer_state is not None}
    (directory / "training" / "state.json").write_text(json.dumps(state))


def read_training_state(directory: Path, device: str | torch.device) -> tuple[dict | None, int]:
    """(optimizer state or None, EMA step) written by ``write_training_state``; a missing
    ``state.json``, a missing ``optimizer.pt`` that ``state.json`` lists, or an unreadable
    one is a one-line error naming the file."""
    directory = Path(directory)
    opt_path = directory / "training" / "optimizer.pt"
    state_path = directory / "training" / "state.json"
    fix = f"delete {directory} to redo it"
    if not (directory / "training").is_dir():
        return None, 0
    if not state_path.is_file():
        raise DiffattrError(f"{state_path} is missing (training state incomplete); {fix}")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        step = int(state.get("ema_step", 0))
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        raise DiffattrError(f"{state_path} is unreadable; {fix}") from None
    opt = None
    if state.get("optimizer") and not opt_path.is_file():
        raise DiffattrError(f"{opt_path} is missing; {fix}")
    if opt_path.exists():
        try:
            opt = torch.load(opt_path, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
            raise DiffattrError(
                f"{opt_path} is unreadable or truncated ({type(e).__name__}); {fix}"
            ) from None
    return opt, step


def recover_model_dir(out: str | Path) -> None:
    """Clean up after a process killed while writing ``out``: a previous model moved aside
    for its replacement is put back when the replacement never arrived, and temporary
    folders of dead processes are removed."""
    out = Path(out)
    stale = stale_tmp(out.parent, out.name)
    if not out.exists():
        old = [p for p in stale if p.name.endswith("-old") and is_model_dir(p)]
        if old:
            os.replace(old[-1], out)
    remove_stale_tmp(out.parent, out.name)


def recover_folder(folder: str | Path) -> None:
    """``recover_model_dir`` for every model directory of ``folder`` that a killed process
    was writing (found by its temporary siblings); a run calls it before it looks at what
    it has already made."""
    import re

    folder = Path(folder)
    if not folder.is_dir():
        return
    names = set()
    for p in folder.iterdir():
        m = re.match(r"^\.(.+)\.tmp-[A-Za-z0-9]+-\d+-", p.name)
        if m:
            names.add(m.group(1))
    for name in sorted(names):
        recover_model_dir(folder / name)


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        if not dst.is_dir():
            raise DiffattrError(f"{dst} is a file where a model directory belongs; remove it")
        old = dst.with_name(f"{tmp_prefix(dst.name)}old")
        os.replace(dst, old)
        fault_point("model_dir.swap")
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
