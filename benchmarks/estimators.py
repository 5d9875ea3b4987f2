"""Benchmarks of the attribution estimators; prints one JSON document.

1. ``kernel_shap_large``: the KernelSHAP closed form (Covert & Lee 2021, eq. 7) for
   n = 10,000 players and M = 100,000 paired Shapley-kernel coalitions: time and peak
   memory of sampling and of the fit, and the error on a game with known Shapley values
   (additive weights plus unanimity terms on groups of 2, 3 and 5 players).
2. ``error_vs_rows``: error against exact values (full enumeration, n = 20) of every
   sampling estimator at several table sizes M, on a non-additive game (weights,
   unanimity terms and a concave coverage term, which interacts at every order).

Usage: ``python benchmarks/estimators.py [--quick] [--large-stderr] [--skip-large]``.
``--quick`` shrinks both parts to seconds; ``--large-stderr`` also times the closed-form
standard errors of part 1 (about as expensive again as the point estimate).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
import tracemalloc

import numpy as np
from scipy.sparse import csr_matrix
from scipy.stats import spearmanr

from diffattr.coalitions import ShapleyKernelSampler, sampler_for_estimator
from diffattr.estimators import ESTIMATORS, all_subsets, banzhaf_from_table, shapley_from_table


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class UnanimityGame:
    """``v(z) = z'w + sum_t c_t prod_{i in T_t} z_i`` over random groups ``T_t``.

    A unanimity term on a group of ``k`` players gives each of them ``c / k`` (Shapley
    1953), so the Shapley values are ``w_i + sum_{t: i in T_t} c_t / |T_t|``. Groups of
    sizes 2, 3 and 5: paired KernelSHAP is exact for games of order <= 2 alone.
    """

    def __init__(self, n: int, n_terms: int, seed: int, orders: tuple[int, ...] = (2, 3, 5)):
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=n)
        self.groups = [
            rng.choice(n, size=orders[t % len(orders)], replace=False) for t in range(n_terms)
        ]
        self.c = rng.normal(scale=2.0, size=n_terms)
        self.shapley = self.w.copy()
        for g, c in zip(self.groups, self.c):
            self.shapley[g] += c / len(g)
        rows = np.concatenate([np.full(len(g), t) for t, g in enumerate(self.groups)])
        cols = np.concatenate(self.groups)
        self.member = csr_matrix(
            (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_terms, n)
        )
        self.sizes = np.array([len(g) for g in self.groups], dtype=np.float32)

    def __call__(self, z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        out = np.empty(z.shape[0])
        for s in range(0, z.shape[0], chunk):
            blk = z[s : s + chunk].astype(np.float32)
            out[s : s + chunk] = blk @ self.w
            present = np.asarray(self.member @ blk.T).T  # members present, per term
            out[s : s + chunk] += (present == self.sizes) @ self.c
        return out


def kernel_shap_large(n: int, m: int, stderr: bool) -> dict:
    game = UnanimityGame(n, n_terms=n // 2, seed=0)
    t0 = time.perf_counter()
    z = ShapleyKernelSampler(n, seed=0, paired=True).sample(m)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = game(z)
    t_game = time.perf_counter() - t0
    v0, v1 = 0.0, float(game.shapley.sum())
    est = ESTIMATORS.get("shapley")
    tracemalloc.start()
    t0 = time.perf_counter()
    att = est.fit(z, y, v0=v0, v1=v1, stderr=False)
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
        "efficiency_gap": float(abs(att.values.sum() - (v1 - v0))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "max_abs_err": float(np.abs(err).max()),
        "truth_std": float(game.shapley.std()),
        "spearman": float(spearmanr(att.values, game.shapley).statistic),
    }
    if stderr:
        t0 = time.perf_counter()
        att = est.fit(z, y, v0=v0, v1=v1, stderr=True)
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


def error_vs_rows(n: int, sizes: list[int], reps: int) -> dict:
    game = CoverageGame(n, seed=0)
    t0 = time.perf_counter()
    table = game(all_subsets(n))
    shapley = shapley_from_table(table)
    banzhaf = banzhaf_from_table(table)
    t_exact = time.perf_counter() - t0
    v0, v1 = float(table[0]), float(table[-1])
    results = []
    for name in ("shapley", "permutation-shapley", "banzhaf", "banzhaf-msr", "datamodel"):
        est = ESTIMATORS.get(name)
        if name in ("shapley", "permutation-shapley"):
            ref, ref_name = shapley, "shapley"
        else:
            ref, ref_name = banzhaf, "banzhaf"
        for m in sizes:
            rmse, maxerr, rho, se, cover, secs = [], [], [], [], [], []
            for rep in range(reps):
                z = sampler_for_estimator(name, n, seed=rep).sample(m)
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
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--large-stderr", action="store_true", help="time closed-form stderr")
    parser.add_argument("--skip-large", action="store_true", help="skip the n=10,000 part")
    args = parser.parse_args()
    doc: dict = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    if not args.skip_large:
        n, m = (500, 5000) if args.quick else (10_000, 100_000)
        doc["kernel_shap_large"] = kernel_shap_large(n, m, args.large_stderr)
    if args.quick:
        doc["error_vs_rows"] = error_vs_rows(12, [200, 1000], reps=1)
    else:
        doc["error_vs_rows"] = error_vs_rows(20, [200, 1000, 5000, 20000], reps=3)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
