import subprocess
import sys
import time
import tomllib

import pytest

from diffattr.baselines.settings import BASELINES
from diffattr.config import RUN_PRESETS, TAGGED, RunConfig, build_config, merge, parse_assignment
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS


def test_toml_round_trip(tmp_path):
    cfg = RunConfig().with_overrides(**{"train.steps": 7, "data.classes": [1, 2]})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert RunConfig.from_toml(path) == cfg


@pytest.mark.parametrize("preset", list(RUN_PRESETS))
def test_commented_default_parses(tmp_path, preset):
    cfg = build_config(None, preset)
    path = tmp_path / "c.toml"
    path.write_text(cfg.commented_toml())
    assert RunConfig.from_toml(path) == cfg
    text = path.read_text()
    assert "# DDIM steps" in text and "# counterfactual method: ft | ga" in text


def _non_default_values(cls):
    """Every field of a settings class set to a valid value other than its default."""
    import types
    import typing

    out = {}
    for name, f in cls.model_fields.items():
        if name == "name":
            continue
        ann = f.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            ann = [a for a in typing.get_args(ann) if a is not type(None)][0]
        t = ann
        if typing.get_origin(t) is typing.Literal:
            choices = [c for c in typing.get_args(t) if c != f.default]
            if choices:
                out[name] = choices[0]
        elif t is bool:
            out[name] = not f.default
        elif t is int:
            lo = 1
            for m in f.metadata:
                lo = max(lo, getattr(m, "ge", None) or getattr(m, "gt", 0) + 1 or 1)
            out[name] = lo + 2
        elif t is float:
            out[name] = 0.25
        elif t is str:
            out[name] = "/tmp/x"
        elif typing.get_origin(t) is list:
            inner = typing.get_args(t)[0]
            out[name] = [1, 2] if inner is int else ["a"]
    return out


#: Pairs of settings that may not both leave their defaults (each is set on its own).
EXCLUSIVE = {("family", "text-to-image"): [("prompts", "generate_with")]}


def test_every_setting_of_every_registered_thing_round_trips(tmp_path):
    """Each registered class, with every field set to a non-default value, survives TOML."""
    checked = 0
    for section, registry in TAGGED.items():
        for name in registry.names():
            cls = registry.get(name)
            values = _non_default_values(cls)
            variants = [values]
            for a, b in EXCLUSIVE.get((section, name), []):  # settings that exclude each other
                variants = [{k: v for k, v in values.items() if k != drop} for drop in (a, b)]
            for i, values in enumerate(variants):
                table = {"name": name, **values}
                layer = {section: table}
                if section == "method":
                    layer["methods"] = {}
                    if cls.model_validate(table).family_problem(RunConfig().family):
                        layer["family"] = {"name": "conditional"}  # e.g. surrogate
                cfg = RunConfig.from_dict(merge(RunConfig().to_dict(), layer))
                path = tmp_path / f"{section}-{name}-{i}.toml"
                path.write_text(cfg.to_toml())
                again = RunConfig.from_toml(path)
                assert again == cfg, (section, name)
                for k, v in values.items():
                    assert getattr(getattr(again, section), k) == v, (section, name, k)
                checked += 1
    for name in [*ESTIMATORS.names(), *BASELINES.names()]:  # both kinds a run may list
        cfg = RunConfig().with_overrides(**{"attribution.estimators": [name]})
        path = tmp_path / f"est-{name}.toml"
        path.write_text(cfg.to_toml())
        assert RunConfig.from_toml(path) == cfg
        checked += 1
    assert checked >= 5 + 5 + 3 + 1 + len(ESTIMATORS.names()) + len(BASELINES.names())


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"attribution.estimators": ["shaply"]}, r"estimators\[0\].name: unknown estimator"),
        ({"method.name": "sfft"}, "did you mean 'sft'"),
        ({"behaviors.measure": ["fdi"]}, "unknown behavior 'fdi'"),
        ({"executor.name": "rayy"}, "unknown executor 'rayy'"),
        ({"method.ratoi": 0.3}, "method.ratoi: unknown setting 'ratoi' .did you mean 'ratio'"),
        ({"method.ratio": 1.5}, "method.ratio"),
        ({"data.name": "folder"}, "data.path"),
        ({"family.architecture": "huge"}, "family.architecture"),
        ({"train.stepz": 3}, "train.stepz: unknown setting"),
    ],
)
def test_typos_are_one_line_errors(overrides, match):
    with pytest.raises(DiffattrError, match=match) as e:
        build_config(None, None, overrides)
    assert "\n" not in str(e.value)


def test_bad_config_file_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nsteps = -1\n")
    with pytest.raises(DiffattrError, match="c.toml: train.steps"):
        build_config(path)
    path.write_text("[method]\nratoi = 0.3\n")
    with pytest.raises(DiffattrError, match="c.toml: method.ratoi"):
        build_config(path)
    with pytest.raises(DiffattrError, match="not found"):
        build_config(tmp_path / "missing.toml")
    path.write_bytes(b"[train]\nsteps = 3\n\xff\xfe")
    with pytest.raises(DiffattrError, match="not UTF-8"):
        build_config(path)


def test_switching_a_tagged_table_replaces_it():
    # the default preset's sft keys do not leak into ft; ft gets [methods.ft] of the preset
    cfg = build_config(None, "default", {"method.name": "ft"})
    assert cfg.method.name == "ft" and cfg.method.steps == 200
    assert cfg.methods["sft"].finetune_steps == 500 and cfg.methods["sft"].ratio == 0.5
    # a file that names the same method merges key by key
    cfg = build_config(None, "default", {"method.steps": 7})
    assert cfg.method.name == "sft" and cfg.method.steps == 7 and cfg.method.finetune_steps == 500
    # switching data drops the old dataset's keys
    cfg = build_config(None, None, {"data": {"name": "folder", "path": "/x"}})
    assert cfg.data.name == "folder" and not hasattr(cfg.data, "classes")
    with pytest.raises(DiffattrError, match=r"remove \[methods.sft\]"):
        RunConfig.from_dict({"method": {"name": "sft"}, "methods": {"sft": {}}})


def test_method_settings_lookup():
    cfg = build_config(None, "default")
    assert cfg.method_settings().name == "sft"
    assert cfg.method_settings("ft").steps == 200
    assert cfg.method_settings("retrain").name == "retrain"
    lora = cfg.with_method("lora")
    assert lora.method.name == "lora" and "sft" in lora.methods and "lora" not in lora.methods


def test_set_assignments():
    assert parse_assignment("method.steps=100") == ("method.steps", 100)
    assert parse_assignment("data.classes=[1, 2]") == ("data.classes", [1, 2])
    assert parse_assignment("data.path=/tmp/x") == ("data.path", "/tmp/x")
    with pytest.raises(DiffattrError, match="KEY=VALUE"):
        parse_assignment("nonsense")


def test_init_writes_every_selected_setting(tmp_path):
    from typer.testing import CliRunner

    from diffattr.cli import app

    out = tmp_path / "c.toml"
    res = CliRunner().invoke(app, ["init", str(out)])
    assert res.exit_code == 0, res.output
    data = tomllib.loads(out.read_text())
    cfg = build_config(None, "default")
    for section in ("data", "family", "train", "sample", "method", "attribution", "executor"):
        for key, value in getattr(cfg, section).to_dict().items():
            assert data[section][key] == value or key == "estimators", (section, key)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--estimator", "shaply"], "unknown estimator 'shaply'"),
        (["--method", "sfft"], "unknown counterfactual method 'sfft'"),
        (["--set", "behaviors.measure=['fdi']"], "unknown behavior 'fdi'"),
        (["--executor", "rayy"], "unknown executor 'rayy'"),
        (["--set", "method.ratoi=0.3"], "unknown setting 'ratoi'"),
    ],
)
def test_cli_typos_fail_fast_on_one_line(tmp_path, args, match):
    """`diffattr run` with a typo: exit 2, one unwrapped stderr line, before any work."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "diffattr.cli", "run", "--out", str(tmp_path / "r"), *args],
        capture_output=True,
        text=True,
        env={"COLUMNS": "40", "PATH": "/usr/bin:/bin", "DIFFATTR_HOME": str(tmp_path)},
    )
    elapsed = time.perf_counter() - t0
    assert res.returncode == 2, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and match in lines[0], res.stderr
    assert not (tmp_path / "r").exists()
    # Well under a second on an idle machine (no torch import); generous for shared CI.
    assert elapsed < 10, elapsed
