import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffattr.data import Players, load_dataset
from diffattr.data.cifar import load_cifar10, load_cifar100
from diffattr.data.fashion_mnist import DEFAULT_DIR, load_fashion_mnist
from diffattr.data.folder import load_folder
from diffattr.errors import DiffattrError


def test_digits_shape_range_ids():
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 1, 8, 8)
    assert ds.images.dtype == torch.float32
    assert ds.images.min() == -1 and ds.images.max() == 1
    assert ds.labels.shape == (1797,) and set(ds.labels.tolist()) == set(range(10))
    again = load_dataset("digits")
    assert ds.ids == again.ids and len(set(ds.ids)) == len(ds.ids)
    assert torch.equal(ds.images, again.images)


def test_digits_classes_and_resize():
    ds = load_dataset({"name": "digits", "classes": [3, 8], "image_size": 16})
    assert ds.images.shape[1:] == (1, 16, 16)
    assert ds.class_names == ["3", "8"]
    assert set(ds.labels.tolist()) == {0, 1}
    full = load_dataset("digits")
    # ids still name the original rows
    assert all(int(full.labels[int(i.split("-")[1])]) in (3, 8) for i in ds.ids)


def test_bad_class_id():
    with pytest.raises(DiffattrError, match="out of range"):
        load_dataset({"name": "digits", "classes": [11]})


def test_unknown_dataset_is_clear():
    with pytest.raises(DiffattrError, match="unknown dataset"):
        from diffattr.config import RunConfig

        RunConfig.from_dict({"data": {"name": "imagenet"}})


@pytest.mark.skipif(not DEFAULT_DIR.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_two_class_resized():
    ds = load_fashion_mnist(image_size=16, classes=[0, 7], limit_per_class=100)
    assert ds.images.shape == (200, 1, 16, 16)
    assert ds.class_names == ["t-shirt", "sneaker"]
    assert -1 <= ds.images.min() < ds.images.max() <= 1
    assert ds.ids[0].startswith("fashion-mnist-train-")


def test_fashion_mnist_missing_dir(tmp_path):
    with pytest.raises(DiffattrError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")


def test_fashion_mnist_corrupt_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 10)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x01")
    with pytest.raises(DiffattrError, match="truncated"):
        load_fashion_mnist(tmp_path)


def _write_cifar10(d: Path, n=6):
    d.mkdir()
    rng = np.random.default_rng(0)
    names = [f"c{i}".encode() for i in range(10)]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f)
    for fn in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / fn, "wb") as f:
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            pickle.dump({b"data": data, b"labels": list(range(n))}, f)


def test_cifar10_local_pickles(tmp_path):
    _write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_cifar10(tmp_path / "cifar-10-batches-py")
    assert ds.images.shape == (30, 3, 32, 32)
    assert ds.class_names[0] == "c0"
    test = load_cifar10(tmp_path / "cifar-10-batches-py", split="test")
    assert len(test) == 6


def test_cifar_missing_file_names_it(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    _write_cifar10(d)
    (d / "data_batch_3").unlink()
    with pytest.raises(DiffattrError, match="data_batch_3"):
        load_cifar10(d)
    with pytest.raises(DiffattrError, match="local directory"):
        load_cifar10(None)


def test_cifar20_subset(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    coarse = [f"super{i}" for i in range(20)]
    coarse[8], coarse[11], coarse[12], coarse[16] = (
        "large_carnivores",
        "large_omnivores_and_herbivores",
        "medium_mammals",
        "small_mammals",
    )
    fine_names = [f"fine{i}" for i in range(100)]
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": fine_names, b"coarse_label_names": coarse}, f)
    fine = np.arange(100).repeat(2)
    coarse_of_fine = np.arange(100) // 5  # fine classes 5c..5c+4 belong to superclass c
    with open(d / "train", "wb") as f:
        pickle.dump(
            {
                b"data": np.zeros((200, 3072), np.uint8),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": coarse_of_fine[fine].tolist(),
            },
            f,
        )
    ds = load_cifar100(d, subset="cifar20")
    assert len(ds.class_names) == 20 and len(ds) == 40
    assert ds.class_names[:5] == [f"fine{i}" for i in range(40, 45)]
    assert ds.name == "cifar20"


def _png(path: Path, size=8, mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value).save(path)


def test_folder_subfolders_are_contributors(tmp_path):
    for who in ["alice", "bob"]:
        for i in range(3):
            _png(tmp_path / who / f"{i}.png", value=40 * i)
    ds = load_folder(tmp_path)
    assert ds.images.shape == (6, 1, 8, 8)
    assert ds.class_names == ["alice", "bob"]
    p = Players.from_dataset(ds, "contributor")
    assert p.names == ("alice", "bob") and list(p.sizes()) == [3, 3]
    assert ds.ids[0] == "alice/0.png"


def test_folder_csv(tmp_path):
    _png(tmp_path / "img" / "a.png", mode="RGB")
    _png(tmp_path / "img" / "b.png", mode="RGB")
    (tmp_path / "list.csv").write_text("path,contributor\nimg/a.png,x\nimg/b.png,y\n")
    ds = load_folder(tmp_path / "list.csv")
    assert ds.images.shape == (2, 3, 8, 8) and ds.contributors == ["x", "y"]


def test_folder_errors_name_the_file(tmp_path):
    (tmp_path / "list.csv").write_text("path,contributor\nmissing.png,x\n")
    with pytest.raises(DiffattrError, match="missing.png"):
        load_folder(tmp_path / "list.csv")
    _png(tmp_path / "d" / "a" / "0.png", size=8)
    _png(tmp_path / "d" / "a" / "1.png", size=10)
    with pytest.raises(DiffattrError, match="1.png"):
        load_folder(tmp_path / "d")
    assert load_folder(tmp_path / "d", image_size=8).images.shape == (2, 1, 8, 8)
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "b" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DiffattrError, match="bad.png"):
        load_folder(tmp_path / "d", image_size=8)


def test_players_masks():
    ds = load_dataset("digits")
    p = Players.from_dataset(ds, "contributor")
    assert len(p) == 10 and p.sizes().sum() == len(ds)
    mask = np.zeros(10, bool)
    mask[[2, 5]] = True
    idx = p.indices(mask)
    assert set(ds.labels[idx].tolist()) == {2, 5}
    assert len(idx) == (ds.labels == 2).sum() + (ds.labels == 5).sum()
    assert len(p.indices(np.zeros(10, bool))) == 0
    with pytest.raises(DiffattrError, match="shape"):
        p.indices(np.ones(3, bool))
    s = Players.from_dataset(ds, "sample")
    assert len(s) == len(ds) and s.indices(np.eye(len(ds), dtype=bool)[7]).tolist() == [7]


def test_empty_player_is_error():
    with pytest.raises(DiffattrError, match="owns no data"):
        Players(("a", "b"), (np.array([0]), np.array([], dtype=int)), "contributor", 1)
