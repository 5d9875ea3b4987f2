"""Sparsification: structured pruning of diffusion UNets and pruned-model checkpoints.

Pruning uses torch-pruning's dependency graph (Fang et al. 2023, DepGraph) with the
importance criteria of Diff-Pruning (Fang, Ma, Wang 2023); the pruned model is the starting
point of sparsified fine-tuning (sFT; Lin, Lu, Kim, Lee 2025, ICLR).
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "load_pruned_unet": "diffattr.sparsify.pruned_io:load_pruned_unet",
    "save_pruned_unet": "diffattr.sparsify.pruned_io:save_pruned_unet",
    "PRUNERS": "diffattr.sparsify.prune:PRUNERS",
    "PruneReport": "diffattr.sparsify.prune:PruneReport",
    "count_macs": "diffattr.sparsify.prune:count_macs",
    "count_parameters": "diffattr.torchutils:count_parameters",
    "layer_widths": "diffattr.sparsify.prune:layer_widths",
    "prune_unet": "diffattr.sparsify.prune:prune_unet",
    "sync_attributes": "diffattr.sparsify.prune:sync_attributes",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
