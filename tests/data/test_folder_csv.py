"""CSV datasets: names of any kind round-trip (csv module, UTF-8), other encodings are a
one-line error, an image listed twice is a warning (or, strict, an error)."""

import csv
import warnings

import numpy as np
import pytest
from PIL import Image

from diffattr.data import Players, load_dataset
from diffattr.errors import DiffattrError, DiffattrWarning
from diffattr.estimators.attribution import Attribution
from diffattr.runner.values import read_values_csv, values_csv_text

NAMES = ['bo"b', "a,b", "line\nbreak", "Zoë 🎨 東京", "'single'", "semi;colon"]


def _images(root, n):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8), "L").save(root / f"{i}.png")
        out.append(f"img/{i}.png")
    return out


def _write_csv(path, rows, encoding="utf-8", header=("path", "contributor")):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_player_names_round_trip_through_csv_players_and_values_csv(tmp_path):
    paths = _images(tmp_path / "img", 2 * len(NAMES))
    rows = [(p, NAMES[i % len(NAMES)]) for i, p in enumerate(paths)]
    csv_path = _write_csv(tmp_path / "data.csv", rows)
    ds = load_dataset({"name": "folder", "path": str(csv_path)})
    assert ds.contributors == [w for _, w in rows]
    players = Players.from_dataset(ds)
    assert sorted(players.names) == sorted(NAMES)
    att = Attribution(
        np.arange(len(NAMES), dtype=float),
        np.full(len(NAMES), 0.5),
        list(players.names),
        "shapley",
        behavior='fid["x",y]',
    )
    out = tmp_path / "values.csv"
    out.write_text(values_csv_text([att]), encoding="utf-8")
    back = read_values_csv(out)
    assert [r["player"] for r in back] == list(players.names)
    assert {r["behavior"] for r in back} == {'fid["x",y]'}
    assert [float(r["value"]) for r in back] == list(range(len(NAMES)))


def test_bom_and_spaces_in_the_header_are_fine(tmp_path):
    paths = _images(tmp_path / "img", 4)
    csv_path = _write_csv(
        tmp_path / "d.csv",
        [(p, "x" if i < 2 else "y") for i, p in enumerate(paths)],
        encoding="utf-8-sig",
        header=("path", " contributor"),
    )
    ds = load_dataset({"name": "folder", "path": str(csv_path)})
    assert ds.contributors == ["x", "x", "y", "y"]


def test_a_csv_in_another_encoding_is_one_line(tmp_path):
    paths = _images(tmp_path / "img", 4)
    csv_path = _write_csv(
        tmp_path / "latin.csv",
        [(p, "Zoë" if i < 2 else "Åsa") for i, p in enumerate(paths)],
        encoding="latin-1",
    )
    with pytest.raises(DiffattrError) as e:
        load_dataset({"name": "folder", "path": str(csv_path)})
    msg = str(e.value)
    assert "\n" not in msg and str(csv_path) in msg and "UTF-8" in msg


def test_an_image_listed_twice_warns_with_the_count_or_fails_when_strict(tmp_path):
    paths = _images(tmp_path / "img", 6)
    rows = [(p, "ann" if i < 3 else "bo") for i, p in enumerate(paths)]
    rows += [(paths[0], "bo"), (paths[1], "bo"), (paths[1], "cy")]  # 2 images, 3 extra rows
    csv_path = _write_csv(tmp_path / "dup.csv", rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset({"name": "folder", "path": str(csv_path)})
    assert len(ds) == 9
    msgs = [str(w.message) for w in caught if issubclass(w.category, DiffattrWarning)]
    assert len(msgs) == 1 and "2 image(s) listed more than once (3 extra row(s)" in msgs[0]
    with pytest.raises(DiffattrError, match="listed more than once") as e:
        load_dataset({"name": "folder", "path": str(csv_path), "strict": True})
    assert "\n" not in str(e.value)
    # no duplicates: no warning
    clean = _write_csv(tmp_path / "clean.csv", rows[:6])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiffattrWarning)
        load_dataset({"name": "folder", "path": str(clean), "strict": True})


def test_subfolder_names_round_trip(tmp_path):
    names = ['bo"b', "a,b", "Zoë 🎨", "it's"]
    for who in names:
        _images(tmp_path / "root" / who, 2)
    ds = load_dataset({"name": "folder", "path": str(tmp_path / "root")})
    players = Players.from_dataset(ds)
    assert sorted(players.names) == sorted(names)
    att = Attribution(np.zeros(len(names)), np.zeros(len(names)), list(players.names), "loo")
    out = tmp_path / "values.csv"
    out.write_text(values_csv_text([att]), encoding="utf-8")
    assert [r["player"] for r in read_values_csv(out)] == list(players.names)
