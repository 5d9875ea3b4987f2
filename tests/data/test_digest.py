"""The content digest of a dataset: follows the pixels, contributors and labels; cached by
the identity of the files it was read from."""

import os

import numpy as np
from PIL import Image

from diffattr.data import digest as digest_mod
from diffattr.data import load_dataset
from diffattr.data.digest import dataset_digest


def _folder(root, seed=0):
    rng = np.random.default_rng(seed)
    for c, who in enumerate(("ann", "bo", "cy")):
        (root / who).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            a = (rng.random((8, 8)) * 60 + 60 * c).astype(np.uint8)
            Image.fromarray(a, "L").save(root / who / f"{i}.png")
    return root


def _digest(root, cache=None, **settings):
    return dataset_digest(load_dataset({"name": "folder", "path": str(root), **settings}), cache)


def test_digest_follows_the_pixels_and_the_contributors(tmp_path):
    root = _folder(tmp_path / "data")
    first = _digest(root)
    assert first == _digest(root)  # deterministic
    # settings that say only how credit is reported do not change what trains
    assert _digest(root, players="sample") == first
    # the images at another size are other data
    assert _digest(root, image_size=4) != first
    # one contributor's images overwritten (same size, same names)
    for i in range(4):
        a = np.full((8, 8), 255 - 10 * i, dtype=np.uint8)
        Image.fromarray(a, "L").save(root / "bo" / f"{i}.png")
    changed = _digest(root)
    assert changed != first
    # an image moved to another contributor
    os.rename(root / "bo" / "0.png", root / "ann" / "9.png")
    assert _digest(root) not in (first, changed)


def test_digest_is_cached_by_file_identity(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data")
    cache = tmp_path / "cache"
    calls = []
    real = digest_mod.content_digest
    monkeypatch.setattr(digest_mod, "content_digest", lambda ds: calls.append(1) or real(ds))
    d0 = _digest(root, cache)
    assert len(calls) == 1 and list((cache / "data-digests").glob("*.json"))
    assert _digest(root, cache) == d0 and len(calls) == 1  # from the cache
    # the same bytes written again: a new mtime / ctime, hashed again, same digest
    p = root / "cy" / "1.png"
    p.write_bytes(p.read_bytes())
    assert _digest(root, cache) == d0 and len(calls) == 2
    # other bytes of the same size with the old mtime put back: the ctime still tells
    st = p.stat()
    a = np.asarray(Image.open(p)).copy()
    a[0, 0] ^= 0xFF
    Image.fromarray(a, "L").save(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _digest(root, cache) != d0 and len(calls) == 3


def test_a_subset_is_other_content(tmp_path):
    ds = load_dataset({"name": "folder", "path": str(_folder(tmp_path / "data"))})
    full = dataset_digest(ds, tmp_path / "cache")
    sub = ds.subset([0, 1, 2])
    assert "digest" not in sub.meta and "files" not in sub.meta
    assert dataset_digest(sub, tmp_path / "cache") != full


def test_embedded_digits_have_a_digest_without_files():
    a = dataset_digest(load_dataset("digits"))
    b = dataset_digest(load_dataset({"name": "digits", "classes": [0, 1]}))
    assert len(a) == 16 and a != b
