"""Local behaviors of a run: one value per generated image, against the full model's image.

A coalition model's image i is compared with the full model's image i (the same seed and
initial noise): that reference is generated once per run (:func:`full_reference`) and kept
in the run directory (:func:`save_reference` / :func:`load_reference`), so every job -- in
any worker -- reads the same images. The full model's own job uses those images as its
samples, so its local behaviors are exact (SSIM 1, MSE and NRMSE 0).

``build_local_suite(settings, dataset, ...)`` gives a :class:`LocalSuite` for the local
behaviors among ``[behaviors] measure``; ``suite.measure(images, reference, model=,
family=)`` returns ``{key: (G,) values}``:

* ``ssim[pixel]``, ``nrmse[pixel]``, ``mse[pixel]``: :mod:`diffattr.behaviors.local`, on the
  images in [-1, 1] mapped to [0, 1];
* ``denoising-loss[model]``: the model's epsilon-prediction loss on the full model's image i
  in the model's space (latents for a latent model) with image i's condition, through the
  family's ``predict_noise`` and training schedule;
* ``clip-similarity[clip]``: cosine of the CLIP image embeddings of image i and reference i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.behaviors import local
from diffattr.behaviors.resolve import behavior_space, check_settings, local_key
from diffattr.behaviors.settings import BehaviorsSettings, LocalSettings, parse_behaviors
from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text


@dataclass
class LocalReference:
    """The full model's generated images: ``images`` (G, C, H, W) pixels in [-1, 1],
    ``x0`` the same in the model's space (latents for latent models), ``cond`` image i's
    condition in row i (class labels, text embeddings) or None."""

    images: torch.Tensor
    x0: torch.Tensor
    cond: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.x0.shape[0] != n or (self.cond is not None and self.cond.shape[0] != n):
            raise DiffattrError("the full model's reference images, x0 and conditions differ")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def full_reference(
    family, model: torch.nn.Module, data, *, num_samples: int, seed: int, ddim_steps: int
) -> LocalReference:
    """The full model's samples with the run's seeds, in pixels and in the model's space
    (the family's ``baseline_target``: the images the baselines score as well)."""
    target = family.baseline_target(
        model, data, num_samples=num_samples, seed=seed, ddim_steps=ddim_steps
    )
    cond = target.cond_gen
    if cond is not None and not isinstance(cond, torch.Tensor):
        raise DiffattrError("local behaviors need one condition tensor per generated image")
    return LocalReference(
        target.pixels_gen().detach().float().cpu(),
        target.x0_gen.detach().float().cpu(),
        None if cond is None else cond.detach().cpu(),
    )


def save_reference(path: str | Path, ref: LocalReference, record: dict[str, Any]) -> None:
    """Write ``ref`` to ``path`` (safetensors, atomically) and ``record`` beside it."""
    import os
    import tempfile

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"images": ref.images.contiguous(), "x0": ref.x0.contiguous()}
    if ref.cond is not None:
        tensors["cond"] = ref.cond.contiguous()
    # safetensors refuses tensors that share memory (a pixel model's x0 is its images)
    seen: set[int] = set()
    for k, t in tensors.items():
        if t.untyped_storage().data_ptr() in seen:
            tensors[k] = t.clone()
        seen.add(tensors[k].untyped_storage().data_ptr())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True))


def load_reference(path: str | Path) -> LocalReference:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        t = load_file(path)
        return LocalReference(t["images"], t["x0"], t.get("cond"))
    except (OSError, KeyError, SafetensorError) as e:
        raise DiffattrError(
            f"{path}: the full model's generated images cannot be read ({e}); delete it and "
            "rerun (it is generated again)"
        ) from None


# ----------------------------------------------------------------------------- the suite


class LocalSuite:
    """Measures the local behaviors of a model's generated images."""

    def __init__(self, entries: list[tuple[str, LocalSettings]], clip=None) -> None:
        self.entries = entries
        self.clip = clip  # FeatureExtractor of the clip space (clip-similarity)
        self._clip_ref: tuple[int, np.ndarray] | None = None

    def keys(self) -> list[str]:
        return [k for k, _ in self.entries]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def measure(
        self,
        images: torch.Tensor,
        reference: LocalReference,
        *,
        model: torch.nn.Module | None = None,
        family=None,
        device: str | torch.device = "cpu",
    ) -> dict[str, np.ndarray]:
        """``{key: (G,) float64}`` of ``images`` against the full model's ``reference``
        (image i against reference i); ``model`` and ``family`` for ``denoising-loss``."""

        images = torch.as_tensor(images).detach().float().cpu()
        if images.shape != reference.images.shape:
            raise DiffattrError(
                f"generated images {tuple(images.shape)} and the full model's reference "
                f"images {tuple(reference.images.shape)} differ; delete the run's "
                "cache/full-samples and rerun"
            )
        out: dict[str, np.ndarray] = {}
        for key, b in self.entries:
            if b.name == "ssim":
                out[key] = local.ssim(images, reference.images)
            elif b.name == "nrmse":
                out[key] = local.nrmse(images, reference.images)
            elif b.name == "mse":
                out[key] = local.mse(images, reference.images)
            elif b.name == "denoising-loss":
                if model is None or family is None:
                    raise DiffattrError("denoising-loss needs the model and its family")
                out[key] = local.denoising_loss(
                    model,
                    reference.x0,
                    timesteps=local.default_timesteps(
                        b.timesteps, family.noise_scheduler().config.num_train_timesteps
                    ),
                    num_noises=b.noises,
                    seed=b.seed,
                    device=device,
                    scheduler=family.noise_scheduler(),
                    predict=family.predict_noise,
                    cond=reference.cond,
                )
            elif b.name == "clip-similarity":
                out[key] = self._clip_similarity(images, reference)
            else:  # pragma: no cover - every registered local behavior is handled above
                raise DiffattrError(f"unknown local behavior {b.name!r}")
            out[key] = np.asarray(out[key], dtype=np.float64)
        return out

    def _clip_similarity(self, images: torch.Tensor, reference: LocalReference) -> np.ndarray:
        if self.clip is None:
            raise DiffattrError("clip-similarity needs a clip feature space")
        ident = id(reference)
        if self._clip_ref is None or self._clip_ref[0] != ident:
            self._clip_ref = (ident, _unit(self.clip.features(reference.images)))
        ref = self._clip_ref[1]
        return np.sum(_unit(self.clip.features(images)) * ref, axis=1)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0)


def build_local_suite(
    settings: BehaviorsSettings | dict | None,
    dataset,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | Path,
) -> LocalSuite:
    """The local behaviors among ``settings.measure`` (an empty suite when there are none)."""
    has_labels = dataset.semantic_labels is not None
    settings = parse_behaviors(settings).resolved(dataset.name, has_labels)
    check_settings(settings, dataset.name, has_labels)
    entries: list[tuple[str, LocalSettings]] = []
    clip = None
    for b in settings.measure:
        if not b.local:
            continue
        space = behavior_space(b, settings, dataset.name, has_labels)
        entries.append((local_key(b, space, dataset.name), b))
        if b.name == "clip-similarity" and clip is None:
            builder = space.implementation_class()
            clip = builder(
                space, dataset, device=device, cache_dir=Path(cache_dir), seed=settings.seed
            )
    return LocalSuite(entries, clip)
