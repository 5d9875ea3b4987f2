"""Adaptive stopping (``[attribution] until_stderr``): more coalitions in rounds until every
player's standard error is below a threshold, or the budget ``max_subsets`` is spent.

Rounds extend each sampler's stream (row r depends only on (seed, r)), so a resumed run
replays the finished rounds from the store and continues the same sequence. Estimators that
fix their own ``subsets`` keep them. A NaN standard error (the data cannot determine it)
counts as not yet below the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffattr.behaviors.keys import BehaviorKey


def until_stderr(run: Any, jobs: Any) -> tuple[Any, list[dict], str | None]:
    """Rounds of ``run`` (a ``Run``) from ``jobs`` (its ``JobSet`` at the run's M): each
    fits the estimators, records the worst standard error per behavior, and stops when all
    are below their limits or M reached ``max_subsets``; else plans and executes the next
    ``round_subsets`` coalitions (whole pairs). Returns the last job set, the rounds and the
    first job error of the added rounds."""
    a = run.cfg.attribution
    step = a.round_subsets or a.subsets
    step += step % 2  # whole pairs for paired samplers
    m = a.subsets
    rounds: list[dict] = []
    first = None
    while True:
        errors: list[str] = []
        est = run.estimate(jobs, errors=errors)
        worst = worst_stderr(est.attributions, a.until_stderr)
        done = bool(worst) and all(w <= lim for w, lim in worst.values())
        rounds.append(
            {
                "subsets": m,
                "worst_stderr": {k: w for k, (w, _) in worst.items()},
                "below": done,
                "errors": errors,
            }
        )
        if done or m >= a.max_subsets:
            return jobs, rounds, first
        m = min(m + step, a.max_subsets)
        jobs = run.jobs(subsets=m)
        run.store.set_meta("planned", {s.key: s.kind for s in jobs.specs()})
        ex = run.execute([s for s in jobs.specs() if s.kind == "fit"], f"round at {m} coalitions")
        first = first or ex.first_error


def worst_stderr(
    attributions: list, limit: float | dict[str, float]
) -> dict[str, tuple[float, float]]:
    """Behavior key -> (largest player standard error over estimators, its limit); with a
    limit per behavior name, behaviors without one are not watched."""
    out: dict[str, tuple[float, float]] = {}
    for attr in attributions:
        key = BehaviorKey.parse(attr.behavior)
        if isinstance(limit, dict):
            lim = limit.get(str(key), limit.get(key.name))
            if lim is None:
                continue
        else:
            lim = float(limit)
        se = np.asarray(attr.stderr, dtype=float)
        w = float(np.max(np.where(np.isfinite(se), se, np.inf))) if se.size else np.inf
        prev = out.get(attr.behavior, (0.0, lim))[0]
        out[attr.behavior] = (max(prev, w), lim)
    return out
