"""Validate the place an incident report gives (point, observation sector, polygon or line).

Every function takes a loaded ``BorderDataset`` and WGS84 degrees in (lat, lon) order, checks
the input and returns a frozen fact record citing ``dataset_sha256``; bad input raises
``GeoError`` whose ``field`` names the offending request field (``location.point.latitude``,
``location.polygon.points[3]``, ``location.observation.bearing_from_deg``, ...).

- ``point_facts(ds, lat, lon, uncertainty_m) -> PlaceFacts``: territory, geodesic distance to
  the border, and which sides the uncertainty circle touches. ``sides`` holds party codes and
  ``OUTSIDE`` (land or sea in neither territory); ``ambiguous`` is True when it holds more than
  one side, and then no side is chosen.
- ``observation_facts(ds, lat, lon, bearing_from_deg, bearing_to_deg, distance_min_m,
  distance_max_m) -> ObservationFacts``: the observer as a ``PlaceFacts`` and the sector the
  fire came from as an ``AreaFacts``.
- ``polygon_facts(ds, ring) -> AreaFacts``: geodesic area and the share of it on each side.
- ``line_facts(ds, origin, impact) -> LineFacts``: both ends as ``PlaceFacts``, geodesic length
  and azimuth, and each border crossing in order from the origin.

Conventions, as in ``geo.borders``: an edge between two given vertices is the straight line in
lon/lat (RFC 7946), except that built geometry (circles, sectors, fire lines) is densified along
the ellipsoid first, so it follows geodesics to well under a metre. Lengths and areas are
geodesic on the WGS84 ellipsoid (pyproj ``Geod``); nothing is measured in degrees.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod

from geo.borders import BorderDataset, GeoError, one_at_a_time

__all__ = [
    "MAX_DISTANCE_M",
    "MAX_UNCERTAINTY_M",
    "OUTSIDE",
    "AreaFacts",
    "Crossing",
    "LineFacts",
    "ObservationFacts",
    "PlaceFacts",
    "Share",
    "line_facts",
    "observation_facts",
    "point_facts",
    "polygon_facts",
]

OUTSIDE = "outside"  # the side for land or sea in neither territory
MAX_UNCERTAINTY_M = 100_000.0
MAX_DISTANCE_M = 100_000.0

FIELD_POINT = "location.point"
FIELD_POLYGON = "location.polygon"
FIELD_LINE = "location.line"
FIELD_OBSERVATION = "location.observation"

_GEOD = Geod(ellps="WGS84")
_SAGITTA_M = 0.5  # built arcs are polygons whose chords stay this close to the true arc
_ARC_STEP_MAX_DEG = 1.0
_LINE_STEP_M = 100.0  # a fire line gets a vertex on the geodesic at least this often
_AREA_STEP_DEG = 0.001  # ~100 m; area pieces are densified so geodesic edges match lon/lat ones
_MIN_RING_POINTS = 3
_DISTANCE_TOL_M = 0.001  # locate() pins the distance to the border to about 1 mm
_SLIVER_REL, _SLIVER_M2 = 1e-8, 0.01  # overlay pieces below both are float noise
_SAME_CUT_DEG = 1e-12  # cuts this close along a line are one (about 0.1 um)


class Share(NamedTuple):
    """Part of an area on one side: a party code or ``OUTSIDE``."""

    side: str
    share: float  # of the area; the shares of one AreaFacts sum to 1
    area_m2: float  # geodesic


class Crossing(NamedTuple):
    """One place where a line passes from one party's territory into the other's."""

    lat: float
    lon: float
    distance_from_origin_m: float  # geodesic
    from_territory: str
    into_territory: str


@dataclass(frozen=True)
class PlaceFacts:
    """A point and its uncertainty circle."""

    dataset_sha256: str
    lat: float
    lon: float
    territory: str | None  # party whose interior holds the point (None: outside, or on a line)
    distance_to_border_m: float  # geodesic, to the shared border
    nearest_segment: str
    nearest_border_point: tuple[float, float]  # (lat, lon)
    uncertainty_m: float
    sides: tuple[str, ...]  # sides the circle touches: parties in dataset order, then OUTSIDE
    ambiguous: bool  # len(sides) > 1: the place cannot be given to one side

    @property
    def parties(self) -> tuple[str, ...]:
        """The parties whose territory the uncertainty circle touches."""
        return tuple(s for s in self.sides if s != OUTSIDE)


@dataclass(frozen=True)
class AreaFacts:
    """A polygon and how its area splits between the sides."""

    dataset_sha256: str
    ring: tuple[tuple[float, float], ...]  # (lat, lon), closed: the polygon actually measured
    area_m2: float  # geodesic
    shares: tuple[Share, ...]  # one per party in dataset order, then OUTSIDE; zeros included
    sides: tuple[str, ...]  # the sides with a positive share
    ambiguous: bool  # len(sides) > 1

    def share(self, side: str) -> float:
        return next(s.share for s in self.shares if s.side == side)


@dataclass(frozen=True)
class ObservationFacts:
    """An observer and the sector (bearing range x distance range) the fire was placed in."""

    dataset_sha256: str
    observer: PlaceFacts  # uncertainty 0
    sector: AreaFacts


@dataclass(frozen=True)
class LineFacts:
    """A line from the origin of fire to the point of impact."""

    dataset_sha256: str
    origin: PlaceFacts  # uncertainty 0
    impact: PlaceFacts
    length_m: float  # geodesic
    azimuth_deg: float  # at the origin, clockwise from true north, in [0, 360)
    crossings: tuple[Crossing, ...]  # in order from the origin
    crosses_from: str | None  # side before the first crossing; None when nothing is crossed
    crosses_into: str | None  # side after the last crossing

    @property
    def crosses_border(self) -> bool:
        return bool(self.crossings)


@dataclass(frozen=True, eq=False)
class _Index:
    """Per data set geometry that the checks share, built once."""

    parts: NDArray[Any]  # prepared polygon parts
    part_side: NDArray[np.intp]  # index into parties, per part
    tree: Any  # STRtree over parts
    union: Any  # prepared union of the territories
    boundary: Any  # prepared boundary of every part: the border plus the outer boundaries


@functools.lru_cache(maxsize=8)
def _index(ds: BorderDataset) -> _Index:
    parts, part_party = ds.territory_parts()
    union = shapely.union_all(parts)
    boundary = shapely.union_all(shapely.boundary(parts))
    shapely.prepare(union)
    shapely.prepare(boundary)
    return _Index(
        parts=parts,
        part_side=np.array([ds.parties.index(p) for p in part_party], dtype=np.intp),
        tree=shapely.STRtree(parts),
        union=union,
        boundary=boundary,
    )


# ---------------------------------------------------------------------------------------------
# Points


@one_at_a_time
def point_facts(ds: BorderDataset, lat: float, lon: float, uncertainty_m: float) -> PlaceFacts:
    """Territory, distance to the border and the sides within ``uncertainty_m`` of the point.

    The circle is built in an azimuthal-equidistant projection centred on the point, where it
    is exactly the geodesic circle, then taken back to lon/lat. Its polygon is inscribed (chords
    within 0.5 m of the arc), so near the border the exact rule decides: a circle touches both
    parties whenever ``uncertainty_m >= distance_to_border_m`` (to the distance's 1 mm). A
    point on a boundary touches the territories on both sides of it.
    """
    lat, lon = _coordinates(ds, lat, lon, FIELD_POINT)
    radius = _number(uncertainty_m, f"{FIELD_POINT}.uncertainty_m")
    if radius < 0 or radius > MAX_UNCERTAINTY_M:
        raise GeoError(
            f"{radius:g} m is outside [0, {MAX_UNCERTAINTY_M:,.0f}] m",
            field=f"{FIELD_POINT}.uncertainty_m",
        )
    return _place(ds, lat, lon, radius)


def _place(ds: BorderDataset, lat: float, lon: float, radius: float) -> PlaceFacts:
    facts = ds.locate(lat, lon)
    index = _index(ds)
    # Closed parts: a point on a boundary touches both sides of it.
    on = np.flatnonzero(shapely.intersects_xy(index.parts, lon, lat))
    touched = set(index.part_side[on].tolist())
    outside = not touched
    if radius > 0 and not (len(on) == 1 and _surely_within(index.parts[on[0]], lat, lon, radius)):
        if radius + _DISTANCE_TOL_M >= facts.distance_to_border_m:
            # The circle crosses the border: it touches every party, whatever parts it
            # meets, and leaves their land only if a box around it is not inside it.
            touched.update(range(len(ds.parties)))
            if not outside and not _surely_within(index.union, lat, lon, radius):
                outside = not index.union.covers(_circle(lat, lon, radius))
        else:
            circle = _circle(lat, lon, radius)
            touched.update(index.part_side[index.tree.query(circle, predicate="intersects")])
            outside = outside or not index.union.covers(circle)
    sides = tuple(ds.parties[i] for i in sorted(touched)) + ((OUTSIDE,) if outside else ())
    return PlaceFacts(
        dataset_sha256=ds.sha256,
        lat=lat,
        lon=lon,
        territory=facts.territory,
        distance_to_border_m=facts.distance_to_border_m,
        nearest_segment=facts.nearest_segment,
        nearest_border_point=facts.nearest_border_point,
        uncertainty_m=radius,
        sides=sides,
        ambiguous=len(sides) > 1,
    )


def _surely_within(part: Any, lat: float, lon: float, radius: float) -> bool:
    """Whether the circle of `radius` metres around the place lies in the interior of
    `part`, shown by a lon/lat box that holds it: then the circle touches that part
    alone and no outside, as building it would show, at a tenth of the cost. The box is
    wide enough on the ellipsoid (a degree of latitude is at least 110.57 km long, one
    of longitude at least 111.32 km times the cosine of the latitude), with 1 % more."""
    dlat = radius / 110_000.0 * 1.01
    poleward = abs(lat) + dlat
    if poleward >= 80.0:
        return False  # near a pole the box would not bound the circle so simply
    dlon = radius / (111_000.0 * math.cos(math.radians(poleward))) * 1.01
    box = shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)
    return bool(shapely.contains_properly(part, box))


def _circle(lat: float, lon: float, radius: float) -> Any:
    """The geodesic circle as a lon/lat polygon, with a vertex every 5 degrees at least.

    This is the circle of that radius in the azimuthal-equidistant projection centred on
    the place (which keeps distances from its centre true), computed directly on the
    ellipsoid with Geod.fwd: building a projection per place costs ~6 ms, this ~50 us.
    """
    count = 72 * math.ceil(math.pi / math.acos(1.0 - min(_SAGITTA_M / radius, 1.0)) / 72)
    azimuths = np.linspace(0.0, 360.0, count, endpoint=False)
    lons, lats, _ = _GEOD.fwd(
        np.full(count, lon), np.full(count, lat), azimuths, np.full(count, radius)
    )
    return shapely.Polygon(np.column_stack([lons, lats]))


# ---------------------------------------------------------------------------------------------
# Areas


@one_at_a_time
def polygon_facts(ds: BorderDataset, ring: Sequence[tuple[float, float]]) -> AreaFacts:
    """Geodesic area of a (lat, lon) ring and its share on each side.

    The ring may be open or closed. Each vertex must be a point in the region; the polygon must
    be valid (no self-intersection) and have three distinct vertices.
    """
    field = f"{FIELD_POLYGON}.points"
    if isinstance(ring, str | bytes) or not isinstance(ring, Sequence):
        raise GeoError("expected a list of (latitude, longitude) pairs", field=field)
    points = []
    for i, vertex in enumerate(ring):
        if not (isinstance(vertex, Sequence) and len(vertex) == 2):
            raise GeoError("expected a (latitude, longitude) pair", field=f"{field}[{i}]")
        points.append(_coordinates(ds, vertex[0], vertex[1], f"{field}[{i}]"))
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()
    if len(set(points)) < _MIN_RING_POINTS:
        raise GeoError(
            f"a polygon needs at least {_MIN_RING_POINTS} distinct points, got {len(set(points))}",
            field=field,
        )
    polygon = shapely.Polygon([(lon, lat) for lat, lon in points])
    _check_valid(polygon, FIELD_POLYGON)
    return _area(ds, polygon)


def _check_valid(polygon: Any, field: str) -> None:
    if shapely.is_valid(polygon):
        return
    reason = shapely.is_valid_reason(polygon)
    # GEOS reports the offending place as [lon lat]; say it in the (lat, lon) order used here.
    found = re.fullmatch(r"(.*)\[(\S+) (\S+)\]", reason)
    if found:
        reason = f"{found[1].lower()} at ({found[3]}, {found[2]})"
    raise GeoError(f"not a valid polygon: {reason}", field=field)


def _area(ds: BorderDataset, polygon: Any) -> AreaFacts:
    index = _index(ds)
    polygon = shapely.orient_polygons(polygon)
    shapely.prepare(polygon)
    hits = index.tree.query(polygon, predicate="intersects")
    covering = [i for i in hits if index.parts[i].covers(polygon)]
    areas = np.zeros(len(ds.parties) + 1)
    if covering:
        # The common case, a polygon well inside one part, needs no overlay at all.
        areas[index.part_side[covering[0]]] = _geodesic_area(polygon)
    elif hits.size:
        pieces = shapely.intersection(index.parts[hits], polygon)
        for side, piece in zip(index.part_side[hits], pieces, strict=True):
            areas[side] += _geodesic_area(piece)
        areas[-1] = _geodesic_area(shapely.difference(polygon, shapely.union_all(pieces)))
    else:
        areas[-1] = _geodesic_area(polygon)
    # Overlays leave slivers of float noise along shared edges (~1e-3 m2 per 10 km); they are
    # not a side's share of the polygon.
    noise = areas < max(_SLIVER_REL * areas.sum(), _SLIVER_M2)
    noise[np.argmax(areas)] = False
    areas[noise] = 0.0
    total = float(areas.sum())
    sides = (*ds.parties, OUTSIDE)
    shares = tuple(
        Share(side, float(a) / total, float(a)) for side, a in zip(sides, areas, strict=True)
    )
    positive = tuple(s.side for s in shares if s.area_m2 > 0)
    return AreaFacts(
        dataset_sha256=ds.sha256,
        ring=tuple((float(y), float(x)) for x, y in shapely.get_coordinates(polygon.exterior)),
        area_m2=_geodesic_area(polygon),
        shares=shares,
        sides=positive,
        ambiguous=len(positive) > 1,
    )


def _geodesic_area(geometry: Any) -> float:
    """Geodesic area (m^2) of a lon/lat (multi)polygon whose edges are straight in lon/lat."""
    total = 0.0
    for part in shapely.get_parts(geometry):
        if part.geom_type != "Polygon" or part.is_empty:
            continue  # an overlay can leave touching lines or points behind
        area, _ = _GEOD.geometry_area_perimeter(shapely.segmentize(part, _AREA_STEP_DEG))
        total += abs(area)
    return total


# ---------------------------------------------------------------------------------------------
# Observations


@one_at_a_time
def observation_facts(
    ds: BorderDataset,
    lat: float,
    lon: float,
    bearing_from_deg: float,
    bearing_to_deg: float,
    distance_min_m: float,
    distance_max_m: float,
) -> ObservationFacts:
    """The sector an observer placed fire in: bearings clockwise from true north, from
    ``bearing_from_deg`` round to ``bearing_to_deg`` (wrapping through 360 when to < from),
    between ``distance_min_m`` and ``distance_max_m`` (0 makes the observer the apex).
    """
    lat, lon = _coordinates(ds, lat, lon, FIELD_OBSERVATION)
    bearings = []
    for value, name in ((bearing_from_deg, "bearing_from_deg"), (bearing_to_deg, "bearing_to_deg")):
        bearing = _number(value, f"{FIELD_OBSERVATION}.{name}")
        if not 0.0 <= bearing < 360.0:
            raise GeoError(f"{bearing:g} is outside [0, 360)", field=f"{FIELD_OBSERVATION}.{name}")
        bearings.append(bearing)
    start, end = bearings
    width = (end - start) % 360.0
    if width == 0.0:
        raise GeoError(
            "equals bearing_from_deg, so the sector has no width",
            field=f"{FIELD_OBSERVATION}.bearing_to_deg",
        )
    near = _number(distance_min_m, f"{FIELD_OBSERVATION}.distance_min_m")
    far = _number(distance_max_m, f"{FIELD_OBSERVATION}.distance_max_m")
    if near < 0:
        raise GeoError(f"{near:g} m is negative", field=f"{FIELD_OBSERVATION}.distance_min_m")
    if far > MAX_DISTANCE_M:
        raise GeoError(
            f"{far:g} m is over the {MAX_DISTANCE_M:,.0f} m limit",
            field=f"{FIELD_OBSERVATION}.distance_max_m",
        )
    if far <= near:
        raise GeoError(
            f"{far:g} m is not more than distance_min_m ({near:g} m)",
            field=f"{FIELD_OBSERVATION}.distance_max_m",
        )

    step = min(_ARC_STEP_MAX_DEG, math.degrees(2.0 * math.acos(1.0 - _SAGITTA_M / far)))
    azimuths = start + np.linspace(0.0, width, math.ceil(width / step) + 1)
    outer = _fwd(lon, lat, azimuths, far)
    inner = _fwd(lon, lat, azimuths[::-1], near) if near > 0 else np.array([[lon, lat]])
    sector = shapely.Polygon(np.concatenate([outer, inner]))
    _check_valid(sector, FIELD_OBSERVATION)  # cannot fail for valid ranges; kept as a guard
    return ObservationFacts(
        dataset_sha256=ds.sha256, observer=_place(ds, lat, lon, 0.0), sector=_area(ds, sector)
    )


def _fwd(lon: float, lat: float, azimuths: NDArray[np.float64], dist: float) -> NDArray[Any]:
    n = len(azimuths)
    lons, lats, _ = _GEOD.fwd(np.full(n, lon), np.full(n, lat), azimuths, np.full(n, dist))
    return np.column_stack([lons, lats])


# ---------------------------------------------------------------------------------------------
# Lines


@one_at_a_time
def line_facts(
    ds: BorderDataset, origin: tuple[float, float], impact: tuple[float, float]
) -> LineFacts:
    """Where fire came from and landed, as (lat, lon) pairs, and the border crossings between.

    The line is the geodesic, with a vertex at least every 100 m. A crossing is where the line
    leaves one party's territory and enters the other's at once; passing through land in
    neither (say Georgia) is not a border crossing, and a stretch running along the border
    counts as neither side.
    """
    ends = []
    for value, name in ((origin, "origin"), (impact, "impact")):
        field = f"{FIELD_LINE}.{name}"
        if not (isinstance(value, Sequence) and len(value) == 2):
            raise GeoError("expected a (latitude, longitude) pair", field=field)
        ends.append(_coordinates(ds, value[0], value[1], field))
    (lat0, lon0), (lat1, lon1) = ends
    if ends[0] == ends[1]:
        # No direction, no length: a place, not a line of fire (give a point for that).
        raise GeoError(
            "equals the origin; a line of fire needs two different ends",
            field=f"{FIELD_LINE}.impact",
        )
    azimuth, _, length = _GEOD.inv(lon0, lat0, lon1, lat1)
    places = (_place(ds, lat0, lon0, 0.0), _place(ds, lat1, lon1, 0.0))
    crossings = _crossings(ds, lat0, lon0, lat1, lon1, length) if length > 0 else ()
    return LineFacts(
        dataset_sha256=ds.sha256,
        origin=places[0],
        impact=places[1],
        length_m=float(length),
        azimuth_deg=float(azimuth) % 360.0 if length > 0 else 0.0,
        crossings=crossings,
        crosses_from=crossings[0].from_territory if crossings else None,
        crosses_into=crossings[-1].into_territory if crossings else None,
    )


def _crossings(
    ds: BorderDataset, lat0: float, lon0: float, lat1: float, lon1: float, length: float
) -> tuple[Crossing, ...]:
    index = _index(ds)
    inner = _GEOD.npts(lon0, lat0, lon1, lat1, max(math.ceil(length / _LINE_STEP_M) - 1, 0))
    line = shapely.LineString([(lon0, lat0), *inner, (lon1, lat1)])
    if not index.boundary.intersects(line):
        return ()
    # Cut the line where it meets any territory boundary, and find each stretch's side at its
    # middle; a crossing is a change from one party to the other between adjacent stretches.
    cuts = shapely.get_coordinates(shapely.intersection(line, index.boundary))
    at = np.unique(
        np.concatenate([[0.0, line.length], shapely.line_locate_point(line, shapely.points(cuts))])
    )
    at = at[np.concatenate([[True], np.diff(at) > _SAME_CUT_DEG])]  # float noise, not a stretch
    mid = shapely.get_coordinates(shapely.line_interpolate_point(line, (at[:-1] + at[1:]) / 2))
    inside = shapely.contains_xy(index.parts[:, None], mid[:, 0], mid[:, 1])  # (parts, stretches)
    on_line = shapely.intersects_xy(index.boundary, mid[:, 0], mid[:, 1])
    side = np.where(inside.any(axis=0), index.part_side[inside.argmax(axis=0)], -1)

    found = []
    previous, start = -1, 0  # side of the last stretch off the boundary, and where it ended
    for k, s in enumerate(side.tolist()):
        if on_line[k]:
            continue  # along the border: the change, if any, is where it began
        if previous >= 0 and s >= 0 and s != previous:
            lon, lat = shapely.get_coordinates(shapely.line_interpolate_point(line, at[start]))[0]
            _, _, dist = _GEOD.inv(lon0, lat0, lon, lat)
            found.append(
                Crossing(float(lat), float(lon), float(dist), ds.parties[previous], ds.parties[s])
            )
        previous, start = s, k + 1
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Input checks


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise GeoError(f"expected a number, got {type(value).__name__}", field=field)
    number = float(value)
    if not math.isfinite(number):
        raise GeoError(f"{number} is not a finite number", field=field)
    return number


def _coordinates(ds: BorderDataset, lat: object, lon: object, field: str) -> tuple[float, float]:
    """A checked (lat, lon) in the region; errors name ``<field>.latitude`` etc. or ``field``."""
    checked = (_number(lat, f"{field}.latitude"), _number(lon, f"{field}.longitude"))
    ds.check_point(*checked, field=field)
    return checked
