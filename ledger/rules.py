"""The rules of each statement kind about the earlier entries it names: may this
statement become entry `ctx.index`, given the incidents, findings, investigations and
messages logged before it? Each function raises the LedgerError that refuses it.

`ledger/kinds.py` says which rule applies to which kind; `ledger/judgment.py` applies
them for the server (at the index it assigns) and the auditor (at the index it replays).
Entry 0, the trust root, has its own rule here: `admit_trust_root`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from ledger import policy, statements
from ledger.clock import to_us
from ledger.context import Context
from ledger.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from ledger.findings import parties_named
from ledger.formats import dsse
from ledger.investigations import InvestigationInfo, Terms
from ledger.messages import MessageInfo
from ledger.trust import KeyInfo, TrustState


def key_change_applies(change: pb.KeyChange, ctx: Context) -> None:
    ctx.state.copy().apply_key_change(change, ctx.index)  # refuses what cannot be applied


def amends_or_retracts(
    statement: pb.IncidentAmendment | pb.IncidentRetraction, ctx: Context
) -> None:
    """Only the reporting party, of a report neither retracted nor jointly attested."""
    target = statement.incident_index
    info = ctx.incident(target, "incident_index")
    if info.party != statement.party:
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


def answers_incident(claim: pb.CounterClaim, ctx: Context) -> None:
    if ctx.incident(claim.incident_index, "incident_index").party == claim.party:
        raise InvalidArgument(
            "a party does not answer its own report; it may amend it", field="party"
        )


def evidence_names(record: pb.EvidenceRecord, ctx: Context) -> None:
    if record.incident_index:  # any party may bring evidence about any incident
        ctx.incident(record.incident_index, "incident_index")
    if record.investigation_index:
        _evidence_in_investigation(record, ctx)


def _open_incidents(statement: pb.FindingDraft | pb.InvestigationRequest, ctx: Context) -> None:
    for i, target in enumerate(statement.incident_indexes):
        ctx.incident(target, f"incident_indexes[{i}]", open_only=True)


def request_names(request: pb.InvestigationRequest, ctx: Context) -> None:
    _open_incidents(request, ctx)


def finding_draft_names(draft: pb.FindingDraft, ctx: Context) -> None:
    _open_incidents(draft, ctx)
    if not draft.investigation_index:
        return
    info = ctx.investigation(draft.investigation_index, agreed=True)
    assert info.terms is not None
    _members_only(ctx.signers, info.terms, "draft its findings")
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


def speaks_on_finding(statement: pb.Attestation | pb.Dissent, ctx: Context) -> None:
    """An attestation or dissent: over the draft's exact digest, by a party its policy
    names, with what the policy asks of that party on this one envelope, once."""
    state = ctx.state
    target = statement.finding_index
    info = ctx.finding(target)
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
    if not any(state.principal_met(p, list(ctx.signers)) for p in named):
        what = "attestation" if isinstance(statement, pb.Attestation) else "dissent"
        raise PermissionDenied(
            f"{statement.party}'s {what} needs {' or '.join(_needs(p, state) for p in named)}; "
            f"{_signed(named, ctx.signers)} signed",
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


def _signed(named: list[policy.Principal], signers: tuple[KeyInfo, ...]) -> int:
    wanted = {(p.party, p.role) for p in named}
    return sum(1 for k in signers if (k.party, k.role_name) in wanted)


def _members_only(signers: tuple[KeyInfo, ...], terms: Terms, what: str) -> None:
    for i, key in enumerate(signers):
        if key.key_id not in terms.members:
            raise PermissionDenied(
                f"key {key.key_id[:16]}... is not a member of the investigation (terms at "
                f"index {terms.index}); only members {what}",
                field=f"signatures[{i}].keyid",
            )


def _not_before_request(info: InvestigationInfo, at: Timestamp, ctx: Context, field: str) -> None:
    # Two signers' clocks may differ by as much as the trust root lets one run ahead.
    if to_us(at) < info.requested_us - ctx.state.max_future_s * 1_000_000:
        raise InvalidArgument(
            f"{_utc(to_us(at))} is before investigation {info.index} was requested "
            f"({_utc(info.requested_us)})",
            field=field,
        )


def _evidence_in_investigation(record: pb.EvidenceRecord, ctx: Context) -> None:
    info = ctx.investigation(record.investigation_index, agreed=True)
    assert info.terms is not None
    # What was captured before may be brought in; the record itself is the investigation's.
    _not_before_request(info, record.created_time, ctx, "created_time")
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


def response_names(response: pb.InvestigationResponse, ctx: Context) -> None:
    """Each respondent answers once, before the deadline by the log's clock."""
    target = response.investigation_index
    info = ctx.investigation(target)
    if response.party not in info.respondents:
        raise PermissionDenied(
            f"{response.party} is not asked to answer investigation {target}", field="party"
        )
    done = info.answered(response.party)
    if done is not None:
        raise InvalidArgument(f"{response.party} answered at index {done}", field="party")
    if ctx.now_us > info.answer_by_us:
        raise FailedPrecondition(
            f"the deadline to answer passed at {_utc(info.answer_by_us)} (log clock); "
            "the request stands unanswered",
            field="investigation_index",
        )


def visit_names(visit: pb.VisitRecord, ctx: Context) -> None:
    """By members of the terms in force, to one of its sites, after the request."""
    target = visit.investigation_index
    info = ctx.investigation(target, agreed=True)
    terms = info.terms
    assert terms is not None
    if visit.party not in info.parties:
        raise PermissionDenied(
            f"{visit.party} is not a party to investigation {target}", field="party"
        )
    _members_only(ctx.signers, terms, "log visits")
    _not_before_request(info, visit.started, ctx, "started")
    if visit.site not in terms.sites:
        raise InvalidArgument(f"not a site of the terms at index {terms.index}", field="site")
    for i, kid in enumerate(visit.members_present):
        if kid not in terms.members:
            raise InvalidArgument("not a member", field=f"members_present[{i}]")


def terms_names(terms: pb.InvestigationTerms, ctx: Context) -> None:
    """Co-signed by the authority threshold of every party to it, and no other key, once
    every respondent accepted, naming the terms in force it replaces."""
    state = ctx.state
    info = ctx.investigation(terms.investigation_index)
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
    for i, key in enumerate(ctx.signers):
        if key.party not in info.parties or key.role != pb.ROLE_AUTHORITY:
            raise PermissionDenied(
                f"terms are co-signed by the authorities of {', '.join(info.parties)} only",
                field=f"signatures[{i}].keyid",
            )
    missing = [p for p in info.parties if not state.authority_met(p, list(ctx.signers))]
    if missing:
        raise PermissionDenied(
            f"terms need the authority threshold of every party; missing {', '.join(missing)}",
            field="signatures",
        )
    for i, kid in enumerate(terms.member_key_ids):
        member = state.keys.get(kid)
        if member is None or not member.valid_at(ctx.index) or member.party not in info.parties:
            raise InvalidArgument(
                f"not a valid key of {', '.join(info.parties)}", field=f"member_key_ids[{i}]"
            )


def acknowledgement_names(ack: pb.Acknowledgement, ctx: Context) -> None:
    """By the addressee of a message (any party but the notifier of a notice), once."""
    message = ctx.get(ack.entry_index)
    if not isinstance(message, MessageInfo):
        raise InvalidArgument(
            f"entry {ack.entry_index} is not a notice or hotline message", field="entry_index"
        )
    if not message.addressed_to(ack.party):
        raise PermissionDenied(
            f"entry {message.index} is not addressed to {ack.party}", field="party"
        )
    if ack.party in message.acknowledged:
        raise InvalidArgument(
            f"{ack.party} acknowledged it at index {message.acknowledged[ack.party]}",
            field="party",
        )


def reply_names(message: pb.HotlineMessage, ctx: Context) -> None:
    """The hotline answers messages and notices; an incident is answered by a claim."""
    if message.in_reply_to and not isinstance(ctx.get(message.in_reply_to), MessageInfo):
        raise InvalidArgument(
            f"entry {message.in_reply_to} is not a hotline message or an advance notice; the "
            "hotline replies to those (an incident is answered with a counter-claim)",
            field="in_reply_to",
        )


def _utc(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
