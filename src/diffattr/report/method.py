"""Which counterfactual method made the values, and what it cost: the method and its
settings (``values.json``'s config), its one-time preparation (``summary.json``'s stage
timings, summed over every call) and its measured seconds per job from the store (mean over
the finished coalition jobs and the all-players job: building the coalition's model,
sampling, measuring). Other methods whose jobs are in the same store (e.g. ``retrain`` of
``diffattr lds``, ``surrogate`` beside ``sft``) are listed under it for comparison."""

from __future__ import annotations

from typing import Any

from diffattr.counterfactual.settings import METHODS
from diffattr.report.common import esc, fmt, note, seconds, table
from diffattr.report.inputs import JobCost, ReportInputs


def describe(method: str) -> str:
    """The summary of a registered method: the first paragraph of its settings docstring."""

    if method not in METHODS:
        return ""
    doc = (METHODS.get(method).__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()).removeprefix(f"``{method}``: ").replace("``", "")


def render_method(inputs: ReportInputs) -> str:
    method = inputs.method
    if not method:
        return ""
    settings: dict[str, Any] = dict(inputs.config.get("method") or {})
    settings.pop("name", None)
    parts = [
        "<h2>Method and cost per job</h2>",
        f"<p>The values come from coalition models made by <b>{esc(method)}</b>"
        + (f": {esc(describe(method))}" if describe(method) else "")
        + "</p>",
    ]
    if settings:
        rows = [[k, fmt(v)] for k, v in settings.items()]
        parts.append(table(rows, [f"{method} settings", ""], cls="kv"))
    summary = inputs.summary or {}
    totals = summary.get("timings_all_calls") or summary.get("timings") or {}
    prepare = totals.get(f"prepare_{method}")
    costs = inputs.store.costs if inputs.store else {}
    own = costs.get(method)
    if own is None and prepare is None:
        parts.append(note("No finished job of the method is recorded in store.sqlite."))
        return "".join(parts)
    header = [
        "method",
        "jobs",
        "model per job",
        "sampling per job",
        "measuring per job",
        "total per job",
    ]
    rows = [_row(c) for c in [own, *(c for m, c in sorted(costs.items()) if m != method)] if c]
    if rows:
        parts.append(table(rows, header, caption="Measured cost per job (mean seconds)"))
    details = []
    if prepare is not None:
        details.append(
            f"one-time preparation of {esc(method)} (shared by its jobs): "
            f"{esc(seconds(prepare))}, summed over every call"
        )
    if own is not None and own.train < 0.05 * max(own.total, 1e-9):
        details.append(
            f"{esc(method)} builds no model per coalition: a job costs sampling and measuring"
        )
    elif own is not None and own.sample + own.measure > 0:
        details.append(
            f"one {esc(method)} job costs {own.total / (own.sample + own.measure):.1f}× its own "
            "sampling and measuring, the floor of any counterfactual"
        )
    details += _arithmetic_note(inputs.profile, method)
    if own is not None and own.batched:
        details.append(
            f"{own.batched} of its {own.jobs} jobs trained and sampled side by side with "
            f"others, up to {own.batch} models at once ([executor] jobs_per_batch): their model "
            "and sampling times are each job's share of its batch"
        )
    details += _width_note(summary, inputs.config)
    if details:
        parts.append(f'<p class="details">{"; ".join(details)}.</p>')
    return "".join(parts)


def _arithmetic_note(profile: dict | None, method: str) -> list[str]:
    """The profiled job's FLOPs (``diffattr run --profile``): the ratio of a job's
    arithmetic to its sampling's, which no machine running both stages at one rate beats."""
    g = (profile or {}).get("gflop") or {}
    if (profile or {}).get("job", {}).get("method") != method:
        return []
    ratio, train, sample = g.get("job_over_sampling"), g.get("train"), g.get("sample")
    if ratio is None or train is None or sample is None:
        return []
    return [
        f"the profiled job's arithmetic: training {train:.3g} GFLOP, sampling {sample:.3g} "
        f"GFLOP, so at one rate a job costs at least {ratio:.1f}× its sampling on any "
        "machine (fewer fine-tune steps × batch, or more images × DDIM steps, lower it)"
    ]


#: Channels a CPU's convolution kernels compute at once (oneDNN's blocks on AVX-512).
CPU_CHANNEL_BLOCK = 16


def _width_note(summary: dict, config: dict) -> list[str]:
    """On a CPU run, whether the pruned widths waste the convolution blocks: a width
    between multiples of the block costs what the next multiple costs (BENCHMARKS.md,
    "What pruning saves per step")."""
    pruning = (summary.get("preparation") or {}).get("pruning") or {}
    # the convolutions' widths; 1-3 channels are the image's own (input and output layers)
    widths = [w for w in pruning.get("conv_widths") or [] if w > 3]
    device = str(config.get("device") or "cpu")
    off = [w for w in widths if w % CPU_CHANNEL_BLOCK]
    if not off or not device.startswith("cpu"):
        return []
    return [
        f"the pruned convolutions keep {', '.join(map(str, widths))} channels; an AVX-512 CPU "
        f"computes convolutions in blocks of {CPU_CHANNEL_BLOCK} channels, so there "
        f"{', '.join(map(str, off))} cost what the next multiple costs: pruning saves time "
        f"in whole blocks ([method] round_to = {CPU_CHANNEL_BLOCK}, or another ratio)"
    ]


def _row(c: JobCost) -> list[Any]:
    return [
        c.method,
        c.jobs,
        seconds(c.train),
        seconds(c.sample),
        seconds(c.measure),
        seconds(c.total),
    ]
