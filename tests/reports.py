"""Realistic incident reports at real places near the ARM-AZE border, for tests."""

from __future__ import annotations

from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from clients.reports import sign_report
from ledger.clock import now_us, to_timestamp

HOUR_US = 3600 * 1_000_000


def report(
    party: str = "ARM",
    *,
    lat: float = 40.8811,
    lon: float = 45.3875,
    hours_ago: float = 5,
    category: pb.IncidentCategory.ValueType = pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE,
    blames: str = "",
    narrative: str = "Small-arms fire heard from the east for about ten minutes.",
) -> pb.IncidentReport:
    start = now_us() - int(hours_ago * HOUR_US)
    return pb.IncidentReport(
        reporting_party=party,
        created_time=to_timestamp(now_us()),
        window=pb.TimeWindow(
            start=to_timestamp(start),
            end=to_timestamp(start + HOUR_US // 2),
            precision=pb.TIME_PRECISION_HOUR,
        ),
        location=pb.Location(
            point=pb.GeoPoint(latitude=lat, longitude=lon),
            uncertainty_m=500,
            precision=pb.LOCATION_PRECISION_NEAR,
        ),
        category=category,
        observation_mode=pb.OBSERVATION_MODE_HEARD,
        alleged_responsible_party=blames,
        narrative=narrative,
        narrative_language="en",
    )


def signed(r: pb.IncidentReport, *keys: SigningKey) -> bytes:
    return sign_report(r, list(keys))
