"""CIFAR-10 / CIFAR-100 from a local python-pickle directory (no download).

CIFAR-10 expects the ``cifar-10-batches-py`` layout (``data_batch_1..5``, ``test_batch``,
``batches.meta``); CIFAR-100 the ``cifar-100-python`` layout (``train``, ``test``, ``meta``).
``subset="cifar20"`` selects the paper's CIFAR-20: the 20 fine classes of the superclasses
large carnivores, large omnivores and herbivores, medium mammals and small mammals.

The files are python pickles, read by a restricted unpickler (``_CifarUnpickler``) that
builds only builtin containers and NumPy arrays: a crafted file cannot run code, even under
``diffattr run --dry-run``. Keys, dtypes, shapes and label ranges are checked; a missing,
crafted or malformed file is one ``DiffattrError`` line naming it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from diffattr.data.base import ImageDataset, require_file, resize, select_classes, to_unit_range
from diffattr.errors import DiffattrError

CIFAR20_SUPERCLASSES = (
    "large_carnivores",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "small_mammals",
)


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that can build only what the CIFAR python format holds: builtin
    containers, bytes, strings and numbers (pickle opcodes, no globals) and NumPy arrays
    (``_reconstruct`` / ``_frombuffer``, ``ndarray``, ``dtype``, ``scalar``), plus the
    ``_codecs.encode(text, "latin1")`` that protocol-2 pickles written by Python 3 use for
    bytes. Any other global -- the way a pickle runs code -- is refused, so a crafted file
    fails to load instead of executing anything."""

    def find_class(self, module: str, name: str):
        found = _allowed_global(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a CIFAR file never holds"
            )
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent reference")


def _numpy_attr(modules: tuple[str, ...], name: str):
    import importlib

    for m in modules:
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    return None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it encodes text as {encoding!r}")
    return text.encode("latin1")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"): (_MULTIARRAY, "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"): (_MULTIARRAY, "_reconstruct"),
    ("numpy._core.multiarray", "scalar"): (_MULTIARRAY, "scalar"),
    ("numpy.core.multiarray", "scalar"): (_MULTIARRAY, "scalar"),
    ("numpy._core.numeric", "_frombuffer"): (_NUMERIC, "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"): (_NUMERIC, "_frombuffer"),
    ("numpy", "ndarray"): (("numpy",), "ndarray"),
    ("numpy", "dtype"): (("numpy",), "dtype"),
}


def _allowed_global(module: str, name: str):
    if (module, name) == ("_codecs", "encode"):
        return _latin1_encode
    where = _ALLOWED.get((module, name))
    return None if where is None else _numpy_attr(*where)


def _unpickle(path: Path, hint: str) -> dict:
    """The dict of a CIFAR python-format file, read without running code from it; a
    missing, crafted or malformed file is a one-line error naming it."""
    require_file(path, "CIFAR file", hint)
    if not path.is_file():
        raise DiffattrError(f"CIFAR file {path} is not a file ({hint})")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiffattrError(f"cannot read CIFAR file {path}: {why} ({hint})") from None
    if not isinstance(obj, dict):
        raise DiffattrError(
            f"CIFAR file {path} holds a {type(obj).__name__}, not the dict of the CIFAR "
            f"python format ({hint})"
        )
    # Python 2 wrote bytes keys (b"data"); a file written by Python 3 may use str keys
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(d: dict, key: str, path: Path):
    if key not in d:
        keys = ", ".join(sorted(str(k) for k in d)) or "none"
        raise DiffattrError(f"CIFAR file {path} has no {key!r} entry (its keys: {keys})")
    return d[key]


def _names(d: dict, key: str, path: Path, count: int | None = None) -> list[str]:
    names = _field(d, key, path)
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise DiffattrError(f"CIFAR file {path}: {key!r} is not a list of names")
    if count is not None and len(names) != count:
        raise DiffattrError(f"CIFAR file {path}: {key!r} has {len(names)} names, expected {count}")
    if not names:
        raise DiffattrError(f"CIFAR file {path}: {key!r} is empty")
    return _decode(names)


def _labels(d: dict, key: str, path: Path, rows: int, classes: int) -> np.ndarray:
    raw = _field(d, key, path)
    if isinstance(raw, np.ndarray):
        ok = raw.ndim == 1 and np.issubdtype(raw.dtype, np.integer)
        lab = raw.astype(np.int64) if ok else None
    elif isinstance(raw, list | tuple) and all(
        isinstance(x, int) and not isinstance(x, bool) for x in raw
    ):
        lab = np.asarray(raw, dtype=np.int64).reshape(-1)
    else:
        lab = None
    if lab is None:
        raise DiffattrError(f"CIFAR file {path}: {key!r} is not a list of integer labels")
    if lab.shape[0] != rows:
        raise DiffattrError(f"CIFAR file {path}: {lab.shape[0]} {key} for {rows} images")
    if lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise DiffattrError(
            f"CIFAR file {path}: {key!r} holds labels outside 0..{classes - 1} "
            f"({int(lab.min())}..{int(lab.max())})"
        )
    return lab


def _decode(names: list) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _to_images(data, path: Path) -> torch.Tensor:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        what = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise DiffattrError(f"CIFAR file {path}: 'data' is a {what}, expected uint8 pixels")
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] == 0:
        raise DiffattrError(
            f"CIFAR file {path}: 'data' has shape {tuple(data.shape)}; expected rows of 3072 "
            "bytes (32x32x3)"
        )
    return to_unit_range(data.reshape(-1, 3, 32, 32), 255.0)


def load_cifar10(
    path: str | Path | None,
    split: str = "train",
    image_size: int | None = None,
    classes: list[int] | None = None,
) -> ImageDataset:
    hint = "download and extract cifar-10-python.tar.gz yourself and pass --data DIR"
    if path is None:
        raise DiffattrError(f"cifar10 needs a local directory: {hint}")
    d = Path(path)
    require_file(d, "CIFAR-10 directory", hint)
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise DiffattrError(f"unknown split {split!r}; use 'train' or 'test'")
    meta = _unpickle(d / "batches.meta", hint)
    names = _names(meta, "label_names", d / "batches.meta")
    imgs, labels = [], []
    for fn in files:
        batch = _unpickle(d / fn, hint)
        imgs.append(_to_images(_field(batch, "data", d / fn), d / fn))
        labels.append(_labels(batch, "labels", d / fn, imgs[-1].shape[0], len(names)))
    images = torch.cat(imgs)
    lab = np.concatenate(labels)
    images, lab, names, keep = select_classes(images, lab, names, classes)
    return ImageDataset(
        name="cifar10",
        images=resize(images, image_size),
        labels=torch.as_tensor(lab),
        ids=[f"cifar10-{split}-{i}" for i in keep],
        class_names=names,
        meta={"files": [str((d / f).resolve()) for f in ["batches.meta", *files]]},
    )


def load_cifar100(
    path: str | Path | None,
    split: str = "train",
    image_size: int | None = None,
    classes: list[int] | None = None,
    subset: str | None = None,
) -> ImageDataset:
    hint = "download and extract cifar-100-python.tar.gz yourself and pass --data DIR"
    if path is None:
        raise DiffattrError(f"cifar100 needs a local directory: {hint}")
    d = Path(path)
    require_file(d, "CIFAR-100 directory", hint)
    if split not in ("train", "test"):
        raise DiffattrError(f"unknown split {split!r}; use 'train' or 'test'")
    meta = _unpickle(d / "meta", hint)
    fine_names = _names(meta, "fine_label_names", d / "meta")
    coarse_names = _names(meta, "coarse_label_names", d / "meta")
    batch = _unpickle(d / split, hint)
    images = _to_images(_field(batch, "data", d / split), d / split)
    rows = images.shape[0]
    fine = _labels(batch, "fine_labels", d / split, rows, len(fine_names))
    coarse = _labels(batch, "coarse_labels", d / split, rows, len(coarse_names))
    if subset is not None:
        if subset != "cifar20":
            raise DiffattrError(f"unknown CIFAR-100 subset {subset!r}; use 'cifar20'")
        if classes:
            raise DiffattrError("give either classes or subset='cifar20', not both")
        missing = [s for s in CIFAR20_SUPERCLASSES if s not in coarse_names]
        if missing:
            raise DiffattrError(
                f"CIFAR file {d / 'meta'}: no superclass {missing[0]!r} among "
                "'coarse_label_names'; subset='cifar20' needs the CIFAR-100 superclasses"
            )
        wanted = [coarse_names.index(s) for s in CIFAR20_SUPERCLASSES]
        classes = sorted({int(f) for f, c in zip(fine, coarse) if c in wanted})
    images, lab, names, keep = select_classes(images, fine, fine_names, classes)
    return ImageDataset(
        name="cifar20" if subset == "cifar20" else "cifar100",
        images=resize(images, image_size),
        labels=torch.as_tensor(lab),
        ids=[f"cifar100-{split}-{i}" for i in keep],
        class_names=names,
        meta={"files": [str((d / f).resolve()) for f in ("meta", split)]},
    )


def load_10(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "cifar10"``."""
    return load_cifar10(settings.path, split, settings.image_size, settings.classes)


def load_100(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "cifar100"``."""
    s = settings
    return load_cifar100(s.path, split, s.image_size, s.classes, s.subset)
