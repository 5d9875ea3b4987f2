"""Counterfactual removal (``counterfactual-top.json`` / ``-bottom.json``:
``diffattr.evaluate.counterfactual.CounterfactualReport.to_dict()``): the relative change of
each behavior when the model is retrained without the top (bottom) contributors of each
ranking, as a table and a bar chart with t-intervals over seeds, and the samples of the
retrained models (their grids, found through the store's counterfactual jobs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.report.common import (
    as_dict,
    axes,
    direction,
    esc,
    fig_png,
    figure,
    file_png,
    num,
    table,
)
from diffattr.report.inputs import JobRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377"]


def removal_jobs(jobs: list[JobRow], names: list[str], removed: list[str]) -> list[JobRow]:
    """The store's counterfactual retrains that dropped exactly ``removed``, by seed."""
    want = set(removed)
    out = [
        j
        for j in jobs
        if len(j.mask) == len(names) and {n for n, c in zip(names, j.mask) if c == "0"} == want
    ]
    return sorted(out, key=lambda j: j.seed)


def change_figure(cf: dict[str, Any], ax=None) -> Figure | None:
    """The relative change of each behavior when retrained without the top (bottom)
    players of each ranking, with t-intervals over seeds (None: nothing to draw)."""
    results = cf.get("results") or []
    behaviors = sorted({b for r in results for b in r["relative_change_pct"]})
    if not results or not behaviors:
        return None
    fig, ax = axes(ax, (max(4.0, 1.6 * len(behaviors) * len(results) ** 0.5), 3.4))
    width = 0.8 / len(results)
    x = np.arange(len(behaviors))
    for k, r in enumerate(results):
        ch = r["relative_change_pct"]
        mean = [num(ch.get(b, {}).get("mean")) for b in behaviors]
        ci = [num(ch.get(b, {}).get("ci95")) for b in behaviors]
        err = None if all(not math.isfinite(c) for c in ci) else np.nan_to_num(ci)
        ax.bar(
            x + (k - (len(results) - 1) / 2) * width,
            mean,
            width,
            yerr=err,
            capsize=3,
            color=COLORS[k % len(COLORS)],
            label=f"{r['estimator']} (by {r['ranked_by']})",
        )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(behaviors, fontsize=7)
    ax.set_ylabel("change vs full model (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.set_title(
        f"retrained without the {cf.get('remove')} {num(cf.get('fraction')):.0%}", fontsize=9
    )
    return fig


def render_counterfactual(
    cf: Any,
    names: list[str] | None = None,
    jobs: list[JobRow] | None = None,
    grids_dir: Path | None = None,
) -> str:
    """One removal file; with the players' ``names``, the store's counterfactual ``jobs``
    and the run's ``grids_dir``, also each retrained model's samples."""
    cf = as_dict(cf)
    remove, fraction = cf.get("remove"), num(cf.get("fraction"))
    parts = [
        f"<h2>Counterfactual: retrain without the {esc(remove)} {fraction:.0%}</h2>",
        f"<p>Retrained from scratch without the {esc(remove)} contributors of each ranking "
        f"(by the ranked behavior's direction), {esc(cf.get('seeds'))} seed(s); change of each "
        "behavior relative to the full model, mean over seeds ± a t-interval.</p>",
    ]
    if cf.get("failed_jobs"):
        parts.append(f'<p class="warn">{esc(cf["failed_jobs"])} retrain(s) failed.</p>')
    rows = []
    for r in cf.get("results") or []:
        for b, c in r["relative_change_pct"].items():
            ci = num(c.get("ci95"))
            rows.append(
                [
                    r["estimator"],
                    r["ranked_by"],
                    f"{b} ({direction(b)})",
                    num(c.get("mean")),
                    f"± {ci:.2g}" if math.isfinite(ci) else "± n/a",
                    num(c.get("value")),
                    r["seeds_done"],
                    ", ".join(r["removed"]),
                ]
            )
    parts.append(
        table(
            rows,
            [
                "estimator",
                "ranked by",
                "behavior",
                "change %",
                "95% t-interval",
                "value after removal",
                "seeds",
                "removed",
            ],
        )
    )
    fig = change_figure(cf)
    figs = []
    if fig is not None:
        figs.append(figure(fig_png(fig), f"change without the {remove} contributors", cls="plot"))
    if names and jobs and grids_dir is not None:
        for r in cf.get("results") or []:
            found = removal_jobs(jobs, names, r["removed"])
            grid = next(
                (
                    grids_dir / f"{j.key}.png"
                    for j in found
                    if (grids_dir / f"{j.key}.png").is_file()
                ),
                None,
            )
            if grid is not None:
                cap = (
                    f"retrained without the {remove} {len(r['removed'])} of "
                    f"{r['estimator']} by {r['ranked_by']}: {', '.join(r['removed'])}"
                )
                figs.append(figure(file_png(grid), cap, cls="grid"))
    if figs:
        parts.append(f'<div class="row">{"".join(figs)}</div>')
    return "".join(parts)
