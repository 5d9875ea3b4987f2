"""The command line on broken input and broken state: one unwrapped ``error:`` line (exit
2) naming the file and what to do, before any work; light commands stay light; a
read-only run directory can be read; one writer per run directory."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner"))
from tiny import env, make_folder, read_only_prefix, run_cli  # noqa: E402


def one_error(res, *fragments, rc=2):
    """The command failed with exactly one stderr line, ``error: ...``, holding each
    fragment (COLUMNS=40 in the subprocess: nothing may wrap)."""
    assert res.returncode == rc, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr and "╭" not in res.stderr, res.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


def fake_run(root: Path) -> Path:
    """A run directory as `diffattr run` leaves it (store, values, summary), made directly."""
    from diffattr.config import RunConfig
    from diffattr.estimators.attribution import Attribution
    from diffattr.fileio import atomic_write_text
    from diffattr.runner.values import write_values
    from diffattr.store import JobRecord, Store

    root.mkdir(parents=True)
    with Store(root / "store.sqlite") as s:
        s.set_meta("planned", {"k1": "fit", "k2": "fit", "k3": "fit"})
        s.put(JobRecord("k1", "fit", "10", "sft", {}, 0, behaviors={"fid[x]": 1.0}))
        s.put(
            JobRecord("k2", "fit", "01", "sft", {}, 0, status="failed", error="RuntimeError: x\ny")
        )
    att = Attribution(np.array([1.0, -1.0]), np.array([0.1, 0.2]), ['bo"b', "x"], "shapley")
    att.behavior = "fid[x]"
    payload = {"v0": {"fid[x]": 3.0}, "v1": {"fid[x]": 3.0}, "config": RunConfig().to_dict()}
    write_values(root, [att], payload)
    atomic_write_text(root / "summary.json", json.dumps({"jobs": 3, "failed": 1}))
    return root


# ----------------------------------------------------------------------------- one line


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", "--bogus"], "No such option: --bogus"),
        (["rnu"], "No such command 'rnu'"),
        (["run", "--subsets", "abc"], "'--subsets'"),
        (["run", "--set", "method.stpes=3"], "unknown setting 'stpes'"),
        (["status", "/nonexistent/run"], "not a run directory"),
        (["report", "/nonexistent/run"], "not a run directory"),
        (["run", "--dataset", "digits", "--strict"], "--strict applies to folder"),
    ],
)
def test_errors_are_one_unwrapped_line(args, fragment):
    one_error(run_cli(*args), fragment)


LIGHT = """
import sys
from diffattr import cli
sys.argv = ["diffattr", *sys.argv[1:]]
try:
    cli.main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "diffusers", "torch_pruning") if m in sys.modules)
print("EXIT", code, "HEAVY", ",".join(heavy) or "-")
"""


def test_light_commands_do_not_import_torch(tmp_path):
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "value"])
        w.writerows([[0, 0, 0.0], [1, 0, 1.0], [0, 1, 2.0], [1, 1, 3.0]])
    run_dir = fake_run(tmp_path / "run")
    cases = {
        "estimate": (["estimate", str(table)], 0),
        "status": (["status", str(run_dir)], 0),
        "init": (["init", str(tmp_path / "c.toml")], 0),
        "misspelled run": (["run", "--set", "method.stpes=3"], 2),
        "unknown option": (["run", "--bogus"], 2),
    }
    for name, (args, rc) in cases.items():
        res = subprocess.run(
            [sys.executable, "-c", LIGHT, *args], env=env(), capture_output=True, text=True
        )
        last = res.stdout.strip().splitlines()[-1]
        assert last == f"EXIT {rc} HEAVY -", (name, last, res.stderr[-800:])


def test_cuda_asked_for_on_a_machine_without_it(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli("run", "--device", "cuda", "--out", tmp_path / "run", "--dry-run")
    one_error(res, "device: 'cuda'", "no CUDA", "--device cpu")


def test_a_data_csv_in_another_encoding(tmp_path):
    make_folder(tmp_path / "img")
    csv_path = tmp_path / "latin.csv"
    with open(csv_path, "w", newline="", encoding="latin-1") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor"])
        for who in ("ann", "bo", "cy"):
            for i in range(8):
                w.writerow([f"img/{who}/{i}.png", who + "-é"])
    res = run_cli("run", "--dataset", "folder", "--data", csv_path, "--out", tmp_path / "r")
    one_error(res, str(csv_path), "not UTF-8")
    assert not (tmp_path / "r").exists()


def test_duplicate_images_warn_in_one_line_or_fail_with_strict(tmp_path):
    make_folder(tmp_path / "img")
    csv_path = tmp_path / "d.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor"])
        for who in ("ann", "bo", "cy"):
            for i in range(8):
                w.writerow([f"img/{who}/{i}.png", who])
        w.writerow(["img/ann/0.png", "bo"])
    args = ["run", "--dataset", "folder", "--data", csv_path, "--out", tmp_path / "r"]
    res = run_cli(*args, "--dry-run")
    assert res.returncode == 0, res.stderr[-1500:]
    warn = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warn) == 1 and "1 image(s) listed more than once" in warn[0]
    one_error(run_cli(*args, "--strict", "--dry-run"), "listed more than once", str(csv_path))


# ----------------------------------------------------------------------------- broken state


def test_a_file_where_a_directory_belongs(tmp_path):
    (tmp_path / "file").write_text("x")
    one_error(run_cli("run", "--out", tmp_path / "file", "--dry-run"), "is a file")
    one_error(run_cli("run", "--out", tmp_path / "file"), "is a file")
    one_error(run_cli("train", "--out", tmp_path / "file" / "model"), "is a file")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "full").write_text("x")
    one_error(run_cli("run", "--out", run_dir), str(run_dir / "full"), "delete it")


def test_broken_files_of_a_run_directory(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    (run_dir / "values.json").write_text("")
    one_error(run_cli("report", run_dir), str(run_dir / "values.json"), "delete it")
    fake_run(tmp_path / "run2")
    (tmp_path / "run2" / "summary.json").write_text('{"jobs": ')
    one_error(run_cli("report", tmp_path / "run2"), str(tmp_path / "run2" / "summary.json"))
    # a truncated store: status, report and run say so in one line
    run_dir = fake_run(tmp_path / "run3")
    store = run_dir / "store.sqlite"
    store.write_bytes(store.read_bytes()[:100])
    for args in (["status", run_dir], ["report", run_dir], ["run", "--out", run_dir]):
        one_error(run_cli(*args), str(store), "delete it")


KILLED_WRITER = """
import os, signal, sys
from diffattr.store import JobRecord, Store
s = Store(sys.argv[1])
s.put(JobRecord("k3", "fit", "11", "sft", {}, 0, behaviors={"fid[x]": 2.0}))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_read_only_run_directory_can_be_read_not_run(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    # a run killed after a commit: its last row is only in store.sqlite-wal
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(run_dir / "store.sqlite")], env=env())
    assert (run_dir / "store.sqlite-wal").stat().st_size > 0
    before = sorted(p.name for p in run_dir.iterdir())
    prefix = read_only_prefix(run_dir)

    def cli(*args):
        return subprocess.run(
            [*prefix, sys.executable, "-m", "diffattr.cli", *map(str, args)],
            env=env(),
            cwd=Path(__file__).parents[1],
            capture_output=True,
            text=True,
        )

    try:
        res = cli("status", run_dir)
        assert res.returncode == 0 and "failed fit sft" in res.stdout, res.stderr[-1500:]
        assert "│ fit  │    2 │      1 │       0 │" in res.stdout, res.stdout  # WAL row seen
        res = cli("report", run_dir, "--out", tmp_path / "report.html")
        assert res.returncode == 0, res.stderr[-1500:]
        assert (tmp_path / "report.html").stat().st_size > 1000
        one_error(cli("run", "--out", run_dir), str(run_dir), "not writable", "status")
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        os.chmod(run_dir, 0o755)


# ----------------------------------------------------------------------------- early failure


def test_refused_before_any_training(tmp_path):
    """Too few players, too few images, too few coalitions: one line, nothing left."""
    make_folder(tmp_path / "one", contributors=("solo",), per=24)
    make_folder(tmp_path / "few", per=4)
    cases = [
        (["--dataset", "folder", "--data", tmp_path / "one"], "at least 2 players"),
        (["--dataset", "folder", "--data", tmp_path / "few"], "12 images"),
        (["--subsets", "2"], "attribution.estimators[0]"),
    ]
    for i, (args, fragment) in enumerate(cases):
        out = tmp_path / f"run{i}"
        one_error(run_cli("run", *args, "--out", out), fragment)
        assert not out.exists()
    # the same through the Run API: refused before the full model is trained
    from diffattr.config import RunConfig
    from diffattr.errors import DiffattrError
    from diffattr.runner.run import Run

    for name, fragment in (("one", "at least 2 players"), ("few", "12 images")):
        cfg = RunConfig().with_overrides(
            **{"data": {"name": "folder", "path": str(tmp_path / name)}, "train.steps": 5}
        )
        with pytest.raises(DiffattrError, match=fragment):
            with Run(cfg, tmp_path / f"api-{name}", progress=False) as run:
                run.jobs()
        assert not (tmp_path / f"api-{name}" / "full").exists()


def test_a_full_model_that_does_not_fit_the_data(tmp_path):
    """A digits model (1 x 8 x 8) for 16 x 16 data: refused before any work, by the CLI and
    by Run, and no empty shared/ folder is left."""
    from diffattr.config import RunConfig
    from diffattr.data import load_dataset
    from diffattr.errors import DiffattrError
    from diffattr.runner.run import Run

    cfg = RunConfig().with_overrides(**{"data.classes": [0, 1]})
    family = cfg.family.build("cpu")
    ds = load_dataset(cfg.data)
    full = family.make_null(cfg, tmp_path / "full", ds, family.training_set(ds))
    make_folder(tmp_path / "data", size=16)
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--data", tmp_path / "data", "--full-model", full]
    one_error(run_cli("run", *args, "--out", out), "8x8", "16x16")
    assert not out.exists()
    run_cfg = RunConfig().with_overrides(
        **{"data": {"name": "folder", "path": str(tmp_path / "data")}},
        **{"attribution.full_model": str(full)},
    )
    with pytest.raises(DiffattrError, match="16x16"):
        with Run(run_cfg, out, progress=False) as run:
            run.jobs()
    assert not (out / "shared").exists() and not (out / "full").exists()


# ----------------------------------------------------------------------------- the lock

HOLD = """
import sys, time
from diffattr.runner.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_run_is_refused_while_status_and_report_work(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], env=env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        msg = one_error(run_cli("run", "--out", run_dir), "in use by", f"pid {holder.pid}")
        assert "status" in msg
        res = run_cli("status", run_dir)
        assert res.returncode == 0 and f"pid {holder.pid}" in res.stdout, res.stderr
        res = run_cli("report", run_dir, "--out", tmp_path / "r.html")
        assert res.returncode == 0, res.stderr[-1500:]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
