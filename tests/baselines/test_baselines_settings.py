"""Settings of the baselines: registry names, defaults, one-line errors, no torch import."""

import subprocess
import sys

import pytest

from diffattr.baselines.settings import (
    BASELINES,
    BaselineSettings,
    DTrakSettings,
    GradientSettings,
    JourneyTrakSettings,
    PropertyHeuristicSettings,
    TrakSettings,
    parse_baseline,
)
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS


def test_every_baseline_is_registered_without_coalitions():
    for name in BASELINES:
        cls = ESTIMATORS.get(name)
        assert issubclass(cls, BaselineSettings)
        assert cls.uses_coalitions is False
        assert cls.implementation == "diffattr.baselines.api:attribute"
        assert ESTIMATORS.defaults(name).name == name
    assert callable(TrakSettings.implementation_class())


def test_paper_defaults_and_aliases():
    trak = ESTIMATORS.parse("trak")
    assert isinstance(trak, TrakSettings)
    assert (trak.aggregation, trak.regularization, trak.projection_dim) == ("sum", 0.5, 1024)
    assert isinstance(ESTIMATORS.parse("dtrak"), DTrakSettings)
    assert DTrakSettings().train_output == DTrakSettings().gen_output == "squared-norm"
    journey = ESTIMATORS.parse({"name": "journey", "journey_points": 5})
    assert isinstance(journey, JourneyTrakSettings)
    assert (journey.train_output, journey.gen_output) == ("loss", "loss")
    assert ESTIMATORS.parse("pixel-similarity").aggregation == "mean"
    pixel_max = ESTIMATORS.parse({"name": "pixel", "aggregation": "max"})
    assert pixel_max.label == "pixel-similarity[max]"
    heur = ESTIMATORS.parse({"name": "heuristic", "chunk_size": 0})
    assert isinstance(heur, PropertyHeuristicSettings) and heur.chunk_size == 0


@pytest.mark.parametrize(
    "table, key",
    [
        ({"name": "trak", "projection_dim": 0}, "projection_dim"),
        ({"name": "d-trak", "projection_dim": -4}, "projection_dim"),
        ({"name": "trak", "aggregation": "median"}, "aggregation"),
        ({"name": "pixel-similarity", "aggregation": "avg"}, "aggregation"),
        ({"name": "trak", "timesteps": 0}, "timesteps"),
        ({"name": "trak", "regularization": -1.0}, "regularization"),
        ({"name": "trak", "projector": "fast"}, "projector"),
        ({"name": "journey-trak", "journey_points": 0}, "journey_points"),
        ({"name": "trak", "journey_points": 3}, "journey_points"),
        ({"name": "property-heuristic", "chunk_size": -1}, "chunk_size"),
    ],
)
def test_bad_settings_are_one_line_errors(table, key):
    with pytest.raises(DiffattrError) as err:
        ESTIMATORS.parse(table)
    msg = str(err.value)
    assert "\n" not in msg and key in msg
    with pytest.raises(DiffattrError) as err2:
        parse_baseline(table)
    assert "\n" not in str(err2.value)


def test_unknown_baseline_name_is_one_line():
    with pytest.raises(DiffattrError) as err:
        parse_baseline("trakk")
    assert "\n" not in str(err.value) and "trak" in str(err.value)


def test_label_and_family():
    assert TrakSettings().label == "trak[sum]"
    assert TrakSettings.family == "gradient" and issubclass(TrakSettings, GradientSettings)
    assert ESTIMATORS.get("feature-similarity").family == "similarity"
    assert PropertyHeuristicSettings.family == "heuristic"


def test_settings_import_no_torch():
    code = (
        "import sys, diffattr.baselines.settings, diffattr.baselines; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
