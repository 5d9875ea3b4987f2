"""The offline feature extractors, the real statistics and ``measure_images``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffattr import config
from diffattr.behaviors import (
    BEHAVIORS,
    clear_memory_cache,
    fid_from_features,
    get_extractor,
    inception,
    measure_images,
)
from diffattr.behaviors import features as feat
from diffattr.config import DataConfig
from diffattr.data import load_dataset
from diffattr.errors import DiffattrError

KEYS = {
    f"{n}[digits-cnn]"
    for n in (
        "fid",
        "is",
        "precision",
        "recall",
        "density",
        "coverage",
        "class-entropy",
        "cluster-entropy",
    )
}


@pytest.fixture
def home():
    """DIFFATTR_HOME of the test session (tests/conftest.py points it at a temporary folder
    shared by all tests, so the digits classifier is trained once)."""
    return config.home()


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig())


@pytest.fixture(scope="module")
def halves(digits):
    perm = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    return digits.images[perm[:800]], digits.images[perm[800:1600]]


@pytest.fixture(scope="module")
def noise():
    return torch.rand(800, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_digits_classifier_is_accurate_and_cached(home, digits):
    ext = get_extractor(DataConfig(), dataset=digits)
    assert ext.name == "digits-cnn"
    assert ext.heldout_accuracy >= 0.95
    assert ext.record["num_heldout"] == round(0.15 * len(digits))
    directory = home / "cache" / "features" / ext.key
    assert (directory / "classifier.safetensors").is_file()
    record = json.loads((directory / "classifier.json").read_text())
    assert record["key"] == ext.key and record["heldout_accuracy"] >= 0.95
    assert record["data"]["class_names"] == digits.class_names
    assert not list(directory.glob(".*"))  # no temporary files left behind
    f, p = ext.features_and_probs(digits.images[:10])
    assert f.shape == (10, 128) and p.shape == (10, 10)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == digits.labels[:10].numpy()).mean() >= 0.9


def test_extractor_kept_in_memory_and_loaded_from_disk(home, digits, monkeypatch):
    first = get_extractor(DataConfig())
    assert get_extractor(DataConfig()) is first
    x = digits.images[:20]
    before = first.features(x)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    clear_memory_cache()
    monkeypatch.setattr(feat, "train_classifier", no_training)
    loaded = get_extractor(DataConfig())
    assert loaded is not first and loaded.key == first.key
    np.testing.assert_allclose(loaded.features(x), before, rtol=1e-5, atol=1e-6)
    assert loaded.heldout_accuracy == first.heldout_accuracy


def test_corrupt_cache_is_retrained(home, digits, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFATTR_HOME", str(tmp_path))
    clear_memory_cache()
    calls = []

    def fake_train(images, labels, num_classes, **kwargs):
        calls.append(len(images))
        return feat.SmallCNN(1, num_classes, 8), {"heldout_accuracy": None}

    monkeypatch.setattr(feat, "train_classifier", fake_train)
    key = feat.extractor_key(DataConfig(), digits)
    directory = tmp_path / "cache" / "features" / key
    directory.mkdir(parents=True)
    (directory / "classifier.json").write_text("{not json")
    ext = get_extractor(DataConfig(), dataset=digits)
    assert calls == [len(digits)] and ext.key == key
    assert json.loads((directory / "classifier.json").read_text())["key"] == key
    clear_memory_cache()


def test_extractor_key_identifies_data_and_seed(digits):
    base = feat.extractor_key(DataConfig(), digits)
    assert base == feat.extractor_key(DataConfig(), digits)
    assert base != feat.extractor_key(DataConfig(), digits, seed=1)
    three = load_dataset(DataConfig(classes=[0, 1, 2]))
    assert base != feat.extractor_key(DataConfig(classes=[0, 1, 2]), three)


def test_classifier_training_is_deterministic(digits):
    x, y = digits.images[:200], digits.labels[:200]
    m1, r1 = feat.train_classifier(x, y, 10, epochs=1, seed=5)
    m2, r2 = feat.train_classifier(x, y, 10, epochs=1, seed=5)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert r1["heldout_accuracy"] == r2["heldout_accuracy"]


def test_unknown_extractor_kind_is_an_error():
    with pytest.raises(DiffattrError, match="unknown feature extractor"):
        get_extractor(DataConfig(), kind="clip")


def test_fid_real_halves_far_below_real_vs_noise(home, halves, noise):
    ext = get_extractor(DataConfig())
    a, b = ext.features(halves[0]), ext.features(halves[1])
    real_real = fid_from_features(a, b)
    real_noise = fid_from_features(a, ext.features(noise))
    assert real_real * 20 < real_noise


def test_measure_images_keys_and_real_beats_noise(home, halves, noise):
    real = measure_images(halves[1])
    fake = measure_images(noise)
    assert set(real) == KEYS and set(fake) == KEYS
    assert list(real)[0] == "fid[digits-cnn]"
    for key, value in real.items():
        name = key.split("[")[0]
        if BEHAVIORS.get(name).higher_is_better:
            assert value > fake[key], key
        else:
            assert value < fake[key], key
    assert real["is[digits-cnn]"] > 8.0
    assert 0.0 <= real["precision[digits-cnn]"] <= 1.0
    assert real["class-entropy[digits-cnn]"] <= np.log2(10) + 1e-9
    assert real["cluster-entropy[digits-cnn]"] <= np.log2(20) + 1e-9
    stats = list((home / "cache" / "features").glob("*/real-*.json"))
    assert stats, "real statistics should be cached on disk"


def test_measure_images_subset_of_names_and_reference(home, halves):
    out = measure_images(halves[0], names=["fid", "recall"])
    assert list(out) == ["fid[digits-cnn]", "recall[digits-cnn]"]
    against_other_half = measure_images(halves[0], names="fid", reference=halves[1])
    against_self = measure_images(halves[0], names="fid", reference=halves[0])
    assert against_self["fid[digits-cnn]"] == pytest.approx(0.0, abs=1e-6)
    assert against_other_half["fid[digits-cnn]"] > against_self["fid[digits-cnn]"]


def test_measure_images_bad_input_is_a_clear_error(home, halves):
    with pytest.raises(DiffattrError, match="unknown behavior 'sharpness'"):
        measure_images(halves[0], names=["fid", "sharpness"])
    with pytest.raises(DiffattrError, match="8x8"):
        measure_images(torch.zeros(4, 1, 16, 16))
    with pytest.raises(DiffattrError, match="channel"):
        measure_images(torch.zeros(4, 3, 8, 8))
    with pytest.raises(DiffattrError, match="at least 2"):
        measure_images(torch.zeros(1, 1, 8, 8))
    with pytest.raises(DiffattrError, match="NaN"):
        measure_images(torch.full((4, 1, 8, 8), float("nan")))


# ----------------------------------------------------------------------------- Inception


def test_inception_without_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    with pytest.raises(DiffattrError, match="nothing is downloaded"):
        get_extractor(DataConfig(), kind="inception")
    with pytest.raises(DiffattrError, match="not found"):
        get_extractor(DataConfig(), kind="inception", inception_weights=tmp_path / "missing.pth")
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path))  # a folder without the file
    with pytest.raises(DiffattrError, match="not found"):
        get_extractor(DataConfig(), kind="inception")


def test_inception_wrong_checksum_is_a_clear_error(tmp_path):
    bad = tmp_path / inception.WEIGHTS_NAME
    bad.write_bytes(b"not the weights")
    with pytest.raises(DiffattrError, match="SHA-256"):
        inception.load_fid_inception(bad)


def test_inception_file_with_other_tensors_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    monkeypatch.setattr(inception, "SHA256_PREFIX", inception.sha256_file(path)[:8])
    with pytest.raises(DiffattrError, match="does not hold the FID Inception weights"):
        inception.load_fid_inception(path)


def test_inception_loads_a_matching_file_and_extracts(tmp_path, monkeypatch):
    model = inception.FIDInceptionV3()
    assert sum(p.numel() for p in model.parameters()) == 23_850_960  # pytorch-fid's network
    path = tmp_path / inception.WEIGHTS_NAME
    torch.save(model.state_dict(), path)
    monkeypatch.setattr(inception, "SHA256_PREFIX", inception.sha256_file(path)[:8])
    monkeypatch.setattr(inception.InceptionExtractor, "_cache", {})
    ext = get_extractor(DataConfig(), kind="inception", inception_weights=path)
    f, p = ext.features_and_probs(torch.rand(2, 1, 8, 8) * 2 - 1)
    assert f.shape == (2, 2048) and p.shape == (2, 1008)
    assert ext.name == "inception"


@pytest.mark.slow
def test_trained_model_beats_null_model_on_every_global_behavior(home, digits):
    """1,500 steps of the tiny preset on digits (about a minute on 2 CPU cores)."""
    from diffattr.config import TrainConfig
    from diffattr.diffusion.sample import generate
    from diffattr.diffusion.train import train
    from diffattr.diffusion.unet import make_unet

    null = make_unet("tiny", 8, 1, seed=0)
    unet = make_unet("tiny", 8, 1, seed=0)
    result = train(unet, digits.images, TrainConfig(steps=1500), progress=False)
    n, steps = 500, 50
    trained = measure_images(generate(result.ema.model, n, ddim_steps=steps, seed=0))
    untrained = measure_images(generate(null, n, ddim_steps=steps, seed=0))
    for key, value in trained.items():
        if BEHAVIORS.get(key.split("[")[0]).higher_is_better:
            assert value > untrained[key], (key, value, untrained[key])
        else:
            assert value < untrained[key], (key, value, untrained[key])
