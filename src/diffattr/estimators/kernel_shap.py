"""KernelSHAP in closed form (Lundberg & Lee 2017; Covert & Lee 2021; paper Eq. 5).

Shapley values solve the weighted least-squares problem
``min_phi sum_S mu(S) (v(S) - v0 - z_S'phi)^2`` subject to ``1'phi = v1 - v0`` over the
coalitions ``0 < |S| < n``, with the Shapley kernel ``mu(S) = (n-1) / (C(n,|S|) |S| (n-|S|))``
(Charnes et al. 1988; Lundberg & Lee 2017). A sample of rows ``z_r`` with weights
``w_r`` (summing to 1) estimates it; Covert & Lee (2021, eq. 7) give the solution

    A = sum_r w_r z_r z_r',   b = sum_r w_r z_r (y_r - v0),
    phi = A^{-1} (b - 1 (1'A^{-1} b - v1 + v0) / (1'A^{-1} 1)).

Weights follow the sampler in the estimator's settings:

* ``shapley-kernel`` rows drawn i.i.d. from the kernel itself (``replace = true``) weigh
  ``1/M`` each (Covert & Lee 2021, eq. 7); drawn without replacement (the default), they
  are post-stratified by size class like leverage rows (inclusion is uniform within a
  class, not across classes);
* ``leverage`` rows (Musco & Witter 2025; ``diffattr.coalitions.LeverageSampler``) are
  post-stratified by class: :func:`leverage_weights`.

Weight 1 is right only for rows drawn from the kernel, so a table must be fitted with the
sampler that drew it (the estimator's ``sampler`` setting; ``diffattr estimate
--sampler``): kernel weights on leverage rows over-weight the middle sizes and are biased.
(Post-stratified weights would also be consistent on kernel rows, which are uniform within
a size; ``shapley`` keeps Covert & Lee's weights for them, as the paper does.)

Rows whose mask is empty or full are excluded (the kernel gives them no weight: they
enter only through the constraint).

Endpoints (``endpoints``). ``"given"`` is the fit above: the constraint carries the true
``v0`` and ``v1``. With sampled rows, ``d phi / d v0 = -u`` with ``u = A^{-1} 1 / (1'A^{-1}
1)``, whose entries are ``1/n`` only in the limit; at ``n = 10`` and ``M = 64`` they spread
over more than their own size, so a ``v0`` (or ``v1``) far off the trend of the sampled
coalitions -- an untrained null model -- hands its gap to players at random.
``"fitted"`` (an endpoint control variate) fits the kernel-weighted regression with a free
intercept and no constraint, ``min_{phi, b} sum_r w_r (y_r - b - z_r'phi)^2``, i.e. with
both endpoints on the trend of the rows, then adds the same constant to every ``phi_i`` so
that ``sum phi = v1 - v0`` holds exactly with the true endpoints. The limit is unchanged:
over every coalition the free fit is the constrained one at the best endpoints ``(b, b +
1'phi)`` (Charnes et al. 1988), i.e. the exact Shapley values of the game with ``v(∅)`` and
``v(N)`` replaced, and replacing an endpoint moves every exact ``phi_i`` by the same amount
(``v(∅)`` enters every player's marginal at ``S = ∅`` with weight ``1/n``), which the shift
puts back. On a complete table it equals the exact values for any endpoints. It needs one
more direction than ``"given"``: ``n`` distinct pairs (``n + 1`` unpaired rows).

Identification. The constrained problem has one solution iff the rows and the all-ones
vector span R^n (``rank [Z; 1'] = n``). ``A`` is replaced by ``A + c 1 1'``, which leaves
the solution unchanged on ``1'phi = v1 - v0`` and is positive definite exactly when the
problem is identified; it is factored by Cholesky (with a LAPACK condition estimate) or,
when that is ill-conditioned, by an eigendecomposition that gives its rank. A rank below
``n`` is an error naming the rank and how many coalitions to sample — never a silent
pseudo-inverse. With paired rows every pair adds one direction besides ``1``, so
``n - 1`` distinct pairs (``2(n-1)`` rows) are needed; unpaired rows need ``n - 1``.
``settings`` records ``solver``, ``rank`` and ``identified`` for every fit.

Pairs (Covert & Lee 2021, paired sampling): rows of a pair are a mask and its complement.
They come from the table's ``pair_ids`` (rows sharing an id), or, without ids, from
consecutive complementary rows (the order paired samplers write). A row whose partner is
missing (a failed job, a row dropped because it equals an LDS test mask) is dropped too,
and the rest of the table stays paired (``rows_unpaired_dropped``). ``paired="auto"``
uses pairs when ``pair_ids`` are given or when consecutive complementary rows make up at
least 3/4 of the usable rows; ``True`` requires pairs; ``False`` treats rows as
independent.

Standard errors (default: closed form). Linearising eq. 7 around its limit gives
``phi_hat - phi ≈ C sum_u g_u`` with ``g_u = sum_{r in u} w_r z_r (y_r - v0 - z_r'phi)``
over sampling units ``u`` (rows, or pairs) and ``C = A^{-1} - A^{-1} 1 1' A^{-1} /
(1'A^{-1} 1)`` — the sandwich form Covert & Lee (2021, Sec. 4) use. ``Var(sum_u g_u)`` is
estimated as if the ``U`` units were drawn with replacement (Hansen–Hurwitz), which for
leverage rows ignores the stratification and is conservative, and scaled by
``U / (U - q)`` for the ``q`` fitted directions (``n - 1``; with fitted endpoints ``n +
1``, or ``n`` for pairs, whose intercept only fits the pair sums; their ``C`` is ``P
G^{-1}`` restricted to the players, ``G`` the Gram matrix of ``(z, 1)`` and ``P = I - 1
1'/n`` the shift). Rule: the residual degrees of freedom are the
*distinct* sampling units minus ``q``; below :data:`MIN_RESIDUAL_DOF` the residuals cannot
support a variance estimate (with one or two they are often exactly zero, and a repeated
unit adds nothing), so the standard error is NaN and ``stderr_method`` says why.
``n_bootstrap > 0`` replaces the closed form by a bootstrap over units; ``stderr=False``
skips standard errors (NaN) — the closed form costs about as much as the point estimate
for large ``n``.

Large tables: with uniform weights ``Z'Z`` is accumulated chunk by chunk with BLAS
``syrk`` on 0/1 float32 blocks, which is exact while ``M < 2^24`` (counts are integers),
then held in float64; with paired rows only the first row of each pair enters the product
(``kernel_gram``). Weighted rows use float64 ``syrk`` on ``sqrt(w) z``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.linalg import (
    _CHUNK,
    MIN_RESIDUAL_DOF,
    ConstrainedSolution,
    Strata,
    constrained_solve,
    efficient,
    free_solve,
    gram_binary,
    gram_float,
    sandwich_variance,
)
from diffattr.estimators.settings import ShapleySettings
from diffattr.estimators.table import CoalitionTable

#: Fraction of usable rows that must lie in consecutive complementary pairs for
#: ``paired="auto"`` to read a table without ``pair_ids`` as paired.
AUTO_PAIRED_FRACTION = 0.75


def kernel_gram(z: np.ndarray, paired: bool, chunk_rows: int = _CHUNK) -> np.ndarray:
    """``Z'Z``; for complement pairs (rows ``2j``, ``2j+1``) from half the rows.

    A pair ``(x, 1 - x)`` contributes ``x x' + (1-x)(1-x)' = 2 x x' - x 1' - 1 x' + 1 1'``,
    so ``Z'Z = 2 X'X - s 1' - 1 s' + U 1 1'`` with ``X`` the first rows of the ``U`` pairs
    and ``s = X'1`` — half the BLAS work of the direct product.
    """
    if not paired:
        return gram_binary(z, chunk_rows)
    first = z[0::2]
    a = gram_binary(first, chunk_rows)
    col = first.sum(axis=0).astype(np.float64)
    a *= 2.0
    a -= col[:, None]
    a -= col[None, :]
    a += float(first.shape[0])
    return a


def weighted_gram(
    z: np.ndarray, w: np.ndarray | None, paired: bool, chunk_rows: int = _CHUNK
) -> np.ndarray:
    """``sum_r w_r z_r z_r'``; ``w`` None means ``1/M`` each (exact integer path)."""
    m = z.shape[0]
    if w is None:
        a = kernel_gram(z, paired, chunk_rows)
        a /= m
        return a
    scale = float(m)  # keep entries near 1 inside the BLAS call

    def chunks():
        for s in range(0, m, chunk_rows):
            yield z[s : s + chunk_rows] * np.sqrt(w[s : s + chunk_rows] * scale)[:, None]

    a, _, _ = gram_float(chunks(), z.shape[1])
    a /= scale
    return a


def weighted_zt_y(
    z: np.ndarray, y: np.ndarray, w: np.ndarray | None, chunk_rows: int = _CHUNK
) -> np.ndarray:
    """``sum_r w_r z_r y_r'`` ``(n, K)``; ``w`` None means ``1/M`` each."""
    m = z.shape[0]
    out = np.zeros((z.shape[1], y.shape[1]))
    for s in range(0, m, chunk_rows):
        yy = (
            y[s : s + chunk_rows]
            if w is None
            else y[s : s + chunk_rows] * w[s : s + chunk_rows, None]
        )
        out += z[s : s + chunk_rows].astype(np.float64).T @ yy
    if w is None:
        out /= m
    return out


# --------------------------------------------------------------------------- pairs


def adjacent_pairs(z: np.ndarray, chunk_rows: int = _CHUNK) -> np.ndarray:
    """Start rows ``i`` of consecutive complementary pairs ``(i, i+1)``, matched greedily
    from the top; a row whose neighbour is not its complement is left out."""
    m = z.shape[0]
    if m < 2:
        return np.zeros(0, dtype=np.int64)
    comp = np.zeros(m - 1, dtype=bool)
    for s in range(0, m - 1, chunk_rows):
        e = min(s + chunk_rows, m - 1)
        comp[s:e] = (z[s + 1 : e + 1] != z[s:e]).all(axis=1)
    starts = []
    i = 0
    cand = np.flatnonzero(comp)
    # greedy: a pair (i, i+1) blocks a pair starting at i+1
    last_end = -1
    for i in cand:
        if i > last_end:
            starts.append(i)
            last_end = i + 1
    return np.asarray(starts, dtype=np.int64)


def pairs_from_ids(z: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first rows, second rows)`` of the complete pairs named by ``ids``.

    An id held by one row is a pair with a missing partner (left out); an id held by two
    rows that are not complements, or by more than two rows, is an error.
    """
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    bounds = np.flatnonzero(np.diff(sid)) + 1
    groups = np.split(order, bounds)
    first, second = [], []
    for g in groups:
        if g.size == 1:
            continue
        if g.size > 2:
            raise DiffattrError(
                f"pair id {int(ids[g[0]])} is held by {g.size} rows; a pair has two"
            )
        a, b = int(g[0]), int(g[1])
        if not (z[a] != z[b]).all():
            raise DiffattrError(
                f"pair id {int(ids[a])} holds rows {a} and {b}, which are not a mask and "
                "its complement"
            )
        first.append(a)
        second.append(b)
    return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


@dataclass
class KernelRows:
    """The rows a KernelSHAP fit uses.

    ``z`` ``(m, n)`` bool and ``y`` ``(m, K)`` (values minus ``v0``); with ``paired`` rows
    ``2j`` and ``2j+1`` are pair ``j``. ``w`` ``(m,)`` weights summing to 1, or None for
    ``1/m`` each. ``info`` goes into the attribution settings.
    """

    z: np.ndarray
    y: np.ndarray
    w: np.ndarray | None
    paired: bool
    info: dict[str, Any] = field(default_factory=dict)
    strata: Strata | None = None  # post-stratified rows: the design of their variance

    @property
    def n_units(self) -> int:
        return self.z.shape[0] // 2 if self.paired else self.z.shape[0]

    def unit_rows(self, units: np.ndarray) -> np.ndarray:
        """Row indices of the given units (both rows of a pair)."""
        if not self.paired:
            return units
        return (units[:, None] * 2 + np.arange(2)).reshape(-1)

    def weights(self) -> np.ndarray:
        return np.full(self.z.shape[0], 1.0 / self.z.shape[0]) if self.w is None else self.w


def size_strata(z: np.ndarray, paired: bool) -> Strata | None:
    """The size classes of post-stratified rows as strata of their sampling units (pairs:
    ``min(|S|, n - |S|)``; rows: ``|S|``), for the stratified sandwich: ``scale`` is
    ``(1 - f_h) U_h / (U_h - 1)`` with ``f_h`` the sampled fraction of the class's
    coalitions (0 when a unit repeats: then the rows were not drawn without replacement).
    Strata of one unit are pooled (without a finite-population correction). None when
    fewer than two units remain in some stratum."""
    n = z.shape[1]
    first = z[0::2] if paired else z
    sizes = first.sum(axis=1)
    cls = np.minimum(sizes, n - sizes) if paired else sizes
    if first.shape[0] == 0:
        return None
    labels, ids = np.unique(cls, return_inverse=True)
    ids = ids.reshape(-1)
    counts = np.bincount(ids)
    single = counts[ids] == 1
    if single.any():  # pool one-unit strata into one (or into the largest, if alone)
        target = labels.size if single.sum() > 1 else int(np.argmax(counts))
        ids = np.where(single, target, ids)
        labels = np.append(labels, -1) if single.sum() > 1 else labels
    _, ids = np.unique(ids, return_inverse=True)
    ids = ids.reshape(-1)
    h = int(ids.max()) + 1
    counts = np.bincount(ids, minlength=h).astype(np.float64)
    if (counts < 2).any():
        return None
    scale = counts / (counts - 1.0)
    named = first if not paired else np.where(first[:, :1], first, ~first)
    packed = np.packbits(named, axis=1)
    for j in range(h):
        members = np.flatnonzero(ids == j)
        sizes_j = np.unique(cls[members])
        if sizes_j.size != 1:
            continue  # a pooled stratum: no finite-population correction
        k = int(sizes_j[0])
        total = math.comb(n, k) // (2 if paired and 2 * k == n else 1)
        distinct = np.unique(packed[members], axis=0).shape[0]
        if distinct == members.size:
            scale[j] *= 1.0 - distinct / total
    return Strata(ids, scale)


def leverage_weights(z: np.ndarray, paired: bool) -> tuple[np.ndarray, int]:
    """Post-stratified row weights for leverage-sampled rows (Musco & Witter 2025).

    The kernel mass of all coalitions of size ``s`` is ``K_s = (n-1) / (s (n-s))``. Paired
    rows: a pair's class is ``k = min(|S|, n-|S|)``; each row of the ``u_k`` sampled pairs
    of class ``k`` weighs ``K_k / u_k`` (``K_k / (2 u_k)`` when ``2k = n``, whose pairs hold
    two rows of one size). Unpaired rows: a row of size ``s`` weighs ``K_s / u_s``. The
    weights are the kernel weight over the (post-stratified) inclusion probability, so a
    class that holds every one of its coalitions is weighted exactly. Returns the weights
    (normalised to sum 1) and the number of classes present.
    """
    n = z.shape[1]
    sizes = z.sum(axis=1)
    if paired:
        cls = np.minimum(sizes[0::2], n - sizes[0::2])
        counts = np.bincount(cls, minlength=n // 2 + 1).astype(np.float64)
        mass = (n - 1) / (cls * (n - cls)) / counts[cls]
        mass = np.where(2 * cls == n, mass / 2.0, mass)
        w = np.repeat(mass, 2)
    else:
        counts = np.bincount(sizes, minlength=n + 1).astype(np.float64)
        w = (n - 1) / (sizes * (n - sizes)) / counts[sizes]
    return w / w.sum(), int((counts > 0).sum())


def kernel_rows(
    table: CoalitionTable,
    v0: np.ndarray,
    paired_setting: bool | str,
    weighting: str,
    chunk_rows: int = _CHUNK,
) -> KernelRows:
    """Select, pair and weight the rows of ``table`` for KernelSHAP (module doc)."""
    z = table.masks
    m, n = z.shape
    sizes = z.sum(axis=1)
    keep = (sizes > 0) & (sizes < n)
    n_ends = int((~keep).sum())
    info: dict[str, Any] = {"rows_excluded": n_ends}
    rows: np.ndarray | None = None  # None: every row, in table order
    paired = False
    pairing = "none"
    dropped = 0
    if paired_setting is not False:
        usable = np.flatnonzero(keep)
        if table.pair_ids is not None:
            a, b = pairs_from_ids(z, table.pair_ids)
            ok = keep[a] & keep[b]
            a, b = a[ok], b[ok]
            pairing = "pair_ids"
        else:
            zu = z if n_ends == 0 else z[usable]
            starts = adjacent_pairs(zu, chunk_rows)
            a, b = usable[starts], usable[starts + 1]
            pairing = "adjacent rows"
        use_pairs = a.size > 0 and (
            paired_setting is True
            or pairing == "pair_ids"
            or 2 * a.size >= AUTO_PAIRED_FRACTION * usable.size
        )
        if paired_setting is True and a.size == 0:
            raise DiffattrError(
                "paired=true but no row has its complement as partner (give pair_ids or "
                "consecutive (mask, complement) rows)"
            )
        if use_pairs:
            paired = True
            rows = np.empty(2 * a.size, dtype=np.int64)
            rows[0::2], rows[1::2] = a, b
            dropped = int(usable.size - rows.size)
            if n_ends == 0 and dropped == 0 and np.array_equal(rows, np.arange(m)):
                rows = None
        else:
            pairing = "none"
    if not paired:
        rows = None if n_ends == 0 else np.flatnonzero(keep)
    zk = z if rows is None else z[rows]
    yk = (table.values if rows is None else table.values[rows]) - v0
    info.update(paired=paired, pairing=pairing, rows_unpaired_dropped=dropped)
    if paired:
        info["pairs"] = int(zk.shape[0] // 2)
    w = None
    if weighting == "leverage":
        if zk.shape[0]:
            w, strata = leverage_weights(zk, paired)
            info["strata"] = strata
    elif weighting != "kernel":
        raise DiffattrError(f"unknown KernelSHAP weighting {weighting!r}")
    info["weighting"] = weighting
    strata = size_strata(zk, paired) if w is not None else None
    return KernelRows(zk, yk, w, paired, info, strata)


def weighting_of(settings: ShapleySettings) -> str:
    """``"leverage"`` (post-stratified by size class) for leverage rows and for Shapley-kernel
    rows drawn without replacement, else ``"kernel"`` (weight 1 per i.i.d. row)."""
    sampler = settings.sampler
    if sampler.name == "leverage" or not getattr(sampler, "replace", True):
        return "leverage"
    return "kernel"


# --------------------------------------------------------------------------- solving


def with_intercept(
    a: np.ndarray, b: np.ndarray, rows: KernelRows, chunk_rows: int = _CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """The weighted Gram matrix and right-hand side of ``(z, 1)`` from those of ``z``:
    ``[[A, Z'w], [w'Z, 1'w]]`` and ``[Z'Wy; w'y]``."""
    n = a.shape[0]
    w = rows.weights()
    zw = weighted_zt_y(rows.z, np.ones((rows.z.shape[0], 1)), rows.w, chunk_rows)[:, 0]
    g = np.empty((n + 1, n + 1))
    g[:n, :n] = a
    g[:n, n] = g[n, :n] = zw
    g[n, n] = float(w.sum())
    rhs = np.vstack([b, (w[:, None] * rows.y).sum(axis=0, keepdims=True)])
    return g, rhs


def distinct_units(z: np.ndarray, paired: bool) -> int:
    """Distinct sampling units of a table (a pair is named by its member holding player 0)."""
    if z.shape[0] == 0:
        return 0
    first = z[0::2] if paired else z
    if paired:
        first = np.where(first[:, :1], first, ~first)
    return int(np.unique(np.packbits(first, axis=1), axis=0).shape[0])


def fitted_directions(n: int, fitted: bool, paired: bool) -> int:
    """Directions a fit spends on the residuals: ``n - 1`` (given endpoints: ``n`` values,
    one constraint), ``n + 1`` (fitted: ``n`` values and the intercept), or ``n`` for fitted
    pairs, whose intercept fits only the pair sums, which no player value depends on."""
    if not fitted:
        return n - 1
    return n if paired else n + 1


def residual_dof(rows: KernelRows, q: int) -> int:
    """Distinct sampling units minus ``q`` fitted directions (module doc's rule)."""
    return distinct_units(rows.z, rows.paired) - q


def not_identified(
    m: int, n: int, rank: int, need: int, paired: bool, extra: str = "", p: int | None = None
) -> DiffattrError:
    """The one-line error of a rank-deficient KernelSHAP design (``p`` unknowns; ``n``, or
    ``n + 1`` with fitted endpoints)."""
    p = n if p is None else p
    unit = 2 if paired else 1
    more = max(need, m + unit * (p - rank))
    kind = "paired rows" if paired else "rows"
    return DiffattrError(
        f"KernelSHAP on {m} {kind} over {n} players is not identified (rank {rank} < {p}); "
        f"sample at least {more} coalitions{extra}"
    )


#: Largest strata x parameters for the stratified variance (per-stratum sums in memory).
class KernelShap(Estimator):
    """KernelSHAP closed form (Covert & Lee 2021, eq. 7); registry name ``shapley``.

    Settings: :class:`~diffattr.estimators.settings.ShapleySettings`. Needs ``v0`` and
    ``v1``; identified from ``2(n-1)`` paired rows or ``n-1`` unpaired ones (module doc).
    """

    settings_class = ShapleySettings
    needs_v0 = True
    needs_v1 = True
    exact_kind = "shapley"
    settings: ShapleySettings

    def min_rows(self, n_players: int) -> int:
        if n_players <= 1:
            return 0
        paired = self.settings.paired is True or (
            self.settings.paired == "auto" and self.settings.sampler.is_paired
        )
        if self.settings.endpoints == "given":  # n unknowns, one constraint
            return 2 * (n_players - 1) if paired else n_players - 1
        # n + 1 unknowns, no constraint: a pair adds one direction beside the pair sums'
        return 2 * n_players if paired else n_players + 1

    def _rows(self, table: CoalitionTable, v0: np.ndarray) -> KernelRows:
        return kernel_rows(
            table, v0, self.settings.paired, weighting_of(self.settings), self.settings.chunk_rows
        )

    def _solve(self, rows: KernelRows, totals: np.ndarray) -> ConstrainedSolution:
        """The fit of eq. 7 (``endpoints="given"``) or the free fit with an intercept as the
        last entry (``"fitted"``; module doc); ``theta[:n]`` are the raw player values."""
        chunk = self.settings.chunk_rows
        a = weighted_gram(rows.z, rows.w, rows.paired, chunk)
        b = weighted_zt_y(rows.z, rows.y, rows.w, chunk)
        if self.settings.endpoints == "given":
            return constrained_solve(a, b, totals, overwrite_a=True)
        g, rhs = with_intercept(a, b, rows, chunk)
        del a
        return free_solve(g, rhs, rows.z.shape[1], overwrite_a=True)

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        assert v0 is not None and v1 is not None
        n, k = table.n_players, table.n_behaviors
        totals = v1 - v0
        if n == 1:
            vals = totals[:, None].copy()
            info = {"rows_used": 0, "solver": "none (one player)", "rank": 1, "identified": True}
            return Fit(vals, np.full_like(vals, np.nan), info)
        rows = self._rows(table, v0)
        info = dict(rows.info)
        m = rows.z.shape[0]
        fitted = self.settings.endpoints == "fitted"
        p = n + 1 if fitted else n
        if m == 0:
            raise not_identified(0, n, 1, self.min_rows(n), rows.paired, _dropped(info), p)
        sol = self._solve(rows, totals)
        info.update(rows_used=m, solver=sol.solver.method, rank=sol.solver.rank)
        info["identified"] = sol.solver.identified
        info["endpoints"] = self.settings.endpoints
        if not sol.solver.identified:
            raise not_identified(
                m, n, sol.solver.rank, self.min_rows(n), rows.paired, _dropped(info), p
            )
        phi = efficient(sol.theta[:n], totals)
        if fitted:
            # the fitted endpoints, as values of the empty and the full coalition
            info["fitted_v0"] = (sol.theta[n] + v0).tolist()
            info["fitted_v1"] = (sol.theta[n] + sol.theta[:n].sum(axis=0) + v0).tolist()
        if self.settings.n_bootstrap > 0:
            se = self._bootstrap(rows, totals, k, n)
            info["stderr_method"] = "bootstrap"
        elif self.settings.stderr:
            se, info["stderr_method"] = self._sandwich(rows, sol)
            info["stderr_dof"] = residual_dof(rows, fitted_directions(n, fitted, rows.paired))
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(phi.T, se, info)

    def _bootstrap(self, rows: KernelRows, totals: np.ndarray, k: int, n: int) -> np.ndarray:
        weighting = "leverage" if rows.w is not None else "kernel"

        def refit(idx: np.ndarray) -> np.ndarray:
            r = rows.unit_rows(idx)
            zb = rows.z[r]
            wb = leverage_weights(zb, rows.paired)[0] if weighting == "leverage" else None
            sol = self._solve(KernelRows(zb, rows.y[r], wb, rows.paired), totals)
            if not sol.solver.identified:
                raise DiffattrError("bootstrap resample not identified")
            return efficient(sol.theta[:n], totals).T

        return bootstrap_std(
            refit, rows.n_units, self.settings.n_bootstrap, self.settings.seed, (k, n)
        )

    def _sandwich(self, rows: KernelRows, sol: ConstrainedSolution) -> tuple[np.ndarray, str]:
        """Unit scores ``g_u`` per behavior, then ``diag(C Var C')`` (module doc); NaN with
        fewer than :data:`MIN_RESIDUAL_DOF` residual degrees of freedom."""
        m, n = rows.z.shape
        theta = sol.theta
        k = theta.shape[1]
        fitted = not sol.constrained
        q = fitted_directions(n, fitted, rows.paired)
        u = rows.n_units
        se = np.full((k, n), np.nan)
        dof = residual_dof(rows, q)
        if dof < MIN_RESIDUAL_DOF:
            return se, (
                f"not estimable: {dof} residual degrees of freedom "
                f"(distinct units - fitted directions < {MIN_RESIDUAL_DOF})"
            )
        c = sol.restricted_inverse()
        if fitted:  # players' rows of G^{-1}, then the shift P = I - 11'/n
            c = c[:n]
            c = c - c.mean(axis=0, keepdims=True)
        w = rows.weights()
        step = max(2, self.settings.chunk_rows - self.settings.chunk_rows % 2)
        for j in range(k):

            def units(j: int = j):
                for s in range(0, m, step):
                    x = rows.z[s : s + step].astype(np.float64)
                    r = rows.y[s : s + step, j] - x @ theta[:n, j]
                    if fitted:
                        r = r - theta[n, j]
                        x = np.hstack([x, np.ones((x.shape[0], 1))])
                    g = x * (w[s : s + step] * r * u)[:, None]  # scaled by U: O(1) entries
                    yield g[0::2] + g[1::2] if rows.paired else g

            var = sandwich_variance(units(), c, u, q, single=n >= 512, strata=rows.strata)
            if var is None:
                return se, "not estimable: no residual degrees of freedom"
            se[j] = np.sqrt(var / u)
        return se, "sandwich"


def _dropped(info: dict[str, Any]) -> str:
    parts = []
    if info.get("rows_excluded"):
        parts.append(f"{info['rows_excluded']} empty or full rows")
    if info.get("rows_unpaired_dropped"):
        parts.append(f"{info['rows_unpaired_dropped']} rows without their pair partner")
    return f" (not used: {' and '.join(parts)})" if parts else ""
