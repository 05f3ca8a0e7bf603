"""Every statement kind a client may submit, declared once: its message, who may sign it,
its field rules, which earlier entries it may name and how they must stand, what it
changes in them, the place that gets geo facts, and its effect on who holds which key.

The judgment (`ledger/judgment.py`) reads this table for the server and the auditor
alike; docs/authorization.md shows the same rules for people.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import rules, statements, subjects
from ledger.authz import ATTESTERS, AUTHORITIES, AUTHORS, INVESTIGATORS, REPORTERS, Rule
from ledger.context import Context
from ledger.trust import TrustState

M = TypeVar("M", bound=Message)


def _names_nothing(_statement: Any, _ctx: Context) -> None:
    return None


def _changes_nothing(_statement: Any, _ctx: Context) -> subjects.Followed:
    return subjects.Followed()


@dataclass(frozen=True)
class Kind(Generic[M]):
    message: type[M]
    # Who may sign it: the party it speaks for, the roles, a threshold or a consent policy.
    signers: Rule
    # Its own fields (InvalidArgument naming the field), on the key state and log clock.
    fields: Callable[[M, TrustState, int], None]
    # The earlier entries it names, and how they must stand; raises to refuse.
    names: Callable[[M, Context], None] = _names_nothing
    # The subject it opens, the subjects it changes and the dossier links it adds.
    changes: Callable[[M, Context], subjects.Followed] = _changes_nothing
    # The place that gets geo facts on the border data set in force.
    place: Callable[[M], pb.IncidentReport] | None = None
    # Its effect on who holds which key, or on the border data set in force.
    advance: Callable[[TrustState, M, int], None] | None = None
    # Signed by keys it introduces itself (a party's admission, by the new party's keys).
    signed_by_new_keys: bool = False

    @property
    def payload_type(self) -> str:
        return statements.payload_type(self.message)

    @property
    def name(self) -> str:
        return self.message.DESCRIPTOR.name


def _amended_place(amendment: pb.IncidentAmendment) -> pb.IncidentReport:
    return amendment.corrected


def _notice_place(notice: pb.AdvanceNotice) -> pb.IncidentReport:
    return pb.IncidentReport(location=notice.location)


def _report_place(report: pb.IncidentReport) -> pb.IncidentReport:
    return report


_DECLARED: list[Kind[Any]] = [
    Kind(
        pb.IncidentReport, Rule("reporting_party", REPORTERS), statements.validate_incident,
        changes=subjects.incident_opened, place=_report_place,
    ),
    Kind(
        pb.KeyChange, Rule("party", AUTHORITIES, authority_threshold=True),
        statements.validate_key_change, names=rules.key_change_applies,
        advance=TrustState.apply_key_change,
    ),
    Kind(
        pb.PartyAdmission,
        Rule("party.code", None, authority_threshold=True, consent=lambda s: s.admission_policy),
        statements.validate_admission, advance=TrustState.apply_admission,
        signed_by_new_keys=True,
    ),
    Kind(
        pb.BorderDatasetRegistration, Rule("", None, consent=lambda s: s.border_policy),
        statements.validate_border_dataset, advance=TrustState.apply_border_dataset,
    ),
    # Only the reporting party amends or retracts its report; other parties' authorities
    # answer it.
    Kind(
        pb.IncidentAmendment, Rule("party", AUTHORS), statements.validate_amendment,
        names=rules.amends_or_retracts, changes=subjects.linked_to_incident,
        place=_amended_place,
    ),
    Kind(
        pb.IncidentRetraction, Rule("party", AUTHORS), statements.validate_retraction,
        names=rules.amends_or_retracts, changes=subjects.linked_to_incident,
    ),
    Kind(
        pb.CounterClaim, Rule("party", AUTHORITIES), statements.validate_counter_claim,
        names=rules.answers_incident, changes=subjects.linked_to_incident,
    ),
    Kind(
        pb.EvidenceRecord, Rule("party", INVESTIGATORS), statements.validate_evidence,
        names=rules.evidence_names, changes=subjects.evidence_linked,
    ),
    # Findings: drafted by a party's investigators, authorities or observers (in an
    # investigation, by its members only); attested or dissented by the parties the
    # finding's policy names, each with what the policy asks of it.
    Kind(
        pb.FindingDraft, Rule("party", ATTESTERS | {pb.ROLE_INVESTIGATOR}),
        statements.validate_finding, names=rules.finding_draft_names,
        changes=subjects.finding_opened,
    ),
    Kind(
        pb.Attestation, Rule("party", ATTESTERS), statements.validate_attestation,
        names=rules.speaks_on_finding, changes=subjects.finding_answered,
    ),
    Kind(
        pb.Dissent, Rule("party", ATTESTERS), statements.validate_dissent,
        names=rules.speaks_on_finding, changes=subjects.finding_answered,
    ),
    # Investigations: requested by a party's authorities or observers; each respondent
    # answers once with its authority threshold; the terms are co-signed by the authority
    # threshold of the requester and of every respondent; visits by member keys only.
    Kind(
        pb.InvestigationRequest, Rule("party", ATTESTERS),
        statements.validate_investigation_request, names=rules.request_names,
        changes=subjects.investigation_opened,
    ),
    Kind(
        pb.InvestigationResponse, Rule("party", AUTHORITIES, authority_threshold=True),
        statements.validate_response, names=rules.response_names,
        changes=subjects.investigation_answered,
    ),
    Kind(
        pb.InvestigationTerms, Rule("", None), statements.validate_terms,
        names=rules.terms_names, changes=subjects.about_investigation,
    ),
    Kind(
        pb.VisitRecord, Rule("party", INVESTIGATORS), statements.validate_visit,
        names=rules.visit_names, changes=subjects.about_investigation,
    ),
    # Prevention: notices from a party's authorities; hotline messages and
    # acknowledgements from its monitors, observers or authorities.
    Kind(
        pb.AdvanceNotice, Rule("party", AUTHORITIES), statements.validate_notice,
        changes=subjects.message_opened, place=_notice_place,
    ),
    Kind(
        pb.HotlineMessage, Rule("party", AUTHORS), statements.validate_hotline,
        names=rules.reply_names, changes=subjects.message_opened,
    ),
    Kind(
        pb.Acknowledgement, Rule("party", AUTHORS), statements.validate_acknowledgement,
        names=rules.acknowledgement_names, changes=subjects.acknowledged,
    ),
]  # fmt: skip

KINDS: dict[str, Kind[Any]] = {k.payload_type: k for k in _DECLARED}
# The kinds that change the key state, indexed by the server to rebuild it at start.
KEY_EVENTS = frozenset(
    {statements.TRUST_ROOT, *(t for t, k in KINDS.items() if k.advance is not None)}
)
assert set(KINDS) == set(statements.SUBMITTABLE), "every submittable kind is declared here"


def of(payload_type: str) -> Kind[Any] | None:
    return KINDS.get(payload_type)
