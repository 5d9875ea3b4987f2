"""Players and conditions: can a game played through each coalition's conditions (the
``surrogate`` method's label mix) tell the players apart? Light (numpy only), so the
method's settings can check players before any model is loaded."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from diffattr.errors import DiffattrError, DiffattrWarning


def check_players(family, dataset, players) -> None:
    """Refuse (one line) players the label mixture cannot tell apart: when every player's
    data have the same label distribution, every non-empty coalition generates the same
    labels and the game is constant. Warn when only some players share one."""
    cond = family.training_set(dataset).cond
    if cond is None:
        raise DiffattrError(
            f"method 'surrogate' needs per-image conditions, but the {family.name} family "
            "gives none"
        )
    keys = _row_keys(cond)
    dists = []
    for members in players.members:
        counts = Counter(keys[i] for i in members)
        total = sum(counts.values())
        dists.append(frozenset((k, round(v / total, 12)) for k, v in counts.items()))
    groups: dict[frozenset, list[str]] = {}
    for name, d in zip(players.names, dists):
        groups.setdefault(d, []).append(name)
    if len(groups) == 1 and len(players) > 1:
        what = family.settings.conditions or "conditions"
        raise DiffattrError(
            f"method 'surrogate' cannot tell the players apart: every player's data have the "
            f"same {what} in the same proportions, so every coalition generates alike; use a "
            "method that trains (sft)"
        )
    shared = [g for g in groups.values() if len(g) > 1]
    if shared:
        n = sum(len(g) for g in shared)
        example = ", ".join(shared[0][:2])
        warnings.warn(
            f"method 'surrogate' sees only each coalition's label mix: {n} of {len(players)} "
            f"players share their label distribution with another (e.g. {example}), and it "
            "credits them by their labels alone",
            DiffattrWarning,
            stacklevel=2,
        )


def _row_keys(cond) -> list:
    arr = np.asarray(cond.detach().cpu().numpy() if hasattr(cond, "detach") else cond)
    if arr.ndim == 1:
        return arr.tolist()
    return [row.tobytes() for row in arr.reshape(len(arr), -1)]
