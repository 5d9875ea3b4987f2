"""``diffattr run --profile``: where one job's time goes, on the machine the run uses.

One coalition job of the run is executed in the driver under the torch profiler (CPU, and
CUDA when the run's device is a GPU). Its record is committed like any other job's (the
work is not wasted), and two files are written into the run directory:

* ``profile.json``: the time split of the job -- train, sample, measure, store (seconds,
  from the job's own clocks and the store commit) -- the torch threads, the device, and the
  top operators by self time (name, calls, self and total milliseconds);
* ``profile.txt``: the profiler's operator table, as torch prints it.

``profile.json`` also holds the job's arithmetic (``gflop``): the same job's training and
sampling run once more, outside the profiler and not committed, under torch's FLOP counter
(convolutions, matrix products and attention, forward and backward; element-wise work is not
counted), with ``job_over_sampling``, the ratio of the whole job's FLOPs to its sampling's.
That ratio does not depend on the machine: no device that runs both stages at the same rate
brings a job under that many times its own sampling (the budget decides it: fine-tune steps
x batch against images x DDIM steps).

Times measured under the profiler are inflated by its bookkeeping (most for models with
many small operators); the split between the stages is what carries over to other
hardware, not the absolute seconds. A job already done is run again for its profile and
not committed a second time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from diffattr.fileio import atomic_write_text
from diffattr.runner.job import JobContext, JobSpec, execute_job, record_for, worker_for
from diffattr.store import Store
from diffattr.torchutils import flop_counter

#: How many operators ``profile.json`` lists.
TOP_OPERATORS = 25


def profile_job(
    spec: JobSpec, ctx: JobContext, store: Store, run_dir: str | Path, device: str
) -> dict[str, Any]:
    """Run ``spec`` under the torch profiler, commit its record if it was not done, write
    ``profile.json`` and ``profile.txt`` into ``run_dir``; returns the JSON payload."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    already = spec.key in store.done_keys([spec.key])
    with profile(activities=activities) as prof:
        rec = execute_job(spec, ctx)
    t_store = 0.0
    if not already:
        t = time.perf_counter()
        store.put(rec)
        t_store = time.perf_counter() - t
    averages = prof.key_averages()
    sort_by = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    payload = {
        "job": {"key": spec.key, "kind": spec.kind, "mask": spec.mask, "method": spec.method},
        "status": rec.status,
        "error": (rec.error or "").strip().splitlines()[0] if rec.error else None,
        "committed": not already,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "seconds": split(rec.t_train, rec.t_sample, rec.t_measure, t_store, rec.t_total),
        "sort_by": sort_by,
        "top_operators": top_operators(averages, on_gpu),
        "gflop": count_flops(spec, ctx) if rec.status == "done" else None,
        "note": "times under the torch profiler (inflated by its bookkeeping); compare stages",
    }
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "profile.json", json.dumps(payload, indent=2))
    table = averages.table(sort_by=sort_by, row_limit=TOP_OPERATORS)
    atomic_write_text(run_dir / "profile.txt", table + "\n")
    return payload


def count_flops(spec: JobSpec, ctx: JobContext) -> dict[str, Any]:
    """GFLOP of ``spec``'s training and sampling (the job's two stages run once more under
    torch's FLOP counter, nothing committed) and the whole job's FLOPs over its sampling's.
    A counter that fails (an operator it cannot follow) gives ``error``, not a number."""
    try:
        worker = worker_for(ctx)
        torch.manual_seed(spec.seed)
        with flop_counter() as counter:
            model = worker.model_for(spec, record_for(spec))
        train = counter.get_total_flops() / 1e9
        with flop_counter() as counter:
            worker.sample(model, spec.mask)
        sample = counter.get_total_flops() / 1e9
    except Exception as e:  # noqa: BLE001 - the profile stands without its FLOP count
        return {"train": None, "sample": None, "job_over_sampling": None, "error": repr(e)}
    return {
        "train": round(train, 6),
        "sample": round(sample, 6),
        "job_over_sampling": round((train + sample) / sample, 4) if sample > 0 else None,
    }


def split(
    train: float | None,
    sample: float | None,
    measure: float | None,
    store: float,
    total: float | None,
) -> dict[str, float | None]:
    """The stages' seconds and their shares of the job (``other``: loading, grids)."""
    stages = {"train": train, "sample": sample, "measure": measure, "store": store}
    known = sum(v for v in stages.values() if v is not None)
    whole = (total or 0.0) + store
    out: dict[str, float | None] = {
        k: None if v is None else round(float(v), 4) for k, v in stages.items()
    }
    out["other"] = round(max(0.0, whole - known), 4)
    out["total"] = round(whole, 4)
    for k in ("train", "sample", "measure", "store", "other"):
        v = out[k]
        out[f"{k}_share"] = None if v is None or whole <= 0 else round(v / whole, 4)
    return out


def top_operators(averages, on_gpu: bool, n: int = TOP_OPERATORS) -> list[dict[str, Any]]:
    """The ``n`` operators with the most self time (milliseconds), stage markers left out."""
    rows = []
    for evt in averages:
        if evt.key.startswith(("diffattr.", "ProfilerStep")):
            continue
        row = {
            "name": evt.key,
            "calls": int(evt.count),
            "self_cpu_ms": round(evt.self_cpu_time_total / 1e3, 3),
            "cpu_total_ms": round(evt.cpu_time_total / 1e3, 3),
        }
        if on_gpu:
            self_dev = getattr(evt, "self_device_time_total", None)
            if self_dev is None:
                self_dev = getattr(evt, "self_cuda_time_total", 0.0)
            row["self_cuda_ms"] = round(float(self_dev) / 1e3, 3)
        rows.append(row)
    key = "self_cuda_ms" if on_gpu else "self_cpu_ms"
    rows.sort(key=lambda r: -r[key])
    return rows[:n]


def render(payload: dict[str, Any], top: int = 5) -> str:
    """Two lines for the terminal: the stage split and the heaviest operators."""
    s = payload["seconds"]
    parts = [
        f"{k} {s[k]:.2f} s ({100 * s[k + '_share']:.0f} %)"
        for k in ("train", "sample", "measure", "store", "other")
        if s.get(k) is not None and s.get(k + "_share") is not None
    ]
    ops = ", ".join(
        f"{r['name']} {r.get('self_cuda_ms', r['self_cpu_ms']):.0f} ms"
        for r in payload["top_operators"][:top]
    )
    out = f"profile of one job ({payload['status']}): " + "; ".join(parts) + f"\ntop: {ops}"
    g = payload.get("gflop") or {}
    if g.get("job_over_sampling") is not None:
        out += (
            f"\narithmetic: train {g['train']:.1f} GFLOP, sample {g['sample']:.1f} GFLOP: "
            f"at one rate a job costs at least {g['job_over_sampling']:.1f}x its sampling"
        )
    return out
