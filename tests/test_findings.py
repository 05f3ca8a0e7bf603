"""Jointly attested findings: the end-to-end scenario of a joint investigation's outcome,
and the ways an attestation is refused. The offline verifier derives the same statuses."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from nacl.signing import SigningKey

from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.findings import FindingInfo
from ledger.formats import dsse
from ledger.verifier import replay
from tests.conftest import RunningLedger
from tests.reports import report, signed


def submit(
    running: RunningLedger, kind: str, statement: Message, *signers: SigningKey
) -> tuple[int, bytes]:
    envelope = dsse.sign(kind, statement.SerializeToString(), list(signers))
    index = running.client.submit(envelope.to_json()).receipt.index
    return index, envelope.payload


def refused(
    running: RunningLedger, kind: str, statement: Message, *signers: SigningKey
) -> tuple[grpc.StatusCode, str]:
    size = running.client.checkpoint().tree_size
    with pytest.raises(grpc.RpcError) as info:
        submit(running, kind, statement, *signers)
    assert running.client.checkpoint().tree_size == size
    assert isinstance(info.value, grpc.Call)
    return info.value.code(), info.value.details() or ""


def status(running: RunningLedger, index: int) -> int:
    return running.client.dossier(index).status


def draft(
    incidents: list[int], outcome: pb.FindingOutcome.ValueType, policy: str = "joint"
) -> pb.FindingDraft:
    blamed = "AZE" if outcome == pb.FINDING_OUTCOME_CONFIRMED else ""
    return pb.FindingDraft(
        created_time=to_timestamp(now_us()), party="ARM", incident_indexes=incidents,
        policy=policy, outcome=outcome, attribution=blamed,
        reasoning="Crater analysis and both posts' logs agree on the time and direction.",
        reasoning_language="en",
    )  # fmt: skip


def attestation(finding: int, payload: bytes, party: str) -> pb.Attestation:
    return pb.Attestation(
        finding_index=finding, draft_sha256=hashlib.sha256(payload).hexdigest(), party=party,
        created_time=to_timestamp(now_us()),
    )  # fmt: skip


def test_joint_investigation_outcomes(running: RunningLedger) -> None:
    p = running.parties
    arm = running.client.submit(signed(report("ARM", blames="AZE"), p.arm_monitor)).receipt.index
    aze = running.client.submit(
        signed(report("AZE", lat=41.0933, lon=45.3661, hours_ago=30, blames="ARM"), p.aze_monitor)
    ).receipt.index
    denial = pb.CounterClaim(
        incident_index=arm, created_time=to_timestamp(now_us()), party="AZE",
        kind=pb.RESPONSE_KIND_DENIAL,
    )  # fmt: skip
    submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    assert status(running, arm) == api.INCIDENT_STATUS_DISPUTED

    # A finding confirming ARM's report, attested by both: jointly confirmed.
    first, payload = submit(
        running, statements.FINDING, draft([arm], pb.FINDING_OUTCOME_CONFIRMED), p.arm_authority
    )
    assert status(running, arm) == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    submit(running, statements.ATTESTATION, attestation(first, payload, "ARM"), p.arm_authority)
    assert status(running, arm) == api.INCIDENT_STATUS_UNDER_INVESTIGATION  # AZE has not yet
    submit(running, statements.ATTESTATION, attestation(first, payload, "AZE"), p.aze_authority)
    assert status(running, arm) == api.INCIDENT_STATUS_JOINTLY_CONFIRMED

    # A second finding: one attestation, one dissent. Not attested; the dissent is shown.
    second, payload2 = submit(
        running, statements.FINDING, draft([aze], pb.FINDING_OUTCOME_NOT_CONFIRMED), p.arm_authority
    )
    submit(running, statements.ATTESTATION, attestation(second, payload2, "ARM"), p.arm_authority)
    dissent = pb.Dissent(
        finding_index=second, draft_sha256=hashlib.sha256(payload2).hexdigest(), party="AZE",
        created_time=to_timestamp(now_us()), reasons="Our post's log shows the fire.",
        reasons_language="en",
    )  # fmt: skip
    dissented, _ = submit(running, statements.DISSENT, dissent, p.aze_authority)
    got = running.client.dossier(aze)
    assert got.status == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    assert [e.relation for e in got.entries][-3:] == ["finding", "attestation", "dissent"]
    assert got.entries[-1].index == dissented

    # The offline verifier, from the entries alone, derives the same statuses.
    audit = replay([(e.index, e.entry) for e in running.client.entries(0, 0)])
    for incident in (arm, aze):
        assert audit.status(incident) == status(running, incident)
    confirmed, contested = audit.subjects[first], audit.subjects[second]
    assert isinstance(confirmed, FindingInfo) and isinstance(contested, FindingInfo)
    assert confirmed.attested_at is not None
    assert contested.attested_at is None and "AZE" in contested.dissented


def test_attestations_that_are_refused(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    finding, payload = submit(
        running,
        statements.FINDING,
        draft([incident], pb.FINDING_OUTCOME_INCONCLUSIVE),
        p.arm_authority,
    )
    only_arm, payload_arm = submit(
        running, statements.FINDING,
        draft([incident], pb.FINDING_OUTCOME_INCONCLUSIVE, policy="arm-only"), p.arm_authority,
    )  # fmt: skip
    # A party the policy does not name.
    code, msg = refused(
        running, statements.ATTESTATION, attestation(only_arm, payload_arm, "AZE"), p.aze_authority
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not name AZE" in msg
    # Another text than the draft.
    code, msg = refused(
        running,
        statements.ATTESTATION,
        attestation(finding, b"another text", "ARM"),
        p.arm_authority,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not the digest of the draft" in msg
    # A monitor cannot attest; another party's key cannot attest for ARM.
    code, _ = refused(
        running, statements.ATTESTATION, attestation(finding, payload, "ARM"), p.arm_monitor
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, msg = refused(
        running, statements.ATTESTATION, attestation(finding, payload, "ARM"), p.aze_authority
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot speak for ARM" in msg
    # Twice.
    submit(running, statements.ATTESTATION, attestation(finding, payload, "ARM"), p.arm_authority)
    code, msg = refused(
        running, statements.ATTESTATION, attestation(finding, payload, "ARM"), p.arm_authority
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "already attested" in msg
    # After the key's revocation (AZE rotates its authority key first).
    new_authority = SigningKey.generate()
    rotation = pb.KeyChange(
        party="AZE", created_time=to_timestamp(now_us()),
        add=[pb.PartyKey(public_key=keys.public_bytes(new_authority), role=pb.ROLE_AUTHORITY)],
        revoke_key_ids=[dsse.key_id(keys.public_bytes(p.aze_authority))],
    )  # fmt: skip
    submit(running, statements.KEY_CHANGE, rotation, p.aze_authority)
    code, msg = refused(
        running, statements.ATTESTATION, attestation(finding, payload, "AZE"), p.aze_authority
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked at index" in msg
    submit(running, statements.ATTESTATION, attestation(finding, payload, "AZE"), new_authority)
    assert status(running, incident) == api.INCIDENT_STATUS_INCONCLUSIVE
    # A finding about something that is not an incident, or under an unknown policy.
    code, _ = refused(
        running, statements.FINDING, draft([0], pb.FINDING_OUTCOME_CONFIRMED), p.arm_authority
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = refused(
        running,
        statements.FINDING,
        draft([incident], pb.FINDING_OUTCOME_CONFIRMED, policy="nope"),
        p.arm_authority,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a finding policy" in msg
    replay([(e.index, e.entry) for e in running.client.entries(0, 0)])
