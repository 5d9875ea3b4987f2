import multiprocessing as mp
import os
import signal
import sqlite3

import numpy as np

from diffattr.store import JobRecord, Store, job_key, mask_to_str, str_to_mask


def _rec(key, status="done", **kw):
    return JobRecord(
        key=key,
        kind="fit",
        mask="0101",
        method="sft",
        settings={"k": 1},
        seed=0,
        behaviors={"fid[x]": 1.5},
        status=status,
        **kw,
    )


def test_round_trip_and_retry(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        s.put(_rec("a"))
        s.put(_rec("b", status="failed", error="boom"))
        assert s.done_keys() == {"a"}
        assert s.get("b").error == "boom"
        s.put(_rec("b"))  # a retried job replaces its failed row
        assert s.count() == 2 and s.count("done") == 2
        r = s.get("a")
        assert r.behaviors == {"fid[x]": 1.5} and r.settings == {"k": 1}
        assert list(r.mask_array) == [False, True, False, True]
    with Store(tmp_path / "s.sqlite") as s:  # reopened: still there
        assert s.done_keys() == {"a", "b"}
        con = sqlite3.connect(tmp_path / "s.sqlite")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_are_content_addresses():
    a = job_key(base="m", method="sft", settings={"k": 1, "ema": "restart"}, mask="01", seed=0)
    b = job_key(base="m", method="sft", settings={"ema": "restart", "k": 1}, mask="01", seed=0)
    c = job_key(base="m", method="sft", settings={"k": 2, "ema": "restart"}, mask="01", seed=0)
    assert a == b != c
    m = np.array([True, False, True])
    assert mask_to_str(m) == "101" and (str_to_mask("101") == m).all()


def _writer(path, n):
    s = Store(path)
    for i in range(n):
        s.put(_rec(f"k{i}"))


def test_sigkill_never_leaves_half_rows(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    p = mp.get_context("fork").Process(target=_writer, args=(path, 100_000))
    p.start()
    import time

    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    with Store(path) as s:
        recs = s.records()
        assert 0 < len(recs) < 100_000
        assert all(r.behaviors == {"fid[x]": 1.5} and r.status == "done" for r in recs)
        keys = [r.key for r in recs]
        assert len(keys) == len(set(keys))


# ----------------------------------------------------------------------------- broken state

import pytest  # noqa: E402

from diffattr.errors import DiffattrError  # noqa: E402


def _real_store(path, n=50):
    with Store(path) as s:
        for i in range(n):
            s.put(_rec(f"k{i}"))
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "header-only"])
@pytest.mark.parametrize("readonly", [False, True])
def test_corrupt_store_is_a_one_line_error(tmp_path, damage, readonly):
    path = _real_store(tmp_path / "store.sqlite", 400)
    data = path.read_bytes()
    assert len(data) > 8192
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"not a database " * 100)
    else:
        path.write_bytes(data[:100])
    with pytest.raises(DiffattrError) as e:
        with Store(path, readonly=readonly) as s:
            s.records(status=None)
            s.count()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "delete it" in msg


def test_readonly_store_reads_beside_the_writer_and_never_writes(tmp_path):
    path = tmp_path / "store.sqlite"
    writer = Store(path)
    writer.put(_rec("a"))
    with Store(path, readonly=True) as r:
        assert r.readonly and r.done_keys() == {"a"}
        writer.put(_rec("b"))  # the writer goes on while a reader is open
        assert r.done_keys() == {"a", "b"}
        with pytest.raises(DiffattrError, match="read-only"):
            r.put(_rec("c"))
        with pytest.raises(DiffattrError, match="read-only"):
            r.set_meta("x", 1)
    writer.close()
    with Store(path, readonly=True) as r:  # no writer, no -shm: still readable
        assert r.count() == 2


def test_readonly_store_must_exist_and_a_folder_is_refused(tmp_path):
    with pytest.raises(DiffattrError, match="not found"):
        Store(tmp_path / "none.sqlite", readonly=True)
    (tmp_path / "d.sqlite").mkdir()
    with pytest.raises(DiffattrError, match="is a directory"):
        Store(tmp_path / "d.sqlite")


def test_local_values_round_trip_compactly_and_replace_on_retry(tmp_path):
    ssim = np.array([1.0, 0.5, 0.25, -0.125])
    with Store(tmp_path / "s.sqlite") as s:
        s.put(_rec("a", local={"ssim[pixel]": ssim, "mse[pixel]": np.zeros(4)}))
        s.put(_rec("b"))
        got = s.get("a").local
        assert set(got) == {"ssim[pixel]", "mse[pixel]"}
        np.testing.assert_array_equal(got["ssim[pixel]"], ssim)  # exact in float32
        assert s.get("b").local == {}
        by_key = {r.key: r for r in s.records(["b", "a"])}
        np.testing.assert_array_equal(by_key["a"].local["mse[pixel]"], np.zeros(4))
        s.put(_rec("a", local={"ssim[pixel]": ssim[::-1]}))  # a retry replaces them all
        assert list(s.get("a").local) == ["ssim[pixel]"]
        np.testing.assert_array_equal(s.get("a").local["ssim[pixel]"], ssim[::-1])
    con = sqlite3.connect(tmp_path / "s.sqlite")
    (size,) = con.execute("SELECT length(data) FROM local_values WHERE key = 'a'").fetchone()
    assert size == 4 * 4  # float32 bytes, not JSON
    con.close()


def test_a_store_made_before_local_values_reads_and_gains_the_table(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT NOT NULL, mask TEXT NOT NULL, "
        "method TEXT NOT NULL, settings TEXT NOT NULL, seed INTEGER NOT NULL, behaviors TEXT, "
        "t_train REAL, t_sample REAL, t_measure REAL, t_total REAL, status TEXT NOT NULL, "
        "error TEXT, extra TEXT, finished REAL NOT NULL);"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "INSERT INTO jobs VALUES ('old', 'fit', '01', 'sft', '{}', 0, '{\"fid[x]\": 2.0}', "
        "0, 0, 0, 0, 'done', NULL, '{}', 1.0);"
    )
    con.commit()
    con.close()
    with Store(path, readonly=True) as s:  # no local_values table: jobs without them
        (rec,) = s.records()
        assert rec.behaviors == {"fid[x]": 2.0} and rec.local == {}
        assert s.get("old").local == {}
    with Store(path) as s:  # opened for writing: the table is added, old rows kept
        s.put(_rec("new", local={"ssim[pixel]": np.ones(3)}))
        assert s.get("old").local == {} and s.get("new").local["ssim[pixel]"].tolist() == [1] * 3
