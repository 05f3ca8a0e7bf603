"""The ledger's use cases, independent of gRPC: submit, read, prove, initialise."""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from pathlib import Path

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from geo import datasets
from geo.borders import BorderDataset, DatasetError
from ledger import (
    context,
    duplicates,
    geofacts,
    incidents,
    judgment,
    kinds,
    messages,
    queries,
    rules,
    sealing,
    statements,
    stats,
    subjects,
    witnesses,
)
from ledger.clock import now_us, to_timestamp, to_us
from ledger.errors import (
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    LedgerError,
    NotFound,
    OutOfRange,
    Overloaded,
    shown,
)
from ledger.formats import dsse
from ledger.formats.log_entry import leaf_builder, parse_entry
from ledger.investigations import InvestigationInfo
from ledger.log_key import LogKey
from ledger.messages import MessageInfo
from ledger.sequencer import Sequencer
from ledger.storage import (
    Appended,
    Built,
    IncidentFacts,
    IncidentRow,
    LedgerStore,
    NewEntry,
    NoticeRow,
    Reads,
    StoredCheckpoint,
    StoredEntry,
    TimelineKey,
)
from ledger.trust import TrustState
from ledger.uploads import Listed

log = logging.getLogger(__name__)

# A leaf is at most 65,535 bytes (the tlog-tiles limit). The entry's own fields and the
# validation facts (at most 16 signer ids and the geo facts) take under 2 KiB, so an
# envelope of at most 60,000 bytes always fits.
MAX_ENVELOPE_BYTES = 60_000
SUBMIT_TIMEOUT_S = 30.0
# Envelopes in one SubmitBatch: the sequencer's batch, so one call can be one commit.
MAX_BATCH = 256
# The file name an evidence blob travels under in SubmitWithBlobs.
EVIDENCE_BLOB = "blob"


def in_tree(value: int, field: str, size: int, *, end: bool = False) -> int:
    """`value` as an index of an entry in a tree of `size` entries (with `end`: as a tree
    size or an exclusive end, which may be `size` itself), else OUT_OF_RANGE naming the
    field. Every index a request names passes here before it reaches SQL, whose BIGINT
    cannot hold a uint64 beyond 2**63 - 1."""
    top = size if end else size - 1
    if not 0 <= value <= top:
        raise OutOfRange(f"{value} is beyond the tree size {size}", field=field)
    return value


@dataclass(frozen=True)
class Accepted:
    signed_receipt: bytes
    receipt: log_pb2.Receipt
    duplicate: bool


def _accept_evidence_blob(
    record: pb.EvidenceRecord, files: Mapping[str, bytes]
) -> dict[str, bytes]:
    """The bytes an evidence record says travel with it, checked against its digests."""
    if record.blob == pb.BLOB_KIND_NONE:
        if files:
            raise unlisted_file(record, next(iter(files)))
        return {}
    data = files.get(EVIDENCE_BLOB)
    if data is None or len(files) != 1:
        raise unlisted_file(record, EVIDENCE_BLOB)
    if len(data) != record.blob_size or hashlib.sha256(data).hexdigest() != record.blob_sha256:
        raise _blob_mismatch()
    if record.blob == pb.BLOB_KIND_SEALED:
        try:
            sealed = sealing.parse(data)
        except sealing.SealingError as e:
            raise InvalidArgument(str(e), field="files") from e
        if sorted(r.key_id for r in sealed.recipients) != sorted(record.sealed_to_key_ids):
            raise InvalidArgument(
                "the blob is not sealed to exactly the listed keys", field="sealed_to_key_ids"
            )
    return {record.blob_sha256: data}


def not_committed() -> Overloaded:
    """A submission whose commit did not come within SUBMIT_TIMEOUT_S. It may still
    commit: a retry of the same envelope then gets its receipt."""
    return Overloaded(
        f"not committed within {SUBMIT_TIMEOUT_S:.0f} s; retry the same envelope, "
        "it is never logged twice",
        retry_after_s=5.0,
    )


def _blob_mismatch() -> InvalidArgument:
    return InvalidArgument(
        "the blob sent does not have the listed size and SHA-256", field="blob_sha256"
    )


def _dataset_file_mismatch(i: int, f: pb.DatasetFile) -> InvalidArgument:
    return InvalidArgument(
        f"{f.name}: the bytes sent do not have the listed size and SHA-256",
        field=f"files[{i}].sha256",
    )


def files_listed(statement: Message) -> dict[str, Listed]:
    """The files a statement says travel with it, by name: a border data set's files, an
    evidence record's blob (as the file "blob"); none for other kinds."""
    if isinstance(statement, pb.BorderDatasetRegistration):
        return {
            f.name: Listed(f.name, f.size, f.sha256, _dataset_file_mismatch(i, f))
            for i, f in enumerate(statement.files)
        }
    if isinstance(statement, pb.EvidenceRecord) and statement.blob != pb.BLOB_KIND_NONE:
        listed = Listed(EVIDENCE_BLOB, statement.blob_size, statement.blob_sha256, _blob_mismatch())
        return {EVIDENCE_BLOB: listed}
    return {}


def unlisted_file(statement: Message, name: str) -> InvalidArgument:
    """The refusal of a file `name` that the statement does not list."""
    if isinstance(statement, pb.BorderDatasetRegistration):
        return InvalidArgument(f"{shown(name)} is not listed in the statement", field="files")
    if isinstance(statement, pb.EvidenceRecord):
        if statement.blob == pb.BLOB_KIND_NONE:
            return InvalidArgument("this record says no blob travels with it", field="files")
        return InvalidArgument(f"send the blob as one file named {EVIDENCE_BLOB!r}", field="files")
    return InvalidArgument("this statement names no files", field="files")


@dataclass(frozen=True)
class Checked:
    """An envelope judged on the current state before any file it brings is read
    (`Ledger.check`), with the files it lists."""

    envelope: dsse.Envelope
    admitted: judgment.Admitted
    state: TrustState
    files: dict[str, Listed]

    @property
    def files_size(self) -> int:
        """The bytes of the files it lists, in all."""
        return sum(f.size for f in self.files.values())

    def unlisted(self, name: str) -> InvalidArgument:
        return unlisted_file(self.admitted.statement, name)


@dataclass(frozen=True)
class Queued:
    """A checked submission waiting in the sequencer's queue (`Ledger.enqueue`)."""

    checked: Checked
    future: Future[Appended]
    # A data set this submission unpacked, removed if it is refused.
    unpacked: str | None


# Kinds that open a subject rebuilt from its links (incidents have their own table).
SUBJECT_KINDS = frozenset(
    {statements.FINDING, statements.INVESTIGATION_REQUEST, statements.NOTICE, statements.HOTLINE}
)


def _payload(envelope_json: bytes) -> tuple[str, bytes]:
    envelope = parse_envelope(envelope_json)
    return envelope.payload_type, envelope.payload


# Entries shown in timelines and dossiers, parsed once: a stored entry never changes, and
# parsing its envelope and statement strictly costs most of a timeline's time. About 4 KiB
# each. Callers copy what they return and never change the cached messages.
LOGGED_CACHE_ENTRIES = 4096


@functools.lru_cache(maxsize=LOGGED_CACHE_ENTRIES)
def _logged(entry: bytes) -> tuple[log_pb2.LogEntry, Message]:
    """A stored entry and the statement it logs."""
    parsed = parse_entry(entry)
    return parsed, statements.decode(*_payload(parsed.envelope))


def incident_row(
    report: pb.IncidentReport, validation: log_pb2.Validation, sighting: duplicates.Sighting
) -> IncidentRow:
    geo = validation.geo
    return IncidentRow(
        party=report.reporting_party,
        category=report.category,
        window_start_us=sighting.start_us,
        window_end_us=sighting.end_us,
        latitude=sighting.latitude,
        longitude=sighting.longitude,
        territory=geo.territory,
        evidence=tuple(report.evidence_sha256),
        filed_under=tuple(duplicates.filed_under(sighting)),
        facts=IncidentFacts(
            blamed=report.alleged_responsible_party,
            side=geofacts.side(geo),
            # An area's facts record no distance (nor segment).
            border_m=geo.distance_to_border_m if geo.nearest_segment else None,
            segment=geo.nearest_segment,
            likely_duplicate=len(validation.likely_duplicates) > 0,
            narrative=report.narrative.casefold(),
        ),
    )


def entry_rows(
    statement: Message, validation: log_pb2.Validation, sighting: duplicates.Sighting | None
) -> tuple[IncidentRow | None, NoticeRow | None]:
    """An entry's row in the timeline (a report) or among the notices (an advance notice),
    from its statement and what its judgment recorded: the writer's, and a mirror's import
    of entries judged elsewhere. (Migration 0007 files the reports logged before it as
    `incident_row` does: keep them in step.)"""
    incident = (
        incident_row(statement, validation, sighting)
        if isinstance(statement, pb.IncidentReport) and sighting is not None
        else None
    )
    notice = (
        NoticeRow(statement.party, statement.activity, messages.area(statement))
        if isinstance(statement, pb.AdvanceNotice)
        else None
    )
    return incident, notice


@dataclass(frozen=True)
class Pending:
    """What a verified submission carries to the sequencer."""

    envelope_bytes: bytes
    envelope: dsse.Envelope
    geo: log_pb2.GeoFacts | None


def parse_envelope(data: bytes) -> dsse.Envelope:
    try:
        return dsse.Envelope.from_json(data, max_size=MAX_ENVELOPE_BYTES)
    except dsse.EnvelopeError as e:
        raise InvalidArgument(e.problem, field=e.field or "envelope") from e


def _parsed(envelope_bytes: bytes) -> dsse.Envelope:
    """A submitted envelope, parsed once its size is known to be sane."""
    if not envelope_bytes:
        raise InvalidArgument("required", field="envelope")
    if len(envelope_bytes) > MAX_ENVELOPE_BYTES:
        raise InvalidArgument(
            f"{len(envelope_bytes)} bytes; at most {MAX_ENVELOPE_BYTES}", field="envelope"
        )
    return parse_envelope(envelope_bytes)


def _as_verified(envelope: dsse.Envelope, admitted: judgment.Admitted) -> dsse.Envelope:
    """The envelope with the signatures `check` verified marked so: the sequencer judges
    it again at its real index (keys valid then, rules) without redoing the Ed25519
    arithmetic on the same bytes, on the one thread every entry waits for."""
    pae = hashlib.sha256(envelope.pae()).digest()
    return replace(
        envelope,
        verified=frozenset(
            (pae, key.public_key, sig.sig)
            for sig, key in zip(envelope.signatures, admitted.signers, strict=True)
        ),
    )


def read_trust_root(store: LedgerStore) -> tuple[TrustState, StoredEntry]:
    first = store.get_entry(0)
    if first is None:
        raise FailedPrecondition("the ledger is not initialised; run `ceasefire init` first")
    envelope = parse_envelope(parse_entry(first.entry).envelope)
    return rules.admit_trust_root(envelope), first


def dataset_files(borders: BorderDataset) -> list[pb.DatasetFile]:
    """The files of a data set as statements list them."""
    return [pb.DatasetFile(name=n, sha256=d, size=z) for n, d, z in datasets.file_list(borders)]


def initialize(
    store: LedgerStore, envelope: dsse.Envelope, log_key: LogKey, borders: BorderDataset
) -> StoredEntry:
    """Write a trust root signed by the founding parties' authorities as entry 0, adding
    the log key's signature, and store the files of its border data set with it."""
    if dsse.key_id(log_key.public_key) not in {s.keyid for s in envelope.signatures}:
        envelope = envelope.add_signature(log_key.signing_key)
    state = rules.admit_trust_root(envelope)
    if state.log_public_key != log_key.public_key or state.origin != log_key.origin:
        raise InvalidArgument("does not name this log key and origin", field="log_public_key")
    if state.border_dataset_sha256 != borders.sha256:
        raise InvalidArgument(
            f"names data set {state.border_dataset_sha256}, not {borders.sha256} ({borders.name})",
            field="border_dataset_sha256",
        )
    if not set(borders.parties) <= set(state.parties):
        # A border between parties the ledger does not know: no report could be placed.
        raise InvalidArgument(
            f"the data set {borders.name} is between {' and '.join(borders.parties)}, but "
            f"the trust root's parties are {', '.join(state.parties)}",
            field="border_dataset_sha256",
        )
    data = envelope.to_json()
    files = datasets.read_files(borders.directory, borders.files)

    def first_only(size: int, _reads: Reads) -> None:
        if size != 0:
            raise FailedPrecondition("this ledger already has entries; a trust root comes first")

    (result,) = store.append(
        [
            NewEntry(
                envelope.statement_sha256(),
                hashlib.sha256(data).digest(),
                statements.TRUST_ROOT,
                data,
                blobs={borders.files[name]: content for name, content in files.items()},
            )
        ],
        begin=first_only,
        build=lambda item, index, prev, now: Built(
            leaf_builder(data, log_pb2.Validation())(index, prev, now), ()
        ),
        clock_us=now_us,
        sign_checkpoint=log_key.sign_checkpoint,
    )
    if isinstance(result, LedgerError):
        raise result
    return result.entry


def default_dataset_dir(store: LedgerStore, origin: str) -> Path:
    """Where a ledger unpacks its registered border data sets: beside its SQLite database
    file (ledger.db -> ledger.db.datasets/), else (PostgreSQL) in the user's cache folder
    under a digest of the ledger's origin. Created with mode 0700 when first needed."""
    db = store.database_file()
    if db is not None:
        return db.with_name(db.name + ".datasets")
    return datasets.user_cache_dir(hashlib.sha256(origin.encode()).hexdigest()[:16])


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        log_key: LogKey,
        borders: BorderDataset,
        *,
        clock_us: Callable[[], int] = now_us,
        max_batch: int = 256,
        max_queue: int = 4096,
        linger_s: float = 0.0,
        dataset_dir: Path | None = None,
    ) -> None:
        """`borders` is a data set at hand (usually the bundled one); others registered on
        the ledger are loaded from its blob store into `dataset_dir` (by default
        `default_dataset_dir`) when first needed."""
        self.store = store
        self.log_key = log_key
        self.clock_us = clock_us
        self._datasets = {borders.sha256: borders}
        self._dataset_dir = dataset_dir or default_dataset_dir(store, log_key.origin)
        # (key state, the number of entries it covers): replaced whole, by one thread at a
        # time, so a reader always gets a matching pair.
        root, _ = read_trust_root(store)
        self._current = (root, 1)
        self._subjects = subjects.Cache()
        self._catch_up(store.tree_size())
        self._batch_state = root
        self._batch_sightings: list[duplicates.Sighting] = []
        # The writer's reads while it judges a batch (its connection; None between batches).
        self._batch_reads: Reads | None = None
        # Subjects opened or changed by the batch being committed, by log index.
        self._batch_subjects: dict[int, context.Subject] = {}
        if self.trust.log_public_key != log_key.public_key:
            raise FailedPrecondition("the log key is not the one the trust root names")
        self.dataset(self.trust.border_dataset_sha256)  # fail at start, not at first report
        # Called with the log's size after each batch this replica commits (tails wake).
        self._commit_watchers: list[Callable[[int], None]] = []
        self.sequencer = Sequencer(
            self._append, max_batch=max_batch, max_queue=max_queue, linger_s=linger_s
        )

    @property
    def trust(self) -> TrustState:
        """The key state as of the newest entry."""
        return self._current[0]

    @property
    def dataset_dir(self) -> Path:
        """Where registered border data sets are unpacked (see `default_dataset_dir`)."""
        return self._dataset_dir

    @property
    def borders(self) -> BorderDataset:
        """The border data set in force."""
        return self.dataset(self.trust.border_dataset_sha256)

    def close(self) -> None:
        self.sequencer.close()

    def dataset(self, sha256: str, state: TrustState | None = None) -> BorderDataset:
        """A border data set registered as of `state` (by default this replica's key state),
        loaded from the ledger's own blob store."""
        found = self._datasets.get(sha256)
        if found is not None:
            return found
        info = (state or self.trust).datasets.get(sha256)
        if info is None:
            raise NotFound(f"border data set {shown(sha256)} is not registered on this ledger")
        contents = {}
        for name, digest in info.files:
            data = self.store.get_blob(digest)
            if data is None:
                raise Corrupt(f"file {name} ({digest}) of data set {sha256} is missing")
            contents[name] = data
        try:
            # Each file checked against the registration's digest, as read back from disk.
            loaded = datasets.load_files(contents, self._dataset_dir, dict(info.files))
        except DatasetError as e:
            raise Corrupt(f"data set {sha256} does not load from the ledger's files: {e}") from e
        if loaded.sha256 != sha256:
            raise Corrupt(f"data set {sha256} loads as {loaded.sha256}")
        self._datasets[sha256] = loaded
        return loaded

    def _catch_up(self, size: int) -> None:
        """Advance the key state over entries another writer committed (or, at start, all)."""
        state, known = self._current
        if size == known:
            return
        self._subjects.clear()  # entries we did not write may change any subject
        self._current = (self._advanced(state, known, size), size)

    def _advanced(self, state: TrustState, known: int, size: int) -> TrustState:
        """`state`, the key state after `known` entries, advanced over the key events among
        entries [known, size): a copy if there are any, else `state` itself."""
        copied = False
        for stored in self.store.iter_kinds(sorted(kinds.KEY_EVENTS), known, size):
            if not copied:
                state, copied = state.copy(), True
            entry = parse_entry(stored.entry)
            envelope = parse_envelope(entry.envelope)
            time_us = to_us(entry.integrated_time)
            admitted = judgment.admit(state, envelope, stored.index, time_us, context.nothing)
            judgment.advance(state, admitted, stored.index)
        return state

    def _state_now(self) -> tuple[TrustState, int]:
        """The key state as of the log's newest entry, and the log's size: this replica's,
        advanced over key events other replicas logged since its last batch (a key added
        there is known here). Not kept: only the sequencer moves `_current`, under the
        writer's lock."""
        state, known = self._current
        size = self.store.tree_size()
        if size <= known:
            return state, known
        return self._advanced(state, known, size), size

    # -- writing -------------------------------------------------------------------------

    def _append(self, items: Sequence[NewEntry]) -> list[Appended | LedgerError]:
        def begin(size: int, reads: Reads) -> None:
            self._catch_up(size)
            self._batch_reads = reads
            self._batch_state = self._current[0].copy()
            self._batch_sightings = []
            self._batch_subjects = {}

        try:
            results = self.store.append(
                items,
                begin=begin,
                build=self._build,
                clock_us=self.clock_us,
                sign_checkpoint=self.log_key.sign_checkpoint,
            )
        finally:
            self._batch_reads = None
        # Committed: the batch's key state and subjects are now the ledger's.
        self._subjects.update(self._batch_subjects)
        size = max(
            [self._current[1]] + [r.entry.index + 1 for r in results if isinstance(r, Appended)]
        )
        self._current = (self._batch_state, size)
        for watcher in list(self._commit_watchers):
            try:
                watcher(size)
            except Exception:  # committed whatever a watcher does: the receipts go out
                log.exception("a commit watcher failed")
        return results

    def watch_commits(self, watcher: Callable[[int], None]) -> Callable[[], None]:
        """Call `watcher(size)` (on the sequencer's thread; it must not block) after each
        batch this replica commits; returns what stops it."""
        self._commit_watchers.append(watcher)
        return lambda: self._commit_watchers.remove(watcher)

    def _build(self, item: NewEntry, index: int, prev: bytes, now: int) -> Built:
        """The authoritative decision, at the entry's own index and the log's clock."""
        pending = item.pending
        assert isinstance(pending, Pending)
        state = self._batch_state

        def geo(placed: pb.IncidentReport, at: TrustState) -> log_pb2.GeoFacts:
            # Computed before queueing, unless a newer data set came into force since.
            if pending.geo is not None and pending.geo.dataset_sha256 == at.border_dataset_sha256:
                return pending.geo
            return self._geo(placed, at)

        judged = judgment.judge(
            state, pending.envelope, index, now, self._subject_in_batch, geo, self._candidates
        )
        self._batch_subjects.update(judged.subjects)
        if judged.sighting is not None:
            self._batch_sightings.append(judged.sighting)
        judgment.advance(state, judged.admitted, index)
        incident, notice = entry_rows(judged.statement, judged.validation, judged.sighting)
        return Built(
            judged.leaf(pending.envelope_bytes, index, prev, now),
            judged.links,
            incident=incident,
            notice=notice,
        )

    def _subject_in_batch(self, index: int) -> context.Subject | None:
        """For the writer, under its lock: the batch's view, else the committed one."""
        found = self._batch_subjects.get(index) or self._subjects.get(index)
        if found is None:
            found = self._read_subject(index)
            if found is not None:
                self._subjects.update({index: found})
        return found

    def lookup(self, size: int | None = None) -> context.Lookup:
        """Looks up the incident, finding, investigation, notice or message at an index, as
        the committed log has it (None: none there). From the cache while this replica is
        in step with the log (of `size` entries, if the caller has just read it); from the
        database when another replica wrote since."""
        if (self.store.tree_size() if size is None else size) != self._current[1]:
            return self._read_subject
        return lambda index: self._subjects.get(index) or self._read_subject(index)

    def _read_subject(self, index: int) -> context.Subject | None:
        incident = self.store.incident(index)
        if incident is not None:
            return incident
        stored = self.store.get_entry(index)
        if stored is None or stored.kind not in SUBJECT_KINDS:
            return None
        envelope = parse_envelope(parse_entry(stored.entry).envelope)
        linked = []
        for link in self.store.links_to([index]):
            entry = parse_entry(self.entry(link.index).entry)
            said = parse_envelope(entry.envelope)
            linked.append((link, said, frozenset(entry.validation.signer_key_ids)))
        return judgment.rebuild(index, envelope, linked, self.trust)

    def _candidates(self, new: duplicates.Sighting) -> Iterator[duplicates.Sighting]:
        """Earlier incidents near the new one, newest first: those taken into this batch,
        then committed ones."""
        yield from reversed(self._batch_sightings)
        first = self._batch_sightings[0].index if self._batch_sightings else new.index
        assert self._batch_reads is not None, "candidates are looked up by the writer only"
        for r, idx in self._batch_reads.sightings_near(
            first, duplicates.search(new), sorted(new.evidence)
        ):
            yield duplicates.Sighting(
                idx, r.window_start_us, r.window_end_us, r.latitude, r.longitude,
                frozenset(r.evidence),
            )  # fmt: skip

    def submit(self, envelope_bytes: bytes, files: Mapping[str, bytes] | None = None) -> Accepted:
        """Verify, validate and append one envelope (with the files it names, if any);
        answer after it is durably committed. The log keeps the envelope's canonical
        spelling, and each signed statement once. The three steps, for a caller that
        receives the files after judging the envelope or waits for the commit elsewhere:
        `check`, `enqueue`, `committed` (the first two together: `queue`)."""
        queued = self.queue(envelope_bytes, files or {})
        return queued if isinstance(queued, Accepted) else self.committed(queued)

    def queue(self, envelope_bytes: bytes, files: Mapping[str, bytes]) -> Accepted | Queued:
        """`check`, then `enqueue` unless the statement is logged already (its first
        receipt)."""
        checked = self.check(envelope_bytes)
        return checked if isinstance(checked, Accepted) else self.enqueue(checked, files)

    def check(self, envelope_bytes: bytes) -> Checked | Accepted:
        """Judge an envelope on the current state, before any file it brings is read: its
        first receipt if the statement is logged already, else what it is and the files
        it lists. Refuses with the LedgerError that names the problem."""
        envelope = _parsed(envelope_bytes)
        known = self.store.get_entry_by_statement(envelope.statement_sha256())
        # On the state this replica last committed, without reading the log's size: the
        # sequencer judges again at the real index. Only a refusal is worth that read,
        # in case another replica logged since what makes the statement good.
        state, size = self._current
        try:
            return self._judged(envelope, known, state, size)
        except LedgerError:
            now = self._state_now()
            if now[1] == size:
                raise
            return self._judged(envelope, known, *now)

    def _judged(
        self, envelope: dsse.Envelope, known: StoredEntry | None, state: TrustState, size: int
    ) -> Checked | Accepted:
        """`check`'s judgment, on the entry that logged the statement (if any) and the key
        state after `size` entries."""
        # A retry (however re-spelt or relayed) gets the first receipt and adds nothing.
        if known is not None:
            return self._resubmitted(known, envelope)
        if envelope.payload_type not in statements.SUBMITTABLE:
            raise InvalidArgument(
                f"{shown(envelope.payload_type)} is not a statement kind this ledger accepts",
                field="payloadType",
            )
        # Fail fast on the current state; the sequencer decides again at the real index.
        admitted = judgment.admit(state, envelope, size, self.clock_us(), self.lookup(size))
        return Checked(envelope, admitted, state, files_listed(admitted.statement))

    def enqueue(self, checked: Checked, files: Mapping[str, bytes]) -> Queued:
        """Check the files against the statement, compute its geo facts and queue it for
        the sequencer (a full queue refuses: Overloaded)."""
        return self._queue(checked, *self._prepared(checked, files))

    def _prepared(
        self, checked: Checked, files: Mapping[str, bytes]
    ) -> tuple[NewEntry, str | None]:
        """What `enqueue` queues (apart, so a batch can be prepared whole before any of it
        is queued), and the data set it unpacked, if any."""
        geo = None
        blobs: dict[str, bytes] = {}
        statement = checked.admitted.statement
        state = checked.state
        unpacked: str | None = None  # a data set this submission unpacked, removed if it is refused
        if isinstance(statement, pb.BorderDatasetRegistration):
            blobs, unpacked = self._accept_dataset(statement, files, state)
        elif isinstance(statement, pb.EvidenceRecord):
            blobs = _accept_evidence_blob(statement, files)
        elif files:
            raise unlisted_file(statement, next(iter(files)))
        if checked.admitted.kind.place is not None:
            geo = self._geo(checked.admitted.kind.place(statement), state)
        envelope = checked.envelope
        canonical = envelope.to_json()
        entry = NewEntry(
            envelope.statement_sha256(),
            hashlib.sha256(canonical).digest(),
            envelope.payload_type,
            Pending(canonical, _as_verified(envelope, checked.admitted), geo),
            blobs=blobs,
        )
        return entry, unpacked

    def _queue(self, checked: Checked, entry: NewEntry, unpacked: str | None) -> Queued:
        try:
            future = self.sequencer.submit(entry)
        except LedgerError:
            if unpacked is not None:
                self._forget_dataset(unpacked)
            raise
        return Queued(checked, future, unpacked)

    def committed(self, queued: Queued, timeout_s: float = SUBMIT_TIMEOUT_S) -> Accepted:
        """The receipt, once the queued entry is durably committed (waiting at most
        `timeout_s`), or the refusal the sequencer gave it at its real index."""
        try:
            appended = queued.future.result(timeout=timeout_s)
        except FutureTimeout:
            raise not_committed() from None
        except LedgerError:
            if queued.unpacked is not None:
                self._forget_dataset(queued.unpacked)
            raise
        if appended.duplicate:  # logged meanwhile, e.g. through another replica
            return self._resubmitted(appended.entry, queued.checked.envelope)
        return self._accepted(appended, queued.checked.envelope.statement_sha256())

    def submit_batch(self, envelopes: Sequence[bytes]) -> list[Accepted | LedgerError]:
        """Many envelopes, each with its own outcome, in order: its receipt, or the
        LedgerError `submit` would have raised for it alone (one refusal never fails the
        others). Those that pass are committed together where the queue allows. The two
        steps, for a caller that waits for the commit elsewhere: `queue_batch`,
        `committed_batch`."""
        return self.committed_batch(self.queue_batch(envelopes))

    def queue_batch(self, envelopes: Sequence[bytes]) -> list[Accepted | LedgerError | Queued]:
        """`check` every envelope and prepare those that pass as `enqueue` does, then
        queue them all back to back, so that the sequencer takes them into one batch: one
        transaction, one flush (or a few, when its thread wakes between two puts or other
        writers' entries fill its batch). Each is judged on the state before the batch:
        one that needs another of the same batch logged first is refused, as Submit would
        refuse it sent before that one. Statements that bring files are refused as Submit
        refuses them (no files come). Refuses the whole batch only when it is empty or over
        MAX_BATCH."""
        if not envelopes:
            raise InvalidArgument("at least one envelope", field="envelopes")
        if len(envelopes) > MAX_BATCH:
            raise InvalidArgument(
                f"{len(envelopes)} envelopes; at most {MAX_BATCH} in one call", field="envelopes"
            )
        parsed: list[dsse.Envelope | LedgerError] = []
        for data in envelopes:
            try:
                parsed.append(_parsed(data))
            except LedgerError as e:
                parsed.append(e)
        # One read of the log for the whole batch: which statements it holds, and its state.
        known = self.store.entries_by_statement(
            [e.statement_sha256() for e in parsed if isinstance(e, dsse.Envelope)]
        )
        state, size = self._state_now()
        prepared: list[Accepted | LedgerError | tuple[Checked, NewEntry, str | None]] = []
        for envelope in parsed:
            if isinstance(envelope, LedgerError):
                prepared.append(envelope)
                continue
            try:
                checked = self._judged(
                    envelope, known.get(envelope.statement_sha256()), state, size
                )
                if isinstance(checked, Checked):
                    prepared.append((checked, *self._prepared(checked, {})))
                else:
                    prepared.append(checked)
            except LedgerError as e:
                prepared.append(e)
        # Queued only once all are prepared, back to back: checking (a database read) and
        # geo facts take long enough between two that the sequencer would commit the
        # first alone, and the rest in further transactions.
        results: list[Accepted | LedgerError | Queued] = []
        for item in prepared:
            if isinstance(item, tuple):
                try:
                    results.append(self._queue(*item))
                except LedgerError as e:  # the queue is full: this one and those after it
                    results.append(e)
            else:
                results.append(item)
        return results

    def committed_batch(
        self,
        queued: Sequence[Accepted | LedgerError | Queued],
        timeout_s: float = SUBMIT_TIMEOUT_S,
    ) -> list[Accepted | LedgerError]:
        """`committed` for each queued item of `queue_batch`, waiting at most `timeout_s`
        for them all; refusals and receipts given before queueing pass through."""
        deadline = time.monotonic() + timeout_s
        results: list[Accepted | LedgerError] = []
        for item in queued:
            if isinstance(item, Queued):
                try:
                    item = self.committed(item, max(0.0, deadline - time.monotonic()))
                except LedgerError as e:
                    item = e
            results.append(item)
        return results

    def _resubmitted(self, known: StoredEntry, envelope: dsse.Envelope) -> Accepted:
        """A statement already logged: its first receipt, or the refusal that names it."""
        logged = parse_envelope(parse_entry(known.entry).envelope)
        judgment.resubmitted(logged, known.index, envelope)
        return self._accepted(Appended(known, duplicate=True), logged.statement_sha256())

    def _geo(self, report: pb.IncidentReport, state: TrustState) -> log_pb2.GeoFacts:
        sha = state.border_dataset_sha256
        return geofacts.compute(report, self.dataset(sha, state), state.datasets[sha])

    def _accept_dataset(
        self,
        reg: pb.BorderDatasetRegistration,
        files: Mapping[str, bytes],
        state: TrustState,
    ) -> tuple[dict[str, bytes], str | None]:
        """The files must be exactly those listed, and must load as a data set whose
        parties are this ledger's. Returns them by digest, and the data set's digest when
        this call unpacked it (its files are removed if the registration is refused)."""
        listed = {f.name: f for f in reg.files}
        for name in files:
            if name not in listed:
                raise unlisted_file(reg, name)
        for i, f in enumerate(reg.files):
            data = files.get(f.name)
            if data is None:
                raise InvalidArgument(f"{f.name} was not sent", field=f"files[{i}]")
            if len(data) != f.size or hashlib.sha256(data).hexdigest() != f.sha256:
                raise _dataset_file_mismatch(i, f)
        folder = self._dataset_dir / reg.dataset_sha256
        known = folder.is_dir()  # a data set unpacked before: not this submission's to remove
        try:
            loaded = datasets.load_files(
                files, self._dataset_dir, {f.name: f.sha256 for f in reg.files}
            )
        except DatasetError as e:  # its folder is removed; the message names no path
            raise InvalidArgument(
                f"not a border data set this ledger can read: {e}", field="files"
            ) from e
        unknown = sorted(set(loaded.parties) - set(state.parties))
        if unknown:
            if not known:
                datasets.discard(loaded.directory)
            raise InvalidArgument(
                f"names parties {', '.join(shown(p, 16) for p in unknown)} that this ledger "
                "does not have",
                field="files",
            )
        self._datasets[loaded.sha256] = loaded
        blobs = {listed[name].sha256: data for name, data in files.items()}
        return blobs, None if known else loaded.sha256

    def _forget_dataset(self, sha256: str) -> None:
        """Remove the unpacked files of a refused registration (unless the data set is
        registered after all, e.g. by another statement meanwhile)."""
        if sha256 in self.trust.datasets:
            return
        folder = (self._dataset_dir / sha256).resolve()
        loaded = self._datasets.get(sha256)
        if loaded is not None and loaded.directory == folder:
            del self._datasets[sha256]
        datasets.discard(folder)

    def revalidate(
        self,
        dataset_sha256: str,
        since_us: int | None,
        until_us: int | None,
        parties: Sequence[str],
        limit: int,
    ) -> Iterator[tuple[int, log_pb2.GeoFacts, log_pb2.GeoFacts | None, str]]:
        """Each incident's recorded facts beside those another registered data set gives
        (or the error it gives). A query: nothing is written."""
        state = self.trust
        info = state.datasets.get(dataset_sha256)
        if info is None:
            raise NotFound(
                f"border data set {shown(dataset_sha256)} is not registered on this ledger",
                field="dataset_sha256",
            )
        request = api.TimelineRequest(parties=parties, limit=limit)
        if since_us is not None:
            request.since.CopyFrom(to_timestamp(since_us))
        if until_us is not None:
            request.until.CopyFrom(to_timestamp(until_us))
        incidents = self.timeline(request).items  # checks the filters
        ds = self.dataset(dataset_sha256)
        for incident in incidents:
            assert isinstance(incident, ShownIncident)  # the full view, by default
            # The place as last amended, with the facts recorded for it.
            index, report = incident.stored.index, incident.current.report
            recorded = incident.current.geo
            try:
                yield index, recorded, geofacts.compute(report, ds, info), ""
            except InvalidArgument as e:
                yield index, recorded, None, str(e)

    def _accepted(self, appended: Appended, statement_sha256: bytes) -> Accepted:
        """The signed receipt; the caller has the statement at hand, so its identity is not
        parsed again from the stored entry."""
        e = appended.entry
        receipt = log_pb2.Receipt(
            origin=self.log_key.origin,
            index=e.index,
            leaf_hash=e.leaf_hash,
            integrated_time=to_timestamp(e.integrated_time_us),
            envelope_sha256=e.envelope_sha256,
            statement_sha256=statement_sha256,
        )
        # Ed25519 is deterministic: a duplicate gets byte-for-byte the first receipt.
        return Accepted(self.log_key.sign_receipt(receipt), receipt, appended.duplicate)

    # -- reading -------------------------------------------------------------------------

    def entry(self, index: int, field: str = "index") -> StoredEntry:
        size = self.store.tree_size()
        found = self.store.get_entry(index) if 0 <= index < size else None
        if found is None:
            raise NotFound(f"no entry {index} (tree size {size})", field=field)
        return found

    def entry_by_digest(self, field: str, digest: bytes) -> StoredEntry:
        """An entry by `envelope_sha256` (of the envelope as logged) or `statement_sha256`
        (the statement's identity)."""
        if len(digest) != 32:
            raise InvalidArgument("must be 32 bytes", field=field)
        find = {
            "envelope_sha256": self.store.get_entry_by_envelope,
            "statement_sha256": self.store.get_entry_by_statement,
        }[field]
        found = find(digest)
        if found is None:
            raise NotFound(f"no entry with that {field}")
        return found

    MAX_ENTRIES_PER_CALL = 10_000

    def entries(self, start: int, end: int, *, within: str = "") -> Iterator[StoredEntry]:
        """Entries [start, end) (end 0: to the log's size). `within`: the path of the
        request message holding start and end, for the fields an error names."""
        size = self.store.tree_size()
        in_tree(start, f"{within}start", size, end=True)
        if end != 0 and end < start:
            raise InvalidArgument(f"{end} is before start {start}", field=f"{within}end")
        end = size if end == 0 else min(end, size)
        # A long range is cut short; the caller pages on from the last index it got.
        return self.store.iter_entries(start, min(end, start + self.MAX_ENTRIES_PER_CALL))

    def checkpoint(self) -> StoredCheckpoint:
        cp = self.store.latest_checkpoint()
        if cp is None:
            raise FailedPrecondition("the ledger is not initialised")
        return cp

    # How many of the newest cosigned checkpoints a witnessed checkpoint is looked for in.
    WITNESSED_LOOKBACK = 64

    def cosigned_checkpoint(self, witnessed: bool = False) -> StoredCheckpoint:
        """The newest checkpoint with the witness cosignatures kept for it after the log's
        signature; with `witnessed`, the newest whose cosignatures meet the witness policy."""
        if not witnessed:
            cp = self.checkpoint()
            found = self.store.cosignatures(cp.size)
            return replace(cp, note=cp.note + "".join(c.line for c in found))
        trust = self.trust
        if trust.witness_policy is None:
            raise FailedPrecondition("the trust root names no witness policy")
        for size, found in self.store.cosigned_sizes(self.WITNESSED_LOOKBACK):
            signed = self.store.checkpoint_at(size)
            if signed is None:
                continue
            cp = replace(signed, note=signed.note + "".join(c.line for c in found))
            if witnesses.witnessing(cp.note, trust).met:
                return cp
        raise FailedPrecondition(
            f"no checkpoint is cosigned as the witness policy {trust.witness_policy_text} "
            "requires (yet): see the witnesses' status in GetCheckpoint"
        )

    def _size_or_latest(self, size: int) -> int:
        return size or self.checkpoint().size

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[int, list[bytes], bytes]:
        known = self.store.tree_size()
        size = in_tree(self._size_or_latest(tree_size), "tree_size", known, end=True)
        in_tree(index, "index", size)
        proof, leaf_hash = self.store.inclusion(index, size, known)
        return size, proof, leaf_hash

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[int, list[bytes]]:
        known = self.store.tree_size()
        size = in_tree(self._size_or_latest(new_size), "new_size", known, end=True)
        if not 0 < old_size <= size:
            raise OutOfRange(f"{old_size} is not a tree size from 1 to {size}", field="old_size")
        return size, self.store.consistency_proof(old_size, size, known)

    MAX_TIMELINE = 10_000

    def _as_of(self, as_of_index: int) -> int | None:
        """The index a read is judged before: None for now (0), else `as_of_index`, which
        must not exceed the tree size."""
        if as_of_index == 0:
            return None
        return in_tree(as_of_index, "as_of_index", self.store.tree_size(), end=True)

    def timeline(self, request: api.TimelineRequest) -> TimelinePage:
        """A page of the incident reports that pass every filter of `request`, in its
        order, each with its status and its current form, as the log stood before the
        query's snapshot (see TimelineRequest and ledger/queries.py). Reads the keys of
        the matching reports through the indexes, then only the page's entries, the links
        to them and their newest amendments."""
        query = queries.parse(request, self.trust.parties, self.borders.segments)
        size = self.store.tree_size()
        if query.as_of_index:
            in_tree(query.as_of_index, "as_of_index", size, end=True)
        after = queries.read_token(request.page_token, query) if request.page_token else None
        if after is not None and after.before > size:
            raise InvalidArgument("not a page token of this log", field="page_token")
        before = after.before if after is not None else query.as_of_index or size
        query = self._investigated(query, before)
        limit = min(request.limit or self.MAX_TIMELINE, self.MAX_TIMELINE)
        keys = self._matching(query, before, after, limit + 1)
        more, keys = len(keys) > limit, keys[:limit]
        indexes = [k.index for k in keys]
        items: list[ShownIncident] | list[Marked]
        if request.view == api.TIMELINE_VIEW_STATUS:
            items = self._marked(indexes, self._links_by_target(indexes, before))
        else:
            found = {e.index: e for e in self.store.get_entries(indexes)}
            missing = [i for i in indexes if i not in found]
            if missing:
                raise Corrupt(f"incident reports {missing} are indexed but not stored")
            items = self.shown_incidents([found[i] for i in indexes], before)
        return TimelinePage(
            items,
            queries.tokens(query, [queries.Cursor(before, k.start_us, k.index) for k in keys]),
            more,
            before,
        )

    def _investigated(self, query: queries.Query, before: int) -> queries.Query:
        """`query` limited to the incidents its investigation request names, if it names
        one: a request logged before the snapshot."""
        index = query.investigation_index
        if not index:
            return query
        stored = self.store.get_entry(index) if index < before else None
        if stored is None or stored.kind != statements.INVESTIGATION_REQUEST:
            raise NotFound(
                f"entry {index} is not an investigation request logged before entry {before}",
                field="investigation_index",
            )
        request = statements.decode(*_payload(parse_entry(stored.entry).envelope))
        assert isinstance(request, pb.InvestigationRequest)
        return replace(query, incidents=tuple(sorted(set(request.incident_indexes))))

    def _matching(
        self,
        query: queries.Query,
        before: int,
        after: queries.Cursor | None,
        want: int,
    ) -> list[TimelineKey]:
        """The keys of the first `want` reports after `after` that pass every filter: the
        store applies all but the near circle's exact geodesic distance (it searches the
        circle's box) and the exact distance to the border of an area, or to the segment
        asked for (it gives those within the recorded distance to the border, which is never
        more), checked here on the rows it gives, a batch at a time."""
        # The log time window as a range of indexes: entries' times never decrease.
        first, end = 0, None
        if query.logged_since_us is not None:
            first = self.store.first_index_at(query.logged_since_us, before)
        if query.logged_until_us is not None:
            end = self.store.first_index_at(query.logged_until_us + 1, before)
        near = query.near
        exact = query.border_within_m is not None
        found: list[TimelineKey] = []
        while len(found) < want:
            need = want - len(found)
            # A circle fills pi/4 of its box: ask for a few more than are needed.
            batch = need if near is None and not exact else need + need // 4 + 16
            keys = self.store.timeline(
                query, before=before, after=after, limit=batch, first_index=first, end_index=end
            )
            kept = keys
            if near is not None:
                metres = near.distances_m([(k.latitude, k.longitude) for k in kept])
                kept = [k for k, m in zip(kept, metres, strict=True) if m <= near.within_m]
            if exact:
                kept = self._near_border(query, kept)
            found += kept
            if len(keys) < batch:
                break
            after = queries.Cursor(before, keys[-1].start_us, keys[-1].index)
        return found[:want]

    def _near_border(self, query: queries.Query, keys: list[TimelineKey]) -> list[TimelineKey]:
        """Those of `keys` within the query's distance of the border, or of its segment
        (see queries.place_to_border_m), measured from their entries' reports as first
        logged. Without a segment the store's check of the recorded distance stands; only
        areas, which record none, are measured."""
        assert query.border_within_m is not None
        measure = [k.index for k in keys if query.segment or k.border_m is None]
        if not measure:
            return keys
        stored = {e.index: e for e in self.store.get_entries(measure)}
        ds, far = self.borders, set()
        for index in measure:
            if index not in stored:
                raise Corrupt(f"incident report {index} is indexed but not stored")
            entry, report = _logged(stored[index].entry)
            assert isinstance(report, pb.IncidentReport)
            metres = queries.place_to_border_m(ds, report, entry.validation.geo, query.segment)
            if metres > query.border_within_m:
                far.add(index)
        return [k for k in keys if k.index not in far]

    def _links_by_target(
        self, indexes: Sequence[int], before: int | None
    ) -> dict[int, list[incidents.Link]]:
        by_target: dict[int, list[incidents.Link]] = {i: [] for i in indexes}
        if by_target:
            for link in self.store.links_to(list(by_target), before=before):
                by_target[link.target].append(link)
        return by_target

    def _marked(
        self, indexes: Sequence[int], links: Mapping[int, Sequence[incidents.Link]]
    ) -> list[Marked]:
        """Each incident's status and what its links mark it with (amendments, retraction,
        likely duplicates): no entry of the incidents read, only their newest amendments'."""
        newest: dict[int, int] = {}
        for target, found in links.items():
            for x in found:
                if x.relation == incidents.AMENDMENT:
                    newest[target] = max(newest.get(target, 0), x.index)
        amendments = {e.index: e for e in self.store.get_entries(list(newest.values()))}
        marked = []
        for index in indexes:
            found = links[index]
            current = api.IncidentView(
                amendments=sum(x.relation == incidents.AMENDMENT for x in found),
                retracted_at_index=next(
                    (x.index for x in found if x.relation == incidents.RETRACTION), 0
                ),
                likely_duplicated_by=[
                    x.index for x in found if x.relation == incidents.LIKELY_DUPLICATE
                ],
            )
            amendment = None
            at = newest.get(index)
            if at is not None:
                amendment = amendments.get(at)
                if amendment is None:
                    raise Corrupt(f"amendment {at} of incident {index} is missing")
                current.amended_at_index = at
                current.amended_at_time.CopyFrom(to_timestamp(amendment.integrated_time_us))
            marked.append(Marked(index, incidents.derive_status(found), current, amendment))
        return marked

    def _shown(
        self, reports: Sequence[StoredEntry], links: Mapping[int, Sequence[incidents.Link]]
    ) -> list[ShownIncident]:
        """Each incident report with the status and the current form its links give: the
        newest amendment's corrected report and the geo facts recorded in its entry."""
        shown = []
        marks = self._marked([s.index for s in reports], links)
        for stored, mark in zip(reports, marks, strict=True):
            entry, report = _logged(stored.entry)
            if not isinstance(report, pb.IncidentReport):
                raise Corrupt(f"entry {stored.index} is indexed as an incident but is not one")
            current = mark.current
            current.report.CopyFrom(report)
            current.geo.CopyFrom(entry.validation.geo)
            current.likely_duplicate_of.extend(entry.validation.likely_duplicates)
            if mark.amendment is not None:
                amended, amendment = _logged(mark.amendment.entry)
                if not isinstance(amendment, pb.IncidentAmendment):
                    raise Corrupt(
                        f"entry {mark.amendment.index} is linked as an amendment but is not one"
                    )
                current.report.CopyFrom(amendment.corrected)
                current.geo.CopyFrom(amended.validation.geo)
            shown.append(ShownIncident(stored, report, entry.validation.geo, mark.status, current))
        return shown

    def dossier(self, index: int, as_of_index: int = 0) -> Dossier:
        """An incident report, every entry linked to it (with the attestations and dissents
        of the findings about it) and every advance notice that preceded it in time and
        place, in log order; its status and current form. All as the log stood before
        `as_of_index` (0: now)."""
        before = self._as_of(as_of_index)
        in_tree(index, "incident_index", self.store.tree_size())
        if self.store.incident(index) is None:
            raise NotFound(f"entry {index} is not an incident report", field="incident_index")
        if before is not None and index >= before:
            raise InvalidArgument(
                f"incident {index} was logged at or after entry {before}", field="as_of_index"
            )
        report_entry = self.entry(index)
        links = self._links_by_target([report_entry.index], before)
        found = links[index]
        (shown,) = self._shown([report_entry], links)
        related = [(i, incidents.PRECEDING_NOTICE) for i in self._notices_before(report_entry)]
        related += [(link.index, link.relation) for link in found]
        related += self._answers_to_findings(found, before)
        entries = [(report_entry, incidents.REPORT), *self._entries_as(related)]
        return Dossier(shown.status, sorted(entries, key=lambda e: e[0].index), shown.current)

    def _answers_to_findings(
        self, found: Sequence[incidents.Link], before: int | None
    ) -> list[tuple[int, str]]:
        """The attestations and dissents of the findings among `found` that are not linked
        already: "joint_finding" for the attestation that met a finding's policy."""
        drafts = [x.index for x in found if x.relation == incidents.FINDING]
        if not drafts:
            return []
        seen = {x.index for x in found}
        answers = []
        for link in self.store.links_to(drafts, before=before):
            if link.relation not in (incidents.ATTESTATION, incidents.DISSENT):
                continue
            if link.index in seen:
                continue
            seen.add(link.index)
            met = link.relation == incidents.ATTESTATION and link.response == subjects.MET
            answers.append((link.index, incidents.JOINT_FINDING if met else link.relation))
        return answers

    def _entries_as(self, related: Sequence[tuple[int, str]]) -> list[tuple[StoredEntry, str]]:
        """The entries at the given indexes (read in one query), each with its relation."""
        stored = {e.index: e for e in self.store.get_entries([i for i, _ in related])}
        missing = sorted({i for i, _ in related} - set(stored))
        if missing:
            raise Corrupt(f"linked entries {missing} are missing")
        return [(stored[i], relation) for i, relation in related]

    def _notices_before(self, stored: StoredEntry) -> list[int]:
        envelope = parse_envelope(parse_entry(stored.entry).envelope)
        report = statements.decode(envelope.payload_type, envelope.payload)
        assert isinstance(report, pb.IncidentReport)
        start, end = to_us(report.window.start), to_us(report.window.end)
        latitude, longitude = geofacts.anchor(report)
        slack = messages.NEAR_NOTICE_US
        found = self.store.notices_during(stored.index, start - slack, end + slack)
        return [idx for idx, area in found if messages.near(area, latitude, longitude, start, end)]

    def investigation(
        self, index: int
    ) -> tuple[
        InvestigationInfo, api.InvestigationStatus.ValueType, int, list[tuple[StoredEntry, str]]
    ]:
        """An investigation, its status by the log's clock now, that clock, and the request
        with every entry linked to it (and its findings' attestations and dissents), in log
        order."""
        in_tree(index, "investigation_index", self.store.tree_size())
        lookup = self.lookup()
        info = lookup(index)
        if not isinstance(info, InvestigationInfo):
            raise NotFound(
                f"entry {index} is not an investigation request", field="investigation_index"
            )
        as_of = max(self.clock_us(), self.store.last_time_us())
        status = subjects.investigation_status(info, as_of, lookup)
        found = self.store.links_to([index])
        related = [(link.index, link.relation) for link in found]
        related += self._answers_to_findings(found, None)
        entries = [(self.entry(index), incidents.REQUEST), *self._entries_as(related)]
        return info, status, as_of, sorted(entries, key=lambda e: e[0].index)

    MAX_MESSAGES = 1000

    def messages(
        self, start: int, to_party: str, unacknowledged_only: bool, limit: int
    ) -> Iterator[tuple[StoredEntry, MessageInfo, list[int]]]:
        """Advance notices and hotline messages from log index `start` on, with their
        acknowledgements and replies."""
        if to_party and to_party not in self.trust.parties:
            raise InvalidArgument(f"unknown party {shown(to_party)}", field="to_party")
        limit = min(limit or self.MAX_MESSAGES, self.MAX_MESSAGES)
        size = self.store.tree_size()
        in_tree(start, "start", size, end=True)
        lookup = self.lookup()
        for stored in self.store.iter_kinds([statements.NOTICE, statements.HOTLINE], start, size):
            if limit == 0:
                return
            info = lookup(stored.index)
            assert isinstance(info, MessageInfo)
            if to_party and not info.addressed_to(to_party):
                continue
            if unacknowledged_only and (
                to_party in info.acknowledged if to_party else info.acknowledged
            ):
                continue
            replies = [
                link.index
                for link in self.store.links_to([stored.index])
                if link.relation == incidents.REPLY
            ]
            limit -= 1
            yield stored, info, replies

    def shown_incidents(
        self, reports: Sequence[StoredEntry], before: int | None
    ) -> list[ShownIncident]:
        """Incident reports as the timeline shows them (status, current form), as the log
        stood before index `before` (None: now)."""
        return self._shown(reports, self._links_by_target([s.index for s in reports], before))

    def stats(
        self, since_us: int | None, until_us: int | None, bucket: api.StatsBucket.ValueType
    ) -> api.StatsResponse:
        """Incident counts and each party's participation over [since, until) (until None:
        the log's clock now); see ledger/stats.py."""
        return stats.compute(self, since_us, until_us, bucket)


@dataclass(frozen=True)
class ShownIncident:
    """An incident report as a reader is shown it: as first logged (its entry, report and
    geo facts), its derived status, and its current form (as last amended, with markers)."""

    stored: StoredEntry
    report: pb.IncidentReport
    geo: log_pb2.GeoFacts
    status: api.IncidentStatus.ValueType
    current: api.IncidentView


@dataclass(frozen=True)
class Marked:
    """What an incident's links give (the Timeline's status view): its derived status, and
    its current form's markers (amendments, retraction, likely duplicates), with its
    newest amendment's entry, if any."""

    index: int
    status: api.IncidentStatus.ValueType
    current: api.IncidentView
    amendment: StoredEntry | None


@dataclass(frozen=True)
class TimelinePage:
    """A page of a Timeline query: the incidents, for each the page token that continues
    after it, whether more match after the last, and the snapshot (the log before index
    `as_of_index`) it was judged on."""

    items: Sequence[ShownIncident | Marked]
    tokens: list[str]
    more: bool
    as_of_index: int


@dataclass(frozen=True)
class Dossier:
    status: api.IncidentStatus.ValueType
    # The report and every related entry, in log order, each with how it relates.
    entries: list[tuple[StoredEntry, str]]
    current: api.IncidentView
