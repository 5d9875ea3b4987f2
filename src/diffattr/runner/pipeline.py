"""``diffattr run``: the whole method as one resumable command.

Stages (each skips what is already on disk or in the store):
1. full model theta* (train or load) and the null model; their behaviors v1 and v0;
2. the counterfactual method's shared preparation (e.g. prune + fine-tune on all data);
3. coalitions from each estimator's sampler -> one job per distinct mask;
4. estimators read the store and write values.csv / values.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diffattr.config import RunConfig
from diffattr.data import Players, dataset_key, load_dataset
from diffattr.errors import DiffattrError
from diffattr.runner.executors import make_executor
from diffattr.runner.job import JobContext, JobSpec
from diffattr.store import JobRecord, Store, job_key, mask_to_str

PRESETS: dict[str, dict[str, Any]] = {
    # The embedded default: digits, 10 class contributors, sFT, paired-kernel Shapley,
    # FID and IS; sized to finish in about 12 minutes on a 2-core CPU (500 images with 25
    # DDIM steps per model instead of the paper's 100 steps: 1.6 s of a 13 s job).
    "default": {
        "sample.num_samples": 500,
        "sample.ddim_steps": 25,
        "attribution.subsets": 32,
        "attribution.method_settings": {
            "sft": {"finetune_steps": 500, "steps": 200},
            "ft": {"steps": 200},
            "lora": {"steps": 200},
        },
    },
    # A small version for first tries and tests: a few minutes on a 2-core CPU.
    "quick": {
        "train.steps": 800,
        "train.batch_size": 64,
        "train.checkpoint_every": 400,
        "sample.num_samples": 256,
        "sample.ddim_steps": 20,
        "sample.batch_size": 256,
        "attribution.subsets": 24,
        "attribution.method_settings": {
            "sft": {"finetune_steps": 200, "steps": 50},
            "ft": {"steps": 50},
            "lora": {"steps": 50},
        },
    },
    # The paper's sampling protocol (100 DDIM steps, 1,000 images per model).
    "paper": {
        "sample.num_samples": 1000,
        "sample.ddim_steps": 100,
        "attribution.subsets": 100,
        "attribution.method_settings": {"sft": {"finetune_steps": 1000, "steps": 200}},
    },
}


def apply_preset(cfg: RunConfig, preset: str | None) -> RunConfig:
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise DiffattrError(f"unknown run preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return cfg.with_overrides(**PRESETS[preset])


def build_config(config: Path | None, preset: str | None) -> RunConfig:
    """A run's config: the preset (``default`` unless named), then the config file's keys
    on top of it (a key the file sets wins over the preset), then CLI flags (by caller)."""
    import tomllib

    base = apply_preset(RunConfig(), preset or "default").model_dump(mode="json")
    if config is not None:
        RunConfig.from_toml(config)  # validates, with a clear error for a bad file
        _deep_merge(base, tomllib.loads(Path(config).read_text()))
    return RunConfig.from_dict(base, source=str(config or "preset"))


def _deep_merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = v


PER_JOB_SETTINGS = frozenset({"steps", "lr", "ema", "ema_decay"})


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class RunState:
    """Everything the driver knows about a run directory after stage 1 and 2."""

    cfg: RunConfig
    run_dir: Path
    players: Players
    ctx: JobContext
    base_id: str
    timings: dict[str, float] = field(default_factory=dict)

    def key(self, mask: str, method: str, settings: dict, seed: int, kind: str) -> str:
        return job_key(
            base=self.base_id,
            method=method,
            settings=settings,
            mask=mask,
            seed=seed,
            sample=self.cfg.sample.model_dump(),
            behaviors=sorted(self.cfg.behaviors.names),
            data=dataset_key(self.cfg.data),
            kind="reference" if kind == "reference" else "model",
        )

    def spec(
        self, mask: np.ndarray | str, method: str, settings: dict, seed: int, kind: str, **extra
    ) -> JobSpec:
        m = mask if isinstance(mask, str) else mask_to_str(mask)
        return JobSpec(
            key=self.key(m, method, settings, seed, kind),
            kind=kind,
            mask=m,
            method=method,
            settings=settings,
            seed=seed,
            extra=extra,
        )

    def reference_specs(self) -> list[JobSpec]:
        n = len(self.players)
        return [
            self.spec("1" * n, "full", {}, 0, "reference"),
            self.spec("0" * n, "null", {}, 0, "reference"),
        ]


def prepare_run(
    cfg: RunConfig, run_dir: str | Path, progress: bool = True, write_config: bool = True
) -> RunState:
    """Stages 1-2: dataset, full and null models, the method's shared inputs."""
    from diffattr.counterfactual import prepare_method
    from diffattr.counterfactual.base import FullModel
    from diffattr.diffusion.checkpoint import is_model_dir, load_model
    from diffattr.models import make_null_model, train_full_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if write_config:
        (run_dir / "config.toml").write_text(cfg.to_toml())
    timings: dict[str, float] = {}
    dataset = load_dataset(cfg.data)
    players = Players.from_dataset(dataset, cfg.data.players)
    t = time.perf_counter()
    if cfg.attribution.full_model:
        full_dir = Path(cfg.attribution.full_model)
        if not is_model_dir(full_dir):
            raise DiffattrError(f"full model {full_dir} is not a diffattr model directory")
        meta = load_model(full_dir).meta
        if meta.get("dataset", {}).get("size") != len(dataset):
            raise DiffattrError(f"full model {full_dir} was trained on other data than [data]")
    else:
        full_dir = train_full_model(cfg, run_dir / "full", dataset=dataset, progress=progress)
    timings["full_model"] = time.perf_counter() - t
    null_dir = make_null_model(cfg, run_dir / "null", dataset)
    a = cfg.attribution
    settings = a.settings_for()
    # Shared preparation depends on the method's settings but not on the per-job fine-tune
    # (k, lr, EMA), so runs that differ only in those share one pruned model.
    prep = {k: v for k, v in settings.items() if k not in PER_JOB_SETTINGS}
    work_dir = run_dir / "shared" / f"{a.method}-{settings_digest(prep)}"
    t = time.perf_counter()
    prepare_method(a.method, settings, full_dir, dataset, work_dir, cfg.device, progress=progress)
    timings["prepare_method"] = time.perf_counter() - t
    # The one-time cost of the shared preparation, kept beside it: evaluations that find it
    # cached still charge it to the method (compute-matched comparisons).
    cost_file = work_dir / "prepare_seconds.json"
    if cost_file.exists():
        timings["prepare_cost"] = json.loads(cost_file.read_text())["seconds"]
    else:
        timings["prepare_cost"] = timings["prepare_method"]
        if work_dir.exists():
            cost_file.write_text(json.dumps({"seconds": timings["prepare_method"]}))
    ctx = JobContext(
        full_dir=str(full_dir),
        null_dir=str(null_dir),
        work_dir=str(work_dir),
        data=cfg.data.model_dump(mode="json"),
        sample=cfg.sample.model_dump(),
        behaviors=list(cfg.behaviors.names),
        device=cfg.device,
        grids_dir=str(run_dir / "grids"),
    )
    return RunState(cfg, run_dir, players, ctx, FullModel(full_dir).digest(), timings)


def fit_specs(state: RunState) -> dict[str, list[JobSpec]]:
    """Estimator name -> the job specs of the coalitions its sampler draws."""
    from diffattr.coalitions import sampler_for_estimator

    a = state.cfg.attribution
    out = {}
    for est in a.estimators:
        sampler = sampler_for_estimator(est, len(state.players), a.seed)
        masks = sampler.sample(a.subsets if sampler.n_required is None else sampler.n_required)
        settings = a.settings_for()
        out[est] = [state.spec(m, a.method, settings, a.seed, "fit") for m in masks]
    return out


def run_jobs(
    state: RunState, specs: list[JobSpec], store: Store, desc: str, progress: bool = True
) -> tuple[int, int]:
    """Run the specs not yet done (deduplicated by key); returns (ran, failed)."""
    unique = list({s.key: s for s in specs}.values())
    done = store.done_keys(s.key for s in unique)
    todo = [s for s in unique if s.key not in done]
    if not todo:
        return 0, 0
    executor = make_executor(state.cfg.executor)
    failed = 0
    try:
        bar = tqdm(total=len(todo), desc=desc, disable=not progress, dynamic_ncols=True)
        for rec in executor.run(todo, state.ctx):
            store.put(rec)
            failed += rec.status != "done"
            bar.update(1)
            bar.set_postfix(failed=failed)
        bar.close()
    finally:
        executor.close()
    return len(todo), failed


def reference_values(state: RunState, store: Store) -> tuple[JobRecord, JobRecord]:
    full, null = (store.get(s.key) for s in state.reference_specs())
    if full is None or null is None or full.status != "done" or null.status != "done":
        raise DiffattrError("the full or null model's behaviors are missing; see diffattr status")
    return full, null


def estimate(
    state: RunState,
    store: Store,
    specs: dict[str, list[JobSpec]],
    exclude_masks: set[str] | None = None,
    limit: int | None = None,
    errors: list[str] | None = None,
) -> list:
    """Fit every configured estimator from the store; one Attribution per (estimator, behavior).

    ``exclude_masks`` drops fit rows equal to a held-out test mask (LDS protocol);
    ``limit`` uses only the first rows of each sampler's stream (compute-matched curves).
    With ``errors`` given, an estimator that cannot be fitted (e.g. too few finished jobs)
    is reported there and skipped instead of raising.
    """
    from diffattr.estimators import ESTIMATORS

    full, null = reference_values(state, store)
    behaviors = sorted(full.behaviors)
    names = list(state.players.names)
    out = []
    for est, est_specs in specs.items():
        if limit is not None:
            est_specs = est_specs[:limit]
        rows = {r.key: r for r in store.records([s.key for s in est_specs])}
        used = [s for s in est_specs if s.key in rows and s.mask not in (exclude_masks or ())]
        try:
            if not used:
                raise DiffattrError(f"no finished jobs for estimator {est!r}")
            masks = np.array([[c == "1" for c in s.mask] for s in used])
            values = np.array([[rows[s.key].behaviors[b] for b in behaviors] for s in used])
            attrs = ESTIMATORS.get(est).fit(
                masks,
                values,
                v0=[null.behaviors[b] for b in behaviors],
                v1=[full.behaviors[b] for b in behaviors],
                names=names,
                behaviors=behaviors,
            )
        except DiffattrError as e:
            if errors is None:
                raise
            errors.append(f"{est}: {e}")
            continue
        for attr in attrs:
            attr.settings = {
                **attr.settings,
                "method": state.cfg.attribution.method,
                "subsets_planned": len(est_specs),
            }
        out.extend(attrs)
    return out
