"""``text-to-image``: the LoRA of a frozen Stable-Diffusion-style pipeline (the paper's
ArtBench set-up: miniSD + a LoRA on every attention projection, credited to the artists).

One module per concern:

``lora``
    :class:`LoRAAdapters` (the family's model: the adapters and nothing else), the target
    layers of a UNet, and the ``pytorch_lora_weights.safetensors`` file diffusers reads.
``pipeline``
    :class:`BasePipeline`, the frozen base (UNet, VAE, text encoder, tokenizer, scheduler
    config) hooked for LoRA, and ``load_base`` / ``check_base_dir`` / ``base_digest``.
``family``
    :class:`TextToImageFamily`, the registered model family (``TextToImageSettings``'s
    ``implementation`` names it here, as ``diffattr.families.text_to_image:TextToImageFamily``).

The names below are re-exported so that ``diffattr.families.text_to_image.X`` keeps working.
"""

from diffattr.families.text_to_image.family import BASE_FILE, TextToImageFamily
from diffattr.families.text_to_image.lora import (
    PREFIX,
    WEIGHTS,
    LoRAAdapters,
    lora_layers,
    read_lora,
    write_lora,
)
from diffattr.families.text_to_image.pipeline import (
    COMPONENTS,
    BasePipeline,
    base_digest,
    check_base_dir,
    load_base,
)

__all__ = [
    "BASE_FILE",
    "COMPONENTS",
    "PREFIX",
    "WEIGHTS",
    "BasePipeline",
    "LoRAAdapters",
    "TextToImageFamily",
    "base_digest",
    "check_base_dir",
    "load_base",
    "lora_layers",
    "read_lora",
    "write_lora",
]
