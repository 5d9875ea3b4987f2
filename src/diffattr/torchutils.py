"""Small helpers on torch modules that any layer of the package imports (no diffattr
imports, and no torch import at module level)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter entries of ``model`` (only those with ``requires_grad`` when
    ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
