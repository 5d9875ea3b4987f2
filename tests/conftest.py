import contextlib
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
    # the small runs pin KernelSHAP on paired-kernel rows (the run's default is shapley-cv)
    "attribution.estimators": ["shapley"],
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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch at one intra-op thread for a whole module (much faster for tiny models on a
    shared 2-core machine); a module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``. ``one_thread`` below also
    clears the behavior caches, for the tests that compare with a worker's floats."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextlib.contextmanager
def one_thread():
    """Torch at one thread, as every pool / Ray / SLURM worker runs: the driver prepares the
    shared models, and another thread count trains other floats."""
    from diffattr.behaviors import clear_memory_cache, features, suite

    threads = torch.get_num_threads()
    kept = [(d, dict(d)) for d in (features._EXTRACTORS, features._DIGESTS, suite._SUITES)]
    torch.set_num_threads(1)
    clear_memory_cache()  # no extractor or suite computed at another thread count
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        clear_memory_cache()  # and the session's caches back for the tests after this one
        for d, copy in kept:
            d.update(copy)


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory, full_model):
    """A tiny run with Shapley and LOO, its LDS (4 test subsets, 1 seed) and a top-40 %
    counterfactual; shared by the evaluation and report tests (copy it before changing it)."""
    from diffattr.evaluate.counterfactual import run_counterfactual
    from diffattr.evaluate.lds import LDSProtocol, run_lds
    from diffattr.runner import run_attribution

    run_dir = tmp_path_factory.mktemp("eval") / "run"
    cfg = small_cfg(full_model, **{"attribution.estimators": ["shapley", "loo"]})
    assert run_attribution(cfg, run_dir, progress=False).failed == 0
    lds = run_lds(run_dir, LDSProtocol((0.5,), 4, 1), progress=False).to_dict()
    cf = run_counterfactual(
        run_dir, "top", 0.4, seeds=1, progress=False, estimators=["shapley"], ranked_by=["fid"]
    ).to_dict()
    return run_dir, lds, cf
