"""``diffattr.torchutils.flop_counter``: torch's FLOP counter, with the CPU's attention."""

import pytest
import torch
import torch.nn.functional as F

from diffattr.torchutils import flop_counter


@pytest.mark.parametrize("heads", [1, 3])
def test_cpu_attention_is_counted_forward_and_backward(heads):
    b, s_q, s_k, d, d_v = 2, 16, 12, 8, 4
    q = torch.randn(b, heads, s_q, d, requires_grad=True)
    k = torch.randn(b, heads, s_k, d, requires_grad=True)
    v = torch.randn(b, heads, s_k, d_v, requires_grad=True)
    forward = 2 * b * heads * s_q * s_k * (d + d_v)  # Q K^T and P V
    with flop_counter() as fc:
        out = F.scaled_dot_product_attention(q, k, v)
    assert fc.get_total_flops() == forward
    with flop_counter() as fc:
        out.sum().backward()
    assert fc.get_total_flops() == 2 * forward  # four products


def test_convolutions_and_products_are_counted_as_torch_counts_them():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with flop_counter() as fc:
        conv(x)
    assert fc.get_total_flops() == 2 * 2 * 5 * 3 * 9 * 8 * 8
    a, w = torch.randn(4, 6), torch.randn(6, 7)
    with flop_counter() as fc:
        a @ w
        torch.relu(a)  # element-wise: not counted
    assert fc.get_total_flops() == 2 * 4 * 6 * 7
