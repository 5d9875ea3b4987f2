"""Image encoders of local transformers checkpoints: ``clip`` and ``blip`` feature spaces.

Nothing is downloaded: ``path`` is a local directory holding

* ``config.json`` of a CLIP (``model_type`` ``clip`` or ``clip_vision_model``) or BLIP
  (``blip`` or ``blip_vision_model``) checkpoint -- a full model (e.g. the ViT-L/14 of
  ``openai/clip-vit-large-patch14``, or ``Salesforce/blip-vqa-base``) or its vision part;
* its weights: ``model.safetensors`` (or shards with ``model.safetensors.index.json``), or
  ``pytorch_model.bin`` read with ``torch.load(weights_only=True)`` -- never unpickled;
* ``preprocessor_config.json`` (resize, centre crop, mean/std).

Only the vision tower is built (from ``vision_config``) and loaded strictly from the
``vision_model.*`` (and CLIP's ``visual_projection.*``) weights; the text tower is skipped.

Features: CLIP gives its projected image embedding (``image_embeds``; 768-d for ViT-L/14,
the space of the LAION aesthetic predictor), BLIP the vision model's pooled output (the
paper's CelebA-HQ diversity space). Neither has class probabilities.

Preprocessing runs in torch on the device, from the processor config: images in [-1, 1]
to [0, 1], grey repeated to RGB, bicubic antialiased resize (shortest edge, or to
height x width), centre crop, normalisation. The Hugging Face processors resize 8-bit PIL
images instead, so values differ from theirs by rounding-level amounts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from diffattr.behaviors.features import FeatureExtractor, remembered, stable_hash
from diffattr.errors import DiffattrError

MODEL_TYPES = {
    "clip": ("clip", "clip_vision_model"),
    "blip": ("blip", "blip_vision_model"),
}


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DiffattrError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DiffattrError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise DiffattrError(f"{path} is not a JSON object")
    return data


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's weight files (safetensors preferred)."""
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index, "weights index").get("weight_map", {}).values()))
        files = [directory / s for s in shards]
        missing = [f for f in files if not f.is_file()]
        if not files or missing:
            raise DiffattrError(f"{index} names missing shard(s): {missing or 'none listed'}")
        return files
    legacy = directory / "pytorch_model.bin"
    if legacy.is_file():
        return [legacy]
    raise DiffattrError(
        f"no weights in {directory} (expected model.safetensors, sharded safetensors or "
        "pytorch_model.bin)"
    )


def _load_state(files: list[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(f))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # noqa: BLE001 - any read failure is a bad file
            raise DiffattrError(f"cannot read weights {f}: {e}") from None
    return state


def _files_digest(files: list[Path]) -> str:
    """Names, sizes and the first MiB of each weight file (cheap, content-sensitive)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class Preprocess:
    """The processor config's resize / crop / normalise, in torch."""

    def __init__(self, cfg: dict[str, Any], source: Path) -> None:
        def pair(value: Any, what: str) -> tuple[int, int] | int:
            if isinstance(value, int):
                return value
            if isinstance(value, dict):
                if "shortest_edge" in value:
                    return int(value["shortest_edge"])
                if "height" in value and "width" in value:
                    return int(value["height"]), int(value["width"])
            raise DiffattrError(f"{source}: cannot read {what} {value!r}")

        self.resize = pair(cfg.get("size"), "size") if cfg.get("do_resize", True) else None
        crop = cfg.get("crop_size")
        self.crop = pair(crop, "crop_size") if cfg.get("do_center_crop", False) else None
        if isinstance(self.crop, int):
            self.crop = (self.crop, self.crop)
        self.rescale = float(cfg.get("rescale_factor", 1 / 255)) * 255.0
        norm = cfg.get("do_normalize", True)
        mean = cfg.get("image_mean", [0.0, 0.0, 0.0]) if norm else [0.0, 0.0, 0.0]
        std = cfg.get("image_std", [1.0, 1.0, 1.0]) if norm else [1.0, 1.0, 1.0]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().clamp(-1, 1) + 1) / 2  # [0, 1], what an 8-bit image / 255 is
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if isinstance(self.resize, int):
            scale = self.resize / min(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
        else:
            size = self.resize
        if size is not None and tuple(size) != (h, w):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
        if self.crop is not None:
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if ch > h or cw > w:
                x = F.pad(x, (0, max(0, cw - w), 0, max(0, ch - h)))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        x = x * self.rescale
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class VisionEncoderExtractor(FeatureExtractor):
    """A CLIP or BLIP vision tower as a feature extractor (no class probabilities)."""

    def __init__(self, kind: str, model, preprocess: Preprocess, key: str, info: dict, device):
        self.device = torch.device(device)
        self.kind = kind
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.preprocess = preprocess
        self.name = kind
        self.key = key
        self.info = info
        self.channels = 3
        self.image_size = None
        self.num_classes = None

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
            raise DiffattrError(
                f"{self.name} needs (N, 1 or 3, H, W) images with N >= 1, got {tuple(x.shape)}"
            )
        return x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = self.model(pixel_values=self.preprocess(x))
        if self.kind == "clip":
            return out.image_embeds, None
        return out.pooler_output, None

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(self.info)
        return out


def load_vision_encoder(kind: str, path: str | Path, device="cpu") -> VisionEncoderExtractor:
    """Build the vision tower of a local ``kind`` (clip | blip) checkpoint directory."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DiffattrError(
            f"{kind} checkpoint directory not found: {directory} (give a local directory with "
            "config.json, model.safetensors and preprocessor_config.json)"
        )
    config = _read_json(directory / "config.json", f"{kind} config")
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES[kind]:
        raise DiffattrError(
            f"{directory} holds a {model_type!r} checkpoint, not {kind.upper()} (model_type "
            f"{' or '.join(MODEL_TYPES[kind])})"
        )
    processor = _read_json(directory / "preprocessor_config.json", f"{kind} image-processor config")
    files = weight_files(directory)
    full = model_type in ("clip", "blip")
    vision_dict = config.get("vision_config") if full else config
    if not isinstance(vision_dict, dict):
        raise DiffattrError(f"{directory}/config.json has no vision_config")
    key = stable_hash(
        {
            "space": kind,
            "config": vision_dict,
            "projection_dim": config.get("projection_dim"),
            "processor": processor,
            "weights": _files_digest(files),
        }
    )

    def make() -> VisionEncoderExtractor:
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise DiffattrError(
                f"the {kind} feature space needs transformers: pip install 'diffattr[clip]'"
            ) from None
        state = _load_state(files)
        if kind == "clip":
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            vcfg = CLIPVisionConfig.from_dict(dict(vision_dict))
            if config.get("projection_dim") is not None:
                vcfg.projection_dim = int(config["projection_dim"])
            model = CLIPVisionModelWithProjection(vcfg)
            wanted = {
                k: v
                for k, v in state.items()
                if k.startswith(("vision_model.", "visual_projection."))
            }
        else:
            from transformers import BlipVisionConfig, BlipVisionModel

            model = BlipVisionModel(BlipVisionConfig.from_dict(dict(vision_dict)))
            if any(k.startswith("vision_model.") for k in state):
                wanted = {
                    k.removeprefix("vision_model."): v
                    for k, v in state.items()
                    if k.startswith("vision_model.")
                }
            else:
                wanted = dict(state)
        wanted = {k: v for k, v in wanted.items() if not k.endswith("position_ids")}
        try:
            result = model.load_state_dict(wanted, strict=False)
        except RuntimeError as e:
            first = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
            raise DiffattrError(
                f"{directory}: the weights do not match its {kind} config ({first.strip()})"
            ) from None
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing or result.unexpected_keys:
            bad = (missing or result.unexpected_keys)[:3]
            raise DiffattrError(
                f"{directory}: the weights do not match its {kind} config "
                f"({'missing' if missing else 'unexpected'}: {', '.join(bad)}...)"
            )
        info = {
            "path": str(directory),
            "model_type": model_type,
            "hidden_size": vision_dict.get("hidden_size"),
            "projection_dim": config.get("projection_dim") if kind == "clip" else None,
        }
        return VisionEncoderExtractor(
            kind, model, Preprocess(processor, directory), key, info, device
        )

    return remembered(key, device, make)  # type: ignore[return-value]


def build(settings, dataset=None, *, device="cpu", cache_dir=None, seed: int = 0):
    """The ``clip`` / ``blip`` feature space of ``settings.path``."""
    return load_vision_encoder(settings.name, settings.path, device)
