"""Several replicas on one database (docs/scale-out.md).

Three `ceasefire serve` processes on one PostgreSQL database take submissions at once; one
is SIGKILLed with submissions in flight, and its clients send the same envelopes again
through the survivors. Every acknowledged statement must be in the log once, at the index
its receipt names; the log must audit; the killed replica must come back at the log's end;
and the servers must keep their pooled connections instead of opening one every few calls
(counted by PostgreSQL 14+'s pg_stat_database.sessions).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey
from sqlalchemy import create_engine, text

from clients.cli import main
from clients.client import LedgerClient
from clients.retrying import RetryPolicy
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.clock import to_us
from ledger.defaults import POOL_OVERFLOW, WORKERS
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.runtime import pool_size
from ledger.storage import LedgerStore, normalize_url
from tests.conftest import ORIGIN, PG_ADMIN_URL, Parties
from tests.reports import report, signed
from tests.test_borders import registration, shifted_dataset
from tests.test_cli import Server, workdir  # noqa: F401 (fixture)

POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

REPLICAS = 3
# Calls in flight at each replica: two per worker thread, so that all are busy and a pool
# smaller than the workers (SQLAlchemy's default keeps 5) opens and closes connections
# all the time (measured: ~120 sessions for 350 entries, against ~30 with the pool sized).
STREAMS_PER_REPLICA = 2 * WORKERS
ACKNOWLEDGED = 300  # statements acknowledged before the load stops
KILL_AT = 90  # ... and before one replica is killed
PLACES = {"ARM": (40.8811, 45.3875), "AZE": (41.0933, 45.3661)}


class Balancer:
    """What a per-call load balancer does: each call to the next replica that is up."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self._down: set[str] = set()
        self._next = itertools.count()
        self._lock = threading.Lock()

    def pick(self) -> str:
        with self._lock:
            up = [a for a in self.addresses if a not in self._down]
            return up[next(self._next) % len(up)]

    def take_out(self, address: str) -> None:
        """What its health check does once the replica stops answering."""
        with self._lock:
            self._down.add(address)


@dataclass
class Sent:
    envelope: bytes
    statement_sha256: bytes
    failed_on: list[str] = field(default_factory=list)  # replicas whose call failed
    response: api.SubmitResponse | None = None


class Load:
    """Client threads, each submitting distinct signed reports one after another through
    the balancer; a call that fails UNAVAILABLE is sent again, the same envelope, to the
    next replica, until it is acknowledged."""

    def __init__(self, wd: Path, balancer: Balancer) -> None:
        self.keys = {
            "ARM": keys.read_private(wd / "keys/arm-monitor.key"),
            "AZE": keys.read_private(wd / "keys/aze-monitor.key"),
        }
        self.balancer = balancer
        self.sent: list[Sent] = []
        self.in_flight = Counter[str]()
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def acknowledged(self) -> int:
        with self.lock:
            return sum(s.response is not None for s in self.sent)

    def run(self, n: int) -> None:
        rng = random.Random(n)
        channels: dict[str, LedgerClient] = {}
        try:
            for k in itertools.count():
                if self.stop.is_set():
                    return
                party = rng.choice(["ARM", "AZE"])
                lat, lon = PLACES[party]
                data = signed(
                    report(party, lat=lat + rng.uniform(-0.01, 0.01), lon=lon,
                           hours_ago=rng.uniform(1, 48), narrative=f"replica load {n}-{k}"),
                    self.keys[party],
                )  # fmt: skip
                sent = Sent(data, dsse.Envelope.from_json(data).statement_sha256())
                with self.lock:
                    self.sent.append(sent)
                self._deliver(sent, channels)
        except BaseException as e:  # the test fails on it, with the thread's story
            with self.lock:
                self.errors.append(f"client {n}: {e!r}")
        finally:
            for client in channels.values():
                client.close()

    def _deliver(self, sent: Sent, channels: dict[str, LedgerClient]) -> None:
        deadline = time.monotonic() + 60
        while True:
            address = self.balancer.pick()
            client = channels.get(address)
            if client is None:
                # Retried here, to the next replica: not by the client, to the same one.
                client = LedgerClient(address, timeout_s=20, retry=RetryPolicy.none())
                channels[address] = client
            with self.lock:
                self.in_flight[address] += 1
            try:
                response = client.submit(sent.envelope)
            except grpc.RpcError as e:
                assert isinstance(e, grpc.Call)
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                sent.failed_on.append(address)
                time.sleep(0.02)  # a back-off, as a client's retry policy has
                continue
            finally:
                with self.lock:
                    self.in_flight[address] -= 1
            sent.response = response
            return


def _found(wd: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Sign the example trust root (ARM's authorities, then AZE's) and initialise the ledger
    in-process (the commands' own code, without their start-up time); its digest."""
    k = wd / "keys"
    assert main(["trust-root", str(wd / "trust-root.yaml"), "--log-public-key",
                 str(k / "log.pub"), "--key", str(k / "arm-authority-1.key"), "--key",
                 str(k / "arm-authority-2.key"), "--out", str(wd / "root.json")]) == 0  # fmt: skip
    assert main(["cosign", str(wd / "root.json"), "--key", str(k / "aze-authority-1.key")]) == 0
    capsys.readouterr()
    assert main(["init", "--db", db_url, "--trust-root", str(wd / "root.json"),
                 "--log-key", str(k / "log.key"), "--json"]) == 0  # fmt: skip
    return str(json.loads(capsys.readouterr().out)["trust_root_sha256"])


def _starting(servers: list[Server]) -> list[threading.Thread]:
    """Start servers at once (each takes seconds to import and open the ledger); join the
    threads, then check each server's address."""
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    return threads


def _started(servers: list[Server], threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join()
    for s in servers:
        assert s.address, "a server did not start: see serve.log"


def _sessions(database: str) -> tuple[int, int]:
    """(sessions ever established to `database`, client backends connected to it now),
    asked on the maintenance database so that asking is not counted; -1 sessions before
    PostgreSQL 14. A backend's count is published by the time it leaves pg_stat_activity."""
    admin = create_engine(normalize_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
            sessions = (
                conn.execute(
                    text("SELECT sessions FROM pg_stat_database WHERE datname = :d"),
                    {"d": database},
                ).scalar_one()
                if version >= 140000
                else -1
            )
            now = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                     "AND backend_type = 'client backend'"),
                {"d": database},
            ).scalar_one()  # fmt: skip
            return int(sessions), int(now)
    finally:
        admin.dispose()


@POSTGRESQL
def test_replicas_share_one_database_and_survive_a_sigkill(
    workdir: Path,  # noqa: F811
    db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    wd = workdir
    digest = _found(wd, db_url, capsys)
    servers = [Server(wd, db_url) for _ in range(REPLICAS)]
    victim, survivors = servers[1], [servers[0], servers[2]]
    try:
        _started(servers, _starting(servers))
        balancer = Balancer([s.address for s in servers])
        load = Load(wd, balancer)
        threads = [
            threading.Thread(target=load.run, args=(n,))
            for n in range(REPLICAS * STREAMS_PER_REPLICA)
        ]
        for t in threads:
            t.start()
        load_started = time.monotonic()
        try:
            # Kill a replica while it has calls in flight, once the load is well under way.
            while load.acknowledged() < KILL_AT or load.in_flight[victim.address] == 0:
                assert not load.errors, load.errors
                assert time.monotonic() - load_started < 60, "the load did not get going"
                time.sleep(0.01)
            in_flight = load.in_flight[victim.address]
            victim.stop(signal.SIGKILL)
            balancer.take_out(victim.address)
            while load.acknowledged() < ACKNOWLEDGED:
                assert not load.errors, load.errors
                assert time.monotonic() - load_started < 90, "the survivors did not take over"
                time.sleep(0.01)
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=60)
        load_s = time.monotonic() - load_started
        assert not load.errors, load.errors
        unacknowledged = [x for x in load.sent if x.response is None]
        assert not unacknowledged, f"{len(unacknowledged)} submissions never acknowledged"
        retried = [x for x in load.sent if victim.address in x.failed_on]
        assert retried, "no call was in flight on the replica when it was killed"
        restarting = _starting([victim])  # meanwhile: it comes back below

        # The log as a survivor serves it: indexes 0..n-1, each statement once.
        with LedgerClient(survivors[0].address) as client:
            cp = client.checkpoint()
            got = list(client.entries(0, cp.tree_size))
        assert [e.index for e in got] == list(range(cp.tree_size))
        logged: dict[bytes, tuple[int, bytes, log_pb2.LogEntry]] = {}
        for e in got:
            assert merkle.leaf_hash(e.entry) == e.leaf_hash
            entry = parse_entry(e.entry)
            identity = dsse.Envelope.from_json(entry.envelope).statement_sha256()
            assert identity not in logged, f"logged twice: {logged[identity][0]}, {e.index}"
            logged[identity] = (e.index, e.leaf_hash, entry)
        assert cp.tree_size == 1 + len(load.sent), "entries nobody acknowledged"

        # Every acknowledged statement, the retried ones too, at the index its receipt names.
        log_key = keys.read_public(wd / "keys/log.pub")
        for x in load.sent:
            assert x.response is not None
            r = x.response.receipt
            assert r.statement_sha256 == x.statement_sha256
            index, leaf_hash, entry = logged[x.statement_sha256]
            assert (r.index, r.leaf_hash) == (index, leaf_hash)
            assert r.envelope_sha256 == hashlib.sha256(entry.envelope).digest()
            assert to_us(r.integrated_time) == to_us(entry.integrated_time)
            receipt = dsse.Envelope.from_json(x.response.signed_receipt)
            assert dsse.verify_signature(receipt, receipt.signatures[0], log_key)
            assert log_pb2.Receipt.FromString(receipt.payload) == r
        # Retried statements the victim had committed before it died: their first receipt.
        committed_by_victim = sum(x.response is not None and x.response.duplicate for x in retried)

        # The database agrees: one statement row per entry, none twice.
        engine = create_engine(normalize_url(db_url))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT count(*), count(DISTINCT sha256), min(idx), max(idx) "
                         "FROM statements")
                ).one()  # fmt: skip
        finally:
            engine.dispose()
        assert tuple(rows) == (cp.tree_size, cp.tree_size, 0, cp.tree_size - 1)

        # The other survivor serves the same signed tree; the audit passes against one.
        with LedgerClient(survivors[1].address) as client:
            assert client.checkpoint().signed_note == cp.signed_note
        capsys.readouterr()
        assert main(["verify", "--server", survivors[0].address, "--trust-root", digest]) == 0

        # The killed replica is back, at the log's end.
        _started([victim], restarting)
        with LedgerClient(victim.address) as client:
            assert client.checkpoint().signed_note == cp.signed_note
            first = retried[0].response
            assert first is not None
            again = client.submit(retried[0].envelope)
            assert again.duplicate and again.signed_receipt == first.signed_receipt
            arm = load.keys["ARM"]
            fresh = client.submit(signed(report("ARM", narrative="after the restart"), arm))
            assert fresh.receipt.index == cp.tree_size

        # Connections: each server process kept its pool; none opened one per call.
        for server in servers:
            server.stop(signal.SIGTERM)
        database = db_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 30
        while (now := _sessions(database))[1] > 0:
            assert time.monotonic() < deadline, f"{now[1]} backends still connected"
            time.sleep(0.1)
        sessions = now[0]
    finally:
        for server in servers:
            if server.proc is not None and server.proc.poll() is None:
                server.stop(signal.SIGKILL)
    per_server = pool_size(WORKERS) + POOL_OVERFLOW
    processes = REPLICAS + 1  # the victim twice
    if sessions >= 0:  # besides the servers': init's and this test's, a few
        assert sessions <= processes * per_server + 6, f"{sessions} sessions for {cp.tree_size}"
    print(
        f"{REPLICAS} replicas x {STREAMS_PER_REPLICA} streams: {len(load.sent)} statements "
        f"acknowledged in {load_s:.1f} s; SIGKILL with {in_flight} calls in flight, "
        f"{len(retried)} sent again ({committed_by_victim} committed before it died); "
        f"{cp.tree_size} entries; {sessions} database sessions in all (at most "
        f"{processes} processes x {per_server}); {time.monotonic() - started:.1f} s"
    )


def test_a_replica_takes_what_another_replica_put_in_force(
    db_url: str, parties: Parties, borders: BorderDataset, tmp_path: Path
) -> None:
    """Replica B has written nothing since A logged a key change and a new border data
    set: B's own check, before it queues, must know the new key and place reports on the
    new border, as B's sequencer would at the real index."""
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    a = Ledger(store, log_key, borders, dataset_dir=tmp_path / "a")
    b = Ledger(store, log_key, borders, dataset_dir=tmp_path / "b")  # as on another host
    try:
        new = SigningKey.generate()
        change = pb.KeyChange(
            party="ARM",
            created_time=report().created_time,
            add=[pb.PartyKey(public_key=keys.public_bytes(new), role=pb.ROLE_MONITOR)],
            reason="a second monitoring team",
        )
        rotation = dsse.sign(
            statements.KEY_CHANGE, change.SerializeToString(), [parties.arm_authority]
        )
        assert a.submit(rotation.to_json()).receipt.index == 1
        assert b.submit(signed(report("ARM"), new)).receipt.index == 2

        folder = shifted_dataset(tmp_path / "shifted")
        shifted = BorderDataset.load(folder)
        reg = registration(shifted)
        envelope = dsse.sign(
            statements.BORDER_DATASET,
            reg.SerializeToString(),
            [parties.arm_authority, parties.aze_authority],
        )
        files = {f.name: (folder / f.name).read_bytes() for f in reg.files}
        assert a.submit(envelope.to_json(), files).receipt.index == 3
        placed = b.submit(signed(report("ARM", narrative="on the new line"), parties.arm_monitor))
        assert placed.receipt.index == 4
        stored = store.get_entry(4)
        assert stored is not None
        assert parse_entry(stored.entry).validation.geo.dataset_sha256 == shifted.sha256
    finally:
        a.close()
        b.close()
        store.close()
