"""K coalition models trained and sampled side by side equal K one-at-a-time runs.

Tolerance: stacking changes float summation order only (grouped convolutions, GroupNorm as
plain arithmetic, per-model reductions), so after a fine-tune of 25 steps weights agree to
1e-4 absolute (seen: ~2e-6 against a drift of ~3e-2 from the starting weights) and samples
to 1e-4 (seen: ~3e-6).
"""

from __future__ import annotations

import copy

import pytest
import torch

from diffattr.config import TrainConfig
from diffattr.data import load_dataset
from diffattr.diffusion.ema import EMA
from diffattr.diffusion.stacked import Stack, check_recipes, train_stacked
from diffattr.diffusion.train import train
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import TrainingSet
from diffattr.families.settings import UnconditionalSettings

ATOL = 1e-4


@pytest.fixture(scope="module")
def family():
    return UnconditionalSettings().build("cpu")


@pytest.fixture(scope="module")
def start(family):
    """A tiny UNet after 20 steps on digits, with its Adam state (what an sFT job continues)."""
    x = load_dataset("digits").images
    cfg = TrainConfig(steps=20, batch_size=16, lr=1e-3, seed=0)
    r = train(make_unet("tiny", 8, 1, seed=0), TrainingSet(x), cfg, denoiser=family, progress=False)
    return x, r.unet, r.ema, r.optimizer_state


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("carry", [False, True])
def test_a_stack_of_models_equals_separate_runs(family, start, carry):
    x, model, ema, opt_state = start
    subsets = [x[:40], x[40:400], x[:9]]  # coalitions of different sizes
    cfgs = [TrainConfig(steps=25, batch_size=16, lr=1e-3, seed=s) for s in (3, 1, 2)]

    def tracker():
        return EMA(ema.model, 0.999, step=ema.step) if carry else EMA(model, 0.999)

    separate = [
        train(
            copy.deepcopy(model),
            TrainingSet(d),
            c,
            denoiser=family,
            ema=tracker(),
            optimizer_state=copy.deepcopy(opt_state),
            progress=False,
        )
        for d, c in zip(subsets, cfgs)
    ]
    stacked = train_stacked(
        [model] * 3,
        [TrainingSet(d) for d in subsets],
        cfgs,
        denoiser=family,
        emas=[tracker() for _ in cfgs],
        optimizer_states=[opt_state] * 3,
    )
    for one, side in zip(separate, stacked):
        assert _max_diff(one.unet, side.unet) < ATOL
        assert _max_diff(one.ema.model, side.ema.model) < ATOL
        assert one.ema.step == side.ema.step
        assert one.losses == pytest.approx(side.losses, rel=1e-4)
        a, b = one.optimizer_state["state"], side.optimizer_state["state"]
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[i]["exp_avg"], b[i]["exp_avg"], atol=ATOL) for i in a)
    # the models really differ from each other and from the start (the check is not vacuous)
    assert _max_diff(stacked[0].unet, stacked[1].unet) > 100 * ATOL
    assert _max_diff(stacked[0].unet, model) > 100 * ATOL
    # the inputs are not changed
    assert _max_diff(model, start[1]) == 0


def test_each_stacked_model_trains_on_its_own_data_only(family, start):
    x, model, _, opt_state = start
    poisoned = torch.full_like(x[:50], float("nan"))
    cfgs = [TrainConfig(steps=5, batch_size=16, lr=1e-3, seed=s) for s in (0, 1)]
    out = train_stacked(
        [model, model],
        [TrainingSet(x[:50]), TrainingSet(poisoned)],
        cfgs,
        denoiser=family,
        optimizer_states=[opt_state] * 2,
    )
    clean = train(
        copy.deepcopy(model),
        TrainingSet(x[:50]),
        cfgs[0],
        denoiser=family,
        optimizer_state=copy.deepcopy(opt_state),
        progress=False,
    )
    assert all(torch.isfinite(p).all() for p in out[0].unet.parameters())
    assert _max_diff(out[0].unet, clean.unet) < ATOL
    assert not all(torch.isfinite(p).all() for p in out[1].unet.parameters())


def test_stacked_sampling_equals_one_at_a_time(family, start):
    _, model, _, _ = start
    other = make_unet("tiny", 8, 1, seed=5)
    models = [model.eval(), other.eval(), copy.deepcopy(model)]
    side = family.sample_stacked(models, 20, seed=3, ddim_steps=4, batch_size=21)
    assert len(side) == 3
    for m, images in zip(models, side):
        alone = family.sample(m, 20, seed=3, ddim_steps=4, batch_size=7)
        assert images.shape == alone.shape == (20, 1, 8, 8)
        assert (images - alone).abs().max().item() < ATOL
    # common random numbers: two copies of one model give the same images
    assert (side[0] - side[2]).abs().max().item() < ATOL
    assert (side[0] - side[1]).abs().max().item() > 0.1


def test_stack_round_trips_its_models(family):
    models = [make_unet("tiny", 8, 1, seed=s) for s in (0, 1)]
    stack = Stack.of(models, family)
    assert stack.k == 2
    assert _max_diff(stack.module(1), models[1]) == 0
    with pytest.raises(DiffattrError, match="different parameter shapes"):
        Stack.of([models[0], make_unet("small", 16, 1)], family)


def test_stacked_recipes_differ_in_their_seeds_only():
    check_recipes([TrainConfig(seed=0), TrainConfig(seed=1)])
    with pytest.raises(DiffattrError, match="batch_size"):
        check_recipes([TrainConfig(batch_size=8), TrainConfig(batch_size=16)])


def test_stacked_optimizer_states_must_agree(family, start):
    x, model, _, opt_state = start
    cfgs = [TrainConfig(steps=1, batch_size=4, seed=s) for s in (0, 1)]
    with pytest.raises(DiffattrError, match="optimizer state"):
        train_stacked(
            [model, model],
            [TrainingSet(x[:8])] * 2,
            cfgs,
            denoiser=family,
            optimizer_states=[opt_state, None],
        )


def test_class_conditional_models_stack_with_their_own_labels():
    """The conditional family: label dropout from each model's own stream in training, and
    classifier-free guided sampling with each model's own labels, as one at a time."""
    from diffattr.families.settings import ConditionalSettings

    family = ConditionalSettings(guidance_scale=2.0).build("cpu")
    data = family.training_set(load_dataset("digits"))
    model = family.init_model(data, seed=0)
    subsets = [data.subset(list(range(0, 60))), data.subset(list(range(300, 330)))]
    cfgs = [TrainConfig(steps=12, batch_size=16, lr=1e-3, seed=s) for s in (0, 4)]
    separate = [
        train(copy.deepcopy(model), d, c, denoiser=family, progress=False)
        for d, c in zip(subsets, cfgs)
    ]
    stacked = family.fit_stacked(
        [model, model],
        subsets,
        cfgs,
        emas=[EMA(model, c.ema_decay) for c in cfgs],
        optimizer_states=[None, None],
    )
    for one, side in zip(separate, stacked):
        assert _max_diff(one.unet, side.unet) < ATOL
        assert _max_diff(one.ema.model, side.ema.model) < ATOL
    models = [r.unet.eval() for r in stacked]
    labels = [family.generation_conditions(d, None, 12, seed=1) for d in subsets]
    assert not torch.equal(labels[0], labels[1])  # the coalitions generate other classes
    side = family.sample_stacked(models, 12, seed=1, ddim_steps=3, conditions=labels)
    for m, lab, images in zip(models, labels, side):
        alone = family.sample(m, 12, seed=1, ddim_steps=3, conditions=lab)
        assert (images - alone).abs().max().item() < ATOL
    with pytest.raises(DiffattrError, match="out of range"):
        family.sample_stacked(models, 12, seed=1, ddim_steps=3, conditions=[labels[0] + 50] * 2)
