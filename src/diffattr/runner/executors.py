"""Executors: submit job specs, stream records back to the single writer (the driver).

``inline`` runs jobs in this process; ``process`` runs them in a local pool of spawned
processes; ``ray`` runs them as Ray tasks with ``num_cpus`` / ``num_gpus`` each (fractional
GPUs let several small fine-tunes share one GPU), on a cluster given by ``address`` or
a local one. Every executor yields ``JobRecord``s as jobs finish; only the driver writes
them to the store.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from diffattr.errors import DiffattrError
from diffattr.runner.job import JobContext, JobSpec, execute_job, record_for, worker_init
from diffattr.runner.settings import ExecutorSettings, ProcessSettings, RaySettings
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


class InlineExecutor(Executor):
    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        for spec in specs:
            yield execute_job(spec, ctx)


class ProcessExecutor(Executor):
    """A pool of spawned processes; each keeps its dataset and models cached across jobs."""

    cfg: ProcessSettings

    def run(self, specs: Sequence[JobSpec], ctx: JobContext) -> Iterator[JobRecord]:
        workers = max(1, min(self.cfg.workers, len(specs)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("spawn"),
            initializer=worker_init,
            initargs=(threads,),
        ) as pool:
            futures = {pool.submit(execute_job, s, ctx): s for s in specs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        yield f.result()
                    except Exception as e:  # noqa: BLE001 - e.g. a worker killed by OOM
                        yield _failed(futures[f], f"{type(e).__name__}: {e}")


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
        refs = {task.remote(s, ctx_ref, int(max(1, self.cfg.num_cpus))): s for s in specs}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                try:
                    yield ray.get(r)
                except Exception as e:  # noqa: BLE001 - task crashed outside execute_job
                    yield _failed(refs[r], f"{type(e).__name__}: {e}")

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _ray_job(spec: JobSpec, ctx: JobContext, threads: int) -> JobRecord:
    worker_init(threads)
    return execute_job(spec, ctx)


def make_executor(cfg: ExecutorSettings) -> Executor:
    return cfg.build()
