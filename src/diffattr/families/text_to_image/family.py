"""``text-to-image``: the LoRA of a frozen Stable-Diffusion-style pipeline (the paper's
ArtBench set-up: miniSD + a LoRA on every attention projection, credited to the artists).

The base
    A local diffusers directory or ``demo``: see ``diffattr.families.text_to_image.pipeline``.

The model
    The family's model is :class:`LoRAAdapters`: the adapters and *nothing else*. The base
    UNet is held by the family, and forward hooks on its target layers add
    ``scale * B A dropout(x)`` of whichever adapters are active (``predict_noise`` activates
    the model it is given). So everything the shared code copies is the LoRA: the training
    loop's EMA (``diffusion.ema.EMA`` deep-copies the model), the methods' ``copy_module``,
    checkpoints and per-example gradients — an EMA of a frozen 860 M-parameter UNet would
    double the memory for weights that never change. The EMA of the adapters is kept (it is
    cheap); ``train.ema_decay = 0`` samples the raw adapters, as diffusers' LoRA script does.
    The null model (v0) is the base without LoRA: adapters with no layers.

Examples
    ``training_set`` encodes the images to VAE latents and the captions (a missing caption
    takes ``prompt``) to text-encoder embeddings once, both cached under the run's cache
    folder by content (``families.latent_cache``): ``TrainingSet.x0`` = latents,
    ``TrainingSet.cond`` = embeddings (N, L, D), so fine-tunes never run either encoder.

Sampling
    Deterministic DDIM (eta = 0) with the base's noise schedule; sample i starts from the
    noise of (seed, i) (``diffusion.sample.initial_noise``) and is prompted with
    ``prompts[i % len(prompts)]``; classifier-free guidance with the empty prompt when
    ``guidance_scale > 1``; latents decoded by the base's autoencoder to [-1, 1].
    With ``generate_with = "captions"`` the model of a coalition is prompted with its own
    data's captions instead (``generation_conditions``: sample i takes the caption at the
    fixed quantile u_i of the coalition's caption frequencies, the rule of
    ``diffusion.sample.draw_labels``; the empty coalition takes the empty prompt), the same
    for every method -- the prompt-level game of method ``surrogate``.

Pruning (sFT)
    Whole rank-1 components of the LoRA (``diffattr.sparsify.lora``): ``[method] ratio`` is
    the share of LoRA parameters removed (the paper keeps 50 %: ratio = 0.5) and ``pruner``
    the importance (magnitude, taylor, diff-pruning, random); ``round_to`` has no meaning
    here and is refused.

A model directory (``save``) is what ``StableDiffusionPipeline.load_lora_weights(dir)``
reads::

    pytorch_lora_weights.safetensors   unet.<layer>.lora_A.weight / lora_B.weight (the
                                       sampled, EMA adapters; absent for the null model),
                                       with the LoRA config as adapter metadata
    base.json                          the base directory and its digest
    diffattr.json                      run config, dataset, and ``t2i``: rank, alpha,
                                       targets, per-layer ranks, generation prompts
    training/                          raw adapters and Adam state (to continue training)

See ``diffattr.families.text_to_image.lora`` for how the scale is stored.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffattr.baselines.target import DiffusionTarget, Trajectory
from diffattr.diffusion.checkpoint import (
    read_meta,
    read_training_state,
    write_model_dir,
    write_training_state,
)
from diffattr.errors import DiffattrError
from diffattr.families import tiny_t2i
from diffattr.families.base import ModelFamily, ModelState, TrainingSet
from diffattr.families.latent_cache import cached_latents, cached_text_embeddings, decode
from diffattr.families.settings import TextToImageSettings
from diffattr.families.text_to_image.lora import LoRAAdapters, read_lora, write_lora
from diffattr.families.text_to_image.pipeline import (
    BasePipeline,
    _init_config,
    _read_config,
    base_digest,
    check_base_dir,
    load_base,
)
from diffattr.sparsify.lora import accumulate_gradients, plan_pruning
from diffattr.torchutils import count_parameters

BASE_FILE = "base.json"


class TextToImageFamily(ModelFamily):
    """A LoRA on a frozen Stable-Diffusion-style pipeline; see the module docstring."""

    settings: TextToImageSettings

    def __init__(self, settings: TextToImageSettings, device: str | torch.device = "cpu") -> None:
        super().__init__(settings, device)
        self._base: BasePipeline | None = None
        self._prompts: list[str] | None = None
        self._prompt_rows: dict[str, torch.Tensor] = {}
        self._image_size: int | None = None

    # ------------------------------------------------------------------ the base

    @property
    def base(self) -> BasePipeline:
        if self._base is None:
            if self.settings.base != "demo":
                self._base = load_base(self.settings.base, self.settings, self.device)
            else:
                raise DiffattrError(
                    "the demo base is built in the run's cache folder: encode the data first "
                    "(family.training_set(dataset, cache_dir)) or load a model directory"
                )
        return self._base

    def ensure_base(self, cache_dir: str | Path | None = None, recorded: str | None = None):
        """Load the base: a user's directory, or the demo base (built under ``cache_dir``,
        or found where a model directory's ``base.json`` says)."""
        if self._base is not None:
            return self._base
        if self.settings.base != "demo":
            return self.base

        if cache_dir is not None:
            import sys

            path = tiny_t2i.ensure_demo_base(
                self.settings.demo, cache_dir, self.device, progress=sys.stderr.isatty()
            )
        elif recorded is not None:
            path = Path(recorded)
            want = tiny_t2i.demo_key(self.settings.demo)
            if not tiny_t2i.is_demo_base(path) or base_digest(path) != f"demo-{want}":
                raise DiffattrError(
                    f"the demo base {path} of this model is missing or was built with other "
                    "[family.demo] settings; run the run's prepare phase (diffattr run) again"
                )
        else:
            return self.base  # raises: nowhere to find the demo base
        self._base = load_base(path, self.settings, self.device)
        return self._base

    def base_channels(self) -> tuple[int, int]:
        """(image channels, downsampling of image to the UNet's lowest resolution), read
        from the configs without loading weights."""
        if self.settings.base == "demo":
            vae, unet = tiny_t2i.VAE_CONFIG, tiny_t2i.UNET_CONFIG
        else:
            d = Path(self.settings.base).expanduser()
            check_base_dir(d)
            vae = _read_config(d / "vae" / "config.json")
            unet = _read_config(d / "unet" / "config.json")
        factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        factor *= 2 ** (len(unet.get("block_out_channels", [0])) - 1)
        return int(vae.get("in_channels", 3)), factor

    # ------------------------------------------------------------------ examples

    def captions(self, dataset) -> list[str]:
        """One caption per image: the dataset's, ``prompt`` where it has none."""
        caps = dataset.captions if dataset.captions is not None else [None] * len(dataset)
        missing = sum(1 for c in caps if c is None)
        if missing and self.settings.prompt is None:
            where = "has no caption column" if dataset.captions is None else "has empty captions"
            raise DiffattrError(
                f"the {dataset.name} data {where} ({missing} of {len(dataset)} images without a "
                "caption) and [family] prompt is not set: add a 'caption' column to the CSV or "
                'set family.prompt = "..."'
            )
        return [c if c is not None else str(self.settings.prompt) for c in caps]

    def generation_prompts(self, captions: list[str] | None = None) -> list[str]:
        s = self.settings
        if s.prompts:
            return list(s.prompts)
        if s.prompt is not None:
            return [s.prompt]
        if captions:
            return sorted(set(captions))
        if self._prompts:
            return list(self._prompts)
        raise DiffattrError(
            "no generation prompts: set [family] prompts or prompt, or encode the data first"
        )

    def condition_keys(self, dataset) -> list[str] | None:
        """The caption of each image when models are prompted with their data's captions."""
        return self.captions(dataset) if self.settings.generate_with == "captions" else None

    def check_data(self, dataset) -> None:
        self.captions(dataset)
        channels, factor = self.base_channels()
        if dataset.channels != channels:
            raise DiffattrError(
                f"the base's autoencoder takes {channels}-channel images but the data are "
                f"{dataset.channels}-channel (set [data] channels)"
            )
        if dataset.image_size % factor:
            raise DiffattrError(
                f"image size {dataset.image_size} must be a multiple of {factor} (the base's "
                "autoencoder and UNet halve it); set [data] image_size"
            )

    def training_set(self, dataset, cache_dir: Path | None = None) -> TrainingSet:
        """Latents and caption embeddings of ``dataset``, from the content-keyed caches."""

        captions = self.captions(dataset)
        base = self.ensure_base(cache_dir=cache_dir)
        self.check_data(dataset)
        z, z_rec = cached_latents(
            base.vae,
            dataset.images,
            cache_dir,
            scaling_factor=base.scaling_factor,
            sample=self.settings.latent_sample,
            seed=self.settings.seed,
            device=self.device,
        )
        emb, e_rec = cached_text_embeddings(
            base.text_encoder, base.tokenizer, captions, cache_dir, device=self.device
        )
        if base.unet.dtype != torch.float32:
            emb = emb.to(base.unet.dtype)
        self._prompts = self.generation_prompts(captions)
        self._image_size = dataset.image_size
        info = {
            "space": "latents",
            "latents": z_rec,
            "captions": e_rec,
            "prompts": list(self._prompts),
            "caption_texts": captions,  # what each image says (generation_conditions)
            "images": dataset.images,  # the full dataset's pixels (for the baselines)
        }
        return TrainingSet(z, emb, info)

    # ------------------------------------------------------------------ models

    def init_model(self, data: TrainingSet, seed: int) -> nn.Module:
        s = self.settings
        layers = [(n, i, o, s.rank) for n, i, o in self.base.targets]
        ad = LoRAAdapters(layers, s.rank, s.lora_alpha(), s.dropout).reset(seed)
        return ad.to(self.device)

    def null_model(self, data: TrainingSet) -> nn.Module:
        """The base without LoRA: adapters with no layers."""
        s = self.settings
        layers = [(n, i, o, 0) for n, i, o in self.base.targets]
        return LoRAAdapters(layers, s.rank, s.lora_alpha(), s.dropout)

    def predict_noise(self, model: nn.Module, x_t, t, cond) -> torch.Tensor:
        base = self.base
        dt = base.unet.dtype
        if cond is None:
            raise DiffattrError("the text-to-image family needs text embeddings (cond)")
        with base.using(model if len(getattr(model, "A", ())) else None):
            out = base.unet(x_t.to(dt), t, encoder_hidden_states=cond.to(dt)).sample
        return out.float()

    def guided_noise(self, model: nn.Module, x_t, t, cond) -> torch.Tensor:
        """The noise prediction with classifier-free guidance (the empty prompt) when
        ``guidance_scale > 1``."""
        g = float(self.settings.guidance_scale)
        if g == 1.0:
            return self.predict_noise(model, x_t, t, cond)
        null = self.base.embed(("",), self.device).to(cond.device, cond.dtype)
        both = self.predict_noise(
            model,
            torch.cat([x_t, x_t]),
            torch.cat([t, t]) if torch.as_tensor(t).ndim else t,
            torch.cat([null.expand(len(cond), *null.shape[1:]), cond]),
        )
        eps_u, eps_c = both.chunk(2)
        return eps_u + g * (eps_c - eps_u)

    def noise_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**_init_config(DDPMScheduler, self.base.scheduler_config))

    def ddim_scheduler(self, steps: int):
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(**_init_config(DDIMScheduler, self.base.scheduler_config))
        sched.set_timesteps(steps)
        return sched

    # ------------------------------------------------------------------ sampling

    def latent_shape(self) -> tuple[int, int, int]:
        base = self.base
        size = self._image_size or base.unet.config.sample_size * base.vae_factor
        side = size // base.vae_factor
        return (int(base.unet.config.in_channels), side, side)

    def prompt_embeddings(
        self, num_samples: int, start: int = 0, prompts: list[str] | None = None
    ) -> torch.Tensor:
        """Embeddings of the prompts of samples start .. start + n - 1: ``prompts`` (one per
        sample) when given, else the generation prompts (prompt i % P)."""
        if prompts is not None:
            if len(prompts) != num_samples:
                raise DiffattrError(
                    f"expected one prompt per sample ({num_samples}), got {len(prompts)}"
                )
            # each distinct prompt encoded once and on its own: coalitions draw different
            # subsets of the captions (a table per subset would grow with every job), and a
            # prompt's embedding must not depend on which prompts a worker met before
            for p in set(prompts) - set(self._prompt_rows):
                self._prompt_rows[p] = self.base.embed((p,), self.device)[0]
            return torch.stack([self._prompt_rows[p] for p in prompts])
        fixed = tuple(self.generation_prompts())
        table = self.base.embed(fixed, self.device)
        idx = torch.arange(start, start + num_samples) % len(fixed)
        return table[idx]

    def generation_conditions(
        self,
        data: TrainingSet,
        kept: np.ndarray | None,
        num_samples: int,
        *,
        seed: int,
        start: int = 0,
    ) -> list[str] | None:
        """The prompt of each sample of the model of the coalition whose data are the rows
        ``kept`` (None: all): with ``generate_with = "captions"`` the caption at the fixed
        quantile of sample i in the coalition's caption frequencies (``draw_labels`` over
        the data's distinct captions, sorted), the empty prompt for the empty coalition;
        None (the fixed generation prompts) otherwise."""
        if self.settings.generate_with != "captions":
            return None
        from diffattr.diffusion.sample import draw_labels  # diffusers: only when sampling

        texts = data.info.get("caption_texts")
        if texts is None or len(texts) != len(data):
            raise DiffattrError(
                "the training set carries no captions (encode it with training_set first)"
            )
        distinct = sorted(set(texts))
        where = {c: i for i, c in enumerate(distinct)}
        rows = range(len(texts)) if kept is None else np.asarray(kept, dtype=np.int64).tolist()
        counts = np.bincount([where[texts[i]] for i in rows], minlength=len(distinct))
        idx = draw_labels(counts, num_samples, seed=seed, start=start, null_label=-1)
        return ["" if i < 0 else distinct[i] for i in idx.tolist()]

    @torch.no_grad()
    def generate_latents(
        self,
        model: nn.Module,
        num_samples: int,
        *,
        seed: int,
        ddim_steps: int,
        batch_size: int = 500,
        start: int = 0,
        progress: bool = False,
        trajectory: list | None = None,
        prompts: list[str] | None = None,
    ) -> torch.Tensor:
        """DDIM latents (N, c, h, w) on the CPU, prompted with ``prompts`` (one per sample;
        None: the generation prompts); with ``trajectory`` (a list) the states x_t before
        every step, (steps, N, c, h, w), and the timesteps are appended to it."""
        from diffattr.diffusion.sample import ddim_run  # diffusers: only when sampling

        cond = self.prompt_embeddings(num_samples, start, prompts)
        sched = self.ddim_scheduler(ddim_steps)
        was_training = model.training
        model.eval()
        try:
            run = ddim_run(
                lambda x, t, c: self.guided_noise(model, x, t, c),
                self.latent_shape(),
                num_samples,
                ddim_steps=ddim_steps,
                seed=seed,
                batch_size=batch_size,
                device=self.device,
                start=start,
                cond=cond,
                scheduler=sched,
                keep_steps=None if trajectory is None else range(len(sched.timesteps)),
                progress=progress,
            )
        finally:
            model.train(was_training)
        if trajectory is not None:
            trajectory.append((run.states, sched.timesteps.clone()))
        return run.final

    def decode(self, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:

        base = self.base
        return decode(
            base.vae,
            latents,
            scaling_factor=base.scaling_factor,
            batch_size=batch_size,
            device=self.device,
        )

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
        """Images of ``model``; ``conditions``: one prompt per sample
        (``generation_conditions``), None for the generation prompts."""
        if conditions is not None and (
            isinstance(conditions, str) or not all(isinstance(c, str) for c in conditions)
        ):
            raise DiffattrError("text-to-image conditions are prompts: a list of strings")
        z = self.generate_latents(
            model,
            num_samples,
            seed=seed,
            ddim_steps=ddim_steps,
            batch_size=batch_size,
            start=start,
            progress=progress,
            prompts=None if conditions is None else list(conditions),
        )
        return self.decode(z, batch_size=min(batch_size, 64))

    def baseline_target(
        self, model: nn.Module, data: TrainingSet, *, num_samples: int, seed: int, ddim_steps: int
    ):
        """The LoRA (only its adapters are differentiated) with the caption embeddings of the
        training images and of the generated ones, the DDIM trajectory of the generated
        latents (recorded with the family's scheduler) and the pixels of both."""

        rec: list = []
        # the full model's job's prompts (the fixed prompts, or all data's caption mix)
        prompts = self.generation_conditions(data, None, num_samples, seed=seed)
        z = self.generate_latents(
            model, num_samples, seed=seed, ddim_steps=ddim_steps, trajectory=rec, prompts=prompts
        )
        states, timesteps = rec[0]
        traj = Trajectory(
            states=states,
            timesteps=timesteps.long(),
            steps=torch.arange(len(timesteps)),
            final=z,
            ddim_steps=ddim_steps,
            seed=seed,
        )
        pixels = data.info.get("images")
        if pixels is None or len(pixels) != len(data):
            pixels = self.decode(data.x0)
        h = hashlib.sha256(self.base.digest().encode())
        for name, t in model.state_dict().items():
            h.update(name.encode() + t.detach().float().cpu().numpy().tobytes())
        return DiffusionTarget(
            model=model,
            scheduler=self.noise_scheduler(),
            x0_train=data.x0,
            x0_gen=z,
            cond_train=data.cond.float(),
            cond_gen=self.prompt_embeddings(num_samples, 0, prompts),
            eps_fn=self.guided_noise,
            trajectory=traj,
            ddim_steps=ddim_steps,
            sample_seed=seed,
            images_train=pixels,
            images_gen=self.decode(z),
            model_digest=h.hexdigest()[:24],
            family="text-to-image",
            device=self.device,
        )

    # ------------------------------------------------------------------ pruning

    def prune(
        self, model: nn.Module, settings: Any, examples: TrainingSet
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Remove whole rank-1 components until ``1 - settings.ratio`` of the LoRA's
        parameters remain, by ``settings.pruner`` importance (``diffattr.sparsify.lora``)."""

        if getattr(settings, "round_to", None) is not None:
            raise DiffattrError(
                "method.round_to has no meaning for LoRA pruning (whole rank-1 components are "
                "removed); leave it unset"
            )
        if not isinstance(model, LoRAAdapters) or not len(model.A):
            raise DiffattrError("there is no LoRA to prune (the model has no adapters)")
        pruner = settings.pruner
        grads, info = None, {}
        if pruner in ("taylor", "diff-pruning"):
            work = copy.deepcopy(model).to(self.device).eval().requires_grad_(True)
            x0 = examples.x0.to(self.device)
            cond = examples.cond.to(self.device)
            gen = torch.Generator().manual_seed(int(settings.seed))
            noise = torch.randn(x0.shape, generator=gen).to(self.device)
            T = int(self.noise_scheduler().config.num_train_timesteps)
            n = min(T, settings.prune_timesteps or T)
            if pruner == "taylor":
                steps = torch.linspace(0, T - 1, n).round().long().unique().tolist()
            else:
                steps = list(range(n))

            def loss_at(t: int) -> torch.Tensor:
                tt = torch.full((len(x0),), t, dtype=torch.long, device=self.device)
                return self.loss(work, x0, tt, noise, cond)

            params = list(work.A) + list(work.B)
            stop = settings.thr if pruner == "diff-pruning" else None
            g, losses = accumulate_gradients(params, loss_at, steps, stop_ratio=stop)
            grads = (g[: len(work.A)], g[len(work.A) :])
            info = {"timesteps": len(losses), "loss_first": losses[0], "loss_last": losses[-1]}
        plan = plan_pruning(
            list(model.A),
            list(model.B),
            1.0 - float(settings.ratio),
            pruner,
            scale=model.scale,
            grads=grads,
            seed=int(settings.seed),
            info=info,
        )
        pruned = model.with_components(plan.kept).to(self.device)
        report = plan.to_dict()
        report.update(round_to=None, macs_before=None, macs_after=None)
        return pruned, report

    # ------------------------------------------------------------------ persistence

    def lora_meta(self, model: LoRAAdapters) -> dict[str, Any]:
        s = self.settings
        return {
            "rank": s.rank,
            "alpha": s.lora_alpha(),
            "target_modules": list(s.target_modules),
            "dropout": s.dropout,
            "pruned": bool(model.pruned),
            "ranks": model.ranks(),
            "lora_parameters": count_parameters(model),
            "prompts": list(self._prompts) if self._prompts else None,
            "image_size": self._image_size,
            "base": str(self.base.path),
        }

    def save(self, directory: str | Path, state: ModelState, meta: dict[str, Any]) -> Path:
        model = state.model
        if not isinstance(model, LoRAAdapters):
            raise DiffattrError(f"text-to-image models are LoRA adapters, not {type(model)}")
        meta = {**meta, "t2i": self.lora_meta(model)}
        base = {"path": str(self.base.path), "digest": self.base.digest()}

        def fill(tmp: Path) -> None:
            write_lora(tmp, model)
            (tmp / BASE_FILE).write_text(json.dumps(base, indent=2))
            if state.raw is not None:
                (tmp / "training").mkdir(parents=True, exist_ok=True)
                write_lora(tmp / "training", state.raw)
            write_training_state(tmp, state.optimizer_state, state.ema_step, state.raw is not None)

        return write_model_dir(directory, fill, meta)

    def is_model_dir(self, directory: str | Path) -> bool:
        d = Path(directory)
        return (d / "diffattr.json").is_file() and (d / BASE_FILE).is_file()

    def _lora_record(self, directory: Path) -> dict[str, Any]:
        if not self.is_model_dir(directory):
            raise DiffattrError(
                f"{directory} is not a text-to-image model directory (expected {BASE_FILE} and "
                "diffattr.json; make one with diffattr run)"
            )
        t2i = read_meta(directory).get("t2i")
        if not isinstance(t2i, dict):
            raise DiffattrError(f"{directory}/diffattr.json has no text-to-image record")
        s = self.settings
        if int(t2i.get("rank", -1)) != s.rank:
            raise DiffattrError(
                f"the LoRA in {directory} has rank {t2i.get('rank')} but [family] rank = {s.rank}"
            )
        if float(t2i.get("alpha", -1)) != s.lora_alpha():
            raise DiffattrError(
                f"the LoRA in {directory} has alpha {t2i.get('alpha')} but [family] alpha gives "
                f"{s.lora_alpha()}"
            )
        if list(t2i.get("target_modules") or []) != list(s.target_modules):
            raise DiffattrError(
                f"the LoRA in {directory} targets {t2i.get('target_modules')} but [family] "
                f"target_modules = {list(s.target_modules)}"
            )
        return t2i

    def load(self, directory: str | Path, training: bool = False) -> ModelState:
        d = Path(directory)
        t2i = self._lora_record(d)
        base = self.ensure_base(recorded=t2i.get("base"))
        if self._prompts is None and t2i.get("prompts"):
            self._prompts = list(t2i["prompts"])
        if self._image_size is None and t2i.get("image_size"):
            self._image_size = int(t2i["image_size"])
        s = self.settings
        pruned = bool(t2i.get("pruned"))

        def read(where: Path) -> LoRAAdapters:
            ad = read_lora(where, base.targets, s.rank, s.lora_alpha(), s.dropout, pruned)
            return ad.to(self.device)

        state = ModelState(model=read(d).eval().requires_grad_(False), meta=read_meta(d), path=d)
        if training and (d / "training" / "state.json").is_file():
            state.raw = read(d / "training")
            state.optimizer_state, state.ema_step = read_training_state(d, self.device)
        return state

    def check_model(self, directory: str | Path, dataset) -> None:
        d = Path(directory)
        self._lora_record(d)
        meta = read_meta(d)
        recorded = meta.get("dataset", {})
        if recorded.get("size") is not None and recorded["size"] != len(dataset):
            raise DiffattrError(
                f"full model {d} was trained on {recorded['size']} images but [data] has "
                f"{len(dataset)}"
            )
        size = recorded.get("image_size")
        if size is not None and size != dataset.image_size:
            raise DiffattrError(
                f"full model {d} was trained on {size}x{size} images but the data are "
                f"{dataset.image_size}x{dataset.image_size}"
            )
        try:
            digest = json.loads((d / BASE_FILE).read_text()).get("digest")
        except (OSError, json.JSONDecodeError):
            digest = None
        if digest is not None and self._base is not None and digest != self._base.digest():
            raise DiffattrError(
                f"full model {d} is a LoRA of another base ({digest}) than [family] base "
                f"({self._base.digest()})"
            )
