"""Images as Hugging Face users hold them: the ``imagefolder`` layout and ``datasets.Dataset``.

* ``[data] name = "imagefolder"``: a folder with a ``metadata.csv`` or ``metadata.jsonl``
  (one row per image: ``file_name``, relative to the metadata file, and any other columns),
  as ``datasets.load_dataset("imagefolder", data_dir=...)`` reads it. One column names each
  image's contributor (``contributor_column``, default ``contributor``); a ``label`` and a
  ``caption`` column (or the ones ``label_column`` / ``caption_column`` name) are what the
  image shows and its text, as in the folder CSV.
* ``[data] name = "hf-dataset"``: a ``datasets.Dataset`` (or one split of a
  ``DatasetDict``) saved with ``save_to_disk``: an image column (``image_column``, a
  ``datasets.Image`` feature), the contributor column and the optional label and caption
  columns; ``ClassLabel`` columns count by their names. A ``datasets.Dataset`` in memory
  (from Python) is read by :func:`from_hf_dataset`; the public API saves it once into the
  run directory and reads it back from there (workers and resumed runs see the same files).
  Needs the ``datasets`` package: ``pip install 'diffattr[hf]'``.

Both become the same ``folder`` dataset as the folder CSV (``diffattr.data.folder``): the
images are decoded and converted alike, the sample ids are the ``file_name`` paths (a
dataset without a ``file_name`` column is keyed by row number, or by ``id_column``), so a
layout that lists the same images, contributors, labels and captions as a folder CSV has
the same content digest (``diffattr.data.digest``) -- the digest follows the content, not
the layout. Missing columns, empty cells, images that cannot be read and NUL bytes are
one-line errors naming the file and line (or row), as for the folder CSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffattr.errors import DiffattrError
from diffattr.fileio import check_utf8_file, not_utf8_error

if TYPE_CHECKING:  # the loaders import torch; the column readers (run plan) do not
    from diffattr.data.base import ImageDataset
    from diffattr.data.folder import EncodedImage, Entry

METADATA_FILES = ("metadata.csv", "metadata.jsonl")
FILE_NAME = "file_name"
HF_EXTRA = "pip install 'diffattr[hf]' (the datasets package)"


# --------------------------------------------------------------------------- columns


def _pick_columns(
    where: str, columns: Iterable[str], settings: Any
) -> tuple[str, str | None, str | None]:
    """(contributor, label, caption) columns of a table whose columns are ``columns``: the
    contributor column must exist; the label and caption columns are the named ones (which
    must exist) or, unnamed, ``label`` / ``caption`` when present."""
    columns = list(columns)
    shown = ", ".join(columns) if columns else "none"
    who = settings.contributor_column
    if who not in columns:
        raise DiffattrError(
            f"{where} has no {who!r} column naming each image's contributor (its columns: "
            f"{shown}); set [data] contributor_column to the one that does"
        )
    picked = []
    for key, default in (("label_column", "label"), ("caption_column", "caption")):
        named = getattr(settings, key)
        if named is not None and named not in columns:
            raise DiffattrError(
                f"{where} has no {named!r} column ([data] {key}; its columns: {shown})"
            )
        picked.append(named if named is not None else (default if default in columns else None))
    return who, picked[0], picked[1]


def _text(value: Any) -> str:
    """A cell as text ('' for an empty one): strings stripped, numbers as written."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --------------------------------------------------------------------------- imagefolder


def metadata_file(path: str | Path) -> Path:
    """The metadata file of an imagefolder: ``path`` itself (a .csv or .jsonl file), or the
    ``metadata.csv`` / ``metadata.jsonl`` in the folder ``path`` (one of them)."""
    p = Path(path)
    if not p.exists():
        raise DiffattrError(f"imagefolder not found: {p} (pass an existing folder with --data)")
    if p.is_file():
        if p.suffix.lower() not in (".csv", ".jsonl"):
            raise DiffattrError(f"{p}: an imagefolder's metadata is a .csv or .jsonl file")
        return p
    found = [p / m for m in METADATA_FILES if (p / m).is_file()]
    if not found:
        raise DiffattrError(
            f"{p} holds no metadata.csv or metadata.jsonl (the imagefolder layout: one row per "
            "image with file_name and a contributor column); for one subfolder per "
            "contributor use [data] name = 'folder'"
        )
    if len(found) > 1:
        raise DiffattrError(f"{p} holds both metadata.csv and metadata.jsonl; keep one")
    return found[0]


def read_metadata(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The columns and the (line number, row) pairs of a metadata.csv / .jsonl file."""
    check_utf8_file(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None:
                    raise DiffattrError(
                        f"{path} is empty: give a header with file_name and a contributor column"
                    )
                reader.fieldnames = [h.strip() for h in reader.fieldnames]
                columns = list(reader.fieldnames)
                for row in reader:
                    rows.append((reader.line_num, row))
            return columns, rows
        columns = []
        with open(path, encoding="utf-8-sig") as f:
            for line, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DiffattrError(
                        f"{path}:{line}: not a JSON object ({e.msg}); fix the file"
                    ) from None
                if not isinstance(row, dict):
                    raise DiffattrError(f"{path}:{line}: not a JSON object; fix the file")
                columns += [k for k in row if k not in columns]
                rows.append((line, row))
        return columns, rows
    except UnicodeDecodeError as e:
        raise not_utf8_error(path, e) from None
    except csv.Error as e:
        raise DiffattrError(f"{path}: malformed CSV ({e}); fix the file") from None


def imagefolder_entries(meta: Path, settings: Any) -> tuple[list[Entry], list[str | None] | None]:
    """The images, contributors, labels (and captions) an imagefolder's metadata lists."""
    from diffattr.data.folder import _check_duplicates, _refuse_nul  # torch: loaders only

    columns, rows = read_metadata(meta)
    if FILE_NAME not in columns:
        raise DiffattrError(
            f"{meta} has no {FILE_NAME!r} column (the imagefolder layout names each image "
            f"there, relative to {meta.parent})"
        )
    who_col, label_col, caption_col = _pick_columns(str(meta), columns, settings)
    base = meta.parent
    entries: list[Entry] = []
    captions: list[str | None] = []
    for line, row in rows:
        _refuse_nul(meta, line, row)
        rel, who = _text(row.get(FILE_NAME)), _text(row.get(who_col))
        if not rel or not who:
            raise DiffattrError(f"{meta}:{line}: empty {FILE_NAME} or {who_col}")
        label = None
        if label_col is not None:
            label = _text(row.get(label_col))
            if not label:
                raise DiffattrError(
                    f"{meta}:{line}: empty {label_col} (give every row a label, or drop the "
                    "label column)"
                )
        p = (base / rel).resolve()
        if not p.is_file():
            raise DiffattrError(f"{meta}:{line}: image file not found: {base / rel}")
        entries.append((p, who, label))
        if caption_col is not None:
            captions.append(_text(row.get(caption_col)) or None)
    if not entries:
        raise DiffattrError(f"{meta} lists no images")
    _check_duplicates(meta, entries, getattr(settings, "strict", False))
    return entries, (captions or None)


def load_imagefolder(settings: Any, split: str = "train") -> ImageDataset:
    """``[data] name = "imagefolder"``: the images a metadata.csv / .jsonl lists."""
    from diffattr.data.folder import dataset_from_entries  # torch: loaders only

    if split != "train":
        raise DiffattrError("the imagefolder dataset has a single split")
    meta = metadata_file(settings.path)
    entries, captions = imagefolder_entries(meta, settings)
    return dataset_from_entries(meta, entries, captions, settings.image_size, settings.channels)


# --------------------------------------------------------------------------- datasets


def require_datasets():
    """The ``datasets`` module, or a one-line error naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise DiffattrError(
            f"Hugging Face datasets need the datasets package: {HF_EXTRA}"
        ) from None
    return datasets


@dataclass(frozen=True)
class Columns:
    """Which columns of a Hugging Face dataset hold what (``HFDatasetData``'s settings)."""

    image_column: str = "image"
    contributor_column: str = "contributor"
    label_column: str | None = None
    caption_column: str | None = None
    id_column: str | None = None
    image_size: int | None = None
    channels: int | None = None

    @classmethod
    def of(cls, settings: Any) -> Columns:
        """The columns an ``HFDatasetData`` (or any object with those fields) names."""
        return cls(**{f: getattr(settings, f) for f in cls.__dataclass_fields__})


def from_hf_dataset(
    ds: Any,
    settings: Any = None,
    source: str = "dataset",
    files: list[str] | None = None,
    **columns: Any,
) -> ImageDataset:
    """The ``folder`` dataset of a ``datasets.Dataset`` (in memory or loaded from disk).

    ``settings`` is an ``HFDatasetData`` (or None: :class:`Columns`' defaults), with
    ``columns`` such as ``contributor_column="artist"`` on top; ``source`` names the
    dataset in messages and ``files`` are the files it was read from (the content digest's
    cache key; none for a dataset in memory, which is hashed every time).
    """
    from dataclasses import replace

    from diffattr.data.folder import EncodedImage, dataset_from_entries  # torch: loaders only

    datasets = require_datasets()
    settings = replace(Columns() if settings is None else Columns.of(settings), **columns)
    if isinstance(ds, datasets.DatasetDict):
        raise DiffattrError(
            f"{source} is a DatasetDict with splits {', '.join(ds)}; pass one split, e.g. "
            "ds['train']"
        )
    if not isinstance(ds, datasets.Dataset):
        raise DiffattrError(f"{source}: expected a datasets.Dataset, got {type(ds).__name__}")
    names = list(ds.column_names)
    img_col = settings.image_column
    if img_col not in names:
        raise DiffattrError(
            f"{source} has no {img_col!r} column (its columns: {', '.join(names)}); set [data] "
            "image_column to the image column"
        )
    if not isinstance(ds.features[img_col], datasets.Image):
        raise DiffattrError(
            f"{source}: column {img_col!r} is {type(ds.features[img_col]).__name__}, not an "
            "image column (datasets.Image)"
        )
    who_col, label_col, caption_col = _pick_columns(source, names, settings)
    id_col = settings.id_column
    if id_col is not None and id_col not in names:
        raise DiffattrError(f"{source} has no {id_col!r} column ([data] id_column)")
    if id_col is None and FILE_NAME in names:
        id_col = FILE_NAME
    if len(ds) == 0:
        raise DiffattrError(f"{source} holds no rows")

    def cells(col: str) -> list[str]:
        feature = ds.features[col]
        values = list(ds[col])
        if isinstance(feature, datasets.ClassLabel):
            return [feature.int2str(int(v)) if v is not None and v >= 0 else "" for v in values]
        return [_text(v) for v in values]

    who = cells(who_col)
    labels = cells(label_col) if label_col is not None else None
    captions = [c or None for c in cells(caption_col)] if caption_col is not None else None
    ids = cells(id_col) if id_col is not None else [str(i) for i in range(len(ds))]
    raw = list(ds.cast_column(img_col, datasets.Image(decode=False))[img_col])
    entries: list[Entry] = []
    external: list[str] = []
    for i, cell in enumerate(raw):
        where = f"{source}: row {i}"
        for col, column in ((who_col, who), (label_col, labels), (id_col, ids)):
            if column is not None and "\x00" in column[i]:
                raise DiffattrError(f"{where}: column {col!r} holds a NUL byte (\\x00); remove it")
        if not who[i]:
            raise DiffattrError(f"{where}: empty {who_col}")
        if labels is not None and not labels[i]:
            raise DiffattrError(
                f"{where}: empty {label_col} (give every row a label, or drop the label column)"
            )
        data = (cell or {}).get("bytes")
        path = (cell or {}).get("path")
        if data:
            image: Path | EncodedImage = EncodedImage(f"{where} ({ids[i]})", bytes(data))
        elif path:
            image = Path(path)
            external.append(str(image))
        else:
            raise DiffattrError(f"{where}: no image in column {img_col!r}")
        entries.append((image, who[i], labels[i] if labels is not None else None))
    return dataset_from_entries(
        Path(source),
        entries,
        captions,
        settings.image_size,
        settings.channels,
        ids=ids,
        files=(files + external) if files else [],
    )


def saved_dataset_files(path: Path) -> list[str]:
    """Every file of a ``save_to_disk`` folder (arrow shards, state, info)."""
    return sorted(str(f.resolve()) for f in path.rglob("*") if f.is_file())


def load_saved(settings: Any, split: str = "train") -> ImageDataset:
    """``[data] name = "hf-dataset"``: a dataset saved with ``save_to_disk``."""
    if split != "train":
        raise DiffattrError("the hf-dataset data have a single split (choose it with [data] split)")
    datasets = require_datasets()
    path = Path(settings.path)
    if not path.is_dir():
        raise DiffattrError(f"saved dataset not found: {path} (pass the folder save_to_disk wrote)")
    try:
        obj = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DiffattrError(
            f"{path} is not a dataset saved with save_to_disk ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); save it with "
            "ds.save_to_disk(DIR) or use [data] name = 'imagefolder'"
        ) from None
    source = str(path)
    if isinstance(obj, datasets.DatasetDict):
        splits = list(obj)
        chosen = settings.split or (
            "train" if "train" in obj else (splits[0] if len(splits) == 1 else None)
        )
        if chosen is None or chosen not in obj:
            raise DiffattrError(
                f"{path} holds the splits {', '.join(splits)}; choose one with [data] split"
            )
        obj, source = obj[chosen], f"{path} (split {chosen})"
    elif settings.split is not None:
        raise DiffattrError(f"{path} is one dataset, not a DatasetDict; leave [data] split out")
    return from_hf_dataset(obj, settings, source=source, files=saved_dataset_files(path))
