"""The auditor's replay: check a ledger from its entries alone, trusting only the trust root.

Pure: no gRPC, no SQL. Feed it entries (from a server, a database or a bundle), then a
signed checkpoint. It uses the very authentication and authorization code the server
uses, so the two cannot disagree on what is admissible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import DecodeError

from geo.borders import BorderDataset
from ledger import dsse, duplicates, geofacts, incidents, investigations, merkle, rules, subjects
from ledger.clock import to_us
from ledger.errors import LedgerError
from ledger.findings import FindingInfo
from ledger.incidents import LIKELY_DUPLICATE, IncidentInfo, Link, derive_status
from ledger.investigations import InvestigationInfo
from ledger.log_entry import GENESIS_PREVIOUS_HASH, parse_entry
from ledger.note import Checkpoint, NoteError, NoteVerifier, open_note
from ledger.trust import DatasetInfo, TrustState


class VerificationError(Exception):
    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(f"entry {index}: {message}" if index is not None else message)
        self.index = index


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
    subjects: dict[int, subjects.Subject] = field(default_factory=dict)
    links: dict[int, list[Link]] = field(default_factory=dict)

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

    def add(self, index: int, data: bytes) -> None:
        """Check entry `index` (they must come in order, from 0) and take it in."""
        if index != self.size:
            raise VerificationError(f"expected entry {self.size} next", index=index)
        try:
            self._check(index, data)
        except VerificationError:
            raise
        except (LedgerError, dsse.EnvelopeError, DecodeError, ValueError) as e:
            raise VerificationError(str(e), index=index) from e
        self.leaf_hashes.append(merkle.leaf_hash(data))

    def _check(self, index: int, data: bytes) -> None:
        entry = parse_entry(data)
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
        envelope = dsse.Envelope.from_json(entry.envelope)
        if index == 0:
            self._check_trust_root(envelope, entry.envelope)
            return
        assert self.trust is not None
        # The very decision the server made at this index, on the state before it.
        admitted = rules.admit(self.trust, envelope, index, t, self.subjects.get)
        v = entry.validation
        if v.party != admitted.party:
            raise VerificationError("validation names another party", index=index)
        if list(v.signer_key_ids) != [k.key_id for k in admitted.signers]:
            raise VerificationError("validation lists other signers", index=index)
        statement = admitted.statement
        placed = geofacts.place_of(statement)
        if placed is not None:
            self._check_geo(index, placed, v.geo)
        followed = subjects.follow(
            statement,
            index,
            admitted.party,
            frozenset(v.signer_key_ids),
            hashlib.sha256(envelope.payload).hexdigest(),
            self.subjects.get,
            self.trust,
        )
        self.subjects.update(followed.subjects)
        links = list(followed.links)
        if isinstance(statement, pb.IncidentReport):
            new = duplicates.sighting(index, statement)
            earlier = self.sightings.candidates(new)
            expected = duplicates.as_facts(duplicates.likely_duplicates(new, earlier))
            if list(v.likely_duplicates) != expected:
                raise VerificationError(
                    "the likely duplicates recorded are not those of the entries before it",
                    index=index,
                )
            self.sightings.add(new)
            links += [Link(d.index, index, LIKELY_DUPLICATE) for d in expected]
        for link in links:
            self.links.setdefault(link.target, []).append(link)
        rules.advance(self.trust, admitted, index)

    def _check_trust_root(self, envelope: dsse.Envelope, raw: bytes) -> None:
        digest = hashlib.sha256(raw).hexdigest()
        if self.pinned_trust_root and digest != self.pinned_trust_root:
            raise VerificationError(
                f"trust root {digest} is not the pinned one {self.pinned_trust_root}", index=0
            )
        self.trust, self.trust_root_digest = rules.admit_trust_root(envelope), digest

    def _check_geo(self, index: int, report: pb.IncidentReport, geo: log_pb2.GeoFacts) -> None:
        assert self.trust is not None
        info = self.trust.dataset  # the data set in force at this index
        if geo.dataset_sha256 != info.sha256:
            raise VerificationError(
                f"geo facts cite data set {geo.dataset_sha256[:12]}, but "
                f"{info.sha256[:12]} was in force at this index",
                index=index,
            )
        borders = self.borders.get(info.sha256)
        if borders is None and self.load_dataset is not None:
            borders = self.load_dataset(info)
            if borders is not None:
                self.borders[info.sha256] = borders
        if borders is None:
            return  # the data set is not at hand: the facts stay as the log's signed claims
        try:
            recomputed = geofacts.compute(report, borders, info)
        except LedgerError as e:
            raise VerificationError(f"geo facts: the place is not valid ({e})", index=index) from e
        if not geofacts.same(recomputed, geo):
            raise VerificationError(
                f"geo facts differ from a recomputation on data set {info.sha256[:12]}: "
                f"recorded {geofacts.side(geo)} {geo.distance_to_border_m:.1f} m from "
                f"{geo.nearest_segment!r}, computed {geofacts.side(recomputed)} "
                f"{recomputed.distance_to_border_m:.1f} m from {recomputed.nearest_segment!r}",
                index=index,
            )
        self.geo_rechecked += 1


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
