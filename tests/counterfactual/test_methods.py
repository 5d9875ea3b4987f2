import json

import numpy as np
import pytest
import torch

from conftest import train_full
from diffattr.config import RunConfig
from diffattr.counterfactual import METHODS
from diffattr.counterfactual.base import make_method
from diffattr.data import Players, load_dataset
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError
from diffattr.families.settings import UnconditionalSettings

FAMILY = UnconditionalSettings().build("cpu")


def load_model(path, training=False):
    return FAMILY.load(path, training=training)


def prepare_method(name, settings, full_dir, data, work, progress=False):
    m = make_method(name, settings, full_dir, work)
    m.prepare(data, progress=progress)
    return m


def load_method(name, settings, full_dir, work):
    m = make_method(name, settings, full_dir, work)
    m.load()
    return m


SETTINGS = {
    "retrain": {"steps": 4},
    "sft": {"finetune_steps": 30, "steps": 4},
    "ft": {"steps": 4},
    "ga": {"steps": 4},
    "lora": {"steps": 4},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return FAMILY.training_set(ds), Players.from_dataset(ds, "contributor")


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory, digits, one_torch_thread):
    cfg = RunConfig().with_overrides(**{"train.steps": 40, "train.batch_size": 32})
    out = tmp_path_factory.mktemp("cf") / "full"
    return train_full(cfg, out, grid_samples=0)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, full_dir, digits):
    work = tmp_path_factory.mktemp("cf") / "sft"
    prepare_method("sft", SETTINGS["sft"], full_dir, digits[0], work, progress=False)
    return work


def subset(players, k=3):
    mask = np.zeros(len(players), dtype=bool)
    mask[:k] = True
    return players.indices(mask)


def flat(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_registry():
    assert METHODS.names() == ["ft", "ga", "lora", "retrain", "sft", "surrogate"]


@pytest.mark.parametrize("name", ["retrain", "sft", "ft", "ga", "lora"])
def test_method_changes_the_model(name, full_dir, sft_dir, digits, tmp_path):
    ds, players = digits
    work = sft_dir if name == "sft" else tmp_path / name
    prepare_method(name, SETTINGS[name], full_dir, ds, work, progress=False)
    method = load_method(name, SETTINGS[name], full_dir, work)
    result = method.run(subset(players), ds, seed=1)
    unet = result.model
    assert result.train_seconds > 0 and isinstance(result.info, dict)
    assert type(unet).__name__ == "UNet2DModel"  # LoRA is merged
    if name == "sft":
        start = load_model(sft_dir / "pruned").model
        assert hasattr(unet, "diffattr_pruning")
    elif name == "retrain":
        start = make_unet("tiny", 8, 1, seed=1)
    else:
        start = load_model(full_dir).model
    a, b = flat(start), flat(unet)
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert torch.isfinite(b).all()
    images = generate(unet, 4, ddim_steps=3)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    # Same seed, same model: the job is reproducible in another process.
    again = load_method(name, SETTINGS[name], full_dir, work).run(subset(players), ds, seed=1)
    assert torch.allclose(flat(again.model), b)


def test_sft_prepare_is_cached(full_dir, sft_dir, digits):
    prepared = json.loads((sft_dir / "prepared.json").read_text())
    assert prepared["pruning"]["params_after"] < prepared["pruning"]["params_before"]
    before = (sft_dir / "pruned" / "diffattr.json").stat().st_mtime_ns
    prepare_method("sft", SETTINGS["sft"], full_dir, digits[0], sft_dir, progress=False)
    assert (sft_dir / "pruned" / "diffattr.json").stat().st_mtime_ns == before
    loaded = load_model(sft_dir / "pruned", training=True)
    assert loaded.meta["train_step"] == 30 and loaded.optimizer_state is not None


def test_sft_with_everyone_stays_near_pruned_model(full_dir, sft_dir, digits):
    ds, players = digits
    method = load_method("sft", SETTINGS["sft"], full_dir, sft_dir)
    everyone = players.indices(np.ones(len(players), dtype=bool))
    result = method.run(everyone, ds, seed=0)
    reference = generate(method.pruned_model, 16, ddim_steps=10)
    ours = generate(result.model, 16, ddim_steps=10)
    untrained = generate(make_unet("tiny", 8, 1, seed=5), 16, ddim_steps=10)
    near = (ours - reference).square().mean()
    far = (untrained - reference).square().mean()
    assert near < 0.25 * far, (float(near), float(far))


def test_ema_modes(full_dir, sft_dir, digits):
    """carry continues the starting EMA, restart starts a new one, none samples raw weights."""
    from diffattr.config import TrainConfig
    from diffattr.counterfactual.base import copy_module, fine_tune

    ds, players = digits
    kept = subset(players, 2)
    start = flat(load_model(sft_dir / "pruned").model)
    dist = {}
    for mode in ("restart", "carry", "none"):
        s = {**SETTINGS["sft"], "ema": mode, "steps": 6}
        r = load_method("sft", s, full_dir, sft_dir).run(kept, ds, seed=0)
        dist[mode] = float((flat(r.model) - start).norm())
        assert r.info["ema"] == mode
    assert dist["carry"] < dist["restart"]
    # Past the warm-up, a carried EMA with decay 0.999 moves at most 1 - 0.999^5 = 0.5 % of
    # the way to the raw weights.
    loaded = load_model(sft_dir / "pruned", training=True)
    cfg = TrainConfig(steps=5, batch_size=16, ema_decay=0.999)
    images = ds.subset(kept)
    out = {}
    for mode in ("carry", "none"):
        unet, _, _ = fine_tune(
            FAMILY,
            copy_module(loaded.raw),
            images,
            cfg,
            ema=mode,
            ema_model=loaded.model,
            ema_step=10**6,
        )
        out[mode] = flat(unet)
    moved = float((out["carry"] - start).norm())
    assert 0 < moved < 0.006 * float((out["none"] - start).norm())


def test_ga_guards(full_dir, digits):
    ds, players = digits
    everyone = players.indices(np.ones(len(players), dtype=bool))
    ga = make_method("ga", {"steps": 3}, full_dir, "unused")
    r = ga.run(everyone, ds)
    assert r.info["removed"] == 0
    assert torch.equal(flat(r.model), flat(load_model(full_dir).model))
    capped = make_method("ga", {"steps": 50, "lr": 0.05, "loss_limit": 0.3}, full_dir, "unused")
    r = capped.run(subset(players), ds)
    assert r.info["stopped"] in ("loss limit", "non-finite loss")
    assert r.info["steps"] < 50 and torch.isfinite(flat(r.model)).all()


def test_bad_requests(full_dir, digits, tmp_path):
    ds, players = digits
    with pytest.raises(DiffattrError, match="unknown counterfactual method 'unlearn'"):
        make_method("unlearn", {}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="ratio"):
        make_method("sft", {"ratio": 1.5}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="pruner"):
        make_method("sft", {"pruner": "l1"}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="ft.stepz: unknown setting"):
        make_method("ft", {"stepz": 3}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="'restart' or 'none'"):
        make_method("lora", {"ema": "carry"}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="not a diffattr model directory"):
        make_method("ft", {}, tmp_path, tmp_path)
    with pytest.raises(DiffattrError, match="no prepared sft model"):
        load_method("sft", {"finetune_steps": 3}, full_dir, tmp_path / "nothing")
    empty = np.zeros(0, dtype=np.int64)
    for name in ("retrain", "ft", "ga", "lora"):
        with pytest.raises(DiffattrError, match="empty"):
            make_method(name, SETTINGS[name], full_dir, tmp_path).run(empty, ds)
    ft = make_method("ft", SETTINGS["ft"], full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="lie in"):
        ft.run(np.array([0, len(ds)]), ds)
    with pytest.raises(DiffattrError, match="trained on"):
        ft.run(np.array([0, 1]), ds.subset(np.arange(100)))
    lora = make_method("lora", {"target_modules": ["query"]}, full_dir, tmp_path)
    with pytest.raises(DiffattrError, match="match no layer"):
        lora.run(np.array([0, 1]), ds)
