"""How far a fit's values can be trusted, from the fit's own rows (no retraining).

Three cheap signals, each recorded in an attribution's ``settings["reliability"]`` and
printed beside the ranked values:

* ``rank_stability`` -- the mean Spearman correlation between the values and the values
  perturbed by their own standard errors (``phi + se * eps``, 200 draws): how much of the
  ranking the sampling noise the fit reports leaves intact (needs standard errors);
* ``held_out_spearman`` -- ``folds``-fold cross-validation over sampling units (pairs,
  permutation chains, rows): the values fitted without a fold predict its coalitions as
  ``z'phi``; predictions and observed values are centred within each coalition size
  before the Spearman correlation is taken, because what attribution is judged on (LDS,
  counterfactual removal) compares coalitions of equal size, and across sizes any
  positive values would correlate with the size trend;
* ``halves_agreement`` -- the Spearman correlation between the values fitted on two random
  halves of the units: whether the ranking is a property of the game or of the draw.

A signal the rows cannot support (no standard errors, a fold or half too small to fit, a
fixed design such as leave-one-out) is None with its reason in ``notes``. Exact values
(a complete table) are stable by construction. Below :data:`THRESHOLDS` the run prints one
line saying so and what to do. The thresholds were read off the recorded complete game
(BENCHMARKS.md, "The recorded complete game"): below them the values' Spearman
correlation with the exact values of their own definition was usually under 0.8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from diffattr.errors import DiffattrError
from diffattr.estimators.table import CoalitionTable

#: Signal -> the value below which a run says the values are unreliable.
THRESHOLDS = {"rank_stability": 0.8, "held_out_spearman": 0.3, "halves_agreement": 0.5}
#: Above this many players the refits (folds, halves) are skipped: each costs a full fit.
MAX_PLAYERS_REFIT = 2000


@dataclass
class Reliability:
    """The signals of one fit (one behavior); None where not estimable (see ``notes``)."""

    rank_stability: float | None = None
    held_out_spearman: float | None = None
    halves_agreement: float | None = None
    folds: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank_stability": self.rank_stability,
            "held_out_spearman": self.held_out_spearman,
            "halves_agreement": self.halves_agreement,
            "folds": self.folds,
            "notes": list(self.notes),
            "below": self.below(),
        }

    def below(self) -> list[str]:
        """The signals under their threshold."""
        return [
            k for k, lim in THRESHOLDS.items() if (v := getattr(self, k)) is not None and v < lim
        ]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def rank_stability(values: np.ndarray, stderr: np.ndarray, seed: int = 0) -> float | None:
    """Mean Spearman of ``values`` with ``values + stderr * eps`` over 200 draws."""
    if values.size < 3 or not np.isfinite(stderr).all() or np.ptp(values) == 0:
        return None
    rng = np.random.default_rng(seed)
    draws = values[None, :] + stderr[None, :] * rng.standard_normal((200, values.size))
    out = [s for d in draws if (s := _spearman(values, d)) is not None]
    return float(np.mean(out)) if out else None


def sampling_units(table: CoalitionTable, settings: Any) -> np.ndarray:
    """The sampling unit of every row: its pair (``pair_ids``, or consecutive rows of a
    paired sampler), its permutation chain, or the row itself."""
    m, n = table.masks.shape
    if table.pair_ids is not None:
        return np.asarray(table.pair_ids, dtype=np.int64)
    sampler = getattr(settings, "sampler", None)
    if sampler is not None and sampler.name == "permutation" and n > 1:
        return np.arange(m) // (n - 1)
    if sampler is not None and sampler.is_paired:
        return np.arange(m) // 2
    return np.arange(m)


def _refit(settings: Any, table: CoalitionTable, rows: np.ndarray) -> list[np.ndarray]:
    sub = CoalitionTable(
        table.masks[rows],
        table.values[rows],
        names=table.names,
        behaviors=table.behaviors,
        v0=table.v0,
        v1=table.v1,
        pair_ids=None if table.pair_ids is None else table.pair_ids[rows],
    )
    cheap = {
        k: v for k, v in (("n_bootstrap", 0), ("stderr", False)) if k in type(settings).model_fields
    }
    fitted = settings.model_copy(update=cheap).build().fit(sub)
    return [a.values for a in (fitted if isinstance(fitted, list) else [fitted])]


def assess(
    settings: Any, table: CoalitionTable, attributions: list, folds: int = 5, seed: int = 0
) -> list[Reliability]:
    """One :class:`Reliability` per attribution (behavior column) of ``settings`` fitted on
    ``table``."""
    k = len(attributions)
    out = [Reliability(folds=0) for _ in range(k)]
    for r, a in zip(out, attributions):
        if a.settings.get("exact_table") or a.settings.get("exact"):
            r.rank_stability = r.held_out_spearman = r.halves_agreement = 1.0
            r.notes.append("exact values (every coalition in the table)")
        else:
            r.rank_stability = rank_stability(a.values, a.stderr, seed)
            if r.rank_stability is None:
                r.notes.append("rank stability: no standard errors")
    if all(a.settings.get("exact_table") or a.settings.get("exact") for a in attributions):
        return out
    sampler = getattr(settings, "sampler", None)
    if sampler is None or sampler.name in ("loo", "add-one-in"):
        for r in out:
            r.notes.append("held-out and halves: a fixed design (each coalition once)")
        return out
    if table.n_players > MAX_PLAYERS_REFIT:
        for r in out:
            r.notes.append(f"held-out and halves: skipped above {MAX_PLAYERS_REFIT} players")
        return out
    # rows that are the ends are not coalitions the fit reads
    sizes = table.masks.sum(axis=1)
    inner = np.flatnonzero((sizes > 0) & (sizes < table.n_players))
    units = sampling_units(table, settings)[inner]
    ids = np.unique(units)
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids)
    # k-fold over units: pooled held-out predictions, centred within sizes
    nf = min(folds, ids.size)
    pred = np.full((inner.size, k), np.nan)
    ok = nf >= 2
    for f in range(nf if ok else 0):
        held = np.isin(units, order[f::nf])
        try:
            vals = _refit(settings, table, inner[~held])
        except DiffattrError:
            ok = False
            break
        z = table.masks[inner[held]].astype(np.float64)
        pred[held] = np.column_stack([z @ v for v in vals])
    if ok:
        y = table.values[inner]
        s = sizes[inner]
        for j, r in enumerate(out):
            pc, yc = pred[:, j].copy(), y[:, j].copy()
            keep = np.zeros(s.size, bool)
            for size in np.unique(s):
                sel = s == size
                if sel.sum() >= 2:
                    pc[sel] -= pc[sel].mean()
                    yc[sel] -= yc[sel].mean()
                    keep |= sel
            r.held_out_spearman = _spearman(pc[keep], yc[keep])
            r.folds = nf
            if r.held_out_spearman is None:
                r.notes.append("held-out: too few coalitions of a repeated size")
    else:
        for r in out:
            r.notes.append(f"held-out: a fit without one of {max(nf, 2)} folds is not identified")
    # two halves
    half = np.isin(units, order[: ids.size // 2])
    try:
        a_vals = _refit(settings, table, inner[half])
        b_vals = _refit(settings, table, inner[~half])
        for r, va, vb in zip(out, a_vals, b_vals):
            r.halves_agreement = _spearman(va, vb)
    except DiffattrError:
        for r in out:
            r.notes.append("halves: half the coalitions do not identify the values")
    return out


def advice(name: str, behavior: str | None, rel: dict[str, Any]) -> str | None:
    """The one line a run prints when a signal is below its threshold (None otherwise);
    ``rel`` is ``Reliability.to_dict()`` (as stored in an attribution's settings)."""
    below = rel.get("below") or []
    if not below:
        return None
    parts = ", ".join(
        f"{k.replace('_', ' ')} {_short_below(rel[k], THRESHOLDS[k])} < {THRESHOLDS[k]}"
        for k in below
    )
    what = f"{name} values" + (f" of {behavior}" if behavior else "")
    return (
        f"{what} look unreliable ({parts}): add coalitions (--subsets, or --until-stderr with "
        "--max-subsets), or compare with another estimator (shapley-cv, datamodel)"
    )


def _short_below(value: float, limit: float) -> str:
    """``value`` (below ``limit``) with two decimals, or as many more as it takes not to
    print a number that reads as the limit itself (0.797 below 0.8: "0.797", not "0.80")."""
    for digits in range(2, 7):
        text = f"{value:.{digits}f}"
        if float(text) < limit:
            return text
    return repr(value)


def summary(rel: dict[str, Any]) -> str:
    """``rank stability 0.93 · held-out 0.71 (5 folds) · halves 0.62`` from ``to_dict()``."""
    parts = []
    for key, label in (
        ("rank_stability", "rank stability"),
        ("held_out_spearman", "held-out"),
        ("halves_agreement", "halves"),
    ):
        v = rel.get(key)
        text = "n/a" if v is None else f"{v:.2f}"
        if key == "held_out_spearman" and v is not None:
            text += f" ({rel.get('folds')} folds)"
        parts.append(f"{label} {text}")
    return " · ".join(parts)
