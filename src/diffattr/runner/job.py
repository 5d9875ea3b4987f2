"""One job = one model: a counterfactual (or reference) model, its samples, its behaviors.

Jobs are described by picklable specs (the run's settings as plain data, paths, the mask)
so that any executor — inline, a process pool, Ray tasks — can run them. A worker takes
the run's resolved data and players when it runs in the driver's process (``offer_resolved``)
and otherwise loads them from disk and checks that their content digest is the one the run
was resolved with (``JobContext.data_digest``), so a job never trains on data the plan did
not see; it caches per process what it builds (family, dataset, encoded training set,
prepared method, behavior suite).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from diffattr.behaviors.local_suite import LocalSuite, build_local_suite, load_reference
from diffattr.config import RunConfig
from diffattr.counterfactual.base import build_method
from diffattr.counterfactual.settings import METHODS
from diffattr.data import Players, load_dataset
from diffattr.data.digest import dataset_digest
from diffattr.errors import DiffattrError
from diffattr.images import save_grid
from diffattr.store import JobRecord, str_to_mask

#: ``JobSpec.method`` of the reference jobs: the full model theta* and the null model.
REFERENCE_METHODS = ("full", "null")


@dataclass(frozen=True)
class JobContext:
    """What every job of a run shares, passed by value (read-only for workers)."""

    config: dict[str, Any]  # the run's RunConfig as plain data
    full_dir: str
    null_dir: str
    work_dir: str  # the method's prepared, shared inputs (e.g. pruned + fine-tuned model)
    cache_dir: str | None = None  # encoded examples, feature extractors
    grids_dir: str | None = None  # if set, a PNG grid of each job's first samples goes here
    run_dir: str | None = None  # the run directory (executors keep their logs under it)
    #: the full model's generated images (``behaviors.local_suite``) when the run measures
    #: local behaviors: every job compares its image i with the full model's image i
    full_samples: str | None = None
    #: the content digest of the data the run was resolved with (``runner.plan.resolve``)
    data_digest: str | None = None
    #: coalition models a worker trains side by side (``execute_batch``), resolved by the
    #: driver from ``[executor] jobs_per_batch`` (``runner.batching``)
    jobs_per_batch: int = 1


#: The driver's resolved ``(dataset, players)`` by data digest (``offer_resolved``): a
#: worker in the driver's process (the inline executor, the baselines) uses them instead
#: of loading the data again; spawned processes start without it and load from disk.
_RESOLVED: dict[str, tuple[Any, Any]] = {}


def offer_resolved(digest: str, dataset: Any, players: Any) -> None:
    """Hand this process's workers the run's resolved data and players (the last run's
    only: a driver runs one run at a time)."""
    _RESOLVED.clear()
    _RESOLVED[digest] = (dataset, players)


@dataclass(frozen=True)
class JobSpec:
    key: str
    kind: str  # 'fit', 'test', 'reference', 'fidelity', 'counterfactual'
    mask: str
    method: str  # a registered counterfactual method, or 'full' / 'null' for references
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Worker:
    """Per-process state of a run: built once, reused by every job of that run."""

    def __init__(self, ctx: JobContext) -> None:

        self.ctx = ctx
        self.cfg = RunConfig.from_dict(ctx.config, source="job context")
        self.family = self.cfg.family.build(self.cfg.device)
        self._dataset = None
        self._data = None
        self._suite = None
        self._local = None
        self._reference = None
        self._methods: dict[str, Any] = {}

    @property
    def dataset(self):
        """``(dataset, players)``: the driver's resolved ones when offered, else loaded here
        and checked against the digest the run was resolved with."""
        if self._dataset is None:
            digest = self.ctx.data_digest
            if digest is not None and digest in _RESOLVED:
                self._dataset = _RESOLVED[digest]
                return self._dataset

            ds = load_dataset(self.cfg.data)
            if digest is not None:
                cache = Path(self.ctx.cache_dir) if self.ctx.cache_dir else None
                now = dataset_digest(ds, cache if cache and cache.is_dir() else None)
                if now != digest:
                    raise DiffattrError(
                        f"the data changed after the run was resolved (digest {digest}, now "
                        f"{now}); start the run again to plan it on the new data"
                    )
            self._dataset = (ds, Players.from_dataset(ds, self.cfg.data.players))
        return self._dataset

    @property
    def data(self):
        if self._data is None:
            cache = Path(self.ctx.cache_dir) if self.ctx.cache_dir else None
            self._data = self.family.training_set(self.dataset[0], cache)
        return self._data

    def method(self, name: str, settings: dict[str, Any]):
        key = json.dumps({"name": name, **settings}, sort_keys=True)
        if key not in self._methods:
            parsed = METHODS.parse({**settings, "name": name}, "method")
            m = build_method(
                parsed, self.family, self.ctx.full_dir, self.ctx.work_dir, self.cfg.train
            )
            m.load()
            self._methods[key] = m
        return self._methods[key]

    def model_for(self, spec: JobSpec, rec: JobRecord) -> torch.nn.Module:
        if spec.method in REFERENCE_METHODS:
            path = self.ctx.full_dir if spec.method == "full" else self.ctx.null_dir
            return self.family.load(path).model
        _, players = self.dataset
        kept = players.indices(str_to_mask(spec.mask))
        method = self.method(spec.method, spec.settings)
        t = time.perf_counter()
        result = method.run(kept, self.data, seed=spec.seed)
        rec.t_train = time.perf_counter() - t
        rec.extra.update({"n_kept": int(len(kept)), **(result.info or {})})
        return result.model

    def models_for(self, specs: list[JobSpec], recs: list[JobRecord]) -> list[torch.nn.Module]:
        """The models of several coalition jobs of one method (the same settings), trained
        side by side (``CounterfactualMethod.run_many``); each record gets its share of the
        batch's training time and ``extra["batch"]``, the number of models trained with it."""
        _, players = self.dataset
        kepts = [players.indices(str_to_mask(s.mask)) for s in specs]
        method = self.method(specs[0].method, specs[0].settings)
        t = time.perf_counter()
        results = method.run_many(kepts, self.data, [s.seed for s in specs])
        share = (time.perf_counter() - t) / len(specs)
        for rec, kept, result in zip(recs, kepts, results, strict=True):
            rec.t_train = share
            rec.extra.update({"n_kept": int(len(kept)), **(result.info or {})})
            rec.extra["batch"] = len(specs)
        return [r.model for r in results]

    def conditions(self, mask: str | None) -> Any:
        """The conditions the model of coalition ``mask`` generates with (None: all
        players; none for an unconditional family)."""
        if self.cfg.family.conditions is None:
            return None
        s = self.cfg.sample
        _, players = self.dataset
        kept = None if mask is None else players.indices(str_to_mask(mask))
        return self.family.generation_conditions(self.data, kept, s.num_samples, seed=s.seed)

    def sample_many(
        self, models: list[torch.nn.Module], masks: list[str | None]
    ) -> list[torch.Tensor]:
        """``sample`` of each model (coalition ``masks[j]``), side by side where the family
        stacks them."""
        s = self.cfg.sample
        return self.family.sample_stacked(
            models,
            s.num_samples,
            seed=s.seed,
            ddim_steps=s.ddim_steps,
            batch_size=s.batch_size,
            conditions=[self.conditions(m) for m in masks],
        )

    def sample(self, model: torch.nn.Module, mask: str | None = None) -> torch.Tensor:
        """The run's samples of ``model``, the model of the coalition ``mask`` (None: all
        players): a conditional family generates with that coalition's conditions (one
        rule for every method, ``ModelFamily.generation_conditions``)."""
        return self.sample_many([model], [mask])[0]

    @property
    def suite(self):
        if self._suite is None:
            # the behaviors' modules (scipy) load only in a process that measures
            from diffattr.behaviors.suite import build_suite

            cache = self.ctx.cache_dir or str(Path(self.ctx.work_dir).parent.parent / "cache")
            self._suite = build_suite(
                self.cfg.behaviors, self.dataset[0], device=self.cfg.device, cache_dir=cache
            )
        return self._suite

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        return self.suite.measure(images)

    @property
    def local_suite(self):
        """The run's local behaviors (an empty suite when it measures none)."""
        if self._local is None:
            if self.ctx.full_samples is None:
                self._local = LocalSuite([])
            else:
                cache = self.ctx.cache_dir or str(Path(self.ctx.work_dir).parent.parent / "cache")
                self._local = build_local_suite(
                    self.cfg.behaviors, self.dataset[0], device=self.cfg.device, cache_dir=cache
                )
        return self._local

    @property
    def reference(self):
        """The full model's generated images, read once from the run directory."""
        if self._reference is None:
            self._reference = load_reference(self.ctx.full_samples)
        return self._reference

    def measure_local(self, images: torch.Tensor, model: torch.nn.Module) -> dict[str, np.ndarray]:
        """Each local behavior of ``images`` against the full model's images (G values)."""
        return self.local_suite.measure(
            images, self.reference, model=model, family=self.family, device=self.cfg.device
        )


_WORKERS: dict[str, Worker] = {}


def worker_for(ctx: JobContext) -> Worker:
    """The cached worker of ``ctx`` in this process (one per run context)."""
    key = json.dumps([ctx.config, ctx.full_dir, ctx.null_dir, ctx.work_dir], sort_keys=True)
    if key not in _WORKERS:
        _WORKERS.clear()  # one run at a time per process: release the previous run's models
        _WORKERS[key] = Worker(ctx)
    return _WORKERS[key]


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
        worker = worker_for(ctx)
        torch.manual_seed(spec.seed)
        # the stage markers name the stages in a profile (diffattr run --profile)
        with record_function("diffattr.train"):
            model = worker.model_for(spec, rec)
        t = time.perf_counter()
        with record_function("diffattr.sample"):
            if worker.local_suite and spec.method == "full":
                images = worker.reference.images  # the full model's samples, generated once
            else:
                images = worker.sample(model, spec.mask)
        rec.t_sample = time.perf_counter() - t
        _measure(worker, ctx, spec, rec, model, images)
    except Exception as e:  # noqa: BLE001 - a failed job is recorded, the run goes on
        _fail(rec, e)
    rec.t_total = time.perf_counter() - t0
    return rec


def execute_batch(specs: list[JobSpec], ctx: JobContext) -> list[JobRecord]:
    """Run several coalition jobs of one method with their models trained and sampled side
    by side (``group_specs`` makes such batches); their records, in order. Each record
    carries its share of the batch's training and sampling time and ``extra["batch"]``.
    If the batch itself fails (e.g. out of memory) its jobs run one at a time, each
    record noting the batch's error in ``extra["batch_error"]``."""
    if len(specs) < 2:
        return [execute_job(s, ctx) for s in specs]
    recs = [record_for(s) for s in specs]
    try:
        worker = worker_for(ctx)
        torch.manual_seed(specs[0].seed)
        with record_function("diffattr.train"):
            models = worker.models_for(specs, recs)
        t = time.perf_counter()
        with record_function("diffattr.sample"):
            images = worker.sample_many(models, [s.mask for s in specs])
        sample_share = (time.perf_counter() - t) / len(specs)
    except Exception as e:  # noqa: BLE001 - the jobs still run, one at a time
        note = f"{type(e).__name__}: {e}"
        out = [execute_job(s, ctx) for s in specs]
        for r in out:
            r.extra["batch_error"] = note
        return out
    for spec, rec, model, img in zip(specs, recs, models, images, strict=True):
        t = time.perf_counter()
        rec.t_sample = sample_share
        try:
            _measure(worker, ctx, spec, rec, model, img)
        except Exception as e:  # noqa: BLE001 - a failed job is recorded, the run goes on
            _fail(rec, e)
        rec.t_total = rec.t_train + sample_share + (time.perf_counter() - t)
    return recs


def _measure(worker, ctx: JobContext, spec: JobSpec, rec: JobRecord, model, images) -> None:
    """The behaviors of a job's images into its record (status 'done'), and its grid."""
    if ctx.grids_dir:
        save_grid(images[:64], Path(ctx.grids_dir) / f"{spec.key}.png")
    t = time.perf_counter()
    with record_function("diffattr.measure"):
        rec.behaviors = {k: float(v) for k, v in worker.measure(images).items()}
        if worker.local_suite:
            rec.local = worker.measure_local(images, model)
            rec.behaviors.update({k: float(np.mean(v)) for k, v in rec.local.items()})
    rec.t_measure = time.perf_counter() - t
    bad = [k for k, v in rec.behaviors.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite behaviors: {', '.join(bad)}")
    rec.status = "done"


def _fail(rec: JobRecord, e: Exception) -> None:
    rec.status = "failed"
    rec.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"


def group_specs(specs: list[JobSpec], size: int) -> list[list[JobSpec]]:
    """The units of work of ``specs``: batches of at most ``size`` coalition jobs of one
    stacking method with the same settings (``execute_batch``), in the order given; every
    other job (references, methods that do not stack) alone."""
    units: list[list[JobSpec]] = []
    open_: dict[str, list[JobSpec]] = {}
    for spec in specs:
        stacks = (
            size > 1
            and spec.method not in REFERENCE_METHODS
            and spec.method in METHODS
            and METHODS.get(spec.method).stacks
        )
        if not stacks:
            units.append([spec])
            continue
        key = json.dumps([spec.method, spec.settings], sort_keys=True, default=str)
        batch = open_.get(key)
        if batch is None or len(batch) >= size:
            batch = []
            open_[key] = batch
            units.append(batch)
        batch.append(spec)
    return units


def execute_jobs(specs: list[JobSpec], ctx: JobContext, threads: int = 1) -> list[JobRecord]:
    """Several jobs in one process (one array task of a cluster executor): their records,
    in order; the worker state (data, prepared method) is built once for all of them, and
    coalition models train side by side in batches of ``ctx.jobs_per_batch``."""
    worker_init(threads)
    return [r for unit in group_specs(specs, ctx.jobs_per_batch) for r in execute_batch(unit, ctx)]


def worker_init(threads: int = 1, counter=None, device: str | None = None) -> None:
    """Initialiser of pool workers: a few threads each, so workers do not oversubscribe.

    With ``counter`` (a shared integer: each worker takes the next rank) and a run on
    ``device = "cuda"`` with several GPUs visible, worker k makes GPU ``k mod count`` its
    current device (``worker_gpu``), so the pool's workers take the GPUs in turn instead of
    all landing on the first one."""
    torch.set_num_threads(max(1, threads))
    if counter is None or device is None:
        return
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    count = torch.cuda.device_count() if torch.device(device).type == "cuda" else 0
    gpu = worker_gpu(device, rank, count)
    if gpu is not None:
        torch.cuda.set_device(gpu)


def worker_gpu(device: str, rank: int, count: int) -> int | None:
    """The GPU index of pool worker ``rank`` when ``count`` GPUs are visible: ``rank mod
    count`` for ``device = "cuda"``; None (the device as given) for one GPU, another device
    type, or an explicit index such as ``cuda:1``."""
    d = torch.device(device)
    if d.type != "cuda" or d.index is not None or count < 2:
        return None
    return rank % count
