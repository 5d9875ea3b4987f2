"""Content-keyed disk cache of baseline features.

Layout: ``<cache_dir>/baselines/<kind>/<key>.safetensors`` (one tensor, ``features``) and
``<key>.json`` (what the key hashes, the compute seconds and details of the computation).
The JSON is written after the tensors, so a JSON on disk means a complete entry; a
corrupt or mismatched entry is recomputed and overwritten. ``key`` is the first 24 hex
digits of the SHA-256 of the canonical JSON of the key fields (model-weights digest, data
digest, schedule digest, output function and every setting that changes the numbers).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from diffattr.fileio import atomic_write_text

CACHE_VERSION = 1


def stable_key(fields: dict[str, Any]) -> str:
    text = json.dumps({"v": CACHE_VERSION, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def training_probe_fields(target: Any, settings: Any) -> dict[str, Any]:
    """The cache-key fields of features computed from the training data's noise probes:
    the model, its function, the noise schedule, the data, and the probes' timesteps and
    noise (``timesteps``, ``seed``, ``shared_noise`` of the baseline's settings)."""
    return {
        "model": target.digest("model"),
        "function": target.function_id(),
        "schedule": target.digest("schedule"),
        "data": target.digest("train"),
        "timesteps": settings.timesteps,
        "noise_seed": settings.seed,
        "shared_noise": settings.shared_noise,
    }


class FeatureCache:
    """Features (n, d) by key under ``<cache_dir>/baselines/<kind>``; ``cache_dir`` None
    disables caching (every lookup misses, nothing is written)."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None, kind: str) -> None:
        self.root = None if cache_dir is None else Path(cache_dir) / "baselines" / kind

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def paths(self, key: str) -> tuple[Path, Path]:
        assert self.root is not None
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(self, key: str) -> tuple[torch.Tensor, dict[str, Any]] | None:
        if self.root is None:
            return None
        tensors, record = self.paths(key)
        if not record.is_file() or not tensors.is_file():
            return None
        try:
            from safetensors.torch import load_file

            meta = json.loads(record.read_text(encoding="utf-8"))
            feats = load_file(tensors)["features"]
        except (OSError, KeyError, ValueError, RuntimeError, json.JSONDecodeError):
            return None
        if list(feats.shape) != meta.get("shape"):
            return None
        return feats, meta

    def save(self, key: str, features: torch.Tensor, record: dict[str, Any]) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        tensors, meta = self.paths(key)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{tensors.name}.", dir=self.root)
        os.close(fd)
        try:
            save_file({"features": features.detach().cpu().float().contiguous()}, tmp)
            os.replace(tmp, tensors)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        record = dict(record, key=key, shape=list(features.shape))
        atomic_write_text(meta, json.dumps(record, indent=2, sort_keys=True) + "\n")
