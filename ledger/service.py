"""The ledger's use cases, independent of gRPC: submit, read, prove, initialise."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb

from geo.borders import BorderDataset, GeoError
from ledger import dsse, rules, statements
from ledger.clock import now_us, to_timestamp, to_us
from ledger.errors import (
    FailedPrecondition,
    InvalidArgument,
    LedgerError,
    NotFound,
    OutOfRange,
    Overloaded,
)
from ledger.log_entry import leaf_builder, parse_entry
from ledger.log_key import LogKey
from ledger.sequencer import Sequencer
from ledger.storage import (
    Appended,
    IncidentRow,
    LedgerStore,
    NewEntry,
    StoredCheckpoint,
    StoredEntry,
)
from ledger.trust import TrustState

log = logging.getLogger(__name__)

# A leaf is at most 65,535 bytes (the tlog-tiles limit). The entry's own fields and the
# validation facts (at most 16 signer ids and the geo facts) take under 2 KiB, so an
# envelope of at most 60,000 bytes always fits.
MAX_ENVELOPE_BYTES = 60_000
SUBMIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Accepted:
    signed_receipt: bytes
    receipt: log_pb2.Receipt
    duplicate: bool


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


def read_trust_root(store: LedgerStore) -> tuple[TrustState, StoredEntry]:
    first = store.get_entry(0)
    if first is None:
        raise FailedPrecondition("the ledger is not initialised; run `ceasefire init` first")
    envelope = parse_envelope(parse_entry(first.entry).envelope)
    return rules.admit_trust_root(envelope), first


def initialize(store: LedgerStore, envelope: dsse.Envelope, log_key: LogKey) -> StoredEntry:
    """Write a trust root signed by the founding parties' authorities as entry 0, adding
    the log key's signature."""
    if dsse.key_id(log_key.public_key) not in {s.keyid for s in envelope.signatures}:
        envelope = envelope.add_signature(log_key.signing_key)
    state = rules.admit_trust_root(envelope)
    if state.log_public_key != log_key.public_key or state.origin != log_key.origin:
        raise InvalidArgument("does not name this log key and origin", field="log_public_key")
    data = envelope.to_json()

    def first_only(size: int) -> None:
        if size != 0:
            raise FailedPrecondition("this ledger already has entries; a trust root comes first")

    (result,) = store.append(
        [NewEntry(hashlib.sha256(data).digest(), statements.TRUST_ROOT, data)],
        begin=first_only,
        build=lambda item, index, prev, now: leaf_builder(data, log_pb2.Validation())(
            index, prev, now
        ),
        clock_us=now_us,
        sign_checkpoint=log_key.sign_checkpoint,
    )
    if isinstance(result, LedgerError):
        raise result
    return result.entry


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
    ) -> None:
        self.store = store
        self.log_key = log_key
        self.borders = borders
        self.clock_us = clock_us
        # (key state, the number of entries it covers): replaced whole, by one thread at a
        # time, so a reader always gets a matching pair.
        root, _ = read_trust_root(store)
        self._current = (root, 1)
        self._catch_up(store.tree_size())
        self._batch_state = root
        if self.trust.log_public_key != log_key.public_key:
            raise FailedPrecondition("the log key is not the one the trust root names")
        if self.trust.border_dataset_sha256 != borders.sha256:
            raise FailedPrecondition(
                f"the trust root names border data set {self.trust.border_dataset_sha256}, "
                f"but {borders.sha256} was loaded"
            )
        self.sequencer = Sequencer(
            self._append, max_batch=max_batch, max_queue=max_queue, linger_s=linger_s
        )

    @property
    def trust(self) -> TrustState:
        """The key state as of the newest entry."""
        return self._current[0]

    def close(self) -> None:
        self.sequencer.close()

    def _catch_up(self, size: int) -> None:
        """Advance the key state over entries another writer committed (or, at start, all)."""
        state, known = self._current
        if size == known:
            return
        state = state.copy()
        for stored in self.store.iter_kinds(sorted(statements.KEY_EVENTS), known, size):
            entry = parse_entry(stored.entry)
            admitted = rules.admit(
                state, parse_envelope(entry.envelope), stored.index, to_us(entry.integrated_time)
            )
            rules.advance(state, admitted, stored.index)
        self._current = (state, size)

    # -- writing -------------------------------------------------------------------------

    def _append(self, items: Sequence[NewEntry]) -> list[Appended | LedgerError]:
        def begin(size: int) -> None:
            self._catch_up(size)
            self._batch_state = self._current[0].copy()

        results = self.store.append(
            items,
            begin=begin,
            build=self._build,
            clock_us=self.clock_us,
            sign_checkpoint=self.log_key.sign_checkpoint,
        )
        # Committed: the batch's key state is now the ledger's.
        size = max(
            [self._current[1]] + [r.entry.index + 1 for r in results if isinstance(r, Appended)]
        )
        self._current = (self._batch_state, size)
        return results

    def _build(self, item: NewEntry, index: int, prev: bytes, now: int) -> bytes:
        """The authoritative decision, at the entry's own index and the log's clock."""
        pending = item.pending
        assert isinstance(pending, Pending)
        admitted = rules.admit(self._batch_state, pending.envelope, index, now)
        rules.advance(self._batch_state, admitted, index)
        validation = log_pb2.Validation(
            party=admitted.party, signer_key_ids=[k.key_id for k in admitted.signers]
        )
        if pending.geo is not None:
            validation.geo.CopyFrom(pending.geo)
        return leaf_builder(pending.envelope_bytes, validation)(index, prev, now)

    def submit(self, envelope_bytes: bytes) -> Accepted:
        """Verify, validate and append one envelope; answer after it is durably committed."""
        if not envelope_bytes:
            raise InvalidArgument("required", field="envelope")
        if len(envelope_bytes) > MAX_ENVELOPE_BYTES:
            raise InvalidArgument(
                f"{len(envelope_bytes)} bytes; at most {MAX_ENVELOPE_BYTES}", field="envelope"
            )
        digest = hashlib.sha256(envelope_bytes).digest()
        # A retry of an accepted envelope gets the first receipt and adds nothing.
        known = self.store.get_entry_by_envelope(digest)
        if known is not None:
            return self._accepted(Appended(known, duplicate=True))
        envelope = parse_envelope(envelope_bytes)
        if envelope.payload_type not in statements.SUBMITTABLE:
            raise InvalidArgument(
                f"{envelope.payload_type!r} is not a statement kind this ledger accepts",
                field="payloadType",
            )
        # Fail fast on the current state; the sequencer decides again at the real index.
        state, size = self._current
        admitted = rules.admit(state, envelope, size, self.clock_us())
        geo, incident = None, None
        if isinstance(admitted.statement, pb.IncidentReport):
            geo, incident = self._locate(admitted.statement)
        pending = Pending(envelope_bytes, envelope, geo)
        future = self.sequencer.submit(NewEntry(digest, envelope.payload_type, pending, incident))
        try:
            return self._accepted(future.result(timeout=SUBMIT_TIMEOUT_S))
        except FutureTimeout:
            # It may still commit: a retry of the same envelope then gets its receipt.
            raise Overloaded(
                f"not committed within {SUBMIT_TIMEOUT_S:.0f} s; retry the same envelope, "
                "it is never logged twice",
                retry_after_s=5.0,
            ) from None

    def _locate(self, report: pb.IncidentReport) -> tuple[log_pb2.GeoFacts, IncidentRow]:
        point = report.location.point
        try:
            facts = self.borders.locate(point.latitude, point.longitude)
        except GeoError as e:  # geo names fields of a bare location; ours sit under .point
            field = "location.point" + e.field.removeprefix("location")
            raise InvalidArgument(e.message, field=field) from e
        geo = log_pb2.GeoFacts(
            dataset_sha256=self.borders.sha256,
            territory=facts.territory or "",
            distance_to_border_m=round(facts.distance_to_border_m, 1),
            nearest_segment=facts.nearest_segment,
        )
        incident = IncidentRow(
            party=report.reporting_party,
            category=report.category,
            window_start_us=to_us(report.window.start),
            window_end_us=to_us(report.window.end),
            latitude=point.latitude,
            longitude=point.longitude,
            territory=geo.territory,
        )
        return geo, incident

    def _accepted(self, appended: Appended) -> Accepted:
        e = appended.entry
        receipt = log_pb2.Receipt(
            origin=self.log_key.origin,
            index=e.index,
            leaf_hash=e.leaf_hash,
            integrated_time=to_timestamp(e.integrated_time_us),
            envelope_sha256=e.envelope_sha256,
        )
        # Ed25519 is deterministic: a duplicate gets byte-for-byte the first receipt.
        return Accepted(self.log_key.sign_receipt(receipt), receipt, appended.duplicate)

    # -- reading -------------------------------------------------------------------------

    def entry(self, index: int) -> StoredEntry:
        size = self.store.tree_size()
        found = self.store.get_entry(index) if index < size else None
        if found is None:
            raise NotFound(f"no entry {index} (tree size {size})")
        return found

    def entry_by_envelope(self, digest: bytes) -> StoredEntry:
        if len(digest) != 32:
            raise InvalidArgument("must be 32 bytes", field="envelope_sha256")
        found = self.store.get_entry_by_envelope(digest)
        if found is None:
            raise NotFound("no entry with that envelope digest")
        return found

    MAX_ENTRIES_PER_CALL = 10_000

    def entries(self, start: int, end: int) -> Iterator[StoredEntry]:
        size = self.store.tree_size()
        end = size if end == 0 else min(end, size)
        if start > end:
            raise OutOfRange(f"start {start} is beyond the tree size {size}")
        # A long range is cut short; the caller pages on from the last index it got.
        return self.store.iter_entries(start, min(end, start + self.MAX_ENTRIES_PER_CALL))

    def checkpoint(self) -> StoredCheckpoint:
        cp = self.store.latest_checkpoint()
        if cp is None:
            raise FailedPrecondition("the ledger is not initialised")
        return cp

    def _size_or_latest(self, size: int) -> int:
        return size or self.checkpoint().size

    def inclusion_proof(self, index: int, tree_size: int) -> tuple[int, list[bytes], bytes]:
        size = self._size_or_latest(tree_size)
        proof = self.store.inclusion_proof(index, size)
        return size, proof, self.entry(index).leaf_hash

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[int, list[bytes]]:
        size = self._size_or_latest(new_size)
        return size, self.store.consistency_proof(old_size, size)

    MAX_TIMELINE = 10_000

    def timeline(
        self, since_us: int | None, until_us: int | None, parties: Sequence[str], limit: int
    ) -> Iterator[tuple[StoredEntry, pb.IncidentReport, log_pb2.GeoFacts]]:
        for i, code in enumerate(parties):
            if code not in self.trust.parties:
                raise InvalidArgument(f"unknown party {code!r}", field=f"parties[{i}]")
        if since_us is not None and until_us is not None and since_us > until_us:
            raise InvalidArgument("since is after until", field="since")
        limit = min(limit or self.MAX_TIMELINE, self.MAX_TIMELINE)
        for stored, _row in self.store.timeline(
            since_us=since_us, until_us=until_us, parties=parties, limit=limit
        ):
            entry = parse_entry(stored.entry)
            envelope = dsse.Envelope.from_json(entry.envelope)
            report = pb.IncidentReport.FromString(envelope.payload)
            yield stored, report, entry.validation.geo
