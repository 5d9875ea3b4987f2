"""How many coalition models one worker trains side by side (``[executor] jobs_per_batch``).

Stacking K models (``diffusion.stacked``) needs a method whose model of S is a fine-tune of
one shared starting model (``MethodSettings.stacks``: ``sft``, ``ft``) and a family that
stacks (``FamilySettings.unstacked`` is None: the ``UNet2DModel`` families, unconditional,
conditional and latent); otherwise every job runs alone and the plan says why.

When ``jobs_per_batch`` is not set: on a CPU one model at a time, because there a small
UNet's step is arithmetic bound and a stacked model costs as much or more per model
(BENCHMARKS.md, "Coalition models side by side"); on a GPU the driver measures the memory
one model's training step takes and fits as many models as half the free memory, shared
by the run's process workers, holds (at most ``MAX_AUTO``). That rule is not measured on a
GPU here (none was lent to this work); set ``jobs_per_batch`` to override it.

This module is imported by the plan before torch loads: torch is imported inside the
function that needs it.
"""

from __future__ import annotations

from typing import Any

#: The largest batch the automatic rule chooses on a GPU.
MAX_AUTO = 32

#: Why the automatic rule trains one model at a time on a CPU.
CPU_REASON = (
    "on a CPU a small model's step is arithmetic bound, so stacked models cost as much or "
    "more per model (BENCHMARKS.md)"
)


def stack_problem(method: Any, family: Any) -> str | None:
    """Why coalition models of ``method`` (its settings) in ``family`` (its settings) train
    one at a time whatever ``jobs_per_batch`` says, or None when they can stack."""
    if not type(method).stacks:
        return f"the {method.name} method does not train its models from one shared start"
    reason = type(family).unstacked
    if reason is not None:
        return f"the {family.name} family: {reason}"
    return None


def describe(cfg: Any) -> str:
    """The plan's line on the run's method: how many models train side by side, and why."""
    n = cfg.executor.jobs_per_batch
    problem = stack_problem(cfg.method, cfg.family)
    if problem is not None:
        ignored = f"; jobs_per_batch = {n} does not apply" if n and n > 1 else ""
        return f"one at a time ({problem}{ignored})"
    if n is not None:
        return f"{n} per batch (jobs_per_batch)" if n > 1 else "one at a time (jobs_per_batch)"
    if _device_type(cfg.device) != "cuda":
        return f"one at a time (automatic: {CPU_REASON}; set [executor] jobs_per_batch)"
    return "automatic: as many as half the free GPU memory holds, measured when jobs start"


def resolve(cfg: Any, method: Any, measure_step: Any = None) -> int:
    """The batch size a run's workers use for ``method`` (its settings): 1 when it cannot
    stack; ``jobs_per_batch`` when set; else 1 off a GPU and, on a GPU, the rule of the
    module docstring with ``measure_step()`` the bytes of one model's training step."""
    if stack_problem(method, cfg.family) is not None:
        return 1
    n = cfg.executor.jobs_per_batch
    if n is not None:
        return int(n)
    if _device_type(cfg.device) != "cuda" or measure_step is None:
        return 1
    import torch  # only a GPU run gets here

    free, _ = torch.cuda.mem_get_info(torch.device(cfg.device))
    per_model = max(1, int(measure_step()))
    workers = max(1, int(getattr(cfg.executor, "workers", 1) or 1))
    return max(1, min(MAX_AUTO, int(0.5 * free / workers // per_model)))


def _device_type(device: str) -> str:
    return str(device).split(":", 1)[0]
