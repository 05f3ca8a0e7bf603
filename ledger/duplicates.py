"""Likely duplicates: reports close in time and place, or naming the same evidence.

They are flagged on the later entry and linked to the earlier ones, never merged: two
parties' accounts of one event both stay on the record. Pure and deterministic, so the
server (at the entry's index) and the verifier (replaying it) flag the same entries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from pyproj import Geod

from ledger.clock import to_us
from ledger.geofacts import anchor

# Time windows closer than this, and places closer than this, count as the same event.
TIME_SLACK_US = 3600 * 1_000_000
DISTANCE_M = 2_000.0
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Sighting:
    index: int
    start_us: int
    end_us: int
    latitude: float
    longitude: float
    evidence: frozenset[str]


def overlaps(a: Sighting, b: Sighting) -> bool:
    return a.start_us - TIME_SLACK_US <= b.end_us and b.start_us - TIME_SLACK_US <= a.end_us


def likely_duplicates(new: Sighting, earlier: Iterable[Sighting]) -> list[tuple[int, list[str]]]:
    """(index, reasons) for each earlier sighting the new one likely repeats, by index."""
    found = []
    for old in sorted(earlier, key=lambda s: s.index):
        reasons = []
        if overlaps(new, old):
            _, _, metres = _GEOD.inv(new.longitude, new.latitude, old.longitude, old.latitude)
            if metres <= DISTANCE_M:
                reasons.append("time and place")
        if new.evidence & old.evidence:
            reasons.append("evidence")
        if reasons:
            found.append((old.index, reasons))
    return found


class SightingIndex:
    """Earlier sightings, found by time (sorted by window end) and by evidence, so that an
    audit of n reports costs about n log n, not n squared."""

    def __init__(self) -> None:
        self._by_end: list[tuple[int, int]] = []  # (end_us, index)
        self._all: dict[int, Sighting] = {}
        self._by_evidence: dict[str, list[int]] = {}

    def add(self, s: Sighting) -> None:
        bisect.insort(self._by_end, (s.end_us, s.index))
        self._all[s.index] = s
        for digest in s.evidence:
            self._by_evidence.setdefault(digest, []).append(s.index)

    def candidates(self, new: Sighting) -> list[Sighting]:
        start = bisect.bisect_left(self._by_end, (new.start_us - TIME_SLACK_US, -1))
        found = {i for _, i in self._by_end[start:]}
        for digest in new.evidence:
            found.update(self._by_evidence.get(digest, ()))
        return [self._all[i] for i in found]


def sighting(index: int, report: pb.IncidentReport) -> Sighting:
    latitude, longitude = anchor(report)
    return Sighting(
        index,
        to_us(report.window.start),
        to_us(report.window.end),
        latitude,
        longitude,
        frozenset(report.evidence_sha256),
    )


def as_facts(found: list[tuple[int, list[str]]]) -> list[log_pb2.LikelyDuplicate]:
    return [log_pb2.LikelyDuplicate(index=i, reasons=r) for i, r in found]
