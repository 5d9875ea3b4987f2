"""One job = one counterfactual model: method on the kept data, sampling, behaviors.

Jobs are described by picklable specs (paths and plain data only) so that any executor —
inline, a process pool, Ray tasks — can run them; the worker rebuilds what it needs from
disk and caches it per process (dataset, prepared method, feature extractor).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.store import JobRecord, str_to_mask


@dataclass(frozen=True)
class JobContext:
    """What every job of a run shares, passed by path (read-only for workers)."""

    full_dir: str
    null_dir: str
    work_dir: str  # the method's prepared, shared inputs (e.g. pruned + fine-tuned model)
    data: dict[str, Any]
    sample: dict[str, Any]
    behaviors: list[str]
    device: str = "cpu"
    grids_dir: str | None = None  # if set, a PNG grid of each job's first samples goes here


@dataclass(frozen=True)
class JobSpec:
    key: str
    kind: str  # 'fit', 'test', 'reference', 'counterfactual'
    mask: str
    method: str  # a registered counterfactual method, or 'full' / 'null' for references
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_CACHE: dict[Any, Any] = {}


def _cached(key: Any, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def _dataset(ctx: JobContext):
    from diffattr.config import DataConfig
    from diffattr.data import Players, load_dataset

    def build():
        cfg = DataConfig(**ctx.data)
        ds = load_dataset(cfg)
        return ds, Players.from_dataset(ds, cfg.players)

    return _cached(("data", repr(sorted(ctx.data.items()))), build)


def _method(spec: JobSpec, ctx: JobContext):
    from diffattr.counterfactual import load_method

    key = ("method", spec.method, repr(sorted(spec.settings.items())), ctx.work_dir, ctx.device)
    return _cached(
        key, lambda: load_method(spec.method, spec.settings, ctx.full_dir, ctx.work_dir, ctx.device)
    )


def measure(images: torch.Tensor, ctx: JobContext) -> dict[str, float]:
    from diffattr.behaviors import measure_images
    from diffattr.config import DataConfig

    return measure_images(images, DataConfig(**ctx.data), names=ctx.behaviors, device=ctx.device)


def sample(unet: torch.nn.Module, ctx: JobContext) -> torch.Tensor:
    from diffattr.diffusion.sample import generate

    s = ctx.sample
    return generate(
        unet,
        s["num_samples"],
        ddim_steps=s["ddim_steps"],
        seed=s["seed"],
        batch_size=s["batch_size"],
        device=ctx.device,
    )


def record_for(spec: JobSpec, **fields: Any) -> JobRecord:
    """A store record carrying the spec's identity, plus ``fields`` (status, error, ...)."""
    return JobRecord(
        key=spec.key,
        kind=spec.kind,
        mask=spec.mask,
        method=spec.method,
        settings=spec.settings,
        seed=spec.seed,
        extra=dict(spec.extra),
        **fields,
    )


def execute_job(spec: JobSpec, ctx: JobContext) -> JobRecord:
    """Run one job and return its record; an exception becomes a 'failed' record."""
    t0 = time.perf_counter()
    rec = record_for(spec)
    try:
        torch.manual_seed(spec.seed)
        if spec.method in ("full", "null"):
            from diffattr.diffusion.checkpoint import load_model

            unet = load_model(
                ctx.full_dir if spec.method == "full" else ctx.null_dir, ctx.device
            ).unet
        else:
            dataset, players = _dataset(ctx)
            kept = players.indices(str_to_mask(spec.mask))
            method = _method(spec, ctx)
            t = time.perf_counter()
            result = method.run(kept, dataset, seed=spec.seed)
            rec.t_train = time.perf_counter() - t
            unet = result.unet
            rec.extra.update({"n_kept": int(len(kept)), **(result.info or {})})
        t = time.perf_counter()
        images = sample(unet, ctx)
        rec.t_sample = time.perf_counter() - t
        if ctx.grids_dir:
            from diffattr.images import save_grid

            save_grid(images[:64], Path(ctx.grids_dir) / f"{spec.key}.png")
        t = time.perf_counter()
        rec.behaviors = {k: float(v) for k, v in measure(images, ctx).items()}
        rec.t_measure = time.perf_counter() - t
        bad = [k for k, v in rec.behaviors.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite behaviors: {', '.join(bad)}")
        rec.status = "done"
    except Exception as e:  # noqa: BLE001 - a failed job is recorded, the run goes on
        rec.status = "failed"
        rec.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
    rec.t_total = time.perf_counter() - t0
    return rec


def clear_worker_cache() -> None:
    _CACHE.clear()


def worker_init(threads: int = 1) -> None:
    """Initialiser of pool workers: a few threads each, so workers do not oversubscribe."""
    torch.set_num_threads(max(1, threads))


def job_paths_exist(ctx: JobContext) -> bool:
    return Path(ctx.full_dir).exists() and Path(ctx.null_dir).exists()
