"""Geo facts of an incident's place on a border data set, as the log records them.

One function computes them for the server (at submission, and again at the entry's index
if a newer data set came into force) and for the verifier and the re-validation query,
so all three agree. Coordinates beyond the region, or outside the monitored zone when the
data set refuses those, are clear InvalidArgument errors naming the field.
"""

from __future__ import annotations

import math

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

from geo.borders import BorderDataset, GeoError
from ledger.errors import InvalidArgument
from ledger.trust import DatasetInfo

# Distances are recorded to 0.1 m; recomputations may differ by that and float noise.
DISTANCE_TOLERANCE_M = 0.11


def _field(e: GeoError) -> str:
    # geo names the fields of a bare location; in a report they sit under location.point.
    return "location.point" + e.field.removeprefix("location")


def compute(report: pb.IncidentReport, ds: BorderDataset, info: DatasetInfo) -> log_pb2.GeoFacts:
    point = report.location.point
    try:
        facts = ds.locate(point.latitude, point.longitude)
    except GeoError as e:
        raise InvalidArgument(e.message, field=_field(e)) from e
    distance = round(facts.distance_to_border_m, 1)
    uncertainty = report.location.uncertainty_m
    geo = log_pb2.GeoFacts(
        dataset_sha256=ds.sha256,
        territory=facts.territory or "",
        distance_to_border_m=distance,
        nearest_segment=facts.nearest_segment,
        # The circle of uncertainty reaches the border: the side is not decided.
        ambiguous=uncertainty >= facts.distance_to_border_m,
    )
    zone = info.monitored_zone_m
    if zone and facts.distance_to_border_m - uncertainty > zone:
        if info.outside_zone == pb.OUTSIDE_ZONE_FLAG:
            geo.outside_monitored_zone = True
        else:
            raise InvalidArgument(
                f"is {facts.distance_to_border_m / 1000:,.1f} km from the border, outside the "
                f"monitored zone of {zone / 1000:,.1f} km of data set {info.name or ds.name}",
                field="location",
            )
    return geo


def same(a: log_pb2.GeoFacts, b: log_pb2.GeoFacts) -> bool:
    """Equal facts, allowing the recorded rounding of distances."""
    a2, b2 = log_pb2.GeoFacts(), log_pb2.GeoFacts()
    a2.CopyFrom(a)
    b2.CopyFrom(b)
    close = math.isclose(
        a.distance_to_border_m, b.distance_to_border_m, abs_tol=DISTANCE_TOLERANCE_M
    )
    a2.distance_to_border_m = b2.distance_to_border_m = 0
    return close and a2 == b2


def side(geo: log_pb2.GeoFacts) -> str:
    """What a reader takes as the side: a territory, or undecided."""
    return "ambiguous" if geo.ambiguous else (geo.territory or "neither")
