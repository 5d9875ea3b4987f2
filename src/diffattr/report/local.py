"""Per-image attributions of the local behaviors: for a few generated images, the full
model's image and the players credited most for the behavior of that image.

``values.json`` holds one attribution per (estimator, local behavior, generated image), keyed
``ssim[pixel]#i``; the contributor tables leave them out (there would be one per image) and
this section shows the first :data:`IMAGES_SHOWN` images of each instead. The full model's
images are read from the run's ``cache/full-samples/`` (read-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffattr.behaviors.keys import split_image_key
from diffattr.report.common import Cell, best_first, esc, fmt, note, png_bytes_uri, table

IMAGES_SHOWN = 4
TOP_PLAYERS = 3


def is_per_image(a: dict[str, Any]) -> bool:
    return split_image_key(a.get("behavior") or "")[1] is not None


def shown(attributions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-image attributions this section shows (the first images of each)."""
    return [
        a for a in attributions if (split_image_key(a.get("behavior") or "")[1] or 0) < IMAGES_SHOWN
    ]


def top_players(attributions: list[dict[str, Any]]) -> list[str]:
    """The players the section names (their thumbnails are needed)."""
    out: dict[str, None] = {}
    for a in shown(attributions):
        for i in best_first(a["values"], a["behavior"])[:TOP_PLAYERS]:
            out.setdefault(a["names"][int(i)], None)
    return list(out)


def full_images(run_dir: Path) -> np.ndarray | None:
    """The full model's generated images (G, C, H, W) in [-1, 1], the newest cached set."""
    files = sorted(
        (run_dir / "cache" / "full-samples").glob("*.safetensors"),
        key=lambda p: p.stat().st_mtime,
    )
    if not files:
        return None
    try:
        from safetensors.numpy import load_file

        return load_file(files[-1])["images"]
    except Exception:  # noqa: BLE001 - a damaged cache only loses the pictures
        return None


def render_local(attributions: list[dict[str, Any]], run_dir: Path, thumbnails: Any = None) -> str:
    """The section of the per-image attributions (empty when there are none)."""
    from diffattr.report.contributors import strip_png  # scipy: only with a section to draw

    per_image = shown(attributions)
    if not per_image:
        return ""
    total = sum(1 for a in attributions if is_per_image(a))
    images = full_images(run_dir)
    parts = [
        "<h2>Credit for single generated images</h2>",
        "<p>"
        + esc(
            f"Local behaviors are attributed per generated image ({total:,} attributions in "
            f"values.csv): for the first {IMAGES_SHOWN} images, the full model's image and the "
            f"{TOP_PLAYERS} players credited most for that image's behavior (against the full "
            "model's own image for the same seed), by each estimator."
        )
        + "</p>",
    ]
    if images is None:
        parts.append(note("The full model's images are not in cache/full-samples/."))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for a in per_image:
        base, image = split_image_key(a["behavior"])
        groups.setdefault((a["estimator"], base), []).append(a)
    for (estimator, base), attrs in groups.items():
        rows = []
        for a in sorted(attrs, key=lambda x: split_image_key(x["behavior"])[1]):
            image = split_image_key(a["behavior"])[1]
            pic = ""
            if images is not None and image < len(images):
                uri = png_bytes_uri(strip_png(images[image : image + 1]))
                pic = f'<img class="thumb" src="{uri}" alt="generated image {image}">'
            cells = [image, Cell(pic)]
            for i in best_first(a["values"], a["behavior"])[:TOP_PLAYERS]:
                name = a["names"][int(i)]
                thumb = ""
                uri = (thumbnails.uris.get(name) if thumbnails is not None else None) or ""
                if uri:
                    thumb = (
                        f'<br><img class="thumb" src="{uri}" alt="training images of {esc(name)}">'
                    )
                cells.append(Cell(f"{esc(name)} ({esc(fmt(a['values'][int(i)]))}){thumb}"))
            rows.append(cells)
        header = ["image", "full model"] + [f"#{r + 1}" for r in range(TOP_PLAYERS)]
        parts.append(f"<h3>{esc(estimator)}: {esc(base)}</h3>" + table(rows, header))
    return "".join(parts)
