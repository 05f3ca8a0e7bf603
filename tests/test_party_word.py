"""A party speaks with its threshold or not at all, and the ledger refuses what cannot be
true: one authority of a 2-of-3 party cannot use up its attestation or its answer; visits
and evidence cannot predate their investigation; the hotline replies to messages; a report
stands as jointly attested. The offline verifier agrees with every decision."""

from __future__ import annotations

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.verifier import replay
from tests.conftest import RunningLedger
from tests.reports import HOUR_US, report, signed
from tests.test_findings import attestation, draft, refused, submit
from tests.test_investigations import answer, request, terms, visit

DAY_US = 24 * HOUR_US


def _two_of_three(running: RunningLedger) -> tuple[SigningKey, SigningKey, SigningKey]:
    """ARM gets two more authority keys and a threshold of 2."""
    p = running.parties
    a2, a3 = SigningKey.generate(), SigningKey.generate()
    change = pb.KeyChange(
        party="ARM", created_time=to_timestamp(now_us()), reason="three authorities, two sign",
        add=[pb.PartyKey(public_key=keys.public_bytes(k), role=pb.ROLE_AUTHORITY)
             for k in (a2, a3)],
        authority_threshold=2,
    )  # fmt: skip
    submit(running, statements.KEY_CHANGE, change, p.arm_authority)
    return p.arm_authority, a2, a3


def _audit(running: RunningLedger) -> None:
    store = running.ledger.store
    replay((e.index, e.entry) for e in store.iter_entries(0, store.tree_size()))


def test_one_authority_cannot_use_up_its_partys_attestation(running: RunningLedger) -> None:
    p = running.parties
    a1, a2, _ = _two_of_three(running)
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    finding, payload = submit(
        running, statements.FINDING, draft([incident], pb.FINDING_OUTCOME_CONFIRMED), a1
    )
    for kind in (statements.ATTESTATION, statements.DISSENT):
        said = attestation(finding, payload, "ARM")
        statement = said if kind == statements.ATTESTATION else pb.Dissent(
            finding_index=finding, draft_sha256=said.draft_sha256, party="ARM",
            created_time=said.created_time, reasons="no", reasons_language="en",
        )  # fmt: skip
        code, message = refused(running, kind, statement, a1)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "needs 2 of ARM's authority keys (its threshold in the trust root); 1 signed" in (
            message
        )
    # ARM's turn is still free: two of its authorities attest, on one envelope.
    submit(running, statements.ATTESTATION, attestation(finding, payload, "ARM"), a1, a2)
    submit(running, statements.ATTESTATION, attestation(finding, payload, "AZE"), p.aze_authority)
    assert running.client.dossier(incident).status == api.INCIDENT_STATUS_JOINTLY_CONFIRMED
    _audit(running)


def test_an_answer_needs_the_respondents_threshold(running: RunningLedger) -> None:
    p = running.parties
    a1, a2, _ = _two_of_three(running)
    aze = running.client.submit(
        signed(report("AZE", lat=41.0933, lon=45.3661), p.aze_monitor)
    ).receipt.index
    inv, _ = submit(
        running, statements.INVESTIGATION_REQUEST, request([aze], party="AZE"), p.aze_authority
    )
    code, message = refused(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_DECLINE, "ARM"),
        a1,
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs 2 of ARM's" in message
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT, "ARM"),
        a1,
        a2,
    )
    assert running.client.investigation(inv).status == api.INVESTIGATION_STATUS_ACCEPTED
    _audit(running)


def _under_way(running: RunningLedger) -> tuple[int, int]:
    p = running.parties
    arm = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    inv, _ = submit(running, statements.INVESTIGATION_REQUEST, request([arm]), p.arm_authority)
    submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(inv, pb.INVESTIGATION_DECISION_ACCEPT),
        p.aze_authority,
    )
    members = [p.arm_investigator, p.aze_investigator]
    submit(
        running, statements.INVESTIGATION_TERMS, terms(inv, members), p.arm_authority,
        p.aze_authority,
    )  # fmt: skip
    return arm, inv


def test_visits_and_evidence_cannot_predate_their_investigation(running: RunningLedger) -> None:
    p = running.parties
    arm, inv = _under_way(running)
    early = visit(inv, "AZE", "Berd post", pb.VISIT_OUTCOME_COMPLETED, [])
    early.started.CopyFrom(to_timestamp(now_us() - 7 * DAY_US))
    early.ended.CopyFrom(to_timestamp(now_us() - 7 * DAY_US + HOUR_US))
    code, message = refused(running, statements.VISIT, early, p.aze_investigator)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("started: ") and "is before investigation" in message
    # Evidence signed before the request (inside the freshness window) is not its evidence;
    # what it shows may have been captured at any time.
    record = pb.EvidenceRecord(
        created_time=to_timestamp(now_us() - 2 * DAY_US), party="ARM", incident_index=arm,
        investigation_index=inv, sha256="ab" * 32, media_type="image/jpeg", size=10,
        capture_time=to_timestamp(now_us() - 3 * DAY_US), description="crater",
        blob=pb.BLOB_KIND_NONE,
    )  # fmt: skip
    code, message = refused(running, statements.EVIDENCE, record, p.arm_investigator)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("created_time:")
    record.created_time.CopyFrom(to_timestamp(now_us()))
    submit(running, statements.EVIDENCE, record, p.arm_investigator)  # captured earlier: fine
    submit(
        running, statements.VISIT,
        visit(inv, "AZE", "Berd post", pb.VISIT_OUTCOME_COMPLETED, []), p.aze_investigator,
    )  # fmt: skip
    _audit(running)


def test_the_hotline_replies_to_messages_only(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    finding, _ = submit(
        running,
        statements.FINDING,
        draft([incident], pb.FINDING_OUTCOME_CONFIRMED),
        p.arm_authority,
    )

    def message(reply_to: int) -> pb.HotlineMessage:
        return pb.HotlineMessage(
            created_time=to_timestamp(now_us()), party="AZE", to_party="ARM",
            urgency=pb.HOTLINE_URGENCY_URGENT, text="About that?", text_language="en",
            in_reply_to=reply_to,
        )  # fmt: skip

    for target in (finding, incident):
        code, text = refused(running, statements.HOTLINE, message(target), p.aze_monitor)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"in_reply_to: entry {target} is not a hotline message or an advance notice" in text
    first, _ = submit(running, statements.HOTLINE, message(0), p.aze_monitor)
    submit(running, statements.HOTLINE, message(first), p.aze_monitor)
    _audit(running)


def test_a_jointly_attested_report_is_no_longer_amended(running: RunningLedger) -> None:
    p = running.parties
    incident = running.client.submit(signed(report("ARM"), p.arm_monitor)).receipt.index
    finding, payload = submit(
        running, statements.FINDING, draft([incident], pb.FINDING_OUTCOME_CONFIRMED),
        p.arm_authority,
    )  # fmt: skip
    submit(running, statements.ATTESTATION, attestation(finding, payload, "ARM"), p.arm_authority)
    # Amendments before the finding is attested are fine.
    moved = report("ARM", lat=40.9, lon=45.38)
    amendment = pb.IncidentAmendment(
        incident_index=incident, created_time=to_timestamp(now_us()), party="ARM",
        corrected=moved, reason="closer look",
    )  # fmt: skip
    submit(running, statements.AMENDMENT, amendment, p.arm_monitor)
    attested, _ = submit(
        running, statements.ATTESTATION, attestation(finding, payload, "AZE"), p.aze_authority
    )
    amendment.reason = "after the finding"
    for kind, statement in (
        (statements.AMENDMENT, amendment),
        (
            statements.RETRACTION,
            pb.IncidentRetraction(
                incident_index=incident, created_time=to_timestamp(now_us()), party="ARM"
            ),
        ),
    ):
        code, message = refused(running, kind, statement, p.arm_monitor)
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"jointly attested at index {attested}" in message
    assert running.client.dossier(incident).status == api.INCIDENT_STATUS_JOINTLY_CONFIRMED
    _audit(running)
