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
with the count, or an error with ``strict``. A NUL byte in a cell is refused.

A contributor folder (or an image file) whose name is not valid UTF-8 is refused in one
line: player names are written to values.csv / values.json as UTF-8 and must be renamed to
be representable there. Without ``channels``, every image's mode decides the channels: a
mixed set trains on the majority's and says so in one warning.

The optional column ``caption`` is the text of each image for text-to-image models
(``ImageDataset.captions``); an empty cell means "no caption" (the family's ``prompt``
setting fills it in).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffattr.data.base import ImageDataset, require_file, resize, to_unit_range
from diffattr.errors import DiffattrError, DiffattrWarning
from diffattr.fileio import check_utf8_file, not_utf8_error

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image held in memory (PNG, JPEG, ... bytes), named for messages: an image
    of a Hugging Face dataset (``diffattr.data.hf``), read like an image file."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


def _open(src: Path | EncodedImage):
    from PIL import Image

    return Image.open(src if isinstance(src, Path) else io.BytesIO(src.data))


def _read_image(path: Path | EncodedImage, channels: int) -> np.ndarray:
    from PIL import UnidentifiedImageError

    if isinstance(path, Path) and not path.is_file():
        raise DiffattrError(f"image file not found: {path}")
    try:
        with _open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DiffattrError(f"cannot read image {path}: {e}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _detect_channels(path: Path | EncodedImage) -> int:
    from PIL import UnidentifiedImageError

    try:
        with _open(path) as im:
            return 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except (UnidentifiedImageError, OSError) as e:
        raise DiffattrError(f"cannot read image {path}: {e}") from None


# image path (or an image in memory), contributor, semantic label (or None)
Entry = tuple[Path | EncodedImage, str, str | None]


def _choose_channels(root: Path, entries: list[Entry]) -> int:
    """The channels of every image decide (not the first one's): 1 if all are grey, 3 if
    all are colour; when they disagree, the majority (a tie: colour, which holds grey
    losslessly), with one warning saying how many of each and how to choose."""
    modes = [_detect_channels(p) for p, _, _ in entries]
    grey = modes.count(1)
    colour = len(modes) - grey
    if not grey or not colour:
        return modes[0]
    channels = 1 if grey > colour else 3
    odd = next(p for (p, _, _), c in zip(entries, modes) if c != channels)
    warnings.warn(
        f"{root}: the images disagree: {grey} grey and {colour} colour (e.g. {odd}); training "
        f"on {'1-channel grey' if channels == 1 else '3-channel RGB'} images, the "
        f"{min(grey, colour)} other(s) converted; set [data] channels = 1 or 3 "
        "(--set data.channels=N) to choose",
        DiffattrWarning,
        stacklevel=3,
    )
    return channels


def _entries_from_dirs(root: Path) -> list[Entry]:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DiffattrError(
            f"{root} has no subfolders: put each contributor's images in a subfolder"
        )
    out = []
    for sd in subdirs:
        _refuse_undecodable(root, sd, "contributor folder")
        files = sorted(
            p for p in sd.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DiffattrError(f"contributor folder {sd} holds no images")
        for f in files:
            _refuse_undecodable(root, f, "image")
        out.extend((f, sd.name, None) for f in files)
    return out


def _refuse_undecodable(root: Path, path: Path, what: str) -> None:
    """A name under ``root`` that is not valid UTF-8 is refused in one line, before any
    training. Such a name reaches Python as surrogate escapes (``os.fsdecode``); a player
    name (a folder; an image with ``players = "sample"``) goes to values.csv, values.json
    and the report, UTF-8 text that cannot hold it -- written back with surrogate escapes
    it would be bytes the package's own readers and spreadsheets refuse. Renaming is the
    one lossless fix."""
    rel = path.relative_to(root)
    try:
        str(rel).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(rel)
        raise DiffattrError(
            f"{what} {ascii(os.fsdecode(root))[1:-1]}/{raw!r} has a name that is not UTF-8; "
            "rename it (player names are written to values.csv and values.json as UTF-8)"
        ) from None


def _entries_from_csv(
    csv_path: Path, strict: bool = False, captions: list[str | None] | None = None
) -> list[Entry]:
    """The CSV's rows; with ``captions`` (a list) each row's caption (None if empty) is
    appended to it, or the list is left empty when the CSV has no caption column."""
    base = csv_path.parent
    out: list[Entry] = []
    check_utf8_file(csv_path)
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
                _refuse_nul(csv_path, line, row)
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
        raise not_utf8_error(csv_path, e) from None
    except csv.Error as e:
        raise DiffattrError(f"{csv_path}: malformed CSV ({e}); fix the file") from None
    if not out:
        raise DiffattrError(f"{csv_path} lists no images")
    _check_duplicates(csv_path, out, strict)
    return out


def _refuse_nul(csv_path: Path, line: int, row: dict) -> None:
    """A NUL byte in a cell is refused: a contributor ``"ann\\x00"`` would be a player of
    its own that prints as ``ann``, and a path holding one names no file."""
    for column, cell in row.items():
        cells = cell if isinstance(cell, list) else [cell]  # extra cells (restkey None)
        if any(isinstance(c, str) and "\x00" in c for c in cells):
            where = f"column {column!r}" if column is not None else "a cell past the header"
            raise DiffattrError(
                f"{csv_path}:{line}: {where} holds a NUL byte (\\x00); remove it from the file"
            )


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
        channels: 1 (grey) or 3 (RGB); default: 1 if every image is grey, 3 if every
            image is colour, else the majority with a warning (``_choose_channels``).
        strict: refuse a CSV that lists an image more than once (default: a warning).
    """
    if path is None:
        raise DiffattrError("the folder dataset needs --data DIR_OR_CSV")
    root = require_file(Path(path), "image folder or CSV", "pass an existing path with --data")
    captions: list[str | None] = []
    entries = (
        _entries_from_csv(root, strict, captions) if root.is_file() else _entries_from_dirs(root)
    )
    return dataset_from_entries(root, entries, captions or None, image_size, channels)


def dataset_from_entries(
    root: Path,
    entries: list[Entry],
    captions: list[str | None] | None,
    image_size: int | None = None,
    channels: int | None = None,
    ids: list[str] | None = None,
    files: list[str] | None = None,
) -> ImageDataset:
    """The ``folder`` dataset of ``entries`` (read from ``root``, a folder or a listing
    file): the images decoded and converted alike, contributors as players. Every layout
    that lists the same images, contributors, labels and captions (the folder CSV, the
    imagefolder metadata, a Hugging Face dataset) gives the same dataset and content digest.
    ``ids`` default to the images' paths relative to the listing's folder; ``files`` (what
    the images were read from) to the listing and the image files."""
    if channels is None:
        channels = _choose_channels(root, entries)
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
    if ids is None:
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
            "files": files
            if files is not None
            else ([str(root.resolve())] if root.is_file() else [])
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
