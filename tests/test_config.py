import pytest

from diffattr.config import RunConfig
from diffattr.errors import DiffattrError


def test_toml_round_trip(tmp_path):
    cfg = RunConfig().with_overrides(**{"train.steps": 7, "data.classes": [1, 2]})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert RunConfig.from_toml(path) == cfg


def test_commented_default_parses(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(RunConfig().commented_toml())
    assert RunConfig.from_toml(path) == RunConfig()
    assert "# DDIM steps" in path.read_text()


def test_bad_config_is_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = -1\n")
    with pytest.raises(DiffattrError, match="train.steps"):
        RunConfig.from_toml(path)
    path.write_text("[train]\nstepz = 1\n")
    with pytest.raises(DiffattrError, match="stepz"):
        RunConfig.from_toml(path)
    with pytest.raises(DiffattrError, match="not found"):
        RunConfig.from_toml(tmp_path / "missing.toml")
