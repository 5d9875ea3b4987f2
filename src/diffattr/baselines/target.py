"""What a baseline scores: a diffusion model, its noise schedule, its training data and the
images it generated (:class:`DiffusionTarget`), and the DDIM trajectory of those images
(:class:`Trajectory`, recorded with the same per-sample seeds as
:func:`diffattr.diffusion.sample.generate`).

The target is family-agnostic: a pixel UNet, a latent UNet (``x0_*`` are latents, ``images_*``
the decoded pixels) or a text-conditional UNet with LoRA (``cond_*`` the text embeddings,
``params`` the adapter weights) all fit, given an ``eps_fn(model, x_t, t, cond)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils._pytree import tree_flatten

from diffattr.errors import DiffattrError

EpsFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Any], torch.Tensor]


def unet_eps(model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    """Predicted noise of a diffusers UNet: ``model(x_t, t).sample`` (``cond``: None for an
    unconditional model, else passed as ``encoder_hidden_states``)."""
    if cond is None:
        return model(x_t, t).sample
    return model(x_t, t, encoder_hidden_states=cond).sample


@dataclass
class Trajectory:
    """States of a DDIM sampling run.

    ``states[j]`` is ``x_t`` of every sample right before DDIM step ``steps[j]`` (at
    timestep ``timesteps[j]``), shape (J, G, C, H, W); ``final`` the returned samples
    (clamped to [-1, 1]) of shape (G, C, H, W).
    """

    states: torch.Tensor
    timesteps: torch.Tensor
    steps: torch.Tensor
    final: torch.Tensor
    ddim_steps: int
    seed: int
    start: int = 0

    def __post_init__(self) -> None:
        j = self.states.shape[0]
        if self.timesteps.shape != (j,) or self.steps.shape != (j,):
            raise DiffattrError("trajectory: one timestep and step index per recorded state")
        if self.states.ndim != 5 or self.states.shape[1:] != self.final.shape:
            raise DiffattrError(
                f"trajectory states {tuple(self.states.shape)} do not match the final "
                f"samples {tuple(self.final.shape)}"
            )

    def select(self, points: int) -> Trajectory:
        """``points`` recorded steps evenly spaced from the first to the last (all if fewer)."""
        keep = journey_indices(self.states.shape[0], points)
        return Trajectory(
            self.states[keep],
            self.timesteps[keep],
            self.steps[keep],
            self.final,
            self.ddim_steps,
            self.seed,
            self.start,
        )


def journey_indices(total: int, points: int) -> np.ndarray:
    """``min(points, total)`` distinct indices evenly spaced over ``0 .. total-1``."""
    if points >= total:
        return np.arange(total)
    return np.unique(np.round(np.linspace(0, total - 1, points)).astype(np.int64))


@torch.no_grad()
def record_trajectory(
    model: torch.nn.Module,
    num_samples: int,
    *,
    ddim_steps: int,
    seed: int,
    start: int = 0,
    shape: tuple[int, int, int] | None = None,
    eps_fn: EpsFn = unet_eps,
    cond: Any = None,
    keep_steps: Sequence[int] | None = None,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    scheduler_config: dict | None = None,
    clip_sample: bool = True,
) -> Trajectory:
    """Run deterministic DDIM (eta = 0) exactly as :func:`diffattr.diffusion.sample.generate`
    does (sample ``start + i`` starts from ``initial_noise`` of that index) and keep the
    states before the DDIM steps in ``keep_steps`` (default: all).

    ``cond`` (tensor or dict of tensors, first dimension ``num_samples``) is passed to
    ``eps_fn`` per batch; for guidance, put it in ``eps_fn``. The final samples equal
    ``generate(model, num_samples, ddim_steps=..., seed=..., start=...)`` for an
    unconditional UNet. ``scheduler_config``: the family's noise schedule when it is not the
    pixel default (latent models); ``clip_sample``: whether the final state is clamped to
    [-1, 1] as pixel samples are (False for latents).
    """
    from diffattr.diffusion.sample import ddim_run  # loads diffusers: only when recording

    if num_samples <= 0 or ddim_steps <= 0:
        raise DiffattrError("record_trajectory needs num_samples > 0 and ddim_steps > 0")
    if shape is None:
        config = model.config
        shape = (config.in_channels, config.sample_size, config.sample_size)
    keep = np.arange(ddim_steps) if keep_steps is None else np.asarray(sorted(set(keep_steps)))
    if keep.size == 0 or keep.min() < 0 or keep.max() >= ddim_steps:
        raise DiffattrError(f"keep_steps must lie in 0..{ddim_steps - 1}")
    was_training = model.training
    model.eval()
    try:
        run = ddim_run(
            lambda x, t, c: eps_fn(model, x, t, c),
            shape,
            num_samples,
            ddim_steps=ddim_steps,
            seed=seed,
            batch_size=batch_size,
            device=device,
            start=start,
            cond=cond,
            keep_steps=keep,
            scheduler_config=scheduler_config,
        )
    finally:
        model.train(was_training)
    return Trajectory(
        states=run.states,
        timesteps=run.timesteps[run.steps].long().cpu(),
        steps=run.steps,
        final=run.final.clamp(-1, 1) if clip_sample else run.final,
        ddim_steps=ddim_steps,
        seed=seed,
        start=start,
    )


@dataclass
class DiffusionTarget:
    """A trained diffusion model with its training data and generated images.

    Attributes:
        model: the network whose training data is credited (use the weights that
            generated ``x0_gen``, e.g. the EMA weights).
        scheduler: the training noise schedule (diffusers ``DDPMScheduler``; its
            ``alphas_cumprod`` and ``config.num_train_timesteps`` are read).
        x0_train: training examples (N, C, H, W) in model space (pixels in [-1, 1], or
            latents); row ``i`` is sample ``i`` of the players' ``members``.
        x0_gen: the full model's generated examples (G, C, H, W), model space.
        cond_train, cond_gen: per-example conditioning (tensor or dict of tensors with
            first dimension N / G), or None for an unconditional model.
        eps_fn: ``eps_fn(model, x_t, t, cond) -> predicted noise`` (batched).
        params: names of the parameters to differentiate (default: every parameter with
            ``requires_grad``; for a LoRA model that is the adapter).
        trajectory: the DDIM trajectory of ``x0_gen`` (Journey-TRAK); recorded on demand
            from ``ddim_steps``/``sample_seed``/``sample_start`` when None.
        images_train, images_gen: pixel images in [-1, 1] for the similarity baselines and
            the heuristic (default: ``x0_train`` / ``x0_gen``; set them for latent models).
        model_digest: a digest of the weights if the caller has one (hashed here if None).
        family: a label of the model family, part of cache keys (with ``eps_fn``'s name).
        device: where gradients are computed.
        scheduler_config, clip_sample: how the trajectory is recorded when it is not given
            (``record_trajectory``): the family's DDIM schedule if not the pixel default,
            and whether final samples are clamped to [-1, 1] (pixels; not latents).
    """

    model: torch.nn.Module
    scheduler: Any
    x0_train: torch.Tensor
    x0_gen: torch.Tensor
    cond_train: Any = None
    cond_gen: Any = None
    eps_fn: EpsFn = unet_eps
    params: Sequence[str] | None = None
    trajectory: Trajectory | None = None
    ddim_steps: int | None = None
    sample_seed: int | None = None
    sample_start: int = 0
    images_train: torch.Tensor | None = None
    images_gen: torch.Tensor | None = None
    model_digest: str | None = None
    family: str = "unet"
    device: str | torch.device = "cpu"
    scheduler_config: dict | None = None
    clip_sample: bool = True
    _digests: dict[str, str] = field(default_factory=dict, repr=False, init=False)

    def __post_init__(self) -> None:
        self.x0_train = torch.as_tensor(self.x0_train).float()
        self.x0_gen = torch.as_tensor(self.x0_gen).float()
        for label, x in (("x0_train", self.x0_train), ("x0_gen", self.x0_gen)):
            if x.ndim != 4 or x.shape[0] == 0:
                raise DiffattrError(f"{label} must be a non-empty (N, C, H, W) tensor")
        if self.x0_train.shape[1:] != self.x0_gen.shape[1:]:
            raise DiffattrError(
                f"training examples {tuple(self.x0_train.shape[1:])} and generated examples "
                f"{tuple(self.x0_gen.shape[1:])} differ in shape"
            )
        _check_cond(self.cond_train, self.n_train, "cond_train")
        _check_cond(self.cond_gen, self.n_gen, "cond_gen")
        for label, img, n in (
            ("images_train", self.images_train, self.n_train),
            ("images_gen", self.images_gen, self.n_gen),
        ):
            if img is not None and (img.ndim != 4 or img.shape[0] != n):
                raise DiffattrError(f"{label} must be (N, C, H, W) with {n} images")
        if self.trajectory is not None and self.trajectory.final.shape != self.x0_gen.shape:
            raise DiffattrError("the trajectory's final samples do not match x0_gen in shape")
        self.device = torch.device(self.device)

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_unet(
        cls,
        model: torch.nn.Module,
        x0_train: torch.Tensor,
        *,
        num_generated: int | None = None,
        x0_gen: torch.Tensor | None = None,
        ddim_steps: int = 100,
        seed: int = 0,
        scheduler: Any = None,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> DiffusionTarget:
        """Target of an unconditional pixel UNet (the project's ``UNet2DModel``).

        Generated samples are ``x0_gen`` if given (they must come from
        ``generate(model, G, ddim_steps=ddim_steps, seed=seed)``), else generated here.
        """
        # diffusers loads only when a pixel target is built (the scores' modules stay light)
        from diffattr.diffusion.sample import generate
        from diffattr.diffusion.unet import make_scheduler

        if x0_gen is None:
            if not num_generated:
                raise DiffattrError("from_unet needs x0_gen or num_generated > 0")
            x0_gen = generate(model, num_generated, ddim_steps=ddim_steps, seed=seed, device=device)
        return cls(
            model=model,
            scheduler=scheduler if scheduler is not None else make_scheduler(),
            x0_train=x0_train,
            x0_gen=x0_gen,
            ddim_steps=ddim_steps,
            sample_seed=seed,
            device=device,
            **kwargs,
        )

    # ------------------------------------------------------------------ properties

    @property
    def n_train(self) -> int:
        return int(self.x0_train.shape[0])

    @property
    def n_gen(self) -> int:
        return int(self.x0_gen.shape[0])

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def pixels_train(self) -> torch.Tensor:
        return self.images_train if self.images_train is not None else self.x0_train

    def pixels_gen(self) -> torch.Tensor:
        return self.images_gen if self.images_gen is not None else self.x0_gen

    def named_params(self) -> dict[str, torch.nn.Parameter]:
        """The parameters to differentiate, in the model's order."""
        named = dict(self.model.named_parameters())
        if self.params is None:
            chosen = {k: p for k, p in named.items() if p.requires_grad}
        else:
            missing = [k for k in self.params if k not in named]
            if missing:
                raise DiffattrError(f"the model has no parameter {missing[0]!r}")
            wanted = set(self.params)
            chosen = {k: p for k, p in named.items() if k in wanted}
        if not chosen:
            raise DiffattrError("no parameters to differentiate (none requires grad)")
        return chosen

    def get_trajectory(self, points: int | None = None) -> Trajectory:
        """The recorded trajectory (``points`` evenly spaced steps), recorded if needed."""
        if self.trajectory is not None:
            _check_ends_at(self.trajectory, self.x0_gen)
            return self.trajectory if points is None else self.trajectory.select(points)
        if self.ddim_steps is None or self.sample_seed is None:
            raise DiffattrError(
                "Journey-TRAK needs the sampling trajectory: give the target a trajectory, "
                "or ddim_steps and sample_seed of the generated samples"
            )
        keep = None if points is None else journey_indices(self.ddim_steps, points).tolist()
        traj = record_trajectory(
            self.model,
            self.n_gen,
            ddim_steps=self.ddim_steps,
            seed=self.sample_seed,
            start=self.sample_start,
            shape=tuple(self.x0_gen.shape[1:]),
            eps_fn=self.eps_fn,
            cond=self.cond_gen,
            keep_steps=keep,
            device=self.device,
            scheduler_config=self.scheduler_config,
            clip_sample=self.clip_sample,
        )
        _check_ends_at(traj, self.x0_gen)
        return traj

    # ------------------------------------------------------------------ digests

    def digest(self, what: str) -> str:
        """Content digests for cache keys: ``model``, ``train``, ``gen``, ``schedule``,
        ``pixels_train``, ``pixels_gen`` (memoised; the target is treated as immutable)."""
        if what not in self._digests:
            self._digests[what] = self._compute_digest(what)
        return self._digests[what]

    def _compute_digest(self, what: str) -> str:
        if what == "model":
            if self.model_digest is not None:
                return str(self.model_digest)
            h = hashlib.sha256()
            for name, tensor in self.model.state_dict().items():
                _update(h, name, tensor)
            for name in self.named_params():
                h.update(f"grad:{name};".encode())
            return h.hexdigest()[:24]
        h = hashlib.sha256()
        if what == "train":
            _update(h, "x0", self.x0_train)
            _update_tree(h, "cond", self.cond_train)
        elif what == "gen":
            _update(h, "x0", self.x0_gen)
            _update_tree(h, "cond", self.cond_gen)
        elif what == "pixels_train":
            _update(h, "img", self.pixels_train())
        elif what == "pixels_gen":
            _update(h, "img", self.pixels_gen())
        elif what == "schedule":
            _update(h, "alphas_cumprod", torch.as_tensor(self.scheduler.alphas_cumprod))
            h.update(f"T={self.num_train_timesteps};".encode())
        else:
            raise DiffattrError(f"unknown digest {what!r}")
        return h.hexdigest()[:24]

    def function_id(self) -> str:
        fn = self.eps_fn
        return f"{self.family}:{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def _check_ends_at(traj: Trajectory, x0_gen: torch.Tensor, tol: float = 0.05) -> None:
    gap = float((traj.final - x0_gen.cpu()).abs().max())
    if gap > tol:
        raise DiffattrError(
            f"the recorded trajectory does not end at x0_gen (max difference {gap:.3g}): "
            "were the samples generated by this model with these ddim_steps and seed?"
        )


def tensor_digest(x: torch.Tensor) -> str:
    h = hashlib.sha256()
    _update(h, "x", x)
    return h.hexdigest()[:24]


def _update(h: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    if t.dtype == torch.bfloat16:
        t = t.float()
    h.update(t.numpy().tobytes())


def _update_tree(h: Any, name: str, tree: Any) -> None:
    if tree is None:
        h.update(f"{name}:none;".encode())
        return
    leaves, spec = tree_flatten(tree)
    h.update(f"{name}:{spec};".encode())
    for i, leaf in enumerate(leaves):
        _update(h, f"{name}.{i}", torch.as_tensor(leaf))


def _check_cond(cond: Any, n: int, label: str) -> None:
    if cond is None:
        return
    leaves, _ = tree_flatten(cond)
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor) or leaf.shape[0] != n:
            raise DiffattrError(f"{label} must hold tensors with first dimension {n}")
