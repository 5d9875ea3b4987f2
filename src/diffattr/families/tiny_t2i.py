"""The embedded text-to-image demo: a small Stable-Diffusion-style pipeline built here.

No Stable Diffusion weights exist offline, so the demo builds its own base from parts
diffusers and transformers know, pretrains it on captioned Fashion-MNIST, and writes it as a
``StableDiffusionPipeline`` directory (``StableDiffusionPipeline.from_pretrained(dir)``
loads it; so does ``[family] base = DIR``):

* ``tokenizer/``: a CLIP byte-pair tokenizer whose vocabulary (``vocab.json``,
  ``merges.txt``) is written here: the printable ASCII characters plus one token per word of
  the captions, 12 tokens per prompt;
* ``text_encoder/``: a 2-layer, 32-wide ``CLIPTextModel`` with seeded random weights, frozen
  (as SD's CLIP encoder is frozen; the UNet learns to read it);
* ``vae/``: an ``AutoencoderKL`` (16/32 channels, 16 px grey images -> 4 x 8 x 8 latents)
  trained on training-split images of *every* class (a generic autoencoder, as SD's; MSE +
  1e-4 KL); its ``scaling_factor`` is 1/std of the latents, as SD's 0.18215;
* ``unet/``: a ``UNet2DConditionModel`` (32/64 channels, cross-attention width 32, ~0.7 M
  parameters) trained on the latents with captions "a photo of a <class>", 10 % of them
  replaced by the empty prompt (classifier-free guidance), EMA weights;
* ``scheduler/``: SD 1.x's noise schedule (scaled-linear betas 0.00085 .. 0.012, T = 1000)
  as a DDIM scheduler.

The base learns Fashion-MNIST's tops, trousers and bags (training split, ``DemoBaseSettings``
classes); the demo's LoRA data (``[data] name = "t2i-demo"``, ``load_demo_data``) are
*footwear* images of the test split split among 20 artists, all captioned "a photo of a
shoe", a word the base never saw: the LoRA teaches the base what a shoe looks like from the
artists present, as the paper's ArtBench LoRA teaches SD Post-Impressionism from the
artists present under the one caption "a Post-Impressionist painting"; the base without
LoRA is the null model. The base is cached under the run's cache folder, keyed by its recipe
and the IDX files' content:

    <cache_dir>/t2i-base/<key>/     the pipeline directory (+ demo.json: recipe and key)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffattr.data.base import ImageDataset
from diffattr.data.fashion_mnist import CLASS_NAMES, _find, load_fashion_mnist
from diffattr.diffusion.settings import TrainConfig
from diffattr.diffusion.train import train
from diffattr.errors import DiffattrError
from diffattr.families.base import TrainingSet
from diffattr.families.latent_cache import cached_latents, cached_text_embeddings
from diffattr.fileio import content_key

#: Version of the demo recipe (part of the cache key).
VERSION = 3


#: Token budget of a prompt: "<sot> a photo of a ankle - boot <eot>" is 9 tokens.
MAX_TOKENS = 12

#: SD 1.x's noise schedule, as a DDIM scheduler (eta = 0 sampling).
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

VAE_CONFIG = {
    "in_channels": 1,
    "out_channels": 1,
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "mid_block_add_attention": False,
}

# Cross-attention at the lower (4 x 4) resolution only and no mid block: half the CPU time
# of SD's layout (attention first) at this size, and the class of a prompt is global.
UNET_CONFIG = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 16,
    "mid_block_type": None,
}

TEXT_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
}

KL_WEIGHT = 1e-4


def caption(class_name: str) -> str:
    return f"a photo of a {class_name}"


# --------------------------------------------------------------------------- tokenizer


def vocabulary(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary (token -> id) and merge list in which every word of ``words``
    is one token and any other text falls back to single characters."""
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    chars = [chr(c) for c in range(33, 127)]
    for c in chars:
        add(c)
    for c in chars:
        add(c + "</w>")
    merges: list[str] = []
    for w in sorted(set(words)):
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            merge = f"{cur} {p}"
            if merge not in merges:
                merges.append(merge)
            cur += p
            add(cur)
    add("<|startoftext|>")
    add("<|endoftext|>")
    return vocab, merges


def write_tokenizer(directory: Path, words: list[str], max_length: int = MAX_TOKENS):
    """Write a CLIP tokenizer (``vocab.json``, ``merges.txt`` and transformers' files)."""
    from transformers import CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary(words)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length
    )
    tok.save_pretrained(directory)
    return tok


def caption_words() -> list[str]:
    words = {"a", "an", "photo", "of", "shoe", "painting"}
    for name in CLASS_NAMES:
        words.update(w for w in name.replace("-", " ").split())
    return sorted(words)


# --------------------------------------------------------------------------- data


def _fashion_mnist(path: str, split: str, image_size: int) -> ImageDataset:

    return load_fashion_mnist(path, split, image_size)


def pretraining_data(settings, classes: list[int] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images (N, 1, s, s) and captions of the first ``per_class`` training images of each
    of ``classes`` (default: the settings' classes, the UNet's pretraining data)."""
    ds = _fashion_mnist(settings.path, "train", settings.image_size)
    labels = ds.labels.numpy()
    wanted = settings.classes if classes is None else classes
    keep = np.concatenate([np.flatnonzero(labels == c)[: settings.per_class] for c in wanted])
    keep.sort()
    images = ds.images[torch.as_tensor(keep)]
    captions = [caption(CLASS_NAMES[int(c)]) for c in labels[keep]]
    return images, captions


def load_demo_data(settings, split: str = "train") -> ImageDataset:
    """``[data] name = "t2i-demo"``: captioned footwear of the Fashion-MNIST test split split
    among ``contributors`` artists (see ``T2IDemoData``); disjoint from the base's images."""
    if split != "train":
        raise DiffattrError("the t2i-demo dataset has a single split")
    s = settings
    ds = _fashion_mnist(s.path, "test", s.image_size or 28)
    labels = ds.labels.numpy()
    rng = np.random.default_rng(s.seed)
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in s.classes}
    names = [f"artist-{k + 1:02d}" for k in range(s.contributors)]
    noisy = set(names[s.contributors - s.noisy :])
    rows, who, cls = [], [], []
    lo, hi = max(1, s.per_contributor // 2), s.per_contributor * 3 // 2
    for k, name in enumerate(names):
        c = s.classes[k % len(s.classes)]
        size = int(rng.integers(lo, hi + 1))
        take, pools[c] = pools[c][:size], pools[c][size:]
        if len(take) < size:
            raise DiffattrError(
                f"t2i-demo: class {CLASS_NAMES[c]} has too few test images for "
                f"{s.contributors} artists of about {s.per_contributor} images"
            )
        rows += take
        who += [name] * size
        cls += [c] * size
    idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    images = ds.images[idx].clone()
    gen = torch.Generator().manual_seed(s.seed + 1)
    for i, name in enumerate(who):
        if name in noisy:
            noise = torch.randn(images[i].shape, generator=gen)
            images[i] = (images[i] + s.noise * noise).clamp(-1, 1)
    class_order = list(s.classes)
    return ImageDataset(
        name="t2i-demo",
        images=images,
        labels=torch.tensor([names.index(w) for w in who], dtype=torch.int64),
        ids=[ds.ids[r] for r in rows],
        class_names=names,
        contributors=who,
        meta={"source": s.path, "noisy_contributors": sorted(noisy)},
        semantic_labels=torch.tensor([class_order.index(c) for c in cls], dtype=torch.int64),
        semantic_names=[CLASS_NAMES[c] for c in class_order],
        captions=[caption(CLASS_NAMES[c]) if s.caption == "class" else s.caption for c in cls],
    )


# --------------------------------------------------------------------------- the base


def idx_digest(path: str) -> str:
    """Digest of the Fashion-MNIST training files the base is pretrained on."""

    h = hashlib.sha256()
    directory = Path(path)
    if not directory.is_dir():
        raise DiffattrError(
            f"Fashion-MNIST directory not found: {directory} (the demo base is pretrained on "
            "it; install Debian's dataset-fashion-mnist or set family.demo.path)"
        )
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        f = _find(directory, stem)
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def demo_key(settings) -> str:
    """Cache key of the demo base: recipe version, its settings and the data's content."""
    record = {
        "version": VERSION,
        "settings": settings.model_dump(mode="json", exclude={"path"}),
        "data": idx_digest(settings.path),
        "configs": [VAE_CONFIG, UNET_CONFIG, TEXT_CONFIG, SCHEDULER, MAX_TOKENS, KL_WEIGHT],
        "words": caption_words(),
    }
    return content_key(record, length=20, default=str)


def demo_base_dir(settings, cache_dir: str | Path | None) -> Path:
    """Where the demo base of ``settings`` lives under ``cache_dir``."""
    if cache_dir is None:
        raise DiffattrError("the demo base is cached under the run's cache folder; none given")
    return Path(cache_dir) / "t2i-base" / demo_key(settings)


def is_demo_base(directory: Path) -> bool:
    return (directory / "model_index.json").is_file() and (directory / "demo.json").is_file()


def ensure_demo_base(
    settings,
    cache_dir: str | Path | None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Path:
    """The demo base directory, pretrained and written on the first call."""
    out = demo_base_dir(settings, cache_dir)
    if is_demo_base(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"diffattr: pretraining the text-to-image demo base in {out} (once per cache folder)",
        file=sys.stderr,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        info = build_demo_base(settings, tmp, device=device, progress=progress)
        info["key"] = out.name
        (tmp / "demo.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        if is_demo_base(out):  # built meanwhile by another process: keep that one
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_demo_base(
    settings, directory: Path, device: str | torch.device = "cpu", progress: bool = False
) -> dict[str, Any]:
    """Pretrain the demo pipeline on the settings' data and write it to ``directory``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    t0 = time.perf_counter()
    images, captions = pretraining_data(settings)
    # the autoencoder is generic, as SD's: trained on every class of the training split
    generic, _ = pretraining_data(settings, list(range(len(CLASS_NAMES))))
    directory = Path(directory)
    tokenizer = write_tokenizer(directory / "tokenizer", caption_words())
    text_encoder = make_text_encoder(tokenizer, settings.seed)
    vae, vae_loss = train_vae(generic, settings, device=device, progress=progress)
    z, _ = cached_latents(vae, images, None, scaling_factor=1.0, device=device)
    scaling = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = z * scaling
    cond, _ = cached_text_embeddings(text_encoder, tokenizer, captions, None, device=device)
    null, _ = cached_text_embeddings(text_encoder, tokenizer, [""], None, device=device)
    unet, unet_loss = train_unet(latents, cond, null[0], settings, device=device, progress=progress)
    scheduler = DDIMScheduler(**SCHEDULER)
    pipe = StableDiffusionPipeline(
        vae=vae.cpu(),
        text_encoder=text_encoder.cpu(),
        tokenizer=tokenizer,
        unet=unet.cpu(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    # keep the vocabulary files beside transformers' tokenizer.json
    return {
        "recipe": settings.model_dump(mode="json"),
        "images": int(len(images)),
        "autoencoder_images": int(len(generic)),
        "vae_loss": vae_loss,
        "unet_loss": unet_loss,
        "scaling_factor": scaling,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def make_text_encoder(tokenizer, seed: int):
    """The demo's frozen CLIP text encoder with seeded random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = tokenizer.get_vocab()
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        **TEXT_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    return model.eval().requires_grad_(False)


def train_vae(images: torch.Tensor, settings, device="cpu", progress: bool = False):
    """A small ``AutoencoderKL`` trained on ``images`` (MSE + KL_WEIGHT * KL, Adam)."""
    from diffusers import AutoencoderKL
    from tqdm.auto import tqdm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        vae = AutoencoderKL(sample_size=settings.image_size, **VAE_CONFIG)
    vae.to(device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.vae_steps)
    gen = torch.Generator().manual_seed(settings.seed)
    losses = []
    for _ in tqdm(range(settings.vae_steps), desc="demo autoencoder", disable=not progress):
        idx = torch.randint(0, len(images), (settings.batch_size,), generator=gen)
        x = images[idx].to(device)
        dist = vae.encode(x).latent_dist
        eps = torch.randn(dist.mean.shape, generator=gen).to(device)
        recon = vae.decode(dist.mean + dist.std * eps).sample
        loss = torch.nn.functional.mse_loss(recon, x) + KL_WEIGHT * dist.kl().mean() / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return vae.eval().requires_grad_(False), float(np.mean(losses[-50:]))


class _PretrainDenoiser:
    """The UNet as the shared training loop's denoiser, with caption dropout."""

    def __init__(self, null: torch.Tensor, dropout: float, seed: int) -> None:
        self.null = null
        self.dropout = dropout
        self.gen = torch.Generator().manual_seed(seed + 17)

    def predict_noise(self, model, x_t, t, cond):
        if model.training and self.dropout > 0:
            drop = (torch.rand(len(cond), generator=self.gen) < self.dropout).to(cond.device)
            cond = torch.where(drop[:, None, None], self.null.to(cond), cond)
        return model(x_t, t, encoder_hidden_states=cond).sample

    def noise_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(SCHEDULER)

    def trainable_parameters(self, model):
        return [p for p in model.parameters() if p.requires_grad]


def train_unet(latents, cond, null, settings, device="cpu", progress: bool = False):
    """Pretrain the demo UNet on (latents, caption embeddings); returns its EMA weights."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        unet = UNet2DConditionModel(sample_size=latents.shape[-1], **UNET_CONFIG)
    cfg = TrainConfig(
        steps=settings.unet_steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        ema_decay=0.999,
        seed=settings.seed,
        checkpoint_every=settings.unet_steps,
    )
    denoiser = _PretrainDenoiser(null, settings.caption_dropout, settings.seed)
    result = train(
        unet,
        TrainingSet(latents, cond),
        cfg,
        denoiser=denoiser,
        device=device,
        progress=progress,
        desc="demo base UNet",
    )
    return result.ema.model.eval().requires_grad_(False), float(np.mean(result.losses[-50:]))
