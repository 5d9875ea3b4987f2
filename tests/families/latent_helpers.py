"""Tiny random-weight autoencoders and latent UNets assembled in the tests (no downloads)."""

from __future__ import annotations

import torch


def tiny_autoencoder(kind: str = "kl", channels: int = 1, latent: int = 2, seed: int = 0):
    """A 2-level AutoencoderKL or VQModel (8 px -> 4 px latents), random weights."""
    from diffusers import AutoencoderKL, VQModel

    common = dict(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 8),
        latent_channels=latent,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=8,
    )
    torch.manual_seed(seed)
    if kind == "vq":
        return VQModel(**common, num_vq_embeddings=16)
    return AutoencoderKL(**common, mid_block_add_attention=False, scaling_factor=0.5)


def save_autoencoder(path, **kw):
    """Saved with ``save_pretrained``; a VQModel's config.json then loses ``scaling_factor``,
    as the hub's CompVis LDM VQ-VAE configs have none."""
    import json

    tiny_autoencoder(**kw).save_pretrained(path, safe_serialization=True)
    if kw.get("kind") == "vq":
        cfg = json.loads((path / "config.json").read_text())
        cfg.pop("scaling_factor", None)
        (path / "config.json").write_text(json.dumps(cfg))
    return path


def latent_cfg(autoencoder, **extra):
    """A tiny latent run on 4 digit classes (4 players): 20 training steps, 16 samples with
    4 DDIM steps, sFT with head-grouped pruning at 0.5."""
    from diffattr.config import RunConfig

    layer = {
        "data": {"name": "digits", "classes": [0, 1, 2, 3]},
        "family": {"name": "latent", "autoencoder": str(autoencoder)},
        "train.steps": 20,
        "train.batch_size": 16,
        "train.checkpoint_every": 20,
        "sample.num_samples": 16,
        "sample.ddim_steps": 4,
        "sample.batch_size": 16,
        "attribution.subsets": 10,
        "method": {"name": "sft", "ratio": 0.5, "finetune_steps": 4, "steps": 3},
        "behaviors.measure": ["diversity-entropy", "fid"],
        "behaviors.features": "autoencoder",
    }
    cfg = RunConfig().with_overrides(**layer)
    return cfg.with_overrides(**extra) if extra else cfg
