"""Pruning a LoRA by whole rank-1 components (the paper's Stable Diffusion sFT).

A LoRA layer adds ``scale * B A x`` to a frozen linear layer ``W x`` (A: r x in, the
``down`` / ``lora_A`` weight; B: out x r, the ``up`` / ``lora_B`` weight). Its component j,
row j of A with column j of B, is the rank-1 update ``scale * b_j a_j^T``; removing it
removes ``in + out`` parameters and leaves every other component as it was (the scale stays
alpha / r of the unpruned LoRA). The research code (``text_to_image/prune_lora.py``) scores
the components of every layer, sorts them all together and removes them in ascending order
until the LoRA keeps at most a share ``keep`` of its parameters (the paper keeps 50 %), so
the layers end with different ranks, some possibly zero (no adapter left).

Importance of a component (``IMPORTANCES``):

* ``magnitude``: the Frobenius norm of its update, ``scale * ||a_j|| * ||b_j||``. (The
  research code scores the two halves separately with torch-pruning's magnitude importance
  and removes a pair when either half comes up; the product is the size of what the pair
  adds to W, and does not change when a_j is scaled up and b_j down by the same factor.)
* ``taylor``: ``|sum over the pair of w * dL/dw|``, gradients of the diffusion loss summed
  over evenly spaced timesteps on a batch of examples: the first-order change of the loss
  when the component is removed (for a rank-1 pair, the sums over a_j and over b_j are
  equal).
* ``diff-pruning``: ``sum |w * dL/dw|`` with the gradients of Diff-Pruning (Fang, Ma, Wang
  2023): timesteps t = 0, 1, 2, ... until the loss falls below ``thr`` times its maximum.
* ``random``: seeded uniform scores (a baseline).

Everything here works on plain tensors (lists of A and B); the text-to-image family
(``diffattr.families.text_to_image``) builds the pruned adapters from the kept indices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from diffattr.errors import DiffattrError

IMPORTANCES = ("magnitude", "taylor", "diff-pruning", "random")


@dataclass
class LoRAPruning:
    """Which components of each layer are kept, and what that leaves."""

    kept: list[torch.Tensor]  # per layer: sorted int64 indices of the kept components
    importance: str
    keep: float  # requested share of LoRA parameters kept
    params_before: int
    params_after: int
    ranks_before: list[int]
    ranks_after: list[int]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kept_share(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "pruner": self.importance,
            "keep": self.keep,
            "ratio": round(1.0 - self.keep, 6),
            "params_before": self.params_before,
            "params_after": self.params_after,
            "kept_share": round(self.kept_share, 6),
            "components_before": int(sum(self.ranks_before)),
            "components_after": int(sum(self.ranks_after)),
            "layers_emptied": int(sum(1 for r in self.ranks_after if r == 0)),
            "importance": dict(self.info),
        }


# --------------------------------------------------------------------------- scores


def magnitude_scores(
    A: Sequence[torch.Tensor], B: Sequence[torch.Tensor], scale: float = 1.0
) -> list[torch.Tensor]:
    """``scale * ||a_j|| * ||b_j||`` of every component (per layer, shape (r,))."""
    out = []
    for a, b in zip(A, B, strict=True):
        a, b = a.detach().float(), b.detach().float()
        out.append(float(scale) * a.norm(dim=1) * b.norm(dim=0))
    return out


def taylor_scores(
    A: Sequence[torch.Tensor],
    B: Sequence[torch.Tensor],
    grad_A: Sequence[torch.Tensor],
    grad_B: Sequence[torch.Tensor],
    *,
    absolute_terms: bool = False,
) -> list[torch.Tensor]:
    """First-order Taylor scores of every component from the summed gradients:
    ``|sum w g|`` over the pair, or ``sum |w g|`` with ``absolute_terms``."""
    out = []
    for a, b, ga, gb in zip(A, B, grad_A, grad_B, strict=True):
        ta = a.detach().float() * ga.detach().float()  # (r, in)
        tb = b.detach().float() * gb.detach().float()  # (out, r)
        if absolute_terms:
            out.append(ta.abs().sum(1) + tb.abs().sum(0))
        else:
            out.append((ta.sum(1) + tb.sum(0)).abs())
    return out


def random_scores(ranks: Sequence[int], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.rand(int(r), generator=gen) for r in ranks]


def accumulate_gradients(
    params: Sequence[torch.Tensor],
    loss_at: Callable[[int], torch.Tensor],
    timesteps: Sequence[int],
    *,
    stop_ratio: float | None = None,
) -> tuple[list[torch.Tensor], list[float]]:
    """Gradients of ``loss_at(t)`` w.r.t. ``params`` summed over ``timesteps`` (in order);
    with ``stop_ratio``, stop after the first t whose loss is below ``stop_ratio`` times the
    largest loss so far (Diff-Pruning). Returns (gradients, losses)."""
    if not timesteps:
        raise DiffattrError("Taylor-type LoRA importance needs at least one timestep")
    grads = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    losses: list[float] = []
    loss_max = 0.0
    for t in timesteps:
        loss = loss_at(int(t))
        g = torch.autograd.grad(loss, list(params), allow_unused=True)
        for acc, gi in zip(grads, g):
            if gi is not None:
                acc += gi.detach().float()
        value = float(loss.detach())
        losses.append(value)
        loss_max = max(loss_max, value)
        if stop_ratio is not None and value < stop_ratio * loss_max:
            break
    return grads, losses


# --------------------------------------------------------------------------- selection


def select_components(
    scores: Sequence[torch.Tensor], sizes: Sequence[int], keep: float
) -> list[torch.Tensor]:
    """Remove components in ascending score order (ties: by layer, then index) until the
    kept parameters are at most ``keep`` times the total; ``sizes[l]`` is the parameter
    count of one component of layer l (in + out). Returns the kept indices per layer."""
    if not 0.0 < keep <= 1.0:
        raise DiffattrError(f"the kept share of LoRA parameters must be in (0, 1], got {keep}")
    if len(scores) != len(sizes):
        raise DiffattrError("one component size per LoRA layer is required")
    total = sum(int(s.numel()) * int(n) for s, n in zip(scores, sizes))
    target = keep * total
    order = sorted(
        ((float(v), layer, j) for layer, s in enumerate(scores) for j, v in enumerate(s.tolist())),
    )
    removed: list[set[int]] = [set() for _ in scores]
    remaining = total
    for _, layer, j in order:
        if remaining <= target + 1e-9:
            break
        removed[layer].add(j)
        remaining -= int(sizes[layer])
    return [
        torch.tensor([j for j in range(int(s.numel())) if j not in removed[i]], dtype=torch.int64)
        for i, s in enumerate(scores)
    ]


def plan_pruning(
    A: Sequence[torch.Tensor],
    B: Sequence[torch.Tensor],
    keep: float,
    importance: str = "magnitude",
    *,
    scale: float = 1.0,
    grads: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> LoRAPruning:
    """Score every rank-1 component with ``importance`` and choose the kept ones.

    ``grads`` (summed gradients of A and B, see ``accumulate_gradients``) are needed by
    ``taylor`` and ``diff-pruning``.
    """
    if importance not in IMPORTANCES:
        raise DiffattrError(
            f"unknown LoRA importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}"
        )
    for a, b in zip(A, B, strict=True):
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise DiffattrError(
                f"LoRA factors must be A (r, in) and B (out, r); got {tuple(a.shape)} and "
                f"{tuple(b.shape)}"
            )
    ranks = [int(a.shape[0]) for a in A]
    if importance == "magnitude":
        scores = magnitude_scores(A, B, scale)
    elif importance == "random":
        scores = random_scores(ranks, seed)
    else:
        if grads is None:
            raise DiffattrError(f"the {importance} importance needs the loss gradients")
        scores = taylor_scores(A, B, grads[0], grads[1], absolute_terms=importance != "taylor")
    sizes = [int(a.shape[1] + b.shape[0]) for a, b in zip(A, B)]
    kept = select_components(scores, sizes, keep)
    before = sum(r * s for r, s in zip(ranks, sizes))
    after = sum(len(k) * s for k, s in zip(kept, sizes))
    return LoRAPruning(
        kept=kept,
        importance=importance,
        keep=float(keep),
        params_before=int(before),
        params_after=int(after),
        ranks_before=ranks,
        ranks_after=[len(k) for k in kept],
        info=dict(info or {}),
    )


def prune_factors(
    A: Sequence[torch.Tensor], B: Sequence[torch.Tensor], kept: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The kept rows of each A and the kept columns of each B (copies)."""
    out_a, out_b = [], []
    for a, b, k in zip(A, B, kept, strict=True):
        k = k.to(a.device)
        out_a.append(a.detach()[k].clone())
        out_b.append(b.detach()[:, k].clone())
    return out_a, out_b
