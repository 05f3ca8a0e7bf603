"""Geo facts of an incident's place on a border data set, as the log records them.

One function computes them for the server (at submission, and again at the entry's index
if a newer data set came into force), for the verifier and for the re-validation query, so
all three agree. Impossible places are InvalidArgument errors naming the field; places
outside the monitored zone are refused or flagged, as the data set's registration says.

Per geometry:
- point: its territory, distance to the border, nearest segment; with its uncertainty
  circle, the sides it touches and whether the side is ambiguous;
- observation (observer, bearings, distances): the observer's facts, and the sector's area
  shares per side;
- polygon: area shares per side;
- line (origin to impact): the ends' territories, the crossings in order, from which side
  into which, geodesic length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

from ledger.errors import InvalidArgument, shown
from ledger.trust import DatasetInfo

# Distances are recorded to 0.1 m; recomputations may differ by that and float noise.
DISTANCE_TOLERANCE_M = 0.11
SHARE_TOLERANCE = 1e-6

if TYPE_CHECKING:  # the geometry is loaded when facts are computed, not by a replay of keys
    from geo.borders import BorderDataset, GeoError
    from geo.validate import AreaFacts, PlaceFacts


def _side(side: str | None) -> str:
    from geo.validate import OUTSIDE

    return "" if side in (None, OUTSIDE) else side


def _error(e: GeoError) -> InvalidArgument:
    from geo.validate import FIELD_OBSERVATION

    field = e.field
    # The observer's coordinates sit one level deeper in a report than geo names them.
    for coord in ("latitude", "longitude"):
        if field == f"{FIELD_OBSERVATION}.{coord}":
            field = f"{FIELD_OBSERVATION}.observer.{coord}"
    return InvalidArgument(e.message, field=field)


def _place(geo: log_pb2.GeoFacts, place: PlaceFacts) -> None:
    geo.territory = _side(place.territory)
    geo.distance_to_border_m = round(place.distance_to_border_m, 1)
    geo.nearest_segment = place.nearest_segment


def _area(geo: log_pb2.GeoFacts, area: AreaFacts) -> None:
    for share in area.shares:
        geo.shares.add(
            territory=_side(share.side), share=round(share.share, 9), area_m2=round(share.area_m2)
        )
    geo.ambiguous = area.ambiguous
    geo.touches.extend(_side(s) for s in area.sides)


def compute(report: pb.IncidentReport, ds: BorderDataset, info: DatasetInfo) -> log_pb2.GeoFacts:
    from geo import validate
    from geo.borders import GeoError

    loc = report.location
    geo = log_pb2.GeoFacts(dataset_sha256=ds.sha256)
    kind = loc.WhichOneof("geometry")
    try:
        if kind == "point":
            place = validate.point_facts(
                ds, loc.point.latitude, loc.point.longitude, loc.uncertainty_m
            )
            _place(geo, place)
            geo.ambiguous = place.ambiguous
            geo.touches.extend(_side(s) for s in place.sides)
            reach = place.distance_to_border_m - loc.uncertainty_m
        elif kind == "observation":
            o = loc.observation
            obs = validate.observation_facts(
                ds,
                o.observer.latitude,
                o.observer.longitude,
                o.bearing_from_deg,
                o.bearing_to_deg,
                o.distance_min_m,
                o.distance_max_m,
            )
            _place(geo, obs.observer)
            _area(geo, obs.sector)
            reach = obs.observer.distance_to_border_m - o.distance_max_m
        elif kind == "polygon":
            area = validate.polygon_facts(
                ds, [(p.latitude, p.longitude) for p in loc.polygon.points]
            )
            _area(geo, area)
            reach = 0.0  # an area is judged by its shares, not by a distance
        elif kind == "line":
            line = validate.line_facts(
                ds,
                (loc.line.origin.latitude, loc.line.origin.longitude),
                (loc.line.impact.latitude, loc.line.impact.longitude),
            )
            near = min(line.origin, line.impact, key=lambda p: p.distance_to_border_m)
            _place(geo, line.origin)
            geo.distance_to_border_m = (
                0.0 if line.crossings else round(near.distance_to_border_m, 1)
            )
            geo.nearest_segment = near.nearest_segment
            facts = geo.line
            facts.origin_territory = _side(line.origin.territory)
            facts.impact_territory = _side(line.impact.territory)
            facts.crosses_border = line.crosses_border
            facts.crosses_from = _side(line.crosses_from)
            facts.crosses_into = _side(line.crosses_into)
            facts.length_m = round(line.length_m, 1)
            for c in line.crossings:
                facts.crossings.add(latitude=round(c.lat, 7), longitude=round(c.lon, 7))
            geo.touches.extend(sorted({_side(p.territory) for p in (line.origin, line.impact)}))
            reach = geo.distance_to_border_m
        else:
            raise InvalidArgument(
                "a point, line, polygon or observation is required", field="location"
            )
    except GeoError as e:
        raise _error(e) from e
    zone = info.monitored_zone_m
    if zone and reach > zone:
        if info.outside_zone == pb.OUTSIDE_ZONE_FLAG:
            geo.outside_monitored_zone = True
        else:
            raise InvalidArgument(
                f"is {reach / 1000:,.1f} km from the border, outside the monitored zone of "
                f"{zone / 1000:,.1f} km of data set {shown(info.name or ds.name)}",
                field="location",
            )
    return geo


def anchor(report: pb.IncidentReport) -> tuple[float, float]:
    """One point for the timeline index: the point, the observer, the origin, a vertex."""
    loc = report.location
    kind = loc.WhichOneof("geometry")
    # Only the point asked for is touched: every message read is a wrapper made for it.
    if kind == "point":
        p = loc.point
    elif kind == "observation":
        p = loc.observation.observer
    elif kind == "line":
        p = loc.line.origin
    else:
        p = loc.polygon.points[0] if loc.polygon.points else loc.point
    return p.latitude, p.longitude


def same(a: log_pb2.GeoFacts, b: log_pb2.GeoFacts) -> bool:
    """Equal facts, allowing the recorded rounding of distances and shares."""
    if a == b:  # as recomputed facts mostly are (rounded as recorded): no copies to compare
        return True
    a2, b2 = log_pb2.GeoFacts(), log_pb2.GeoFacts()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    if not math.isclose(
        a.distance_to_border_m, b.distance_to_border_m, abs_tol=DISTANCE_TOLERANCE_M
    ) or len(a.shares) != len(b.shares):
        return False
    for x, y in zip(a.shares, b.shares, strict=True):
        if x.territory != y.territory or not math.isclose(
            x.share, y.share, abs_tol=SHARE_TOLERANCE
        ):
            return False
    for m in (a2, b2):
        m.distance_to_border_m = 0
        m.ClearField("shares")
        m.line.length_m = 0
    return a2 == b2 and math.isclose(a.line.length_m, b.line.length_m, abs_tol=1.0)


def side(geo: log_pb2.GeoFacts) -> str:
    """What a reader takes as the side: a territory, or undecided."""
    if geo.ambiguous:
        return "ambiguous"
    if geo.shares:
        return next((s.territory or "neither" for s in geo.shares if s.share > 0.5), "ambiguous")
    return geo.territory or "neither"
