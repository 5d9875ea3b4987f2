"""sFT pruning of latent UNets: channels removed at the family's ratio with attention q/k/v
grouped by head, so every attention layer keeps whole heads (the paper's CelebA-HQ LDM)."""

import pytest
import torch
from torch import nn

from diffattr.counterfactual.settings import SFTSettings
from diffattr.families.base import TrainingSet
from diffattr.families.settings import FAMILIES, LATENT_ARCHITECTURES
from diffattr.families.unconditional import load_unet, save_unet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ldm_layout_unet(seed=0):
    """The ldm-celebahq layout (DownBlock2D + three attention levels, attention in the
    middle block, 2 ResNet blocks per level) at a width a CPU test affords: channels
    32/64/96/128 with 8-dim heads (4 to 16 heads per layer)."""
    from diffusers import UNet2DModel

    arch = dict(LATENT_ARCHITECTURES["ldm-celebahq"])
    arch.update(block_out_channels=(32, 64, 96, 128), norm_num_groups=8, attention_head_dim=8)
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **arch)


def attention_layers(unet: nn.Module):
    return {n: m for n, m in unet.named_modules() if type(m).__name__ == "Attention"}


def test_ldm_celebahq_preset_is_the_compvis_layout():
    from diffusers import UNet2DModel

    arch = LATENT_ARCHITECTURES["ldm-celebahq"]
    assert arch["block_out_channels"] == (224, 448, 672, 896)
    assert arch["attention_head_dim"] == 32 and arch["layers_per_block"] == 2
    with torch.device("meta"):
        unet = UNet2DModel(sample_size=64, in_channels=3, out_channels=3, **arch)
    n = sum(p.numel() for p in unet.parameters())
    assert 270e6 < n < 280e6  # the paper's 274 M
    heads = {m.heads for m in attention_layers(unet).values()}
    assert heads == {448 // 32, 672 // 32, 896 // 32}


def test_pruning_keeps_whole_heads_and_reloads(tmp_path):
    fam = FAMILIES.parse({"name": "latent", "autoencoder": str(tmp_path)}).build("cpu")
    dense = ldm_layout_unet()
    sft = SFTSettings(ratio=0.5)
    examples = TrainingSet(torch.randn(4, 3, 8, 8))
    pruned, report = fam.prune(dense, sft, examples)
    assert 0.6 < 1 - report["params_after"] / report["params_before"] < 0.8
    before, after = attention_layers(dense), attention_layers(pruned)
    assert after and before.keys() == after.keys()
    for name, m in after.items():
        d = before[name]
        head_dim = m.inner_dim // m.heads
        assert m.heads == d.heads, name  # no head removed ...
        assert head_dim * m.heads == m.to_q.out_features == m.to_k.out_features
        assert m.to_v.out_features == m.to_out[0].in_features == m.inner_dim
        assert head_dim == (d.inner_dim // d.heads) // 2  # ... each keeps half its dims
        assert m.scale == pytest.approx(head_dim**-0.5)
        assert m.group_norm.num_channels % m.group_norm.num_groups == 0
    heads = [g for g in report["groups"] if g["heads"]]
    assert len(heads) == len(after) and all(g["kept"] % g["heads"] == 0 for g in heads)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 800])
    out = pruned(x, t).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    # saved as the family saves unet/ (the sparsify format) and reloaded: the same function
    pruned.eval()
    save_unet(pruned, tmp_path / "unet")
    again = load_unet(tmp_path / "unet")
    with torch.no_grad():
        torch.testing.assert_close(again(x, t).sample, pruned(x, t).sample)
    for name, m in attention_layers(again).items():
        a = after[name]
        assert (m.heads, m.inner_dim, m.scale) == (a.heads, a.inner_dim, a.scale)
