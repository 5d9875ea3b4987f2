"""The markdown tables of BENCHMARKS.md's surrogate-vs-sFT section, from surrogate.py's
``results.json`` (no fitting here).

    python benchmarks/surrogate_tables.py benchmarks/data/surrogate/results.json

Prints the LDS and cost of every pipeline at every M (LDS: mean over retraining seeds, with
the bootstrap interval over test subsets; cost: mean seconds per counterfactual job and the
total to reach M, the method's one-time preparation included), the fidelity of each game to
retraining by coalition size, and the per-job cost ratio of sFT to the surrogate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _f(x, nd=1) -> str:
    return "–" if x is None or x != x else f"{x:.{nd}f}"


def pipeline_lines(res: dict) -> list[str]:
    rows = [r for r in res["results"] if "behavior" in r]
    behaviors = sorted({r["behavior"] for r in rows})
    out = [
        "| pipeline | method + estimator | M | "
        + " | ".join(f"LDS {b} [bootstrap 95 %]" for b in behaviors)
        + " | s / counterfactual | s to reach M |",
        "|---|---|---|" + "---|" * len(behaviors) + "---|---|",
    ]
    keys = sorted({(r["pipeline"], r["M"]) for r in rows})
    for p, m in keys:
        by = {r["behavior"]: r for r in rows if r["pipeline"] == p and r["M"] == m}
        any_r = next(iter(by.values()))
        cells = []
        for b in behaviors:
            r = by.get(b)
            if r is None:
                cells.append("–")
                continue
            lo, hi = r["bootstrap_95_over_test_subsets"]
            cells.append(f"{_f(r['lds'])} [{_f(lo)}, {_f(hi)}]")
        out.append(
            f"| ({p}) | {any_r['method']} + {any_r['estimator']} | {m} | "
            + " | ".join(cells)
            + f" | {_f(any_r['seconds_per_counterfactual'], 2)} | {_f(any_r['total_seconds'], 0)} |"
        )
    errors = [r for r in res["results"] if "error" in r]
    for r in errors:
        out.append(f"\n({r['pipeline']}) at M = {r['M']}: {r['error']}")
    return out


def _difference(r: dict) -> str:
    """The behavior, difference, paired interval and verdict cells of a paired row."""
    lo, hi = r["bootstrap_95_over_test_subsets"]
    verdict = "yes" if r["resolved"] else "no"
    return f"{r['behavior']} | {r['difference']:+.1f} | [{_f(lo)}, {_f(hi)}] | {verdict} |"


def paired_lines(res: dict) -> list[str]:
    out = [
        "| second − first | M | behavior | LDS difference | paired bootstrap 95 % | resolved |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.get("paired", []):
        out.append(f"| ({r['second']}) − ({r['first']}) | {r['M']} | {_difference(r)}")
    return out


def equal_time_lines(res: dict) -> list[str]:
    share = res.get("sft_job_over_its_sampling") or {}
    out = [
        f"An sFT job costs a median {_f(share.get('ratio'), 2)}x its own sampling and "
        f"measuring ({share.get('jobs')} jobs), so M sFT jobs buy about that many times M "
        "surrogate jobs.\n",
        "| sFT pipeline, M | surrogate pipeline, M (affordable) | behavior | "
        "LDS surrogate − sFT | paired bootstrap 95 % | resolved |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.get("equal_time", []):
        out.append(
            f"| ({r['sft']}) {r['sft_M']} | ({r['surrogate']}) {r['surrogate_M']} "
            f"({_f(r['affordable_M'], 0)}) | {_difference(r)}"
        )
    return out


def fidelity_lines(res: dict) -> list[str]:
    out = [
        "| coalitions | method | behavior | Pearson | Spearman | MAE | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in res["fidelity"]:
        out.append(
            f"| {f['coalitions']} | {f['method']} | {f['behavior']} | {_f(f['pearson'], 2)} | "
            f"{_f(f['spearman'], 2)} | {_f(f['mae'], 2)} | {f['n']} |"
        )
    return out


def cost_lines(res: dict) -> list[str]:
    per = {}
    for r in res["results"]:
        if "seconds_per_counterfactual" in r and r["jobs"]:
            per.setdefault(r["method"], []).append(r["seconds_per_counterfactual"])
    out = []
    means = {m: float(np.nanmean(v)) for m, v in per.items()}
    for m, v in means.items():
        out.append(f"{m}: {v:.2f} s per counterfactual (mean over the pipelines' rows)")
    if "sft" in means and "surrogate" in means and means["surrogate"] > 0:
        out.append(f"sFT / surrogate per counterfactual: {means['sft'] / means['surrogate']:.1f}x")
    out.append(f"one-time preparation: {res.get('prepare_seconds')}")
    out.append(f"retraining: {_f(res.get('retrain_seconds_per_job'), 1)} s per model")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    res = json.loads(ap.parse_args().results.read_text())
    for title, lines in (
        ("LDS and cost of every pipeline", pipeline_lines(res)),
        ("Paired LDS differences", paired_lines(res)),
        ("At equal wall time", equal_time_lines(res)),
        ("Fidelity to retraining", fidelity_lines(res)),
        ("Cost", cost_lines(res)),
    ):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
