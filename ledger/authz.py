"""Authentication (whose signatures are on an envelope) and authorization (may they say it).

One table decides which roles may make which statement for their own party. The server
and the offline verifier both call `authorize`, so they cannot disagree.
"""

from __future__ import annotations

from ceasefire.v1 import statements_pb2 as pb

from ledger import dsse, statements
from ledger.errors import InvalidArgument, PermissionDenied, Unauthenticated
from ledger.trust import KeyInfo, Trust

# statement kind -> roles whose keys may sign it, for the party the statement speaks for.
ALLOWED_ROLES: dict[str, frozenset[int]] = {
    statements.INCIDENT_REPORT: frozenset({pb.ROLE_MONITOR, pb.ROLE_OBSERVER}),
}


def authenticate(envelope: dsse.Envelope, trust: Trust) -> list[KeyInfo]:
    """Every signature must be by a key the trust root lists, and must verify."""
    signers: list[KeyInfo] = []
    seen: set[str] = set()
    for i, sig in enumerate(envelope.signatures):
        field = f"signatures[{i}]"
        if sig.keyid in seen:
            raise InvalidArgument("the same key signed twice", field=f"{field}.keyid")
        seen.add(sig.keyid)
        key = trust.keys.get(sig.keyid)
        if key is None:
            raise PermissionDenied(
                f"key {sig.keyid[:16]}... is not in the trust root", field=f"{field}.keyid"
            )
        if not dsse.verify_signature(envelope, sig, key.public_key):
            raise Unauthenticated(
                f"signature does not verify for key {sig.keyid[:16]}... ({key.party} "
                f"{key.role_name})",
                field=f"{field}.sig",
            )
        signers.append(key)
    return signers


def authorize(kind: str, party: str, signers: list[KeyInfo], trust: Trust) -> None:
    """Each signer must hold, for `party`, a role the table allows for this kind."""
    allowed = ALLOWED_ROLES.get(kind, frozenset())
    if party not in trust.parties:
        raise PermissionDenied(f"unknown party {party!r}", field="reporting_party")
    for key in signers:
        if key.party != party:
            raise PermissionDenied(
                f"a key of {key.party} cannot speak for {party}", field="reporting_party"
            )
        if key.role not in allowed:
            raise PermissionDenied(
                f"a {key.role_name} key may not sign {kind.split('.')[-1].split('+')[0]}",
                field="payloadType",
            )
