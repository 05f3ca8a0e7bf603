"""Tail: the entries from an index, then each new one as it is committed, on real servers.

Woken by this replica's commits (shown with the shared size check slowed to once a
minute), by another replica's commits on the same database (through that check), never cut
off while waiting, ended and resumed within the server's stream limit, bounded for a slow
reader (the server reads a page only once the last was written), and the command line
stops on Ctrl-C or a closed pipe without a traceback.

`ceasefire tail` runs as a real process in its two tests (on SQLite only: they are about the
process, not the database): it follows the log until stopped, Ctrl-C is a signal to the
process (its own SIGINT handler, exit 130), and a closed pipe is the process's stdout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from ceasefire.v1 import statements_pb2 as pb

from clients.client import LedgerClient, batches
from clients.stats_cli import entry_line
from geo.borders import BorderDataset
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.log_key import LogKey
from ledger.service import Ledger
from ledger.serving import grpc_server
from ledger.serving.grpc_server import TAIL_PAGE, Limits, build_server
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, RunningLedger
from tests.reports import report, signed

ROOT = Path(__file__).resolve().parent.parent
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def message(n: int, words: int = 3) -> bytes:
    """A hotline message from ARM (an entry of about 4 KiB with words=500)."""
    text = f"Message {n}: " + " ".join(["hold fire at the Berd post"] * words)
    return pb.HotlineMessage(
        created_time=to_timestamp(now_us()), party="ARM", to_party="AZE",
        urgency=pb.HOTLINE_URGENCY_ROUTINE, text=text[:8000], text_language="en",
    ).SerializeToString()  # fmt: skip


def send(
    client: LedgerClient, running: RunningLedger, first: int, count: int, words: int = 3
) -> None:
    key = running.parties.arm_monitor
    envelopes = [
        dsse.sign(statements.HOTLINE, message(n, words), [key]).to_json()
        for n in range(first, first + count)
    ]
    for batch in batches(envelopes):
        for result in client.submit_batch(batch):
            assert isinstance(result, api.SubmitResponse), result


class Collector:
    """Reads a tail in a thread of its own until told to stop or `until` entries came."""

    def __init__(self, address: str, start: int) -> None:
        self.got: list[api.TailResponse] = []
        self.arrived: dict[int, float] = {}
        self.error: BaseException | None = None
        self._client = LedgerClient(address)
        self._entries: Iterator[api.TailResponse] = self._client.tail(start)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for e in self._entries:
                self.arrived[e.index] = time.monotonic()
                self.got.append(e)
        except grpc.RpcError as e:
            if not (isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.CANCELLED):
                self.error = e
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        """Close its channel: the call ends CANCELLED, which the reader expects."""
        self._client.close()
        self._thread.join(5)
        assert self.error is None, self.error

    def wait_for(self, index: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while index not in self.arrived and time.monotonic() < deadline:
            assert self.error is None, self.error
            time.sleep(0.02)
        assert index in self.arrived, f"entry {index} did not come; got {len(self.got)}"


def test_tail_sends_history_then_each_commit_without_gap_or_repeat(
    running: RunningLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shared size check once a minute: what arrives sooner came by the commit feed.
    monkeypatch.setattr(grpc_server, "TAIL_POLL_S", 60.0)
    client, p = running.client, running.parties
    for hours in (5, 6, 7, 8, 9):
        client.submit(signed(report("ARM", hours_ago=hours), p.arm_monitor))
    size = client.checkpoint().tree_size
    tail = Collector(running.address, 2)
    tail.wait_for(size - 1)
    # Another thread appends, one commit at a time and in batches, while the tail reads.
    committed: dict[int, float] = {}

    def writer() -> None:
        with LedgerClient(running.address) as other:
            for n in range(12):
                env = dsse.sign(statements.HOTLINE, message(n), [p.arm_monitor]).to_json()
                committed[other.submit(env).receipt.index] = time.monotonic()
            send(other, running, 100, 40)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(60)
    final = client.checkpoint().tree_size
    assert final == size + 52
    tail.wait_for(final - 1)
    time.sleep(0.3)  # nothing more, nothing twice
    assert [e.index for e in tail.got] == list(range(2, final))
    assert [e.entry for e in tail.got] == [e.entry for e in client.entries(2, final)]
    # Each single commit reached the tail at once, not at the next size check (60 s).
    for index, at in committed.items():
        assert tail.arrived[index] - at < 5.0
    assert running.server is not None and running.server.servicer.size_watch is not None
    assert running.server.servicer.size_watch.polls == 0
    tail.stop()


def test_tail_refuses_a_start_beyond_the_log(running: RunningLedger) -> None:
    size = running.client.checkpoint().tree_size
    with pytest.raises(grpc.RpcError) as info:
        next(iter(running.client.tail(size + 1)))
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "start_index" in (info.value.details() or "")


def test_a_tail_waits_past_the_idle_limit_and_resumes_past_the_stream_limit(
    running: RunningLedger,
) -> None:
    """A tail waiting for entries writes nothing: not an idle reader (write_idle_s 0.5 s).
    It ends itself (OK) within stream_s (2 s) and the client goes on from the next index."""
    server, port = build_server(
        running.ledger, "127.0.0.1:0", limits=Limits(stream_s=2.0, write_idle_s=0.5)
    )
    server.start()
    try:
        with LedgerClient(f"127.0.0.1:{port}") as client:
            start = client.checkpoint().tree_size
            tail = Collector(f"127.0.0.1:{port}", start)
            calls = []
            for n in range(3):
                time.sleep(1.25)  # longer than write_idle_s; at n=2, past stream_s
                env = dsse.sign(
                    statements.HOTLINE, message(n), [running.parties.arm_monitor]
                ).to_json()
                calls.append(client.submit(env).receipt.index)
                tail.wait_for(calls[-1], timeout_s=5.0)
            assert [e.index for e in tail.got] == calls == list(range(start, start + 3))
            assert tail.error is None
            tail.stop()
    finally:
        server.stop(grace=None).wait()


def test_a_slow_reader_does_not_make_the_server_read_ahead(running: RunningLedger) -> None:
    send(running.client, running, 0, 400, words=140)  # ~4 KiB each, ~1.6 MB in all
    size = running.client.checkpoint().tree_size
    assert running.server is not None
    servicer = running.server.servicer
    # A reader with gRPC's initial 64 KiB window, which it does not grow.
    channel = grpc.insecure_channel(running.address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        stub = api_grpc.LedgerServiceStub(channel)
        call = stub.Tail(api.TailRequest(start_index=0))
        entries = iter(call)
        first = [next(entries) for _ in range(3)]
        assert [e.index for e in first] == [0, 1, 2]
        time.sleep(2.0)  # the reader takes nothing more
        read = servicer.tail_reads
        # What the window holds (64 KiB of ~4 KiB entries), plus one page: not the log.
        assert read <= 3 + 64 * 1024 // 4000 + 2 * TAIL_PAGE, read
        assert read < size
        rest = [next(entries).index for _ in range(size - 3)]
        assert rest == list(range(3, size))
        call.cancel()  # type: ignore[no-untyped-call]
    finally:
        channel.close()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_another_replica_s_commits_reach_the_tail(
    running: RunningLedger, borders: BorderDataset
) -> None:
    """Two replicas (Ledger and server each) on one database: a tail on the first hears of
    entries the second commits, by the shared size check (every TAIL_POLL_S)."""
    store = LedgerStore.open(running.db_url)
    other = Ledger(store, LogKey(ORIGIN, running.parties.log), borders)
    server, port = build_server(other, "127.0.0.1:0")
    server.start()
    try:
        with LedgerClient(f"127.0.0.1:{port}") as second:
            start = running.client.checkpoint().tree_size
            tail = Collector(running.address, start)
            time.sleep(0.2)
            began = time.monotonic()
            send(second, running, 0, 3)
            for n in range(3):
                env = dsse.sign(
                    statements.HOTLINE, message(10 + n), [running.parties.arm_monitor]
                ).to_json()
                second.submit(env)
            tail.wait_for(start + 5, timeout_s=10.0)
            assert [e.index for e in tail.got] == list(range(start, start + 6))
            # One shared check of the size every TAIL_POLL_S, not a busy loop.
            assert running.server is not None
            watch = running.server.servicer.size_watch
            assert watch is not None
            elapsed = time.monotonic() - began
            assert watch.polls <= elapsed / grpc_server.TAIL_POLL_S + 3
            tail.stop()
    finally:
        server.stop(grace=None).wait()
        other.close()
        store.close()


def _tail_process(address: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "tail", "--server", address, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@SQLITE_ONLY
def test_cli_tail_prints_lines_and_stops_on_ctrl_c_without_a_traceback(
    running: RunningLedger,
) -> None:
    p = running.parties
    index = running.client.submit(signed(report("ARM", hours_ago=4), p.arm_monitor)).receipt.index
    proc = _tail_process(running.address, "--from", "0")
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(index + 1)]
    assert lines[0].startswith("#0 ") and "TrustRoot" in lines[0]
    assert lines[index].startswith(f"#{index} ") and "IncidentReport" in lines[index]
    assert " ARM " in lines[index] and "Small-arms fire heard" in lines[index]
    assert lines[index].rstrip("\n") == entry_line(index, running.client.entry(index).entry)
    # A new entry is printed as it is logged.
    new = running.client.submit(signed(report("AZE", hours_ago=3), p.aze_monitor)).receipt.index
    assert proc.stdout.readline().startswith(f"#{new} ")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    err = proc.stderr.read()
    assert "Traceback" not in err and err.strip() == ""


@SQLITE_ONLY
def test_cli_tail_json_and_a_closed_pipe(running: RunningLedger) -> None:
    proc = _tail_process(running.address, "--from", "0", "--json")
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert '"index": 0' in first and '"payload_type"' in first
    proc.stdout.close()  # the reader goes away, as `| head -1` does
    p = running.parties
    for hours in (3, 4):  # the next lines cannot be written
        running.client.submit(signed(report("ARM", hours_ago=hours), p.arm_monitor))
    assert proc.wait(timeout=10) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "BrokenPipe" not in err
