"""Group commit and back-pressure, with the real store on SQLite and PostgreSQL.

A second connection holds the writer's lock (SQLite BEGIN IMMEDIATE, PostgreSQL SELECT ...
FOR UPDATE on the tree-state row), so submissions pile up exactly as they do behind a slow
disk; nothing is mocked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
import pytest
from ceasefire.v1 import statements_pb2 as pb
from sqlalchemy import event, select

from clients.client import LedgerClient, describe_error
from geo.borders import BorderDataset
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import build_server
from ledger.serving.runtime import pool_size
from ledger.storage import LedgerStore, tree_state
from tests.conftest import ORIGIN, Parties, selects_run
from tests.reports import report, signed


@contextmanager
def serving(
    db_url: str,
    parties: Parties,
    borders: BorderDataset,
    *,
    workers: int = 32,
    pool_size: int | None = None,
    **options: int,
) -> Iterator[tuple[Ledger, LedgerClient]]:
    store = LedgerStore.open(db_url, pool_size=pool_size)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders, **options)  # type: ignore[arg-type]
    server, port = build_server(ledger, "127.0.0.1:0", max_workers=workers)
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    try:
        yield ledger, client
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


@contextmanager
def writer_lock(store: LedgerStore) -> Iterator[None]:
    with store.engine.connect().execution_options(ledger_writer=True) as conn, conn.begin():
        conn.execute(select(tree_state).with_for_update())
        yield


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_group_commit_batches_waiting_submissions(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    n = 24
    envelopes = [signed(report("ARM", hours_ago=i + 1), parties.arm_monitor) for i in range(n)]
    with serving(db_url, parties, borders) as (ledger, client), ThreadPoolExecutor(n) as pool:
        with writer_lock(ledger.store):
            # One submission holds the sequencer at the lock; the rest wait in the queue.
            futures = [pool.submit(client.submit, envelopes[0])]
            wait_for(lambda: ledger.sequencer.in_flight == 1)
            futures += [pool.submit(client.submit, e) for e in envelopes[1:]]
            wait_for(lambda: ledger.sequencer.pending == n - 1)
            assert not any(f.done() for f in futures)  # nobody is answered before commit
        indexes = sorted(f.result().receipt.index for f in futures)
        assert indexes == list(range(1, n + 1))
        stats = ledger.sequencer.stats
        assert (stats.batches, stats.entries, stats.largest_batch) == (2, n, n - 1)
        assert client.checkpoint().tree_size == n + 1


def test_full_queue_answers_unavailable_with_retry_hint(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    envelopes = [signed(report("ARM", hours_ago=i + 1), parties.arm_monitor) for i in range(4)]
    with serving(db_url, parties, borders, max_queue=2) as (ledger, client):
        with ThreadPoolExecutor(3) as pool:
            with writer_lock(ledger.store):
                futures = [pool.submit(client.submit, envelopes[0])]
                wait_for(lambda: ledger.sequencer.in_flight == 1)
                futures += [pool.submit(client.submit, e) for e in envelopes[1:3]]
                wait_for(lambda: ledger.sequencer.pending == 2)
                with pytest.raises(grpc.RpcError) as info:
                    client.submit(envelopes[3])
                assert isinstance(info.value, grpc.Call)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "retry in 1.0 s" in describe_error(info.value)
            assert sorted(f.result().receipt.index for f in futures) == [1, 2, 3]
        # Once the queue drains, the refused submission goes through on retry.
        assert client.submit(envelopes[3]).receipt.index == 4


def test_a_server_opens_its_connections_at_start_and_none_under_load(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    """A pool filled as load rises opens connections mid-load (on PostgreSQL a backend
    each: a fork and an authentication). A server's pool is opened whole at start, so
    calls from more clients than it has workers open none."""
    workers = 4
    opening = {"workers": workers, "pool_size": pool_size(workers)}
    with serving(db_url, parties, borders, **opening) as (ledger, client):
        engine = ledger.store.engine
        assert engine.pool.checkedin() == pool_size(workers)  # type: ignore[attr-defined]
        opened: list[object] = []
        event.listen(engine, "connect", lambda *_: opened.append(1))
        envelopes = [signed(report("ARM", hours_ago=i + 1), parties.arm_monitor) for i in range(48)]
        with ThreadPoolExecutor(16) as pool:
            receipts = list(pool.map(client.submit, envelopes))
        assert sorted(r.receipt.index for r in receipts) == list(range(1, 49))
        assert not opened, f"{len(opened)} connections opened while serving 48 submissions"


def test_a_submission_is_verified_once_and_judged_again_at_its_index(
    db_url: str, parties: Parties, borders: BorderDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check verifies a signature and the sequencer does not redo that arithmetic;
    it still judges the key at the entry's real index: a key revoked by an entry queued
    before the report (both checked on the state before either) refuses the report."""
    verifications: list[bytes] = []
    real_verify = dsse._verify

    def counted(public_key: bytes, message: bytes, sig: bytes) -> bool:
        verifications.append(sig)
        return real_verify(public_key, message, sig)

    monkeypatch.setattr(dsse, "_verify", counted)
    with serving(db_url, parties, borders) as (ledger, client), ThreadPoolExecutor(3) as pool:
        verifications.clear()  # the trust root's, at start
        client.submit(signed(report("ARM", hours_ago=3), parties.arm_monitor))
        assert len(verifications) == 1

        revocation = dsse.sign(
            statements.KEY_CHANGE,
            pb.KeyChange(
                party="ARM", created_time=to_timestamp(now_us()),
                revoke_key_ids=[dsse.key_id(keys.public_bytes(parties.arm_monitor))],
                reason="handset lost",
            ).SerializeToString(),
            [parties.arm_authority],
        )  # fmt: skip
        with writer_lock(ledger.store):
            first = pool.submit(client.submit, signed(report("AZE"), parties.aze_monitor))
            wait_for(lambda: ledger.sequencer.in_flight == 1)
            revoked = pool.submit(client.submit, revocation.to_json())
            wait_for(lambda: ledger.sequencer.pending == 1)
            late = pool.submit(client.submit, signed(report("ARM"), parties.arm_monitor))
            wait_for(lambda: ledger.sequencer.pending == 2)
        assert first.result().receipt.index == 2
        assert revoked.result().receipt.index == 3
        with pytest.raises(grpc.RpcError) as refused:
            late.result()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked at index 3" in describe_error(refused.value)


def test_a_submission_is_checked_on_the_state_last_committed(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    """The check judges on the key state this replica last committed, without reading
    the log's size; only a refusal reads it (another replica may have logged the key that
    makes the statement good: tests/test_replicas.py)."""
    with serving(db_url, parties, borders) as (ledger, _client):
        envelope = signed(report("ARM"), parties.arm_monitor)
        ran = [s for s, _ in selects_run(ledger.store.engine, lambda: ledger.submit(envelope))]
        assert ran and not any(s.startswith("SELECT tree_state.size") for s in ran), ran
