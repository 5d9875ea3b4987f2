"""The ``latent`` family: settings, autoencoders, the latent cache, model directories that
diffusers' LDMPipeline samples, and the checks made before any work."""

import json
import shutil

import pytest
import torch
from latent_helpers import save_autoencoder

from diffattr.data import load_dataset
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState
from diffattr.families.settings import (
    FAMILIES,
    LatentSettings,
    family_for_dir,
    family_for_layout,
    family_of,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"name": "digits", "classes": [0, 1, 2]})


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory):
    return save_autoencoder(tmp_path_factory.mktemp("ae") / "kl")


def family(autoencoder, **kw):
    return FAMILIES.parse({"name": "latent", "autoencoder": str(autoencoder), **kw}).build("cpu")


# ----------------------------------------------------------------------------- settings


def test_settings_are_checked_in_one_line():
    s = FAMILIES.parse("latent")
    assert isinstance(s, LatentSettings) and s.autoencoder == "train"
    assert s.schedule_config()["beta_schedule"] == "scaled_linear"
    assert (s.beta_start, s.beta_end) == (0.0015, 0.0195)
    with pytest.raises(DiffattrError, match="architecture"):
        FAMILIES.parse({"name": "latent", "architecture": "huge"})
    with pytest.raises(DiffattrError, match="family.ae_downsample"):
        FAMILIES.parse({"name": "latent", "ae_downsample": 9}, "family")
    assert s.own_autoencoder().downsample == s.ae_downsample == 2


def test_missing_or_wrong_autoencoder_is_a_one_line_error(tmp_path, digits):
    with pytest.raises(DiffattrError, match=r"family.autoencoder: .*nowhere not found") as e:
        family(tmp_path / "nowhere").check_data(digits)
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffattrError, match="no autoencoder in"):
        family(tmp_path / "empty").check_data(digits)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(DiffattrError, match="UNet2DModel, not an AutoencoderKL or VQModel"):
        family(tmp_path / "unet").check_data(digits)
    rgb = save_autoencoder(tmp_path / "rgb", channels=3)
    kl = save_autoencoder(tmp_path / "kl")
    family(kl).check_data(digits)
    with pytest.raises(DiffattrError, match="must exceed family.beta_start"):
        family(kl, beta_start=0.02, beta_end=0.01).check_data(digits)
    with pytest.raises(DiffattrError, match="3-channel images but the data have 1"):
        family(rgb).check_data(digits)
    (rgb / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(DiffattrError, match="cannot load the AutoencoderKL"):
        family(rgb).autoencoder  # noqa: B018


def test_image_size_must_fit_the_autoencoder_and_unet(ae_dir):
    odd = load_dataset({"name": "digits", "classes": [0, 1], "image_size": 5})
    with pytest.raises(DiffattrError, match="divisible by 2"):
        family(ae_dir).check_data(odd)
    # 12 px -> 6x6 latents: the latent-small UNet halves twice, 6 is not divisible by 4
    twelve = load_dataset({"name": "digits", "classes": [0, 1], "image_size": 12})
    with pytest.raises(DiffattrError, match="6x6 latents"):
        family(ae_dir, architecture="latent-small").check_data(twelve)


# ----------------------------------------------------------------------------- latents


def test_latents_are_cached_and_follow_the_autoencoder(tmp_path, ae_dir, digits):
    fam = family(ae_dir)
    data = fam.training_set(digits, tmp_path / "cache")
    assert data.x0.shape == (len(digits), 2, 4, 4) and not data.info["cached"]
    assert data.info["scaling_factor"] == 0.5  # from the autoencoder's config.json
    again = family(ae_dir).training_set(digits, tmp_path / "cache")
    assert again.info["cached"] and torch.equal(again.x0, data.x0)
    other = save_autoencoder(tmp_path / "other", seed=1)
    changed = family(other).training_set(digits, tmp_path / "cache")
    assert not changed.info["cached"] and changed.info["latent_cache"] != data.info["latent_cache"]
    scaled = family(ae_dir, scaling_factor=2.0).training_set(digits, tmp_path / "cache")
    assert not scaled.info["cached"]
    torch.testing.assert_close(scaled.x0, data.x0 * 4.0)
    assert len(list((tmp_path / "cache" / "latents").glob("*.safetensors"))) == 3


def test_sampling_decodes_fixed_seed_latents(ae_dir, digits):
    fam = family(ae_dir)
    data = fam.training_set(digits)
    unet = fam.init_model(data, seed=0)
    images = fam.sample(unet, 5, seed=3, ddim_steps=3, batch_size=2)
    assert images.shape == (5, 1, 8, 8) and images.abs().max() <= 1
    # sample i is the same whatever the batch size and the starting index
    tail = fam.sample(unet, 2, seed=3, ddim_steps=3, start=3)
    torch.testing.assert_close(images[3:], tail)
    z = fam.sample_latents(unet, 5, seed=3, ddim_steps=3)
    torch.testing.assert_close(fam.decode(z), images)
    # the training loss and the schedule are the family's (scaled-linear, no clipping)
    sched = fam.noise_scheduler()
    assert sched.config.beta_schedule == "scaled_linear" and not sched.config.clip_sample
    loss = fam.loss(unet, data.x0[:4], torch.tensor([0, 10, 500, 999]), torch.randn(4, 2, 4, 4))
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- model dirs


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_model_dir_is_an_ldm_pipeline(tmp_path, digits, kind, monkeypatch):
    from diffusers import LDMPipeline
    from diffusers.pipelines.deprecated.latent_diffusion_uncond import (
        pipeline_latent_diffusion_uncond as ldm,
    )

    from diffattr.diffusion.sample import initial_noise

    ae = save_autoencoder(tmp_path / "ae", kind=kind)
    fam = family(ae)
    data = fam.training_set(digits)
    unet = fam.init_model(data, seed=1)
    path = fam.save(tmp_path / "m", ModelState(unet), {"kind": "test"})
    assert family_for_layout(path) == "latent"
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "LDMPipeline"
    assert index["vqvae"][1] == ("VQModel" if kind == "vq" else "AutoencoderKL")
    # a VQModel whose config.json records no scale (the CompVis LDMs) is used at scale 1,
    # and the scale in use is written into the saved vqvae/ config
    assert fam.scaling_factor == (1.0 if kind == "vq" else 0.5)
    pipe = LDMPipeline.from_pretrained(path)
    assert pipe.vqvae.config.scaling_factor == fam.scaling_factor
    # diffusers' pipeline, started from our per-sample noise, draws our samples
    shape = (2, 4, 4)
    monkeypatch.setattr(
        ldm, "randn_tensor", lambda s, generator=None: initial_noise(range(3), shape, 7)
    )
    ours = fam.sample(unet, 3, seed=7, ddim_steps=4)
    theirs = pipe(batch_size=3, num_inference_steps=4, output_type="np").images
    torch.testing.assert_close(
        torch.as_tensor(theirs).permute(0, 3, 1, 2), (ours + 1) / 2, atol=2e-5, rtol=0
    )
    loaded = family(ae).load(path)
    x, t = torch.randn(2, 2, 4, 4), torch.tensor([5, 900])
    torch.testing.assert_close(loaded.model(x, t).sample, unet(x, t).sample)
    assert loaded.meta["latent"]["scaling_factor"] == fam.scaling_factor


def test_own_autoencoder_is_adopted_from_a_model_dir(tmp_path, digits):
    """With autoencoder = 'train', a process that only loads model directories (a worker
    sampling the full model) decodes with the directory's autoencoder."""
    from diffattr.families.latent import LatentFamily

    fam = FAMILIES.parse(
        {"name": "latent", "ae_steps": 3, "ae_width": 8, "ae_downsample": 1}
    ).build("cpu")
    assert isinstance(fam, LatentFamily)
    with pytest.raises(DiffattrError, match="not available yet"):
        fam.autoencoder  # noqa: B018
    data = fam.training_set(digits, tmp_path / "cache")
    unet = fam.init_model(data, 0)
    fam.save(tmp_path / "m", ModelState(unet), {})
    assert fam.scaling_factor == pytest.approx(1 / fam.autoencoder_record["report"]["latent_std"])
    uncached = FAMILIES.parse(fam.settings.to_dict()).build("cpu")
    uncached.training_set(digits)  # trained again, kept in memory only: the same scale
    assert uncached.scaling_factor == pytest.approx(fam.scaling_factor)
    fresh = FAMILIES.parse(fam.settings.to_dict()).build("cpu")
    fresh.load(tmp_path / "m")
    assert fresh.scaling_factor == fam.scaling_factor
    torch.testing.assert_close(
        fresh.sample(unet, 2, seed=0, ddim_steps=2), fam.sample(unet, 2, seed=0, ddim_steps=2)
    )


# ----------------------------------------------------------------------------- check_model


def test_check_model_before_any_work(tmp_path, ae_dir, digits):
    from diffusers import DDPMPipeline, UNet2DModel

    from diffattr.diffusion.unet import make_scheduler

    fam = family(ae_dir)
    data = fam.training_set(digits)
    fam.save(tmp_path / "ok", ModelState(fam.init_model(data, 0)), {})
    fam.check_model(tmp_path / "ok", digits)
    # a UNet on another latent shape
    wrong = UNet2DModel(
        sample_size=8,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    fam.save(tmp_path / "wrong", ModelState(wrong), {})
    with pytest.raises(DiffattrError, match="2-channel 8x8 latents .* 2-channel 4x4 latents"):
        fam.check_model(tmp_path / "wrong", digits)
    # a pixel-space pipeline, or no pipeline at all
    DDPMPipeline(unet=wrong, scheduler=make_scheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(DiffattrError, match="name = 'unconditional'"):
        fam.check_model(tmp_path / "ddpm", digits)
    with pytest.raises(DiffattrError, match="neither a diffattr model directory nor"):
        fam.check_model(tmp_path, digits)
    # a diffusers LDMPipeline the package did not train (no diffattr.json)
    byo = tmp_path / "byo"
    shutil.copytree(tmp_path / "ok", byo)
    (byo / "diffattr.json").unlink()
    family(byo).check_model(byo, digits)  # its own autoencoder
    family(ae_dir).check_model(byo, digits)  # the same weights elsewhere
    with pytest.raises(DiffattrError, match="brings its own autoencoder"):
        FAMILIES.parse("latent").build().check_model(byo, digits)
    other = save_autoencoder(tmp_path / "other", seed=3)
    with pytest.raises(DiffattrError, match="another autoencoder"):
        family(other).check_model(byo, digits)
    with pytest.raises(DiffattrError, match="family.beta_schedule = 'scaled_linear'"):
        family(byo, beta_schedule="linear").check_model(byo, digits)
    # the layout helper picks the family and its settings
    settings = family_for_dir(byo)
    assert settings.name == "latent" and settings.autoencoder == str(byo)
    assert family_of(byo).settings == settings
    # retraining a model the package did not train builds its own UNet layout
    assert settings.architecture == str(byo.resolve())
    fresh = settings.build().init_model(data, seed=3)
    byo_unet = family(byo).load(byo).model
    assert fresh.config.block_out_channels == byo_unet.config.block_out_channels
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in byo_unet.parameters()]
    with pytest.raises(DiffattrError, match="has no unet/config.json"):
        family(ae_dir, architecture=str(tmp_path / "none")).check_data(digits)
    assert family_for_dir(tmp_path / "ddpm").name == "unconditional"
    assert family_for_dir(tmp_path) is None


# ----------------------------------------------------------------------------- baselines


def test_baseline_target_is_latent_with_decoded_pixels(ae_dir):
    import numpy as np

    from diffattr.baselines import attribute
    from diffattr.data.players import Players

    small = load_dataset({"name": "digits", "classes": [0, 1]})
    fam = family(ae_dir)
    data = fam.training_set(small).subset(np.arange(6))
    unet = fam.init_model(data, 0)
    target = fam.baseline_target(unet, data, num_samples=3, seed=2, ddim_steps=3)
    assert target.x0_train.shape == (6, 2, 4, 4) and target.x0_gen.shape == (3, 2, 4, 4)
    assert target.pixels_train().shape == (6, 1, 8, 8) and target.pixels_gen().shape == (3, 1, 8, 8)
    torch.testing.assert_close(target.pixels_gen(), fam.sample(unet, 3, seed=2, ddim_steps=3))
    torch.testing.assert_close(
        target.scheduler.alphas_cumprod, fam.noise_scheduler().alphas_cumprod
    )
    # Journey-TRAK's trajectory follows the family's schedule and ends at the samples
    traj = target.get_trajectory(2)
    assert traj.states.shape == (2, 3, 2, 4, 4)
    players = Players(("a", "b"), (np.arange(3), np.arange(3, 6)), "contributor", 6)
    grad = {"projection_dim": 16, "timesteps": 2, "journey_points": 2, "projector": "basic"}
    for table in ({"name": "journey-trak", **grad}, {"name": "pixel-similarity"}):
        (a,) = attribute(table, target, players, behaviors=["fid"])
        assert a.values.shape == (2,) and np.isfinite(a.values).all()


def test_latent_models_train_and_sample_side_by_side(ae_dir, digits):
    """K latent UNets stacked (``[executor] jobs_per_batch``) equal one at a time: the
    weights' update of a short fine-tune to 1e-3 of its norm, decoded samples to 1e-4 (float
    summation order)."""
    import copy

    from diffattr.diffusion.ema import EMA
    from diffattr.diffusion.settings import TrainConfig

    fam = family(ae_dir)
    data = fam.training_set(digits)
    unet = fam.init_model(data, seed=0)
    subsets = [data.subset(list(range(0, 40))), data.subset(list(range(100, 110)))]
    cfgs = [TrainConfig(steps=6, batch_size=8, lr=1e-3, seed=s) for s in (0, 1)]
    alone = [fam.fit(copy.deepcopy(unet), d, c) for d, c in zip(subsets, cfgs)]
    side = fam.fit_stacked(
        [unet, unet],
        subsets,
        cfgs,
        emas=[EMA(unet, 0.999) for _ in cfgs],
        optimizer_states=[None] * 2,
    )

    def flat(m):
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    start = flat(unet)
    for a, b in zip(alone, side):
        # Adam's first steps move a weight whose gradient is ~0 by up to lr whatever its
        # sign, so single weights may differ by ~1e-4; the update as a whole agrees to 1e-3
        update = flat(a.unet) - start
        assert (flat(b.unet) - flat(a.unet)).norm() < 1e-3 * update.norm()
    models = [r.unet.eval() for r in side]
    images = fam.sample_stacked(models, 5, seed=3, ddim_steps=3, batch_size=4)
    for m, x in zip(models, images):
        assert (x - fam.sample(m, 5, seed=3, ddim_steps=3)).abs().max().item() < 1e-4
    assert (images[0] - images[1]).abs().max().item() > 1e-3
