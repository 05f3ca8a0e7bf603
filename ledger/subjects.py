"""What an admitted entry changes in the things statements name by log index (incidents,
findings, investigations, notices and hotline messages) and the links that make up their
dossiers.

`follow` is the one account of it, used by the server's writer at the entry's index and by
the verifier replaying that index, so their dossiers and statuses cannot drift. `rebuild`
gives the server a subject back from its stored links without replaying the log.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import findings, investigations, messages
from ledger.findings import FindingInfo
from ledger.incidents import (
    ACKNOWLEDGEMENT,
    ATTESTATION,
    DISSENT,
    FINDING,
    INVESTIGATION_ACCEPTED,
    INVESTIGATION_REQUEST,
    JOINT_FINDING,
    REPLY,
    RESPONSE,
    RETRACTION,
    TERMS,
    VISIT,
    IncidentInfo,
    Link,
    link_of,
)
from ledger.incidents import EVIDENCE as EVIDENCE_LINK
from ledger.investigations import InvestigationInfo
from ledger.messages import MessageInfo
from ledger.trust import TrustState

Subject = IncidentInfo | FindingInfo | InvestigationInfo | MessageInfo
# The subject at a log index as of the entries before the one being judged (None: none).
Lookup = Callable[[int], Subject | None]
# An attestation link's response when that attestation met the finding's policy.
MET = 1


def nothing(_index: int) -> Subject | None:
    return None


@dataclass(frozen=True)
class Followed:
    # New or changed subjects, by their log index.
    subjects: dict[int, Subject] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)


def start(index: int, statement: Message, draft_sha256: str) -> Subject | None:
    """The subject an entry opens, if it opens one."""
    if isinstance(statement, pb.FindingDraft):
        return findings.from_draft(index, draft_sha256, statement)
    if isinstance(statement, pb.InvestigationRequest):
        return investigations.from_request(index, statement)
    if isinstance(statement, pb.AdvanceNotice | pb.HotlineMessage):
        return messages.from_statement(index, statement)
    return None


def apply(subject: Subject, link: Link, statement: Message, key_ids: frozenset[str]) -> Subject:
    """`subject` after the linked entry `statement`, as its stored link records it."""
    return _apply(subject, link.index, statement, key_ids, lambda _f: link.response == MET)


def _apply(
    subject: Subject,
    index: int,
    statement: Message,
    key_ids: frozenset[str],
    meets: Callable[[FindingInfo], bool],
) -> Subject:
    if isinstance(subject, FindingInfo):
        if isinstance(statement, pb.Attestation):
            return findings.attest(subject, index, statement.party, key_ids, meets)
        if isinstance(statement, pb.Dissent):
            return findings.dissent(subject, index, statement.party)
    if isinstance(subject, InvestigationInfo):
        return investigations.follow(subject, statement, index)
    if isinstance(subject, MessageInfo) and isinstance(statement, pb.Acknowledgement):
        return messages.acknowledge(subject, index, statement.party)
    return subject


def rebuild(
    index: int,
    statement: Message,
    draft_sha256: str,
    linked: Iterable[tuple[Link, Message, frozenset[str]]],
) -> Subject | None:
    """A subject from its own entry and the entries linked to it, in log order."""
    subject = start(index, statement, draft_sha256)
    if subject is None:
        return None
    for link, said, key_ids in linked:
        subject = apply(subject, link, said, key_ids)
    return subject


def follow(
    statement: Message,
    index: int,
    party: str,
    key_ids: frozenset[str],
    draft_sha256: str,
    lookup: Lookup,
    state: TrustState,
) -> Followed:
    """What admitted entry `index` changes, judged on the state at that index. (Likely
    duplicates are linked by the caller, which knows the sightings.)"""
    out = Followed()
    opened = start(index, statement, draft_sha256)
    if opened is not None:
        out.subjects[index] = opened
    if isinstance(statement, pb.IncidentReport):
        out.subjects[index] = IncidentInfo(index, party)
    elif isinstance(statement, pb.IncidentAmendment | pb.IncidentRetraction | pb.CounterClaim):
        link = link_of(statement, index)
        assert link is not None
        out.links.append(link)
        incident = lookup(link.target)
        if link.relation == RETRACTION and isinstance(incident, IncidentInfo):
            out.subjects[link.target] = replace(incident, retracted_at=index)
    elif isinstance(statement, pb.EvidenceRecord):
        if statement.incident_index:
            out.links.append(Link(statement.incident_index, index, EVIDENCE_LINK))
        if statement.investigation_index:
            out.links.append(Link(statement.investigation_index, index, EVIDENCE_LINK))
    elif isinstance(statement, pb.FindingDraft):
        out.links.extend(
            Link(i, index, FINDING, statement.outcome) for i in statement.incident_indexes
        )
        if statement.investigation_index:
            _about(out, statement.investigation_index, index, FINDING, 0, statement, lookup)
    elif isinstance(statement, pb.Attestation | pb.Dissent):
        before = lookup(statement.finding_index)
        assert isinstance(before, FindingInfo)  # admit checked it
        found = _apply(before, index, statement, key_ids, lambda f: findings.met(f, state))
        assert isinstance(found, FindingInfo)
        out.subjects[before.index] = found
        if isinstance(statement, pb.Dissent):
            out.links.append(Link(before.index, index, DISSENT))
            out.links.extend(Link(i, index, DISSENT) for i in before.incidents)
        else:
            met_here = found.attested_at == index
            out.links.append(Link(before.index, index, ATTESTATION, MET if met_here else 0))
            if met_here:
                outcome = found.outcome
                out.links.extend(Link(i, index, JOINT_FINDING, outcome) for i in found.incidents)
                for i in found.incidents:
                    incident = lookup(i)
                    if isinstance(incident, IncidentInfo) and incident.jointly_found_at is None:
                        out.subjects[i] = replace(incident, jointly_found_at=index)
    elif isinstance(statement, pb.InvestigationRequest):
        out.links.extend(Link(i, index, INVESTIGATION_REQUEST) for i in statement.incident_indexes)
    elif isinstance(statement, pb.InvestigationResponse):
        after = _about(
            out, statement.investigation_index, index, RESPONSE, statement.decision,
            statement, lookup,
        )  # fmt: skip
        if after.all_accepted and statement.decision == pb.INVESTIGATION_DECISION_ACCEPT:
            out.links.extend(Link(i, index, INVESTIGATION_ACCEPTED) for i in after.incidents)
    elif isinstance(statement, pb.InvestigationTerms):
        _about(out, statement.investigation_index, index, TERMS, 0, statement, lookup)
    elif isinstance(statement, pb.VisitRecord):
        outcome = statement.outcome
        _about(out, statement.investigation_index, index, VISIT, outcome, statement, lookup)
    elif isinstance(statement, pb.HotlineMessage) and statement.in_reply_to:
        out.links.append(Link(statement.in_reply_to, index, REPLY))
    elif isinstance(statement, pb.Acknowledgement):
        message = lookup(statement.entry_index)
        assert isinstance(message, MessageInfo)  # admit checked it
        out.subjects[message.index] = messages.acknowledge(message, index, party)
        out.links.append(Link(message.index, index, ACKNOWLEDGEMENT))
    return out


def _about(
    out: Followed,
    target: int,
    index: int,
    relation: str,
    response: int,
    statement: Message,
    lookup: Lookup,
) -> InvestigationInfo:
    """Link an entry to its investigation and record the investigation's new state."""
    before = out.subjects.get(target) or lookup(target)
    assert isinstance(before, InvestigationInfo)  # admit checked it
    after = investigations.follow(before, statement, index)
    out.subjects[target] = after
    out.links.append(Link(target, index, relation, response))
    return after


def jointly_attested(info: InvestigationInfo, lookup: Lookup) -> set[int]:
    """The incidents that a jointly attested finding of the investigation covers."""
    covered: set[int] = set()
    for f in info.findings:
        finding = lookup(f)
        if isinstance(finding, FindingInfo) and finding.attested_at is not None:
            covered.update(finding.incidents)
    return covered


def investigation_status(
    info: InvestigationInfo, as_of_us: int, lookup: Lookup
) -> api.InvestigationStatus.ValueType:
    return info.status(as_of_us, jointly_attested(info, lookup))


class Cache:
    """The newest committed state of recently used subjects, so that judging a statement
    about a long-running investigation does not re-read its whole history.

    Only the ledger's writer fills it (with what it read under the writer's lock, and with
    each batch once committed), so a reader racing a commit never stores a stale subject.
    Cleared when another writer's entries are found. Bounded: least recently used first out.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._items: OrderedDict[int, Subject] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, index: int) -> Subject | None:
        with self._lock:
            found = self._items.get(index)
            if found is not None:
                self._items.move_to_end(index)
            return found

    def update(self, subjects: Mapping[int, Subject]) -> None:
        with self._lock:
            for index, subject in subjects.items():
                self._items[index] = subject
                self._items.move_to_end(index)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
