"""``diffattr estimate``: attributions from a CSV table of evaluated coalitions.

The lead's CLI registers :func:`estimate` as a command; it is also a plain function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from diffattr.errors import DiffattrError
from diffattr.estimators import ESTIMATORS
from diffattr.estimators.attribution import Attribution, write_attributions_csv
from diffattr.estimators.table import read_table_csv

_ESTIMATOR_HELP = (
    "Estimator: shapley (KernelSHAP), permutation-shapley, banzhaf, banzhaf-msr, "
    "datamodel, loo, aoi. A table that holds every subset of its players gives exact "
    "Shapley/Banzhaf values."
)


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.6g}"


def _print(console: Console, att: Attribution, title: str) -> None:
    table = Table(title=title)
    table.add_column("rank", justify="right")
    table.add_column("player")
    table.add_column("value", justify="right")
    table.add_column("stderr", justify="right")
    for rank, i in enumerate(att.ranking(), start=1):
        table.add_row(str(rank), att.names[i], _fmt(att.values[i]), _fmt(att.stderr[i]))
    console.print(table)


def estimate(
    table: Annotated[
        Path,
        typer.Argument(
            help="CSV: one 0/1 column per player and a 'value' column (or 'value:<behavior>' "
            "columns); all-0/all-1 rows give v0/v1.",
            show_default=False,
        ),
    ],
    estimator: Annotated[str, typer.Option("--estimator", "-e", help=_ESTIMATOR_HELP)] = "shapley",
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
    est = ESTIMATORS.get(estimator)
    tbl = read_table_csv(table, v0=v0, v1=v1)
    k = tbl.values.shape[1]
    if k > 1 and (v0 is not None or v1 is not None):
        raise DiffattrError(
            f"--v0/--v1 give one number but the table has {k} behaviors; put all-0/all-1 "
            "rows in the table instead"
        )
    result = est.fit(
        tbl.masks,
        tbl.fit_values(),
        v0=tbl.fit_endpoint("v0"),
        v1=tbl.fit_endpoint("v1"),
        names=tbl.names,
        behaviors=tbl.behaviors if k > 1 else None,
        n_bootstrap=bootstrap,
        seed=seed,
    )
    atts = result if isinstance(result, list) else [result]
    if k == 1:
        atts[0].behavior = tbl.behaviors[0]
    if out is not None:
        write_attributions_csv(out, atts)
    console = Console()
    if atts[0].settings.get("exact"):
        console.print(f"the table holds every subset of its {tbl.n_players} players: exact values")
    for att in atts:
        title = f"{estimator} attributions"
        if att.behavior is not None:
            title += f" — {att.behavior}"
        _print(console, att, title)
        total = f"sum of values {att.total():.6g}"
        j = 0 if att.behavior is None else tbl.behaviors.index(att.behavior)
        if tbl.v0 is not None and tbl.v1 is not None:
            total += f"; v1 - v0 = {tbl.v1[j] - tbl.v0[j]:.6g}"
        console.print(f"{total}; {tbl.n_rows} rows, {tbl.n_players} players")
    if out is not None:
        console.print(f"wrote {out}")
    return atts
