"""The LoRA adapters of the ``text-to-image`` family: the family's model.

:class:`LoRAAdapters` holds ``A_l`` / ``B_l`` for each target linear layer of the base UNet
and nothing else: the frozen UNet is the base pipeline's (``text_to_image.pipeline``), whose
forward hooks add the active adapters' ``scale * B A dropout(x)``.
``lora_layers`` finds the target layers; ``write_lora`` / ``read_lora`` are the
``pytorch_lora_weights.safetensors`` file that ``StableDiffusionPipeline.load_lora_weights``
reads, with ``unet.<layer>.lora_A.weight`` / ``lora_B.weight`` and the LoRA config as adapter
metadata.

The scale alpha/r is folded into ``lora_B`` on disk and the metadata says alpha = rank per
layer, so a pruned LoRA (ranks differ per layer) loads with the same scale in diffusers with
or without the metadata.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.errors import DiffattrError
from diffattr.sparsify.lora import prune_factors
from diffattr.torchutils import count_parameters

WEIGHTS = "pytorch_lora_weights.safetensors"
PREFIX = "unet."


class LoRAAdapters(nn.Module):
    """The LoRA of a UNet: ``A_l`` (r_l x in_l) and ``B_l`` (out_l x r_l) for each named
    linear layer l with r_l > 0, the nominal rank r, alpha and dropout.

    The layer adds ``(alpha / r) * B_l A_l dropout(x)``; r stays the unpruned rank when
    components are removed, so the remaining ones keep their contribution. The frozen UNet is
    not part of this module.
    """

    def __init__(
        self,
        layers: list[tuple[str, int, int, int]],
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        pruned: bool = False,
    ) -> None:
        super().__init__()
        self.targets = [(name, int(i), int(o)) for name, i, o, _ in layers]
        self.layer_names = [name for name, _, _, r in layers if r > 0]
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.dropout = float(dropout)
        self.pruned = bool(pruned)
        kept = [(i, o, r) for _, i, o, r in layers if r > 0]
        self.A = nn.ParameterList([nn.Parameter(torch.zeros(r, i)) for i, _, r in kept])
        self.B = nn.ParameterList([nn.Parameter(torch.zeros(o, r)) for _, o, r in kept])
        self.index = {name: j for j, name in enumerate(self.layer_names)}

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def ranks(self) -> dict[str, int]:
        """Rank of every target layer (0 where no component is left)."""
        out = {name: 0 for name, _, _ in self.targets}
        for name, a in zip(self.layer_names, self.A):
            out[name] = int(a.shape[0])
        return out

    def extra_repr(self) -> str:
        n = count_parameters(self)
        return f"layers={len(self.layer_names)}/{len(self.targets)}, rank={self.rank}, params={n}"

    @torch.no_grad()
    def reset(self, seed: int) -> LoRAAdapters:
        """peft's initialisation: A Kaiming-uniform (a = sqrt 5), B zero (seeded)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for a in self.A:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        for b in self.B:
            b.zero_()
        return self

    def with_components(self, kept: list[torch.Tensor]) -> LoRAAdapters:
        """A copy keeping the components ``kept[j]`` of layer j (in ``layer_names`` order)."""

        A, B = prune_factors(list(self.A), list(self.B), kept)
        ranks = {name: int(a.shape[0]) for name, a in zip(self.layer_names, A)}
        layers = [(n, i, o, ranks.get(n, 0)) for n, i, o in self.targets]
        out = LoRAAdapters(layers, self.rank, self.alpha, self.dropout, pruned=True)
        with torch.no_grad():
            for dst, src in zip(out.A, (a for a in A if a.shape[0] > 0)):
                dst.copy_(src)
            for dst, src in zip(out.B, (b for b in B if b.shape[1] > 0)):
                dst.copy_(src)
        return out.to(self.A[0].device if len(self.A) else "cpu")

    def diffusers_state(self) -> dict[str, torch.Tensor]:
        """``<layer>.lora_A.weight`` / ``lora_B.weight`` with the scale folded into B."""
        out = {}
        for name, a, b in zip(self.layer_names, self.A, self.B):
            out[f"{name}.lora_A.weight"] = a.detach().float().cpu().contiguous()
            out[f"{name}.lora_B.weight"] = (b.detach().float() * self.scale).cpu().contiguous()
        return out

    def adapter_metadata(self) -> dict[str, Any]:
        """The peft ``LoraConfig`` of ``diffusers_state`` (scale 1 in every layer)."""
        ranks = [int(a.shape[0]) for a in self.A]
        if not ranks:
            return {}
        r = Counter(ranks).most_common(1)[0][0]
        pattern = {n: k for n, k in zip(self.layer_names, ranks) if k != r}
        return {
            "r": r,
            "lora_alpha": r,
            "rank_pattern": pattern,
            "alpha_pattern": dict(pattern),
            "target_modules": list(self.layer_names),
            "lora_dropout": self.dropout,
            "init_lora_weights": True,
        }


def lora_layers(unet: nn.Module, target_modules: list[str]) -> list[tuple[str, int, int]]:
    """(name, in, out) of the UNet's linear layers matched by ``target_modules`` (a name or
    a dotted suffix); a target that matches nothing is a one-line error."""
    found, used = [], set()
    for name, m in unet.named_modules():
        hit = [t for t in target_modules if name == t or name.endswith("." + t)]
        if hit and isinstance(m, nn.Linear):
            found.append((name, m.in_features, m.out_features))
            used.update(hit)
    missing = [t for t in target_modules if t not in used]
    if missing:
        raise DiffattrError(
            f"[family] target_modules {missing} match no linear layer of the base UNet "
            "(SD's attention projections are to_q, to_k, to_v, to_out.0)"
        )
    return found


def write_lora(directory: Path, adapters: LoRAAdapters) -> None:
    """``pytorch_lora_weights.safetensors`` in diffusers' format (nothing for no layers)."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state = adapters.diffusers_state()
    if not state:
        return
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        directory,
        unet_lora_layers=state,
        unet_lora_adapter_metadata=adapters.adapter_metadata(),
        safe_serialization=True,
    )


def read_lora(
    directory: Path,
    targets: list[tuple[str, int, int]],
    rank: int,
    alpha: float,
    dropout: float,
    pruned: bool,
) -> LoRAAdapters:
    """Adapters from ``write_lora``'s file, checked against the base's layers and ``rank``
    (a layer of another shape or a higher rank is a one-line error)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS
    state: dict[str, torch.Tensor] = {}
    if path.is_file():
        try:
            state = dict(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise DiffattrError(f"{path} is unreadable ({e}); delete the model to redo it") from e
    layers, tensors = [], []
    scale = alpha / rank
    for name, i, o in targets:
        a = state.pop(f"{PREFIX}{name}.lora_A.weight", None)
        b = state.pop(f"{PREFIX}{name}.lora_B.weight", None)
        if (a is None) != (b is None):
            raise DiffattrError(f"{path}: layer {name} has only one of lora_A / lora_B")
        if a is None:
            layers.append((name, i, o, 0))
            continue
        r = int(a.shape[0])
        if a.shape != (r, i) or b.shape != (o, r):
            raise DiffattrError(
                f"{path}: layer {name} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, "
                f"but the base's layer maps {i} -> {o} features (another base?)"
            )
        if r > rank or (r != rank and not pruned):
            raise DiffattrError(
                f"{path}: layer {name} has LoRA rank {r}, but the LoRA's rank is {rank}"
            )
        layers.append((name, i, o, r))
        tensors.append((a.float(), b.float() / scale))
    if state:
        extra = sorted(state)[0]
        raise DiffattrError(
            f"{path} holds weights for layers that are not LoRA targets of this base "
            f"(e.g. {extra}); check [family] target_modules"
        )
    out = LoRAAdapters(layers, rank, alpha, dropout, pruned=pruned)
    with torch.no_grad():
        for (a, b), pa, pb in zip(tensors, out.A, out.B):
            pa.copy_(a)
            pb.copy_(b)
    return out
