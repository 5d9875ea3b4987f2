"""Local behaviours: one number per generated image, against a reference image.

The reference of generated image i is the full model's image for the same seed (sampling
uses the same initial noise for every model), so these measure how far a counterfactual
model moved from the full one. Pixel metrics work on images mapped from [-1, 1] to [0, 1]
(data range 1), which is what the paper's code meant to do:

* ``mse``: mean squared error per image.
* ``nrmse``: ||reference - image||_2 / ||reference||_2 (scikit-image's "euclidean"
  normalisation, as in the paper's code).
* ``ssim``: structural similarity (Wang et al. 2004, "Image quality assessment: from error
  visibility to structural similarity", eq. 13) with a Gaussian window, K1 = 0.01,
  K2 = 0.03, averaged over the valid positions and channels.
* ``denoising_loss``: a model's epsilon-prediction loss (Ho et al. 2020, eq. 14) on fixed
  images with fixed timesteps and noise.

SSIM window: Wang et al. use an 11 x 11 Gaussian with sigma 1.5. Small images cannot hold
that window (an 8 x 8 digit would leave no valid position), so the window is
``min(11, 2 * (min(H, W) // 4) + 1)`` pixels (5 for 8 px, 9 for 16 px, 11 from 20 px on)
and sigma is scaled with it (``1.5 * size / 11``), keeping the window's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from diffattr.errors import DiffattrError


def _as_unit(images: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    x = x.detach().to("cpu", torch.float64)
    if x.ndim != 4:
        raise DiffattrError(f"{what} must be (N, C, H, W), got shape {tuple(x.shape)}")
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _pair(images, reference) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_unit(images, "images"), _as_unit(reference, "reference images")
    if a.shape != b.shape:
        raise DiffattrError(
            f"images {tuple(a.shape)} and reference images {tuple(b.shape)} differ in shape"
        )
    return a, b


def mse(images, reference) -> np.ndarray:
    """Per-image mean squared error (N,) on the [0, 1] scale."""
    a, b = _pair(images, reference)
    return ((a - b) ** 2).flatten(1).mean(1).numpy()


def nrmse(images, reference) -> np.ndarray:
    """Per-image ||reference - image|| / ||reference|| (N,) on the [0, 1] scale.

    An all-black reference has norm 0; its NRMSE is inf (or 0 if the image equals it).
    """
    a, b = _pair(images, reference)
    num = (a - b).flatten(1).norm(dim=1)
    den = b.flatten(1).norm(dim=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(num.numpy() == 0, 0.0, num.numpy() / den.numpy())
    return out


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(window size, Gaussian sigma) used for images of this size (see module doc)."""
    size = min(11, 2 * (min(height, width) // 4) + 1)
    if size < 3:
        raise DiffattrError(f"SSIM needs images of at least 4 x 4 pixels, got {height} x {width}")
    return size, 1.5 * size / 11


def _gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    images,
    reference,
    data_range: float = 1.0,
    window: int | None = None,
    sigma: float | None = None,
) -> np.ndarray:
    """Per-image SSIM (N,) of Wang et al. (2004) with a Gaussian window (valid positions).

    Args:
        images, reference: (N, C, H, W) in [-1, 1] (tensors or arrays).
        data_range: range of the [0, 1]-mapped pixels (1).
        window, sigma: Gaussian window size and width; default ``ssim_window(H, W)``.
    """
    a, b = _pair(images, reference)
    n, c, h, w = a.shape
    auto_size, auto_sigma = ssim_window(h, w)
    size = window or auto_size
    sigma = sigma or (auto_sigma if window is None else 1.5 * size / 11)
    if size > min(h, w):
        raise DiffattrError(f"SSIM window {size} is larger than the images ({h} x {w})")
    k = _gaussian_kernel(size, sigma)[None, None].repeat(c, 1, 1, 1)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, k, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return smap.flatten(1).mean(1).numpy()


def local_behaviors(images, reference) -> dict[str, np.ndarray]:
    """All pixel-space local behaviours: {"mse", "nrmse", "ssim"} -> (N,) arrays."""
    return {
        "mse": mse(images, reference),
        "nrmse": nrmse(images, reference),
        "ssim": ssim(images, reference),
    }


def default_timesteps(num: int = 10, num_train_timesteps: int = 1000) -> list[int]:
    """``num`` evenly spaced training timesteps from 0 to T - 1."""
    return [int(t) for t in np.linspace(0, num_train_timesteps - 1, num).round()]


@torch.no_grad()
def denoising_loss(
    unet: torch.nn.Module,
    images: torch.Tensor,
    *,
    timesteps: Sequence[int] | None = None,
    num_noises: int = 1,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    scheduler=None,
    predict=None,
    cond=None,
) -> np.ndarray:
    """Per-image epsilon-prediction loss (N,) with fixed timesteps and noise.

    Image i is noised at every timestep in ``timesteps`` (default: 10 evenly spaced over
    0..T-1) with ``num_noises`` Gaussian draws from a generator seeded by (seed, i), so the
    same images give the same noise for every model, batch size and device. The loss is
    ||eps_theta(x_t, t) - eps||^2 averaged over pixels, timesteps and draws (Ho et al. 2020,
    eq. 14). Images are in the model's training space: pixels in [-1, 1], or latents.

    ``scheduler``: the training noise schedule (default: the pixel models' linear one);
    ``predict(unet, x_t, t, cond)``: the noise predictor (default ``unet(x_t, t).sample``),
    e.g. a family's ``predict_noise``; ``cond``: image i's condition in row i (a tensor or
    None).
    """
    # diffusers loads only for this model-based behavior, not for the pixel metrics
    from diffattr.diffusion.sample import sample_seed
    from diffattr.diffusion.unet import make_scheduler

    x0 = torch.as_tensor(images, dtype=torch.float32).cpu()
    if x0.ndim != 4 or x0.shape[0] == 0:
        raise DiffattrError(f"images must be (N, C, H, W) with N >= 1, got {tuple(x0.shape)}")
    if num_noises < 1:
        raise DiffattrError(f"num_noises must be >= 1, got {num_noises}")
    scheduler = scheduler if scheduler is not None else make_scheduler()
    T = scheduler.config.num_train_timesteps
    ts = list(timesteps) if timesteps is not None else default_timesteps(10, T)
    if not ts or any(not 0 <= int(t) < T for t in ts):
        raise DiffattrError(f"timesteps must be a non-empty list of integers in 0..{T - 1}")
    n, reps = x0.shape[0], len(ts) * num_noises
    t_rows = torch.tensor(ts, dtype=torch.long).repeat_interleave(num_noises)
    per_batch = max(1, batch_size // reps)  # images per forward pass
    losses = torch.empty(n, dtype=torch.float64)
    was_training = unet.training
    unet.eval()
    try:
        for s in range(0, n, per_batch):
            idx = range(s, min(s + per_batch, n))
            eps = torch.cat(
                [
                    torch.randn(
                        (reps, *x0.shape[1:]),
                        generator=torch.Generator().manual_seed(sample_seed(seed, i)),
                    )
                    for i in idx
                ]
            )
            x = x0[s : s + len(idx)].repeat_interleave(reps, dim=0)
            t = t_rows.repeat(len(idx))
            xt = scheduler.add_noise(x, eps, t)
            if predict is None:
                pred = unet(xt.to(device), t.to(device)).sample
            else:
                c = None
                if cond is not None:
                    c = torch.as_tensor(cond)[s : s + len(idx)].repeat_interleave(reps, dim=0)
                    c = c.to(device)
                pred = predict(unet, xt.to(device), t.to(device), c)
            pred = pred.float().cpu()
            per_row = ((pred - eps) ** 2).flatten(1).mean(1).double()
            losses[s : s + len(idx)] = per_row.view(len(idx), reps).mean(1)
    finally:
        unet.train(was_training)
    return losses.numpy()
