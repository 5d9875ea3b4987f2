"""diffattr: credit the training data of diffusion models with sparsified unlearning.

The Python API (``diffattr.api``, ``diffattr.results``) is loaded on first use, so
``import diffattr`` imports neither torch nor diffusers::

    import diffattr

    run = diffattr.Run.create("runs/digits", preset="quick")
    values = run.attribute()
    values.to_pandas()
"""

import os
from typing import TYPE_CHECKING

from diffattr.lazy import lazy_exports

# diffusers and huggingface_hub must never reach a hub: everything is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

__version__ = "0.1.0"

_EXPORTS = {
    "Run": "diffattr.api:Run",
    "JobProgress": "diffattr.api:JobProgress",
    "open_run": "diffattr.api:open_run",
    "estimate": "diffattr.api:estimate",
    "Attributions": "diffattr.results:Attributions",
    "RunResults": "diffattr.results:RunResults",
    "LDSResults": "diffattr.results:LDSResults",
    "CurveResults": "diffattr.results:CurveResults",
    "CounterfactualResults": "diffattr.results:CounterfactualResults",
    "DiffattrError": "diffattr.errors:DiffattrError",
    "DiffattrWarning": "diffattr.errors:DiffattrWarning",
}

if TYPE_CHECKING:  # what type checkers and IDEs see; the imports happen on first access
    from diffattr.api import JobProgress, Run, estimate, open_run
    from diffattr.errors import DiffattrError, DiffattrWarning
    from diffattr.results import (
        Attributions,
        CounterfactualResults,
        CurveResults,
        LDSResults,
        RunResults,
    )

__all__ = [
    "Attributions",
    "CounterfactualResults",
    "CurveResults",
    "DiffattrError",
    "DiffattrWarning",
    "JobProgress",
    "LDSResults",
    "Run",
    "RunResults",
    "estimate",
    "open_run",
]
assert sorted(__all__) == sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
