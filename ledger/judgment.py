"""The one judgment of an entry: what the log records for envelope `index`, or the refusal.

`judge` is pure. The server's writer calls it at the index it assigns, on the state after
the entries before it, and writes what it returns: the entry's validation facts, the links
that make up dossiers, and the subjects it changes. The auditor's replay calls it at the
same index on the state it rebuilt from the entries alone, and compares the whole recorded
entry with the one the judgment gives (`expected_leaf`), byte for byte, for every kind: a
fact the judgment would not record is as much a forgery as a changed one.

Only geo facts depend on something outside the log (the border data set's files): the
caller says how to get them (`GeoSource`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import dsse, duplicates, geofacts, rules, subjects
from ledger.errors import AlreadyExists
from ledger.incidents import LIKELY_DUPLICATE, Link
from ledger.log_entry import leaf_builder
from ledger.trust import TrustState

# The geo facts of a place, on the data set in force in `state`.
GeoSource = Callable[[pb.IncidentReport, TrustState], log_pb2.GeoFacts]
# Earlier incident reports that may be likely duplicates of a new one, newest first.
Candidates = Callable[[duplicates.Sighting], Iterable[duplicates.Sighting]]


@dataclass(frozen=True)
class Judgment:
    admitted: rules.Admitted
    validation: log_pb2.Validation
    links: list[Link] = field(default_factory=list)
    # New or changed subjects (incidents, findings, investigations, messages), by index.
    subjects: dict[int, subjects.Subject] = field(default_factory=dict)
    # An incident report's place and time, for later reports' duplicate search.
    sighting: duplicates.Sighting | None = None

    @property
    def statement(self) -> Message:
        return self.admitted.statement

    def leaf(self, envelope_json: bytes, index: int, previous: bytes, time_us: int) -> bytes:
        """The entry's bytes: the Merkle leaf."""
        return leaf_builder(envelope_json, self.validation)(index, previous, time_us)


def draft_digest(envelope: dsse.Envelope) -> str:
    """What attestations name: the SHA-256 of the draft's exact payload bytes."""
    return hashlib.sha256(envelope.payload).hexdigest()


def judge(
    state: TrustState,
    envelope: dsse.Envelope,
    index: int,
    now_us: int,
    lookup: subjects.Lookup,
    geo: GeoSource,
    candidates: Candidates,
) -> Judgment:
    """Decide entry `index`; raise the LedgerError that refuses it. `state` and the
    subjects `lookup` gives are not changed (see `advance`)."""
    admitted = rules.admit(state, envelope, index, now_us, lookup)
    statement = admitted.statement
    signers = [k.key_id for k in admitted.signers]
    validation = log_pb2.Validation(party=admitted.party, signer_key_ids=signers)
    placed = geofacts.place_of(statement)
    if placed is not None:
        validation.geo.CopyFrom(geo(placed, state))
    followed = subjects.follow(
        statement,
        index,
        admitted.party,
        frozenset(signers),
        draft_digest(envelope),
        lookup,
        state,
    )
    links = list(followed.links)
    sighting = None
    if isinstance(statement, pb.IncidentReport):
        sighting = duplicates.sighting(index, statement)
        found = duplicates.likely_duplicates(sighting, candidates(sighting))
        validation.likely_duplicates.extend(duplicates.as_facts(found))
        links += [Link(earlier, index, LIKELY_DUPLICATE) for earlier, _ in found]
    return Judgment(admitted, validation, links, followed.subjects, sighting)


def resubmitted(logged: dsse.Envelope, index: int, envelope: dsse.Envelope) -> None:
    """A statement already logged as entry `index` arrives again (however spelt): it
    adds nothing. With the same signers its first receipt stands (return); with more or
    other signatures it is refused, naming the entry, because a statement is logged once,
    with the signatures it first came with."""
    if logged.signer_key_ids() != envelope.signer_key_ids():
        raise AlreadyExists(
            f"this signed statement is entry {index}, logged with the signatures of "
            f"{', '.join(k[:16] + '...' for k in sorted(logged.signer_key_ids()))}; it is "
            "logged once, with the signatures it first came with",
            field="signatures",
        )


def advance(state: TrustState, judgment: Judgment, index: int) -> None:
    """Apply an admitted entry's effect on the key state (who holds which key, which
    border data set is in force)."""
    rules.advance(state, judgment.admitted, index)
