"""Latents of a frozen autoencoder, computed once per (autoencoder, images) and cached.

Latent families (``latent``, ``text-to-image``) train and fine-tune on the latents of their
training images; encoding runs once per run, never inside a fine-tune. The cache lives in
the run's cache folder and is keyed by content: a digest of the autoencoder's weights and
config, the images' bytes and the encoding options — so a changed autoencoder or changed
images give a new entry, never stale latents.

    <cache_dir>/latents/<key>.safetensors   {"latents": (N, c, h, w) float32}
    <cache_dir>/latents/<key>.json          what the key hashes, and the latents' shape

Text-to-image families also cache their captions' text-encoder embeddings the same way
(``cached_text_embeddings``: one entry per text encoder and tokenised captions), so
fine-tunes never run the text encoder either.

    <cache_dir>/captions/<key>.safetensors  {"embeddings": (U, L, D), "index": (N,)}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffattr.errors import DiffattrError
from diffattr.fileio import atomic_write_text, content_key

#: Version of the encoding procedure (part of every key).
VERSION = 1


def module_digest(module: nn.Module) -> str:
    """Hash of a module's class, config (if any) and every parameter and buffer.

    Config keys starting with ``_`` (diffusers' ``_name_or_path``, ``_use_default_values``,
    ``_diffusers_version``) say where and how a model was loaded, not what it computes, and
    are left out: the same weights read from two directories have one digest.
    """
    h = hashlib.sha256(type(module).__name__.encode())
    config = getattr(module, "config", None)
    if config is not None and not isinstance(config, dict) and hasattr(config, "to_dict"):
        config = config.to_dict()  # transformers' PretrainedConfig
    if config is not None:
        public = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
        h.update(json.dumps(public, sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        a = t.detach().cpu().contiguous()
        h.update(str(a.dtype).encode() + str(tuple(a.shape)).encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()[:16]


def tensor_digest(x: torch.Tensor) -> str:
    a = x.detach().cpu().float().contiguous()
    h = hashlib.sha256(str(tuple(a.shape)).encode())
    h.update(a.numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode(
    autoencoder: nn.Module,
    images: torch.Tensor,
    *,
    scaling_factor: float,
    sample: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Latents ``scaling_factor * E(x)`` of images (N, C, H, W) in [-1, 1], on the CPU.

    ``AutoencoderKL``: the posterior mean (or a seeded sample with ``sample=True``);
    ``VQModel``: the pre-quantisation latents (``encode(x).latents``), as diffusers'
    latent pipelines expect.
    """
    autoencoder = autoencoder.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size].to(device, torch.float32)
        enc = autoencoder.encode(x)
        dist = getattr(enc, "latent_dist", None)
        if dist is not None:
            if sample:
                noise = torch.randn(dist.mean.shape, generator=gen).to(device)
                z = dist.mean + dist.std * noise
            else:
                z = dist.mean
        else:
            z = enc.latents
        out.append((z * scaling_factor).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode(
    autoencoder: nn.Module,
    latents: torch.Tensor,
    *,
    scaling_factor: float,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Images in [-1, 1] (N, C, H, W), on the CPU, from scaled latents."""
    autoencoder = autoencoder.to(device).eval()
    out = []
    for s in range(0, len(latents), batch_size):
        z = latents[s : s + batch_size].to(device, torch.float32) / scaling_factor
        out.append(autoencoder.decode(z).sample.clamp(-1, 1).float().cpu())
    return torch.cat(out)


def cached_latents(
    autoencoder: nn.Module,
    images: torch.Tensor,
    cache_dir: str | Path | None,
    *,
    scaling_factor: float,
    sample: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``encode(...)`` from the content-keyed cache under ``cache_dir`` (computed and stored
    on a miss; no cache when ``cache_dir`` is None). Returns (latents, record)."""
    from safetensors.torch import load_file, save_file

    record = {
        "version": VERSION,
        "autoencoder": module_digest(autoencoder),
        "images": tensor_digest(images),
        "scaling_factor": float(scaling_factor),
        "sample": bool(sample),
        "seed": int(seed) if sample else None,
    }
    key = content_key(record, length=20)
    if cache_dir is not None:
        stem = Path(cache_dir) / "latents" / key
        weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        if weights.is_file() and meta.is_file():
            try:
                z = load_file(str(weights))["latents"]
                if z.shape[0] == images.shape[0]:
                    return z, {**record, "key": key, "cached": True}
            except Exception:  # noqa: BLE001 - a broken entry is recomputed, not trusted
                pass
    z = encode(
        autoencoder,
        images,
        scaling_factor=scaling_factor,
        sample=sample,
        seed=seed,
        batch_size=batch_size,
        device=device,
    )
    if not torch.isfinite(z).all():
        raise DiffattrError("the autoencoder gave non-finite latents for the training images")
    if cache_dir is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(f".{weights.name}.tmp")
        save_file({"latents": z.contiguous()}, str(tmp))
        tmp.replace(weights)
        atomic_write_text(meta, json.dumps({**record, "shape": list(z.shape)}, indent=2))
    return z, {**record, "key": key, "cached": False}


# --------------------------------------------------------------------------- caption embeddings


def token_ids(tokenizer, texts: list[str], max_length: int | None = None) -> torch.Tensor:
    """Token ids (N, L) of texts, padded to the tokenizer's ``model_max_length`` (or
    ``max_length``) and truncated, as Stable Diffusion pipelines encode prompts."""
    length = int(max_length or tokenizer.model_max_length)
    out = tokenizer(
        list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    return out.input_ids


@torch.no_grad()
def encode_text(
    text_encoder: nn.Module,
    ids: torch.Tensor,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The text encoder's last hidden states (N, L, D) of token ids, float32 on the CPU
    (Stable Diffusion's ``encoder_hidden_states``)."""
    text_encoder = text_encoder.to(device).eval()
    out = []
    for s in range(0, len(ids), batch_size):
        hidden = text_encoder(ids[s : s + batch_size].to(device))[0]
        out.append(hidden.float().cpu())
    return torch.cat(out)


def cached_text_embeddings(
    text_encoder: nn.Module,
    tokenizer,
    texts: list[str],
    cache_dir: str | Path | None,
    *,
    max_length: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Embeddings (N, L, D) of ``texts`` (e.g. one caption per training image) from the
    content-keyed cache under ``cache_dir``; the text encoder runs once per *distinct* text,
    on a miss only. The key hashes the text encoder's weights and the token ids, so another
    encoder or another tokenisation gives a new entry.

        <cache_dir>/captions/<key>.safetensors   {"embeddings": (U, L, D), "index": (N,)}
    """
    from safetensors.torch import load_file, save_file

    distinct = sorted(set(texts))
    where = {t: i for i, t in enumerate(distinct)}
    index = torch.tensor([where[t] for t in texts], dtype=torch.int64)
    ids = token_ids(tokenizer, distinct, max_length)
    record = {
        "version": VERSION,
        "text_encoder": module_digest(text_encoder),
        "tokens": tensor_digest(ids.double()),
        "index": tensor_digest(index.double()),
    }
    key = content_key(record, length=20)
    if cache_dir is not None:
        stem = Path(cache_dir) / "captions" / key
        weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
        if weights.is_file() and meta.is_file():
            try:
                stored = load_file(str(weights))
                table, idx = stored["embeddings"], stored["index"]
                if table.shape[0] == len(distinct) and torch.equal(idx, index):
                    return table[idx], {**record, "key": key, "cached": True}
            except Exception:  # noqa: BLE001 - a broken entry is recomputed, not trusted
                pass
    table = encode_text(text_encoder, ids, batch_size=batch_size, device=device)
    if not torch.isfinite(table).all():
        raise DiffattrError("the text encoder gave non-finite embeddings for the captions")
    if cache_dir is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        tmp = weights.with_name(f".{weights.name}.tmp")
        save_file({"embeddings": table.contiguous(), "index": index}, str(tmp))
        tmp.replace(weights)
        info = {**record, "distinct": len(distinct), "shape": [len(texts), *table.shape[1:]]}
        atomic_write_text(meta, json.dumps(info, indent=2))
    return table[index], {**record, "key": key, "cached": False}
