"""The content digest of a dataset: what every stage of a run is keyed by.

``dataset_digest(dataset)`` hashes what a model trains on -- the decoded pixels (after
resizing), the labels, the sample ids, the contributors and the semantic labels -- so
overwriting one contributor's images, moving an image to another contributor or editing a
CSV changes it, while the settings that only say how results are reported (``players``,
``strict``) do not.

Hashing gigabytes of pixels on every call would cost seconds, so the digest is cached by
the files the loader read (``dataset.meta["files"]``): each file's path, size,
modification time, change time and inode, plus the dataset's settings. A file overwritten
in place changes its times (the change time cannot be set back by a user), so a cached
digest is never reused for other content. The cache is a folder of small JSON files,
``<cache_dir>/data-digests/`` (under the run directory for runs; see
``diffattr.fileio.cache_home`` for commands without one). Embedded data (digits) have no
files and are hashed directly (1,797 small images).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.data.base import ImageDataset
from diffattr.fileio import atomic_write_text

#: Bumped when what the digest covers changes (old caches are then ignored).
DIGEST_VERSION = 1
DIGEST_DIR = "data-digests"


def content_digest(dataset: ImageDataset) -> str:
    """sha256 (16 hex digits) of the dataset's pixels, labels, ids, contributors, semantic
    labels and captions."""
    h = hashlib.sha256()

    def part(name: str, data: bytes) -> None:
        h.update(name.encode())
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    images = dataset.images.detach().to("cpu").contiguous()
    part("version", str(DIGEST_VERSION).encode())
    part("name", dataset.name.encode())
    part("shape", json.dumps(list(images.shape)).encode())
    part("images", np.ascontiguousarray(images.numpy(), dtype="<f4").tobytes())
    part("labels", np.ascontiguousarray(dataset.labels.numpy(), dtype="<i8").tobytes())
    part("ids", json.dumps(list(dataset.ids)).encode())
    part("class_names", json.dumps(list(dataset.class_names)).encode())
    part("contributors", json.dumps(dataset.contributor_of()).encode())
    if dataset.semantic_labels is not None:
        sl = np.ascontiguousarray(dataset.semantic_labels.numpy(), dtype="<i8")
        part("semantic_labels", sl.tobytes())
        part("semantic_names", json.dumps(list(dataset.semantic_names or [])).encode())
    if dataset.captions is not None:  # what a text-to-image model learns from
        part("captions", json.dumps(list(dataset.captions)).encode())
    return h.hexdigest()[:16]


def files_fingerprint(dataset: ImageDataset) -> str | None:
    """Hash of the identity of the files the dataset was read from (None without files,
    or when one is gone): path, size, mtime, ctime and inode of each, plus the settings."""
    files = dataset.meta.get("files")
    if not files:
        return None
    h = hashlib.sha256()
    h.update(json.dumps([DIGEST_VERSION, dataset.meta.get("settings")], sort_keys=True).encode())
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            return None
        h.update(
            json.dumps([str(f), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]).encode()
        )
    return h.hexdigest()[:32]


def dataset_digest(dataset: ImageDataset, cache_dir: str | Path | None = None) -> str:
    """The content digest of ``dataset`` (see the module docstring); computed once per
    dataset object and, with ``cache_dir``, cached by the identity of its files."""
    memo = dataset.meta.get("digest")
    if memo:
        return memo
    fp = files_fingerprint(dataset) if cache_dir is not None else None
    entry = Path(cache_dir) / DIGEST_DIR / f"{fp}.json" if fp else None
    if entry is not None and entry.is_file():
        try:
            cached: Any = json.loads(entry.read_text(encoding="utf-8"))
            if isinstance(cached, dict) and isinstance(cached.get("digest"), str):
                dataset.meta["digest"] = cached["digest"]
                return cached["digest"]
        except (OSError, ValueError):
            pass  # a broken cache entry is recomputed and rewritten
    digest = content_digest(dataset)
    dataset.meta["digest"] = digest
    if entry is not None:
        try:
            atomic_write_text(entry, json.dumps({"digest": digest, "images": len(dataset)}))
        except OSError:
            pass  # a read-only cache only costs the hashing next time
    return digest
