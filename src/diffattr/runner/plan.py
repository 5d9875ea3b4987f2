"""The run plan: everything a run will do, resolved and checked before any training.

``check_config(cfg)`` runs the cheap checks (paths, device, full model, estimators'
identifiability) that need no data; ``make_plan(cfg, run_dir)`` also loads the players and
counts the jobs each estimator's sampler asks for. ``diffattr run`` prints the plan and
``diffattr run --dry-run`` stops there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffattr.config import RunConfig
from diffattr.errors import DiffattrError


def check_device(device: str) -> None:
    """A device this machine has, or a one-line error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DiffattrError(
            f"device: {device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffattrError(
                f"device: {device!r} asked for, but this torch build or machine has no CUDA "
                "(install a CUDA build of torch, or use --device cpu)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DiffattrError(
                f"device: {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DiffattrError("device: 'mps' asked for, but this machine has no MPS backend")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DiffattrError(f"device: {device!r} is not supported (cpu, cuda, mps)")


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
        if not (p / "diffattr.json").is_file():
            raise DiffattrError(
                f"attribution.full_model: {fm} is not a diffattr model directory "
                "(diffattr.json missing)"
            )
    check_device(cfg.device)
    from diffattr.behaviors.settings import check_settings

    check_settings(cfg.behaviors, cfg.data.dataset_name(), cfg.data.has_semantic_labels())


def behavior_keys(cfg: RunConfig) -> list[str]:
    from diffattr.behaviors.settings import suite_keys

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

    def render(self) -> str:
        c = self.cfg
        lines = [
            f"run directory: {self.run_dir}",
            f"data: {c.data.name} ({self.n_images} images), {self.n_players} "
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


def make_plan(cfg: RunConfig, run_dir: str | Path) -> PlanSummary:
    """Resolve the run: load the players, draw every estimator's coalitions, count the
    jobs; raise a one-line error for anything that would fail later."""
    from diffattr.data import Players, load_dataset

    check_config(cfg)
    dataset = load_dataset(cfg.data)
    players = Players.from_dataset(dataset, cfg.data.players)
    n = len(players)
    if n < 2:
        raise DiffattrError(
            f"the data have {n} {cfg.data.players}; attribution needs at least 2 players"
        )
    family = cfg.family.build("cpu")
    family.check_data(dataset)
    if cfg.attribution.full_model:
        family.check_model(cfg.attribution.full_model, dataset)
    masks: set[str] = set()
    ests = []
    a = cfg.attribution
    for i, est in enumerate(a.estimators):
        if not est.uses_coalitions:
            ests.append(EstimatorPlan(est.name, "the full model (no coalitions)", 0))
            continue
        rows, _ = est.draw(n, a.subsets, a.seed, where=f"attribution.estimators[{i}]")
        masks |= {"".join("1" if b else "0" for b in r) for r in rows}
        ests.append(EstimatorPlan(est.name, est.sampler.name, len(rows)))
    masks.discard("0" * n)  # the null model's job
    masks.discard("1" * n)  # the method's all-players job (a reference)
    notes = []
    if a.until_stderr is not None:
        notes.append(
            f"adaptive stopping: rounds of {a.round_subsets or a.subsets} more coalitions until "
            f"every standard error is below {a.until_stderr}, at most {a.max_subsets}"
        )
    if len(dataset) < 20:
        raise DiffattrError(
            f"the data have {len(dataset)} images; the behaviors' reference statistics need "
            "at least 20"
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
    )
