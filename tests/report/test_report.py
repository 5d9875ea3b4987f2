"""The HTML report: hand-made run directories (each results file built as its producer
writes it) for the sections' behaviour, and a tiny evaluated run end to end."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.report import write_report
from diffattr.store import JobRecord, Store

NAMES = [str(i) for i in range(10)]  # the digits' contributors (one per class)
FID, IS = "fid[digits-cnn]", "is[digits-cnn]"


# ----------------------------------------------------------------- hand-made run directory


def _png(seed: int, size: int = 24) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _attr(estimator, behavior, values, stderr, **settings):
    return {
        "estimator": estimator,
        "behavior": behavior,
        "settings": {"rows": 24, "subsets_planned": 24, "method": "sft", **settings},
        "names": list(NAMES),
        "values": list(values),
        "stderr": list(stderr),
    }


def make_run(
    root: Path,
    *,
    players: str = "contributor",
    attributions: list | None = None,
    calls: list[dict] | None = None,
    summary: dict | None = None,
) -> Path:
    """A run directory as ``diffattr run`` leaves it: values.json, summary.json, a store
    with the reference jobs (and their grids) and the timings meta."""
    run = root / "run"
    (run / "grids").mkdir(parents=True)
    cfg = RunConfig().with_overrides(**{"data.players": players}).to_dict()
    rng = np.random.default_rng(0)
    v0 = {FID: 60.0, IS: 1.2}
    v1 = {FID: 8.0, IS: 4.0}
    m_all = {FID: 9.5, IS: 3.7}
    if attributions is None:
        se = rng.uniform(0.1, 1.0, 10).tolist()
        attributions = [
            _attr(
                "shapley",
                FID,
                rng.normal(-5, 3, 10),
                se[:9] + [None],  # the last player has no standard error
                identified=True,
                solver="cholesky",
                rank=10,
            ),
            _attr(
                "shapley",
                IS,
                rng.normal(0.3, 0.1, 10),
                se,
                identified=False,
                solver="lstsq",
                rank=7,
            ),
            _attr("datamodel", FID, rng.normal(0, 1, 10), [None] * 10, rank=6),
            _attr(
                "banzhaf",
                IS,
                rng.normal(0, 1, 10),
                se,
                exact=True,
                exact_table=True,
                exact_value="banzhaf",
                solver="exact enumeration",
                rank=10,
                identified=True,
            ),
        ]
    values = {
        "v0": v0,
        "v1": v1,
        "v1_source": "full",
        "method_all_players": m_all,
        "full_minus_method": {k: v1[k] - m_all[k] for k in v1},
        "config": cfg,
        "attributions": attributions,
    }
    (run / "values.json").write_text(json.dumps(values, indent=2))
    calls = (
        calls
        if calls is not None
        else [
            {"at": 1.7e9, "encode": 1.0, "full_model": 500.0, "jobs": 60.0, "total": 573.0},
            {"at": 1.7e9 + 3600, "jobs": 140.0, "estimate": 2.0, "total": 147.0},
        ]
    )
    with Store(run / "store.sqlite") as s:
        refs = {
            "full": (v1, "1" * 10, "reference"),
            "null": (v0, "0" * 10, "reference"),
            "sft": (m_all, "1" * 10, "method-all"),
        }
        for i, (method, (beh, mask, kind)) in enumerate(refs.items()):
            key = f"{method}key{i:02d}"
            s.put(JobRecord(key, kind, mask, method, {}, 0, behaviors=beh))
            (run / "grids" / f"{key}.png").write_bytes(_png(i))
        s.set_meta("config", cfg)
        if calls:
            s.set_meta("timings", calls)
    if summary is None and calls:
        total: dict[str, float] = {}
        for c in calls:
            for k, v in c.items():
                if k != "at":
                    total[k] = total.get(k, 0.0) + v
        last = {k: v for k, v in calls[-1].items() if k != "at"}
        summary = {
            "timings": last,
            "timings_all_calls": total,
            "jobs": 27,
            "failed": 0,
            "first_failure": None,
            "estimator_errors": [],
        }
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


# ----------------------------------------------------------------- reading the page back


def _text(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", markup)).split()


def _cells(row: str) -> list[str]:
    return [" ".join(_text(c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def attribution_blocks(page: str) -> dict[tuple[str, str], str]:
    out = {}
    for m in re.finditer(
        r'<div class="attribution" data-estimator="([^"]*)" data-behavior="([^"]*)">(.*?)</div>',
        page,
        re.S,
    ):
        out[(html.unescape(m.group(1)), html.unescape(m.group(2)))] = m.group(3)
    return out


def table_rows(block: str) -> list[str]:
    body = block.split("<tbody>", 1)[1]
    return re.findall(r"<tr>(.*?)</tr>", body, re.S)


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


# ----------------------------------------------------------------- hand-made runs


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_every_player_with_value_and_interval_best_first(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    values = json.loads((run / "values.json").read_text())
    blocks = attribution_blocks(page)
    assert len(blocks) == len(values["attributions"])
    for a in values["attributions"]:
        rows = [_cells(r) for r in table_rows(blocks[(a["estimator"], a["behavior"])])]
        assert sorted(r[1] for r in rows) == sorted(NAMES)  # every player, once
        assert [int(r[0]) for r in rows] == list(range(1, 11))
        v = np.array(a["values"])
        expect = np.argsort(v if a["behavior"] == FID else -v, kind="stable")  # FID: lower
        assert [r[1] for r in rows] == [NAMES[i] for i in expect]
        for r in rows:
            i = NAMES.index(r[1])
            se = a["stderr"][i]
            tail = " (interval not estimable)" if se is None else f" ± {1.96 * se:.2g}"
            assert r[3] == f"{v[i]:.4g}{tail}"
    # the last player of the first attribution has no standard error: "not estimable"
    first = [_cells(r) for r in table_rows(blocks[("shapley", FID)])]
    assert next(r for r in first if r[1] == "9")[3].endswith("(interval not estimable)")
    assert 'src="http' not in page and "<script" not in page and "<link" not in page


def test_thumbnails_are_each_players_own_training_images(run, tmp_path):
    from PIL import Image

    from diffattr.data import Players, load_dataset
    from diffattr.report.contributors import pick, strip_png

    page = write_report(run, tmp_path / "r.html").read_text()
    block = attribution_blocks(page)[("shapley", FID)]
    cfg = RunConfig()
    dataset = load_dataset(cfg.data)
    players = Players.from_dataset(dataset, cfg.data.players)
    for row in table_rows(block):
        name = _cells(row)[1]
        (b64,) = re.findall(r'class="thumb" src="data:image/png;base64,([^"]+)"', row)
        got = Image.open(io.BytesIO(base64.b64decode(b64)))
        got.load()
        idx = pick(players.members[players.names.index(name)], 5)
        assert len(idx) == 5 and (dataset.labels[idx].numpy() == int(name)).all()
        want = Image.open(io.BytesIO(strip_png(dataset.images[idx].numpy())))
        assert got.size == want.size and got.size[1] >= 32
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_unidentified_and_exact_fits_are_flagged(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    blocks = attribution_blocks(page)

    def heading(k):
        return " ".join(_text(re.search(r"<h3>(.*?)</h3>", blocks[k], re.S).group(1)))

    assert "not identified" in heading(("shapley", IS))
    assert "not identified" not in heading(("shapley", FID))
    assert "underdetermined (rank 6 < 10)" in heading(("datamodel", FID))
    assert "exact banzhaf" in heading(("banzhaf", IS))
    assert "exact" not in heading(("shapley", FID))
    assert "solver lstsq" in blocks[("shapley", IS)] and "rank 7" in blocks[("shapley", IS)]
    # the fits table lists each fit once with its flag
    fits = page.split("<h3>Fits</h3>", 1)[1].split("</table>", 1)[0]
    rows = {tuple(_cells(r)[:2]): _cells(r)[5] for r in table_rows(fits)}
    assert rows[("shapley", IS)] == "not identified"
    assert rows[("shapley", FID)] == "identified"
    assert rows[("banzhaf", IS)] == "exact banzhaf"


def test_timings_are_summed_over_every_call(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    timings = page.split('<table class="timings">', 1)[1].split("</table>", 1)[0]
    header = " ".join(_text(timings.split("</thead>")[0]))
    assert "last call" in header and "sum of 2 calls" in header
    rows = {_cells(r)[0]: _cells(r) for r in table_rows(timings)}
    # stage, last call, call 1, call 2, all calls
    last, first, total = "147 s (2.5 min)", "573 s (9.6 min)", "720 s (12.0 min)"
    assert rows["total"] == ["total", last, first, last, total]
    assert rows["full_model"][1] == "—" and rows["full_model"][-1] == "500 s (8.3 min)"
    assert rows["jobs"][-1] == "200 s (3.3 min)"
    assert list(rows)[-1] == "total"


def test_timings_from_summary_when_the_store_has_none(tmp_path):
    summary = {
        "timings": {"jobs": 30.0, "total": 147.0},
        "timings_all_calls": {"jobs": 300.0, "total": 720.0},
    }
    run = make_run(tmp_path, calls=[], summary=summary)
    page = write_report(run, tmp_path / "r.html").read_text()
    timings = page.split('<table class="timings">', 1)[1].split("</table>", 1)[0]
    rows = {_cells(r)[0]: _cells(r) for r in table_rows(timings)}
    assert rows["total"] == ["total", "147 s (2.5 min)", "720 s (12.0 min)"]
    # only the last call known: said so, nothing invented
    (run / "summary.json").write_text(json.dumps({"timings": {"total": 147.0}}))
    page = write_report(run, tmp_path / "r.html").read_text()
    assert "Only the last call's timings are recorded" in html.unescape(page)
    timings = page.split('<table class="timings">', 1)[1].split("</table>", 1)[0]
    assert [_cells(r) for r in table_rows(timings)] == [["total", "147 s (2.5 min)"]]


def test_settings_are_a_table_per_section(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    settings = page.split("<h3>Settings</h3>", 1)[1]
    heads = re.findall(r"<thead><tr><th>([^<]*)</th>", settings)
    assert {"run", "data", "train", "sample", "method", "attribution", "executor"} <= set(heads)
    att = settings.split("<th>attribution</th>", 1)[1].split("</table>", 1)[0]
    cells = {_cells(r)[0]: _cells(r)[1] for r in table_rows(att)}
    assert cells["subsets"] == "48" and cells["v1"] == "full"
    assert cells["estimators[0] shapley-cv.sampler.name"] == "leverage"
    assert "{&quot;" not in settings and '{"' not in settings  # no raw JSON


def test_reference_samples_side_by_side(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    sec = page.split("<h2>Samples of the reference models</h2>", 1)[1].split("<h2>", 1)[0]
    figs = re.findall(
        r'<figure class="grid"><img src="data:image/png;base64,([^"]+)".*?'
        r"<figcaption>(.*?)</figcaption>",
        sec,
        re.S,
    )
    caps = [html.unescape(c) for _, c in figs]
    assert caps == [
        "null model (empty coalition)",
        "full model θ* (all players)",
        "sft on all players",
    ]
    with Store(run / "store.sqlite") as s:
        keys = {r.method: r.key for r in s.records()}
    for (b64, _), method in zip(figs, ["null", "full", "sft"]):
        assert base64.b64decode(b64) == (run / "grids" / f"{keys[method]}.png").read_bytes()
    rows = {_cells(r)[0]: _cells(r) for r in table_rows(sec)}
    assert rows[FID] == [FID, "60", "8", "9.5", "-1.5"]  # null, full, sft, full - sft


def test_missing_values_json_is_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(DiffattrError) as e:
        write_report(tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "values.json" in msg and "run `diffattr run`" in msg
    from typer.testing import CliRunner

    from diffattr.cli import app

    res = CliRunner().invoke(app, ["report", str(tmp_path / "run")])
    assert res.exit_code != 0 and "diffattr run" in str(res.exception)


@pytest.mark.parametrize(
    "name, content, hint",
    [
        ("values.json", "{not json", "diffattr run"),
        ("lds.json", "[1, 2]", "diffattr lds"),
        ("lds.json", '{"results": [{"alpha": 0.5}]}', "diffattr lds"),
        ("compute_curve.json", '{"curves": {"sft": [{"lds": 1}]}}', "diffattr curve"),
        ("counterfactual-top.json", "", "diffattr counterfactual --remove top"),
        ("store.sqlite", "not a database at all" * 100, "diffattr run"),
    ],
)
def test_broken_results_file_is_one_line_error(run, tmp_path, name, content, hint):
    (run / name).write_text(content)
    for extra in ("-wal", "-shm"):
        Path(f"{run / name}{extra}").unlink(missing_ok=True)
    with pytest.raises(DiffattrError) as e:
        write_report(run, tmp_path / "r.html")
    msg = str(e.value)
    assert "\n" not in msg and name in msg and f"`{hint}`" in msg


def test_optional_sections_left_out(run, tmp_path):
    page = write_report(run, tmp_path / "r.html").read_text()
    for title in ("Linear datamodeling score", "Fidelity", "LDS against compute", "Counterfactual"):
        assert f"<h2>{title}" not in page


def test_read_only_run_directory(run, tmp_path):
    """The run directory is only read: --out elsewhere, nothing created or changed there
    (the store opened read-only), also with the directory made read-only."""

    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*")}

    before = snapshot()
    out = tmp_path / "elsewhere" / "report.html"
    for p in [run, *run.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert write_report(run, out) == out and out.stat().st_size > 10_000
    finally:
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert snapshot() == before


def _timings_header(page: str) -> str:
    timings = page.split('<table class="timings">', 1)[1].split("</thead>", 1)[0]
    return " ".join(_text(timings))


def test_report_while_a_run_writes_the_store(run, tmp_path):
    """A writer holds the store open (WAL): the report reads its committed rows."""
    with Store(run / "store.sqlite") as writer:
        calls = writer.get_meta("timings")
        writer.set_meta("timings", [*calls, {"at": 1.8e9, "jobs": 1.0, "total": 3.0}])
        assert (run / "store.sqlite-wal").exists()
        page = write_report(run, tmp_path / "r.html").read_text()
    assert "sum of 3 calls" in _timings_header(page)


def test_store_copied_when_it_cannot_be_opened_read_only(run, tmp_path, monkeypatch):
    """Read-only media with a -wal beside the store (a killed run): SQLite cannot make the
    -shm, so the store and its -wal are read from a temporary copy."""
    import sqlite3

    import diffattr.report.inputs as inputs

    writer = sqlite3.connect(run / "store.sqlite", isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    calls = json.loads(writer.execute("SELECT value FROM meta WHERE name='timings'").fetchone()[0])
    calls.append({"at": 1.8e9, "total": 3.0})
    writer.execute("UPDATE meta SET value=? WHERE name='timings'", (json.dumps(calls),))
    wal = (run / "store.sqlite-wal").read_bytes()
    assert len(wal) > 0
    real = sqlite3.connect
    opened = []

    def connect(database, *args, **kwargs):
        opened.append(str(database))
        if str(database).endswith("?mode=ro"):
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)

    monkeypatch.setattr(inputs.sqlite3, "connect", connect)
    view = inputs.read_store(run / "store.sqlite")
    writer.close()
    assert len(view.timing_calls) == 3  # the row only in the -wal is read
    assert any("diffattr-report-" in d for d in opened)


def test_compute_curve_marks_unidentified_points(run, tmp_path):
    from diffattr.evaluate.budget import CurvePoint, CurveReport

    costs = {
        "retrain": {"prepare_seconds": 0.0, "seconds_per_job": 4.4, "subsets": 18},
        "sft": {"prepare_seconds": 5.0, "seconds_per_job": 1.1, "subsets": 30},
    }
    points = [
        CurvePoint("retrain", 40.0, 6, FID, None, False, "shapley: not identified (rank 5 < 9)"),
        CurvePoint("retrain", 80.0, 18, FID, 35.0, True),
        CurvePoint("sft", 40.0, 30, FID, 20.0, True),
    ]
    curve = CurveReport(["retrain", "sft"], costs, points, test_subsets=16, seeds=1)
    (run / "compute_curve.json").write_text(json.dumps(curve.to_dict()))
    page = write_report(run, tmp_path / "r.html").read_text()
    sec = page.split("<h2>LDS against compute</h2>", 1)[1].split("<h2>", 1)[0]
    assert len(re.findall(r"<img src=\"data:image/png", sec)) == 1  # one behavior, one plot
    rows = [_cells(r) for r in table_rows(sec.split('<table class="curve">', 1)[1])]
    status = {(r[0], r[2]): r[5] for r in rows}
    assert status[("retrain", "40")].startswith("not identified shapley: not identified")
    assert status[("retrain", "80")] == "identified" and status[("sft", "40")] == "identified"


def _lds_report():
    from diffattr.evaluate.fidelity import FidelityResult
    from diffattr.evaluate.lds import LDSProtocol, LDSReport, LDSResult, LDSScore

    rng = np.random.default_rng(2)
    pred = rng.normal(size=16)
    results = [
        LDSResult(
            0.5,
            "sft",
            est,
            beh,
            LDSScore(41.25, 3.5, [38.0, 41.0, 44.75], 30.0, 52.5, 16),
            24,
            {"identified": ident, "solver": "cholesky"},
            pred.tolist(),
            (pred + rng.normal(size=16)).tolist(),
        )
        for est, beh, ident in [("shapley", FID, True), ("datamodel", IS, False)]
    ]
    fid = [FidelityResult("sft", FID, 0.8, 0.75, 1.5, 16, pred.tolist(), (2 * pred).tolist())]
    return LDSReport(
        LDSProtocol((0.5,), 16, 3),
        {0.5: 16},
        results,
        fid,
        {
            "retrain": {"seconds_per_job": 40.0, "prepare_seconds": 0.0},
            "sft": {"seconds_per_job": 2.0, "prepare_seconds": 30.0, "speedup_vs_retrain": 20.0},
        },
    )


def test_lds_section_renders_the_dataclass_or_its_json(run, tmp_path):
    from diffattr.report.lds import render_lds

    report = _lds_report()
    direct = render_lds(report)
    (run / "lds.json").write_text(json.dumps(report.to_dict()))
    page = write_report(run, tmp_path / "r.html").read_text()
    sec = page.split("<h2>Linear datamodeling score</h2>", 1)[1].split("<h2>Run</h2>", 1)[0]
    assert direct.split("<h2>Linear datamodeling score</h2>", 1)[1] == sec
    title = "LDS 41.2 ± 3.5 (t, over 3 seeds); bootstrap [30.0, 52.5] (over 16 test subsets)"
    caps = [
        html.unescape(c)
        for c in re.findall(
            r'<figure class="plot lds">.*?'
            r"<figcaption>(.*?)</figcaption>",
            sec,
            re.S,
        )
    ]
    assert caps == [f"sft shapley, {FID}, α=0.5: {title}", f"sft datamodel, {IS}, α=0.5: {title}"]
    rows = [_cells(r) for r in table_rows(sec)]
    assert rows[0][4:7] == ["41.25", "± 3.5", "[30.0, 52.5]"]
    assert rows[0][-1] == "" and rows[1][-1] == "not identified"
    assert "<h2>Fidelity to retraining</h2>" in sec and "20×" in sec
    point = html.unescape(sec.split("operating point", 1)[1].split("</p>", 1)[0])
    assert f"sft: 20× cheaper per counterfactual than retraining, at Pearson 0.8 ({FID})" in point
    assert len(re.findall(r'<img src="data:image/png', sec)) == 3  # 2 LDS + 1 fidelity
    assert "seed to seed" not in sec  # no agreement recorded (one seed): no columns


def test_fidelity_table_shows_retraining_seed_to_seed_agreement(run, tmp_path):
    from diffattr.report.lds import render_lds

    report = _lds_report()
    f = report.fidelity[0]
    f.pearson_per_seed = 0.71
    f.retrain_agreement = {"pearson": 0.74, "min": 0.7, "max": 0.78, "spearman": 0.7, "pairs": 3}
    (run / "lds.json").write_text(json.dumps(report.to_dict()))
    page = write_report(run, tmp_path / "r.html").read_text()
    sec = page.split("<h2>Fidelity to retraining</h2>", 1)[1].split("<h2>", 1)[0]
    assert render_lds(report).count("retraining, seed to seed") == 1
    head = sec.split("<tbody>", 1)[0]
    assert "Pearson, one retraining seed" in head and "retraining, seed to seed" in head
    row = _cells(table_rows(sec)[0])
    assert row[:3] == ["sft", FID, "0.8"] and row[-2:] == ["0.71", "0.74"]
    assert "with one retraining seed 0.710, retraining seed to seed 0.740" in report.render()


def test_counterfactual_section_with_the_retrained_grid(run, tmp_path):
    from diffattr.evaluate.counterfactual import CounterfactualReport, Removal

    change = {FID: {"mean": 35.0, "sd": float("nan"), "ci95": float("nan"), "value": 10.8}}
    cf = CounterfactualReport(
        "top", 0.4, 1, [Removal("shapley", FID, ["2", "4", "5", "0"], 1, change)]
    )
    (run / "counterfactual-top.json").write_text(json.dumps(cf.to_dict()))
    mask = "".join("0" if n in {"2", "4", "5", "0"} else "1" for n in NAMES)
    with Store(run / "store.sqlite") as s:
        s.put(JobRecord("cfkey", "counterfactual", mask, "retrain", {}, 0, behaviors={FID: 10.8}))
    (run / "grids" / "cfkey.png").write_bytes(_png(9))
    page = write_report(run, tmp_path / "r.html").read_text()
    sec = page.split("<h2>Counterfactual: retrain without the top 40%</h2>", 1)[1]
    sec = sec.split("<h2>", 1)[0]
    row = _cells(table_rows(sec)[0])
    assert row[:5] == ["shapley", FID, f"{FID} (lower is better)", "35", "± n/a"]
    assert row[-1] == "2, 4, 5, 0"
    (grid,) = re.findall(r'<figure class="grid"><img src="data:image/png;base64,([^"]+)"', sec)
    assert base64.b64decode(grid) == _png(9)
    assert "retrain without the bottom" not in page  # no bottom file: no section


def test_thousands_of_per_image_players_show_top_and_bottom(tmp_path):
    from diffattr.data import load_dataset

    ids = load_dataset(RunConfig().data).ids
    n = len(ids)
    v = np.random.default_rng(1).normal(size=n)
    a = {
        "estimator": "shapley",
        "behavior": FID,
        "settings": {"identified": True},
        "names": ids,
        "values": v.tolist(),
        "stderr": [0.1] * n,
    }
    run = make_run(tmp_path, players="sample", attributions=[a])
    page = write_report(run, tmp_path / "r.html").read_text()
    rows = table_rows(attribution_blocks(page)[("shapley", FID)])
    assert len(rows) == 41 and "players between" in _cells(rows[20])[0]
    cells = [_cells(r) for r in rows[:20] + rows[21:]]
    order = np.argsort(v)  # FID: lowest first
    assert [c[1] for c in cells] == [ids[i] for i in order[:20]] + [ids[i] for i in order[-20:]]
    assert [int(c[0]) for c in cells[-20:]] == list(range(n - 19, n + 1))
    assert sum('class="thumb"' in r for r in rows) == 40  # one image each, shown rows only
    assert len(page) < 2_000_000


# ----------------------------------------------------------------- a tiny evaluated run


def test_report_of_an_evaluated_run(evaluated_run, tmp_path):
    run_dir, lds, cf = evaluated_run
    path = write_report(run_dir, tmp_path / "report.html")
    page = path.read_text()
    values = json.loads((run_dir / "values.json").read_text())
    blocks = attribution_blocks(page)
    assert set(blocks) == {(a["estimator"], a["behavior"]) for a in values["attributions"]}
    for a in values["attributions"]:
        rows = [_cells(r) for r in table_rows(blocks[(a["estimator"], a["behavior"])])]
        shown = {r[1]: r[3] for r in rows}
        assert set(shown) == set(a["names"])
        for name, v, se in zip(a["names"], a["values"], a["stderr"]):
            # a standard error the fit's rows cannot determine is said so, not drawn
            tail = " (interval not estimable)" if se is None else f" ± {1.96 * se:.2g}"
            assert shown[name] == f"{v:.4g}{tail}"
        assert all(
            'class="thumb"' in r for r in table_rows(blocks[(a["estimator"], a["behavior"])])
        )
    # null, full and the method's all-players model, each with its grid
    sec = page.split("<h2>Samples of the reference models</h2>", 1)[1].split("<h2>", 1)[0]
    assert sec.count('<figure class="grid"><img') == 3
    # one LDS scatter per result, titled with both intervals; fidelity; counterfactual
    lds_sec = page.split("<h2>Linear datamodeling score</h2>", 1)[1].split("<h2>", 1)[0]
    assert lds_sec.count('<figure class="plot lds">') == len(lds["results"])
    assert "(t, over 1 seed)" in lds_sec and "(over 4 test subsets)" in lds_sec
    assert "<h2>Fidelity to retraining</h2>" in page
    cf_sec = page.split("<h2>Counterfactual: retrain without the top 40%</h2>", 1)[1]
    assert ", ".join(cf["results"][0]["removed"]) in cf_sec
    assert cf_sec.split("<h2>", 1)[0].count('<figure class="grid"><img') == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    from diffattr.report.common import seconds

    timings = page.split('<table class="timings">', 1)[1].split("</table>", 1)[0]
    assert "sum of 1 call<" in timings
    total = {_cells(r)[0]: _cells(r) for r in table_rows(timings)}["total"]
    assert total[-1] == seconds(summary["timings_all_calls"]["total"]) and total[-1] != "n/a"
    for data in images(page):  # every inlined image is a PNG
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="http' not in page and "<script" not in page


@pytest.mark.slow
def test_report_images_decode_in_headless_chromium(evaluated_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    run_dir, _, _ = evaluated_run
    path = write_report(run_dir, tmp_path / "report.html")
    page = path.read_text()
    n_images = len(images(page))
    n_thumbs = page.count('class="thumb"')
    assert n_thumbs >= 10 and n_images >= n_thumbs + 5
    # A copy of the page that records, after load, how many images (and thumbnails) decoded.
    probe = tmp_path / "probe.html"
    js = (
        "<script>window.addEventListener('load',()=>{const i=[...document.images];"
        "const ok=x=>x.complete&&x.naturalWidth>0&&x.naturalHeight>0;"
        "const t=i.filter(x=>x.classList.contains('thumb'));"
        "document.body.setAttribute('data-ok',i.filter(ok).length+'/'+i.length);"
        "document.body.setAttribute('data-thumbs',t.filter(ok).length+'/'+t.length)})</script>"
    )
    probe.write_text(page.replace("</body>", js + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    dom = subprocess.run(
        [
            chromium,
            *flags,
            f"--user-data-dir={tmp_path / 'p1'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "diffattr report" in dom.stdout
    ok = re.search(r'data-ok="(\d+)/(\d+)"', dom.stdout)
    assert ok and ok.group(1) == ok.group(2) == str(n_images), dom.stdout[-500:]
    thumbs = re.search(r'data-thumbs="(\d+)/(\d+)"', dom.stdout)
    assert thumbs and thumbs.group(1) == thumbs.group(2) == str(n_thumbs)
    shot = tmp_path / "shot.png"
    res = subprocess.run(
        [
            chromium,
            *flags,
            f"--user-data-dir={tmp_path / 'p2'}",
            f"--screenshot={shot}",
            "--window-size=1200,3000",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0 and shot.stat().st_size > 10_000
