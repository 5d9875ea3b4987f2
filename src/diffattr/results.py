"""Results as Python objects: attributions as pandas DataFrames, evaluations, figures.

* :class:`Attributions` -- the values of a run (``values.json``) or of
  ``diffattr.estimate``: ``to_pandas()`` with pinned dtypes (:data:`COLUMNS`), ``get()``
  one estimator's values for one behavior, ``plot()`` the ranked values with 95 % error
  bars, ``plot_contributors()`` the training images of the top and bottom players;
* :class:`LDSResults` (``lds.json``), :class:`CurveResults` (``compute_curve.json``) and
  :class:`CounterfactualResults` (``counterfactual-top.json`` / ``-bottom.json``): each a
  DataFrame and its figure;
* :class:`RunResults` -- a run directory opened read-only (``diffattr.open_run``): its
  config, status, values, evaluations, the reference models' samples and the HTML report.

Every figure is a ``matplotlib.figure.Figure`` drawn by the same function that draws it in
the HTML report (``diffattr.report``); pass ``ax=`` to draw into your own axes. Nothing here
writes to the run directory except :meth:`RunResults.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.errors import DiffattrError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from diffattr.config import RunConfig
    from diffattr.estimators.attribution import Attribution

#: Columns of :meth:`Attributions.to_pandas` and their dtypes: one row per (estimator,
#: behavior, player); ``rank`` 1 is the best player by the behavior's direction, ``ci95_*``
#: the value ± 1.96 standard errors (NaN without one), ``method`` the counterfactual method
#: whose jobs the estimator read (missing for a table).
COLUMNS: dict[str, str] = {
    "player": "string",
    "behavior": "string",
    "estimator": "string",
    "value": "float64",
    "stderr": "float64",
    "rank": "int64",
    "ci95_low": "float64",
    "ci95_high": "float64",
    "lower_is_better": "bool",
    "method": "string",
}


def _frame(rows: list[dict[str, Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(dtypes))
    return df.astype(dtypes)


def _matches(behavior: str | None, query: str) -> bool:
    """``query`` names ``behavior``: the whole key (``fid[digits-cnn]``) or its name (``fid``)."""
    from diffattr.behaviors.keys import BehaviorKey

    if behavior is None:
        return query == "value"
    if behavior == query:
        return True
    try:
        return BehaviorKey.parse(behavior).matches(query)
    except DiffattrError:
        return False


def _choose(items: list, what: str, describe, **wanted: Any):
    """The one item whose fields match ``wanted`` (None: any); a one-line error naming the
    choices when none or several do."""
    hits = items
    for key, value in wanted.items():
        if value is None:
            continue
        if key == "behavior":
            hits = [x for x in hits if _matches(_get(x, key), value)]
        else:
            hits = [x for x in hits if _get(x, key) == value]
    if len(hits) == 1:
        return hits[0]
    choices = "; ".join(describe(x) for x in items)
    asked = ", ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not None) or "nothing"
    if not hits:
        raise DiffattrError(f"no {what} matches {asked}; there are: {choices}")
    raise DiffattrError(
        f"{len(hits)} {what}s match {asked}; name one of: {'; '.join(describe(x) for x in hits)}"
    )


def _get(x: Any, key: str) -> Any:
    return x.get(key) if isinstance(x, dict) else getattr(x, key)


# --------------------------------------------------------------------------- attributions


@dataclass
class Attributions:
    """Values and standard errors of every (estimator, behavior) of a run or a table.

    ``attributions`` are ``diffattr.estimators.Attribution`` objects (``values``,
    ``stderr``, ``names``, ``settings``: rows, solver, rank, reliability); ``v0`` / ``v1``
    the behaviors of the null and full models (a run's), ``data`` the run's ``[data]``
    settings (for the players' training images), ``source`` the file they were read from.
    """

    attributions: list[Attribution]
    v0: dict[str, float] = field(default_factory=dict)
    v1: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    source: Path | None = None

    @classmethod
    def from_values(cls, payload: dict[str, Any], source: Path | None = None) -> Attributions:
        """From a run's ``values.json`` payload (``diffattr.runner.values.read_values``)."""
        from diffattr.estimators.attribution import Attribution

        config = payload.get("config") or {}
        return cls(
            attributions=[Attribution.from_dict(a) for a in payload["attributions"]],
            v0=dict(payload.get("v0") or {}),
            v1=dict(payload.get("v1") or {}),
            data=config.get("data"),
            source=source,
        )

    @property
    def players(self) -> list[str]:
        return list(self.attributions[0].names) if self.attributions else []

    @property
    def estimators(self) -> list[str]:
        return list(dict.fromkeys(a.estimator for a in self.attributions))

    @property
    def behaviors(self) -> list[str]:
        return list(dict.fromkeys(a.behavior or "value" for a in self.attributions))

    def get(self, estimator: str | None = None, behavior: str | None = None) -> Attribution:
        """The attribution of ``estimator`` for ``behavior`` (a key such as
        ``fid[digits-cnn]`` or its name ``fid``); either may be left out when only one fits."""
        return _choose(
            self.attributions,
            "attribution",
            lambda a: f"{a.estimator} {a.behavior or 'value'}",
            estimator=estimator,
            behavior=behavior,
        )

    def to_pandas(self) -> pd.DataFrame:
        """One row per (estimator, behavior, player) with :data:`COLUMNS` and their dtypes,
        players ranked within each (estimator, behavior)."""
        from diffattr.report.common import Z95, best_first, lower_is_better

        rows = []
        for a in self.attributions:
            lower = lower_is_better(a.behavior)
            rank = np.empty(a.n_players, dtype=np.int64)
            rank[best_first(a.values, a.behavior)] = np.arange(1, a.n_players + 1)
            method = a.settings.get("method")
            for i, name in enumerate(a.names):
                v, s = float(a.values[i]), float(a.stderr[i])
                rows.append(
                    {
                        "player": name,
                        "behavior": a.behavior or "value",
                        "estimator": a.estimator,
                        "value": v,
                        "stderr": s,
                        "rank": int(rank[i]),
                        "ci95_low": v - Z95 * s,
                        "ci95_high": v + Z95 * s,
                        "lower_is_better": lower,
                        "method": None if method is None else str(method),
                    }
                )
        return _frame(rows, COLUMNS)

    def plot(
        self,
        estimator: str | None = None,
        behavior: str | None = None,
        limit: int = 30,
        ax=None,
    ) -> Figure:
        """The values of one attribution ranked best first, with 95 % error bars (the top
        and bottom ``limit // 2`` players when there are more than ``limit``)."""
        from diffattr.report.contributors import values_figure

        return values_figure(self.get(estimator, behavior).to_dict(), limit=limit, ax=ax)

    def plot_contributors(
        self,
        estimator: str | None = None,
        behavior: str | None = None,
        k: int = 5,
        images: int = 6,
    ) -> Figure:
        """The training images of the top and bottom ``k`` players of one attribution (the
        run's data, loaded again from the paths in its config)."""
        from diffattr.data import Players, load_dataset
        from diffattr.data.settings import DATASETS
        from diffattr.report.contributors import contributors_figure

        a = self.get(estimator, behavior)
        if not self.data:
            raise DiffattrError(
                "these values name no dataset (a table's values, or a run without its config); "
                "the players' training images cannot be shown"
            )
        settings = DATASETS.parse(self.data, "data")
        dataset = load_dataset(settings)
        players = Players.from_dataset(dataset, settings.players)
        return contributors_figure(a.to_dict(), dataset, players, k=k, images=images)

    def __len__(self) -> int:
        return len(self.attributions)

    def __repr__(self) -> str:
        fits = ", ".join(f"{a.estimator}/{a.behavior or 'value'}" for a in self.attributions)
        return f"Attributions({len(self.players)} players: {fits})"

    def _repr_html_(self) -> str:
        return self.to_pandas()._repr_html_()


# --------------------------------------------------------------------------- evaluations

LDS_COLUMNS = {
    "alpha": "float64",
    "method": "string",
    "estimator": "string",
    "behavior": "string",
    "lds": "float64",
    "ci95_over_seeds": "float64",
    "bootstrap_low": "float64",
    "bootstrap_high": "float64",
    "n_test": "int64",
    "fit_rows": "Int64",
}

FIDELITY_COLUMNS = {
    "method": "string",
    "behavior": "string",
    "pearson": "float64",
    "spearman": "float64",
    "mae": "float64",
    "n": "int64",
    "pearson_one_retrain_seed": "float64",
    "retrain_seed_to_seed": "float64",
}


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


@dataclass
class LDSResults:
    """``lds.json`` (``diffattr lds``): the LDS of each (alpha, method, estimator,
    behavior) with its intervals and points, the methods' fidelity to retraining and cost."""

    data: dict[str, Any]

    @property
    def seeds(self) -> int | None:
        return (self.data.get("protocol") or {}).get("seeds")

    def to_pandas(self) -> pd.DataFrame:
        rows = []
        for r in self.data.get("results") or []:
            lo, hi = (r.get("bootstrap_95_over_test_subsets") or [None, None])[:2]
            rows.append(
                {
                    "alpha": _num(r.get("alpha")),
                    "method": r.get("method"),
                    "estimator": r.get("estimator"),
                    "behavior": r.get("behavior"),
                    "lds": _num(r.get("lds")),
                    "ci95_over_seeds": _num(r.get("ci95_over_seeds")),
                    "bootstrap_low": _num(lo),
                    "bootstrap_high": _num(hi),
                    "n_test": int(r.get("n_test") or 0),
                    "fit_rows": r.get("fit_rows"),
                }
            )
        return _frame(rows, LDS_COLUMNS)

    def fidelity_to_pandas(self) -> pd.DataFrame:
        """Each method's fidelity to retraining per behavior: Pearson, Spearman and MAE
        against the mean over retraining seeds; with two or more seeds also its Pearson with
        one seed at a time and retraining's own seed-to-seed Pearson (NaN with one seed)."""
        rows = []
        for f in self.data.get("fidelity") or []:
            agree = f.get("retrain_agreement") or {}
            rows.append(
                {
                    "method": f.get("method"),
                    "behavior": f.get("behavior"),
                    "pearson": _num(f.get("pearson")),
                    "spearman": _num(f.get("spearman")),
                    "mae": _num(f.get("mae")),
                    "n": int(f.get("n") or 0),
                    "pearson_one_retrain_seed": _num(f.get("pearson_per_seed")),
                    "retrain_seed_to_seed": _num(agree.get("pearson")),
                }
            )
        return _frame(rows, FIDELITY_COLUMNS)

    def result(
        self,
        estimator: str | None = None,
        behavior: str | None = None,
        method: str | None = None,
        alpha: float | None = None,
    ) -> dict[str, Any]:
        return _choose(
            list(self.data.get("results") or []),
            "LDS result",
            lambda r: (
                f"{r.get('method')} {r.get('estimator')} {r.get('behavior')} alpha={r.get('alpha')}"
            ),
            estimator=estimator,
            behavior=behavior,
            method=method,
            alpha=alpha,
        )

    def plot(
        self,
        estimator: str | None = None,
        behavior: str | None = None,
        method: str | None = None,
        alpha: float | None = None,
        ax=None,
    ) -> Figure:
        """Predicted (sum of the kept players' values) against the behavior of the model
        retrained from scratch on each test subset, titled with the LDS and its intervals."""
        from diffattr.report.lds import lds_figure

        return lds_figure(self.result(estimator, behavior, method, alpha), self.seeds, ax=ax)

    def plot_fidelity(
        self, method: str | None = None, behavior: str | None = None, ax=None
    ) -> Figure:
        """The method's behavior against retraining's on each test subset."""
        from diffattr.report.lds import fidelity_figure

        f = _choose(
            list(self.data.get("fidelity") or []),
            "fidelity result",
            lambda f: f"{f.get('method')} {f.get('behavior')}",
            method=method,
            behavior=behavior,
        )
        return fidelity_figure(f, ax=ax)


CURVE_COLUMNS = {
    "method": "string",
    "behavior": "string",
    "budget_seconds": "float64",
    "subsets": "int64",
    "lds": "float64",
    "identified": "bool",
}


@dataclass
class CurveResults:
    """``compute_curve.json`` (``diffattr curve``): Shapley LDS against compute."""

    data: dict[str, Any]

    def points(self) -> list[dict[str, Any]]:
        return [p for pts in (self.data.get("curves") or {}).values() for p in pts]

    def to_pandas(self) -> pd.DataFrame:
        rows = [
            {
                "method": p["method"],
                "behavior": p["behavior"],
                "budget_seconds": _num(p["budget_seconds"]),
                "subsets": int(p["subsets"]),
                "lds": _num(p.get("lds")),
                "identified": bool(p.get("identified")),
            }
            for p in self.points()
        ]
        return _frame(rows, CURVE_COLUMNS)

    def plot(self, behavior: str | None = None, ax=None) -> Figure:
        """LDS against compute of each method for one behavior (crosses: budgets whose fit
        was not identified)."""
        from diffattr.report.curve import curve_figure

        behaviors = sorted({p["behavior"] for p in self.points()})
        chosen = _choose(
            [{"behavior": b} for b in behaviors],
            "behavior",
            lambda x: x["behavior"],
            behavior=behavior,
        )
        return curve_figure(self.data, chosen["behavior"], ax=ax)


COUNTERFACTUAL_COLUMNS = {
    "remove": "string",
    "estimator": "string",
    "ranked_by": "string",
    "removed": "object",
    "behavior": "string",
    "change_pct": "float64",
    "ci95_pct": "float64",
    "value": "float64",
    "seeds": "int64",
}


@dataclass
class CounterfactualResults:
    """``counterfactual-{top,bottom}.json`` (``diffattr counterfactual``): each behavior's
    relative change when retrained without the top (bottom) players of each ranking."""

    data: dict[str, Any]

    def to_pandas(self) -> pd.DataFrame:
        rows = []
        for r in self.data.get("results") or []:
            for beh, ch in (r.get("relative_change_pct") or {}).items():
                rows.append(
                    {
                        "remove": self.data.get("remove"),
                        "estimator": r["estimator"],
                        "ranked_by": r["ranked_by"],
                        "removed": list(r.get("removed") or []),
                        "behavior": beh,
                        "change_pct": _num(ch.get("mean")),
                        "ci95_pct": _num(ch.get("ci95")),
                        "value": _num(ch.get("value")),
                        "seeds": int(r.get("seeds_done") or 0),
                    }
                )
        return _frame(rows, COUNTERFACTUAL_COLUMNS)

    def plot(self, ax=None) -> Figure:
        """The relative change of each behavior, with t-intervals over seeds."""
        from diffattr.report.counterfactual import change_figure

        fig = change_figure(self.data, ax=ax)
        if fig is None:
            raise DiffattrError("the counterfactual results hold no change to plot")
        return fig


# --------------------------------------------------------------------------- run directory


class RunResults:
    """A run directory opened read-only (``diffattr.open_run``): no file of the run is
    written (the store is opened in SQLite's read-only mode), so it works on a read-only
    copy and beside a run that is writing. Every property reads the file afresh; a missing or broken
    file is a one-line ``DiffattrError`` naming the command that writes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DiffattrError(f"{self.path} is not a run directory (diffattr run makes one)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def config(self) -> RunConfig:
        """The run's configuration (``config.toml``)."""
        from diffattr.evaluate.common import load_run_config

        return load_run_config(self.path)

    def status(self) -> dict[str, dict[str, int]]:
        """Job kind -> {'done', 'failed', 'pending'} counts (``diffattr status``)."""
        from diffattr.runner.status import status_counts

        return status_counts(self.path)

    @property
    def summary(self) -> dict[str, Any] | None:
        """``summary.json``: time per stage, jobs, failures (None before the first run)."""
        from diffattr.report.inputs import read_json

        return read_json(self.path / "summary.json")

    @property
    def values(self) -> Attributions:
        """The run's attributions (``values.json``)."""
        from diffattr.runner.values import read_values

        return Attributions.from_values(read_values(self.path), self.path / "values.json")

    @property
    def lds_results(self) -> LDSResults:
        """``lds.json`` (``diffattr lds``): every method and estimator evaluated so far."""
        return LDSResults(self._json("lds.json"))

    @property
    def curve_results(self) -> CurveResults:
        """``compute_curve.json`` (``diffattr curve``)."""
        return CurveResults(self._json("compute_curve.json"))

    def counterfactual_results(self, remove: str = "top") -> CounterfactualResults:
        """``counterfactual-{remove}.json`` (``diffattr counterfactual --remove``)."""
        if remove not in ("top", "bottom"):
            raise DiffattrError("remove must be 'top' or 'bottom'")
        return CounterfactualResults(self._json(f"counterfactual-{remove}.json"))

    def _json(self, name: str) -> dict[str, Any]:
        from diffattr.report.inputs import read_json

        return read_json(self.path / name, required=True)

    def plot_samples(self) -> Figure:
        """Samples of the null model, the full model and the method on all players, side
        by side (the grids their jobs wrote)."""
        from diffattr.report.inputs import load_inputs
        from diffattr.report.samples import find_references, samples_figure

        return samples_figure(find_references(load_inputs(self.path)))

    def report(self, out: str | Path | None = None) -> Path:
        """Write the self-contained HTML report (``diffattr report``; default
        ``RUN_DIR/report.html``) and return its path."""
        from diffattr.cli import check_report_inputs
        from diffattr.report import write_report

        check_report_inputs(self.path)
        return write_report(self.path, out)
