"""Local CLIP / BLIP checkpoints (tiny random models built from configs here) end to end:
feature spaces, diversity entropy and the aesthetic score in CLIP space."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffattr.behaviors import build_suite
from diffattr.behaviors.aesthetic import aesthetic_scores
from diffattr.behaviors.pretrained import load_vision_encoder
from diffattr.data import load_dataset
from diffattr.errors import DiffattrError

TEXT = {
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 16,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}
VISION = {
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
PROCESSOR = {
    "do_resize": True,
    "size": {"shortest_edge": 32},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A CLIP checkpoint like openai/clip-vit-large-patch14: full model, 768-d projection."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    config = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=768)
    CLIPModel(config).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return path


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    from transformers import BlipConfig, BlipForQuestionAnswering

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("blip")
    text = {k: v for k, v in TEXT.items() if k != "max_position_embeddings"}
    text.update(sep_token_id=1, max_position_embeddings=32)
    BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=VISION)).save_pretrained(
        path
    )
    processor = dict(PROCESSOR, size={"height": 32, "width": 32}, do_center_crop=False)
    (path / "preprocessor_config.json").write_text(json.dumps(processor))
    return path


@pytest.fixture
def cache():
    return Path(os.environ["DIFFATTR_HOME"]) / "cache"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_clip_space_matches_transformers(clip_dir):
    from transformers import CLIPModel

    ext = load_vision_encoder("clip", clip_dir)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    feats = ext.features(x)
    assert feats.shape == (3, 768) and not ext.has_probs
    # Same numbers as the full CLIPModel on the same preprocessed pixels.
    full = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        expected = full.get_image_features(pixel_values=ext.preprocess(x))
    expected = getattr(expected, "pooler_output", expected)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-4, atol=1e-5)
    assert load_vision_encoder("clip", clip_dir) is ext  # kept per (key, device)


def test_blip_space_is_the_pooled_vision_output(blip_dir):
    from transformers import BlipForQuestionAnswering

    ext = load_vision_encoder("blip", blip_dir)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    full = BlipForQuestionAnswering.from_pretrained(blip_dir).eval()
    with torch.no_grad():
        expected = full.vision_model(pixel_values=ext.preprocess(x)).pooler_output
    np.testing.assert_allclose(ext.features(x), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_missing_or_mismatched_checkpoints_are_one_line_errors(clip_dir, blip_dir, tmp_path):
    with pytest.raises(DiffattrError, match="checkpoint directory not found"):
        load_vision_encoder("clip", tmp_path / "nope")
    with pytest.raises(DiffattrError, match="'blip' checkpoint, not CLIP"):
        load_vision_encoder("clip", blip_dir)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((clip_dir / "config.json").read_text())
    (partial / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    with pytest.raises(DiffattrError, match="no weights"):
        load_vision_encoder("clip", partial)
    (partial / "preprocessor_config.json").unlink()
    with pytest.raises(DiffattrError, match="image-processor config not found"):
        load_vision_encoder("clip", partial)
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((clip_dir / "config.json").read_text())
    config["vision_config"]["hidden_size"] = 32
    (other / "config.json").write_text(json.dumps(config))
    (other / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    (other / "model.safetensors").write_bytes((clip_dir / "model.safetensors").read_bytes())
    with pytest.raises(DiffattrError, match="do not match"):
        load_vision_encoder("clip", other)


def _head(path: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({"weight": torch.randn(1, 768, generator=g), "bias": torch.tensor([5.0])}, path)
    return path


def test_aesthetic_and_diversity_in_clip_space_end_to_end(clip_dir, cache, digits, tmp_path):
    head = _head(tmp_path / "sa_0_4_vit_l_14_linear.safetensors")
    clip = {"name": "clip", "path": str(clip_dir)}
    table = {
        "measure": [
            "fid",
            {"name": "aesthetic-p90", "head": str(head), "features": clip},
            {"name": "aesthetic-mean", "head": str(head), "features": clip},
            {"name": "diversity-entropy", "clusters": 5, "features": clip},
        ]
    }
    suite = build_suite(table, digits, cache_dir=cache)
    assert suite.keys() == [
        "fid[digits-cnn]",
        "aesthetic-p90[clip]",
        "aesthetic-mean[clip]",
        "diversity-entropy[clip]",
    ]
    x = digits.images[:64]
    values = suite.measure(x)
    clip_ext = next(e for e in suite.extractors.values() if e.name == "clip")
    from safetensors.torch import load_file

    h = load_file(head)
    scores = aesthetic_scores(clip_ext.features(x), h["weight"][0].double().numpy(), 5.0)
    assert values["aesthetic-p90[clip]"] == pytest.approx(np.percentile(scores, 90), rel=1e-6)
    assert values["aesthetic-mean[clip]"] == pytest.approx(scores.mean(), rel=1e-6)
    assert 0.0 <= values["diversity-entropy[clip]"] <= np.log2(5) + 1e-9
    spaces = {d["name"] for d in suite.describe()["spaces"]}
    assert spaces == {"digits-cnn", "clip"}


def test_aesthetic_head_must_fit_the_clip_width(clip_dir, cache, digits, tmp_path):
    from safetensors.torch import save_file

    narrow = tmp_path / "vit_b_32.safetensors"
    save_file({"weight": torch.zeros(1, 512), "bias": torch.zeros(1)}, narrow)
    table = {
        "features": {"name": "clip", "path": str(clip_dir)},
        "measure": [{"name": "aesthetic-p90", "head": str(narrow)}],
    }
    with pytest.raises(DiffattrError, match="512-d"):
        build_suite(table, digits, cache_dir=cache)
