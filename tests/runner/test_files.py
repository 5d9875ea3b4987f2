"""Files a run writes: the user's umask, and model directories whose damage (missing or
truncated weights, optimizer state) is a one-line error naming the file."""

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from diffattr.config import RunConfig
from diffattr.data import load_dataset
from diffattr.errors import DiffattrError
from diffattr.families.base import ModelState, model_meta
from diffattr.fileio import atomic_write_text, content_key, read_json


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask_002):
    from diffattr.estimators.attribution import Attribution
    from diffattr.runner.values import write_values

    atomic_write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o664
    att = Attribution(np.zeros(2), np.zeros(2), ["a", "b"], "shapley", behavior="fid[x]")
    write_values(tmp_path, [att], {"v0": {}, "v1": {}})
    assert _mode(tmp_path / "values.csv") == 0o664 == _mode(tmp_path / "values.json")
    os.umask(0o077)
    atomic_write_text(tmp_path / "b.txt", "x")
    assert _mode(tmp_path / "b.txt") == 0o600


def test_read_json_names_the_broken_file(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    for text, what in (("", "is empty"), ('{"a": ', "not valid JSON"), (b"\xff\xfe", "UTF-8")):
        p = tmp_path / "x.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DiffattrError, match=what) as e:
            read_json(p)
        assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_content_keys_are_the_ones_written_before():
    """The values of the expression the cache keys were written with before content_key
    (sha256 of json.dumps(record, sort_keys=True[, default=str]), first N hex digits): a
    change here orphans the latent, caption, autoencoder, demo-base, method and job caches."""
    record = {"version": 1, "name": "x", "values": [1.5, None, True], "nested": {"b": 2, "a": "é"}}
    assert content_key(record) == "873aabcec6c84bcd1763"
    assert content_key(record, length=10) == "873aabcec6"
    with_path = {**record, "path": Path("/data/x")}
    assert content_key(with_path, default=str) == "60dd88016ee26736e28f"
    old = json.dumps(with_path, sort_keys=True, default=str).encode()
    assert content_key(with_path, length=32, default=str) == hashlib.sha256(old).hexdigest()[:32]
    with pytest.raises(TypeError):
        content_key(with_path)  # no default: a Path is not JSON, as before


@pytest.fixture
def model_dir(tmp_path):
    """An untrained tiny model directory with training state (raw weights, Adam state)."""
    cfg = RunConfig().with_overrides(**{"data.classes": [0, 1]})
    family = cfg.family.build("cpu")
    ds = load_dataset(cfg.data)
    data = family.training_set(ds)
    model = family.init_model(data, 0)
    opt = torch.optim.Adam(model.parameters())
    model(data.x0[:2], torch.zeros(2, dtype=torch.long)).sample.sum().backward()
    opt.step()
    state = ModelState(model, raw=model, optimizer_state=opt.state_dict(), ema_step=3)
    out = family.save(tmp_path / "m", state, model_meta(cfg, ds, kind="full"))
    return family, out


def _one_line(fn, *names):
    with pytest.raises(DiffattrError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in names), msg
    return msg


def test_a_loadable_model_dir(model_dir):
    family, d = model_dir
    state = family.load(d, training=True)
    assert state.ema_step == 3 and state.optimizer_state is not None
    assert json.loads((d / "training" / "state.json").read_text())["optimizer"] is True


def test_truncated_weights(model_dir):
    family, d = model_dir
    w = d / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _one_line(lambda: family.load(d), str(w), "truncated", f"delete {d}")


def test_missing_weights(model_dir):
    family, d = model_dir
    (d / "training" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _one_line(lambda: family.load(d, training=True), str(d / "training" / "unet"), "missing")


def test_missing_optimizer_state(model_dir):
    family, d = model_dir
    (d / "training" / "optimizer.pt").unlink()
    _one_line(lambda: family.load(d, training=True), "optimizer.pt", "missing", f"delete {d}")


def test_truncated_optimizer_state(model_dir):
    family, d = model_dir
    p = d / "training" / "optimizer.pt"
    p.write_bytes(p.read_bytes()[:100])
    _one_line(lambda: family.load(d, training=True), str(p), "truncated")


def test_a_model_dir_left_half_replaced_by_a_killed_process_is_recovered(model_dir):
    import subprocess
    import sys

    from diffattr.diffusion.checkpoint import recover_model_dir
    from diffattr.fileio import tmp_prefix

    family, d = model_dir
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = tmp_prefix(d.name).replace(f"-{os.getpid()}-", f"-{dead.pid}-")
    os.replace(d, d.with_name(prefix + "old"))  # killed between the two renames
    (d.parent / (prefix + "abcd1234")).mkdir()  # ... with its half-written replacement
    (d.parent / (prefix + "abcd1234") / "junk").write_text("x")
    recover_model_dir(d)
    assert family.load(d, training=True).ema_step == 3
    assert sorted(p.name for p in d.parent.iterdir()) == [d.name]


def test_a_full_model_is_reused_for_the_same_data_only(tmp_path):
    """train_full keys its reuse by the data's content digest: the unit of credit does not
    matter, other data are refused in one line (and a model without a digest falls back to
    the settings, ignoring those that never change what trains)."""
    from diffattr.diffusion.checkpoint import read_meta

    def train(**over):
        cfg = RunConfig().with_overrides(
            **{"data.classes": [0, 1], "train.steps": 2, "train.batch_size": 8, **over}
        )
        family = cfg.family.build("cpu")
        ds = load_dataset(cfg.data)
        return family.train_full(
            cfg, tmp_path / "full", ds, family.training_set(ds), progress=False, grid_samples=0
        )

    out = train()
    digest = read_meta(out)["dataset"]["digest"]
    mtime = (out / "diffattr.json").stat().st_mtime_ns
    assert train(**{"data.players": "sample"}) == out
    assert (out / "diffattr.json").stat().st_mtime_ns == mtime  # reused, not retrained
    with pytest.raises(DiffattrError, match="the data changed since") as e:
        train(**{"data.classes": [0, 2]})
    assert digest in str(e.value) and "\n" not in str(e.value)
