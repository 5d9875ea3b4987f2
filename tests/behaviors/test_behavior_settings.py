"""The [behaviors] settings: registries, one-line errors, auto, cheap checks (no torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diffattr.behaviors.resolve import check_settings, suite_keys
from diffattr.behaviors.settings import BEHAVIORS, BehaviorsSettings, parse_behaviors
from diffattr.behaviors.spaces import FEATURES, AutoencoderFeatures, resolve_features
from diffattr.errors import DiffattrError


def test_defaults_and_round_trip():
    s = parse_behaviors(None)
    assert s.features.name == "auto" and s.reference == "train"
    assert s.measure is None  # resolved per feature space
    assert [b.name for b in s.resolved("digits", False).measure] == ["fid", "is"]
    assert [b.name for b in s.resolved("folder", False).measure] == ["fid", "precision", "recall"]
    assert [b.name for b in s.resolved("folder", True).measure] == ["fid", "is"]
    assert s.manifold_size is None  # = number of generated images
    table = {
        "features": {"name": "inception", "path": "/w/pt.pth"},
        "reference": "/data/curated",
        "measure": ["fid", {"name": "precision", "k": 5}, {"name": "is", "splits": 10}],
        "batch_size": 64,
    }
    s = parse_behaviors(table)
    assert s.features.path == "/w/pt.pth" and s.measure[1].k == 5 and s.measure[2].splits == 10
    again = parse_behaviors(s.to_dict())
    assert again == s and again.to_dict() == s.to_dict()
    assert BehaviorsSettings.model_validate(s.to_dict()) == s


def test_string_is_short_for_a_table():
    assert (
        parse_behaviors({"measure": "fid"}).measure
        == parse_behaviors({"measure": [{"name": "fid"}]}).measure
    )


@pytest.mark.parametrize(
    "table, message",
    [
        ({"measure": ["fid", "fid"]}, "behavior 'fid' is listed twice"),
        ({"measure": ["fdi"]}, "behaviors.measure[0].name: unknown behavior 'fdi' (did you mean"),
        ({"measure": []}, "behaviors.measure: name at least one behavior"),
        ({"measure": [{"name": "precision", "kk": 3}]}, "measure[0].kk: unknown setting 'kk'"),
        ({"measure": [{"name": "is", "splits": 0}]}, "behaviors.measure[0].splits"),
        ({"features": "clp"}, "behaviors.features.name: unknown feature space 'clp'"),
        ({"features": {"name": "clip"}}, "behaviors.features.path: Field required"),
        ({"batch": 3}, "unknown setting 'batch' (did you mean 'batch_size'?)"),
        ({"measure": [{"name": "aesthetic-p90"}]}, "measure[0].head: Field required"),
    ],
)
def test_bad_tables_are_one_line_errors(table, message):
    with pytest.raises(DiffattrError) as e:
        parse_behaviors(table)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_same_behavior_in_two_spaces_is_allowed():
    s = parse_behaviors({"measure": ["fid", {"name": "fid", "features": "autoencoder"}]})
    assert suite_keys(s, "digits", False) == ["fid[digits-cnn]", "fid[autoencoder]"]
    with pytest.raises(DiffattrError, match="fid.autoencoder. is measured twice"):
        check_settings(
            parse_behaviors({"features": "autoencoder", "measure": s.to_dict()["measure"]}),
            "folder",
            False,
        )


@pytest.mark.parametrize(
    "dataset, labels, space",
    [
        ("digits", False, "digits-cnn"),
        ("fashion-mnist", False, "fashion-mnist-cnn"),
        ("cifar10", False, "cifar10-cnn"),
        ("cifar20", False, "cifar20-cnn"),
        ("folder", True, "label-cnn"),
        ("folder", False, "autoencoder"),
    ],
)
def test_auto_picks_a_space_independent_of_the_contributors(dataset, labels, space):
    s = parse_behaviors({"measure": ["fid"]})
    assert suite_keys(s, dataset, labels) == [f"fid[{space}]"]


def test_folder_without_labels_is_never_a_classifier_of_its_contributors():
    resolved = resolve_features(FEATURES.get("auto")(), "folder", False)
    assert isinstance(resolved, AutoencoderFeatures) and not resolved.has_probs
    # Every space auto can pick for a folder is either label-free or the label column's.
    assert {resolve_features(FEATURES.get("auto")(), "folder", x).name for x in (0, 1)} == {
        "autoencoder",
        "label-cnn",
    }


def test_probabilities_in_a_label_free_space_fail_at_validation():
    # the default list follows the space; asking for IS explicitly is an error
    check_settings(parse_behaviors(None), "folder", False)
    with pytest.raises(DiffattrError) as e:
        check_settings(parse_behaviors({"measure": ["fid", "is"]}), "folder", False)
    msg = str(e.value)
    assert "behaviors.measure[1]: is needs class probabilities" in msg
    assert "'autoencoder'" in msg and "label-cnn" in msg and "inception" in msg
    with pytest.raises(DiffattrError, match="class-entropy needs class probabilities"):
        check_settings(
            parse_behaviors({"features": "autoencoder", "measure": ["class-entropy"]}),
            "digits",
            False,
        )
    check_settings(parse_behaviors({"measure": ["fid", "precision"]}), "folder", False)


def test_missing_files_and_labels_fail_at_validation(tmp_path):
    cases = [
        ({"features": "label-cnn"}, "folder", "add a 'label' column"),
        ({"features": {"name": "inception", "path": str(tmp_path / "x.pth")}}, "digits", "found"),
        ({"features": {"name": "clip", "path": str(tmp_path / "clip")}}, "digits", "not found"),
        ({"features": "cifar-cnn"}, "folder", "needs features.variant"),
        ({"features": {"name": "cifar-cnn", "variant": "cifar10"}}, "digits", "features.path"),
        ({"reference": str(tmp_path / "curated")}, "digits", "behaviors.reference"),
        (
            {"measure": [{"name": "aesthetic-p90", "head": "/nowhere/h.pth"}]},
            "digits",
            "is defined on clip image embeddings",
        ),
    ]
    for table, dataset, message in cases:
        with pytest.raises(DiffattrError, match=message):
            check_settings(parse_behaviors(table), dataset, False)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    with pytest.raises(DiffattrError, match="aesthetic head not found"):
        check_settings(
            parse_behaviors(
                {
                    "features": {"name": "clip", "path": str(tmp_path / "clip")},
                    "measure": [{"name": "aesthetic-p90", "head": "/nowhere/h.pth"}],
                }
            ),
            "folder",
            False,
        )


def test_behavior_classes_say_which_way_is_better():
    assert not BEHAVIORS.get("fid").higher_is_better
    assert BEHAVIORS.get("aesthetic-p90").higher_is_better
    assert BEHAVIORS.get("is").needs_probs and not BEHAVIORS.get("diversity-entropy").needs_probs


def test_settings_import_without_torch():
    code = (
        "import sys; import diffattr.behaviors; from diffattr.behaviors.settings import "
        "parse_behaviors; from diffattr.behaviors.resolve import check_settings; "
        "check_settings(parse_behaviors(None), 'digits', False);"
        " assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
