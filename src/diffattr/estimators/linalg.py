"""Linear algebra the regression estimators share: Gram matrices of 0/1 designs, a solver
that knows its rank, the efficiency-constrained and free least-squares solutions, the
endpoint shift, and the sandwich variance (with replacement, or stratified).

``Solver`` factors a symmetric PSD matrix by Cholesky when it is well conditioned (the
condition number computed exactly up to :data:`EXACT_RCOND_MAX` unknowns, estimated by
LAPACK beyond) and otherwise by an eigendecomposition that gives its rank; an unidentified
system is never solved by a pseudo-inverse. ``constrained_solve`` is Covert & Lee's (2021)
eq. 7 for any constraint on the leading entries; ``free_solve`` the same without a
constraint; ``efficient`` adds the same constant to every value so that they sum to the
totals (the endpoint shift: exact Shapley values move that way when ``v(empty)`` or
``v(full)`` changes). ``sandwich_variance`` is the closed-form variance of a linearised
estimator from per-unit scores, with the residual-degrees-of-freedom rule of
:data:`MIN_RESIDUAL_DOF`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas, lapack

_CHUNK = 4096
#: Fewest residual degrees of freedom (distinct sampling units minus fitted directions) for
#: which a closed-form standard error is reported; below, it is NaN ("not estimable").
MIN_RESIDUAL_DOF = 5
#: Reciprocal condition number below which a system counts as not identified.
RCOND_MIN = 1e-10
#: Up to this size the condition number is computed exactly (eigenvalues), not estimated.
EXACT_RCOND_MAX = 1024


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


class Solver:
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
        exact_rcond = None
        if p <= EXACT_RCOND_MAX:
            # LAPACK's condition estimate can miss a singular matrix whose Cholesky factor
            # ran on rounding noise (seen: rcond 2e-4 for a design of rank p - 1); at this
            # size the eigenvalues are cheap and exact
            ev = np.linalg.eigvalsh(g)
            top = max(float(ev.max()), 0.0)
            exact_rcond = float(ev.min() / top) if top > 0 else 0.0
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
            if exact_rcond is not None:
                rcond = exact_rcond
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
    """``theta`` ``(p, K)``; with ``constrained`` its first ``n_phi`` entries sum to the
    totals, else it is the unconstrained least-squares solution (fitted endpoints)."""

    theta: np.ndarray
    solver: Solver
    n_phi: int
    constrained: bool = True

    def restricted_inverse(self) -> np.ndarray:
        """``theta_hat - theta ≈ C (r_hat - G theta)``: ``C = G^{-1} - G^{-1} e e' G^{-1} /
        (e'G^{-1}e)`` when constrained (the same for ``A`` and the augmented ``A + c e e'``),
        ``G^{-1}`` when not."""
        p = self.solver.inverse()
        if not self.constrained:
            return p
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
    solver = Solver(g, overwrite=True)
    if not solver.identified:
        return ConstrainedSolution(np.full((p, rhs.shape[1]), np.nan), solver, n_phi)
    x = solver.solve(np.column_stack([rhs, e]))
    u = x[:, -1]
    denom = e @ u
    lam = (e @ x[:, :-1] - totals) / denom
    theta = x[:, :-1] - np.outer(u, lam)
    theta[:n_phi] += (totals - theta[:n_phi].sum(axis=0)) / n_phi
    return ConstrainedSolution(theta, solver, n_phi)


def free_solve(
    a: np.ndarray, rhs: np.ndarray, n_phi: int, overwrite_a: bool = False
) -> ConstrainedSolution:
    """``argmin theta' A theta - 2 rhs' theta`` without a constraint (fitted endpoints);
    check ``solver.identified`` (NaN otherwise). ``n_phi``: how many leading entries are
    player values."""
    solver = Solver(a if overwrite_a else a.copy(), overwrite=True)
    p = a.shape[0]
    if not solver.identified:
        return ConstrainedSolution(np.full((p, rhs.shape[1]), np.nan), solver, n_phi, False)
    return ConstrainedSolution(solver.solve(rhs), solver, n_phi, False)


def efficient(phi: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """``phi`` ``(n, K)`` plus the same constant per column so that it sums to ``totals``
    (the endpoint shift: exact Shapley values move that way when an endpoint changes)."""
    return phi + (totals - phi.sum(axis=0)) / phi.shape[0]


@dataclass
class Strata:
    """The size classes of post-stratified units, for a stratified variance: ``ids`` the
    stratum of each unit, ``scale`` ``(1 - f_h) U_h / (U_h - 1)`` per stratum (``f_h`` the
    sampled fraction of the class's coalitions, 0 when a unit repeats: then the rows were
    not drawn without replacement). Strata of one unit are pooled (scale without ``f_h``)."""

    ids: np.ndarray
    scale: np.ndarray


STRATIFIED_MAX_CELLS = 20_000_000


def sandwich_variance(
    x_chunks: Any,
    c: np.ndarray,
    n_units: int,
    q: int,
    single: bool = False,
    strata: Strata | None = None,
) -> np.ndarray | None:
    """``diag(C Var(sum_u g_u) C')`` with ``Var`` estimated from the unit scores ``g_u``
    (chunks of ``(units, p)``; ``C`` is ``(n, p)``), scaled by ``U / (U - q)``; None when
    ``U <= q`` (no residual degrees of freedom). Without ``strata`` the units count as
    drawn with replacement (Hansen–Hurwitz); with them (post-stratified rows) the variance
    is the stratified one, ``sum_h (1 - f_h) U_h s_h^2``: the between-class part (the size
    trend) is not sampling noise under stratification, and a class drawn in full adds
    none. Beyond :data:`STRATIFIED_MAX_CELLS` strata x parameters it falls back to
    Hansen–Hurwitz (conservative)."""
    if n_units <= q or n_units < 2:
        return None
    p = c.shape[1]
    if strata is not None and strata.scale.size * p <= STRATIFIED_MAX_CELLS:
        sigma = _stratified_sigma(x_chunks, p, strata, single)
    else:
        sigma, total, u = gram_float(x_chunks, p, single=single)
        mean = total / u
        sigma -= u * np.outer(mean, mean)
        sigma /= u - 1  # sample covariance of the unit scores (ddof = 1)
    var = np.einsum("ij,ij->i", c @ sigma, c)
    var *= n_units / (n_units - q)
    return np.clip(var, 0.0, None)


def _stratified_sigma(x_chunks: Any, p: int, strata: Strata, single: bool) -> np.ndarray:
    """``(1/U) sum_h scale_h (sum_{u in h} g_u g_u' - U_h gbar_h gbar_h')``: the stratified
    counterpart of the sample covariance (so that ``C sigma C' / U`` is the variance)."""
    h = strata.scale.size
    sums = np.zeros((h, p))
    root = np.sqrt(strata.scale)
    offset = 0

    def scaled():
        nonlocal offset
        for g in x_chunks:
            ids = strata.ids[offset : offset + g.shape[0]]
            np.add.at(sums, ids, g)
            offset += g.shape[0]
            yield g * root[ids][:, None]

    gram, _, u = gram_float(scaled(), p, single=single)
    counts = np.bincount(strata.ids, minlength=h).astype(np.float64)
    means = sums / counts[:, None]
    gram -= (means * (strata.scale * counts)[:, None]).T @ means
    return gram / u
