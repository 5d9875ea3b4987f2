"""The report says which counterfactual method made the values and what it cost per job."""

import json
import sys
from pathlib import Path

from diffattr.report import write_report
from diffattr.report.inputs import load_inputs
from diffattr.store import JobRecord, Store

sys.path.insert(0, str(Path(__file__).parent))
from test_report import _cells, make_run, table_rows  # noqa: E402


def add_jobs(
    run: Path, method: str, train: float, sample: float, n: int = 4, step: float = 1.0
) -> None:
    with Store(run / "store.sqlite") as s:
        for i in range(n):
            s.put(
                JobRecord(
                    f"{method}-fit-{i}",
                    "fit",
                    f"{i:010b}",
                    method,
                    {},
                    0,
                    behaviors={"x": 1.0},
                    t_train=train + i * step,
                    t_sample=sample,
                    t_measure=0.5,
                    t_total=train + i * step + sample + 0.5,
                )
            )


def section(page: str) -> str:
    return page.split("<h2>Method and cost per job</h2>", 1)[1].split("<h2>", 1)[0]


def test_method_and_its_cost_per_job(tmp_path):
    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["timings_all_calls"]["prepare_sft"] = 42.0
    (run / "summary.json").write_text(json.dumps(summary))
    add_jobs(run, "sft", train=4.0, sample=2.0)
    add_jobs(run, "surrogate", train=0.0, sample=3.0, n=2, step=0.0)
    costs = load_inputs(run).store.costs
    # sft: 4 fit jobs (4..7 s of training) and its all-players job (0 s: a bare record)
    assert costs["sft"].jobs == 5
    assert abs(costs["sft"].train - (4 + 5 + 6 + 7) / 5) < 1e-9
    assert costs["surrogate"].train == 0.0 and costs["surrogate"].jobs == 2
    sec = section(write_report(run, tmp_path / "r.html").read_text())
    assert "<b>sft</b>" in sec and "sparsified fine-tuning" in sec
    rows = {_cells(r)[0]: _cells(r) for r in table_rows(sec.split("Measured cost", 1)[1])}
    assert list(rows) == ["sft", "surrogate"]  # the run's method first
    assert rows["sft"][1:3] == ["5", "4.4 s"]
    assert rows["surrogate"][2] == "0.0 s" and rows["surrogate"][3] == "3.0 s"
    assert "42.0 s" in sec  # the one-time preparation


def test_a_training_free_method_says_so(tmp_path):
    run = make_run(tmp_path)
    values = json.loads((run / "values.json").read_text())
    values["config"]["method"] = {"name": "surrogate"}
    values["config"]["family"] = {"name": "conditional"}
    (run / "values.json").write_text(json.dumps(values))
    add_jobs(run, "surrogate", train=0.0, sample=3.0, step=0.0)
    sec = section(write_report(run, tmp_path / "r.html").read_text())
    assert "<b>surrogate</b>" in sec and "training-free" in sec
    assert "builds no model per coalition" in sec


def _with_preparation(run: Path, widths: list[int], device: str = "cpu") -> None:
    summary = json.loads((run / "summary.json").read_text())
    summary["preparation"] = {"method": "sft", "pruning": {"ratio": 0.3, "conv_widths": widths}}
    (run / "summary.json").write_text(json.dumps(summary))
    values = json.loads((run / "values.json").read_text())
    values["config"]["device"] = device
    (run / "values.json").write_text(json.dumps(values))


def test_the_cost_floor_and_wasted_channel_blocks(tmp_path):
    run = make_run(tmp_path)
    add_jobs(run, "sft", train=4.0, sample=2.0, step=0.0)
    _with_preparation(run, [1, 22, 24])
    sec = section(write_report(run, tmp_path / "r.html").read_text())
    # 4 fit jobs of 6.5 s and the bare all-players record: 5.2 s against 1.6 + 0.4
    assert "costs 2.6× its own sampling and measuring" in sec
    assert "keep 22, 24 channels" in sec  # not the image's own channel and "round_to = 16" in sec


def test_no_width_note_in_whole_blocks_or_on_a_gpu(tmp_path):
    run = make_run(tmp_path)
    add_jobs(run, "sft", train=4.0, sample=2.0)
    _with_preparation(run, [1, 16, 32, 48])
    assert "round_to" not in section(write_report(run, tmp_path / "a.html").read_text())
    _with_preparation(run, [22, 24], device="cuda")
    assert "round_to" not in section(write_report(run, tmp_path / "b.html").read_text())


def test_the_profiled_jobs_arithmetic(tmp_path):
    run = make_run(tmp_path)
    add_jobs(run, "sft", train=4.0, sample=2.0)
    profile = {
        "job": {"method": "sft"},
        "gflop": {"train": 298.3, "sample": 48.6, "job_over_sampling": 7.1379},
    }
    (run / "profile.json").write_text(json.dumps(profile))
    sec = section(write_report(run, tmp_path / "a.html").read_text())
    assert "training 298 GFLOP, sampling 48.6 GFLOP" in sec and "at least 7.1×" in sec
    # a profile of another method's job, or one whose count failed, says nothing
    profile["job"]["method"] = "ft"
    (run / "profile.json").write_text(json.dumps(profile))
    assert "GFLOP" not in section(write_report(run, tmp_path / "b.html").read_text())
    profile["job"]["method"] = "sft"
    profile["gflop"] = {"train": None, "sample": None, "job_over_sampling": None, "error": "x"}
    (run / "profile.json").write_text(json.dumps(profile))
    assert "GFLOP" not in section(write_report(run, tmp_path / "c.html").read_text())
