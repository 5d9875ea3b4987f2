"""``diffattr measure``: global behaviors of a model's samples or of an image folder.

The feature space (``--features``, default ``auto``: the dataset's semantic classifier, a
folder's ``label`` column classifier, else the label-free autoencoder) and the reference
(``--reference``: ``train`` or a folder of curated real images) are those of the
``[behaviors]`` section of a run (``diffattr.behaviors.settings``, spaces in
``diffattr.behaviors.spaces``); ``--settings FILE``
reads a whole section from TOML. Caches go to ``--cache-dir``, else
``$DIFFATTR_HOME/cache``, else ``$XDG_CACHE_HOME/diffattr`` (``~/.cache/diffattr``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from diffattr.errors import DiffattrError

__all__ = ["measure", "behaviors_table", "default_cache_dir"]


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
    from diffattr.diffusion.checkpoint import read_meta

    meta = read_meta(model_dir)
    config = meta.get("config") if isinstance(meta, dict) else None
    return config.get("data") if isinstance(config, dict) else None


def print_behaviors(values: dict[str, float], title: str, caption: str | None = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from diffattr.behaviors.settings import BEHAVIORS

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


def default_cache_dir(given: Path | None) -> Path:
    """``--cache-dir``, else ``$DIFFATTR_HOME/cache``, else the user's cache folder."""
    import os

    if given is not None:
        return Path(given).expanduser()
    if os.environ.get("DIFFATTR_HOME"):
        return Path(os.environ["DIFFATTR_HOME"]).expanduser() / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "diffattr"


def behaviors_table(
    settings_file: Path | None,
    behaviors: str | None,
    features: str | None,
    features_path: str | None,
    reference: str | None,
    aesthetic_head: str | None,
) -> dict:
    """The ``[behaviors]`` table from ``--settings`` and the flags (flags win)."""
    import tomllib

    table: dict = {}
    if settings_file is not None:
        if not Path(settings_file).is_file():
            raise DiffattrError(f"settings file not found: {settings_file}")
        try:
            data = tomllib.loads(Path(settings_file).read_text())
        except tomllib.TOMLDecodeError as e:
            raise DiffattrError(f"{settings_file}: invalid TOML: {e}") from None
        table = dict(data.get("behaviors", data))
    if features is not None:
        table["features"] = {"name": features}
    if features_path is not None:
        feats = table.get("features", "auto")
        feats = {"name": feats} if isinstance(feats, str) else dict(feats)
        if feats.get("name") == "auto":
            raise DiffattrError("--features-path needs --features (a space that takes a path)")
        feats["path"] = str(features_path)
        table["features"] = feats
    if reference is not None:
        table["reference"] = str(reference)
    if behaviors is not None:
        table["measure"] = [n.strip() for n in behaviors.split(",") if n.strip()]
        if not table["measure"]:
            raise DiffattrError("--behaviors names no behavior")
    if aesthetic_head is not None:
        items = table.get("measure", [])
        table["measure"] = [
            {"name": b, "head": str(aesthetic_head)}
            if isinstance(b, str) and b.startswith("aesthetic")
            else b
            for b in items
        ]
    return table


def _with_default_measure(table: dict, dataset) -> dict:
    """Without a behavior list: every behavior the section's feature space supports."""
    from diffattr.behaviors.settings import parse_behaviors
    from diffattr.behaviors.spaces import resolve_features
    from diffattr.behaviors.suite import supported_behaviors

    if "measure" in table:
        return table
    section = parse_behaviors(table)
    space = resolve_features(section.features, dataset.name, dataset.semantic_labels is not None)
    return dict(table, measure=supported_behaviors(space.has_probs))


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
        None, "--dataset", help="training data (default: the model's, else digits)"
    ),
    data: str | None = typer.Option(None, "--data", help="local data path of the dataset"),
    image_size: int | None = typer.Option(None, "--image-size", help="dataset image size"),
    behaviors: str | None = typer.Option(
        None,
        "--behaviors",
        help="comma-separated names (default: every behavior the feature space supports)",
    ),
    features: str | None = typer.Option(
        None,
        "--features",
        help="feature space: auto | digits-cnn | fashion-mnist-cnn | cifar-cnn | label-cnn | "
        "autoencoder | inception | clip | blip",
    ),
    features_path: str | None = typer.Option(
        None,
        "--features-path",
        help="local file/folder of the space: Inception .pth, CLIP/BLIP directory, data dir",
    ),
    reference: str | None = typer.Option(
        None,
        "--reference",
        help="'train' (the training data, default) or a folder of curated real images",
    ),
    aesthetic_head: str | None = typer.Option(
        None, "--aesthetic-head", help="LAION aesthetic head file for the aesthetic-* behaviors"
    ),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="TOML file with a [behaviors] section (flags override it)"
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="cache folder (default $DIFFATTR_HOME/cache, ~/.cache/diffattr)"
    ),
    ddim_steps: int | None = typer.Option(None, "--ddim-steps", help="override DDIM steps"),
    seed: int | None = typer.Option(None, "--seed", help="override the sampling seed"),
    out: Path | None = typer.Option(None, "--out", help="write the values to this JSON file"),
    device: str = typer.Option("cpu", "--device", help="torch device"),
) -> None:
    """Print global behaviors (FID, IS, precision, recall, density, coverage, entropies, ...)."""
    from diffattr.behaviors.settings import parse_behaviors

    table = behaviors_table(
        settings_file, behaviors, features, features_path, reference, aesthetic_head
    )
    parse_behaviors(table)  # one-line errors before any data is read
    if (model_dir is None) == (images is None):
        raise DiffattrError("give either a model directory or --images DIR (exactly one)")
    if samples is not None and samples < 2:
        raise DiffattrError(f"--samples must be at least 2, got {samples}")
    from diffattr.torchutils import check_device

    check_device(device)
    cache = default_cache_dir(cache_dir)
    if images is not None:
        from diffattr.behaviors.suite import build_suite
        from diffattr.data import load_dataset

        data_cfg = _data_config(None, dataset or "digits", data, image_size)
        real = load_dataset(data_cfg)
        from diffattr.behaviors.reference import read_image_folder

        x = read_image_folder(images, real.channels, real.image_size)
        if len(x) < 2:
            raise DiffattrError(f"{images} holds one image; at least 2 are needed")
        suite = build_suite(
            _with_default_measure(table, real), real, device=device, cache_dir=cache
        )
        values = suite.measure(x)
        ref = suite.reference["reference"]
        against = f"{real.name} training images" if ref == "train" else ref
        title = f"{images}: {len(x)} images vs {against}"
        caption = None
    else:
        from diffattr.behaviors.suite import measure_model
        from diffattr.data import load_dataset

        stored = _stored_data_config(model_dir)
        data_cfg = None
        if stored is None or any(v is not None for v in (dataset, data, image_size)):
            data_cfg = _data_config(
                stored, dataset or (None if stored else "digits"), data, image_size
            )
        if "measure" not in table:
            from diffattr.data.settings import parse_data

            real = load_dataset(data_cfg or parse_data(stored))
            table = _with_default_measure(table, real)
        result = measure_model(
            model_dir,
            samples,
            settings=table,
            cache_dir=cache,
            device=device,
            ddim_steps=ddim_steps,
            seed=seed,
            data_cfg=data_cfg,
        )
        values = result.behaviors
        t = result.timings
        title = f"{model_dir}: {result.num_samples} samples vs {result.data['name']} data"
        caption = (
            f"load {t['load_s']:.1f} s, generate {t['generate_s']:.1f} s "
            f"({result.sample['ddim_steps']} DDIM steps), measure {t['measure_s']:.1f} s"
        )
    print_behaviors(values, title, caption)
    if out is not None:
        write_json(values, out)
        typer.echo(f"wrote {out}")
