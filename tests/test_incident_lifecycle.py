"""Amendments and retractions by the author, counter-claims by the other party, the dossier
and the derived status: the same from the server and from the offline verifier."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nacl.signing import SigningKey

from ledger import sealing, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.verifier import replay
from tests.conftest import RunningLedger
from tests.reports import report, signed


def submit(running: RunningLedger, kind: str, statement: Message, key: SigningKey) -> int:
    envelope = dsse.sign(kind, statement.SerializeToString(), [key])
    return running.client.submit(envelope.to_json()).receipt.index


def refused(
    running: RunningLedger, kind: str, statement: Message, key: SigningKey
) -> tuple[grpc.StatusCode, str]:
    size = running.client.checkpoint().tree_size
    with pytest.raises(grpc.RpcError) as info:
        submit(running, kind, statement, key)
    assert running.client.checkpoint().tree_size == size
    assert isinstance(info.value, grpc.Call)
    return info.value.code(), info.value.details() or ""


def now() -> Timestamp:
    return to_timestamp(now_us())


def dossier(running: RunningLedger, index: int) -> api.GetDossierResponse:
    return running.client.stub.GetDossier(api.GetDossierRequest(incident_index=index))


def test_amend_counter_retract_with_status_and_dossier(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(
        signed(report("ARM", blames="AZE"), p.arm_monitor)
    ).receipt.index
    assert dossier(running, incident).status == api.INCIDENT_STATUS_REPORTED

    corrected = report("ARM", lat=40.8900, lon=45.4000, blames="AZE", narrative="Corrected place.")
    amendment = pb.IncidentAmendment(
        incident_index=incident, created_time=now(), party="ARM", corrected=corrected,
        reason="the post's GPS was off by a kilometre",
    )  # fmt: skip
    amended = submit(running, statements.AMENDMENT, amendment, p.arm_monitor)
    denial = pb.CounterClaim(
        incident_index=incident, created_time=now(), party="AZE",
        kind=pb.RESPONSE_KIND_DENIAL, narrative="No fire from our positions that night.",
        narrative_language="en",
    )  # fmt: skip
    answered = submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    got = dossier(running, incident)
    assert got.status == api.INCIDENT_STATUS_DISPUTED
    assert [(e.index, e.relation) for e in got.entries] == [
        (incident, "report"),
        (amended, "amendment"),
        (answered, "counter_claim"),
    ]
    timeline = {t.index: t.status for t in running.client.timeline()}
    assert timeline[incident] == api.INCIDENT_STATUS_DISPUTED

    retraction = pb.IncidentRetraction(
        incident_index=incident, created_time=now(), party="ARM", reason="double-counted"
    )
    submit(running, statements.RETRACTION, retraction, p.arm_authority)
    assert dossier(running, incident).status == api.INCIDENT_STATUS_RETRACTED
    # Retracted once: no second retraction, no amendment after it.
    again = pb.IncidentRetraction(incident_index=incident, created_time=now(), party="ARM")
    code, msg = refused(running, statements.RETRACTION, again, p.arm_monitor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "was retracted at index" in msg

    # The original report is still there, byte for byte, and the verifier derives the same.
    entries = [(e.index, e.entry) for e in running.client.entries(0, 0)]
    audit = replay(entries, borders=[running.ledger.borders])
    assert audit.status(incident) == api.INCIDENT_STATUS_RETRACTED
    assert audit.geo_rechecked == 2  # the report and the amendment's corrected place


def test_only_the_author_amends_and_only_another_party_answers(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    by_other = pb.IncidentAmendment(
        incident_index=incident, created_time=now(), party="AZE",
        corrected=report("AZE", lat=41.0933, lon=45.3661),
    )  # fmt: skip
    code, msg = refused(running, statements.AMENDMENT, by_other, p.aze_monitor)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "only ARM, the reporting party" in msg
    impersonated = pb.IncidentAmendment(
        incident_index=incident, created_time=now(), party="ARM", corrected=report("ARM")
    )
    code, msg = refused(running, statements.AMENDMENT, impersonated, p.aze_monitor)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "cannot speak for ARM" in msg
    own_answer = pb.CounterClaim(
        incident_index=incident, created_time=now(), party="ARM", kind=pb.RESPONSE_KIND_DENIAL
    )
    code, msg = refused(running, statements.COUNTER_CLAIM, own_answer, p.arm_authority)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not answer its own report" in msg
    by_monitor = pb.CounterClaim(
        incident_index=incident, created_time=now(), party="AZE", kind=pb.RESPONSE_KIND_DENIAL
    )
    code, msg = refused(running, statements.COUNTER_CLAIM, by_monitor, p.aze_monitor)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "monitor key may not sign" in msg
    nowhere = pb.IncidentRetraction(incident_index=999, created_time=now(), party="ARM")
    code, msg = refused(running, statements.RETRACTION, nowhere, p.arm_monitor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "entry 999 is not an incident report" in msg
    not_a_report = pb.IncidentRetraction(incident_index=0, created_time=now(), party="ARM")
    code, _ = refused(running, statements.RETRACTION, not_a_report, p.arm_monitor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    ack = pb.CounterClaim(
        incident_index=incident, created_time=now(), party="AZE",
        kind=pb.RESPONSE_KIND_ACKNOWLEDGEMENT,
    )  # fmt: skip
    submit(running, statements.COUNTER_CLAIM, ack, p.aze_authority)
    assert dossier(running, incident).status == api.INCIDENT_STATUS_ACKNOWLEDGED
    with pytest.raises(grpc.RpcError) as info:
        dossier(running, 0)
    assert isinstance(info.value, grpc.Call) and info.value.code() == grpc.StatusCode.NOT_FOUND


def evidence(
    party: str,
    incident: int,
    content: bytes,
    blob: pb.BlobKind.ValueType,
    recipients: dict[str, bytes],
) -> tuple[pb.EvidenceRecord, dict[str, bytes]]:
    record = pb.EvidenceRecord(
        created_time=now(), party=party, incident_index=incident,
        sha256=hashlib.sha256(content).hexdigest(), media_type="image/jpeg",
        size=len(content), capture_time=now(), description="crater, looking north", blob=blob,
    )  # fmt: skip
    if blob == pb.BLOB_KIND_NONE:
        return record, {}
    stored = content if blob == pb.BLOB_KIND_PLAIN else sealing.seal(content, recipients)
    record.blob_sha256 = hashlib.sha256(stored).hexdigest()
    record.blob_size = len(stored)
    record.sealed_to_key_ids.extend(sorted(recipients))
    return record, {"blob": stored}


def test_evidence_sealed_to_chosen_keys(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    photo = b"\xff\xd8 a photo of the crater \xff\xd9" * 100
    members = {
        dsse.key_id(bytes(k.verify_key)): bytes(k.verify_key)
        for k in (p.arm_authority, p.aze_authority)
    }
    record, files = evidence("ARM", incident, photo, pb.BLOB_KIND_SEALED, members)
    envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [p.arm_monitor])
    index = running.client.submit_with_blobs(envelope.to_json(), files).receipt.index
    stored = running.client.blob(record.blob_sha256)
    assert photo not in stored  # the ledger holds the sealed bytes only
    assert sealing.open_sealed(stored, p.aze_authority) == photo  # a member opens it
    assert sealing.open_sealed(stored, p.arm_authority) == photo
    with pytest.raises(sealing.SealingError, match="not sealed to your key"):
        sealing.open_sealed(stored, p.arm_monitor)  # the submitter is not a member
    assert [(e.index, e.relation) for e in dossier(running, incident).entries][-1] == (
        index,
        "evidence",
    )

    plain, plain_files = evidence("AZE", incident, b"sensor log", pb.BLOB_KIND_PLAIN, {})
    env = dsse.sign(statements.EVIDENCE, plain.SerializeToString(), [p.aze_monitor])
    running.client.submit_with_blobs(env.to_json(), plain_files)
    assert running.client.blob(plain.sha256) == b"sensor log"
    hash_only, _ = evidence("AZE", 0, b"held by the team", pb.BLOB_KIND_NONE, {})
    submit(running, statements.EVIDENCE, hash_only, p.aze_monitor)

    # Refused: a blob sealed to other keys than listed, bytes that do not match, unknown keys.
    wrong, wrong_files = evidence("ARM", incident, photo, pb.BLOB_KIND_SEALED, members)
    del wrong.sealed_to_key_ids[1:]
    env = dsse.sign(statements.EVIDENCE, wrong.SerializeToString(), [p.arm_monitor])
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit_with_blobs(env.to_json(), wrong_files)
    assert "not sealed to exactly the listed keys" in str(info.value)
    stranger = {dsse.key_id(bytes(p.outsider.verify_key)): bytes(p.outsider.verify_key)}
    odd, odd_files = evidence("ARM", incident, photo, pb.BLOB_KIND_SEALED, stranger)
    env = dsse.sign(statements.EVIDENCE, odd.SerializeToString(), [p.arm_monitor])
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit_with_blobs(env.to_json(), odd_files)
    assert "not a key on this ledger" in str(info.value)
    entries = [(e.index, e.entry) for e in running.client.entries(0, 0)]
    replay(entries)
