"""The Python API (diffattr.api): a light import, the CLI's validation and messages, the
CLI's values, estimators on DataFrames and arrays, and datasets and pipelines given as
Python objects (saved once into the run directory)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner"))
from tiny import TINY, env, make_config, make_folder, read_values, run_cli  # noqa: E402

import diffattr  # noqa: E402
from diffattr.errors import DiffattrError  # noqa: E402


def cli_error(*args: str) -> str:
    """The one ``error:`` line of a failing ``diffattr`` command, without its prefix."""
    res = run_cli(*args)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr[-2000:]
    return errors[0].removeprefix("error: ")


def api_error(call, *args, **kwargs) -> str:
    with pytest.raises(DiffattrError) as e:
        call(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_import_diffattr_stays_light():
    code = (
        "import sys, diffattr; "
        "a = sorted(m for m in ('torch', 'diffusers', 'pandas', 'numpy') if m in sys.modules); "
        "diffattr.Run, diffattr.estimate, diffattr.open_run, diffattr.Attributions; "
        "b = sorted(m for m in ('torch', 'diffusers', 'pandas') if m in sys.modules); "
        "print(a, b)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env())
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[] []"
    assert set(diffattr.__all__) <= set(dir(diffattr))


# ----------------------------------------------------------------- the CLI's validation


def test_settings_errors_are_the_clis(tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.toml"
    bad.write_text('[method]\nname = "sft"\nratio = 2\n')
    cases = [
        (dict(estimators=["shaply"]), ["--estimator", "shaply"]),
        (dict(settings={"method.stepz": 3}), ["--set", "method.stepz=3"]),
        (dict(preset="fast"), ["--preset", "fast"]),
        (dict(config=bad), [str(bad)]),
        (dict(method="sftt"), ["--method", "sftt"]),
        (dict(dataset="digits", strict=True), ["--dataset", "digits", "--strict"]),
        (dict(subsets=0), ["--subsets", "0"]),
    ]
    for kwargs, flags in cases:
        want = cli_error("run", *flags, "--out", out, "--dry-run")
        assert api_error(diffattr.Run.create, out, **kwargs) == want, flags
        assert not out.exists()  # refused: nothing left behind
    (tmp_path / "file").write_text("x")
    want = cli_error("run", "--out", tmp_path / "file", "--dry-run")
    assert api_error(diffattr.Run.create, tmp_path / "file") == want


def test_a_config_dict_is_the_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    make_config(cfg, tmp_path / "data")
    import tomllib

    as_dict = tomllib.loads(cfg.read_text())
    a = diffattr.Run.create(tmp_path / "a", cfg, preset="quick", subsets=8).config
    b = diffattr.Run.create(tmp_path / "b", as_dict, preset="quick", subsets=8).config
    assert a.to_dict() == b.to_dict()
    assert a.attribution.subsets == 8 and a.data.name == "folder"
    msg = api_error(diffattr.Run.create, tmp_path / "c", {"method": {"name": "sft", "ratio": 2}})
    assert msg.startswith("config: ")
    assert (
        msg.removeprefix("config: ")
        == cli_error("run", _bad_method(tmp_path), "--out", tmp_path / "c", "--dry-run").split(
            ": ", 1
        )[1]
    )


def _bad_method(tmp_path):
    p = tmp_path / "bad_method.toml"
    p.write_text('[method]\nname = "sft"\nratio = 2\n')
    return p


def test_plan_errors_are_the_dry_runs(tmp_path):
    missing = tmp_path / "missing"
    run = diffattr.Run.create(tmp_path / "r", dataset="folder", data=missing)
    want = cli_error("run", "--dataset", "folder", "--data", missing, "--out", tmp_path / "r",
                     "--dry-run")  # fmt: skip
    assert api_error(run.plan) == want
    data = make_folder(tmp_path / "data")
    run = diffattr.Run.create(tmp_path / "r", data=data, subsets=2)  # the layout names it
    assert run.config.data.name == "folder"
    want = cli_error("run", "--dataset", "folder", "--data", data, "--subsets", "2", "--out",
                     tmp_path / "r", "--dry-run")  # fmt: skip
    assert api_error(run.plan) == want
    assert api_error(run.attribute) == want
    assert not (tmp_path / "r").exists()


def test_the_plan_is_the_dry_runs(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    plan = diffattr.Run.create(tmp_path / "r", cfg).plan()
    res = run_cli("run", cfg, "--out", tmp_path / "r", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert plan.render() in res.stderr
    assert (plan.n_players, plan.n_images, plan.jobs) == (3, 24, plan.jobs)
    assert not (tmp_path / "r").exists()  # planning writes nothing


# ----------------------------------------------------------------- estimate


def _game_table(n=4, behaviors=("value",)):
    """Every coalition of a small game (exact values) as a DataFrame."""
    import itertools

    import pandas as pd

    names = [f"p{i}" for i in range(n)]
    w = np.arange(1, n + 1, dtype=float)
    rows = []
    for bits in itertools.product([0, 1], repeat=n):
        m = np.array(bits, dtype=float)
        row = dict(zip(names, bits))
        for k, b in enumerate(behaviors):
            row[b] = float(m @ w + (k + 1) * m[0] * m[1])
        rows.append(row)
    return pd.DataFrame(rows), names, w


def test_estimate_on_a_dataframe_is_the_clis(tmp_path):
    df, names, w = _game_table(behaviors=("value:a", "value:b"))
    table = _write(tmp_path, df)
    for estimator in ("shapley", "banzhaf", "loo"):
        res = diffattr.estimate(df, estimator=estimator)
        assert res.behaviors == ["a", "b"] and res.players == names
        out = tmp_path / f"{estimator}.csv"
        cli = run_cli("estimate", table, "--estimator", estimator, "--out", out)
        assert cli.returncode == 0, cli.stderr
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        for beh in ("a", "b"):
            mine = res.get(behavior=beh)
            theirs = [r for r in rows if r["behavior"] == beh]
            assert [r["player"] for r in theirs] == mine.names
            assert [float(r["value"]) for r in theirs] == mine.values.tolist()
            np.testing.assert_array_equal([float(r["stderr"]) for r in theirs], mine.stderr)
    exact = diffattr.estimate(df[[*names, "value:a"]], estimator="shapley").get()
    np.testing.assert_allclose(exact.values, w + np.array([0.5, 0.5, 0, 0]), atol=1e-9)
    from_csv = diffattr.estimate(table, estimator="shapley").to_pandas()
    assert from_csv.equals(diffattr.estimate(df, estimator="shapley").to_pandas())


def test_estimate_reads_pair_ids_as_the_csv_does(tmp_path):
    df, names, _ = _game_table(n=3)
    paired = df.iloc[1:-1].reset_index(drop=True)  # each mask beside its complement
    order = [0, 5, 1, 4, 2, 3]
    paired = paired.iloc[order].reset_index(drop=True)
    paired["pair_id"] = [0, 0, 1, 1, 2, 2]
    table = _write(tmp_path, paired)
    mine = diffattr.estimate(paired, "shapley", v0=0.0, v1=float(df["value"].iloc[-1])).get()
    theirs = diffattr.estimate(table, "shapley", v0=0.0, v1=float(df["value"].iloc[-1])).get()
    assert mine.values.tolist() == theirs.values.tolist()
    bad = paired.assign(pair_id=[0, 0, 1, 1, 2, -2])
    assert api_error(diffattr.estimate, bad) == (
        "table row 5, column 'pair_id': expected an integer >= 0, got -2"
    )


def test_estimate_on_arrays_with_standard_errors():
    df, names, w = _game_table()
    df = df.drop(index=[5, 6, 9, 10])  # not every coalition: estimated, not exact
    masks = df[names].to_numpy()
    values = df["value"].to_numpy() + np.random.default_rng(0).normal(0, 0.1, len(df))
    res = diffattr.estimate(masks, "shapley", values=values, names=names, bootstrap=50)
    a = res.get()
    assert a.names == names and np.isfinite(a.stderr).all() and (a.stderr > 0).all()
    frame = res.to_pandas()
    assert frame["behavior"].tolist() == ["value"] * 4 and frame["method"].isna().all()
    assert res.v0 == {"value": pytest.approx(values[0])}


def test_estimate_table_errors_are_one_line(tmp_path):
    df, names, _ = _game_table()
    bad = df.copy()
    bad.loc[3, "p1"] = 2
    assert api_error(diffattr.estimate, bad) == (
        "table row 3, player column 'p1': expected 0 or 1, got 2"
    )
    bad = df.astype({"value": object})
    bad.loc[5, "value"] = "x"
    assert "table row 5, column 'value': value 'x' is not a number" == api_error(
        diffattr.estimate, bad
    )
    assert "no 'value' column" in api_error(diffattr.estimate, df.drop(columns="value"))
    assert api_error(diffattr.estimate, df, estimator="shaply") == cli_error(
        "estimate", _write(tmp_path, df), "--estimator", "shaply"
    )
    assert "give the values" in api_error(diffattr.estimate, df[names].to_numpy())


def _write(tmp_path, df):
    p = tmp_path / "table.csv"
    df.to_csv(p, index=False)
    return p


# ----------------------------------------------------------------- given objects


def tiny_ddpm(seed=0, size=8):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))


def test_a_pipeline_is_saved_once_into_the_run_directory(tmp_path):
    from diffusers import DDPMPipeline

    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    out = tmp_path / "run"
    pipe = tiny_ddpm()
    run = diffattr.Run.create(out, cfg, full_model=pipe)
    given = out / "full-given"
    assert run.config.attribution.full_model == str(given)
    assert run.config.family.name == "unconditional"
    assert (given / "model_index.json").is_file() and not (given / "diffattr.json").exists()
    first = (given / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    plan = run.plan()  # the family's checks of a --full-model DIR pass
    assert "full model: " + str(given) in plan.render()
    loaded = DDPMPipeline.from_pretrained(given)
    diffattr.Run.create(out, cfg, full_model=loaded)  # the same weights: nothing written
    assert (given / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == first
    diffattr.Run.create(out, cfg, full_model=tiny_ddpm(seed=1))  # other weights: replaced
    assert (given / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns != first
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    big = diffattr.Run.create(tmp_path / "big", cfg, full_model=tiny_ddpm(size=16))
    want = cli_error("run", cfg, "--full-model", tmp_path / "big" / "full-given", "--out",
                     tmp_path / "big", "--dry-run")  # fmt: skip
    assert api_error(big.plan) == want  # 16x16 for 8x8 data: the CLI's one line


def test_an_ldm_pipeline_brings_its_latent_family(tmp_path):
    from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

    vq = VQModel(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        latent_channels=2,
        norm_num_groups=4,
        sample_size=8,
    )
    unet = UNet2DModel(
        sample_size=4,
        in_channels=2,
        out_channels=2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195)
    pipe = LDMPipeline(vqvae=vq, unet=unet, scheduler=sched)
    out = tmp_path / "run"
    cfg = diffattr.Run.create(out, data=make_folder(tmp_path / "data"), full_model=pipe).config
    given = str(out / "full-given")
    assert cfg.family.name == "latent" and cfg.family.autoencoder == given
    assert cfg.family.beta_schedule == "scaled_linear" and cfg.family.beta_end == 0.0195
    assert cfg.attribution.full_model == given
    assert "full model: " + given in diffattr.Run.create(out, full_model=pipe).plan().render()
    # a family the config sets is kept (the README's --set family.autoencoder=DIR)
    kept = diffattr.Run.create(
        tmp_path / "k", full_model=pipe, settings={"family.name": "unconditional"}
    ).config
    assert kept.family.name == "unconditional"


def test_a_stable_diffusion_pipeline_is_the_text_to_image_base(tmp_path):
    pytest.importorskip("transformers")
    from diffusers import StableDiffusionPipeline

    from families.test_text_to_image import tiny_pipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline(tmp_path / "sd"))
    out = tmp_path / "run"
    cfg = diffattr.Run.create(out, full_model=pipe).config
    assert cfg.family.name == "text-to-image" and cfg.family.base == str(out / "base-given")
    assert cfg.attribution.full_model is None  # the run trains the LoRA it attributes
    StableDiffusionPipeline.from_pretrained(out / "base-given")
    from peft import LoraConfig

    pipe.unet.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    msg = api_error(diffattr.Run.create, tmp_path / "lora", full_model=pipe)
    assert "carries LoRA adapters" in msg and not (tmp_path / "lora").exists()


def test_a_dataset_in_memory_is_saved_once(tmp_path):
    datasets = pytest.importorskip("datasets")
    from diffattr.data import load_dataset
    from diffattr.data.digest import content_digest
    from diffattr.store import Store

    data = make_folder(tmp_path / "data")
    files = sorted(data.rglob("*.png"))
    with open(data / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor"])
        w.writerows([[str(p.relative_to(data)), p.parent.name] for p in files])
    ds = datasets.Dataset.from_dict(
        {
            "img": [str(p) for p in files],
            "artist": [p.parent.name for p in files],
            "file_name": [str(p.relative_to(data)) for p in files],
        }
    ).cast_column("img", datasets.Image())
    out = tmp_path / "run"
    settings = {"data.image_column": "img", "data.contributor_column": "artist"}
    run = diffattr.Run.create(out, tiny_dict(), data=ds, settings=settings)
    given = out / "data-given"
    assert run.config.data.name == "hf-dataset" and run.config.data.path == str(given)
    want = content_digest(load_dataset({"name": "folder", "path": str(data / "list.csv")}))
    assert content_digest(load_dataset(run.config.data)) == want
    assert run.plan().n_players == 3
    stamp = (given / "given.json").stat().st_mtime_ns
    diffattr.Run.create(out, tiny_dict(), data=ds, settings=settings)
    assert (given / "given.json").stat().st_mtime_ns == stamp  # the same content: kept
    with Store(out / "store.sqlite") as s:  # a run made from these data ...
        s.set_meta("data_digest", want)
    other = ds.select(range(20))  # ... refuses other data in one line, as the CLI does
    msg = api_error(diffattr.Run.create, out, tiny_dict(), data=other, settings=settings)
    assert msg.startswith("the data changed since this run was made") and given.is_dir()
    assert (given / "given.json").stat().st_mtime_ns == stamp


def tiny_dict():
    import tomllib

    return {k: v for k, v in tomllib.loads(TINY.format(data="x")).items() if k != "data"}


# ----------------------------------------------------------------- end to end (training)


@pytest.mark.slow
def test_an_api_run_has_the_cli_runs_values_and_reports_progress(tmp_path):
    data = make_folder(tmp_path / "data", contributors=("ann", "bo", "cy", "di", "ed", "fa"), per=4)
    cfg = make_config(tmp_path / "c.toml", data)
    flags = ["--estimator", "shapley", "--estimator", "loo", "--subsets", "12"]
    res = run_cli("run", cfg, *flags, "--out", tmp_path / "cli")
    assert res.returncode == 0, res.stderr[-2000:]
    code = textwrap.dedent(
        f"""
        import json, sys, diffattr
        events = []
        run = diffattr.Run.create(
            {str(tmp_path / "api")!r}, {str(cfg)!r}, estimators=["shapley", "loo"], subsets=12
        )
        values = run.attribute(progress=events.append)
        values.to_pandas().to_csv({str(tmp_path / "api.csv")!r}, index=False)
        lds = run.lds(test_subsets=3, seeds=1, estimators=["loo"], fidelity=False, progress=False)
        lds.to_pandas().to_csv({str(tmp_path / "lds.csv")!r}, index=False)
        lds.plot(estimator="loo", behavior="fid").savefig({str(tmp_path / "lds.png")!r})
        cf = run.counterfactual(
            "top", 0.4, seeds=1, estimators=["shapley"], ranked_by=["fid"], progress=False
        )
        cf.to_pandas().to_csv({str(tmp_path / "cf.csv")!r}, index=False)
        print(json.dumps([[e.phase, e.done, e.total, e.failed] for e in events]))
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env())
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    events = json.loads(res.stdout.strip().splitlines()[-1])
    phases = [e[0] for e in events]
    assert phases[0] == "reference models" and "sft jobs" in phases
    for phase in set(phases):
        done = [e[1] for e in events if e[0] == phase]
        total = {e[2] for e in events if e[0] == phase}
        assert done == list(range(1, len(done) + 1)) and total == {len(done)}
    assert not any(e[3] for e in events)
    a, b = read_values(tmp_path / "cli"), read_values(tmp_path / "api")
    assert [(r["player"], r["behavior"], r["estimator"]) for r in a] == [
        (r["player"], r["behavior"], r["estimator"]) for r in b
    ]
    assert [r["value"] for r in a] == [r["value"] for r in b]  # the same floats
    import pandas as pd

    frame = pd.read_csv(tmp_path / "api.csv")
    np.testing.assert_allclose(frame["value"], [float(r["value"]) for r in a], rtol=1e-9)
    # the evaluations: the LDS of `diffattr lds` on the CLI's run, a counterfactual
    lds_flags = ["--test-subsets", "3", "--seeds", "1", "--estimator", "loo", "--no-fidelity"]
    res = run_cli("lds", tmp_path / "cli", *lds_flags)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads((tmp_path / "cli" / "lds.json").read_text())["results"]
    mine = pd.read_csv(tmp_path / "lds.csv")
    assert len(mine) == len(theirs) > 0
    np.testing.assert_allclose(mine["lds"], [r["lds"] for r in theirs], equal_nan=True)
    assert (tmp_path / "lds.png").stat().st_size > 1000
    cf = pd.read_csv(tmp_path / "cf.csv")
    assert set(cf["estimator"]) == {"shapley"} and cf["seeds"].eq(1).all()


PIPELINE_RUN = """
import sys
from diffusers import DDPMPipeline
import diffattr

pipe = DDPMPipeline.from_pretrained(sys.argv[1])
diffattr.Run.create(sys.argv[2], sys.argv[3], full_model=pipe).attribute(progress=False)
"""


@pytest.mark.slow
def test_a_pipeline_in_memory_resumes_after_a_kill_like_a_directory(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    res = run_cli("train", "--config", cfg, "--out", tmp_path / "trained")
    assert res.returncode == 0, res.stderr[-2000:]
    from diffusers import DDPMPipeline

    plain = tmp_path / "pipeline"  # a diffusers directory the package did not write
    DDPMPipeline.from_pretrained(tmp_path / "trained").save_pretrained(plain)
    res = run_cli("run", cfg, "--full-model", plain, "--out", tmp_path / "dir")
    assert res.returncode == 0, res.stderr[-2000:]

    script = tmp_path / "pipe_run.py"
    script.write_text(PIPELINE_RUN)
    out = tmp_path / "memory"
    args = [sys.executable, str(script), str(plain), str(out), str(cfg)]
    killed = subprocess.run(args, env=env(DIFFATTR_FAULT="store.committed:3"), capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "values.csv").exists() and (out / "full-given" / "given.json").is_file()
    stamp = (out / "full-given" / "given.json").stat().st_mtime_ns
    done = subprocess.run(args, env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "full-given" / "given.json").stat().st_mtime_ns == stamp  # not saved again
    a, b = read_values(tmp_path / "dir"), read_values(out)
    assert [(r["player"], r["behavior"]) for r in a] == [(r["player"], r["behavior"]) for r in b]
    np.testing.assert_allclose(
        [float(r["value"]) for r in a], [float(r["value"]) for r in b], rtol=1e-4, atol=1e-6
    )
    assert not [p for p in out.rglob(".*tmp-*")]
