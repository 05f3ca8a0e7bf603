"""The online audit streams the entries and rebuilds the root from the leaves: no proof per
entry. An entry the log did not commit to is still named by its index, found by bisection
with O(log n) proofs; the work done ahead in worker processes changes nothing the replay
decides; long audits show their progress."""

from __future__ import annotations

import io
import math
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey
from sqlalchemy import text

from clients.audit import ReadAhead, audit
from clients.cli import main
from clients.client import LedgerClient
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import geofacts, judgment, keys, statements, verifier
from ledger.clock import now_us, to_timestamp, to_us
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.verifier import Replay, VerificationError
from tests.conftest import RunningLedger
from tests.reports import report, signed

Entries = list[tuple[int, bytes]]
TRIGGERS = {
    "sqlite": ["DROP TRIGGER entries_no_update"],
    "postgresql": ["DROP TRIGGER entries_append_only ON entries"],
}
DAY_US = 86_400 * 1_000_000
# Places along the border, ARM's side and AZE's.
PLACES = [(40.8811, 45.3875), (41.0933, 45.3661), (40.9650, 45.1700), (41.0300, 45.0500)]


def _sign(kind: str, statement: Message, *signers: SigningKey) -> bytes:
    return dsse.sign(kind, statement.SerializeToString(), list(signers)).to_json()


def _fill(running: RunningLedger, n: int, new_monitor: SigningKey | None = None) -> None:
    """n reports from both parties at places along the border, over days; with
    `new_monitor`, ARM adds that key half-way and signs its later reports with it."""
    p = running.parties

    def envelope(i: int, arm_key: SigningKey) -> bytes:
        party = ("ARM", "AZE")[i % 2]
        lat, lon = PLACES[i % len(PLACES)]
        r = report(party, lat=lat + i * 1e-4, lon=lon, hours_ago=1 + (i * 7) % 60)
        # Windows kept within a UTC day: what is tested here is the audit, not the
        # duplicate search across days.
        start, end = to_us(r.window.start), to_us(r.window.end)
        shift = max(0, end - (start // DAY_US + 1) * DAY_US + 1)
        r.window.start.CopyFrom(to_timestamp(start - shift))
        r.window.end.CopyFrom(to_timestamp(end - shift))
        return signed(r, arm_key if party == "ARM" else p.aze_monitor)

    half = n // 2 if new_monitor is not None else n
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(running.client.submit, [envelope(i, p.arm_monitor) for i in range(half)]))
    if new_monitor is None:
        return
    added = pb.KeyChange(
        party="ARM",
        created_time=to_timestamp(now_us()),
        add=[pb.PartyKey(public_key=keys.public_bytes(new_monitor), role=pb.ROLE_MONITOR)],
    )
    running.client.submit(_sign(statements.KEY_CHANGE, added, p.arm_authority))
    with ThreadPoolExecutor(8) as pool:
        later = [envelope(i, new_monitor) for i in range(half, n - 1)]
        list(pool.map(running.client.submit, later))


def _entries(running: RunningLedger) -> Entries:
    store = running.ledger.store
    return [(e.index, e.entry) for e in store.iter_entries(0, store.tree_size())]


def _rewrite(running: RunningLedger, index: int, change: Callable[[bytes], bytes]) -> None:
    """What an operator with the database can do: change an entry's stored bytes."""
    engine = running.ledger.store.engine
    with engine.begin() as conn:
        for stmt in TRIGGERS[engine.dialect.name]:
            conn.execute(text(stmt))
        data = conn.execute(
            text("SELECT entry FROM entries WHERE idx = :i"), {"i": index}
        ).scalar_one()
        conn.execute(
            text("UPDATE entries SET entry = :e WHERE idx = :i"),
            {"e": change(bytes(data)), "i": index},
        )


def _flip_byte(data: bytes) -> bytes:
    tampered = bytearray(data)
    tampered[-3] ^= 0x01  # inside the validation facts: no author's signature covers them
    return bytes(tampered)


def _later_by_a_microsecond(data: bytes) -> bytes:
    """The entry judges the same (its time is its own), but it is not the one logged, and
    the next entry's chain link no longer names it."""
    entry = parse_entry(data)
    entry.integrated_time.nanos += 1000
    return entry.SerializeToString()


class Counting:
    """Counts the proofs a client asks for (the server is real)."""

    def __init__(self, client: LedgerClient) -> None:
        self.calls: Counter[str] = Counter()
        for name in ("inclusion_proof", "consistency_proof"):
            setattr(client, name, self._counted(name, getattr(client, name)))

    def _counted(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return call(*args, **kwargs)

        return counted


N = 300
PROOFS_BOUND = math.ceil(math.log2(N)) + 2  # the bisection, its first check, one inclusion


def test_an_honest_ledger_needs_no_proof_per_entry(
    running: RunningLedger, borders: BorderDataset
) -> None:
    _fill(running, N)
    counting = Counting(running.client)
    result = audit(running.client, borders=[borders])
    assert result.tree_size == N + 1 and result.geo_rechecked == N
    assert sum(counting.calls.values()) == 0


def test_the_statuses_are_read_while_the_replay_runs(
    running: RunningLedger, borders: BorderDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's statuses as of the audited size are asked for before the replay takes
    its last entry, so the server's work overlaps the replay (it followed it, about a
    tenth of an online audit of 100k entries); what they show is compared all the same."""
    _fill(running, 40)
    client = running.client
    asked = threading.Event()
    waited: list[bool] = []
    entries, timeline_all = client.entries, client.timeline_all

    def statuses(request: Any) -> Any:
        for row in timeline_all(request):
            asked.set()
            yield row

    def streamed(start: int, end: int) -> Any:
        got = list(entries(start, end))
        for i, entry in enumerate(got):
            if i == len(got) - 1:
                waited.append(asked.wait(timeout=30))
            yield entry

    monkeypatch.setattr(client, "timeline_all", statuses)
    monkeypatch.setattr(client, "entries", streamed)
    result = audit(client, borders=[borders])
    assert waited == [True] and result.summary["incidents"] == {"reported": 40}


def test_a_read_ahead_reads_its_first_items_in_a_thread_and_raises_where_iterated() -> None:
    where: list[int] = []

    def items(fail: bool) -> Any:
        for i in range(5):
            where.append(threading.get_ident())
            yield i
        if fail:
            raise ValueError("the stream broke")

    ahead = ReadAhead(items(False), 3)
    ahead._thread.join()
    assert len(where) == 3 and threading.get_ident() not in where  # read ahead, in a thread
    assert list(ahead) == [0, 1, 2, 3, 4] and where[3:] == [threading.get_ident()] * 2
    with pytest.raises(ValueError, match="the stream broke"):
        list(ReadAhead(items(True), 10))


@pytest.mark.parametrize(
    ("tampered", "change", "replay_says"),
    [
        (137, _flip_byte, "not included in the signed checkpoint of size 301"),
        # The replay itself first fails at 138 (its chain link): the log's proofs say 137.
        (137, _later_by_a_microsecond, "not included in the signed checkpoint of size 301"),
        # Nothing after it to break a chain link: only the root says something is wrong.
        (N, _later_by_a_microsecond, "not included in the signed checkpoint of size 301"),
        (1, _flip_byte, "not included in the signed checkpoint of size 301"),
    ],
    ids=["validation-137", "time-137", "time-last", "validation-1"],
)
def test_an_altered_entry_is_named_with_log_n_proofs(
    running: RunningLedger,
    borders: BorderDataset,
    tampered: int,
    change: Callable[[bytes], bytes],
    replay_says: str,
) -> None:
    _fill(running, N)
    _rewrite(running, tampered, change)
    counting = Counting(running.client)
    with pytest.raises(VerificationError) as info:
        audit(running.client, borders=[borders])
    assert info.value.index == tampered, str(info.value)
    assert replay_says in str(info.value)
    assert counting.calls["inclusion_proof"] == 1
    assert counting.calls["consistency_proof"] <= PROOFS_BOUND, counting.calls


def test_a_replay_failure_of_committed_bytes_stands(
    running: RunningLedger, borders: BorderDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes at 5 are the ones the log committed to, yet the replay refuses them: its
    own error stands, after one consistency proof says the entries up to 5 are the log's."""
    _fill(running, 8)
    real = judgment.judge

    def judge(state: Any, envelope: dsse.Envelope, index: int, *rest: Any) -> Any:
        if index == 5:
            raise VerificationError("judged otherwise", index=5)
        return real(state, envelope, index, *rest)

    monkeypatch.setattr(judgment, "judge", judge)
    counting = Counting(running.client)
    with pytest.raises(VerificationError, match=r"^entry 5: judged otherwise$"):
        audit(running.client, borders=[borders])
    assert counting.calls == {"consistency_proof": 1}


# -- work done ahead in worker processes ---------------------------------------------------


def _replayed(
    entries: Entries, borders: BorderDataset, workers: int, *, workers_only: bool = True
) -> Replay:
    """Replayed with `workers`, which do their part from the first chunk on (or, not
    `workers_only`, this process too, while it would wait for them)."""
    state = Replay(None, {borders.sha256: borders})
    state.add_all(iter(entries), workers=workers, chunk=16, workers_only=workers_only)
    return state


def test_workers_change_nothing_the_replay_decides(
    running: RunningLedger, borders: BorderDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signatures and geo facts done ahead (across a key added half-way, which the workers
    learn of only after the replay takes it in) give the very same replay; the replay in
    this process recomputes none of the geo facts."""
    _fill(running, 120, new_monitor=SigningKey.generate())
    entries = _entries(running)
    alone = _replayed(entries, borders, 0)
    computed_here: list[int] = []
    real = geofacts.compute

    def counted(*args: Any) -> log_pb2.GeoFacts:
        computed_here.append(1)
        return real(*args)

    monkeypatch.setattr(geofacts, "compute", counted)
    ahead = _replayed(entries, borders, 2)
    assert ahead.leaf_hashes == alone.leaf_hashes
    assert ahead.geo_rechecked == alone.geo_rechecked == 119
    assert ahead.summary() == alone.summary()
    assert not computed_here
    helped = _replayed(entries, borders, 1, workers_only=False)
    assert helped.leaf_hashes == alone.leaf_hashes and helped.summary() == alone.summary()


def test_workers_fail_at_the_same_entry_with_the_same_error(
    running: RunningLedger, borders: BorderDataset
) -> None:
    _fill(running, 60)
    entries = _entries(running)
    # A forged geo fact with the chain rebuilt after it, as test_tamper does.
    out: Entries = []
    prev = b""
    for i, data in entries:
        entry = parse_entry(data)
        if i == 41:
            entry.validation.geo.distance_to_border_m += 1500
        if i > 41:
            entry.previous_leaf_hash = prev
        data = entry.SerializeToString() if i >= 41 else data
        out.append((i, data))
        prev = merkle.leaf_hash(data)
    errors = set()
    for workers, only in ((0, True), (2, True), (1, False)):
        with pytest.raises(VerificationError) as info:
            _replayed(out, borders, workers, workers_only=only)
        errors.add((info.value.index, str(info.value)))
    assert len(errors) == 1
    ((index, message),) = errors
    assert index == 41 and "recorded geo facts" in message


def test_a_signature_that_fails_fails_with_workers_too(
    running: RunningLedger, borders: BorderDataset
) -> None:
    _fill(running, 40)
    entries = _entries(running)
    entry = parse_entry(entries[30][1])
    envelope = dsse.Envelope.from_json(entry.envelope)
    bad = dsse.Signature(envelope.signatures[0].keyid, bytes(64))
    entry.envelope = dsse.Envelope(envelope.payload, envelope.payload_type, (bad,)).to_json()
    forged = [*entries[:30], (30, entry.SerializeToString())]
    for workers in (0, 2):
        with pytest.raises(VerificationError, match="signature does not verify") as info:
            _replayed(forged, borders, workers)
        assert info.value.index == 30


def test_workers_that_die_leave_their_work_to_the_replay(
    running: RunningLedger, borders: BorderDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(running, 40)
    entries = _entries(running)
    alone = _replayed(entries, borders, 0)
    monkeypatch.setattr(verifier, "_WORKER", "import sys; sys.exit(3)")
    orphaned = _replayed(entries, borders, 2)
    assert orphaned.leaf_hashes == alone.leaf_hashes
    assert orphaned.geo_rechecked == alone.geo_rechecked == 40


# -- progress -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_is_a_line_every_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, every_s=10, clock=clock)
    progress.start(5000)
    for done in range(1, 5001):
        clock.now = done / 100  # 100 entries/s: 50 s in all
        progress(done)
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines[0] == "checked 1,000/5,000 entries (20%), 100/s, 40 s left"
    assert len(lines) == 6  # at 10, 20, 30, 40 and 50 s, and the final count
    assert lines[-1] == "checked 5,000 entries in 50 s, 100/s"


def test_progress_on_a_terminal_is_redrawn_in_place() -> None:
    out, clock = Terminal(), Clock()
    progress = Progress(out, clock=clock)
    progress.start(1000)
    for done in range(1, 1001):
        clock.now = done / 1000
        progress(done)
    progress.note("the root matches")
    text = out.getvalue()
    assert text.count("\r") >= 4  # a few redraws a second, not one per entry
    assert text.count("\r") <= 10
    assert "\rchecked 500/1,000 entries (50%), 1,000/s, 0.5 s left\x1b[K" in text
    assert text.endswith("\r\x1b[Kthe root matches\n")


def test_verify_shows_its_progress(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(running, 4)
    assert main(["verify", "--server", running.address, "--progress"]) == 0
    err = capsys.readouterr().err
    assert "checked 5 entries in" in err
    assert "the root rebuilt from all 5 leaves matches the signed checkpoint" in err
    assert main(["verify", "--server", running.address, "--json"]) == 0
    assert capsys.readouterr().err == ""
