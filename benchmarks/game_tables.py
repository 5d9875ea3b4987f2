"""The markdown tables of BENCHMARKS.md's "recorded complete game" section, from game.py's JSON.

    cd benchmarks/data/complete_game
    python ../../game_tables.py game.json game-tree.json

Prints, from the results as recorded (no fitting here): sFT's fidelity to retraining (the
test subsets, then the small and large coalitions by size), the ceilings (each exact
definition's LDS), the estimator table (Spearman with the exact values of the estimator's
own definition at M = 32 / 64 / 256, and LDS with its sd over draws at M = 64; ``*`` marks a
cell where some draws were not identified) and the paired LDS differences against the
paper's estimator at M = 32 and 64.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FID, IS = "fid[digits-cnn]", "is[digits-cnn]"
GRID = (32, 64, 256)
PAPER = "shapley (paired kernel, iid, given ends: the paper's)"
CEILING_NAMES = {
    "shapley": "Shapley",
    "banzhaf": "Banzhaf (= the best additive fit here)",
    "datamodel": "datamodel (least squares over all α = 0.5 subsets)",
}


def _f(x, nd=2) -> str:
    return "–" if x is None or x != x else f"{x:.{nd}f}"


def fidelity_lines(results: list[dict]) -> list[str]:
    out = []
    test = {r["behavior"]: r for r in results[0]["fidelity"] if r["group"] == "test"}
    if test:
        f, i = test[FID], test[IS]
        out.append(
            f"test subsets: {f['subsets']} x {f['seeds']} seeds; Pearson {_f(f['pearson'])} / "
            f"{_f(i['pearson'])}, Spearman {_f(f['spearman'])} / {_f(i['spearman'])}; "
            f"retraining seed-to-seed Spearman {_f(f.get('seed_to_seed_spearman'))} / "
            f"{_f(i.get('seed_to_seed_spearman'))}"
        )
    out += [
        "",
        "| coalitions | n (seeds) | FID Pearson / Spearman | IS Pearson / Spearman "
        "| mean FID sFT / retrained |",
        "|---|---|---|---|---|",
    ]
    rows = [r for r in results[0]["fidelity"] if r["group"].startswith("small-large, size")]
    for size in sorted({r["group"] for r in rows}, key=lambda g: int(g.rsplit(" ", 1)[1])):
        by = {r["behavior"]: r for r in rows if r["group"] == size}
        f, i = by[FID], by[IS]
        k = int(size.rsplit(" ", 1)[1])
        out.append(
            f"| {k} player{'s' if k > 1 else ''} | {f['subsets']} ({f['seeds']}) | "
            f"{_f(f['pearson'])} / {_f(f['spearman'])} | {_f(i['pearson'])} / "
            f"{_f(i['spearman'])} | {_f(f['mean_sft'], 1)} / {_f(f['mean_retrained'], 1)} |"
        )
    return out


def ceiling_lines(results: list[dict]) -> list[str]:
    by = {(c["values"], c["behavior"]): c for c in results[0]["ceilings"]}
    out = ["| exact sFT values | LDS FID | LDS IS |", "|---|---|---|"]
    for key, label in CEILING_NAMES.items():
        cells = []
        for b in (FID, IS):
            c = by[(key, b)]
            lo, hi = c["ci95_boot"]
            cells.append(f"{c['lds']:.1f} [{lo:.1f}, {hi:.1f}]")
        out.append(f"| {label} | {cells[0]} | {cells[1]} |")
    seeds = len(results[0]["ceilings"][0]["per_seed"])
    out.append("")
    out.append(f"(mean over {seeds} retraining seeds of the per-seed LDS)")
    return out


def estimator_lines(results: list[dict]) -> list[str]:
    rows = [r for res in results for r in res["estimators"]["rows"]]
    cell = {(r["estimator"], r["M"], r["behavior"]): r for r in rows}
    labels = list(dict.fromkeys(r["estimator"] for r in rows))
    out = [
        "| estimator | Spearman FID, M = 32 / 64 / 256 | Spearman IS "
        "| LDS FID (sd at 64) | LDS IS (sd at 64) |",
        "|---|---|---|---|---|",
    ]
    for label in labels:
        parts = []
        for key, nd in (("spearman_mean", 2), ("lds_mean", 0)):
            for b in (FID, IS):
                vals = []
                for m in GRID:
                    r = cell.get((label, m, b)) or cell.get((label, 10, b))  # LOO: M = n
                    if r is None:
                        continue
                    star = "*" if r.get("not_identified") and r.get("draws") else ""
                    vals.append(_f(r[key], nd) + star)
                text = " / ".join(dict.fromkeys(vals)) if label == "loo" else " / ".join(vals)
                if key == "lds_mean":
                    r64 = cell.get((label, 64, b)) or cell.get((label, 10, b))
                    sd = r64.get("lds_sd") if r64 else None
                    text += f" ({_f(sd, 0)})"
                parts.append(text)
        out.append(f"| {label} | " + " | ".join(parts) + " |")
    return out


def paired_lines(results: list[dict]) -> list[str]:
    out = []
    for res in results:
        for p in res.get("paired_vs_paper", []):
            if p["M"] in (32, 64) and p.get("minus") == PAPER:
                lo, hi = p["ci95"]
                out.append(
                    f"M = {p['M']}, {p['behavior']}: {p['estimator']} {p['mean_diff']:+.1f} "
                    f"[{lo:.1f}, {hi:.1f}] ({p['draws']} draws)"
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, nargs="+", help="game.py JSON (the first: fidelity)")
    args = ap.parse_args()
    results = [json.loads(p.read_text()) for p in args.results]
    for title, lines in (
        ("sFT against retraining", fidelity_lines(results)),
        ("Ceilings", ceiling_lines(results)),
        ("Every estimator", estimator_lines(results)),
        ("Paired LDS differences against the paper's estimator", paired_lines(results)),
    ):
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
