"""Whose cosignatures make a checkpoint trusted: the trust state's witnesses and policy.

The mechanics (is this line a valid C2SP cosignature by that key?) are in
ledger/formats/cosignature.py; this is the policy, shared by the log (which serves the newest
checkpoint that meets it), the client library and the auditors. Pure: no I/O.

A witness is a party's key of role witness with a C2SP key name. The trust root's
`witness_policy` is a policy over PARTY.witness principals ("AND(ARM.witness,
AZE.witness)": one witness of each party): a principal is met by one valid cosignature of
a witness key of that party. A witness signs for one party, and is counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ceasefire.v1 import statements_pb2 as pb

from ledger import policy
from ledger.formats.cosignature import CosignatureVerifier, cosignatures
from ledger.formats.note import split_note
from ledger.trust import KeyInfo, TrustState


class QuorumError(ValueError):
    """A checkpoint's cosignatures do not meet the witness policy (or there is none)."""


@dataclass(frozen=True)
class Witness:
    key: KeyInfo
    verifier: CosignatureVerifier

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class Cosigned:
    """One valid cosignature: by which party's witness, under which name, and when."""

    party: str
    name: str
    key_id: str
    timestamp: int


@dataclass(frozen=True)
class Witnessing:
    """What the cosignatures on one checkpoint amount to under the policy."""

    cosigned: tuple[Cosigned, ...]
    policy: str  # the policy's text; empty when the trust root names none
    met: bool

    def describe(self) -> str:
        """One line, e.g. "cosigned by ARM witness.arm/w1; witness policy AND(...): met"."""
        by = ", ".join(f"{c.party} {c.name}" for c in self.cosigned) or "no witness"
        if not self.policy:
            return f"cosigned by {by}; the trust root names no witness policy"
        return f"cosigned by {by}; witness policy {self.policy}: {'met' if self.met else 'NOT met'}"

    def require(self) -> None:
        if not self.met:
            raise QuorumError(self.describe())


def witnesses(trust: TrustState) -> list[Witness]:
    """The witness keys in force (not revoked), each with its cosignature verifier."""
    return [
        Witness(k, CosignatureVerifier(k.witness_name, k.public_key))
        for k in trust.keys.values()
        if k.role == pb.ROLE_WITNESS and k.revoked_at is None and k.witness_name
    ]


def witnessing(signed_note: str, trust: TrustState) -> Witnessing:
    """The valid cosignatures of the trust state's witnesses on a signed checkpoint, and
    whether they meet its witness policy. Lines by other keys are ignored; a line that
    names a known witness key but does not verify makes the note malformed (NoteError), as
    C2SP signed-note says."""
    found = cosigned_lines(signed_note, trust)
    by_id = {w.key.key_id: w for w in witnesses(trust)}
    cosigned = tuple(
        sorted(
            (
                Cosigned(by_id[kid].key.party, by_id[kid].name, kid, t)
                for kid, (_, t) in found.items()
            ),
            key=lambda c: (c.party, c.name),
        )
    )
    if trust.witness_policy is None:
        return Witnessing(cosigned, "", False)
    signers = [by_id[kid].key for kid in found]
    met = policy.evaluate(trust.witness_policy, lambda p: trust.principal_met(p, signers))
    return Witnessing(cosigned, trust.witness_policy_text, met)


def cosigned_lines(signed_note: str, trust: TrustState) -> dict[str, tuple[str, int]]:
    """The valid cosignature lines on a note (or in a witness's answer appended to one) of
    the trust state's witnesses: by witness key id, each line with its timestamp."""
    known = {(w.verifier.name, w.verifier.key_hash): w for w in witnesses(trust)}
    verifiers = [w.verifier for w in known.values()]
    valid = {(v.name, v.key_hash): t for v, t in cosignatures(signed_note, verifiers)}
    lines: dict[str, tuple[str, int]] = {}
    for sig in split_note(signed_note)[1]:  # the first valid line of each witness
        key = (sig.name, sig.key_hash)
        if key in valid and known[key].key.key_id not in lines:
            lines[known[key].key.key_id] = (sig.line(), valid[key])
    return lines
