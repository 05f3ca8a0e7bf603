"""A statement's identity is what was signed: a hostile relay that re-spells an accepted
envelope, or carries unsigned text beside its signature, never makes a second entry."""

from __future__ import annotations

import json

import grpc
import pytest
from ceasefire.v1 import statements_pb2 as pb

from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import Ledger
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, RunningLedger
from tests.reports import report, signed


def _refused(running: RunningLedger, data: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit(data)
    return info.value.code(), info.value.details() or ""


def test_respellings_return_the_first_receipt(running: RunningLedger) -> None:
    first = signed(report("ARM"), running.parties.arm_monitor)
    accepted = running.client.submit(first)
    doc = json.loads(first)
    respellings = [
        json.dumps(doc, indent=4).encode(),  # re-indented
        json.dumps(dict(reversed(list(doc.items())))).encode(),  # keys reordered
        json.dumps(doc).replace("/", "\\/").encode(),  # escaped slashes in payloadType
        json.dumps(doc, ensure_ascii=True).replace('"payload"', '"\\u0070ayload"').encode(),
        b"\n\t " + first + b"\r\n",  # whitespace around it
    ]
    for data in respellings:
        again = running.client.submit(data)
        assert again.duplicate, data[:60]
        assert again.signed_receipt == accepted.signed_receipt
    assert running.ledger.store.tree_size() == 2
    stored = parse_entry(running.client.entry(1).entry)
    assert stored.envelope == dsse.Envelope.from_json(first).to_json()  # the canonical form
    by_identity = running.client.entry_by_statement(accepted.receipt.statement_sha256)
    assert by_identity.index == 1
    assert accepted.receipt.statement_sha256 == dsse.Envelope.from_json(first).statement_sha256()


def test_what_no_signature_covers_is_refused(running: RunningLedger) -> None:
    first = signed(report("ARM"), running.parties.arm_monitor)
    running.client.submit(first)
    doc = json.loads(first)
    note = dict(doc, note="ARM withdraws this report; it was staged.")
    code, message = _refused(running, json.dumps(note).encode())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "note: not a DSSE field" in message
    sig_note = dict(doc, signatures=[dict(doc["signatures"][0], note="x")])
    code, message = _refused(running, json.dumps(sig_note).encode())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "signatures[0].note" in message
    twice = first.replace(b'{"payload"', b'{"payloadType":"x","payload"', 1)
    code, message = _refused(running, twice)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "duplicate key 'payloadType'" in message
    assert running.ledger.store.tree_size() == 2


def test_the_same_statement_with_other_signatures_is_refused(running: RunningLedger) -> None:
    p = running.parties
    denial = pb.CounterClaim(
        incident_index=1, created_time=to_timestamp(now_us()), party="AZE",
        kind=pb.RESPONSE_KIND_DENIAL, narrative="No fire from our side.", narrative_language="en",
    )  # fmt: skip
    running.client.submit(signed(report("ARM"), p.arm_monitor))
    envelope = dsse.sign(statements.COUNTER_CLAIM, denial.SerializeToString(), [p.aze_authority])
    accepted = running.client.submit(envelope.to_json())
    more = envelope.add_signature(p.aze_monitor).to_json()
    code, message = _refused(running, more)
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert f"this signed statement is entry {accepted.receipt.index}" in message
    other = dsse.sign(statements.COUNTER_CLAIM, denial.SerializeToString(), [p.aze_monitor])
    code, message = _refused(running, other.to_json())
    assert code == grpc.StatusCode.ALREADY_EXISTS
    # The very envelope again: its first receipt.
    assert running.client.submit(envelope.to_json()).duplicate
    assert running.ledger.store.tree_size() == 3


def test_a_respelling_through_another_replica_adds_nothing(running: RunningLedger) -> None:
    """Replica B shares A's database: the identity is unique in the database itself."""
    first = signed(report("AZE", lat=41.0933, lon=45.3661), running.parties.aze_monitor)
    accepted = running.client.submit(first)
    store = LedgerStore.open(running.db_url)
    other = Ledger(store, LogKey(ORIGIN, running.parties.log), running.ledger.borders)
    try:
        again = other.submit(json.dumps(json.loads(first), indent=1).encode())
        assert again.duplicate and again.receipt.index == accepted.receipt.index
    finally:
        other.close()
        store.close()
    assert running.ledger.store.tree_size() == 2
