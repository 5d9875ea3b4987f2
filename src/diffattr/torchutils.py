"""Small helpers on torch that any layer of the package imports (only ``diffattr.errors``
among diffattr's modules, and no torch import at module level)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffattr.errors import DiffattrError

if TYPE_CHECKING:
    from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter entries of ``model`` (only those with ``requires_grad`` when
    ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


#: Devices whose fused Adam kernel torch has (one kernel per tensor group instead of a
#: dozen element-wise operations per parameter).
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam(params, lr: float):
    """``torch.optim.Adam`` over ``params``, fused where torch has the kernel (every
    parameter a float tensor on a CPU or CUDA device): the same update to float rounding,
    11 % off a training step of the pruned digits UNet on one CPU thread (BENCHMARKS.md)."""
    import torch

    params = list(params)
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params
    )
    return torch.optim.Adam(params, lr=lr, fused=True if fused else None)


#: The CPU's attention kernels, which torch's FLOP counter has no formula for (it counts
#: the GPU kernels'): (operator name, whether it is the backward pass).
CPU_ATTENTION_OPS = (
    ("_scaled_dot_product_flash_attention_for_cpu", False),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", True),
)


def _attention_flops(backward: bool):
    """The FLOP formula of attention over (..., S, D) queries: two matrix products forward
    (Q K^T and P V), four backward -- torch's own count for its GPU attention kernels."""

    def formula(*args, out_shape=None, **kwargs) -> int:
        query, key, value = args[1:4] if backward else args[:3]
        batch = 1
        for d in query[:-2]:
            batch *= d
        forward = 2 * batch * query[-2] * key[-2] * (query[-1] + value[-1])
        return 2 * forward if backward else forward

    return formula


def flop_counter():
    """``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and
    attention, forward and backward; element-wise work is not counted), not printing, and
    also counting the CPU's attention kernels."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for name, backward in CPU_ATTENTION_OPS:
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = _attention_flops(backward)
    return FlopCounterMode(display=False, custom_mapping=mapping)


def check_device(device: str) -> None:
    """A device this machine has, or a one-line error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DiffattrError(
            f"device: {device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DiffattrError(
                f"device: {device!r} asked for, but this torch build or machine has no CUDA "
                "(install a CUDA build of torch, or use --device cpu)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DiffattrError(
                f"device: {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DiffattrError("device: 'mps' asked for, but this machine has no MPS backend")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DiffattrError(f"device: {device!r} is not supported (cpu, cuda, mps)")
