"""Saving and loading pruned UNets without pickle.

A pruned ``UNet2DModel`` no longer matches its diffusers config, so ``save_pretrained`` /
``from_pretrained`` cannot round-trip it. A pruned UNet directory holds instead::

    pruned.json                          the dense diffusers config, the shape of every
                                         Conv2d / Linear / GroupNorm (with num_groups) /
                                         Embedding and the pruning report
                                         (``diffattr_pruning``)
    diffusion_pytorch_model.safetensors  the weights

Loading builds the dense UNet from the config on the meta device (no memory, no RNG use),
replaces every layer whose recorded shape differs by a new layer of that shape, fixes the
width attributes diffusers keeps (``sync_attributes``), and loads the weights strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffattr.errors import DiffattrError
from diffattr.sparsify.prune import sync_attributes

PRUNED_MARKER = "pruned.json"
FORMAT = "diffattr.pruned-unet"
VERSION = 1
WEIGHTS = "diffusion_pytorch_model.safetensors"


def _spec(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.Conv2d):
        return {
            "type": "Conv2d",
            "in": m.in_channels,
            "out": m.out_channels,
            "kernel_size": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation),
            "groups": m.groups,
            "bias": m.bias is not None,
            "padding_mode": m.padding_mode,
        }
    if isinstance(m, nn.Linear):
        return {
            "type": "Linear",
            "in": m.in_features,
            "out": m.out_features,
            "bias": m.bias is not None,
        }
    if isinstance(m, nn.Embedding):
        return {"type": "Embedding", "num": m.num_embeddings, "dim": m.embedding_dim}
    if isinstance(m, nn.GroupNorm):
        return {
            "type": "GroupNorm",
            "num_groups": m.num_groups,
            "num_channels": m.num_channels,
            "eps": m.eps,
            "affine": m.affine,
        }
    return None


def _build(spec: dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    if kind == "Conv2d":
        padding = spec["padding"]
        return nn.Conv2d(
            spec["in"],
            spec["out"],
            kernel_size=tuple(spec["kernel_size"]),
            stride=tuple(spec["stride"]),
            padding=padding if isinstance(padding, str) else tuple(padding),
            dilation=tuple(spec["dilation"]),
            groups=spec["groups"],
            bias=spec["bias"],
            padding_mode=spec["padding_mode"],
        )
    if kind == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if kind == "Embedding":
        return nn.Embedding(spec["num"], spec["dim"])
    if kind == "GroupNorm":
        return nn.GroupNorm(
            spec["num_groups"], spec["num_channels"], eps=spec["eps"], affine=spec["affine"]
        )
    raise DiffattrError(f"pruned checkpoint: unknown layer type {kind!r}")


def save_pruned_unet(unet: nn.Module, directory: str | Path) -> Path:
    """Write ``pruned.json`` and the safetensors weights of a pruned UNet into ``directory``."""
    info = getattr(unet, "diffattr_pruning", None)
    if info is None:
        raise DiffattrError("save_pruned_unet: the UNet carries no pruning information")
    if not hasattr(unet, "to_json_string"):
        raise DiffattrError(f"save_pruned_unet: unsupported model type {type(unet).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    modules = {name: s for name, m in unet.named_modules() if (s := _spec(m)) is not None}
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(unet).__name__,
        "config": json.loads(unet.to_json_string()),
        "modules": modules,
        "pruning": info,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / PRUNED_MARKER).write_text(json.dumps(payload, indent=1))
    return directory


def is_pruned_unet_dir(directory: str | Path) -> bool:
    return (Path(directory) / PRUNED_MARKER).is_file()


def load_pruned_unet(directory: str | Path) -> nn.Module:
    """Rebuild a pruned UNet saved by ``save_pruned_unet`` (on the CPU)."""
    from diffusers import UNet2DModel

    directory = Path(directory)
    marker = directory / PRUNED_MARKER
    if not marker.is_file():
        raise DiffattrError(f"no pruned UNet in {directory} ({PRUNED_MARKER} missing)")
    try:
        payload = json.loads(marker.read_text())
    except json.JSONDecodeError as e:
        raise DiffattrError(f"{marker}: invalid JSON: {e}") from None
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise DiffattrError(f"{marker}: not a diffattr pruned UNet (format/version mismatch)")
    if payload.get("class") != "UNet2DModel":
        raise DiffattrError(f"{marker}: unsupported model class {payload.get('class')!r}")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise DiffattrError(f"pruned UNet weights missing: {weights}")

    with torch.device("meta"):
        unet = UNet2DModel.from_config(payload["config"])
        existing = dict(unet.named_modules())
        for name, spec in payload["modules"].items():
            current = existing.get(name)
            if current is None:
                raise DiffattrError(f"{marker}: layer {name!r} does not exist in the config")
            if _spec(current) == spec:
                continue
            parent_name, _, child = name.rpartition(".")
            parent = unet.get_submodule(parent_name) if parent_name else unet
            setattr(parent, child, _build(spec))
    sync_attributes(unet)
    state = load_file(str(weights), device="cpu")
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise DiffattrError(
            f"{weights}: weights do not match pruned.json ({first[1] if len(first) > 1 else e})"
        ) from None
    leftover = [
        n for n, t in list(unet.named_parameters()) + list(unet.named_buffers()) if t.is_meta
    ]
    if leftover:
        raise DiffattrError(f"{weights}: tensors missing after loading: {', '.join(leftover[:5])}")
    unet.diffattr_pruning = payload["pruning"]
    return unet.eval()
