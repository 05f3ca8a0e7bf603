"""Realistic incident reports for benchmarks/scale.py: both parties' monitors, places along
the whole ARM-AZE border on both sides, times over about 60 days, about 5 % true
near-duplicates.

A `Spec` is what a report says, small enough to hand to client processes, which sign it
(`sign_spec`) before their clock starts. `ReportPlan` draws them: a point on the bundled
border line (uniform by length, so the main border, Nakhchivan's and the exclaves' all get
their share), moved 0.1-15 km (log-uniform: more incidents close to the line) across it to
either side, kept only if it lies inside a party's territory; that party's monitor reports
it. Windows start anywhere in the last 60 days and last 5 minutes to 6 hours. A near-
duplicate repeats an earlier report: within 300 m and overlapping in time (75 %), or naming
one of its evidence digests (25 %).

This module stays light (no geo import at module level): client processes import it.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from ledger.clock import now_us, to_timestamp
from tests.reports import report, signed

if TYPE_CHECKING:
    from geo.borders import BorderDataset

MINUTE_US = 60 * 1_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
SPAN_DAYS = 60
DUPLICATE_SHARE = 0.05
# Metres per degree of latitude, and of longitude at the equator (WGS84, good to ~0.5 %).
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON = 111_320.0

CATEGORIES = [v for v in pb.IncidentCategory.values() if v != pb.INCIDENT_CATEGORY_UNSPECIFIED]
MODES = [v for v in pb.ObservationMode.values() if v != pb.OBSERVATION_MODE_UNSPECIFIED]
NARRATIVES = (
    "Bursts of automatic fire heard from positions across the line for about {m} minutes; "
    "no casualties reported by the post.",
    "Observation post reports {m} rounds of mortar fire impacting near the road; a field "
    "team will inspect the craters at first light.",
    "Sniper fire at a forward position; one round struck the parapet. Duration about {m} minutes.",
    "Drone observed crossing the line at low altitude, circling for {m} minutes before "
    "returning; photographs taken by the post.",
    "Engineering works seen on the far side: an excavator and two trucks building a "
    "trench line over about {m} minutes of observation.",
    "Villagers report damage to a barn and an irrigation channel after fire during the "
    "night; the monitor visited and photographed the damage ({m} photos).",
)


class Spec(NamedTuple):
    """One incident report, before signing."""

    party: str
    lat: float
    lon: float
    uncertainty_m: float
    start_us: int
    end_us: int
    category: int
    mode: int
    blames: str
    evidence: tuple[str, ...]
    narrative: str
    duplicate_of: int  # position of the report it repeats in the plan, or -1


def build(spec: Spec) -> pb.IncidentReport:
    """The report a spec describes, on the tests' `report()` shape (created_time: now)."""
    r = report(
        spec.party,
        lat=spec.lat,
        lon=spec.lon,
        category=spec.category,  # type: ignore[arg-type]
        blames=spec.blames,
        narrative=spec.narrative,
    )
    r.window.start.CopyFrom(to_timestamp(spec.start_us))
    r.window.end.CopyFrom(to_timestamp(spec.end_us))
    long_window = spec.end_us - spec.start_us > HOUR_US
    r.window.precision = pb.TIME_PRECISION_HOUR if long_window else pb.TIME_PRECISION_MINUTE
    r.location.uncertainty_m = spec.uncertainty_m
    r.observation_mode = spec.mode  # type: ignore[assignment]
    r.evidence_sha256.extend(spec.evidence)
    return r


def sign_spec(spec: Spec, keys: dict[str, SigningKey]) -> bytes:
    """The DSSE JSON envelope of the report, signed by its party's monitor, as sent."""
    return signed(build(spec), keys[spec.party])


class _Border:
    """The border line as straight lon/lat edges, for sampling by length."""

    def __init__(self, borders: BorderDataset) -> None:
        import numpy as np

        doc = json.loads((borders.directory / "border.geojson").read_text(encoding="utf-8"))
        edges: list[tuple[float, float, float, float]] = []
        for feature in doc["features"]:
            geom = feature["geometry"]
            lines = [geom["coordinates"]] if geom["type"] == "LineString" else geom["coordinates"]
            for line in lines:
                for (x0, y0, *_), (x1, y1, *_) in itertools.pairwise(line):
                    edges.append((x0, y0, x1, y1))
        e = np.array(edges, dtype=np.float64)
        self.x0, self.y0, self.x1, self.y1 = e[:, 0], e[:, 1], e[:, 2], e[:, 3]
        coslat = np.cos(np.radians((self.y0 + self.y1) / 2))
        self.dx_m = (self.x1 - self.x0) * M_PER_DEG_LON * coslat
        self.dy_m = (self.y1 - self.y0) * M_PER_DEG_LAT
        length = np.hypot(self.dx_m, self.dy_m)
        self.length_m = length
        self.cumulative = np.cumsum(length) / length.sum()
        parts, owners = borders.territory_parts()
        self.parts = list(parts)
        self.owners = list(owners)

    def places(self, rng: random.Random, n: int) -> list[tuple[str, float, float]]:
        """n places 0.1-15 km to either side of the line, each inside a party's territory,
        with that party."""
        import numpy as np
        import shapely

        g = np.random.default_rng(rng.getrandbits(64))
        found: list[tuple[str, float, float]] = []
        while len(found) < n:
            m = max(2 * (n - len(found)), 64)
            edge = np.searchsorted(self.cumulative, g.random(m))
            edge = np.minimum(edge, len(self.cumulative) - 1)
            t = g.random(m)
            lon = self.x0[edge] + t * (self.x1[edge] - self.x0[edge])
            lat = self.y0[edge] + t * (self.y1[edge] - self.y0[edge])
            # Unit normal to the edge, in metres east and north.
            nx = -self.dy_m[edge] / self.length_m[edge]
            ny = self.dx_m[edge] / self.length_m[edge]
            dist = np.exp(g.uniform(math.log(100.0), math.log(15_000.0), m))
            side = np.where(g.random(m) < 0.5, -1.0, 1.0)
            lat2 = lat + side * ny * dist / M_PER_DEG_LAT
            lon2 = lon + side * nx * dist / (M_PER_DEG_LON * np.cos(np.radians(lat)))
            owner = np.full(m, -1)
            for i, part in enumerate(self.parts):
                owner[shapely.contains_xy(part, lon2, lat2) & (owner < 0)] = i
            for k in np.flatnonzero(owner >= 0):
                found.append(
                    (self.owners[int(owner[k])], round(float(lat2[k]), 6), round(float(lon2[k]), 6))
                )
        return found[:n]

    def party_at(self, lat: float, lon: float) -> str | None:
        import shapely

        for part, owner in zip(self.parts, self.owners, strict=True):
            if shapely.contains_xy(part, lon, lat):
                return owner
        return None


class ReportPlan:
    """Draws reports in order, remembering them for near-duplicates and the timeline."""

    def __init__(self, borders: BorderDataset, seed: int, *, now: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.border = _Border(borders)
        self.now_us = now if now is not None else now_us()
        self.parties = tuple(borders.parties)
        self.drawn: list[Spec] = []
        self.days: Counter[int] = Counter()  # UTC day number -> reports whose window overlaps it
        self.duplicates = 0

    def take(self, n: int) -> list[Spec]:
        rng = self.rng
        places = self.border.places(rng, n)
        out: list[Spec] = []
        for party, lat, lon in places:
            if self.drawn and rng.random() < DUPLICATE_SHARE:
                spec = self._duplicate(len(self.drawn))
            else:
                spec = self._fresh(party, lat, lon)
            self._keep(spec)
            out.append(spec)
        return out

    def _evidence(self) -> tuple[str, ...]:
        k = self.rng.choice((0, 0, 1, 1, 1, 2, 3))
        return tuple(self.rng.getrandbits(256).to_bytes(32, "big").hex() for _ in range(k))

    def _fresh(self, party: str, lat: float, lon: float) -> Spec:
        rng = self.rng
        length = int(math.exp(rng.uniform(math.log(5 * MINUTE_US), math.log(6 * HOUR_US))))
        latest_start = self.now_us - length - 10 * MINUTE_US
        start = latest_start - rng.randrange(SPAN_DAYS * DAY_US - length)
        others = [p for p in self.parties if p != party]
        blames = rng.choice(others) if others and rng.random() < 0.7 else ""
        return Spec(
            party, lat, lon,
            float(rng.choice((100, 250, 500, 750, 1000, 2000))),
            start, start + length,
            rng.choice(CATEGORIES), rng.choice(MODES), blames,
            self._evidence(),
            rng.choice(NARRATIVES).format(m=rng.randint(2, 40)),
            -1,
        )  # fmt: skip

    def _duplicate(self, position: int) -> Spec:
        """The same event reported again: within 300 m and overlapping in time, or naming
        the same evidence (from another place and time, e.g. a photo sent on)."""
        rng = self.rng
        for _ in range(20):
            j = rng.randrange(position)
            orig = self.drawn[j]
            if rng.random() < 0.75:
                bearing = rng.uniform(0, 2 * math.pi)
                d = rng.uniform(0, 300)
                lat = orig.lat + d * math.cos(bearing) / M_PER_DEG_LAT
                lon = orig.lon + d * math.sin(bearing) / (
                    M_PER_DEG_LON * math.cos(math.radians(orig.lat))
                )
                if self.border.party_at(lat, lon) != orig.party:
                    lat, lon = orig.lat, orig.lon
                shift = rng.randint(-20, 20) * MINUTE_US
                start = min(orig.start_us + shift, self.now_us - 20 * MINUTE_US)
                end = max(start + 5 * MINUTE_US, orig.end_us + shift)
                end = min(end, self.now_us - 10 * MINUTE_US)
                return orig._replace(
                    lat=round(lat, 6), lon=round(lon, 6), start_us=start, end_us=end,
                    evidence=self._evidence(), duplicate_of=j,
                    narrative=f"Same event as seen from another post: {orig.narrative}",
                )  # fmt: skip
            if orig.evidence:
                party, lat, lon = self.border.places(rng, 1)[0]
                fresh = self._fresh(party, lat, lon)
                return fresh._replace(
                    evidence=(rng.choice(orig.evidence), *self._evidence()), duplicate_of=j
                )
        party, lat, lon = self.border.places(rng, 1)[0]
        return self._fresh(party, lat, lon)

    def _keep(self, spec: Spec) -> None:
        self.drawn.append(spec)
        if spec.duplicate_of >= 0:
            self.duplicates += 1
        for day in range(spec.start_us // DAY_US, spec.end_us // DAY_US + 1):
            self.days[day] += 1

    def busiest_day(self) -> tuple[int, int, int]:
        """(start µs, end µs, reports overlapping it) of the day with the most reports."""
        day, count = self.days.most_common(1)[0]
        return day * DAY_US, (day + 1) * DAY_US - 1, count


def shares(specs: Sequence[Spec]) -> dict[str, float]:
    """For the record: how the drawn reports split by party and how many repeat another."""
    n = max(len(specs), 1)
    by_party = Counter(s.party for s in specs)
    out = {f"party_{p}": c / n for p, c in sorted(by_party.items())}
    out["near_duplicates"] = sum(s.duplicate_of >= 0 for s in specs) / n
    return out
