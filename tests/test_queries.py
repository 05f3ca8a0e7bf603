"""Timeline queries: every filter, alone and combined, against a brute-force reference over
the log itself (reports at random places along the real border, answered, retracted and
investigated), through a real server on SQLite and PostgreSQL; stable paging while entries
are appended; selective queries that read through the indexes (the R*Tree, GiST) only what
they return; refusals naming the field; the `ceasefire timeline` command; the back-fill of
migration 0007.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import shapely
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from pyproj import Geod
from sqlalchemy import Engine, text

from clients import query_args
from clients.cli import main
from clients.client import LedgerClient, field_violations
from geo.borders import BorderDataset
from ledger import incidents, statements
from ledger.clock import now_us, to_timestamp, to_us
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.incidents import Link
from ledger.queries import Query, _to_segment_m
from ledger.service import Ledger
from ledger.storage import LedgerStore, migrate
from tests.conftest import (
    LogClock,
    Parties,
    RunningLedger,
    fresh_database,
    selects_run,
    serve,
    sqlite_plans,
)
from tests.geo_reference import raw_border

HOUR_US = 3600 * 1_000_000
DAY_US = 24 * HOUR_US
GEOD = Geod(ellps="WGS84")
WORDS = (
    "Mortar", "sniper", "DRONE", "shelling", "Tavush", "Ağdam", "Straße", "ночью", "village",
    "post", "Fire", "tractor", "ՀՐԵՏԱՆԱՁԳ",
)  # fmt: skip
# What a drawn query may filter by (a few at once).
FILTERS = (
    "time", "logged", "party", "category", "status", "blamed", "box", "near", "border", "side",
    "text", "investigation", "collapse", "order", "as_of",
)  # fmt: skip
CATEGORIES = pb.IncidentCategory.values()[1:]
# The statuses the seeded log has (no findings: jointly attested ones are checked below).
STATUSES = api.IncidentStatus.values()[1:6]
KINDS = ("point",) * 7 + ("line", "polygon", "observation")
BERD = (40.8811, 45.3875)  # ARM, 8.5 km from the border
SEEDED = 150  # reports in every module's log before the queries


# -- reports at random places along the real border ---------------------------------------


def _border_place(rng: random.Random) -> tuple[float, float]:
    """A point within about 13 km of a random point of the real border."""
    lines = raw_border()
    names = sorted(lines)
    seg = rng.choices(names, weights=[lines[n].length for n in names])[0]
    p = lines[seg].interpolate(rng.random(), normalized=True)
    return p.y + rng.uniform(-0.12, 0.12), p.x + rng.uniform(-0.12, 0.12)


def _point(lat: float, lon: float) -> pb.GeoPoint:
    return pb.GeoPoint(latitude=lat, longitude=lon)


def random_report(
    rng: random.Random,
    *,
    at: tuple[float, float] | None = None,
    start_us: int | None = None,
    kind: str | None = None,
) -> pb.IncidentReport:
    party = rng.choice(("ARM", "AZE"))
    lat, lon = at or _border_place(rng)
    start = start_us if start_us is not None else now_us() - rng.randrange(7 * HOUR_US, 30 * DAY_US)
    r = pb.IncidentReport(
        reporting_party=party,
        created_time=to_timestamp(now_us()),
        window=pb.TimeWindow(
            start=to_timestamp(start),
            end=to_timestamp(start + rng.randrange(0, 6 * HOUR_US)),
            precision=pb.TIME_PRECISION_HOUR,
        ),
        category=rng.choice(CATEGORIES),
        observation_mode=pb.OBSERVATION_MODE_HEARD,
        alleged_responsible_party=rng.choice(
            ("", "ARM", "AZE", "AZE" if party == "ARM" else "ARM")
        ),
        narrative=" ".join(rng.sample(WORDS, rng.randrange(0, 5))),
        narrative_language="en",
    )
    kind = kind or rng.choice(KINDS)
    loc = r.location
    if kind == "point":
        loc.point.CopyFrom(_point(lat, lon))
        loc.uncertainty_m = rng.choice((0, 50, 500, 2000))
    elif kind == "line":
        loc.line.CopyFrom(
            pb.GeoLine(
                origin=_point(lat, lon),
                impact=_point(lat + rng.uniform(0.005, 0.03), lon + rng.uniform(-0.03, 0.03)),
            )
        )
    elif kind == "polygon":
        d = rng.uniform(0.002, 0.02)
        loc.polygon.CopyFrom(
            pb.GeoPolygon(points=[_point(lat, lon), _point(lat + d, lon), _point(lat, lon + d)])
        )
    else:
        loc.observation.CopyFrom(
            pb.Observation(
                observer=_point(lat, lon),
                bearing_from_deg=rng.choice((0, 90, 200)),
                bearing_to_deg=rng.choice((45, 120, 300)),
                distance_min_m=100,
                distance_max_m=rng.choice((1500, 4000)),
            )
        )
    loc.precision = pb.LOCATION_PRECISION_NEAR
    return r


def _monitor(parties: Parties, party: str) -> SigningKey:
    return parties.arm_monitor if party == "ARM" else parties.aze_monitor


def _authority(parties: Parties, party: str) -> SigningKey:
    return parties.arm_authority if party == "ARM" else parties.aze_authority


def _envelope(kind: str, statement: Message, key: SigningKey) -> bytes:
    return dsse.sign(kind, statement.SerializeToString(), [key]).to_json()


def submit_reports(running: RunningLedger, reports: list[pb.IncidentReport]) -> list[int]:
    envelopes = [
        _envelope(statements.INCIDENT_REPORT, r, _monitor(running.parties, r.reporting_party))
        for r in reports
    ]
    found = []
    for start in range(0, len(envelopes), 64):
        for result in running.client.submit_batch(envelopes[start : start + 64]):
            assert isinstance(result, api.SubmitResponse), result
            found.append(result.receipt.index)
    return found


def _other(party: str) -> str:
    return "AZE" if party == "ARM" else "ARM"


def answer(running: RunningLedger, index: int, report: pb.IncidentReport, kind: int) -> int:
    claim = pb.CounterClaim(
        incident_index=index,
        created_time=to_timestamp(now_us()),
        party=_other(report.reporting_party),
        kind=kind,  # type: ignore[arg-type]
        narrative="Not as reported.",
        narrative_language="en",
    )
    key = _authority(running.parties, claim.party)
    return running.client.submit(_envelope(statements.COUNTER_CLAIM, claim, key)).receipt.index


def retract(running: RunningLedger, index: int, report: pb.IncidentReport) -> int:
    retraction = pb.IncidentRetraction(
        incident_index=index,
        created_time=to_timestamp(now_us()),
        party=report.reporting_party,
        reason="double-counted",
    )
    key = _authority(running.parties, report.reporting_party)
    envelope = _envelope(statements.RETRACTION, retraction, key)
    return running.client.submit(envelope).receipt.index


def investigate(running: RunningLedger, indexes: list[int], *, accept: bool) -> int:
    request = pb.InvestigationRequest(
        created_time=to_timestamp(now_us()),
        party="ARM",
        incident_indexes=indexes,
        respondents=["AZE"],
        answer_by=to_timestamp(now_us() + 30 * DAY_US),
        scope="Fire near the posts",
        scope_language="en",
    )
    p = running.parties
    envelope = _envelope(statements.INVESTIGATION_REQUEST, request, p.arm_authority)
    inv = running.client.submit(envelope).receipt.index
    if accept:
        response = pb.InvestigationResponse(
            investigation_index=inv,
            created_time=to_timestamp(now_us()),
            party="AZE",
            decision=pb.INVESTIGATION_DECISION_ACCEPT,
        )
        envelope = _envelope(statements.INVESTIGATION_RESPONSE, response, p.aze_authority)
        running.client.submit(envelope)
    return inv


# -- the reference: a brute-force filter over the log's entries -----------------------------


@dataclass
class Known:
    index: int
    logged_us: int
    report: pb.IncidentReport
    geo: log_pb2.GeoFacts
    duplicate: bool


def _anchor(r: pb.IncidentReport) -> tuple[float, float]:
    loc = r.location
    kind = loc.WhichOneof("geometry")
    p = {
        "point": loc.point,
        "line": loc.line.origin,
        "observation": loc.observation.observer,
        "polygon": loc.polygon.points[0] if loc.polygon.points else loc.point,
    }[kind or "point"]
    return p.latitude, p.longitude


def _latlon(p: pb.GeoPoint) -> tuple[float, float]:
    return p.latitude, p.longitude


def _upper(values: Iterable[str]) -> set[str]:
    return {v.upper() for v in values}


def _side(geo: log_pb2.GeoFacts) -> str:
    if geo.ambiguous:
        return "ambiguous"
    if geo.shares:
        most = [s.territory or "neither" for s in geo.shares if s.share > 0.5]
        return most[0] if most else "ambiguous"
    return geo.territory or "neither"


@dataclass
class Reference:
    """Everything the log holds that a Timeline filter reads, decoded from its entries
    (GetEntries: the verbatim leaves), and a filter written out over it."""

    borders: BorderDataset | None = None
    size: int = 0
    reports: dict[int, Known] = field(default_factory=dict)
    links: dict[int, list[Link]] = field(default_factory=dict)
    investigations: dict[int, list[int]] = field(default_factory=dict)

    def refresh(self, client: LedgerClient) -> None:
        for e in client.entries(self.size, 0):
            entry = parse_entry(e.entry)
            envelope = dsse.Envelope.from_json(entry.envelope)
            s = statements.decode(envelope.payload_type, envelope.payload)
            i = e.index
            if isinstance(s, pb.IncidentReport):
                self.reports[i] = Known(
                    i,
                    to_us(entry.integrated_time),
                    s,
                    entry.validation.geo,
                    len(entry.validation.likely_duplicates) > 0,
                )
            elif isinstance(s, pb.CounterClaim):
                self._link(s.incident_index, i, incidents.COUNTER_CLAIM, s.kind)
            elif isinstance(s, pb.IncidentRetraction):
                self._link(s.incident_index, i, incidents.RETRACTION)
            elif isinstance(s, pb.InvestigationRequest):
                self.investigations[i] = list(s.incident_indexes)
            elif (
                isinstance(s, pb.InvestigationResponse)
                and s.decision == pb.INVESTIGATION_DECISION_ACCEPT
            ):  # the one respondent accepted
                for target in self.investigations[s.investigation_index]:
                    self._link(target, i, incidents.INVESTIGATION_ACCEPTED)
            self.size = i + 1

    def _link(self, target: int, index: int, relation: str, response: int = 0) -> None:
        self.links.setdefault(target, []).append(Link(target, index, relation, response))

    def status(self, index: int, before: int) -> int:
        return incidents.derive_status(x for x in self.links.get(index, []) if x.index < before)

    def matches(self, rq: api.TimelineRequest, before: int) -> list[int]:
        """The incidents `rq` asks for, in its order, written out one filter at a time."""
        found = []
        for k in self.reports.values():
            if k.index >= before or not self._passes(rq, k, before):
                continue
            found.append(k)
        if rq.order == api.TIMELINE_ORDER_LOG_INDEX:
            found.sort(key=lambda k: k.index)
        else:
            found.sort(key=lambda k: (to_us(k.report.window.start), k.index))
        return [k.index for k in found]

    def _passes(self, rq: api.TimelineRequest, k: Known, before: int) -> bool:
        r, geo = k.report, k.geo
        start, end = to_us(r.window.start), to_us(r.window.end)
        lat, lon = _anchor(r)
        checks = [
            not rq.HasField("since") or end >= to_us(rq.since),
            not rq.HasField("until") or start <= to_us(rq.until),
            not rq.HasField("logged_since") or k.logged_us >= to_us(rq.logged_since),
            not rq.HasField("logged_until") or k.logged_us <= to_us(rq.logged_until),
            not rq.parties or r.reporting_party in _upper(rq.parties),
            not rq.categories or r.category in rq.categories,
            not rq.statuses or self.status(k.index, before) in rq.statuses,
            not rq.blamed_parties or r.alleged_responsible_party in _upper(rq.blamed_parties),
            not rq.sides or _side(geo).upper() in _upper(rq.sides),
            not rq.text or rq.text.casefold() in r.narrative.casefold(),
            not rq.investigation_index or k.index in self.investigations[rq.investigation_index],
            not rq.collapse_duplicates or not k.duplicate,
        ]
        if rq.HasField("box"):
            b = rq.box
            checks.append(
                b.min_latitude <= lat <= b.max_latitude
                and b.min_longitude <= lon <= b.max_longitude
            )
        if rq.HasField("near"):
            c = rq.near.center
            _, _, metres = GEOD.inv(c.longitude, c.latitude, lon, lat)
            checks.append(metres <= rq.near.within_m)
        if rq.HasField("near_border"):
            nb = rq.near_border
            checks.append(self.border_m(k, nb.segment) <= nb.within_m)
        return all(checks)

    def border_m(self, k: Known, segment: str) -> float:
        """How far the report's place lies from the border, or from one segment: the
        recorded distance of a point, observer or line to the border; a line crossing that
        border (a recorded crossing on it), or a polygon meeting it, 0; else the nearest of
        its points, measured (to 0.1 m, as facts record) by the data set's geodesic search."""
        assert self.borders is not None
        loc, geo = k.report.location, k.geo
        kind = loc.WhichOneof("geometry")
        if not segment and kind != "polygon":
            return geo.distance_to_border_m
        lines = [raw_border()[segment]] if segment else list(raw_border().values())
        if kind == "polygon":
            ring = shapely.Polygon([(p.longitude, p.latitude) for p in loc.polygon.points])
            if any(ring.intersects(line) for line in lines):
                return 0.0
            points = [(p.latitude, p.longitude) for p in loc.polygon.points]
        elif kind == "line":
            ends = [c for c in geo.line.crossings if any(
                line.distance(shapely.Point(c.longitude, c.latitude)) < 1e-6 for line in lines
            )]  # fmt: skip
            if ends:
                return 0.0
            points = [_latlon(loc.line.origin), _latlon(loc.line.impact)]
        elif kind == "observation":
            points = [_latlon(loc.observation.observer)]
        else:
            points = [_latlon(loc.point)]
        return round(min(_to_segment_m(self.borders, *p, segment) for p in points), 1)


@dataclass
class World:
    running: RunningLedger
    ref: Reference
    investigations: list[int]

    @property
    def client(self) -> LedgerClient:
        return self.running.client

    def __repr__(self) -> str:  # hypothesis prints it with each failing example
        return f"World(size={self.ref.size}, db={self.running.db_url.split(':')[0]})"


def _seed(running: RunningLedger) -> list[int]:
    """150 reports along the border (some likely duplicates), answers, retractions and two
    investigations (one accepted)."""
    rng = random.Random(20_240_501)
    reports = [random_report(rng) for _ in range(140)]
    indexes = submit_reports(running, reports)
    # Likely duplicates: the same place and time, a few hundred metres off.
    twins = []
    for r in rng.sample(reports, 10):
        lat, lon = _anchor(r)
        twins.append(
            random_report(
                rng, at=(lat + 0.002, lon - 0.002), start_us=to_us(r.window.start), kind="point"
            )
        )
    indexes += submit_reports(running, twins)
    by_index = dict(zip(indexes, reports + twins, strict=True))
    for i in rng.sample(indexes, 30):
        kind = rng.choice(
            (
                pb.RESPONSE_KIND_DENIAL,
                pb.RESPONSE_KIND_ALTERNATIVE_ACCOUNT,
                pb.RESPONSE_KIND_COUNTER_ALLEGATION,
                pb.RESPONSE_KIND_ACKNOWLEDGEMENT,
            )
        )
        answer(running, i, by_index[i], kind)
        if rng.random() < 0.3:
            answer(running, i, by_index[i], pb.RESPONSE_KIND_ACKNOWLEDGEMENT)
    investigations = [
        investigate(running, rng.sample(indexes, 6), accept=True),
        investigate(running, rng.sample(indexes, 4), accept=False),
    ]
    for i in rng.sample(indexes, 10):
        retract(running, i, by_index[i])
    return investigations


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, borders: BorderDataset
) -> Iterator[World]:
    """One ledger for the module's queries, on each database."""
    tmp = tmp_path_factory.mktemp("queries")
    with (
        fresh_database(request, tmp) as url,
        serve(url, Parties(), borders, LogClock(), tmp) as running,
    ):
        investigations = _seed(running)
        ref = Reference(borders=running.ledger.borders)
        ref.refresh(running.client)
        yield World(running, ref, investigations)


def read_pages(client: LedgerClient, rq: api.TimelineRequest) -> list[api.TimelineResponse]:
    """Every page of a query, checking each page's size, `more` flags and tokens."""
    page_rq = api.TimelineRequest()
    page_rq.CopyFrom(rq)
    got: list[api.TimelineResponse] = []
    for _ in range(500):
        page = list(client.timeline_page(page_rq))
        assert len(page) <= (rq.limit or 10_000)
        assert all(r.more for r in page[:-1])
        got += page
        if not page or not page[-1].more:
            return got
        assert len(page) == rq.limit  # a page is cut only when full
        page_rq.page_token = page[-1].next_page_token
    raise AssertionError("paging did not end")


def check(world: World, rq: api.TimelineRequest) -> list[api.TimelineResponse]:
    """The query's pages, against the reference."""
    got = read_pages(world.client, rq)
    before = rq.as_of_index or world.ref.size
    assert [g.index for g in got] == world.ref.matches(rq, before)
    assert all(g.as_of_index == before for g in got)
    assert [g.status for g in got] == [world.ref.status(g.index, before) for g in got]
    return got


# -- every filter, and combinations, against the reference ---------------------------------


@st.composite
def queries(draw: st.DrawFn, ref: Reference, investigations: list[int]) -> api.TimelineRequest:
    """A query of a few filters at once, their values drawn around what the log holds."""
    # Drawn by position among the seeded reports (which every run has), so that an example
    # draws the same however far the log has grown.
    known = [ref.reports[i] for i in sorted(ref.reports)[:SEEDED]]

    def pick() -> Known:
        return known[draw(st.integers(0, SEEDED - 1))]

    rq = api.TimelineRequest(limit=draw(st.sampled_from([0, 1, 3, 7, 25])))
    wanted = draw(st.sets(st.sampled_from(FILTERS), min_size=1, max_size=4))
    if "time" in wanted:
        a, b = sorted(to_us(pick().report.window.start) for _ in range(2))
        if draw(st.booleans()):
            rq.since.CopyFrom(to_timestamp(a))
        if draw(st.booleans()):
            rq.until.CopyFrom(to_timestamp(b))
    if "logged" in wanted:
        a, b = sorted(pick().logged_us for _ in range(2))
        rq.logged_since.CopyFrom(to_timestamp(a))
        if draw(st.booleans()):
            rq.logged_until.CopyFrom(to_timestamp(b))
    if "party" in wanted:
        rq.parties.append(draw(st.sampled_from(["arm", "AZE", "Arm", "aze"])))
    if "category" in wanted:
        rq.categories.extend(draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3)))
    if "status" in wanted:
        rq.statuses.extend(draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=2)))
    if "blamed" in wanted:
        rq.blamed_parties.append(draw(st.sampled_from(["ARM", "aze"])))
    if "box" in wanted:
        lat, lon = _anchor(pick().report)
        dlat, dlon = draw(st.floats(0, 0.3)), draw(st.floats(0, 0.3))
        rq.box.CopyFrom(
            api.GeoBox(
                min_latitude=lat - dlat,
                min_longitude=lon - dlon,
                max_latitude=lat + draw(st.floats(0, 0.3)),
                max_longitude=lon + dlon,
            )
        )
    if "near" in wanted:
        lat, lon = _anchor(pick().report)
        rq.near.center.CopyFrom(_point(lat + draw(st.floats(-0.05, 0.05)), lon))
        rq.near.within_m = draw(st.sampled_from([300.0, 2_000.0, 8_000.0, 30_000.0]))
    if "border" in wanted:
        rq.near_border.within_m = draw(st.sampled_from([0.0, 1_000.0, 5_000.0, 15_000.0]))
        rq.near_border.segment = draw(st.sampled_from(["", "", "main", "nakhchivan"]))
    if "side" in wanted:
        rq.sides.extend(
            draw(
                st.lists(
                    st.sampled_from(["ARM", "aze", "neither", "AMBIGUOUS"]), min_size=1, max_size=2
                )
            )
        )
    if "text" in wanted:
        word = draw(st.sampled_from(WORDS))
        cut = draw(st.integers(0, max(len(word) - 3, 0)))
        piece = word[cut : cut + 3]
        rq.text = piece.upper() if draw(st.booleans()) else piece.lower()
    if "investigation" in wanted:
        rq.investigation_index = draw(st.sampled_from(investigations))
    if "collapse" in wanted:
        rq.collapse_duplicates = True
    if "order" in wanted:
        rq.order = api.TIMELINE_ORDER_LOG_INDEX
    if "as_of" in wanted:
        first = max(investigations) + 1
        rq.as_of_index = first + draw(st.integers(0, 10**6)) % (ref.size - first + 1)
    return rq


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_filter_and_their_combinations_match_a_scan_of_the_log(
    world: World, data: st.DataObject
) -> None:
    # Now and then a new report or two at random border places, so the log grows as
    # queries are asked of it.
    rng = data.draw(st.randoms(use_true_random=False))
    extra = [random_report(rng) for _ in range(data.draw(st.integers(0, 2)))]
    if extra:
        submit_reports(world.running, extra)
    world.ref.refresh(world.client)
    rq = data.draw(queries(world.ref, world.investigations))
    check(world, rq)


def _set_filter(rq: api.TimelineRequest, name: str, world: World) -> None:
    """One filter of FILTERS, with a value the seeded log gives some and not all answers."""
    known = [world.ref.reports[i] for i in sorted(world.ref.reports)[:SEEDED]]
    if name == "time":
        starts = sorted(to_us(k.report.window.start) for k in known)
        rq.since.CopyFrom(to_timestamp(starts[SEEDED // 4]))
        rq.until.CopyFrom(to_timestamp(starts[SEEDED * 3 // 4]))
    elif name == "logged":
        logged = sorted({k.logged_us for k in known})
        rq.logged_since.CopyFrom(to_timestamp(logged[len(logged) // 2]))
    elif name == "party":
        rq.parties.append("aze")
    elif name == "category":
        rq.categories.extend([pb.INCIDENT_CATEGORY_SNIPER, pb.INCIDENT_CATEGORY_DRONE_STRIKE])
    elif name == "status":
        rq.statuses.extend([api.INCIDENT_STATUS_DISPUTED, api.INCIDENT_STATUS_REPORTED])
    elif name == "blamed":
        rq.blamed_parties.append("ARM")
    elif name == "box":
        rq.box.CopyFrom(
            api.GeoBox(min_latitude=40.0, min_longitude=45.0, max_latitude=41.3, max_longitude=46.0)
        )
    elif name == "near":
        rq.near.CopyFrom(api.NearPoint(center=_point(*BERD), within_m=60_000))
    elif name == "border":
        rq.near_border.CopyFrom(api.NearBorder(within_m=8_000, segment="main"))
    elif name == "side":
        rq.sides.extend(["AZE", "ambiguous"])
    elif name == "text":
        rq.text = "e"
    elif name == "investigation":
        rq.investigation_index = world.investigations[0]
    elif name == "collapse":
        rq.collapse_duplicates = True
    elif name == "order":
        rq.order = api.TIMELINE_ORDER_LOG_INDEX
    elif name == "as_of":
        rq.as_of_index = max(world.investigations) + 5
    else:
        raise AssertionError(name)


def test_every_pair_of_filters_matches_a_scan_of_the_log(world: World) -> None:
    """Each of the 105 pairs of FILTERS, with fixed values, against the reference (in pages
    of 7, so that paging is crossed with every pair too)."""
    world.ref.refresh(world.client)
    some = 0
    for a, b in itertools.combinations(FILTERS, 2):
        rq = api.TimelineRequest(limit=7)
        _set_filter(rq, a, world)
        _set_filter(rq, b, world)
        some += bool(check(world, rq))
    assert some > 80  # most pairs find something: the comparisons are not of empty lists


def test_each_filter_alone_finds_some_and_leaves_out_some(world: World) -> None:
    """The seeded log exercises every filter: each finds some incidents and not all."""
    world.ref.refresh(world.client)
    lat, lon = BERD
    one_of_each = {
        "since": api.TimelineRequest(since=to_timestamp(now_us() - 10 * DAY_US)),
        "until": api.TimelineRequest(until=to_timestamp(now_us() - 10 * DAY_US)),
        "logged": api.TimelineRequest(
            logged_since=to_timestamp(sorted(k.logged_us for k in world.ref.reports.values())[100])
        ),
        "party": api.TimelineRequest(parties=["aze"]),
        "category": api.TimelineRequest(categories=[pb.INCIDENT_CATEGORY_SNIPER]),
        "status": api.TimelineRequest(statuses=[api.INCIDENT_STATUS_DISPUTED]),
        "retracted": api.TimelineRequest(statuses=[api.INCIDENT_STATUS_RETRACTED]),
        "under_investigation": api.TimelineRequest(
            statuses=[api.INCIDENT_STATUS_UNDER_INVESTIGATION]
        ),
        "blamed": api.TimelineRequest(blamed_parties=["arm"]),
        "box": api.TimelineRequest(
            box=api.GeoBox(
                min_latitude=40.5, min_longitude=45.0, max_latitude=41.3, max_longitude=45.6
            )
        ),
        "near": api.TimelineRequest(near=api.NearPoint(center=_point(lat, lon), within_m=40_000)),
        "border": api.TimelineRequest(near_border=api.NearBorder(within_m=3_000)),
        "segment": api.TimelineRequest(
            near_border=api.NearBorder(within_m=20_000, segment="nakhchivan")
        ),
        "side": api.TimelineRequest(sides=["neither"]),
        "ambiguous": api.TimelineRequest(sides=["ambiguous"]),
        "text": api.TimelineRequest(text="drone"),
        "unicode text": api.TimelineRequest(text="STRASSE"),
        "armenian text": api.TimelineRequest(text="հրետ"),
        "cyrillic text": api.TimelineRequest(text="НОЧЬЮ"),
        "investigation": api.TimelineRequest(investigation_index=world.investigations[0]),
        "collapsed": api.TimelineRequest(collapse_duplicates=True),
    }
    total = len(world.ref.matches(api.TimelineRequest(), world.ref.size))
    for name, rq in one_of_each.items():
        got = check(world, rq)
        assert 0 < len(got) < total, name


def test_combined_filters_and_log_order(world: World) -> None:
    world.ref.refresh(world.client)
    rq = api.TimelineRequest(
        parties=["arm"],
        since=to_timestamp(now_us() - 20 * DAY_US),
        near_border=api.NearBorder(within_m=10_000, segment="main"),
        sides=["ARM", "ambiguous"],
        order=api.TIMELINE_ORDER_LOG_INDEX,
        limit=4,
    )
    got = check(world, rq)
    assert got and [g.index for g in got] == sorted(g.index for g in got)


# -- paging while entries are appended ---------------------------------------------------


def test_pages_hold_still_while_entries_are_appended(world: World) -> None:
    """A thread appends reports (many sorting before the pages already read) and retracts
    incidents while pages are read: the pages together are the query's answer as of the
    first page's snapshot, each incident once, statuses as of that snapshot."""
    world.ref.refresh(world.client)
    running = world.running
    rq = api.TimelineRequest(near_border=api.NearBorder(within_m=12_000), limit=9)
    # Unanswered incidents the pages will show, latest in incident time first: retracted
    # while the pages before them are read.
    retractable = [
        world.ref.reports[i]
        for i in world.ref.matches(rq, world.ref.size)
        if not world.ref.links.get(i)
    ]
    stop = threading.Event()
    appended: list[int] = []

    def append() -> None:
        rng = random.Random(99)
        with LedgerClient(running.address) as other:
            writer = RunningLedger(running.ledger, other, running.address, "", running.parties)
            while not stop.is_set():
                appended.extend(submit_reports(writer, [random_report(rng) for _ in range(4)]))
                if retractable:
                    k = retractable.pop()
                    retract(writer, k.index, k.report)

    thread = threading.Thread(target=append)
    thread.start()
    got: list[api.TimelineResponse] = []
    try:
        page_rq = api.TimelineRequest()
        page_rq.CopyFrom(rq)
        for _ in range(100):
            page = list(world.client.timeline_page(page_rq))
            got += page
            if not page or not page[-1].more:
                break
            page_rq.page_token = page[-1].next_page_token
            size = running.ledger.store.tree_size()
            deadline = time.monotonic() + 10
            while running.ledger.store.tree_size() == size and time.monotonic() < deadline:
                time.sleep(0.01)  # let the writer append between two pages
    finally:
        stop.set()
        thread.join()
    snapshot = got[0].as_of_index
    world.ref.refresh(world.client)
    assert world.ref.size > snapshot
    indexes = [g.index for g in got]
    assert len(indexes) == len(set(indexes))
    assert indexes == world.ref.matches(rq, snapshot)
    assert all(g.as_of_index == snapshot for g in got)
    assert [g.status for g in got] == [world.ref.status(i, snapshot) for i in indexes]
    # Entries appended meanwhile would have been on these pages (some before the cursor):
    # they are in none of them, and a query started anew finds them.
    later = [i for i in world.ref.matches(rq, world.ref.size) if i >= snapshot]
    assert later
    last = got[-1]
    behind = [
        i
        for i in later
        if (to_us(world.ref.reports[i].report.window.start), i)
        < (to_us(last.report.window.start), last.index)
    ]
    assert behind
    fresh = read_pages(world.client, api.TimelineRequest(near_border=rq.near_border, limit=50))
    assert set(later) <= {g.index for g in fresh}
    # Retracted after the snapshot: its pages show it as it stood then.
    now_status = {g.index: g.status for g in fresh}
    assert any(
        g.status != api.INCIDENT_STATUS_RETRACTED
        and now_status[g.index] == api.INCIDENT_STATUS_RETRACTED
        for g in got
    )


# -- refusals ------------------------------------------------------------------------------


def _refused(client: LedgerClient, rq: api.TimelineRequest) -> tuple[grpc.StatusCode, list[str]]:
    with pytest.raises(grpc.RpcError) as info:
        list(client.timeline_page(rq))
    assert isinstance(info.value, grpc.Call)
    return info.value.code(), field_violations(info.value)


def _token_of(rq: api.TimelineRequest, client: LedgerClient) -> str:
    return next(iter(client.timeline_page(rq))).next_page_token


def test_refusals_name_the_field(world: World) -> None:
    client = world.client
    INVALID = grpc.StatusCode.INVALID_ARGUMENT
    token = _token_of(api.TimelineRequest(limit=1), client)
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[-1] ^= 1  # another query's digest
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    near = api.NearPoint(center=_point(*BERD), within_m=500_001)
    t = now_us()
    cases: list[tuple[api.TimelineRequest, grpc.StatusCode, str]] = [
        (api.TimelineRequest(parties=["ARM", "xx"]), INVALID, "parties[1]"),
        (api.TimelineRequest(blamed_parties=["nobody"]), INVALID, "blamed_parties[0]"),
        (api.TimelineRequest(categories=[99]), INVALID, "categories[0]"),  # type: ignore[list-item]
        (
            api.TimelineRequest(categories=[pb.INCIDENT_CATEGORY_UNSPECIFIED]),
            INVALID,
            "categories[0]",
        ),
        (api.TimelineRequest(statuses=[1, 42]), INVALID, "statuses[1]"),  # type: ignore[list-item]
        (api.TimelineRequest(sides=["west"]), INVALID, "sides[0]"),
        (api.TimelineRequest(near=near), INVALID, "near.within_m"),
        (
            api.TimelineRequest(near=api.NearPoint(center=_point(*BERD), within_m=0)),
            INVALID,
            "near.within_m",
        ),
        (
            api.TimelineRequest(near=api.NearPoint(center=_point(91, 45), within_m=10)),
            INVALID,
            "near.center.latitude",
        ),
        (
            api.TimelineRequest(near_border=api.NearBorder(within_m=float("nan"))),
            INVALID,
            "near_border.within_m",
        ),
        (
            api.TimelineRequest(near_border=api.NearBorder(within_m=10, segment="west")),
            INVALID,
            "near_border.segment",
        ),
        (
            api.TimelineRequest(
                box=api.GeoBox(min_latitude=41, min_longitude=45, max_latitude=40, max_longitude=46)
            ),
            INVALID,
            "box.min_latitude",
        ),
        (api.TimelineRequest(text="x" * 201), INVALID, "text"),
        (api.TimelineRequest(page_token="not a token"), INVALID, "page_token"),
        (api.TimelineRequest(page_token="A" * 5000), INVALID, "page_token"),
        (api.TimelineRequest(page_token=forged, limit=1), INVALID, "page_token"),
        # A token of another query (the same order, other filters).
        (api.TimelineRequest(page_token=token, parties=["ARM"]), INVALID, "page_token"),
        (
            api.TimelineRequest(logged_since=to_timestamp(t), logged_until=to_timestamp(t - 1)),
            INVALID,
            "logged_since",
        ),
        (api.TimelineRequest(order=7), INVALID, "order"),  # type: ignore[arg-type]
        (
            api.TimelineRequest(investigation_index=1),
            grpc.StatusCode.NOT_FOUND,
            "investigation_index",
        ),
        (api.TimelineRequest(as_of_index=2**64 - 1), grpc.StatusCode.OUT_OF_RANGE, "as_of_index"),
    ]
    for rq, code, name in cases:
        assert _refused(client, rq) == (code, [name]), name
    # The same token goes on for the same query, whatever the case of its party codes.
    same = api.TimelineRequest(parties=["arm"], limit=1)
    nxt = _token_of(same, client)
    assert list(client.timeline_page(api.TimelineRequest(parties=["ARM"], page_token=nxt)))


# -- a selective query reads only what it returns ------------------------------------------


def sqlite_steps(engine: Engine, run: Callable[[], object], only: str = "FROM incidents") -> int:
    """The SQLite virtual machine steps that the SELECTs `run` executes (those that say
    `only`: the Timeline's search) take, run again on a connection of their own: they
    grow with the rows a query reads."""
    database = engine.url.database
    assert database
    raw = sqlite3.connect(database)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    try:
        raw.set_progress_handler(count, 1)
        for statement, params in selects_run(engine, run):
            if only in statement:
                raw.execute(statement, params).fetchall()
    finally:
        raw.close()
    return steps


def _cluster(rng: random.Random, center: tuple[float, float], n: int) -> list[pb.IncidentReport]:
    return [
        random_report(
            rng,
            at=(center[0] + rng.uniform(-0.02, 0.02), center[1] + rng.uniform(-0.02, 0.02)),
            kind="point",
        )
        for _ in range(n)
    ]


SELECTIVE = {
    "near": api.TimelineRequest(near=api.NearPoint(center=_point(*BERD), within_m=4_000)),
    "box": api.TimelineRequest(
        box=api.GeoBox(
            min_latitude=40.85, min_longitude=45.35, max_latitude=40.91, max_longitude=45.42
        )
    ),
    "near border": api.TimelineRequest(near_border=api.NearBorder(within_m=8_000, segment="main")),
}


def _asking(ledger: Ledger, rq: api.TimelineRequest) -> Callable[[], object]:
    return lambda: ledger.timeline(rq)


def test_a_selective_query_reads_through_the_indexes_only_what_it_returns(
    running: RunningLedger,
) -> None:
    rng = random.Random(5)
    # 30 reports around Berd (8.5 km from the border), 30 in Nakhchivan's north.
    submit_reports(running, _cluster(rng, BERD, 30) + _cluster(rng, (39.6, 45.3), 30))
    ledger = running.ledger
    engine = ledger.store.engine
    sizes = {n: len(ledger.timeline(rq).items) for n, rq in SELECTIVE.items()}
    assert all(0 < s < 60 for s in sizes.values()), sizes

    if engine.dialect.name != "sqlite":
        for name, index in (("near", "incidents_place"), ("near border", "incident_facts_border")):
            plan = _pg_plan(engine, _asking(ledger, SELECTIVE[name]))
            assert index in plan, plan
        return
    plans = sqlite_plans(engine, _asking(ledger, SELECTIVE["near"]))
    (plan,) = [p for s, p in plans.items() if "incident_places" in s]
    assert "VIRTUAL TABLE INDEX" in plan and "SCAN incidents" not in plan, plan
    plans = sqlite_plans(engine, _asking(ledger, SELECTIVE["near border"]))
    # The reports within the distance of the border, and the areas (which record none).
    found = [p for s, p in plans.items() if "incident_facts" in s]
    assert len(found) == 2, found
    for plan in found:
        assert "incident_facts_border" in plan and "SCAN" not in plan, plan
    for rq, indexes in (
        # The short windows by their start, the long ones by the partial index.
        (
            api.TimelineRequest(since=to_timestamp(now_us() - DAY_US)),
            ("incidents_window", "incidents_long_window"),
        ),
        (api.TimelineRequest(parties=["aze"]), ("incidents_party",)),
    ):
        plans = sqlite_plans(engine, _asking(ledger, rq))
        found = [p for s, p in plans.items() if "FROM incidents" in s]
        assert len(found) == len(indexes), found
        for plan, index in zip(found, indexes, strict=True):
            assert f"SEARCH incidents USING INDEX {index}" in plan, plan
    before = {n: sqlite_steps(engine, _asking(ledger, rq)) for n, rq in SELECTIVE.items()}
    # Five times as many reports elsewhere (on the Nakhchivan border, 150 km away): the
    # same queries return the same and read as much as before; the indexes lead them past
    # the rest.
    submit_reports(
        running,
        [
            random_report(rng, at=(rng.uniform(39.0, 39.5), rng.uniform(45.0, 45.5)), kind="point")
            for _ in range(240)
        ],
    )
    everything = ledger.timeline(api.TimelineRequest()).items
    assert len(everything) == 300
    whole = api.TimelineRequest(text="no narrative holds this")
    scan = sqlite_steps(engine, _asking(ledger, whole))
    for name, rq in SELECTIVE.items():
        assert len(ledger.timeline(rq).items) == sizes[name]
        steps = sqlite_steps(engine, _asking(ledger, rq))
        if name != "near border":
            assert steps <= before[name] * 1.1 + 100, (name, before[name], steps)
            continue
        # Near one segment: the reports within that distance of the border are measured (a
        # line from another segment's side may reach it), so the new ones recorded near
        # the Nakhchivan border are read too: no more than the query without the segment
        # reads (a search of incident_facts_border, as the plans above show).
        border = api.TimelineRequest(near_border=api.NearBorder(within_m=8_000))
        read = sqlite_steps(engine, _asking(ledger, border))
        assert steps <= read * 1.1 + 100, (steps, read)
    # A query that must read every row does read them: the measure would see a scan.
    assert scan > 300 * 5


def _pg_plan(engine: Engine, run: Callable[[], object]) -> str:
    """PostgreSQL's plan of the Timeline query `run` executes, with sequential scans
    discouraged: a table of a few rows is read whole whatever its indexes, so this shows
    that the query can use the index, as it does once the table is large."""
    (statement, params) = next(
        (s, p) for s, p in selects_run(engine, run) if "FROM incidents" in s and "ORDER BY" in s
    )
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SET enable_seqscan = off")
        cur.execute("EXPLAIN " + statement, params)
        return "\n".join(str(r[0]) for r in cur.fetchall())
    finally:
        raw.close()


def _fill_incidents(store: LedgerStore, rows: list[dict[str, Any]]) -> None:
    """Incident rows written straight into the tables (no entries: on PostgreSQL the
    foreign keys are not checked in this session), then ANALYZE, as autovacuum would."""
    pg = store.engine.dialect.name == "postgresql"
    with store.engine.begin() as conn:
        if pg:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(
                "INSERT INTO incidents VALUES (:idx, :party, :category, :window_start_us, "
                ":window_end_us, :latitude, :longitude, :territory)"
            ),
            rows,
        )
        if not pg:
            conn.execute(
                text("INSERT INTO incident_places VALUES (:idx, :lat, :lat, :lon, :lon)"),
                [{"idx": r["idx"], "lat": r["latitude"], "lon": r["longitude"]} for r in rows],
            )
    if pg:
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE incidents"))


def _rows_read_pg(engine: Engine, run: Callable[[], object]) -> int:
    """The rows PostgreSQL's scans of incidents read for the Timeline's searches `run`
    executes (EXPLAIN ANALYZE: rows kept plus rows removed), as the planner chooses."""
    read = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal read
        if node.get("Relation Name") == "incidents":
            loops = node.get("Actual Loops", 1)
            kept_removed = (
                node.get("Actual Rows", 0)
                + node.get("Rows Removed by Filter", 0)
                + node.get("Rows Removed by Index Recheck", 0)
            )
            read += kept_removed * loops
        for child in node.get("Plans", []):
            walk(child)

    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for statement, params in selects_run(engine, run):
            if "FROM incidents" in statement and "ORDER BY" in statement:
                cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
                row = cur.fetchone()
                assert row is not None
                walk(row[0][0]["Plan"])
    finally:
        raw.close()
    return read


def test_an_incident_time_window_reads_about_what_it_returns(db_url: str) -> None:
    """A year of reports, 20 a day (windows of up to 6 hours), and a few longer windows
    (two days to the 366 allowed): the last day's reports, and one party's, are read
    through the window-start index and the partial index of long windows, not a year of
    them. (Bounding the start by the longest window allowed read the whole year.)"""
    rng = random.Random(8)
    now = 1_790_000_000 * 1_000_000
    rows: list[dict[str, Any]] = []

    def add(start: int, length: int) -> None:
        rows.append(
            {
                "idx": len(rows) + 1,
                "party": rng.choice(("ARM", "AZE")),
                "category": 1,
                "window_start_us": start,
                "window_end_us": start + length,
                "latitude": 40.9,
                "longitude": 45.4,
                "territory": "ARM",
            }
        )

    for _ in range(365 * 20):
        add(now - rng.randrange(0, 365 * DAY_US), rng.randrange(0, 6 * HOUR_US))
    for days in (2, 9, 40, 366):  # long windows reaching into the last day, and not
        add(now - days * DAY_US, days * DAY_US)
        add(now - days * DAY_US - 3 * DAY_US, days * DAY_US)
    add(now - DAY_US - 1, DAY_US)  # as long as a short one may be, ending just inside
    store = LedgerStore.open(db_url)
    try:
        _fill_incidents(store, rows)
        since = now - DAY_US
        for query in (Query(since_us=since), Query(since_us=since, parties=("AZE",))):
            keys = store.timeline(query, before=len(rows) + 1, after=None, limit=10_000)
            expected = sorted(
                (r["window_start_us"], r["idx"])
                for r in rows
                if r["window_end_us"] >= since and (not query.parties or r["party"] == "AZE")
            )
            assert [(k.start_us, k.index) for k in keys] == expected
            assert 5 < len(keys) < 60

            def ask(q: Query = query) -> object:
                return store.timeline(q, before=len(rows) + 1, after=None, limit=10_000)

            if store.engine.dialect.name == "postgresql":
                # Read: the day's rows, the day before (the short windows that might reach
                # into it) and the long windows; never the year (7,300 rows).
                assert _rows_read_pg(store.engine, ask) < 150, query
            else:
                everything = sqlite_steps(
                    store.engine,
                    lambda: store.timeline(
                        Query(categories=(2,)), before=len(rows) + 1, after=None, limit=10
                    ),
                )
                steps = sqlite_steps(store.engine, ask)
                assert steps * 20 < everything, (query, steps, everything)
    finally:
        store.close()


def test_near_one_segment_is_the_distance_to_that_segment(running: RunningLedger) -> None:
    """Within N metres of a segment is the distance to that segment, whichever is nearest:
    (40.59, 45.44) is 1.3 km from `main`, its nearest, and 4.0 km from the Artsvashen
    exclave's. A polygon lying across the border is 0 m from it (its facts record no
    distance); one away from it, its nearest vertex's distance."""
    rng = random.Random(14)
    point = random_report(rng, at=(40.59, 45.44), kind="point")
    on_main = raw_border()["main"].interpolate(0.3, normalized=True)
    lat, lon = on_main.y, on_main.x

    def square(lat: float, lon: float, d: float) -> pb.IncidentReport:
        r = random_report(rng, at=(lat, lon), kind="point")
        r.location.ClearField("point")
        r.location.uncertainty_m = 0
        corners = [(lat - d, lon - d), (lat - d, lon + d), (lat + d, lon + d), (lat + d, lon - d)]
        r.location.polygon.points.extend(_point(*c) for c in corners)
        return r

    across, away = square(lat, lon, 0.01), square(40.59, 45.44, 0.002)
    i_point, i_across, i_away = submit_reports(running, [point, across, away])
    geo = parse_entry(next(iter(running.client.entries(i_point, i_point + 1))).entry).validation.geo
    assert geo.nearest_segment == "main" and 1_300 < geo.distance_to_border_m < 1_400

    def found(within: float, segment: str = "") -> set[int]:
        rq = api.TimelineRequest(near_border=api.NearBorder(within_m=within, segment=segment))
        return {r.index for r in running.client.timeline_page(rq)}

    assert i_point in found(5_000, "artsvashen_exclave")
    assert i_point not in found(3_500, "artsvashen_exclave")
    assert i_point in found(1_500, "main") and i_point not in found(1_000, "main")
    assert i_across in found(0) and i_across in found(0, "main")
    assert i_across not in found(20_000, "nakhchivan")
    # The small polygon around the point: its nearest vertex, about as far as the point.
    assert i_away in found(1_500) and i_away not in found(1_000)
    assert i_away in found(5_000, "artsvashen_exclave")
    assert i_away not in found(3_500, "artsvashen_exclave")


# -- amendments ---------------------------------------------------------------------------


def test_filters_read_the_report_as_first_logged(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(3)
    original = random_report(rng, at=BERD, kind="point")
    original.reporting_party = "ARM"
    original.narrative = "Mortar fire from the east."
    (index,) = submit_reports(running, [original])
    corrected = pb.IncidentReport()
    corrected.CopyFrom(original)
    corrected.location.point.CopyFrom(_point(39.6, 45.3))  # far away, in Nakhchivan
    corrected.narrative = "Drone strike."
    amendment = pb.IncidentAmendment(
        incident_index=index,
        created_time=to_timestamp(now_us()),
        party="ARM",
        corrected=corrected,
        reason="wrong post",
    )
    running.client.submit(_envelope(statements.AMENDMENT, amendment, running.parties.arm_monitor))
    near_berd = api.TimelineRequest(
        near=api.NearPoint(center=_point(*BERD), within_m=1_000), text="mortar"
    )
    (found,) = running.client.timeline_page(near_berd)
    assert found.index == index and found.current.report.narrative == "Drone strike."
    assert list(running.client.timeline_page(api.TimelineRequest(text="drone"))) == []
    rows = json.loads(
        _cli(
            capsys,
            "timeline",
            "--server",
            running.address,
            "--near",
            "40.8811,45.3875",
            "--within",
            "1km",
            "--text",
            "MORTAR",
            "--json",
        )
    )
    assert [(r["index"], r["narrative"], r["amended_at"]) for r in rows] == [
        (index, "Drone strike.", index + 1)
    ]


# -- the command line ----------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_cli_filters_work_in_process(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.ref.refresh(world.client)
    s = ("--server", world.running.address)
    aze = [k for k in world.ref.reports.values() if k.report.reporting_party == "AZE"]
    recent = [k for k in aze if to_us(k.report.window.end) >= now_us() - 7 * DAY_US]
    lat, lon = _anchor(recent[0].report)
    rows = json.loads(
        _cli(
            capsys,
            "timeline",
            *s,
            "--party",
            "aze",
            "--since",
            "7d",
            "--near",
            f"{lat},{lon}",
            "--within",
            "5000",
            "--json",
        )
    )
    rq = api.TimelineRequest(
        parties=["AZE"], near=api.NearPoint(center=_point(lat, lon), within_m=5000)
    )
    rq.since.CopyFrom(to_timestamp(now_us() - 7 * DAY_US))
    expected = world.ref.matches(rq, world.ref.size)
    assert recent[0].index in expected
    assert [r["index"] for r in rows] == expected
    assert all(r["party"] == "AZE" for r in rows)

    # Every option at once, as text; categories and statuses by their names.
    out = _cli(
        capsys,
        "timeline",
        *s,
        "--since",
        "P30D",
        "--until",
        "now",
        "--logged-since",
        "PT36H",
        "--category",
        "small-arms-fire,sniper,mortar_or_artillery,rocket,drone_strike",
        "--category",
        "other",
        "--status",
        "reported,disputed",
        "--blames",
        "arm,aze",
        "--side",
        "ARM",
        "--side",
        "aze,neither,ambiguous",
        "--bbox",
        "38,44,42,47",
        "--near-border",
        "30km",
        "--segment",
        "main",
        "--text",
        "e",
        "--collapse-duplicates",
        "--order",
        "log-index",
        "--limit",
        "3",
    )
    assert out.startswith("#") or out == "no incidents match\n"

    # Paging: a page token on stderr, the next page from it.
    assert main(["timeline", *s, "--party", "ARM", "--limit", "2", "--json"]) == 0
    captured = capsys.readouterr()
    first = json.loads(captured.out)
    token = captured.err.strip().rsplit(" ", 1)[-1]
    assert token == first[-1]["next_page_token"]
    second = json.loads(
        _cli(
            capsys,
            "timeline",
            *s,
            "--party",
            "ARM",
            "--limit",
            "2",
            "--page-token",
            token,
            "--json",
        )
    )
    arm = world.ref.matches(api.TimelineRequest(parties=["ARM"]), world.ref.size)
    assert [r["index"] for r in first + second] == arm[:4]


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat()


def test_each_cli_option_asks_for_its_filter(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each filter option alone: the request it makes is exactly the one written out here,
    and `ceasefire timeline --json` returns what the reference finds for that request,
    which is neither every incident in time order nor nothing (so an option dropped, or
    given to another field, shows)."""
    world.ref.refresh(world.client)
    ref, size = world.ref, world.ref.size
    s = ("--server", world.running.address)
    ends = sorted(to_us(k.report.window.end) for k in ref.reports.values())
    starts = sorted(to_us(k.report.window.start) for k in ref.reports.values())
    logged = sorted({k.logged_us for k in ref.reports.values()})  # a batch shares its time
    n = len(ends)
    R = api.TimelineRequest
    lat, lon = BERD
    cases: list[tuple[list[str], api.TimelineRequest]] = [
        (["--since", _iso(ends[n // 2])], R(since=to_timestamp(ends[n // 2]))),
        (["--until", _iso(starts[n // 2])], R(until=to_timestamp(starts[n // 2]))),
        (
            ["--logged-since", _iso(logged[len(logged) // 2])],
            R(logged_since=to_timestamp(logged[len(logged) // 2])),
        ),
        (
            ["--logged-until", _iso(logged[len(logged) // 2])],
            R(logged_until=to_timestamp(logged[len(logged) // 2])),
        ),
        (["--party", "aze"], R(parties=["aze"])),
        (
            ["--category", "sniper", "--category", "drone-strike,rocket"],
            R(
                categories=[
                    pb.INCIDENT_CATEGORY_SNIPER,
                    pb.INCIDENT_CATEGORY_DRONE_STRIKE,
                    pb.INCIDENT_CATEGORY_ROCKET,
                ]
            ),
        ),
        (
            ["--status", "disputed,retracted"],
            R(statuses=[api.INCIDENT_STATUS_DISPUTED, api.INCIDENT_STATUS_RETRACTED]),
        ),
        (["--blames", "arm"], R(blamed_parties=["arm"])),
        (["--side", "neither", "--side", "AZE"], R(sides=["neither", "AZE"])),
        (
            ["--bbox", "40.5,45.0,41.3,45.6"],
            R(
                box=api.GeoBox(
                    min_latitude=40.5, min_longitude=45.0, max_latitude=41.3, max_longitude=45.6
                )
            ),
        ),
        (
            ["--near", f"{lat},{lon}", "--within", "40km"],
            R(near=api.NearPoint(center=_point(lat, lon), within_m=40_000)),
        ),
        (["--near-border", "3km"], R(near_border=api.NearBorder(within_m=3_000))),
        (
            ["--near-border", "5km", "--segment", "artsvashen_exclave"],
            R(near_border=api.NearBorder(within_m=5_000, segment="artsvashen_exclave")),
        ),
        (
            ["--near-border", "20000", "--segment", "main"],
            R(near_border=api.NearBorder(within_m=20_000, segment="main")),
        ),
        (["--text", "Drone"], R(text="Drone")),
        (
            ["--investigation", str(world.investigations[0])],
            R(investigation_index=world.investigations[0]),
        ),
        (["--collapse-duplicates"], R(collapse_duplicates=True)),
        (["--order", "log-index"], R(order=api.TIMELINE_ORDER_LOG_INDEX)),
        (["--as-of-index", str(size * 2 // 3)], R(as_of_index=size * 2 // 3)),
    ]
    parser = argparse.ArgumentParser()
    query_args.add_query_options(parser)
    everything = ref.matches(R(), size)
    for args, expected in cases:
        expected.order = expected.order or api.TIMELINE_ORDER_INCIDENT_TIME  # the default
        assert query_args.query_from_args(parser.parse_args(args), now=1) == expected, args
        want = ref.matches(expected, expected.as_of_index or size)
        assert want and want != everything, args
        rows = json.loads(_cli(capsys, "timeline", *s, *args, "--json"))
        assert [r["index"] for r in rows] == want, args


def test_cli_refusals(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    s = ("--server", world.running.address)
    for args, says in [
        (["--since", "7 fortnights ago"], "--since '7 fortnights ago'"),
        (["--since", "P1M"], "years and months have no fixed length"),
        (["--category", "shouting"], "--category 'shouting': one of small_arms_fire"),
        (["--status", "won"], "--status 'won'"),
        (["--near", "40.88,45.39"], "--near LAT,LON and --within METRES go together"),
        (["--near", "40.88", "--within", "5"], "--near '40.88': give LAT,LON"),
        (["--bbox", "1,2,3"], "--bbox '1,2,3'"),
        (["--segment", "main"], "--segment NAME goes with --near-border METRES"),
        (["--within", "5", "--near", "1,x"], "not a number"),
    ]:
        assert main(["timeline", *s, *args]) == 2, args
        assert says in capsys.readouterr().err
    assert main(["timeline", *s, "--party", "xx"]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "parties[0]: unknown party 'xx'" in err
    assert main(["timeline", *s, "--near", "40.88,45.39", "--within", "600km"]) == 1
    assert "near.within_m" in capsys.readouterr().err


def test_relative_times() -> None:
    now = 1_750_000_000 * 1_000_000

    def parse(text: str) -> int:
        return query_args.parse_time(text, now, "--since")

    assert parse("7d") == parse("P7D") == parse("7 days ago") == parse("1w") == now - 7 * DAY_US
    assert parse("36h") == parse("PT36H") == parse("P1DT12H") == parse("1.5d") == now - 36 * HOUR_US
    assert parse("90m") == parse("PT90M") == parse("90 minutes ago") == now - 90 * 60_000_000
    assert parse("now") == now
    assert parse("2025-06-01") == parse("2025-06-01T00:00:00Z") == 1_748_736_000 * 1_000_000
    assert parse("2025-06-01T04:00:00+04:00") == 1_748_736_000 * 1_000_000
    for bad in ("P", "PT", "P1Y", "7 years ago", "yesterday", "P1DT"):
        with pytest.raises(query_args.QueryArgsError):
            parse(bad)
    assert query_args.parse_metres("5km", "--within") == 5000
    assert query_args.parse_metres("2.5 km", "--within") == 2500


# -- the status in SQL is incidents.derive_status ------------------------------------------

RELATIONS = st.sampled_from(
    [
        (incidents.RETRACTION, 0),
        (incidents.JOINT_FINDING, pb.FINDING_OUTCOME_CONFIRMED),
        (incidents.JOINT_FINDING, pb.FINDING_OUTCOME_NOT_CONFIRMED),
        (incidents.JOINT_FINDING, pb.FINDING_OUTCOME_INCONCLUSIVE),
        (incidents.FINDING, 0),
        (incidents.INVESTIGATION_ACCEPTED, 0),
        (incidents.INVESTIGATION_REQUEST, 0),
        (incidents.COUNTER_CLAIM, pb.RESPONSE_KIND_DENIAL),
        (incidents.COUNTER_CLAIM, pb.RESPONSE_KIND_ALTERNATIVE_ACCOUNT),
        (incidents.COUNTER_CLAIM, pb.RESPONSE_KIND_COUNTER_ALLEGATION),
        (incidents.COUNTER_CLAIM, pb.RESPONSE_KIND_ACKNOWLEDGEMENT),
        (incidents.COUNTER_CLAIM, pb.RESPONSE_KIND_UNDER_REVIEW),
        (incidents.AMENDMENT, 0),
        (incidents.LIKELY_DUPLICATE, 0),
        (incidents.EVIDENCE, 0),
    ]
)


@settings(max_examples=40, deadline=None)
@given(
    linked=st.lists(st.lists(RELATIONS, max_size=5), min_size=1, max_size=12),
    cut=st.integers(0, 60),
)
def test_the_status_filter_derives_the_status_as_incidents_does(
    tmp_path_factory: pytest.TempPathFactory, linked: list[list[tuple[str, int]]], cut: int
) -> None:
    store = LedgerStore.open(str(tmp_path_factory.mktemp("status") / "ledger.db"))
    try:
        rows: list[dict[str, object]] = []
        links: list[Link] = []
        for target, found in enumerate(linked, start=1):
            rows.append(
                {
                    "idx": target,
                    "party": "ARM",
                    "category": 1,
                    "window_start_us": target,
                    "window_end_us": target,
                    "latitude": 40.9,
                    "longitude": 45.4,
                    "territory": "ARM",
                }
            )
            for relation, response in found:
                links.append(Link(target, 100 + len(links) * 3 + target % 3, relation, response))
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO incidents VALUES (:idx, :party, :category, :window_start_us, "
                    ":window_end_us, :latitude, :longitude, :territory)"
                ),
                rows,
            )
            if links:
                conn.execute(
                    text("INSERT INTO links VALUES (:t, :i, :r, :s)"),
                    [
                        {"t": x.target, "i": x.index, "r": x.relation, "s": x.response}
                        for x in links
                    ],
                )
        before = 100 + cut * 3
        for status in range(1, 9):
            keys = store.timeline(Query(statuses=(status,)), before=before, after=None, limit=100)
            expected = [
                t
                for t in range(1, len(linked) + 1)
                if incidents.derive_status(x for x in links if x.target == t and x.index < before)
                == status
            ]
            assert [k.index for k in keys] == expected, status
    finally:
        store.close()


# -- migration 0007 files the reports logged before it -------------------------------------


def test_the_migration_files_earlier_reports_as_the_writer_does(running: RunningLedger) -> None:
    rng = random.Random(11)
    reports = [
        random_report(rng, kind=kind) for kind in ("point", "line", "polygon", "observation")
    ]
    reports += [random_report(rng) for _ in range(20)]
    lat, lon = _anchor(reports[0])
    reports.append(random_report(rng, at=(lat, lon), start_us=to_us(reports[0].window.start)))
    submit_reports(running, reports)
    engine = running.ledger.store.engine
    sqlite = engine.dialect.name == "sqlite"

    def filed() -> tuple[list[Any], list[Any]]:
        with engine.connect() as conn:
            facts = conn.execute(text("SELECT * FROM incident_facts ORDER BY idx")).all()
            if sqlite:
                places = conn.execute(text("SELECT * FROM incident_places ORDER BY idx")).all()
            else:
                places = conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE indexname = 'incidents_place'")
                ).all()
        return [tuple(r) for r in facts], [tuple(r) for r in places]

    written = filed()
    assert len(written[0]) == len(reports) and any(r[3] is None for r in written[0])  # a polygon
    assert any(r[5] for r in written[0])  # a likely duplicate
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE incident_facts"))
        conn.execute(text("DROP TABLE incident_places" if sqlite else "DROP INDEX incidents_place"))
        conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    migrate(engine)
    assert filed() == written
    near = api.TimelineRequest(near=api.NearPoint(center=_point(lat, lon), within_m=10))
    assert [r.index for r in running.client.timeline_page(near)]
