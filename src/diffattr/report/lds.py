"""The LDS section of ``lds.json`` (``diffattr.evaluate.lds.LDSReport.to_dict()``): a table
and one scatter per result (predicted = sum of the kept players' values, against F of the
model retrained from scratch, mean over seeds), titled with the LDS, its t-interval over
retraining seeds and its bootstrap interval over test subsets; the fidelity of each method
to retraining (``FidelityResult``) and the cost per job of each method."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.report.common import (
    Cell,
    as_dict,
    axes,
    esc,
    fig_png,
    figure,
    fmt,
    note,
    num,
    seconds,
    table,
)
from diffattr.report.contributors import fit_flags, flag_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _ci(x: Any, digits: int = 1) -> str:
    v = num(x)
    return f"± {v:.{digits}f}" if math.isfinite(v) else "± n/a"


def _interval(pair: Any) -> str:
    lo, hi = (num(x) for x in (pair or [None, None]))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.1f}, {hi:.1f}]"


def lds_title(r: dict[str, Any], seeds: int | None) -> str:
    """'LDS 41.2 ± 3.0 (t, over 3 seeds); bootstrap [30.1, 52.0] (over 100 test subsets)'."""
    s = f"{seeds} seed{'s' if seeds != 1 else ''}" if seeds else "seeds"
    return (
        f"LDS {fmt(num(r.get('lds')), 3)} {_ci(r.get('ci95_over_seeds'))} (t, over {s}); "
        f"bootstrap {_interval(r.get('bootstrap_95_over_test_subsets'))} "
        f"(over {r.get('n_test', '?')} test subsets)"
    )


def scatter_figure(
    x, y, xlabel: str, ylabel: str, title: str, diagonal: bool = False, ax=None
) -> Figure:
    """One point per test subset (``diagonal``: with the line y = x)."""
    fig, ax = axes(ax, (4.2, 3.6))
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ax.scatter(x, y, s=14, color="#aa3377", alpha=0.8)
    if diagonal and len(x):
        lo, hi = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
        ax.plot([lo, hi], [lo, hi], color="#888", lw=0.8, ls="--", label="y = x")
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    return fig


def lds_figure(r: dict[str, Any], seeds: int | None = None, ax=None) -> Figure:
    """The LDS scatter of one result of lds.json (``LDSResult.to_dict()``): predicted (sum
    of the kept players' values) against F of the model retrained from scratch."""
    pts = r.get("points") or {}
    title = _lds_head(r) + "\n" + lds_title(r, seeds).replace("; ", "\n")
    return scatter_figure(
        pts.get("predicted") or [],
        pts.get("actual") or [],
        "predicted: sum of kept players' values",
        "retrained from scratch: F (mean over seeds)",
        title,
        ax=ax,
    )


def _lds_head(r: dict[str, Any]) -> str:
    return f"{r.get('method')} {r.get('estimator')}, {r.get('behavior')}, α={r.get('alpha')}"


def fidelity_figure(f: dict[str, Any], ax=None) -> Figure:
    """F of the method against F of retraining on each test subset (``FidelityResult``)."""
    pts = f.get("points") or {}
    title = (
        f"{f['method']} vs retrain, {f['behavior']}\nPearson {fmt(num(f['pearson']), 3)}, "
        f"Spearman {fmt(num(f['spearman']), 3)}"
    )
    return scatter_figure(
        pts.get("retrain") or [],
        pts.get("approx") or [],
        "retrained from scratch: F",
        f"{f['method']}: F",
        title,
        diagonal=True,
        ax=ax,
    )


def render_lds_results(results: list[dict[str, Any]], seeds: int | None) -> str:
    rows = []
    for r in results:
        flags = fit_flags(r.get("estimate") or {}, 0)
        rows.append(
            [
                r.get("alpha"),
                r.get("method"),
                r.get("estimator"),
                r.get("behavior"),
                num(r.get("lds")),
                _ci(r.get("ci95_over_seeds")),
                _interval(r.get("bootstrap_95_over_test_subsets")),
                r.get("n_test"),
                r.get("fit_rows"),
                Cell(flag_html(flags)),
            ]
        )
    header = [
        "alpha",
        "method",
        "estimator",
        "behavior",
        "LDS",
        "95% t-interval over seeds",
        "95% bootstrap over test subsets",
        "test subsets",
        "fit rows",
        "fit",
    ]
    parts = [table(rows, header)]
    figs = []
    for r in results:
        pts = r.get("points") or {}
        if not pts.get("predicted"):
            continue
        uri = fig_png(lds_figure(r, seeds))
        figs.append(figure(uri, f"{_lds_head(r)}: {lds_title(r, seeds)}", cls="plot lds"))
    if figs:
        parts.append(f'<div class="row">{"".join(figs)}</div>')
    return "".join(parts)


def render_fidelity(fidelity: list[dict[str, Any]]) -> str:
    """Does F(method on S) track F(retrain on S)? Table and one scatter per result."""
    fidelity = [as_dict(f) for f in fidelity]
    seeded = any(f.get("retrain_agreement") for f in fidelity)
    rows = []
    for f in fidelity:
        row = [f["method"], f["behavior"], num(f["pearson"]), num(f["spearman"])]
        row += [num(f["mae"]), f["n"]]
        if seeded:
            agree = f.get("retrain_agreement") or {}
            row += [num(f.get("pearson_per_seed")), num(agree.get("pearson"))]
        rows.append(row)
    header = ["method", "behavior", "Pearson", "Spearman", "MAE", "subsets"]
    text = (
        "<p>The method on each held-out test subset against the model retrained from scratch "
        "on it (mean over seeds)."
    )
    if seeded:
        header += ["Pearson, one retraining seed", "retraining, seed to seed"]
        text += (
            " Retraining is noisy too: the last two columns are the method's Pearson with one "
            "retraining seed at a time and one retraining seed's with another (means over "
            "seeds and pairs of seeds, same subsets). They compare like with like: equal "
            "values mean the method tracks retraining as well as a second retraining does; "
            "with seed noise independent of the subset, no method is expected to exceed the "
            "square root of the seed-to-seed value with one seed."
        )
    parts = ["<h2>Fidelity to retraining</h2>", text + "</p>", table(rows, header)]
    figs = []
    for f in fidelity:
        pts = f.get("points") or {}
        if not pts.get("retrain"):
            continue
        uri = fig_png(fidelity_figure(f))
        figs.append(figure(uri, f"{f['method']} vs retrain, {f['behavior']}", cls="plot"))
    if figs:
        parts.append(f'<div class="row">{"".join(figs)}</div>')
    return "".join(parts)


def render_cost(cost: dict[str, dict[str, Any]]) -> str:
    rows = [
        [
            m,
            seconds(c.get("seconds_per_job")),
            seconds(c.get("prepare_seconds")),
            fmt(num(c["speedup_vs_retrain"]), 3) + "×" if "speedup_vs_retrain" in c else "—",
        ]
        for m, c in cost.items()
    ]
    return "<h3>Cost per job</h3>" + table(
        rows, ["method", "per job", "one-time preparation", "speed-up vs retrain"]
    )


def render_lds(lds: Any) -> str:
    """The LDS, fidelity and cost sections of an ``LDSReport`` (or its dict)."""
    lds = as_dict(lds)
    proto = lds.get("protocol") or {}
    seeds = proto.get("seeds")
    alphas = ", ".join(str(a) for a in proto.get("alphas", []))
    parts = [
        "<h2>Linear datamodeling score</h2>",
        f"<p>{esc(proto.get('test_subsets'))} held-out test subsets per alpha ({esc(alphas)}), "
        f"each retrained from scratch with {esc(seeds)} seed(s). LDS = 100 × Spearman of the "
        "predicted and retrained behaviors; mean over seeds with a t-interval over seeds, and a "
        "bootstrap interval over test subsets (attributions held fixed).</p>",
    ]
    distinct = lds.get("distinct_test_subsets") or {}
    short = {
        a: n for a, n in distinct.items() if proto.get("test_subsets") and n < proto["test_subsets"]
    }
    for a, n in short.items():
        parts.append(note(f"alpha {a}: only {n} distinct test subsets exist."))
    if lds.get("failed_jobs"):
        parts.append(note(f"{lds['failed_jobs']} job(s) failed; see diffattr status.", "warn"))
    for e in lds.get("estimator_errors") or []:
        parts.append(note(f"not fitted: {e}", "warn"))
    parts.append(render_lds_results(lds.get("results") or [], seeds))
    if lds.get("cost"):
        parts.append(render_cost(lds["cost"]))
    if lds.get("fidelity"):
        parts.append(render_fidelity(lds["fidelity"]))
        parts.append(render_operating_point(lds["fidelity"], lds.get("cost") or {}))
    return "".join(parts)


def render_operating_point(fidelity: list[dict[str, Any]], cost: dict[str, dict]) -> str:
    """Where each method's settings put it on the cost–fidelity plane: how much cheaper
    than retraining a counterfactual is, at what fidelity to retraining (what the
    frontier of BENCHMARKS.md plots for the sFT knobs)."""
    lines = []
    for method in dict.fromkeys(as_dict(f)["method"] for f in fidelity):
        speedup = (cost.get(method) or {}).get("speedup_vs_retrain")
        if speedup is None or not np.isfinite(speedup):
            continue
        pearson = ", ".join(
            f"{num(f['pearson'])} ({esc(f['behavior'])})"
            for f in map(as_dict, fidelity)
            if f["method"] == method
        )
        lines.append(
            f"{esc(method)}: {fmt(num(speedup), 3)}× cheaper per counterfactual than retraining, "
            f"at Pearson {pearson}"
        )
    if not lines:
        return ""
    return (
        '<p class="details">This run\'s operating point (per job, one-time preparation '
        f"aside): {'; '.join(lines)}. Cheaper settings trade fidelity: BENCHMARKS.md, "
        '"The cost–fidelity frontier of sFT".</p>'
    )
