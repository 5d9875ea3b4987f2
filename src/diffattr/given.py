"""Objects given from Python, saved once into the run directory.

A run is files: its config names paths, and its workers, resumed calls and evaluations
read them. A ``datasets.Dataset`` or a diffusers pipeline held in memory is therefore
written into the run directory once, and the config names that copy:

* ``RUN_DIR/data-given/`` -- the dataset (``save_to_disk``), read as ``[data] name =
  "hf-dataset"``;
* ``RUN_DIR/full-given/`` -- a ``DDPMPipeline`` or ``LDMPipeline`` (``save_pretrained``),
  the full model (``attribution.full_model``, as ``--full-model DIR``);
* ``RUN_DIR/base-given/`` -- a ``StableDiffusionPipeline``, the frozen base of the
  text-to-image family (``family.base``), whose LoRA the run trains and attributes.

Each copy records the digest of what it holds (``given.json``: the dataset's content
digest, the pipeline's weights and configs), so giving the same object again -- a resumed
run, a second session -- writes nothing. A dataset whose content differs from the one a run
directory was made from is refused with the run's one-line "the data changed" error; a
different pipeline replaces the copy (its jobs have other keys, as with another
``--full-model``). Copies are written in a temporary sibling and renamed into place, so a
kill never leaves half a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffattr.errors import DiffattrError
from diffattr.fileio import tmp_prefix, umask

GIVEN_DATA = "data-given"
GIVEN_FULL = "full-given"
GIVEN_BASE = "base-given"
RECORD = "given.json"

#: Pipeline classes accepted as models, and what each becomes.
PIPELINES = ("DDPMPipeline", "LDMPipeline", "StableDiffusionPipeline")


def is_hf_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets`` object (without importing ``datasets``)."""
    return type(obj).__module__.split(".")[0] == "datasets"


def is_pipeline(obj: Any) -> bool:
    """Whether ``obj`` is a diffusers pipeline (diffusers is loaded when one exists)."""
    diffusers = sys.modules.get("diffusers")
    return diffusers is not None and isinstance(obj, diffusers.DiffusionPipeline)


def _record(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _write_once(target: Path, digest: str, fill: Callable[[Path], None], kind: str) -> Path:
    """``target`` holding what ``fill(tmp)`` writes, unless it already records ``digest``."""
    if target.is_dir() and _record(target).get("digest") == digest:
        return target
    if target.exists() and not target.is_dir():
        raise DiffattrError(f"{target} is a file where the run's {target.name}/ folder belongs")
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(target.name), dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        fill(tmp)
        (tmp / RECORD).write_text(json.dumps({"digest": digest, "kind": kind}, indent=2))
        if target.exists():
            old = target.with_name(f"{tmp_prefix(target.name)}old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- datasets


def give_dataset(ds: Any, run_dir: Path, settings: Any) -> Path:
    """Save ``ds`` (a ``datasets.Dataset``) as ``run_dir/data-given`` once; ``settings``
    (an ``HFDatasetData``) names its columns. The content digest decides whether the copy
    is current, and a run directory made from other data refuses it in one line."""
    from diffattr.data.digest import content_digest
    from diffattr.data.hf import from_hf_dataset, require_datasets
    from diffattr.runner.plan import check_data_unchanged

    datasets = require_datasets()
    if isinstance(ds, datasets.IterableDataset):
        raise DiffattrError(
            "an IterableDataset streams its rows; give a datasets.Dataset (e.g. "
            "Dataset.from_generator or ds.take(n) then Dataset.from_list)"
        )
    digest = content_digest(from_hf_dataset(ds, settings, source="the given dataset"))
    check_data_unchanged(run_dir, digest)
    return _write_once(
        run_dir / GIVEN_DATA, digest, lambda tmp: ds.save_to_disk(str(tmp)), "datasets.Dataset"
    )


# --------------------------------------------------------------------------- pipelines


def pipeline_digest(pipe: Any) -> str:
    """Hash of a pipeline's components: class, config and every weight tensor."""
    import torch

    h = hashlib.sha256(type(pipe).__name__.encode())
    for name, comp in sorted(pipe.components.items()):
        h.update(f"{name}:{type(comp).__name__}".encode())
        config = getattr(comp, "config", None)
        if config is not None:
            plain = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            plain = {k: v for k, v in plain.items() if not k.startswith("_")}  # provenance
            h.update(json.dumps(plain, sort_keys=True, default=str).encode())
        if isinstance(comp, torch.nn.Module):
            for key, t in sorted(comp.state_dict().items()):
                t = t.detach().to("cpu").contiguous()
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif hasattr(comp, "get_vocab"):
            h.update(json.dumps(comp.get_vocab(), sort_keys=True).encode())
    return h.hexdigest()[:32]


def give_pipeline(pipe: Any, run_dir: Path) -> tuple[str, Path]:
    """Save a diffusers pipeline into the run directory once: ``(class name, path)``.

    A ``DDPMPipeline`` or ``LDMPipeline`` is the full model (``full-given/``); a
    ``StableDiffusionPipeline`` without LoRA adapters is the text-to-image base
    (``base-given/``)."""
    kind = type(pipe).__name__
    if kind not in PIPELINES:
        raise DiffattrError(
            f"a {kind} is not a model diffattr attributes; give a {', '.join(PIPELINES[:-1])} "
            f"or {PIPELINES[-1]} (or a model directory)"
        )
    if kind == "StableDiffusionPipeline" and getattr(pipe.unet, "peft_config", None):
        raise DiffattrError(
            "the StableDiffusionPipeline carries LoRA adapters; diffattr attributes a LoRA it "
            "trains on your data itself: give the base (pipe.unload_lora_weights() first), or "
            "a LoRA directory a diffattr run made as the full model"
        )
    target = run_dir / (GIVEN_BASE if kind == "StableDiffusionPipeline" else GIVEN_FULL)

    def fill(tmp: Path) -> None:
        pipe.save_pretrained(str(tmp), safe_serialization=True)

    return kind, _write_once(target, pipeline_digest(pipe), fill, kind)
