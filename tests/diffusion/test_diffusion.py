import json

import numpy as np
import pytest
import torch

from diffattr.config import TrainConfig
from diffattr.data import load_dataset
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.sample import generate, initial_noise
from diffattr.diffusion.train import antithetic_timesteps, train
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import FamilyCheckpoint, TrainingSet
from diffattr.families.settings import UnconditionalSettings
from diffattr.torchutils import adam, count_parameters


@pytest.fixture(scope="module")
def digits():
    return TrainingSet(load_dataset("digits").images)


@pytest.fixture(scope="module")
def family():
    return UnconditionalSettings().build("cpu")


def test_architectures_build_and_size():
    assert count_parameters(make_unet("tiny", 8, 1)) < 400_000
    assert make_unet("small", 28, 1)(torch.randn(2, 1, 28, 28), 5).sample.shape == (2, 1, 28, 28)
    n = count_parameters(make_unet("ddpm-cifar", 32, 3))
    assert abs(n - 35.7e6) < 0.1e6
    with pytest.raises(DiffattrError, match="divisible"):
        make_unet("small", 10, 1)
    with pytest.raises(DiffattrError, match="unknown UNet architecture"):
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
    with pytest.raises(ValueError, match="EMA of 1 parameters updated from 2"):
        ema.update(torch.nn.Linear(1, 1))


def test_fused_adam_is_torchs_adam_to_float_rounding():
    """``adam`` fuses the update on a CPU; after 30 steps of a UNet it matches the
    per-parameter reference implementation."""
    torch.manual_seed(0)
    nets = [make_unet("tiny", 8, 1, seed=0) for _ in range(2)]
    fused = adam(nets[0].parameters(), 1e-3)
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-3, foreach=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x, t = torch.randn(8, 1, 8, 8), torch.randint(0, 1000, (8,))
    for _ in range(30):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            net(x, t).sample.square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_short_training_loss_falls(digits, family):
    unet = make_unet("tiny", 8, 1)
    cfg = TrainConfig(steps=150, lr=2e-3)
    train(unet, digits, cfg, denoiser=family, progress=False)
    res = train(unet, digits, cfg, denoiser=family, progress=False)
    first, last = np.mean(res.losses[:20]), np.mean(res.losses[-20:])
    assert last < 0.7 * first, (first, last)


def test_resume_matches_uninterrupted(tmp_path, digits, family):
    cfg = TrainConfig(steps=6, checkpoint_every=3, batch_size=8)
    full = train(make_unet("tiny", 8, 1), digits, cfg, denoiser=family, progress=False)
    half = cfg.model_copy(update={"steps": 3})
    ckpt = FamilyCheckpoint(family, tmp_path / "m", {"kind": "test"})
    train(make_unet("tiny", 8, 1), digits, half, denoiser=family, checkpoint=ckpt, progress=False)
    resumed = train(
        make_unet("tiny", 8, 1), digits, cfg, denoiser=family, checkpoint=ckpt, progress=False
    )
    for a, b in zip(full.unet.parameters(), resumed.unet.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "m" / "diffattr.json").read_text())["train_step"] == 6


def test_conditions_are_indexed_with_their_examples(family):
    """A denoiser that reads its condition sees, for every drawn example, that example's."""
    x0 = torch.arange(6, dtype=torch.float32).reshape(6, 1, 1, 1).repeat(1, 1, 8, 8) / 6
    cond = torch.arange(6, dtype=torch.float32)
    seen = []

    class Probe:
        def predict_noise(self, model, x_t, t, c):
            seen.append(c.clone())
            return model(x_t, t).sample

        def noise_scheduler(self):
            return family.noise_scheduler()

        def trainable_parameters(self, model):
            return list(model.parameters())

    unet = make_unet("tiny", 8, 1)
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-9)
    # same draws as an unconditioned run: the conditions follow the drawn indices
    gen = torch.Generator().manual_seed(cfg.seed)
    first_idx = torch.randint(0, 6, (4,), generator=gen)
    train(unet, TrainingSet(x0, cond), cfg, denoiser=Probe(), progress=False)
    assert torch.equal(seen[0], cond[first_idx])


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


def test_one_ddim_loop_keeps_states_and_slices_conditions():
    """``ddim_run`` is the one loop: the kept state of step 0 is sample i's own noise,
    a later window (start) reproduces the same samples, and conditions reach eps_fn
    row-sliced with their samples, whatever the batch size."""
    from diffattr.diffusion.sample import ddim_run

    seen = []

    def eps(x, t, c):
        seen.append(c["label"].clone())
        return torch.zeros_like(x) + c["label"].float()[:, None, None, None] * 1e-3

    cond = {"label": torch.arange(6)}
    run = ddim_run(
        eps, (1, 4, 4), 6, ddim_steps=3, seed=4, batch_size=4, cond=cond, keep_steps=[0, 2]
    )
    assert run.states.shape == (2, 6, 1, 4, 4) and run.steps.tolist() == [0, 2]
    assert torch.equal(run.states[0], initial_noise(range(6), (1, 4, 4), seed=4))
    assert torch.equal(torch.cat(seen[:1] + seen[3:4]), torch.arange(6))  # first step per batch
    tail = ddim_run(
        eps,
        (1, 4, 4),
        3,
        ddim_steps=3,
        seed=4,
        batch_size=2,
        start=3,
        cond={"label": torch.arange(3, 6)},
    )
    torch.testing.assert_close(tail.final, run.final[3:], atol=1e-6, rtol=0)
    with pytest.raises(DiffattrError, match="keep_steps"):
        ddim_run(eps, (1, 4, 4), 2, ddim_steps=3, cond=cond, keep_steps=[3])
