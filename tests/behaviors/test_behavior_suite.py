"""build_suite end to end on digits and on folder data, and the trap it avoids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffattr.behaviors import build_suite
from diffattr.behaviors.features import ClassifierExtractor, module_digest, train_classifier
from diffattr.behaviors.settings import BEHAVIORS
from diffattr.behaviors.suite import suite_for_extractor
from diffattr.data import load_dataset
from diffattr.data.folder import load_folder
from diffattr.errors import DiffattrError

ALL = [
    "fid",
    "is",
    "precision",
    "recall",
    "density",
    "coverage",
    "class-entropy",
    "cluster-entropy",
    "diversity-entropy",
]


@pytest.fixture
def cache():
    """The test session's shared cache (see tests/conftest.py)."""
    return Path(os.environ["DIFFATTR_HOME"]) / "cache"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def halves(digits):
    perm = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    return digits.images[perm[:800]], digits.images[perm[800:1600]]


def _noise(n, seed=1, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _save_pngs(images: torch.Tensor, folder: Path, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arr = ((images[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    for i, a in enumerate(arr):
        Image.fromarray(a, mode="L").save(folder / f"{start + i:04d}.png")


def test_keys_describe_and_real_beats_noise(cache, digits, halves):
    suite = build_suite({"measure": ALL}, digits, cache_dir=cache)
    keys = [f"{n}[digits-cnn]" for n in ALL]
    assert suite.keys() == keys
    real, fake = suite.measure(halves[1]), suite.measure(_noise(800))
    assert list(real) == keys
    for key in keys:
        name = key.split("[")[0]
        if BEHAVIORS.get(name).higher_is_better:
            assert real[key] > fake[key], key
        else:
            assert real[key] < fake[key], key
        assert suite.higher_is_better(key) == BEHAVIORS.get(name).higher_is_better
    assert real["is[digits-cnn]"] > 8.0
    assert real["diversity-entropy[digits-cnn]"] <= np.log2(20) + 1e-9
    d = suite.describe()
    (space,) = d["spaces"]
    assert space["name"] == "digits-cnn" and space["heldout_accuracy"] >= 0.95
    assert d["reference"]["reference"] == "train" and d["reference"]["n"] == len(digits)
    assert d["behaviors"]["is[digits-cnn]"]["settings"] == {"name": "is", "splits": 1}
    files = {p.name.split("-")[0] for p in (cache / "features" / space["key"]).iterdir()}
    assert {"classifier.json", "reference", "kmeans", "ward"} <= files
    # Built once per process for the same settings and data.
    assert build_suite({"measure": ALL}, digits, cache_dir=cache) is suite


def test_manifold_defaults_to_the_number_of_generated_images(cache, digits, halves):
    suite = build_suite({"measure": ["precision"]}, digits, cache_dir=cache)
    suite.measure(halves[0][:100])
    ref = next(iter(suite.spaces.values()))
    assert {size for size, _ in ref._manifolds} == {100}
    fixed = build_suite({"measure": ["precision"], "manifold_size": 500}, digits, cache_dir=cache)
    fixed.measure(halves[0][:100])
    assert {size for size, _ in next(iter(fixed.spaces.values()))._manifolds} == {500}


def test_reference_folder_moves_fid_toward_it(cache, digits, tmp_path):
    """Against a curated folder, images equal to it have FID ~ 0; against 'train' they don't."""
    curated = digits.images[digits.labels == 3][:150]
    _save_pngs(curated, tmp_path / "curated")
    x = curated  # exactly the reference images (PNG round trip is lossless at 8 bits)
    to_train = build_suite({"measure": ["fid"]}, digits, cache_dir=cache).measure(x)
    to_folder = build_suite(
        {"measure": ["fid", "precision"], "reference": str(tmp_path / "curated")},
        digits,
        cache_dir=cache,
    )
    values = to_folder.measure(x)
    assert values["fid[digits-cnn]"] == pytest.approx(0.0, abs=1e-3)
    assert values["precision[digits-cnn]"] == 1.0
    assert to_train["fid[digits-cnn]"] > 10 * max(values["fid[digits-cnn]"], 1e-3)
    assert to_folder.describe()["reference"]["reference"] == str(tmp_path / "curated")
    other = to_folder.measure(digits.images[digits.labels == 7][:150])
    assert other["fid[digits-cnn]"] > to_train["fid[digits-cnn]"]


def test_is_trap_contributor_classifier_rewards_noise_and_the_default_does_not(
    cache, digits, halves
):
    """Digits contributed by class plus one contributor of pure noise. A classifier of the
    contributors sees the noise as one more, perfectly separable class: replacing 20 % of a
    generated set by noise raises its IS. The semantic classifier (digits-cnn, what auto
    picks) lowers it."""
    noise = _noise(180, seed=7)
    images = torch.cat([digits.images, noise])
    contributors = torch.cat([digits.labels, torch.full((180,), 10)])
    model, record = train_classifier(images, contributors, 11, seed=0)
    assert record["heldout_accuracy"] > 0.95
    contributor_cnn = ClassifierExtractor(model, "contributor-cnn", module_digest(model), record)
    clean = halves[1][:500]
    mixed = torch.cat([halves[1][:400], _noise(100, seed=8)])  # 20 % noise

    trap = suite_for_extractor(contributor_cnn, images, ["is"], cache_dir=cache)
    assert trap.measure(mixed)["is[contributor-cnn]"] > trap.measure(clean)["is[contributor-cnn]"]

    default = build_suite({"measure": ["is"]}, digits, cache_dir=cache)
    assert default.keys() == ["is[digits-cnn]"]
    assert default.measure(mixed)["is[digits-cnn]"] < default.measure(clean)["is[digits-cnn]"]


@pytest.fixture(scope="module")
def contributor_folder(tmp_path_factory, digits):
    """A folder dataset: 4 contributors of real digits and one of noise; its only labels are
    the contributors."""
    root = tmp_path_factory.mktemp("contributors")
    for c in range(4):
        _save_pngs(digits.images[c * 60 : (c + 1) * 60], root / f"writer{c}")
    _save_pngs(_noise(60, seed=3), root / "spammer")
    return root


def test_folder_without_labels_uses_the_label_free_space(cache, contributor_folder):
    ds = load_folder(contributor_folder)
    assert ds.semantic_labels is None and len(ds.class_names) == 5
    with pytest.raises(DiffattrError, match="is needs class probabilities"):
        build_suite({"measure": ["fid", "is"]}, ds, cache_dir=cache)  # refused before training
    assert build_suite(None, ds, cache_dir=cache).keys() == [
        "fid[autoencoder]",
        "precision[autoencoder]",
        "recall[autoencoder]",
    ]
    suite = build_suite({"measure": ["fid", "precision", "diversity-entropy"]}, ds, cache_dir=cache)
    assert suite.keys() == [
        "fid[autoencoder]",
        "precision[autoencoder]",
        "diversity-entropy[autoencoder]",
    ]
    (ext,) = suite.extractors.values()
    assert ext.name == "autoencoder" and not ext.has_probs
    values = suite.measure(ds.images[:120])
    assert all(np.isfinite(v) for v in values.values())


def test_folder_with_label_column_uses_a_classifier_of_the_labels(cache, digits, tmp_path):
    rows = ["path,contributor,label"]
    for i in range(300):
        _save_pngs(digits.images[i : i + 1], tmp_path / "img", start=i)
        rows.append(f"img/{i:04d}.png,writer{i % 3},{int(digits.labels[i])}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    ds = load_folder(tmp_path / "data.csv")
    assert ds.semantic_names == [str(d) for d in range(10)]
    assert ds.class_names == ["writer0", "writer1", "writer2"]  # players unchanged
    suite = build_suite({"measure": ["fid", "is"]}, ds, cache_dir=cache)
    assert suite.keys() == ["fid[label-cnn]", "is[label-cnn]"]
    (ext,) = suite.extractors.values()
    assert ext.num_classes == 10 and ext.record["class_names"] == ds.semantic_names
    assert suite.measure(ds.images)["is[label-cnn]"] > 5.0


def test_csv_label_column_is_kept_apart_from_contributors(tmp_path, digits):
    _save_pngs(digits.images[:4], tmp_path / "img")
    (tmp_path / "a.csv").write_text(
        "path,contributor,label\nimg/0000.png,bob,cat\nimg/0001.png,amy,dog\n"
        "img/0002.png,bob,dog\nimg/0003.png,amy,cat\n"
    )
    ds = load_folder(tmp_path / "a.csv")
    assert ds.contributors == ["bob", "amy", "bob", "amy"]
    assert ds.class_names == ["amy", "bob"] and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.semantic_names == ["cat", "dog"] and ds.semantic_labels.tolist() == [0, 1, 1, 0]
    sub = ds.subset([1, 2])
    assert sub.semantic_labels.tolist() == [1, 1] and sub.contributors == ["amy", "bob"]
    (tmp_path / "b.csv").write_text("path,contributor,label\nimg/0000.png,bob,\n")
    with pytest.raises(DiffattrError, match="b.csv:2: empty label"):
        load_folder(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("path,contributor\nimg/0000.png,bob\nimg/0001.png,amy\n")
    assert load_folder(tmp_path / "c.csv").semantic_labels is None


def test_default_behaviors_follow_the_space(cache, digits):
    """No ``measure``: FID and IS with class probabilities, FID/precision/recall without."""
    from diffattr.behaviors.settings import parse_behaviors

    assert build_suite({}, digits, cache_dir=cache).keys() == ["fid[digits-cnn]", "is[digits-cnn]"]
    label_free = parse_behaviors({"features": "autoencoder"}).resolved("folder", False)
    assert [b.name for b in label_free.measure] == ["fid", "precision", "recall"]


def test_bad_images_are_clear_errors(cache, digits):
    suite = build_suite({"measure": ["fid"]}, digits, cache_dir=cache)
    with pytest.raises(DiffattrError, match="8x8"):
        suite.measure(torch.zeros(4, 1, 16, 16))
    with pytest.raises(DiffattrError, match="channel"):
        suite.measure(torch.zeros(4, 3, 8, 8))
    with pytest.raises(DiffattrError, match="at least 2"):
        suite.measure(torch.zeros(1, 1, 8, 8))
    with pytest.raises(DiffattrError, match="NaN"):
        suite.measure(torch.full((4, 1, 8, 8), float("nan")))


def test_has_semantic_labels_reads_the_csv_header_only(tmp_path):
    from diffattr.data.folder import has_semantic_labels

    (tmp_path / "a.csv").write_text("path,contributor,label\nmissing.png,bob,cat\n")
    (tmp_path / "b.csv").write_text("path,contributor\nmissing.png,bob\n")
    assert has_semantic_labels(tmp_path / "a.csv")
    assert not has_semantic_labels(tmp_path / "b.csv") and not has_semantic_labels(tmp_path)
