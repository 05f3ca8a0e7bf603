"""What an admitted entry changes in the things statements name by log index (incidents,
findings, investigations, notices and hotline messages), and the links that make up their
dossiers: one function per kind (`ledger/kinds.py` says which), run by the judgment for the
server's writer and for the verifier's replay alike, so their dossiers and statuses cannot
drift. The server also folds them over an entry's stored links to rebuild a subject
(`judgment.rebuild`). A subject cache for the server's writer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import findings, investigations, messages
from ledger.context import Context, Lookup, Subject
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

# An attestation link's response when that attestation met the finding's policy.
MET = 1


@dataclass(frozen=True)
class Followed:
    # New or changed subjects, by their log index.
    subjects: dict[int, Subject] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)


# What each kind changes (`ledger/kinds.py` says which applies), judged at entry
# `ctx.index`: the subject it opens, the subjects it changes, the links it adds. Likely
# duplicates are linked by the judgment, which knows the sightings.


def incident_opened(_report: pb.IncidentReport, ctx: Context) -> Followed:
    return Followed({ctx.index: IncidentInfo(ctx.index, ctx.party)})


def linked_to_incident(
    statement: pb.IncidentAmendment | pb.IncidentRetraction | pb.CounterClaim, ctx: Context
) -> Followed:
    link = link_of(statement, ctx.index)
    assert link is not None
    out = Followed(links=[link])
    incident = ctx.lookup(link.target)
    if link.relation == RETRACTION and isinstance(incident, IncidentInfo):
        out.subjects[link.target] = replace(incident, retracted_at=ctx.index)
    return out


def evidence_linked(record: pb.EvidenceRecord, ctx: Context) -> Followed:
    out = Followed()
    if record.incident_index:
        out.links.append(Link(record.incident_index, ctx.index, EVIDENCE_LINK))
    if record.investigation_index:
        out.links.append(Link(record.investigation_index, ctx.index, EVIDENCE_LINK))
    return out


def finding_opened(draft: pb.FindingDraft, ctx: Context) -> Followed:
    out = Followed({ctx.index: findings.from_draft(ctx.index, ctx.payload_sha256, draft)})
    out.links.extend(Link(i, ctx.index, FINDING, draft.outcome) for i in draft.incident_indexes)
    if draft.investigation_index:
        _about(out, draft.investigation_index, FINDING, 0, draft, ctx)
    return out


def finding_answered(statement: pb.Attestation | pb.Dissent, ctx: Context) -> Followed:
    before = ctx.lookup(statement.finding_index)
    assert isinstance(before, FindingInfo)  # its rule checked it
    out = Followed()
    if isinstance(statement, pb.Dissent):
        out.subjects[before.index] = findings.dissent(before, ctx.index, statement.party)
        out.links.append(Link(before.index, ctx.index, DISSENT))
        out.links.extend(Link(i, ctx.index, DISSENT) for i in before.incidents)
        return out
    found = findings.attest(before, ctx.index, statement.party, ctx.signer_ids, ctx.meets)
    out.subjects[before.index] = found
    met_here = found.attested_at == ctx.index
    out.links.append(Link(before.index, ctx.index, ATTESTATION, MET if met_here else 0))
    if met_here:
        out.links.extend(Link(i, ctx.index, JOINT_FINDING, found.outcome) for i in found.incidents)
        for i in found.incidents:
            incident = ctx.lookup(i)
            if isinstance(incident, IncidentInfo) and incident.jointly_found_at is None:
                out.subjects[i] = replace(incident, jointly_found_at=ctx.index)
    return out


def investigation_opened(request: pb.InvestigationRequest, ctx: Context) -> Followed:
    out = Followed({ctx.index: investigations.from_request(ctx.index, request)})
    out.links.extend(Link(i, ctx.index, INVESTIGATION_REQUEST) for i in request.incident_indexes)
    return out


def investigation_answered(response: pb.InvestigationResponse, ctx: Context) -> Followed:
    out = Followed()
    target = response.investigation_index
    after = _about(out, target, RESPONSE, response.decision, response, ctx)
    if after.all_accepted and response.decision == pb.INVESTIGATION_DECISION_ACCEPT:
        out.links.extend(Link(i, ctx.index, INVESTIGATION_ACCEPTED) for i in after.incidents)
    return out


def about_investigation(
    statement: pb.InvestigationTerms | pb.VisitRecord, ctx: Context
) -> Followed:
    out = Followed()
    if isinstance(statement, pb.VisitRecord):
        _about(out, statement.investigation_index, VISIT, statement.outcome, statement, ctx)
    else:
        _about(out, statement.investigation_index, TERMS, 0, statement, ctx)
    return out


def message_opened(statement: pb.AdvanceNotice | pb.HotlineMessage, ctx: Context) -> Followed:
    out = Followed({ctx.index: messages.from_statement(ctx.index, statement)})
    if isinstance(statement, pb.HotlineMessage) and statement.in_reply_to:
        out.links.append(Link(statement.in_reply_to, ctx.index, REPLY))
    return out


def acknowledged(ack: pb.Acknowledgement, ctx: Context) -> Followed:
    message = ctx.lookup(ack.entry_index)
    assert isinstance(message, MessageInfo)  # its rule checked it
    return Followed(
        {message.index: messages.acknowledge(message, ctx.index, ack.party)},
        [Link(message.index, ctx.index, ACKNOWLEDGEMENT)],
    )


def _about(
    out: Followed,
    target: int,
    relation: str,
    response: int,
    statement: Message,
    ctx: Context,
) -> InvestigationInfo:
    """Link an entry to its investigation and record the investigation's new state."""
    before = out.subjects.get(target) or ctx.lookup(target)
    assert isinstance(before, InvestigationInfo)  # its rule checked it
    after = investigations.follow(before, statement, ctx.index)
    out.subjects[target] = after
    out.links.append(Link(target, ctx.index, relation, response))
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
