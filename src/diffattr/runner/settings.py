"""Typed settings of the executors (the ``[executor]`` table of a run); pydantic only.

An executor runs job specs and streams their records back to the driver, the store's
single writer: ``inline`` (this process), ``process`` (a local pool), ``ray`` (a local or
remote Ray cluster).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from diffattr.settings import Component, ComponentRegistry


class ExecutorSettings(Component):
    kind: ClassVar[str] = "executor"

    def build(self):
        """The executor object for these settings."""
        return self.implementation_class()(self)


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


def parse_executor(value: Any, where: str = "executor") -> ExecutorSettings:
    return EXECUTORS.parse(value, where)
