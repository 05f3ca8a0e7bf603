"""Authentication (whose valid keys signed an envelope) and authorization (may they say it).

Each statement kind's `Rule` (declared with the kind in `ledger/kinds.py`) says which party
it speaks for and whose signatures it needs. The server (at the index it assigns) and the
offline verifier (at the index it replays) both call `authorize` through the judgment, so
they cannot disagree. docs/authorization.md shows the same rules as a table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from ledger import policy
from ledger.errors import InvalidArgument, PermissionDenied, Unauthenticated, shown
from ledger.formats import dsse
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


def authorize(
    rule: Rule, name: str, statement: Message, signers: list[KeyInfo], state: TrustState
) -> str:
    """Check the signers of statement kind `name` against its rule; return the party the
    statement speaks for."""
    party = rule.speaks_for(statement)
    if rule.party_field and party not in state.parties:
        raise PermissionDenied(f"unknown party {shown(party)}", field=rule.party_field)
    if rule.roles is not None:
        for key in signers:
            if key.party != party:
                raise PermissionDenied(
                    f"a key of {key.party} cannot speak for {party}", field=rule.party_field
                )
            if key.role not in rule.roles:
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
