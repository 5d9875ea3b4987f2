"""Running the method: job specs, executors, and the resumable ``diffattr run`` driver."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffattr.config import RunConfig
from diffattr.fileio import atomic_write_text
from diffattr.runner.pipeline import (
    PRESETS,
    apply_preset,
    build_config,
    estimate,
    fit_specs,
    prepare_run,
    reference_values,
    run_jobs,
)
from diffattr.store import Store

__all__ = [
    "PRESETS",
    "RunSummary",
    "apply_preset",
    "build_config",
    "run_attribution",
    "write_values",
]


@dataclass
class RunSummary:
    run_dir: Path
    attributions: list
    failed: int
    jobs: int
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def write_values(run_dir: Path, attributions: list, v0: dict, v1: dict, cfg: RunConfig) -> None:
    """values.csv (player,behavior,estimator,value,stderr) and values.json (+ v0, v1, settings)."""
    lines = ["player,behavior,estimator,value,stderr"]
    for a in attributions:
        for name, v, s in zip(a.names, a.values, a.stderr):
            q = f'"{name}"' if ("," in name or '"' in name) else name
            lines.append(f"{q},{a.behavior},{a.estimator},{float(v):.10g},{float(s):.10g}")
    atomic_write_text(run_dir / "values.csv", "\n".join(lines) + "\n")
    payload = {
        "v0": v0,
        "v1": v1,
        "config": cfg.to_dict(),
        "attributions": [a.to_dict() for a in attributions],
    }
    atomic_write_text(run_dir / "values.json", json.dumps(payload, indent=2, default=float))


def run_attribution(cfg: RunConfig, run_dir: str | Path, progress: bool = True) -> RunSummary:
    """The whole method, resumable: see ``diffattr.runner.pipeline``."""
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    state = prepare_run(cfg, run_dir, progress=progress)
    timings = dict(state.timings)
    with Store(run_dir / "store.sqlite") as store:
        store.set_meta("config", cfg.to_dict())
        t = time.perf_counter()
        _, f_ref = run_jobs(state, state.reference_specs(), store, "reference models", progress)
        timings["reference_jobs"] = time.perf_counter() - t
        specs = fit_specs(state)
        all_specs = [s for v in specs.values() for s in v]
        planned = {s.key: s.kind for s in state.reference_specs() + all_specs}
        store.set_meta("planned", planned)
        t = time.perf_counter()
        _, f_fit = run_jobs(state, all_specs, store, f"{cfg.attribution.method} jobs", progress)
        timings["fit_jobs"] = time.perf_counter() - t
        failed = f_ref + f_fit
        t = time.perf_counter()
        full, null = reference_values(state, store)
        errors: list[str] = []
        attributions = estimate(state, store, specs, errors=errors)
        if attributions:
            write_values(run_dir, attributions, null.behaviors, full.behaviors, cfg)
        timings["estimate"] = time.perf_counter() - t
        n_jobs = len({s.key for s in all_specs})
        failed_now = sum(1 for r in store.records([s.key for s in all_specs], status="failed"))
    timings["total"] = time.perf_counter() - t_start
    atomic_write_text(
        run_dir / "summary.json",
        json.dumps(
            {
                "timings": timings,
                "jobs": n_jobs,
                "failed": failed_now,
                "failed_this_call": failed,
                "estimator_errors": errors,
            },
            indent=2,
        ),
    )
    return RunSummary(run_dir, attributions, failed_now, n_jobs, errors=errors, timings=timings)
