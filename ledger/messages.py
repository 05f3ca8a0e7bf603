"""Prevention: advance notices of sensitive activity and hotline messages, and who has
acknowledged them. Each is timestamped by its log index. Pure, like the other subjects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ceasefire.v1 import statements_pb2 as pb

from geo.geodesic import wgs84
from ledger.clock import to_us

NOTICE = "notice"
HOTLINE = "hotline"
# An incident this close to a notice's area (metres), within this long of its window
# (microseconds), is shown beside it.
NEAR_NOTICE_M = 5_000.0
NEAR_NOTICE_US = 3600 * 1_000_000


@dataclass(frozen=True)
class MessageInfo:
    index: int
    kind: str
    party: str
    # The addressed party of a hotline message; "" for a notice (addressed to all others).
    to_party: str = ""
    # Party -> the log index of its acknowledgement.
    acknowledged: dict[str, int] = field(default_factory=dict)

    def addressed_to(self, party: str) -> bool:
        return party == self.to_party if self.kind == HOTLINE else party != self.party


def from_statement(index: int, statement: pb.AdvanceNotice | pb.HotlineMessage) -> MessageInfo:
    if isinstance(statement, pb.HotlineMessage):
        return MessageInfo(index, HOTLINE, statement.party, statement.to_party)
    return MessageInfo(index, NOTICE, statement.party)


def acknowledge(info: MessageInfo, index: int, party: str) -> MessageInfo:
    return replace(info, acknowledged={**info.acknowledged, party: index})


@dataclass(frozen=True)
class NoticeArea:
    """A notice's window and its area as a circle: a point and its radius, or a polygon's
    vertex mean and the farthest vertex from it."""

    start_us: int
    end_us: int
    latitude: float
    longitude: float
    radius_m: float


def area(notice: pb.AdvanceNotice) -> NoticeArea:
    loc = notice.location
    start, end = to_us(notice.window.start), to_us(notice.window.end)
    if loc.WhichOneof("geometry") == "point":
        return NoticeArea(start, end, loc.point.latitude, loc.point.longitude, loc.uncertainty_m)
    points = loc.polygon.points
    lat = sum(p.latitude for p in points) / len(points)
    lon = sum(p.longitude for p in points) / len(points)
    _, _, dist = wgs84().inv(
        [lon] * len(points), [lat] * len(points),
        [p.longitude for p in points], [p.latitude for p in points],
    )  # fmt: skip
    return NoticeArea(start, end, lat, lon, max(dist) + loc.uncertainty_m)


def near(notice: NoticeArea, latitude: float, longitude: float, start_us: int, end_us: int) -> bool:
    """Whether an incident at (latitude, longitude) in [start_us, end_us] falls within
    reach of the notice in time and place."""
    if notice.end_us + NEAR_NOTICE_US < start_us or end_us + NEAR_NOTICE_US < notice.start_us:
        return False
    _, _, dist = wgs84().inv(notice.longitude, notice.latitude, longitude, latitude)
    return bool(dist <= notice.radius_m + NEAR_NOTICE_M)
