"""Per-example gradients (vmap and loop), probes, projection and the DDIM trajectory."""

import numpy as np
import pytest
import torch

import diffattr.baselines.gradients as gradients
from diffattr.baselines.gradients import (
    PerExampleGradients,
    Projector,
    basic_block_size,
    fixed_timesteps,
    journey_probes,
    noise_probes,
    project_gradients,
)
from diffattr.baselines.target import DiffusionTarget, record_trajectory, unet_eps
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_scheduler, make_unet
from diffattr.errors import DiffattrError


@pytest.fixture(scope="module")
def tiny():
    model = make_unet("tiny", 8, 1, seed=3)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1
    gen = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    return DiffusionTarget(model, make_scheduler(), x, gen)


def _manual_grad(target, x_t, t, tgt, output):
    model = target.model
    model.zero_grad()
    eps = model(x_t, t).sample
    if output == "loss":
        val = ((eps - tgt) ** 2).flatten(1).mean(1).mean()
    else:
        val = (eps**2).flatten(1).mean(1).mean()
    grads = torch.autograd.grad(val, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("output", ["loss", "squared-norm"])
def test_vmap_and_loop_agree_with_manual_backward(tiny, output):
    ts = fixed_timesteps(3, 1000)
    batch = noise_probes(tiny.x0_train, None, tiny.scheduler, ts, seed=1, role="train").get(0, 3)
    engine_v = PerExampleGradients(tiny, output, "vmap")
    engine_l = PerExampleGradients(tiny, output, "loop")
    gv = engine_v(batch, 1 / 3)
    gl = engine_l(batch, 1 / 3)
    assert engine_v.used == "vmap" and engine_l.used == "loop"
    assert gv.shape == (3, sum(p.numel() for p in tiny.model.parameters()))
    torch.testing.assert_close(gv, gl, rtol=1e-4, atol=1e-6)
    manual = _manual_grad(tiny, batch.x_t[1], batch.t[1], batch.target[1], output)
    torch.testing.assert_close(gv[1], manual, rtol=1e-4, atol=1e-6)


def _item_eps(model, x_t, t, cond):
    # data-dependent Python control flow: fine eagerly, impossible under vmap
    scale = 1.0 if float(x_t.abs().max()) < 1e6 else 0.0
    return model(x_t, t).sample * scale


def test_auto_falls_back_to_loop_when_vmap_fails(tiny):
    target = DiffusionTarget(
        tiny.model, tiny.scheduler, tiny.x0_train, tiny.x0_gen, eps_fn=_item_eps
    )
    source = noise_probes(target.x0_train, None, target.scheduler, [10, 500], 0, "train")
    kw = dict(projection_dim=16, seed=0, projector="basic", batch_size=4)
    auto = project_gradients(target, source, "loss", per_example="auto", **kw)
    assert auto.info["per_example"] == "loop" and "vmap_failed" in auto.info
    loop = project_gradients(target, source, "loss", per_example="loop", **kw)
    torch.testing.assert_close(auto.features, loop.features)
    ref = project_gradients(tiny, source, "loss", per_example="vmap", **kw)
    torch.testing.assert_close(ref.features, loop.features, rtol=1e-4, atol=1e-5)
    with pytest.raises(DiffattrError, match="vmap failed"):
        project_gradients(target, source, "loss", per_example="vmap", **kw)


def test_features_do_not_depend_on_batching(tiny):
    source = noise_probes(tiny.x0_train, None, tiny.scheduler, fixed_timesteps(4, 1000), 0, "x")
    kw = dict(projection_dim=8, seed=5, projector="basic")
    a = project_gradients(tiny, source, "loss", batch_size=64, **kw).features
    b = project_gradients(tiny, source, "loss", batch_size=2, **kw).features  # splits timesteps
    assert a.shape == (5, 8)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    c = project_gradients(tiny, source, "loss", batch_size=4, buffer_mb=1, **kw).features
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)  # one projection call per batch


def test_only_chosen_parameters_are_differentiated(tiny):
    names = [n for n, _ in tiny.model.named_parameters()][-2:]
    target = DiffusionTarget(tiny.model, tiny.scheduler, tiny.x0_train, tiny.x0_gen, params=names)
    source = noise_probes(target.x0_train, None, target.scheduler, [100], 0, "train")
    out = project_gradients(target, source, "loss", projection_dim=4, seed=0, projector="none")
    numel = sum(p.numel() for n, p in tiny.model.named_parameters() if n in names)
    assert out.features.shape == (5, numel) and out.info["projector"] == "none"
    assert all(p.requires_grad for p in tiny.model.parameters())  # flags restored
    with pytest.raises(DiffattrError, match="no parameter"):
        DiffusionTarget(
            tiny.model, tiny.scheduler, tiny.x0_train, tiny.x0_gen, params=["nope"]
        ).named_params()


def test_noise_probes_shared_and_per_example():
    sched = make_scheduler()
    x0 = torch.zeros(3, 1, 2, 2)
    shared = noise_probes(x0, None, sched, [0, 999], 7, "train").get(0, 3)
    assert torch.equal(shared.target[0], shared.target[2])
    again = noise_probes(x0, None, sched, [0, 999], 7, "gen").get(1, 2)
    assert torch.equal(again.target[0], shared.target[1])  # same noise for every role
    own = noise_probes(x0, None, sched, [0, 999], 7, "train", shared_noise=False)
    rows = own.get(0, 3).target
    assert not torch.equal(rows[0], rows[1])
    assert torch.equal(own.get(1, 2).target[0], rows[1])  # independent of the batch
    ac = sched.alphas_cumprod
    torch.testing.assert_close(shared.x_t[:, 1], (1 - ac[999]) ** 0.5 * shared.target[:, 1])


def test_projector_is_deterministic_and_linear(monkeypatch):
    p1 = Projector("basic", 50, 6, seed=2, device=torch.device("cpu"))
    p2 = Projector("basic", 50, 6, seed=2, device=torch.device("cpu"))
    g = torch.randn(4, 50)
    torch.testing.assert_close(p1(g), p2(g))
    assert p1.block == 6 and basic_block_size(10**9, 1024) == 1
    monkeypatch.setattr(gradients, "BASIC_BLOCK_ENTRIES", 100)  # 2 columns per block
    p3 = Projector("basic", 50, 6, seed=2, device=torch.device("cpu"))
    assert p3.block == 2 and p3(g).shape == (4, 6)
    torch.testing.assert_close(p1(g[:2] + g[2:]), p1(g[:2]) + p1(g[2:]), rtol=1e-5, atol=1e-5)
    with pytest.raises(DiffattrError, match="fast_jl"):
        Projector("cuda", 50, 512, seed=0, device=torch.device("cpu"))


def test_trajectory_ends_at_generate_and_keeps_states():
    model = make_unet("tiny", 8, 1, seed=1)
    gen = generate(model, 3, ddim_steps=6, seed=4, batch_size=2)
    traj = record_trajectory(model, 3, ddim_steps=6, seed=4, batch_size=2)
    torch.testing.assert_close(traj.final, gen)
    assert traj.states.shape == (6, 3, 1, 8, 8)
    from diffattr.diffusion.sample import initial_noise

    torch.testing.assert_close(traj.states[0], initial_noise(range(3), (1, 8, 8), 4))
    part = record_trajectory(model, 3, ddim_steps=6, seed=4, keep_steps=[0, 5], eps_fn=unet_eps)
    torch.testing.assert_close(part.states, traj.states[[0, 5]])
    assert part.steps.tolist() == [0, 5]
    assert part.timesteps.tolist() == traj.timesteps[[0, 5]].tolist()
    sel = traj.select(3)
    assert sel.steps.tolist() == [0, 2, 5]
    # journey probes: target noise maps the final sample to the state
    sched = make_scheduler()
    probes = journey_probes(sel, None, sched).get(0, 3)
    ac = sched.alphas_cumprod[sel.timesteps]
    rebuilt = (
        ac[None, :, None, None, None] ** 0.5 * sel.final[:, None]
        + (1 - ac[None, :, None, None, None]) ** 0.5 * probes.target
    )
    torch.testing.assert_close(rebuilt, probes.x_t, rtol=1e-4, atol=1e-4)


def test_target_checks_shapes_and_trajectory():
    model = make_unet("tiny", 8, 1, seed=1)
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(DiffattrError, match="differ in shape"):
        DiffusionTarget(model, make_scheduler(), x, torch.zeros(2, 1, 4, 4))
    with pytest.raises(DiffattrError, match="cond_train"):
        DiffusionTarget(model, make_scheduler(), x, x[:2], cond_train=torch.zeros(3, 2))
    gen = generate(model, 2, ddim_steps=4, seed=0)
    t = DiffusionTarget.from_unet(model, x, x0_gen=gen.flip(0) * 0, ddim_steps=4, seed=0)
    with pytest.raises(DiffattrError, match="does not end at x0_gen"):
        t.get_trajectory(2)
    t = DiffusionTarget.from_unet(model, x, num_generated=2, ddim_steps=4, seed=0)
    assert t.get_trajectory(2).states.shape == (2, 2, 1, 8, 8)
    wrong = record_trajectory(model, 2, ddim_steps=4, seed=1)
    with pytest.raises(DiffattrError, match="does not end at x0_gen"):
        DiffusionTarget(model, make_scheduler(), x, gen, trajectory=wrong).get_trajectory()
    assert np.isclose(float((t.x0_gen - gen).abs().max()), 0.0)


def test_text_conditional_lora_target_differentiates_only_the_adapter():
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from diffattr.baselines import local_scores

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=12,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        model.requires_grad_(False)
        lora = LoraConfig(
            r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]
        )
        model.add_adapter(lora)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 4, 8, 8, generator=g)
        cond = torch.randn(4, 3, 12, generator=g)
        cond_gen = torch.randn(2, 3, 12, generator=g)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    traj = record_trajectory(model, 2, ddim_steps=4, seed=0, shape=(4, 8, 8), cond=cond_gen)
    target = DiffusionTarget(
        model,
        make_scheduler(),
        x,
        traj.final,
        cond_train=cond,
        cond_gen=cond_gen,
        ddim_steps=4,
        sample_seed=0,
        family="lora-test",
    )
    table = {"name": "trak", "timesteps": 2, "projector": "none"}
    vm = local_scores({**table, "per_example": "vmap"}, target)
    lp = local_scores({**table, "per_example": "loop"}, target)
    assert vm.details["train_features"]["grad_dim"] == n_lora
    assert vm.details["train_features"]["per_example"] == "vmap"
    np.testing.assert_allclose(vm.scores, lp.scores, rtol=1e-4, atol=1e-8)
    journey = local_scores({"name": "journey-trak", "journey_points": 2, "timesteps": 2}, target)
    assert journey.scores.shape == (2, 4) and np.isfinite(journey.scores).all()
