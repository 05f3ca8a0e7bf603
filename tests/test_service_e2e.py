"""Through a real gRPC server on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import grpc
import pytest
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ledger import statements
from ledger.clock import now_us
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.formats.note import Checkpoint, open_note
from tests.conftest import ORIGIN, RunningLedger
from tests.reports import report, signed


def test_submit_from_both_sides_and_read_back(running: RunningLedger) -> None:
    p = running.parties
    arm = running.client.submit(signed(report("ARM", blames="AZE"), p.arm_monitor))
    aze = running.client.submit(
        signed(report("AZE", lat=41.0933, lon=45.3661, blames="ARM"), p.aze_monitor)
    )
    assert (arm.receipt.index, aze.receipt.index) == (1, 2)
    assert not arm.duplicate

    # The receipt is a DSSE envelope signed by the log key over the receipt message.
    env = dsse.Envelope.from_json(arm.signed_receipt)
    assert env.payload_type == statements.RECEIPT
    assert dsse.verify_signature(env, env.signatures[0], bytes(p.log.verify_key))
    assert log_pb2.Receipt.FromString(env.payload) == arm.receipt

    got = running.client.entry(1)
    entry = parse_entry(got.entry)
    assert merkle.leaf_hash(got.entry) == arm.receipt.leaf_hash == got.leaf_hash
    assert entry.previous_leaf_hash == running.client.entry(0).leaf_hash
    assert entry.validation.party == "ARM"
    assert entry.validation.geo.territory == "ARM"
    assert entry.validation.geo.dataset_sha256 == running.ledger.borders.sha256
    assert entry.validation.geo.distance_to_border_m > 0
    # The envelope is kept verbatim, and it is standard DSSE JSON.
    doc = json.loads(entry.envelope)
    assert set(doc) == {"payload", "payloadType", "signatures"}
    assert hashlib.sha256(entry.envelope).digest() == arm.receipt.envelope_sha256

    by_digest = running.client.entry_by_envelope(aze.receipt.envelope_sha256)
    assert by_digest.index == 2


def test_checkpoint_and_proofs(running: RunningLedger) -> None:
    p = running.parties
    for i in range(5):
        running.client.submit(
            signed(report("AZE", lat=41.0933, lon=45.3661, hours_ago=i + 1), p.aze_monitor)
        )
    served = running.client.checkpoint()
    opened = open_note(served.signed_note, [running.ledger.log_key.verifier])
    cp = Checkpoint.parse(opened.text)
    assert (cp.origin, cp.size, cp.root_hash) == (ORIGIN, 6, served.root_hash)

    leaves = [e.leaf_hash for e in running.client.entries(0, 0)]
    assert merkle.root_from_leaf_hashes(leaves) == cp.root_hash
    for i in range(cp.size):
        proof = running.client.inclusion_proof(i, cp.size)
        merkle.verify_inclusion(leaves[i], i, cp.size, list(proof.hashes), cp.root_hash)
    for old in range(1, cp.size):
        proof_c = running.client.consistency_proof(old, cp.size)
        old_root = merkle.root_from_leaf_hashes(leaves[:old])
        merkle.verify_consistency(old, cp.size, old_root, cp.root_hash, list(proof_c.hashes))


def test_resubmission_returns_first_receipt(running: RunningLedger) -> None:
    envelope = signed(report("ARM"), running.parties.arm_monitor)
    first = running.client.submit(envelope)
    again = running.client.submit(envelope)
    assert again.duplicate and not first.duplicate
    assert again.signed_receipt == first.signed_receipt
    assert running.client.checkpoint().tree_size == 2


def test_timeline_filters_by_time_and_party(running: RunningLedger) -> None:
    p = running.parties
    running.client.submit(signed(report("ARM", hours_ago=30), p.arm_monitor))
    running.client.submit(signed(report("ARM", hours_ago=3), p.arm_monitor))
    running.client.submit(
        signed(report("AZE", lat=41.0933, lon=45.3661, hours_ago=2), p.aze_monitor)
    )
    everything = list(running.client.timeline())
    assert [t.index for t in everything] == [1, 2, 3]  # by incident time
    arm_only = list(running.client.timeline(parties=["ARM"]))
    assert {t.report.reporting_party for t in arm_only} == {"ARM"} and len(arm_only) == 2
    recent = list(running.client.timeline(since_us=now_us() - 10 * 3600 * 1_000_000))
    assert [t.index for t in recent] == [2, 3]
    assert recent[1].geo.territory == "AZE"
    assert recent[0].report.category == pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE


def test_reads_out_of_range_are_clear_errors(running: RunningLedger) -> None:
    calls: list[tuple[Callable[[], object], grpc.StatusCode]] = [
        (lambda: running.client.entry(2**64 - 1), grpc.StatusCode.NOT_FOUND),
        (lambda: running.client.entry(5), grpc.StatusCode.NOT_FOUND),
        (lambda: running.client.inclusion_proof(3, 1), grpc.StatusCode.OUT_OF_RANGE),
        (lambda: running.client.consistency_proof(2**63, 0), grpc.StatusCode.OUT_OF_RANGE),
        (lambda: running.client.entry_by_envelope(b"short"), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: list(running.client.timeline(parties=["XX"])), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in calls:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert isinstance(info.value, grpc.Call) and info.value.code() == code


def test_health_and_reflection(running: RunningLedger) -> None:
    health = health_pb2_grpc.HealthStub(running.client.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="ceasefire.v1.LedgerService"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(running.client.channel)
    (answer,) = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for s in answer.list_services_response.service}
    assert "ceasefire.v1.LedgerService" in names
