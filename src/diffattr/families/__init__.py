"""Model families: one interface (``ModelFamily``) per kind of diffusion model.

``[family] name = ...`` picks one; ``diffattr.families.settings`` holds the typed settings
(pydantic only). See ``diffattr.families.base`` for the seam.
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "ModelFamily": "diffattr.families.base:ModelFamily",
    "ModelState": "diffattr.families.base:ModelState",
    "TrainingSet": "diffattr.families.base:TrainingSet",
    "FAMILIES": "diffattr.families.settings:FAMILIES",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
