"""What the evaluations share: opening a run, held-out subsets, retrained targets."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.coalitions import make_sampler
from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text
from diffattr.runner.run import Prepared, Run
from diffattr.runner.tables import behavior_value
from diffattr.store import JobRecord, mask_to_str

# Test coalitions come from their own stream, never the fit samplers' seeds.
TEST_SEED_OFFSET = 1_000_003


def load_run_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise DiffattrError(f"{run_dir} is not a run directory (no config.toml; see diffattr run)")
    cfg = RunConfig.from_toml(path)
    return cfg.with_overrides(**(overrides or {})) if overrides else cfg


def open_run(
    run_dir: str | Path, overrides: dict[str, Any] | None = None, progress: bool = True
) -> Run:
    return Run(load_run_config(run_dir, overrides), run_dir, progress)


def held_out_masks(n: int, alpha: float, count: int, seed: int) -> np.ndarray:
    """``count`` distinct coalitions of the datamodel distribution (floor(alpha n) of n
    players kept, uniformly), drawn without replacement from their own seed stream; fewer
    when fewer distinct subsets of that size exist."""

    size = math.floor(alpha * n + 1e-9)
    if not 1 <= size <= n - 1:
        raise DiffattrError(
            f"alpha={alpha} keeps {size} of {n} players; test subsets need 1..{n - 1}"
        )
    available = math.comb(n, size)
    want = min(count, available)
    # i.i.d. draws de-duplicated here (the stream every earlier test set was drawn from)
    sampler = make_sampler("datamodel", n, seed + TEST_SEED_OFFSET, alpha=alpha, replace=True)
    seen: dict[str, np.ndarray] = {}
    start, block = 0, max(16, 2 * want)
    while len(seen) < want and start < 200 * max(want, 1) + 1000:
        for row in sampler.rows(start, start + block):
            seen.setdefault(mask_to_str(row), row)
            if len(seen) == want:
                break
        start += block
    return np.array(list(seen.values()), dtype=bool).reshape(-1, n)


@dataclass
class RetrainTargets:
    """F of models retrained from scratch on each test mask, for each seed."""

    masks: np.ndarray  # (B, n) the masks whose every seed finished
    records: list[list[JobRecord]]  # [seed][b]
    failed: int
    first_error: str | None

    def values(self, behavior: str) -> np.ndarray:
        """(seeds, B) behavior values (``name[space]#i``: generated image i of a local
        behavior)."""

        return np.array([[behavior_value(r, behavior) for r in row] for row in self.records])

    def seconds_per_job(self) -> float:
        return float(np.mean([r.t_total for row in self.records for r in row]))


def retrain_targets(
    run: Run, p: Prepared, masks: np.ndarray, seeds: int, kind: str = "test"
) -> RetrainTargets:
    """Retrain from scratch on every mask for seeds 0..seeds-1 (jobs in the run's store)."""
    retrain = run.cfg.method_settings("retrain")
    rp = run.prepare(retrain)
    specs = [[run.spec(rp, m, retrain, s, kind) for m in masks] for s in range(seeds)]
    ex = run.execute([x for row in specs for x in row], "retrain")
    got = {r.key: r for r in run.store.records([x.key for row in specs for x in row])}
    ok = [b for b in range(len(masks)) if all(row[b].key in got for row in specs)]
    ok = [b for b in ok if all(got[row[b].key].status == "done" for row in specs)]
    return RetrainTargets(
        masks=masks[ok],
        records=[[got[row[b].key] for b in ok] for row in specs],
        failed=ex.failed,
        first_error=ex.first_error,
    )


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def t_quantile(level: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, dof))
