"""Fit diffattr's estimators on your own table of evaluated coalitions.

    python examples/own_table.py [OUT_DIR]

A table has one 0/1 column per player and a `value` column (or `value:<behavior>`
columns): the value of a model trained on that coalition's data, however you measured it
-- the layout `diffattr estimate TABLE.csv` reads. Here: five data sources and a made-up
utility with an interaction (sources a and b help more together) and evaluation noise.
Every coalition evaluated gives exact Shapley and Banzhaf values of the table's game; a
datamodel fitted on 16 random coalitions approximates them, with bootstrap standard
errors.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import diffattr

PLAYERS = ["a", "b", "c", "d", "e"]
WEIGHTS = np.array([3.0, 2.0, 1.0, 0.5, -1.0])  # e hurts
SYNERGY = 2.0  # a and b together


def utility(mask: np.ndarray, rng: np.random.Generator) -> float:
    return float(mask @ WEIGHTS + SYNERGY * mask[0] * mask[1] + rng.normal(0, 0.05))


def main(out: str | Path = "runs/own-table") -> pd.DataFrame:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    masks = np.array(list(itertools.product([0, 1], repeat=len(PLAYERS))))
    table = pd.DataFrame(masks, columns=PLAYERS)
    table["value"] = [utility(m, rng) for m in masks]

    shapley = diffattr.estimate(table, estimator="shapley")
    banzhaf = diffattr.estimate(table, estimator="banzhaf")
    sampled = table.sample(16, random_state=0)
    datamodel = diffattr.estimate(sampled, estimator="datamodel", bootstrap=200)

    frames = [r.to_pandas() for r in (shapley, banzhaf, datamodel)]
    result = pd.concat(frames, ignore_index=True)
    # the game's own Shapley values: each weight, plus half the synergy for a and b
    exact = dict(zip(PLAYERS, WEIGHTS + SYNERGY / 2 * np.array([1, 1, 0, 0, 0])))
    result["exact_shapley"] = result["player"].map(exact)
    print(result[["estimator", "player", "value", "stderr", "exact_shapley"]].to_string())
    shapley.plot().savefig(out / "shapley.png", bbox_inches="tight")
    print(f"figure: {out / 'shapley.png'}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:2])
