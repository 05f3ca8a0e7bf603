"""Joint investigations: a request, the respondents' answers by a deadline, co-signed terms,
visits, evidence and findings. Pure: the server (rebuilding from its links) and the verifier
(replaying entries) fold the same statements into the same `InvestigationInfo`.

The deadline is judged by the log's clock: an answer integrated after it is refused, so
"unanswered" is final once the log's clock passes the deadline, and needs no entry.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from ledger.clock import to_us


@dataclass(frozen=True)
class Terms:
    """The terms in force: agreed at log index `index`."""

    index: int
    members: frozenset[str]
    sites: frozenset[str]
    vocabulary: frozenset[int]
    publication_rule: int


@dataclass(frozen=True)
class InvestigationInfo:
    index: int
    party: str
    incidents: tuple[int, ...]
    respondents: tuple[str, ...]
    answer_by_us: int
    # Party -> the log index of its answer.
    accepted: dict[str, int] = field(default_factory=dict)
    declined: dict[str, int] = field(default_factory=dict)
    terms: Terms | None = None
    # Log indexes of the finding drafts made in it.
    findings: tuple[int, ...] = ()
    # When the requester signed the request (its created_time, microseconds).
    requested_us: int = 0

    @property
    def parties(self) -> tuple[str, ...]:
        """The requester and the respondents: who co-signs the terms."""
        return (self.party, *self.respondents)

    @property
    def awaiting(self) -> list[str]:
        return [p for p in self.respondents if p not in self.accepted and p not in self.declined]

    @property
    def all_accepted(self) -> bool:
        return all(p in self.accepted for p in self.respondents)

    def answered(self, party: str) -> int | None:
        return self.accepted.get(party, self.declined.get(party))

    def past_deadline(self, as_of_us: int) -> bool:
        """Whether the log's clock `as_of_us` passed the deadline: an answer is refused
        from then on, so a respondent that has not answered left it unanswered."""
        return as_of_us > self.answer_by_us

    def status(
        self, as_of_us: int, jointly_attested: Collection[int] = ()
    ) -> api.InvestigationStatus.ValueType:
        """Its state at the log's clock `as_of_us`; `jointly_attested` holds the incidents
        that a jointly attested finding of this investigation covers."""
        if self.terms is not None:
            if set(self.incidents) <= set(jointly_attested):
                return api.INVESTIGATION_STATUS_CONCLUDED
            return api.INVESTIGATION_STATUS_UNDER_WAY
        if self.declined:
            return api.INVESTIGATION_STATUS_DECLINED
        if self.all_accepted:
            return api.INVESTIGATION_STATUS_ACCEPTED
        if self.past_deadline(as_of_us):
            return api.INVESTIGATION_STATUS_UNANSWERED
        return api.INVESTIGATION_STATUS_REQUESTED


def status_name(status: api.InvestigationStatus.ValueType) -> str:
    """e.g. "under_way", as the command line and audit summaries show it."""
    return api.InvestigationStatus.Name(status).removeprefix("INVESTIGATION_STATUS_").lower()


def from_request(index: int, request: pb.InvestigationRequest) -> InvestigationInfo:
    return InvestigationInfo(
        index,
        request.party,
        tuple(request.incident_indexes),
        tuple(request.respondents),
        to_us(request.answer_by),
        requested_us=to_us(request.created_time),
    )


def follow(info: InvestigationInfo, statement: object, index: int) -> InvestigationInfo:
    """The investigation after an admitted statement about it at `index`."""
    if isinstance(statement, pb.InvestigationResponse):
        if statement.decision == pb.INVESTIGATION_DECISION_ACCEPT:
            return replace(info, accepted={**info.accepted, statement.party: index})
        return replace(info, declined={**info.declined, statement.party: index})
    if isinstance(statement, pb.InvestigationTerms):
        terms = Terms(
            index,
            frozenset(statement.member_key_ids),
            frozenset(s.name for s in statement.sites),
            frozenset(statement.outcome_vocabulary),
            statement.publication_rule,
        )
        return replace(info, terms=terms)
    if isinstance(statement, pb.FindingDraft):
        return replace(info, findings=(*info.findings, index))
    return info  # visits and evidence change nothing it decides on
