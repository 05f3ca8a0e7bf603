"""The ledger's admission rules: may this envelope become entry `index`?

`admit` is the one decision, made by the server when it assigns the index and by the
offline verifier when it replays that index, on the same inputs: the key state after the
entries before it, the envelope, the index, and the log's clock at integration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from ledger import dsse, policy, statements
from ledger.authz import authenticate, authorize
from ledger.clock import to_us
from ledger.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from ledger.findings import FindingInfo, parties_named
from ledger.incidents import IncidentInfo
from ledger.investigations import InvestigationInfo, Terms
from ledger.messages import MessageInfo
from ledger.subjects import Lookup, Subject, nothing
from ledger.trust import KeyInfo, TrustState


@dataclass(frozen=True)
class Admitted:
    kind: str
    statement: Message
    party: str
    signers: list[KeyInfo]


def admit(
    state: TrustState,
    envelope: dsse.Envelope,
    index: int,
    now_us: int,
    lookup: Lookup = nothing,
) -> Admitted:
    """Decide entry `index`; raise the LedgerError that refuses it. `state` is not changed.
    `lookup` gives the earlier incidents, findings, investigations and messages that
    statements name by log index, as they stood before this entry."""
    kind = envelope.payload_type
    statement = statements.decode(kind, envelope.payload, statements.SUBMITTABLE)
    judged_on = state
    introduced: dict[str, KeyInfo] = {}
    if isinstance(statement, pb.PartyAdmission):
        # The new party's own keys sign its admission, so judge on the state that has them.
        judged_on = state.copy()
        judged_on.apply_admission(statement, index)
        introduced = {
            k.key_id: k for k in judged_on.keys.values() if k.party == statement.party.code
        }
    signers = authenticate(envelope, state, index, introduced)
    statements.validate(kind, statement, state, now_us)
    party = authorize(kind, statement, signers, judged_on)
    earlier = _Earlier(lookup, index)
    if kind in statements.ABOUT_INCIDENT:
        _check_target(statement, earlier)
    if isinstance(statement, pb.FindingDraft | pb.InvestigationRequest):
        for i, target in enumerate(statement.incident_indexes):
            earlier.incident(target, f"incident_indexes[{i}]", open_only=True)
    if isinstance(statement, pb.FindingDraft) and statement.investigation_index:
        _check_finding_draft(statement, earlier, signers)
    if kind in statements.ABOUT_FINDING:
        _check_finding(statement, earlier, state, signers)
    if kind in statements.ABOUT_INVESTIGATION:
        _check_investigation(statement, earlier, now_us, signers, state, index)
    if isinstance(statement, pb.EvidenceRecord) and statement.investigation_index:
        _check_evidence(statement, earlier, state)
    if isinstance(statement, pb.Acknowledgement):
        message = earlier.get(statement.entry_index)
        if not isinstance(message, MessageInfo):
            raise InvalidArgument(
                f"entry {statement.entry_index} is not a notice or hotline message",
                field="entry_index",
            )
        if not message.addressed_to(statement.party):
            raise PermissionDenied(
                f"entry {message.index} is not addressed to {statement.party}", field="party"
            )
        if statement.party in message.acknowledged:
            raise InvalidArgument(
                f"{statement.party} acknowledged it at index "
                f"{message.acknowledged[statement.party]}",
                field="party",
            )
    reply_to = statement.in_reply_to if isinstance(statement, pb.HotlineMessage) else 0
    if reply_to and not isinstance(earlier.get(reply_to), MessageInfo):
        raise InvalidArgument(
            f"entry {reply_to} is not a hotline message or an advance notice; the hotline "
            "replies to those (an incident is answered with a counter-claim)",
            field="in_reply_to",
        )
    if isinstance(statement, pb.KeyChange):
        state.copy().apply_key_change(statement, index)  # refuses what cannot be applied
    return Admitted(kind, statement, party, signers)


@dataclass(frozen=True)
class _Earlier:
    """The subjects logged before the entry being judged."""

    lookup: Lookup
    index: int

    def get(self, target: int) -> Subject | None:
        return self.lookup(target) if 0 < target < self.index else None

    def incident(self, target: int, field: str, *, open_only: bool = False) -> IncidentInfo:
        info = self.get(target)
        if not isinstance(info, IncidentInfo):
            raise InvalidArgument(f"entry {target} is not an incident report", field=field)
        if open_only and info.retracted_at is not None:
            raise InvalidArgument(
                f"entry {target} was retracted at index {info.retracted_at}", field=field
            )
        return info

    def investigation(
        self, target: int, field: str = "investigation_index", *, agreed: bool = False
    ) -> InvestigationInfo:
        info = self.get(target)
        if not isinstance(info, InvestigationInfo):
            raise InvalidArgument(f"entry {target} is not an investigation request", field=field)
        if agreed and info.terms is None:
            raise FailedPrecondition(f"investigation {target} has no agreed terms yet", field=field)
        return info


def _check_target(statement: Message, earlier: _Earlier) -> None:
    target: int = statement.incident_index  # type: ignore[attr-defined]
    party: str = statement.party  # type: ignore[attr-defined]
    if isinstance(statement, pb.EvidenceRecord):
        if target:  # any party may bring evidence about any incident
            earlier.incident(target, "incident_index")
        return
    info = earlier.incident(target, "incident_index")
    if isinstance(statement, pb.CounterClaim):
        if info.party == party:
            raise InvalidArgument(
                "a party does not answer its own report; it may amend it", field="party"
            )
        return
    if info.party != party:
        raise PermissionDenied(
            f"only {info.party}, the reporting party, may amend or retract entry {target}",
            field="party",
        )
    if info.retracted_at is not None:
        raise InvalidArgument(
            f"entry {target} was retracted at index {info.retracted_at}", field="incident_index"
        )
    if info.jointly_found_at is not None:
        # The parties attested a finding about the report as it stood; changing it now would
        # change what they attested. New facts go in a new report or in evidence.
        raise FailedPrecondition(
            f"a finding about entry {target} was jointly attested at index "
            f"{info.jointly_found_at}; the report stands as attested and is no longer amended "
            "or retracted",
            field="incident_index",
        )


def _check_finding(
    statement: Message, earlier: _Earlier, state: TrustState, signers: list[KeyInfo]
) -> None:
    assert isinstance(statement, pb.Attestation | pb.Dissent)
    target = statement.finding_index
    info = earlier.get(target)
    if not isinstance(info, FindingInfo):
        raise InvalidArgument(f"entry {target} is not a finding draft", field="finding_index")
    if statement.draft_sha256 != info.draft_sha256:
        raise InvalidArgument(
            f"is not the digest of the draft at entry {target}: a different text cannot be "
            "attested in its name",
            field="draft_sha256",
        )
    if statement.party not in parties_named(info, state):
        raise PermissionDenied(
            f"the finding's policy {info.policy!r} does not name {statement.party}",
            field="party",
        )
    # The party speaks with the signatures the policy asks of it, on this one statement,
    # or not at all: too few keys must not use up its single attestation or dissent.
    named = sorted(
        (p for p in policy.principals(state.finding_policies[info.policy])
         if p.party == statement.party),
        key=str,
    )  # fmt: skip
    if not any(state.principal_met(p, signers) for p in named):
        what = "attestation" if isinstance(statement, pb.Attestation) else "dissent"
        raise PermissionDenied(
            f"{statement.party}'s {what} needs {' or '.join(_needs(p, state) for p in named)}; "
            f"{_signed(named, signers)} signed",
            field="signatures",
        )
    done = info.attested.get(statement.party, info.dissented.get(statement.party))
    if done is not None:
        raise InvalidArgument(
            f"{statement.party} already attested or dissented at index {done}", field="party"
        )


def _needs(principal: policy.Principal, state: TrustState) -> str:
    if principal.role == "authority":
        threshold = state.parties[principal.party].authority_threshold
        return (
            f"{threshold} of {principal.party}'s authority keys (its threshold in the trust root)"
        )
    return f"a {principal.party} {principal.role} key"


def _signed(named: list[policy.Principal], signers: list[KeyInfo]) -> int:
    wanted = {(p.party, p.role) for p in named}
    return sum(1 for k in signers if (k.party, k.role_name) in wanted)


def _members_only(signers: list[KeyInfo], terms: Terms, what: str) -> None:
    for i, key in enumerate(signers):
        if key.key_id not in terms.members:
            raise PermissionDenied(
                f"key {key.key_id[:16]}... is not a member of the investigation (terms at "
                f"index {terms.index}); only members {what}",
                field=f"signatures[{i}].keyid",
            )


def _check_finding_draft(draft: pb.FindingDraft, earlier: _Earlier, signers: list[KeyInfo]) -> None:
    info = earlier.investigation(draft.investigation_index, agreed=True)
    assert info.terms is not None
    _members_only(signers, info.terms, "draft its findings")
    for i, target in enumerate(draft.incident_indexes):
        if target not in info.incidents:
            raise InvalidArgument(
                f"entry {target} is not one of investigation {info.index}'s incidents",
                field=f"incident_indexes[{i}]",
            )
    if draft.outcome not in info.terms.vocabulary:
        raise InvalidArgument(
            f"is not in the outcome vocabulary of the terms at index {info.terms.index}",
            field="outcome",
        )


def _not_before_request(
    info: InvestigationInfo, at: Timestamp, state: TrustState, field: str, what: str
) -> None:
    # Two signers' clocks may differ by as much as the trust root lets one run ahead.
    if to_us(at) < info.requested_us - state.max_future_s * 1_000_000:
        raise InvalidArgument(
            f"{what} {_utc(to_us(at))}, before investigation {info.index} was requested "
            f"({_utc(info.requested_us)})",
            field=field,
        )


def _check_evidence(record: pb.EvidenceRecord, earlier: _Earlier, state: TrustState) -> None:
    info = earlier.investigation(record.investigation_index, agreed=True)
    assert info.terms is not None
    # What was captured before may be brought in; the record itself is the investigation's.
    _not_before_request(info, record.created_time, state, "created_time", "signed")
    if record.party not in info.parties:
        raise PermissionDenied(
            f"{record.party} is not a party to investigation {info.index}", field="party"
        )
    if record.incident_index and record.incident_index not in info.incidents:
        raise InvalidArgument(
            f"entry {record.incident_index} is not one of the investigation's incidents",
            field="incident_index",
        )
    if record.blob == pb.BLOB_KIND_SEALED:
        for i, kid in enumerate(record.sealed_to_key_ids):
            if kid not in info.terms.members:
                raise PermissionDenied(
                    "evidence in an investigation is sealed to its members only",
                    field=f"sealed_to_key_ids[{i}]",
                )
    elif (
        record.blob == pb.BLOB_KIND_PLAIN
        and info.terms.publication_rule == pb.PUBLICATION_RULE_SEALED_UNTIL_FINDING
    ):
        raise FailedPrecondition(
            "the terms keep the investigation's evidence sealed to its members until the "
            "finding; seal it, or log its hash only",
            field="blob",
        )


def _check_investigation(
    statement: Message,
    earlier: _Earlier,
    now_us: int,
    signers: list[KeyInfo],
    state: TrustState,
    index: int,
) -> None:
    target: int = statement.investigation_index  # type: ignore[attr-defined]
    visit = isinstance(statement, pb.VisitRecord)
    info = earlier.investigation(target, agreed=visit)
    if isinstance(statement, pb.InvestigationResponse):
        if statement.party not in info.respondents:
            raise PermissionDenied(
                f"{statement.party} is not asked to answer investigation {target}",
                field="party",
            )
        done = info.answered(statement.party)
        if done is not None:
            raise InvalidArgument(f"{statement.party} answered at index {done}", field="party")
        if now_us > info.answer_by_us:
            raise FailedPrecondition(
                f"the deadline to answer passed at {_utc(info.answer_by_us)} (log clock); "
                "the request stands unanswered",
                field="investigation_index",
            )
    elif isinstance(statement, pb.InvestigationTerms):
        _check_terms(statement, info, signers, state, index)
    elif isinstance(statement, pb.VisitRecord):
        terms = info.terms
        assert terms is not None
        if statement.party not in info.parties:
            raise PermissionDenied(
                f"{statement.party} is not a party to investigation {target}", field="party"
            )
        _members_only(signers, terms, "log visits")
        _not_before_request(info, statement.started, state, "started", "started")
        if statement.site not in terms.sites:
            raise InvalidArgument(f"not a site of the terms at index {terms.index}", field="site")
        for i, kid in enumerate(statement.members_present):
            if kid not in terms.members:
                raise InvalidArgument("not a member", field=f"members_present[{i}]")


def _check_terms(
    terms: pb.InvestigationTerms,
    info: InvestigationInfo,
    signers: list[KeyInfo],
    state: TrustState,
    index: int,
) -> None:
    if info.declined or not info.all_accepted:
        raise FailedPrecondition(
            f"investigation {info.index} is not accepted by every respondent "
            f"(awaiting {', '.join(info.awaiting) or 'none'}; declined "
            f"{', '.join(info.declined) or 'none'})",
            field="investigation_index",
        )
    current = info.terms.index if info.terms is not None else 0
    if terms.supersedes_index != current:
        raise FailedPrecondition(
            f"the terms in force are at index {current}; name them in supersedes_index",
            field="supersedes_index",
        )
    for i, key in enumerate(signers):
        if key.party not in info.parties or key.role != pb.ROLE_AUTHORITY:
            raise PermissionDenied(
                f"terms are co-signed by the authorities of {', '.join(info.parties)} only",
                field=f"signatures[{i}].keyid",
            )
    missing = [p for p in info.parties if not state.authority_met(p, signers)]
    if missing:
        raise PermissionDenied(
            f"terms need the authority threshold of every party; missing {', '.join(missing)}",
            field="signatures",
        )
    for i, kid in enumerate(terms.member_key_ids):
        member = state.keys.get(kid)
        if member is None or not member.valid_at(index) or member.party not in info.parties:
            raise InvalidArgument(
                f"not a valid key of {', '.join(info.parties)}", field=f"member_key_ids[{i}]"
            )


def _utc(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def advance(state: TrustState, admitted: Admitted, index: int) -> None:
    """Apply an admitted entry's effect on who holds which key."""
    if isinstance(admitted.statement, pb.KeyChange):
        state.apply_key_change(admitted.statement, index)
    elif isinstance(admitted.statement, pb.PartyAdmission):
        state.apply_admission(admitted.statement, index)
    elif isinstance(admitted.statement, pb.BorderDatasetRegistration):
        state.apply_border_dataset(admitted.statement, index)


def admit_trust_root(envelope: dsse.Envelope) -> TrustState:
    """Entry 0: a valid trust root signed by every founding party's authority threshold
    and by the log key it names. No party can found a ledger in another's name."""
    root = statements.decode(envelope.payload_type, envelope.payload)
    if not isinstance(root, pb.TrustRoot):
        raise InvalidArgument("entry 0 must be a trust root", field="payloadType")
    state = TrustState.from_trust_root(root)
    founders = {k.key_id: k for k in state.keys.values()}
    log_kid = dsse.key_id(state.log_public_key)
    log_signed = False
    signers: list[KeyInfo] = []
    for i, sig in enumerate(envelope.signatures):
        if sig.keyid == log_kid:
            if not dsse.verify_signature(envelope, sig, state.log_public_key):
                raise PermissionDenied(
                    "the log key's signature does not verify", field="signatures"
                )
            log_signed = True
            continue
        key = founders.get(sig.keyid)
        if key is None:
            raise PermissionDenied(
                f"key {sig.keyid[:16]}... is not a founding key", field=f"signatures[{i}].keyid"
            )
        if not dsse.verify_signature(envelope, sig, key.public_key):
            raise Unauthenticated(
                f"signature does not verify for key {sig.keyid[:16]}...",
                field=f"signatures[{i}].sig",
            )
        signers.append(key)
    missing = [code for code in state.parties if not state.authority_met(code, signers)]
    if missing:
        raise PermissionDenied(
            f"not signed by the authority threshold of {', '.join(missing)}", field="signatures"
        )
    if not log_signed:
        raise PermissionDenied("not signed by the log key it names", field="signatures")
    return state
