"""Image folders (one subfolder per contributor) or a CSV of ``path,contributor[,label][,caption]``
rows.

The optional CSV column ``label`` says what each image shows (a semantic class, e.g. the
digit or the art style), independently of who contributed it. It is kept as the dataset's
``semantic_labels`` and never changes the players: ``labels`` and ``contributors`` stay the
contributors. The behaviors use it to train a quality classifier (``label-cnn``) that does
not reward a contributor merely for being easy to tell apart.

CSV files are read with the ``csv`` module as UTF-8 (a byte-order mark is ignored), so
names with quotes, commas, newlines or any unicode round-trip; another encoding is a
one-line error. An image listed more than once (e.g. under two contributors) is a warning
with the count, or an error with ``strict``.

The optional column ``caption`` is the text of each image for text-to-image models
(``ImageDataset.captions``); an empty cell means "no caption" (the family's ``prompt``
setting fills it in).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch

from diffattr.data.base import ImageDataset, require_file, resize, to_unit_range
from diffattr.errors import DiffattrError, DiffattrWarning

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _read_image(path: Path, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DiffattrError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DiffattrError(f"cannot read image {path}: {e}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _detect_channels(path: Path) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except (UnidentifiedImageError, OSError) as e:
        raise DiffattrError(f"cannot read image {path}: {e}") from None


Entry = tuple[Path, str, str | None]  # image path, contributor, semantic label (or None)


def _entries_from_dirs(root: Path) -> list[Entry]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DiffattrError(
            f"{root} has no subfolders: put each contributor's images in a subfolder"
        )
    out = []
    for sd in subdirs:
        files = sorted(
            p for p in sd.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DiffattrError(f"contributor folder {sd} holds no images")
        out.extend((f, sd.name, None) for f in files)
    return out


def _entries_from_csv(
    csv_path: Path, strict: bool = False, captions: list[str | None] | None = None
) -> list[Entry]:
    """The CSV's rows; with ``captions`` (a list) each row's caption (None if empty) is
    appended to it, or the list is left empty when the CSV has no caption column."""
    base = csv_path.parent
    out: list[Entry] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"path", "contributor"} <= set(
                h.strip() for h in reader.fieldnames
            ):
                raise DiffattrError(
                    f"{csv_path} must have a header with columns path,contributor (and "
                    "optionally label, caption)"
                )
            reader.fieldnames = [h.strip() for h in reader.fieldnames]
            has_label = "label" in reader.fieldnames
            has_caption = "caption" in reader.fieldnames
            for row in reader:
                line = reader.line_num
                rel = (row.get("path") or "").strip()
                who = (row.get("contributor") or "").strip()
                if not rel or not who:
                    raise DiffattrError(f"{csv_path}:{line}: empty path or contributor")
                label = None
                if has_label:
                    label = (row.get("label") or "").strip()
                    if not label:
                        raise DiffattrError(
                            f"{csv_path}:{line}: empty label (give every row a label, or drop "
                            "the label column)"
                        )
                p = (base / rel).resolve()
                if not p.is_file():
                    raise DiffattrError(f"{csv_path}:{line}: image file not found: {base / rel}")
                out.append((p, who, label))
                if has_caption and captions is not None:
                    captions.append((row.get("caption") or "").strip() or None)
    except UnicodeDecodeError as e:
        raise DiffattrError(
            f"{csv_path} is not UTF-8 text (byte {e.start}); save it as UTF-8 and rerun"
        ) from None
    except csv.Error as e:
        raise DiffattrError(f"{csv_path}: malformed CSV ({e}); fix the file") from None
    if not out:
        raise DiffattrError(f"{csv_path} lists no images")
    _check_duplicates(csv_path, out, strict)
    return out


def _check_duplicates(csv_path: Path, entries: list[Entry], strict: bool) -> None:
    """An image listed more than once: a warning with the count, or an error (strict)."""
    owners: dict[Path, list[str]] = {}
    for p, who, _ in entries:
        owners.setdefault(p, []).append(who)
    dups = {p: w for p, w in owners.items() if len(w) > 1}
    if not dups:
        return
    extra = sum(len(w) - 1 for w in dups.values())
    p, who = next(iter(dups.items()))
    example = f"{p.name} under {', '.join(repr(w) for w in who)}"
    msg = (
        f"{csv_path}: {len(dups)} image(s) listed more than once ({extra} extra row(s); e.g. "
        f"{example})"
    )
    if strict:
        raise DiffattrError(f"{msg}; list each image once (data.strict is set)")
    warnings.warn(
        f"{msg}; each row trains as a separate image of its contributor (set data.strict = "
        "true, --strict, to refuse this)",
        DiffattrWarning,
        stacklevel=3,
    )


def load_folder(
    path: str | Path | None,
    image_size: int | None = None,
    channels: int | None = None,
    strict: bool = False,
) -> ImageDataset:
    """Load images with their contributors from a folder tree or a CSV file.

    Args:
        path: a directory whose subfolders are contributors, or a CSV with columns
            ``path,contributor`` and optionally ``label`` (paths relative to the CSV's
            folder; ``label`` becomes the dataset's ``semantic_labels``) and ``caption``
            (``captions``; an empty cell is None).
        image_size: resize to this square size; without it all images must share one size.
        channels: 1 (grey) or 3 (RGB); default: 1 if the first image is grey, else 3.
        strict: refuse a CSV that lists an image more than once (default: a warning).
    """
    if path is None:
        raise DiffattrError("the folder dataset needs --data DIR_OR_CSV")
    root = require_file(Path(path), "image folder or CSV", "pass an existing path with --data")
    captions: list[str | None] = []
    entries = (
        _entries_from_csv(root, strict, captions) if root.is_file() else _entries_from_dirs(root)
    )
    if channels is None:
        channels = _detect_channels(entries[0][0])
    if channels not in (1, 3):
        raise DiffattrError(f"channels must be 1 or 3, got {channels}")
    arrays = []
    first_shape = None
    for p, _, _ in entries:
        a = _read_image(p, channels)
        if image_size is None:
            if first_shape is None:
                first_shape = a.shape
            elif a.shape != first_shape:
                raise DiffattrError(
                    f"image {p} is {a.shape[2]}x{a.shape[1]} but {entries[0][0]} is "
                    f"{first_shape[2]}x{first_shape[1]}; pass an image size to resize them"
                )
            if a.shape[1] != a.shape[2]:
                raise DiffattrError(f"image {p} is not square; pass an image size to resize")
            arrays.append(to_unit_range(a[None], 255.0))
        else:
            arrays.append(resize(to_unit_range(a[None], 255.0), image_size))
    images = torch.cat(arrays)
    names = sorted({w for _, w, _ in entries})
    index = {n: i for i, n in enumerate(names)}
    anchor = root.parent if root.is_file() else root
    ids = []
    for p, _, _ in entries:
        try:
            ids.append(str(p.resolve().relative_to(anchor.resolve())))
        except ValueError:
            ids.append(str(p))
    return ImageDataset(
        name="folder",
        images=images,
        labels=torch.tensor([index[w] for _, w, _ in entries], dtype=torch.int64),
        ids=ids,
        class_names=names,
        contributors=[w for _, w, _ in entries],
        meta={
            "source": str(root),
            # what the images were read from: the content digest's cache key
            "files": ([str(root.resolve())] if root.is_file() else [])
            + [str(p) for p, _, _ in entries],
        },
        captions=captions or None,
        **_semantic(entries),
    )


def _semantic(entries: list[Entry]) -> dict:
    """``semantic_labels`` / ``semantic_names`` from the CSV label column (empty if none)."""
    if entries[0][2] is None:
        return {}
    names = sorted({lab for _, _, lab in entries}, key=_natural)
    index = {n: i for i, n in enumerate(names)}
    labels = torch.tensor([index[lab] for _, _, lab in entries], dtype=torch.int64)
    return {"semantic_labels": labels, "semantic_names": names}


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def has_semantic_labels(path: str | Path) -> bool:
    """Whether a folder/CSV dataset has semantic labels (a CSV with a ``label`` column),
    from the CSV header only -- cheap, for checking a run plan before loading images."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # the loader says what is wrong with the file
    return "label" in [h.strip() for h in header]


def load(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "folder"``: a folder of contributor subfolders, or a CSV."""
    if split != "train":
        raise DiffattrError("the folder dataset has a single split")
    return load_folder(
        settings.path, settings.image_size, settings.channels, getattr(settings, "strict", False)
    )
