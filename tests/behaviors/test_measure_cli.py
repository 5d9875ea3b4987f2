"""``diffattr measure`` on image folders and model directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from diffattr.behaviors.reference import read_image_folder
from diffattr.commands.measure import measure
from diffattr.config import RunConfig
from diffattr.data import load_dataset
from diffattr.errors import DiffattrError

NAMES = (
    "fid",
    "is",
    "precision",
    "recall",
    "density",
    "coverage",
    "class-entropy",
    "cluster-entropy",
    "diversity-entropy",
)

app = typer.Typer()
app.command()(measure)
runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """30 digits as PNGs: grey 8x8 in one subfolder, RGB 24x24 (upscaled) in another."""
    root = tmp_path_factory.mktemp("digit-pngs")
    ds = load_dataset("digits")
    arr = ((ds.images[:30, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    (root / "grey").mkdir()
    (root / "rgb").mkdir()
    for i, a in enumerate(arr[:20]):
        Image.fromarray(a, mode="L").save(root / "grey" / f"{i:02d}.png")
    for i, a in enumerate(arr[20:]):
        big = Image.fromarray(a, mode="L").resize((24, 24), Image.NEAREST).convert("RGB")
        big.save(root / "rgb" / f"{i:02d}.jpg", quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_read_image_folder_converts_and_resizes(digit_folder):
    x = read_image_folder(digit_folder, channels=1, image_size=8)
    assert tuple(x.shape) == (30, 1, 8, 8)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    ds = load_dataset("digits")
    assert float((x[:20] - ds.images[:20]).abs().max()) < 0.01  # PNG round trip


def test_cli_measures_an_image_folder(digit_folder, tmp_path):
    out = tmp_path / "values.json"
    result = _invoke("--images", digit_folder, "--out", out)
    assert result.exit_code == 0, result.output
    values = json.loads(out.read_text())
    assert set(values) == {f"{n}[digits-cnn]" for n in NAMES}
    assert all(isinstance(v, float) for v in values.values())
    assert values["is[digits-cnn]"] > 5.0
    assert "fid[digits-cnn]" in result.output


def test_cli_features_and_reference(digit_folder, tmp_path):
    """--reference DIR: the folder measured against itself has FID ~ 0; --features picks the
    space (label-free: only the behaviors it supports by default)."""
    out = tmp_path / "self.json"
    grey = digit_folder / "grey"
    result = _invoke("--images", grey, "--reference", grey, "--behaviors", "fid", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["fid[digits-cnn]"] == pytest.approx(0.0, abs=1e-3)
    out = tmp_path / "ae.json"
    result = _invoke("--images", digit_folder, "--features", "autoencoder", "--out", out)
    assert result.exit_code == 0, result.output
    keys = set(json.loads(out.read_text()))
    assert "fid[autoencoder]" in keys and "is[autoencoder]" not in keys


def test_cli_settings_file(digit_folder, tmp_path):
    settings = tmp_path / "behaviors.toml"
    settings.write_text('[behaviors]\nmeasure = ["fid", { name = "precision", k = 5 }]\n')
    out = tmp_path / "v.json"
    result = _invoke("--images", digit_folder, "--settings", settings, "--out", out)
    assert result.exit_code == 0, result.output
    assert list(json.loads(out.read_text())) == ["fid[digits-cnn]", "precision[digits-cnn]"]


def test_cli_subset_of_behaviors(digit_folder, tmp_path):
    out = tmp_path / "v.json"
    result = _invoke("--images", digit_folder, "--behaviors", "fid,precision", "--out", out)
    assert result.exit_code == 0, result.output
    assert list(json.loads(out.read_text())) == ["fid[digits-cnn]", "precision[digits-cnn]"]


def test_cli_measures_a_model_directory(tmp_path):
    from diffattr.diffusion.unet import make_unet
    from diffattr.families.base import ModelState

    cfg = RunConfig().with_overrides(**{"sample.num_samples": 12, "sample.ddim_steps": 2})
    family = cfg.family.build("cpu")
    model = family.save(
        tmp_path / "null", ModelState(make_unet("tiny", 8, 1)), {"config": cfg.to_dict()}
    )
    out = tmp_path / "null.json"
    result = _invoke(model, "--behaviors", "fid,is,class-entropy", "--out", out)
    assert result.exit_code == 0, result.output
    values = json.loads(out.read_text())
    assert set(values) == {"fid[digits-cnn]", "is[digits-cnn]", "class-entropy[digits-cnn]"}
    assert "is[digits-cnn]" in result.output

    from diffattr.behaviors import measure_model

    m = measure_model(
        model, 4, settings={"measure": ["fid"]}, cache_dir=tmp_path, ddim_steps=1, keep_images=True
    )
    assert m.num_samples == 4 and tuple(m.images.shape) == (4, 1, 8, 8)
    assert m.sample == {"num_samples": 4, "ddim_steps": 1, "seed": 0, "batch_size": 500}
    assert set(m.timings) == {"load_s", "generate_s", "measure_s"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--images", "{tmp}/missing"], "image folder not found"),
        (["--images", "{tmp}/empty"], "no PNG or JPEG"),
        (["--images", "{folder}", "--behaviors", "fid,sharpness"], "unknown behavior"),
        (["--images", "{folder}", "--dataset", "mnist"], "unknown dataset"),
        ([], "exactly one"),
        (["{tmp}", "--images", "{folder}"], "exactly one"),
        (["{tmp}"], "not a diffattr model directory"),
        (["--images", "{folder}", "--features", "clp"], "unknown feature space 'clp'"),
        (["--images", "{folder}", "--features", "clip"], "behaviors.features.path"),
        (["--images", "{folder}", "--reference", "{tmp}/none"], "behaviors.reference"),
        (
            ["--images", "{folder}", "--features", "autoencoder", "--behaviors", "is"],
            "is needs class probabilities",
        ),
    ],
)
def test_cli_bad_input_is_a_clear_error(args, message, digit_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, folder=digit_folder) for a in args]
    result = _invoke(*args)
    assert result.exit_code != 0
    assert isinstance(result.exception, DiffattrError), result.output
    assert message in str(result.exception)
