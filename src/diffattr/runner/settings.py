"""Typed settings of the executors (the ``[executor]`` table of a run); pydantic only.

An executor runs job specs and streams their records back to the driver, the store's
single writer: ``inline`` (this process), ``process`` (a local pool), ``ray`` (a local or
remote Ray cluster), ``slurm`` (SLURM array jobs through submitit; ``cluster = "local"``
runs the same tasks as local processes, for machines without SLURM and for tests).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from diffattr.errors import DiffattrError
from diffattr.settings import Component, ComponentRegistry


class ExecutorSettings(Component):
    kind: ClassVar[str] = "executor"

    jobs_per_batch: int | None = Field(
        None,
        ge=1,
        description="coalition models a worker trains and samples side by side (sft, ft on "
        "the UNet2DModel families); default: 1 on a CPU, where it does not pay, and on a GPU "
        "as many as half its free memory holds",
    )

    def build(self):
        """The executor object for these settings."""
        return self.implementation_class()(self)

    def check(self) -> None:
        """A one-line error when this machine cannot run the executor (checked with the
        plan, before any training); nothing is imported."""


EXECUTORS: ComponentRegistry[ExecutorSettings] = ComponentRegistry("executor", ExecutorSettings)


@EXECUTORS.register
class InlineSettings(ExecutorSettings):
    """Run jobs one after the other in this process."""

    name: Literal["inline"] = "inline"
    implementation: ClassVar[str] = "diffattr.runner.executors:InlineExecutor"


@EXECUTORS.register
class ProcessSettings(ExecutorSettings):
    """A pool of spawned local processes, each keeping its dataset and models cached."""

    name: Literal["process"] = "process"
    implementation: ClassVar[str] = "diffattr.runner.executors:ProcessExecutor"
    workers: int = Field(2, ge=1, description="parallel jobs")


@EXECUTORS.register
class RaySettings(ExecutorSettings):
    """Jobs as Ray tasks on a local cluster, or on the cluster at ``address``."""

    name: Literal["ray"] = "ray"
    implementation: ClassVar[str] = "diffattr.runner.executors:RayExecutor"
    workers: int = Field(2, ge=1, description="CPUs of the local cluster (no address)")
    address: str | None = Field(None, description="join this Ray cluster (default: local)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per job")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per job, fractional allowed")

    def check(self) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise DiffattrError("the ray executor needs Ray: pip install 'diffattr[ray]'")


@EXECUTORS.register
class SlurmSettings(ExecutorSettings):
    """SLURM array jobs through submitit: each array task runs ``jobs_per_task`` jobs and
    returns their records to this process, which alone writes the store. Logs and
    submitit's files go to ``log_folder`` (default ``RUN_DIR/slurm``). ``cluster = "local"``
    runs the tasks as local processes instead (no SLURM needed)."""

    name: Literal["slurm"] = "slurm"
    implementation: ClassVar[str] = "diffattr.runner.executors:SlurmExecutor"
    cluster: Literal["slurm", "local"] = Field(
        "slurm", description="slurm (sbatch), or local: the same tasks as local processes"
    )
    partition: str | None = Field(None, description="SLURM partition (default: the cluster's)")
    time: int = Field(60, ge=1, description="minutes each array task may run (sbatch --time)")
    gpus_per_job: int = Field(0, ge=0, description="GPUs of each array task")
    cpus_per_job: int = Field(1, ge=1, description="CPUs of each array task (its torch threads)")
    mem_gb: float | None = Field(None, gt=0, description="memory of each array task, GB")
    jobs_per_task: int = Field(
        1, ge=1, description="jobs run by one array task (data and models loaded once)"
    )
    array_parallelism: int = Field(
        16, ge=1, description="array tasks running at once (sbatch --array=...%N)"
    )
    max_array_size: int = Field(
        1000, ge=1, description="tasks per submitted array (the cluster's MaxArraySize)"
    )
    extra_sbatch: dict[str, str | int] = Field(
        default_factory=dict,
        description='more sbatch options, e.g. { account = "proj", qos = "high" }',
    )
    setup: list[str] = Field(
        default_factory=list,
        description='shell lines run before each task, e.g. "module load cuda"',
    )
    log_folder: str | None = Field(None, description="submitit's folder (default RUN_DIR/slurm)")
    poll_seconds: float = Field(5.0, gt=0, description="seconds between checks of the tasks")

    def check(self) -> None:
        import importlib.util
        import shutil

        if importlib.util.find_spec("submitit") is None:
            raise DiffattrError("the slurm executor needs submitit: pip install 'diffattr[slurm]'")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise DiffattrError(
                "executor: cluster = 'slurm' but this machine has no SLURM (sbatch not found); "
                "submit from a SLURM login node, or set executor.cluster = 'local' to run the "
                "tasks here"
            )

    @field_validator("extra_sbatch")
    @classmethod
    def _no_dashes(cls, v: dict[str, str | int]) -> dict[str, str | int]:
        bad = [k for k in v if k.startswith("-")]
        if bad:
            raise ValueError(f"give sbatch options without dashes (account, not --account): {bad}")
        return v
