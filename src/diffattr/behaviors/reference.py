"""The real reference images of the behaviors and their statistics in one feature space.

The reference is ``"train"`` (the run's full training images: the paper's choice) or a local
folder of curated real images, read at the run's channels and image size
(``read_image_folder``). ``SpaceReference`` holds the reference's features in one feature
space and derives, on demand and cached, what the behaviors compare with:

* the Gaussian (mean, covariance) for FID;
* the k-NN manifold: a seeded subsample of ``size`` reference points (by default as many
  as generated images, as Kynkaanniemi et al. compare equal numbers of real and generated
  points) with its k-NN radii;
* k-means centres (``cluster-entropy``) and Ward clusters (``diversity-entropy``).

Disk cache, under ``<cache_dir>/features/<space key>/``:
``reference-<ref>.safetensors/.json`` (features, probabilities, Gaussian),
``kmeans-<ref>-<params>.safetensors`` and ``ward-<ref>-<params>.safetensors``, where
``<ref>`` hashes the reference images' content. Everything is written atomically.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.behaviors.diversity import class_entropy, fit_clusters, ward_clusters
from diffattr.behaviors.features import (
    FeatureExtractor,
    atomic_save_tensors,
    features_dir,
    stable_hash,
    tensor_digest,
)
from diffattr.behaviors.inception_score import inception_score
from diffattr.behaviors.precision_recall import knn_radii
from diffattr.data.base import resize, to_unit_range
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VERSION = 2


def read_image_folder(folder: str | Path, channels: int, image_size: int | None) -> torch.Tensor:
    """All image files under ``folder`` (sorted, recursive) as (N, C, S, S) in [-1, 1].

    Images are converted to grey (C = 1) or RGB (C = 3) and resized (antialiased bilinear)
    to ``image_size`` x ``image_size``; non-square images are stretched.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DiffattrError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise DiffattrError(f"expected a folder of PNG/JPEG files, got the file {folder}")
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
        if image_size is not None and x.shape[-2] != x.shape[-1]:
            x = torch.nn.functional.interpolate(
                x, size=(image_size, image_size), mode="bilinear", antialias=True
            ).clamp(-1, 1)
        out.append(resize(x, image_size))
    shapes = {tuple(t.shape[1:]) for t in out}
    if len(shapes) > 1:
        raise DiffattrError(f"images in {folder} differ in size; give an image size")
    return torch.cat(out)


def reference_images(reference: str, dataset) -> tuple[torch.Tensor, dict[str, Any]]:
    """The reference images of a run and their identity (for cache keys and reports)."""
    if reference == "train":
        images = dataset.images
        return images, {"reference": "train", "images": tensor_digest(images), "n": len(images)}
    folder = Path(reference).expanduser()
    if not folder.is_dir():
        raise DiffattrError(
            f"behaviors.reference: folder of real images not found: {folder} (give 'train' or "
            "an existing folder of PNG/JPEG images)"
        )
    images = read_image_folder(folder, dataset.channels, dataset.image_size)
    if len(images) < 2:
        raise DiffattrError(f"the reference folder {folder} holds one image; give at least 2")
    ident = {"reference": str(folder), "images": tensor_digest(images), "n": len(images)}
    return images, ident


def _to64(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


class SpaceReference:
    """The reference images' features in one feature space and what is derived from them."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        images: torch.Tensor,
        identity: dict[str, Any],
        *,
        cache_dir: str | Path,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        self.extractor = extractor
        self.identity = dict(identity)
        self.seed = seed
        self.directory = features_dir(cache_dir, extractor.key)
        self.ref_key = stable_hash({"reference": identity.get("images"), "version": VERSION})
        self._manifolds: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._kmeans: dict[int, np.ndarray] = {}
        self._ward: dict[tuple, tuple[np.ndarray, np.ndarray, float]] = {}
        self._load_or_compute(images, batch_size)

    # -- features and Gaussian

    def _load_or_compute(self, images: torch.Tensor, batch_size: int) -> None:
        stem = self.directory / f"reference-{self.ref_key}"
        if stem.with_suffix(".json").is_file():
            try:
                from safetensors.torch import load_file

                record = json.loads(stem.with_suffix(".json").read_text())
                if record.get("version") != VERSION:
                    raise ValueError("old reference format")
                t = load_file(stem.with_suffix(".safetensors"))
                self.features = _to64(t["features"])
                self.probs = _to64(t["probs"]) if "probs" in t else None
                self.mu, self.sigma = _to64(t["mu"]), _to64(t["sigma"])
                self.record = record
                return
            except (OSError, KeyError, ValueError, RuntimeError):
                pass  # unreadable or outdated: recompute and overwrite
        from diffattr.behaviors.fid import gaussian_stats  # scipy: only on a cache miss

        feats, probs = self.extractor.features_and_probs(images, batch_size)
        self.features = np.asarray(feats, dtype=np.float64)
        self.probs = None if probs is None else np.asarray(probs, dtype=np.float64)
        if len(self.features) < 2:
            raise DiffattrError("the reference needs at least 2 images")
        self.mu, self.sigma = gaussian_stats(self.features)
        tensors = {
            "features": torch.from_numpy(np.asarray(feats, dtype=np.float32)),
            "mu": torch.from_numpy(self.mu),
            "sigma": torch.from_numpy(np.ascontiguousarray(self.sigma)),
        }
        if probs is not None:
            tensors["probs"] = torch.from_numpy(np.asarray(probs, dtype=np.float32))
        record = {
            "version": VERSION,
            "space": self.extractor.name,
            "space_key": self.extractor.key,
            "reference": self.identity,
            "num_real": len(self.features),
        }
        if self.probs is not None:
            record["is_reference"] = inception_score(self.probs, 1)[0]
            record["class_entropy_reference"] = class_entropy(self.probs)
        atomic_save_tensors(stem.with_suffix(".safetensors"), tensors)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True))
        self.record = record
        # The stored features are float32: use exactly them, so a later load measures alike.
        self.features = _to64(tensors["features"])
        if probs is not None:
            self.probs = _to64(tensors["probs"])

    @property
    def num_real(self) -> int:
        return len(self.features)

    # -- k-NN manifolds

    def manifold(self, size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(points, k-NN radii) of a seeded subsample of ``size`` reference points."""

        size = min(int(size), self.num_real)
        if k >= size:
            raise DiffattrError(
                f"k = {k} needs more than {k} reference points in the manifold, got {size}"
            )
        hit = self._manifolds.get((size, k))
        if hit is None:
            points = self.manifold_points(size)
            hit = (points, knn_radii(points, k))
            self._manifolds[(size, k)] = hit
        return hit

    def manifold_points(self, size: int) -> np.ndarray:
        size = min(int(size), self.num_real)
        if size >= self.num_real:
            return self.features
        rng = np.random.default_rng(self.seed)
        return self.features[np.sort(rng.choice(self.num_real, size, replace=False))]

    # -- clusterings

    def kmeans(self, clusters: int) -> np.ndarray:
        """k-means centres of the reference features (disk-cached)."""

        if clusters not in self._kmeans:
            stem = self.directory / f"kmeans-{self.ref_key}-k{clusters}-s{self.seed}"
            centres = self._load_array(stem, "centres")
            if centres is None:
                centres = fit_clusters(self.features, clusters, seed=self.seed)
                atomic_save_tensors(
                    stem.with_suffix(".safetensors"), {"centres": torch.from_numpy(centres)}
                )
            self._kmeans[clusters] = centres
        return self._kmeans[clusters]

    def ward(
        self, clusters: int, similarity: str, max_reference: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """(clustered reference features, their Ward cluster 0..K-1, max similarity)."""

        params = (clusters, similarity, max_reference)
        if params not in self._ward:
            n = self.num_real
            if n > max_reference:
                rng = np.random.default_rng(self.seed)
                index = np.sort(rng.choice(n, max_reference, replace=False))
            else:
                index = np.arange(n)
            stem = self.directory / (
                f"ward-{self.ref_key}-k{clusters}-{similarity}-m{max_reference}-s{self.seed}"
            )
            labels = self._load_array(stem, "labels")
            max_sim = self._load_array(stem, "max_sim")
            if labels is None or max_sim is None or len(labels) != len(index):
                labels, max_sim_f = ward_clusters(self.features[index], clusters, similarity)
                max_sim = np.array([max_sim_f])
                atomic_save_tensors(
                    stem.with_suffix(".safetensors"),
                    {
                        "labels": torch.from_numpy(labels),
                        "index": torch.from_numpy(index.astype(np.int64)),
                        "max_sim": torch.from_numpy(max_sim),
                    },
                )
            self._ward[params] = (
                self.features[index],
                np.asarray(labels, dtype=np.int64),
                float(np.asarray(max_sim).reshape(-1)[0]),
            )
        return self._ward[params]

    @staticmethod
    def _load_array(stem: Path, name: str) -> np.ndarray | None:
        path = stem.with_suffix(".safetensors")
        if not path.is_file():
            return None
        try:
            from safetensors.torch import load_file

            return load_file(path)[name].numpy()
        except (OSError, KeyError, ValueError, RuntimeError):
            return None

    @cached_property
    def description(self) -> dict[str, Any]:
        out = dict(self.identity)
        out["num_real"] = self.num_real
        for k in ("is_reference", "class_entropy_reference"):
            if k in self.record:
                out[k] = self.record[k]
        return out
