"""Executors: submit job specs, stream records back to the single writer (the driver).

``inline`` runs jobs in this process; ``process`` runs them in a local pool of spawned
processes (on ``device = "cuda"`` with several GPUs visible, worker k on GPU k mod count;
several workers per GPU let small models share one); ``ray`` runs them as Ray tasks with
``num_cpus`` / ``num_gpus`` each (fractional GPUs let several small fine-tunes share one
GPU), on a cluster given by ``address`` or a local one; ``slurm`` submits SLURM array jobs
through submitit (or runs the same tasks as local processes with ``cluster = "local"``).
Every executor yields ``JobRecord``s as jobs finish; only the driver writes them to the
store. A unit of work is one job, or a batch of ``ctx.jobs_per_batch`` coalition jobs whose
models train side by side (``group_specs``, ``execute_batch``; SLURM batches within each
array task's ``jobs_per_task``). Jobs are idempotent (their key is their content), so a
task lost with a killed driver is simply run again on resume (a batch's jobs too, in
whatever batches the resumed run makes: each model is the same to float tolerance).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from diffattr.errors import DiffattrError
from diffattr.runner.job import (
    JobContext,
    JobSpec,
    execute_batch,
    execute_jobs,
    group_specs,
    record_for,
    worker_init,
)
from diffattr.runner.settings import ExecutorSettings, ProcessSettings, RaySettings, SlurmSettings
from diffattr.store import JobRecord


def _failed(spec: JobSpec, error: str) -> JobRecord:
    return record_for(spec, status="failed", error=error)


class Executor(ABC):
    """Base: ``run(specs, ctx)`` yields one record per spec, in completion order."""

    def __init__(self, cfg: ExecutorSettings) -> None:
        self.cfg = cfg

    @abstractmethod
    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        """Run every spec; yield its record as each job ends."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release workers or cluster connections."""


def threads_per_worker(workers: int) -> int:
    """Torch threads of each of ``workers`` local processes: the CPUs this process may use
    split between them, capped by ``OMP_NUM_THREADS`` when the user sets it (two workers
    with two threads each on a shared 2-core machine run several times slower than with
    one)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cpus or 1) // max(1, workers))
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        threads = min(threads, int(cap))
    return threads


class InlineExecutor(Executor):
    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        for unit in group_specs(list(specs), ctx.jobs_per_batch):
            yield from execute_batch(unit, ctx)


class ProcessExecutor(Executor):
    """A pool of spawned processes; each keeps its dataset and models cached across jobs."""

    cfg: ProcessSettings

    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        units = group_specs(list(specs), ctx.jobs_per_batch)
        workers = max(1, min(self.cfg.workers, len(units)))
        threads = threads_per_worker(workers)
        spawn = mp.get_context("spawn")
        with ProcessPoolExecutor(
            workers,
            mp_context=spawn,
            initializer=worker_init,
            # each worker takes the next rank: on device = "cuda", the GPUs in turn
            initargs=(threads, spawn.Value("i", 0), str(ctx.config.get("device", "cpu"))),
        ) as pool:
            futures = {pool.submit(execute_batch, u, ctx): u for u in units}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        yield from f.result()
                    except Exception as e:  # noqa: BLE001 - e.g. a worker killed by OOM
                        for spec in futures[f]:
                            yield _failed(spec, f"{type(e).__name__}: {e}")


class RayExecutor(Executor):
    """Jobs as Ray tasks; joins ``address`` or starts a local cluster."""

    cfg: RaySettings

    def __init__(self, cfg: RaySettings) -> None:
        super().__init__(cfg)
        try:
            import ray
        except ImportError:
            raise DiffattrError("the ray executor needs Ray: pip install 'diffattr[ray]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = (
                dict(address=cfg.address)
                if cfg.address
                else dict(num_cpus=max(1, cfg.workers), include_dashboard=False)
            )
            ray.init(
                **kwargs,
                ignore_reinit_error=True,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
            )
            self._started = True

    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        ray = self._ray
        task = ray.remote(_ray_job).options(
            num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, max_retries=0
        )
        ctx_ref = ray.put(ctx)
        threads = int(max(1, self.cfg.num_cpus))
        units = group_specs(list(specs), ctx.jobs_per_batch)
        refs = {task.remote(u, ctx_ref, threads): u for u in units}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                try:
                    yield from ray.get(r)
                except Exception as e:  # noqa: BLE001 - task crashed outside execute_job
                    for spec in refs[r]:
                        yield _failed(spec, f"{type(e).__name__}: {e}")

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _ray_job(unit: list[JobSpec], ctx: JobContext, threads: int) -> list[JobRecord]:
    worker_init(threads)
    return execute_batch(unit, ctx)


class SlurmExecutor(Executor):
    """SLURM array jobs through submitit; each array task runs ``jobs_per_task`` jobs
    (``execute_jobs``) and returns their records, which the driver commits.

    On SLURM all tasks are submitted at once as arrays of at most ``max_array_size``, and
    SLURM keeps ``array_parallelism`` of them running; with ``cluster = "local"`` this
    process starts at most ``array_parallelism`` task processes at a time. A task that
    fails outside ``execute_job`` (time limit, node failure, preemption, out of memory)
    turns into failed records for its jobs with the first line of submitit's error.
    ``close()`` cancels the tasks still pending or running.
    """

    cfg: SlurmSettings

    def __init__(self, cfg: SlurmSettings) -> None:
        super().__init__(cfg)
        try:
            import submitit
        except ImportError:
            raise DiffattrError(
                "the slurm executor needs submitit: pip install 'diffattr[slurm]'"
            ) from None
        self._submitit = submitit
        self._live: list = []

    def _folder(self, ctx: JobContext) -> Path:
        if self.cfg.log_folder:
            return Path(self.cfg.log_folder)
        if ctx.run_dir is None:
            raise DiffattrError("the slurm executor needs log_folder or a run directory")
        return Path(ctx.run_dir) / "slurm"

    def _executor(self, ctx: JobContext):
        c = self.cfg
        folder = self._folder(ctx)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            ex = self._submitit.AutoExecutor(folder=folder / "%j", cluster=c.cluster)
        except RuntimeError as e:  # e.g. no srun: not on a SLURM cluster
            raise DiffattrError(
                f"executor: submitit cannot use cluster {c.cluster!r} here ({e}); set "
                "executor.cluster = 'local' to run the tasks on this machine"
            ) from None
        params = dict(
            name="diffattr",
            timeout_min=c.time,
            cpus_per_task=c.cpus_per_job,
            gpus_per_node=c.gpus_per_job or None,  # no GPU: no --gpus-per-node at all
            tasks_per_node=1,
            nodes=1,
            mem_gb=c.mem_gb,
            slurm_array_parallelism=c.array_parallelism,
            slurm_additional_parameters=dict(c.extra_sbatch),
            slurm_setup=list(c.setup),
        )
        if c.partition:
            params["slurm_partition"] = c.partition
        try:
            ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        except (NameError, ValueError, AssertionError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DiffattrError(f"executor: submitit refused the settings ({first})") from None
        return ex

    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        c = self.cfg
        ex = self._executor(ctx)
        k = c.jobs_per_task
        chunks = [list(specs[i : i + k]) for i in range(0, len(specs), k)]
        threads = c.cpus_per_job
        todo = list(range(len(chunks)))
        if c.cluster == "slurm":
            for a in range(0, len(chunks), c.max_array_size):
                part = todo[a : a + c.max_array_size]
                with ex.batch():
                    jobs = [ex.submit(execute_jobs, chunks[i], ctx, threads) for i in part]
                self._live += list(zip(jobs, part))
            todo = []
        while self._live or todo:
            while todo and len(self._live) < c.array_parallelism:
                i = todo.pop(0)
                self._live.append((ex.submit(execute_jobs, chunks[i], ctx, threads), i))
            finished = [(job, i) for job, i in self._live if job.done()]
            if not finished:
                time.sleep(min(c.poll_seconds, 0.5) if c.cluster != "slurm" else c.poll_seconds)
                continue
            for job, i in finished:
                self._live.remove((job, i))
                yield from self._records(job, chunks[i])

    def _records(self, job, chunk: list[JobSpec]) -> Iterator[JobRecord]:
        try:
            records = job.result()
        except Exception as e:  # noqa: BLE001 - the task died outside execute_job
            msg = str(e).strip()
            first = next((ln for ln in msg.splitlines() if ln.strip()), type(e).__name__)
            where = getattr(job, "job_id", "?")
            for spec in chunk:
                yield _failed(spec, f"{type(e).__name__}: task {where}: {first}")
            return
        by_key = {r.key: r for r in records or []}
        for spec in chunk:
            yield by_key.get(spec.key) or _failed(spec, "the task returned no record for it")

    def close(self) -> None:
        for job, _ in self._live:
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - best effort: the job may be gone
                pass
        self._live = []
