"""Local behaviors of a run: settings and keys, the full model against itself is exact, the
reference round-trips through the run directory, per-image keys."""

import numpy as np
import pytest
import torch

from diffattr.behaviors.keys import BehaviorKey, image_key, split_image_key
from diffattr.behaviors.local_suite import (
    LocalReference,
    LocalSuite,
    build_local_suite,
    load_reference,
    save_reference,
)
from diffattr.behaviors.resolve import check_settings, local_behavior_keys, suite_keys
from diffattr.behaviors.settings import parse_behaviors
from diffattr.errors import DiffattrError

MEASURE = ["fid", "ssim", "nrmse", "mse", {"name": "denoising-loss", "timesteps": 3}]


def test_keys_of_local_behaviors():
    s = parse_behaviors({"measure": MEASURE})
    keys = suite_keys(s, "digits", True)
    assert keys == [
        "fid[digits-cnn]",
        "ssim[pixel]",
        "nrmse[pixel]",
        "mse[pixel]",
        "denoising-loss[model]",
    ]
    assert local_behavior_keys(s, "digits", True) == keys[1:]
    check_settings(s, "digits", True)
    with pytest.raises(DiffattrError, match="ssim.* twice"):
        check_settings(parse_behaviors({"measure": ["ssim", "ssim"]}), "digits", True)
    with pytest.raises(DiffattrError, match="clip"):  # needs the clip space
        check_settings(parse_behaviors({"measure": ["clip-similarity"]}), "digits", True)
    key = BehaviorKey.parse("ssim[pixel]#12")
    assert (key.name, key.space, key.image, key.base) == ("ssim", "pixel", 12, "ssim[pixel]")
    assert str(key) == image_key("ssim[pixel]", 12) == "ssim[pixel]#12"
    assert split_image_key("fid[digits-cnn]") == ("fid[digits-cnn]", None)
    assert BehaviorKey.parse("mse[pixel]#0").lower_is_better
    with pytest.raises(DiffattrError):
        BehaviorKey.parse("ssim[pixel]#x")


@pytest.fixture(scope="module")
def reference():
    from diffattr.diffusion.sample import generate
    from diffattr.diffusion.unet import make_unet

    model = make_unet("tiny", 8, 1, seed=3)
    images = generate(model, 6, ddim_steps=3, seed=0)
    return model, LocalReference(images, images.clone())


def test_the_full_model_against_itself_is_exact(reference):
    from diffattr.data import load_dataset
    from diffattr.data.settings import parse_data
    from diffattr.families.settings import FAMILIES

    model, ref = reference
    family = FAMILIES.parse({"name": "unconditional", "architecture": "tiny"}).build("cpu")
    dataset = load_dataset(parse_data({"name": "digits", "limit_per_class": 3}))
    suite = build_local_suite({"measure": MEASURE}, dataset, cache_dir="unused")
    assert suite.keys() == ["ssim[pixel]", "nrmse[pixel]", "mse[pixel]", "denoising-loss[model]"]
    out = suite.measure(ref.images, ref, model=model, family=family)
    assert all(v.shape == (6,) for v in out.values())
    assert (out["ssim[pixel]"] == 1.0).all()
    assert (out["mse[pixel]"] == 0.0).all() and (out["nrmse[pixel]"] == 0.0).all()
    assert np.isfinite(out["denoising-loss[model]"]).all()
    other = suite.measure(-ref.images, ref, model=model, family=family)
    assert (other["ssim[pixel]"] < 1).all() and (other["mse[pixel]"] > 0).all()
    # the loss is the model's on the full model's images: the same for any generated images
    np.testing.assert_array_equal(other["denoising-loss[model]"], out["denoising-loss[model]"])
    with pytest.raises(DiffattrError, match="differ"):
        suite.measure(ref.images[:3], ref, model=model, family=family)


def test_reference_round_trips_through_the_run_directory(reference, tmp_path):
    _, ref = reference
    cond = torch.arange(len(ref), dtype=torch.long)
    with_cond = LocalReference(ref.images, ref.x0, cond)
    save_reference(tmp_path / "full.safetensors", with_cond, {"images": len(ref)})
    back = load_reference(tmp_path / "full.safetensors")
    assert torch.equal(back.images, ref.images) and torch.equal(back.cond, cond)
    assert (tmp_path / "full.json").is_file()
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DiffattrError, match="delete it"):
        load_reference(tmp_path / "bad.safetensors")
    assert not LocalSuite([])  # no local behaviors: an empty suite


def test_reference_whose_x0_is_its_images_round_trips(tmp_path):
    """A pixel model's x0 can be the very tensor of its images (one storage): saved anyway."""
    images = torch.linspace(-1, 1, 2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    save_reference(tmp_path / "full.safetensors", LocalReference(images, images), {})
    back = load_reference(tmp_path / "full.safetensors")
    assert torch.equal(back.images, images) and torch.equal(back.x0, images)
