"""Credit the ten classes of sklearn's digits from Python, and plot the values.

    python examples/digits_from_python.py [RUN_DIR]

The `quick` preset: a small diffusion model trained on the 8x8 digits, pruned once and
fine-tuned briefly on a few dozen coalitions of the ten classes (sparsified unlearning),
each class credited for FID and Inception Score in the digits classifier's feature space
by Shapley values and a datamodel -- a few minutes on a CPU. Run it again and it reuses
everything on disk (and `diffattr report RUN_DIR` renders it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import diffattr


def main(out: str | Path = "runs/digits-python", settings: dict | None = None):
    run = diffattr.Run.create(
        out, preset="quick", estimators=["shapley", "datamodel"], settings=settings
    )
    print(run.plan().render())
    values = run.attribute()

    table = values.to_pandas()
    shapley = table[table["estimator"] == "shapley"].sort_values(["behavior", "rank"])
    print(shapley[["behavior", "rank", "player", "value", "stderr"]].to_string(index=False))

    out = Path(out)
    values.plot("shapley", "fid").savefig(out / "shapley-fid.png", bbox_inches="tight")
    values.plot_contributors("shapley", "fid", k=3).savefig(
        out / "top-and-bottom-fid.png", bbox_inches="tight"
    )
    print(f"figures: {out / 'shapley-fid.png'}, {out / 'top-and-bottom-fid.png'}")
    return values


if __name__ == "__main__":
    main(*sys.argv[1:2])
