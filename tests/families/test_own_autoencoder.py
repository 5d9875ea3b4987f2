"""The package's own AutoencoderKL (``autoencoder = "train"``): deterministic, cached by
content under the cache folder, scaled to unit-variance latents."""

import pytest
import torch

from diffattr.errors import DiffattrError
from diffattr.families.settings import OwnAutoencoderSettings
from diffattr.families.vae import make_autoencoder, own_autoencoder, train_autoencoder

RECIPE = OwnAutoencoderSettings(steps=4, width=8, downsample=1, latent_channels=2, batch_size=8)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(24, 1, 8, 8, generator=g) * 2 - 1


def test_training_is_deterministic_and_scales_the_latents(images):
    a, report = train_autoencoder(RECIPE, images)
    b, _ = train_autoencoder(RECIPE, images)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    assert report["latent_shape"] == [2, 4, 4] and report["steps"] == 4
    with torch.no_grad():
        z = a.encode(images).latent_dist.mean
    assert a.config.scaling_factor == pytest.approx(1 / float(z.std()), rel=1e-5)
    assert not any(p.requires_grad for p in a.parameters())
    # training moved the weights away from the seeded initialisation
    init = make_autoencoder(RECIPE, 1, 8)
    assert not torch.equal(init.encoder.conv_in.weight, a.encoder.conv_in.weight)


def test_cached_by_content(tmp_path, images):
    ae, path, rec = own_autoencoder(RECIPE, images, tmp_path)
    assert not rec["cached"] and path.parent == tmp_path / "autoencoders"
    assert (path / "config.json").is_file() and (path / "diffattr-autoencoder.json").is_file()
    again, path2, rec2 = own_autoencoder(RECIPE, images, tmp_path)
    assert rec2["cached"] and path2 == path and rec2["report"] == rec["report"]
    for x, y in zip(ae.state_dict().values(), again.state_dict().values()):
        assert torch.equal(x, y)
    # other images or another recipe: another entry
    _, p3, r3 = own_autoencoder(RECIPE, images.flip(0), tmp_path)
    _, p4, r4 = own_autoencoder(RECIPE.model_copy(update={"seed": 1}), images, tmp_path)
    assert not r3["cached"] and not r4["cached"] and len({path, p3, p4}) == 3
    # a broken entry is retrained, not trusted
    (path / "diffusion_pytorch_model.safetensors").write_bytes(b"broken")
    _, _, rec5 = own_autoencoder(RECIPE, images, tmp_path)
    assert not rec5["cached"]


def test_size_must_be_divisible(images):
    with pytest.raises(DiffattrError, match="divisible by 4"):
        make_autoencoder(RECIPE.model_copy(update={"downsample": 2}), 1, 6)
