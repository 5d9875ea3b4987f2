"""Every baseline on the recorded complete game's full model, scored on its retrained ground
truth (issue 28 item 4: the group-level LDS table gets DAS and EK-FAC rows); prints JSON.

The baselines score θ* of ``complete_game.py``'s run directory (the same model, its 256
generated images, the run's feature cache), aggregated to the 10 class players; their LDS is
computed against the same retrained test subsets and seeds as ``game.py``'s ceilings and
estimators (``Game.targets``), so the rows compare with that table directly. Each baseline's
compute (featurize / score seconds, from the run's ``baseline_costs``) is recorded beside it.

    OMP_NUM_THREADS=1 python benchmarks/game_baselines.py --out runs/bench-game \\
        --data-dir benchmarks/data/complete_game

Resumable: it writes ``baselines.json`` under ``--data-dir`` after every baseline and skips
the ones recorded there (the features stay in the run's cache).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from complete_game import RECIPE
from diffattr.baselines.settings import BASELINES as BASELINE_SETTINGS
from diffattr.runner.run import Run
from game import lds, load
from lds_repeats import BASELINES, add_config_args, config


def label_of(spec: dict) -> str:
    return spec["name"] + "".join(
        f"[{k}={spec[k]}]" for k in ("chunk_size", "aggregation") if k in spec
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="complete_game.py's run directory")
    ap.add_argument("--data-dir", type=Path, default=Path("benchmarks/data/complete_game"))
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="baseline names to run")
    ap.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="baseline tables as JSON to run instead of the default list, e.g. "
        '\'{"name": "ekfac-influence", "timesteps": 1}\'',
    )
    add_config_args(ap)
    ap.set_defaults(**RECIPE, estimators=["shapley"], grid=[64])
    args = ap.parse_args()
    game = load(args.data_dir)
    masks, targets = game.targets("test")
    path = args.data_dir / "baselines.json"
    out = json.loads(path.read_text()) if path.exists() else {"rows": []}
    out["command"] = "python benchmarks/game_baselines.py " + " ".join(sys.argv[1:])
    out.setdefault("calls", []).append(out["command"])  # every call that added rows
    out["test_subsets"] = int(masks.shape[0])
    out["seeds"] = int(targets[game.behaviors[0]].shape[0])
    done = {r["baseline"] for r in out["rows"]}
    cfg = config(args, args.repeat)
    with Run(cfg, args.out, progress=False) as run:
        specs = [json.loads(x) for x in args.extra] if args.extra else BASELINES
        for spec in specs:
            label = label_of(spec) + "".join(
                f"[{k}={v}]"
                for k, v in spec.items()
                if k not in ("name", "chunk_size", "aggregation")
            )
            if label in done or (args.only and spec["name"] not in args.only):
                continue
            settings = BASELINE_SETTINGS.parse(spec)
            run.baseline_costs.clear()
            errors: list[str] = []
            t = time.perf_counter()
            plan = run.jobs(estimators=[settings])
            est = run.estimate(plan, estimators=[settings], errors=errors)
            wall = time.perf_counter() - t
            costs = [c.get("seconds") for c in run.baseline_costs.values()]
            row = {"baseline": label, "wall_seconds": wall, "compute": costs[0] if costs else None}
            if errors or not est.attributions:
                out["rows"].append({**row, "error": errors or "no attributions"})
            for a in est.attributions:
                if a.behavior not in targets:
                    continue
                values = np.asarray(a.values, float)
                out["rows"].append(
                    {**row, "behavior": a.behavior, **lds(values, masks, targets[a.behavior])}
                )
            path.write_text(json.dumps(out, indent=1, default=float) + "\n")
            print(f"{label}: {wall:.0f} s", file=sys.stderr)
    print(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
