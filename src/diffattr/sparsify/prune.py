"""Structured (channel) pruning of diffusers ``UNet2DModel``s with torch-pruning.

The dependency graph of torch-pruning (Fang et al. 2023, "DepGraph: Towards Any Structural
Pruning", CVPR) finds the groups of coupled channels (a conv's output channels, the group
norms and convs that read them, residual additions and skip concatenations); each group is
ranked by an importance score and its least important channels are removed from every
layer of the group at once. Importance scores, registered by name in ``PRUNERS``:

* ``magnitude``: group L2 norm of the weights (torch-pruning's GroupMagnitudeImportance);
* ``taylor``: first-order Taylor score |w * dL/dw| of the diffusion loss, gradients summed
  over evenly spaced timesteps on a batch of images;
* ``random``: seeded uniform scores (a baseline);
* ``diff-pruning``: Diff-Pruning (Fang, Ma, Wang 2023, "Structural Pruning for Diffusion
  Models", NeurIPS): Taylor scores with gradients accumulated over timesteps t = 0, 1, 2, ...
  until the loss falls below ``thr`` times the largest loss so far, so the informative
  early (low-noise) steps dominate.

The sparsified-unlearning estimator (sFT: Lin, Lu, Kim, Lee 2025, "Efficient Shapley Values
for Attributing Global Properties of Diffusion Models to Data Groups", ICLR) prunes the full
model once, fine-tunes the pruned model on all data, then fine-tunes it briefly on each
subset. We prune the **EMA weights** of the full model: they are the weights the full model
samples with (the behaviors being attributed are those of the EMA model), they are smoother
than the raw weights so magnitude and Taylor scores are less noisy, and the Diff-Pruning
reference code prunes the released (EMA) DDPM checkpoints as well.

Where torch-pruning and diffusers disagree, and what is done here:

* **GroupNorm.** torch-pruning keeps ``num_groups`` and removes the same number of channels
  from every group; with the small presets' 2- or 4-channel groups a 0.3 ratio then becomes
  0 % or 50 %. Here the *group size* is kept instead: each dependency group keeps a
  multiple of the channels-per-group of every GroupNorm it feeds (also through skip
  concatenations, whose groups may straddle the concatenation boundary), chosen nearest to
  ``(1 - ratio) * channels``, and every GroupNorm's ``num_groups`` becomes
  ``channels / group_size`` afterwards. The effective ratios are in the report.
* **Attention.** diffusers' ``Attention`` reshapes q/k/v to ``(heads, head_dim)`` with
  ``attn.heads`` fixed; torch-pruning couples q, k, v and ``to_out`` (it treats
  ``scaled_dot_product_attention`` as element-wise). Heads are kept and every head loses
  the same number of dimensions (each head drops its own least important ones), so the
  reshape stays valid; ``attn.scale`` is set to ``head_dim ** -0.5`` of the new width.
* **Static attributes.** ``Upsample2D``/``Downsample2D.channels`` (asserted in forward),
  ``ResnetBlock2D.in/out_channels`` and the ``Attention`` dims are synchronised with the
  pruned layers (``sync_attributes``).
* ``conv_out`` keeps its output channels (the image channels); its input is pruned.
* **Class embedding.** A class-conditional UNet adds ``class_embedding(labels)`` to the
  time embedding; the graph is traced with class labels, so the embedding's width is pruned
  in the same group as the time embedding's output (every label keeps its row).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from diffattr.diffusion.architectures import SCHEDULER_CONFIG
from diffattr.errors import DiffattrError
from diffattr.registry import Registry
from diffattr.torchutils import count_parameters

ImportanceFactory = Callable[[nn.Module, "ImportanceContext"], Any]
PRUNERS: Registry[ImportanceFactory] = Registry("pruner")


@dataclass
class ImportanceContext:
    """What an importance factory may use; it may accumulate gradients in the model."""

    example_images: torch.Tensor | None
    thr: float
    seed: int
    max_timesteps: int | None
    loss_fn: Callable | None = None  # (model, x0, t, noise) -> the diffusion loss
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PruneReport:
    """What pruning did: sizes before/after and the width of every changed layer."""

    pruner: str
    ratio: float
    round_to: int | None
    seed: int
    params_before: int
    params_after: int
    macs_before: float
    macs_after: float
    seconds: float
    groups: list[dict[str, Any]]
    layers: dict[str, dict[str, list[int]]]
    importance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the distinct output widths of the pruned model's convolutions (a CPU computes them in
    #: blocks of channels, so these decide what pruning saves per step)
    conv_widths: list[int] = field(default_factory=list)

    @property
    def param_ratio(self) -> float:
        """Share of parameters removed."""
        return 1.0 - self.params_after / self.params_before

    @property
    def mac_ratio(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.pruner} pruning at ratio {self.ratio:g}: parameters "
            f"{self.params_before:,} -> {self.params_after:,} ({100 * self.param_ratio:.1f} % "
            f"removed), MACs {self.macs_before / 1e6:,.1f} M -> {self.macs_after / 1e6:,.1f} M "
            f"({100 * self.mac_ratio:.1f} % removed)"
        )


# --------------------------------------------------------------------------- importances


class _SeededRandomImportance(tp.importance.Importance):
    """Uniform random scores from a private generator (reproducible, global RNG untouched)."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        _, idxs = group[0]
        return torch.rand(len(idxs), generator=self.gen)


@PRUNERS.register("magnitude")
def magnitude_importance(unet: nn.Module, ctx: ImportanceContext):
    """Group L2 magnitude of the coupled weights (no data needed)."""
    return tp.importance.GroupMagnitudeImportance(p=2)


@PRUNERS.register("random")
def random_importance(unet: nn.Module, ctx: ImportanceContext):
    return _SeededRandomImportance(ctx.seed)


@PRUNERS.register("taylor")
def taylor_importance(unet: nn.Module, ctx: ImportanceContext):
    """|sum_i w_i dL/dw_i| per channel, gradients summed over evenly spaced timesteps."""
    T = _num_train_timesteps()
    n = min(T, ctx.max_timesteps or T)
    steps = torch.linspace(0, T - 1, n).round().long().unique().tolist()
    losses = _accumulate_gradients(unet, ctx, steps, stop_ratio=None)
    ctx.info.update(timesteps=len(losses), loss_first=losses[0], loss_last=losses[-1])
    return tp.importance.GroupTaylorImportance(multivariable=True)


@PRUNERS.register("diff-pruning")
def diff_pruning_importance(unet: nn.Module, ctx: ImportanceContext):
    """Diff-Pruning: Taylor scores over t = 0, 1, 2, ... until loss_t < thr * max loss."""
    T = _num_train_timesteps()
    steps = list(range(min(T, ctx.max_timesteps or T)))
    losses = _accumulate_gradients(unet, ctx, steps, stop_ratio=ctx.thr)
    ctx.info.update(timesteps=len(losses), loss_max=max(losses), loss_last=losses[-1])
    return tp.importance.GroupTaylorImportance(multivariable=False)


def _num_train_timesteps() -> int:
    return int(SCHEDULER_CONFIG["num_train_timesteps"])


def _accumulate_gradients(
    unet: nn.Module, ctx: ImportanceContext, steps: list[int], stop_ratio: float | None
) -> list[float]:
    """Sum the gradients of the epsilon loss over ``steps`` (same images and noise at each t)."""
    if ctx.loss_fn is None:
        raise DiffattrError("Taylor-type pruners need the model's diffusion loss (loss_fn)")
    if ctx.example_images is None or len(ctx.example_images) == 0:
        raise DiffattrError("Taylor-type pruners need example images (a batch of training data)")
    device = next(unet.parameters()).device
    x0 = ctx.example_images.to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(ctx.seed)).to(device)
    was_training = unet.training
    unet.eval()  # no dropout: the scores should not depend on dropout masks
    unet.zero_grad(set_to_none=True)
    losses: list[float] = []
    loss_max = 0.0
    for t in steps:
        tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
        loss = ctx.loss_fn(unet, x0, tt, noise)
        loss.backward()
        value = float(loss.detach())
        losses.append(value)
        loss_max = max(loss_max, value)
        if stop_ratio is not None and value < stop_ratio * loss_max:
            break
    unet.train(was_training)
    return losses


# --------------------------------------------------------------------------- pruning


def prune_unet(
    unet: nn.Module,
    ratio: float = 0.3,
    pruner: str = "magnitude",
    example_images: torch.Tensor | None = None,
    thr: float = 0.05,
    seed: int = 0,
    round_to: int | None = None,
    max_timesteps: int | None = None,
    loss_fn: Callable | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``unet``; the input is left unchanged.

    Args:
        unet: a diffusers ``UNet2DModel`` (pass the EMA weights of the full model).
        ratio: share of channels removed in every dependency group, in (0, 1); group norms
            and attention heads round it (see the module docstring); the report holds the
            widths actually kept.
        pruner: a name registered in ``PRUNERS``.
        example_images: (N, C, H, W) in [-1, 1]; required by ``taylor``/``diff-pruning``
            (gradient batch); otherwise only their shape is used.
        thr: Diff-Pruning's stopping threshold on loss_t / max loss.
        seed: seed of the Taylor noise and of the random pruner.
        round_to: keep channel counts (head dims for attention) at multiples of this.
        max_timesteps: at most this many timesteps for the Taylor pruners (default: all
            1000 for ``diff-pruning`` until the threshold; 1000 evenly spaced for ``taylor``).
        loss_fn: ``(model, x0, t, noise) -> loss``, the model family's diffusion loss;
            required by the Taylor pruners.

    Returns:
        The pruned UNet (carrying ``diffattr_pruning``, a JSON-able dict of the report) and
        the ``PruneReport``.
    """
    if not isinstance(ratio, int | float) or not 0.0 < float(ratio) < 1.0:
        raise DiffattrError(f"pruning ratio must be in (0, 1), got {ratio}")
    factory = PRUNERS.get(pruner)
    if round_to is not None and round_to < 1:
        raise DiffattrError(f"round_to must be a positive integer, got {round_to}")
    if not 0.0 < thr < 1.0:
        raise DiffattrError(f"thr must be in (0, 1), got {thr}")
    t0 = time.perf_counter()
    model = copy.deepcopy(unet)
    previous = getattr(model, "diffattr_pruning", None)
    model.requires_grad_(True)
    device = next(model.parameters()).device
    example = _example_inputs(model, example_images, device)

    params_before = count_parameters(model)
    macs_before = count_macs(model, example)
    widths_before = layer_widths(model)

    DG = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    ctx = ImportanceContext(example_images, float(thr), int(seed), max_timesteps, loss_fn)
    importance = factory(model, ctx)

    heads_of = {}
    for m in model.modules():
        if _is_attention(m):
            for lin in (m.to_q, m.to_k, m.to_v):
                heads_of[lin] = int(m.heads)
    group_sizes = {
        m: m.num_channels // m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)
    }
    names = {m: n for n, m in model.named_modules()}
    ignored = [model.conv_out] if hasattr(model, "conv_out") else []

    plans = []
    with torch.no_grad():
        for group in DG.get_all_groups(
            ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]
        ):
            root = group[0].dep.target.module
            root_fn = group[0].dep.handler
            channels = DG.get_out_channels(root)
            structure = _group_structure(DG, group, channels, heads_of, group_sizes)
            imp = importance(group)
            if imp is None:
                continue
            remove, kept, unit = _choose(imp.float().cpu(), channels, ratio, round_to, structure)
            plans.append(
                dict(
                    root=names.get(root, "?"),
                    module=root,
                    fn=root_fn,
                    remove=remove,
                    entry=dict(
                        root=names.get(root, "?"),
                        channels=channels,
                        kept=kept,
                        unit=unit,
                        heads=structure["heads"],
                    ),
                )
            )
    model.zero_grad(set_to_none=True)

    for plan in plans:
        if not plan["remove"]:
            continue
        group = DG.get_pruning_group(plan["module"], plan["fn"], plan["remove"])
        if not DG.check_pruning_group(group):
            raise DiffattrError(f"pruning would remove every channel of {plan['root']}")
        group.prune()

    notes = []
    for gn, size in group_sizes.items():
        if gn.num_channels % size == 0:
            gn.num_groups = gn.num_channels // size
        else:  # only when a group feeding it could not be pruned to whole groups
            gn.num_groups = _closest_divisor(gn.num_channels, gn.num_channels / size)
            notes.append(
                f"{names[gn]}: {gn.num_channels} channels are not a multiple of the group size "
                f"{size}; using {gn.num_groups} groups"
            )
    sync_attributes(model)
    model.zero_grad(set_to_none=True)
    model.requires_grad_(True)

    with torch.no_grad():  # fail here, not in the first training step, if shapes disagree
        model.eval()
        model(**example)
    model.train()

    params_after = count_parameters(model)
    macs_after = count_macs(model, example)
    widths_after = layer_widths(model)
    layers = {
        name: {"before": widths_before[name], "after": w}
        for name, w in widths_after.items()
        if widths_before.get(name) != w
    }
    report = PruneReport(
        pruner=pruner,
        ratio=float(ratio),
        round_to=round_to,
        seed=int(seed),
        params_before=int(params_before),
        params_after=int(params_after),
        macs_before=float(macs_before),
        macs_after=float(macs_after),
        seconds=round(time.perf_counter() - t0, 3),
        groups=[p["entry"] for p in plans],
        layers=layers,
        importance=dict(ctx.info, thr=float(thr)) if ctx.info else {},
        notes=notes,
        conv_widths=sorted({m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)}),
    )
    info = report.to_dict()
    if previous is not None:
        info["previous"] = previous
    model.diffattr_pruning = info
    return model, report


def _example_inputs(
    unet: nn.Module, images: torch.Tensor | None, device: torch.device
) -> dict[str, torch.Tensor]:
    if images is not None and len(images) > 0:
        shape = tuple(images.shape[1:])
    else:
        cfg = unet.config
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    example = {
        "sample": torch.zeros((1, *shape), device=device),
        "timestep": torch.ones((1,), dtype=torch.long, device=device),
    }
    if getattr(unet.config, "num_class_embeds", None):
        # a class-conditional UNet: trace its class embedding too, so that torch-pruning
        # couples the embedding's width with the time embedding it is added to
        example["class_labels"] = torch.zeros((1,), dtype=torch.long, device=device)
    return example


def _is_attention(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("to_q", "to_k", "to_v", "to_out", "heads"))


def _group_structure(DG, group, channels: int, heads_of: dict, group_sizes: dict) -> dict[str, Any]:
    """Constraints on the kept channel count of one dependency group.

    ``unit``: the kept count must be a multiple of it (so every GroupNorm fed by the group
    keeps whole groups of its original size); ``heads``: number of attention heads when the
    group is the inner dimension of an attention layer.
    """
    per_norm: dict[nn.Module, set[int]] = {}
    heads = None
    for item in group:
        dep, idxs = item.dep, tp._helpers.to_plain_idxs(item.idxs)
        module = dep.target.module
        if isinstance(module, nn.GroupNorm) and module in group_sizes:
            per_norm.setdefault(module, set()).update(int(i) for i in idxs)
        if module in heads_of and DG.is_out_channel_pruning_fn(dep.handler):
            heads = heads_of[module]
    unit = 1
    for norm, idx in per_norm.items():
        size = group_sizes[norm]
        mult = max(1, len(idx) // channels)  # a channel can reach a norm twice (skips)
        unit = math.lcm(unit, size // math.gcd(size, mult))
    if heads is not None and unit > 1:
        raise DiffattrError("internal error: a group norm and attention heads share channels")
    if heads is not None and channels % heads:
        raise DiffattrError(f"attention width {channels} is not divisible by {heads} heads")
    return {"unit": unit, "heads": heads}


def _closest_divisor(n: int, target: float) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), -d))


def _nearest_multiple(x: float, unit: int, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, math.floor(x / unit + 0.5) * unit)))


def _choose(
    imp: torch.Tensor, channels: int, ratio: float, round_to: int | None, structure: dict
) -> tuple[list[int], int, int]:
    """Root-channel indices to remove, the kept count and the rounding unit."""
    step = round_to or 1
    heads = structure["heads"]
    if heads:
        head_dim = channels // heads
        unit = step if step < head_dim else 1
        keep_per_head = _nearest_multiple(head_dim * (1 - ratio), unit, unit, head_dim)
        remove = []
        for h in range(heads):
            scores = imp[h * head_dim : (h + 1) * head_dim]
            order = torch.argsort(scores, stable=True)[: head_dim - keep_per_head]
            remove += (order + h * head_dim).tolist()
        return sorted(remove), keep_per_head * heads, unit
    unit = math.lcm(structure["unit"], step)
    if unit >= channels:
        return [], channels, unit
    kept = _nearest_multiple(channels * (1 - ratio), unit, unit, channels)
    order = torch.argsort(imp, stable=True)[: channels - kept]
    return sorted(order.tolist()), kept, unit


def sync_attributes(unet: nn.Module) -> None:
    """Make diffusers' static width attributes agree with the (pruned) layers."""
    for m in unet.modules():
        kind = type(m).__name__
        if kind in ("Upsample2D", "Downsample2D"):
            conv = getattr(m, "conv", None)
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d):
                m.channels = conv.in_channels
                m.out_channels = conv.out_channels
        elif kind == "ResnetBlock2D":
            m.in_channels = m.conv1.in_channels
            m.out_channels = m.conv2.out_channels
        elif _is_attention(m):
            m.query_dim = m.to_q.in_features
            m.inner_dim = m.to_q.out_features
            m.inner_kv_dim = m.to_k.out_features
            m.out_dim = m.to_out[0].out_features
            if getattr(m, "scale_qk", True):
                m.scale = (m.inner_dim // m.heads) ** -0.5


def layer_widths(unet: nn.Module) -> dict[str, list[int]]:
    """[in, out] of every Conv2d/Linear, [num_groups, channels] of every GroupNorm,
    [entries, width] of every Embedding (a class-conditional UNet's labels)."""
    out: dict[str, list[int]] = {}
    for name, m in unet.named_modules():
        if isinstance(m, nn.Embedding):
            out[name] = [m.num_embeddings, m.embedding_dim]
        elif isinstance(m, nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.Linear):
            out[name] = [m.in_features, m.out_features]
        elif isinstance(m, nn.GroupNorm):
            out[name] = [m.num_groups, m.num_channels]
    return out


def count_macs(unet: nn.Module, example: dict[str, torch.Tensor]) -> float:
    """Multiply-accumulates of one forward pass on ``example`` (torch-pruning's counter)."""
    with contextlib.redirect_stdout(io.StringIO()):
        macs, _ = tp.utils.count_ops_and_params(unet, example)
    return float(macs)
