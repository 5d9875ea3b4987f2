"""KernelSHAP in closed form (Lundberg & Lee 2017; Covert & Lee 2021; paper Eq. 5).

Shapley values solve the weighted least-squares problem
``min_phi sum_S mu(S) (v(S) - v0 - z_S'phi)^2`` subject to ``1'phi = v1 - v0`` over the
coalitions ``0 < |S| < n``, with the Shapley kernel ``mu(S) = (n-1) / (C(n,|S|) |S| (n-|S|))``
(Charnes et al. 1988; Lundberg & Lee 2017). A sample of rows ``z_r`` with weights
``w_r`` (summing to 1) estimates it; Covert & Lee (2021, eq. 7) give the solution

    A = sum_r w_r z_r z_r',   b = sum_r w_r z_r (y_r - v0),
    phi = A^{-1} (b - 1 (1'A^{-1} b - v1 + v0) / (1'A^{-1} 1)).

Weights follow the sampler in the estimator's settings:

* ``shapley-kernel`` rows are drawn from the kernel itself, so every row weighs ``1/M``
  (Covert & Lee 2021, eq. 7);
* ``leverage`` rows (Musco & Witter 2025; ``diffattr.coalitions.LeverageSampler``) are
  post-stratified by class: :func:`leverage_weights`.

Weight 1 is right only for rows drawn from the kernel, so a table must be fitted with the
sampler that drew it (the estimator's ``sampler`` setting; ``diffattr estimate
--sampler``): kernel weights on leverage rows over-weight the middle sizes and are biased.
(Post-stratified weights would also be consistent on kernel rows, which are uniform within
a size; ``shapley`` keeps Covert & Lee's weights for them, as the paper does.)

Rows whose mask is empty or full are excluded (the kernel gives them no weight: they
enter only through the constraint).

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
``U / (U - (n-1))`` for the ``n - 1`` fitted directions. With no residual degrees of
freedom (``U <= n - 1``) the standard error is NaN. ``n_bootstrap > 0`` replaces the closed
form by a bootstrap over units; ``stderr=False`` skips standard errors (NaN) — the closed
form costs about as much as the point estimate for large ``n``.

Large tables: with uniform weights ``Z'Z`` is accumulated chunk by chunk with BLAS
``syrk`` on 0/1 float32 blocks, which is exact while ``M < 2^24`` (counts are integers),
then held in float64; with paired rows only the first row of each pair enters the product
(``kernel_gram``). Weighted rows use float64 ``syrk`` on ``sqrt(w) z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas, lapack

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.settings import ShapleySettings
from diffattr.estimators.table import CoalitionTable

_CHUNK = 4096
#: Reciprocal condition number below which a system counts as not identified.
RCOND_MIN = 1e-10
#: Fraction of usable rows that must lie in consecutive complementary pairs for
#: ``paired="auto"`` to read a table without ``pair_ids`` as paired.
AUTO_PAIRED_FRACTION = 0.75


def _mirror_upper(c: np.ndarray, block: int = 2048) -> np.ndarray:
    """Copy the upper triangle of ``c`` onto its lower triangle, in place."""
    n = c.shape[0]
    for s in range(0, n, block):
        e = min(s + block, n)
        c[s:e, :s] = c[:s, s:e].T
        sub = c[s:e, s:e]
        sub[:] = np.triu(sub) + np.triu(sub, 1).T
    return c


def gram_binary(z: np.ndarray, chunk_rows: int = _CHUNK) -> np.ndarray:
    """``Z'Z`` (float64 ``(n, n)``) of a 0/1 matrix, accumulated in chunks with ``syrk``."""
    m, n = z.shape
    exact32 = m < (1 << 24)
    dtype = np.float32 if exact32 else np.float64
    syrk = blas.ssyrk if exact32 else blas.dsyrk
    c = np.zeros((n, n), dtype=dtype, order="F")
    for s in range(0, m, chunk_rows):
        x = np.ascontiguousarray(z[s : s + chunk_rows], dtype=dtype)
        c = syrk(1.0, x.T, beta=1.0, c=c, trans=0, lower=0, overwrite_c=1)
    out = np.asarray(c, dtype=np.float64, order="C")
    del c
    return _mirror_upper(out)


def gram_float(chunks: Any, n: int, single: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """``(G'G, sum of rows, rows)`` over chunks ``(r, n)`` of ``G``, with BLAS ``syrk``.

    ``single=True`` forms each chunk's product in float32 (twice as fast) and adds it to a
    float64 total, so rounding does not build up across chunks; use it for centred data
    where ~1e-6 relative precision is enough (standard errors).
    """
    out = np.zeros((n, n), dtype=np.float64, order="F")
    buf = np.zeros((n, n), dtype=np.float32, order="F") if single else None
    total = np.zeros(n)
    rows = 0
    for g in chunks:
        if buf is not None:
            g32 = np.ascontiguousarray(g, dtype=np.float32)
            buf = blas.ssyrk(1.0, g32.T, beta=0.0, c=buf, trans=0, lower=0, overwrite_c=1)
            out += buf
        else:
            g = np.ascontiguousarray(g, dtype=np.float64)
            out = blas.dsyrk(1.0, g.T, beta=1.0, c=out, trans=0, lower=0, overwrite_c=1)
        total += np.asarray(g, dtype=np.float64).sum(axis=0)
        rows += g.shape[0]
    del buf
    out = np.ascontiguousarray(out)
    return _mirror_upper(out), total, rows


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
    return KernelRows(zk, yk, w, paired, info)


def weighting_of(settings: ShapleySettings) -> str:
    """``"leverage"`` for leverage-sampled rows, else ``"kernel"`` (weight 1 per row)."""
    return "leverage" if settings.sampler.name == "leverage" else "kernel"


# --------------------------------------------------------------------------- solving


class _Solver:
    """Solves with a symmetric PSD ``g``: Cholesky when well conditioned, else
    ``eigh``; ``rank`` and ``identified`` say whether ``g`` is (numerically) definite.

    ``overwrite=True`` factors ``g`` in place (no second ``n x n`` array: 800 MB at
    ``n = 10,000``); ``g`` is restored for the eigendecomposition if Cholesky fails, but
    holds the factor afterwards.
    """

    def __init__(self, g: np.ndarray, overwrite: bool = False) -> None:
        p = g.shape[0]
        self.p = p
        self._cho = None
        self._inv: np.ndarray | None = None
        self.method = "cholesky"
        self.rank = p
        self.rcond = float("nan")
        anorm = float(np.abs(g).sum(axis=0).max())
        if overwrite and g.flags.c_contiguous:
            # LAPACK works on the F-ordered transpose (the same symmetric matrix) in place;
            # the upper factor of g.T lives in g's lower triangle and diagonal
            diag = g.diagonal().copy()
            work = g.T
        else:
            overwrite = False
            diag, work = None, g
        try:
            cho = sla.cho_factor(work, lower=False, overwrite_a=overwrite, check_finite=False)
            if not np.isfinite(cho[0].diagonal()).all():
                raise np.linalg.LinAlgError("non-finite Cholesky factor")
            rcond, info = lapack.dpocon(cho[0], anorm)
            if info != 0 or not rcond > RCOND_MIN:
                raise np.linalg.LinAlgError("ill-conditioned")
            self._cho = cho
            self.rcond = float(rcond)
        except (np.linalg.LinAlgError, ValueError):
            if overwrite:  # restore g from its untouched strict upper triangle
                _mirror_upper(g)
                np.fill_diagonal(g, diag)
            self.method = "eigh"
            vals, vecs = np.linalg.eigh(g)
            top = max(float(vals.max()), 0.0)
            good = vals > RCOND_MIN * top
            self.rank = int(good.sum())
            self.rcond = float(vals.min() / top) if top > 0 else 0.0
            if self.rank == p:
                self._inv = (vecs / vals) @ vecs.T
        self.identified = self.rank == p

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self._cho is not None:
            return sla.cho_solve(self._cho, rhs, check_finite=False)
        assert self._inv is not None
        return self._inv @ rhs

    def inverse(self) -> np.ndarray:
        if self._inv is None:
            assert self._cho is not None
            p = self.p
            if p < 512:  # dpotri's fixed cost dominates small matrices
                self._inv = sla.cho_solve(self._cho, np.eye(p), check_finite=False)
                return self._inv
            inv, info = lapack.dpotri(self._cho[0], lower=0)
            if info != 0:
                raise np.linalg.LinAlgError(f"dpotri failed ({info})")
            self._inv = _mirror_upper(np.ascontiguousarray(inv))
        return self._inv


@dataclass
class ConstrainedSolution:
    """``theta`` ``(p, K)``; its first ``n_phi`` entries sum to the totals."""

    theta: np.ndarray
    solver: _Solver
    n_phi: int

    def restricted_inverse(self) -> np.ndarray:
        """``C = G^{-1} - G^{-1} e e' G^{-1} / (e'G^{-1}e)`` (the same for ``A`` and the
        augmented ``A + c e e'``): ``theta_hat - theta ≈ C (r_hat - G theta)``."""
        p = self.solver.inverse()
        e = np.zeros(p.shape[0])
        e[: self.n_phi] = 1.0
        u = p @ e
        return p - np.outer(u, u) / (e @ u)


def constrained_solve(
    a: np.ndarray,
    rhs: np.ndarray,
    totals: np.ndarray,
    n_phi: int | None = None,
    overwrite_a: bool = False,
) -> ConstrainedSolution:
    """``argmin theta' A theta - 2 rhs' theta`` s.t. ``sum(theta[:n_phi]) = totals``.

    Covert & Lee (2021) eq. 7 for every column of ``rhs`` ``(p, K)``, with ``A`` replaced by
    ``A + c e e'`` (``e`` the constraint vector), which leaves the solution unchanged and
    is definite iff the problem is identified. Check ``solver.identified`` before using
    ``theta``: an unidentified problem returns NaN. ``overwrite_a`` lets the factorisation
    reuse ``a``'s memory (``a`` is garbage afterwards).
    """
    p = a.shape[0]
    n_phi = p if n_phi is None else n_phi
    e = np.zeros(p)
    e[:n_phi] = 1.0
    c = float(np.trace(a[:n_phi, :n_phi])) / n_phi
    if not c > 0:
        c = 1.0
    g = a if overwrite_a else a.copy()
    g[:n_phi, :n_phi] += c / n_phi
    solver = _Solver(g, overwrite=True)
    if not solver.identified:
        return ConstrainedSolution(np.full((p, rhs.shape[1]), np.nan), solver, n_phi)
    x = solver.solve(np.column_stack([rhs, e]))
    u = x[:, -1]
    denom = e @ u
    lam = (e @ x[:, :-1] - totals) / denom
    theta = x[:, :-1] - np.outer(u, lam)
    theta[:n_phi] += (totals - theta[:n_phi].sum(axis=0)) / n_phi
    return ConstrainedSolution(theta, solver, n_phi)


def not_identified(
    m: int, n: int, rank: int, need: int, paired: bool, extra: str = ""
) -> DiffattrError:
    """The one-line error of a rank-deficient KernelSHAP design."""
    unit = 2 if paired else 1
    more = max(need, m + unit * (n - rank))
    kind = "paired rows" if paired else "rows"
    return DiffattrError(
        f"KernelSHAP on {m} {kind} over {n} players is not identified (rank {rank} < {n}); "
        f"sample at least {more} coalitions{extra}"
    )


def sandwich_variance(
    x_chunks: Any, c: np.ndarray, n_units: int, q: int, single: bool = False
) -> np.ndarray | None:
    """``diag(C Var(sum_u g_u) C)`` with ``Var`` estimated from the unit scores ``g_u``
    (chunks of ``(units, p)``) as if drawn with replacement, scaled by ``U / (U - q)``;
    None when ``U <= q`` (no residual degrees of freedom)."""
    if n_units <= q or n_units < 2:
        return None
    p = c.shape[0]
    sigma, total, u = gram_float(x_chunks, p, single=single)
    mean = total / u
    sigma -= u * np.outer(mean, mean)
    sigma /= u - 1  # sample covariance of the unit scores (ddof = 1)
    var = np.einsum("ij,ij->i", c @ sigma, c)
    var *= n_units / (n_units - q)
    return np.clip(var, 0.0, None)


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
        return 2 * (n_players - 1) if paired else n_players - 1

    def _rows(self, table: CoalitionTable, v0: np.ndarray) -> KernelRows:
        return kernel_rows(
            table, v0, self.settings.paired, weighting_of(self.settings), self.settings.chunk_rows
        )

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
        chunk = self.settings.chunk_rows
        if m == 0:
            raise not_identified(0, n, 1, self.min_rows(n), rows.paired, _dropped(info))
        a = weighted_gram(rows.z, rows.w, rows.paired, chunk)
        b = weighted_zt_y(rows.z, rows.y, rows.w, chunk)
        sol = constrained_solve(a, b, totals, overwrite_a=True)
        del a
        info.update(rows_used=m, solver=sol.solver.method, rank=sol.solver.rank)
        info["identified"] = sol.solver.identified
        if not sol.solver.identified:
            raise not_identified(
                m, n, sol.solver.rank, self.min_rows(n), rows.paired, _dropped(info)
            )
        phi = sol.theta
        if self.settings.n_bootstrap > 0:
            se = self._bootstrap(rows, totals, k, n)
            info["stderr_method"] = "bootstrap"
        elif self.settings.stderr:
            se, info["stderr_method"] = self._sandwich(rows, phi, sol)
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(phi.T, se, info)

    def _bootstrap(self, rows: KernelRows, totals: np.ndarray, k: int, n: int) -> np.ndarray:
        weighting = "leverage" if rows.w is not None else "kernel"
        chunk = self.settings.chunk_rows

        def refit(idx: np.ndarray) -> np.ndarray:
            r = rows.unit_rows(idx)
            zb = rows.z[r]
            wb = leverage_weights(zb, rows.paired)[0] if weighting == "leverage" else None
            ab = weighted_gram(zb, wb, rows.paired, chunk)
            bb = weighted_zt_y(zb, rows.y[r], wb, chunk)
            sol = constrained_solve(ab, bb, totals)
            if not sol.solver.identified:
                raise DiffattrError("bootstrap resample not identified")
            return sol.theta.T

        return bootstrap_std(
            refit, rows.n_units, self.settings.n_bootstrap, self.settings.seed, (k, n)
        )

    def _sandwich(
        self, rows: KernelRows, phi: np.ndarray, sol: ConstrainedSolution
    ) -> tuple[np.ndarray, str]:
        """Unit scores ``g_u`` per behavior, then ``diag(C Var C)`` (module doc)."""
        m, n = rows.z.shape
        k = phi.shape[1]
        u = rows.n_units
        c = sol.restricted_inverse()
        w = rows.weights()
        step = max(2, self.settings.chunk_rows - self.settings.chunk_rows % 2)
        se = np.full((k, n), np.nan)
        for j in range(k):

            def units(j: int = j):
                for s in range(0, m, step):
                    x = rows.z[s : s + step].astype(np.float64)
                    r = rows.y[s : s + step, j] - x @ phi[:, j]
                    g = x * (w[s : s + step] * r * u)[:, None]  # scaled by U: O(1) entries
                    yield g[0::2] + g[1::2] if rows.paired else g

            var = sandwich_variance(units(), c, u, n - 1, single=n >= 512)
            if var is None:
                return se, "none: no residual degrees of freedom"
            se[j] = np.sqrt(var / u)
        return se, "sandwich"


def _dropped(info: dict[str, Any]) -> str:
    parts = []
    if info.get("rows_excluded"):
        parts.append(f"{info['rows_excluded']} empty or full rows")
    if info.get("rows_unpaired_dropped"):
        parts.append(f"{info['rows_unpaired_dropped']} rows without their pair partner")
    return f" (not used: {' and '.join(parts)})" if parts else ""
