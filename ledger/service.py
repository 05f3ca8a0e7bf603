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
from ledger import dsse, statements
from ledger.authz import authenticate, authorize
from ledger.clock import now_us, to_timestamp, to_us
from ledger.errors import (
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
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
from ledger.trust import Trust

log = logging.getLogger(__name__)

# A leaf is at most 65,535 bytes (the tlog-tiles limit); the envelope must leave room for
# the entry's own fields and validation results.
MAX_LEAF_BYTES = 65_535
MAX_ENVELOPE_BYTES = 60_000
# Index, time and chain link take at most this much of a serialized entry.
ENTRY_FIELDS_MAX_BYTES = 64
SUBMIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Accepted:
    signed_receipt: bytes
    receipt: log_pb2.Receipt
    duplicate: bool


def read_trust_root(store: LedgerStore) -> tuple[Trust, StoredEntry]:
    first = store.get_entry(0)
    if first is None:
        raise FailedPrecondition("the ledger is not initialised; run `ceasefire init` first")
    envelope = dsse.Envelope.from_json(parse_entry(first.entry).envelope)
    root = statements.decode(envelope.payload_type, envelope.payload)
    if not isinstance(root, pb.TrustRoot):
        raise Corrupt("entry 0 is not a trust root")
    return Trust.from_trust_root(root), first


def initialize(store: LedgerStore, root: pb.TrustRoot, log_key: LogKey) -> StoredEntry:
    """Write the trust root as entry 0, signed by the log key."""
    trust = Trust.from_trust_root(root)
    if trust.log_public_key != log_key.public_key or trust.origin != log_key.origin:
        raise InvalidArgument("does not name this log key and origin", field="log_public_key")
    if store.tree_size() != 0:
        raise FailedPrecondition("this ledger already has entries; a trust root comes first")
    envelope = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), [log_key.signing_key])
    data = envelope.to_json()
    (appended,) = store.append(
        [NewEntry(hashlib.sha256(data).digest(), leaf_builder(data, log_pb2.Validation()))],
        clock_us=now_us,
        sign_checkpoint=log_key.sign_checkpoint,
    )
    return appended.entry


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
        self.trust, _ = read_trust_root(store)
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

    def close(self) -> None:
        self.sequencer.close()

    def _append(self, items: Sequence[NewEntry]) -> list[Appended]:
        return self.store.append(
            items, clock_us=self.clock_us, sign_checkpoint=self.log_key.sign_checkpoint
        )

    # -- writing -------------------------------------------------------------------------

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
        try:
            envelope = dsse.Envelope.from_json(envelope_bytes, max_size=MAX_ENVELOPE_BYTES)
        except dsse.EnvelopeError as e:
            raise InvalidArgument(e.problem, field=e.field or "envelope") from e
        if envelope.payload_type not in statements.SUBMITTABLE:
            raise InvalidArgument(
                f"{envelope.payload_type!r} is not a statement kind this ledger accepts",
                field="payloadType",
            )
        signers = authenticate(envelope, self.trust)
        report = statements.decode(envelope.payload_type, envelope.payload, statements.SUBMITTABLE)
        assert isinstance(report, pb.IncidentReport)
        statements.validate_incident(report, self.trust, self.clock_us())
        authorize(envelope.payload_type, report.reporting_party, signers, self.trust)
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
        validation = log_pb2.Validation(
            party=report.reporting_party,
            signer_key_ids=[k.key_id for k in signers],
            geo=geo,
        )
        if len(envelope_bytes) + validation.ByteSize() + ENTRY_FIELDS_MAX_BYTES > MAX_LEAF_BYTES:
            raise InvalidArgument(
                f"the entry would exceed {MAX_LEAF_BYTES} bytes", field="envelope"
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
        future = self.sequencer.submit(
            NewEntry(digest, leaf_builder(envelope_bytes, validation), incident)
        )
        try:
            return self._accepted(future.result(timeout=SUBMIT_TIMEOUT_S))
        except FutureTimeout:
            # It may still commit: a retry of the same envelope then gets its receipt.
            raise Overloaded(
                f"not committed within {SUBMIT_TIMEOUT_S:.0f} s; retry the same envelope, "
                "it is never logged twice",
                retry_after_s=5.0,
            ) from None

    def _accepted(self, appended: Appended) -> Accepted:
        e = appended.entry
        receipt = log_pb2.Receipt(
            origin=self.trust.origin,
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
