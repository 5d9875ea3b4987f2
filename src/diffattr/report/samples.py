"""Samples of the reference models side by side: the null model (the empty coalition), the
full model theta*, and the counterfactual method on all players, from the sample grids the
jobs wrote (``grids/<job key>.png``), with each one's behaviors and the gap between the full
model and the method's all-players model (``full_minus_method`` of ``values.json``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.report.common import esc, figure, file_png, note, num, table
from diffattr.report.inputs import JobRow, ReportInputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Reference:
    """One reference model: what it is, its finished job (None if not in the store) and
    its sample grid (None if the job wrote none)."""

    role: str  # 'null' | 'full' | 'method'
    label: str
    job: JobRow | None
    grid: Path | None


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if not a or not b or set(a) != set(b):
        return False
    return all(math.isclose(num(a[k]), num(b[k]), rel_tol=1e-9, abs_tol=1e-12) for k in a)


def _choose(rows: list[JobRow], behaviors: dict | None) -> JobRow | None:
    """The row whose behaviors are those values.json reports, else the latest finished."""
    for r in reversed(rows):
        if _same(r.behaviors, behaviors):
            return r
    return rows[-1] if rows else None


def find_references(inputs: ReportInputs) -> list[Reference]:
    """The null, full and (when recorded) method-on-all-players jobs of the store."""
    v = inputs.values
    store = inputs.store
    method = inputs.method or "method"
    out = []
    for role, label, rows, behaviors in (
        ("null", "null model (empty coalition)", store.of(method="null") if store else [], "v0"),
        ("full", "full model θ* (all players)", store.of(method="full") if store else [], "v1"),
        (
            "method",
            f"{method} on all players",
            store.of(kind="method-all", method=method) if store else [],
            "method_all_players",
        ),
    ):
        if role == "method" and not rows and not v.get("method_all_players"):
            continue
        job = _choose(rows, v.get(behaviors))
        out.append(Reference(role, label, job, inputs.grid(job.key if job else None)))
    return out


def samples_figure(refs: list[Reference]) -> Figure:
    """The reference models' sample grids side by side (null, full, the method on all
    players), each titled with what it is; a missing grid says so."""
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(3.2 * max(1, len(refs)), 3.6), layout="constrained")
    for ax, r in zip(fig.subplots(1, max(1, len(refs)), squeeze=False)[0], refs):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(r.label, fontsize=8)
        if r.grid is None:
            why = "no finished job in the store" if r.job is None else "its grid is missing"
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=7)
            continue
        with Image.open(r.grid) as im:
            arr = np.asarray(im.convert("RGB"))
        ax.imshow(arr, interpolation="nearest")
    return fig


def render_samples(refs: list[Reference], values: dict[str, Any], store_found: bool) -> str:
    """The reference models' grids and a table of their behaviors (and the method gap)."""
    parts = ["<h2>Samples of the reference models</h2>"]
    if not store_found:
        parts.append(note("store.sqlite not found: the sample grids cannot be located."))
    figs = []
    for r in refs:
        if r.grid is not None:
            figs.append(figure(file_png(r.grid), r.label, cls="grid"))
        elif r.job is not None:
            figs.append(
                f'<figure class="grid missing"><div>no grid: grids/{esc(r.job.key)}.png is '
                f"missing</div><figcaption>{esc(r.label)}</figcaption></figure>"
            )
        elif store_found:
            figs.append(
                '<figure class="grid missing"><div>no finished job in the store</div>'
                f"<figcaption>{esc(r.label)}</figcaption></figure>"
            )
    if figs:
        parts.append(f'<div class="row">{"".join(figs)}</div>')
    v0, v1 = values.get("v0") or {}, values.get("v1") or {}
    m_all = values.get("method_all_players")
    gap = values.get("full_minus_method")
    behaviors = sorted(set(v0) | set(v1) | set(m_all or {}))
    if behaviors:
        method = next((r.label for r in refs if r.role == "method"), None)
        header = ["behavior", "null (v0)", "full (v1)"]
        if m_all is not None:
            header += [method or "method on all players", "full − method"]
        rows = []
        for b in behaviors:
            row: list[Any] = [b, num(v0.get(b)), num(v1.get(b))]
            if m_all is not None:
                row += [num(m_all.get(b)), num((gap or {}).get(b))]
            rows.append(row)
        parts.append(table(rows, header))
        src = values.get("v1_source")
        if src:
            parts.append(
                f'<p class="details">The values use v1 = {esc(src)} '
                f"({'the full model' if src == 'full' else 'the method on all players'}).</p>"
            )
        if m_all is None and any(r.role == "method" for r in refs):
            parts.append(note("The method's all-players job did not finish."))
    elif not figs:
        parts.append(note("values.json records no reference behaviors."))
    return "".join(parts)
