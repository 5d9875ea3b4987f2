"""The example scripts run (examples/): each one's main() end to end, the training ones
with tiny settings (slow), the table one as a script."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner"))
from tiny import env  # noqa: E402

from conftest import one_thread  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: The quick preset made tiny: seconds of training instead of minutes.
TINY = {
    "train.steps": 40,
    "train.batch_size": 32,
    "train.checkpoint_every": 40,
    "sample.num_samples": 32,
    "sample.ddim_steps": 3,
    "sample.batch_size": 32,
    "method.finetune_steps": 6,
    "method.steps": 3,
    # a label-free feature space trained for 30 steps (the classifiers train for minutes)
    "behaviors.features": {"name": "autoencoder", "steps": 30},
}


def test_every_example_is_tested():
    tested = {"own_table.py", "digits_from_python.py", "imagefolder.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_table_example(tmp_path):
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_table.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env(),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "shapley.png").stat().st_size > 1000
    result = runpy.run_path(str(EXAMPLES / "own_table.py"))["main"](tmp_path / "again")
    exact = result[result["estimator"] == "shapley"]
    np.testing.assert_allclose(exact["value"], exact["exact_shapley"], atol=0.1)
    assert len(result) == 15 and result[result.estimator == "datamodel"]["stderr"].gt(0).all()


@pytest.mark.slow
def test_digits_from_python_example(tmp_path):
    main = runpy.run_path(str(EXAMPLES / "digits_from_python.py"))["main"]
    settings = {**TINY, "data.limit_per_class": 20, "attribution.subsets": 24}
    with one_thread():  # as the CLI's workers train (2 shared cores)
        values = main(tmp_path / "run", settings=settings)
    assert values.players == [str(i) for i in range(10)]
    assert set(values.estimators) == {"shapley", "datamodel"}
    assert (tmp_path / "run" / "shapley-fid.png").is_file()
    assert (tmp_path / "run" / "top-and-bottom-fid.png").is_file()


@pytest.mark.slow
def test_imagefolder_example(tmp_path):
    main = runpy.run_path(str(EXAMPLES / "imagefolder.py"))["main"]
    with one_thread():
        values = main(out=tmp_path / "run", settings={**TINY, "attribution.subsets": 24})
    assert values.players == ["ada", "bea", "cal", "dov", "eli", "fay"]
    assert (tmp_path / "run-data" / "metadata.csv").is_file()
    assert (tmp_path / "run" / "values-fid.png").is_file()
    from diffattr.config import RunConfig

    cfg = RunConfig.from_toml(tmp_path / "run" / "config.toml")
    assert cfg.data.name == "imagefolder" and cfg.data.contributor_column == "artist"
