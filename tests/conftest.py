"""Shared fixtures: real databases (SQLite and PostgreSQL), real keys, a real gRPC server.

PostgreSQL: each test gets a fresh database on CEASEFIRE_TEST_PG (default
postgresql://postgres@127.0.0.1:5432/test, used as the maintenance database). When it
cannot be reached the PostgreSQL variants are skipped, except under CI=true, where that
is a failure.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from clients.client import LedgerClient
from geo.borders import BorderDataset, load_default
from ledger import keys, statements
from ledger.clock import now_us
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, dataset_files, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore, normalize_url


@pytest.fixture(autouse=True)
def user_directories(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's config and data directories (profiles, the outbox) are the test's own, never
    the real user's: for commands run in-process and the processes tests start."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for name in (
        "CEASEFIRE_PROFILE",
        "CEASEFIRE_OUTBOX",
        "CEASEFIRE_PASSPHRASE",
        "CEASEFIRE_PASSPHRASE_FILE",
        "CEASEFIRE_PASSPHRASE_FD",
        "CEASEFIRE_NEW_PASSPHRASE",
    ):
        monkeypatch.delenv(name, raising=False)
    # Commands fail at once when the server is down (tests of retrying set it themselves):
    # most tests that meet an unreachable server mean it.
    monkeypatch.setenv("CEASEFIRE_RETRIES", "1")


PG_ADMIN_URL = os.environ.get("CEASEFIRE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ORIGIN = "test.ceasefire-ledger/arm-aze"


def _pg_admin_engine() -> Engine:
    return create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    try:
        engine = _pg_admin_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI=true: {e}")
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    with fresh_database(request, tmp_path) as url:
        yield url


@contextlib.contextmanager
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """db_url's database, for a fixture parametrized by "sqlite" and "postgresql" of any
    scope (e.g. one ledger for a whole module)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not request.getfixturevalue("postgres_available"):
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    name = f"cfl_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(normalize_url(PG_ADMIN_URL))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def borders() -> BorderDataset:
    return load_default()


@dataclass
class Parties:
    log: SigningKey = field(default_factory=SigningKey.generate)
    arm_monitor: SigningKey = field(default_factory=SigningKey.generate)
    aze_monitor: SigningKey = field(default_factory=SigningKey.generate)
    arm_authority: SigningKey = field(default_factory=SigningKey.generate)
    aze_authority: SigningKey = field(default_factory=SigningKey.generate)
    arm_investigator: SigningKey = field(default_factory=SigningKey.generate)
    aze_investigator: SigningKey = field(default_factory=SigningKey.generate)
    outsider: SigningKey = field(default_factory=SigningKey.generate)

    def trust_root(self, borders: BorderDataset) -> pb.TrustRoot:
        def key(k: SigningKey, role: pb.Role.ValueType) -> pb.PartyKey:
            return pb.PartyKey(public_key=keys.public_bytes(k), role=role)

        return pb.TrustRoot(
            origin=ORIGIN,
            log_public_key=keys.public_bytes(self.log),
            border_dataset_sha256=borders.sha256,
            border_dataset_files=dataset_files(borders),
            finding_policies=[
                pb.NamedPolicy(name="joint", expression="AND(ARM.authority, AZE.authority)"),
                pb.NamedPolicy(name="arm-only", expression="ARM.authority"),
            ],
            parties=[
                pb.Party(
                    code="ARM",
                    name="Armenia",
                    keys=[
                        key(self.arm_monitor, pb.ROLE_MONITOR),
                        key(self.arm_authority, pb.ROLE_AUTHORITY),
                        key(self.arm_investigator, pb.ROLE_INVESTIGATOR),
                    ],
                    authority_threshold=1,
                ),
                pb.Party(
                    code="AZE",
                    name="Azerbaijan",
                    keys=[
                        key(self.aze_monitor, pb.ROLE_MONITOR),
                        key(self.aze_authority, pb.ROLE_AUTHORITY),
                        key(self.aze_investigator, pb.ROLE_INVESTIGATOR),
                    ],
                    authority_threshold=1,
                ),
            ],
        )

    def founding_envelope(self, borders: BorderDataset) -> dsse.Envelope:
        """The trust root signed by both founding parties' authorities."""
        payload = self.trust_root(borders).SerializeToString()
        return dsse.sign(statements.TRUST_ROOT, payload, [self.arm_authority, self.aze_authority])


@pytest.fixture
def parties() -> Parties:
    return Parties()


@dataclass
class RunningLedger:
    ledger: Ledger
    client: LedgerClient
    address: str
    db_url: str
    parties: Parties
    server: LedgerServer | None = None


class LogClock:
    """The log's clock, which a test may move forward (e.g. past a deadline)."""

    def __init__(self) -> None:
        self.ahead_us = 0

    def __call__(self) -> int:
        return now_us() + self.ahead_us


@pytest.fixture
def log_clock() -> LogClock:
    return LogClock()


@pytest.fixture
def running(
    db_url: str, parties: Parties, borders: BorderDataset, log_clock: LogClock, tmp_path: Path
) -> Iterator[RunningLedger]:
    """An initialised ledger behind a real gRPC server on loopback (uploads are spooled in
    tmp_path/uploads)."""
    with serve(db_url, parties, borders, log_clock, tmp_path) as running:
        yield running


@contextlib.contextmanager
def serve(
    db_url: str, parties: Parties, borders: BorderDataset, log_clock: LogClock, tmp_path: Path
) -> Iterator[RunningLedger]:
    """`running`'s ledger and server, for a fixture of any scope."""
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders, clock_us=log_clock)
    server, port = build_server(ledger, "127.0.0.1:0", spool_dir=tmp_path / "uploads")
    server.start()
    address = f"127.0.0.1:{port}"
    client = LedgerClient(address)
    client.wait_ready()
    try:
        yield RunningLedger(ledger, client, address, db_url, parties, server)
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def selects_run(engine: Engine, run: Callable[[], object]) -> list[tuple[str, Any]]:
    """Each SELECT that `run` executes on `engine`, with its parameters, in order."""
    ran: list[tuple[str, Any]] = []

    def keep(_c: object, _cur: object, statement: str, params: Any, *_a: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            ran.append((statement, params))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    return ran


def sqlite_plans(engine: Engine, run: Callable[[], object]) -> dict[str, str]:
    """SQLite's query plan (EXPLAIN QUERY PLAN) of each SELECT that `run` executes on
    `engine`, by statement: to show that a hot query searches an index, never reads a
    table whole."""
    ran = selects_run(engine, run)
    raw = engine.raw_connection()
    try:
        return {
            s: "\n".join(str(r[-1]) for r in raw.execute("EXPLAIN QUERY PLAN " + s, p).fetchall())
            for s, p in ran
        }
    finally:
        raw.close()
