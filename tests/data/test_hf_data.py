"""Hugging Face layouts: imagefolder metadata (CSV, JSONL), datasets saved with
save_to_disk and datasets in memory give the folder CSV's dataset and content digest, and
the same one-line errors."""

import csv
import json
import sys

import numpy as np
import pytest

from diffattr.data import load_dataset
from diffattr.data.digest import content_digest, dataset_digest
from diffattr.data.hf import from_hf_dataset
from diffattr.errors import DiffattrError

datasets = pytest.importorskip("datasets")
# one of the five images is colour: every layout converts it alike (and says so once)
pytestmark = pytest.mark.filterwarnings("ignore:.*the images disagree")

ROWS = [  # file_name, contributor, label, caption
    ("ann/0.png", "ann", "3", "a three"),
    ("ann/1.png", "ann", "4", ""),
    ("bo/0.png", "bo", "3", "another three"),
    ("bo/1.png", "bo", "4", "a four"),
    ("cy/a b.png", "cy, jr", "3", "a three, again"),
]


def _images(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, (rel, *_rest) in enumerate(ROWS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) if i == 4 else None
        if a is None:
            a = np.clip(rng.random((8, 8)) * 60 + 40 * i, 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / rel)


@pytest.fixture
def layouts(tmp_path):
    """The same five images listed as a folder CSV, imagefolder metadata.csv and .jsonl."""
    root = tmp_path / "imgs"
    _images(root)
    with open(root / "list.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "contributor", "label", "caption"])
        w.writerows(ROWS)
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    (jsonl / "metadata.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "file_name": f"../imgs/{r}",
                    "artist": who,
                    "label": int(lab),
                    "caption": cap or None,
                }
            )
            + "\n"
            for r, who, lab, cap in ROWS
        ),
        encoding="utf-8",
    )
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "contributor", "label", "caption", "extra"])
        w.writerows([[*r, "x"] for r in ROWS])
    return root, jsonl


def _memory(root, **extra):
    """A datasets.Dataset in memory: PIL images (encoded as PNG bytes, no file behind
    them), the contributor as a ClassLabel, a file_name column."""
    from PIL import Image

    images = []
    for rel, *_ in ROWS:
        with Image.open(root / rel) as im:
            images.append(im.copy())
    names = sorted({who for _, who, _, _ in ROWS})
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "contributor": datasets.ClassLabel(names=names),
            "label": datasets.Value("string"),
            "caption": datasets.Value("string"),
            "file_name": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "image": images,
            "contributor": [who for _, who, _, _ in ROWS],
            "label": [lab for _, _, lab, _ in ROWS],
            "caption": [cap or None for *_, cap in ROWS],
            "file_name": [rel for rel, *_ in ROWS],
            **extra,
        },
        features=features,
    )


def test_every_layout_gives_the_folder_csvs_content_digest(layouts, tmp_path):
    root, jsonl = layouts
    folder = load_dataset({"name": "folder", "path": str(root / "list.csv")})
    want = content_digest(folder)
    assert folder.channels == 1 and folder.semantic_labels is not None

    meta_csv = load_dataset({"name": "imagefolder", "path": str(root)})
    assert content_digest(meta_csv) == want
    assert meta_csv.ids == folder.ids and meta_csv.captions == folder.captions

    # JSONL: another folder (ids are file_name as written), another contributor column,
    # numeric labels: the same images, contributors and labels
    by_jsonl = load_dataset(
        {"name": "imagefolder", "path": str(jsonl), "contributor_column": "artist"}
    )
    assert by_jsonl.contributor_of() == folder.contributor_of()
    assert by_jsonl.captions == folder.captions
    assert [by_jsonl.semantic_names[i] for i in by_jsonl.semantic_labels] == [
        folder.semantic_names[i] for i in folder.semantic_labels
    ]
    assert np.array_equal(by_jsonl.images.numpy(), folder.images.numpy())

    memory = _memory(root)
    assert content_digest(from_hf_dataset(memory)) == want
    saved = tmp_path / "saved"
    memory.save_to_disk(str(saved))
    on_disk = load_dataset({"name": "hf-dataset", "path": str(saved)})
    assert content_digest(on_disk) == want
    assert dataset_digest(on_disk, tmp_path / "cache") == want  # cached by the arrow files
    # a DatasetDict's split
    datasets.DatasetDict({"train": memory}).save_to_disk(str(tmp_path / "dict"))
    split = load_dataset({"name": "hf-dataset", "path": str(tmp_path / "dict")})
    assert content_digest(split) == want


def test_images_held_as_paths_and_row_ids(layouts):
    root, _ = layouts
    ds = datasets.Dataset.from_dict(
        {"img": [str(root / r) for r, *_ in ROWS], "who": [w for _, w, _, _ in ROWS]}
    ).cast_column("img", datasets.Image())
    got = from_hf_dataset(ds, image_column="img", contributor_column="who")
    assert got.ids == ["0", "1", "2", "3", "4"]
    folder = load_dataset({"name": "folder", "path": str(root / "list.csv")})
    assert np.array_equal(got.images.numpy(), folder.images.numpy())
    assert got.semantic_labels is None and got.captions is None


def test_the_run_plan_sees_the_label_column_without_loading(layouts, tmp_path):
    from diffattr.data.settings import DATASETS

    root, jsonl = layouts
    assert DATASETS.parse({"name": "imagefolder", "path": str(root)}).has_semantic_labels()
    _memory(root).remove_columns("label").save_to_disk(str(tmp_path / "s"))
    s = DATASETS.parse({"name": "hf-dataset", "path": str(tmp_path / "s")})
    assert not s.has_semantic_labels()


def test_missing_columns_are_one_line_errors(layouts, tmp_path):
    root, jsonl = layouts
    with pytest.raises(DiffattrError, match=r"has no 'contributor' column .*contributor_column"):
        load_dataset({"name": "imagefolder", "path": str(jsonl)})
    with pytest.raises(DiffattrError, match=r"has no 'style' column \(\[data\] label_column"):
        load_dataset({"name": "imagefolder", "path": str(root), "label_column": "style"})
    (tmp_path / "nofile").mkdir()
    (tmp_path / "nofile" / "metadata.csv").write_text("contributor\nann\n")
    with pytest.raises(DiffattrError, match="has no 'file_name' column"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path / "nofile")})
    with pytest.raises(DiffattrError, match="holds no metadata.csv or metadata.jsonl"):
        load_dataset({"name": "imagefolder", "path": str(root / "ann")})
    memory = _memory(root)
    with pytest.raises(DiffattrError, match=r"has no 'artist' column"):
        from_hf_dataset(memory, contributor_column="artist")
    with pytest.raises(DiffattrError, match="'label' is Value, not an image column"):
        from_hf_dataset(memory, image_column="label")
    with pytest.raises(DiffattrError, match="DatasetDict with splits train; pass one split"):
        from_hf_dataset(datasets.DatasetDict({"train": memory}))
    with pytest.raises(DiffattrError, match="not a dataset saved with save_to_disk"):
        load_dataset({"name": "hf-dataset", "path": str(root)})


def test_unreadable_images_and_bad_cells_are_one_line_errors(layouts, tmp_path):
    root, _ = layouts
    (root / "bo" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DiffattrError, match=r"cannot read image .*bo/1.png") as e:
        load_dataset({"name": "imagefolder", "path": str(root)})
    assert "\n" not in str(e.value)
    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"garbage", "path": None}], "contributor": ["ann"]}
    ).cast_column("image", datasets.Image())
    with pytest.raises(DiffattrError, match=r"cannot read image dataset: row 0 \(0\)"):
        from_hf_dataset(broken)
    (root / "metadata.csv").write_text("file_name,contributor\nann/0.png,\n")
    with pytest.raises(DiffattrError, match=r"metadata.csv:2: empty file_name or contributor"):
        load_dataset({"name": "imagefolder", "path": str(root)})
    (root / "metadata.csv").write_text("file_name,contributor\nann/9.png,ann\n")
    with pytest.raises(DiffattrError, match=r"metadata.csv:2: image file not found"):
        load_dataset({"name": "imagefolder", "path": str(root)})
    (root / "metadata.csv").write_text("file_name,contributor\nann/0.png,a\x00b\n")
    with pytest.raises(DiffattrError, match="NUL byte"):
        load_dataset({"name": "imagefolder", "path": str(root)})


def test_without_the_datasets_package_the_error_names_the_extra(layouts, monkeypatch):
    root, _ = layouts
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DiffattrError, match=r"pip install 'diffattr\[hf\]'"):
        load_dataset({"name": "hf-dataset", "path": str(root)})
