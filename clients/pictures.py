"""Pictures of incidents for people who would rather look than read: a map over the border
data (PNG, and a self-contained HTML page with inline SVG that works offline) and a chart
of incidents per week by reporting party and category (PNG).

On the map, colour is the reporting party, the marker shape is the category, and the
status shows in the fill and a ring around the marker (STATUS_STYLES): each derived status
looks different, and the legend names each one drawn. Polygons and observation sectors are
drawn whole, lines from origin to impact; the marker sits at the point, the observer, the
impact or the polygon's inside point. The
incident is shown as it stands (as last amended). Every picture states that the border
data implies no position on any frontier, and the checkpoint it was read under.

The functions take rows (`TimelineResponse`), the checkpoint and the border data; none of
them talks to a server. Matplotlib draws on its Agg canvas (a Figure, never pyplot): no
display is needed. A PNG carries the disclaimer in its metadata (Description) as well.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import shapely
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from clients.describe import enum_name
from clients.exports import Checkpoint, disclaimer, geometry
from geo.borders import BorderDataset
from ledger import geofacts, incidents
from ledger.clock import to_us

__all__ = [
    "CATEGORY_MARKERS",
    "HOLLOW_STATUSES",
    "PARTY_COLOURS",
    "STATUS_STYLES",
    "Incident",
    "StatusStyle",
    "category_colour",
    "chart_png",
    "incidents_of",
    "map_figure",
    "map_html",
    "map_png",
    "party_colours",
    "weekly_counts",
]

# Strong colours for the parties, in order; the territories are pale greys, so a pixel of
# one of these is an incident.
PARTY_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
TERRITORY_FILLS = ("#f0f0f0", "#d5d5d5", "#e6e2da", "#d9dfe6")
BORDER_COLOUR = "#444444"
# Matplotlib marker per category; map_html draws the same shapes.
CATEGORY_MARKERS = {
    "small_arms_fire": "o",
    "sniper": "^",
    "mortar_or_artillery": "s",
    "rocket": "D",
    "drone_strike": "*",
    "airspace_violation": "v",
    "engineering_works": "p",
    "troop_movement": ">",
    "detention": "h",
    "property_damage": "P",
    "other": "X",
    "unspecified": "X",
}
RING_BLACK = "#000000"
RING_GOLD = "#d4a000"  # a joint finding's colour: in no party's and on no territory


@dataclass(frozen=True)
class StatusStyle:
    """How a derived status is drawn: every status differs from every other in at least
    one of these, so none looks like a standing report (issue 14: "status visible")."""

    hollow: bool  # the marker's outline only: one party's account is contested or void
    ring: str | None  # a ring around the marker: the incident's process has moved on
    ring_dashed: bool  # the process is open or ended without an answer
    crossed: bool
    label: str


STATUS_STYLES: dict[str, StatusStyle] = {
    "reported": StatusStyle(False, None, False, False, "filled: reported"),
    "acknowledged": StatusStyle(False, RING_BLACK, False, False, "black ring: acknowledged"),
    "disputed": StatusStyle(True, None, False, False, "hollow: disputed"),
    "retracted": StatusStyle(True, None, False, True, "hollow, crossed: retracted"),
    "under_investigation": StatusStyle(
        False, RING_BLACK, True, False, "dashed black ring: under investigation"
    ),
    "jointly_confirmed": StatusStyle(
        False, RING_GOLD, False, False, "gold ring: jointly confirmed"
    ),
    "jointly_not_confirmed": StatusStyle(
        True, RING_GOLD, False, False, "hollow, gold ring: jointly not confirmed"
    ),
    "inconclusive": StatusStyle(False, RING_GOLD, True, False, "dashed gold ring: inconclusive"),
}
HOLLOW_STATUSES = frozenset(s for s, style in STATUS_STYLES.items() if style.hollow)
CATEGORY_COLOURS = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295",
)  # fmt: skip
_MIN_PAD_DEG = 0.15


@dataclass(frozen=True)
class Incident:
    """What a picture shows of one row."""

    index: int
    party: str
    category: str
    status: str
    start: datetime
    end: datetime
    blamed: str
    side: str
    shape: shapely.Geometry  # lon/lat
    marker_at: tuple[float, float]  # lon, lat

    @property
    def style(self) -> StatusStyle:
        return STATUS_STYLES.get(self.status, STATUS_STYLES["reported"])

    @property
    def hollow(self) -> bool:
        return self.style.hollow

    def title(self) -> str:
        blamed = f", blames {self.blamed}" if self.blamed else ""
        return (
            f"#{self.index} {self.party} {self.category.replace('_', ' ')} ({self.status}){blamed}"
            f"; {self.start:%Y-%m-%d %H:%M}-{self.end:%Y-%m-%d %H:%M} UTC; side: {self.side}"
        )


def _time(ts: Any) -> datetime:
    return datetime.fromtimestamp(to_us(ts) / 1_000_000, UTC)


def incidents_of(rows: Iterable[api.TimelineResponse]) -> list[Incident]:
    out = []
    for t in rows:
        rep = t.current.report
        geom = geometry(rep.location)
        if geom is None:
            continue
        shape = shapely.geometry.shape(geom)
        kind = rep.location.WhichOneof("geometry")
        if kind == "line":
            at = (rep.location.line.impact.longitude, rep.location.line.impact.latitude)
        elif kind == "polygon":
            p = shape.representative_point()
            at = (float(p.x), float(p.y))
        else:
            lat, lon = geofacts.anchor(rep)
            at = (lon, lat)
        out.append(
            Incident(
                index=t.index,
                party=rep.reporting_party,
                category=enum_name(pb.IncidentCategory, rep.category, "INCIDENT_CATEGORY_"),
                status=incidents.status_name(t.status),
                start=_time(rep.window.start),
                end=_time(rep.window.end),
                blamed=rep.alleged_responsible_party,
                side=geofacts.side(t.current.geo),
                shape=shape,
                marker_at=at,
            )
        )
    return out


def party_colours(items: Sequence[Incident], borders: BorderDataset) -> dict[str, str]:
    """The border data's parties first, in its order, then any other reporter by code."""
    codes = list(borders.parties) + sorted({i.party for i in items} - set(borders.parties))
    return {c: PARTY_COLOURS[n % len(PARTY_COLOURS)] for n, c in enumerate(codes)}


def _extent(items: Sequence[Incident], borders: BorderDataset) -> tuple[float, ...]:
    """(min lon, min lat, max lon, max lat): the incidents with a margin, or the whole
    data set when there are none."""
    if not items:
        parts, _ = borders.territory_parts()
        return tuple(float(v) for v in shapely.union_all(parts).bounds)
    x0, y0, x1, y1 = (float(v) for v in shapely.union_all([i.shape for i in items]).bounds)
    pad = max(_MIN_PAD_DEG, 0.15 * max(x1 - x0, y1 - y0))
    return (x0 - pad, y0 - pad, x1 + pad, y1 + pad)


def _territories(
    borders: BorderDataset, box: tuple[float, ...]
) -> list[tuple[str, shapely.Geometry]]:
    parts, owners = borders.territory_parts()
    out = []
    for code in borders.parties:
        mine = shapely.union_all([p for p, o in zip(parts, owners, strict=True) if o == code])
        out.append((code, shapely.clip_by_rect(mine, *box)))
    return out


def _border(borders: BorderDataset, box: tuple[float, ...]) -> shapely.Geometry:
    (_, a), (_, b) = _territories(borders, (-180.0, -90.0, 180.0, 90.0))[:2]
    return shapely.clip_by_rect(shapely.intersection(a.boundary, b.boundary), *box)


def _footer(borders: BorderDataset, checkpoint: Checkpoint) -> str:
    return (
        f"{disclaimer(borders)} Read under checkpoint {checkpoint.origin}, size "
        f"{checkpoint.size}, root {checkpoint.root_hex[:16]}..."
    )


def _png_metadata(title: str, borders: BorderDataset, checkpoint: Checkpoint) -> dict[str, str]:
    return {
        "Title": title,
        "Description": _footer(borders, checkpoint),
        "Source": f"Ceasefire Ledger {checkpoint.origin}, checkpoint size {checkpoint.size}",
    }


def _polygons(geom: shapely.Geometry) -> list[shapely.Polygon]:
    return [g for g in shapely.get_parts(geom) if isinstance(g, shapely.Polygon)]


def map_png(
    out: Path | Any,
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    title: str = "Incidents",
    dpi: int = 100,
) -> dict[str, Any]:
    """Draws the map to `out` (a path or a binary file); returns what it drew."""
    fig, drawn = map_figure(rows, checkpoint, borders, title=title, dpi=dpi)
    fig.savefig(out, format="png", dpi=dpi, metadata=_png_metadata(title, borders, checkpoint))
    return drawn


def map_figure(
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    title: str = "Incidents",
    dpi: int = 100,
) -> tuple[Figure, dict[str, Any]]:
    """The map as a Figure on an Agg canvas, and what it drew. An incident's marker is the
    artist with gid "incident-<index>", its status ring "ring-<index>", a retraction's
    cross "crossed-<index>"."""
    items = incidents_of(rows)
    colours = party_colours(items, borders)
    box = _extent(items, borders)
    fig = Figure(figsize=(8.0, 7.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.17, 0.68, 0.76))
    for n, (code, land) in enumerate(_territories(borders, box)):
        for poly in _polygons(land):
            x, y = poly.exterior.xy
            ax.fill(x, y, color=TERRITORY_FILLS[n % len(TERRITORY_FILLS)], zorder=1, lw=0)
        if not land.is_empty:
            p = land.representative_point()
            ax.text(p.x, p.y, borders.party_names.get(code, code), color="#888888",
                    fontsize=11, ha="center", va="center", zorder=2, style="italic")  # fmt: skip
    for line in shapely.get_parts(_border(borders, box)):
        if isinstance(line, shapely.LineString):
            x, y = line.xy
            ax.plot(x, y, color=BORDER_COLOUR, lw=1.0, ls="--", zorder=3)
    for i in items:
        colour = colours[i.party]
        if isinstance(i.shape, shapely.Polygon):
            x, y = i.shape.exterior.xy
            ax.fill(x, y, color=colour, alpha=0.15, zorder=4, lw=0)
            ax.plot(x, y, color=colour, lw=1.2, zorder=4, ls=":" if i.hollow else "-")
        elif isinstance(i.shape, shapely.LineString):
            (x0, y0), (x1, y1) = i.shape.coords[0], i.shape.coords[-1]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=4,
                        arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5})  # fmt: skip
        x, y = i.marker_at
        style = i.style
        if style.ring:
            ax.scatter([x], [y], s=330, marker="o", facecolors="none", edgecolors=style.ring,
                       linewidths=1.8, linestyles=(0, (2.0, 2.0)) if style.ring_dashed else "-",
                       zorder=5, gid=f"ring-{i.index}")  # fmt: skip
        ax.scatter([x], [y], s=90, marker=CATEGORY_MARKERS.get(i.category, "X"),
                   facecolors="none" if style.hollow else colour, edgecolors=colour,
                   linewidths=2.0, zorder=6, gid=f"incident-{i.index}")  # fmt: skip
        if style.crossed:
            ax.scatter([x], [y], s=40, marker="x", color="black", linewidths=1.0, zorder=7,
                       gid=f"crossed-{i.index}")  # fmt: skip
        if len(items) <= 20:  # beyond, the labels hide the markers
            ax.annotate(f"#{i.index}", (x, y), xytext=(6, 5), textcoords="offset points",
                        fontsize=7, color="#333333", zorder=8)  # fmt: skip
    x0, y0, x1, y1 = box
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect(1.0 / math.cos(math.radians((y0 + y1) / 2)))
    ax.set_xlabel("longitude (°E, WGS84)", fontsize=8)
    ax.set_ylabel("latitude (°N)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{title}: {len(items)} (colour: reporting party, shape: category)", fontsize=10)
    _map_legend(fig, items, colours)
    fig.text(0.02, 0.02, "\n".join(textwrap.wrap(_footer(borders, checkpoint), 140)),
             fontsize=6.5, va="bottom", color="#222222")  # fmt: skip
    return fig, {
        "incidents": len(items),
        "parties": {p: colours[p] for p in sorted({i.party for i in items})},
        "extent": list(box),
    }


def _map_legend(fig: Figure, items: Sequence[Incident], colours: dict[str, str]) -> None:
    handles: list[Any] = []
    for party in sorted({i.party for i in items}):
        handles.append(Line2D([], [], color=colours[party], lw=6, label=f"{party} report"))
    for category in sorted({i.category for i in items}):
        handles.append(Line2D([], [], ls="", marker=CATEGORY_MARKERS.get(category, "X"),
                              color="#555555", label=category.replace("_", " ")))  # fmt: skip
    for status in _statuses_in(items):  # each status drawn, as it is drawn
        handles.append(_StatusKey(STATUS_STYLES[status]))
    handles.append(Line2D([], [], color=BORDER_COLOUR, ls="--", label="border data (no position)"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.75, 0.93), fontsize=7,
               frameon=False, handler_map={_StatusKey: _StatusKeyHandler()},
               labels=[h.style.label if isinstance(h, _StatusKey) else h.get_label()
                       for h in handles])  # fmt: skip


def _statuses_in(items: Sequence[Incident]) -> list[str]:
    present = {i.status if i.status in STATUS_STYLES else "reported" for i in items}
    return [s for s in STATUS_STYLES if s in present]


class _StatusKey:
    """A legend entry drawn as the map draws the status: a ring, a marker, a cross."""

    def __init__(self, style: StatusStyle) -> None:
        self.style = style


class _StatusKeyHandler:
    def legend_artist(self, legend: Any, orig: _StatusKey, fontsize: float, box: Any) -> Any:
        x = box.width / 2 - box.xdescent  # as matplotlib's own handlers place a marker
        y = box.height / 2 - box.ydescent
        style, tr = orig.style, box.get_transform()
        out = []
        if style.ring:
            out.append(Line2D([x], [y], ls="", marker="o", ms=13, mfc="none", mec=style.ring,
                              mew=1.5, transform=tr))  # fmt: skip
        out.append(Line2D([x], [y], ls="", marker="o", ms=6, mec="#555555", mew=2,
                          mfc="none" if style.hollow else "#555555", transform=tr))  # fmt: skip
        if style.crossed:
            out.append(Line2D([x], [y], ls="", marker="x", ms=5, color="black", transform=tr))
        for artist in out:
            box.add_artist(artist)
        return out[0]


# ---------------------------------------------------------------------------------------------
# HTML: one page, inline SVG, no script, no external reference

_SVG_WIDTH = 800.0  # at most, in SVG pixels
_SVG_HEIGHT = 700.0


class _Projection:
    """Equirectangular, scaled by the cosine of the middle latitude, in SVG pixels."""

    def __init__(self, box: tuple[float, ...]) -> None:
        x0, y0, x1, y1 = box
        self.x0, self.y1 = x0, y1
        self.k = math.cos(math.radians((y0 + y1) / 2))
        self.scale = min(_SVG_WIDTH / ((x1 - x0) * self.k), _SVG_HEIGHT / (y1 - y0))
        self.width = (x1 - x0) * self.k * self.scale
        self.height = (y1 - y0) * self.scale

    def __call__(self, lon: float, lat: float) -> tuple[float, float]:
        return (lon - self.x0) * self.k * self.scale, (self.y1 - lat) * self.scale

    def path(self, coords: Iterable[Any], close: bool) -> str:
        pts = [self(float(c[0]), float(c[1])) for c in coords]
        d = "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        return d + ("Z" if close else "")

    def polygon_path(self, geom: shapely.Geometry) -> str:
        d = []
        for poly in _polygons(geom):
            d.append(self.path(poly.exterior.coords, True))
            d.extend(self.path(r.coords, True) for r in poly.interiors)
        return "".join(d)


def _star(n: int, r_out: float, r_in: float, turn: float = 0.0) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = r_out if k % 2 == 0 else r_in
        a = math.pi * k / n + turn
        pts.append((r * math.sin(a), -r * math.cos(a)))
    return pts


def _regular(n: int, r: float, turn: float = 0.0) -> list[tuple[float, float]]:
    return [
        (r * math.sin(2 * math.pi * k / n + turn), -r * math.cos(2 * math.pi * k / n + turn))
        for k in range(n)
    ]


def _cross(r: float, turn: float) -> list[tuple[float, float]]:
    w = r / 3
    pts = [(w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r),
           (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w), (-w, -r)]  # fmt: skip
    c, s = math.cos(turn), math.sin(turn)
    return [(x * c - y * s, x * s + y * c) for x, y in pts]


_SVG_SHAPES: dict[str, list[tuple[float, float]]] = {
    "^": _regular(3, 8),
    "v": _regular(3, 8, math.pi),
    ">": _regular(3, 8, math.pi / 2),
    "s": _regular(4, 8, math.pi / 4),
    "D": _regular(4, 8),
    "p": _regular(5, 7.5),
    "h": _regular(6, 7.5),
    "*": _star(5, 9, 4),
    "P": _cross(7.5, 0.0),
    "X": _cross(7.5, math.pi / 4),
}


def _svg_marker(marker: str, x: float, y: float, style: str) -> str:
    if marker == "o":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6.5" {style}/>'
    pts = " ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in _SVG_SHAPES[marker])
    return f'<polygon points="{pts}" {style}/>'


def map_html(
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    title: str = "Incidents",
) -> str:
    """A self-contained page: the map as inline SVG (each incident a `<g class="incident">`
    with a `<title>` tooltip), a legend and a table; no script, no external reference."""
    items = incidents_of(rows)
    colours = party_colours(items, borders)
    box = _extent(items, borders)
    proj = _Projection(box)
    tolerance = 0.5 / proj.scale  # half a pixel: the page shows the data at its own scale
    svg = [
        f'<svg class="map" viewBox="0 0 {proj.width:.0f} {proj.height:.0f}" '
        f'width="{proj.width:.0f}" height="{proj.height:.0f}" role="img" '
        f'aria-label="{html.escape(title)}">',
        '<rect width="100%" height="100%" fill="#f8fbff"/>',
    ]
    for n, (code, land) in enumerate(_territories(borders, box)):
        d = proj.polygon_path(shapely.simplify(land, tolerance))
        if d:
            name = html.escape(borders.party_names.get(code, code))
            fill = TERRITORY_FILLS[n % len(TERRITORY_FILLS)]
            svg.append(
                f'<path class="territory" d="{d}" fill="{fill}" fill-rule="evenodd">'
                f"<title>{name} (border data: no position on any frontier)</title></path>"
            )
            p = land.representative_point()
            x, y = proj(p.x, p.y)
            svg.append(f'<text x="{x:.1f}" y="{y:.1f}" class="land">{name}</text>')
    for line in shapely.get_parts(_border(borders, box)):
        if isinstance(line, shapely.LineString):
            d = proj.path(shapely.simplify(line, tolerance).coords, False)
            svg.append(f'<path class="border" d="{d}"/>')
    for i in items:
        colour = colours[i.party]
        parts = [
            f'<g class="incident" data-index="{i.index}" data-party="{html.escape(i.party)}" '
            f'data-category="{i.category}" data-status="{i.status}">',
            f"<title>{html.escape(i.title())}</title>",
        ]
        dash = ' stroke-dasharray="3,2"' if i.hollow else ""
        if isinstance(i.shape, shapely.Polygon):
            d = proj.path(i.shape.exterior.coords, True)
            parts.append(f'<path d="{d}" fill="{colour}" fill-opacity="0.15" '
                         f'stroke="{colour}" stroke-width="1.2"{dash}/>')  # fmt: skip
        elif isinstance(i.shape, shapely.LineString):
            d = proj.path(i.shape.coords, False)
            parts.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>')
        x, y = proj(*i.marker_at)
        if i.style.ring:
            parts.append(_svg_ring(i.style, x, y))
        fill = "none" if i.hollow else colour
        style = f'fill="{fill}" stroke="{colour}" stroke-width="2"'
        parts.append(_svg_marker(CATEGORY_MARKERS.get(i.category, "X"), x, y, style))
        if i.style.crossed:
            parts.append(
                f'<path class="cross" d="M{x - 4:.1f},{y - 4:.1f}l8,8m0,-8l-8,8" stroke="#000"/>'
            )
        parts.append(f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" class="label">#{i.index}</text>')
        parts.append("</g>")
        svg.append("".join(parts))
    svg.append("</svg>")
    footer = html.escape(_footer(borders, checkpoint))
    return _PAGE.format(
        title=html.escape(title),
        count=len(items),
        svg="\n".join(svg),
        legend=_html_legend(items, colours),
        table=_html_table(items),
        footer=footer,
        signed_note=html.escape(checkpoint.signed_note),
    )


def _svg_ring(style: StatusStyle, x: float, y: float, r: float = 11.0) -> str:
    dash = ' stroke-dasharray="4,4"' if style.ring_dashed else ""
    return (
        f'<circle class="ring" cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="none" '
        f'stroke="{style.ring}" stroke-width="1.8"{dash}/>'
    )


def _legend_swatch(marker: str, colour: str, hollow: bool = False) -> str:
    fill = "none" if hollow else colour
    shape = _svg_marker(marker, 10, 10, f'fill="{fill}" stroke="{colour}" stroke-width="2"')
    return f'<svg class="swatch" width="20" height="20" viewBox="0 0 20 20">{shape}</svg>'


def _status_swatch(style: StatusStyle) -> str:
    ring = _svg_ring(style, 12, 12, 10) if style.ring else ""
    fill = "none" if style.hollow else "#555555"
    shape = _svg_marker("o", 12, 12, f'fill="{fill}" stroke="#555555" stroke-width="2"')
    cross = '<path d="M8,8l8,8m0,-8l-8,8" stroke="#000"/>' if style.crossed else ""
    return (
        f'<svg class="swatch" width="24" height="24" viewBox="0 0 24 24">{ring}{shape}{cross}</svg>'
    )


def _html_legend(items: Sequence[Incident], colours: dict[str, str]) -> str:
    rows = [
        f"<li>{_legend_swatch('o', colours[p])} {html.escape(p)} report</li>"
        for p in sorted({i.party for i in items})
    ]
    rows += [
        f"<li>{_legend_swatch(CATEGORY_MARKERS.get(c, 'X'), '#555555')} {c.replace('_', ' ')}</li>"
        for c in sorted({i.category for i in items})
    ]
    rows += [
        f'<li data-status="{s}">{_status_swatch(STATUS_STYLES[s])} {STATUS_STYLES[s].label}</li>'
        for s in _statuses_in(items)
    ]
    rows.append('<li><span class="dash"></span> border data (no position on any frontier)</li>')
    return "\n".join(rows)


def _html_table(items: Sequence[Incident]) -> str:
    out = []
    for i in items:
        cells = (
            f"#{i.index}", i.party, i.category.replace("_", " "), i.status,
            f"{i.start:%Y-%m-%d %H:%M}", i.blamed, i.side,
        )  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "\n".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; color: #222; }}
.map {{ border: 1px solid #bbb; max-width: 100%; height: auto; }}
.map .border {{ fill: none; stroke: #444; stroke-width: 1; stroke-dasharray: 6,3; }}
.map .land {{ fill: #888; font-style: italic; font-size: 14px; text-anchor: middle; }}
.map .label {{ fill: #333; font-size: 10px; }}
.map .incident:hover {{ opacity: 0.7; }}
.legend {{ list-style: none; padding: 0; columns: 2; font-size: 0.9em; }}
.legend li {{ display: flex; align-items: center; gap: 0.4em; }}
.dash {{ display: inline-block; width: 20px; border-top: 2px dashed #444; }}
.disclaimer {{ font-weight: bold; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
pre {{ font-size: 0.8em; background: #f4f4f4; padding: 0.5em; }}
</style>
</head>
<body>
<h1>{title}: {count}</h1>
<p class="disclaimer">{footer}</p>
{svg}
<ul class="legend">
{legend}
</ul>
<table>
<tr><th>entry</th><th>party</th><th>category</th><th>status</th><th>start (UTC)</th>
<th>blames</th><th>side</th></tr>
{table}
</table>
<p>Hover over an incident for its entry, party, category, status and time. Colour: the
reporting party; shape: the category. The signed checkpoint these incidents were read under:</p>
<pre>{signed_note}</pre>
</body>
</html>
"""


# ---------------------------------------------------------------------------------------------
# Chart


def category_colour(category: str) -> str:
    """A fixed colour per category, so that charts of different queries compare."""
    n = list(CATEGORY_MARKERS).index(category) if category in CATEGORY_MARKERS else -1
    return CATEGORY_COLOURS[n % len(CATEGORY_COLOURS)]


def week_of(moment: datetime) -> date:
    """The Monday (UTC) of the week holding `moment`."""
    d = moment.date()
    return d - timedelta(days=d.weekday())


def weekly_counts(rows: Iterable[api.TimelineResponse]) -> Counter[tuple[date, str, str]]:
    """Incidents per (week of the window's start, reporting party, category)."""
    return Counter((week_of(i.start), i.party, i.category) for i in incidents_of(rows))


def chart_png(
    out: Path | Any,
    rows: Sequence[api.TimelineResponse],
    checkpoint: Checkpoint,
    borders: BorderDataset,
    *,
    title: str = "Incidents per week",
    dpi: int = 100,
) -> dict[str, Any]:
    """Stacked bars per week (Monday, UTC, of the incident's start): one panel per
    reporting party, a colour per category. Returns the counts drawn."""
    counts = weekly_counts(rows)
    parties = sorted({p for _, p, _ in counts}) or list(borders.parties)
    categories = sorted({c for _, _, c in counts})
    weeks: list[date] = []
    if counts:
        first, last = min(w for w, _, _ in counts), max(w for w, _, _ in counts)
        weeks = [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]
    fig = Figure(figsize=(8.0, 1.2 + 2.2 * len(parties)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(parties), 1, sharex=True, squeeze=False)[:, 0]
    top = max((sum(counts[(w, p, c)] for c in categories) for w in weeks for p in parties),
              default=1)  # fmt: skip
    for ax, party in zip(axes, parties, strict=True):
        bottom = [0] * len(weeks)
        for category in categories:
            heights = [counts[(w, party, category)] for w in weeks]
            ax.bar(range(len(weeks)), heights, bottom=bottom, width=0.8,
                   color=category_colour(category),
                   label=category.replace("_", " "))  # fmt: skip
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_ylabel(f"{party} reports", fontsize=8)
        ax.set_ylim(0, top + 0.5)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.tick_params(labelsize=7)
    axes[-1].set_xticks(range(len(weeks)), [f"{w:%d %b %Y}" for w in weeks], rotation=45,
                        ha="right")  # fmt: skip
    axes[-1].set_xlabel("week starting (Monday, UTC, of the incident's start)", fontsize=8)
    axes[0].set_title(f"{title} by reporting party and category", fontsize=10)
    if categories:
        axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.78, bottom=0.22 if len(parties) < 3 else 0.15)
    fig.text(0.02, 0.01, "\n".join(textwrap.wrap(_footer(borders, checkpoint), 150)),
             fontsize=6, va="bottom")  # fmt: skip
    fig.savefig(out, format="png", dpi=dpi, metadata=_png_metadata(title, borders, checkpoint))
    return {
        "incidents": sum(counts.values()),
        "weeks": [w.isoformat() for w in weeks],
        "counts": [
            {"week": w.isoformat(), "party": p, "category": c, "incidents": n}
            for (w, p, c), n in sorted(counts.items())
        ],
    }
