"""Running the method: the ``Run`` object and its phases, jobs, executors and status.

``Run(config, run_dir)`` exposes the method's phases — prepare (full and null models, the
method's shared state, reference jobs), plan (coalitions -> jobs), execute (executor ->
store), table (store -> coalition table), estimate (table -> attributions) — each returning
a typed result; ``Run.attribute()`` is ``diffattr run``.
"""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "Run": "diffattr.runner.run:Run",
    "RunSummary": "diffattr.runner.run:RunSummary",
    "run_attribution": "diffattr.runner.run:run_attribution",
    "write_values": "diffattr.runner.values:write_values",
    "read_values": "diffattr.runner.values:read_values",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
