"""Typed settings of the model families (the ``[family]`` table of a run); pydantic only.

A model family says what kind of diffusion model is attributed and owns everything that
differs between kinds (see ``diffattr.families.base.ModelFamily``): how the base model is
built or loaded, which parameters train, how examples are encoded, how samples are drawn,
how the model is pruned and saved.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from diffattr.diffusion.architectures import UNET_ARCHITECTURES
from diffattr.settings import Component, ComponentRegistry

Architecture = Literal[tuple(UNET_ARCHITECTURES)]  # type: ignore[valid-type]


class FamilySettings(Component):
    kind: ClassVar[str] = "model family"

    def build(self, device: str = "cpu"):
        """The family object (``ModelFamily``) for these settings."""
        return self.implementation_class()(self, device)


FAMILIES: ComponentRegistry[FamilySettings] = ComponentRegistry("model family", FamilySettings)


@FAMILIES.register
class UnconditionalSettings(FamilySettings):
    """A pixel-space ``UNet2DModel`` trained from scratch by the package (DDPM, Ho et al.)."""

    name: Literal["unconditional"] = "unconditional"
    implementation: ClassVar[str] = "diffattr.families.unconditional:UnconditionalFamily"
    architecture: Architecture = Field(
        "tiny", description=f"UNet2DModel layout: {' | '.join(UNET_ARCHITECTURES)}"
    )
    seed: int = Field(0, description="initialisation seed (also the null model's weights)")


def parse_family(value: Any, where: str = "family") -> FamilySettings:
    return FAMILIES.parse(value, where)


def family_of(model_dir, device: str = "cpu"):
    """The family (object) recorded in a model directory's ``diffattr.json``; a model with
    no record is a pixel-space UNet (``unconditional``)."""
    from diffattr.diffusion.checkpoint import read_meta

    recorded = (read_meta(model_dir).get("config") or {}).get("family") or "unconditional"
    return FAMILIES.parse(recorded, f"{model_dir}/diffattr.json: family").build(device)
