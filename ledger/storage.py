"""Ledger storage through SQLAlchemy Core: SQLite (WAL, synchronous=FULL) or PostgreSQL.

The entry tables are append-only, enforced by database triggers (see the migrations).
One writer at a time: `append` locks the single tree-state row (SQLite `BEGIN IMMEDIATE`,
PostgreSQL `SELECT ... FOR UPDATE`), assigns contiguous indexes, writes leaves, the new
complete Merkle subtree hashes and a signed checkpoint, and commits once per batch.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Select,
    SmallInteger,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    event,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement, Exists

from ledger.defaults import POOL_OVERFLOW
from ledger.duplicates import LONG_WINDOWS, Search
from ledger.errors import Corrupt, LedgerError, OutOfRange
from ledger.formats import merkle
from ledger.formats.log_entry import GENESIS_PREVIOUS_HASH
from ledger.incidents import (
    COUNTER_CLAIM,
    DISPUTING,
    FINDING,
    INVESTIGATION_ACCEPTED,
    JOINT_FINDING,
    JOINT_STATUS,
    RETRACTION,
    IncidentInfo,
    Link,
)
from ledger.messages import NoticeArea
from ledger.queries import SHORT_WINDOW_US, Box, Cursor, Query

_T = TypeVar("_T")

metadata = MetaData()

entries = Table(
    "entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("envelope_sha256", LargeBinary(32), nullable=False, unique=True),
    Column("integrated_time_us", BigInteger, nullable=False),
    # The DSSE payload type, so key events can be found without reading every entry.
    Column("kind", String(128), nullable=False),
    Column("entry", LargeBinary, nullable=False),
    Index("entries_kind", "kind", "idx"),
)

# Each statement once: its identity, SHA-256 of the DSSE PAE (what was signed), to its entry.
statements = Table(
    "statements",
    metadata,
    Column("sha256", LargeBinary(32), primary_key=True),
    Column("idx", BigInteger, ForeignKey("entries.idx"), nullable=False, unique=True),
)

tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

tree_state = Table(
    "tree_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("frontier", LargeBinary, nullable=False),
    Column("last_leaf_hash", LargeBinary(32), nullable=False),
    Column("last_time_us", BigInteger, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
)

# Witness cosignatures of checkpoints (C2SP tlog-cosignature lines), served after the log's
# signature; one per checkpoint size and witness key.
cosignatures = Table(
    "cosignatures",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("key_id", String(64), primary_key=True),
    Column("line", Text, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
)

# Which entries relate to which incident (amendments, retractions, counter-claims, likely
# duplicates): the dossier, and the facts the derived status comes from.
links = Table(
    "links",
    metadata,
    Column("target_idx", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    Column("relation", String(32), nullable=False),
    Column("response", Integer, nullable=False),
)

# Evidence digests named by incident reports, to link reports that share evidence.
evidence_refs = Table(
    "evidence_refs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    # The evidence a duplicate candidate names, found by its index.
    Index("evidence_refs_idx", "idx"),
)

# Files that statements name by digest (border data sets), stored beside the log.
blobs = Table(
    "blobs",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

incidents = Table(
    "incidents",
    metadata,
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    Column("party", String(16), nullable=False),
    Column("category", Integer, nullable=False),
    Column("window_start_us", BigInteger, nullable=False),
    Column("window_end_us", BigInteger, nullable=False),
    Column("latitude", Double, nullable=False),
    Column("longitude", Double, nullable=False),
    Column("territory", String(16), nullable=False),
    Index("incidents_window", "window_start_us", "window_end_us"),
    Index("incidents_party", "party", "window_start_us"),
    # The few windows longer than SHORT_WINDOW_US, by end: see _overlapping (migration 0008).
    Index(
        "incidents_long_window",
        "window_end_us",
        sqlite_where=text(f"window_end_us - window_start_us > {SHORT_WINDOW_US}"),
        postgresql_where=text(f"window_end_us - window_start_us > {SHORT_WINDOW_US}"),
    ),
)

# What the Timeline filters read of each incident report besides its incidents row, from
# the report as first logged and the validation its entry records (migration 0007).
incident_facts = Table(
    "incident_facts",
    metadata,
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    # The alleged responsible party ("" when it blames nobody).
    Column("blamed", String(16), nullable=False),
    # The side as a reader takes it (geofacts.side): a party code, "neither" or "ambiguous".
    Column("side", String(16), nullable=False),
    # The recorded distance to the border and its nearest segment; NULL and "" for an area,
    # whose facts record none.
    Column("border_m", Double, nullable=True),
    Column("segment", Text, nullable=False),
    # The report likely duplicates an earlier one: not the first of its group.
    Column("likely_duplicate", Boolean, nullable=False),
    # The narrative, case folded (str.casefold), for the text filter.
    Column("narrative", Text, nullable=False),
    Index("incident_facts_border", "border_m"),
    Index("incident_facts_segment", "segment", "border_m"),
)

# SQLite only: an R*Tree of the incidents' anchor points, for the place filters (its
# coordinates are 32-bit floats, bounds rounded outwards: a query re-checks the exact
# latitude and longitude in incidents). PostgreSQL has a GiST index on
# point(longitude, latitude) of incidents instead (migration 0007).
incident_places = Table(
    "incident_places",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("min_lat", Double),
    Column("max_lat", Double),
    Column("min_lon", Double),
    Column("max_lon", Double),
)

# Where and when each incident report is filed for the duplicate search (see
# duplicates.filed_under): the candidates for a new report are read by key, so their cost
# does not grow with the log.
sighting_keys = Table(
    "sighting_keys",
    metadata,
    Column("cell", BigInteger, primary_key=True, autoincrement=False),
    Column("period", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
)

# Advance notices: when and where, for the dossier's "preceding notice" query.
notices = Table(
    "notices",
    metadata,
    Column("idx", BigInteger, ForeignKey("entries.idx"), primary_key=True, autoincrement=False),
    Column("party", String(16), nullable=False),
    Column("activity", Integer, nullable=False),
    Column("window_start_us", BigInteger, nullable=False),
    Column("window_end_us", BigInteger, nullable=False),
    Column("latitude", Double, nullable=False),
    Column("longitude", Double, nullable=False),
    Column("radius_m", Double, nullable=False),
    Index("notices_window", "window_end_us", "window_start_us"),
)

# The statements of the hot path, built once: building a SELECT costs more Python time than
# SQLite takes to run it, and a built statement's compiled form is cached.
_TREE_SIZE = select(tree_state.c.size).where(tree_state.c.id == 1)
_BY_STATEMENT = (
    select(entries)
    .join(statements, statements.c.idx == entries.c.idx)
    .where(statements.c.sha256 == bindparam("sha256", type_=LargeBinary))
)
_KNOWN = (
    select(entries, statements.c.sha256)
    .join(statements, statements.c.idx == entries.c.idx)
    .where(statements.c.sha256.in_(bindparam("digests", expanding=True)))
)
_NEAR_PAGE = 64


def _near_query(*, sharing: bool) -> Select[Any]:
    before = bindparam("before", type_=BigInteger)
    # DISTINCT: a report whose window spans periods is filed under each.
    found = (
        select(sighting_keys.c.idx)
        .distinct()
        .where(
            sighting_keys.c.cell.in_(bindparam("cells", expanding=True)),
            sighting_keys.c.period.between(bindparam("first_period"), bindparam("last_period"))
            | (sighting_keys.c.period == LONG_WINDOWS),
            sighting_keys.c.idx < before,
        )
    )
    if sharing:
        found = found.union(  # type: ignore[assignment]
            select(evidence_refs.c.idx).where(
                evidence_refs.c.sha256.in_(bindparam("evidence", expanding=True)),
                evidence_refs.c.idx < before,
            )
        )
    keyed = found.subquery()
    return (
        select(incidents)
        .join(keyed, keyed.c.idx == incidents.c.idx)
        .order_by(incidents.c.idx.desc())
        .limit(_NEAR_PAGE)
    )


_NEAR = _near_query(sharing=False)
_NEAR_OR_SHARING = _near_query(sharing=True)
_EVIDENCE_OF = select(evidence_refs).where(
    evidence_refs.c.idx.in_(bindparam("indexes", expanding=True))
)


@functools.cache
def _nodes_query(count: int) -> Select[Any]:
    """`count` stored nodes, each by (level, index): a term per node, each an index lookup
    (SQLite reads a whole table for a row-value IN list). Plain parameters, not expanding
    IN lists: the statement is compiled once per count, not rendered again per proof."""
    return select(tree_nodes).where(
        or_(
            *(
                (tree_nodes.c.level == bindparam(f"level{i}", type_=SmallInteger))
                & (tree_nodes.c.idx == bindparam(f"idx{i}", type_=BigInteger))
                for i in range(count)
            )
        )
    )


MIGRATIONS = Path(__file__).parent / "migrations"
# The key of a stored file: only such a text is ever looked up.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class IncidentRow:
    party: str
    category: int
    window_start_us: int
    window_end_us: int
    latitude: float
    longitude: float
    territory: str
    evidence: tuple[str, ...] = ()
    # The (cell, period) keys the duplicate search finds it under.
    filed_under: tuple[tuple[int, int], ...] = ()
    # Its incident_facts, for the Timeline filters (None where only incidents is read).
    facts: IncidentFacts | None = None

    def columns(self, index: int) -> dict[str, Any]:
        return {
            "idx": index,
            "party": self.party,
            "category": self.category,
            "window_start_us": self.window_start_us,
            "window_end_us": self.window_end_us,
            "latitude": self.latitude,
            "longitude": self.longitude,
            "territory": self.territory,
        }

    def place(self, index: int) -> dict[str, Any]:
        """Its row in the R*Tree of places (SQLite)."""
        return {
            "idx": index,
            "min_lat": self.latitude,
            "max_lat": self.latitude,
            "min_lon": self.longitude,
            "max_lon": self.longitude,
        }


@dataclass(frozen=True)
class IncidentFacts:
    """An incident_facts row (see the table)."""

    blamed: str
    side: str
    border_m: float | None
    segment: str
    likely_duplicate: bool
    narrative: str

    def columns(self, index: int) -> dict[str, Any]:
        return {
            "idx": index,
            "blamed": self.blamed,
            "side": self.side,
            "border_m": self.border_m,
            "segment": self.segment,
            "likely_duplicate": self.likely_duplicate,
            "narrative": self.narrative,
        }


@dataclass(frozen=True)
class NoticeRow:
    party: str
    activity: int
    area: NoticeArea

    def columns(self, index: int) -> dict[str, Any]:
        a = self.area
        return {
            "idx": index,
            "party": self.party,
            "activity": self.activity,
            "window_start_us": a.start_us,
            "window_end_us": a.end_us,
            "latitude": a.latitude,
            "longitude": a.longitude,
            "radius_m": a.radius_m,
        }


@dataclass(frozen=True)
class NewEntry:
    """A submission waiting for its index. `pending` is the caller's, handed back to its
    `build` function once the index is known."""

    # The statement's identity (SHA-256 of the DSSE PAE): at most one entry per value.
    statement_sha256: bytes
    # SHA-256 of the envelope bytes as logged.
    envelope_sha256: bytes
    kind: str
    pending: object
    # Files the statement names, by lowercase hex SHA-256; stored with the entry.
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Built:
    """What the writer's judgment of an item gives: the entry's bytes and its derived rows."""

    leaf: bytes
    links: Sequence[Link]
    incident: IncidentRow | None = None
    notice: NoticeRow | None = None
    # The entry's own integrated time, when it is not the batch's clock (a mirror copies
    # entries the log integrated at their own times).
    integrated_time_us: int | None = None


# build(item, index, previous_leaf_hash, integrated_time_us) -> the entry and its derived
# rows, or raise a LedgerError to refuse the item (it takes no index).
BuildLeaf = Callable[[NewEntry, int, bytes, int], Built]


@dataclass(frozen=True)
class StoredEntry:
    index: int
    leaf_hash: bytes
    envelope_sha256: bytes
    integrated_time_us: int
    entry: bytes
    kind: str = ""


@dataclass(frozen=True)
class Appended:
    entry: StoredEntry
    duplicate: bool


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


@dataclass(frozen=True)
class Cosignature:
    """A witness's cosignature line of a checkpoint, by the witness key's DSSE key id."""

    key_id: str
    line: str
    timestamp: int


def normalize_url(url: str) -> str:
    """Accept plain `postgresql://` URLs and a bare file path for SQLite."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser()}"
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def create_ledger_engine(url: str, *, pool_size: int | None = None) -> Engine:
    """An engine for `url`. `pool_size` connections are kept open (a server passes its
    worker threads + 2); with SQLAlchemy's default (5, and 10 more closed as soon as they
    are returned) a busy server opens a connection every few calls. None keeps that
    default, for short-lived commands."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        if pool_size is None:
            return create_engine(url, pool_pre_ping=True)
        return create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=POOL_OVERFLOW
        )
    database = make_url(url).database
    sized: dict[str, int] = {}
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A file's pool sized like PostgreSQL's: a connection beyond the pool is closed
        # when returned, and opening one costs a file open and three PRAGMAs.
        if pool_size is not None:
            sized = {"pool_size": pool_size, "max_overflow": POOL_OVERFLOW}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **sized)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred-only).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so two writers never deadlock on upgrade.
        # Readers run each statement in its own read transaction, as PostgreSQL's READ
        # COMMITTED does (the code is written for that already): a BEGIN of their own would
        # be one more statement on every read of the hot path.
        if conn.get_execution_options().get("ledger_writer", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    # Imported here: only writers that migrate pay Alembic's import time.
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # As a writer: one transaction (on SQLite under the write lock), so two processes
    # starting on one new database never both create the schema, and a crash leaves none.
    with engine.connect().execution_options(ledger_writer=True) as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextlib.contextmanager
def _writing(engine: Engine, on: Connection | None) -> Iterator[Connection]:
    """`on` as it is (its transaction is its owner's), else a writer's connection of its own
    in a transaction committed at the end."""
    if on is not None:
        yield on
        return
    with engine.connect().execution_options(ledger_writer=True) as conn, conn.begin():
        yield conn


class Reads:
    """Reads on the writer's connection, inside its transaction and under its lock: what the
    judgment of a batch looks up costs no connection of its own."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def sightings_near(
        self, before: int, where: Search, evidence: Sequence[str]
    ) -> Iterator[tuple[IncidentRow, int]]:
        """Incidents before index `before`, newest first, filed under the keys of `where`
        or naming any of `evidence`: the candidates for likely duplicates, read a page at a
        time so that a caller who has found enough stops early. Found by key, so the cost is
        that of the reports near in place and time, not of the log. Each row names its
        evidence only when `evidence` is given (else no evidence can match)."""
        query = _NEAR_OR_SHARING if evidence else _NEAR
        values = {
            "cells": list(where.cells),
            "first_period": where.first_period,
            "last_period": where.last_period,
            "evidence": list(evidence),
        }
        cursor = before
        while True:
            rows = self._conn.execute(query, {**values, "before": cursor}).all()
            refs: dict[int, list[str]] = {}
            if evidence and rows:
                for ref in self._conn.execute(_EVIDENCE_OF, {"indexes": [r.idx for r in rows]}):
                    refs.setdefault(ref.idx, []).append(ref.sha256)
            for r in rows:
                yield (
                    IncidentRow(
                        r.party, r.category, r.window_start_us, r.window_end_us, r.latitude,
                        r.longitude, r.territory, tuple(sorted(refs.get(r.idx, []))),
                    ),
                    r.idx,
                )  # fmt: skip
            if len(rows) < _NEAR_PAGE:
                return
            cursor = rows[-1].idx


class LedgerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, create: bool = True, pool_size: int | None = None) -> LedgerStore:
        """The store at `url`, its schema migrated if `create`. With `pool_size` (a
        server's), that many connections are opened now, so that none is opened while it
        serves: a pool filled only as load rises opens its connections mid-load."""
        engine = create_ledger_engine(url, pool_size=pool_size)
        try:
            if create:
                migrate(engine)
            if pool_size is not None:
                with contextlib.ExitStack() as held:  # all checked out at once: all opened
                    for _ in range(pool_size):
                        held.enter_context(engine.connect())
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def database_file(self) -> Path | None:
        """The SQLite database file (absolute); None for PostgreSQL or in-memory SQLite."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).resolve()

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        items: Sequence[NewEntry],
        *,
        build: BuildLeaf,
        clock_us: Callable[[], int],
        sign_checkpoint: Callable[[int, bytes], str | None],
        begin: Callable[[int, Reads], None] = lambda _size, _reads: None,
        on: Connection | None = None,
    ) -> list[Appended | LedgerError]:
        """Append a batch in one transaction; returns one result per item, in order.

        `begin(size, reads)` is called once the writer's lock is held, with the tree size
        and reads for `build` on the writer's own connection. A
        statement already in the log (or twice in the batch) is not appended again: its
        first entry is returned with duplicate=True. An item `build` refuses gets its error.
        `sign_checkpoint` None: no checkpoint row for this batch. `on`: a writer's connection
        in the caller's transaction (a mirror's import appends many batches in one), else
        one of its own, committed here.
        """
        with _writing(self.engine, on) as conn:
            state = conn.execute(
                select(tree_state).where(tree_state.c.id == 1).with_for_update()
            ).one_or_none()
            if state is None:
                size, frontier = 0, merkle.Frontier()
                prev, last_time = GENESIS_PREVIOUS_HASH, 0
            else:
                size, prev, last_time = state.size, state.last_leaf_hash, state.last_time_us
                frontier = merkle.Frontier.from_bytes(state.frontier)
                if frontier.size != size or frontier.root() != state.root:
                    raise Corrupt("tree state does not match its frontier; run an audit")

            digests = list({i.statement_sha256 for i in items})
            known = {row.sha256: _stored(row) for row in conn.execute(_KNOWN, {"digests": digests})}
            begin(size, Reads(conn))
            now = max(clock_us(), last_time)
            results: list[Appended | LedgerError] = []
            new_entries: list[dict[str, Any]] = []
            new_statements: list[dict[str, Any]] = []
            new_nodes: list[dict[str, Any]] = []
            new_incidents: list[dict[str, Any]] = []
            new_facts: list[dict[str, Any]] = []
            new_places: list[dict[str, Any]] = []
            new_notices: list[dict[str, Any]] = []
            new_blobs: dict[str, bytes] = {}
            new_evidence: list[dict[str, Any]] = []
            new_keys: list[dict[str, Any]] = []
            new_links: list[dict[str, Any]] = []
            for item in items:
                if item.statement_sha256 in known:
                    results.append(Appended(known[item.statement_sha256], duplicate=True))
                    continue
                try:
                    built = build(item, size, prev, now)
                except LedgerError as e:
                    results.append(e)
                    continue
                leaf = built.leaf
                lh = merkle.leaf_hash(leaf)
                t = now if built.integrated_time_us is None else built.integrated_time_us
                stored = StoredEntry(size, lh, item.envelope_sha256, t, leaf, item.kind)
                known[item.statement_sha256] = stored
                results.append(Appended(stored, duplicate=False))
                new_statements.append({"sha256": item.statement_sha256, "idx": size})
                new_entries.append(
                    {
                        "idx": size,
                        "leaf_hash": lh,
                        "envelope_sha256": item.envelope_sha256,
                        "integrated_time_us": t,
                        "kind": item.kind,
                        "entry": leaf,
                    }
                )
                new_nodes.extend(
                    {"level": lvl, "idx": i, "hash": h} for lvl, i, h in frontier.append(lh)
                )
                if built.incident is not None:
                    new_incidents.append(built.incident.columns(size))
                    new_places.append(built.incident.place(size))
                    if built.incident.facts is None:
                        raise Corrupt(f"entry {size}: an incident row without its facts")
                    new_facts.append(built.incident.facts.columns(size))
                    new_evidence.extend({"sha256": d, "idx": size} for d in built.incident.evidence)
                    new_keys.extend(
                        {"cell": c, "period": p, "idx": size} for c, p in built.incident.filed_under
                    )
                if built.notice is not None:
                    new_notices.append(built.notice.columns(size))
                new_blobs.update(item.blobs)
                new_links.extend(
                    {"target_idx": x.target, "idx": x.index, "relation": x.relation,
                     "response": x.response}
                    for x in built.links
                )  # fmt: skip
                size, prev = size + 1, lh

            if not new_entries:
                return results
            conn.execute(entries.insert(), new_entries)
            conn.execute(statements.insert(), new_statements)
            conn.execute(tree_nodes.insert(), new_nodes)
            if new_incidents:
                conn.execute(incidents.insert(), new_incidents)
                conn.execute(incident_facts.insert(), new_facts)
                if conn.dialect.name == "sqlite":  # PostgreSQL indexes incidents' columns
                    conn.execute(incident_places.insert(), new_places)
            if new_notices:
                conn.execute(notices.insert(), new_notices)
            if new_evidence:
                conn.execute(evidence_refs.insert(), new_evidence)
            if new_keys:
                conn.execute(sighting_keys.insert(), new_keys)
            if new_links:
                conn.execute(links.insert(), new_links)
            if new_blobs:
                have = set(
                    conn.execute(
                        select(blobs.c.sha256).where(blobs.c.sha256.in_(list(new_blobs)))
                    ).scalars()
                )
                rows = [
                    {"sha256": d, "size": len(b), "data": b}
                    for d, b in new_blobs.items()
                    if d not in have
                ]
                if rows:
                    conn.execute(blobs.insert(), rows)
            root = frontier.root()
            note = sign_checkpoint(size, root)
            if note is not None:
                conn.execute(checkpoints.insert(), {"size": size, "root": root, "note": note})
            values = {
                "size": size,
                "root": root,
                "frontier": frontier.to_bytes(),
                "last_leaf_hash": prev,
                "last_time_us": now,
            }
            if state is None:
                conn.execute(tree_state.insert(), {"id": 1, **values})
            else:
                conn.execute(tree_state.update().where(tree_state.c.id == 1).values(**values))
            return results

    # -- reading -------------------------------------------------------------------------

    def tree_size(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(_TREE_SIZE).scalar() or 0)

    def last_time_us(self) -> int:
        """The log's clock at its newest entry (0 when empty)."""
        with self.engine.connect() as conn:
            t = conn.execute(select(tree_state.c.last_time_us).where(tree_state.c.id == 1)).scalar()
            return int(t or 0)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(checkpoints).order_by(checkpoints.c.size.desc()).limit(1)
            ).one_or_none()
            return StoredCheckpoint(row.size, row.root, row.note) if row else None

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(checkpoints).where(checkpoints.c.size == size)).one_or_none()
            return StoredCheckpoint(row.size, row.root, row.note) if row else None

    def add_cosignatures(self, size: int, found: Sequence[Cosignature]) -> None:
        """Keep witnesses' cosignatures of the checkpoint of `size`; one already kept (by
        another replica, say) stays as it is."""
        try:
            with self.engine.connect() as conn, conn.begin():
                have = set(
                    conn.execute(
                        select(cosignatures.c.key_id).where(cosignatures.c.size == size)
                    ).scalars()
                )
                rows = [
                    {"size": size, "key_id": c.key_id, "line": c.line, "timestamp": c.timestamp}
                    for c in found
                    if c.key_id not in have
                ]
                if rows:
                    conn.execute(cosignatures.insert(), rows)
        except IntegrityError:
            pass  # another replica kept the same cosignature meanwhile

    def cosignatures(self, size: int) -> list[Cosignature]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(cosignatures)
                .where(cosignatures.c.size == size)
                .order_by(cosignatures.c.key_id)
            )
            return [Cosignature(r.key_id, r.line, r.timestamp) for r in rows]

    def cosigned_sizes(self, limit: int) -> list[tuple[int, list[Cosignature]]]:
        """The `limit` largest checkpoint sizes that have cosignatures, newest first."""
        with self.engine.connect() as conn:
            sizes = list(
                conn.execute(
                    select(cosignatures.c.size)
                    .distinct()
                    .order_by(cosignatures.c.size.desc())
                    .limit(limit)
                ).scalars()
            )
            if not sizes:
                return []
            found: dict[int, list[Cosignature]] = {s: [] for s in sizes}
            for r in conn.execute(
                select(cosignatures)
                .where(cosignatures.c.size.in_(sizes))
                .order_by(cosignatures.c.key_id)
            ):
                found[r.size].append(Cosignature(r.key_id, r.line, r.timestamp))
            return list(found.items())

    def get_entry(self, index: int) -> StoredEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(entries).where(entries.c.idx == index)).one_or_none()
            return _stored(row) if row else None

    def get_entry_by_envelope(self, envelope_sha256: bytes) -> StoredEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(entries).where(entries.c.envelope_sha256 == envelope_sha256)
            ).one_or_none()
            return _stored(row) if row else None

    def get_entry_by_statement(self, statement_sha256: bytes) -> StoredEntry | None:
        """The entry that logged the statement with this identity (SHA-256 of its PAE)."""
        with self.engine.connect() as conn:
            row = conn.execute(_BY_STATEMENT, {"sha256": statement_sha256}).one_or_none()
            return _stored(row) if row else None

    def entries_by_statement(self, digests: Sequence[bytes]) -> dict[bytes, StoredEntry]:
        """`get_entry_by_statement` for many statements in one query: those logged."""
        if not digests:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(_KNOWN, {"digests": list(set(digests))})
            return {row.sha256: _stored(row) for row in rows}

    def iter_entries(self, start: int, end: int, *, page: int = 500) -> Iterator[StoredEntry]:
        """Entries [start, end) in index order, fetched a page at a time."""
        while start < end:
            stop = min(end, start + page)
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(entries)
                    .where(entries.c.idx >= start, entries.c.idx < stop)
                    .order_by(entries.c.idx)
                ).all()
            yield from (_stored(r) for r in rows)
            start = stop

    def get_blob(self, sha256: str) -> bytes | None:
        if not _SHA256_HEX.fullmatch(sha256):
            return None  # no such key; and PostgreSQL refuses text with NUL in a query
        with self.engine.connect() as conn:
            data = conn.execute(select(blobs.c.data).where(blobs.c.sha256 == sha256)).scalar()
            return bytes(data) if data is not None else None

    def blob_size(self, sha256: str) -> int | None:
        """The size of a stored file; None if there is none with this digest."""
        if not _SHA256_HEX.fullmatch(sha256):
            return None  # no such key; and PostgreSQL refuses text with NUL in a query
        with self.engine.connect() as conn:
            size = conn.execute(select(blobs.c.size).where(blobs.c.sha256 == sha256)).scalar()
            return int(size) if size is not None else None

    def read_blob(self, sha256: str, offset: int, size: int) -> bytes:
        """Bytes [offset, offset + size) of a stored file (fewer at its end), so a reader
        holds one window of a large file at a time, not all of it."""
        if not _SHA256_HEX.fullmatch(sha256):
            return b""
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                # SQLite's substr() would load the whole value first; its blob I/O does not.
                rowid = conn.execute(
                    select(literal_column("rowid"))
                    .select_from(blobs)
                    .where(blobs.c.sha256 == sha256)
                ).scalar()
                if rowid is None:
                    return b""
                raw = conn.connection.driver_connection
                assert raw is not None
                with raw.blobopen("blobs", "data", rowid, readonly=True) as blob:
                    blob.seek(min(offset, len(blob)))
                    return bytes(blob.read(size))
            part = func.substr(blobs.c.data, offset + 1, size)  # SQL counts from 1
            data = conn.execute(select(part).where(blobs.c.sha256 == sha256)).scalar()
            return bytes(data) if data is not None else b""

    def iter_kinds(
        self, kinds: Sequence[str], start: int, end: int, *, page: int = 500
    ) -> Iterator[StoredEntry]:
        """Entries of the given kinds with start <= index < end, in index order, fetched a
        page at a time."""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(entries)
                    .where(
                        entries.c.kind.in_(list(kinds)), entries.c.idx >= start, entries.c.idx < end
                    )
                    .order_by(entries.c.idx)
                    .limit(page)
                ).all()
            yield from (_stored(r) for r in rows)
            if len(rows) < page:
                return
            start = rows[-1].idx + 1

    def links_to(self, targets: Sequence[int], *, before: int | None = None) -> list[Link]:
        """The links to any of `targets`, in log order (only from entries before index
        `before`, when given)."""
        query = select(links).where(links.c.target_idx.in_(list(targets)))
        if before is not None:
            query = query.where(links.c.idx < before)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(links.c.idx)).all()
        return [Link(r.target_idx, r.idx, r.relation, r.response) for r in rows]

    def get_entries(self, indexes: Sequence[int], *, page: int = 1000) -> list[StoredEntry]:
        """The entries at the given indexes (those that exist), in index order, read a page
        of indexes per query."""
        wanted = sorted(set(indexes))
        found: list[StoredEntry] = []
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), page):
                rows = conn.execute(
                    select(entries)
                    .where(entries.c.idx.in_(wanted[start : start + page]))
                    .order_by(entries.c.idx)
                ).all()
                found.extend(_stored(r) for r in rows)
        return found

    # -- statistics (ledger/stats.py) ---------------------------------------------------------

    def first_index_at(self, time_us: int, size: int) -> int:
        """The first index below `size` whose entry was integrated at or after `time_us`
        (`size` when none): a binary search over the primary key, as entries' times never
        decrease (the writer takes the later of its clock and the last entry's time)."""
        lo, hi = 0, size
        query = select(entries.c.integrated_time_us).where(entries.c.idx == bindparam("i"))
        with self.engine.connect() as conn:
            while lo < hi:
                mid = (lo + hi) // 2
                t = conn.execute(query, {"i": mid}).scalar()
                if t is None:
                    raise Corrupt(f"entry {mid} is missing (tree size {size})")
                if t < time_us:
                    lo = mid + 1
                else:
                    hi = mid
        return lo

    def count_kinds(self, kinds: Sequence[str], start: int, end: int) -> int:
        """How many entries of the given kinds have start <= index < end (by the kind
        index, without reading them)."""
        query = select(func.count()).where(
            entries.c.kind.in_(list(kinds)), entries.c.idx >= start, entries.c.idx < end
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def times_of(self, indexes: Sequence[int], *, page: int = 1000) -> dict[int, int]:
        """The integrated time of each entry at the given indexes (those that exist)."""
        wanted = sorted(set(indexes))
        found: dict[int, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), page):
                rows = conn.execute(
                    select(entries.c.idx, entries.c.integrated_time_us).where(
                        entries.c.idx.in_(wanted[start : start + page])
                    )
                )
                found.update((int(i), int(t)) for i, t in rows)
        return found

    def incidents_starting(
        self, since_us: int, until_us: int, before: int, limit: int
    ) -> list[int]:
        """The indexes of incident reports logged before index `before` whose window (as
        first logged) starts in [since_us, until_us), in index order; at most `limit`."""
        query = (
            select(incidents.c.idx)
            .where(
                incidents.c.window_start_us >= since_us,
                incidents.c.window_start_us < until_us,
                incidents.c.idx < before,
            )
            .order_by(incidents.c.idx)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [int(i) for i in conn.execute(query).scalars()]

    def incident(self, index: int) -> IncidentInfo | None:
        """The incident report at `index`, with its retraction and its first jointly
        attested finding, if any."""
        with self.engine.connect() as conn:
            party = conn.execute(select(incidents.c.party).where(incidents.c.idx == index)).scalar()
            if party is None:
                return None
            first: dict[str, int] = {}
            for relation, idx in conn.execute(
                select(links.c.relation, func.min(links.c.idx))
                .where(
                    links.c.target_idx == index,
                    links.c.relation.in_([RETRACTION, JOINT_FINDING]),
                )
                .group_by(links.c.relation)
            ):
                first[relation] = idx
        return IncidentInfo(index, party, first.get(RETRACTION), first.get(JOINT_FINDING))

    MAX_NOTICES = 100

    def notices_during(
        self, before: int, start_us: int, end_us: int
    ) -> list[tuple[int, NoticeArea]]:
        """Notices logged before index `before` whose window overlaps [start_us, end_us],
        newest first (at most MAX_NOTICES)."""
        query = (
            select(notices)
            .where(
                notices.c.idx < before,
                notices.c.window_end_us >= start_us,
                notices.c.window_start_us <= end_us,
            )
            .order_by(notices.c.idx.desc())
            .limit(self.MAX_NOTICES)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(r.idx, _notice_area(r)) for r in rows]

    def timeline(
        self,
        query: Query,
        *,
        before: int,
        after: Cursor | None,
        limit: int,
        first_index: int = 0,
        end_index: int | None = None,
    ) -> list[TimelineKey]:
        """The first `limit` incident reports logged before index `before` (and from
        `first_index` to before `end_index`) that pass every filter of `query` but the
        near circle's exact distance (their box is applied) and the exact distance to the
        border of areas, or to the segment asked for (those within the recorded distance to
        the border, and the areas, are given), in its order after `after`:
        their keys only (the caller reads the entries of those it keeps). The place filters
        search the spatial index (SQLite R*Tree, PostgreSQL GiST), and the time, party and
        border filters their indexes; the rest are checked on the rows those give."""
        i, f = incidents, incident_facts
        sqlite = self.engine.dialect.name == "sqlite"
        # Nearly every row is before the snapshot: told so, SQLite (which keeps no
        # statistics) searches by a filter's index rather than read the rows in index order.
        where: list[ColumnElement[bool]] = [_likely(i.c.idx < before, sqlite=sqlite)]
        if first_index:
            where.append(i.c.idx >= first_index)
        if end_index is not None:
            where.append(i.c.idx < end_index)
        if query.until_us is not None:
            where.append(i.c.window_start_us <= query.until_us)
        if query.parties:
            where.append(i.c.party.in_(query.parties))
        if query.categories:
            where.append(i.c.category.in_(query.categories))
        if query.incidents is not None:
            where.append(i.c.idx.in_(query.incidents))
        box = query.place
        if box is not None:
            where += [
                i.c.latitude.between(box.min_lat, box.max_lat),
                i.c.longitude.between(box.min_lon, box.max_lon),
                self._in_box(box),
            ]
        facts: list[ColumnElement[bool]] = []
        if query.blamed:
            facts.append(f.c.blamed.in_(query.blamed))
        if query.sides:
            facts.append(f.c.side.in_(query.sides))
        if query.text:
            facts.append(f.c.narrative.contains(query.text, autoescape=True))
        if query.collapse_duplicates:
            facts.append(f.c.likely_duplicate.is_(False))
        if query.statuses:
            where.append(_status_before(before).in_(query.statuses))
        if after is not None:
            if query.by_index:
                where.append(i.c.idx > after.index)
            else:
                where += [
                    i.c.window_start_us >= after.start_us,
                    or_(i.c.window_start_us > after.start_us, i.c.idx > after.index),
                ]
        recorded = f.c.border_m if query.border_within_m is not None else literal_column("NULL")
        found = select(i.c.idx, i.c.window_start_us, i.c.latitude, i.c.longitude, recorded)
        if facts or query.border_within_m is not None:
            found = found.join(f, f.c.idx == i.c.idx)
        order = (i.c.idx,) if query.by_index else (i.c.window_start_us, i.c.idx)
        found = found.where(*where, *facts).order_by(*order).limit(limit)
        keys: list[TimelineKey] = []
        with self.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            for window, near in itertools.product(
                _overlapping(query.since_us, sqlite=sqlite), _bordering(query)
            ):
                keys += [TimelineKey(*r) for r in conn.execute(found.where(*window, *near))]
        if query.by_index:
            keys.sort(key=lambda k: k.index)
        else:
            keys.sort(key=lambda k: (k.start_us, k.index))
        return keys[:limit]

    def _in_box(self, box: Box) -> ColumnElement[bool]:
        """The spatial index's search for anchor points in `box` (with the R*Tree's
        rounding, or GiST's tolerance of 1e-6: the caller compares the exact values)."""
        if self.engine.dialect.name == "sqlite":
            p = incident_places
            return incidents.c.idx.in_(
                select(p.c.idx).where(
                    p.c.max_lat >= box.min_lat,
                    p.c.min_lat <= box.max_lat,
                    p.c.max_lon >= box.min_lon,
                    p.c.min_lon <= box.max_lon,
                )
            )
        # The expression of the GiST index incidents_place, exactly.
        place = func.point(incidents.c.longitude, incidents.c.latitude)
        corners = func.box(
            func.point(box.min_lon, box.min_lat), func.point(box.max_lon, box.max_lat)
        )
        return place.op("<@", is_comparison=True)(corners)

    # -- proofs ----------------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.inclusion(index, size)[0]

    def inclusion(
        self, index: int, size: int, tree_size: int | None = None
    ) -> tuple[list[bytes], bytes]:
        """Entry `index`'s inclusion proof in the tree of `size`, and its leaf hash (the
        node at level 0), read in one query. `tree_size`: the log's size, if the caller
        has just read it."""
        if not 0 <= index < size <= (self.tree_size() if tree_size is None else tree_size):
            raise OutOfRange(f"no entry {index} in a tree of size {size}")
        return self._from_nodes(
            lambda get: (merkle.inclusion_proof(get, index, size), get(0, index))
        )

    def consistency_proof(
        self, old_size: int, new_size: int, tree_size: int | None = None
    ) -> list[bytes]:
        """The consistency proof from `old_size` to `new_size`, read in one query.
        `tree_size`: the log's size, if the caller has just read it."""
        size = self.tree_size() if tree_size is None else tree_size
        if not 0 < old_size <= new_size <= size:
            raise OutOfRange(
                f"no consistency proof from size {old_size} to {new_size} (tree size {size})"
            )
        return self._from_nodes(lambda get: merkle.consistency_proof(get, old_size, new_size))

    def root_at(self, size: int) -> bytes:
        return self._from_nodes(lambda get: merkle.subtree_hash(get, 0, size))

    def _from_nodes(self, compute: Callable[[merkle.NodeGetter], _T]) -> _T:
        """`compute` over the stored nodes it needs, read in one query."""
        needed = sorted(set(merkle.nodes_needed(compute)))
        values: dict[str, Any] = {}
        for i, (level, index) in enumerate(needed):
            values[f"level{i}"], values[f"idx{i}"] = level, index
        found = {}
        if needed:
            with self.engine.connect() as conn:
                rows = conn.execute(_nodes_query(len(needed)), values)
                found = {(r.level, r.idx): r.hash for r in rows}

        def get(level: int, index: int) -> bytes:
            h = found.get((level, index))
            if h is None:
                raise Corrupt(f"missing Merkle node at level {level}, index {index}")
            return bytes(h)

        return compute(get)


@dataclass(frozen=True)
class TimelineKey:
    """An incident report found by a Timeline query: where it sorts, and its anchor point."""

    index: int
    start_us: int
    latitude: float
    longitude: float
    # With a near-border filter: the recorded distance to the border (None for an area).
    border_m: float | None = None


def _likely(term: ColumnElement[bool], *, sqlite: bool) -> ColumnElement[bool]:
    # Untyped: as a Boolean, SQLAlchemy would compare it to 1, hiding the term.
    return func.likely(term) if sqlite else term


def _bordering(query: Query) -> list[list[ColumnElement[bool]]]:
    """The reports that may lie within the query's distance of the border (or of its
    segment), as searches of incident_facts_border: those whose recorded distance to the
    border is within it (never more than the distance to one of its segments), and the
    areas, which record none. The caller measures the areas, and all with a segment asked
    for, exactly (queries.place_to_border_m). Two searches, as an OR of the two would lead
    SQLite to read the table in order."""
    if query.border_within_m is None:
        return [[]]
    f = incident_facts
    return [[f.c.border_m <= query.border_within_m], [f.c.border_m.is_(None)]]


def _overlapping(since_us: int | None, *, sqlite: bool) -> list[list[ColumnElement[bool]]]:
    """The windows ending at or after `since_us`, as searches that each read about what
    they find (none: every window). A window of at most SHORT_WINDOW_US that ends by then
    starts at or after since - SHORT_WINDOW_US: a range of the window-start indexes. One
    that starts before is longer, and is found through the partial index of long windows
    (migration 0008), whose predicate is repeated verbatim so that the planners may use
    it. The two searches are disjoint. (Bounding the start by the longest window allowed,
    366 days, read a year of reports to answer for a day.)"""
    if since_us is None:
        return [[]]
    i = incidents
    edge = since_us - SHORT_WINDOW_US
    long = (i.c.window_end_us - i.c.window_start_us) > literal_column(str(SHORT_WINDOW_US))
    ends: ColumnElement[bool] = i.c.window_end_us >= since_us
    if sqlite:
        # SQLite keeps no statistics: it would rather read the party or window-start index
        # in order than sort a few rows. likelihood() tells it that few rows pass, which
        # makes the (small) partial index the cheaper search.
        # (Untyped: as a Boolean, SQLAlchemy would compare it to 1, hiding the term.)
        ends = func.likelihood(ends, literal_column("0.000000001"))
    return [
        [i.c.window_start_us >= edge, i.c.window_end_us >= since_us],
        [long, i.c.window_start_us < edge, ends],
    ]


def _status_before(before: int) -> ColumnElement[int]:
    """An incident's derived status as of index `before`, in SQL: incidents.derive_status,
    rule for rule (tests/test_queries.py checks that the two agree)."""

    def linked(*also: ColumnElement[bool]) -> Exists:
        return exists().where(links.c.target_idx == incidents.c.idx, links.c.idx < before, *also)

    joint = (
        select(links.c.response)
        .where(
            links.c.target_idx == incidents.c.idx,
            links.c.idx < before,
            links.c.relation == JOINT_FINDING,
        )
        .order_by(links.c.idx.desc())
        .limit(1)
        .scalar_subquery()
    )
    outcomes = [(joint == outcome, status) for outcome, status in JOINT_STATUS.items()]
    return case(
        (linked(links.c.relation == RETRACTION), api.INCIDENT_STATUS_RETRACTED),
        *outcomes,
        (joint.is_not(None), api.INCIDENT_STATUS_INCONCLUSIVE),
        (
            linked(links.c.relation.in_([FINDING, INVESTIGATION_ACCEPTED])),
            api.INCIDENT_STATUS_UNDER_INVESTIGATION,
        ),
        (
            linked(links.c.relation == COUNTER_CLAIM, links.c.response.in_(sorted(DISPUTING))),
            api.INCIDENT_STATUS_DISPUTED,
        ),
        (
            linked(
                links.c.relation == COUNTER_CLAIM,
                links.c.response == pb.RESPONSE_KIND_ACKNOWLEDGEMENT,
            ),
            api.INCIDENT_STATUS_ACKNOWLEDGED,
        ),
        else_=api.INCIDENT_STATUS_REPORTED,
    )


def _notice_area(r: Any) -> NoticeArea:
    return NoticeArea(r.window_start_us, r.window_end_us, r.latitude, r.longitude, r.radius_m)


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(
        row.idx, row.leaf_hash, row.envelope_sha256, row.integrated_time_us, row.entry, row.kind
    )
