import json

import pytest
import torch
from torch import nn

from conftest import train_full
from diffattr.config import RunConfig
from diffattr.diffusion.sample import generate
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState, TrainingSet
from diffattr.families.settings import UnconditionalSettings
from diffattr.families.unconditional import load_unet, save_unet
from diffattr.sparsify import PRUNERS, load_pruned_unet, prune_unet, save_pruned_unet

FAMILY = UnconditionalSettings().build("cpu")


def LOSS(model, x0, t, noise):
    return FAMILY.loss(model, x0, t, noise)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conv_params(m: nn.Module) -> int:
    return sum(
        p.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d) for p in mod.parameters()
    )


def forward_backward(unet: nn.Module, channels: int, size: int) -> torch.Tensor:
    x = torch.randn(2, channels, size, size)
    out = unet(x, torch.tensor([3, 700])).sample
    out.square().mean().backward()
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)
    return out


@pytest.mark.parametrize(
    "preset,size,channels", [("tiny", 8, 1), ("small", 16, 1), ("small", 28, 1)]
)
def test_prune_removes_expected_share(preset, size, channels):
    dense = make_unet(preset, size, channels)
    before = [p.clone() for p in dense.parameters()]
    pruned, report = prune_unet(dense, ratio=0.3)
    # The input is not changed.
    assert all(torch.equal(a, b) for a, b in zip(before, dense.parameters()))
    # Channels go by ~30 %, so ~1 - 0.7^2 = 51 % of the conv weights (group-norm rounding
    # makes it 25-35 % of the channels per group).
    share = 1 - conv_params(pruned) / conv_params(dense)
    assert 0.40 < share < 0.62, share
    assert report.params_before == sum(p.numel() for p in dense.parameters())
    assert report.params_after == sum(p.numel() for p in pruned.parameters())
    assert 0 < report.macs_after < report.macs_before
    assert report.layers and all(v["before"] != v["after"] for v in report.layers.values())
    for g in report.groups:
        assert 0.2 <= 1 - g["kept"] / g["channels"] <= 0.5 or g["unit"] >= g["channels"]
    assert pruned.diffattr_pruning["params_after"] == report.params_after
    # Output channels of conv_out are kept; group norms still divide their channels.
    assert pruned.conv_out.out_channels == channels
    for m in pruned.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
        if type(m).__name__ in ("Upsample2D", "Downsample2D"):
            assert m.channels == m.conv.in_channels
    out = forward_backward(pruned, channels, size)
    assert out.shape == (2, channels, size, size) and torch.isfinite(out).all()


def test_prune_ddpm_cifar_runs():
    dense = make_unet("ddpm-cifar", 32, 3)
    pruned, report = prune_unet(dense, ratio=0.3)
    assert 0.45 < report.param_ratio < 0.6
    attn = [m for m in pruned.modules() if hasattr(m, "to_q")]
    assert attn and all(m.to_q.out_features == m.to_k.out_features for m in attn)
    forward_backward(pruned, 3, 32)


def test_attention_heads_kept_and_consistent():
    pruned, _ = prune_unet(make_unet("small", 16, 1), ratio=0.3)
    attn = [m for m in pruned.modules() if hasattr(m, "to_q")]
    assert attn
    for m in attn:
        assert m.heads == 2
        assert m.to_q.out_features % m.heads == 0
        assert m.to_q.out_features == m.to_k.out_features == m.to_v.out_features
        assert m.to_out[0].in_features == m.to_v.out_features
        assert m.scale == pytest.approx((m.to_q.out_features // m.heads) ** -0.5)


@pytest.mark.parametrize("pruner", ["magnitude", "random", "taylor", "diff-pruning"])
def test_every_pruner(pruner):
    assert pruner in PRUNERS
    dense = make_unet("tiny", 8, 1)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    kw = dict(example_images=images, max_timesteps=6, seed=1, loss_fn=LOSS)
    a, ra = prune_unet(dense, 0.3, pruner, **kw)
    b, _ = prune_unet(dense, 0.3, pruner, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert ra.pruner == pruner and ra.params_after < ra.params_before
    if pruner in ("taylor", "diff-pruning"):
        assert 1 <= ra.importance["timesteps"] <= 6
    assert all(p.grad is None for p in a.parameters())
    forward_backward(a, 1, 8)


def test_diff_pruning_stops_at_threshold():
    dense = make_unet("tiny", 8, 1)
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    # A threshold close to 1 stops as soon as the loss falls below the running maximum.
    _, report = prune_unet(
        dense, 0.3, "diff-pruning", example_images=images, thr=0.999, loss_fn=LOSS
    )
    assert report.importance["timesteps"] < 1000


def test_round_to():
    _, report = prune_unet(make_unet("tiny", 8, 1), 0.3, round_to=8)
    assert all(g["kept"] % 8 == 0 for g in report.groups if g["heads"] is None)


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2])
def test_bad_ratio(ratio):
    with pytest.raises(DiffattrError, match="ratio"):
        prune_unet(make_unet("tiny", 8, 1), ratio=ratio)


def test_bad_pruner_and_missing_images():
    with pytest.raises(DiffattrError, match="unknown pruner"):
        prune_unet(make_unet("tiny", 8, 1), pruner="l1-norm")
    with pytest.raises(DiffattrError, match="example images"):
        prune_unet(make_unet("tiny", 8, 1), pruner="taylor", loss_fn=LOSS)
    with pytest.raises(DiffattrError, match="loss"):
        prune_unet(make_unet("tiny", 8, 1), pruner="taylor", example_images=torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("preset,size", [("tiny", 8), ("small", 16)])
def test_save_load_identical(tmp_path, preset, size):
    pruned, _ = prune_unet(make_unet(preset, size, 1, seed=2), ratio=0.3)
    pruned.eval()
    save_pruned_unet(pruned, tmp_path / "u")
    payload = json.loads((tmp_path / "u" / "pruned.json").read_text())
    assert payload["config"]["block_out_channels"] and "modules" in payload
    loaded = load_pruned_unet(tmp_path / "u")
    x = torch.randn(3, 1, size, size)
    t = torch.tensor([0, 400, 999])
    with torch.no_grad():
        assert torch.equal(pruned(x, t).sample, loaded(x, t).sample)
    assert loaded.diffattr_pruning == pruned.diffattr_pruning
    assert loaded.config.sample_size == size and loaded.config.in_channels == 1
    # Re-saving the loaded model round-trips again; the diffusion checkpoint delegates.
    save_unet(loaded, tmp_path / "v")
    again = load_unet(tmp_path / "v")
    with torch.no_grad():
        assert torch.equal(pruned(x, t).sample, again(x, t).sample)
    assert generate(again, 2, ddim_steps=2).shape == (2, 1, size, size)


def test_model_dir_with_optimizer_roundtrip(tmp_path):
    from diffattr.config import TrainConfig
    from diffattr.diffusion.train import train

    pruned, _ = prune_unet(make_unet("tiny", 8, 1), ratio=0.3)
    data = TrainingSet(torch.rand(16, 1, 8, 8) * 2 - 1)
    res = train(pruned, data, TrainConfig(steps=2), denoiser=FAMILY, progress=False)
    state = ModelState(res.ema.model, res.unet, res.optimizer_state, res.ema.step)
    FAMILY.save(tmp_path / "m", state, {"kind": "pruned"})
    loaded = FAMILY.load(tmp_path / "m", training=True)
    assert loaded.ema_step == 2 and loaded.optimizer_state is not None
    for a, b in zip(res.unet.parameters(), loaded.raw.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(res.ema.model.parameters(), loaded.model.parameters()):
        assert torch.equal(a, b)


def test_load_errors(tmp_path):
    with pytest.raises(DiffattrError, match="pruned.json"):
        load_pruned_unet(tmp_path)
    pruned, _ = prune_unet(make_unet("tiny", 8, 1), ratio=0.3)
    save_pruned_unet(pruned, tmp_path / "u")
    payload = json.loads((tmp_path / "u" / "pruned.json").read_text())
    payload["modules"]["conv_in"]["out"] = 5
    (tmp_path / "u" / "pruned.json").write_text(json.dumps(payload))
    with pytest.raises(DiffattrError, match="do not match"):
        load_pruned_unet(tmp_path / "u")
    with pytest.raises(DiffattrError, match="pruning information"):
        save_pruned_unet(make_unet("tiny", 8, 1), tmp_path / "w")


def test_prune_cli(tmp_path):
    from typer.testing import CliRunner

    from diffattr.cli import app

    cfg = RunConfig().with_overrides(**{"train.steps": 10, "train.batch_size": 16})
    full = train_full(cfg, tmp_path / "full", grid_samples=0)
    args = ["prune", str(full), "--out", str(tmp_path / "p"), "--finetune-steps", "3"]
    result = CliRunner().invoke(app, [*args, "--samples", "4"])
    assert result.exit_code == 0, result.output
    assert "parameters:" in result.output and "MACs" in result.output
    assert "conv widths: 1, 22, 24" in result.output  # the tiny UNet's 32 channels at 0.3
    loaded = FAMILY.load(tmp_path / "p" / "pruned", training=True)
    assert loaded.model.diffattr_pruning["ratio"] == 0.3
    assert loaded.meta["kind"] == "pruned" and loaded.optimizer_state is not None
    assert (tmp_path / "p" / "pruned" / "samples.png").is_file()
    bad = CliRunner().invoke(app, [*args, "--ratio", "1.5"])
    assert bad.exit_code != 0 and "ratio" in str(bad.exception)


def test_channel_choice_rounding():
    from diffattr.sparsify.prune import _choose, _closest_divisor

    imp = torch.arange(32, dtype=torch.float32).flip(0)  # channel 31 is the least important
    remove, kept, unit = _choose(imp, 32, 0.3, None, {"unit": 12, "heads": None})
    assert (kept, unit) == (24, 12) and remove == list(range(24, 32))
    remove, kept, _ = _choose(imp, 32, 0.3, None, {"unit": 1, "heads": None})
    assert kept == 22 and len(remove) == 10
    # Heads: every head loses the same number of its own least important dims.
    remove, kept, _ = _choose(imp, 32, 0.3, None, {"unit": 1, "heads": 4})
    assert kept == 24 and [sum(1 for r in remove if r // 8 == h) for h in range(4)] == [2] * 4
    _, kept, _ = _choose(imp, 32, 0.3, None, {"unit": 32, "heads": None})
    assert kept == 32
    assert _closest_divisor(24, 6.0) == 6 and _closest_divisor(22, 5.5) in (2, 11)
