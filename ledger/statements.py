"""Statement formats: their DSSE payload types, strict decoding, and each kind's field rules
(which kind has which rules, and everything else about it: `ledger/kinds.py`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from geo.manifest import FILE_NAME, dataset_digest
from ledger.clock import MAX_US, MIN_US, to_us
from ledger.errors import InvalidArgument, shown
from ledger.trust import SHA256_HEX, TrustState

PAYLOAD_TYPE_FORMAT = "application/vnd.ceasefire.v1.{}+protobuf"


def payload_type(message: type[Message]) -> str:
    return PAYLOAD_TYPE_FORMAT.format(message.DESCRIPTOR.name)


TRUST_ROOT = payload_type(pb.TrustRoot)
INCIDENT_REPORT = payload_type(pb.IncidentReport)
KEY_CHANGE = payload_type(pb.KeyChange)
PARTY_ADMISSION = payload_type(pb.PartyAdmission)
BORDER_DATASET = payload_type(pb.BorderDatasetRegistration)
AMENDMENT = payload_type(pb.IncidentAmendment)
RETRACTION = payload_type(pb.IncidentRetraction)
COUNTER_CLAIM = payload_type(pb.CounterClaim)
EVIDENCE = payload_type(pb.EvidenceRecord)
FINDING = payload_type(pb.FindingDraft)
ATTESTATION = payload_type(pb.Attestation)
DISSENT = payload_type(pb.Dissent)
INVESTIGATION_REQUEST = payload_type(pb.InvestigationRequest)
INVESTIGATION_RESPONSE = payload_type(pb.InvestigationResponse)
INVESTIGATION_TERMS = payload_type(pb.InvestigationTerms)
VISIT = payload_type(pb.VisitRecord)
NOTICE = payload_type(pb.AdvanceNotice)
HOTLINE = payload_type(pb.HotlineMessage)
ACKNOWLEDGEMENT = payload_type(pb.Acknowledgement)
RECEIPT = payload_type(log_pb2.Receipt)

# The statement kinds a client may submit (the trust root is written by `init` only).
SUBMITTABLE: dict[str, type[Message]] = {
    INCIDENT_REPORT: pb.IncidentReport,
    KEY_CHANGE: pb.KeyChange,
    PARTY_ADMISSION: pb.PartyAdmission,
    BORDER_DATASET: pb.BorderDatasetRegistration,
    AMENDMENT: pb.IncidentAmendment,
    RETRACTION: pb.IncidentRetraction,
    COUNTER_CLAIM: pb.CounterClaim,
    EVIDENCE: pb.EvidenceRecord,
    FINDING: pb.FindingDraft,
    ATTESTATION: pb.Attestation,
    DISSENT: pb.Dissent,
    INVESTIGATION_REQUEST: pb.InvestigationRequest,
    INVESTIGATION_RESPONSE: pb.InvestigationResponse,
    INVESTIGATION_TERMS: pb.InvestigationTerms,
    VISIT: pb.VisitRecord,
    NOTICE: pb.AdvanceNotice,
    HOTLINE: pb.HotlineMessage,
    ACKNOWLEDGEMENT: pb.Acknowledgement,
}
ALL_KINDS: dict[str, type[Message]] = {TRUST_ROOT: pb.TrustRoot, **SUBMITTABLE}

MAX_NARRATIVE_CHARS = 8000
MAX_REASON_CHARS = 1000
MAX_KEY_CHANGES = 64
MAX_WEAPONS = 16
MAX_WEAPON_CHARS = 64
MAX_UNCERTAINTY_M = 100_000.0
MAX_POLYGON_POINTS = 1000
MAX_EVIDENCE = 32
MAX_CASUALTIES = 100_000
MAX_WINDOW_US = 366 * 24 * 3600 * 1_000_000
# Incidents reported as ending this far ahead of the server's clock are refused.
FUTURE_SLACK_US = 10 * 60 * 1_000_000
EARLIEST_US = 946_684_800 * 1_000_000  # 2000-01-01: older records are not incidents to report
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,4}$")


def decode(kind: str, payload: bytes, kinds: dict[str, type[Message]] = ALL_KINDS) -> Message:
    """Parse a payload of a known kind, refusing unknown fields (nothing unsigned-for hides)."""
    cls = kinds.get(kind)
    if cls is None:
        raise InvalidArgument(f"unknown statement type {shown(kind)}", field="payloadType")
    message = cls()
    try:
        message.ParseFromString(payload)
    except DecodeError as e:
        raise InvalidArgument(f"not a valid {cls.DESCRIPTOR.name} ({e})", field="payload") from e
    if _has_unknown(message):
        where = _unknown_at(cls.FromString(payload), "payload") or "payload"
        raise InvalidArgument("carries fields this ledger does not know", field=where)
    return message


def _has_unknown(message: Message) -> bool:
    """Whether a field anywhere in `message` is one this ledger does not know. Asked of
    every statement, so done in protobuf's C: dropping unknown fields shortens the encoding
    (each has a tag at least). Drops them: call it on a message refused if it says so."""
    size = message.ByteSize()
    message.DiscardUnknownFields()
    return message.ByteSize() != size


def _unknown_at(message: Message, where: str) -> str | None:
    """The innermost field of `message` that holds unknown fields (None: none does)."""
    if len(UnknownFieldSet(message)):
        return where
    for fd, value in message.ListFields():
        if fd.message_type is None:
            continue
        for v in value if fd.is_repeated else [value]:
            if isinstance(v, Message) and (found := _unknown_at(v, f"{where}.{fd.name}")):
                return found
    return None


class _Enum(Protocol):
    DESCRIPTOR: EnumDescriptor


def _enum(value: int, enum: _Enum, field: str) -> None:
    if value == 0 or value not in enum.DESCRIPTOR.values_by_number:
        raise InvalidArgument("required; must be one of the documented values", field=field)


def _finite(value: float, field: str) -> None:
    if not math.isfinite(value):
        raise InvalidArgument("must be a finite number", field=field)


def check_freshness(statement: Message, state: TrustState, now_us: int) -> None:
    """The signed created_time must be within the trust root's window around `now_us`
    (the log's clock at integration). It orders nothing: order is the log index."""
    if not statement.HasField("created_time"):
        raise InvalidArgument("required (the author's signing time)", field="created_time")
    created = to_us(statement.created_time)  # type: ignore[attr-defined]
    if created < now_us - state.max_age_s * 1_000_000:
        raise InvalidArgument(
            f"is older than the {state.max_age_s} s the trust root allows; sign it again",
            field="created_time",
        )
    if created > now_us + state.max_future_s * 1_000_000:
        raise InvalidArgument(
            f"is more than {state.max_future_s} s ahead of the log's clock; check the "
            "signer's clock",
            field="created_time",
        )


# The field rules of each kind (`ledger/kinds.py` names which applies): each raises
# InvalidArgument naming the field, judged on the key state and the log's clock. The signed
# created_time of every kind is checked first (`check_freshness`).


def validate_admission(admission: pb.PartyAdmission, _state: TrustState, _now_us: int) -> None:
    if not admission.HasField("party"):
        raise InvalidArgument("required", field="party")
    _reason(admission.reason)


def validate_amendment(amendment: pb.IncidentAmendment, state: TrustState, now_us: int) -> None:
    if not amendment.HasField("corrected"):
        raise InvalidArgument("the report as it should read is required", field="corrected")
    if amendment.corrected.reporting_party != amendment.party:
        raise InvalidArgument("must be the amending party", field="corrected.reporting_party")
    # The corrected report's own signing time is the amendment's.
    corrected = pb.IncidentReport()
    corrected.CopyFrom(amendment.corrected)
    corrected.created_time.CopyFrom(amendment.created_time)
    try:
        validate_incident(corrected, state, now_us)
    except InvalidArgument as e:
        raise InvalidArgument(e.message, field=f"corrected.{e.field}") from e
    _reason(amendment.reason)


def validate_retraction(retraction: pb.IncidentRetraction, _state: TrustState, _now: int) -> None:
    _reason(retraction.reason)


def validate_attestation(attestation: pb.Attestation, _state: TrustState, _now_us: int) -> None:
    if not SHA256_HEX.match(attestation.draft_sha256):
        raise InvalidArgument("the draft's lowercase hex SHA-256", field="draft_sha256")


def validate_dissent(dissent: pb.Dissent, _state: TrustState, _now_us: int) -> None:
    if not SHA256_HEX.match(dissent.draft_sha256):
        raise InvalidArgument("the draft's lowercase hex SHA-256", field="draft_sha256")
    _narrative(dissent.reasons, dissent.reasons_language, "reasons")


def validate_counter_claim(claim: pb.CounterClaim, _state: TrustState, _now_us: int) -> None:
    _enum(claim.kind, pb.ResponseKind, "kind")
    _narrative(claim.narrative, claim.narrative_language)
    _evidence(claim.evidence_sha256)


def validate_response(response: pb.InvestigationResponse, _state: TrustState, _now_us: int) -> None:
    _enum(response.decision, pb.InvestigationDecision, "decision")
    _reason(response.reason)


def validate_hotline(message: pb.HotlineMessage, state: TrustState, _now_us: int) -> None:
    if message.to_party not in state.parties or message.to_party == message.party:
        raise InvalidArgument("another party of this ledger", field="to_party")
    _enum(message.urgency, pb.HotlineUrgency, "urgency")
    if not message.text:
        raise InvalidArgument("required", field="text")
    _narrative(message.text, message.text_language, "text")


def validate_acknowledgement(_ack: pb.Acknowledgement, _state: TrustState, _now: int) -> None:
    """Its fields are the entry it names and the party: judged against the entry."""


MAX_DATASET_FILES = 16
MAX_DATASET_BYTES = 16 * 1024 * 1024
MAX_MONITORED_ZONE_M = 200_000.0
SUPPORTED_DATUMS = ("EPSG:4326",)


def validate_border_dataset(
    reg: pb.BorderDatasetRegistration, _state: TrustState | None = None, _now_us: int = 0
) -> None:
    if not 1 <= len(reg.files) <= MAX_DATASET_FILES:
        raise InvalidArgument(f"1 to {MAX_DATASET_FILES} files", field="files")
    names: set[str] = set()
    for i, f in enumerate(reg.files):
        if not FILE_NAME.match(f.name) or f.name in names:
            raise InvalidArgument("a unique plain file name is required", field=f"files[{i}].name")
        names.add(f.name)
        if not SHA256_HEX.match(f.sha256):
            raise InvalidArgument("must be lowercase hex SHA-256", field=f"files[{i}].sha256")
    if sum(f.size for f in reg.files) > MAX_DATASET_BYTES:
        raise InvalidArgument("a data set is at most 16 MiB", field="files")
    if reg.dataset_sha256 != dataset_digest({f.name: f.sha256 for f in reg.files}):
        raise InvalidArgument(
            "is not the SHA-256 of the files' manifest (sha256sum output, sorted by name)",
            field="dataset_sha256",
        )
    for name in ("name", "source", "licence"):
        value = getattr(reg, name)
        if not 0 < len(value) <= MAX_REASON_CHARS:
            raise InvalidArgument(f"1 to {MAX_REASON_CHARS} characters", field=name)
    if reg.datum not in SUPPORTED_DATUMS:
        raise InvalidArgument(
            "only WGS84 longitude/latitude (EPSG:4326) data sets are supported", field="datum"
        )
    _enum(reg.line_kind, pb.LineKind, "line_kind")
    if not 0 <= reg.monitored_zone_m <= MAX_MONITORED_ZONE_M:
        raise InvalidArgument("0 to 200,000 metres", field="monitored_zone_m")
    if reg.monitored_zone_m or reg.outside_zone:
        _enum(reg.outside_zone, pb.OutsideZone, "outside_zone")
    if len(reg.description) > MAX_NARRATIVE_CHARS:
        raise InvalidArgument(f"at most {MAX_NARRATIVE_CHARS} characters", field="description")


def _reason(reason: str) -> None:
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument(f"at most {MAX_REASON_CHARS} characters", field="reason")


def validate_key_change(change: pb.KeyChange, _state: TrustState, _now_us: int) -> None:
    if not change.party:
        raise InvalidArgument("required", field="party")
    if not (change.add or change.revoke_key_ids or change.authority_threshold):
        raise InvalidArgument("changes nothing: add, revoke or set a threshold", field="add")
    if len(change.add) + len(change.revoke_key_ids) > MAX_KEY_CHANGES:
        raise InvalidArgument(f"at most {MAX_KEY_CHANGES} keys a change", field="add")
    for i, kid in enumerate(change.revoke_key_ids):
        if not SHA256_HEX.match(kid):
            raise InvalidArgument("must be a lowercase hex key id", field=f"revoke_key_ids[{i}]")
    _reason(change.reason)


def validate_finding(f: pb.FindingDraft, state: TrustState, _now_us: int) -> None:
    _indexes(f.incident_indexes, "incident_indexes")
    if f.policy not in state.finding_policies:
        known = ", ".join(sorted(state.finding_policies)) or "none"
        raise InvalidArgument(f"not a finding policy of the trust root ({known})", field="policy")
    _enum(f.outcome, pb.FindingOutcome, "outcome")
    if f.attribution and f.attribution not in state.parties:
        raise InvalidArgument(f"unknown party {shown(f.attribution)}", field="attribution")
    _narrative(f.reasoning, f.reasoning_language, "reasoning")
    _evidence(f.evidence_sha256)


MAX_EVIDENCE_BYTES = 16 * 1024 * 1024
MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9][a-z0-9.+-]{0,63}$")


def validate_evidence(e: pb.EvidenceRecord, state: TrustState, _now_us: int) -> None:
    if not SHA256_HEX.match(e.sha256):
        raise InvalidArgument("must be lowercase hex SHA-256 of the content", field="sha256")
    if not MEDIA_TYPE.match(e.media_type):
        raise InvalidArgument("a media type such as image/jpeg", field="media_type")
    if len(e.description) > MAX_NARRATIVE_CHARS:
        raise InvalidArgument(f"at most {MAX_NARRATIVE_CHARS} characters", field="description")
    _enum(e.blob, pb.BlobKind, "blob")
    if e.blob == pb.BLOB_KIND_NONE:
        if e.blob_sha256 or e.blob_size or e.sealed_to_key_ids:
            raise InvalidArgument("no blob travels with this record", field="blob")
        return
    if not SHA256_HEX.match(e.blob_sha256):
        raise InvalidArgument("must be lowercase hex SHA-256", field="blob_sha256")
    if not 0 < e.blob_size <= MAX_EVIDENCE_BYTES:
        raise InvalidArgument("1 byte to 16 MiB", field="blob_size")
    if e.blob == pb.BLOB_KIND_PLAIN:
        if e.blob_sha256 != e.sha256 or e.blob_size != e.size or e.sealed_to_key_ids:
            raise InvalidArgument("a plain blob is the content itself", field="blob_sha256")
        return
    if not e.sealed_to_key_ids or len(e.sealed_to_key_ids) > 64:
        raise InvalidArgument("1 to 64 recipients", field="sealed_to_key_ids")
    for i, kid in enumerate(e.sealed_to_key_ids):
        if kid not in state.keys:
            raise InvalidArgument("not a key on this ledger", field=f"sealed_to_key_ids[{i}]")


def _narrative(text: str, language: str, field: str = "narrative") -> None:
    if len(text) > MAX_NARRATIVE_CHARS:
        raise InvalidArgument(f"at most {MAX_NARRATIVE_CHARS} characters", field=field)
    if text and not LANGUAGE_TAG.match(language):
        raise InvalidArgument(
            f"a BCP 47 tag such as 'en' or 'az-Latn' is required with the {field}",
            field=f"{field}_language",
        )


def _evidence(digests: Sequence[str]) -> None:
    if len(digests) > MAX_EVIDENCE:
        raise InvalidArgument(f"at most {MAX_EVIDENCE}", field="evidence_sha256")
    if len(set(digests)) != len(digests):
        raise InvalidArgument("names the same evidence twice", field="evidence_sha256")
    for i, digest in enumerate(digests):
        if not SHA256_HEX.match(digest):
            raise InvalidArgument("must be lowercase hex SHA-256", field=f"evidence_sha256[{i}]")


def _casualties(c: pb.Casualties) -> None:
    for name in ("civilians_killed", "civilians_injured", "military_killed", "military_injured"):
        r = getattr(c, name)
        if not r.low <= r.best <= r.high <= MAX_CASUALTIES:
            raise InvalidArgument(
                f"needs low <= best <= high <= {MAX_CASUALTIES:,}", field=f"casualties.{name}"
            )


def _window(w: pb.TimeWindow, check_end: Callable[[int], None]) -> None:
    """Check a time window's fields; `check_end` judges its end against the log's clock."""
    if not w.HasField("start") or not w.HasField("end"):
        raise InvalidArgument("start and end are required", field="window")
    start, end = to_us(w.start), to_us(w.end)
    for name, us in (("window.start", start), ("window.end", end)):
        if not MIN_US <= us <= MAX_US:  # e.g. a notice for the year 292,277,026,596
            raise InvalidArgument("must be from year 1 to 9999 (UTC)", field=name)
    if start > end:
        raise InvalidArgument("start is after end", field="window.start")
    if start < EARLIEST_US:
        raise InvalidArgument("is before 2000-01-01", field="window.start")
    check_end(end)
    if end - start > MAX_WINDOW_US:
        raise InvalidArgument("a window may span at most 366 days", field="window")
    _enum(w.precision, pb.TimePrecision, "window.precision")


def _extent(loc: pb.Location) -> None:
    """The bounds every place shares: polygon size, uncertainty radius, precision."""
    if len(loc.polygon.points) > MAX_POLYGON_POINTS:
        raise InvalidArgument(
            f"at most {MAX_POLYGON_POINTS} points", field="location.polygon.points"
        )
    _finite(loc.uncertainty_m, "location.uncertainty_m")
    if not 0 <= loc.uncertainty_m <= MAX_UNCERTAINTY_M:
        raise InvalidArgument("must be 0 to 100,000 metres", field="location.uncertainty_m")
    _enum(loc.precision, pb.LocationPrecision, "location.precision")


def validate_incident(report: pb.IncidentReport, state: TrustState, now_us: int) -> None:
    """Check every field of an incident report; raise InvalidArgument naming the field.

    Coordinates are checked here for shape (finite, in range); where they fall is the
    geo module's job.
    """
    if not report.reporting_party:
        raise InvalidArgument("required", field="reporting_party")
    if not report.HasField("window"):
        raise InvalidArgument("required", field="window")

    def not_ahead(end: int) -> None:
        if end > now_us + FUTURE_SLACK_US:
            raise InvalidArgument("is in the future (by the server's clock)", field="window.end")

    _window(report.window, not_ahead)

    if not report.HasField("location"):
        raise InvalidArgument("required", field="location")
    loc = report.location
    kind = loc.WhichOneof("geometry")
    if kind is None:
        raise InvalidArgument("a point, line, polygon or observation is required", field="location")
    if kind == "point":
        _finite(loc.point.latitude, "location.point.latitude")
        _finite(loc.point.longitude, "location.point.longitude")
    # The shape of lines, polygons and sectors is the geo module's to judge.
    _extent(loc)

    _enum(report.category, pb.IncidentCategory, "category")
    _enum(report.observation_mode, pb.ObservationMode, "observation_mode")
    alleged = report.alleged_responsible_party
    if alleged and alleged not in state.parties:
        raise InvalidArgument(f"unknown party {shown(alleged)}", field="alleged_responsible_party")
    _narrative(report.narrative, report.narrative_language)
    _casualties(report.casualties)
    if report.HasField("fire_from_bearing_deg"):
        bearing = report.fire_from_bearing_deg
        if not (math.isfinite(bearing) and 0 <= bearing < 360):
            raise InvalidArgument("a bearing in [0, 360) degrees", field="fire_from_bearing_deg")
    _evidence(report.evidence_sha256)
    if len(report.weapons) > MAX_WEAPONS:
        raise InvalidArgument(f"at most {MAX_WEAPONS}", field="weapons")
    for i, weapon in enumerate(report.weapons):
        if not 0 < len(weapon) <= MAX_WEAPON_CHARS:
            raise InvalidArgument(f"1 to {MAX_WEAPON_CHARS} characters", field=f"weapons[{i}]")


MAX_INCIDENTS = 64
MAX_RESPONDENTS = 8
MIN_ANSWER_US = 3600 * 1_000_000
MAX_ANSWER_US = 90 * 24 * 3600 * 1_000_000
MAX_MEMBERS = 64
MAX_SITES = 64
MAX_SITE_RADIUS_M = 10_000.0
SITE_NAME = re.compile(r"^\S(.{0,62}\S)?$")


def _indexes(indexes: Sequence[int], field: str) -> None:
    if not 1 <= len(indexes) <= MAX_INCIDENTS:
        raise InvalidArgument(f"1 to {MAX_INCIDENTS} incidents", field=field)
    if len(set(indexes)) != len(indexes):
        raise InvalidArgument("names an incident twice", field=field)


def _point(p: pb.GeoPoint, field: str) -> None:
    _finite(p.latitude, f"{field}.latitude")
    _finite(p.longitude, f"{field}.longitude")
    if not (-90 <= p.latitude <= 90 and -180 <= p.longitude <= 180):
        raise InvalidArgument("latitude in [-90, 90], longitude in [-180, 180]", field=field)


def validate_investigation_request(
    r: pb.InvestigationRequest, state: TrustState, now_us: int
) -> None:
    _indexes(r.incident_indexes, "incident_indexes")
    if not 1 <= len(r.respondents) <= MAX_RESPONDENTS:
        raise InvalidArgument(f"1 to {MAX_RESPONDENTS} parties", field="respondents")
    if len(set(r.respondents)) != len(r.respondents):
        raise InvalidArgument("names a party twice", field="respondents")
    for i, code in enumerate(r.respondents):
        if code not in state.parties or code == r.party:
            raise InvalidArgument(
                "another party of this ledger than the requester", field=f"respondents[{i}]"
            )
    if not r.HasField("answer_by"):
        raise InvalidArgument("required (the deadline for answers)", field="answer_by")
    wait = to_us(r.answer_by) - now_us
    if not MIN_ANSWER_US <= wait <= MAX_ANSWER_US:
        raise InvalidArgument("must be 1 hour to 90 days after the log's clock", field="answer_by")
    _narrative(r.scope, r.scope_language, "scope")


def validate_terms(t: pb.InvestigationTerms, _state: TrustState, _now_us: int) -> None:
    if not 1 <= len(t.member_key_ids) <= MAX_MEMBERS:
        raise InvalidArgument(f"1 to {MAX_MEMBERS} members", field="member_key_ids")
    if len(set(t.member_key_ids)) != len(t.member_key_ids):
        raise InvalidArgument("names a member twice", field="member_key_ids")
    if not 1 <= len(t.sites) <= MAX_SITES:
        raise InvalidArgument(f"1 to {MAX_SITES} sites", field="sites")
    names: set[str] = set()
    for i, site in enumerate(t.sites):
        where = f"sites[{i}]"
        if not SITE_NAME.match(site.name) or site.name in names:
            raise InvalidArgument("a unique name of 1 to 64 characters", field=f"{where}.name")
        names.add(site.name)
        if not site.HasField("center"):
            raise InvalidArgument("required", field=f"{where}.center")
        _point(site.center, f"{where}.center")
        _finite(site.radius_m, f"{where}.radius_m")
        if not 0 <= site.radius_m <= MAX_SITE_RADIUS_M:
            raise InvalidArgument("0 to 10,000 metres", field=f"{where}.radius_m")
    _narrative(t.visit_procedure, t.visit_procedure_language, "visit_procedure")
    vocabulary = list(t.outcome_vocabulary)
    if not vocabulary or len(set(vocabulary)) != len(vocabulary):
        raise InvalidArgument("1 to 3 outcomes, no repeats", field="outcome_vocabulary")
    for i, outcome in enumerate(vocabulary):
        _enum(outcome, pb.FindingOutcome, f"outcome_vocabulary[{i}]")
    _enum(t.publication_rule, pb.PublicationRule, "publication_rule")


def validate_visit(v: pb.VisitRecord, state: TrustState, now_us: int) -> None:
    if not v.site:
        raise InvalidArgument("required: a site of the terms in force", field="site")
    if not v.HasField("started") or not v.HasField("ended"):
        raise InvalidArgument("started and ended are required", field="started")
    if to_us(v.started) > to_us(v.ended):
        raise InvalidArgument("is after ended", field="started")
    if to_us(v.started) < EARLIEST_US:
        raise InvalidArgument("is before 2000-01-01", field="started")
    if to_us(v.ended) > now_us + FUTURE_SLACK_US:
        raise InvalidArgument("is in the future (by the log's clock)", field="ended")
    _enum(v.outcome, pb.VisitOutcome, "outcome")
    refused = v.outcome in (pb.VISIT_OUTCOME_ACCESS_DENIED, pb.VISIT_OUTCOME_PARTIAL)
    if refused and v.denied_by not in state.parties:
        raise InvalidArgument("the party that refused access is required", field="denied_by")
    if not refused and v.denied_by:
        raise InvalidArgument("only for access denied or partial", field="denied_by")
    if len(v.members_present) > MAX_MEMBERS:
        raise InvalidArgument(f"at most {MAX_MEMBERS}", field="members_present")
    _narrative(v.notes, v.notes_language, "notes")
    _evidence(v.evidence_sha256)


def validate_notice(n: pb.AdvanceNotice, _state: TrustState, now_us: int) -> None:
    _enum(n.activity, pb.ActivityKind, "activity")

    def not_over(end: int) -> None:
        if end <= now_us:
            raise InvalidArgument(
                "has ended already: a notice comes in advance", field="window.end"
            )

    _window(n.window, not_over)
    kind = n.location.WhichOneof("geometry")
    if kind not in ("point", "polygon"):
        raise InvalidArgument("a point with its radius, or a polygon", field="location")
    if kind == "point":
        _point(n.location.point, "location.point")
    _extent(n.location)
    _narrative(n.description, n.description_language, "description")
