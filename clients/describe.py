"""Log entries as people and scripts read them."""

from __future__ import annotations

import hashlib
from typing import Any

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import json_format
from google.protobuf.message import Message

from ledger import statements
from ledger.clock import to_iso, to_us
from ledger.errors import LedgerError
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry


def describe_entry(data: bytes) -> dict[str, Any]:
    entry = parse_entry(data)
    envelope = dsse.Envelope.from_json(entry.envelope)
    doc: dict[str, Any] = {
        "index": entry.index,
        "leaf_hash": merkle.leaf_hash(data).hex(),
        "integrated_time": to_iso(to_us(entry.integrated_time)),
        "previous_leaf_hash": entry.previous_leaf_hash.hex(),
        "envelope_sha256": hashlib.sha256(entry.envelope).hexdigest(),
        "payload_type": envelope.payload_type,
        "signatures": [{"keyid": s.keyid} for s in envelope.signatures],
        "validation": _as_dict(entry.validation),
    }
    try:
        doc["statement"] = _as_dict(statements.decode(envelope.payload_type, envelope.payload))
    except LedgerError as e:
        doc["statement_error"] = str(e)
    return doc


def statement_of(data: bytes) -> tuple[int, Message]:
    """A serialized log entry's integrated time and its statement, decoded."""
    entry = parse_entry(data)
    envelope = dsse.Envelope.from_json(entry.envelope)
    return to_us(entry.integrated_time), statements.decode(envelope.payload_type, envelope.payload)


# The relation of the attestation that met its finding's policy (ledger.incidents).
MET_POLICY = "joint_finding"


def short_key_id(key_id: str) -> str:
    return key_id[:16]


def entry_line(index: int, relation: str, data: bytes, relation_width: int) -> str:
    """One line of a dossier or investigation: index, time, relation, party, summary; for
    an attestation or dissent, its signers and whether it met the finding's policy."""
    integrated, stmt = statement_of(data)
    validation = parse_entry(data).validation
    # The party the log authorized the statement for (reports name it reporting_party).
    who, when = validation.party, to_iso(integrated)[:16]
    line = f"  #{index:<5} {when}  {relation:<{relation_width}} {who:<4} {summary(stmt)}"
    if isinstance(stmt, pb.Attestation | pb.Dissent):
        line += "; signed by " + ", ".join(short_key_id(k) for k in validation.signer_key_ids)
        if relation == MET_POLICY:
            line += "; met the policy"
    return line


def answer_facts(relation: str, data: bytes) -> dict[str, Any]:
    """For --json: an attestation's or dissent's finding, signers and whether it met the
    finding's policy (nothing for other entries)."""
    _, stmt = statement_of(data)
    if not isinstance(stmt, pb.Attestation | pb.Dissent):
        return {}
    return {
        "finding": stmt.finding_index,
        "signer_key_ids": list(parse_entry(data).validation.signer_key_ids),
        "met_policy": relation == MET_POLICY,
    }


def _as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """An enum value as the command line spells it: VISIT_OUTCOME_ACCESS_DENIED is
    access_denied."""
    return str(enum.Name(value)).removeprefix(prefix).lower()


def summary(stmt: Message) -> str:
    """One line on what a statement says, for dossiers and investigation listings."""
    if isinstance(stmt, pb.IncidentReport):
        return stmt.narrative
    if isinstance(stmt, pb.IncidentAmendment | pb.IncidentRetraction):
        return stmt.reason
    if isinstance(stmt, pb.CounterClaim):
        kind = enum_name(pb.ResponseKind, stmt.kind, "RESPONSE_KIND_")
        return kind + (f": {stmt.narrative}" if stmt.narrative else "")
    if isinstance(stmt, pb.InvestigationRequest):
        incidents = ", ".join(str(i) for i in stmt.incident_indexes)
        scope = f": {stmt.scope}" if stmt.scope else ""
        return f"incidents {incidents}; asks {', '.join(stmt.respondents)}{scope}"
    if isinstance(stmt, pb.InvestigationResponse):
        said = enum_name(pb.InvestigationDecision, stmt.decision, "INVESTIGATION_DECISION_")
        return said + (f": {stmt.reason}" if stmt.reason else "")
    if isinstance(stmt, pb.InvestigationTerms):
        sites = ", ".join(s.name for s in stmt.sites)
        return f"{len(stmt.member_key_ids)} members; sites {sites}"
    if isinstance(stmt, pb.VisitRecord):
        outcome = enum_name(pb.VisitOutcome, stmt.outcome, "VISIT_OUTCOME_")
        denied = f" by {stmt.denied_by}" if stmt.denied_by else ""
        return f"{stmt.site}: {outcome}{denied}"
    if isinstance(stmt, pb.FindingDraft):
        outcome = enum_name(pb.FindingOutcome, stmt.outcome, "FINDING_OUTCOME_")
        return outcome + (f": {stmt.reasoning}" if stmt.reasoning else "")
    if isinstance(stmt, pb.Attestation):
        return f"attests finding {stmt.finding_index}"
    if isinstance(stmt, pb.Dissent):
        return f"dissents from finding {stmt.finding_index}: {stmt.reasons}".rstrip(": ")
    if isinstance(stmt, pb.EvidenceRecord):
        return f"{stmt.sha256[:16]}... {stmt.description}".rstrip()
    if isinstance(stmt, pb.AdvanceNotice):
        activity = enum_name(pb.ActivityKind, stmt.activity, "ACTIVITY_KIND_")
        return f"{activity}: {stmt.description}".rstrip(": ")
    if isinstance(stmt, pb.HotlineMessage):
        return stmt.text
    return ""
