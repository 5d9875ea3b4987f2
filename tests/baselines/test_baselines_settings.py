"""Settings of the baselines: registry names, defaults, one-line errors, no torch import."""

import subprocess
import sys

import pytest

from diffattr.baselines.api import Baseline
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
from diffattr.config import RunConfig
from diffattr.errors import DiffattrError
from diffattr.estimators.settings import ESTIMATORS


def test_every_baseline_is_registered_in_its_own_registry():
    assert len(BASELINES.names()) == 11
    for name in BASELINES.names():
        cls = BASELINES.get(name)
        assert issubclass(cls, BaselineSettings)
        assert name not in ESTIMATORS  # not a coalition estimator
        assert BASELINES.defaults(name).name == name
        assert isinstance(BASELINES.defaults(name).build(), Baseline)
    assert Baseline(TrakSettings()).name == "trak"


def test_a_run_lists_estimators_and_baselines_and_splits_them_by_kind():
    cfg = RunConfig().with_overrides(
        **{"attribution.estimators": ["trak", "shapley", {"name": "pixel", "aggregation": "max"}]}
    )
    a = cfg.attribution
    assert [e.name for e in a.estimators] == ["trak", "shapley", "pixel-similarity"]
    assert [e.name for e in a.fitted] == ["shapley"]
    assert [e.name for e in a.baselines] == ["trak", "pixel-similarity"]
    assert a.where(a.baselines[1]) == "attribution.estimators[2]"
    with pytest.raises(DiffattrError, match="did you mean 'trak'") as err:
        RunConfig().with_overrides(**{"attribution.estimators": ["trakk"]})
    assert "\n" not in str(err.value)


def test_paper_defaults_and_aliases():
    trak = BASELINES.parse("trak")
    assert isinstance(trak, TrakSettings)
    assert (trak.aggregation, trak.regularization, trak.projection_dim) == ("sum", 0.5, 1024)
    assert isinstance(BASELINES.parse("dtrak"), DTrakSettings)
    assert DTrakSettings().train_output == DTrakSettings().gen_output == "squared-norm"
    journey = BASELINES.parse({"name": "journey", "journey_points": 5})
    assert isinstance(journey, JourneyTrakSettings)
    assert (journey.train_output, journey.gen_output) == ("loss", "loss")
    assert BASELINES.parse("pixel-similarity").aggregation == "mean"
    pixel_max = BASELINES.parse({"name": "pixel", "aggregation": "max"})
    assert pixel_max.label == "pixel-similarity[max]"
    heur = BASELINES.parse({"name": "heuristic", "chunk_size": 0})
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
        BASELINES.parse(table)
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
    assert BASELINES.get("feature-similarity").family == "similarity"
    assert PropertyHeuristicSettings.family == "heuristic"


def test_settings_import_no_torch():
    code = (
        "import sys, diffattr.baselines.settings, diffattr.baselines; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
