"""What the ledger knows of each incident, and the status derived from its linked entries.

Pure: the server (from its index tables) and the verifier (from the entries it replays)
feed it the same facts, so they derive the same status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

# How an entry relates to the incident it is linked to.
REPORT = "report"
AMENDMENT = "amendment"
RETRACTION = "retraction"
COUNTER_CLAIM = "counter_claim"
LIKELY_DUPLICATE = "likely_duplicate"
EVIDENCE = "evidence"
FINDING = "finding"
ATTESTATION = "attestation"
DISSENT = "dissent"
JOINT_FINDING = "joint_finding"
INVESTIGATION_REQUEST = "investigation_request"
INVESTIGATION_ACCEPTED = "investigation_accepted"
PRECEDING_NOTICE = "preceding_notice"
# How an entry relates to an investigation, a notice or a hotline message it names.
REQUEST = "request"
RESPONSE = "response"
TERMS = "terms"
VISIT = "visit"
REPLY = "reply"
ACKNOWLEDGEMENT = "acknowledgement"

JOINT_STATUS = {
    pb.FINDING_OUTCOME_CONFIRMED: api.INCIDENT_STATUS_JOINTLY_CONFIRMED,
    pb.FINDING_OUTCOME_NOT_CONFIRMED: api.INCIDENT_STATUS_JOINTLY_NOT_CONFIRMED,
    pb.FINDING_OUTCOME_INCONCLUSIVE: api.INCIDENT_STATUS_INCONCLUSIVE,
}

DISPUTING = frozenset(
    {
        pb.RESPONSE_KIND_DENIAL,
        pb.RESPONSE_KIND_ALTERNATIVE_ACCOUNT,
        pb.RESPONSE_KIND_COUNTER_ALLEGATION,
    }
)


@dataclass(frozen=True)
class IncidentInfo:
    index: int
    party: str
    retracted_at: int | None = None
    # The attestation that made a finding about it jointly attested, if one has.
    jointly_found_at: int | None = None


@dataclass(frozen=True)
class Link:
    """Entry `index` relates to incident `target` as `relation` (with a response kind)."""

    target: int
    index: int
    relation: str
    response: int = 0


def derive_status(links: Iterable[Link]) -> api.IncidentStatus.ValueType:
    """Retracted overrides all; then the latest jointly attested finding; then an accepted
    investigation or a drafted finding; then any denial or other account disputes it; else
    an acknowledgement; else reported. (`response` carries the outcome for finding links.)"""
    status = api.INCIDENT_STATUS_REPORTED
    joint: api.IncidentStatus.ValueType | None = None
    drafted = False
    for link in sorted(links, key=lambda x: x.index):
        if link.relation == RETRACTION:
            return api.INCIDENT_STATUS_RETRACTED
        if link.relation == JOINT_FINDING:
            joint = JOINT_STATUS.get(link.response, api.INCIDENT_STATUS_INCONCLUSIVE)  # type: ignore[call-overload]
        if link.relation in (FINDING, INVESTIGATION_ACCEPTED):
            drafted = True
        if link.relation == COUNTER_CLAIM:
            if link.response in DISPUTING:
                status = api.INCIDENT_STATUS_DISPUTED
            elif (
                link.response == pb.RESPONSE_KIND_ACKNOWLEDGEMENT
                and status != api.INCIDENT_STATUS_DISPUTED
            ):
                status = api.INCIDENT_STATUS_ACKNOWLEDGED
    if joint is not None:
        return joint
    return api.INCIDENT_STATUS_UNDER_INVESTIGATION if drafted else status


def status_name(status: api.IncidentStatus.ValueType) -> str:
    """e.g. "jointly_confirmed", as the command line and audit summaries show it."""
    return api.IncidentStatus.Name(status).removeprefix("INCIDENT_STATUS_").lower()


def link_of(statement: object, index: int) -> Link:
    """How an amendment, retraction or counter-claim links to its incident."""
    if isinstance(statement, pb.IncidentAmendment):
        return Link(statement.incident_index, index, AMENDMENT)
    if isinstance(statement, pb.IncidentRetraction):
        return Link(statement.incident_index, index, RETRACTION)
    if isinstance(statement, pb.CounterClaim):
        return Link(statement.incident_index, index, COUNTER_CLAIM, statement.kind)
    raise TypeError(f"{type(statement).__name__} is not about an incident")
