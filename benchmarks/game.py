"""The recorded complete game (``benchmarks/data/complete_game``) and every estimator on it.

``complete_game.py`` recorded the sFT value of every coalition of the 10 digit classes, the
full and null models, and models retrained from scratch on held-out alpha = 0.5 subsets
(several seeds) and on small and large coalitions. :func:`load` reads it back; from then
on an estimator question costs seconds:

* the ceilings: exact sFT-Shapley, exact sFT-Banzhaf, the exact sFT datamodel (least
  squares over all alpha = 0.5 subsets) and the best additive fit (least squares over
  every coalition) -- each one's LDS against the retrained ground truth, and sFT's
  fidelity to retraining (test subsets, and the small / large coalitions);
* every estimator at M = 16, 32, 64, 128, 256 over ``--draws`` independent draws of its
  own sampler's rows, looked up in the recorded table (rows equal to a test subset are
  dropped, as in the LDS protocol): Spearman and max |error| against the exact values of
  its own definition, LDS against retraining (mean over retraining seeds), and paired
  differences in LDS between estimators (the same draw index; mean and t-interval over
  draws), plus the run's reliability signal and how well it tracks the error.

    python benchmarks/game.py --draws 50 > game.json
    python benchmarks/game.py --draws 50 --plot benchmarks/data/complete_game/estimators.png

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from diffattr.errors import DiffattrError
from diffattr.estimators import (
    ESTIMATORS,
    CoalitionTable,
    all_subsets,
    banzhaf_from_table,
    shapley_from_table,
)
from diffattr.estimators.reliability import THRESHOLDS, assess
from diffattr.evaluate.lds import lds_over_seeds
from diffattr.store import mask_to_str, str_to_mask

DATA = Path(__file__).parent / "data" / "complete_game"

#: Estimators compared (label -> settings); ``use_exact`` off so a complete draw is a fit.
ESTIMATORS_COMPARED: dict[str, dict] = {
    "shapley (paired kernel, iid, given ends: the paper's)": {
        "name": "shapley",
        "endpoints": "given",
        "sampler": {"name": "shapley-kernel", "replace": True},
    },
    "shapley (paired kernel, distinct, given ends)": {"name": "shapley", "endpoints": "given"},
    "shapley (paired kernel, distinct, fitted ends)": {"name": "shapley"},
    "shapley (leverage, given ends)": {
        "name": "shapley",
        "sampler": "leverage",
        "endpoints": "given",
    },
    "shapley (leverage, fitted ends)": {"name": "shapley", "sampler": "leverage"},
    "shapley-cv (leverage, given ends)": {"name": "shapley-cv", "endpoints": "given"},
    "shapley-cv (leverage, fitted ends)": {"name": "shapley-cv"},
    "shapley-cv (paired kernel, fitted ends)": {"name": "shapley-cv", "sampler": "shapley-kernel"},
    "permutation (given ends)": {"name": "permutation-shapley", "endpoints": "given"},
    "permutation (fitted ends)": {"name": "permutation-shapley"},
    "tree-shapley (uniform, given ends: the paper's)": {
        "name": "tree-shapley",
        "endpoints": "given",
        "n_bootstrap": 0,
        "interactions": False,
    },
    "tree-shapley (uniform, fitted ends)": {
        "name": "tree-shapley",
        "n_bootstrap": 0,
        "interactions": False,
    },
    "tree-shapley (leverage, given ends)": {
        "name": "tree-shapley",
        "sampler": "leverage",
        "endpoints": "given",
        "n_bootstrap": 0,
        "interactions": False,
    },
    "tree-shapley (leverage, fitted ends)": {
        "name": "tree-shapley",
        "sampler": "leverage",
        "n_bootstrap": 0,
        "interactions": False,
    },
    "banzhaf": {"name": "banzhaf"},
    "banzhaf-msr": {"name": "banzhaf-msr"},
    "datamodel": {"name": "datamodel"},
    "loo": {"name": "loo"},
}


@dataclass
class Game:
    """The recorded game: sFT values of every coalition and retrained ground truth."""

    players: list[str]
    behaviors: list[str]
    v0: dict[str, float]
    v1: dict[str, float]
    sft_all: dict[str, float] | None
    sft: dict[str, np.ndarray]  # mask string -> values (behaviors order)
    seconds: dict[str, float]  # mask string -> seconds of the sFT job
    retrain: list[dict] = field(default_factory=list)  # rows of retrain.csv
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.players)

    @property
    def complete(self) -> bool:
        return len(self.sft) == 2**self.n - 2

    def table(self, behavior: str) -> np.ndarray:
        """``v`` for every subset code (``2^n``), v0 and v1 at the ends (exact formulas)."""
        j = self.behaviors.index(behavior)
        codes = all_subsets(self.n)
        out = np.full(2**self.n, np.nan)
        for c, m in enumerate(codes):
            key = mask_to_str(m)
            if c == 0:
                out[c] = self.v0[behavior]
            elif c == 2**self.n - 1:
                out[c] = self.v1[behavior]
            elif key in self.sft:
                out[c] = self.sft[key][j]
        return out

    def values(self, masks: np.ndarray) -> np.ndarray:
        """``(M, K)`` recorded values of ``masks`` (all-0 rows: v0, all-1 rows: v1)."""
        out = np.empty((masks.shape[0], len(self.behaviors)))
        for r, m in enumerate(masks):
            if not m.any():
                out[r] = [self.v0[b] for b in self.behaviors]
            elif m.all():
                out[r] = [self.v1[b] for b in self.behaviors]
            else:
                out[r] = self.sft[mask_to_str(m)]
        return out

    def targets(self, group: str = "test") -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Masks ``(B, n)`` of a retrained group and per behavior the retrained values
        ``(seeds, B)``: the first k seeds and the subsets retrained with all of them, k chosen
        for the most (subset, seed) values (a game still being recorded trains seed 0 of
        every subset before seed 1)."""
        rows = [r for r in self.retrain if r["set"] == group]
        by = {(r["mask"], int(r["seed"])): r for r in rows}
        order = list(dict.fromkeys(r["mask"] for r in rows))
        seeds: list[int] = []
        masks: list[str] = []
        all_seeds = sorted({int(r["seed"]) for r in rows})
        for k in range(1, len(all_seeds) + 1):
            kept = [m for m in order if all((m, s) in by for s in all_seeds[:k])]
            if len(kept) * k > len(masks) * len(seeds):
                seeds, masks = all_seeds[:k], kept
        vals = {
            b: np.array([[float(by[(m, s)][b]) for m in masks] for s in seeds])
            for b in self.behaviors
        }
        return np.array([str_to_mask(m) for m in masks], bool).reshape(-1, self.n), vals


def load(path: Path = DATA) -> Game:
    """Read ``sft.csv``, ``retrain.csv`` and ``meta.json`` of a recorded game."""
    meta = json.loads((path / "meta.json").read_text())
    behaviors = list(meta["behaviors"])
    sft, seconds = {}, {}
    with (path / "sft.csv").open() as f:
        for row in csv.DictReader(f):
            sft[row["mask"]] = np.array([float(row[b]) for b in behaviors])
            seconds[row["mask"]] = float(row["t_total"])
    retrain = []
    if (path / "retrain.csv").exists():
        with (path / "retrain.csv").open() as f:
            retrain = list(csv.DictReader(f))
    return Game(
        players=list(meta["players"]),
        behaviors=behaviors,
        v0=meta["v0"],
        v1=meta["v1"],
        sft_all=meta.get("sft_all_players"),
        sft=sft,
        seconds=seconds,
        retrain=retrain,
        meta=meta,
    )


# --------------------------------------------------------------------------- ceilings


def exact_values(game: Game) -> dict[str, dict[str, np.ndarray]]:
    """Per definition and behavior: exact Shapley, Banzhaf, the datamodel over all
    alpha = 0.5 subsets and the additive least-squares fit over every coalition."""
    n = game.n
    z = all_subsets(n)
    half = z[z.sum(axis=1) == n // 2]
    out: dict[str, dict[str, np.ndarray]] = {"shapley": {}, "banzhaf": {}, "datamodel": {}}
    out["additive"] = {}
    for b in game.behaviors:
        t = game.table(b)
        out["shapley"][b] = shapley_from_table(t)
        out["banzhaf"][b] = banzhaf_from_table(t)
        y = game.values(half)[:, game.behaviors.index(b)]
        coef, *_ = np.linalg.lstsq(np.column_stack([half, np.ones(len(half))]), y, rcond=None)
        out["datamodel"][b] = coef[:n]  # identified up to a common shift (fixed size)
        inner = z[1:-1]
        y = game.values(inner)[:, game.behaviors.index(b)]
        coef, *_ = np.linalg.lstsq(np.column_stack([inner, np.ones(len(inner))]), y, rcond=None)
        out["additive"][b] = coef[:n]
    return out


def lds(values: np.ndarray, masks: np.ndarray, targets: np.ndarray) -> dict:
    s = lds_over_seeds(values, masks, targets, n_bootstrap=1000)
    return {"lds": s.mean, "ci95_boot": [s.bootstrap_low, s.bootstrap_high], "per_seed": s.per_seed}


def fidelity(game: Game) -> list[dict]:
    """Pearson / Spearman of sFT's recorded value against the retrained mean, per group."""
    from scipy.stats import pearsonr

    out = []
    for group in ("test", "small-large"):
        masks, vals = game.targets(group)
        if len(masks) < 3:
            continue
        sft = game.values(masks)
        for j, b in enumerate(game.behaviors):
            mean = vals[b].mean(axis=0)
            seeds = vals[b]
            row = {
                "group": group,
                "behavior": b,
                "subsets": int(len(masks)),
                "seeds": int(seeds.shape[0]),
                "pearson": float(pearsonr(sft[:, j], mean).statistic),
                "spearman": float(spearmanr(sft[:, j], mean).statistic),
            }
            if seeds.shape[0] > 1:  # retraining against itself: the noise ceiling
                row["seed_to_seed_spearman"] = float(
                    np.mean(
                        [
                            spearmanr(seeds[i], seeds[k]).statistic
                            for i in range(len(seeds))
                            for k in range(i + 1, len(seeds))
                        ]
                    )
                )
            out.append(row)
        if group != "small-large":
            continue
        sizes = masks.sum(axis=1)
        for size in sorted(set(sizes.tolist())):  # within one coalition size
            sel = sizes == size
            if sel.sum() < 3:
                continue
            for j, b in enumerate(game.behaviors):
                mean = vals[b][:, sel].mean(axis=0)
                out.append(
                    {
                        "group": f"{group}, size {size}",
                        "behavior": b,
                        "subsets": int(sel.sum()),
                        "seeds": int(vals[b].shape[0]),
                        "pearson": float(pearsonr(sft[sel, j], mean).statistic),
                        "spearman": float(spearmanr(sft[sel, j], mean).statistic),
                        "mean_sft": float(sft[sel, j].mean()),
                        "mean_retrained": float(mean.mean()),
                    }
                )
    return out


# --------------------------------------------------------------------------- estimators


def definition(settings: dict) -> str:
    name = settings["name"]
    if name in ("banzhaf", "banzhaf-msr"):
        return "banzhaf"
    if name == "datamodel":
        return "datamodel"
    if name == "loo":
        return "loo"
    return "shapley"


def fit_draw(game: Game, settings: dict, m: int, draw: int, test_set: set[str]):
    """One estimator on its own sampler's first ``m`` rows (seed = draw)."""
    cls = ESTIMATORS.get(settings["name"])
    s = ESTIMATORS.parse(
        {**settings, **({"use_exact": False} if "use_exact" in cls.model_fields else {})}
    )
    masks, pair_ids = s.draw(game.n, m, draw)
    keep = np.array([mask_to_str(x) not in test_set for x in masks], bool)
    table = CoalitionTable(
        masks[keep],
        game.values(masks[keep]),
        names=game.players,
        behaviors=game.behaviors,
        v0=[game.v0[b] for b in game.behaviors],
        v1=[game.v1[b] for b in game.behaviors],
        pair_ids=None if pair_ids is None else pair_ids[keep],
    )
    atts = s.build().fit(table)
    if s.name != "tree-shapley":  # the signals cost k + 2 refits: seconds for the trees
        for a, rel in zip(atts, assess(s, table, atts)):
            a.settings["reliability"] = rel.to_dict()
    return atts, table


def loo_exact(game: Game) -> dict[str, np.ndarray]:
    out = {}
    for b in game.behaviors:
        t = game.table(b)
        full = t[-1]
        out[b] = np.array([full - t[(2**game.n - 1) ^ (1 << i)] for i in range(game.n)])
    return out


def estimator_table(
    game: Game, grid: list[int], draws: int, only: list[str] | None, skip: list[str] | None = None
) -> dict:
    masks, targets = game.targets("test")
    test_set = {mask_to_str(m) for m in masks}
    exact = exact_values(game)
    exact["loo"] = loo_exact(game)
    rows, per_draw, signals = [], {}, []
    for label, settings in ESTIMATORS_COMPARED.items():
        if only and not any(o in label for o in only):
            continue
        if skip and any(o in label for o in skip):
            continue
        ref = exact[definition(settings)]
        budgets = [game.n] if settings["name"] == "loo" else grid
        for m in budgets:
            t0 = time.perf_counter()
            res = {b: {"spearman": [], "max_err": [], "lds": [], "reliability": []} for b in ref}
            errors = 0
            for d in range(1 if settings["name"] == "loo" else draws):
                try:
                    atts, _ = fit_draw(game, settings, m, d, test_set)
                except DiffattrError:
                    errors += 1
                    for b in ref:
                        per_draw.setdefault((label, m, b), []).append(float("nan"))
                    continue
                for a in atts:
                    b = a.behavior
                    v = a.values
                    res[b]["spearman"].append(float(spearmanr(v, ref[b]).statistic))
                    diff = v - ref[b]
                    if definition(settings) == "datamodel":  # identified up to a shift
                        diff = diff - diff.mean()
                    res[b]["max_err"].append(float(np.abs(diff).max()))
                    if len(masks) >= 3:
                        score = lds_over_seeds(v, masks, targets[b], n_bootstrap=0).mean
                        res[b]["lds"].append(score)
                        per_draw.setdefault((label, m, b), []).append(score)
                    rel = a.settings.get("reliability")
                    if rel:
                        res[b]["reliability"].append(rel)
                        signals.append({**rel, "spearman": res[b]["spearman"][-1]})
            for b, r in res.items():
                row = {
                    "estimator": label,
                    "settings": settings,
                    "M": m,
                    "behavior": b,
                    "draws": len(r["spearman"]),
                    "not_identified": errors,
                    "seconds_per_fit": (time.perf_counter() - t0) / max(1, draws),
                }
                for key in ("spearman", "max_err", "lds"):
                    a = np.array(r[key], float)
                    row[f"{key}_mean"] = float(np.nanmean(a)) if a.size else float("nan")
                    row[f"{key}_sd"] = float(np.nanstd(a, ddof=1)) if a.size > 1 else float("nan")
                if r["spearman"]:
                    row["spearman_min"] = float(np.nanmin(r["spearman"]))
                rows.append(row)
    return {"rows": rows, "per_draw": per_draw, "calibration": calibration(signals)}


def calibration(signals: list[dict]) -> list[dict]:
    """Does a run's reliability signal tell a good fit from a bad one? For each signal,
    over every fit that has it: the mean Spearman with the exact values of the fits below
    and above its threshold, and how many of the fits whose Spearman is below 0.8 it flags."""
    out = []
    for key, limit in THRESHOLDS.items():
        xs = [(s[key], s["spearman"]) for s in signals if s.get(key) is not None]
        if not xs:
            continue
        sig = np.array([x for x, _ in xs])
        rho = np.array([r for _, r in xs])
        low, bad = sig < limit, rho < 0.8
        out.append(
            {
                "signal": key,
                "threshold": limit,
                "fits": int(len(xs)),
                "flagged": int(low.sum()),
                "spearman_of_flagged": float(rho[low].mean()) if low.any() else None,
                "spearman_of_unflagged": float(rho[~low].mean()) if (~low).any() else None,
                "bad_fits": int(bad.sum()),
                "bad_fits_flagged": int((bad & low).sum()),
                "good_fits_flagged": int((~bad & low).sum()),
                "rank_correlation_with_spearman": float(spearmanr(sig, rho).statistic)
                if len(xs) > 2
                else None,
            }
        )
    return out


def paired(per_draw: dict, base: str, others: list[str], grid: list[int], behaviors) -> list:
    """LDS(other) - LDS(base) on the same draw index: mean and t-interval over draws."""
    from scipy.stats import t as student

    out = []
    for other in others:
        for m in grid:
            for b in behaviors:
                x = np.array(per_draw.get((other, m, b), []), float)
                y = np.array(per_draw.get((base, m, b), []), float)
                k = min(len(x), len(y))
                d = (x[:k] - y[:k])[np.isfinite(x[:k] - y[:k])]
                if len(d) < 2:
                    continue
                half = float(student.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
                out.append(
                    {
                        "estimator": other,
                        "minus": base,
                        "M": m,
                        "behavior": b,
                        "mean_diff": float(d.mean()),
                        "ci95": [float(d.mean() - half), float(d.mean() + half)],
                        "draws": int(len(d)),
                    }
                )
    return out


def ceilings(game: Game) -> list[dict]:
    masks, targets = game.targets("test")
    if len(masks) < 3:
        return []
    exact = exact_values(game)
    out = []
    for kind, per_b in exact.items():
        for b, v in per_b.items():
            out.append({"values": kind, "behavior": b, **lds(v, masks, targets[b])})
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["estimators"]["rows"]
    behaviors = sorted({r["behavior"] for r in rows})
    fig, axes = plt.subplots(2, len(behaviors), figsize=(6.5 * len(behaviors), 8.5), squeeze=False)
    ceil = {(c["values"], c["behavior"]): c["lds"] for c in result["ceilings"]}
    labels = [k for k in ESTIMATORS_COMPARED if any(r["estimator"] == k for r in rows)]
    colors = dict(zip(labels, plt.get_cmap("tab20").colors))
    for col, b in enumerate(behaviors):
        for row_i, key in enumerate(("spearman_mean", "lds_mean")):
            ax = axes[row_i][col]
            for label in labels:
                pts = sorted(
                    (r["M"], r[key])
                    for r in rows
                    if r["estimator"] == label and r["behavior"] == b and r["draws"]
                )
                if not pts or label == "loo":
                    continue
                style = "-" if "fitted" in label or "tree" in label else "--"
                ax.plot(*zip(*pts), style, marker="o", ms=3, label=label, color=colors[label])
            if key == "lds_mean" and ("shapley", b) in ceil:
                ax.axhline(ceil[("shapley", b)], color="k", lw=1, label="exact sFT-Shapley")
                ax.set_ylabel("LDS vs retraining")
            else:
                ax.set_ylabel("Spearman with exact values of its definition")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("coalitions M")
            ax.set_title(b)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--grid", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--only", nargs="*", default=None, help="estimator labels containing these")
    ap.add_argument("--skip", nargs="*", default=None, help="but not those containing these")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument(
        "--fidelity-only", action="store_true", help="print sFT's fidelity to retraining only"
    )
    ap.add_argument(
        "--plot-from",
        type=Path,
        nargs="+",
        default=None,
        help="draw --plot from these printed results (e.g. a run with --skip tree and one "
        "with --only tree) instead of computing",
    )
    args = ap.parse_args()
    if args.plot_from:
        if not args.plot:
            raise SystemExit("error: --plot-from needs --plot PATH")
        parts = [json.loads(p.read_text()) for p in args.plot_from]
        merged = {
            "estimators": {"rows": [r for x in parts for r in x["estimators"]["rows"]]},
            "ceilings": next((x["ceilings"] for x in parts if x["ceilings"]), []),
        }
        plot(merged, args.plot)
        return
    game = load(args.data)
    if args.fidelity_only:
        print(json.dumps({"fidelity": fidelity(game)}, indent=1))
        return
    if not game.complete:
        raise SystemExit(
            f"error: the recorded game holds {len(game.sft)} of {2**game.n - 2} coalitions; "
            "run benchmarks/complete_game.py to finish it"
        )
    t0 = time.perf_counter()
    table = estimator_table(game, args.grid, args.draws, args.only, args.skip)
    labels = [
        k
        for k in ESTIMATORS_COMPARED
        if (not args.only or any(o in k for o in args.only))
        and not (args.skip and any(o in k for o in args.skip))
    ]
    base = "shapley (paired kernel, iid, given ends: the paper's)"
    result = {
        "command": "python benchmarks/game.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("data", "plot_from")
        ),
        "fidelity": fidelity(game),
        "ceilings": ceilings(game),
        "estimators": {"rows": table["rows"]},
        "reliability_calibration": table["calibration"],
        "paired_vs_paper": paired(
            table["per_draw"], base, [x for x in labels if x != base], args.grid, game.behaviors
        ),
        "seconds": time.perf_counter() - t0,
    }
    if args.plot:
        plot(result, args.plot)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
