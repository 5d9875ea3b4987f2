"""The hostile-user probe of issue 23, kept: one case per defect it found, each asserting
its class -- refused (a non-zero exit, stderr exactly one ``error:`` line, no traceback,
nothing written) or accepted with the right result.

The cases that need no training run in the default suite (a subprocess each, a few
seconds: data loading and the plan); the ones that train a tiny run are marked ``slow``.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner"))
from tiny import (  # noqa: E402
    CONTRIBUTORS,
    env,
    make_config,
    make_folder,
    read_values,
    run_cli,
    write_images,
)

#: Runs several ``diffattr`` command lines in one fresh interpreter, one after the other,
#: each with its own stdout/stderr (file descriptors 1 and 2) and exit status: the same as
#: a subprocess per command but for the seconds of importing torch and diffusers each time.
MANY = """
import json, os, sys, tempfile, warnings
from diffattr import cli
from diffattr.errors import DiffattrWarning
out = []
for argv in json.loads(sys.argv[1]):
    warnings.filterwarnings("default", category=DiffattrWarning)  # each call warns anew
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    sys.stdout.flush(); sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(files[0].fileno(), 1); os.dup2(files[1].fileno(), 2)
    sys.argv = ["diffattr", *argv]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    texts = []
    for f in files:
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
    out.append({"returncode": code, "stdout": texts[0], "stderr": texts[1]})
print("RESULTS " + json.dumps(out))
"""


def run_many(*calls: list) -> list[SimpleNamespace]:
    """``run_cli`` for each argument list, in one interpreter (see ``MANY``)."""
    argv = json.dumps([[str(a) for a in call] for call in calls])
    res = subprocess.run(
        [sys.executable, "-c", MANY, argv], env=env(), capture_output=True, text=True, timeout=900
    )
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert res.returncode == 0 and lines, res.stderr[-3000:]
    return [SimpleNamespace(**r) for r in json.loads(lines[-1][len("RESULTS ") :])]


def refused(res, *fragments: str) -> str:
    """Exit status non-zero and stderr exactly one line, ``error: ...``, holding each
    fragment (no traceback, no second line); returns that line."""
    assert res.returncode != 0, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def accepted(res) -> None:
    assert res.returncode == 0, (res.stdout[-1500:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "error:" not in res.stderr, res.stderr[-3000:]


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: 'nothing written' is the same tree."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def warnings_of(res) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]


# ----------------------------------------------------------------------------- 1. CIFAR


class _RunsCode:
    """What a crafted pickle holds: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _cifar10(d: Path, rows: int = 10) -> Path:
    """The cifar-10-batches-py layout as Python 2 wrote it (protocol 2, bytes keys)."""
    d.mkdir(parents=True)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    rng = np.random.default_rng(0)
    for fn in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / fn, "wb") as f:
            data = rng.integers(0, 256, (rows, 3072), dtype=np.uint8)
            labels = [i % 10 for i in range(rows)]
            pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    return d


def test_a_crafted_cifar_pickle_runs_no_code_even_in_a_dry_run(tmp_path):
    bad = _cifar10(tmp_path / "crafted")
    marker = tmp_path / "pwned"
    with open(bad / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    good = _cifar10(tmp_path / "cifar-10-batches-py")
    out = tmp_path / "run"
    crafted, official = run_many(
        ["run", "--dataset", "cifar10", "--data", bad, "--out", out, "--dry-run"],
        ["run", "--dataset", "cifar10", "--data", good, "--out", out, "--dry-run"],
    )
    line = refused(crafted, str(bad / "data_batch_2"))
    assert "io.open" in line  # the global it refused to look up
    assert not marker.exists() and not out.exists()
    # the official layout is accepted: 50 images of 10 classes, 32x32 RGB
    accepted(official)
    assert "(50 images of 32x32 RGB (3 channels)), 10 contributor players" in official.stderr


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([1, 2, 3], "holds a list, not the dict"),
        ({b"labels": [0]}, "no 'data' entry"),
        ({b"data": np.zeros((3, 3072), np.uint8)}, "no 'labels' entry"),
        ({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, "shape (3, 100)"),
        ({b"data": np.zeros((3, 3072), np.float32), b"labels": [0, 1, 2]}, "float32"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}, "2 labels for 3"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 10]}, "outside 0..9"),
        ({b"data": np.zeros((3, 3072), np.uint8), b"labels": ["a", "b", "c"]}, "integer"),
        (b"not a pickle", "cannot read CIFAR file"),
    ],
)
def test_a_malformed_cifar_file_is_one_line_naming_it(tmp_path, content, fragment):
    from diffattr.data.cifar import load_cifar10
    from diffattr.errors import DiffattrError

    d = _cifar10(tmp_path / "cifar")
    path = d / "data_batch_4"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with open(path, "wb") as f:
            pickle.dump(content, f)
    with pytest.raises(DiffattrError) as err:
        load_cifar10(d)
    msg = str(err.value)
    assert str(path) in msg and fragment in msg and "\n" not in msg, msg


def test_cifar100_without_its_superclasses_asked_for_cifar20(tmp_path):
    from diffattr.data.cifar import load_cifar100
    from diffattr.errors import DiffattrError

    d = tmp_path / "cifar-100-python"
    d.mkdir()
    with open(d / "meta", "wb") as f:
        names = {b"fine_label_names": [f"f{i}" for i in range(100)]}
        pickle.dump({**names, b"coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    with open(d / "train", "wb") as f:
        rows = {b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [0, 1, 2, 3]}
        pickle.dump({**rows, b"coarse_labels": [0, 0, 0, 0]}, f)
    with pytest.raises(DiffattrError, match="no superclass 'large_carnivores'"):
        load_cifar100(d, subset="cifar20")


# ----------------------------------------------------------------------------- 3. no result, exit 0


def test_a_plan_whose_rows_cannot_identify_the_values_is_refused(tmp_path):
    """11 contributors, 24 i.i.d. paired kernel coalitions (``replace = true``): enough rows
    by count, too few by rank (repeated pairs). Refused by the plan (and --dry-run) with the
    M to pass."""
    from diffattr.config import build_config
    from diffattr.runner.plan import make_plan

    data = make_folder(tmp_path / "data", contributors=[f"p{i:02d}" for i in range(11)], per=2)
    out = tmp_path / "run"
    cfg = tmp_path / "iid.toml"
    cfg.write_text(
        '[[attribution.estimators]]\nname = "shapley"\n'
        'sampler = { name = "shapley-kernel", replace = true }\n'
    )
    args = ["run", cfg, "--preset", "quick", "--dataset", "folder", "--data", data]
    args += ["--subsets", "24", "--out", out]
    for res in run_many([*args, "--dry-run"], args):
        line = refused(res, "attribution.estimators[0]", "rank")
        assert not out.exists()
    # the M it names is accepted
    m = int(line.rsplit("--subsets ", 1)[1])
    flags = {"data.name": "folder", "data.path": str(data), "attribution.subsets": m}
    plan = make_plan(build_config(cfg, "quick", flags), out)
    assert plan.estimators[0].rows == m and not out.exists()


def _finished_run(root: Path, contributors=CONTRIBUTORS, values=None) -> Path:
    """A run directory as a finished tiny run leaves it for the evaluations to read (its
    config.toml and values.json), made directly: the evaluations must refuse before they
    train anything."""
    from diffattr.config import build_config
    from diffattr.estimators.attribution import Attribution
    from diffattr.runner.values import write_values

    data = make_folder(root / "data", contributors)
    cfg = build_config(make_config(root / "c.toml", data), None, {})
    run = root / "run"
    run.mkdir()
    (run / "config.toml").write_text(cfg.to_toml())
    n = len(contributors)
    vals = np.arange(n, dtype=float) if values is None else np.asarray(values, dtype=float)
    att = Attribution(vals, np.full(n, 0.1), list(contributors), "shapley")
    att.behavior = "fid[autoencoder]"
    write_values(run, [att], {"v0": {}, "v1": {}, "config": cfg.to_dict()})
    return run


def test_lds_and_curve_refuse_fits_the_test_subsets_leave_unidentified(tmp_path):
    """3 players: every held-out subset (alpha 0.5) is a singleton, and every KernelSHAP
    row is a singleton or its complement -- no fit is left. Said before any retraining."""
    run = _finished_run(tmp_path)
    before = tree(run)
    lds, curve = run_many(["lds", run, "--quick"], ["curve", run])
    line = refused(lds, "lds at alpha=0.5", "shapley", "test subsets")
    assert "not identified" in line
    refused(curve, "curve of retrain", "test subsets")
    assert tree(run) == before  # nothing trained, nothing written


def test_lds_reads_a_whole_values_json_first(tmp_path):
    empty, none, stopped = (_finished_run(tmp_path / k) for k in ("empty", "none", "stopped"))
    (empty / "values.json").write_text("")
    (none / "values.json").write_text('{"attributions": []}')
    (stopped / "values.json").unlink()  # stopped before any job finished
    before = [tree(r) for r in (empty, none, stopped)]
    res = run_many(*(["lds", r, "--quick"] for r in (empty, none, stopped)))
    refused(res[0], str(empty / "values.json"), "unreadable")
    refused(res[1], str(none / "values.json"), "no attributions")
    refused(res[2], "values.json not found", "diffattr run")
    assert [tree(r) for r in (empty, none, stopped)] == before  # nothing trained


def test_counterfactual_refuses_what_gives_no_ranking_or_no_data(tmp_path):
    run = _finished_run(tmp_path)
    nan = _finished_run(tmp_path / "nan", values=[1.0, float("nan"), 2.0])
    before = tree(run)
    everyone, other, unranked = run_many(
        ["counterfactual", run, "--fraction", "0.9"],
        ["counterfactual", run, "--estimator", "banzhaf"],
        ["counterfactual", nan],
    )
    refused(everyone, "removes 3 of the 3 players")
    refused(other, "no attribution")
    refused(unranked, "not all finite")
    assert tree(run) == before


# ----------------------------------------------------------------------------- 4. late failures


def test_a_contributor_folder_whose_name_is_not_utf8_is_refused_up_front(tmp_path):
    data = make_folder(tmp_path / "data")
    bad = os.fsencode(data) + b"/caf\xe9"
    os.mkdir(bad)
    write_images(Path(os.fsdecode(bad)), 8, 100, seed=5)
    out = tmp_path / "run"
    refused(
        run_cli("run", "--dataset", "folder", "--data", data, "--out", out, "--dry-run"),
        "b'caf\\xe9'",
        "not UTF-8",
        "rename it",
    )
    assert not out.exists()


def test_prune_onto_a_file_is_one_line(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    refused(run_cli("prune", tmp_path / "model", "--out", target), str(target), "is a file")
    assert target.read_text() == "keep me"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_null_model_is_refused_by_the_plan(tmp_path):
    """The null model is the initialisation: made directly, then truncated. The plan (and
    the run) name the file before any work; nothing is written."""
    from diffattr.config import build_config
    from diffattr.data import load_dataset

    data = make_folder(tmp_path / "data")
    cfg = build_config(make_config(tmp_path / "c.toml", data), None, {})
    run = tmp_path / "run"
    family = cfg.family.build("cpu")
    ds = load_dataset(cfg.data)
    null = family.make_null(cfg, run / "null", ds, family.training_set(ds))
    weights = next(null.rglob("*.safetensors"))
    _truncate(weights)
    before = tree(run)
    args = ["run", tmp_path / "c.toml", "--out", run]
    for res in run_many([*args, "--dry-run"], args):
        refused(res, str(weights))
    assert tree(run) == before


def test_a_run_directory_without_a_config_goes_on_with_its_own(tmp_path):
    from diffattr.store import Store

    data = make_folder(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    make_config(run / "config.toml", data)
    lost = tmp_path / "lost"  # a run directory that holds a run but lost its config.toml
    lost.mkdir()
    with Store(lost / "store.sqlite") as s:
        s.set_meta("data_digest", "0123")
    before = tree(lost)
    own, preset, missing = run_many(
        ["run", "--out", run, "--dry-run"],
        ["run", "--out", run, "--preset", "quick", "--dry-run"],
        ["run", "--out", lost],
    )
    accepted(own)
    assert f"note: no config given: using the run's own {run / 'config.toml'}" in own.stderr
    assert "data: folder (24 images" in own.stderr  # not the built-in digits
    # a preset named on the command line is what was asked for: no note, its settings
    accepted(preset)
    assert "note: no config given" not in preset.stderr and "data: digits" in preset.stderr
    refused(missing, "no config given", "config.toml", "--out")
    # the store was only read (SQLite's reader files -shm/-wal aside, as `status` makes them)
    after = {k: v for k, v in tree(lost).items() if not k.endswith(("-shm", "-wal"))}
    assert after == before


# ----------------------------------------------------------------------------- 5. --full-model


def _diffusers_pipeline(path: Path, size: int = 8) -> Path:
    """A DDPMPipeline saved by diffusers itself (no diffattr.json), default DDPM schedule."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(path)
    assert not (path / "diffattr.json").exists() and (path / "model_index.json").is_file()
    return path


def test_a_diffusers_pipeline_the_package_did_not_train_is_accepted(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    pipe = _diffusers_pipeline(tmp_path / "pipe")
    big = _diffusers_pipeline(tmp_path / "pipe16", size=16)
    out = tmp_path / "run"
    fits, misfit = run_many(
        ["run", cfg, "--full-model", pipe, "--out", out, "--dry-run"],
        ["run", cfg, "--full-model", big, "--out", out],
    )
    accepted(fits)
    assert f"full model: {pipe}" in fits.stderr
    # one whose UNet does not fit the data: one line, before any work
    refused(misfit, "16x16", "8x8")
    assert not out.exists()


# ------------------------------------------------------------------------ 6. quiet data changes


def test_images_that_disagree_on_channels_warn_and_the_plan_says_what_trains(tmp_path):
    from PIL import Image

    grey = make_folder(tmp_path / "grey")
    mixed = make_folder(tmp_path / "mixed")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(mixed / "bo" / "rgb.png")

    def args(data):
        return ["run", "--dataset", "folder", "--data", data, "--out", tmp_path / "r", "--dry-run"]

    same, one_rgb, asked = run_many(
        args(grey), args(mixed), [*args(mixed), "--set", "data.channels=3"]
    )
    accepted(same)
    assert not warnings_of(same) and "8x8 grey (1 channel)" in same.stderr
    # one RGB image among 24 grey ones: still grey, said in one warning line
    accepted(one_rgb)
    (warn,) = warnings_of(one_rgb)
    assert "24 grey and 1 colour" in warn and "rgb.png" in warn and "data.channels" in warn
    assert "(25 images of 8x8 grey (1 channel))" in one_rgb.stderr
    # asked for colour: no warning, the plan says RGB
    accepted(asked)
    assert not warnings_of(asked) and "8x8 RGB (3 channels)" in asked.stderr


def test_a_latin1_table_for_estimate_gets_the_run_csv_remedy(tmp_path):
    table = tmp_path / "t.csv"
    with open(table, "w", newline="", encoding="latin-1") as f:
        w = csv.writer(f)
        w.writerow(["café", "b", "value"])
        w.writerows([[0, 0, 0.0], [1, 0, 1.0], [0, 1, 2.0], [1, 1, 3.0]])
    # the run's data CSV in Latin-1: the same remedy, word for word
    make_folder(tmp_path / "img")
    data = tmp_path / "latin.csv"
    with open(data, "w", newline="", encoding="latin-1") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor"])
        w.writerows([[f"img/{who}/{i}.png", f"{who}-é"] for who in CONTRIBUTORS for i in range(8)])
    estimate, run = run_many(
        ["estimate", table], ["run", "--dataset", "folder", "--data", data, "--dry-run"]
    )
    estimate = refused(estimate, str(table), "not UTF-8 text (byte 3)")
    run = refused(run, str(data), "not UTF-8 text")
    assert estimate.split("); ", 1)[1] == run.split("); ", 1)[1] == "save it as UTF-8 and rerun"


def test_a_nul_byte_in_a_contributor_name_is_refused(tmp_path):
    make_folder(tmp_path / "img")
    data = tmp_path / "nul.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor"])
        w.writerows([[f"img/{who}/{i}.png", who] for who in CONTRIBUTORS for i in range(8)])
        w.writerow(["img/ann/0.png", "ann\x00"])
    out = tmp_path / "run"
    refused(
        run_cli("run", "--dataset", "folder", "--data", data, "--out", out, "--dry-run"),
        f"{data}:26",
        "NUL",
    )
    assert not out.exists()


# ----------------------------------------------------------------------------- slow: trains


@pytest.mark.slow
def test_a_diffusers_pipeline_as_full_model_gives_values(tmp_path):
    data = make_folder(tmp_path / "data")
    cfg = make_config(tmp_path / "c.toml", data)
    pipe = _diffusers_pipeline(tmp_path / "pipe")
    run = tmp_path / "run"
    res = run_cli("run", cfg, "--full-model", pipe, "--out", run)
    accepted(res)
    rows = read_values(run)
    assert {r["player"] for r in rows} == set(CONTRIBUTORS)
    assert all(np.isfinite(float(r["value"])) for r in rows)
    assert not (run / "full").exists()  # the given model is used, not a trained one


@pytest.mark.slow
def test_damaged_models_and_failed_jobs_never_replace_values(tmp_path, monkeypatch):
    """A finished tiny run; then (a) its shared pruned model truncated: the next call that
    needs new jobs is refused before any work; (b) jobs that fail: values.csv stays the
    complete run's, in one error line."""
    from typer.testing import CliRunner

    from diffattr.cli import app
    from diffattr.runner.job import Worker

    data = make_folder(tmp_path / "data", contributors=(*CONTRIBUTORS, "di"))
    cfg = make_config(tmp_path / "c.toml", data)
    run = tmp_path / "run"
    accepted(run_cli("run", cfg, "--out", run, "--subsets", "10"))
    values = (run / "values.csv").read_text()
    store = (run / "store.sqlite").read_bytes()

    pruned = next((run / "shared").glob("sft-*/pruned/unet/*.safetensors"))
    kept = pruned.read_bytes()
    _truncate(pruned)
    refused(run_cli("run", cfg, "--out", run, "--subsets", "14"), str(pruned), "delete")
    assert (run / "values.csv").read_text() == values
    assert (run / "store.sqlite").read_bytes() == store
    pruned.write_bytes(kept)

    real = Worker.measure
    calls = {"n": 0}

    def flaky(self, images):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        return real(self, images)

    monkeypatch.setattr(Worker, "measure", flaky)
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run), "--subsets", "14"])
    assert res.exit_code == 1, res.output
    err = res.stderr if hasattr(res, "stderr") else res.output
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "1 job(s) failed" in line and "values.csv not written" in line
    assert (run / "values.csv").read_text() == values
    summary = json.loads((run / "summary.json").read_text())
    assert summary["failed"] == 1 and summary["values_written"] is False
    # the failed job redone: values of the 14 coalitions replace the old ones
    monkeypatch.setattr(Worker, "measure", real)
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(run), "--subsets", "14"])
    assert res.exit_code == 0, res.output
    assert (run / "values.csv").read_text() != values
