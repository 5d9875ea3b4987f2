"""DAS, the Diffusion Attribution Score (Lin, Tao, Dong & Xu, "Diffusion Attribution Score:
Evaluating Training Data Influence in Diffusion Models", ICLR 2025, arXiv 2410.18639).

DAS asks how much the full model's output for a generated image changes when training
image i is left out. Linearise the noise predictor around the trained weights,
``eps(x; theta) ~ eps(x; theta*) + J(x) (theta - theta*)``; then the least-squares training
objective ``sum_j ||eps(x_j) - eps_j||^2`` without image i moves the weights by one Newton
step ``(J^T J)^-1 J_i^T r_i`` (divided by ``1 - h_i`` for the exact leave-one-out step of a
linear fit, ``h_i`` the leverage), and the generated image's output by ``J_g`` times that.
As in the authors' code, the Jacobians are compressed to the gradient of one scalar output
per probe -- the mean predicted noise -- averaged over fixed timesteps and randomly
projected (traker's projectors; the same features as :mod:`diffattr.baselines.gradients`
computes for TRAK), ``r_i`` to the root mean squared residual of image i over the same
probes, and ``J^T J`` is damped::

    DAS(g, i) = psi_g (Phi^T Phi + lambda I)^-1 phi_i r_i  [ / (1 - h_i) ]

Differences from the public code: the residual here is the root mean squared error of the
probes the gradients use (the code takes 1,000 timesteps and normalises the per-timestep
errors to unit length before averaging, which keeps only their shape over time), and the
kernel is solved in float64 without rescaling its inverse (a rescaling changes no ranking).
Larger values credit image i more for the generated image, as for the other baselines.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from typing import Any

import torch
from torch.utils._pytree import tree_map

from diffattr.baselines.api import LocalScores, _summary, gradient_features
from diffattr.baselines.cache import FeatureCache, stable_key, training_probe_fields
from diffattr.baselines.gradients import fixed_timesteps, noise_probes
from diffattr.baselines.scores import kernel_features
from diffattr.baselines.settings import DASSettings
from diffattr.baselines.target import DiffusionTarget
from diffattr.errors import DiffattrError


def with_layers(target: DiffusionTarget, layers: list[str] | None) -> DiffusionTarget:
    """``target`` differentiating only the parameters whose names match one of the fnmatch
    patterns ``layers`` (among those it differentiates already); itself when None."""
    if layers is None:
        return target
    names = [n for n in target.named_params() if any(fnmatch.fnmatch(n, p) for p in layers)]
    if not names:
        raise DiffattrError(
            f"layers {layers} match none of the model's trainable parameters (e.g. "
            f"{', '.join(list(target.named_params())[:3])})"
        )
    return dataclasses.replace(target, params=names)


@torch.no_grad()
def residuals(
    target: DiffusionTarget, timesteps: int, seed: int, shared_noise: bool, batch_size: int = 32
) -> torch.Tensor:
    """Root mean squared error of each training example's predicted noise over its probes
    (the probes of the gradient features: ``noise_probes`` with role ``train``), (N,)."""
    ts = fixed_timesteps(timesteps, target.num_train_timesteps)
    source = noise_probes(
        target.x0_train, target.cond_train, target.scheduler, ts, seed, "train", shared_noise
    )
    model = target.model
    was_training = model.training
    model.eval()
    device = torch.device(target.device)
    out = torch.empty(source.n, dtype=torch.float64)
    per_call = max(1, batch_size // source.k)
    try:
        for lo in range(0, source.n, per_call):
            hi = min(lo + per_call, source.n)
            b = source.get(lo, hi)
            k = b.x_t.shape[1]
            x_t = b.x_t.reshape(-1, *b.x_t.shape[2:]).to(device)
            t = b.t.reshape(-1).to(device)
            cond = None
            if b.cond is not None:
                cond = tree_map(lambda v, k=k: v.repeat_interleave(k, dim=0).to(device), b.cond)
            eps = target.eps_fn(model, x_t, t, cond).float().cpu()
            err = (eps - b.target.reshape(eps.shape)).pow(2).flatten(1).mean(1)
            out[lo:hi] = err.double().view(hi - lo, k).mean(1).sqrt()
    finally:
        model.train(was_training)
    if not torch.isfinite(out).all():
        raise DiffattrError("non-finite residuals of the training images (diverged model?)")
    return out


def _residuals_cached(s: DASSettings, target, cache_dir) -> tuple[torch.Tensor, dict[str, Any]]:
    fields = {"kind": "das-residuals", **training_probe_fields(target, s)}
    key = stable_key(fields)
    cache = FeatureCache(cache_dir, "das-residuals")
    hit = cache.load(key)
    if hit is not None:
        r, record = hit
        return r.reshape(-1).double(), dict(record, cache="hit")
    t0 = time.perf_counter()
    # float32 as cached, so a hit returns the very same values
    r = residuals(target, s.timesteps, s.seed, s.shared_noise, s.batch_size).float().double()
    record = {"fields": fields, "seconds": time.perf_counter() - t0}
    cache.save(key, r[:, None].float(), record)
    return r, dict(record, key=key, cache="miss" if cache.enabled else "off")


def das_local(
    s: DASSettings,
    target: DiffusionTarget,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
):
    """DAS scores (G, N) of every generated example against every training example, as
    :class:`diffattr.baselines.api.LocalScores`."""

    target = with_layers(target, s.layers)
    train, r_train = gradient_features(s, target, "train", cache_dir, progress)
    gen, r_gen = gradient_features(s, target, "gen", cache_dir, progress)
    resid, r_res = _residuals_cached(s, target, cache_dir)
    t0 = time.perf_counter()
    device = target.device if torch.device(target.device).type == "cuda" else "cpu"
    phi = train.to(device).double()
    kinv_phi = kernel_features(phi, s.regularization)  # (k, N)
    scale = resid.to(device)
    leverage = None
    if s.leverage:
        leverage = (phi * kinv_phi.T).sum(1)
        if not bool((leverage < 1).all()):
            raise DiffattrError(
                "DAS leverage: a training image has leverage >= 1 (raise regularization or "
                "set leverage = false)"
            )
        scale = scale / (1 - leverage)
    scores = (gen.to(device).double() @ kinv_phi) * scale[None, :]
    scores = scores.cpu().numpy()
    featurize = float(r_train["seconds"]) + float(r_gen["seconds"]) + float(r_res["seconds"])
    details = {
        "score": "das",
        "output": s.output_function,
        "layers": s.layers,
        "leverage": s.leverage,
        "train_features": _summary(r_train),
        "gen_features": _summary(r_gen),
        "residual_rms_mean": float(resid.mean()),
    }
    if leverage is not None:
        details["leverage_max"] = float(leverage.max())
    cache = {"train": r_train["cache"], "gen": r_gen["cache"], "residuals": r_res["cache"]}
    return LocalScores(scores, featurize, time.perf_counter() - t0, cache, details)
