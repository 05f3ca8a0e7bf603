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
from ledger import (
    context,
    dsse,
    duplicates,
    geofacts,
    incidents,
    investigations,
    judgment,
    merkle,
    rules,
    subjects,
)
from ledger.clock import to_us
from ledger.errors import LedgerError
from ledger.findings import FindingInfo
from ledger.incidents import IncidentInfo, Link, derive_status
from ledger.investigations import InvestigationInfo
from ledger.log_entry import GENESIS_PREVIOUS_HASH, leaf_builder, parse_entry
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
    subjects: dict[int, context.Subject] = field(default_factory=dict)
    links: dict[int, list[Link]] = field(default_factory=dict)
    # Every statement's identity (SHA-256 of its PAE) -> the entry that logged it.
    statements: dict[bytes, int] = field(default_factory=dict)

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

        def geo(report: pb.IncidentReport, state: TrustState) -> log_pb2.GeoFacts:
            return self._geo(index, report, state, recorded.geo)

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

    def _geo(
        self,
        index: int,
        report: pb.IncidentReport,
        state: TrustState,
        recorded: log_pb2.GeoFacts,
    ) -> log_pb2.GeoFacts:
        """The facts the judgment records for a place: recomputed on the data set in
        force (the recorded ones where they agree up to rounding), or, when its files are
        not at hand, the recorded ones as the log's signed claim."""
        info = state.dataset  # the data set in force at this index
        borders = self.borders.get(info.sha256)
        if borders is None and self.load_dataset is not None:
            borders = self.load_dataset(info)
            if borders is not None:
                self.borders[info.sha256] = borders
        if borders is None:
            return recorded if recorded.dataset_sha256 == info.sha256 else _cites(info.sha256)
        try:
            recomputed = geofacts.compute(report, borders, info)
        except LedgerError as e:
            raise VerificationError(f"geo facts: the place is not valid ({e})", index=index) from e
        self.geo_rechecked += 1
        return recorded if geofacts.same(recomputed, recorded) else recomputed


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
