"""``diffattr report``: a self-contained HTML report of a run (PNG plots inlined)."""

from __future__ import annotations

from diffattr.lazy import lazy_exports

_EXPORTS = {
    "write_report": "diffattr.report.html:write_report",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
