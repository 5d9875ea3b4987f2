import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("DIFFATTR_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test writes caches under a temporary DIFFATTR_HOME, never ./runs."""
    if "DIFFATTR_TEST_HOME" not in os.environ:
        os.environ["DIFFATTR_TEST_HOME"] = str(tmp_path_factory.mktemp("diffattr_home"))
    monkeypatch.setenv("DIFFATTR_HOME", os.environ["DIFFATTR_TEST_HOME"])


SMALL = {
    "train.steps": 300,
    "train.batch_size": 64,
    "train.checkpoint_every": 300,
    "sample.num_samples": 96,
    "sample.ddim_steps": 8,
    "sample.batch_size": 96,
    "attribution.subsets": 24,
    "method": {"name": "sft", "finetune_steps": 40, "steps": 15},
}


def train_full(cfg, out, grid_samples=4):
    """Train (or find) the full model of ``cfg`` in ``out``."""
    from diffattr.data import load_dataset

    family = cfg.family.build(cfg.device)
    dataset = load_dataset(cfg.data)
    data = family.training_set(dataset)
    return family.train_full(cfg, out, dataset, data, progress=False, grid_samples=grid_samples)


@pytest.fixture(scope="session")
def full_model(tmp_path_factory):
    """A tiny digits model trained for 300 steps, shared by the end-to-end tests."""
    from diffattr.config import RunConfig

    cfg = RunConfig().with_overrides(**SMALL)
    return train_full(cfg, tmp_path_factory.mktemp("full") / "model")


def small_cfg(full_model, **extra):
    from diffattr.config import RunConfig

    return RunConfig().with_overrides(
        **{**SMALL, "attribution.full_model": str(full_model), **extra}
    )
