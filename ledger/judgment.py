"""The one judgment of an entry: what the log records for envelope `index`, or the refusal.

`judge` is pure. The server's writer calls it at the index it assigns, on the state after
the entries before it, and writes what it returns: the entry's validation facts, the links
that make up dossiers, and the subjects it changes. The auditor's replay calls it at the
same index on the state it rebuilt from the entries alone, and compares the whole recorded
entry with the one the judgment gives, byte for byte, for every kind: a fact the judgment
would not record is as much a forgery as a changed one.

What each statement kind may say and what it changes is declared in `ledger/kinds.py`;
this module applies it in one order for every kind. Only geo facts depend on something
outside the log (the border data set's files): the caller says how to get them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import duplicates, findings, statements
from ledger.authz import authenticate, authorize
from ledger.context import Context, Lookup, Subject
from ledger.errors import AlreadyExists, InvalidArgument, shown
from ledger.formats import dsse
from ledger.formats.log_entry import leaf_builder
from ledger.incidents import LIKELY_DUPLICATE, Link
from ledger.kinds import KINDS, Kind
from ledger.subjects import MET, Followed
from ledger.trust import KeyInfo, TrustState

# The geo facts of a place, on the data set in force in `state`.
GeoSource = Callable[[pb.IncidentReport, TrustState], log_pb2.GeoFacts]
# Earlier incident reports that may be likely duplicates of a new one, newest first.
Candidates = Callable[[duplicates.Sighting], Iterable[duplicates.Sighting]]


@dataclass(frozen=True)
class Admitted:
    kind: Kind[Any]
    statement: Message
    party: str
    signers: tuple[KeyInfo, ...]
    context: Context


def payload_digest(envelope: dsse.Envelope) -> str:
    """What attestations name: the SHA-256 of a draft's exact payload bytes."""
    return hashlib.sha256(envelope.payload).hexdigest()


def admit(
    state: TrustState, envelope: dsse.Envelope, index: int, now_us: int, lookup: Lookup
) -> Admitted:
    """May this envelope become entry `index`? Raise the LedgerError that refuses it.
    `state` and the subjects `lookup` gives (as they stood before) are not changed."""
    kind = KINDS.get(envelope.payload_type)
    if kind is None:
        raise InvalidArgument(
            f"{shown(envelope.payload_type)} is not a statement kind this ledger accepts",
            field="payloadType",
        )
    statement = statements.decode(envelope.payload_type, envelope.payload, statements.SUBMITTABLE)
    judged_on, introduced = state, {}
    if kind.signed_by_new_keys:
        # The statement brings the keys that sign it: judge on the state that has them.
        assert kind.advance is not None
        judged_on = state.copy()
        kind.advance(judged_on, statement, index)
        introduced = {k: v for k, v in judged_on.keys.items() if k not in state.keys}
    signers = tuple(authenticate(envelope, state, index, introduced))
    statements.check_freshness(statement, state, now_us)
    kind.fields(statement, state, now_us)
    party = authorize(kind.signers, kind.name, statement, list(signers), judged_on)
    context = Context(
        state, index, now_us, party, signers, frozenset(k.key_id for k in signers), lookup,
        payload_digest(envelope), meets=lambda finding: findings.met(finding, state),
    )  # fmt: skip
    kind.names(statement, context)
    return Admitted(kind, statement, party, signers, context)


@dataclass(frozen=True)
class Judgment:
    admitted: Admitted
    validation: log_pb2.Validation
    links: list[Link] = field(default_factory=list)
    # New or changed subjects (incidents, findings, investigations, messages), by index.
    subjects: dict[int, Subject] = field(default_factory=dict)
    # An incident report's place and time, for later reports' duplicate search.
    sighting: duplicates.Sighting | None = None

    @property
    def statement(self) -> Message:
        return self.admitted.statement

    def leaf(self, envelope_json: bytes, index: int, previous: bytes, time_us: int) -> bytes:
        """The entry's bytes: the Merkle leaf."""
        return leaf_builder(envelope_json, self.validation)(index, previous, time_us)


def judge(
    state: TrustState,
    envelope: dsse.Envelope,
    index: int,
    now_us: int,
    lookup: Lookup,
    geo: GeoSource,
    candidates: Candidates,
) -> Judgment:
    """Decide entry `index`: what the log records for it, or the refusal (raised)."""
    admitted = admit(state, envelope, index, now_us, lookup)
    kind, statement = admitted.kind, admitted.statement
    signers = [k.key_id for k in admitted.signers]
    validation = log_pb2.Validation(party=admitted.party, signer_key_ids=signers)
    if kind.place is not None:
        validation.geo.CopyFrom(geo(kind.place(statement), state))
    followed = kind.changes(statement, admitted.context)
    links = list(followed.links)
    sighting = None
    if isinstance(statement, pb.IncidentReport):
        sighting = duplicates.sighting(index, statement)
        found = duplicates.likely_duplicates(sighting, candidates(sighting))
        validation.likely_duplicates.extend(duplicates.as_facts(found))
        links += [Link(earlier, index, LIKELY_DUPLICATE) for earlier, _ in found]
    return Judgment(admitted, validation, links, followed.subjects, sighting)


def advance(state: TrustState, admitted: Admitted, index: int) -> None:
    """Apply an admitted entry's effect on who holds which key and which border data set
    is in force."""
    if admitted.kind.advance is not None:
        admitted.kind.advance(state, admitted.statement, index)


def rebuild(
    index: int,
    envelope: dsse.Envelope,
    linked: Iterable[tuple[Link, dsse.Envelope, frozenset[str]]],
    state: TrustState,
) -> Subject | None:
    """The subject an entry opened, after the entries linked to it (in log order, each
    with its stored link and signers), without replaying the log: each kind's changes
    applied in turn, an attestation meeting the policy where its stored link says so."""
    subject: Subject | None = None

    def follow(at: int, said: dsse.Envelope, signer_ids: frozenset[str], met: bool) -> None:
        nonlocal subject
        kind = KINDS.get(said.payload_type)
        if kind is None:
            return
        statement = statements.decode(said.payload_type, said.payload)
        context = Context(
            state, at, 0, getattr(statement, "party", ""), (), signer_ids,
            lambda i: subject if i == index else None, payload_digest(said),
            meets=lambda _finding: met,
        )  # fmt: skip
        followed: Followed = kind.changes(statement, context)
        subject = followed.subjects.get(index, subject)

    follow(index, envelope, frozenset(), False)
    if subject is None:
        return None
    for link, said, signer_ids in linked:
        follow(link.index, said, signer_ids, link.response == MET)
    return subject


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
