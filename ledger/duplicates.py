"""Likely duplicates: reports close in time and place, or naming the same evidence.

They are flagged on the later entry and linked to the earlier ones, never merged: two
parties' accounts of one event both stay on the record. At most the MAX_LINKED most recent
matches are linked, so a flood of reports about one place cannot grow entries or cost
quadratic time. Pure and deterministic: the server (at the entry's index) and the verifier
(replaying it) flag the same entries, each feeding candidates newest first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

from geo.geodesic import wgs84
from ledger.clock import to_us
from ledger.geofacts import anchor

# Time windows closer than this, and places closer than this, count as the same event.
TIME_SLACK_US = 3600 * 1_000_000
DISTANCE_M = 2_000.0
MAX_LINKED = 16
# Sightings are filed by grid cell and by period of a few hours, so that finding the
# candidates for a new one reads the few cells around it in the few periods around it,
# however long the log grows and however many reports a day it holds. Cells of 0.02 degrees
# (about 2 km) and periods of 3 hours keep what a search reads within a few times what
# could match (a 2 km circle spans at most 3 x 4 cells at 40 degrees of latitude; a window
# widened by the slack, a period or two more), at about two keys a report.
CELL_DEG = 0.02
CELL_ROW = 100_000  # a cell's number: row * CELL_ROW + column (a column lies within +-9,000)
PERIOD_US = 3 * 3600 * 1_000_000
# A window touching more periods than this (two days) is filed once under LONG_WINDOWS,
# which every search also reads: such windows are rare, and filing them under each period
# would cost many rows.
MAX_PERIODS_FILED = 16
LONG_WINDOWS = -(10**9)  # no period of the years 1 to 9999 is this far before 1970


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


def box(s: Sighting) -> tuple[float, float, float, float]:
    """(min lat, max lat, min lon, max lon) holding every place within DISTANCE_M."""
    dlat = DISTANCE_M / 110_000 * 1.05
    dlon = min(dlat / max(math.cos(math.radians(s.latitude)), 0.01), 1.0)
    return s.latitude - dlat, s.latitude + dlat, s.longitude - dlon, s.longitude + dlon


def match(new: Sighting, old: Sighting, around: tuple[float, float, float, float]) -> list[str]:
    """Why `old` is likely what `new` reports again, if it is; `around`: box(new)."""
    reasons = []
    if overlaps(new, old):
        lat0, lat1, lon0, lon1 = around
        if lat0 <= old.latitude <= lat1 and lon0 <= old.longitude <= lon1:
            _, _, metres = wgs84().inv(new.longitude, new.latitude, old.longitude, old.latitude)
            if metres <= DISTANCE_M:
                reasons.append("time and place")
    if new.evidence & old.evidence:
        reasons.append("evidence")
    return reasons


def likely_duplicates(
    new: Sighting, newest_first: Iterable[Sighting]
) -> list[tuple[int, list[str]]]:
    """(index, reasons) of the MAX_LINKED most recent earlier sightings the new one likely
    repeats, in index order. Candidates must come newest first and include every match."""
    found: list[tuple[int, list[str]]] = []
    around = box(new)
    for old in newest_first:
        reasons = match(new, old, around)
        if reasons:
            found.append((old.index, reasons))
            if len(found) == MAX_LINKED:
                break
    return sorted(found)


def cell(latitude: float, longitude: float) -> int:
    """The grid cell of a place, as one integer."""
    return math.floor(latitude / CELL_DEG) * CELL_ROW + math.floor(longitude / CELL_DEG)


def filed_under(s: Sighting) -> list[tuple[int, int]]:
    """The (cell, period) keys a sighting is filed under: its place's cell, in each period
    its window touches (or LONG_WINDOWS)."""
    first, last = s.start_us // PERIOD_US, s.end_us // PERIOD_US
    periods = range(first, last + 1) if last - first < MAX_PERIODS_FILED else [LONG_WINDOWS]
    here = cell(s.latitude, s.longitude)
    return [(here, period) for period in periods]


@dataclass(frozen=True)
class Search:
    """Where a new sighting's candidates are filed: the cells covering its box, in the
    periods its window (widened by the time slack) touches, and under LONG_WINDOWS. Every
    earlier sighting within DISTANCE_M and the time slack is filed under one of these keys."""

    cells: tuple[int, ...]
    first_period: int
    last_period: int


def search(new: Sighting) -> Search:
    lat0, lat1, lon0, lon1 = box(new)
    rows = range(math.floor(lat0 / CELL_DEG), math.floor(lat1 / CELL_DEG) + 1)
    columns = range(math.floor(lon0 / CELL_DEG), math.floor(lon1 / CELL_DEG) + 1)
    return Search(
        tuple(i * CELL_ROW + j for i in rows for j in columns),
        (new.start_us - TIME_SLACK_US) // PERIOD_US,
        (new.end_us + TIME_SLACK_US) // PERIOD_US,
    )


class SightingIndex:
    """Earlier sightings by (cell, period) and by evidence, for the verifier: candidates come
    newest first, so an audit stops after the few most recent matches."""

    def __init__(self) -> None:
        # period -> cell -> sightings: most of a search's (cell, period) keys hold nothing.
        self._filed: dict[int, dict[int, list[Sighting]]] = {}
        self._by_evidence: dict[str, list[Sighting]] = {}

    def add(self, s: Sighting) -> None:
        for cell, period in filed_under(s):
            self._filed.setdefault(period, {}).setdefault(cell, []).append(s)
        for digest in s.evidence:
            self._by_evidence.setdefault(digest, []).append(s)

    def candidates(self, new: Sighting) -> list[Sighting]:
        where = search(new)
        lists = []
        for period in [*range(where.first_period, where.last_period + 1), LONG_WINDOWS]:
            if (cells := self._filed.get(period)) is not None:
                lists += [found for c in where.cells if (found := cells.get(c))]
        lists += [found for d in new.evidence if (found := self._by_evidence.get(d))]
        if len(lists) == 1:  # the usual case; and a crowded cell's list is not sorted again
            return lists[0][::-1]
        # A few sightings at most: gathered whole, not merged lazily.
        merged = {s.index: s for found in lists for s in found}
        return [merged[i] for i in sorted(merged, reverse=True)]


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
