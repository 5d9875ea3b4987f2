"""Benchmarks of the attribution estimators; prints one JSON document.

Parts (``--parts``, comma-separated; default ``equal-m,many-players``):

* ``equal-m`` — the number of coalitions each Shapley estimator needs: at equal budgets
  ``M = 16, 24, 32, 64, 100, 200`` for ``n = 10`` and ``n = 20`` players, on four games
  with exact Shapley values (additive; additive + unanimity terms of orders 2, 3 and 5;
  the same with evaluation noise; a size-driven game ``30 / (1 + z'u) + z'w / 2`` shaped
  like FID against the amount of training data; the same with its null value 40 above
  the trend, like an untrained null model), over several seeds: how often the fit is
  identified, the relative error ``||phi_hat - phi|| / ||phi - mean(phi)||`` and the
  Spearman correlation with the exact values (mean ± sd over the identified fits).
  Estimators (``EQUAL_M_METHODS``): ``shapley`` on paired Shapley-kernel rows drawn i.i.d.
  with the given endpoints (the paper's design) and on distinct kernel rows, on leverage
  rows (Musco & Witter 2025), ``shapley-cv`` (size control variates) on each, and
  ``permutation-shapley`` (complete chains within ``M``) -- with the fitted endpoints
  (the default) and, where labelled "given", with the true ``v0``, ``v1``.
* ``identification`` — the share of 200 draws whose paired rows identify KernelSHAP at
  and just above the smallest budget (i.i.d. / distinct kernel rows, leverage rows; given
  and fitted endpoints).
* ``many-players`` — Banzhaf (regression, MSR) and datamodel fits for ``n = 2,000``
  players from ``M = 2,000, 3,000, 5,000`` rows of a noisy linear game: seconds and the
  Spearman correlation with the true weights.
* ``large`` — the KernelSHAP closed form (Covert & Lee 2021, eq. 7) for ``n = 10,000``
  players and ``M = 100,000`` paired Shapley-kernel coalitions: time and peak memory of
  sampling and of the fit, and the error on a game with known Shapley values.
* ``error-vs-rows`` — error against exact values (full enumeration, ``n = 20``) of every
  sampling estimator at several table sizes ``M`` on a non-additive game.

``--quick`` shrinks every part to seconds; ``--threads`` caps BLAS threads (default 1:
on a shared two-core machine OpenBLAS threads that wait for busy cores make LAPACK
routines ten times slower).

Usage: ``python benchmarks/estimators.py [--parts equal-m,many-players] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
import tracemalloc
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from diffattr.coalitions import SAMPLERS, ShapleyKernelSampler
from diffattr.errors import DiffattrError
from diffattr.estimators import (
    ESTIMATORS,
    all_subsets,
    banzhaf_from_table,
    make_estimator,
    shapley_from_table,
)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class UnanimityGame:
    """``v(z) = z'w + sum_t c_t prod_{i in T_t} z_i`` over random groups ``T_t``.

    A unanimity term on a group of ``k`` players gives each of them ``c / k`` (Shapley
    1953), so the Shapley values are ``w_i + sum_{t: i in T_t} c_t / |T_t|``. Groups of
    sizes 2, 3 and 5: paired KernelSHAP is exact for games of order <= 2 alone.
    """

    def __init__(
        self, n: int, n_terms: int, seed: int, orders: tuple[int, ...] = (2, 3, 5), scale=1.0
    ):
        rng = np.random.default_rng(seed)
        self.n = n
        self.w = rng.normal(size=n) * scale
        self.groups = [
            rng.choice(n, size=orders[t % len(orders)], replace=False) for t in range(n_terms)
        ]
        self.c = rng.normal(scale=2.0, size=n_terms) * scale
        self.shapley = self.w.copy()
        for g, c in zip(self.groups, self.c):
            self.shapley[g] += c / len(g)
        rows = np.concatenate([np.full(len(g), t) for t, g in enumerate(self.groups)])
        cols = np.concatenate(self.groups)
        self.member = csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_terms, n)
        )
        self.sizes = np.array([len(g) for g in self.groups], dtype=np.float32)
        self.v0, self.v1 = 0.0, float(self.shapley.sum())

    def __call__(self, z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        out = np.empty(z.shape[0])
        for s in range(0, z.shape[0], chunk):
            blk = z[s : s + chunk].astype(np.float32)
            out[s : s + chunk] = blk @ self.w
            present = np.asarray(self.member @ blk.T).T  # members present, per term
            out[s : s + chunk] += (present == self.sizes) @ self.c
        return out


class AdditiveGame:
    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.shapley = np.random.default_rng(seed).normal(size=n)
        self.v0, self.v1 = 0.0, float(self.shapley.sum())

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return z.astype(np.float64) @ self.shapley


class SizeGame:
    """``30 / (1 + z'u) + z'w / 2``: a convex function of how much data a coalition keeps
    (FID against the amount of training data) plus small per-player effects."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.w = rng.normal(size=n)
        self.u = rng.uniform(0.5, 1.5, size=n)
        self.shapley = shapley_from_table(self(all_subsets(n)))
        self.v0 = float(self(np.zeros((1, n), dtype=bool))[0])
        self.v1 = float(self(np.ones((1, n), dtype=bool))[0])

    def __call__(self, z: np.ndarray) -> np.ndarray:
        zf = z.astype(np.float64)
        return 30.0 / (1.0 + zf @ self.u) + 0.5 * (zf @ self.w)


class OffTrendNull:
    """A game whose null value is ``gap`` above its own ``v(empty)`` (an untrained model far
    off the coalitions' trend): the exact values drop by ``gap / n`` each (``v(empty)`` is
    in every player's marginal at ``S = empty`` with weight ``1/n``)."""

    def __init__(self, game: Any, gap: float) -> None:
        self.game, self.n = game, game.n
        self.v0, self.v1 = game.v0 + gap, game.v1
        self.shapley = game.shapley - gap / game.n

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.game(z)


class Noisy:
    """``game`` plus independent N(0, sigma^2) noise on every evaluation; the benchmark draws
    the noise from the seed, so every estimator sees the same noisy values."""

    def __init__(self, game: Any, sigma: float) -> None:
        self.game, self.noise_sd = game, sigma
        self.n, self.shapley, self.v0, self.v1 = game.n, game.shapley, game.v0, game.v1

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.game(z)


#: label -> estimator settings; "given" = the true v0, v1 in the constraint (the paper's),
#: otherwise the default fitted endpoints; "iid" = Shapley-kernel rows with replacement
EQUAL_M_METHODS = {
    "shapley (kernel iid, given: the paper's)": {
        "name": "shapley",
        "endpoints": "given",
        "sampler": {"name": "shapley-kernel", "replace": True},
    },
    "shapley (kernel)": {"name": "shapley", "sampler": "shapley-kernel"},
    "shapley (leverage, given)": {"name": "shapley", "sampler": "leverage", "endpoints": "given"},
    "shapley (leverage)": {"name": "shapley", "sampler": "leverage"},
    "shapley-cv (kernel)": {"name": "shapley-cv", "sampler": "shapley-kernel"},
    "shapley-cv (leverage, given)": {
        "name": "shapley-cv",
        "sampler": "leverage",
        "endpoints": "given",
    },
    "shapley-cv (leverage)": {"name": "shapley-cv", "sampler": "leverage"},
    "permutation-shapley (given)": {"name": "permutation-shapley", "endpoints": "given"},
    "permutation-shapley": {"name": "permutation-shapley"},
}


def _summary(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    return {"mean": round(float(np.mean(xs)), 4), "sd": round(float(np.std(xs)), 4)}


def equal_m(ns: list[int], sizes: list[int], seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": sizes, "seeds": seeds, "results": []}
    t_all = time.perf_counter()
    for n in ns:
        games = {
            "additive": AdditiveGame(n, seed=0),
            "interactions": UnanimityGame(n, n_terms=n, seed=1),
            "interactions + noise (sd 1)": Noisy(UnanimityGame(n, n_terms=n, seed=1), 1.0),
            "size-driven": SizeGame(n, seed=2),
            # the null 40 above the trend (FID of an untrained model vs. its trend, digits)
            "size-driven, off-trend null": OffTrendNull(SizeGame(n, seed=2), 40.0),
        }
        for game_name, game in games.items():
            truth = game.shapley
            for label, settings in EQUAL_M_METHODS.items():
                parsed = ESTIMATORS.parse({**settings, "use_exact": False})
                est = parsed.build()
                for m in sizes:
                    errs, rhos, secs = [], [], []
                    refused = 0
                    for seed in range(seeds):
                        z = parsed.sampler.build(n, seed).sample(m)
                        y = game(z)
                        if getattr(game, "noise_sd", 0.0):
                            noise = np.random.default_rng([seed, m]).normal(size=m)
                            y = y + game.noise_sd * noise
                        t0 = time.perf_counter()
                        try:
                            att = est.fit(z, y, v0=game.v0, v1=game.v1)
                        except DiffattrError:
                            refused += 1
                            continue
                        secs.append(time.perf_counter() - t0)
                        errs.append(
                            float(
                                np.linalg.norm(att.values - truth)
                                / np.linalg.norm(truth - truth.mean())
                            )
                        )
                        rhos.append(float(spearmanr(att.values, truth).statistic))
                    out["results"].append(
                        {
                            "n": n,
                            "game": game_name,
                            "estimator": label,
                            "M": m,
                            "identified": seeds - refused,
                            "rel_error": _summary(errs),
                            "spearman": _summary(rhos),
                            "fit_ms": round(1000 * float(np.mean(secs)), 2) if secs else None,
                        }
                    )
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    return out


def identification(ns: list[int], seeds: int) -> dict[str, Any]:
    """How often a paired design identifies KernelSHAP near the smallest budget: the share
    of ``seeds`` draws whose rows have full rank, for i.i.d. and distinct Shapley-kernel
    rows and leverage rows, with the given endpoints (``2(n-1)`` rows needed) and the fitted
    ones (``2n``). Values are irrelevant to rank; the fit is run on an additive game."""
    samplers = {
        "kernel, iid": {"name": "shapley-kernel", "replace": True},
        "kernel, distinct": {"name": "shapley-kernel"},
        "leverage": {"name": "leverage"},
    }
    out = []
    for n in ns:
        w = np.arange(1.0, n + 1)
        budgets = sorted({2 * (n - 1), 2 * n, int(2.4 * n) // 2 * 2, int(3.2 * n) // 2 * 2})
        for endpoints in ("given", "fitted"):
            for label, sampler in samplers.items():
                est = ESTIMATORS.parse(
                    {"name": "shapley", "sampler": sampler, "endpoints": endpoints}
                )
                for m in budgets:
                    ok = 0
                    for seed in range(seeds):
                        z = est.sampler.build(n, seed).sample(m)
                        try:
                            est.build().fit(z, z @ w, v0=0.0, v1=float(w.sum()))
                            ok += 1
                        except DiffattrError:
                            pass
                    out.append(
                        {
                            "n": n,
                            "endpoints": endpoints,
                            "rows": label,
                            "M": m,
                            "identified": round(ok / seeds, 3),
                        }
                    )
    return {"seeds": seeds, "results": out}


def many_players(n: int, sizes: list[int]) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    w = rng.normal(size=n)
    results = []
    for m in sizes:
        for name, sampler in (
            ("banzhaf-msr", "uniform"),
            ("banzhaf", "uniform"),
            ("datamodel", "datamodel"),
            ("datamodel", "uniform"),
        ):
            z = SAMPLERS.parse(sampler).build(n, 1).sample(m)
            y = z @ w + rng.normal(size=m)
            est = make_estimator(name, sampler=sampler)
            entry: dict[str, Any] = {"estimator": name, "sampler": sampler, "n": n, "M": m}
            t0 = time.perf_counter()
            try:
                att = est.fit(z, y)
            except DiffattrError as e:
                entry["error"] = str(e)
                results.append(entry)
                continue
            entry["fit_s"] = round(time.perf_counter() - t0, 2)
            entry["spearman"] = round(float(spearmanr(att.values, w).statistic), 4)
            entry["stderr_method"] = att.settings.get("stderr_method")
            results.append(entry)
    return {"noise_sd": 1.0, "weights_sd": 1.0, "results": results}


def kernel_shap_large(n: int, m: int, stderr: bool) -> dict[str, Any]:
    game = UnanimityGame(n, n_terms=n // 2, seed=0)
    t0 = time.perf_counter()
    z = ShapleyKernelSampler(n, seed=0, paired=True).sample(m)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = game(z)
    t_game = time.perf_counter() - t0
    est = make_estimator("shapley", stderr=False)
    tracemalloc.start()
    t0 = time.perf_counter()
    att = est.fit(z, y, v0=game.v0, v1=game.v1)
    t_fit = time.perf_counter() - t0
    _, peak_fit = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    err = att.values - game.shapley
    out = {
        "n_players": n,
        "rows": m,
        "paired": True,
        "masks_mb": z.nbytes / 2**20,
        "sample_s": round(t_sample, 2),
        "game_eval_s": round(t_game, 2),
        "fit_s": round(t_fit, 2),
        "fit_peak_mb_tracemalloc": round(peak_fit / 2**20, 1),
        "solver": att.settings["solver"],
        "rank": att.settings["rank"],
        "efficiency_gap": float(abs(att.values.sum() - (game.v1 - game.v0))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs_err": float(np.abs(err).max()),
        "truth_std": float(game.shapley.std()),
        "spearman": float(spearmanr(att.values, game.shapley).statistic),
    }
    if stderr:
        t0 = time.perf_counter()
        att = make_estimator("shapley").fit(z, y, v0=game.v0, v1=game.v1)
        out["fit_with_stderr_s"] = round(time.perf_counter() - t0, 2)
        out["mean_stderr"] = float(att.stderr.mean())
        out["coverage_4se"] = float(np.mean(np.abs(att.values - game.shapley) < 4 * att.stderr))
    out["process_maxrss_mb"] = round(_maxrss_mb(), 1)
    return out


class CoverageGame:
    """Non-additive: unanimity terms plus ``3 sqrt(z'u)``, which interacts at every order."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.terms = UnanimityGame(n, n_terms=2 * n, seed=seed + 1)
        self.u = rng.uniform(0.0, 1.0, size=n)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return self.terms(z) + 3.0 * np.sqrt(z.astype(np.float64) @ self.u)


def error_vs_rows(n: int, sizes: list[int], reps: int) -> dict[str, Any]:
    game = CoverageGame(n, seed=0)
    t0 = time.perf_counter()
    table = game(all_subsets(n))
    shapley = shapley_from_table(table)
    banzhaf = banzhaf_from_table(table)
    t_exact = time.perf_counter() - t0
    v0, v1 = float(table[0]), float(table[-1])
    results = []
    for name in ("shapley", "permutation-shapley", "banzhaf", "banzhaf-msr", "datamodel"):
        settings = ESTIMATORS.parse(name)
        est = settings.build()
        if name in ("shapley", "permutation-shapley"):
            ref, ref_name = shapley, "shapley"
        else:
            ref, ref_name = banzhaf, "banzhaf"
        for m in sizes:
            rmse, maxerr, rho, se, cover, secs = [], [], [], [], [], []
            for rep in range(reps):
                z = settings.sampler.build(n, seed=rep).sample(m)
                y = game(z)
                t1 = time.perf_counter()
                att = est.fit(z, y, v0=v0, v1=v1)
                secs.append(time.perf_counter() - t1)
                vals, target = att.values, ref
                if name == "datamodel":  # identified up to a common shift: compare centred
                    vals, target = vals - vals.mean(), ref - ref.mean()
                err = vals - target
                rmse.append(np.sqrt(np.mean(err**2)))
                maxerr.append(np.abs(err).max())
                rho.append(spearmanr(att.values, ref).statistic)
                if np.isfinite(att.stderr).all():
                    se.append(att.stderr.mean())
                    cover.append(np.mean(np.abs(err) < 2 * att.stderr))
            results.append(
                {
                    "estimator": name,
                    "reference": ref_name + (" (centred)" if name == "datamodel" else ""),
                    "rows": m,
                    "rmse": float(np.mean(rmse)),
                    "max_abs_err": float(np.mean(maxerr)),
                    "spearman": float(np.mean(rho)),
                    "mean_stderr": float(np.mean(se)) if se else None,
                    "coverage_2se": float(np.mean(cover)) if cover else None,
                    "fit_s": round(float(np.mean(secs)), 4),
                }
            )
    return {
        "n_players": n,
        "reps": reps,
        "exact_enumeration_s": round(t_exact, 2),
        "shapley_std": float(shapley.std()),
        "banzhaf_std": float(banzhaf.std()),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="equal-m,many-players", help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per cell of equal-m")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--large-stderr", action="store_true", help="time closed-form stderr")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    known = {"equal-m", "identification", "many-players", "large", "error-vs-rows"}
    if not set(parts) <= known:
        parser.error(f"unknown parts {sorted(set(parts) - known)}; choose from {sorted(known)}")
    doc: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "blas_threads": args.threads,
    }
    with threadpool_limits(limits=args.threads):
        if "equal-m" in parts:
            if args.quick:
                doc["equal_m"] = equal_m([10], [24, 64], seeds=3)
            else:
                doc["equal_m"] = equal_m([10, 20], [16, 24, 32, 64, 100, 200], seeds=args.seeds)
        if "identification" in parts:
            doc["identification"] = identification([10, 20], 20 if args.quick else 200)
        if "many-players" in parts:
            if args.quick:
                doc["many_players"] = many_players(300, [500])
            else:
                doc["many_players"] = many_players(2000, [2000, 3000, 5000])
        if "large" in parts:
            n, m = (500, 5000) if args.quick else (10_000, 100_000)
            doc["kernel_shap_large"] = kernel_shap_large(n, m, args.large_stderr)
        if "error-vs-rows" in parts:
            if args.quick:
                doc["error_vs_rows"] = error_vs_rows(12, [200, 1000], reps=1)
            else:
                doc["error_vs_rows"] = error_vs_rows(20, [200, 1000, 5000, 20000], reps=3)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
