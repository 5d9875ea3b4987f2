"""Typed sampler settings: the registry, aliases, build(), one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from diffattr.coalitions import (
    SAMPLERS,
    AddOneInSampler,
    DatamodelSamplerSettings,
    LeverageSampler,
    ShapleyKernelSampler,
    ShapleyKernelSamplerSettings,
    UniformSampler,
    make_sampler,
)
from diffattr.errors import DiffattrError


def test_registry_names_aliases_and_defaults():
    assert SAMPLERS.names() == [
        "add-one-in",
        "datamodel",
        "leverage",
        "loo",
        "permutation",
        "shapley-kernel",
        "uniform",
    ]
    assert SAMPLERS.parse("banzhaf").name == "uniform"
    assert SAMPLERS.parse("aoi").name == "add-one-in"
    assert SAMPLERS.parse("shapley-kernel") == ShapleyKernelSamplerSettings(paired=True)
    assert SAMPLERS.parse({"name": "datamodel", "alpha": 0.25}).alpha == 0.25
    assert SAMPLERS.parse("leverage").to_dict() == {"name": "leverage", "balanced": True}


@pytest.mark.parametrize(
    ("value", "cls", "check"),
    [
        ("shapley-kernel", ShapleyKernelSampler, lambda s: s.paired),
        ({"name": "shapley-kernel", "paired": False}, ShapleyKernelSampler, lambda s: not s.paired),
        ("leverage", LeverageSampler, lambda s: s.paired and s.balanced),
        ({"name": "banzhaf", "p": 0.3}, UniformSampler, lambda s: s.p == 0.3),
        ("aoi", AddOneInSampler, lambda s: s.n_required == 7),
    ],
)
def test_build_gives_the_sampler_with_its_options(value, cls, check):
    sampler = SAMPLERS.parse(value).build(7, seed=3)
    assert type(sampler) is cls and sampler.seed == 3 and check(sampler)
    assert sampler.sample(4).shape == (4, 7)


def test_make_sampler_goes_through_the_registry():
    assert make_sampler("datamodel", 10, 0, alpha=0.3).size == 3
    z = make_sampler("shapley-kernel", 6, 1).sample(10)
    np.testing.assert_array_equal(z, ShapleyKernelSampler(6, 1, paired=True).sample(10))
    assert DatamodelSamplerSettings(alpha=0.57).build(100).size == 57


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "uniform", "alpha": 0.3}, "sampler 'uniform'.alpha: unknown setting 'alpha'"),
        ({"name": "uniform", "p": 1.0}, "sampler 'uniform'.p: Input should be less than 1"),
        ({"name": "datamodel", "alpha": 0.0}, "alpha: Input should be greater than 0"),
        ({"name": "nope"}, "unknown coalition sampler 'nope'.*choose one of: add-one-in"),
        ({"name": "shapley-kernel", "paired": "maybe"}, "paired: Input should be a valid boolean"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(DiffattrError, match=match) as err:
        make_sampler(name, 10, 0, **kwargs)
    assert "\n" not in str(err.value)


def test_datamodel_settings_that_keep_no_player_fail_at_build():
    settings = DatamodelSamplerSettings(alpha=0.05)
    with pytest.raises(DiffattrError, match="keeps floor"):
        settings.build(10)
