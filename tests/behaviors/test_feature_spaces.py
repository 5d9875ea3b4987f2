"""The feature spaces: trained CNN classifiers, the label-free autoencoder, Inception."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffattr.behaviors import autoencoder as ae
from diffattr.behaviors import clear_memory_cache, inception
from diffattr.behaviors import features as feat
from diffattr.behaviors.spaces import FEATURES
from diffattr.data import load_dataset
from diffattr.errors import DiffattrError
from diffattr.fileio import file_sha256


@pytest.fixture
def cache():
    """The test session's cache (tests/conftest.py points DIFFATTR_HOME at a temporary folder
    shared by all tests, so the digits classifier is trained once)."""
    return Path(os.environ["DIFFATTR_HOME"]) / "cache"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _build(name, dataset, cache, **fields):
    settings = FEATURES.parse(dict(name=name, **fields))
    return settings.implementation_class()(settings, dataset, device="cpu", cache_dir=cache)


def test_digits_classifier_is_accurate_and_cached(cache, digits):
    ext = _build("digits-cnn", digits, cache)
    assert ext.name == "digits-cnn" and ext.has_probs
    assert ext.heldout_accuracy >= 0.95
    assert ext.record["num_heldout"] == round(0.15 * len(digits))
    directory = cache / "features" / ext.key
    assert (directory / "classifier.safetensors").is_file()
    record = json.loads((directory / "classifier.json").read_text())
    assert record["key"] == ext.key and record["heldout_accuracy"] >= 0.95
    assert record["class_names"] == digits.class_names
    assert not list(directory.glob(".*"))  # no temporary files left behind
    f, p = ext.features_and_probs(digits.images[:10])
    assert f.shape == (10, 128) and p.shape == (10, 10)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == digits.labels[:10].numpy()).mean() >= 0.9
    d = ext.describe()
    assert d["name"] == "digits-cnn" and d["heldout_accuracy"] == ext.heldout_accuracy


def test_extractor_kept_in_memory_and_loaded_from_disk(cache, digits, monkeypatch):
    first = _build("digits-cnn", digits, cache)
    assert _build("digits-cnn", digits, cache) is first
    x = digits.images[:20]
    before = first.features(x)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    clear_memory_cache()
    monkeypatch.setattr(feat, "train_classifier", no_training)
    loaded = _build("digits-cnn", digits, cache)
    assert loaded is not first and loaded.key == first.key
    np.testing.assert_allclose(loaded.features(x), before, rtol=1e-5, atol=1e-6)
    assert loaded.heldout_accuracy == first.heldout_accuracy


def test_corrupt_cache_is_retrained(digits, monkeypatch, tmp_path):
    clear_memory_cache()
    calls = []

    def fake_train(images, labels, num_classes, **kwargs):
        calls.append(len(images))
        return feat.SmallCNN(1, num_classes, 8), {"heldout_accuracy": None}

    monkeypatch.setattr(feat, "train_classifier", fake_train)
    first = _build("digits-cnn", digits, tmp_path)
    directory = tmp_path / "features" / first.key
    (directory / "classifier.json").write_text("{not json")
    clear_memory_cache()
    ext = _build("digits-cnn", digits, tmp_path)
    assert calls == [len(digits), len(digits)] and ext.key == first.key
    assert json.loads((directory / "classifier.json").read_text())["key"] == first.key
    clear_memory_cache()


def test_space_key_follows_the_training_data_and_seed(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(
        feat,
        "train_classifier",
        lambda images, labels, n, **kw: (feat.SmallCNN(images.shape[1], n, 8), {}),
    )
    settings = FEATURES.parse("digits-cnn")
    build = settings.implementation_class()
    base = build(settings, digits, cache_dir=tmp_path).key
    assert build(settings, digits, cache_dir=tmp_path, seed=1).key != base
    three = load_dataset({"name": "digits", "classes": [0, 1, 2]})
    assert build(settings, three, cache_dir=tmp_path).key != base
    clear_memory_cache()


def test_named_classifier_for_other_data_trains_on_the_named_dataset(tmp_path, monkeypatch):
    """digits-cnn for a 16 px RGB folder run: sklearn's digits at 16 px repeated to RGB."""
    from diffattr.data.base import ImageDataset

    seen = {}

    def fake_train(images, labels, num_classes, **kwargs):
        seen.update(shape=tuple(images.shape), classes=num_classes)
        return feat.SmallCNN(images.shape[1], num_classes, images.shape[-1]), {}

    monkeypatch.setattr(feat, "train_classifier", fake_train)
    run = ImageDataset(
        name="folder",
        images=torch.zeros(4, 3, 16, 16),
        labels=torch.tensor([0, 0, 1, 1]),
        ids=list("abcd"),
        class_names=["alice", "bob"],
        contributors=["alice", "alice", "bob", "bob"],
    )
    ext = _build("digits-cnn", run, tmp_path)
    assert seen == {"shape": (1797, 3, 16, 16), "classes": 10}
    assert ext.channels == 3 and ext.image_size == 16
    assert ext.record["source"]["named_data"] == "digits"
    clear_memory_cache()


def test_classifier_training_is_deterministic(digits):
    x, y = digits.images[:200], digits.labels[:200]
    m1, r1 = feat.train_classifier(x, y, 10, epochs=1, seed=5)
    m2, r2 = feat.train_classifier(x, y, 10, epochs=1, seed=5)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert r1["heldout_accuracy"] == r2["heldout_accuracy"]


def test_label_classifier_needs_semantic_labels(digits, tmp_path):
    with pytest.raises(DiffattrError, match="label"):
        _build("label-cnn", digits.subset(range(20)), tmp_path)


# ----------------------------------------------------------------------------- autoencoder


def test_autoencoder_is_deterministic_and_separates_noise(digits):
    x = digits.images[:300]
    m1, r1 = ae.train_autoencoder(x, steps=40, seed=2)
    m2, _ = ae.train_autoencoder(x, steps=40, seed=2)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert r1["heldout_mse"] is not None and r1["num_heldout"] == 45
    with torch.no_grad():
        assert tuple(m1.encode(x[:5]).shape) == (5, 64)
        assert tuple(m1(x[:5]).shape) == (5, 1, 8, 8)


@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (13, 3)])
def test_autoencoder_shapes(size, channels):
    model = ae.ConvAutoencoder(channels, size, 16)
    x = torch.rand(3, channels, size, size) * 2 - 1
    assert tuple(model(x).shape) == (3, channels, size, size)
    assert tuple(model.encode(x).shape) == (3, 16)


def test_autoencoder_space_is_cached_by_image_content(digits, tmp_path, monkeypatch):
    clear_memory_cache()
    ext = _build("autoencoder", digits, tmp_path, steps=30)
    assert ext.name == "autoencoder" and not ext.has_probs
    directory = tmp_path / "features" / ext.key
    assert (directory / "autoencoder.safetensors").is_file()
    before = ext.features(digits.images[:10])
    clear_memory_cache()
    monkeypatch.setattr(ae, "train_autoencoder", lambda *a, **k: pytest.fail("retrained"))
    again = _build("autoencoder", digits, tmp_path, steps=30)
    np.testing.assert_allclose(again.features(digits.images[:10]), before, rtol=1e-6)
    other = digits.subset(range(100))
    monkeypatch.undo()
    assert _build("autoencoder", other, tmp_path, steps=30).key != ext.key
    clear_memory_cache()


# ----------------------------------------------------------------------------- Inception


def test_inception_without_weights_is_a_clear_error(monkeypatch, tmp_path, digits):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    with pytest.raises(DiffattrError, match="nothing is downloaded"):
        _build("inception", digits, tmp_path)
    with pytest.raises(DiffattrError, match="not found"):
        _build("inception", digits, tmp_path, path=str(tmp_path / "missing.pth"))
    monkeypatch.setenv(inception.ENV_VAR, str(tmp_path))  # a folder without the file
    with pytest.raises(DiffattrError, match="not found"):
        _build("inception", digits, tmp_path)


def test_inception_wrong_checksum_is_a_clear_error(tmp_path):
    bad = tmp_path / inception.WEIGHTS_NAME
    bad.write_bytes(b"not the weights")
    with pytest.raises(DiffattrError, match="SHA-256"):
        inception.load_fid_inception(bad)


def test_inception_file_with_other_tensors_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    monkeypatch.setattr(inception, "SHA256_PREFIX", file_sha256(path)[:8])
    with pytest.raises(DiffattrError, match="does not hold the FID Inception weights"):
        inception.load_fid_inception(path)


def test_inception_loads_a_matching_file_and_extracts(tmp_path, monkeypatch, digits):
    model = inception.FIDInceptionV3()
    assert sum(p.numel() for p in model.parameters()) == 23_850_960  # pytorch-fid's network
    path = tmp_path / inception.WEIGHTS_NAME
    torch.save(model.state_dict(), path)
    monkeypatch.setattr(inception, "SHA256_PREFIX", file_sha256(path)[:8])
    clear_memory_cache()  # no extractor of another test kept for this path
    ext = _build("inception", digits, tmp_path, path=str(path))
    f, p = ext.features_and_probs(torch.rand(2, 1, 8, 8) * 2 - 1)
    assert f.shape == (2, 2048) and p.shape == (2, 1008)
    assert ext.name == "inception"
