import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline

from diffattr.config import DataConfig, RunConfig, TrainConfig
from diffattr.data import load_dataset
from diffattr.diffusion.checkpoint import load_model, save_model
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.sample import generate, initial_noise
from diffattr.diffusion.train import antithetic_timesteps, train
from diffattr.diffusion.unet import count_parameters, make_unet
from diffattr.errors import DiffattrError
from diffattr.models import make_null_model, train_full_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig())


def test_presets_build_and_size():
    assert count_parameters(make_unet("tiny", 8, 1)) < 400_000
    assert make_unet("small", 28, 1)(torch.randn(2, 1, 28, 28), 5).sample.shape == (2, 1, 28, 28)
    n = count_parameters(make_unet("ddpm-cifar", 32, 3))
    assert abs(n - 35.7e6) < 0.1e6
    with pytest.raises(DiffattrError, match="divisible"):
        make_unet("small", 10, 1)
    with pytest.raises(DiffattrError, match="unknown preset"):
        make_unet("huge", 8, 1)


def test_same_seed_same_init():
    a, b = make_unet("tiny", 8, 1, seed=3), make_unet("tiny", 8, 1, seed=3)
    c = make_unet("tiny", 8, 1, seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_antithetic_pairs():
    t = antithetic_timesteps(8, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(t[4:], 999 - t[:4])


def test_ema_warmup():
    m = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(m, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    with torch.no_grad():
        m.weight.fill_(1.0)
    ema.model.weight.data.fill_(0.0)
    ema.update(m)
    assert ema.model.weight.item() == pytest.approx(0.9)


def test_short_training_loss_falls(digits):
    unet = make_unet("tiny", 8, 1)
    res = train(unet, digits.images, TrainConfig(steps=150, lr=2e-3), progress=False)
    first, last = np.mean(res.losses[:20]), np.mean(res.losses[-20:])
    assert last < 0.7 * first, (first, last)


def test_resume_matches_uninterrupted(tmp_path, digits):
    cfg = TrainConfig(steps=6, checkpoint_every=3, batch_size=8)
    full = train(make_unet("tiny", 8, 1), digits.images, cfg, progress=False)
    half = cfg.model_copy(update={"steps": 3})
    train(
        make_unet("tiny", 8, 1), digits.images, half, checkpoint_dir=tmp_path / "m", progress=False
    )
    resumed = train(
        make_unet("tiny", 8, 1), digits.images, cfg, checkpoint_dir=tmp_path / "m", progress=False
    )
    for a, b in zip(full.unet.parameters(), resumed.unet.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "m" / "diffattr.json").read_text())["train_step"] == 6


def test_common_random_numbers():
    a = initial_noise(range(3, 6), (1, 8, 8), seed=0)
    b = initial_noise(range(0, 6), (1, 8, 8), seed=0)
    assert torch.equal(a, b[3:])
    assert not torch.equal(initial_noise(range(1), (1, 8, 8), 1), b[:1])
    unet = make_unet("tiny", 8, 1)
    x1 = generate(unet, 5, ddim_steps=4, seed=0, batch_size=2)
    x2 = generate(unet, 5, ddim_steps=4, seed=0, batch_size=5)
    x3 = generate(unet, 5, ddim_steps=4, seed=1, batch_size=5)
    torch.testing.assert_close(x1, x2, atol=1e-5, rtol=0)
    assert not torch.allclose(x1, x3)
    assert x1.min() >= -1 and x1.max() <= 1


def test_ddpm_pipeline_round_trip(tmp_path):
    unet = make_unet("tiny", 8, 1, seed=1)
    save_model(tmp_path / "m", unet, meta={"kind": "test"})
    pipe = DDPMPipeline.from_pretrained(tmp_path / "m")
    out = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert out.shape == (2, 8, 8, 1)
    loaded = load_model(tmp_path / "m")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.unet(x, 10).sample, unet(x, 10).sample)
    with pytest.raises(DiffattrError, match="not a diffattr model"):
        load_model(tmp_path)


def test_train_full_and_null_model(tmp_path, digits):
    cfg = RunConfig().with_overrides(**{"train.steps": 20, "sample.ddim_steps": 5})
    path = train_full_model(cfg, tmp_path / "full", dataset=digits, progress=False, grid_samples=4)
    assert (path / "samples.png").exists()
    meta = load_model(path).meta
    assert meta["kind"] == "full" and meta["train_step"] == 20
    null = load_model(make_null_model(cfg, tmp_path / "null", digits))
    init = make_unet("tiny", 8, 1, seed=cfg.model.seed)
    for a, b in zip(null.unet.parameters(), init.parameters()):
        assert torch.equal(a, b)
    other = cfg.with_overrides(**{"train.lr": 1e-4})
    with pytest.raises(DiffattrError, match="other train settings"):
        train_full_model(other, path, dataset=digits, progress=False)
