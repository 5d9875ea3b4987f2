import torch
from diffusers import AutoencoderKL

from diffattr.families.latent_cache import cached_latents, decode, module_digest


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=2,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=8,
    )


def test_latent_cache_is_reused_and_follows_content(tmp_path):
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    vae = tiny_vae()
    z, rec = cached_latents(vae, images, tmp_path, scaling_factor=0.5)
    assert z.shape == (5, 2, 4, 4) and not rec["cached"]
    again, rec2 = cached_latents(vae, images, tmp_path, scaling_factor=0.5)
    assert rec2["cached"] and torch.equal(z, again)
    # another autoencoder, other images or another scale: a new entry
    other, rec3 = cached_latents(tiny_vae(1), images, tmp_path, scaling_factor=0.5)
    assert not rec3["cached"] and not torch.equal(other, z)
    _, rec4 = cached_latents(vae, images.flip(0), tmp_path, scaling_factor=0.5)
    assert not rec4["cached"]
    _, rec5 = cached_latents(vae, images, tmp_path, scaling_factor=1.0)
    assert not rec5["cached"]
    assert module_digest(vae) == module_digest(tiny_vae()) != module_digest(tiny_vae(1))
    x = decode(vae, z, scaling_factor=0.5)
    assert x.shape == images.shape and x.abs().max() <= 1
