"""A self-contained ``report.html``: values with error bars, sample grids, LDS and fidelity
scatters, the compute-against-LDS curve, and a table of settings and timings.

Every image is a PNG inlined as a data URI, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _values_figs(values: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for a in values["attributions"]:
        v = np.asarray(a["values"], dtype=float)
        se = np.asarray([np.nan if x is None else x for x in a["stderr"]], dtype=float)
        order = np.argsort(-v)
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(v) + 2), 3))
        yerr = None if np.isnan(se).all() else np.nan_to_num(se[order])
        ax.bar(range(len(v)), v[order], yerr=yerr, capsize=2, color="#4477aa")
        ax.set_xticks(range(len(v)))
        ax.set_xticklabels([a["names"][i] for i in order], rotation=60, fontsize=7)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("value")
        ax.set_title(f"{a['estimator']} values for {a['behavior']}")
        out.append((f"{a['estimator']} / {a['behavior']}", _png(fig)))
    return out


def _scatter(x, y, xlabel, ylabel, title) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.scatter(x, y, s=12, color="#aa3377")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _curve_fig(curve: dict) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    behaviors = sorted({p["behavior"] for pts in curve["curves"].values() for p in pts})
    out = []
    for beh in behaviors:
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for method, pts in curve["curves"].items():
            pts = [p for p in pts if p["behavior"] == beh]
            if pts:
                ax.plot(
                    [p["budget_seconds"] for p in pts], [p["lds"] for p in pts], "o-", label=method
                )
        ax.set_xscale("log")
        ax.set_xlabel("compute (seconds)")
        ax.set_ylabel("LDS")
        ax.set_title(f"Shapley LDS vs compute, {beh}", fontsize=9)
        ax.legend(fontsize=8)
        out.append((beh, _png(fig)))
    return out


def _table(rows: list[list[Any]], header: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _grid_for(run_dir: Path, key: str) -> str | None:
    p = run_dir / "grids" / f"{key}.png"
    return _file_png(p) if p.exists() else None


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run directory (whatever evaluations exist so far)."""
    import matplotlib

    matplotlib.use("Agg")
    from diffattr.store import Store

    run_dir = Path(run_dir)
    values = _load(run_dir / "values.json")
    if values is None:
        raise DiffattrError(f"{run_dir / 'values.json'} not found: run diffattr run first")
    summary = _load(run_dir / "summary.json") or {}
    lds = _load(run_dir / "lds.json")
    curve = _load(run_dir / "compute_curve.json")
    parts = [f"<h1>diffattr report</h1><p>run: <code>{html.escape(str(run_dir))}</code></p>"]

    parts.append("<h2>Contributor values</h2>")
    for title, uri in _values_figs(values):
        parts.append(f'<figure><img src="{uri}" alt="{html.escape(title)}"></figure>')

    parts.append("<h2>Samples</h2><div class='row'>")
    full_png = run_dir / "full" / "samples.png"
    if full_png.exists():
        parts.append(
            f'<figure><img src="{_file_png(full_png)}" alt="full model">'
            "<figcaption>full model</figcaption></figure>"
        )
    with Store(run_dir / "store.sqlite") as store:
        for remove in ("top", "bottom"):
            cf = _load(run_dir / f"counterfactual-{remove}.json")
            if not cf:
                continue
            for r in cf["results"][:1]:
                recs = [x for x in store.records(status="done") if x.kind == "counterfactual"]
                removed = set(r["removed"])
                for rec in recs:
                    names = values["attributions"][0]["names"]
                    dropped = {n for n, c in zip(names, rec.mask) if c == "0"}
                    if dropped == removed:
                        uri = _grid_for(run_dir, rec.key)
                        if uri:
                            cap = (
                                f"retrained without the {remove} {len(removed)} ({r['estimator']})"
                            )
                            parts.append(
                                f'<figure><img src="{uri}" alt="{cap}">'
                                f"<figcaption>{html.escape(cap)}</figcaption></figure>"
                            )
                        break
    parts.append("</div>")

    for remove in ("top", "bottom"):
        cf = _load(run_dir / f"counterfactual-{remove}.json")
        if cf:
            parts.append(f"<h2>Counterfactual: remove the {remove} {cf['fraction']:.0%}</h2>")
            rows = []
            for r in cf["results"]:
                for beh, c in r["relative_change_pct"].items():
                    rows.append(
                        [
                            r["estimator"],
                            r["ranked_by"],
                            beh,
                            c["mean"],
                            c["sd"],
                            r["seeds_done"],
                            ", ".join(r["removed"]),
                        ]
                    )
            parts.append(
                _table(
                    rows,
                    ["estimator", "ranked by", "behavior", "change %", "sd", "seeds", "removed"],
                )
            )

    if lds:
        proto = lds.get("protocol", {})
        parts.append(
            f"<h2>Linear datamodeling score ({proto.get('test_subsets')} retrained test "
            f"subsets per alpha, {proto.get('seeds')} seed(s))</h2>"
        )
        rows = [
            [
                r["alpha"],
                r["method"],
                r["estimator"],
                r["behavior"],
                r["lds"],
                r["ci95_over_seeds"],
                "[{:.1f}, {:.1f}]".format(*r["bootstrap_95_over_test_subsets"]),
                r["fit_rows"],
            ]
            for r in lds["results"]
        ]
        parts.append(
            _table(
                rows,
                [
                    "alpha",
                    "method",
                    "estimator",
                    "behavior",
                    "LDS",
                    "±95% (t, over seeds)",
                    "bootstrap 95% (over test subsets)",
                    "fit rows",
                ],
            )
        )
        parts.append("<div class='row'>")
        for r in lds["results"]:
            pts = r.get("points")
            if pts:
                uri = _scatter(
                    pts["predicted"],
                    pts["actual"],
                    "sum of values (predicted)",
                    "retrained F (actual)",
                    f"{r['method']}-{r['estimator']} {r['behavior']}: LDS {r['lds']:.1f}",
                )
                parts.append(f'<figure><img src="{uri}" alt="LDS scatter"></figure>')
        parts.append("</div>")
        if lds.get("fidelity"):
            parts.append("<h2>Fidelity to retraining</h2>")
            parts.append(
                _table(
                    [
                        [f["method"], f["behavior"], f["pearson"], f["spearman"], f["mae"], f["n"]]
                        for f in lds["fidelity"]
                    ],
                    ["method", "behavior", "Pearson", "Spearman", "MAE", "subsets"],
                )
            )
            parts.append("<div class='row'>")
            for f in lds["fidelity"]:
                uri = _scatter(
                    f["points"]["retrain"],
                    f["points"]["approx"],
                    "retrain F",
                    f"{f['method']} F",
                    f"{f['method']} vs retrain, {f['behavior']}",
                )
                parts.append(f'<figure><img src="{uri}" alt="fidelity scatter"></figure>')
            parts.append("</div>")
        parts.append("<h2>Cost per job</h2>")
        parts.append(
            _table(
                [
                    [
                        m,
                        c.get("seconds_per_job"),
                        c.get("prepare_seconds"),
                        c.get("speedup_vs_retrain", ""),
                    ]
                    for m, c in lds["cost"].items()
                ],
                ["method", "seconds / job", "one-time prepare (s)", "speed-up"],
            )
        )
    if curve:
        parts.append("<h2>LDS against compute</h2><div class='row'>")
        for beh, uri in _curve_fig(curve):
            parts.append(
                f'<figure><img src="{uri}" alt="compute curve {html.escape(beh)}"></figure>'
            )
        parts.append("</div>")

    parts.append("<h2>Settings and timings</h2>")
    parts.append(
        _table([[k, json.dumps(v)] for k, v in values["config"].items()], ["section", "settings"])
    )
    if summary:
        parts.append(
            _table([[k, v] for k, v in summary.get("timings", {}).items()], ["stage", "seconds"])
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px}.row{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:4px}img{max-width:100%}"
    )
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>diffattr report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = Path(out) if out else run_dir / "report.html"
    atomic_write_text(out, doc)
    return out
