"""``Run``: the method as explicit, resumable phases over one run directory.

::

    Run(cfg, run_dir[, resolution=make_plan(cfg, run_dir).resolution])
      .resolution        dataset + players + digest, checked; each estimator's rows (plan.resolve)
      .prepare(method)   full model theta* (train or load), null model,
                         the method's shared state (e.g. prune + fine-tune, cached)  -> Prepared
      .jobs(method)      coalitions from each estimator's sampler -> job specs      -> JobSet
      .execute(specs)    executor -> store (one committed row per finished job)   -> Executed
      .table(jobs, est)  store -> coalition table (masks, behaviors, v0, v1)      -> CoalitionTable
      .estimate(jobs)    tables -> attributions                                  -> Estimated
      .attribute()       all of the above for the run's method, values.csv/json  -> RunSummary

Every phase skips what is on disk or in the store, so a killed run resumes where it
stopped; evaluations (``diffattr.evaluate``) compose the same phases for other methods,
held-out subsets and budgets.

Results follow the data: the dataset's content digest (``diffattr.data.digest``) is part of
every job key and of the shared work's folder, recorded in the full model's
``diffattr.json`` and in the store; data changed under an existing run directory is a
one-line error before any work. A ``Run`` that writes holds the run directory's lock
(``diffattr.runner.lock``) until ``close()``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffattr.baselines.settings import BaselineSettings
from diffattr.behaviors.keys import image_key
from diffattr.behaviors.local_suite import full_reference, save_reference
from diffattr.behaviors.resolve import local_behavior_keys
from diffattr.config import RunConfig, fitted_estimators, home, listed_baselines
from diffattr.counterfactual.base import FullModel, build_method
from diffattr.counterfactual.settings import MethodSettings, check_method_family
from diffattr.data import dataset_key
from diffattr.diffusion.checkpoint import recover_folder
from diffattr.errors import DiffattrError
from diffattr.estimators.reliability import assess as assess_reliability
from diffattr.estimators.settings import EstimatorSettings
from diffattr.fileio import atomic_write_text
from diffattr.runner import batching
from diffattr.runner.baselines import score_baseline
from diffattr.runner.executors import threads_per_worker
from diffattr.runner.job import JobContext, JobSpec, offer_resolved
from diffattr.runner.layout import shared_work_dir
from diffattr.runner.lock import RunLock
from diffattr.runner.plan import (
    Resolution,
    check_config,
    check_data_unchanged,
    check_identified,
    check_model_dirs,
    check_run_dir,
    resolve,
)
from diffattr.runner.profile import profile_job
from diffattr.runner.stopping import until_stderr
from diffattr.runner.tables import coalition_table
from diffattr.runner.values import write_values
from diffattr.store import JobRecord, Store, job_key, mask_to_str


def _preparation(work_dir: Path) -> dict | None:
    """What the method's one-time preparation recorded (``prepared.json`` in its shared work
    directory: e.g. sFT's pruning -- sizes and the widths kept), its cache key left out;
    None when the method prepares nothing or the file is unreadable."""
    try:
        data = json.loads((Path(work_dir) / "prepared.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {k: v for k, v in data.items() if k != "key"} if isinstance(data, dict) else None


@dataclass
class Prepared:
    """What the prepare phase made for one counterfactual method."""

    method: MethodSettings
    dataset: Any  # ImageDataset
    players: Any  # Players
    full_dir: Path
    null_dir: Path
    work_dir: Path
    base_id: str  # digest of theta*'s weights (part of every job key)
    ctx: JobContext
    prepare_cost: float  # seconds the method's one-time preparation took (when it ran)
    timings: dict[str, float] = field(default_factory=dict)
    data_digest: str = ""  # content digest of the dataset (part of every job key)

    @property
    def n_players(self) -> int:
        return len(self.players)


@dataclass
class JobSet:
    """The jobs of one method: the reference models and each estimator's coalitions."""

    prepared: Prepared
    references: dict[str, JobSpec]  # 'full', 'null', 'method' (the method on all players)
    fit: dict[str, list[JobSpec]]  # estimator name -> one spec per sampled row, in order
    pairs: dict[str, np.ndarray | None] = field(default_factory=dict)  # pair id of each row
    baselines: list[BaselineSettings] = field(default_factory=list)  # score the full model

    def specs(self) -> list[JobSpec]:
        """Every job to run, each key once (all-0 rows are the null model, not a job)."""
        out: dict[str, JobSpec] = {s.key: s for s in self.references.values()}
        for specs in self.fit.values():
            for s in specs:
                if "1" in s.mask:
                    out.setdefault(s.key, s)
        return list(out.values())


@dataclass
class Executed:
    ran: int
    failed: int
    first_error: str | None = None


@dataclass
class Estimated:
    attributions: list
    errors: list[str]
    v0: dict[str, float]
    v1: dict[str, float]
    method_all: dict[str, float] | None  # the method on all players (None if it failed)


@dataclass
class RunSummary:
    run_dir: Path
    attributions: list
    failed: int
    jobs: int
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None
    values_written: bool = False  # values.csv/json: only from tables with every planned job
    profile: dict | None = None  # diffattr run --profile: one job's profile (runner.profile)


class Run:
    """One run directory and its configuration; see the module docstring for the phases."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        progress: bool = True,
        profile: bool = False,
        resolution: Resolution | None = None,
    ) -> None:
        if resolution is not None and resolution.cfg is not cfg:
            raise ValueError("the resolution was made from another configuration")
        if resolution is None or not resolution.planned:  # make_plan checked it already
            check_config(cfg)  # as the CLI does: paths, device, executor, packages, behaviors
        #: the data, players, digest and drawn rows (``make_plan``'s, or resolved on first use)
        self._resolution = resolution
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        #: profile one coalition job before the others (``runner.profile``)
        self.profile = profile
        self.profiled: dict | None = None
        self.timings: dict[str, float] = {}
        #: each baseline's compute cost and feature-cache use in this call, by label: kept out of
        #: the attributions' settings so that values.json repeats on a resumed run
        self.baseline_costs: dict[str, dict[str, Any]] = {}
        self._target = None  # the full model as the baselines' target (runner.baselines)
        self._prepared: dict[str, Prepared] = {}
        self._store: Store | None = None
        self._base: tuple | None = None
        self._lock = None
        #: called with (phase, jobs finished, jobs to run, record) after each job's commit
        self.on_job: Callable[[str, int, int, JobRecord], None] | None = None

    # ------------------------------------------------------------------ plumbing

    @property
    def store(self) -> Store:
        if self._store is None:
            self.acquire()
            self._store = Store(self.run_dir / "store.sqlite", readonly=False)
        return self._store

    def acquire(self) -> None:
        """Take the run directory's lock (one writer per run directory); idempotent."""
        if self._lock is None:
            check_run_dir(self.run_dir)
            self._lock = RunLock(self.run_dir).acquire()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    @property
    def cache_dir(self) -> Path:
        """Encoded examples and other caches of this run (under the run directory)."""
        return self.run_dir / "cache"

    # ------------------------------------------------------------------ prepare

    def _base_models(self):
        """Dataset, players, family, training set, full and null model (once per Run)."""
        if self._base is not None:
            return self._base

        cfg = self.cfg
        self.acquire()
        recover_folder(self.run_dir)  # what a killed run was writing: put back or removed
        res = self.resolution  # the data, checked against the recipe, family and method
        self._check_run_dir()
        family = cfg.family.build(cfg.device)
        dataset, players = res.dataset, res.players
        t = time.perf_counter()
        data = family.training_set(dataset, self.cache_dir)
        self._time("encode", time.perf_counter() - t)
        t = time.perf_counter()
        if cfg.attribution.full_model:
            full_dir = Path(cfg.attribution.full_model)
        else:
            full_dir = family.train_full(
                cfg, self.run_dir / "full", dataset, data, progress=self.progress
            )
        self._time("full_model", time.perf_counter() - t)
        null_dir = family.make_null(cfg, self.run_dir / "null", dataset, data)
        self._base = (family, dataset, players, data, full_dir, null_dir)
        return self._base

    @property
    def resolution(self) -> Resolution:
        """The run resolved once (``plan.resolve``): data, players, digest, drawn rows."""
        if self._resolution is None:
            self._resolution = resolve(self.cfg, self.cache_dir)
        return self._resolution

    def players(self) -> tuple:
        """``(dataset, players)`` of the run's data, loaded once and without training
        anything (evaluations check their fits with the number of players first)."""
        res = self.resolution
        return res.dataset, res.players

    @property
    def n_players(self) -> int:
        return self.resolution.n_players

    def _check_run_dir(self) -> None:
        """Before any work (after a killed run's folders are put back): the data are those
        this run directory (and a given full model) were made from, and the model
        directories it will read are whole; then record the data's digest in the store."""

        digest = self.resolution.digest
        check_data_unchanged(self.run_dir, digest, self.cfg.attribution.full_model)
        check_model_dirs(self.run_dir, self.cfg.attribution.full_model)
        if self.store.get_meta("data_digest") is None:
            self.store.set_meta("data_digest", digest)

    @property
    def data_digest(self) -> str:
        """The content digest of the run's dataset (loads the data on first use)."""
        return self.resolution.digest

    def prepare(self, method: MethodSettings | str | None = None) -> Prepared:
        """Phase 1: the full and null models and ``method``'s one-time shared work."""

        settings = self._method(method)
        if settings.name in self._prepared:
            return self._prepared[settings.name]
        check_method_family(settings, self.cfg.family)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        family, dataset, players, data, full_dir, null_dir = self._base_models()
        settings.check_players(family, dataset, players)
        work_dir = shared_work_dir(self.run_dir, settings, self.data_digest)
        t = time.perf_counter()

        recover_folder(work_dir)
        check_model_dirs(self.run_dir, None, [work_dir], reference=False)
        with _no_empty_dirs(work_dir):
            method_obj = build_method(settings, family, full_dir, work_dir, self.cfg.train)
            method_obj.prepare(data, progress=self.progress)
        seconds = time.perf_counter() - t
        self._time(f"prepare_{settings.name}", seconds)
        # The one-time cost of the shared preparation, kept beside it: evaluations that find
        # it cached still charge it to the method (compute-matched comparisons).
        cost_file = work_dir / "prepare_seconds.json"
        if cost_file.exists():
            cost = float(json.loads(cost_file.read_text())["seconds"])
        else:
            cost = seconds
            if work_dir.exists():
                atomic_write_text(cost_file, json.dumps({"seconds": seconds}))
        base_id = FullModel(full_dir, family, self.cfg.train).digest()
        ctx = JobContext(
            config=self.cfg.with_method(settings.name).to_dict(),
            full_dir=str(full_dir),
            null_dir=str(null_dir),
            work_dir=str(work_dir),
            cache_dir=str(self.cache_dir),
            grids_dir=str(self.run_dir / "grids"),
            run_dir=str(self.run_dir),
            full_samples=self.full_samples(base_id),
            data_digest=self.data_digest,
            jobs_per_batch=batching.resolve(
                self.cfg, settings, lambda: method_obj.step_bytes(data)
            ),
        )
        offer_resolved(self.data_digest, dataset, players)
        prepared = Prepared(
            method=settings,
            dataset=dataset,
            players=players,
            full_dir=Path(full_dir),
            null_dir=Path(null_dir),
            work_dir=work_dir,
            base_id=base_id,
            ctx=ctx,
            prepare_cost=cost,
            data_digest=self.data_digest,
        )
        self._prepared[settings.name] = prepared
        return prepared

    def local_keys(self) -> list[str]:
        """Keys of the run's local behaviors (one value per generated image)."""

        d = self.cfg.data
        return local_behavior_keys(self.cfg.behaviors, d.dataset_name(), d.has_semantic_labels())

    def full_samples(self, base_id: str) -> str | None:
        """The full model's generated images that every job's local behaviors compare with:
        generated once into ``cache/full-samples/`` (keyed by the full model, the family,
        the sampling settings and the data); None when the run measures no local behavior."""
        if not self.local_keys():
            return None

        cfg = self.cfg
        key = job_key(
            base=base_id,
            family=cfg.family.to_dict(),
            sample=cfg.sample.model_dump(),
            data_digest=self.data_digest,
            kind="full-samples",
        )
        path = self.cache_dir / "full-samples" / f"{key}.safetensors"
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            family, _, _, data, full_dir, _ = self._base_models()
            t = time.perf_counter()
            ref = full_reference(
                family,
                family.load(full_dir).model,
                data,
                num_samples=cfg.sample.num_samples,
                seed=cfg.sample.seed,
                ddim_steps=cfg.sample.ddim_steps,
            )
            seconds = time.perf_counter() - t
            self._time("full_samples", seconds)
            record = {"key": key, "full_model": base_id, "images": len(ref), "seconds": seconds}
            save_reference(path, ref, record)
        return str(path)

    def _method(self, method: MethodSettings | str | None) -> MethodSettings:
        if isinstance(method, MethodSettings):
            return method
        return self.cfg.method_settings(method)

    # ------------------------------------------------------------------ jobs

    def key(self, p: Prepared, mask: str, method: str, settings: dict, seed: int, kind: str) -> str:
        cfg = self.cfg
        return job_key(
            base=p.base_id,
            family=cfg.family.to_dict(),
            method=method,
            settings=settings,
            mask=mask,
            seed=seed,
            sample=cfg.sample.model_dump(),
            behaviors=cfg.behaviors.to_dict(),
            data=dataset_key(cfg.data),
            data_digest=p.data_digest,
            kind="reference" if kind == "reference" else "model",
        )

    def spec(
        self,
        p: Prepared,
        mask: np.ndarray | str,
        method: MethodSettings | str,
        seed: int,
        kind: str,
        **extra: Any,
    ) -> JobSpec:
        """The job of one model: ``method`` (settings, or 'full'/'null') on ``mask``."""
        m = mask if isinstance(mask, str) else mask_to_str(mask)
        if isinstance(method, MethodSettings):
            name, settings = (
                method.name,
                {k: v for k, v in method.model_dump(mode="json").items() if k != "name"},
            )
        else:
            name, settings = method, {}
        return JobSpec(
            key=self.key(p, m, name, settings, seed, kind),
            kind=kind,
            mask=m,
            method=name,
            settings=settings,
            seed=seed,
            extra=extra,
        )

    def reference_specs(self, p: Prepared) -> dict[str, JobSpec]:
        n = p.n_players
        return {
            "full": self.spec(p, "1" * n, "full", 0, "reference"),
            "null": self.spec(p, "0" * n, "null", 0, "reference"),
            # the method's own all-players model: the same key as an all-1 fit row
            "method": self.spec(p, "1" * n, p.method, self.cfg.attribution.seed, "method-all"),
        }

    def jobs(
        self,
        method: MethodSettings | str | None = None,
        estimators: list[EstimatorSettings | BaselineSettings] | None = None,
        subsets: int | None = None,
    ) -> JobSet:
        """Phase 2: each coalition estimator's sampled coalitions as job specs
        (prefix-stable: more subsets extend the same row sequence); baselines get no jobs."""
        p = self.prepare(method)
        a = self.cfg.attribution
        entries = estimators or a.estimators
        fit: dict[str, list[JobSpec]] = {}
        pairs: dict[str, np.ndarray | None] = {}
        own = estimators is None and subsets in (None, a.subsets)  # the resolved rows
        for est in fitted_estimators(entries):
            if own:
                masks, pair_ids = self.resolution.rows(est)
            else:
                where = a.where(est)
                masks, pair_ids = est.draw(p.n_players, subsets or a.subsets, a.seed, where=where)
            fit[est.name] = [self.spec(p, row, p.method, a.seed, "fit") for row in masks]
            pairs[est.name] = pair_ids
        return JobSet(p, self.reference_specs(p), fit, pairs, listed_baselines(entries))

    # ------------------------------------------------------------------ execute

    def execute(self, specs: list[JobSpec], desc: str = "jobs") -> Executed:
        """Phase 3: run the specs not yet done (each key once) and commit their records."""
        if not specs:
            return Executed(0, 0)
        prepared = self._prepared_for(specs)
        unique = list({s.key: s for s in specs}.values())
        done = self.store.done_keys(s.key for s in unique)
        todo = [s for s in unique if s.key not in done]
        if not todo:
            return Executed(0, 0)
        executor = self.cfg.executor.build()
        failed, first = 0, None
        t = time.perf_counter()
        try:
            bar = tqdm(total=len(todo), desc=desc, disable=not self.progress, dynamic_ncols=True)
            for i, rec in enumerate(executor.run(todo, prepared.ctx), start=1):
                self.store.put(rec)
                if rec.status != "done":
                    failed += 1
                    if first is None:
                        first = (rec.error or "").strip().splitlines()[0] if rec.error else "?"
                bar.update(1)
                bar.set_postfix(failed=failed)
                if self.on_job is not None:
                    self.on_job(desc, i, len(todo), rec)
            bar.close()
        finally:
            executor.close()
            self._time("jobs", time.perf_counter() - t)
        return Executed(len(todo), failed, first)

    def profile_one(self, specs: list[JobSpec]) -> dict:
        """Profile the first of ``specs`` not yet done (the first, if all are) in this
        process, with the torch threads a job of the run's executor gets; writes
        ``profile.json`` / ``profile.txt`` into the run directory (``runner.profile``)."""

        done = self.store.done_keys(s.key for s in specs)
        spec = next((s for s in specs if s.key not in done), specs[0])
        prepared = self._prepared_for([spec])
        ex = self.cfg.executor
        before = torch.get_num_threads()
        if ex.name == "process":
            torch.set_num_threads(threads_per_worker(ex.workers))
        t = time.perf_counter()
        try:
            self.profiled = profile_job(
                spec, prepared.ctx, self.store, self.run_dir, self.cfg.device
            )
        finally:
            torch.set_num_threads(before)
            self._time("profile", time.perf_counter() - t)
        return self.profiled

    def _prepared_for(self, specs: list[JobSpec]) -> Prepared:
        names = {s.method for s in specs} - {"full", "null"}
        if len(names) > 1:
            raise DiffattrError(f"execute: one method per call, got {sorted(names)}")
        name = names.pop() if names else self.cfg.method.name
        if name in self._prepared:
            return self._prepared[name]
        return self.prepare(name)

    # ------------------------------------------------------------------ table

    def reference_records(self, jobs: JobSet) -> dict[str, JobRecord | None]:
        recs = {k: self.store.get(s.key) for k, s in jobs.references.items()}
        return {k: (r if r is not None and r.status == "done" else None) for k, r in recs.items()}

    def table(
        self,
        jobs: JobSet,
        estimator: str,
        exclude_masks: set[str] | None = None,
        limit: int | None = None,
    ):
        """Phase 4: the coalition table of one estimator from the store.

        All-0 rows take the null model's behaviors and all-1 rows the method's own
        all-players job. ``exclude_masks`` drops rows equal to held-out test masks (LDS);
        ``limit`` keeps only the first rows of the sampler's stream (compute budgets).
        """

        refs = self.reference_records(jobs)
        if refs["full"] is None or refs["null"] is None:
            raise DiffattrError(_missing_references(refs, self.store, jobs))
        specs = jobs.fit[estimator][:limit] if limit is not None else jobs.fit[estimator]
        records = {r.key: r for r in self.store.records([s.key for s in specs])}
        return coalition_table(
            jobs,
            estimator,
            refs,
            records,
            per_image=self.per_image_columns(refs["full"]),
            v1=self.cfg.attribution.v1,
            exclude_masks=exclude_masks,
            limit=limit,
        )

    def per_image_columns(self, full: JobRecord) -> list[str]:
        """``[attribution] local = "per-image"``: the table's column of each local behavior
        and attributed generated image (``ssim[pixel]#i``), else none (the mean is a
        column like any behavior)."""

        a = self.cfg.attribution
        if a.local != "per-image" or not full.local:
            return []
        out = []
        for key in sorted(full.local):
            n = len(full.local[key])
            out += [image_key(key, i) for i in range(min(n, a.local_images or n))]
        return out

    # ------------------------------------------------------------------ estimate

    def estimate(
        self,
        jobs: JobSet,
        exclude_masks: set[str] | None = None,
        limit: int | None = None,
        errors: list[str] | None = None,
        estimators: list[EstimatorSettings | BaselineSettings] | None = None,
    ) -> Estimated:
        """Phase 5: every coalition estimator fitted on its table, and every baseline of the
        jobs scored on the full model (not with ``limit``, which is about coalitions); one
        Attribution per behavior, in the order the estimators are listed.

        With ``errors`` given, an estimator that cannot be fitted (e.g. too few finished
        jobs) is reported there and skipped instead of raising.
        """
        t = time.perf_counter()
        refs = self.reference_records(jobs)
        entries = estimators or self.cfg.attribution.estimators
        by_entry: dict[int, list] = {}
        for est in fitted_estimators(entries):
            if est.name in jobs.fit:
                by_entry[id(est)] = self._fit(jobs, est, exclude_masks, limit, errors)
        if limit is None:
            for baseline in listed_baselines(entries):
                if baseline in jobs.baselines:
                    by_entry[id(baseline)] = score_baseline(self, jobs, baseline, errors)
        out = [a for e in entries for a in by_entry.get(id(e), [])]
        self._time("estimate", time.perf_counter() - t)
        full, null, method_all = refs["full"], refs["null"], refs["method"]
        return Estimated(
            attributions=out,
            errors=list(errors or []),
            v0=dict(null.behaviors) if null else {},
            v1=dict(full.behaviors) if full else {},
            method_all=dict(method_all.behaviors) if method_all else None,
        )

    def _fit(self, jobs: JobSet, est, exclude_masks, limit, errors: list[str] | None) -> list:
        """One coalition estimator fitted on the jobs's table of its rows, with the reliability
        signals of the fit; [] (and a line in ``errors``) when it cannot be fitted."""
        try:
            table = self.table(jobs, est.name, exclude_masks, limit)
            if table.n_rows == 0:
                raise DiffattrError(f"no finished jobs for estimator {est.name!r}")
            attrs = fit_table(est, table)
            for attr, rel in zip(attrs, assess_reliability(est, table, attrs)):
                attr.settings["reliability"] = rel.to_dict()
        except DiffattrError as e:
            if errors is None:
                raise
            errors.append(f"{est.name}: {e}")
            return []
        for attr in attrs:
            attr.settings = {
                **attr.settings,
                "method": jobs.prepared.method.name,
                "subsets_planned": len(jobs.fit[est.name]),
                "v1_source": self.cfg.attribution.v1,
            }
        return attrs

    # ------------------------------------------------------------------ baselines

    # ------------------------------------------------------------------ diffattr run

    def attribute(self) -> RunSummary:
        """The whole method for the run's configuration: values.csv / values.json."""

        t_start = time.perf_counter()
        if not self.resolution.planned:  # make_plan checks it when it made the resolution
            check_identified(self.cfg, self.n_players)  # the planned rows' rank, before any work
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.toml", self.cfg.to_toml())
        jobs = self.jobs()
        self.store.set_meta("config", self.cfg.to_dict())
        refs = list(jobs.references.values())
        ex_ref = self.execute(refs, "reference models")
        fit = [s for s in jobs.specs() if s.kind == "fit"]
        self.store.set_meta("planned", {s.key: s.kind for s in jobs.specs()})
        if self.profile and fit:
            self.profile_one(fit)
        ex_fit = self.execute(fit, f"{jobs.prepared.method.name} jobs")
        first = ex_ref.first_error or ex_fit.first_error
        rounds: list[dict] = []
        if self.cfg.attribution.until_stderr is not None:
            jobs, rounds, more = until_stderr(self, jobs)
            first = first or more
        refs_done = self.reference_records(jobs)
        errors: list[str] = []
        attributions: list = []
        failed_now = sum(
            1 for r in self.store.records([s.key for s in jobs.specs()], status="failed")
        )
        written = False
        if refs_done["full"] is None or refs_done["null"] is None:
            errors.append(_missing_references(refs_done, self.store, jobs))
        elif not failed_now:  # values.csv only from tables holding every planned job
            est = self.estimate(jobs, errors=errors)
            attributions = est.attributions
            if attributions:
                write_values(self.run_dir, attributions, self.values_payload(est))
                written = True
        if failed_now and first is None:
            bad = self.store.records([s.key for s in jobs.specs()], status="failed")[0]
            first = (bad.error or "?").strip().splitlines()[0]
        self.timings["total"] = time.perf_counter() - t_start
        total = self._record_timings()
        summary = {
            "timings": self.timings,
            "timings_all_calls": total,
            "jobs": len(jobs.specs()),
            "failed": failed_now,
            "first_failure": first,
            "estimator_errors": errors,
            "values_written": written,
        }
        if rounds:
            summary["stopping_rounds"] = rounds
        if self.baseline_costs:
            summary["baseline_costs"] = self.baseline_costs
        preparation = _preparation(jobs.prepared.work_dir)
        if preparation:
            summary["preparation"] = preparation
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return RunSummary(
            self.run_dir,
            attributions,
            failed_now,
            len(jobs.specs()),
            errors=errors,
            timings=dict(self.timings),
            first_error=first,
            values_written=written,
        )

    def values_payload(self, est: Estimated) -> dict[str, Any]:
        gap = None
        if est.method_all is not None:
            gap = {k: est.v1[k] - v for k, v in est.method_all.items() if k in est.v1}
        return {
            "v0": est.v0,
            "v1": est.v1,
            "v1_source": self.cfg.attribution.v1,
            "method_all_players": est.method_all,
            "full_minus_method": gap,
            "config": self.cfg.to_dict(),
        }

    def _record_timings(self) -> dict[str, float]:
        """Add this call's stage times to the store; return the sums over every call."""
        calls = list(self.store.get_meta("timings", []) or [])
        calls.append({"at": time.time(), **{k: round(v, 3) for k, v in self.timings.items()}})
        self.store.set_meta("timings", calls)
        total: dict[str, float] = {}
        for c in calls:
            for k, v in c.items():
                if k != "at":
                    total[k] = round(total.get(k, 0.0) + float(v), 3)
        return total


class _no_empty_dirs:
    """Remove ``path`` (and its parent) on the way out if this block created it and left
    it empty -- a preparation that failed early leaves no empty ``shared/<method>-*``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.made = [p for p in (self.path, self.path.parent) if not p.exists()]

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        for p in self.made:
            try:
                p.rmdir()  # only succeeds when empty
            except OSError:
                pass


def fit_table(est: EstimatorSettings, table) -> list:
    """Fit one estimator on a coalition table (one Attribution per behavior)."""
    attrs = est.build().fit(table)
    return attrs if isinstance(attrs, list) else [attrs]


def _missing_references(refs: dict, store: Store, jobs: JobSet) -> str:
    for name in ("full", "null"):
        if refs.get(name) is None:
            rec = store.get(jobs.references[name].key)
            why = (rec.error or "").strip().splitlines()[0] if rec and rec.error else "not run"
            return f"the {name} model's behaviors are missing ({why}); see diffattr status"
    return "reference behaviors are missing; see diffattr status"


def run_attribution(
    cfg: RunConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    profile: bool = False,
    resolution: Resolution | None = None,
):
    """``diffattr run``: ``Run(cfg, run_dir).attribute()``; with ``profile``, one coalition
    job runs first under the torch profiler (``profile.json`` in the run directory); with
    ``resolution`` (``make_plan(cfg, run_dir).resolution``), the data are not loaded again."""
    run_dir = run_dir or home() / "run"
    with Run(cfg, run_dir, progress, profile=profile, resolution=resolution) as run:
        summary = run.attribute()
        summary.profile = run.profiled
        return summary
