"""Joint investigations through gRPC: the issue's end-to-end scenario (both parties report,
one counter-claims, an investigation is requested and accepted, evidence is exchanged
sealed, one finding is attested by both, a second gets an attestation and a dissent), the
deadline, changed terms, and every refusal. The offline verifier agrees on every status."""

from __future__ import annotations

import hashlib

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from nacl.signing import SigningKey

from geo.borders import BorderDataset
from ledger import sealing, statements
from ledger.clock import now_us, to_timestamp
from ledger.findings import FindingInfo
from ledger.formats import dsse
from ledger.service import Ledger
from ledger.verifier import replay
from tests.conftest import LogClock, RunningLedger
from tests.reports import HOUR_US, report, signed
from tests.test_findings import attestation, refused, submit

ARM_POST = (40.8811, 45.3875)
AZE_POST = (41.0933, 45.3661)


def now() -> Timestamp:
    return to_timestamp(now_us())


def kid(key: SigningKey) -> str:
    return dsse.key_id(bytes(key.verify_key))


def request(
    incidents: list[int], *, hours: float = 24, party: str = "ARM"
) -> pb.InvestigationRequest:
    return pb.InvestigationRequest(
        created_time=now(), party=party, incident_indexes=incidents,
        respondents=["AZE" if party == "ARM" else "ARM"],
        answer_by=to_timestamp(now_us() + int(hours * HOUR_US)),
        scope="Shelling near the Berd post and the reply fire", scope_language="en",
    )  # fmt: skip


def answer(
    investigation: int, decision: pb.InvestigationDecision.ValueType, party: str = "AZE"
) -> pb.InvestigationResponse:
    return pb.InvestigationResponse(
        investigation_index=investigation, created_time=now(), party=party, decision=decision
    )


def terms(
    investigation: int,
    members: list[SigningKey],
    supersedes: int = 0,
    vocabulary: tuple[pb.FindingOutcome.ValueType, ...] = (
        pb.FINDING_OUTCOME_CONFIRMED,
        pb.FINDING_OUTCOME_NOT_CONFIRMED,
        pb.FINDING_OUTCOME_INCONCLUSIVE,
    ),
) -> pb.InvestigationTerms:
    return pb.InvestigationTerms(
        investigation_index=investigation, created_time=now(), supersedes_index=supersedes,
        member_key_ids=[kid(k) for k in members],
        sites=[
            pb.InvestigationSite(
                name="Berd post", center=pb.GeoPoint(latitude=ARM_POST[0], longitude=ARM_POST[1]),
                radius_m=800,
            ),
            pb.InvestigationSite(
                name="Gushchu post",
                center=pb.GeoPoint(latitude=AZE_POST[0], longitude=AZE_POST[1]), radius_m=800,
            ),
        ],
        visit_procedure="Joint team of four; photographs logged by hash the same day.",
        visit_procedure_language="en",
        outcome_vocabulary=vocabulary,
        publication_rule=pb.PUBLICATION_RULE_SEALED_UNTIL_FINDING,
    )  # fmt: skip


def visit(
    investigation: int,
    party: str,
    site: str,
    outcome: pb.VisitOutcome.ValueType,
    present: list[SigningKey],
    denied_by: str = "",
) -> pb.VisitRecord:
    return pb.VisitRecord(
        investigation_index=investigation, created_time=now(), party=party, site=site,
        started=to_timestamp(now_us() - 120_000_000), ended=to_timestamp(now_us() - 60_000_000),
        outcome=outcome, denied_by=denied_by, members_present=[kid(k) for k in present],
        notes="Arrived 09:10; escorted by the local commander.", notes_language="en",
    )  # fmt: skip


def ancient_visit(investigation: int) -> pb.VisitRecord:
    v = visit(investigation, "AZE", "Gushchu post", pb.VISIT_OUTCOME_COMPLETED, [])
    v.started.FromSeconds(631_152_000)  # 1990
    return v


def sealed_evidence(
    party: str, investigation: int, incident: int, content: bytes, recipients: list[SigningKey]
) -> tuple[pb.EvidenceRecord, dict[str, bytes]]:
    box = sealing.seal(content, {kid(k): bytes(k.verify_key) for k in recipients})
    record = pb.EvidenceRecord(
        created_time=now(), party=party, incident_index=incident,
        investigation_index=investigation, sha256=hashlib.sha256(content).hexdigest(),
        media_type="image/jpeg", size=len(content), capture_time=now(),
        description="fragment, tail fin", blob=pb.BLOB_KIND_SEALED,
        blob_sha256=hashlib.sha256(box).hexdigest(), blob_size=len(box),
        sealed_to_key_ids=sorted(kid(k) for k in recipients),
    )  # fmt: skip
    return record, {"blob": box}


def finding(
    investigation: int, party: str, incidents: list[int], outcome: pb.FindingOutcome.ValueType
) -> pb.FindingDraft:
    return pb.FindingDraft(
        created_time=now(), party=party, incident_indexes=incidents, policy="joint",
        outcome=outcome, attribution="AZE" if outcome == pb.FINDING_OUTCOME_CONFIRMED else "",
        reasoning="Crater and fragment analysis; both posts' logs agree on time and bearing.",
        reasoning_language="en", investigation_index=investigation,
    )  # fmt: skip


def code_of(error: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    assert isinstance(error.value, grpc.Call)
    return error.value.code()


def under_way(running: RunningLedger) -> tuple[int, int, int, int]:
    """Two reports, an investigation of both requested by ARM, accepted by AZE, with terms
    co-signed by both: (ARM's incident, AZE's incident, the investigation, the terms)."""
    p = running.parties
    arm = running.client.submit(signed(report("ARM", blames="AZE"), p.arm_monitor)).receipt.index
    aze = running.client.submit(
        signed(report("AZE", lat=AZE_POST[0], lon=AZE_POST[1], hours_ago=3), p.aze_monitor)
    ).receipt.index
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm, aze]), p.arm_authority)
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT),
        p.aze_authority,
    )
    agreed, _ = submit(
        running, statements.INVESTIGATION_TERMS,
        terms(inv, [p.arm_investigator, p.aze_investigator]), p.arm_authority, p.aze_authority,
    )  # fmt: skip
    return arm, aze, inv, agreed


def test_joint_investigation_scenario(running: RunningLedger) -> None:
    p, client = running.parties, running.client
    arm = client.submit(signed(report("ARM", blames="AZE"), p.arm_monitor)).receipt.index
    aze = client.submit(
        signed(
            report("AZE", lat=AZE_POST[0], lon=AZE_POST[1], hours_ago=3, blames="ARM"),
            p.aze_monitor,
        )
    ).receipt.index
    denial = pb.CounterClaim(
        incident_index=arm, created_time=now(), party="AZE", kind=pb.RESPONSE_KIND_DENIAL,
        narrative="No fire from our positions that night.", narrative_language="en",
    )  # fmt: skip
    submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    assert client.dossier(arm).status == api.INCIDENT_STATUS_DISPUTED

    # Requested by ARM, naming both incidents; AZE has a day to answer.
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm, aze]), p.arm_authority)
    got = client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_REQUESTED and list(got.awaiting) == ["AZE"]
    assert (inv, "investigation_request") in [
        (e.index, e.relation) for e in client.dossier(arm).entries
    ]
    assert client.dossier(arm).status == api.INCIDENT_STATUS_DISPUTED  # a request alone

    accepted, _ = submit(
        running, statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT), p.aze_authority,
    )  # fmt: skip
    got = client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_ACCEPTED and not got.awaiting
    assert client.dossier(arm).status == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    assert client.dossier(aze).status == api.INCIDENT_STATUS_UNDER_INVESTIGATION

    members = [p.arm_investigator, p.aze_investigator]
    agreed, _ = submit(
        running, statements.INVESTIGATION_TERMS, terms(inv, members),
        p.arm_authority, p.aze_authority,
    )  # fmt: skip
    got = client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_UNDER_WAY and got.terms_index == agreed
    assert sorted(got.member_key_ids) == sorted(kid(k) for k in members)

    # Evidence exchanged sealed to the members: the ledger holds the hash and sealed bytes.
    photo = b"\xff\xd8 fragment of a 120 mm mortar round \xff\xd9" * 200
    record, files = sealed_evidence("ARM", inv, arm, photo, members)
    envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [p.arm_investigator])
    shared = client.submit_with_blobs(envelope.to_json(), files).receipt.index
    stored = client.blob(record.blob_sha256)
    assert photo not in stored and hashlib.sha256(stored).hexdigest() == record.blob_sha256
    assert sealing.open_sealed(stored, p.aze_investigator) == photo
    with pytest.raises(sealing.SealingError):
        sealing.open_sealed(stored, p.aze_authority)  # not a member

    seen, _ = submit(
        running, statements.VISIT,
        visit(inv, "ARM", "Berd post", pb.VISIT_OUTCOME_COMPLETED, members), p.arm_investigator,
    )  # fmt: skip
    denied, _ = submit(
        running, statements.VISIT,
        visit(inv, "AZE", "Gushchu post", pb.VISIT_OUTCOME_ACCESS_DENIED, members, "ARM"),
        p.aze_investigator,
    )  # fmt: skip

    # The first finding: confirmed, attested by both parties' authorities.
    first, draft1 = submit(
        running, statements.FINDING,
        finding(inv, "ARM", [arm], pb.FINDING_OUTCOME_CONFIRMED), p.arm_investigator,
    )  # fmt: skip
    armed, _ = submit(
        running, statements.ATTESTATION, attestation(first, draft1, "ARM"), p.arm_authority
    )
    assert client.dossier(arm).status == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    met, _ = submit(
        running, statements.ATTESTATION, attestation(first, draft1, "AZE"), p.aze_authority
    )
    assert client.dossier(arm).status == api.INCIDENT_STATUS_JOINTLY_CONFIRMED

    # The second: AZE attests, ARM dissents; the dissent stands beside it.
    second, draft2 = submit(
        running, statements.FINDING,
        finding(inv, "AZE", [aze], pb.FINDING_OUTCOME_NOT_CONFIRMED), p.aze_investigator,
    )  # fmt: skip
    azed, _ = submit(
        running, statements.ATTESTATION, attestation(second, draft2, "AZE"), p.aze_authority
    )
    dissent = pb.Dissent(
        finding_index=second, draft_sha256=hashlib.sha256(draft2).hexdigest(), party="ARM",
        created_time=now(), reasons="The crater bearing points to AZE positions.",
        reasons_language="en",
    )  # fmt: skip
    dissented, _ = submit(running, statements.DISSENT, dissent, p.arm_authority)
    assert client.dossier(aze).status == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    assert (dissented, "dissent") in [(e.index, e.relation) for e in client.dossier(aze).entries]

    got = client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_UNDER_WAY  # AZE's incident is not settled
    # Every entry, with the findings' attestations (the one that met the policy) and dissents.
    assert [(e.index, e.relation) for e in got.entries] == [
        (inv, "request"), (accepted, "response"), (agreed, "terms"), (shared, "evidence"),
        (seen, "visit"), (denied, "visit"), (first, "finding"), (armed, "attestation"),
        (met, "joint_finding"), (second, "finding"), (azed, "attestation"),
        (dissented, "dissent"),
    ]  # fmt: skip

    # The offline verifier, from the entries alone, derives the same statuses.
    audit = replay((e.index, e.entry) for e in client.entries(0, 0))
    for incident in (arm, aze):
        assert audit.status(incident) == client.dossier(incident).status
    as_of = int(got.as_of.seconds * 1_000_000 + got.as_of.nanos // 1000)
    assert audit.investigation_status(inv, as_of) == got.status
    one, two = audit.subjects[first], audit.subjects[second]
    assert isinstance(one, FindingInfo) and isinstance(two, FindingInfo)
    assert one.attested_at is not None and two.attested_at is None and "ARM" in two.dissented


def test_concluded_once_every_incident_has_a_joint_finding(running: RunningLedger) -> None:
    p = running.parties
    arm, aze, inv, _ = under_way(running)
    f, draft = submit(
        running, statements.FINDING,
        finding(inv, "ARM", [arm, aze], pb.FINDING_OUTCOME_INCONCLUSIVE), p.arm_investigator,
    )  # fmt: skip
    for party, key in (("ARM", p.arm_authority), ("AZE", p.aze_authority)):
        submit(running, statements.ATTESTATION, attestation(f, draft, party), key)
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_CONCLUDED
    assert running.client.dossier(aze).status == api.INCIDENT_STATUS_INCONCLUSIVE
    audit = replay((e.index, e.entry) for e in running.client.entries(0, 0))
    assert audit.investigation_status(inv) == api.INVESTIGATION_STATUS_CONCLUDED


def test_no_answer_by_the_deadline_is_visible(running: RunningLedger, log_clock: LogClock) -> None:
    p = running.parties
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    inv, _ = submit(
        running, statements.INVESTIGATION_REQUEST, request([arm], hours=1.5), p.arm_authority
    )
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_REQUESTED
    log_clock.ahead_us = 2 * HOUR_US  # the log's clock passes the deadline
    got = running.client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_UNANSWERED and list(got.awaiting) == ["AZE"]
    code, msg = refused(
        running, statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT), p.aze_authority,
    )  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "deadline to answer passed" in msg
    audit = replay((e.index, e.entry) for e in running.client.entries(0, 0))
    assert (
        audit.investigation_status(inv) == api.INVESTIGATION_STATUS_REQUESTED
    )  # as of its last entry
    as_of = got.as_of.seconds * 1_000_000 + got.as_of.nanos // 1000
    assert audit.investigation_status(inv, as_of) == api.INVESTIGATION_STATUS_UNANSWERED


def test_declined_investigation_gets_no_terms(running: RunningLedger) -> None:
    p = running.parties
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm]), p.arm_authority)
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_DECLINE),
        p.aze_authority,
    )
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_DECLINED
    assert running.client.dossier(arm).status == api.INCIDENT_STATUS_REPORTED
    code, msg = refused(
        running, statements.INVESTIGATION_TERMS, terms(inv, [p.arm_investigator]),
        p.arm_authority, p.aze_authority,
    )  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "declined AZE" in msg
    code, msg = refused(
        running, statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT), p.aze_authority,
    )  # fmt: skip
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "AZE answered at index" in msg


def test_changed_terms_are_co_signed_again_and_apply_from_their_index(
    running: RunningLedger,
) -> None:
    p = running.parties
    arm, _, inv, first = under_way(running)
    only_aze = terms(
        inv, [p.aze_investigator], supersedes=first, vocabulary=(pb.FINDING_OUTCOME_INCONCLUSIVE,)
    )
    code, msg = refused(running, statements.INVESTIGATION_TERMS, only_aze, p.aze_authority)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "missing ARM" in msg
    stale = terms(inv, [p.aze_investigator])  # names no terms: the first are in force
    code, msg = refused(
        running, statements.INVESTIGATION_TERMS, stale, p.arm_authority, p.aze_authority
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"at index {first}" in msg
    second, _ = submit(
        running, statements.INVESTIGATION_TERMS, only_aze, p.arm_authority, p.aze_authority
    )
    assert running.client.investigation(inv).terms_index == second
    # ARM's investigator is no longer a member: its visit is refused from here on.
    code, msg = refused(
        running, statements.VISIT,
        visit(inv, "ARM", "Berd post", pb.VISIT_OUTCOME_COMPLETED, []), p.arm_investigator,
    )  # fmt: skip
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not a member" in msg
    confirmed = finding(inv, "AZE", [arm], pb.FINDING_OUTCOME_CONFIRMED)
    code, msg = refused(running, statements.FINDING, confirmed, p.aze_investigator)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "outcome vocabulary" in msg
    submit(
        running, statements.FINDING,
        finding(inv, "AZE", [arm], pb.FINDING_OUTCOME_INCONCLUSIVE), p.aze_investigator,
    )  # fmt: skip


def test_investigation_refusals(running: RunningLedger) -> None:
    p = running.parties
    arm, _, inv, agreed = under_way(running)
    cases: list[tuple[str, object, list[SigningKey], grpc.StatusCode, str]] = [
        # Requests.
        (statements.INVESTIGATION_REQUEST, request([arm], hours=0.5), [p.arm_authority],
         grpc.StatusCode.INVALID_ARGUMENT, "1 hour to 90 days"),
        (statements.INVESTIGATION_REQUEST, request([inv]), [p.arm_authority],
         grpc.StatusCode.INVALID_ARGUMENT, f"entry {inv} is not an incident report"),
        (statements.INVESTIGATION_REQUEST, request([arm]), [p.arm_monitor],
         grpc.StatusCode.PERMISSION_DENIED, "monitor key may not sign"),
        # Answers: only respondents, once.
        (statements.INVESTIGATION_RESPONSE, answer(inv, pb.INVESTIGATION_DECISION_ACCEPT, "ARM"),
         [p.arm_authority], grpc.StatusCode.PERMISSION_DENIED, "ARM is not asked"),
        (statements.INVESTIGATION_RESPONSE, answer(inv, pb.INVESTIGATION_DECISION_ACCEPT),
         [p.aze_authority], grpc.StatusCode.INVALID_ARGUMENT, "AZE answered at index"),
        (statements.INVESTIGATION_RESPONSE, answer(arm, pb.INVESTIGATION_DECISION_ACCEPT),
         [p.aze_authority], grpc.StatusCode.INVALID_ARGUMENT, "not an investigation request"),
        # Terms: members must be keys of the investigation's parties.
        (statements.INVESTIGATION_TERMS, terms(inv, [p.outsider], supersedes=agreed),
         [p.arm_authority, p.aze_authority], grpc.StatusCode.INVALID_ARGUMENT,
         "member_key_ids[0]"),
        (statements.INVESTIGATION_TERMS, terms(inv, [p.arm_investigator], supersedes=agreed),
         [p.arm_authority, p.aze_authority, p.aze_monitor], grpc.StatusCode.PERMISSION_DENIED,
         "co-signed by the authorities"),
        # Visits: by members, at a site of the terms.
        (statements.VISIT, visit(inv, "AZE", "Gushchu post", pb.VISIT_OUTCOME_COMPLETED, []),
         [p.aze_authority], grpc.StatusCode.PERMISSION_DENIED, "not a member"),
        (statements.VISIT, visit(inv, "AZE", "Elsewhere", pb.VISIT_OUTCOME_COMPLETED, []),
         [p.aze_investigator], grpc.StatusCode.INVALID_ARGUMENT, "not a site of the terms"),
        (statements.VISIT, visit(inv, "AZE", "Gushchu post", pb.VISIT_OUTCOME_ACCESS_DENIED, []),
         [p.aze_investigator], grpc.StatusCode.INVALID_ARGUMENT, "denied_by"),
        (statements.VISIT,
         visit(inv, "AZE", "Gushchu post", pb.VISIT_OUTCOME_COMPLETED, [p.outsider]),
         [p.aze_investigator], grpc.StatusCode.INVALID_ARGUMENT, "members_present[0]"),
        (statements.VISIT, ancient_visit(inv), [p.aze_investigator],
         grpc.StatusCode.INVALID_ARGUMENT, "started: is before 2000-01-01"),
        # Findings in the investigation: by members, on its incidents, in its vocabulary.
        (statements.FINDING, finding(inv, "ARM", [arm], pb.FINDING_OUTCOME_CONFIRMED),
         [p.arm_authority], grpc.StatusCode.PERMISSION_DENIED, "only members draft"),
    ]  # fmt: skip
    for kind, statement, signers, code, message in cases:
        got, msg = refused(running, kind, statement, *signers)  # type: ignore[arg-type]
        assert (got, message in msg) == (code, True), (kind, msg)

    other = running.client.submit(signed(report("ARM", hours_ago=40), p.arm_monitor)).receipt.index
    outside = finding(inv, "ARM", [other], pb.FINDING_OUTCOME_CONFIRMED)
    code, msg = refused(running, statements.FINDING, outside, p.arm_investigator)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not one of investigation" in msg

    # Evidence: sealed to members only, and never plain while the terms keep it sealed.
    record, files = sealed_evidence("ARM", inv, arm, b"photo", [p.arm_investigator, p.outsider])
    envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [p.arm_investigator])
    with pytest.raises(grpc.RpcError) as error:
        running.client.submit_with_blobs(envelope.to_json(), files)
    assert code_of(error) == grpc.StatusCode.INVALID_ARGUMENT  # the outsider is no ledger key
    record, files = sealed_evidence(
        "ARM", inv, arm, b"photo", [p.arm_investigator, p.arm_authority]
    )
    envelope = dsse.sign(statements.EVIDENCE, record.SerializeToString(), [p.arm_investigator])
    with pytest.raises(grpc.RpcError) as error:
        running.client.submit_with_blobs(envelope.to_json(), files)
    assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED  # a ledger key, not a member
    plain = pb.EvidenceRecord(
        created_time=now(), party="ARM", investigation_index=inv,
        sha256=hashlib.sha256(b"log").hexdigest(), media_type="text/plain", size=3,
        blob=pb.BLOB_KIND_PLAIN, blob_sha256=hashlib.sha256(b"log").hexdigest(), blob_size=3,
    )  # fmt: skip
    envelope = dsse.sign(statements.EVIDENCE, plain.SerializeToString(), [p.arm_investigator])
    with pytest.raises(grpc.RpcError) as error:
        running.client.submit_with_blobs(envelope.to_json(), {"blob": b"log"})
    assert code_of(error) == grpc.StatusCode.FAILED_PRECONDITION
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_UNDER_WAY


def test_terms_need_acceptance_first(running: RunningLedger) -> None:
    p = running.parties
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm]), p.arm_authority)
    code, msg = refused(
        running, statements.INVESTIGATION_TERMS, terms(inv, [p.arm_investigator]),
        p.arm_authority, p.aze_authority,
    )  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "awaiting AZE" in msg
    code, msg = refused(
        running, statements.VISIT,
        visit(inv, "ARM", "Berd post", pb.VISIT_OUTCOME_COMPLETED, []), p.arm_investigator,
    )  # fmt: skip
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no agreed terms" in msg


def test_a_replica_sees_what_another_replica_logged(
    running: RunningLedger, borders: BorderDataset
) -> None:
    """Two service replicas on one database: an acceptance logged through B counts when
    A judges the terms, though A had the investigation in its cache."""
    p, a = running.parties, running.ledger
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm]), p.arm_authority)
    replica = Ledger(a.store, a.log_key, borders)
    try:
        accept = answer(inv, pb.INVESTIGATION_DECISION_ACCEPT)
        envelope = dsse.sign(
            statements.INVESTIGATION_RESPONSE, accept.SerializeToString(), [p.aze_authority]
        )
        replica.submit(envelope.to_json())
    finally:
        replica.close()
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_ACCEPTED
    agreed, _ = submit(
        running, statements.INVESTIGATION_TERMS, terms(inv, [p.arm_investigator]),
        p.arm_authority, p.aze_authority,
    )  # fmt: skip
    assert running.client.investigation(inv).terms_index == agreed


def test_an_observer_mission_asks_both_parties(running: RunningLedger) -> None:
    """A neutral observer requests; both parties must accept; the terms need all three."""
    p = running.parties
    obs_authority, obs_observer = SigningKey.generate(), SigningKey.generate()
    admission = pb.PartyAdmission(
        party=pb.Party(
            code="OBS", name="Neutral observer mission", authority_threshold=1,
            keys=[
                pb.PartyKey(public_key=bytes(obs_authority.verify_key), role=pb.ROLE_AUTHORITY),
                pb.PartyKey(public_key=bytes(obs_observer.verify_key), role=pb.ROLE_OBSERVER),
            ],
        ),
        created_time=now(), reason="agreed at the talks",
    )  # fmt: skip
    submit(
        running, statements.PARTY_ADMISSION, admission,
        p.arm_authority, p.aze_authority, obs_authority,
    )  # fmt: skip
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    asked = request([arm], party="OBS")
    asked.respondents[:] = ["ARM", "AZE"]
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, asked, obs_observer)
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT, "ARM"),
        p.arm_authority,
    )
    got = running.client.investigation(inv)
    assert got.status == api.INVESTIGATION_STATUS_REQUESTED and list(got.awaiting) == ["AZE"]
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT),
        p.aze_authority,
    )
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_ACCEPTED
    members = terms(inv, [p.arm_investigator, p.aze_investigator, obs_observer])
    code, msg = refused(
        running, statements.INVESTIGATION_TERMS, members, p.arm_authority, p.aze_authority
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "missing OBS" in msg
    submit(
        running,
        statements.INVESTIGATION_TERMS,
        members,
        p.arm_authority,
        p.aze_authority,
        obs_authority,
    )
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_UNDER_WAY
    with pytest.raises(grpc.RpcError) as error:
        running.client.investigation(arm)
    assert code_of(error) == grpc.StatusCode.NOT_FOUND
