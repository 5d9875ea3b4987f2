"""Shapley values of a gradient-boosted-tree surrogate of the game (SurrogateSHAP).

Lu, Gadgil, Lin, Kim & Lee (2026, "SurrogateSHAP") fit gradient-boosted trees ``f`` to the
table of evaluated coalitions, with the empty and the full coalition added as rows
(``v0``, ``v1``), and read the Shapley values of the fitted function off analytically: the
game ``g(S) = f(1_S)`` is ``f`` evaluated between the all-absent background ``0`` and the
all-present point ``1``, whose Shapley values are the *interventional* TreeSHAP values of
``f`` at ``x = 1`` against the single background ``0`` (Lundberg et al. 2020; computed by
``shap.TreeExplainer(model, data=zeros, feature_perturbation="interventional")``). Every
coalition the table does not hold is filled in by the trees, so ``M`` rows give values of
the whole ``2^n``-coalition surrogate game.

Pairwise interactions. ``shap`` computes interaction values only for path-dependent
TreeSHAP (for ``"interventional"`` it warns and returns zeros), so they are computed here
from the trees: with one background point, a leaf reached from ``1_S`` contributes its
value times ``u_{A,B}(S) = 1[A ⊆ S, B ∩ S = ∅]``, where ``A`` are the features its path
needs present and ``B`` absent; ``u_{A,B}`` has closed-form Shapley values (``(a-1)! b! /
r!`` for ``i in A``, ``-a! (b-1)! / r!`` for ``j in B``, ``r = a + b``) and Shapley
interaction indices (Grabisch 1997; ``(a-2)! b! / (r-1)!`` for two players of ``A``,
``a! (b-2)! / (r-1)!`` for two of ``B``, ``-(a-1)! (b-1)! / (r-1)!`` across). The
interaction values follow shap's convention: ``Phi_ij = I_ij / 2`` off the diagonal and
``Phi_ii = phi_i - sum_{j != i} Phi_ij``, so row ``i`` sums to ``phi_i``; they are stored
in ``settings["interactions"]`` (``n <= interactions_max_players``).

Efficiency: the surrogate's values sum to ``f(1) - f(0)``, which the two endpoint rows
pull towards but need not make equal to ``v1 - v0``; the same constant is added to every
value (and to the interaction diagonal) so that they sum to ``v1 - v0`` exactly -- the
endpoint shift of ``diffattr.estimators.kernel_shap``. With ``endpoints = "fitted"`` the
endpoint rows are left out of the trees' training set altogether (the trees extrapolate
``f(0)`` and ``f(1)`` from the coalitions' trend) and only the shift uses ``v0``, ``v1``:
a null model far off that trend (an untrained network) is otherwise fitted by splits on
whichever players the trees happen to isolate the empty coalition with, and its gap lands
on them. Identification is then checked on the table's rows alone. Standard errors: a bootstrap over
the table's rows (the endpoint rows always kept), ``n_bootstrap`` refits; 0 gives NaN.

Identification: the trees can split players only where the rows do, so two players in
exactly the same rows (the endpoint rows included) cannot be told apart by any surrogate:
that is an error naming them; and fewer coalitions than players are refused (a floor: the
run's reliability signal says whether more are needed). On an additive game a complete
table gives the exact values (a boosted sum of trees fitted to every coalition), and so
does any table with depth-1 trees (stumps fit an additive function).

Needs the optional extra: ``pip install 'diffattr[tree]'`` (xgboost and shap).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.base import Estimator, Fit, bootstrap_std
from diffattr.estimators.settings import TreeShapleySettings
from diffattr.estimators.table import CoalitionTable

EXTRA = "tree-shapley needs xgboost and shap: pip install 'diffattr[tree]'"


def _libraries():
    try:
        import shap
        import xgboost
    except ImportError:
        raise DiffattrError(EXTRA) from None
    return xgboost, shap


def surrogate_design(
    z: np.ndarray, y: np.ndarray, v0: np.ndarray, v1: np.ndarray, ends: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The table's rows, plus (``ends``) the empty (``v0``) and the full (``v1``) coalition;
    rows of the table that are themselves empty or full are kept only with ``ends``."""
    n = z.shape[1]
    if not ends:
        inner = z.any(axis=1) & ~z.all(axis=1)
        return z[inner].astype(np.float32), y[inner]
    x = np.vstack([z, np.zeros((1, n), bool), np.ones((1, n), bool)]).astype(np.float32)
    t = np.vstack([y, v0[None, :], v1[None, :]])
    return x, t


def check_separable(z: np.ndarray, names: list[str]) -> None:
    """Refuse two players that are in exactly the same rows (endpoints included)."""
    cols = np.packbits(z.T, axis=1)  # one row of bits per player
    _, first, inverse = np.unique(cols, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    for i in range(z.shape[1]):
        j = int(first[inverse[i]])
        if j != i:
            raise DiffattrError(
                f"players {names[j]!r} and {names[i]!r} are in exactly the same coalitions of "
                "the table, so no surrogate can separate their values; sample more coalitions"
            )


def leaf_terms(booster: Any, n: int) -> list[tuple[float, tuple[int, ...], tuple[int, ...]]]:
    """``(leaf value, A, B)`` for every leaf reachable from a point between ``0`` and ``1``
    (features ``A`` present and ``B`` absent on its path; module doc)."""
    frame = booster.trees_to_dataframe()
    nodes = {row.ID: row for row in frame.itertuples(index=False)}
    terms = []
    for tree in frame["Tree"].unique():
        stack = [(f"{tree}-0", frozenset(), frozenset())]
        while stack:
            node_id, a, b = stack.pop()
            node = nodes[node_id]
            if node.Feature == "Leaf":
                terms.append((float(node.Gain), tuple(sorted(a)), tuple(sorted(b))))
                continue
            f = int(str(node.Feature).lstrip("f"))
            t = float(node.Split)
            present_yes, absent_yes = 1.0 < t, 0.0 < t  # xgboost goes "yes" when x < split
            for child, present, absent in (
                (node.Yes, present_yes, absent_yes),
                (node.No, not present_yes, not absent_yes),
            ):
                if present and absent:
                    stack.append((child, a, b))
                elif present and f not in b:
                    stack.append((child, a | {f}, b))
                elif absent and f not in a:
                    stack.append((child, a, b | {f}))
    return terms


def unanimity_values(
    terms: list[tuple[float, tuple[int, ...], tuple[int, ...]]], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values ``(n,)`` and Shapley interaction indices ``(n, n)`` (zero diagonal)
    of ``sum value * u_{A,B}`` (module doc)."""
    phi = np.zeros(n)
    sii = np.zeros((n, n))
    fact = math.factorial
    for value, a_set, b_set in terms:
        a, b = len(a_set), len(b_set)
        r = a + b
        if r == 0 or value == 0.0:
            continue
        if a:
            phi[list(a_set)] += value * fact(a - 1) * fact(b) / fact(r)
        if b:
            phi[list(b_set)] -= value * fact(a) * fact(b - 1) / fact(r)
        if r < 2:
            continue
        aa = list(a_set)
        bb = list(b_set)
        if a >= 2:
            sii[np.ix_(aa, aa)] += value * fact(a - 2) * fact(b) / fact(r - 1)
        if b >= 2:
            sii[np.ix_(bb, bb)] += value * fact(a) * fact(b - 2) / fact(r - 1)
        if a and b:
            cross = value * fact(a - 1) * fact(b - 1) / fact(r - 1)
            sii[np.ix_(aa, bb)] -= cross
            sii[np.ix_(bb, aa)] -= cross
    np.fill_diagonal(sii, 0.0)
    return phi, sii


class TreeShapley(Estimator):
    """Shapley values of a gradient-boosted-tree surrogate (module doc); registry name
    ``tree-shapley``. Settings: :class:`~diffattr.estimators.settings.TreeShapleySettings`."""

    settings_class = TreeShapleySettings
    needs_v0 = True
    needs_v1 = True
    exact_kind = "shapley"
    settings: TreeShapleySettings

    def min_rows(self, n_players: int) -> int:
        # a floor, not a proof of identification: at least one coalition per player
        return 0 if n_players <= 1 else n_players

    def _model(self, seed: int) -> Any:
        xgboost, _ = _libraries()
        s = self.settings
        return xgboost.XGBRegressor(
            objective="reg:squarederror",
            n_estimators=s.n_estimators,
            max_depth=s.max_depth,
            learning_rate=s.learning_rate,
            subsample=s.subsample,
            reg_alpha=s.reg_alpha,
            reg_lambda=s.reg_lambda,
            min_child_weight=s.min_child_weight,
            random_state=seed,
            n_jobs=1,
            tree_method="exact",
        )

    def _surrogate(
        self, x: np.ndarray, t: np.ndarray, totals: np.ndarray, seed: int, interactions: bool
    ) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
        """Values ``(K, n)``, interaction matrices and the fit's R^2 per behavior."""
        _, shap = _libraries()
        n = x.shape[1]
        k = t.shape[1]
        vals = np.zeros((k, n))
        inter: list[np.ndarray] = []
        r2: list[float] = []
        background = np.zeros((1, n), np.float32)
        point = np.ones((1, n), np.float32)
        for j in range(k):
            model = self._model(seed)
            model.fit(x, t[:, j])
            explainer = shap.TreeExplainer(
                model, data=background, feature_perturbation="interventional", model_output="raw"
            )
            phi = np.asarray(explainer.shap_values(point), dtype=np.float64).reshape(-1)
            shift = (totals[j] - phi.sum()) / n
            vals[j] = phi + shift
            pred = model.predict(x)
            ss = float(((t[:, j] - t[:, j].mean()) ** 2).sum())
            r2.append(1.0 - float(((t[:, j] - pred) ** 2).sum()) / ss if ss > 0 else 1.0)
            if interactions:
                _, sii = unanimity_values(leaf_terms(model.get_booster(), n), n)
                half = sii / 2.0
                np.fill_diagonal(half, vals[j] - half.sum(axis=1))
                inter.append(half)
        return vals, inter, r2

    def _fit(self, table: CoalitionTable, v0: np.ndarray | None, v1: np.ndarray | None) -> Fit:
        assert v0 is not None and v1 is not None
        n, k = table.n_players, table.n_behaviors
        totals = v1 - v0
        if n == 1:
            vals = totals[:, None].copy()
            return Fit(vals, np.full_like(vals, np.nan), {"rows_used": 0})
        z, y = table.masks, table.values
        if z.shape[0] < self.min_rows(n):
            raise DiffattrError(
                f"tree-shapley on {z.shape[0]} coalitions over {n} players: a surrogate needs at "
                f"least one coalition per player; sample at least {self.min_rows(n)}"
            )
        s = self.settings
        ends = s.endpoints == "given"
        x, t = surrogate_design(z, y, v0, v1, ends)
        names = list(table.names or [str(i) for i in range(n)])
        check_separable(x.astype(bool), names)
        want_inter = s.interactions and n <= s.interactions_max_players
        vals, inter, r2 = self._surrogate(x, t, totals, s.seed, want_inter)
        info: dict[str, Any] = {
            "rows_used": int(z.shape[0]),
            "surrogate_r2": r2 if k > 1 else r2[0],
            "identified": True,
            "endpoints": s.endpoints,
        }
        if want_inter:
            info["interactions"] = [m.tolist() for m in inter] if k > 1 else inter[0].tolist()
        if s.n_bootstrap > 0:
            m = z.shape[0]

            def refit(idx: np.ndarray) -> np.ndarray:
                xb, tb = surrogate_design(z[idx], y[idx], v0, v1, ends)
                return self._surrogate(xb, tb, totals, s.seed, False)[0]

            se = bootstrap_std(refit, m, s.n_bootstrap, s.seed, (k, n))
            info["stderr_method"] = "bootstrap"
        else:
            se = np.full((k, n), np.nan)
            info["stderr_method"] = "none (n_bootstrap = 0)"
        return Fit(vals, se, info)
