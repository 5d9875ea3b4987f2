"""``diffattr report``: a self-contained HTML report of a run (PNG plots inlined)."""

from diffattr.report.html import write_report

__all__ = ["write_report"]
