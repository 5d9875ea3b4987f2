"""KernelSHAP in closed form (Lundberg & Lee 2017; Covert & Lee 2021).

Shapley values solve the weighted least-squares problem
``min_phi E_{z ~ kernel} (v(z) - v0 - z'phi)^2`` subject to ``1'phi = v1 - v0``. With
``M`` rows ``z_1..z_M`` drawn from the Shapley kernel (weight 1 each; see
``diffattr.coalitions.ShapleyKernelSampler``), Covert & Lee (2021, eq. 7) give the
solution of the sampled problem:

    A = Z'Z / M,   b = Z'(y - v0) / M,
    phi = A^{-1} (b - 1 (1'A^{-1} b - v1 + v0) / (1'A^{-1} 1)).

Rows whose mask is empty or full are excluded (the kernel gives them no weight: they
enter only through the constraint). ``A`` is solved by Cholesky, falling back to the
pseudo-inverse when it is singular or ill-conditioned; a final projection removes
rounding drift, so ``sum(phi) = v1 - v0`` to machine precision.

Standard errors (default: closed form). Linearising eq. 7 around its limit gives
``phi_hat - phi ≈ C (1/M) sum_r g_r`` with ``g_r = z_r (y_r - v0 - z_r'phi)`` and
``C = A^{-1} - A^{-1} 1 1' A^{-1} / (1'A^{-1} 1)``, so
``Cov(phi_hat) ≈ C Cov(g) C / M`` — the same sandwich form Covert & Lee (2021, Sec. 4)
use for their variance estimates and convergence detection. With paired sampling
(row ``2j+1`` the complement of row ``2j``, detected automatically) the pair is the
sampling unit: ``g`` is averaged within pairs and ``M`` counts pairs. Setting
``n_bootstrap > 0`` replaces the closed form by a bootstrap over rows (pairs), and
``stderr=False`` skips standard errors (NaN) — the closed form costs about as much as the
point estimate for large ``n``.

Large tables: ``Z'Z`` is accumulated chunk by chunk with BLAS ``syrk`` on 0/1 float32
blocks, which is exact while ``M < 2^24`` (counts are integers), then held in float64;
with paired rows only the first row of each pair enters the product (``kernel_gram``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg as sla
from scipy.linalg import blas

from diffattr.errors import DiffattrError
from diffattr.estimators.attribution import Estimator, Fit, bootstrap_std

_CHUNK = 4096


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
    """``Z'Z``; for complement pairs from half the rows.

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


def _zt_y(z: np.ndarray, y: np.ndarray, chunk_rows: int = _CHUNK) -> np.ndarray:
    out = np.zeros((z.shape[1], y.shape[1]))
    for s in range(0, z.shape[0], chunk_rows):
        out += z[s : s + chunk_rows].astype(np.float64).T @ y[s : s + chunk_rows]
    return out


def is_paired(z: np.ndarray, chunk_rows: int = _CHUNK) -> bool:
    """Whether rows come in pairs ``(z, 1 - z)``: row ``2j+1`` complements row ``2j``."""
    m = z.shape[0]
    if m < 2 or m % 2:
        return False
    step = max(2, chunk_rows - chunk_rows % 2)
    for s in range(0, m, step):
        blk = z[s : s + step]
        if not np.array_equal(blk[1::2], ~blk[0::2]):
            return False
    return True


class _Solver:
    """Solves with ``A`` by Cholesky, or by the pseudo-inverse when that fails."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a
        self.method = "cholesky"
        self._cho = None
        self._inv = None
        try:
            self._cho = sla.cho_factor(a, lower=False, check_finite=False)
            if not np.isfinite(self._cho[0].diagonal()).all():
                raise np.linalg.LinAlgError("non-finite Cholesky factor")
            d = np.abs(self._cho[0].diagonal())
            if d.min() <= 1e-7 * d.max():
                raise np.linalg.LinAlgError("ill-conditioned")
        except (np.linalg.LinAlgError, ValueError):
            self._cho = None
            self.method = "pinv"
            self._inv = sla.pinvh(a, check_finite=False)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        if self._cho is not None:
            return sla.cho_solve(self._cho, rhs, check_finite=False)
        return self._inv @ rhs

    def inverse(self) -> np.ndarray:
        if self._inv is None:
            assert self._cho is not None
            inv, info = sla.lapack.dpotri(self._cho[0], lower=0)
            if info != 0:
                raise np.linalg.LinAlgError(f"dpotri failed ({info})")
            self._inv = _mirror_upper(np.ascontiguousarray(inv))
        return self._inv


def constrained_solution(
    a: np.ndarray, b: np.ndarray, totals: np.ndarray
) -> tuple[np.ndarray, _Solver]:
    """Covert & Lee (2021) eq. 7 for every column of ``b`` ``(n, K)``: returns ``(n, K)``.

    ``phi = A^{-1}(b - 1 (1'A^{-1}b - total) / (1'A^{-1}1))``, then projected so that
    ``1'phi = total`` exactly.
    """
    n = a.shape[0]
    solver = _Solver(a)
    x = solver.solve(np.column_stack([b, np.ones(n)]))
    u = x[:, -1]
    denom = u.sum()
    if not np.isfinite(denom) or abs(denom) < 1e-300:
        raise DiffattrError("KernelSHAP system is degenerate (1'A^-1 1 = 0); sample more rows")
    lam = (x[:, :-1].sum(axis=0) - totals) / denom
    phi = x[:, :-1] - np.outer(u, lam)
    phi += (totals - phi.sum(axis=0)) / n
    return phi, solver


class KernelShap(Estimator):
    """KernelSHAP closed form (Covert & Lee 2021, eq. 7); registry name ``shapley``.

    Settings: ``stderr`` (True: closed-form sandwich, see module doc), ``n_bootstrap``
    (> 0: bootstrap over rows/pairs instead), ``seed`` (bootstrap), ``paired``
    (``"auto"``: detect complement pairs; True: require them; False: treat rows as
    independent), ``use_exact`` (a table holding every subset gives exact Shapley values),
    ``chunk_rows`` (rows per BLAS block). Needs ``v0`` and ``v1`` and at least ``n``
    rows that are neither empty nor full.
    """

    name: ClassVar[str] = "shapley"
    needs_v0: ClassVar[bool] = True
    needs_v1: ClassVar[bool] = True
    exact_kind: ClassVar[str | None] = "shapley"
    defaults: ClassVar[dict[str, Any]] = {"stderr": True, "paired": "auto", "chunk_rows": _CHUNK}

    def _fit(
        self,
        z: np.ndarray,
        y: np.ndarray,
        v0: np.ndarray | None,
        v1: np.ndarray | None,
        opts: dict[str, Any],
        names: list[str],
    ) -> Fit:
        assert v0 is not None and v1 is not None
        n = z.shape[1]
        chunk = int(opts["chunk_rows"])
        if chunk < 2:
            raise DiffattrError("chunk_rows must be >= 2")
        totals = v1 - v0
        if n == 1:
            vals = totals[:, None].copy()
            return Fit(vals, np.zeros_like(vals), {"rows_used": 0})
        sizes = z.sum(axis=1)
        keep = (sizes > 0) & (sizes < n)
        zk = z if keep.all() else z[keep]
        m = zk.shape[0]
        if m < n:
            raise DiffattrError(
                f"KernelSHAP needs at least n={n} rows whose coalition is neither empty nor "
                f"full; the table has {m}. Sample more coalitions"
            )
        yk = (y if keep.all() else y[keep]) - v0
        paired_opt = opts["paired"]
        if paired_opt not in ("auto", True, False):
            raise DiffattrError(f"paired must be 'auto', true or false, got {paired_opt!r}")
        paired = is_paired(zk, chunk) if paired_opt in ("auto", True) else False
        if paired_opt is True and not paired:
            raise DiffattrError(
                "paired=True but rows are not (mask, complement) pairs in consecutive rows"
            )
        a = kernel_gram(zk, paired, chunk)
        a /= m
        b = _zt_y(zk, yk, chunk) / m
        phi, solver = constrained_solution(a, b, totals)
        info: dict[str, Any] = {
            "rows_used": m,
            "rows_excluded": int((~keep).sum()),
            "paired": paired,
            "solver": solver.method,
        }
        k = y.shape[1]
        if opts["n_bootstrap"] > 0:
            unit = 2 if paired else 1
            n_units = m // unit

            def refit(idx: np.ndarray) -> np.ndarray:
                rows = (idx[:, None] * unit + np.arange(unit)).reshape(-1)
                zb = zk[rows]
                ab = kernel_gram(zb, paired, chunk) / zb.shape[0]
                bb = _zt_y(zb, yk[rows], chunk) / zb.shape[0]
                return constrained_solution(ab, bb, totals)[0].T

            se = bootstrap_std(refit, n_units, opts["n_bootstrap"], opts["seed"], (k, n))
            info["stderr_method"] = "bootstrap"
        elif opts["stderr"]:
            se = np.stack(
                [self._sandwich(zk, yk[:, j], phi[:, j], solver, paired, chunk) for j in range(k)]
            )
            info["stderr_method"] = "sandwich"
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none"
        return Fit(phi.T, se, info)

    @staticmethod
    def _sandwich(
        zk: np.ndarray,
        yk: np.ndarray,
        phi: np.ndarray,
        solver: _Solver,
        paired: bool,
        chunk: int,
    ) -> np.ndarray:
        """Diagonal of ``C Cov(g) C / U`` (module doc), ``U`` rows or pairs."""
        m, n = zk.shape
        step = max(2, chunk - chunk % 2)
        # mean of g over units (pairs average their rows, so it is Z'r / M either way)
        center = np.zeros(n)
        for s in range(0, m, step):
            x = zk[s : s + step].astype(np.float64)
            center += x.T @ (yk[s : s + step] - x @ phi)
        center /= m

        def units():
            for s in range(0, m, step):
                x = zk[s : s + step].astype(np.float64)
                g = x * (yk[s : s + step] - x @ phi)[:, None]
                g = 0.5 * (g[0::2] + g[1::2]) if paired else g
                yield g - center

        sigma, _, u = gram_float(units(), n, single=n >= 512)
        if u < 2:
            return np.full(n, np.nan)
        sigma /= u - 1
        p = solver.inverse()
        w = p.sum(axis=1)
        c = p - np.outer(w, w) / w.sum()
        var = np.einsum("ij,ij->i", c @ sigma, c) / u
        return np.sqrt(np.clip(var, 0.0, None))
