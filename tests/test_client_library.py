"""The client library as a product: retries (a server that is not there yet, a server that
is busy and says when to come back), typed errors that existing grpc.RpcError callers still
read, proofs of a receipt, and docs/client-library.md run as written. All against a real
gRPC server on loopback; timings are asserted as lower bounds only."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from clients import errors, exit_codes
from clients.client import (
    KEY_EVENT_TYPES,
    LedgerClient,
    Refused,
    RetryEvent,
    RetryPolicy,
    describe_error,
    field_violations,
    sign_statement,
)
from geo.borders import BorderDataset
from ledger import keys, kinds
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import LedgerServer, build_server
from ledger.storage import LedgerStore
from ledger.verifier import VerificationError
from tests.conftest import ORIGIN, Parties, RunningLedger
from tests.reports import report, signed
from tests.test_sequencer import wait_for, writer_lock

DOC = Path(__file__).resolve().parent.parent / "docs" / "client-library.md"
REPO = DOC.parent.parent
QUICK = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def ledger_for(
    db_url: str, parties: Parties, borders: BorderDataset, **options: int
) -> Iterator[Ledger]:
    """An initialised ledger, not yet served."""
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders, **options)  # type: ignore[arg-type]
    try:
        yield ledger
    finally:
        ledger.close()
        store.close()


def test_the_client_packs_calls_by_the_servers_own_key_events() -> None:
    assert kinds.KEY_EVENTS == KEY_EVENT_TYPES


def test_the_client_imports_without_the_servers_dependencies() -> None:
    heavy = ["sqlalchemy", "alembic", "psycopg", "geopandas", "shapely", "pyproj", "matplotlib"]
    code = (
        "import sys, clients.client, clients.errors, clients.retrying; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- retries ------------------------------------------------------------------------------


def test_a_submit_waits_for_a_server_that_is_not_up_yet(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    """The link is down (nothing listens); the server comes up after the first failure; the
    submission goes through on a later attempt, once."""
    address = f"127.0.0.1:{free_port()}"
    envelope = signed(report("ARM"), parties.arm_monitor)
    events: list[RetryEvent] = []
    servers: list[LedgerServer] = []
    with ledger_for(db_url, parties, borders) as ledger:

        def link_up(event: RetryEvent) -> None:
            events.append(event)
            if not servers:
                server, _ = build_server(ledger, address)
                server.start()
                servers.append(server)

        policy = RetryPolicy(max_attempts=12, initial_backoff_s=0.2, max_backoff_s=2.0)
        try:
            with LedgerClient(address, retry=policy, on_retry=link_up) as client:
                response = client.submit(envelope)
                assert response.receipt.index == 1 and not response.duplicate
                assert events and isinstance(events[0].error, errors.Unreachable)
                assert events[0].method == "Submit" and events[0].attempt == 1
                # Sent again (a lost answer): the first receipt, nothing logged twice.
                again = client.submit(envelope)
                assert again.duplicate and again.receipt.index == 1
                assert client.checkpoint().tree_size == 2
        finally:
            for server in servers:
                server.stop(grace=None).wait()


def test_exhausted_retries_raise_unreachable_as_an_rpc_error() -> None:
    events: list[RetryEvent] = []
    with (
        LedgerClient(
            f"127.0.0.1:{free_port()}", retry=QUICK, on_retry=events.append, timeout_s=5
        ) as client,
        pytest.raises(errors.Unreachable) as info,
    ):
        client.checkpoint()
    error = info.value
    assert error.attempts == 3 and [e.attempt for e in events] == [1, 2]
    assert all(e.delay_s <= 0.1 for e in events)
    # What callers written for gRPC read of it.
    assert isinstance(error, grpc.RpcError) and isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert describe_error(error).startswith("UNAVAILABLE: ")
    assert exit_codes.for_rpc_error(error) == exit_codes.UNREACHABLE
    assert Refused.from_error(error).code == grpc.StatusCode.UNAVAILABLE
    assert "(after 3 attempts)" in str(error)

    events.clear()
    with (
        LedgerClient(
            f"127.0.0.1:{free_port()}", retry=RetryPolicy.none(), on_retry=events.append
        ) as client,
        pytest.raises(errors.Unreachable) as info,
    ):
        client.checkpoint()
    assert info.value.attempts == 1 and events == []


def test_a_busy_server_is_asked_again_after_the_delay_it_gives(
    db_url: str, parties: Parties, borders: BorderDataset
) -> None:
    """The write queue is full (one commit held at the writer's lock, one queued): the
    server answers UNAVAILABLE with RetryInfo 1 s; the client waits at least that, and the
    statement is logged once the queue drains."""
    envelopes = [signed(report("ARM", hours_ago=i + 1), parties.arm_monitor) for i in range(3)]
    release = threading.Event()
    events: list[RetryEvent] = []

    def hold(ledger: Ledger) -> None:
        with writer_lock(ledger.store):
            release.wait(30)

    def drain(event: RetryEvent) -> None:
        events.append(event)
        release.set()

    with (
        ledger_for(db_url, parties, borders, max_queue=1) as ledger,
        ThreadPoolExecutor(3) as pool,
    ):
        server, port = build_server(ledger, "127.0.0.1:0", max_workers=8)
        server.start()
        try:
            with LedgerClient(f"127.0.0.1:{port}", on_retry=drain) as client:
                holder = pool.submit(hold, ledger)
                first = pool.submit(client.submit, envelopes[0])
                wait_for(lambda: ledger.sequencer.in_flight == 1)
                second = pool.submit(client.submit, envelopes[1])
                wait_for(lambda: ledger.sequencer.pending == 1)
                started = time.monotonic()
                third = client.submit(envelopes[2])
                took = time.monotonic() - started
                holder.result()
                assert sorted([first.result().receipt.index, second.result().receipt.index]) == [
                    1,
                    2,
                ]
                assert third.receipt.index == 3 and not third.duplicate
                event = events[0]  # (on a slow machine the queue may still be full once more)
                assert all(isinstance(e.error, errors.Busy) for e in events)
                assert event.error.retry_after == 1.0
                assert event.delay_s >= 1.0 and took >= 1.0  # lower bounds only
                assert client.checkpoint().tree_size == 4  # one entry per statement
        finally:
            release.set()
            server.stop(grace=None).wait()


# -- typed errors -------------------------------------------------------------------------


def test_each_refusal_is_its_own_exception_and_still_an_rpc_error(
    running: RunningLedger,
) -> None:
    p, client = running.parties, running.client
    good = report("ARM")

    # A signature that does not verify.
    envelope = dsse.Envelope.from_json(signed(good, p.arm_monitor))
    forged = dsse.Envelope(
        envelope.payload,
        envelope.payload_type,
        (dsse.Signature(envelope.signatures[0].keyid, bytes(64)),),
    ).to_json()
    with pytest.raises(errors.NotAuthenticated) as unauthenticated:
        client.submit(forged)
    # An ARM monitor's key speaking for AZE; a key the ledger does not know.
    with pytest.raises(errors.NotPermitted):
        client.submit(sign_statement(report("AZE"), [p.arm_monitor]))
    with pytest.raises(errors.NotPermitted):
        client.submit(sign_statement(good, [p.outsider]))
    # A field out of bounds: named as the docs spell it.
    bad = pb.IncidentReport()
    bad.CopyFrom(good)
    bad.fire_from_bearing_deg = 360.0
    with pytest.raises(errors.InvalidStatement) as invalid:
        client.submit(sign_statement(bad, [p.arm_monitor]))
    assert invalid.value.fields == ["fire_from_bearing_deg"]
    assert field_violations(invalid.value) == ["fire_from_bearing_deg"]
    assert invalid.value.attempts == 1  # a judgment is never retried
    # Reads past the tree.
    with pytest.raises(errors.ClientError) as missing:
        client.entry(99)
    assert isinstance(missing.value, errors.NotFound | errors.OutOfRange)
    with pytest.raises(errors.OutOfRange):
        client.inclusion_proof(5, 99)

    # Every one reads as gRPC's own error did, for code written against it.
    for error in (unauthenticated.value, invalid.value, missing.value):
        assert isinstance(error, grpc.RpcError)
        assert describe_error(error) == f"{error.code().name}: {error.details()}"
        assert Refused.from_error(error).describe() == describe_error(error)
        assert exit_codes.for_rpc_error(error) == exit_codes.FAILED
    assert client.checkpoint().tree_size == 1  # nothing refused was logged


def test_submit_many_answers_each_statement_and_types_its_refusals(
    running: RunningLedger,
) -> None:
    p = running.parties
    envelopes = [
        sign_statement(report("ARM", hours_ago=3), [p.arm_monitor]),
        sign_statement(report("AZE", hours_ago=4), [p.arm_monitor]),  # not ARM's to say
        sign_statement(report("AZE", hours_ago=5), [p.aze_monitor]),
    ]
    results = running.client.submit_many(envelopes)
    assert [type(r).__name__ for r in results] == ["SubmitResponse", "Refused", "SubmitResponse"]
    refused = results[1]
    assert isinstance(refused, Refused) and not refused.transient
    assert isinstance(refused.error(), errors.NotPermitted)
    assert running.client.checkpoint().tree_size == 3


def test_a_status_maps_to_one_exception_class() -> None:
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    def status(code: grpc.StatusCode, retry_s: float | None = None) -> status_pb2.Status:
        s = status_pb2.Status(code=code.value[0], message="m")
        if retry_s is not None:
            detail, delay = any_pb2.Any(), duration_pb2.Duration()
            delay.FromMilliseconds(int(retry_s * 1000))
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            s.details.append(detail)
        return s

    c = grpc.StatusCode
    expected = {
        c.UNAVAILABLE: errors.Unreachable,
        c.DEADLINE_EXCEEDED: errors.Unreachable,
        c.RESOURCE_EXHAUSTED: errors.Busy,
        c.INVALID_ARGUMENT: errors.InvalidStatement,
        c.UNAUTHENTICATED: errors.NotAuthenticated,
        c.PERMISSION_DENIED: errors.NotPermitted,
        c.NOT_FOUND: errors.NotFound,
        c.ALREADY_EXISTS: errors.AlreadyExists,
        c.OUT_OF_RANGE: errors.OutOfRange,
        c.FAILED_PRECONDITION: errors.FailedPrecondition,
        c.DATA_LOSS: errors.DataLoss,
        c.INTERNAL: errors.ServerError,
    }
    for code, cls in expected.items():
        assert type(errors.from_status(status(code))) is cls, code
    busy = errors.from_status(status(c.UNAVAILABLE, 2.5))
    assert isinstance(busy, errors.Busy) and busy.retry_after == 2.5
    assert describe_error(busy) == "UNAVAILABLE: m (retry in 2.5 s)"


# -- proofs -------------------------------------------------------------------------------


def test_a_kept_receipt_is_proved_and_a_forged_one_is_not(running: RunningLedger) -> None:
    p, client = running.parties, running.client
    response = client.submit(signed(report("ARM"), p.arm_monitor))
    entry0 = log_pb2.LogEntry.FromString(client.entry(0).entry)
    digest = hashlib.sha256(entry0.envelope).hexdigest()
    trust = client.trust_state(pinned_trust_root=digest)
    proof = client.verify_receipt(response, trust=trust)
    assert (proof.index, proof.leaf_hash) == (1, response.receipt.leaf_hash)
    assert proof.tree_size >= 2
    # A later checkpoint proves it too.
    client.submit(signed(report("ARM", hours_ago=9), p.arm_monitor))
    later = client.prove_inclusion(1, trust=trust)
    assert later.leaf_hash == proof.leaf_hash

    with pytest.raises(VerificationError, match="not the pinned one"):
        client.trust_state(pinned_trust_root="00" * 32)
    # A receipt the log did not sign: refused before anything is asked.
    forged = dsse.sign(
        dsse.Envelope.from_json(response.signed_receipt).payload_type,
        response.receipt.SerializeToString(),
        [p.arm_monitor],
    ).to_json()
    response.signed_receipt = forged
    with pytest.raises(VerificationError, match="not signed by the log key"):
        client.verify_receipt(response, trust=trust)


def test_sign_statement_refuses_a_message_that_is_no_statement() -> None:
    with pytest.raises(ValueError, match="not a statement one submits"):
        sign_statement(pb.GeoPoint(), [SigningKey.generate()])


# -- the document -------------------------------------------------------------------------


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def test_the_documented_examples_run(
    running: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/client-library.md's Python blocks, in order, as one script, against a real
    server: its address and an ARM monitor's key through the variables the doc names."""
    key_file = tmp_path / "arm-monitor.key"
    keys.write_private(key_file, running.parties.arm_monitor, party="ARM", role="monitor")
    monkeypatch.setenv("CEASEFIRE_SERVER", running.address)
    monkeypatch.setenv("CEASEFIRE_KEY", str(key_file))
    monkeypatch.delenv("CEASEFIRE_TLS_CA", raising=False)
    blocks = doc_blocks()
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "client_library_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    # What the script did, seen from outside it.
    assert running.client.checkpoint().tree_size == 2  # its report, once
    assert os.environ["CEASEFIRE_SERVER"] == running.address
