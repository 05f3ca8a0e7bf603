"""Timeline queries: the filters of a TimelineRequest checked and normalized, the place
filters' geometry, and the page token.

Every filter applies to the report as first logged (its own entry's statement and geo
facts): those rows are written once, with the entry, so a report never moves between pages
when it is amended. The status alone is derived, as of the query's snapshot.

A page token carries the query's snapshot (the tree size its first page was judged at, or
its as_of_index), the last sort key it returned, and a digest of the filters: the next page
continues after that key in the same snapshot, so entries appended meanwhile never shift,
repeat or skip a page; another query's token is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

from geo.geodesic import wgs84
from ledger.clock import MAX_US, MIN_US, to_us
from ledger.errors import InvalidArgument, shown
from ledger.geofacts import DISTANCE_TOLERANCE_M

if TYPE_CHECKING:  # the border geometry is loaded by a query near it, not by an import
    from geo.borders import BorderDataset

# Most reports' windows are at most a day (an hour, a day's date): the incident-time filter
# searches those by their start, and the longer ones apart (storage._overlapping).
SHORT_WINDOW_US = 86_400 * 1_000_000
# Bounds of the filters a request may give.
MAX_RADIUS_M = 500_000.0
MAX_TEXT_CHARS = 200
MAX_CODE_CHARS = 64
# The sides a place can be recorded on besides a party's territory (geofacts.side).
NEITHER = "neither"
AMBIGUOUS = "ambiguous"

# Metres per degree, at their least: of latitude (at the equator, on the WGS84 meridian),
# and of longitude at the equator (the semi-major axis). A box of these degrees around a
# circle holds it.
_MIN_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_319.0
_SLACK = 1.001


@dataclass(frozen=True)
class Box:
    """Degrees, edges included; min <= max."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float

    def holds(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon

    def meet(self, other: Box) -> Box | None:
        """The part two boxes share; None when they share nothing."""
        box = Box(
            max(self.min_lat, other.min_lat),
            max(self.min_lon, other.min_lon),
            min(self.max_lat, other.max_lat),
            min(self.max_lon, other.max_lon),
        )
        return box if box.min_lat <= box.max_lat and box.min_lon <= box.max_lon else None


@dataclass(frozen=True)
class Near:
    """Within `within_m` geodesic metres (WGS84) of a point."""

    lat: float
    lon: float
    within_m: float

    def box(self) -> Box:
        """A box holding every place within the distance: no geodesic of length r moves
        further than r / 110,574 m in latitude, nor, below latitude phi, further than
        r / (111,319 m * cos phi) in longitude. Near a pole or the antimeridian, all
        longitudes."""
        dlat = self.within_m / _MIN_M_PER_DEG_LAT * _SLACK + 1e-9
        lat0, lat1 = max(self.lat - dlat, -90.0), min(self.lat + dlat, 90.0)
        top = max(abs(lat0), abs(lat1))
        if top >= 89.0:
            return Box(lat0, -180.0, lat1, 180.0)
        dlon = self.within_m / (_M_PER_DEG_LON_EQUATOR * math.cos(math.radians(top)))
        dlon = dlon * _SLACK + 1e-9
        if self.lon - dlon < -180.0 or self.lon + dlon > 180.0:
            return Box(lat0, -180.0, lat1, 180.0)
        return Box(lat0, self.lon - dlon, lat1, self.lon + dlon)

    def distances_m(self, points: Sequence[tuple[float, float]]) -> list[float]:
        """Geodesic metres from the centre to each (lat, lon)."""
        if not points:
            return []
        n = len(points)
        _, _, metres = wgs84().inv(
            [self.lon] * n, [self.lat] * n, [p[1] for p in points], [p[0] for p in points]
        )
        return [float(m) for m in metres]


@dataclass(frozen=True)
class Query:
    """A Timeline request's filters, checked and normalized (codes upper case, text case
    folded, each value once, sorted). `incidents` is filled in by the service from the
    investigation request named (None: no such filter)."""

    since_us: int | None = None
    until_us: int | None = None
    logged_since_us: int | None = None
    logged_until_us: int | None = None
    parties: tuple[str, ...] = ()
    categories: tuple[int, ...] = ()
    statuses: tuple[int, ...] = ()
    blamed: tuple[str, ...] = ()
    box: Box | None = None
    near: Near | None = None
    border_within_m: float | None = None
    segment: str = ""
    sides: tuple[str, ...] = ()
    text: str = ""
    investigation_index: int = 0
    collapse_duplicates: bool = False
    by_index: bool = False
    as_of_index: int = 0
    incidents: tuple[int, ...] | None = None

    @property
    def place(self) -> Box | None:
        """The box the places must lie in (the box given, met with the near circle's);
        None when no place filter is given. An empty meet is an empty box."""
        if self.near is None:
            return self.box
        box = self.near.box()
        if self.box is not None:
            return self.box.meet(box) or Box(1.0, 1.0, 0.0, 0.0)
        return box

    def digest(self) -> bytes:
        """What a page token must have been made for: every filter, the order and the
        snapshot asked for (not the limit, which each page may choose)."""
        key = (
            self.since_us, self.until_us, self.logged_since_us, self.logged_until_us,
            self.parties, self.categories, self.statuses, self.blamed, self.box, self.near,
            self.border_within_m, self.segment, self.sides, self.text,
            self.investigation_index, self.collapse_duplicates, self.by_index,
            self.as_of_index,
        )  # fmt: skip
        return hashlib.sha256(repr(key).encode()).digest()[:8]


# -- distance to the border, or to one of its segments -----------------------------------


def _to_segment_m(ds: BorderDataset, lat: float, lon: float, segment: str) -> float:
    """Geodesic metres from (lat, lon) to the border's edges, or to those of one segment:
    the data set's own branch and bound (BorderDataset._nearest, which searches every
    edge for the nearest segment), over that segment's edges only."""
    import numpy as np

    lower = ds._lower_bounds(lat, lon)
    if segment:
        lower = np.where(ds._seg_feature == ds.segments.index(segment), lower, np.inf)
    best = math.inf
    for edge in np.argsort(lower):
        if lower[edge] >= best:
            break
        best = min(best, ds._refine_edge(lat, lon, int(edge), float(lower[edge]))[0])
    return best


_EDGES: dict[tuple[str, str], Any] = {}


def _edges(ds: BorderDataset, segment: str) -> Any:
    """The border's edges (or one segment's), as one prepared shapely geometry in
    longitude and latitude: the straight lon/lat edges BorderDataset measures along."""
    key = (ds.sha256, segment)
    if key not in _EDGES:
        import numpy as np
        import shapely

        keep = np.ones(len(ds._seg_feature), dtype=bool)
        if segment:
            keep = ds._seg_feature == ds.segments.index(segment)
        lines = [
            shapely.LineString(list(zip(lons, lats, strict=True)))
            for lons, lats in zip(ds._seg_lon[keep], ds._seg_lat[keep], strict=True)
        ]
        edges = shapely.MultiLineString(lines)
        shapely.prepare(edges)
        _EDGES[key] = edges
    return _EDGES[key]


def place_to_border_m(
    ds: BorderDataset, report: pb.IncidentReport, geo: log_pb2.GeoFacts, segment: str
) -> float:
    """How far a report's place (as first logged) lies from the border, or from one of its
    segments, in geodesic metres rounded to 0.1 m as geo facts record them: a point, or an
    observation's observer, its own distance; a line the nearer of its ends, 0 where it
    crosses that border (its recorded crossings); a polygon 0 when it meets that border,
    else its nearest vertex. For a point or an observer nearest the segment asked for,
    this is the distance its geo facts record."""
    loc = report.location
    kind = loc.WhichOneof("geometry")
    if kind == "polygon":
        import shapely

        ring = [(p.longitude, p.latitude) for p in loc.polygon.points]
        if shapely.intersects(_edges(ds, segment), shapely.Polygon(ring)):
            return 0.0
        points = [(p.latitude, p.longitude) for p in loc.polygon.points]
    elif kind == "line":
        for c in geo.line.crossings:  # on the border, to the recorded 1e-7 degree
            if _to_segment_m(ds, c.latitude, c.longitude, segment) <= DISTANCE_TOLERANCE_M:
                return 0.0
        points = [
            (loc.line.origin.latitude, loc.line.origin.longitude),
            (loc.line.impact.latitude, loc.line.impact.longitude),
        ]
    elif kind == "observation":
        points = [(loc.observation.observer.latitude, loc.observation.observer.longitude)]
    else:
        points = [(loc.point.latitude, loc.point.longitude)]
    return round(min(_to_segment_m(ds, lat, lon, segment) for lat, lon in points), 1)


def _time(request: api.TimelineRequest, field: str) -> int | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    us = to_us(getattr(request, field))
    if not MIN_US <= us <= MAX_US:
        raise InvalidArgument("must be from year 1 to 9999 (UTC)", field=field)
    return us


def _window(since: int | None, until: int | None, since_field: str) -> None:
    if since is not None and until is not None and since > until:
        raise InvalidArgument(f"{since_field} is after its until", field=since_field)


def _codes(values: Sequence[str], known: Collection[str], field: str) -> tuple[str, ...]:
    """Party codes in any case, upper-cased; an unknown one refused, naming it."""
    found = set()
    for i, value in enumerate(values):
        code = value[: MAX_CODE_CHARS + 1].upper()
        if code not in known:
            raise InvalidArgument(f"unknown party {shown(value)}", field=f"{field}[{i}]")
        found.add(code)
    return tuple(sorted(found))


def _enums(values: Sequence[int], enum: object, prefix: str, field: str) -> tuple[int, ...]:
    names = enum.keys()  # type: ignore[attr-defined]
    known = {enum.Value(n) for n in names if not n.endswith("_UNSPECIFIED")}  # type: ignore[attr-defined]
    for i, value in enumerate(values):
        if value not in known:
            shown_names = ", ".join(n.removeprefix(prefix).lower() for n in names[1:])
            raise InvalidArgument(
                f"unknown value {value}; one of {shown_names}", field=f"{field}[{i}]"
            )
    return tuple(sorted(set(values)))


def _degrees(value: float, limit: float, field: str) -> float:
    if not (math.isfinite(value) and -limit <= value <= limit):
        raise InvalidArgument(f"degrees from -{limit:g} to {limit:g}", field=field)
    return value


def _box(b: api.GeoBox) -> Box:
    box = Box(
        _degrees(b.min_latitude, 90, "box.min_latitude"),
        _degrees(b.min_longitude, 180, "box.min_longitude"),
        _degrees(b.max_latitude, 90, "box.max_latitude"),
        _degrees(b.max_longitude, 180, "box.max_longitude"),
    )
    if box.min_lat > box.max_lat:
        raise InvalidArgument("is above max_latitude", field="box.min_latitude")
    if box.min_lon > box.max_lon:
        raise InvalidArgument(
            "is east of max_longitude (a box across the antimeridian is two queries)",
            field="box.min_longitude",
        )
    return box


def _metres(value: float, field: str, *, zero: bool) -> float:
    low_ok = value >= 0 if zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= MAX_RADIUS_M):
        least = "from 0 to" if zero else "more than 0 and at most"
        raise InvalidArgument(f"metres, {least} {MAX_RADIUS_M:,.0f}", field=field)
    return value


def _sides(values: Sequence[str], parties: Collection[str]) -> tuple[str, ...]:
    found = set()
    for i, value in enumerate(values):
        code = value[: MAX_CODE_CHARS + 1].upper()
        if code in parties:
            found.add(code)
        elif code in (NEITHER.upper(), AMBIGUOUS.upper()):
            found.add(code.lower())
        else:
            raise InvalidArgument(
                f"unknown side {shown(value)}: a party code, {NEITHER} or {AMBIGUOUS}",
                field=f"sides[{i}]",
            )
    return tuple(sorted(found))


def parse(
    request: api.TimelineRequest, parties: Collection[str], segments: Collection[str]
) -> Query:
    """The request's filters, checked: INVALID_ARGUMENT naming the field for an unknown
    party, category, status, side or segment, and for a value out of bounds."""
    since, until = _time(request, "since"), _time(request, "until")
    _window(since, until, "since")
    logged_since, logged_until = _time(request, "logged_since"), _time(request, "logged_until")
    _window(logged_since, logged_until, "logged_since")
    near = None
    if request.HasField("near"):
        c = request.near.center
        near = Near(
            _degrees(c.latitude, 90, "near.center.latitude"),
            _degrees(c.longitude, 180, "near.center.longitude"),
            _metres(request.near.within_m, "near.within_m", zero=False),
        )
    border_within_m, segment = None, ""
    if request.HasField("near_border"):
        border_within_m = _metres(request.near_border.within_m, "near_border.within_m", zero=True)
        segment = request.near_border.segment
        if segment and segment not in segments:
            raise InvalidArgument(
                f"unknown segment {shown(segment)}; one of {', '.join(sorted(segments))}",
                field="near_border.segment",
            )
    if len(request.text) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            f"{len(request.text):,} characters; at most {MAX_TEXT_CHARS}", field="text"
        )
    if request.order not in api.TimelineOrder.values():
        raise InvalidArgument(f"unknown order {request.order}", field="order")
    return Query(
        since_us=since,
        until_us=until,
        logged_since_us=logged_since,
        logged_until_us=logged_until,
        parties=_codes(request.parties, parties, "parties"),
        categories=_enums(
            request.categories, pb.IncidentCategory, "INCIDENT_CATEGORY_", "categories"
        ),
        statuses=_enums(request.statuses, api.IncidentStatus, "INCIDENT_STATUS_", "statuses"),
        blamed=_codes(request.blamed_parties, parties, "blamed_parties"),
        box=_box(request.box) if request.HasField("box") else None,
        near=near,
        border_within_m=border_within_m,
        segment=segment,
        sides=_sides(request.sides, parties),
        text=request.text.casefold(),
        investigation_index=request.investigation_index,
        collapse_duplicates=request.collapse_duplicates,
        by_index=request.order == api.TIMELINE_ORDER_LOG_INDEX,
        as_of_index=request.as_of_index,
    )


# -- page tokens ---------------------------------------------------------------------------

_TOKEN = struct.Struct(">BBQqQ8s")  # version, order, snapshot, window start, index, digest
_TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 64


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the snapshot the query is judged at (entries before index
    `before`) and the last sort key returned (window start and index; by log index, only
    the index counts)."""

    before: int
    start_us: int
    index: int


def tokens(query: Query, cursors: Sequence[Cursor]) -> list[str]:
    """The page token of each cursor (the query's digest computed once: a page of 1,000
    incidents hashed it 1,000 times)."""
    digest, order = query.digest(), int(query.by_index)
    return [
        base64.urlsafe_b64encode(
            _TOKEN.pack(_TOKEN_VERSION, order, c.before, c.start_us, c.index, digest)
        )
        .rstrip(b"=")
        .decode()
        for c in cursors
    ]


def read_token(text: str, query: Query) -> Cursor:
    """The cursor a page token carries, if it was made for this query."""
    bad = InvalidArgument("not a page token of this query", field="page_token")
    if len(text) > MAX_TOKEN_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, order, before, start_us, index, digest = _TOKEN.unpack(raw)
    except (binascii.Error, ValueError, struct.error):
        raise bad from None
    if version != _TOKEN_VERSION or order != int(query.by_index) or digest != query.digest():
        raise bad
    if not MIN_US <= start_us <= MAX_US or index >= before:
        raise bad
    return Cursor(before, start_us, index)
