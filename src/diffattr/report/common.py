"""What every report section shares: HTML escaping and tables, number formatting, figures
and image files as inlined PNG data URIs, and each behavior's direction."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.behaviors.keys import BehaviorKey
from diffattr.errors import DiffattrError

#: 95 % normal interval half-width per standard error (the contributor table's "±").
Z95 = 1.96

PNG_PREFIX = "data:image/png;base64,"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def as_dict(x: Any) -> Any:
    """A dataclass with ``to_dict()`` (the evaluations' results) as its dict; dicts as given."""
    return x.to_dict() if hasattr(x, "to_dict") else x


def num(x: Any) -> float:
    """A JSON number (None for NaN, as ``to_dict`` writes it) as a float."""
    if x is None:
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers compactly (``n/a`` for NaN / None), everything else as text."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "n/a" if not math.isfinite(x) else f"{float(x):.{digits}g}"
    return str(x)


def fmt_interval(value: Any, stderr: Any) -> str:
    """``value ± 1.96 stderr``; ``value (interval not estimable)`` when the estimator could
    not determine a standard error (too few residual degrees of freedom, no replicates)."""
    v, s = num(value), num(stderr)
    if not math.isfinite(s):
        return f"{fmt(v)} (interval not estimable)"
    return f"{fmt(v)} ± {Z95 * s:.2g}"


def seconds(x: Any) -> str:
    s = num(x)
    if not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s:.0f} s ({s / 60:.1f} min)"
    return f"{s:.0f} s ({s / 3600:.2f} h)"


class Cell:
    """Table cell holding HTML made by the report (not escaped again), with a class."""

    def __init__(self, markup: str, cls: str | None = None) -> None:
        self.markup = markup
        self.cls = cls


def table(
    rows: Iterable[Sequence[Any]],
    header: Sequence[str] | None,
    cls: str | None = None,
    caption: str | None = None,
) -> str:
    """An HTML table; cells are escaped text (numbers via :func:`fmt`) or :class:`Cell`."""

    def cell(c: Any, tag: str) -> str:
        if isinstance(c, Cell):
            attr = f' class="{esc(c.cls)}"' if c.cls else ""
            return f"<{tag}{attr}>{c.markup}</{tag}>"
        numeric = isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
        attr = ' class="num"' if numeric else ""
        return f"<{tag}{attr}>{esc(fmt(c))}</{tag}>"

    head = "".join(f"<th>{esc(h)}</th>" for h in header or [])
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    c = f' class="{esc(cls)}"' if cls else ""
    return f"<table{c}>{cap}{head}<tbody>{body}</tbody></table>"


def figure(uri: str, caption: str, alt: str | None = None, cls: str | None = None) -> str:
    c = f' class="{esc(cls)}"' if cls else ""
    return (
        f'<figure{c}><img src="{uri}" alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def note(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def badge(text: str, cls: str) -> str:
    return f'<span class="badge {cls}">{esc(text)}</span>'


def file_png(path: Path) -> str:
    return PNG_PREFIX + base64.b64encode(Path(path).read_bytes()).decode()


def png_bytes_uri(data: bytes) -> str:
    return PNG_PREFIX + base64.b64encode(data).decode()


def axes(ax=None, figsize: tuple[float, float] = (4.2, 3.6)):
    """``(figure, axes)`` to draw on: ``ax``'s own when given (a notebook's subplot), else a
    new ``matplotlib.figure.Figure`` -- not pyplot's: no backend is chosen or switched and
    no global figure is left open, so the report works headless and the API's figures show
    in a notebook like any other (the figures of the report and of
    ``diffattr.results`` are drawn by the same functions)."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def fig_png(fig) -> str:
    """A figure as an inlined PNG (a pyplot figure is closed afterwards)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return png_bytes_uri(buf.getvalue())


def lower_is_better(behavior: str | None) -> bool:
    """Whether a smaller value of ``behavior`` (a ``name[space]`` key) is better."""

    if not behavior:
        return False
    try:
        return BehaviorKey.parse(behavior).lower_is_better
    except DiffattrError:
        return False


def best_first(values: Sequence[float], behavior: str | None) -> np.ndarray:
    """Player indices best first by ``behavior``'s direction (most negative first where
    lower is better); NaN values last; ties keep player order."""
    v = np.asarray([num(x) for x in values], dtype=float)
    key = v if lower_is_better(behavior) else -v
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")


def direction(behavior: str | None) -> str:
    return "lower is better" if lower_is_better(behavior) else "higher is better"
