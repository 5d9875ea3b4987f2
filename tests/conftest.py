import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test writes caches under a temporary DIFFATTR_HOME, never ./runs."""
    if "DIFFATTR_TEST_HOME" not in os.environ:
        os.environ["DIFFATTR_TEST_HOME"] = str(tmp_path_factory.mktemp("diffattr_home"))
    monkeypatch.setenv("DIFFATTR_HOME", os.environ["DIFFATTR_TEST_HOME"])
