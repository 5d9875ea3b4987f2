"""``conditional``: a class-conditional pixel-space ``UNet2DModel`` with classifier-free
guidance (Ho & Salimans 2022), the SurrogateSHAP paper's CIFAR-20 setting in miniature.

* **Labels** are what each image shows: the classes of digits / Fashion-MNIST / CIFAR, or a
  folder CSV's ``label`` column (``class_labels``); never the contributors.
* **Model**: diffusers' ``UNet2DModel`` with ``num_class_embeds = classes + 1``; the last
  index is the null label (the unconditional prediction). Labels are passed as diffusers'
  ``class_labels``; inside the family a negative label means the null label.
* **Training**: the shared loop (``diffattr.diffusion.train``) with label dropout: each
  example's label is replaced by the null label with probability ``label_dropout``, drawn
  from the loop's own seeded stream (``condition_dropout`` / ``drop_conditions``).
* **Sampling**: DDIM with eps = eps_null + s (eps_cond - eps_null), s = ``guidance_scale``
  (s = 1 is one forward pass with the labels, s = 0 one with the null label). The label of
  each sample comes from ``generation_conditions``: the one rule of
  ``diffattr.diffusion.sample.draw_labels`` (labels in proportion to the coalition's label
  frequencies at fixed per-sample quantiles), the same for retrained, sFT and surrogate
  models. Without conditions (a grid of the full model, ``diffattr measure``) labels follow
  the same rule with equal class frequencies.
* **Pruning** (sFT): channel pruning of the UNet (``prune_family_unet``) traced with class
  labels, so the class embedding's width is pruned together with the time embedding it is
  added to; every label keeps its row.
* **Persistence**: a model directory holds ``unet/`` (``UNet2DModel.from_pretrained(dir,
  subfolder="unet")``; a pruned UNet in the sparsify checkpoint format), ``scheduler/``
  (``DDPMScheduler``) and ``diffattr.json``. diffusers has no class-conditional pixel
  pipeline, so there is no ``model_index.json``: call the UNet with ``class_labels``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffattr.baselines.target import DiffusionTarget
from diffattr.diffusion.architectures import SCHEDULER_CONFIG
from diffattr.diffusion.checkpoint import (
    read_meta,
    read_training_state,
    write_model_dir,
    write_training_state,
)
from diffattr.diffusion.sample import ddim_sample, draw_labels
from diffattr.diffusion.stacked import sample_stacked
from diffattr.diffusion.unet import check_image_size, make_scheduler, make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelFamily, ModelState, TrainingSet
from diffattr.families.settings import ConditionalSettings
from diffattr.families.unconditional import load_unet, prune_family_unet, save_unet
from diffattr.sparsify.pruned_io import is_pruned_unet_dir

#: The null label inside the family (mapped to the model's last class embedding).
NULL = -1


def class_labels(dataset) -> tuple[torch.Tensor, list[str]]:
    """What each image of ``dataset`` shows, (N,) int64, and the names of those classes: a
    CSV's ``label`` column, else the classes of a named dataset. Contributors are never
    labels (a folder without a ``label`` column is a one-line error)."""
    if dataset.semantic_labels is not None:
        return dataset.semantic_labels.long(), list(dataset.semantic_names)
    if dataset.contributors is None:
        return dataset.labels.long(), list(dataset.class_names)
    raise DiffattrError(
        f"the conditional family needs what each image shows, but the {dataset.name} data "
        "only say who contributed it; give a CSV with a 'label' column"
    )


class ConditionalFamily(ModelFamily):
    """A class-conditional pixel UNet trained from scratch; the null model is its
    initialisation."""

    settings: ConditionalSettings

    #: True inside a stacked call whose labels were checked before it: vmap cannot read a
    #: label's value, so ``model_labels`` skips its range check there
    _labels_checked: bool = False

    # ------------------------------------------------------------------ examples

    def training_set(self, dataset, cache_dir: Path | None = None) -> TrainingSet:
        labels, names = class_labels(dataset)
        info = {"space": "pixels", "classes": len(names), "class_names": names}
        return TrainingSet(dataset.images, labels, info)

    def check_data(self, dataset) -> None:
        check_image_size(self.settings.architecture, dataset.image_size)
        class_labels(dataset)

    def condition_keys(self, dataset) -> list[int]:
        return class_labels(dataset)[0].tolist()

    # ------------------------------------------------------------------ models

    def init_model(self, data: TrainingSet, seed: int) -> nn.Module:
        _, channels, size, _ = data.x0.shape
        classes = _classes(data)
        return make_unet(
            self.settings.architecture, size, channels, seed, num_class_embeds=classes + 1
        )

    @property
    def condition_dropout(self) -> float:
        """Share of training labels replaced by the null label (read by the training loop)."""
        return float(self.settings.label_dropout)

    def drop_conditions(self, cond: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """``cond`` with the rows of ``dropped`` set to the null label."""
        return torch.where(dropped, torch.full_like(cond, NULL), cond)

    def predict_noise(self, model: nn.Module, x_t, t, cond: Any) -> torch.Tensor:
        """The plain conditional prediction eps(x_t, t, y); ``cond`` None (or a negative
        label) is the null label."""
        return model(x_t, t, class_labels=self.model_labels(model, cond, len(x_t))).sample

    def guided_noise(
        self, model: nn.Module, x_t, t, cond: Any, scale: float | None = None
    ) -> torch.Tensor:
        """Classifier-free guidance: eps_null + s (eps_cond - eps_null) with s =
        ``scale`` (default: the family's ``guidance_scale``); both predictions in one
        batch."""
        s = float(self.settings.guidance_scale if scale is None else scale)
        if s == 1.0:
            return self.predict_noise(model, x_t, t, cond)
        if s == 0.0 or cond is None:
            return self.predict_noise(model, x_t, t, None)
        n = len(x_t)
        labels = self.model_labels(model, cond, n)
        null = torch.full_like(labels, _null_index(model))
        tt = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim == 1 else t
        out = model(torch.cat([x_t, x_t]), tt, class_labels=torch.cat([labels, null])).sample
        eps_cond, eps_null = out[:n], out[n:]
        return eps_null + s * (eps_cond - eps_null)

    def model_labels(self, model: nn.Module, cond: Any, n: int) -> torch.Tensor:
        """``cond`` as the model's ``class_labels`` (null -> its last class embedding)."""
        device = next(model.parameters()).device
        null = _null_index(model)
        if cond is None:
            return torch.full((n,), null, dtype=torch.long, device=device)
        labels = torch.as_tensor(cond, dtype=torch.long).to(device)
        if labels.shape != (n,):
            raise DiffattrError(f"expected {n} class labels, got shape {tuple(labels.shape)}")
        if not self._labels_checked and int(labels.max()) > null:
            raise DiffattrError(f"class label {int(labels.max())} out of range 0..{null - 1}")
        return torch.where(labels < 0, torch.full_like(labels, null), labels)

    def noise_scheduler(self):
        return make_scheduler(SCHEDULER_CONFIG)

    # ------------------------------------------------------------------ sampling

    def generation_conditions(
        self,
        data: TrainingSet,
        kept: np.ndarray | None,
        num_samples: int,
        *,
        seed: int,
        start: int = 0,
    ) -> torch.Tensor:
        """Labels in proportion to the kept rows' label frequencies at fixed per-sample
        quantiles (``draw_labels``); the empty coalition generates with the null label."""
        labels = data.cond if kept is None else data.cond[torch.as_tensor(np.asarray(kept))]
        counts = np.bincount(labels.numpy(), minlength=_classes(data))
        return draw_labels(counts, num_samples, seed=seed, start=start, null_label=NULL)

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
        if conditions is None:
            classes = _null_index(model)
            conditions = draw_labels(np.ones(classes), num_samples, seed=seed, start=start)
        labels = torch.as_tensor(conditions, dtype=torch.long)
        if labels.shape != (num_samples,):
            raise DiffattrError(
                f"expected one label per sample ({num_samples}), got {tuple(labels.shape)}"
            )
        cfg = model.config
        size = cfg.sample_size[0] if isinstance(cfg.sample_size, list | tuple) else cfg.sample_size
        shape = (int(cfg.in_channels), int(size), int(size))
        was_training = model.training
        model.eval()
        try:
            x = ddim_sample(
                lambda x_t, t, c: self.guided_noise(model, x_t, t, c),
                shape,
                num_samples,
                ddim_steps=ddim_steps,
                seed=seed,
                batch_size=batch_size,
                device=self.device,
                start=start,
                cond=labels,
                progress=progress,
            )
        finally:
            model.train(was_training)
        return x.clamp(-1, 1)

    # ------------------------------------------------------------------ side by side

    @contextlib.contextmanager
    def _checked(self, models: list[nn.Module], labels: list[torch.Tensor | None]):
        """Check every label against every model's classes here, then run the stacked call
        without the per-call range check (``_labels_checked``)."""
        for m in models:
            null = _null_index(m)
            for lab in labels:
                if lab is not None and lab.numel() and int(lab.max()) > null:
                    raise DiffattrError(f"class label {int(lab.max())} out of range 0..{null - 1}")
        self._labels_checked = True
        try:
            yield
        finally:
            self._labels_checked = False

    def fit_stacked(self, models, datas, cfgs, *, emas, optimizer_states):
        with self._checked(models, [d.cond for d in datas]):
            return super().fit_stacked(
                models, datas, cfgs, emas=emas, optimizer_states=optimizer_states
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
        """The models' guided samples in one stacked DDIM loop, model k with its own labels
        (``conditions[k]``; None: every class alike, as ``sample``)."""
        labels = []
        for m, c in zip(models, conditions, strict=True):
            if c is None:
                c = draw_labels(np.ones(_null_index(m)), num_samples, seed=seed)
            lab = torch.as_tensor(c, dtype=torch.long)
            if lab.shape != (num_samples,):
                raise DiffattrError(
                    f"expected one label per sample ({num_samples}), got {tuple(lab.shape)}"
                )
            labels.append(lab)
        with self._checked(models, labels):
            images = sample_stacked(
                models,
                self,
                num_samples,
                seed=seed,
                ddim_steps=ddim_steps,
                batch_size=batch_size,
                device=self.device,
                cond=torch.stack(labels, 1),
                fn=self.guided_noise,
            )
        return [x.clamp(-1, 1) for x in images]

    def baseline_target(
        self, model: nn.Module, data: TrainingSet, *, num_samples: int, seed: int, ddim_steps: int
    ):
        """The guided noise predictor with the training labels and, for the generated
        samples, the labels the full model's job generates with (all data's frequencies)."""

        labels = self.generation_conditions(data, None, num_samples, seed=seed)
        images = self.sample(
            model, num_samples, seed=seed, ddim_steps=ddim_steps, conditions=labels
        )
        return DiffusionTarget(
            model=model,
            scheduler=self.noise_scheduler(),
            x0_train=data.x0,
            x0_gen=images,
            cond_train=data.cond,
            cond_gen=labels,
            eps_fn=self.guided_noise,
            ddim_steps=ddim_steps,
            sample_seed=seed,
            family="conditional",
            device=self.device,
        )

    # ------------------------------------------------------------------ pruning

    def prune(
        self, model: nn.Module, settings: Any, examples: TrainingSet
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Channel pruning with torch-pruning, the class embedding pruned with the time
        embedding (see ``diffattr.sparsify.prune``); Taylor scores use the labels."""
        pruned, report = prune_family_unet(self, model, settings, examples)
        check_class_embedding(pruned)
        return pruned, report

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path, state: ModelState, meta: dict[str, Any]) -> Path:
        def fill(tmp: Path) -> None:
            save_unet(state.model, tmp / "unet")
            self.noise_scheduler().save_pretrained(tmp / "scheduler")
            if state.raw is not None:
                save_unet(state.raw, tmp / "training" / "unet")
            write_training_state(tmp, state.optimizer_state, state.ema_step, state.raw is not None)

        return write_model_dir(directory, fill, meta)

    def is_model_dir(self, directory: str | Path) -> bool:
        d = Path(directory)
        return (d / "unet").is_dir() and (d / "diffattr.json").is_file()

    def load(self, directory: str | Path, training: bool = False) -> ModelState:
        d = Path(directory)
        if not self.is_model_dir(d):
            raise DiffattrError(
                f"{d} is not a diffattr model directory (expected unet/ and diffattr.json; "
                "make one with `diffattr train`)"
            )
        unet = load_unet(d / "unet", self.device)
        if not getattr(unet.config, "num_class_embeds", None):
            raise DiffattrError(f"{d}/unet is not class-conditional (no num_class_embeds)")
        state = ModelState(model=unet, meta=read_meta(d), path=d)
        if training and (d / "training" / "unet").is_dir():
            state.raw = load_unet(d / "training" / "unet", self.device)
            state.optimizer_state, state.ema_step = read_training_state(d, self.device)
        return state

    def check_model(self, directory: str | Path, dataset) -> None:
        d = Path(directory)
        if not self.is_model_dir(d):
            raise DiffattrError(
                f"full model {d} is not a diffattr model directory (unet/ and diffattr.json)"
            )
        path = d / "unet" / ("pruned.json" if is_pruned_unet_dir(d / "unet") else "config.json")
        try:
            cfg = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DiffattrError(f"{path} is unreadable ({e})") from None
        cfg = cfg.get("config", cfg)
        size, channels = cfg.get("sample_size"), cfg.get("in_channels")
        if isinstance(size, list | tuple):
            size = size[0]
        if channels != dataset.channels or size != dataset.image_size:
            raise DiffattrError(
                f"full model {d} generates {channels}-channel {size}x{size} images but the "
                f"data are {dataset.channels}-channel {dataset.image_size}x{dataset.image_size}"
            )
        _, names = class_labels(dataset)
        embeds = cfg.get("num_class_embeds")
        if embeds != len(names) + 1:
            raise DiffattrError(
                f"full model {d} has {embeds} class embeddings but the data have "
                f"{len(names)} classes (+1 null label)"
            )
        recorded = read_meta(d).get("dataset", {}).get("size")
        if recorded is not None and recorded != len(dataset):
            raise DiffattrError(
                f"full model {d} was trained on {recorded} images but [data] has {len(dataset)}"
            )


def check_class_embedding(unet: nn.Module) -> None:
    """The class embedding still has one row per label (and the null label) and the width
    of the time embedding it is added to; a one-line error otherwise."""
    emb = getattr(unet, "class_embedding", None)
    if not isinstance(emb, nn.Embedding):
        raise DiffattrError("the UNet has no class embedding")
    if emb.num_embeddings != unet.config.num_class_embeds:
        raise DiffattrError(
            f"the class embedding has {emb.num_embeddings} rows, the config "
            f"{unet.config.num_class_embeds}"
        )
    width = unet.time_embedding.linear_2.out_features
    if emb.embedding_dim != width:
        raise DiffattrError(
            f"the class embedding is {emb.embedding_dim} wide but the time embedding {width}"
        )


def _null_index(model: nn.Module) -> int:
    embeds = getattr(model.config, "num_class_embeds", None)
    if not embeds:
        raise DiffattrError("the model is not class-conditional (no num_class_embeds)")
    return int(embeds) - 1


def _classes(data: TrainingSet) -> int:
    classes = data.info.get("classes")
    if classes is None:
        if data.cond is None:
            raise DiffattrError("the training set has no class labels")
        classes = int(data.cond.max()) + 1
    return int(classes)
