"""The auditor's replay: check a ledger from its entries alone, trusting only the trust root.

Pure: no gRPC, no SQL. Feed it entries (from a server, a database or a bundle), then a
signed checkpoint. It uses the very authentication and authorization code the server
uses, so the two cannot disagree on what is admissible.

`Replay.add_all` can have worker processes do what needs nothing from earlier entries
(Ed25519 checks, geo facts: most of an audit's time) ahead of the one sequential pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import pickle
import select
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import DecodeError

from ledger import (
    context,
    duplicates,
    geofacts,
    incidents,
    investigations,
    judgment,
    rules,
    subjects,
)
from ledger.clock import to_us
from ledger.errors import LedgerError
from ledger.findings import FindingInfo
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import GENESIS_PREVIOUS_HASH, leaf_builder, parse_entry
from ledger.formats.note import Checkpoint, NoteError, NoteVerifier, open_note
from ledger.incidents import IncidentInfo, Link, derive_status
from ledger.investigations import InvestigationInfo
from ledger.kinds import KINDS
from ledger.trust import DatasetInfo, TrustState

if TYPE_CHECKING:  # geometry is loaded when a report's facts are recomputed
    from geo.borders import BorderDataset


class VerificationError(Exception):
    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(f"entry {index}: {message}" if index is not None else message)
        self.index = index


# An entry parsed ahead of its turn: the LogEntry and its envelope.
Parsed = tuple[log_pb2.LogEntry, dsse.Envelope]


@dataclass(frozen=True)
class Prepared:
    """The work on one entry that needs nothing from the entries before it, done ahead
    by a worker process with the very functions the replay would call: which of its
    signatures verify (as dsse.Envelope.verified), and its place's geo facts on a data
    set (with the registration they were computed under; the replay uses them only when
    that is the data set in force at the entry's index)."""

    verified: frozenset[tuple[bytes, bytes, bytes]] = frozenset()
    geo: tuple[DatasetInfo, bytes] | None = None


# What a worker is given per entry: payload type, payload, the (key id, public key,
# signature) of each signature by a key known so far, and the data set to compute the
# place's geo facts on (None: none).
_Task = tuple[str, bytes, tuple[tuple[str, bytes, bytes], ...], DatasetInfo | None]

# Entries per task, and tasks queued per worker ahead of the replay: enough to keep both
# busy while the replay takes a chunk in, few enough to bound what is held in memory.
CHUNK = 256
QUEUED_PER_WORKER = 2
PIPE_BYTES = 1 << 20  # Linux's default most for a pipe; two chunks of 256 entries fit
# Entries prepared at a time in the replay's own process, between looks at the workers.
ALONE = 32
# A worker is a fresh interpreter importing shapely, pyproj, protobuf ...: most of a second
# of CPU each. Below this many entries the replay is as quick on its own.
MIN_ENTRIES_FOR_WORKERS = 2_000


# More workers than this outrun the replay's one sequential pass.
MAX_WORKERS = 3


def default_workers(entries: int) -> int:
    """Workers for an audit of `entries`: one per core beside the replay's own (which
    prepares entries too while it would wait for them). On two cores one worker beats
    two: three busy processes on two cores only take turns."""
    if entries < MIN_ENTRIES_FOR_WORKERS:
        return 0
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_WORKERS))


@dataclass
class Replay:
    """The state of an audit after some entries."""

    pinned_trust_root: str | None = None
    borders: dict[str, BorderDataset] = field(default_factory=dict)
    trust: TrustState | None = None
    trust_root_digest: str = ""
    leaf_hashes: list[bytes] = field(default_factory=list)
    last_time_us: int = 0
    geo_rechecked: int = 0
    sightings: duplicates.SightingIndex = field(default_factory=duplicates.SightingIndex)
    # Incidents, findings, investigations, notices and messages, by log index.
    subjects: dict[int, context.Subject] = field(default_factory=dict)
    links: dict[int, list[Link]] = field(default_factory=dict)
    # Every statement's identity (SHA-256 of its PAE) -> the entry that logged it.
    statements: dict[bytes, int] = field(default_factory=dict)
    # The entry that failed (its index and bytes), for a caller that diagnoses it: the
    # online audit asks the log whether those bytes are the ones it committed to.
    failed: tuple[int, bytes] | None = None

    def status(self, index: int) -> api.IncidentStatus.ValueType:
        """An incident's derived status, from the entries replayed so far."""
        return derive_status(self.links.get(index, []))

    def investigation_status(
        self, index: int, as_of_us: int | None = None
    ) -> api.InvestigationStatus.ValueType:
        """An investigation's status at the log's clock `as_of_us` (default: the newest
        entry's integrated time)."""
        info = self.subjects[index]
        assert isinstance(info, InvestigationInfo)
        as_of = self.last_time_us if as_of_us is None else as_of_us
        return subjects.investigation_status(info, as_of, self.subjects.get)

    def summary(self, as_of_us: int | None = None) -> dict[str, dict[str, int]]:
        """How many incidents, investigations and findings stand where, by the entries
        alone: {"incidents": {status: n}, "investigations": {status: n}, "findings": {...}}."""
        out: dict[str, dict[str, int]] = {"incidents": {}, "investigations": {}, "findings": {}}

        def count(group: str, key: str) -> None:
            out[group][key] = out[group].get(key, 0) + 1

        for index, subject in sorted(self.subjects.items()):
            if isinstance(subject, IncidentInfo):
                count("incidents", incidents.status_name(self.status(index)))
            elif isinstance(subject, InvestigationInfo):
                status = self.investigation_status(index, as_of_us)
                count("investigations", investigations.status_name(status))
            elif isinstance(subject, FindingInfo):
                count("findings", "jointly_attested" if subject.attested_at else "drafted")
                if subject.dissented:
                    count("findings", "with_dissent")
        return out

    # Fetches a registered data set that is not at hand (e.g. from the log's blob store).
    load_dataset: Callable[[DatasetInfo], BorderDataset | None] | None = None

    @property
    def size(self) -> int:
        return len(self.leaf_hashes)

    def add(
        self,
        index: int,
        data: bytes,
        *,
        parsed: Parsed | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        """Check entry `index` (they must come in order, from 0) and take it in. `parsed`
        and `prepared`, from `add_all`, spare work done already."""
        if index != self.size:
            self.failed = (index, data)
            raise VerificationError(f"expected entry {self.size} next", index=index)
        try:
            self._check(index, data, parsed, prepared)
        except VerificationError:
            self.failed = (index, data)
            raise
        except (LedgerError, dsse.EnvelopeError, DecodeError, ValueError) as e:
            self.failed = (index, data)
            raise VerificationError(str(e), index=index) from e
        self.leaf_hashes.append(merkle.leaf_hash(data))

    def add_all(
        self,
        entries: Iterable[tuple[int, bytes]],
        *,
        workers: int = 0,
        chunk: int = CHUNK,
        progress: Callable[[int], None] | None = None,
        workers_only: bool = False,
    ) -> None:
        """`add` each entry in turn. With `workers`, what needs nothing from the entries
        before it (signatures, geo facts) is done ahead, a chunk of entries at a time, in
        that many processes and in this one while it would wait for them (or for them to
        start), unless `workers_only` (a test of their part). The replay stays one
        sequential pass in log order, so it raises the same error at the same entry
        either way."""
        it = iter(entries)
        if workers > 0:
            for index, data in it:  # entry 0 (at least) founds the key state
                self.add(index, data)
                if progress is not None:
                    progress(self.size)
                if self.trust is not None:
                    break
        if workers <= 0 or self.trust is None:
            for index, data in it:
                self.add(index, data)
                if progress is not None:
                    progress(self.size)
            return
        with _Ahead(self, workers, chunk) as ahead:
            for index, data, parsed, prepared in ahead.run(it, workers_only):
                self.add(index, data, parsed=parsed, prepared=prepared)
                if progress is not None:
                    progress(self.size)

    def _check(
        self, index: int, data: bytes, parsed: Parsed | None, prepared: Prepared | None
    ) -> None:
        entry, envelope = parsed if parsed is not None else (parse_entry(data), None)
        if entry.index != index:
            raise VerificationError(f"says it is entry {entry.index}", index=index)
        prev = self.leaf_hashes[-1] if self.leaf_hashes else GENESIS_PREVIOUS_HASH
        if entry.previous_leaf_hash != prev:
            raise VerificationError(
                f"hash chain broken: previous_leaf_hash is not the leaf hash of entry "
                f"{index - 1}, so entry {index - 1} (or this link) was altered after logging",
                index=index,
            )
        t = to_us(entry.integrated_time)
        if t < self.last_time_us:
            raise VerificationError("integrated time goes backwards", index=index)
        self.last_time_us = t
        if envelope is None:
            envelope = dsse.Envelope.from_json(entry.envelope)
        if envelope.to_json() != entry.envelope:
            raise VerificationError(
                "the envelope is not in its canonical form: its JSON carries something "
                "beside what was signed",
                index=index,
            )
        identity = envelope.statement_sha256()
        first = self.statements.get(identity)
        if first is not None:
            raise VerificationError(
                f"the statement signed here was logged already as entry {first}", index=index
            )
        self.statements[identity] = index
        if index == 0:
            self._check_trust_root(envelope, entry.envelope)
            if data != leaf_builder(entry.envelope, log_pb2.Validation())(0, prev, t):
                raise VerificationError("entry 0 records facts beside the trust root", index=0)
            return
        assert self.trust is not None
        recorded = entry.validation
        if prepared is not None and prepared.verified:
            envelope = replace(envelope, verified=prepared.verified)
        ahead = prepared.geo if prepared is not None else None

        def geo(report: pb.IncidentReport, state: TrustState) -> log_pb2.GeoFacts:
            return self._geo(index, report, state, recorded.geo, ahead)

        # The very decision the server made at this index, on the state before it.
        judged = judgment.judge(
            self.trust, envelope, index, t, self.subjects.get, geo, self.sightings.candidates
        )
        if judged.leaf(entry.envelope, index, prev, t) != data:
            raise VerificationError(_difference(judged.validation, recorded), index=index)
        self.subjects.update(judged.subjects)
        if judged.sighting is not None:
            self.sightings.add(judged.sighting)
        for link in judged.links:
            self.links.setdefault(link.target, []).append(link)
        judgment.advance(self.trust, judged.admitted, index)

    def _check_trust_root(self, envelope: dsse.Envelope, raw: bytes) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        if self.pinned_trust_root and digest != self.pinned_trust_root:
            raise VerificationError(
                f"trust root {digest} is not the pinned one {self.pinned_trust_root}", index=0
            )
        self.trust, self.trust_root_digest = rules.admit_trust_root(envelope), digest

    def dataset(self, info: DatasetInfo) -> BorderDataset | None:
        """A registered data set's geometry, if at hand or loadable."""
        borders = self.borders.get(info.sha256)
        if borders is None and self.load_dataset is not None:
            borders = self.load_dataset(info)
            if borders is not None:
                self.borders[info.sha256] = borders
        return borders

    def _geo(
        self,
        index: int,
        report: pb.IncidentReport,
        state: TrustState,
        recorded: log_pb2.GeoFacts,
        ahead: tuple[DatasetInfo, bytes] | None = None,
    ) -> log_pb2.GeoFacts:
        """The facts the judgment records for a place: recomputed on the data set in
        force (the recorded ones where they agree up to rounding), or, when its files are
        not at hand, the recorded ones as the log's signed claim. `ahead`: the facts a
        worker computed, used only if computed under the registration in force."""
        info = state.dataset  # the data set in force at this index
        borders = self.dataset(info)
        if borders is None:
            return recorded if recorded.dataset_sha256 == info.sha256 else _cites(info.sha256)
        if ahead is not None and ahead[0] == info:
            recomputed = log_pb2.GeoFacts.FromString(ahead[1])
        else:
            try:
                recomputed = geofacts.compute(report, borders, info)
            except LedgerError as e:
                raise VerificationError(
                    f"geo facts: the place is not valid ({e})", index=index
                ) from e
        self.geo_rechecked += 1
        return recorded if geofacts.same(recomputed, recorded) else recomputed


class _Ahead:
    """Worker processes doing each entry's independent work ahead of the replay, with the
    replay's own process lending a hand whenever it would wait for them.

    Chunk k is sent to a worker, or prepared here when the replay would otherwise wait,
    and taken in in order. Everything is sent and read by the replay's own thread: helper
    threads (as a ProcessPoolExecutor has) get the GIL only now and then from a busy
    replay, and stall the workers. The workers are fresh interpreters (not forks of this
    process, which may hold a gRPC channel's threads and locks; not multiprocessing's,
    which import the caller's main module again), fed length-prefixed pickles on stdin
    and answering on stdout."""

    def __init__(self, replay: Replay, workers: int, chunk: int) -> None:
        self.replay = replay
        self.chunk = max(1, chunk)
        at_hand = list(replay.borders.values())
        self.shipped = {b.sha256 for b in at_hand}
        env = dict(os.environ)
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, "1")  # tiny matrices: more BLAS threads would only spin
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started: set[int] = set()  # workers whose "ready" was read
        self.broken = False
        try:
            for _ in range(workers):
                process = subprocess.Popen(
                    [sys.executable, "-c", _WORKER, json.dumps(sys.path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,  # answers are read from the descriptor, frame by frame
                    env=env,
                    start_new_session=True,  # ^C is the replay's to handle
                )
                self.processes.append(process)
                # Both ways, two chunks fit: neither side waits on the other's reading.
                _widen(_fd(process.stdin))
                _widen(_fd(process.stdout))
                _write_frame(_fd(process.stdin), at_hand)
        except OSError:
            self.broken = True  # the replay does the work itself

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *_exc: object) -> None:
        for process in self.processes:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()  # a worker reading its tasks sees the end and exits
        for process in self.processes:
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run(
        self, entries: Iterator[tuple[int, bytes]], workers_only: bool
    ) -> Iterator[tuple[int, bytes, Parsed | None, Prepared | None]]:
        """The entries in order, each with what was parsed and prepared ahead of it."""
        if workers_only:
            for worker in range(len(self.processes)):
                self._ready(worker, None)
        # Chunks in log order: each with the worker preparing it, or what was prepared here.
        queued: deque[tuple[list[tuple[int, bytes, Parsed | None]], int | list[Prepared]]]
        queued = deque()
        outstanding = [0] * len(self.processes)
        more = True

        def take(count: int) -> list[tuple[int, bytes, Parsed | None]]:
            nonlocal more
            batch = [(i, d, _parse(d)) for i, d in itertools.islice(entries, count)]
            more = more and len(batch) == count
            return batch

        while True:
            # Keep every worker that is up QUEUED_PER_WORKER chunks ahead.
            while more and not self.broken:
                up = [w for w, n in enumerate(outstanding) if n < QUEUED_PER_WORKER]
                up = [w for w in up if self._ready(w, 0)]
                if not up:
                    break
                worker = min(up, key=outstanding.__getitem__)
                batch = take(self.chunk)
                if not batch:
                    break
                tasks, ship = self._tasks(batch)
                if self._send(worker, (tasks, ship)):
                    queued.append((batch, worker))
                    outstanding[worker] += 1
                else:
                    queued.append((batch, self._here(tasks)))
            # Rather than wait for the next chunk's worker (or for workers to start), prepare
            # a few more entries here: the replay's process is one of the cores.
            while more and not workers_only and (not queued or not self._answered(queued[0])):
                if len(queued) > 4 * QUEUED_PER_WORKER * max(1, len(self.processes)):
                    break  # far enough ahead: wait for the worker
                batch = take(ALONE)
                if batch:
                    queued.append((batch, self._here(self._tasks(batch)[0])))
            if not queued:
                # Nothing sent or prepared: the workers are gone (or, for a test, were
                # only to be waited for). The rest is the replay's alone.
                for index, data in entries:
                    yield index, data, None, None
                return
            batch, where = queued.popleft()
            if isinstance(where, int):
                outstanding[where] -= 1
                answer = self._receive(where)
                prepared: list[Prepared | None] = (
                    list(answer) if answer is not None else [None] * len(batch)
                )
            else:
                prepared = list(where)
            for (index, data, parsed), ahead in zip(batch, prepared, strict=True):
                yield index, data, parsed, ahead

    def _answered(self, chunk: tuple[object, int | list[Prepared]]) -> bool:
        """Whether a queued chunk's preparation is at hand (or will never come)."""
        where = chunk[1]
        return not isinstance(where, int) or self.broken or self._ready(where, 0, answer=True)

    def _ready(self, worker: int, timeout: float | None, *, answer: bool = False) -> bool:
        """Whether `worker` is up (has said so), or with `answer` whether its next answer
        has begun to arrive; waits up to `timeout` (None: as long as it takes)."""
        if self.broken:
            return False
        if worker in self.started and not answer:
            return True
        fd = _fd(self.processes[worker].stdout)
        try:
            if not select.select([fd], [], [], timeout)[0]:
                return False
            if worker not in self.started:
                _read_frame(fd)  # its "ready"
                self.started.add(worker)
                return self._ready(worker, 0, answer=True) if answer else True
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            self.broken = True  # it died: the replay does the work itself
            return False
        return True

    def _receive(self, worker: int) -> list[Prepared] | None:
        """A worker's next answer; None (and no more workers) if it died."""
        if self.broken or not (worker in self.started or self._ready(worker, None)):
            return None
        try:
            answer: list[Prepared] = _read_frame(_fd(self.processes[worker].stdout))
        except (EOFError, OSError, pickle.UnpicklingError):
            self.broken = True  # killed (out of memory?): the replay does that work itself
            return None
        return answer

    def _send(self, worker: int, message: object) -> bool:
        try:
            _write_frame(_fd(self.processes[worker].stdin), message)
        except OSError:
            self.broken = True
            return False
        return True

    def _here(self, tasks: list[_Task]) -> list[Prepared]:
        """Prepared in this process, as a worker would."""
        return [_prepare_one(*task, datasets=self.replay.borders) for task in tasks]

    def _tasks(
        self, batch: list[tuple[int, bytes, Parsed | None]]
    ) -> tuple[list[_Task], list[BorderDataset]]:
        """What a worker needs for each entry, and the data sets it does not have yet."""
        trust = self.replay.trust
        assert trust is not None
        tasks: list[_Task] = []
        ship: dict[str, BorderDataset] = {}
        for _index, _data, parsed in batch:
            if parsed is None:
                tasks.append(("", b"", (), None))  # the replay will say what is wrong
                continue
            entry, envelope = parsed
            signed = tuple(
                (s.keyid, key.public_key, s.sig)
                for s in envelope.signatures
                if (key := trust.keys.get(s.keyid)) is not None
            )
            # The facts are computed on the data set the entry cites, under its registration
            # as known now; the replay checks that it is the one in force at the entry.
            info = None
            kind = KINDS.get(envelope.payload_type)
            if kind is not None and kind.place is not None:
                info = trust.datasets.get(entry.validation.geo.dataset_sha256)
                borders = self.replay.borders.get(info.sha256) if info is not None else None
                if borders is None:
                    info = None
                elif borders.sha256 not in self.shipped:
                    ship[borders.sha256] = borders
            tasks.append((envelope.payload_type, envelope.payload, signed, info))
        self.shipped.update(ship)
        return tasks, list(ship.values())


def _fd(pipe: IO[bytes] | None) -> int:
    assert pipe is not None
    return pipe.fileno()


def _write_frame(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "big") + data)
    while view:
        view = view[os.write(fd, view) :]


def _read_frame(fd: int) -> Any:
    size = int.from_bytes(_read_exactly(fd, 8), "big")
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size:
        part = os.read(fd, min(size, PIPE_BYTES))
        if not part:
            raise EOFError
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _widen(fd: int) -> None:
    """Make a pipe hold a few chunks (Linux; elsewhere a send may wait for the worker)."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _parse(data: bytes) -> Parsed | None:
    """An entry and its envelope, or None for the replay to parse and refuse in turn."""
    try:
        entry = parse_entry(data)
        return entry, dsse.Envelope.from_json(entry.envelope)
    except (dsse.EnvelopeError, DecodeError, ValueError):
        return None


# A worker: the replay's sys.path (argv[1], JSON), then `_serve`.
_WORKER = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
    "from ledger.verifier import _serve; _serve()"
)


def _serve() -> None:
    """A worker process: the data sets at hand, then each chunk it is sent, prepared and
    answered in order, until the replay closes its end (or is gone)."""
    answers = os.dup(1)
    os.dup2(2, 1)  # a stray print must not land among the answers
    datasets: dict[str, BorderDataset] = {}
    try:
        _take(datasets, _read_frame(0))
        _write_frame(answers, None)  # ready
        while True:
            tasks, more = _read_frame(0)
            _take(datasets, more)
            _write_frame(answers, [_prepare_one(*task, datasets=datasets) for task in tasks])
    except (EOFError, OSError):
        # Done, or the replay is gone. Nothing is left to flush (answers are written to the
        # descriptor): skip the interpreter's teardown, a tenth of a second of unloading.
        os._exit(0)


def _take(datasets: dict[str, BorderDataset], arrived: list[BorderDataset]) -> None:
    import shapely

    for ds in arrived:
        if ds.sha256 not in datasets:
            # Pickling drops shapely's prepared state: the same answers, only slower.
            shapely.prepare(ds.territory_parts()[0])
            datasets[ds.sha256] = ds


def _prepare_one(
    payload_type: str,
    payload: bytes,
    signed: tuple[tuple[str, bytes, bytes], ...],
    info: DatasetInfo | None,
    *,
    datasets: dict[str, BorderDataset],
) -> Prepared:
    """One entry's signatures checked and its place's geo facts computed, by the functions
    the replay calls. Anything that fails is left for the replay, which does it again and
    says what is wrong."""
    try:
        if not payload_type:
            return Prepared()
        verified: frozenset[tuple[bytes, bytes, bytes]] = frozenset()
        if signed:
            sigs = tuple(dsse.Signature(keyid, sig) for keyid, _, sig in signed)
            envelope = dsse.Envelope(payload, payload_type, sigs)
            digest = envelope.statement_sha256()
            verified = frozenset(
                (digest, key, sig.sig)
                for (_, key, _), sig in zip(signed, sigs, strict=True)
                if dsse.verify_signature(envelope, sig, key)
            )
    except Exception:
        return Prepared()
    kind = KINDS.get(payload_type)
    borders = datasets.get(info.sha256) if info is not None else None
    if info is None or borders is None or kind is None or kind.place is None:
        return Prepared(verified)
    try:
        facts = geofacts.compute(kind.place(kind.message.FromString(payload)), borders, info)
    except Exception:
        return Prepared(verified)  # an invalid place: the replay says so
    return Prepared(verified, (info, facts.SerializeToString()))


def _cites(sha256: str) -> log_pb2.GeoFacts:
    return log_pb2.GeoFacts(dataset_sha256=sha256)


def _difference(expected: log_pb2.Validation, recorded: log_pb2.Validation) -> str:
    """Name the recorded fact that is not the judgment's."""
    for f in log_pb2.Validation.DESCRIPTOR.fields:
        want, got = getattr(expected, f.name), getattr(recorded, f.name)
        if f.name == "geo":
            if expected.HasField("geo") != recorded.HasField("geo") or want != got:
                return (
                    f"recorded geo facts ({_geo_text(recorded)}) are not those the data set "
                    f"in force gives ({_geo_text(expected)})"
                )
        elif want != got:
            return (
                f"recorded validation.{f.name} {_short(got)} is not the judgment's {_short(want)}"
            )
    return "the entry's bytes are not the encoding of the facts the judgment gives"


def _geo_text(v: log_pb2.Validation) -> str:
    if not v.HasField("geo"):
        return "none"
    g = v.geo
    return (
        f"{geofacts.side(g)} {g.distance_to_border_m:.1f} m from {g.nearest_segment!r} "
        f"on data set {g.dataset_sha256[:12]}"
    )


def _short(value: object) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, Iterable):
        text = "[" + ", ".join(" ".join(str(v).split()) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def replay(
    entries: Iterable[tuple[int, bytes]],
    *,
    pinned_trust_root: str | None = None,
    borders: Iterable[BorderDataset] = (),
    progress: Callable[[int], None] | None = None,
) -> Replay:
    state = Replay(pinned_trust_root, {b.sha256: b for b in borders})
    for index, data in entries:
        state.add(index, data)
        if progress is not None:
            progress(index)
    if state.trust is None:
        raise VerificationError("the ledger is empty: no trust root")
    return state


def open_checkpoint(signed_note: str, trust: TrustState) -> Checkpoint:
    """Verify a checkpoint's signature by the log key and parse it."""
    verifier = NoteVerifier(trust.origin, trust.log_public_key)
    try:
        opened = open_note(signed_note, [verifier])
        checkpoint = Checkpoint.parse(opened.text)
    except NoteError as e:
        raise VerificationError(f"checkpoint: {e}") from e
    if checkpoint.origin != trust.origin:
        raise VerificationError(
            f"checkpoint origin {checkpoint.origin!r} is not this log's {trust.origin!r}"
        )
    return checkpoint


def check_root(state: Replay, checkpoint: Checkpoint) -> None:
    """The root rebuilt from the stored leaves must equal the signed root."""
    if checkpoint.size > state.size:
        raise VerificationError(
            f"checkpoint covers {checkpoint.size} entries, only {state.size} were checked"
        )
    root = merkle.root_from_leaf_hashes(state.leaf_hashes[: checkpoint.size])
    if root != checkpoint.root_hash:
        raise VerificationError(
            f"the root rebuilt from entries 0..{checkpoint.size - 1} is not the signed root "
            f"of the checkpoint of size {checkpoint.size}"
        )
