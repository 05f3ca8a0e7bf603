"""No client can hold the service: held streams, stalled and lying uploads, a busy port and
undecodable requests, against the real server on loopback (DESIGN.md section 8)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from ceasefire.v1 import statements_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from nacl.signing import SigningKey

from clients.client import LedgerClient, describe_error
from geo.borders import BorderDataset
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving import grpc_server
from ledger.serving.grpc_server import SERVICE_NAME, LedgerServer, Limits, build_server, check_free
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, Parties, RunningLedger
from tests.reports import report, signed

MiB = 1024 * 1024
CHUNK = 60_000
# Bytes no request message parses as: field 1, length-delimited, with a length past the end.
UNDECODABLE = b"\n\xff\xff\xff\xff\x0f"


@contextmanager
def serving(
    db_url: str, parties: Parties, borders: BorderDataset, spool: Path, **limits: Any
) -> Iterator[tuple[LedgerServer, LedgerClient]]:
    """A ledger behind a server with the given Limits."""
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0", limits=Limits(**limits), spool_dir=spool)
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    try:
        yield server, client
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def evidence(
    key: SigningKey, incident: int, content: bytes, *, declared: int | None = None
) -> bytes:
    """A signed evidence record whose plain blob is `content` (listed as `declared` bytes)."""
    digest = hashlib.sha256(content).hexdigest()
    size = len(content) if declared is None else declared
    record = pb.EvidenceRecord(
        created_time=to_timestamp(now_us()), party="ARM", incident_index=incident,
        sha256=digest, media_type="application/octet-stream", size=size,
        blob=pb.BLOB_KIND_PLAIN, blob_sha256=digest, blob_size=size,
    )  # fmt: skip
    return dsse.sign(statements.EVIDENCE, record.SerializeToString(), [key]).to_json()


class Held:
    """Request streams that send what they are given, then wait until released."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def parts(self, envelope: bytes, *chunks: bytes) -> Iterator[api.SubmitWithBlobsRequest]:
        yield api.SubmitWithBlobsRequest(envelope=envelope)
        for data in chunks:
            yield api.SubmitWithBlobsRequest(chunk=api.BlobChunk(name="blob", data=data))
        self.release.wait()


def channel(address: str) -> grpc.Channel:
    """A connection of its own (not shared with the other channels to the address)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def failure(call: grpc.Future[Any], timeout_s: float = 10) -> grpc.RpcError:
    """The error a call ends with (within `timeout_s`)."""
    try:
        call.result(timeout=timeout_s)
    except grpc.RpcError as e:
        return e
    raise AssertionError("the call succeeded")


def code_of(error: BaseException | None) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call), error
    return error.code()


def spooled(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def wait_for(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_health_and_reads_answer_while_clients_hold_streams(running: RunningLedger) -> None:
    p = running.parties
    server = running.server
    assert server is not None
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    big = os.urandom(12 * MiB)
    running.client.submit_with_blobs(evidence(p.arm_monitor, incident, big), {"blob": big})
    idle_envelope = evidence(p.arm_monitor, incident, b"x" * 1000)  # valid, not yet sent
    held = Held()
    with ExitStack() as stack:
        stack.callback(held.release.set)
        channels = [channel(running.address) for _ in range(8)]
        for c in channels:
            stack.callback(c.close)
        uploads, readers = [], []
        for i in range(64):
            stub = api_grpc.LedgerServiceStub(channels[i % 8])
            uploads.append(stub.SubmitWithBlobs.future(held.parts(idle_envelope), timeout=60))
            reader = stub.GetBlob(api.GetBlobRequest(sha256=hashlib.sha256(big).hexdigest()))
            next(iter(reader))  # the server is streaming it; nobody reads on
            readers.append(reader)
        for call in uploads + readers:
            stack.callback(call.cancel)
        # Every upload's envelope was judged (each reserved its 1,000 bytes); all wait.
        wait_for(lambda: server.servicer.budget.used == 64 * 1000)
        assert not any(u.done() for u in uploads)

        with channel(running.address) as fresh:
            checker = health_pb2_grpc.HealthStub(fresh)
            health = timed(
                lambda: checker.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
                )
            )
            checkpoint = timed(lambda: running.client.stub.GetCheckpoint(
                api.GetCheckpointRequest(), timeout=5
            ))  # fmt: skip
        print(
            f"\nwith 64 idle uploads and 64 unread 12 MiB GetBlob streams open: "
            f"Health/Check {health * 1000:.1f} ms, GetCheckpoint {checkpoint * 1000:.1f} ms"
        )
        assert health < 2.0 and checkpoint < 2.0
        assert running.client.submit(signed(report("AZE"), p.aze_monitor)).receipt.index == 3
    # Released, the idle uploads end (their blob never came) and their budget is returned.
    wait_for(lambda: server.servicer.budget.used == 0)
    assert spooled(server.spool) == []


def test_a_stalled_or_slow_upload_is_ended_by_the_server(
    db_url: str, parties: Parties, borders: BorderDataset, tmp_path: Path
) -> None:
    spool = tmp_path / "uploads"
    with serving(db_url, parties, borders, spool, message_idle_s=1.0, upload_s=3.0) as (
        server,
        client,
    ):
        incident = client.submit(signed(report("ARM"), parties.arm_monitor)).receipt.index
        content = os.urandom(10 * CHUNK)
        envelope = evidence(parties.arm_monitor, incident, content)
        held = Held()
        try:
            # Two chunks, then nothing: ended about a second after the last one.
            start = time.monotonic()
            stalled = client.stub.SubmitWithBlobs.future(
                held.parts(envelope, content[:CHUNK], content[CHUNK : 2 * CHUNK]), timeout=30
            )
            wait_for(lambda: len(spooled(spool)) == 1)
            (file,) = spooled(spool)  # the blob so far, in a private folder
            assert stat.S_IMODE(spool.stat().st_mode) == 0o700
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            wait_for(lambda: file.exists() and file.stat().st_size == 2 * CHUNK)
            error = failure(stalled)
            took = time.monotonic() - start
            assert code_of(error) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "nothing sent for 1 s" in describe_error(error)
            assert took < 5, took
            print(f"\na stalled upload was ended after {took:.2f} s (bound: 1 s without a message)")

            # A chunk every 0.5 s keeps it alive, but not past the upload's 3 s in all.
            def trickle() -> Iterator[api.SubmitWithBlobsRequest]:
                yield api.SubmitWithBlobsRequest(envelope=envelope)
                for i in range(10):
                    time.sleep(0.5)
                    data = content[i * CHUNK : (i + 1) * CHUNK]
                    yield api.SubmitWithBlobsRequest(chunk=api.BlobChunk(name="blob", data=data))

            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                client.stub.SubmitWithBlobs(trickle(), timeout=30)
            took = time.monotonic() - start
            assert code_of(info.value) == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "an upload must finish within 3 s" in describe_error(info.value)
            assert 2.5 < took < 5, took
        finally:
            held.release.set()
        wait_for(lambda: server.servicer.budget.used == 0)
        assert spooled(spool) == []
        assert client.checkpoint().tree_size == 2


def test_an_upload_is_judged_by_its_envelope_before_any_chunk(
    running: RunningLedger,
) -> None:
    held = Held()
    stub = running.client.stub
    try:
        # Not even JSON: refused on the first message, while the client is still sending.
        call = stub.SubmitWithBlobs.future(held.parts(b"not even JSON"), timeout=30)
        error = failure(call)
        assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT
        assert not held.release.is_set()  # no chunk was sent, let alone read
        # A statement whose signer is no key of the ledger: refused before its chunks.
        stranger = evidence(running.parties.outsider, 0, b"x" * 1000)
        call = stub.SubmitWithBlobs.future(held.parts(stranger), timeout=30)
        assert code_of(failure(call)) == grpc.StatusCode.PERMISSION_DENIED
        # A statement that names no files takes none.
        envelope = signed(report("ARM"), running.parties.arm_monitor)
        call = stub.SubmitWithBlobs.future(held.parts(envelope, b"x"), timeout=30)
        error = failure(call)
        assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT
        assert "this statement names no files" in describe_error(error)
    finally:
        held.release.set()
    assert running.client.checkpoint().tree_size == 1


def test_an_upload_larger_than_declared_is_refused_and_leaves_no_file(
    running: RunningLedger,
) -> None:
    p = running.parties
    assert running.server is not None
    spool = running.server.spool
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    content = os.urandom(5 * CHUNK)
    envelope = evidence(p.arm_monitor, incident, content, declared=3 * CHUNK + 10)

    def parts() -> Iterator[api.SubmitWithBlobsRequest]:
        yield api.SubmitWithBlobsRequest(envelope=envelope)
        for start in range(0, len(content), CHUNK):
            chunk = api.BlobChunk(name="blob", data=content[start : start + CHUNK])
            yield api.SubmitWithBlobsRequest(chunk=chunk)

    with pytest.raises(grpc.RpcError) as info:
        running.client.stub.SubmitWithBlobs(parts(), timeout=30)
    assert code_of(info.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not have the listed size" in describe_error(info.value)
    assert spooled(spool) == []
    # Another file than the one listed: refused at its first chunk.
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit_with_blobs(evidence(p.arm_monitor, incident, content), {"x": b"1"})
    assert "send the blob as one file named 'blob'" in describe_error(info.value)
    assert spooled(spool) == []
    assert running.server.servicer.budget.used == 0
    # The same blob, as declared, is logged, and a duplicate upload is answered at once.
    honest = evidence(p.arm_monitor, incident, content)
    first = running.client.submit_with_blobs(honest, {"blob": content})
    again = running.client.submit_with_blobs(honest, {"blob": b""})
    assert again.duplicate and again.receipt.index == first.receipt.index
    assert running.client.blob(hashlib.sha256(content).hexdigest()) == content
    assert spooled(spool) == []


def test_uploads_share_a_bounded_budget(
    db_url: str, parties: Parties, borders: BorderDataset, tmp_path: Path
) -> None:
    with serving(db_url, parties, borders, tmp_path / "uploads", upload_budget_bytes=150_000) as (
        server,
        client,
    ):
        incident = client.submit(signed(report("ARM"), parties.arm_monitor)).receipt.index
        held = Held()
        try:
            first = evidence(parties.arm_monitor, incident, b"a" * 100_000)
            waiting = client.stub.SubmitWithBlobs.future(held.parts(first), timeout=30)
            wait_for(lambda: server.servicer.budget.used == 100_000)
            second = evidence(parties.arm_monitor, incident, b"b" * 100_000)
            with pytest.raises(grpc.RpcError) as info:
                client.submit_with_blobs(second, {"blob": b"b" * 100_000})
            assert code_of(info.value) == grpc.StatusCode.UNAVAILABLE
            assert "retry in 2.0 s" in describe_error(info.value)
        finally:
            held.release.set()
        assert code_of(failure(waiting)) == grpc.StatusCode.INVALID_ARGUMENT
        wait_for(lambda: server.servicer.budget.used == 0)
        # Once the first is gone, the second fits.
        client.submit_with_blobs(second, {"blob": b"b" * 100_000})


def test_a_reader_that_stops_reading_is_ended(
    db_url: str, parties: Parties, borders: BorderDataset, tmp_path: Path
) -> None:
    with serving(db_url, parties, borders, tmp_path / "uploads", write_idle_s=1.0) as (_, client):
        incident = client.submit(signed(report("ARM"), parties.arm_monitor)).receipt.index
        big = os.urandom(12 * MiB)
        client.submit_with_blobs(evidence(parties.arm_monitor, incident, big), {"blob": big})
        reader = client.stub.GetBlob(api.GetBlobRequest(sha256=hashlib.sha256(big).hexdigest()))
        got = len(next(iter(reader)).data)
        time.sleep(3)  # the server's writes wait on flow control; after 1 s it gives up
        with pytest.raises(grpc.RpcError) as info:
            for response in reader:
                got += len(response.data)
        assert code_of(info.value) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "the reader took nothing for 1 s" in describe_error(info.value)
        assert got < len(big)
        assert client.blob(hashlib.sha256(big).hexdigest()) == big  # a reader that reads


def test_a_second_server_on_a_busy_port_is_a_one_line_error(
    running: RunningLedger, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "clients.cli", "serve", "--bootstrap",
            "--data-dir", str(tmp_path / "second"), "--listen", running.address,
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {running.address} is in use (another ceasefire serve?): choose --listen HOST:PORT"
    ]
    assert result.stdout == ""
    assert not (tmp_path / "second").exists()  # refused before anything was created
    # The first server still serves, alone.
    assert running.client.checkpoint().tree_size == 1


def test_a_port_taken_between_check_and_bind_is_refused(
    running: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC's own bind fails too: so_reuseport is off, so two servers never share a port."""
    checks: list[str] = []

    def late(address: str) -> None:
        checks.append(address)
        if len(checks) > 1:  # only the check after gRPC's bind failed sees the port taken
            check_free(address)

    monkeypatch.setattr(grpc_server, "check_free", late)
    with pytest.raises(grpc_server.AddressInUse, match="is in use"):
        build_server(running.ledger, running.address, spool_dir=tmp_path / "up")
    assert checks == [running.address, running.address]
    assert running.client.checkpoint().tree_size == 1


def undecodable_call(
    target: grpc.Channel, method: str, streaming_request: bool, streaming_response: bool
) -> grpc.RpcError:
    identity: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
    with pytest.raises(grpc.RpcError) as info:
        if streaming_request and streaming_response:
            list(target.stream_stream(method, **identity)(iter([UNDECODABLE]), timeout=10))
        elif streaming_request:
            target.stream_unary(method, **identity)(iter([UNDECODABLE]), timeout=10)
        elif streaming_response:
            list(target.unary_stream(method, **identity)(UNDECODABLE, timeout=10))
        else:
            target.unary_unary(method, **identity)(UNDECODABLE, timeout=10)
    return info.value


def test_undecodable_requests_answer_invalid_argument(running: RunningLedger) -> None:
    services = [
        api.DESCRIPTOR.services_by_name["LedgerService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    ]
    methods = [(s.full_name, m) for s in services for m in s.methods]
    assert len(methods) >= 16
    with channel(running.address) as target:
        for service, m in methods:
            path = f"/{service}/{m.name}"
            error = undecodable_call(target, path, m.client_streaming, m.server_streaming)
            assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT, (path, error)
            assert f"not a {m.input_type.full_name} message" in (error.details() or ""), path
        # The server is unharmed.
        assert running.client.checkpoint().tree_size == 1


def test_connections_are_bounded(
    db_url: str, parties: Parties, borders: BorderDataset, tmp_path: Path
) -> None:
    """Two streams at once per connection (further calls on it wait; other connections are
    served), and a connection with no call is closed after a second."""
    with serving(
        db_url, parties, borders, tmp_path / "uploads",
        max_streams_per_connection=2, max_connection_idle_s=1.0,
    ) as (_, client):  # fmt: skip
        incident = client.submit(signed(report("ARM"), parties.arm_monitor)).receipt.index
        envelope = evidence(parties.arm_monitor, incident, b"x" * 1000)
        held = Held()
        with channel(client.target) as busy:
            stub = api_grpc.LedgerServiceStub(busy)
            # Connected first, so the client knows the server's stream limit (HTTP/2 SETTINGS)
            # before it opens streams; otherwise a stream can be refused and retried.
            stub.GetCheckpoint(api.GetCheckpointRequest(), timeout=5)
            try:
                uploads = [stub.SubmitWithBlobs.future(held.parts(envelope)) for _ in range(2)]
                with pytest.raises(grpc.RpcError) as info:
                    stub.GetCheckpoint(api.GetCheckpointRequest(), timeout=1)
                assert code_of(info.value) == grpc.StatusCode.DEADLINE_EXCEEDED
                assert client.checkpoint().tree_size == 2  # another connection: served
            finally:
                held.release.set()
            for upload in uploads:
                assert code_of(failure(upload)) == grpc.StatusCode.INVALID_ARGUMENT
            stub.GetCheckpoint(api.GetCheckpointRequest(), timeout=5)
            # No call for a second: the server closes the connection (GOAWAY).
            states: list[grpc.ChannelConnectivity] = []
            busy.subscribe(states.append)
            wait_for(lambda: grpc.ChannelConnectivity.IDLE in states, timeout_s=10)


def test_batched_reads_give_the_per_item_reads_in_few_messages(
    running: RunningLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GetEntryBatches and TimelineBatches send what GetEntries and Timeline send, in the
    same order, packed to at most PACKED_BYTES a message (one larger item alone): a
    message costs ~0.1 ms whatever it holds, so a day of 1,000 incidents one to a message
    spent more on messages than on the query. The client library reads through them."""
    arm = running.parties.arm_monitor
    reports = [signed(report("ARM", hours_ago=i + 1), arm) for i in range(30)]
    assert all(not isinstance(r, Exception) for r in running.client.submit_many(reports))
    stub = api_grpc.LedgerServiceStub(running.client.channel)
    entries = api.GetEntriesRequest(start=0, end=0)
    timeline = api.TimelineRequest(limit=100)
    one_by_one = (list(stub.GetEntries(entries)), list(stub.Timeline(timeline)))
    assert [len(x) for x in one_by_one] == [31, 30]

    def batched() -> tuple[list[list[Any]], list[list[Any]]]:
        by_entries = stub.GetEntryBatches(api.GetEntryBatchesRequest(range=entries))
        by_incidents = stub.TimelineBatches(api.TimelineBatchesRequest(query=timeline))
        return [list(b.entries) for b in by_entries], [list(b.incidents) for b in by_incidents]

    packed = batched()
    assert [len(x) for x in packed] == [1, 1]  # small items: all in one message
    assert tuple([i for b in x for i in b] for x in packed) == one_by_one

    bound = 5_000  # a few items a message
    monkeypatch.setattr(grpc_server, "PACKED_BYTES", bound)
    packed = batched()
    assert tuple([i for b in x for i in b] for x in packed) == one_by_one
    for batches in packed:
        assert len(batches) > 5
        assert all(len(b) == 1 or sum(i.ByteSize() for i in b) <= bound for b in batches)

    # The client library reads through them (not one item a message), and gives the same.
    for per_item in ("GetEntries", "Timeline"):
        monkeypatch.setattr(running.client.stub, per_item, None)
    assert list(running.client.entries(0, 0)) == one_by_one[0]
    assert list(running.client.timeline_page(timeline)) == one_by_one[1]


def test_the_client_reads_a_server_older_than_the_batched_reads(
    db_url: str,
    parties: Parties,
    borders: BorderDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server from before GetEntryBatches and TimelineBatches answers them UNIMPLEMENTED
    (the generated servicer's default); the client library then reads one item a message."""
    for method in ("GetEntryBatches", "TimelineBatches"):
        older = getattr(api_grpc.LedgerServiceServicer, method)
        monkeypatch.setattr(grpc_server.LedgerServicer, method, older)
    with serving(db_url, parties, borders, tmp_path / "spool") as (_, client):
        reports = [signed(report("ARM", hours_ago=i + 1), parties.arm_monitor) for i in range(3)]
        indexes = [r.receipt.index for r in client.submit_many(reports)]  # type: ignore[union-attr]
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(api_grpc.LedgerServiceStub(client.channel).GetEntryBatches(
                api.GetEntryBatchesRequest(range=api.GetEntriesRequest())
            )))  # fmt: skip
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert [e.index for e in client.entries(0, 0)] == [0, *indexes]
        assert sorted(r.index for r in client.timeline()) == indexes
