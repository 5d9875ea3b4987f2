"""LoRA pruning by whole rank-1 components (diffattr.sparsify.lora)."""

import numpy as np
import pytest
import torch

from diffattr.errors import DiffattrError
from diffattr.families.text_to_image import LoRAAdapters
from diffattr.sparsify.lora import (
    accumulate_gradients,
    plan_pruning,
    prune_factors,
    select_components,
)


def factors(seed=0, shapes=((8, 4, 12), (16, 4, 8), (6, 4, 6))):
    """A / B of three LoRA layers (in, rank, out) with distinct component sizes."""
    g = torch.Generator().manual_seed(seed)
    A = [torch.randn(r, i, generator=g) for i, r, _ in shapes]
    B = [torch.randn(o, r, generator=g) for i, r, o in shapes]
    return A, B


def update(A, B, scale=1.0):
    return [scale * b @ a for a, b in zip(A, B)]


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.8])
def test_kept_share_is_reached_with_whole_components(keep):
    A, B = factors()
    sizes = [a.shape[1] + b.shape[0] for a, b in zip(A, B)]
    plan = plan_pruning(A, B, keep)
    total = sum(a.numel() + b.numel() for a, b in zip(A, B))
    assert plan.params_before == total
    # at most the requested share, and less than one component below it
    assert plan.params_after <= keep * total
    assert plan.params_after > keep * total - max(sizes)
    assert plan.kept_share == pytest.approx(plan.params_after / total)
    pA, pB = prune_factors(A, B, plan.kept)
    assert sum(a.numel() + b.numel() for a, b in zip(pA, pB)) == plan.params_after
    # whole components: row j of A goes with column j of B, the rest are untouched
    for a, b, pa, pb, kept in zip(A, B, pA, pB, plan.kept):
        assert pa.shape[0] == pb.shape[1] == len(kept)
        assert torch.equal(pa, a[kept]) and torch.equal(pb, b[:, kept])
        full = b @ a
        removed = [j for j in range(a.shape[0]) if j not in kept.tolist()]
        rest = sum((torch.outer(b[:, j], a[j]) for j in removed), torch.zeros_like(full))
        assert torch.allclose(pb @ pa, full - rest, atol=1e-5)


def test_magnitude_removes_the_smallest_updates_first():
    A, B = factors()
    # make component 2 of layer 0 tiny in A and component 1 of layer 1 tiny in B
    A[0][2] *= 1e-3
    B[1][:, 1] *= 1e-3
    plan = plan_pruning(A, B, 0.9)
    assert 2 not in plan.kept[0].tolist() and 1 not in plan.kept[1].tolist()
    # invariant to rescaling a component (a_j * c, b_j / c)
    A2 = [a.clone() for a in A]
    B2 = [b.clone() for b in B]
    A2[2][0] *= 100.0
    B2[2][:, 0] /= 100.0
    again = plan_pruning(A2, B2, 0.5)
    assert all(torch.equal(x, y) for x, y in zip(plan_pruning(A, B, 0.5).kept, again.kept))


def test_taylor_uses_first_order_loss_change_and_random_is_seeded():
    A, B = factors(1)
    params = [p.clone().requires_grad_(True) for p in A + B]
    target = [torch.randn(b.shape[0], a.shape[1]) for a, b in zip(A, B)]

    def loss_at(t):
        pa, pb = params[:3], params[3:]
        return sum(((b @ a - y) ** 2).mean() * (1 + t) for a, b, y in zip(pa, pb, target))

    grads, losses = accumulate_gradients(params, loss_at, [0, 1, 2])
    assert len(losses) == 3
    plan = plan_pruning(A, B, 0.5, "taylor", grads=(grads[:3], grads[3:]))
    assert plan.params_after <= 0.5 * plan.params_before
    # |sum w g| over the pair = 2 |d loss / d (component scale)|
    a, b, ga, gb = A[0], B[0], grads[0], grads[3]
    j = 0
    pair = (a[j] * ga[j]).sum() + (b[:, j] * gb[:, j]).sum()
    assert torch.allclose(pair, 2 * (a[j] * ga[j]).sum(), rtol=1e-4)
    # diff-pruning stops once the loss falls below thr * max
    _, short = accumulate_gradients(
        params,
        lambda t: torch.tensor(10.0 / (1 + t)) * params[0].sum() ** 0,
        range(100),
        stop_ratio=0.2,
    )
    assert len(short) == 6  # 10/(1+t) < 0.2 * 10 first at t = 5
    r1 = plan_pruning(A, B, 0.5, "random", seed=3)
    r2 = plan_pruning(A, B, 0.5, "random", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(r1.kept, r2.kept))
    with pytest.raises(DiffattrError, match="needs the loss gradients"):
        plan_pruning(A, B, 0.5, "taylor")
    with pytest.raises(DiffattrError, match="unknown LoRA importance"):
        plan_pruning(A, B, 0.5, "size")
    with pytest.raises(DiffattrError, match="in \\(0, 1\\]"):
        select_components([torch.ones(2)], [3], 0.0)


def test_layers_may_lose_every_component_and_adapters_follow():
    A, B = factors(2)
    A[2] *= 1e-4  # the third layer's components are the least important
    plan = plan_pruning(A, B, 0.6)
    assert plan.ranks_after[2] == 0 and plan.to_dict()["layers_emptied"] == 1
    layers = [(f"l{k}", a.shape[1], b.shape[0], a.shape[0]) for k, (a, b) in enumerate(zip(A, B))]
    ad = LoRAAdapters(layers, rank=4, alpha=2.0)
    with torch.no_grad():
        for p, a in zip(ad.A, A):
            p.copy_(a)
        for p, b in zip(ad.B, B):
            p.copy_(b)
    pruned = ad.with_components(plan.kept)
    assert pruned.pruned and pruned.layer_names == ["l0", "l1"]
    assert pruned.ranks() == {"l0": len(plan.kept[0]), "l1": len(plan.kept[1]), "l2": 0}
    assert pruned.scale == ad.scale  # the kept components keep their contribution
    assert sum(p.numel() for p in pruned.parameters()) == plan.params_after
    assert np.isclose(
        float((pruned.B[0] @ pruned.A[0]).detach().norm()),
        float((B[0][:, plan.kept[0]] @ A[0][plan.kept[0]]).norm()),
    )
    # diffusers' state: scale folded into B, LoRA config with a rank pattern
    state = pruned.diffusers_state()
    assert set(state) == {f"l{k}.lora_{x}.weight" for k in (0, 1) for x in "AB"}
    assert torch.allclose(state["l0.lora_B.weight"], pruned.B[0] * pruned.scale)
    meta = pruned.adapter_metadata()
    assert meta["lora_alpha"] == meta["r"] and meta["alpha_pattern"] == meta["rank_pattern"]
