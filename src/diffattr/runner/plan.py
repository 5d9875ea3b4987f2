"""The run plan: everything a run will do, resolved and checked before any training.

``check_config(cfg)`` runs the cheap checks (paths, device, full model, estimators'
identifiability) that need no data; ``make_plan(cfg, run_dir)`` also loads the players,
checks the data against the recipe (``check_recipe``), the run directory's layout
(``check_run_dir``) and the data against what an existing run directory or full model was
made from (``check_data_unchanged``), and counts the jobs each estimator's sampler asks for.
It also verifies the model directories the run will read (``check_model_dirs``) and that
the rows each estimator will draw identify its values (``check_identified``: their rank,
not only their count). ``diffattr run`` prints the plan and ``diffattr run --dry-run``
stops there. The data part is one :class:`Resolution` (``resolve``: the dataset, players and
digest, checked, and each estimator's drawn rows), which the plan carries and ``Run``
executes (``Run(cfg, run_dir, resolution=plan.resolution)``; a ``Run`` built without one
resolves the same way on first use), so the printed rows are the rows run and the data are
loaded and hashed once. ``Run`` repeats only the run directory's checks, after it has put
back what a killed run left half-written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.fileio import check_dir_path
from diffattr.runner.batching import describe
from diffattr.torchutils import check_device

#: Folders and files of a run directory (a file where a folder belongs is refused early).
RUN_DIRS = ("full", "null", "shared", "cache", "grids", "slurm")
RUN_FILES = ("store.sqlite", "values.json", "values.csv", "summary.json", "config.toml")
#: The fewest images the behaviors' reference statistics (and the classifier feature
#: spaces' held-out split) are computed from.
MIN_IMAGES = 20


def check_config(cfg: RunConfig) -> None:
    """Checks that need no data: local paths exist, the device exists."""
    path = cfg.data.source_path()
    if path is not None and not Path(path).exists():
        raise DiffattrError(f"data.path: {path} does not exist (give a local path with --data)")
    fm = cfg.attribution.full_model
    if fm is not None:
        p = Path(fm)
        if not p.exists():
            raise DiffattrError(f"attribution.full_model: {fm} does not exist")
        if not p.is_dir():
            raise DiffattrError(f"attribution.full_model: {fm} is a file, not a model directory")
        if not (p / "diffattr.json").is_file() and not (p / "model_index.json").is_file():
            raise DiffattrError(
                f"attribution.full_model: {fm} is neither a diffattr model directory "
                "(diffattr.json) nor a diffusers pipeline directory (model_index.json, as "
                "save_pretrained writes it)"
            )
    check_device(cfg.device)
    cfg.executor.check()
    for baseline in cfg.attribution.baselines:
        baseline.check_available()  # an optional package it needs
    from diffattr.behaviors.resolve import check_settings

    check_settings(cfg.behaviors, cfg.data.dataset_name(), cfg.data.has_semantic_labels())


def behavior_keys(cfg: RunConfig) -> list[str]:
    from diffattr.behaviors.resolve import suite_keys

    return suite_keys(cfg.behaviors, cfg.data.dataset_name(), cfg.data.has_semantic_labels())


@dataclass
class EstimatorPlan:
    name: str
    sampler: str
    rows: int
    min_rows: int | None = None


@dataclass
class PlanSummary:
    cfg: RunConfig
    run_dir: Path
    n_images: int
    n_players: int
    players_unit: str
    estimators: list[EstimatorPlan]
    jobs: int  # distinct models the run trains or loads (references included)
    behavior_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    image_size: int | None = None  # what the models train on, after loading and resizing
    channels: int | None = None
    resolution: Resolution | None = field(default=None, repr=False)  # what Run executes

    def render(self) -> str:
        c = self.cfg
        shape = ""
        if self.image_size is not None and self.channels is not None:
            kind = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels}-channel")
            shape = f" of {self.image_size}x{self.image_size} {kind} ({self.channels} channel"
            shape += ")" if self.channels == 1 else "s)"
        lines = [
            f"run directory: {self.run_dir}",
            f"data: {c.data.name} ({self.n_images} images{shape}), {self.n_players} "
            f"{self.players_unit} players",
            f"family: {_short(c.family.to_dict())}",
            "full model: "
            + (
                c.attribution.full_model
                or f"train {c.train.steps} steps, batch {c.train.batch_size}"
            ),
            f"method: {_short(c.method.to_dict())}",
            f"sampling: {c.sample.num_samples} images x {c.sample.ddim_steps} DDIM steps per model",
            f"behaviors: {', '.join(self.behavior_keys)} (reference: {c.behaviors.reference})",
            f"executor: {_short(c.executor.to_dict())}; device: {c.device}",
            f"coalition models: {describe(c)}",
        ]
        for e in self.estimators:
            if e.rows:
                lines.append(f"estimator {e.name}: {e.rows} coalitions from {e.sampler}")
            else:
                lines.append(f"estimator {e.name}: scores {e.sampler}")
        lines.append(
            f"jobs: {self.jobs} models (full, null, the method on all players, coalitions)"
        )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _short(d: dict[str, Any]) -> str:
    name = d.get("name", "")
    rest = ", ".join(f"{k}={json.dumps(v)}" for k, v in d.items() if k != "name")
    return f"{name} ({rest})" if rest else name


def check_run_dir(run_dir: str | Path) -> Path:
    """A one-line error when a file stands where the run directory or one of its folders
    belongs (or a folder where one of its files belongs) -- before any work."""
    run_dir = check_dir_path(run_dir, "--out")
    for name in RUN_DIRS:
        p = run_dir / name
        if p.exists() and not p.is_dir():
            raise DiffattrError(
                f"{p} is a file where the run's {name}/ folder belongs; delete it (the run "
                "redoes that part)"
            )
    for name in RUN_FILES:
        p = run_dir / name
        if p.is_dir():
            raise DiffattrError(f"{p} is a folder where the run's {name} belongs; delete it")
    return run_dir


def check_model_dirs(
    run_dir: str | Path,
    full_model: str | Path | None,
    shared: list[Path] = (),
    reference: bool = True,
) -> None:
    """Every model directory a run will read, verified before any work (a weights file
    missing or truncated is one line naming it): with ``reference`` the given full model,
    else the run's ``full/``, and ``null/``; and each method's shared work in ``shared``
    (``shared/<method>-<digest>/``: its pruned models). A damaged model the run made is
    deleted and redone; a damaged ``--full-model`` must be restored by its owner."""
    from diffattr.diffusion.checkpoint import META, verify_model_files

    run_dir = Path(run_dir)
    if reference and full_model is not None:
        verify_model_files(
            full_model, fix="restore it or train another (diffattr train) and pass that one"
        )
    elif reference and (run_dir / "full" / META).is_file():
        verify_model_files(run_dir / "full")
    if reference and (run_dir / "null" / META).is_file():
        verify_model_files(run_dir / "null")
    for work in shared:
        if not Path(work).is_dir():
            continue
        for d in sorted(Path(work).iterdir()):
            # dot folders are temporary siblings of a killed writer (recover_folder's)
            if d.is_dir() and not d.name.startswith(".") and (d / META).is_file():
                verify_model_files(d, fix=f"delete {work} to redo it (the run re-prepares it)")


def own_config(run_dir: str | Path) -> Path | None:
    """The config a run directory was made with (``RUN_DIR/config.toml``), for a command
    given no config: None for a new directory; a one-line error for a directory that holds
    a run (a store or a full model) but no config.toml -- the built-in defaults would only
    be refused later as "the data changed"."""
    from diffattr.store import Store

    run_dir = Path(run_dir)
    own = run_dir / "config.toml"
    if own.is_file():
        return own
    store = run_dir / "store.sqlite"
    if store.is_file():
        with Store(store, readonly=True) as s:  # a broken store is its own one line
            s.get_meta("data_digest")
    if store.is_file() or (run_dir / "full" / "diffattr.json").is_file():
        raise DiffattrError(
            f"no config given and {run_dir} holds a run without its config.toml; pass the "
            f"config it was made with (diffattr run CONFIG --out {run_dir}) or use a new --out"
        )
    return None


def check_identified(cfg: RunConfig, n_players: int) -> None:
    """The rows each coalition estimator will draw identify its values -- their rank, not
    only their count (``runner.identify``; adaptive stopping: at ``max_subsets``, the most
    it may draw). A one-line error saying which M does, before any training."""
    from diffattr.runner.identify import require_identified

    a = cfg.attribution
    subsets = a.max_subsets if a.until_stderr is not None else a.subsets
    for est in a.fitted:
        where = a.where(est)

        def fix(m: int, est=est, where=where) -> str:
            if est.subsets is not None:
                return f"set {where}.subsets = {m}"
            if a.until_stderr is not None:
                return f"pass --max-subsets {m}"
            return f"pass --subsets {m}"

        require_identified(est, n_players, subsets, a.seed, what=where, fix=fix)


def check_recipe(cfg: RunConfig, dataset, players) -> None:
    """The data can carry the recipe: at least 2 players and ``MIN_IMAGES`` images."""
    n = len(players)
    if n < 2:
        raise DiffattrError(
            f"the data have {n} {cfg.data.players}; attribution needs at least 2 players"
            + (" (give each contributor a subfolder or a CSV row)" if n == 1 else "")
        )
    if len(dataset) < MIN_IMAGES:
        raise DiffattrError(
            f"the data have {len(dataset)} images; the behaviors' reference statistics and the "
            f"classifier's held-out split need at least {MIN_IMAGES}"
        )


def check_data_unchanged(
    run_dir: str | Path, digest: str, full_model: str | Path | None = None
) -> None:
    """The data must be those an existing run directory (its store, its full model) and a
    given full model were made from: a one-line error otherwise (never old numbers)."""
    from diffattr.diffusion.checkpoint import meta_value
    from diffattr.store import Store

    run_dir = Path(run_dir)
    fix = f"use a new --out or delete {run_dir}"
    store = run_dir / "store.sqlite"
    if store.is_file():
        with Store(store, readonly=True) as s:
            old = s.get_meta("data_digest")
        if old is not None and old != digest:
            raise DiffattrError(
                f"the data changed since this run was made (dataset digest {old}, now "
                f"{digest}); {fix}"
            )
    full = run_dir / "full"
    old = meta_value(full, "dataset", "digest") if full.is_dir() else None
    if old is not None and old != digest:
        raise DiffattrError(
            f"the data changed since this run was made ({full} was trained on dataset "
            f"{old}, the data now are {digest}); {fix}"
        )
    if full_model is not None:
        old = meta_value(full_model, "dataset", "digest")
        if old is not None and old != digest:
            raise DiffattrError(
                f"full model {full_model} was trained on other data (dataset digest {old}, the "
                f"data now are {digest}); retrain it on these data (diffattr train) or restore "
                "the data it was trained on"
            )


@dataclass
class Resolution:
    """A run resolved once: its data, players and their content digest (after the checks
    that need them: the recipe, the family's data and model, the method's players), and
    each coalition estimator's rows at the run's M, drawn on first use. ``make_plan``
    renders it, ``Run`` executes it (``Run(..., resolution=plan.resolution)``: the printed
    plan is the plan), so ``diffattr run`` loads and hashes the data once."""

    cfg: RunConfig
    dataset: Any
    players: Any
    digest: str
    #: the config checks and the planned rows' identifiability passed (``make_plan``)
    planned: bool = False
    _rows: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)

    @property
    def n_players(self) -> int:
        return len(self.players)

    def rows(self, est) -> tuple[Any, Any]:
        """``(masks, pair_ids)`` of coalition estimator ``est`` (one of the run's) at the
        run's ``subsets``: drawn once (prefix-stable, a function of the seed)."""
        a = self.cfg.attribution
        if id(est) not in self._rows:
            self._rows[id(est)] = est.draw(self.n_players, a.subsets, a.seed, where=a.where(est))
        return self._rows[id(est)]


def resolve(cfg: RunConfig, cache_dir: Path | None = None) -> Resolution:
    """Load the run's data and players and check them against the recipe, the family, the
    method and a given full model (one-line errors, before any training); the dataset's
    digest is cached under ``cache_dir`` when that folder exists (nothing is created)."""
    from diffattr.data import Players, load_dataset
    from diffattr.data.digest import dataset_digest

    dataset = load_dataset(cfg.data)
    players = Players.from_dataset(dataset, cfg.data.players)
    check_recipe(cfg, dataset, players)
    family = cfg.family.build("cpu")  # its checks read settings and data, never weights
    family.check_data(dataset)
    cfg.method.check_players(family, dataset, players)
    if cfg.attribution.full_model:
        family.check_model(cfg.attribution.full_model, dataset)
    cache = cache_dir if cache_dir is not None and Path(cache_dir).is_dir() else None
    return Resolution(cfg, dataset, players, dataset_digest(dataset, cache))


def make_plan(cfg: RunConfig, run_dir: str | Path) -> PlanSummary:
    """Resolve the run: load the players, draw every estimator's coalitions, count the
    jobs; raise a one-line error for anything that would fail later (all before any
    training, and without writing anything). The plan carries its ``resolution`` for the
    run to execute."""
    check_config(cfg)
    run_dir = check_run_dir(run_dir)
    res = resolve(cfg, run_dir / "cache")
    dataset, n, digest = res.dataset, res.n_players, res.digest
    check_data_unchanged(run_dir, digest, cfg.attribution.full_model)
    from diffattr.runner.layout import shared_work_dir

    shared = [shared_work_dir(run_dir, cfg.method, digest)]
    check_model_dirs(run_dir, cfg.attribution.full_model, shared)
    masks: set[str] = set()
    a = cfg.attribution
    by_entry: dict[int, EstimatorPlan] = {}
    for est in a.fitted:
        rows, _ = res.rows(est)
        masks |= {"".join("1" if b else "0" for b in r) for r in rows}
        by_entry[id(est)] = EstimatorPlan(est.name, est.sampler.name, len(rows))
    for baseline in a.baselines:
        by_entry[id(baseline)] = EstimatorPlan(baseline.name, "the full model (no coalitions)", 0)
    ests = [by_entry[id(e)] for e in a.estimators]  # as listed
    check_identified(cfg, n)  # the rank of those rows, not only their count
    res.planned = True  # a Run given this resolution need not check them again
    masks.discard("0" * n)  # the null model's job
    masks.discard("1" * n)  # the method's all-players job (a reference)
    notes = []
    if a.until_stderr is not None:
        notes.append(
            f"adaptive stopping: rounds of {a.round_subsets or a.subsets} more coalitions until "
            f"every standard error is below {a.until_stderr}, at most {a.max_subsets}"
        )
    return PlanSummary(
        cfg=cfg,
        run_dir=Path(run_dir),
        n_images=len(dataset),
        n_players=n,
        players_unit=cfg.data.players,
        estimators=ests,
        jobs=len(masks) + 3,
        behavior_keys=behavior_keys(cfg),
        notes=notes,
        image_size=dataset.image_size,
        channels=dataset.channels,
        resolution=res,
    )
