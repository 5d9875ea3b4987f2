"""Players and conditions: can a game played through each coalition's conditions (the
``surrogate`` method's mix of labels or captions) tell the players apart? Light (reads the
data's conditions through ``ModelFamily.condition_keys``, encodes nothing), so the method's
settings can check players before any model is loaded."""

from __future__ import annotations

import warnings
from collections import Counter

from diffattr.errors import DiffattrError, DiffattrWarning


def check_players(family, dataset, players) -> None:
    """Refuse (one line) players the condition mixture cannot tell apart: when every
    player's data have the same distribution of conditions (labels, captions), every
    non-empty coalition generates alike and the game is constant. Warn when only some
    players share one."""
    keys = family.condition_keys(dataset)
    if keys is None:
        raise DiffattrError(
            f"method 'surrogate' needs per-image conditions, but the {family.name} family "
            "gives none"
        )
    dists = []
    for members in players.members:
        counts = Counter(keys[i] for i in members)
        total = sum(counts.values())
        dists.append(frozenset((k, round(v / total, 12)) for k, v in counts.items()))
    groups: dict[frozenset, list[str]] = {}
    for name, d in zip(players.names, dists):
        groups.setdefault(d, []).append(name)
    what = family.settings.conditions or "conditions"
    if len(groups) == 1 and len(players) > 1:
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
            f"method 'surrogate' sees only each coalition's mix of {what}: {n} of "
            f"{len(players)} players share their distribution of {what} with another (e.g. "
            f"{example}), and it credits them by their {what} alone",
            DiffattrWarning,
            stacklevel=2,
        )
