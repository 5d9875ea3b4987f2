"""``report.html``: a self-contained page of a run's typed results and its evaluations.

Sections, each rendering one input (``diffattr.report.<module>``):

* contributors (``values.json``): per estimator and behavior, players best first with
  value ± 1.96 s.e., fit flags (not identified, exact) and a strip of each player's own
  training images (``contributors``);
* which counterfactual method made the values, its settings, one-time preparation and
  measured seconds per job (``summary.json`` and ``store.sqlite``: ``method``);
* the reference models' samples side by side: null, full, the method on all players, and
  the full-minus-method gap (``samples``; grids located through ``store.sqlite``);
* LDS scatters, fidelity and cost (``lds.json``: ``lds``), the compute-matched curve
  (``compute_curve.json``: ``curve``), counterfactual removals
  (``counterfactual-{top,bottom}.json``: ``counterfactual``) — each only when present;
* the run: status, stage timings summed over every call beside the last call's, and the
  settings per section (``summary.json`` and the store's meta: ``runinfo``).

Every image is a PNG inlined as a data URI and there is no script, font or link to fetch,
so the file can be mailed or archived alone. The run directory is only read (the store is
opened read-only; see ``inputs``), so ``--out`` may point anywhere when it is read-only.
"""

from __future__ import annotations

from pathlib import Path

from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text
from diffattr.report.common import esc
from diffattr.report.counterfactual import render_counterfactual
from diffattr.report.curve import render_curve
from diffattr.report.inputs import ReportInputs, broken, load_inputs
from diffattr.report.local import is_per_image, render_local, top_players
from diffattr.report.method import render_method
from diffattr.report.runinfo import render_run
from diffattr.report.samples import find_references, render_samples

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;
margin:auto;padding:1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;margin-top:1.6em;padding-bottom:.2em}
h3 small{font-weight:normal;color:#666}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
font-size:13px;vertical-align:middle}th{background:#f4f4f4}td.num{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}caption{text-align:left;font-weight:bold}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:4px}figure img{max-width:100%}figcaption{font-size:12px;color:#444;max-width:420px}
figure.grid img{image-rendering:pixelated;width:260px}
figure.missing div{width:260px;height:120px;border:1px dashed #aaa;display:flex;
align-items:center;justify-content:center;font-size:12px;color:#888;text-align:center}
img.thumb{height:32px;image-rendering:pixelated;display:block}
td.barcell{width:160px;position:relative}span.bar{position:absolute;top:30%;height:40%}
span.bar.pos{left:50%}span.bar.neg{right:50%}span.bar.good{background:#4477aa}
span.bar.bad{background:#ee6677}
td.gap{text-align:center;color:#666;font-style:italic}
.badge{font-size:11px;border-radius:3px;padding:1px 5px;margin-left:4px;white-space:nowrap;
font-weight:normal}.badge.warn{background:#fbe3c2;color:#8a4b00}
.badge.exact{background:#d4ecd4;color:#185418}.badge.ok{background:#e8eef8;color:#244a7a}
.badge.info{background:#eee;color:#444}
p.note{color:#555;font-style:italic}p.warn{color:#8a4b00}p.details{font-size:12px;color:#555}
.settings{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
table.kv td:first-child{color:#555}
"""


def render_page(inputs: ReportInputs) -> str:
    """The whole page of a run's inputs (each section from its own module)."""
    # scipy loads with these sections, only when a page is rendered
    from diffattr.report.contributors import load_thumbnails, render_contributors, shown_players
    from diffattr.report.lds import render_lds

    run_dir = inputs.run_dir
    values = inputs.values
    # local behaviors attributed per generated image: their own section, not one table each
    per_image = [a for a in values["attributions"] if is_per_image(a)]
    all_names = list(values["attributions"][0]["names"])
    values = dict(values, attributions=[a for a in values["attributions"] if not is_per_image(a)])
    parts = [
        "<h1>diffattr report</h1>",
        f"<p>run: <code>{esc(run_dir.resolve())}</code>"
        + (f"; method <b>{esc(inputs.method)}</b>" if inputs.method else "")
        + "</p>",
    ]
    with _layout(run_dir / "values.json"):
        names = shown_players(values["attributions"]) + top_players(per_image)
        thumbs = load_thumbnails(inputs.config.get("data"), list(dict.fromkeys(names)))
        if values["attributions"]:
            parts.append(render_contributors(values, thumbs))
        parts.append(render_local(per_image, run_dir, thumbs))
    with _layout(run_dir / "summary.json"):
        parts.append(render_method(inputs))
    with _layout(run_dir / "store.sqlite"):
        parts.append(
            render_samples(find_references(inputs), values, store_found=inputs.store is not None)
        )
    if inputs.lds is not None:
        with _layout(run_dir / "lds.json"):
            parts.append(render_lds(inputs.lds))
    if inputs.curve is not None:
        with _layout(run_dir / "compute_curve.json"):
            parts.append(render_curve(inputs.curve))
    jobs = inputs.store.of(kind="counterfactual") if inputs.store else []
    for remove, cf in inputs.counterfactual.items():
        with _layout(run_dir / f"counterfactual-{remove}.json"):
            parts.append(render_counterfactual(cf, all_names, jobs, run_dir / "grids"))
    with _layout(run_dir / "summary.json"):
        calls = inputs.store.timing_calls if inputs.store else None
        parts.append(render_run(inputs.config, inputs.summary, calls))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>diffattr report: {esc(run_dir.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


class _layout:
    """Turn a results file whose layout is not what its section expects into a one-line
    error naming the file and the command that rewrites it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and isinstance(exc, (KeyError, TypeError, ValueError, IndexError)):
            if isinstance(exc, DiffattrError):
                return False
            raise broken(self.path, f"unexpected layout: {type(exc).__name__} {exc}") from None
        return False


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a run directory (whatever evaluations exist so far);
    ``out`` defaults to ``RUN_DIR/report.html``. Returns the path written."""
    inputs = load_inputs(run_dir)
    doc = render_page(inputs)
    path = Path(out) if out else Path(run_dir) / "report.html"
    try:
        atomic_write_text(path, doc)
    except OSError as e:
        raise DiffattrError(f"cannot write {path}: {e.strerror or e}; pass --out") from None
    return path
