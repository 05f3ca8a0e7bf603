"""Authentication (whose valid keys signed an envelope) and authorization (may they say it).

One table, RULES, says for every statement kind which party it speaks for and whose
signatures it needs. The server (at the index it assigns) and the offline verifier (at the
index it replays) both call `authorize`, so they cannot disagree. docs/authorization.md
shows the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import dsse, policy, statements
from ledger.errors import InvalidArgument, PermissionDenied, Unauthenticated
from ledger.trust import KeyInfo, TrustState


@dataclass(frozen=True)
class Rule:
    # The field naming the party the statement speaks for ("" when it speaks for the ledger
    # as a whole), e.g. "reporting_party" or "party.code".
    party_field: str
    # Roles a signer of that party may have; None: any party's keys may sign (consent).
    roles: frozenset[int] | None
    # That party's authority threshold must be met.
    authority_threshold: bool = False
    # A policy over all signers that must be met (e.g. the admission consent).
    consent: Callable[[TrustState], policy.Policy] | None = None

    def speaks_for(self, statement: Message) -> str:
        value: object = statement
        for name in self.party_field.split(".") if self.party_field else ():
            value = getattr(value, name)
        return str(value) if self.party_field else ""


REPORTERS = frozenset({pb.ROLE_MONITOR, pb.ROLE_OBSERVER})
AUTHORS = frozenset({pb.ROLE_MONITOR, pb.ROLE_OBSERVER, pb.ROLE_AUTHORITY})
AUTHORITIES = frozenset({pb.ROLE_AUTHORITY})
ATTESTERS = frozenset({pb.ROLE_AUTHORITY, pb.ROLE_OBSERVER})
INVESTIGATORS = AUTHORS | {pb.ROLE_INVESTIGATOR}

RULES: dict[str, Rule] = {
    statements.INCIDENT_REPORT: Rule("reporting_party", REPORTERS),
    statements.KEY_CHANGE: Rule("party", AUTHORITIES, authority_threshold=True),
    statements.PARTY_ADMISSION: Rule(
        "party.code", None, authority_threshold=True, consent=lambda s: s.admission_policy
    ),
    # Only the reporting party amends or retracts its report (checked against the report
    # itself in rules.admit); the other parties' authorities answer it.
    statements.AMENDMENT: Rule("party", AUTHORS),
    statements.RETRACTION: Rule("party", AUTHORS),
    statements.COUNTER_CLAIM: Rule("party", AUTHORITIES),
    statements.EVIDENCE: Rule("party", INVESTIGATORS),
    # Findings: drafted by a party's investigators, authorities or observers (in an
    # investigation, by its members only); attested or dissented by the parties the
    # finding's policy names (both checked in rules.admit).
    statements.FINDING: Rule("party", ATTESTERS | {pb.ROLE_INVESTIGATOR}),
    statements.ATTESTATION: Rule("party", ATTESTERS),
    statements.DISSENT: Rule("party", ATTESTERS),
    # Investigations: requested by a party's authorities or observers, answered by each
    # respondent's authorities; the terms are co-signed by the authority threshold of the
    # requester and of every respondent, and visits are logged by member keys only
    # (checked in rules.admit against the request and the terms in force).
    statements.INVESTIGATION_REQUEST: Rule("party", ATTESTERS),
    # An answer is the respondent's one turn: it needs the party's authority threshold.
    statements.INVESTIGATION_RESPONSE: Rule("party", AUTHORITIES, authority_threshold=True),
    statements.INVESTIGATION_TERMS: Rule("", None),
    statements.VISIT: Rule("party", INVESTIGATORS),
    # Prevention: notices come from a party's authorities; hotline messages and
    # acknowledgements from its monitors, observers or authorities.
    statements.NOTICE: Rule("party", AUTHORITIES),
    statements.HOTLINE: Rule("party", AUTHORS),
    statements.ACKNOWLEDGEMENT: Rule("party", AUTHORS),
    statements.BORDER_DATASET: Rule("", None, consent=lambda s: s.border_policy),
}


def authenticate(
    envelope: dsse.Envelope,
    state: TrustState,
    index: int,
    introduced: Mapping[str, KeyInfo] | None = None,
) -> list[KeyInfo]:
    """Every signature must be by a key valid at `index` (or one the statement itself
    introduces, for a party's admission) and must verify."""
    signers: list[KeyInfo] = []
    seen: set[str] = set()
    for i, sig in enumerate(envelope.signatures):
        field = f"signatures[{i}]"
        if sig.keyid in seen:
            raise InvalidArgument("the same key signed twice", field=f"{field}.keyid")
        seen.add(sig.keyid)
        key = (introduced or {}).get(sig.keyid) or state.signing_key(
            sig.keyid, index, field=f"{field}.keyid"
        )
        if not dsse.verify_signature(envelope, sig, key.public_key):
            raise Unauthenticated(
                f"signature does not verify for key {sig.keyid[:16]}... ({key.party} "
                f"{key.role_name})",
                field=f"{field}.sig",
            )
        signers.append(key)
    return signers


def authorize(kind: str, statement: Message, signers: list[KeyInfo], state: TrustState) -> str:
    """Check the signers against the kind's rule; return the party the statement speaks for."""
    rule = RULES.get(kind)
    if rule is None:
        raise InvalidArgument(f"unknown statement type {kind!r}", field="payloadType")
    party = rule.speaks_for(statement)
    if rule.party_field and party not in state.parties:
        raise PermissionDenied(f"unknown party {party!r}", field=rule.party_field)
    if rule.roles is not None:
        for key in signers:
            if key.party != party:
                raise PermissionDenied(
                    f"a key of {key.party} cannot speak for {party}", field=rule.party_field
                )
            if key.role not in rule.roles:
                name = kind.removeprefix("application/vnd.ceasefire.v1.").split("+")[0]
                raise PermissionDenied(
                    f"a {key.role_name} key may not sign {name}", field="payloadType"
                )
    if rule.authority_threshold and not state.authority_met(party, signers):
        need = state.parties[party].authority_threshold
        raise PermissionDenied(
            f"needs {need} of {party}'s authority keys (its threshold in the trust root); "
            f"{sum(1 for k in signers if k.party == party and k.role == pb.ROLE_AUTHORITY)} "
            "signed",
            field="signatures",
        )
    if rule.consent is not None:
        needed = rule.consent(state)
        if not policy.evaluate(needed, lambda p: state.principal_met(p, signers)):
            raise PermissionDenied(
                "the consent the trust root requires is not met", field="signatures"
            )
    return party
