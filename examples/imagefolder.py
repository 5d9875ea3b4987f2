"""Attribute a folder in Hugging Face's `imagefolder` layout to its contributors.

    python examples/imagefolder.py [IMAGEFOLDER [RUN_DIR]]

An imagefolder is images plus a `metadata.csv` (or `metadata.jsonl`) whose `file_name`
column names each image and whose other columns say anything about it -- here `artist`
(who contributed it: the players) and `label` (what it shows: the quality classifier's
classes). `datasets.load_dataset("imagefolder", data_dir=...)` reads the same folder.
Without IMAGEFOLDER the script first writes a small one: sklearn's digits 0-3 split among
six artists, the last of whom uploads noisy copies.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

import diffattr

ARTISTS = ["ada", "bea", "cal", "dov", "eli", "fay"]


def write_demo(root: Path) -> Path:
    """Digits 0-3 as 8x8 grey PNGs, dealt round-robin to six artists (fay's are noisy)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.flatnonzero(digits.target < 4)
    rng = np.random.default_rng(0)
    rows = []
    for i, k in enumerate(keep):
        artist = ARTISTS[i % len(ARTISTS)]
        pixels = digits.images[k] * 16.0  # 0..16 -> 0..256
        if artist == "fay":
            pixels = pixels + rng.normal(0, 60, pixels.shape)
        name = f"{artist}/{k:04d}.png"
        (root / artist).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name)
        rows.append([name, artist, int(digits.target[k])])
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "artist", "label"])
        writer.writerows(rows)
    return root


def main(
    folder: str | Path | None = None,
    out: str | Path = "runs/imagefolder",
    settings: dict | None = None,
):
    if folder is None:
        folder = write_demo(Path(f"{out}-data"))
    run = diffattr.Run.create(
        out,
        preset="quick",
        data=folder,  # metadata.csv: read as [data] name = "imagefolder"
        settings={"data.contributor_column": "artist", **(settings or {})},
    )
    print(run.plan().render())
    values = run.attribute()
    table = values.to_pandas()
    print(table.sort_values(["behavior", "rank"]).to_string(index=False))
    fig = values.plot(behavior="fid")
    fig.savefig(Path(out) / "values-fid.png", bbox_inches="tight")
    print(f"figure: {Path(out) / 'values-fid.png'}")
    return values


if __name__ == "__main__":
    main(*sys.argv[1:3])
