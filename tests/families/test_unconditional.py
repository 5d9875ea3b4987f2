import pytest
import torch
from diffusers import DDPMPipeline

from diffattr.config import RunConfig
from diffattr.data import load_dataset
from diffattr.diffusion.unet import make_unet
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState
from diffattr.families.settings import FAMILIES, UnconditionalSettings, family_of


@pytest.fixture(scope="module")
def family():
    return UnconditionalSettings().build("cpu")


def test_registry_and_settings():
    assert "unconditional" in FAMILIES
    with pytest.raises(DiffattrError, match="architecture"):
        FAMILIES.parse({"name": "unconditional", "architecture": "huge"})


def test_ddpm_pipeline_round_trip(tmp_path, family):
    unet = make_unet("tiny", 8, 1, seed=1)
    family.save(tmp_path / "m", ModelState(unet), {"kind": "test"})
    pipe = DDPMPipeline.from_pretrained(tmp_path / "m")
    out = pipe(batch_size=2, num_inference_steps=3, output_type="np").images
    assert out.shape == (2, 8, 8, 1)
    loaded = family.load(tmp_path / "m")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(loaded.model(x, 10).sample, unet(x, 10).sample)
    with pytest.raises(DiffattrError, match="not a diffattr model"):
        family.load(tmp_path)


def test_model_dirs_follow_the_umask(tmp_path, family):
    family.save(tmp_path / "m", ModelState(make_unet("tiny", 8, 1)), {})
    mode = (tmp_path / "m").stat().st_mode & 0o777
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o777 & ~mask


def test_train_full_and_null_model(tmp_path, family):
    digits = load_dataset("digits")
    data = family.training_set(digits)
    cfg = RunConfig().with_overrides(**{"train.steps": 20, "sample.ddim_steps": 5})
    path = family.train_full(cfg, tmp_path / "full", digits, data, progress=False, grid_samples=4)
    assert (path / "samples.png").exists()
    meta = family.load(path).meta
    assert meta["kind"] == "full" and meta["train_step"] == 20
    assert family_of(path).settings == cfg.family
    null = family.load(family.make_null(cfg, tmp_path / "null", digits, data))
    init = make_unet("tiny", 8, 1, seed=cfg.family.seed)
    for a, b in zip(null.model.parameters(), init.parameters()):
        assert torch.equal(a, b)
    other = cfg.with_overrides(**{"train.lr": 1e-4})
    with pytest.raises(DiffattrError, match=r"other \[train\] settings"):
        family.train_full(other, path, digits, data, progress=False)


def test_check_model_catches_mismatched_data(tmp_path, family):
    family.save(tmp_path / "m", ModelState(make_unet("tiny", 8, 1)), {})
    family.check_model(tmp_path / "m", load_dataset("digits"))
    resized = load_dataset({"name": "digits", "image_size": 16})
    with pytest.raises(DiffattrError, match="16x16"):
        family.check_model(tmp_path / "m", resized)
