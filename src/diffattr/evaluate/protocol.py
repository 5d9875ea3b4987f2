"""The paper's evaluation protocol on a run directory, reusing its store, keys and executors.

Every retrained model is a job in the run's store (method ``retrain``), so evaluations are
resumable and a retrain is never done twice, whichever command asked for it first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diffattr.coalitions import make_sampler
from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.evaluate.fidelity import fidelity
from diffattr.evaluate.lds import lds_over_seeds
from diffattr.fileio import atomic_write_text
from diffattr.runner.pipeline import (
    RunState,
    estimate,
    fit_specs,
    prepare_run,
    reference_values,
    run_jobs,
)
from diffattr.store import Store, mask_to_str

# Test coalitions come from their own stream, never the fit samplers' seeds.
TEST_SEED_OFFSET = 1_000_003


def load_run_config(run_dir: Path, **overrides: Any) -> RunConfig:
    path = Path(run_dir) / "config.toml"
    if not path.exists():
        raise DiffattrError(f"{run_dir} is not a run directory (no config.toml; see diffattr run)")
    return RunConfig.from_toml(path).with_overrides(**overrides)


def method_state(cfg: RunConfig, run_dir: Path, method: str, progress: bool) -> RunState:
    """The run's state for another counterfactual method (with its settings from
    ``[attribution.method_settings]``, or its defaults)."""
    cfg_m = cfg.with_overrides(**{"attribution.method": method})
    return prepare_run(cfg_m, run_dir, progress=progress, write_config=False)


def held_out_masks(n: int, alpha: float, count: int, seed: int) -> np.ndarray:
    """Held-out coalitions from the datamodel distribution (floor(alpha n) kept)."""
    sampler = make_sampler("datamodel", n, seed + TEST_SEED_OFFSET, alpha=alpha)
    return sampler.sample(count)


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def retrain_targets(
    state: RunState, store: Store, masks: np.ndarray, seeds: int, kind: str, progress: bool
) -> tuple[list[list], int]:
    """Retrain from scratch on every mask for seeds 0..seeds-1; records[seed][b]."""
    specs = [[state.spec(m, "retrain", {}, s, kind) for m in masks] for s in range(seeds)]
    _, failed = run_jobs(state, [x for row in specs for x in row], store, "retrain", progress)
    recs = []
    for row in specs:
        got = {r.key: r for r in store.records([x.key for x in row])}
        recs.append([got.get(x.key) for x in row])
    return recs, failed


def run_lds(
    run_dir: str | Path,
    alpha: float = 0.5,
    test_subsets: int = 32,
    seeds: int = 1,
    methods: list[str] | None = None,
    estimators: list[str] | None = None,
    with_fidelity: bool = True,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """LDS of every (method, estimator, behavior); fidelity of each method on the test set."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, **(overrides or {}))
    if estimators:
        cfg = cfg.with_overrides(**{"attribution.estimators": estimators})
    methods = methods or [cfg.attribution.method]
    base = method_state(cfg, run_dir, methods[0], progress)
    n = len(base.players)
    masks = held_out_masks(n, alpha, test_subsets, cfg.attribution.seed)
    test_set = {mask_to_str(m) for m in masks}
    out: dict[str, Any] = {
        "alpha": alpha,
        "test_subsets": test_subsets,
        "seeds": seeds,
        "results": [],
        "fidelity": [],
        "cost": {},
    }
    with Store(run_dir / "store.sqlite") as store:
        recs, failed = retrain_targets(base, store, masks, seeds, "test", progress)
        ok = [b for b in range(len(masks)) if all(row[b] is not None for row in recs)]
        if len(ok) < 3:
            raise DiffattrError("fewer than 3 test subsets were retrained; see diffattr status")
        full, _ = reference_values(base, store)
        behaviors = sorted(full.behaviors)
        retrain_cost = float(np.mean([recs[0][b].t_total for b in ok]))
        out["cost"]["retrain"] = {"seconds_per_job": retrain_cost, "prepare_seconds": 0.0}
        for method in methods:
            state = base if method == methods[0] else method_state(cfg, run_dir, method, progress)
            specs = fit_specs(state)
            all_fit = [s for v in specs.values() for s in v]
            _, f = run_jobs(state, all_fit, store, f"{method} jobs", progress)
            failed += f
            attributions = estimate(state, store, specs, exclude_masks=test_set)
            for a in attributions:
                targets = np.array([[row[b].behaviors[a.behavior] for b in ok] for row in recs])
                res = lds_over_seeds(a.values, masks[ok], targets)
                pred = masks[ok].astype(float) @ np.asarray(a.values, dtype=float)
                out["results"].append(
                    {
                        "method": method,
                        "estimator": a.estimator,
                        "behavior": a.behavior,
                        "fit_rows": a.settings.get("rows"),
                        **res.to_dict(),
                        "points": {"predicted": pred.tolist(), "actual": targets.mean(0).tolist()},
                    }
                )
            fit_recs = store.records([s.key for s in all_fit])
            cost = float(np.mean([r.t_total for r in fit_recs])) if fit_recs else float("nan")
            out["cost"][method] = {
                "seconds_per_job": cost,
                "prepare_seconds": state.timings.get("prepare_cost", 0.0),
                "speedup_vs_retrain": retrain_cost / cost if cost else float("nan"),
            }
            if with_fidelity and method != "retrain":
                fspecs = [
                    state.spec(
                        m,
                        method,
                        state.cfg.attribution.settings_for(),
                        cfg.attribution.seed,
                        "fidelity",
                    )
                    for m in masks[ok]
                ]
                _, f = run_jobs(state, fspecs, store, f"{method} on test subsets", progress)
                failed += f
                got = {r.key: r for r in store.records([s.key for s in fspecs])}
                pairs = [(got[s.key], recs[0][b]) for s, b in zip(fspecs, ok) if s.key in got]
                for beh in behaviors:
                    if len(pairs) >= 3:
                        fid = fidelity(
                            np.array([p.behaviors[beh] for p, _ in pairs]),
                            np.array([q.behaviors[beh] for _, q in pairs]),
                        )
                        out["fidelity"].append(
                            {
                                "method": method,
                                "behavior": beh,
                                **fid,
                                "points": {
                                    "approx": [p.behaviors[beh] for p, _ in pairs],
                                    "retrain": [q.behaviors[beh] for _, q in pairs],
                                },
                            }
                        )
    out["failed_jobs"] = failed
    _write_json(run_dir / "lds.json", _merge_lds(run_dir / "lds.json", out))
    return out


def _merge_lds(path: Path, new: dict) -> dict:
    """Keep earlier results of other methods/estimators evaluated on the same test set."""
    if not path.exists():
        return new
    old = json.loads(path.read_text())
    if any(old.get(k) != new[k] for k in ("alpha", "test_subsets", "seeds")):
        return new
    merged = dict(new)
    seen = {(r["method"], r["estimator"], r["behavior"]) for r in new["results"]}
    merged["results"] = [
        r for r in old["results"] if (r["method"], r["estimator"], r["behavior"]) not in seen
    ] + new["results"]
    seen_f = {(f["method"], f["behavior"]) for f in new["fidelity"]}
    merged["fidelity"] = [
        f for f in old["fidelity"] if (f["method"], f["behavior"]) not in seen_f
    ] + new["fidelity"]
    merged["cost"] = {**old.get("cost", {}), **new["cost"]}
    return merged


def run_counterfactual(
    run_dir: str | Path,
    remove: str = "top",
    fraction: float = 0.4,
    seeds: int = 3,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    estimators: list[str] | None = None,
    ranked_by: list[str] | None = None,
) -> dict:
    """Retrain without the top (or bottom) share of players by each attribution's ranking;
    report each behavior's relative change (%) against the full model.

    ``estimators`` / ``ranked_by`` restrict the rankings used (estimator names; behavior
    names such as ``fid`` or keys such as ``fid[digits-cnn]``)."""
    run_dir = Path(run_dir)
    if remove not in ("top", "bottom"):
        raise DiffattrError("--remove must be 'top' or 'bottom'")
    if not 0 < fraction < 1:
        raise DiffattrError(f"--fraction must be in (0, 1), got {fraction}")
    values_path = run_dir / "values.json"
    if not values_path.exists():
        raise DiffattrError(f"{values_path} not found: run diffattr run first")
    cfg = load_run_config(run_dir, **(overrides or {}))
    state = method_state(cfg, run_dir, cfg.attribution.method, progress)
    payload = json.loads(values_path.read_text())
    n = len(state.players)
    k = max(1, int(round(fraction * n)))
    out: dict[str, Any] = {"remove": remove, "fraction": fraction, "seeds": seeds, "results": []}
    from diffattr.cli import lower_is_better

    with Store(run_dir / "store.sqlite") as store:
        full, _ = reference_values(state, store)
        plans = []
        for a in payload["attributions"]:
            if estimators and a["estimator"] not in estimators:
                continue
            if ranked_by and not {a["behavior"], a["behavior"].split("[")[0]} & set(ranked_by):
                continue
            vals = np.asarray(a["values"], dtype=float)
            sign = -1.0 if lower_is_better(a["behavior"]) else 1.0
            order = np.argsort(-sign * vals, kind="stable")  # best contributors first
            drop = order[:k] if remove == "top" else order[::-1][:k]
            mask = np.ones(n, dtype=bool)
            mask[drop] = False
            plans.append((a, mask, [a["names"][i] for i in drop]))
        specs = [
            state.spec(m, "retrain", {}, s, "counterfactual")
            for _, m, _ in plans
            for s in range(seeds)
        ]
        _, failed = run_jobs(state, specs, store, "counterfactual retrain", progress)
        for a, mask, dropped in plans:
            keys = [state.spec(mask, "retrain", {}, s, "counterfactual").key for s in range(seeds)]
            recs = store.records(keys)
            if not recs:
                continue
            changes = {}
            for beh, v1 in full.behaviors.items():
                vals = np.array([r.behaviors[beh] for r in recs])
                rel = 100.0 * (vals - v1) / abs(v1) if v1 else np.full(len(vals), np.nan)
                changes[beh] = {
                    "mean": float(rel.mean()),
                    "sd": float(rel.std(ddof=1)) if len(rel) > 1 else float("nan"),
                    "value": float(vals.mean()),
                }
            out["results"].append(
                {
                    "estimator": a["estimator"],
                    "ranked_by": a["behavior"],
                    "removed": dropped,
                    "seeds_done": len(recs),
                    "relative_change_pct": changes,
                }
            )
    out["failed_jobs"] = failed
    _write_json(run_dir / f"counterfactual-{remove}.json", out)
    return out


def compute_curve(
    run_dir: str | Path,
    methods: list[str] | None = None,
    budgets: int = 5,
    retrain_subsets: int = 8,
    progress: bool = True,
) -> dict:
    """LDS of Shapley against compute spent, for each method (cheaper methods get more
    subsets for the same budget; Lin et al. 2025, Fig. 2). Needs ``diffattr lds`` first."""
    run_dir = Path(run_dir)
    lds_path = run_dir / "lds.json"
    if not lds_path.exists():
        raise DiffattrError(f"{lds_path} not found: run diffattr lds first")
    info = json.loads(lds_path.read_text())
    cfg = load_run_config(run_dir).with_overrides(**{"attribution.estimators": ["shapley"]})
    methods = methods or ["retrain", "ft", "sft"]
    masks = held_out_masks(
        len(method_state(cfg, run_dir, cfg.attribution.method, progress).players),
        info["alpha"],
        info["test_subsets"],
        cfg.attribution.seed,
    )
    test_set = {mask_to_str(m) for m in masks}
    curves: dict[str, list] = {}
    with Store(run_dir / "store.sqlite") as store:
        base = method_state(cfg, run_dir, cfg.attribution.method, progress)
        recs, _ = retrain_targets(base, store, masks, info["seeds"], "test", progress)
        ok = [b for b in range(len(masks)) if all(row[b] is not None for row in recs)]
        costs: dict[str, tuple[float, float]] = {}
        states = {}
        for method in methods:
            cfg_m = cfg
            if method == "retrain":
                cfg_m = cfg.with_overrides(**{"attribution.subsets": retrain_subsets})
            state = method_state(cfg_m, run_dir, method, progress)
            states[method] = state
            specs = fit_specs(state)
            run_jobs(state, specs["shapley"], store, f"{method} jobs", progress)
            r = store.records([s.key for s in specs["shapley"]])
            costs[method] = (
                state.timings.get("prepare_cost", 0.0),
                float(np.mean([x.t_total for x in r])),
            )
        top = max(p + len(fit_specs(states[m])["shapley"]) * c for m, (p, c) in costs.items())
        grid = np.geomspace(top / 2 ** (budgets - 1), top, budgets)
        for method, (prep, cost) in costs.items():
            state = states[method]
            specs = fit_specs(state)
            points = []
            for budget in tqdm(grid, desc=f"curve {method}", disable=not progress):
                m = min(int((budget - prep) / cost + 1e-6), len(specs["shapley"]))
                if m < 2 or any(p["subsets"] == m for p in points):
                    continue
                errors: list[str] = []  # too few subsets for this budget: no point
                attrs = estimate(
                    state, store, specs, exclude_masks=test_set, limit=m, errors=errors
                )
                for a in attrs:
                    t = np.array([[row[b].behaviors[a.behavior] for b in ok] for row in recs])
                    res = lds_over_seeds(a.values, masks[ok], t, n_bootstrap=0)
                    points.append(
                        {
                            "budget_seconds": float(budget),
                            "subsets": m,
                            "behavior": a.behavior,
                            "lds": res.mean,
                        }
                    )
            curves[method] = points
    out = {
        "methods": methods,
        "costs": {m: {"prepare_seconds": p, "seconds_per_job": c} for m, (p, c) in costs.items()},
        "curves": curves,
        "created": time.time(),
    }
    _write_json(run_dir / "compute_curve.json", out)
    return out
