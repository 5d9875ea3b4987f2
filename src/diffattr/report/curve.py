"""The compute-matched curve of ``compute_curve.json`` (``diffattr.evaluate.budget.
CurveReport.to_dict()``): Shapley LDS against compute for each method, one plot per behavior.
Identified estimates are filled dots joined by a line; a budget whose fit was not identified
is a cross (at its LDS if it has one, else on the bottom edge) and is listed in the table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from diffattr.report.common import Cell, as_dict, axes, badge, esc, fig_png, figure, num, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]


def _points(curve: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for pts in (curve.get("curves") or {}).values() for p in pts]


def curve_figure(curve: dict[str, Any], behavior: str, ax=None) -> Figure:
    """Shapley LDS against compute of each method for one behavior (compute_curve.json)."""
    fig, ax = axes(ax, (4.8, 3.6))
    crosses = []
    for k, (method, pts) in enumerate((curve.get("curves") or {}).items()):
        color = COLORS[k % len(COLORS)]
        pts = sorted(
            (p for p in pts if p["behavior"] == behavior), key=lambda p: p["budget_seconds"]
        )
        good = [p for p in pts if p.get("identified") and math.isfinite(num(p.get("lds")))]
        bad = [p for p in pts if p not in good]
        ax.plot(
            [p["budget_seconds"] for p in good],
            [num(p["lds"]) for p in good],
            "o-",
            color=color,
            label=method,
        )
        crosses += [(p, color) for p in bad]
    if crosses:
        ax.autoscale()
        low = ax.get_ylim()[0]
        for i, (p, color) in enumerate(crosses):
            y = num(p.get("lds"))
            ax.plot(
                [p["budget_seconds"]],
                [y if math.isfinite(y) else low],
                "x",
                color=color,
                ms=9,
                mew=2,
                clip_on=False,
                label="not identified" if i == 0 else None,
            )
    ax.set_xscale("log")
    ax.set_xlabel("compute (seconds: preparation + jobs)", fontsize=8)
    ax.set_ylabel("LDS", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"Shapley LDS against compute, {behavior}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def render_curve(curve: Any) -> str:
    """Plots per behavior, the methods' costs and every budget point (identified or not)."""
    curve = as_dict(curve)
    pts = _points(curve)
    behaviors = sorted({p["behavior"] for p in pts})
    parts = [
        "<h2>LDS against compute</h2>",
        f"<p>Each method's Shapley values fitted on the first coalitions its compute budget "
        f"pays for (one-time preparation + jobs), scored on {esc(curve.get('test_subsets'))} "
        f"retrained test subsets ({esc(curve.get('seeds'))} seed(s)). Crosses: budgets too "
        "small for an identified fit.</p>",
    ]
    figs = [
        figure(fig_png(curve_figure(curve, b)), f"LDS against compute, {b}", cls="plot")
        for b in behaviors
    ]
    if figs:
        parts.append(f'<div class="row">{"".join(figs)}</div>')
    costs = curve.get("costs") or {}
    if costs:
        parts.append(
            table(
                [
                    [
                        m,
                        num(c.get("prepare_seconds")),
                        num(c.get("seconds_per_job")),
                        c.get("subsets"),
                    ]
                    for m, c in costs.items()
                ],
                ["method", "preparation (s)", "seconds / job", "coalitions available"],
            )
        )
    rows = []
    for p in sorted(pts, key=lambda p: (p["behavior"], p["method"], p["budget_seconds"])):
        ok = p.get("identified") and math.isfinite(num(p.get("lds")))
        status = badge("identified", "ok") if ok else badge("not identified", "warn")
        rows.append(
            [
                p["method"],
                p["behavior"],
                num(p["budget_seconds"]),
                p["subsets"],
                num(p.get("lds")),
                Cell(status + (f" {esc(p['note'])}" if p.get("note") else "")),
            ]
        )
    parts.append(
        table(rows, ["method", "behavior", "budget (s)", "coalitions", "LDS", "fit"], cls="curve")
    )
    return "".join(parts)
