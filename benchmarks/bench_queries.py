"""Timeline query cost: for each filter, the rows a query returns and its time, beside a
full scan (a text filter no narrative holds, which reads every row) measured in the same
run, on SQLite and, with --pg, PostgreSQL.

    .venv/bin/python benchmarks/bench_queries.py [--rows 100000] [--pg] [--runs 3]

Building 100k real, signed and validated entries takes long, so the rows are written
straight into the derived tables the Timeline searches (incidents, incident_facts, and the
R*Tree incident_places on SQLite; on PostgreSQL with foreign keys off for that session),
then ANALYZE runs (as autovacuum would on PostgreSQL). There are no entries: the queries
are timed at the store (LedgerStore.timeline, the SQL the service runs), without the exact
geodesic checks the service then makes on the rows a near-point or near-border query gives
(the near circle, and the distance of areas or to one segment) nor the reading of the
page's entries.

The rows: incidents over a year (20 % in the last 30 days), windows of up to 6 hours, 3 %
longer (2 to 60 days); places uniform over the region of the bundled border, recorded
distances to the border uniform up to 60 km on main or nakhchivan, 5 % polygons (no
recorded distance); parties, categories, blamed parties, sides and narratives at random.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text

from ledger.queries import Box, Near, Query
from ledger.storage import LedgerStore, normalize_url
from tests.conftest import PG_ADMIN_URL

DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
NOW_US = 1_790_000_000 * 1_000_000
WORDS = ("mortar", "sniper", "drone", "shelling", "village", "post", "fire", "tractor")


def rows(n: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    rng = random.Random(14)
    for idx in range(1, n + 1):
        days = rng.randrange(0, 30) if rng.random() < 0.2 else rng.randrange(0, 365)
        start = NOW_US - days * DAY_US - rng.randrange(0, DAY_US)
        long = rng.random() < 0.03
        length = rng.randrange(2 * DAY_US, 60 * DAY_US) if long else rng.randrange(0, 6 * HOUR_US)
        polygon = rng.random() < 0.05
        yield (
            {
                "idx": idx,
                "party": rng.choice(("ARM", "AZE")),
                "category": rng.randrange(1, 12),
                "window_start_us": start,
                "window_end_us": start + length,
                "latitude": rng.uniform(38.8, 41.3),
                "longitude": rng.uniform(44.8, 46.6),
                "territory": rng.choice(("ARM", "AZE")),
            },
            {
                "idx": idx,
                "blamed": rng.choice(("", "ARM", "AZE")),
                "side": rng.choice(("ARM", "AZE", "neither", "ambiguous")),
                "border_m": None if polygon else rng.uniform(0, 60_000),
                "segment": "" if polygon else rng.choice(("main", "main", "nakhchivan")),
                "likely_duplicate": rng.random() < 0.05,
                "narrative": " ".join(rng.sample(WORDS, 3)),
            },
        )


def fill(store: LedgerStore, n: int) -> None:
    pg = store.engine.dialect.name == "postgresql"
    incidents, facts = zip(*rows(n), strict=True)
    with store.engine.begin() as conn:
        if pg:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            text(
                "INSERT INTO incidents VALUES (:idx, :party, :category, :window_start_us, "
                ":window_end_us, :latitude, :longitude, :territory)"
            ),
            list(incidents),
        )
        conn.execute(
            text(
                "INSERT INTO incident_facts VALUES (:idx, :blamed, :side, :border_m, :segment, "
                ":likely_duplicate, :narrative)"
            ),
            list(facts),
        )
        if not pg:
            conn.execute(
                text("INSERT INTO incident_places VALUES (:idx, :lat, :lat, :lon, :lon)"),
                [{"idx": r["idx"], "lat": r["latitude"], "lon": r["longitude"]} for r in incidents],
            )
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def queries(n: int) -> dict[str, tuple[Query, dict[str, int]]]:
    """Name: the query and the keyword arguments of LedgerStore.timeline besides it."""
    day = NOW_US - DAY_US
    since = dict(since_us=day)
    return {
        "full scan (text no row holds)": (Query(text="no narrative holds this"), {}),
        "since 1d": (Query(**since), {}),  # type: ignore[arg-type]
        "since 1d, party": (Query(parties=("AZE",), **since), {}),  # type: ignore[arg-type]
        "since 1d, by log index": (Query(by_index=True, **since), {}),  # type: ignore[arg-type]
        "since 7d until 6d": (
            Query(since_us=NOW_US - 7 * DAY_US, until_us=NOW_US - 6 * DAY_US),
            {},
        ),
        "logged: last 1,000 entries": (Query(), {"first_index": n - 999}),
        "box 0.06 x 0.07 deg": (Query(box=Box(40.85, 45.35, 40.91, 45.42)), {}),
        "near 4 km (its box)": (Query(near=Near(40.88, 45.39, 4_000)), {}),
        "near border 500 m": (Query(border_within_m=500), {}),
        "near border 500 m, main": (Query(border_within_m=500, segment="main"), {}),
        "investigation (10 named)": (Query(incidents=tuple(range(1, n, n // 10))), {}),
        "near 4 km, since 30d, party": (
            Query(near=Near(40.88, 45.39, 4_000), since_us=NOW_US - 30 * DAY_US, parties=("ARM",)),
            {},
        ),
        "party (a page of 100)": (Query(parties=("ARM",)), {"limit": 100}),
        "category": (Query(categories=(5,)), {}),
        "blamed": (Query(blamed=("AZE",)), {}),
        "side": (Query(sides=("neither",)), {}),
        "text": (Query(text="drone"), {}),
        "collapse duplicates": (Query(collapse_duplicates=True), {}),
        "status disputed": (Query(statuses=(3,)), {}),
    }


def measure(store: LedgerStore, n: int, runs: int) -> list[tuple[str, int, float]]:
    out = []
    for name, (query, kw) in queries(n).items():
        limit = kw.pop("limit", 10_000)
        best, found = float("inf"), 0
        for _ in range(runs):
            t = time.perf_counter()
            found = len(store.timeline(query, before=n + 1, after=None, limit=limit, **kw))
            best = min(best, time.perf_counter() - t)
        out.append((name, found, best))
    return out


def report(label: str, results: list[tuple[str, int, float]]) -> None:
    scan = results[0][2]
    print(f"\n{label}")
    print(f"{'filter':<32} {'rows':>7} {'ms':>9} {'/ scan':>8}")
    for name, found, seconds in results:
        print(f"{name:<32} {found:>7,} {seconds * 1000:>9.1f} {seconds / scan:>8.3f}")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"bench_queries_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, label: str, n: int, runs: int, log: Callable[[str], None]) -> None:
    store = LedgerStore.open(url)
    try:
        t = time.perf_counter()
        fill(store, n)
        log(f"{label}: {n:,} rows written in {time.perf_counter() - t:.0f} s")
        report(f"{label}, {n:,} incident rows", measure(store, n, runs))
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs of each")
    parser.add_argument("--pg", action="store_true", help=f"also PostgreSQL ({PG_ADMIN_URL})")
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{tmp}/ledger.db", "SQLite", args.rows, args.runs, log)
    if args.pg:
        with postgres() as url:
            run(url, "PostgreSQL", args.rows, args.runs, log)


if __name__ == "__main__":
    main()
