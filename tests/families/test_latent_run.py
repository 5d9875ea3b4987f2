"""The latent path end to end through ``Run(cfg, dir).attribute()`` (encode once -> train ->
prune -> sFT -> sample -> decode -> measure), and full models the package did not train."""

import json
import shutil

import numpy as np
import pytest
import torch
from latent_helpers import latent_cfg, save_autoencoder

from diffattr.data import load_dataset
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState
from diffattr.runner.run import Run
from diffattr.store import Store

FEATURES = {"name": "autoencoder", "steps": 30}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory):
    return save_autoencoder(tmp_path_factory.mktemp("ae") / "kl")


def check_values(summary, run_dir):
    assert summary.failed == 0 and not summary.errors, summary.first_error or summary.errors
    payload = json.loads((run_dir / "values.json").read_text())
    keys = set(payload["v1"])
    assert keys == {"diversity-entropy[autoencoder]", "fid[autoencoder]"}
    assert {a.behavior for a in summary.attributions} == keys
    for a in summary.attributions:
        assert len(a.values) == 4 and np.all(np.isfinite(a.values))
        gap = payload["v1"][a.behavior] - payload["v0"][a.behavior]
        assert a.values.sum() == pytest.approx(gap, abs=1e-6)


@pytest.mark.parametrize("source", ["directory", "train"])
def test_latent_run_end_to_end(tmp_path, ae_dir, source, monkeypatch):
    autoencoder = ae_dir if source == "directory" else "train"
    extra = {"behaviors.features": FEATURES}
    if source == "train":
        extra.update({"family.ae_steps": 20, "family.ae_width": 8, "family.ae_downsample": 1})
    cfg = latent_cfg(autoencoder, **extra)
    run_dir = tmp_path / "run"
    with Run(cfg, run_dir, progress=False) as run:
        summary = run.attribute()
    check_values(summary, run_dir)
    # the models are LDMPipeline directories; the pruned one kept whole heads at ratio 0.5
    assert json.loads((run_dir / "full" / "model_index.json").read_text())["_class_name"] == (
        "LDMPipeline"
    )
    pruned = next((run_dir / "shared").glob("sft-*")) / "pruned"
    report = json.loads((pruned / "diffattr.json").read_text())["pruning"]
    assert report["ratio"] == 0.5 and report["params_after"] < 0.5 * report["params_before"]
    fam = cfg.family.build()
    model = fam.load(pruned).model
    attn = [m for m in model.modules() if type(m).__name__ == "Attention"]
    assert attn and all(m.inner_dim == m.heads * 4 for m in attn)  # 8-dim heads -> 4
    # the latents were encoded once, into the run's cache, and are reused: more coalitions
    # train and sample with the encoder switched off
    assert len(list((run_dir / "cache" / "latents").glob("*.safetensors"))) == 1
    if source == "train":
        assert len(list((run_dir / "cache" / "autoencoders").iterdir())) == 1
    from diffusers import AutoencoderKL

    def no_encoding(*a, **k):
        raise AssertionError("the encoder ran again")

    monkeypatch.setattr(AutoencoderKL, "encode", no_encoding)
    more = cfg.with_overrides(**{"attribution.subsets": 12})
    with Run(more, run_dir, progress=False) as run:
        again = run.attribute()
    check_values(again, run_dir)
    with Store(run_dir / "store.sqlite") as s:
        assert sum(1 for r in s.records() if r.kind == "fit") > summary.jobs - 3


def test_mismatched_full_model_is_one_clear_error(tmp_path, ae_dir):
    from diffusers import UNet2DModel

    from diffattr.runner.plan import make_plan

    cfg = latent_cfg(ae_dir)
    fam = cfg.family.build()
    wrong = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    fam.save(tmp_path / "wrong", ModelState(wrong), {})
    bad = cfg.with_overrides(**{"attribution.full_model": str(tmp_path / "wrong")})
    msg = r"denoises 3-channel 8x8 latents but the autoencoder maps the 8x8 data to 2-channel 4x4"
    with pytest.raises(DiffattrError, match=msg) as e:
        make_plan(bad, tmp_path / "run")
    assert "\n" not in str(e.value)
    with pytest.raises(DiffattrError, match=msg):
        Run(bad, tmp_path / "run", progress=False).attribute()
    assert not (tmp_path / "run" / "full").exists()


# ----------------------------------------------------------------------------- bring your own


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory):
    """A diffusers DDPMPipeline the package did not train: no diffattr.json."""
    from diffusers import DDPMPipeline

    from diffattr.diffusion.unet import make_scheduler, make_unet

    path = tmp_path_factory.mktemp("byo") / "ddpm"
    DDPMPipeline(unet=make_unet("tiny", 8, 1, seed=5), scheduler=make_scheduler()).save_pretrained(
        path
    )
    assert not (path / "diffattr.json").exists()
    return path


def byo_cfg(full_model, **extra):
    from diffattr.config import RunConfig

    return RunConfig().with_overrides(
        **{
            "data": {"name": "digits", "classes": [0, 1, 2, 3]},
            "train.steps": 30,
            "train.batch_size": 16,
            "sample.num_samples": 16,
            "sample.ddim_steps": 4,
            "sample.batch_size": 16,
            "attribution.subsets": 10,
            "attribution.full_model": str(full_model),
            "method": {"name": "sft", "finetune_steps": 4, "steps": 3},
            "behaviors.features": FEATURES,
            **extra,
        }
    )


def test_byo_ddpm_pipeline_takes_the_runs_recipe(tmp_path, ddpm_dir):
    from diffattr.counterfactual.base import FullModel, build_method
    from diffattr.families.settings import family_for_layout, family_of

    cfg = byo_cfg(ddpm_dir)
    assert family_for_layout(ddpm_dir) == "unconditional"
    fam = family_of(ddpm_dir)
    digits = load_dataset(cfg.data)
    fam.check_model(ddpm_dir, digits)
    with pytest.raises(DiffattrError, match="records no training recipe"):
        FullModel(ddpm_dir, fam)
    assert FullModel(ddpm_dir, fam, cfg.train).train == cfg.train
    data = fam.training_set(digits)
    method = build_method(cfg.method, fam, ddpm_dir, tmp_path / "work", cfg.train)
    method.prepare(data, progress=False)
    method.load()
    kept = np.flatnonzero(digits.labels.numpy() < 2)
    result = method.run(kept, data, seed=0)
    images = fam.sample(result.model, 4, seed=0, ddim_steps=3)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    assert result.info["steps"] == 3
    # the pixel family refuses an LDMPipeline with a hint, and a model of another size
    resized = load_dataset({"name": "digits", "classes": [0, 1], "image_size": 16})
    with pytest.raises(DiffattrError, match="8x8 images but the data are 1-channel 16x16"):
        fam.check_model(ddpm_dir, resized)
    ldm = tmp_path / "ldm"
    shutil.copytree(ddpm_dir, ldm)
    index = json.loads((ldm / "model_index.json").read_text())
    (ldm / "model_index.json").write_text(json.dumps({**index, "_class_name": "LDMPipeline"}))
    with pytest.raises(DiffattrError, match="name = 'latent'"):
        fam.check_model(ldm, digits)


def test_byo_ddpm_pipeline_runs(tmp_path, ddpm_dir):
    with Run(byo_cfg(ddpm_dir), tmp_path / "run", progress=False) as run:
        summary = run.attribute()
    assert summary.failed == 0 and not summary.errors
    assert "fid[autoencoder]" in {a.behavior for a in summary.attributions}


@pytest.mark.parametrize("preset", ["latent-quick", "latent"])
def test_latent_presets_plan(tmp_path, preset):
    from pathlib import Path

    from diffattr.config import build_config
    from diffattr.data.settings import FASHION_MNIST_DIR
    from diffattr.runner.plan import make_plan

    if not Path(FASHION_MNIST_DIR).is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    cfg = build_config(None, preset)
    assert cfg.family.name == "latent" and cfg.method.ratio == 0.5
    plan = make_plan(cfg, tmp_path / "run")
    assert plan.n_players == 10
    assert plan.behavior_keys == ["diversity-entropy[fashion-mnist-cnn]", "fid[fashion-mnist-cnn]"]
