"""``latent``: a ``UNet2DModel`` denoising the latents of a frozen autoencoder (latent
diffusion; Rombach et al. 2022) -- the paper's CelebA-HQ setting, where a 274 M-parameter
UNet is trained from scratch on the 3x64x64 latents of ``CompVis/ldm-celebahq-256``'s
VQ-VAE.

* **autoencoder**: a diffusers ``AutoencoderKL`` or ``VQModel`` from a local directory
  (``[family] autoencoder = "/path"``: the model's own directory, or a pipeline holding
  ``vqvae/`` or ``vae/``), or the package's own (``autoencoder = "train"``,
  ``diffattr.families.vae``). Frozen: it encodes the training images once
  (``families.latent_cache.cached_latents``, content-keyed under the run's cache folder) and
  decodes samples; fine-tunes never run the encoder.
* **scaling factor**: ``[family] scaling_factor`` if set, else the ``scaling_factor`` written
  in the autoencoder's ``config.json``, else 1 (the LDM VQ-VAEs were trained with 1; their
  hub configs do not record it, and diffusers' class default 0.18215 is Stable
  Diffusion's -- see diffusers issue #6725).
* **denoiser**: a ``UNet2DModel`` on the latent shape (``architecture``: ``latent-tiny``,
  ``latent-small``, ``ldm-celebahq``), trained, pruned, fine-tuned and retrained on latents
  by the shared loop; the noise schedule is the family's (default the LDM's scaled-linear
  0.0015 -> 0.0195 over 1,000 steps, no sample clipping).
* **sampling**: deterministic DDIM on latents with fixed per-sample seeds
  (``diffusion.sample.ddim_sample``), decoded to pixels in [-1, 1].
* **model directories**: diffusers' ``LDMPipeline`` layout -- ``model_index.json``,
  ``unet/``, ``vqvae/`` (the autoencoder, with the scaling factor used written into its
  config), ``scheduler/`` (a ``DDIMScheduler`` of the training schedule) -- plus
  ``diffattr.json``; ``LDMPipeline.from_pretrained(dir)`` samples it, with a ``VQModel`` or
  an ``AutoencoderKL`` in ``vqvae/``. A pruned UNet no longer matches any diffusers config:
  pruned directories keep ``unet/`` in the sparsify format and have no
  ``model_index.json``.
* **bring your own**: a local ``LDMPipeline`` directory without ``diffattr.json`` is
  accepted as the full model (``check_model`` checks its latent shape, autoencoder and
  noise schedule against the run before any work).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.baselines.target import DiffusionTarget
from diffattr.diffusion.checkpoint import (
    META,
    read_meta,
    read_training_state,
    write_model_dir,
    write_training_state,
)
from diffattr.diffusion.sample import ddim_sample
from diffattr.diffusion.stacked import sample_stacked
from diffattr.diffusion.unet import make_scheduler
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelFamily, ModelState, TrainingSet
from diffattr.families.latent_cache import cached_latents, decode
from diffattr.families.settings import (
    LATENT_ARCHITECTURES,
    LatentSettings,
    pipeline_class,
)
from diffattr.families.unconditional import load_unet, prune_family_unet, save_unet
from diffattr.families.vae import (
    WEIGHT_FILES,
    autoencoder_dir,
    check_image_size,
    check_same_autoencoder,
    latent_factor,
    load_autoencoder,
    own_autoencoder,
    read_autoencoder_config,
)
from diffattr.sparsify.pruned_io import is_pruned_unet_dir

# --------------------------------------------------------------------------- the family


class LatentFamily(ModelFamily):
    """A UNet on the latents of a frozen autoencoder; the null model is its initialisation."""

    settings: LatentSettings

    def __init__(self, settings: LatentSettings, device: str | torch.device = "cpu") -> None:
        super().__init__(settings, device)
        self._ae: nn.Module | None = None
        self._ae_files: Path | None = None  # a directory holding the autoencoder's weights
        self._ae_scale: float | None = None  # scaling_factor written in its config.json
        self.autoencoder_record: dict[str, Any] = {}

    # ------------------------------------------------------------------ autoencoder

    @property
    def trains_autoencoder(self) -> bool:
        return self.settings.autoencoder.strip() == "train"

    def autoencoder_config(self, channels: int | None = None, image_size: int | None = None):
        """The autoencoder's config (read from its ``config.json``, or the package's own
        from its recipe); no torch."""
        if self._ae is not None:
            return dict(self._ae.config)
        if self.trains_autoencoder:
            r = self.settings.own_autoencoder()
            return {
                "_class_name": "AutoencoderKL",
                "in_channels": channels,
                "latent_channels": r.latent_channels,
                "block_out_channels": [r.width] * (r.downsample + 1),
            }
        return read_autoencoder_config(autoencoder_dir(self.settings.autoencoder))

    def latent_shape(self, dataset) -> tuple[int, int, int]:
        """(channels, height, width) of the latents of ``dataset``'s images."""
        cfg = self.autoencoder_config(dataset.channels, dataset.image_size)
        side = dataset.image_size // latent_factor(cfg)
        return int(cfg.get("latent_channels") or 4), side, side

    def _use_autoencoder(self, ae: nn.Module, files: Path | None, record: dict) -> None:
        self._ae = ae.to(self.device).eval().requires_grad_(False)
        self._ae_files = files
        raw = dict(ae.config) if files is None else {}
        if files is not None and (files / "config.json").is_file():
            try:
                raw = json.loads((files / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                raw = {}
        scale = raw.get("scaling_factor")
        self._ae_scale = float(scale) if isinstance(scale, int | float) else None
        self.autoencoder_record = record
        # the scale in use goes into its config at once: saved model directories decode as
        # the run did, and the latent cache key is the same in every process
        self._ae.register_to_config(scaling_factor=self.scaling_factor)

    @property
    def autoencoder(self) -> nn.Module:
        """The frozen autoencoder: loaded from ``[family] autoencoder``; the package's own
        comes from ``training_set`` (trained or cached) or from a loaded model directory."""
        if self._ae is None:
            if self.trains_autoencoder:
                raise DiffattrError(
                    "the latent family's own autoencoder is not available yet: encode the "
                    "training set (training_set) or load a model directory first"
                )
            files = autoencoder_dir(self.settings.autoencoder)
            self._use_autoencoder(load_autoencoder(files), files, {"source": str(files)})
        return self._ae

    @property
    def scaling_factor(self) -> float:
        """Latents are ``scaling_factor * E(x)``: the setting, else the autoencoder's
        config.json, else 1."""
        if self.settings.scaling_factor is not None:
            return float(self.settings.scaling_factor)
        _ = self.autoencoder
        return self._ae_scale if self._ae_scale is not None else 1.0

    # ------------------------------------------------------------------ examples

    def check_data(self, dataset) -> None:
        s = self.settings
        if s.beta_end <= s.beta_start:
            raise DiffattrError(
                f"family.beta_end ({s.beta_end:g}) must exceed family.beta_start ({s.beta_start:g})"
            )
        if self.trains_autoencoder:
            check_image_size(self.settings.own_autoencoder(), dataset.image_size)
        else:
            cfg = self.autoencoder_config()
            if int(cfg.get("in_channels", 3)) != dataset.channels:
                raise DiffattrError(
                    f"family.autoencoder encodes {cfg.get('in_channels', 3)}-channel images but "
                    f"the data have {dataset.channels} channels"
                )
            factor = latent_factor(cfg)
            if dataset.image_size % factor:
                raise DiffattrError(
                    f"family.autoencoder shrinks images {factor}x; image size "
                    f"{dataset.image_size} must be divisible by {factor} (set [data] image_size)"
                )
        _, side, _ = self.latent_shape(dataset)
        arch = self.architecture()
        unet_factor = 2 ** (len(arch["block_out_channels"]) - 1)
        if side % unet_factor:
            raise DiffattrError(
                f"the {dataset.image_size}x{dataset.image_size} images give {side}x{side} "
                f"latents; the {self.settings.architecture!r} UNet needs latent sides divisible "
                f"by {unet_factor} (set [data] image_size or family.architecture)"
            )

    def training_set(self, dataset, cache_dir: Path | None = None) -> TrainingSet:
        """Latents of the dataset's images: the autoencoder (own: trained or from the
        cache) encodes them once; later calls read the content-keyed cache."""
        self.check_data(dataset)
        if self._ae is None and self.trains_autoencoder:
            ae, files, record = own_autoencoder(
                self.settings.own_autoencoder(), dataset.images, cache_dir, device=self.device
            )
            self._use_autoencoder(ae, files, record)
        z, rec = cached_latents(
            self.autoencoder,
            dataset.images,
            cache_dir,
            scaling_factor=self.scaling_factor,
            device=self.device,
        )
        info = {
            "space": "latents",
            "autoencoder": rec["autoencoder"],
            "scaling_factor": self.scaling_factor,
            "latent_cache": rec["key"],
            "cached": rec["cached"],
        }
        return TrainingSet(z, None, info)

    # ------------------------------------------------------------------ models

    def init_model(self, data: TrainingSet, seed: int) -> nn.Module:
        from diffusers import UNet2DModel

        _, channels, size, _ = data.x0.shape
        arch = self.architecture()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return UNet2DModel(
                sample_size=int(size), in_channels=int(channels), out_channels=int(channels), **arch
            )

    def architecture(self) -> dict[str, Any]:
        """``UNet2DModel`` keyword arguments of fresh models (retraining, the null model): the
        preset, or the layout in a local model directory's ``unet/config.json``."""
        name = self.settings.architecture
        if self.settings.architecture_is_preset():
            return dict(LATENT_ARCHITECTURES[name])
        d = Path(name).expanduser()
        path = d / "unet" / "config.json" if (d / "unet").is_dir() else d / "config.json"
        if not path.is_file():
            raise DiffattrError(
                f"family.architecture: {d} has no unet/config.json or config.json (give a "
                f"preset: {', '.join(LATENT_ARCHITECTURES)}, or a model directory)"
            )
        cfg = _unet_config(path.parent, "family.architecture")
        import inspect

        from diffusers import UNet2DModel

        known = set(inspect.signature(UNet2DModel.__init__).parameters) - {
            "self",
            "sample_size",
            "in_channels",
            "out_channels",
        }
        return {k: v for k, v in cfg.items() if k in known}

    def predict_noise(self, model: nn.Module, x_t, t, cond: Any) -> torch.Tensor:
        return model(x_t, t).sample

    def noise_scheduler(self):

        return make_scheduler(self.settings.schedule_config())

    # ------------------------------------------------------------------ sampling

    def sample_latents(
        self,
        model: nn.Module,
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int = 500,
        start: int = 0,
        progress: bool = False,
    ) -> torch.Tensor:
        """DDIM (eta = 0) latents; sample i starts from the noise of (seed, i)."""
        cfg = model.config
        size = cfg.sample_size[0] if isinstance(cfg.sample_size, list | tuple) else cfg.sample_size
        shape = (int(cfg.in_channels), int(size), int(size))
        was_training = model.training
        model.eval()
        try:
            return ddim_sample(
                lambda x_t, t, _c: model(x_t, t).sample,
                shape,
                num_samples,
                ddim_steps=ddim_steps,
                seed=seed,
                batch_size=batch_size,
                device=self.device,
                start=start,
                scheduler_config=self.settings.schedule_config(),
                progress=progress,
            )
        finally:
            model.train(was_training)

    def decode(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Pixels in [-1, 1] of scaled latents."""
        return decode(
            self.autoencoder,
            latents,
            scaling_factor=self.scaling_factor,
            batch_size=batch_size,
            device=self.device,
        )

    def _sample_side_by_side(
        self,
        models: list[nn.Module],
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int,
        conditions: list[Any],
    ) -> list[torch.Tensor]:
        """The models' latents in one stacked DDIM loop (as ``sample_latents``, to float
        tolerance), each decoded to pixels."""
        for c in conditions:
            self.no_conditions(c)
        latents = sample_stacked(
            models,
            self,
            num_samples,
            seed=seed,
            ddim_steps=ddim_steps,
            batch_size=batch_size,
            device=self.device,
            scheduler_config=self.settings.schedule_config(),
        )
        return [self.decode(z, batch_size) for z in latents]

    def sample(
        self,
        model: nn.Module,
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int = 500,
        start: int = 0,
        progress: bool = False,
        conditions: Any = None,
    ) -> torch.Tensor:
        self.no_conditions(conditions)
        z = self.sample_latents(
            model,
            num_samples,
            seed=seed,
            ddim_steps=ddim_steps,
            batch_size=batch_size,
            start=start,
            progress=progress,
        )
        return self.decode(z, batch_size)

    def baseline_target(
        self, model: nn.Module, data: TrainingSet, *, num_samples: int, seed: int, ddim_steps: int
    ):
        """Latents as ``x0_*`` (what the UNet was trained on), decoded pixels as
        ``images_*`` (the training images as the model sees them: their decoded latents)."""
        z_gen = self.sample_latents(model, num_samples, seed=seed, ddim_steps=ddim_steps)
        return DiffusionTarget(
            model=model,
            scheduler=self.noise_scheduler(),
            x0_train=data.x0,
            x0_gen=z_gen,
            ddim_steps=ddim_steps,
            sample_seed=seed,
            images_train=self.decode(data.x0),
            images_gen=self.decode(z_gen),
            family="latent",
            device=self.device,
            scheduler_config=self.settings.schedule_config(),
            clip_sample=False,  # latents are not clamped (LatentFamily.sample_latents)
        )

    # ------------------------------------------------------------------ pruning

    def prune(
        self, model: nn.Module, settings: Any, examples: TrainingSet
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Channel pruning of the latent UNet (``diffattr.sparsify.prune``): group norms keep
        whole groups and attention q/k/v are grouped by head (every head keeps the same
        number of its own most important dimensions)."""
        return prune_family_unet(self, model, settings, examples)

    # ------------------------------------------------------------------ persistence

    def _write_autoencoder(self, out: Path) -> str:
        """The autoencoder into ``out`` (its weights linked or copied from where they were
        read; config.json with the scaling factor in use); returns its class name."""
        ae = self.autoencoder
        out.mkdir(parents=True, exist_ok=True)
        copied = False
        if self._ae_files is not None:
            for name in WEIGHT_FILES:
                src = self._ae_files / name
                if src.is_file():
                    try:
                        try:
                            os.link(src, out / name)
                        except OSError:
                            shutil.copy2(src, out / name)
                        copied = True
                    except OSError:
                        copied = False
                    break
        if copied:
            ae.save_config(out)
        else:
            ae.save_pretrained(out, safe_serialization=True)
        return type(ae).__name__

    def save(self, directory: str | Path, state: ModelState, meta: dict[str, Any]) -> Path:
        def fill(tmp: Path) -> None:
            import diffusers
            from diffusers import DDIMScheduler

            unet = state.model
            save_unet(unet, tmp / "unet")
            ae_class = self._write_autoencoder(tmp / "vqvae")
            DDIMScheduler.from_config(self.noise_scheduler().config).save_pretrained(
                tmp / "scheduler"
            )
            if getattr(unet, "diffattr_pruning", None) is None:
                index = {
                    "_class_name": "LDMPipeline",
                    "_diffusers_version": diffusers.__version__,
                    "scheduler": ["diffusers", "DDIMScheduler"],
                    "unet": ["diffusers", "UNet2DModel"],
                    "vqvae": ["diffusers", ae_class],
                }
                (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
            if state.raw is not None:
                save_unet(state.raw, tmp / "training" / "unet")
            write_training_state(tmp, state.optimizer_state, state.ema_step, state.raw is not None)

        full_meta = {**meta, "latent": {"scaling_factor": self.scaling_factor}}
        return write_model_dir(directory, fill, full_meta)

    def is_model_dir(self, directory: str | Path) -> bool:
        d = Path(directory)
        return (d / "unet").is_dir() and (d / META).is_file()

    def load(self, directory: str | Path, training: bool = False) -> ModelState:
        """A model directory written by this family, or a diffusers ``LDMPipeline`` directory
        (no ``diffattr.json``). The family's autoencoder, when it is the package's own and
        not loaded yet, is the directory's ``vqvae/``."""
        d = Path(directory)
        own = self.is_model_dir(d)
        if not own and pipeline_class(d) != "LDMPipeline":
            raise DiffattrError(
                f"{d} is not a latent model directory (expected unet/ and vqvae/ with "
                "diffattr.json, or a diffusers LDMPipeline directory)"
            )
        meta = read_meta(d) if own else {}
        if self._ae is None and self.trains_autoencoder:
            files = autoencoder_dir(d, where=str(d))
            self._use_autoencoder(load_autoencoder(files, str(d)), files, {"source": str(d)})
        state = ModelState(model=load_unet(d / "unet", self.device), meta=meta, path=d)
        if training and (d / "training" / "unet").is_dir():
            state.raw = load_unet(d / "training" / "unet", self.device)
            state.optimizer_state, state.ema_step = read_training_state(d, self.device)
        return state

    def check_model(self, directory: str | Path, dataset) -> None:
        """The full model at ``directory`` fits the run: its layout, the latent shape of the
        data under the run's autoencoder, the same autoencoder, the same noise schedule."""
        d = Path(directory)
        where = f"full model {d}"
        if not d.is_dir():
            raise DiffattrError(f"{where} is not a directory")
        own = self.is_model_dir(d)
        layout = pipeline_class(d)
        if not own:
            if layout == "DDPMPipeline":
                raise DiffattrError(
                    f"{where} is a pixel-space DDPMPipeline; use [family] name = 'unconditional'"
                )
            if layout != "LDMPipeline":
                raise DiffattrError(
                    f"{where} is neither a diffattr model directory nor a diffusers "
                    "LDMPipeline directory (model_index.json with unet/, vqvae/, scheduler/)"
                )
            # its autoencoder must be the run's
            if self.trains_autoencoder:
                raise DiffattrError(
                    f"{where} brings its own autoencoder; set family.autoencoder = '{d}'"
                )
            ours = autoencoder_dir(self.settings.autoencoder)
            check_same_autoencoder(autoencoder_dir(d, where), ours, where)
        unet_cfg = _unet_config(d / "unet", where)
        size = unet_cfg.get("sample_size")
        if isinstance(size, list | tuple):
            size = size[0]
        channels, out_channels = unet_cfg.get("in_channels"), unet_cfg.get("out_channels")
        c, side, _ = self.latent_shape(dataset)
        if channels != c or out_channels != c or size != side:
            raise DiffattrError(
                f"{where} denoises {channels}-channel {size}x{size} latents but the autoencoder "
                f"maps the {dataset.image_size}x{dataset.image_size} data to {c}-channel "
                f"{side}x{side} latents"
            )
        self._check_schedule(d, where)
        recorded = read_meta(d).get("dataset", {}).get("size") if own else None
        if recorded is not None and recorded != len(dataset):
            raise DiffattrError(
                f"{where} was trained on {recorded} images but [data] has {len(dataset)}"
            )

    def _check_schedule(self, d: Path, where: str) -> None:
        path = d / "scheduler" / "scheduler_config.json"
        if not path.is_file():
            return
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DiffattrError(f"{path} is unreadable ({e})") from None
        s = self.settings
        theirs = (
            cfg.get("beta_schedule", "linear"),
            float(cfg.get("beta_start", 0.0001)),
            float(cfg.get("beta_end", 0.02)),
            int(cfg.get("num_train_timesteps", 1000)),
        )
        same = (
            theirs[0] == s.beta_schedule
            and math.isclose(theirs[1], s.beta_start, rel_tol=1e-6)
            and math.isclose(theirs[2], s.beta_end, rel_tol=1e-6)
            and theirs[3] == 1000
        )
        if not same:
            raise DiffattrError(
                f"{where} was trained with the {theirs[0]} schedule {theirs[1]:g} -> "
                f"{theirs[2]:g} over {theirs[3]} steps; set family.beta_schedule = '{theirs[0]}', "
                f"family.beta_start = {theirs[1]:g}, family.beta_end = {theirs[2]:g}"
                + ("" if theirs[3] == 1000 else " (only T = 1000 is supported)")
            )


def _unet_config(directory: Path, where: str) -> dict:
    path = directory / ("pruned.json" if is_pruned_unet_dir(directory) else "config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffattrError(f"{where}: {path} is unreadable ({e})") from None
    cfg = cfg.get("config", cfg) if path.name == "pruned.json" else cfg
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise DiffattrError(f"{where}: unet/ holds a {cfg['_class_name']}, not a UNet2DModel")
    return cfg
