"""The rows of a KernelSHAP fit: the kernel's weights for the sampler that drew them, the
pairs of complementary rows, the Gram matrices, and what identifies the fit.

``kernel_rows`` turns a :class:`~diffattr.estimators.table.CoalitionTable` into
:class:`KernelRows` (the usable rows, their weights -- Covert & Lee's ``1/M`` for i.i.d.
kernel rows, post-stratified by size class for leverage rows and for kernel rows drawn
without replacement (:func:`leverage_weights`) -- and the pairing); ``kernel_gram`` /
``weighted_gram`` / ``weighted_zt_y`` accumulate the normal equations chunk by chunk;
``distinct_units``, ``fitted_directions`` and ``residual_dof`` count what the residuals can
support; ``not_identified`` is the one-line error of a rank-deficient design. The estimators
``shapley`` (``kernel_shap.py``) and ``shapley-cv`` (``shapley_cv.py``) share them; the
solvers are in ``linalg.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.linalg import (
    _CHUNK,
    Strata,
    gram_binary,
    gram_float,
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


def dropped_note(info: dict[str, Any]) -> str:
    """`` (not used: ...)``: the rows a fit left out (empty or full rows, rows without
    their pair partner), for the one-line error of a design that is not identified."""
    parts = []
    if info.get("rows_excluded"):
        parts.append(f"{info['rows_excluded']} empty or full rows")
    if info.get("rows_unpaired_dropped"):
        parts.append(f"{info['rows_unpaired_dropped']} rows without their pair partner")
    return f" (not used: {' and '.join(parts)})" if parts else ""
