"""A read-only mirror of a log, loaded from its verified offline bundles.

`load` fills a fresh database from a bundle; `extend` appends a newer bundle's entries to it.
Either copies each entry's bytes verbatim at its index, with the Merkle nodes and the
derived rows the read RPCs use (links as the replay's judgment gave them, incident and
notice rows by the writer's own `entry_rows`), the border data sets' files, and the
bundle's signed note verbatim as the checkpoint. All of it in one transaction, and one
checkpoint row per import: the log's note, never one for a size the log did not sign.

The mirror has no log key. `MirrorLedger` serves it through the ordinary service with the
log's public key only: submissions are refused (FAILED_PRECONDITION), nothing is signed,
and every database connection it opens is read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from sqlalchemy import (
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    event,
    inspect,
    select,
)

from geo.borders import BorderDataset
from ledger import duplicates, statements, witnesses
from ledger.clock import to_us
from ledger.errors import Corrupt, FailedPrecondition, LedgerError
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.formats.note import Checkpoint, NoteVerifier
from ledger.incidents import Link
from ledger.log_key import LogKey
from ledger.service import Accepted, Checked, Ledger, Queued, entry_rows, read_trust_root
from ledger.storage import (
    Appended,
    Built,
    LedgerStore,
    NewEntry,
    StoredCheckpoint,
    checkpoints,
    metadata,
    tree_state,
)
from ledger.trust import TrustState
from ledger.verifier import Replay, open_checkpoint

log = logging.getLogger(__name__)

# The one row of a mirror's database (migration 0006): which log it copies.
mirror_of = Table(
    "mirror_of",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("origin", Text, nullable=False),
    Column("trust_root_sha256", String(64), nullable=False),
)

# Entries per append within the import's transaction: bounds what is held in memory and
# the parameters of one statement, not the atomicity of the import.
CHUNK = 1000


class NotAnExtension(FailedPrecondition):
    """A bundle whose history is not the mirror's own plus more: a split view of the log."""


@dataclass(frozen=True)
class MirrorInfo:
    origin: str
    trust_root_sha256: str


@dataclass(frozen=True)
class Verified:
    """A bundle, verified whole (clients.bundle.verify_bundle), as an import takes it.
    `entries` are read again from the bundle: each must have the leaf hash the replay
    took in, so what is imported is what was verified."""

    replay: Replay
    checkpoint: Checkpoint
    # The checkpoint as the bundle holds it, byte for byte (cosignature lines and all).
    note: str
    entries: Iterable[tuple[int, bytes]]
    # Files in the bundle, by SHA-256 (hex), each checked against its digest.
    files: Mapping[str, bytes]

    @property
    def trust(self) -> TrustState:
        assert self.replay.trust is not None, "a verified bundle has its trust root"
        return self.replay.trust


@dataclass(frozen=True)
class Extended:
    old_size: int
    new_size: int

    @property
    def appended(self) -> int:
        return self.new_size - self.old_size


def mirror_info(store: LedgerStore) -> MirrorInfo | None:
    """Which log the database mirrors; None for a log of its own (or no ledger at all)."""
    with store.engine.connect() as conn:
        if not inspect(conn).has_table(mirror_of.name):  # a schema before migration 0006
            return None
        row = conn.execute(select(mirror_of)).one_or_none()
    return MirrorInfo(row.origin, row.trust_root_sha256) if row else None


def load(
    store: LedgerStore,
    bundle: Verified,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> int:
    """Fill a fresh database with a verified bundle and mark it a mirror of its log;
    returns the size. Refuses (FailedPrecondition) a database that holds anything."""
    with _writer(store) as conn:
        state = conn.execute(select(tree_state.c.size)).scalar()
        info = conn.execute(select(mirror_of.c.origin)).scalar()
        if info is not None:
            raise FailedPrecondition(
                f"already a mirror of {info}; bring it up to date with `ceasefire mirror update`"
            )
        if state is not None:
            raise FailedPrecondition(
                f"the database holds a ledger of {state} entries; a mirror starts empty"
            )
        conn.execute(
            mirror_of.insert(),
            {
                "id": 1,
                "origin": bundle.trust.origin,
                "trust_root_sha256": bundle.replay.trust_root_digest,
            },
        )
        _copy(store, conn, bundle, 0, progress, chunk)
    return bundle.checkpoint.size


def extend(
    store: LedgerStore,
    bundle: Verified,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> Extended:
    """Append the entries of a newer verified bundle of the same log and switch to its
    signed note. The mirror's tree must be the bundle's first entries (NotAnExtension
    otherwise); a bundle no larger than the mirror changes nothing."""
    with _writer(store) as conn:
        info = conn.execute(select(mirror_of)).one_or_none()
        if info is None:
            raise FailedPrecondition("not a mirror: start one with `ceasefire mirror init`")
        if (bundle.trust.origin, bundle.replay.trust_root_digest) != (
            info.origin,
            info.trust_root_sha256,
        ):
            raise NotAnExtension(
                f"not an extension: the bundle is of log {bundle.trust.origin!r} with trust "
                f"root {bundle.replay.trust_root_digest[:16]}..., this mirror of "
                f"{info.origin!r} with trust root {info.trust_root_sha256[:16]}..."
            )
        # Under the writer's lock: no other import moves the tree meanwhile.
        held = conn.execute(
            select(tree_state.c.size, tree_state.c.root).with_for_update()
        ).one_or_none()
        last = conn.execute(
            select(checkpoints.c.size, checkpoints.c.root)
            .order_by(checkpoints.c.size.desc())
            .limit(1)
        ).one_or_none()
        if held is None or last is None or (held.size, held.root) != (last.size, last.root):
            raise Corrupt("the mirror's tree is not its latest checkpoint's; run an audit")
        size, new_size = held.size, bundle.checkpoint.size
        if new_size <= size:
            if store.root_at(new_size) != bundle.checkpoint.root_hash:
                raise _differ(new_size, size)
            return Extended(size, size)
        if merkle.root_from_leaf_hashes(bundle.replay.leaf_hashes[:size]) != held.root:
            raise _differ(size, new_size)
        _copy(store, conn, bundle, size, progress, chunk)
    return Extended(size, new_size)


def _differ(smaller: int, larger: int) -> NotAnExtension:
    return NotAnExtension(
        f"not an extension: the log's histories differ (the first {smaller} entries of the "
        f"bundle and of the mirror have different roots; sizes {smaller} and {larger})"
    )


@contextlib.contextmanager
def _writer(store: LedgerStore) -> Iterator[Connection]:
    """A writer's connection in one transaction (SQLite BEGIN IMMEDIATE, PostgreSQL's
    tree-state row locked by the first append), committed unless an exception leaves it."""
    with store.engine.connect().execution_options(ledger_writer=True) as conn, conn.begin():
        yield conn


def _copy(
    store: LedgerStore,
    conn: Connection,
    bundle: Verified,
    start: int,
    progress: Callable[[int], None] | None,
    chunk: int,
) -> None:
    """Entries [start, checkpoint size) of the bundle, appended on `conn` a chunk at a
    time; the last chunk's checkpoint row is the bundle's note."""
    replay, cp = bundle.replay, bundle.checkpoint
    # The note read with the entries must be the one verified (the file may have changed).
    if open_checkpoint(bundle.note, bundle.trust) != cp:
        raise Corrupt("the bundle's checkpoint changed since it was verified")
    links: dict[int, list[Link]] = {}
    for found in replay.links.values():
        for link in found:
            if link.index >= start:
                links.setdefault(link.index, []).append(link)
    files = _dataset_files(bundle)
    batch: list[NewEntry] = []

    def flush(final: bool) -> None:
        def sign(size: int, root: bytes) -> str | None:
            if not final:
                return None  # no checkpoint row for a size the log did not sign
            if (size, root) != (cp.size, cp.root_hash):
                raise Corrupt(f"the imported tree (size {size}) is not the signed one")
            return bundle.note

        last_time = max(p.built.integrated_time_us or 0 for p in _copied(batch))
        results = store.append(
            batch,
            build=_build,
            clock_us=lambda: last_time,
            sign_checkpoint=sign,
            on=conn,
        )
        for item, result in zip(_copied(batch), results, strict=True):
            if isinstance(result, LedgerError):
                raise result
            if result.duplicate or result.entry.index != item.index:
                raise Corrupt(f"entry {item.index} did not land at its index")
        batch.clear()

    expected = start
    for index, data in bundle.entries:
        if index < start:
            continue
        if index != expected or index >= cp.size:
            raise Corrupt(f"the bundle holds entry {index} where entry {expected} belongs")
        if merkle.leaf_hash(data) != replay.leaf_hashes[index]:
            raise Corrupt(f"entry {index} of the bundle changed since it was verified")
        # The data sets' files travel with the first entry (those stored already are kept).
        batch.append(_new_entry(index, data, links.get(index, ()), files if index == start else {}))
        expected += 1
        if progress is not None:
            progress(expected)
        if len(batch) >= chunk and expected < cp.size:
            flush(final=False)
    if expected != cp.size:
        raise Corrupt(f"the bundle holds {expected} entries, its checkpoint covers {cp.size}")
    if batch:
        flush(final=True)


@dataclass(frozen=True)
class _Copied:
    index: int
    built: Built


def _copied(batch: Sequence[NewEntry]) -> list[_Copied]:
    found = [item.pending for item in batch]
    assert all(isinstance(p, _Copied) for p in found)
    return found  # type: ignore[return-value]


def _build(item: NewEntry, index: int, _previous: bytes, _now: int) -> Built:
    copied = item.pending
    assert isinstance(copied, _Copied)
    if index != copied.index:
        raise Corrupt(f"entry {copied.index} would land at index {index}")
    return copied.built


def _new_entry(
    index: int, data: bytes, links: Sequence[Link], files: Mapping[str, bytes]
) -> NewEntry:
    """An entry as the writer would append it: the same identity, kind and derived rows."""
    entry = parse_entry(data)
    envelope = dsse.Envelope.from_json(entry.envelope)
    statement = statements.decode(envelope.payload_type, envelope.payload)
    sighting = (
        duplicates.sighting(index, statement) if isinstance(statement, pb.IncidentReport) else None
    )
    incident, notice = entry_rows(statement, entry.validation, sighting)
    built = Built(
        data,
        list(links),
        incident=incident,
        notice=notice,
        integrated_time_us=to_us(entry.integrated_time),
    )
    return NewEntry(
        envelope.statement_sha256(),
        hashlib.sha256(entry.envelope).digest(),
        envelope.payload_type,
        _Copied(index, built),
        blobs=dict(files),
    )


def _dataset_files(bundle: Verified) -> dict[str, bytes]:
    """The files of every border data set registered in the bundle's log: a mirror serves
    them, so that its auditors recompute geo facts as the log's do."""
    wanted: dict[str, bytes] = {}
    for info in bundle.trust.datasets.values():
        for name, digest in info.files:
            data = bundle.files.get(digest)
            if data is None:
                raise FailedPrecondition(
                    f"the bundle lacks file {name} ({digest[:16]}...) of border data set "
                    f"{info.sha256[:16]}...; export it again from the log"
                )
            wanted[digest] = data
    return wanted


# -- serving -----------------------------------------------------------------------------


def refuse_writes(store: LedgerStore) -> None:
    """Every connection `store` opens from now on is read-only in the database itself
    (SQLite query_only, PostgreSQL read-only transactions): whatever code path a server
    takes, it cannot change the mirror. Pooled connections opened before are dropped."""
    sqlite = store.engine.dialect.name == "sqlite"

    def read_only(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if sqlite:
            cur.execute("PRAGMA query_only = ON")
        else:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        cur.close()
        if not sqlite:
            dbapi_conn.commit()  # a session setting, kept when the pool rolls back

    event.listen(store.engine, "connect", read_only)
    store.engine.dispose()


class PublicLogKey(LogKey):
    """The log's public key alone: what a mirror verifies with. It signs nothing."""

    def __init__(self, origin: str, public_key: bytes) -> None:  # no private half
        self.origin = origin
        self._public_key = public_key

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.origin, self._public_key)

    def sign_checkpoint(self, size: int, root: bytes) -> str:
        raise FailedPrecondition(f"a mirror of {self.origin} signs no checkpoint")

    def sign_receipt(self, receipt: log_pb2.Receipt) -> bytes:
        raise FailedPrecondition(f"a mirror of {self.origin} signs no receipt")


class MirrorLedger(Ledger):
    """The service's reads (entries, checkpoint, proofs, timeline, dossiers, messages,
    blobs) on a mirror's database; every submission refused, naming the log and size."""

    def __init__(
        self, store: LedgerStore, borders: BorderDataset, *, dataset_dir: Path | None = None
    ) -> None:
        info = mirror_info(store)
        if info is None:
            raise FailedPrecondition("not a mirror: start one with `ceasefire mirror init`")
        self.mirror = info
        refuse_writes(store)
        trust, _ = read_trust_root(store)
        key = PublicLogKey(trust.origin, trust.log_public_key)
        super().__init__(store, key, borders, dataset_dir=dataset_dir)
        cp = self.checkpoint()
        log.info(
            "a read-only mirror of %s at size %d: submissions are refused", info.origin, cp.size
        )

    def read_only(self) -> FailedPrecondition:
        cp = self.store.latest_checkpoint()
        return FailedPrecondition(
            f"read-only mirror of {self.mirror.origin} at size {cp.size if cp else 0}; "
            "submit to the log itself"
        )

    @property
    def trust(self) -> TrustState:
        # `ceasefire mirror update` may have appended while this serves: key changes and
        # data sets registered since are followed, as a replica follows another's writes.
        self._catch_up(self.store.tree_size())
        return self._current[0]

    # Every way in for a submission (Submit, SubmitBatch, SubmitWithBlobs) starts here.
    def check(self, envelope_bytes: bytes) -> Checked | Accepted:
        raise self.read_only()

    def enqueue(self, checked: Checked, files: Mapping[str, bytes]) -> Queued:
        raise self.read_only()

    def cosigned_checkpoint(self, witnessed: bool = False) -> StoredCheckpoint:
        """The bundle's note as it came, cosignatures included (a mirror keeps none of its
        own); asked for a witnessed one, that note if its cosignatures meet the policy."""
        cp = self.checkpoint()
        if witnessed:
            shown = witnesses.witnessing(cp.note, self.trust)
            if not shown.met:
                raise FailedPrecondition(
                    "the checkpoint this mirror holds is not cosigned as the witness policy "
                    f"requires: {shown.describe()}"
                )
        return cp

    def queue_batch(self, envelopes: Sequence[bytes]) -> list[Accepted | LedgerError | Queued]:
        raise self.read_only()

    def _append(self, items: Sequence[NewEntry]) -> list[Appended | LedgerError]:
        raise self.read_only()  # the sequencer is idle here; were it fed, it writes nothing
