"""``diffattr report``: a self-contained HTML report of a run's typed results.

``write_report(run_dir, out=None)`` reads the run directory (``inputs``: values.json,
summary.json, the evaluations' JSON files, the store read-only) and renders one section per
input: ``contributors`` (values.json), ``samples`` (the reference models' grids),
``lds`` (lds.json: LDS, fidelity, cost), ``curve`` (compute_curve.json),
``counterfactual`` (counterfactual-*.json) and ``runinfo`` (timings over every call,
status, settings); ``html`` assembles the page.
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "write_report": "diffattr.report.html:write_report",
    "render_page": "diffattr.report.html:render_page",
    "load_inputs": "diffattr.report.inputs:load_inputs",
    "ReportInputs": "diffattr.report.inputs:ReportInputs",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
