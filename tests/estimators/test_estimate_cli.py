"""``estimate`` as a typer command: ranked output, CSV written atomically, clean errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from diffattr.coalitions import ShapleyKernelSampler
from diffattr.commands.estimate import estimate
from diffattr.errors import DiffattrError
from diffattr.estimators import all_subsets, exact_shapley, write_table_csv

app = typer.Typer()
app.command("estimate")(estimate)
runner = CliRunner()

NAMES = ["ann", "bob", "cat", "dan"]


def voting(masks: np.ndarray) -> np.ndarray:
    return (np.atleast_2d(masks) @ np.array([3.0, 2.0, 1.0, 1.0]) >= 4).astype(float)


def read_out(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_full_table_gives_exact_values_and_writes_csv(tmp_path):
    table, out = tmp_path / "table.csv", tmp_path / "att.csv"
    z = all_subsets(4)
    write_table_csv(table, z, voting(z), names=NAMES)
    result = runner.invoke(app, [str(table), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exact values" in result.output
    assert result.output.index("ann") < result.output.index("bob")  # ranked
    rows = read_out(out)
    assert list(rows[0]) == ["player", "value", "stderr"]
    assert [r["player"] for r in rows] == NAMES
    got = np.array([float(r["value"]) for r in rows])
    np.testing.assert_allclose(got, [1 / 2, 1 / 6, 1 / 6, 1 / 6], atol=1e-12)
    np.testing.assert_allclose(got, exact_shapley(lambda m: voting(m)[0], 4), atol=1e-12)
    banzhaf = runner.invoke(app, [str(table), "-e", "banzhaf", "-o", str(out)])
    assert banzhaf.exit_code == 0, banzhaf.output
    got = np.array([float(r["value"]) for r in read_out(out)])
    np.testing.assert_allclose(got, [3 / 4, 1 / 4, 1 / 4, 1 / 4], atol=1e-12)


def test_sampled_table_with_v0_v1_options(tmp_path):
    n = 6
    w = np.arange(1.0, n + 1)
    z = ShapleyKernelSampler(n, seed=0, paired=True, replace=True).sample(200)
    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    write_table_csv(table, z, 2.0 + z @ w)
    result = runner.invoke(
        app, [str(table), "--v0", "2", "--v1", str(2 + w.sum()), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "exact" not in result.output
    rows = read_out(out)
    np.testing.assert_allclose([float(r["value"]) for r in rows], w, atol=1e-9)
    # without v0/v1 (no all-0/all-1 rows) KernelSHAP cannot run
    missing = runner.invoke(app, [str(table)])
    assert isinstance(missing.exception, DiffattrError) and "needs v0" in str(missing.exception)


def test_several_behaviors_write_long_csv(tmp_path):
    z = all_subsets(3)
    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    y = np.column_stack([z @ [1.0, 2.0, 3.0], z @ [3.0, 0.0, 1.0]])
    write_table_csv(table, z, y, behaviors=["fid", "loss"])
    result = runner.invoke(app, [str(table), "-e", "banzhaf-msr", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert list(rows[0]) == ["behavior", "player", "value", "stderr"]
    assert [(r["behavior"], float(r["value"])) for r in rows] == [
        ("fid", 1.0),
        ("fid", 2.0),
        ("fid", 3.0),
        ("loss", 3.0),
        ("loss", 0.0),
        ("loss", 1.0),
    ]
    with_v0 = runner.invoke(app, [str(table), "--v0", "1"])
    assert isinstance(with_v0.exception, DiffattrError)


@pytest.mark.parametrize(
    ("text", "args", "match"),
    [
        ("a,b,value\n0,7,1\n1,1,2\n", [], "expected 0 or 1"),
        ("a,b,score\n0,1,1\n", [], "no 'value' column"),
        ("a,b,value\n0,1,1\n1,0,1\n0,0,0\n1,1,2\n", ["-e", "nope"], "unknown estimator"),
        ("a,b,value\n0,1,1\n1,0,1\n", ["-e", "loo"], "needs v1"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, text, args, match):
    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    table.write_text(text)
    result = runner.invoke(app, [str(table), "--out", str(out), *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, DiffattrError), result.output
    assert match in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [table]  # no temp files left behind


def test_out_in_missing_directory_is_an_error(tmp_path):
    table = tmp_path / "t.csv"
    z = all_subsets(2)
    write_table_csv(table, z, z.sum(axis=1).astype(float))
    result = runner.invoke(app, [str(table), "--out", str(tmp_path / "no" / "o.csv")])
    assert isinstance(result.exception, DiffattrError)
    assert "does not exist" in str(result.exception)


def test_plain_function_call_returns_attributions(tmp_path):
    table = tmp_path / "t.csv"
    z = all_subsets(3)
    write_table_csv(table, z, z @ [1.0, -1.0, 0.5])
    atts = estimate(table, estimator="permutation-shapley")
    np.testing.assert_allclose(atts[0].values, [1.0, -1.0, 0.5], atol=1e-12)
    assert atts[0].settings["exact"] is True


def test_byte_order_mark_does_not_reach_the_first_player_name(tmp_path):
    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    z = all_subsets(3)
    text = "alice,bob,carol,value\n" + "".join(
        f"{a:d},{b:d},{c:d},{float(a + 2 * b + 3 * c)}\n" for a, b, c in z
    )
    table.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # as Excel saves UTF-8 CSV
    result = runner.invoke(app, [str(table), "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert [r["player"] for r in rows] == ["alice", "bob", "carol"]
    np.testing.assert_allclose([float(r["value"]) for r in rows], [1.0, 2.0, 3.0], atol=1e-12)
    # attribution CSVs read back the same way
    from diffattr.estimators import Attribution

    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())
    assert Attribution.from_csv(out).names == ["alice", "bob", "carol"]


NASTY = ['quote "q"', "comma, here", "new\nline", "ünï©ødé ✓", "semi;colon", "'single'"]


def test_player_names_round_trip_through_table_and_attribution_csv(tmp_path):
    from diffattr.estimators import Attribution, read_table_csv

    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    z = all_subsets(len(NASTY))
    w = np.arange(1.0, len(NASTY) + 1)
    write_table_csv(table, z, z @ w, names=NASTY, behaviors=['fid "50k", v2'])
    tbl = read_table_csv(table)
    assert tbl.names == NASTY and tbl.behaviors == ['fid "50k", v2']
    result = runner.invoke(app, [str(table), "-e", "banzhaf", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert [r["player"] for r in rows] == NASTY
    back = Attribution.from_csv(out)
    assert back.names == NASTY
    np.testing.assert_allclose(back.values, w, atol=1e-12)
    # several behaviors: the long format round-trips the behavior names too
    write_table_csv(
        table, z, np.column_stack([z @ w, -(z @ w)]), names=NASTY, behaviors=["a,b", 'c"d']
    )
    result = runner.invoke(app, [str(table), "-e", "banzhaf-msr", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = read_out(out)
    assert {r["behavior"] for r in rows} == {"a,b", 'c"d'}
    assert [r["player"] for r in rows[: len(NASTY)]] == NASTY


def test_table_csv_pair_ids_round_trip(tmp_path):
    from diffattr.estimators import read_table_csv

    sampler = ShapleyKernelSampler(5, seed=0, paired=True)
    z = sampler.sample(30)
    ids = sampler.pair_ids(np.arange(30))
    keep = np.delete(np.arange(30), 3)
    path = tmp_path / "t.csv"
    write_table_csv(path, z[keep], z[keep] @ np.arange(5.0), pair_ids=ids[keep])
    tbl = read_table_csv(path)
    np.testing.assert_array_equal(tbl.pair_ids, ids[keep])
    result = runner.invoke(
        app, [str(path), "--v0", "0", "--v1", "10", "-o", str(tmp_path / "o.csv")]
    )
    assert result.exit_code == 0, result.output
    got = [float(r["value"]) for r in read_out(tmp_path / "o.csv")]
    np.testing.assert_allclose(got, np.arange(5.0), atol=1e-9)


def test_sampler_and_option_flags(tmp_path):
    from diffattr.coalitions import LeverageSampler

    n = 6
    z = LeverageSampler(n, seed=1).sample(40)
    w = np.arange(1.0, n + 1)
    table, out = tmp_path / "t.csv", tmp_path / "o.csv"
    s = z.sum(axis=1)
    write_table_csv(table, z, z @ w + s * (n - s) * (s - n / 2) / 10.0)  # zero Shapley values
    args = [str(table), "--v0", "0", "--v1", str(w.sum()), "-o", str(out)]
    result = runner.invoke(
        app, [*args, "--sampler", "leverage", "-e", "shapley-cv", "-O", "size_terms=1"]
    )
    assert result.exit_code == 0, result.output
    got = np.array([float(r["value"]) for r in read_out(out)])
    np.testing.assert_allclose(got, w, atol=1e-8)  # the size term is a control variate
    plain = runner.invoke(app, [*args, "--sampler", "leverage"])
    assert plain.exit_code == 0
    assert np.abs(np.array([float(r["value"]) for r in read_out(out)]) - w).max() > 1e-3
    bad = runner.invoke(app, [*args, "--sampler", "uniform"])
    assert isinstance(bad.exception, DiffattrError)
    assert "shapley needs shapley-kernel or leverage rows, got uniform" in str(bad.exception)
    bad = runner.invoke(app, [*args, "-O", "paired"])
    assert "expects KEY=VALUE" in str(bad.exception)


def test_estimate_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    table = tmp_path / "t.csv"
    z = all_subsets(3)
    write_table_csv(table, z, z @ [1.0, 2.0, 3.0])
    code = (
        "import sys\n"
        "from diffattr.commands.estimate import estimate\n"
        f"atts = estimate({str(table)!r}, estimator='shapley')\n"
        "assert abs(atts[0].values[2] - 3.0) < 1e-12\n"
        "heavy = [m for m in ('torch', 'diffusers', 'torch_pruning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
