"""The duplicate search reads reports by (cell, period) key, not by scanning the log: it
must still find every match a scan of the whole log finds (across cell edges, period edges
and long windows), in the server's database and in the verifier's index alike; its query
must not read the incidents table whole, and in a busy stretch of border it must read few
more reports than could match."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from clients.cli import main
from ledger import duplicates
from ledger.clock import now_us, to_timestamp
from ledger.duplicates import Sighting, SightingIndex, box, likely_duplicates, overlaps
from ledger.storage import LedgerStore, Reads
from tests.conftest import RunningLedger, sqlite_plans
from tests.reports import report, signed
from tests.test_reports import duplicates_of

MINUTE_US = 60 * 1_000_000
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
BASE_US = 20_000 * DAY_US  # a midnight, UTC

# Places around a corner of four grid cells (0.02 degrees), so that nearby ones straddle
# cell edges; times around period edges, with some windows longer than MAX_PERIODS_FILED
# periods.
sightings = st.lists(
    st.tuples(
        st.floats(40.97, 41.03),
        st.floats(45.37, 45.43),
        st.integers(-3 * DAY_US, 3 * DAY_US),
        st.one_of(
            st.integers(0, 3 * 3600 * 1_000_000),
            st.integers(duplicates.MAX_PERIODS_FILED * duplicates.PERIOD_US, 20 * DAY_US),
        ),
        st.sets(st.sampled_from(["a" * 64, "b" * 64]), max_size=1),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(sightings)
def test_the_index_finds_what_a_scan_of_the_whole_log_finds(
    rows: list[tuple[float, float, int, int, set[str]]],
) -> None:
    index = SightingIndex()
    earlier: list[Sighting] = []
    for i, (lat, lon, start, length, evidence) in enumerate(rows):
        new = Sighting(i, BASE_US + start, BASE_US + start + length, lat, lon, frozenset(evidence))
        by_key = likely_duplicates(new, index.candidates(new))
        assert by_key == likely_duplicates(new, reversed(earlier))
        index.add(new)
        earlier.append(new)


def _busy(rng: random.Random, index: int) -> Sighting:
    """A report of a busy stretch: 20 x 20 km, windows of up to 6 hours over 30 days."""
    start = BASE_US + rng.randrange(30 * DAY_US)
    return Sighting(
        index, start, start + rng.randrange(6 * HOUR_US), 41.0 + rng.uniform(-0.09, 0.09),
        45.4 + rng.uniform(-0.12, 0.12), frozenset(),
    )  # fmt: skip


def test_a_search_in_a_busy_stretch_reads_a_few_times_what_could_match() -> None:
    """100 reports a day within 20 km: a search reads the reports filed in the few cells and
    periods around the new one, within a small multiple of those in its box and time slack
    (filed by day and 0.05-degree cell: 15 times; by 3 hours and 0.02 degrees: 2.6 times)."""
    rng = random.Random(7)
    index = SightingIndex()
    for i in range(3000):
        index.add(_busy(rng, i))
    read = could_match = 0
    for i in range(3000, 3300):
        new = _busy(rng, i)
        lat0, lat1, lon0, lon1 = box(new)
        for old in index.candidates(new):
            read += 1
            inside = lat0 <= old.latitude <= lat1 and lon0 <= old.longitude <= lon1
            could_match += inside and overlaps(new, old)
    assert could_match > 300  # the stretch is busy: about 4 a search
    assert read <= 6 * could_match, (read, could_match)


def _at(r: object, start_us: int, end_us: int) -> None:
    r.window.start.CopyFrom(to_timestamp(start_us))  # type: ignore[attr-defined]
    r.window.end.CopyFrom(to_timestamp(end_us))  # type: ignore[attr-defined]


def test_the_server_finds_matches_across_midnight_cell_edges_and_long_windows(
    running: RunningLedger,
) -> None:
    p = running.parties
    midnight = (now_us() - 3 * 3600 * 1_000_000) // DAY_US * DAY_US

    def submit(lat: float, lon: float, start_us: int, end_us: int) -> int:
        r = report("ARM", lat=lat, lon=lon)
        _at(r, start_us, end_us)
        return int(running.client.submit(signed(r, p.arm_monitor)).receipt.index)

    # Filed on the day before midnight, 40 minutes before the new report: within the slack.
    before_midnight = submit(40.8811, 45.3875, midnight - 20 * MINUTE_US, midnight - 10 * MINUTE_US)
    after_midnight = submit(40.8811, 45.3880, midnight + 30 * MINUTE_US, midnight + 50 * MINUTE_US)
    assert duplicates_of(running, after_midnight) == [(before_midnight, ["time and place"])]
    # Filed under both days; found, and linked, once.
    across = submit(40.8811, 45.3870, midnight - 5 * MINUTE_US, midnight + 5 * MINUTE_US)
    assert duplicates_of(running, across) == [
        (before_midnight, ["time and place"]),
        (after_midnight, ["time and place"]),
    ]
    again = submit(40.8811, 45.3871, midnight - 1 * MINUTE_US, midnight + 1 * MINUTE_US)
    assert [i for i, _ in duplicates_of(running, again)] == [
        before_midnight,
        after_midnight,
        across,
    ]

    # 140 m apart, on either side of the longitude 45.36 cell edge.
    west = submit(40.8700, 45.3592, midnight - 5 * DAY_US, midnight - 5 * DAY_US + MINUTE_US)
    east = submit(40.8700, 45.3608, midnight - 5 * DAY_US, midnight - 5 * DAY_US + MINUTE_US)
    assert duplicates_of(running, east) == [(west, ["time and place"])]

    # A window of twelve days is filed once under LONG_WINDOWS; a report inside it matches.
    long = submit(40.8650, 45.3700, midnight - 14 * DAY_US, midnight - 2 * DAY_US)
    inside = submit(40.8655, 45.3700, midnight - 9 * DAY_US, midnight - 9 * DAY_US + MINUTE_US)
    assert duplicates_of(running, inside) == [(long, ["time and place"])]
    # The same place a month earlier is no match, though filed under the same cell.
    old = submit(40.8655, 45.3705, midnight - 40 * DAY_US, midnight - 40 * DAY_US + MINUTE_US)
    assert duplicates_of(running, old) == []
    assert main(["verify", "--server", running.address]) == 0


def test_the_duplicate_search_reads_by_index_only(running: RunningLedger) -> None:
    """Its statements search indexes (sighting keys, evidence by digest and by entry, the
    incidents by primary key); none reads a table whole."""
    if not running.db_url.startswith("sqlite"):
        pytest.skip("SQLite's plans; PostgreSQL plans by its statistics")
    named = report("ARM")
    named.evidence_sha256.append("c" * 64)
    running.client.submit(signed(named, running.parties.arm_monitor))
    new = duplicates.sighting(10**9, named)
    engine = running.ledger.store.engine

    def search() -> None:
        with engine.connect() as conn:
            assert list(Reads(conn).sightings_near(10**9, duplicates.search(new), ["c" * 64]))

    plans = sqlite_plans(engine, search)
    assert len(plans) == 2, plans  # the candidates, then the evidence they name
    for statement, plan in plans.items():
        assert "SCAN" not in plan.replace("SCAN anon_1", ""), (statement, plan)
    text_ = "\n".join(plans.values())
    for expected in ("SEARCH sighting_keys", "SEARCH evidence_refs USING INDEX evidence_refs_idx",
                     "SEARCH incidents USING"):  # fmt: skip
        assert expected in text_, text_


# Tables the migrations after 0004 create, newest first.
LATER_THAN_0004 = ("incident_facts", "mirror_of", "cosignatures")
# And their indexes on older tables, by dialect (0007's spatial index of incidents).
LATER_THAN_0004_INDEXES = {
    "sqlite": "DROP TABLE incident_places",
    "postgresql": "DROP INDEX incidents_place",
}


def test_an_older_database_is_given_its_sighting_keys(running: RunningLedger) -> None:
    """Migrations 0004 and 0009 file the reports an older server logged, as the server files
    them (0009 refiles what 0004 filed by day)."""
    p = running.parties
    edge = (now_us() - 10 * HOUR_US) // duplicates.PERIOD_US * duplicates.PERIOD_US
    # The first within one period, the second across a period's edge: filed under two.
    for lat, start in ((40.8811, edge + 10 * MINUTE_US), (40.8650, edge - 20 * MINUTE_US)):
        r = report("ARM", lat=lat)
        _at(r, start, start + 40 * MINUTE_US)
        running.client.submit(signed(r, p.arm_monitor))
    store = running.ledger.store

    def keys() -> list[tuple[int, int, int]]:
        with store.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT cell, period, idx FROM sighting_keys ORDER BY idx, period, cell")
            )
            return [tuple(r) for r in rows]

    filed = keys()
    assert [idx for _, _, idx in filed] == [1, 2, 2]
    with store.engine.begin() as conn:  # as a database of schema 0003 was
        conn.execute(text("DROP TABLE sighting_keys"))
        conn.execute(text("DROP INDEX evidence_refs_idx"))
        for later in LATER_THAN_0004:  # what migrations after 0004 add
            conn.execute(text(f"DROP TABLE {later}"))
        conn.execute(text(LATER_THAN_0004_INDEXES[store.engine.dialect.name]))
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    LedgerStore.open(running.db_url).close()
    assert keys() == filed
