"""``diffattr estimate``: attributions from a CSV table of evaluated coalitions.

The lead's CLI registers :func:`estimate` as a command; it is also a plain function. It
imports numpy, scipy, pydantic, typer and rich — never torch or diffusers — so it starts
in well under a second.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from diffattr.errors import DiffattrError, DiffattrWarning
from diffattr.estimators.attribution import Attribution, write_attributions_csv
from diffattr.estimators.reliability import advice, assess, summary
from diffattr.estimators.settings import ESTIMATORS, estimator_settings
from diffattr.estimators.table import read_table_csv

_ESTIMATOR_HELP = (
    "Estimator: shapley (KernelSHAP), shapley-cv (KernelSHAP with size control variates), "
    "tree-shapley (a tree surrogate's Shapley values), permutation-shapley, banzhaf, "
    "banzhaf-msr, datamodel, loo, aoi. A table that holds every coalition of its players "
    "gives exact Shapley/Banzhaf values."
)


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.6g}"


def _print(console: Console, att: Attribution, title: str) -> None:
    table = Table(title=escape(title))
    table.add_column("rank", justify="right")
    table.add_column("player")
    table.add_column("value", justify="right")
    table.add_column("stderr", justify="right")
    for rank, i in enumerate(att.ranking(), start=1):
        table.add_row(str(rank), escape(att.names[i]), _fmt(att.values[i]), _fmt(att.stderr[i]))
    console.print(table)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> options; values are read as JSON (``false``, ``0.5``,
    ``[1, 2]``) and otherwise kept as strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DiffattrError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def estimate(
    table: Annotated[
        Path,
        typer.Argument(
            help="CSV: one 0/1 column per player and a 'value' column (or 'value:<behavior>' "
            "columns), optionally a 'pair_id' column; all-0/all-1 rows give v0/v1.",
            show_default=False,
        ),
    ],
    estimator: Annotated[str, typer.Option("--estimator", "-e", help=_ESTIMATOR_HELP)] = "shapley",
    sampler: Annotated[
        str | None,
        typer.Option(
            "--sampler",
            help="The sampler that drew the rows (e.g. leverage: its rows are reweighted); "
            "default: the estimator's own.",
        ),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-O",
            help="Estimator setting KEY=VALUE (repeatable), e.g. -O paired=false -O ridge=0.1.",
        ),
    ] = None,
    v0: Annotated[
        float | None, typer.Option("--v0", help="v(empty coalition); overrides all-0 rows.")
    ] = None,
    v1: Annotated[
        float | None, typer.Option("--v1", help="v(all players); overrides all-1 rows.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write player,value,stderr CSV here.", dir_okay=False),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Bootstrap resamples for standard errors; 0 uses each estimator's closed "
            "form (datamodel then has none).",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the bootstrap.")] = 0,
) -> list[Attribution]:
    """Estimate per-player attributions from a table of evaluated coalitions."""
    options = parse_options(option)
    if sampler is not None:
        options["sampler"] = sampler
    options.setdefault("n_bootstrap", bootstrap)
    options.setdefault("seed", seed)
    if estimator not in ESTIMATORS:
        ESTIMATORS.get(estimator)  # the one-line "unknown estimator" error
    settings = estimator_settings(estimator, **options)
    est = settings.build()
    tbl = read_table_csv(table, v0=v0, v1=v1)
    k = tbl.n_behaviors
    if k > 1 and (v0 is not None or v1 is not None):
        raise DiffattrError(
            f"--v0/--v1 give one number but the table has {k} behaviors; put all-0/all-1 "
            "rows in the table instead"
        )
    atts = est.fit(tbl)
    for att, rel in zip(atts, assess(settings, tbl, atts)):
        att.settings["reliability"] = rel.to_dict()
    if out is not None:
        write_attributions_csv(out, atts)
    console = Console()
    if atts[0].settings.get("exact_table"):
        console.print(
            f"the table holds every coalition of its {tbl.n_players} players: exact values"
        )
    for j, att in enumerate(atts):
        title = f"{estimator} attributions"
        if att.behavior is not None:
            title += f" — {att.behavior}"
        _print(console, att, title)
        total = f"sum of values {att.total():.6g}"
        e0, _ = tbl.endpoint("v0")
        e1, _ = tbl.endpoint("v1")
        if e0 is not None and e1 is not None:
            total += f"; v1 - v0 = {e1[j] - e0[j]:.6g}"
        console.print(f"{total}; {tbl.n_rows} rows, {tbl.n_players} players", highlight=False)
        rel = att.settings["reliability"]
        console.print(f"reliability: {summary(rel)}", highlight=False)
        line = advice(estimator, att.behavior, rel)
        if line:
            warnings.warn(line, DiffattrWarning, stacklevel=2)
    if out is not None:
        console.print(f"wrote {escape(str(out))}", highlight=False)
    return atts
