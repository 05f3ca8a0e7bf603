"""The ledger's admission rules: may this envelope become entry `index`?

`admit` is the one decision, made by the server when it assigns the index and by the
offline verifier when it replays that index, on the same inputs: the key state after the
entries before it, the envelope, the index, and the log's clock at integration.
"""

from __future__ import annotations

from dataclasses import dataclass

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import dsse, statements
from ledger.authz import authenticate, authorize
from ledger.errors import InvalidArgument, PermissionDenied, Unauthenticated
from ledger.findings import FindingLookup, parties_named
from ledger.incidents import IncidentLookup
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
    incidents: IncidentLookup = lambda _index: None,
    findings: FindingLookup = lambda _index: None,
) -> Admitted:
    """Decide entry `index`; raise the LedgerError that refuses it. `state` is not changed.
    `incidents` looks up the earlier incident reports that statements refer to."""
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
    if kind in statements.ABOUT_INCIDENT:
        _check_target(statement, index, incidents)
    if isinstance(statement, pb.FindingDraft):
        for i, target in enumerate(statement.incident_indexes):
            if target >= index or incidents(target) is None:
                raise InvalidArgument(
                    f"entry {target} is not an incident report", field=f"incident_indexes[{i}]"
                )
    if kind in statements.ABOUT_FINDING:
        _check_finding(statement, index, findings, state)
    if isinstance(statement, pb.KeyChange):
        state.copy().apply_key_change(statement, index)  # refuses what cannot be applied
    return Admitted(kind, statement, party, signers)


def _check_target(statement: Message, index: int, incidents: IncidentLookup) -> None:
    target: int = statement.incident_index  # type: ignore[attr-defined]
    party: str = statement.party  # type: ignore[attr-defined]
    if isinstance(statement, pb.EvidenceRecord) and target == 0:
        return  # evidence not (yet) tied to an incident
    info = incidents(target) if target < index else None
    if info is None:
        raise InvalidArgument(f"entry {target} is not an incident report", field="incident_index")
    if isinstance(statement, pb.EvidenceRecord):
        return  # any party may bring evidence about any incident
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


def _check_finding(
    statement: Message, index: int, findings: FindingLookup, state: TrustState
) -> None:
    assert isinstance(statement, pb.Attestation | pb.Dissent)
    target = statement.finding_index
    info = findings(target) if target < index else None
    if info is None:
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
    done = info.attested.get(statement.party, info.dissented.get(statement.party))
    if done is not None:
        raise InvalidArgument(
            f"{statement.party} already attested or dissented at index {done}", field="party"
        )


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
