"""Typed settings of the behaviors (the ``[behaviors]`` table of a run); pydantic only.

``measure`` lists the global behaviors F to attribute; each is computed in the feature
space ``features`` (``auto``: the dataset's offline classifier) against the training data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from diffattr.settings import Settings

BEHAVIOR_NAMES = (
    "fid",
    "is",
    "precision",
    "recall",
    "density",
    "coverage",
    "class-entropy",
    "cluster-entropy",
)


class BehaviorsSettings(Settings):
    features: Literal["auto"] = Field(
        "auto", description="feature space of every behavior (auto: the dataset's classifier)"
    )
    measure: list[str] = Field(
        default_factory=lambda: ["fid", "is"],
        min_length=1,
        description=f"global behaviors F: {' | '.join(BEHAVIOR_NAMES)}",
    )

    @field_validator("measure")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in BEHAVIOR_NAMES:
                raise ValueError(
                    f"unknown behavior {name!r}; choose one of: {', '.join(BEHAVIOR_NAMES)}"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"behaviors repeat: {v}")
        return v
