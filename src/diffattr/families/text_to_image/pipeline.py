"""The base of the ``text-to-image`` family: the frozen parts of a Stable-Diffusion-style
pipeline, hooked for LoRA.

The base
    A local diffusers directory with ``unet/`` (``UNet2DConditionModel``), ``vae/``
    (``AutoencoderKL``), ``text_encoder/`` (CLIP), ``tokenizer/`` and ``scheduler/``, read
    without downloads and without pickle (safetensors only), or ``demo``: the embedded model
    the package builds and caches (``diffattr.families.tiny_t2i``). The UNet and text encoder
    load in ``dtype`` (float16 / bfloat16 for GPU users); the autoencoder stays float32.

:class:`BasePipeline` holds the loaded parts (memoised prompt embeddings, the VAE's scaling
factor and downsampling, the scheduler config) and the forward hooks on the UNet's target
layers that add the active :class:`~diffattr.families.text_to_image.lora.LoRAAdapters`;
``load_base`` loads and checks a directory (one base per process, cached); ``base_digest``,
``check_base_dir`` and ``_init_config`` (the scheduler config's keys a diffusers scheduler
takes) are the helpers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffattr.errors import DiffattrError
from diffattr.families.latent_cache import encode_text, token_ids
from diffattr.families.settings import TextToImageSettings
from diffattr.families.text_to_image.lora import LoRAAdapters, lora_layers
from diffattr.fileio import file_sha256

#: Components of a Stable Diffusion pipeline directory and the file each must have.
COMPONENTS = {
    "unet": "config.json",
    "vae": "config.json",
    "text_encoder": "config.json",
    "tokenizer": None,  # tokenizer.json, or vocab.json + merges.txt
    "scheduler": "scheduler_config.json",
}


@dataclass
class BasePipeline:
    """The frozen parts of a Stable-Diffusion-style pipeline, hooked for LoRA."""

    path: Path
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    targets: list[tuple[str, int, int]]
    active: LoRAAdapters | None = None
    _digest: str | None = None
    _embeddings: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @property
    def scaling_factor(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def digest(self) -> str:
        """Content digest of the base directory (a demo base: its cache key)."""
        if self._digest is None:
            self._digest = base_digest(self.path)
        return self._digest

    def hook(self, name: str):
        def add_lora(module: nn.Module, args: tuple, output: torch.Tensor):
            ad = self.active
            if ad is None:
                return None
            j = ad.index.get(name)
            if j is None:
                return None
            x = args[0]
            if ad.training and ad.dropout > 0:
                x = F.dropout(x, ad.dropout, training=True)
            a, b = ad.A[j], ad.B[j]
            delta = F.linear(F.linear(x, a.to(x.dtype)), b.to(x.dtype))
            return output + delta * ad.scale

        return add_lora

    @contextlib.contextmanager
    def using(self, adapters: LoRAAdapters | None):
        previous, self.active = self.active, adapters
        try:
            yield
        finally:
            self.active = previous

    def embed(self, texts: tuple[str, ...], device) -> torch.Tensor:
        """Text-encoder embeddings (len, L, D) of prompts, float32 on the CPU (memoised)."""
        if texts not in self._embeddings:
            ids = token_ids(self.tokenizer, list(texts))
            self._embeddings[texts] = encode_text(self.text_encoder, ids, device=device)
        return self._embeddings[texts]


def base_digest(path: Path) -> str:
    """A demo base's key, or the digest of a pipeline directory's configs and weights."""
    demo = Path(path) / "demo.json"
    if demo.is_file():
        try:
            return "demo-" + str(json.loads(demo.read_text())["key"])
        except (OSError, KeyError, json.JSONDecodeError):
            pass
    h = hashlib.sha256()
    for comp in COMPONENTS:
        root = Path(path) / comp
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file() and p.suffix in (".json", ".txt", ".safetensors"):
                h.update(str(p.relative_to(path)).encode())
                file_sha256(p, into=h)
    return h.hexdigest()[:16]


def check_base_dir(path: Path) -> None:
    """A one-line error naming the first missing component of a pipeline directory."""
    d = Path(path)
    if not d.is_dir():
        raise DiffattrError(
            f"[family] base: {d} is not a directory (give a local diffusers Stable Diffusion "
            "directory, or base = 'demo')"
        )
    for comp, marker in COMPONENTS.items():
        sub = d / comp
        if comp == "tokenizer":
            ok = (sub / "tokenizer.json").is_file() or (
                (sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()
            )
            what = f"{sub}/tokenizer.json or vocab.json + merges.txt"
        else:
            ok = (sub / marker).is_file()
            what = f"{sub}/{marker}"
        if not ok:
            raise DiffattrError(
                f"{d} has no {comp} ({what} missing); a Stable Diffusion pipeline directory "
                "has unet/, vae/, text_encoder/, tokenizer/ and scheduler/"
            )


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DiffattrError(f"{path} is unreadable ({e})") from None


_BASES: dict[tuple, BasePipeline] = {}


def load_base(
    path: str | Path, settings: TextToImageSettings, device: str | torch.device
) -> BasePipeline:
    """The frozen base of a pipeline directory, hooked for LoRA (cached per process: the
    runner's and the workers' families of one run share it)."""
    d = Path(path).expanduser().resolve()
    key = (str(d), settings.dtype, str(device), tuple(settings.target_modules))
    if key in _BASES:
        return _BASES[key]
    check_base_dir(d)
    sched = _read_config(d / "scheduler" / "scheduler_config.json")
    if sched.get("prediction_type", "epsilon") != "epsilon":
        raise DiffattrError(
            f"{d}/scheduler predicts {sched.get('prediction_type')!r}; the text-to-image family "
            "trains epsilon-prediction models (Stable Diffusion 1.x)"
        )
    dtype = getattr(torch, settings.dtype)
    import warnings

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def one_line(comp: str, e: Exception) -> DiffattrError:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return DiffattrError(f"cannot load {comp} of {d} ({first}); safetensors weights only")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            unet = UNet2DConditionModel.from_pretrained(
                d, subfolder="unet", use_safetensors=True, local_files_only=True, torch_dtype=dtype
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise one_line("the unet", e) from None
        try:
            vae = AutoencoderKL.from_pretrained(
                d, subfolder="vae", use_safetensors=True, local_files_only=True
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise one_line("the vae", e) from None
        try:
            text_encoder = CLIPTextModel.from_pretrained(
                d / "text_encoder", use_safetensors=True, local_files_only=True, dtype=dtype
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise one_line("the text_encoder", e) from None
        try:
            tokenizer = CLIPTokenizer.from_pretrained(d / "tokenizer", local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise one_line("the tokenizer", e) from None
    unet = unet.to(device).eval().requires_grad_(False)
    vae = vae.to(device).eval().requires_grad_(False)
    text_encoder = text_encoder.to(device).eval().requires_grad_(False)
    if unet.dtype != dtype or text_encoder.dtype != dtype:
        unet, text_encoder = unet.to(dtype=dtype), text_encoder.to(dtype=dtype)
    cross = unet.config.cross_attention_dim
    if text_encoder.config.hidden_size != cross:
        raise DiffattrError(
            f"{d}: the text encoder gives {text_encoder.config.hidden_size}-wide embeddings "
            f"but the UNet cross-attends to {cross}"
        )
    if vae.config.latent_channels != unet.config.in_channels:
        raise DiffattrError(
            f"{d}: the vae has {vae.config.latent_channels} latent channels but the UNet takes "
            f"{unet.config.in_channels}"
        )
    targets = lora_layers(unet, list(settings.target_modules))
    base = BasePipeline(d, unet, vae, text_encoder, tokenizer, sched, targets)
    for name, _, _ in targets:
        unet.get_submodule(name).register_forward_hook(base.hook(name))
    _BASES.clear()  # one base per process at a time (they are large)
    _BASES[key] = base
    return base


def _init_config(cls, config: dict[str, Any]) -> dict[str, Any]:
    """The keys of a scheduler config that ``cls.__init__`` takes."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in config.items() if k in params and not k.startswith("_")}
