"""Findings of joint investigations: a draft, then attestations and dissents over its exact
digest, until the trust root's named policy is met. Pure and deterministic: the server and
the verifier compute the same state from the same entries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ceasefire.v1 import statements_pb2 as pb

from ledger import policy
from ledger.trust import KeyInfo, TrustState


@dataclass(frozen=True)
class FindingInfo:
    index: int
    draft_sha256: str
    policy: str
    outcome: int
    incidents: tuple[int, ...]
    # Party -> the index of its attestation or dissent.
    attested: dict[str, int] = field(default_factory=dict)
    dissented: dict[str, int] = field(default_factory=dict)
    # Key ids of every attestation's signers, each counted once.
    signers: frozenset[str] = frozenset()
    # The index of the attestation that met the policy, if any has.
    attested_at: int | None = None


FindingLookup = Callable[[int], FindingInfo | None]


def from_draft(index: int, draft_sha256: str, draft: pb.FindingDraft) -> FindingInfo:
    return FindingInfo(
        index, draft_sha256, draft.policy, draft.outcome, tuple(draft.incident_indexes)
    )


def parties_named(info: FindingInfo, state: TrustState) -> set[str]:
    return {p.party for p in policy.principals(state.finding_policies[info.policy])}


def met(info: FindingInfo, state: TrustState) -> bool:
    keys: list[KeyInfo] = [state.keys[k] for k in info.signers if k in state.keys]
    return policy.evaluate(
        state.finding_policies[info.policy], lambda p: state.principal_met(p, keys)
    )


def attest(
    info: FindingInfo,
    index: int,
    party: str,
    key_ids: frozenset[str],
    meets: Callable[[FindingInfo], bool],
) -> FindingInfo:
    """The finding after an attestation at `index`; `meets` says whether the attestations
    so far meet its policy (judged by the trust state at that index)."""
    after = replace(info, attested={**info.attested, party: index}, signers=info.signers | key_ids)
    if after.attested_at is None and meets(after):
        after = replace(after, attested_at=index)
    return after


def dissent(info: FindingInfo, index: int, party: str) -> FindingInfo:
    return replace(info, dissented={**info.dissented, party: index})
