"""TRAK on a model trained on a set dominated by copies of one image credits those copies
for generated samples that reproduce the image.

A small UNet is trained for a few hundred steps on 16 copies of image A and 8 other images;
the samples it generates that are close to A are attributed. TRAK's kernel splits the
credit among identical training examples (each copy gets about 1/16 of it), so the test
checks the contributor that owns the copies (the paper's sum aggregation) and the per-image
ranking without the kernel (gradient similarity)."""

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from diffattr.baselines import DiffusionTarget, attribute, local_scores
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_scheduler

COPIES, OTHERS = 16, 8


def _patterns(n: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, 1, 4, 4, generator=g)
    return torch.nn.functional.interpolate(z, size=8, mode="bilinear").sign() * 0.9


@pytest.fixture(scope="module")
def memorized():
    g = torch.Generator().manual_seed(0)
    a = _patterns(1, g)
    x = torch.cat([a.repeat(COPIES, 1, 1, 1), _patterns(OTHERS, g)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    sched = make_scheduler()
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    for _ in range(200):
        idx = torch.randint(0, len(x), (32,), generator=g)
        t = torch.randint(0, 1000, (32,), generator=g)
        noise = torch.randn(32, 1, 8, 8, generator=g)
        loss = ((model(sched.add_noise(x[idx], noise, t), t).sample - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen = generate(model, 16, ddim_steps=10, seed=0)
    close = ((gen - a) ** 2).flatten(1).mean(1) < 0.1
    assert close.any(), "the trained model reproduces none of its duplicated image"
    return DiffusionTarget(model, sched, x, gen[close])


def test_trak_credits_the_owner_of_the_duplicated_image(memorized):
    players = [np.arange(COPIES)] + [np.array([COPIES + i]) for i in range(OTHERS)]
    settings = {"name": "trak", "projection_dim": 64, "timesteps": 8}
    (attr,) = attribute(settings, memorized, players)
    assert attr.settings["aggregation"] == "sum"
    assert int(attr.ranking()[0]) == 0, attr.values
    per_image = local_scores(settings, memorized).scores.mean(0)
    copies = per_image[:COPIES]
    assert np.allclose(copies, copies[0]) and copies[0] > 0  # identical features, equal credit


def test_gradient_similarity_ranks_every_copy_above_the_rest(memorized):
    scores = local_scores(
        {"name": "gradient-similarity", "projection_dim": 64, "timesteps": 8}, memorized
    ).scores.mean(0)
    assert scores[:COPIES].min() > scores[COPIES:].max(), scores
