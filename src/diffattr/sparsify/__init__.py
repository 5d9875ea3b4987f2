"""Sparsification: structured pruning of diffusion UNets and pruned-model checkpoints.

Pruning uses torch-pruning's dependency graph (Fang et al. 2023, DepGraph) with the
importance criteria of Diff-Pruning (Fang, Ma, Wang 2023); the pruned model is the starting
point of sparsified fine-tuning (sFT; Lin, Lu, Kim, Lee 2025, ICLR).
"""

from diffattr.sparsify.checkpoint import load_pruned_unet, save_pruned_unet
from diffattr.sparsify.prune import (
    PRUNERS,
    PruneReport,
    count_macs,
    count_parameters,
    layer_widths,
    prune_unet,
    sync_attributes,
)

__all__ = [
    "PRUNERS",
    "PruneReport",
    "count_macs",
    "count_parameters",
    "layer_widths",
    "load_pruned_unet",
    "prune_unet",
    "save_pruned_unet",
    "sync_attributes",
]
