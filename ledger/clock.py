"""Time as integer microseconds since the Unix epoch (UTC): exact, and the same in every DB."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

# The times protobuf's Timestamp can hold, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z,
# in microseconds: well within the 64-bit integers SQL stores them in.
MIN_US = -62_135_596_800 * 1_000_000
MAX_US = 253_402_300_800 * 1_000_000 - 1


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def to_timestamp(us: int) -> Timestamp:
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def to_iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> int:
    """An ISO 8601 time; a time without zone is taken as UTC."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)
