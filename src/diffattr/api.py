"""The Python API: what ``diffattr run / lds / counterfactual / curve / report / estimate``
do, from a notebook or a script, with the CLI's settings, checks and one-line errors.

::

    import diffattr

    run = diffattr.Run.create("runs/digits", preset="quick", estimators=["shapley", "datamodel"])
    print(run.plan().render())          # what it will do; nothing is trained
    values = run.attribute()            # resumable, like `diffattr run`
    values.to_pandas()                  # player, behavior, estimator, value, stderr, ...
    values.plot(estimator="shapley", behavior="fid")
    run.lds(quick=True).plot()          # LDS against retraining (`diffattr lds --quick`)

    diffattr.open_run("runs/digits").values          # an existing run, read-only
    diffattr.estimate(df, estimator="shapley")       # estimators on your own table

A run is built from a config -- a TOML file, the same as a dict, or keyword arguments
named like the CLI's flags -- through ``diffattr.config.build_config`` and checked by the
run plan (``diffattr.runner.plan``) the CLI uses, so every misspelled key, impossible
setting and broken input is the same one-line ``DiffattrError``. Data and models may also
be Python objects (a ``datasets.Dataset``; a ``DDPMPipeline``, ``LDMPipeline`` or
``StableDiffusionPipeline``): they are saved once into the run directory
(``diffattr.given``) and the config names that copy, so resumed runs and workers read the
same files.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.errors import DiffattrError, DiffattrWarning
from diffattr.results import (
    Attributions,
    CounterfactualResults,
    CurveResults,
    LDSResults,
    RunResults,
)

if TYPE_CHECKING:
    import pandas as pd

    from diffattr.config import RunConfig
    from diffattr.estimators import CoalitionTable
    from diffattr.runner.plan import PlanSummary
    from diffattr.store import JobRecord

__all__ = ["JobProgress", "Run", "estimate", "open_run"]


@dataclass(frozen=True)
class JobProgress:
    """One finished job, as passed to ``Run.attribute(progress=callback)``: the phase
    (``reference models``, ``sft jobs``, a stopping round), how many of its jobs are done
    and to do, and the job's store record (``status``, ``behaviors``, timings)."""

    phase: str
    done: int
    total: int
    record: JobRecord

    @property
    def failed(self) -> bool:
        return self.record.status != "done"


Progress = bool | Callable[[JobProgress], Any]


def open_run(path: str | Path) -> RunResults:
    """An existing run directory, read-only: config, status, values, evaluations, figures
    and the report (see ``diffattr.results.RunResults``)."""
    return RunResults(path)


def _layout_name(path: Path) -> str | None:
    """The ``[data]`` name a data path's layout implies (None: leave it to the config)."""
    if path.is_file():
        meta = path.name in ("metadata.csv", "metadata.jsonl") or path.suffix == ".jsonl"
        return "imagefolder" if meta else "folder"
    if (path / "metadata.csv").is_file() or (path / "metadata.jsonl").is_file():
        return "imagefolder"
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        return "hf-dataset"
    if path.is_dir():
        return "folder"
    return None


class Run(RunResults):
    """A run directory and the configuration that fills it.

    Make one with :meth:`create`; :meth:`plan` resolves and checks what it will do,
    :meth:`attribute` does it (resumable) and returns the values; :meth:`lds`,
    :meth:`counterfactual`, :meth:`curve` and :meth:`report` are the evaluations. The
    read-only views (``values``, ``status()``, ``plot_samples()``, ...) are
    :class:`diffattr.results.RunResults`'.
    """

    def __init__(self, cfg: RunConfig, path: str | Path, lost: DiffattrError | None = None):
        self.path = Path(path)
        self.cfg = cfg
        self._lost = lost  # a run directory that holds a run but lost its config.toml

    @property
    def config(self) -> RunConfig:
        """The configuration this run is made with (``config.toml`` once it has run)."""
        return self.cfg

    @classmethod
    def create(
        cls,
        out: str | Path,
        config: str | Path | dict[str, Any] | None = None,
        *,
        preset: str | None = None,
        dataset: str | None = None,
        data: Any = None,
        players: str | None = None,
        method: str | None = None,
        estimators: str | Sequence[str | dict[str, Any]] | None = None,
        subsets: int | None = None,
        executor: str | None = None,
        workers: int | None = None,
        full_model: Any = None,
        device: str | None = None,
        until_stderr: float | dict[str, float] | None = None,
        max_subsets: int | None = None,
        strict: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> Run:
        """A run in ``out`` (``diffattr run CONFIG --out OUT`` and its flags).

        Args:
            out: the run directory (new, or an existing run's: it goes on from its files).
            config: a TOML file, or its content as a dict (``{"method": {"name": "ft"}}``);
                with neither a config nor a preset, an existing run directory's own
                ``config.toml`` is used.
            preset: ``default``, ``quick``, ``paper``, ... (a config's keys win over it).
            dataset, players, method, estimators, subsets, executor, workers, device,
            until_stderr, max_subsets, strict: the CLI's flags of the same names.
            data: a local path (``--data``; a folder, CSV, imagefolder or ``save_to_disk``
                folder, whose layout names the dataset when neither ``dataset`` nor the
                config does) or a ``datasets.Dataset`` (saved into ``out/data-given``).
            full_model: a model directory (``--full-model``) or a diffusers pipeline: a
                ``DDPMPipeline`` / ``LDMPipeline`` (saved into ``out/full-given``; an LDM's
                own autoencoder, UNet layout and schedule become the latent family's
                unless the family is configured), or a ``StableDiffusionPipeline`` without
                LoRA (saved into ``out/base-given``: the text-to-image family's base, whose
                LoRA the run trains and attributes).
            settings: any other setting as dotted keys (``--set``), e.g.
                ``{"method.steps": 100, "data.contributor_column": "artist"}``.
        """
        from diffattr.config import build_config
        from diffattr.given import is_hf_dataset, is_pipeline
        from diffattr.runner.plan import check_run_dir, own_config

        run_dir = check_run_dir(out)
        if strict and dataset not in (None, "folder", "imagefolder"):
            raise DiffattrError("--strict applies to folder / CSV data (--dataset folder)")
        given_data = data if is_hf_dataset(data) else None
        given_model = full_model if is_pipeline(full_model) else None
        if given_data is None and data is not None and not isinstance(data, str | os.PathLike):
            raise DiffattrError(
                f"data: give a local path or a datasets.Dataset, not a {type(data).__name__}"
            )
        if given_model is None and full_model is not None:
            if not isinstance(full_model, str | os.PathLike):
                raise DiffattrError(
                    "full_model: give a model directory or a diffusers pipeline, not a "
                    f"{type(full_model).__name__}"
                )
        flags: dict[str, Any] = {
            "data.name": dataset,
            "data.path": None if data is None or given_data is not None else str(data),
            "data.players": players,
            "method.name": method,
            "attribution.estimators": (
                [estimators] if isinstance(estimators, str | dict) else list(estimators)
            )
            if estimators
            else None,
            "attribution.subsets": subsets,
            "attribution.full_model": str(full_model) if full_model and not given_model else None,
            "executor.name": executor,
            "device": device,
            "attribution.until_stderr": until_stderr,
            "attribution.max_subsets": max_subsets,
        }
        if strict:
            flags["data.strict"] = True
        if workers is not None:
            flags["executor.workers"] = workers
        lost = None
        if config is None and preset is None:  # an existing run goes on with its own settings
            try:
                config = own_config(run_dir)
            except DiffattrError as e:
                lost = e
        own_keys = _config_keys(config) | set(settings or {})
        if dataset is None and data is not None and "data.name" not in own_keys:
            flags["data.name"] = (
                "hf-dataset" if given_data is not None else _layout_name(Path(data))
            )
        if given_data is not None:
            if flags["data.name"] not in (None, "hf-dataset"):
                raise DiffattrError(
                    f"data: a datasets.Dataset is read as dataset 'hf-dataset', not "
                    f"{flags['data.name']!r}"
                )
            flags["data.name"] = "hf-dataset"
        created = not run_dir.exists()
        try:
            if given_model is None and given_data is None:
                cfg = build_config(config, preset, {**flags, **(settings or {})})
                return cls(cfg, run_dir, lost)
            from diffattr.given import GIVEN_DATA, give_dataset, give_pipeline
            from diffattr.runner.lock import RunLock

            with RunLock(run_dir):  # nothing is written beside a running run
                if given_model is not None:
                    flags.update(_model_flags(give_pipeline(given_model, run_dir), own_keys))
                if given_data is not None:
                    flags["data.path"] = str(run_dir / GIVEN_DATA)
                cfg = build_config(config, preset, {**flags, **(settings or {})})
                if given_data is not None:
                    give_dataset(given_data, run_dir, cfg.data)
            return cls(cfg, run_dir, lost)
        except BaseException:
            if created and run_dir.exists():  # refused: leave no run directory behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ plan and run

    def plan(self) -> PlanSummary:
        """The resolved plan (players, method, each estimator's coalitions, jobs), checked
        as ``diffattr run --dry-run`` checks it; ``.render()`` prints it. Trains nothing."""
        from diffattr.runner.plan import make_plan

        if self._lost is not None:
            raise self._lost
        return make_plan(self.cfg, self.path)

    def attribute(self, progress: Progress = True) -> Attributions:
        """Run the method (``diffattr run``): resumable, one writer per run directory.

        ``progress``: True shows tqdm bars (``tqdm.auto``: widgets in a notebook), False
        nothing, a callable receives a :class:`JobProgress` after each job. Returns the
        values as written to ``values.csv`` / ``values.json``. Failed jobs are one
        ``DiffattrError`` (the values are only written from every planned job); an
        estimator that could not be fitted is a ``DiffattrWarning`` beside the others'
        values."""
        from diffattr.runner.lock import RunLock
        from diffattr.runner.plan import make_plan
        from diffattr.runner.run import Run as Runner

        created = not self.path.exists()
        try:
            with RunLock(self.path):
                if self._lost is not None:
                    raise self._lost
                plan = make_plan(self.cfg, self.path)  # resolved once, executed below
                with Runner(
                    self.cfg, self.path, progress=progress is True, resolution=plan.resolution
                ) as runner:
                    if callable(progress):
                        runner.on_job = lambda phase, done, total, rec: progress(
                            JobProgress(phase, done, total, rec)
                        )
                    summary = runner.attribute()
        except DiffattrError:
            if created:  # refused before any work: leave no empty run directory behind
                try:
                    self.path.rmdir()
                except OSError:
                    pass
            raise
        if summary.failed:
            raise DiffattrError(
                f"{summary.failed} job(s) failed; first: {summary.first_error}; values.csv not "
                f"written (it needs every planned job); rerun to redo the failed jobs, see "
                f"diffattr status {self.path}"
            )
        for err in summary.errors:
            warnings.warn(f"estimator not fitted: {err}", DiffattrWarning, stacklevel=2)
        if not summary.values_written:
            raise DiffattrError(
                "no values written: "
                + (summary.errors[0] if summary.errors else "no estimator was fitted")
            )
        return self.values

    # ------------------------------------------------------------------ evaluations

    def lds(
        self,
        *,
        quick: bool = False,
        alphas: Sequence[float] | None = None,
        test_subsets: int | None = None,
        seeds: int | None = None,
        methods: Sequence[str] | None = None,
        estimators: Sequence[str] | None = None,
        subsets: int | None = None,
        fidelity: bool = True,
        executor: str | None = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> LDSResults:
        """LDS against models retrained from scratch (``diffattr lds``), merged into
        ``lds.json``; retrained models are kept in the store and never trained twice."""
        from diffattr.evaluate.lds import LDSProtocol, run_lds

        if subsets is not None and subsets < 1:
            raise DiffattrError(f"--subsets must be at least 1, got {subsets}")
        protocol = LDSProtocol.from_options(list(alphas or []) or None, test_subsets, seeds, quick)
        overrides = _executor_overrides(executor, workers)
        if subsets is not None:
            overrides["attribution.subsets"] = subsets
        res = run_lds(
            self.path,
            protocol,
            methods=list(methods) if methods else None,
            estimators=list(estimators) if estimators else None,
            with_fidelity=fidelity,
            overrides=overrides,
            progress=progress,
        )
        if res.failed_jobs:
            warnings.warn(
                f"{res.failed_jobs} job(s) failed; see diffattr status {self.path}",
                DiffattrWarning,
                stacklevel=2,
            )
        for err in res.estimator_errors:
            warnings.warn(f"not fitted: {err}", DiffattrWarning, stacklevel=2)
        return self.lds_results

    def counterfactual(
        self,
        remove: str = "top",
        fraction: float = 0.4,
        seeds: int = 3,
        *,
        estimators: Sequence[str] | None = None,
        ranked_by: Sequence[str] | None = None,
        executor: str | None = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> CounterfactualResults:
        """Retrain without the top (bottom) ``fraction`` of each ranking's players
        (``diffattr counterfactual``)."""
        from diffattr.evaluate.counterfactual import run_counterfactual

        res = run_counterfactual(
            self.path,
            remove,
            fraction,
            seeds,
            _executor_overrides(executor, workers),
            progress=progress,
            estimators=list(estimators) if estimators else None,
            ranked_by=list(ranked_by) if ranked_by else None,
        )
        if res.failed_jobs:
            warnings.warn(
                f"{res.failed_jobs} retraining job(s) failed; see diffattr status {self.path}",
                DiffattrWarning,
                stacklevel=2,
            )
        return CounterfactualResults(res.to_dict())

    def curve(
        self,
        methods: Sequence[str] | None = None,
        budgets: int = 5,
        *,
        retrain_subsets: int | None = None,
        test_subsets: int | None = None,
        seeds: int | None = None,
        progress: bool = True,
    ) -> CurveResults:
        """Shapley LDS against compute for each method (``diffattr curve``)."""
        from diffattr.evaluate.budget import compute_curve

        res = compute_curve(
            self.path,
            list(methods) if methods else None,
            budgets,
            retrain_subsets,
            test_subsets,
            seeds,
            progress=progress,
        )
        return CurveResults(res.to_dict())


def _config_keys(config: str | Path | dict[str, Any] | None) -> set[str]:
    """Dotted keys a config (file or dict) sets at its first two levels (``data.name``)."""
    from diffattr.config import read_toml

    if config is None:
        return set()
    layer = config if isinstance(config, dict) else read_toml(config)
    keys = set()
    for k, v in layer.items():
        keys.add(k)
        if isinstance(v, dict):
            keys |= {f"{k}.{kk}" for kk in v}
    return keys


def _model_flags(given: tuple[str, Path], own_keys: set[str]) -> dict[str, Any]:
    """The settings a saved pipeline implies: the full model (and, for an LDM, the latent
    family of its own autoencoder and schedule unless the family is configured), or the
    text-to-image family's base."""
    from diffattr.families.settings import family_for_dir

    kind, path = given
    configured = any(k == "family" or k.startswith("family.") for k in own_keys)
    if kind == "StableDiffusionPipeline":
        flags: dict[str, Any] = {"family.base": str(path)}
        if "family.name" not in own_keys:
            flags["family.name"] = "text-to-image"
        return flags
    flags = {"attribution.full_model": str(path)}
    if kind == "LDMPipeline" and not configured:
        family = family_for_dir(path)
        if family is not None:
            flags["family"] = family.to_dict()
    return flags


def _executor_overrides(executor: str | None, workers: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"executor.name": executor}
    if workers is not None:
        out["executor.workers"] = workers
    return out


# --------------------------------------------------------------------------- estimate


def estimate(
    table: pd.DataFrame | np.ndarray | CoalitionTable | str | Path,
    estimator: str = "shapley",
    *,
    values: Any = None,
    names: Sequence[str] | None = None,
    behaviors: Sequence[str] | None = None,
    pair_ids: Any = None,
    sampler: str | None = None,
    v0: float | Sequence[float] | None = None,
    v1: float | Sequence[float] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    **options: Any,
) -> Attributions:
    """Fit an estimator on a table of evaluated coalitions (``diffattr estimate``).

    ``table`` is a pandas DataFrame laid out as ``diffattr estimate``'s CSV (one 0/1 column
    per player, a ``value`` column or ``value:<behavior>`` columns, optionally
    ``pair_id``), that CSV's path, a ``CoalitionTable``, or the masks as an ``(M, n)`` 0/1
    array with ``values`` (``(M,)`` or ``(M, K)``), ``names``, ``behaviors`` and
    ``pair_ids``. All-0 / all-1 rows give v0 / v1 unless ``v0`` / ``v1`` are given.
    ``options`` are the estimator's settings (``-O KEY=VALUE``, e.g. ``ridge=0.1``).
    Returns the values with standard errors (``bootstrap`` resamples where > 0)."""
    from diffattr.estimators import CoalitionTable
    from diffattr.estimators.reliability import advice, assess
    from diffattr.estimators.settings import ESTIMATORS, estimator_settings

    options = dict(options)
    if sampler is not None:
        options["sampler"] = sampler
    options.setdefault("n_bootstrap", bootstrap)
    options.setdefault("seed", seed)
    if estimator not in ESTIMATORS:
        _unknown_estimator(estimator)
    settings = estimator_settings(estimator, **options)
    if isinstance(table, CoalitionTable):
        tbl = table
    elif isinstance(table, str | os.PathLike):
        from diffattr.estimators.table import read_table_csv
        from diffattr.fileio import check_utf8_file

        check_utf8_file(Path(table))
        tbl = read_table_csv(table, v0=v0, v1=v1)
    elif type(table).__module__.split(".")[0] == "pandas":
        tbl = table_from_frame(table, v0=v0, v1=v1)
    else:
        if values is None:
            raise DiffattrError("estimate: give the values of the masks' rows (values=...)")
        tbl = CoalitionTable.from_arrays(
            table, values, v0=v0, v1=v1, names=names, behaviors=behaviors, pair_ids=pair_ids
        )
    scalar = [x for x in (v0, v1) if x is not None and np.ndim(x) == 0]
    if tbl.n_behaviors > 1 and scalar:
        raise DiffattrError(
            f"--v0/--v1 give one number but the table has {tbl.n_behaviors} behaviors; put "
            "all-0/all-1 rows in the table instead"
        )
    atts = settings.build().fit(tbl)
    atts = atts if isinstance(atts, list) else [atts]
    for att, rel in zip(atts, assess(settings, tbl, atts)):
        att.settings["reliability"] = rel.to_dict()
        line = advice(estimator, att.behavior, att.settings["reliability"])
        if line:
            warnings.warn(line, DiffattrWarning, stacklevel=2)
    e0, _ = tbl.endpoint("v0")
    e1, _ = tbl.endpoint("v1")
    keys = [a.behavior or "value" for a in atts]
    return Attributions(
        atts,
        v0={} if e0 is None else dict(zip(keys, map(float, e0))),
        v1={} if e1 is None else dict(zip(keys, map(float, e1))),
        source=Path(table) if isinstance(table, str | os.PathLike) else None,
    )


def _unknown_estimator(name: str) -> None:
    """The one-line "unknown estimator" error, choosing among the estimators that fit
    tables; a baseline's name is told apart (it scores a trained model, not a table)."""
    import difflib

    from diffattr.baselines.settings import BASELINES
    from diffattr.estimators.settings import ESTIMATORS

    if isinstance(name, str) and name in BASELINES:
        raise DiffattrError(
            f"{name!r} is a baseline: it scores a trained model, not a table of coalitions "
            "(name it in a run's [attribution] estimators)"
        )
    names = ESTIMATORS.names()
    hint = difflib.get_close_matches(str(name), names, n=1)
    msg = f"unknown {ESTIMATORS.kind} {name!r}"
    if hint:
        msg += f" (did you mean {hint[0]!r}?)"
    raise DiffattrError(f"{msg}; choose one of: {', '.join(names)}")


def table_from_frame(
    df: pd.DataFrame, v0: Any = None, v1: Any = None, where: str = "table"
) -> CoalitionTable:
    """A coalition table from a DataFrame in ``diffattr estimate``'s layout: the CSV's
    checks, with rows named by the frame's index."""
    from diffattr.estimators import CoalitionTable
    from diffattr.estimators.table import PAIR_COLUMN

    header = [str(c).strip() for c in df.columns]
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup is not None:
        raise DiffattrError(f"{where}: column {dup!r} appears more than once")
    value_cols = [h for h in header if h == "value" or h.startswith("value:")]
    players = [h for h in header if h not in value_cols and h != PAIR_COLUMN]
    if not value_cols:
        raise DiffattrError(f"{where} has no 'value' column (or 'value:<behavior>' columns)")
    if not players:
        raise DiffattrError(f"{where} has no player columns")
    if any(not h for h in players):
        raise DiffattrError(f"{where} has a player column without a name")
    if len(df) == 0:
        raise DiffattrError(f"{where} has a header but no rows")
    frame = df.set_axis(header, axis=1)
    masks = np.zeros((len(df), len(players)), dtype=bool)
    for c, name in enumerate(players):
        col = frame[name]
        num = _numbers(col)
        bad = ~np.isin(num, (0.0, 1.0))
        if bad.any():
            row = col.index[int(np.argmax(bad))]
            raise DiffattrError(
                f"{where} row {_shown(row)}, player column {name!r}: expected 0 or 1, got "
                f"{_shown(col.loc[row])}"
            )
        masks[:, c] = num == 1.0
    vals = np.zeros((len(df), len(value_cols)))
    for c, name in enumerate(value_cols):
        col = frame[name]
        num = _numbers(col)
        bad = ~np.isfinite(num)
        if bad.any():
            row = col.index[int(np.argmax(bad))]
            what = "is not a number" if np.isnan(num[int(np.argmax(bad))]) else "is not finite"
            raise DiffattrError(
                f"{where} row {_shown(row)}, column {name!r}: value {_shown(col.loc[row])} {what}"
            )
        vals[:, c] = num
    pairs = None
    if PAIR_COLUMN in header:
        col = frame[PAIR_COLUMN]
        num = _numbers(col)
        bad = ~(np.isfinite(num) & (num >= 0) & (num == np.round(num)))
        if bad.any():
            row = col.index[int(np.argmax(bad))]
            raise DiffattrError(
                f"{where} row {_shown(row)}, column {PAIR_COLUMN!r}: expected an integer >= 0, got "
                f"{_shown(col.loc[row])}"
            )
        pairs = num.astype(np.int64)
    behaviors = [None if h == "value" else h[len("value:") :] for h in value_cols]
    return CoalitionTable(masks, vals, players, behaviors, v0, v1, pairs)


def _shown(x: Any) -> str:
    """A cell or row label as written in a message (``'x'`` for text, ``2`` for numbers)."""
    x = x.item() if isinstance(x, np.generic) else x
    return repr(x) if isinstance(x, str) else str(x)


def _numbers(col: pd.Series) -> np.ndarray:
    """A column as floats (NaN where a cell is not a number)."""
    import pandas as pd

    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
