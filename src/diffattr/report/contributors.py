"""The contributor tables: one per attribution (estimator x behavior) of ``values.json``,
players best first by the behavior's direction, each with its value ± 1.96 standard errors
and a strip of its own training images; and a table of how each attribution was fitted
(identified or not, solver, rank, exact enumeration).

With more than :data:`FULL_LIST_MAX` players (e.g. thousands of per-image players) only the
top and bottom :data:`TOP_BOTTOM` rows are shown; ``values.csv`` holds them all.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.errors import DiffattrError
from diffattr.estimators.reliability import summary
from diffattr.report.common import (
    Z95,
    Cell,
    axes,
    badge,
    best_first,
    direction,
    esc,
    fmt,
    fmt_interval,
    lower_is_better,
    note,
    num,
    png_bytes_uri,
    table,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FULL_LIST_MAX = 100
TOP_BOTTOM = 20
IMAGES_PER_PLAYER = 5
THUMB_MIN, THUMB_MAX = 32, 48  # pixel height of a thumbnail


# ------------------------------------------------------------------------- fit flags


@dataclass(frozen=True)
class Flag:
    label: str
    cls: str  # 'warn' | 'exact' | 'info'
    why: str


def fit_flags(settings: dict[str, Any], n_players: int) -> list[Flag]:
    """What the reader must know about a fit, from the attribution's ``settings``:
    unidentified (``identified`` false, or a rank below the number of players), exact
    enumeration of every coalition (``exact_table``), a baseline scored without
    coalitions."""
    flags = []
    rank = settings.get("rank")
    identified = settings.get("identified")
    solver = settings.get("solver")
    if identified is False:
        how = ", ".join(
            f"{k} {v}" for k, v in (("rank", rank), ("solver", solver)) if v is not None
        )
        why = "the coalitions do not determine the values" + (f" ({how})" if how else "")
        flags.append(Flag("not identified", "warn", why))
    elif identified is None and rank is not None and int(rank) < n_players:
        flags.append(
            Flag(
                f"underdetermined (rank {rank} < {n_players})",
                "warn",
                "fewer independent coalitions than players; the regularisation picks the values",
            )
        )
    if settings.get("exact_table"):
        kind = settings.get("exact_value") or "exact"
        flags.append(
            Flag(
                f"exact {kind}",
                "exact",
                "the table holds every coalition: exact values of the table's game",
            )
        )
    elif settings.get("exact"):
        flags.append(Flag("exact", "exact", "the estimator's values are exact for its table"))
    if str(settings.get("method", "")).startswith("full model"):
        flags.append(Flag("no coalitions", "info", "a baseline scored on the full model"))
    return flags


def flag_html(flags: Iterable[Flag]) -> str:
    return " ".join(
        f'<span class="badge {f.cls}" title="{esc(f.why)}">{esc(f.label)}</span>' for f in flags
    )


def _fit_details(settings: dict[str, Any]) -> str:
    parts = []
    if settings.get("method"):
        parts.append(f"method {settings['method']}")
    rows, planned = settings.get("rows"), settings.get("subsets_planned")
    if rows is not None:
        parts.append(f"{rows} coalitions" + (f" of {planned} planned" if planned else ""))
    for key, label in (("solver", "solver"), ("rank", "rank"), ("stderr_method", "s.e.")):
        if settings.get(key) is not None:
            parts.append(f"{label} {settings[key]}")
    if settings.get("v1_source"):
        parts.append(f"v1 from {settings['v1_source']}")
    return "; ".join(parts)


# ------------------------------------------------------------------------- thumbnails


@dataclass
class Thumbnails:
    """Each player's strip of training images as a PNG data URI (players as named in
    ``values.json``); ``note`` says why some or all are missing."""

    uris: dict[str, str] = field(default_factory=dict)
    per_player: int = IMAGES_PER_PLAYER
    note: str | None = None


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    x = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5, 0, 255).round()
    return x.astype(np.uint8).transpose(0, 2, 3, 1)


def strip_png(images: np.ndarray) -> bytes:
    """Images (N, C, H, W) in [-1, 1] side by side as one PNG, each THUMB_MIN..THUMB_MAX px
    high (nearest-neighbour up, antialiased down)."""
    from PIL import Image

    canvas = strip_array(images)
    img = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def strip_array(images: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] side by side, (h, W, C) uint8 on white, each
    THUMB_MIN..THUMB_MAX px high."""
    from PIL import Image

    arr = _to_uint8(images)
    n, h, w, c = arr.shape
    if h < THUMB_MIN:
        s = math.ceil(THUMB_MIN / h)
        arr = arr.repeat(s, axis=1).repeat(s, axis=2)
    elif h > THUMB_MAX:
        size = (max(1, round(w * THUMB_MAX / h)), THUMB_MAX)
        tiles = [
            Image.fromarray(a[..., 0] if c == 1 else a).resize(size, Image.LANCZOS) for a in arr
        ]
        arr = np.stack([np.asarray(t).reshape(size[1], size[0], c) for t in tiles])
    n, h, w, c = arr.shape
    pad = 2
    canvas = np.full((h, n * w + (n - 1) * pad, c), 255, dtype=np.uint8)
    for i in range(n):
        canvas[:, i * (w + pad) : i * (w + pad) + w] = arr[i]
    return canvas


def pick(members: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` of a player's sample indices, spread evenly over them (deterministic)."""
    members = np.asarray(members)
    if len(members) <= k:
        return members
    return members[np.linspace(0, len(members) - 1, k).round().astype(int)]


def player_thumbnails(dataset, players, names: Iterable[str], k: int = IMAGES_PER_PLAYER):
    """Strips of ``names``' own training images (a ``diffattr.data`` dataset and players)."""
    index = {n: i for i, n in enumerate(players.names)}
    images = dataset.images
    uris, missing = {}, []
    for name in names:
        i = index.get(name)
        if i is None:
            missing.append(name)
            continue
        idx = pick(players.members[i], k)
        uris[name] = png_bytes_uri(strip_png(images[idx].detach().cpu().numpy()))
    out = Thumbnails(uris, k)
    if missing:
        out.note = (
            f"{len(missing)} player(s) of values.json are not players of the dataset as "
            f"loaded now (e.g. {missing[0]!r}); their images are not shown"
        )
    return out


def load_thumbnails(data_config: dict | None, names: Iterable[str]) -> Thumbnails:
    """Load the run's dataset (``diffattr.data.load_dataset(cfg.data)``, its players by
    ``cfg.data.players``) and make the strips of ``names``. A dataset that cannot be loaded
    any more (e.g. a moved folder) gives no strips and a note saying why."""
    if not data_config:
        return Thumbnails(note="values.json names no dataset; training images not shown")
    try:
        # torch loads only when thumbnails of the training images are shown
        from diffattr.data import Players, load_dataset
        from diffattr.data.settings import DATASETS

        settings = DATASETS.parse(data_config, "data")
        dataset = load_dataset(settings)
        players = Players.from_dataset(dataset, settings.players)
    except DiffattrError as e:
        return Thumbnails(note=f"training images not shown: {e}")
    return player_thumbnails(dataset, players, names)


# ------------------------------------------------------------------------- figures


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def values_figure(a: dict[str, Any], limit: int = 30, ax=None) -> Figure:
    """One attribution (``Attribution.to_dict()``) as horizontal bars, best first from the
    top, with 95 % intervals (± 1.96 s.e.) where the fit has standard errors; blue where the
    player helps the behavior, red where it hurts. With more than ``limit`` players the top
    and bottom ``limit // 2`` are drawn."""
    names, beh = a["names"], a.get("behavior")
    vals = np.array([num(x) for x in a["values"]], dtype=float)
    ses = np.array([num(x) for x in (a.get("stderr") or [None] * len(vals))], dtype=float)
    order = best_first(vals, beh).tolist()
    if len(order) > limit:
        half = max(1, limit // 2)
        order = order[:half] + [-1] + order[-half:]
    fig, ax = axes(ax, (5.2, 0.9 + 0.24 * len(order)))
    shown = [i for i in order if i >= 0]
    y = np.array([k for k, i in enumerate(order) if i >= 0], dtype=float)
    v, s = vals[shown], ses[shown]
    lower = lower_is_better(beh)
    colors = ["#4477aa" if (x < 0 if lower else x > 0) else "#ee6677" for x in v]
    err = np.where(np.isfinite(s), Z95 * s, 0.0) if np.isfinite(s).any() else None
    ax.barh(y, np.nan_to_num(v), xerr=err, color=colors, ecolor="#333", capsize=2, height=0.7)
    labels = {k: _short(names[i]) for k, i in enumerate(order) if i >= 0}
    labels.update(
        {k: f"… {len(names) - 2 * (limit // 2):,} more …" for k, i in enumerate(order) if i < 0}
    )
    ax.set_yticks(range(len(order)), [labels[k] for k in range(len(order))], fontsize=7)
    ax.set_ylim(len(order) - 0.5, -0.5)  # best at the top
    ax.axvline(0, color="k", lw=0.6)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"value{' ± 1.96 s.e.' if err is not None else ''}", fontsize=8)
    title = f"{a.get('estimator')} — {beh if beh is not None else 'value'}"
    ax.set_title(f"{title}\n({direction(beh)}; best first)", fontsize=9)
    return fig


def contributors_figure(a: dict[str, Any], dataset, players, k: int = 5, images: int = 6) -> Figure:
    """The training images of the top and bottom ``k`` players of one attribution, one row
    each (``images`` per player, spread over its data), labelled with rank and value."""
    from matplotlib.figure import Figure

    names, beh = a["names"], a.get("behavior")
    vals = [num(x) for x in a["values"]]
    ranked = best_first(vals, beh).tolist()
    rows = ranked if len(ranked) <= 2 * k else ranked[:k] + ranked[-k:]
    index = {n: i for i, n in enumerate(players.names)}
    fig = Figure(figsize=(1.0 + 0.75 * images, 0.2 + 0.8 * len(rows)), layout="constrained")
    grid = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, i in zip(grid, rows):
        rank = ranked.index(i) + 1
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_ylabel(
            f"#{rank} {_short(names[i], 18)}\n{fmt(vals[i])}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=7,
        )
        j = index.get(names[i])
        if j is None:
            ax.text(0.5, 0.5, "not a player of the data", ha="center", va="center", fontsize=7)
            continue
        idx = pick(players.members[j], images)
        strip = strip_array(dataset.images[idx].detach().cpu().numpy())
        if strip.shape[-1] == 1:
            ax.imshow(strip[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(strip, interpolation="nearest")
    title = f"{a.get('estimator')} — {beh}: top and bottom players ({direction(beh)})"
    fig.suptitle(title, fontsize=9)
    return fig


# ------------------------------------------------------------------------- tables


def shown_rows(values: list[Any], behavior: str | None) -> list[tuple[int, int] | None]:
    """(rank, player index) to list, best first; None marks the gap when only the top and
    bottom :data:`TOP_BOTTOM` of more than :data:`FULL_LIST_MAX` players are shown."""
    ranked = list(enumerate(best_first(values, behavior).tolist(), start=1))
    if len(ranked) <= FULL_LIST_MAX:
        return ranked
    return ranked[:TOP_BOTTOM] + [None] + ranked[-TOP_BOTTOM:]


def shown_players(attributions: list[dict]) -> list[str]:
    """Every player that some contributor table lists (their thumbnails are needed)."""
    seen: dict[str, None] = {}
    for a in attributions:
        for row in shown_rows(a["values"], a.get("behavior")):
            if row is not None:
                seen.setdefault(a["names"][row[1]], None)
    return list(seen)


def _bar(v: float, scale: float, lower_better: bool) -> Cell:
    """The value as a bar right (positive) or left (negative) of the middle, blue where it
    helps the behavior and red where it hurts."""
    if not math.isfinite(v) or scale <= 0:
        return Cell("")
    width = 50.0 * min(1.0, abs(v) / scale)
    side = "pos" if v >= 0 else "neg"
    helps = (v < 0) if lower_better else (v > 0)
    kind = "good" if helps else "bad"
    return Cell(f'<span class="bar {side} {kind}" style="width:{width:.1f}%"></span>', "barcell")


def render_attribution(
    a: dict[str, Any],
    thumbnails: Thumbnails | None = None,
    v0: dict | None = None,
    v1: dict | None = None,
) -> str:
    """One attribution (``Attribution.to_dict()``): caption with its fit flags, then
    rank, player, training images, value ± 1.96 s.e. and a bar, best first."""
    names, beh = a["names"], a.get("behavior")
    vals = [num(x) for x in a["values"]]
    ses = [num(x) for x in (a.get("stderr") or [None] * len(vals))]
    if not (len(names) == len(vals) == len(ses)):
        raise DiffattrError(
            f"attribution {a.get('estimator')}/{beh} has {len(names)} names, {len(vals)} "
            f"values and {len(ses)} standard errors"
        )
    settings = a.get("settings") or {}
    flags = fit_flags(settings, len(names))
    finite = [abs(v) for v in vals if math.isfinite(v)]
    scale = max(finite) if finite else 0.0
    rows = []
    for row in shown_rows(vals, beh):
        if row is None:
            hidden = len(names) - 2 * TOP_BOTTOM
            gap = f"… {hidden:,} players between, not shown (every value is in values.csv) …"
            rows.append([Cell(esc(gap), "gap")])
            continue
        rank, i = row
        uri = thumbnails.uris.get(names[i]) if thumbnails else None
        img = (
            Cell(f'<img class="thumb" src="{uri}" alt="training images of {esc(names[i])}">')
            if uri
            else Cell("—")
        )
        rows.append(
            [
                rank,
                Cell(esc(names[i]), "player"),
                img,
                Cell(esc(fmt_interval(vals[i], ses[i])), "num value"),
                _bar(vals[i], scale, lower_is_better(beh)),
            ]
        )
    header = ["rank", "player", "training images", f"value ± {Z95} s.e.", ""]
    body = table(rows, header, cls="contrib")
    # a gap row spans the whole table
    body = body.replace('<td class="gap">', f'<td class="gap" colspan="{len(header)}">')
    total = sum(v for v in vals if math.isfinite(v))
    sums = f"sum of values {fmt(total)}"
    if v0 and v1 and beh in v0 and beh in v1:
        sums += f"; v1 − v0 = {fmt(num(v1[beh]) - num(v0[beh]))}"
    title = f"{a.get('estimator')} — {beh if beh is not None else 'value'}"
    return (
        f'<div class="attribution" data-estimator="{esc(a.get("estimator"))}" '
        f'data-behavior="{esc(beh)}">'
        f"<h3>{esc(title)} <small>({esc(direction(beh))}; best first)</small> "
        f"{flag_html(flags)}</h3>"
        f'<p class="details">{esc(_fit_details(settings))}; {esc(sums)}</p>{body}</div>'
    )


def render_fits(attributions: list[dict[str, Any]]) -> str:
    """Every attribution's fit in one table: rows used, solver, rank, identified, exact."""
    rows = []
    for a in attributions:
        s = a.get("settings") or {}
        flags = fit_flags(s, len(a["names"]))
        rows.append(
            [
                a.get("estimator"),
                a.get("behavior") or "value",
                s.get("rows", s.get("rows_used")),
                s.get("solver") or "—",
                s.get("rank") if s.get("rank") is not None else "—",
                Cell(
                    flag_html(flags) or (badge("identified", "ok") if s.get("identified") else "—")
                ),
                s.get("stderr_method") or "—",
                reliability_cell(s.get("reliability")),
            ]
        )
    return table(
        rows,
        [
            "estimator",
            "behavior",
            "coalitions",
            "solver",
            "rank",
            "fit",
            "standard error",
            "reliability",
        ],
    )


def reliability_cell(rel: dict[str, Any] | None) -> Any:
    """The fit's reliability signals, flagged when one is below its threshold."""
    if not rel:
        return "—"
    text = esc(summary(rel))
    if rel.get("below"):
        return Cell(text + " " + badge("unreliable", "warn"))
    return Cell(text)


def render_contributors(values: dict[str, Any], thumbnails: Thumbnails | None = None) -> str:
    """The contributor section of a ``values.json`` payload."""
    atts = values["attributions"]
    n = len(atts[0]["names"])
    parts = ["<h2>Contributors</h2>"]
    intro = (
        f'{n:,} players. Values with a 95 % interval of ± {Z95} standard errors ("not estimable" '
        "where the fit's rows cannot determine one), best first by each behavior's direction; "
        "bars blue where the "
        "player helps the behavior, red where it hurts"
    )
    if thumbnails is not None and thumbnails.uris:
        intro += f"; beside each player up to {thumbnails.per_player} of its training images"
    parts.append(f"<p>{esc(intro)}.</p>")
    if n > FULL_LIST_MAX:
        parts.append(note(f"Only the top and bottom {TOP_BOTTOM} of each ranking are listed here."))
    if thumbnails is not None and thumbnails.note:
        parts.append(note(thumbnails.note))
    parts.append("<h3>Fits</h3>" + render_fits(atts))
    v0, v1 = values.get("v0"), values.get("v1")
    for a in atts:
        parts.append(render_attribution(a, thumbnails, v0, v1))
    return "".join(parts)
