"""Whether the fits a command will make are identified -- checked before any training.

A run, ``diffattr lds`` and ``diffattr curve`` know the coalitions they will fit before
they train anything: each estimator's sampler rows (``settings.draw``; row ``r`` depends
only on the seed and ``r``), minus the rows equal to held-out test subsets (LDS, curve).
Whether those rows identify the values is a property of the rows alone, so it is decided
here the way the fit itself decides it: the estimator's own ``build().fit`` on a
:class:`~diffattr.estimators.CoalitionTable` of the planned rows with synthetic values
(a seeded random vector). The estimators raise a one-line ``DiffattrError`` naming the
rank when the rows cannot identify the values; that error is the answer ("not
identified"). No estimator math is repeated here.

Jobs that fail are not foreseen (every planned row is assumed to finish); a fit that then
lacks rows is reported by the command after the fact.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators import CoalitionTable
from diffattr.store import mask_to_str

#: Player counts above which no smallest number of coalitions is searched for (each try
#: is a fit over that many players); the estimator's own message says what to add.
SEARCH_MAX_PLAYERS = 512


def fit_problem(settings, masks: np.ndarray, pair_ids: np.ndarray | None) -> str | None:
    """Why ``settings``' estimator cannot be fitted on ``masks`` (with their ``pair_ids``):
    its one-line error, or None when the rows identify the values. Synthetic values stand
    in for the behaviors; bootstrap and standard errors are off (they do not change
    whether the values are identified)."""

    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[0] == 0:
        return "no coalitions are left to fit"
    n = masks.shape[1]
    fields = type(settings).model_fields
    update = {k: v for k, v in (("n_bootstrap", 0), ("stderr", False)) if k in fields}
    est = settings.model_copy(update=update) if update else settings
    values = np.random.default_rng(0).standard_normal(masks.shape[0])
    table = CoalitionTable(
        masks=masks,
        values=values,
        names=[str(i) for i in range(n)],
        v0=0.0,
        v1=1.0,
        pair_ids=pair_ids,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.build().fit(table)
        except DiffattrError as e:
            return " ".join(str(e).split())
        except np.linalg.LinAlgError as e:
            return f"the fit failed ({e})"
    return None


@dataclass
class Rows:
    """The rows one estimator will fit: drawn, and those left after dropping test masks."""

    drawn: int
    dropped: int
    problem: str | None  # None: identified


def planned_rows(
    settings, n_players: int, subsets: int, seed: int, exclude: Iterable[str] = ()
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The rows ``settings`` draws for ``n_players`` at ``subsets`` (the run's M; an
    estimator's own ``subsets`` wins) minus those whose mask string is in ``exclude``, their
    pair ids, and how many were drawn. Too few rows by count is the sampler's one-line
    error (``settings.draw``)."""
    masks, pair_ids = settings.draw(n_players, subsets, seed)
    excluded = set(exclude)
    keep = np.array([mask_to_str(r) not in excluded for r in masks], dtype=bool).reshape(-1)
    ids = None if pair_ids is None else np.asarray(pair_ids)[keep]
    return masks[keep], ids, len(masks)


def check_rows(
    settings, n_players: int, subsets: int, seed: int, exclude: Iterable[str] = ()
) -> Rows:
    """Whether the rows ``settings`` will fit identify the values (see ``Rows``); too few
    rows by count is a problem too."""
    try:
        masks, pair_ids, drawn = planned_rows(settings, n_players, subsets, seed, exclude)
    except DiffattrError as e:
        return Rows(0, 0, " ".join(str(e).split()))
    return Rows(drawn, drawn - len(masks), fit_problem(settings, masks, pair_ids))


def fixed_design(settings, n_players: int) -> bool:
    """Whether the sampler's number of rows ignores M (leave-one-out, add-one-in)."""
    free = settings.model_copy(update={"subsets": None})
    return free.rows_for(1, n_players) == free.rows_for(1_000_000, n_players)


def smallest_subsets(
    settings,
    n_players: int,
    subsets: int,
    seed: int,
    exclude: Iterable[str] = (),
    limit: int | None = None,
) -> int | None:
    """The smallest M above the current one whose rows (the same stream, extended: row r
    depends only on the seed and r) identify the values after dropping ``exclude``; None
    when the design is fixed, the players too many to search, or no M up to ``limit``
    (default ``max(4 M, 8 n, 64)``) does."""
    if n_players > SEARCH_MAX_PLAYERS or fixed_design(settings, n_players):
        return None
    excluded = set(exclude)
    m0 = settings.rows_for(subsets, n_players)
    limit = limit or search_limit(settings, n_players, subsets)

    def ok(m: int) -> bool:
        s = settings.model_copy(update={"subsets": m})
        return check_rows(s, n_players, m, seed, excluded).problem is None

    lo, hi = m0, max(m0 + 1, 2)
    while not ok(hi):
        if hi >= limit:
            return None
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:  # identified at hi, not at lo: rows only add rank
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def search_limit(settings, n_players: int, subsets: int) -> int:
    """How far ``smallest_subsets`` looks: ``max(4 M, 8 n, 64)`` rows."""
    m0 = settings.rows_for(subsets, n_players)
    return max(4 * m0, 8 * n_players, 64)


def require_identified(
    settings,
    n_players: int,
    subsets: int,
    seed: int,
    *,
    what: str,
    fix: Callable[[int], str],
    exclude: Iterable[str] = (),
    excluded_fix: str | None = None,
) -> None:
    """A one-line ``DiffattrError`` when the rows ``settings`` will fit (drawn at
    ``subsets``, minus ``exclude``) do not identify the values: ``what`` says which fit,
    the estimator's reason names the rank, and the remedy is ``fix(M)`` for the smallest M
    that identifies them, else ``excluded_fix`` when test subsets took rows away."""
    excluded = set(exclude)
    rows = check_rows(settings, n_players, subsets, seed, excluded)
    if rows.problem is None:
        return
    left = f" ({rows.dropped} equal to test subsets left out)" if rows.dropped else ""
    msg = (
        f"{what}: {settings.name} on {rows.drawn} coalitions{left} cannot identify the values "
        f"of {n_players} players: {rows.problem.rstrip('.')}"
    )
    m = smallest_subsets(settings, n_players, subsets, seed, excluded)
    if m is not None:
        msg += f"; the smallest M whose rows identify them is {m}: {fix(m)}"
    elif excluded and excluded_fix:
        limit = search_limit(settings, n_players, subsets)
        msg += (
            f"; no M up to {limit} identifies them once the rows equal to the "
            f"{len(excluded)} test subsets are left out: {excluded_fix}"
        )
    raise DiffattrError(msg)


def require_evaluation_fits(
    cfg, n_players: int, test_masks: Iterable[str], *, what: str, fix: Callable[[Any, int], str]
) -> None:
    """``require_identified`` for every coalition estimator of ``cfg`` at the run's M, with
    the rows equal to ``test_masks`` left out (LDS): ``fix(settings, M)`` says how to ask
    for M coalitions."""
    a = cfg.attribution
    excluded = set(test_masks)
    for est in a.fitted:
        require_identified(
            est,
            n_players,
            a.subsets,
            a.seed,
            what=what,
            fix=lambda m, est=est: fix(est, m),
            exclude=excluded,
            excluded_fix="use fewer --test-subsets or another --alpha",
        )
