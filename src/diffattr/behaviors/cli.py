"""``diffattr measure``: every global behaviour of a model's samples or of an image folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from diffattr.errors import DiffattrError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _data_config(base: dict | None, dataset: str | None, data: str | None, size: int | None):
    from diffattr.data.settings import parse_data

    fields = dict(base or {"name": "digits"})
    if dataset is not None and dataset != fields.get("name"):
        # Another dataset: the stored path / classes / subset belong to the old one.
        fields = {"name": dataset}
    for key, value in (("path", data), ("image_size", size)):
        if value is not None:
            fields[key] = value
    return parse_data(fields)


def _stored_data_config(model_dir: Path) -> dict | None:
    """The ``data`` section of the config stored in a model directory (None if absent)."""
    from diffattr.diffusion.checkpoint import is_model_dir

    if not is_model_dir(model_dir):
        raise DiffattrError(
            f"{model_dir} is not a diffattr model directory (expected unet/ and "
            "diffattr.json; make one with `diffattr train`)"
        )
    try:
        meta = json.loads((Path(model_dir) / "diffattr.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DiffattrError(f"cannot read {model_dir}/diffattr.json: {e}") from None
    config = meta.get("config") if isinstance(meta, dict) else None
    return config.get("data") if isinstance(config, dict) else None


def read_image_folder(folder: Path, channels: int, image_size: int):
    """All PNG/JPEG files under ``folder`` (sorted, recursive) as (N, C, S, S) in [-1, 1].

    Images are converted to grey (C = 1) or RGB (C = 3) and resized (antialiased bilinear)
    to ``image_size`` x ``image_size``; non-square images are stretched.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from diffattr.data.base import resize, to_unit_range

    folder = Path(folder)
    if not folder.exists():
        raise DiffattrError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DiffattrError(f"--images must be a folder of PNG/JPEG files, got the file {folder}")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DiffattrError(f"{folder} holds no PNG or JPEG images")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DiffattrError(f"cannot read image {p}: {e}") from None
        chw = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        x = to_unit_range(chw[None], 255.0)
        if x.shape[-2] != x.shape[-1]:
            x = torch.nn.functional.interpolate(
                x, size=(image_size, image_size), mode="bilinear", antialias=True
            ).clamp(-1, 1)
        out.append(resize(x, image_size))
    return torch.cat(out)


def print_behaviors(values: dict[str, float], title: str, caption: str | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from diffattr.behaviors.suite import BEHAVIORS

    # Keys such as fid[digits-cnn] would otherwise be read as rich markup.
    table = Table(title=escape(title), caption=escape(caption) if caption else None)
    table.add_column("behavior")
    table.add_column("value", justify="right")
    table.add_column("better", justify="center")
    for key, value in values.items():
        name = key.split("[", 1)[0]
        better = ""
        if name in BEHAVIORS:
            better = "higher" if BEHAVIORS.get(name).higher_is_better else "lower"
        table.add_row(escape(key), f"{value:.6g}", better)
    Console().print(table)


def write_json(values: dict[str, float], path: Path) -> Path:
    """One flat JSON object name -> number, written atomically."""
    from diffattr.behaviors.features import atomic_write_text

    clean = {k: (float(v) if math.isfinite(v) else None) for k, v in values.items()}
    atomic_write_text(Path(path), json.dumps(clean, indent=2) + "\n")
    return Path(path)


def measure(
    model_dir: Path | None = typer.Argument(
        None, help="model directory (from `diffattr train`); or use --images"
    ),
    samples: int | None = typer.Option(
        None, "--samples", help="images to generate (default: the model's sample config, 1000)"
    ),
    images: Path | None = typer.Option(
        None, "--images", help="measure a folder of PNG/JPEG images instead of a model"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="real data to compare with (default: the model's, else digits)"
    ),
    data: str | None = typer.Option(None, "--data", help="local data path of the dataset"),
    image_size: int | None = typer.Option(None, "--image-size", help="dataset image size"),
    behaviors: str | None = typer.Option(
        None, "--behaviors", help="comma-separated names (default: all global behaviours)"
    ),
    features: str = typer.Option("cnn", "--features", help="cnn | inception"),
    inception_weights: Path | None = typer.Option(
        None, "--inception-weights", help="local pt_inception-2015-12-05-6726825d.pth"
    ),
    ddim_steps: int | None = typer.Option(None, "--ddim-steps", help="override DDIM steps"),
    seed: int | None = typer.Option(None, "--seed", help="override the sampling seed"),
    out: Path | None = typer.Option(None, "--out", help="write the values to this JSON file"),
    device: str = typer.Option("cpu", "--device", help="torch device"),
) -> None:
    """Print every global behaviour (FID, IS, precision, recall, density, coverage, entropies)."""
    from diffattr.behaviors.suite import get_suite, measure_model, parse_names

    names = parse_names(behaviors)
    if (model_dir is None) == (images is None):
        raise DiffattrError("give either a model directory or --images DIR (exactly one)")
    if samples is not None and samples < 2:
        raise DiffattrError(f"--samples must be at least 2, got {samples}")
    from diffattr.runner.plan import check_device

    check_device(device)
    if images is not None:
        from diffattr.data import load_dataset

        data_cfg = _data_config(None, dataset or "digits", data, image_size)
        real = load_dataset(data_cfg)
        x = read_image_folder(images, real.channels, real.image_size)
        if len(x) < 2:
            raise DiffattrError(f"{images} holds one image; at least 2 are needed")
        suite = get_suite(data_cfg, device, kind=features, inception_weights=inception_weights)
        values = suite.measure(x, names)
        title = f"{images}: {len(x)} images vs {real.name} training images"
        caption = None
    else:
        stored = _stored_data_config(model_dir)
        data_cfg = None
        if stored is None or any(v is not None for v in (dataset, data, image_size)):
            data_cfg = _data_config(
                stored, dataset or (None if stored else "digits"), data, image_size
            )
        result = measure_model(
            model_dir,
            samples,
            names=names,
            device=device,
            ddim_steps=ddim_steps,
            seed=seed,
            data_cfg=data_cfg,
            kind=features,
            inception_weights=inception_weights,
        )
        values = result.behaviors
        t = result.timings
        title = f"{model_dir}: {result.num_samples} samples vs {result.data['dataset']} data"
        caption = (
            f"load {t['load_s']:.1f} s, generate {t['generate_s']:.1f} s "
            f"({result.sample['ddim_steps']} DDIM steps), measure {t['measure_s']:.1f} s"
        )
    print_behaviors(values, title, caption)
    if out is not None:
        write_json(values, out)
        typer.echo(f"wrote {out}")
