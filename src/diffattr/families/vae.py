"""The latent family's autoencoders: a user's diffusers ``AutoencoderKL`` / ``VQModel``
directory (found, read, loaded frozen, compared), or the package's own -- a small
diffusers ``AutoencoderKL`` trained on the run's images, so the latent family has an
embedded demo with real (not random) latents.

``autoencoder = "train"`` in ``[family]`` trains it once on the run's training images
(the ``ae_*`` settings: latent channels, halvings of the side, width, steps, batch,
learning rate, KL weight, seed) and caches it by content under the run's cache folder::

    <cache_dir>/autoencoders/<key>/config.json, diffusion_pytorch_model.safetensors,
                                  diffattr-autoencoder.json (what the key hashes)

The key hashes the images' bytes, the recipe and the code version, so other images or
another recipe give another autoencoder, never a stale one. Training is deterministic for
a given machine and thread count: a seeded initialisation, seeded batches and posterior
noise, Adam with a cosine decay. The loss is the pixel MSE of the reconstruction of a
posterior sample plus ``kl_weight`` times the KL divergence to N(0, I) per pixel (the
VAE bound with a small KL weight, as latent-diffusion autoencoders are trained, without
the perceptual and adversarial terms that only pay at large sizes). After training, the
``scaling_factor`` written into its config is 1 / std of the training latents (posterior
means), so the denoiser sees unit-variance latents (Rombach et al. 2022, Sec. 4.3.2).

Note: like the paper's pretrained VQ-VAE of CelebA-HQ, this autoencoder has seen every
contributor's images; it is part of the frozen base, not of what is attributed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.errors import DiffattrError
from diffattr.families.latent_cache import tensor_digest
from diffattr.families.settings import OwnAutoencoderSettings
from diffattr.fileio import content_key, file_sha256
from diffattr.torchutils import count_parameters

AUTOENCODER_CLASSES = ("AutoencoderKL", "VQModel")
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def autoencoder_dir(path: str | Path, where: str = "family.autoencoder") -> Path:
    """The directory of a diffusers autoencoder named by ``path``: the autoencoder's own
    directory (``config.json`` of an ``AutoencoderKL`` / ``VQModel``) or a pipeline directory
    holding one in ``vqvae/`` or ``vae/``; anything else is a one-line error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DiffattrError(
            f"{where}: {p} not found (give a local diffusers AutoencoderKL or VQModel "
            "directory, or 'train' for the package's own)"
        )
    if not p.is_dir():
        raise DiffattrError(f"{where}: {p} is a file, not an autoencoder directory")
    if (p / "config.json").is_file():
        return p
    for sub in ("vqvae", "vae"):
        if (p / sub / "config.json").is_file():
            return p / sub
    raise DiffattrError(
        f"{where}: no autoencoder in {p} (expected config.json of an AutoencoderKL or VQModel, "
        "or a pipeline directory with vqvae/ or vae/)"
    )


def read_autoencoder_config(directory: Path, where: str = "family.autoencoder") -> dict:
    path = directory / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffattrError(f"{where}: {path} is unreadable ({e})") from None
    cls = cfg.get("_class_name") if isinstance(cfg, dict) else None
    if cls not in AUTOENCODER_CLASSES:
        raise DiffattrError(
            f"{where}: {directory} holds a {cls or 'model of unknown class'}, not an "
            "AutoencoderKL or VQModel"
        )
    if not any((directory / w).is_file() for w in WEIGHT_FILES):
        raise DiffattrError(f"{where}: {directory} has no weights ({' or '.join(WEIGHT_FILES)})")
    return cfg


def load_autoencoder(directory: Path, where: str = "family.autoencoder") -> nn.Module:
    """A frozen diffusers autoencoder (eval mode, no gradients) from a local directory."""
    cls = read_autoencoder_config(directory, where)["_class_name"]
    import diffusers

    try:
        ae = getattr(diffusers, cls).from_pretrained(directory)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiffattrError(f"{where}: cannot load the {cls} in {directory} ({first})") from None
    return ae.eval().requires_grad_(False)


def latent_factor(config: dict) -> int:
    """How many times an AutoencoderKL / VQModel shrinks the image side."""
    return 2 ** (len(config.get("block_out_channels") or (64,)) - 1)


def check_same_autoencoder(theirs: Path, ours: Path, where: str) -> None:
    """The full model's autoencoder must be the run's: same weights (bytes, else tensors)."""
    if theirs.resolve() == ours.resolve():
        return
    for name in WEIGHT_FILES:
        a, b = theirs / name, ours / name
        if a.is_file() and b.is_file() and a.stat().st_size == b.stat().st_size:
            if file_sha256(a) == file_sha256(b):
                return
    sa = load_autoencoder(theirs, where).state_dict()
    sb = load_autoencoder(ours).state_dict()
    if sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa):
        return
    raise DiffattrError(
        f"{where} decodes with another autoencoder than family.autoencoder ({ours}); set "
        f"family.autoencoder = '{theirs}'"
    )


# --------------------------------------------------------------------------- the package's own

#: Version of the training procedure (part of every cache key).
VERSION = 1
RECORD = "diffattr-autoencoder.json"


def make_autoencoder(recipe: OwnAutoencoderSettings, channels: int, image_size: int) -> nn.Module:
    """A freshly initialised ``AutoencoderKL`` of the recipe (seeded, global RNG untouched)."""
    from diffusers import AutoencoderKL

    check_image_size(recipe, image_size)
    levels = recipe.downsample + 1
    widths = tuple(recipe.width * min(2**i, 2) for i in range(levels))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return AutoencoderKL(
            in_channels=channels,
            out_channels=channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=widths,
            latent_channels=recipe.latent_channels,
            norm_num_groups=_groups(recipe.width),
            layers_per_block=1,
            sample_size=image_size,
            scaling_factor=1.0,
            mid_block_add_attention=False,  # at these sizes it costs 3x a step, gains nothing
        )


def _groups(width: int) -> int:
    return max(d for d in (8, 4, 2, 1) if width % d == 0)


def check_image_size(recipe: OwnAutoencoderSettings, image_size: int) -> None:
    factor = 2**recipe.downsample
    if image_size % factor:
        raise DiffattrError(
            f"the package's autoencoder halves the image {recipe.downsample} times; image size "
            f"{image_size} must be divisible by {factor} (set [data] image_size or "
            "family.ae_downsample)"
        )


def cache_key(recipe: OwnAutoencoderSettings, images: torch.Tensor) -> dict[str, Any]:
    record = {
        "version": VERSION,
        "recipe": recipe.model_dump(mode="json"),
        "images": tensor_digest(images),
        "shape": list(images.shape[1:]),
    }
    record["key"] = content_key(record, length=20)
    return record


def train_autoencoder(
    recipe: OwnAutoencoderSettings,
    images: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the recipe's ``AutoencoderKL`` on ``images`` (N, C, H, W) in [-1, 1].

    Returns the trained model (eval mode, no gradients, ``scaling_factor`` in its config)
    and a JSON-able report (losses, seconds, latent std).
    """
    from tqdm.auto import tqdm

    if images.ndim != 4 or len(images) == 0:
        raise DiffattrError("the autoencoder needs a non-empty (N, C, H, W) image tensor")
    device = torch.device(device)
    ae = make_autoencoder(recipe, int(images.shape[1]), int(images.shape[-1])).to(device)
    ae.train()
    opt = torch.optim.Adam(ae.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, recipe.steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    x_all = images.to(device, torch.float32)
    per_pixel = float(images[0].numel())
    t0 = time.perf_counter()
    mse_hist: list[float] = []
    kl_hist: list[float] = []
    bar = tqdm(range(recipe.steps), desc="train autoencoder", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(0, len(x_all), (recipe.batch_size,), generator=gen)
        x = x_all[idx.to(device)]
        post = ae.encode(x).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(device)
        rec = ae.decode(post.mean + post.std * eps).sample
        mse = (rec - x).square().mean()
        kl = post.kl().mean() / per_pixel
        loss = mse + recipe.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt.step()
        sched.step()
        mse_hist.append(float(mse.detach()))
        kl_hist.append(float(kl.detach()))
    seconds = time.perf_counter() - t0
    ae.eval().requires_grad_(False)
    with torch.no_grad():
        starts = range(0, len(x_all), 256)
        means = torch.cat([ae.encode(x_all[s : s + 256]).latent_dist.mean.cpu() for s in starts])
        rec = torch.cat(
            [
                ae.decode(means[s : s + 256].to(device)).sample.clamp(-1, 1).cpu()
                for s in range(0, len(means), 256)
            ]
        )
    std = float(means.std())
    if not torch.isfinite(means).all() or std <= 0:
        raise DiffattrError("the autoencoder's training diverged (non-finite latents)")
    ae.register_to_config(scaling_factor=1.0 / std)
    tail = max(1, min(50, len(mse_hist)))
    report = {
        "seconds": round(seconds, 3),
        "steps": recipe.steps,
        "mse_last": sum(mse_hist[-tail:]) / tail,
        "kl_last": sum(kl_hist[-tail:]) / tail,
        "reconstruction_mse": float((rec - images.float().cpu()).square().mean()),
        "latent_std": std,
        "latent_shape": list(means.shape[1:]),
        "parameters": count_parameters(ae),
    }
    return ae, report


def own_autoencoder(
    recipe: OwnAutoencoderSettings,
    images: torch.Tensor,
    cache_dir: str | Path | None,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, Path | None, dict[str, Any]]:
    """The recipe's autoencoder for ``images``: from the content-keyed cache under
    ``cache_dir`` if there, else trained (and stored there). Returns (model, its directory
    or None without a cache, the record: key, report, cached)."""
    from diffusers import AutoencoderKL

    record = cache_key(recipe, images)
    if cache_dir is not None:
        target = Path(cache_dir) / "autoencoders" / record["key"]
        meta = target / RECORD
        if meta.is_file():
            try:
                ae = AutoencoderKL.from_pretrained(target).to(device).eval().requires_grad_(False)
                saved = json.loads(meta.read_text())
                return ae, target, {**saved, "cached": True}
            except Exception:  # noqa: BLE001 - a broken entry is retrained, not trusted
                shutil.rmtree(target, ignore_errors=True)
    ae, report = train_autoencoder(recipe, images, device=device, progress=progress)
    record = {**record, "report": report}
    if cache_dir is None:
        return ae, None, {**record, "cached": False}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        ae.save_pretrained(tmp, safe_serialization=True)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
        try:
            os.replace(tmp, target)
        except OSError:  # another process stored the same key first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ae, target, {**record, "cached": False}
