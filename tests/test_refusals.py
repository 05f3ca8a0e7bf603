"""Bad input: each a clear gRPC error naming the field, and the ledger exactly as it was."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from ceasefire.v1 import statements_pb2 as pb

from clients.client import field_violations
from ledger import statements
from ledger.formats import dsse
from tests.conftest import Parties, RunningLedger
from tests.reports import report, signed


def _refused(running: RunningLedger, envelope: bytes) -> tuple[grpc.StatusCode, str, list[str]]:
    before = running.client.checkpoint()
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit(envelope)
    after = running.client.checkpoint()
    assert after.signed_note == before.signed_note, "a refusal changed the ledger"
    assert running.ledger.store.tree_size() == before.tree_size
    e = info.value
    assert isinstance(e, grpc.Call)
    assert "Traceback" not in (e.details() or "")
    return e.code(), e.details() or "", field_violations(e)


def _tamper_json(envelope: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    doc = json.loads(envelope)
    change(doc)
    return json.dumps(doc).encode()


def test_monitor_cannot_speak_for_the_other_party(running: RunningLedger) -> None:
    code, msg, fields = _refused(running, signed(report("AZE"), running.parties.arm_monitor))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "a key of ARM cannot speak for AZE" in msg and fields == ["reporting_party"]


def test_unknown_party(running: RunningLedger) -> None:
    code, msg, _ = _refused(running, signed(report("XYZ"), running.parties.arm_monitor))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "unknown party 'XYZ'" in msg


def test_unknown_key(running: RunningLedger) -> None:
    code, msg, fields = _refused(running, signed(report("ARM"), running.parties.outsider))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "not a key of any party" in msg and fields == ["signatures[0].keyid"]


def test_role_not_allowed(running: RunningLedger) -> None:
    code, msg, _ = _refused(running, signed(report("ARM"), running.parties.arm_authority))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "authority key may not sign" in msg


def test_bad_signature(running: RunningLedger) -> None:
    good = signed(report("ARM"), running.parties.arm_monitor)

    def flip(doc: dict[str, object]) -> None:
        sigs = doc["signatures"]
        assert isinstance(sigs, list)
        raw = bytearray(base64.b64decode(sigs[0]["sig"]))
        raw[7] ^= 1
        sigs[0]["sig"] = base64.b64encode(bytes(raw)).decode()

    code, _, fields = _refused(running, _tamper_json(good, flip))
    assert code == grpc.StatusCode.UNAUTHENTICATED and fields == ["signatures[0].sig"]


def test_payload_changed_after_signing(running: RunningLedger) -> None:
    good = signed(report("ARM"), running.parties.arm_monitor)
    other = report("ARM", narrative="something else").SerializeToString()
    bad = _tamper_json(good, lambda d: d.update(payload=base64.b64encode(other).decode()))
    code, _, _ = _refused(running, bad)
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_truncated_envelope(running: RunningLedger) -> None:
    good = signed(report("ARM"), running.parties.arm_monitor)
    code, msg, _ = _refused(running, good[: len(good) // 2])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "JSON" in msg


def test_empty_payload(running: RunningLedger) -> None:
    env = dsse.sign(statements.INCIDENT_REPORT, b"x", [running.parties.arm_monitor]).to_json()
    bad = _tamper_json(env, lambda d: d.update(payload=""))
    code, _, fields = _refused(running, bad)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["payload"]


def test_empty_request(running: RunningLedger) -> None:
    code, _, fields = _refused(running, b"")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["envelope"]


def test_oversize_envelope(running: RunningLedger) -> None:
    code, _, _ = _refused(running, b"{" + b" " * 70_000 + b"}")
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_unknown_statement_type(running: RunningLedger) -> None:
    env = dsse.sign("application/x-other", b"hello", [running.parties.arm_monitor]).to_json()
    code, _, fields = _refused(running, env)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["payloadType"]


def test_garbage_payload(running: RunningLedger) -> None:
    env = dsse.sign(statements.INCIDENT_REPORT, b"\xff\xff\xff", [running.parties.arm_monitor])
    code, _, fields = _refused(running, env.to_json())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["payload"]


def _unknown_varint(number: int) -> bytes:
    """A field `number` (unknown to the schema) holding the varint 1, as protobuf encodes it."""
    tag, out = number << 3, b""
    while tag >= 0x80:
        out, tag = out + bytes([tag & 0x7F | 0x80]), tag >> 7
    return out + bytes([tag, 1])


@pytest.mark.parametrize("inside", ["payload", "payload.location", "payload.location.point"])
def test_fields_the_ledger_does_not_know(running: RunningLedger, inside: str) -> None:
    """Signed bytes nobody can read (a field unknown to the schema, at the top or nested)
    would sit in the log unjudged: refused, naming the message that carries them."""
    r = report("ARM")
    payload = r.SerializeToString() + _unknown_varint(4000)
    if inside != "payload":
        location = pb.IncidentReport.DESCRIPTOR.fields_by_name["location"].number
        point = pb.Location.DESCRIPTOR.fields_by_name["point"].number
        if inside == "payload.location":
            inner = r.location.SerializeToString() + _unknown_varint(4000)
        else:
            in_point = r.location.point.SerializeToString() + _unknown_varint(4000)
            inner = bytes([point << 3 | 2, len(in_point)]) + in_point
        # A second occurrence of a message field merges into the first.
        payload = r.SerializeToString() + bytes([location << 3 | 2, len(inner)]) + inner
    known = pb.IncidentReport.FromString(payload)
    known.DiscardUnknownFields()
    assert known == r and len(payload) > r.ByteSize()  # the report, and more
    env = dsse.sign(statements.INCIDENT_REPORT, payload, [running.parties.arm_monitor])
    code, msg, fields = _refused(running, env.to_json())
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "fields this ledger does not know" in msg and fields == [inside]


@pytest.mark.parametrize(
    ("lat", "lon", "field"),
    [
        (math.nan, 45.0, "location.point.latitude"),
        (40.5, math.inf, "location.point.longitude"),
        (91.0, 45.0, "location.point.latitude"),
        (40.5, -181.0, "location.point.longitude"),
        (48.8566, 2.3522, "location.point"),  # Paris: far outside the region
    ],
)
def test_impossible_coordinates(running: RunningLedger, lat: float, lon: float, field: str) -> None:
    code, _, fields = _refused(
        running, signed(report("ARM", lat=lat, lon=lon), running.parties.arm_monitor)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields and fields[0].startswith(field)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.ClearField("window"), "window"),
        (lambda r: r.window.ClearField("end"), "window"),
        (lambda r: setattr(r, "category", 0), "category"),
        (lambda r: setattr(r, "category", 99), "category"),
        (lambda r: setattr(r, "observation_mode", 0), "observation_mode"),
        (lambda r: setattr(r.location, "uncertainty_m", -1), "location.uncertainty_m"),
        (lambda r: setattr(r, "narrative_language", "not a tag!"), "narrative_language"),
        (lambda r: setattr(r, "alleged_responsible_party", "NOPE"), "alleged_responsible_party"),
        (lambda r: r.window.end.FromSeconds(4_000_000_000), "window.end"),
    ],
)
def test_invalid_fields(
    running: RunningLedger, mutate: Callable[[pb.IncidentReport], None], field: str
) -> None:
    r = report("ARM")
    mutate(r)
    code, _, fields = _refused(running, signed(r, running.parties.arm_monitor))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == [field]


def test_refusals_then_acceptance(running: RunningLedger, parties: Parties) -> None:
    """After refusals the next good report still gets the next index: nothing half-written."""
    _refused(running, signed(report("AZE"), parties.arm_monitor))
    accepted = running.client.submit(signed(report("ARM"), parties.arm_monitor))
    assert accepted.receipt.index == 1


def test_a_line_of_fire_of_zero_length(running: RunningLedger, parties: Parties) -> None:
    """A line whose impact is its origin has no direction: refused, in the server as in the
    verifier (both place it with geo.validate.line_facts)."""
    r = report("ARM")
    r.location.line.origin.CopyFrom(pb.GeoPoint(latitude=40.8811, longitude=45.3875))
    r.location.line.impact.CopyFrom(r.location.line.origin)
    code, msg, fields = _refused(running, signed(r, parties.arm_monitor))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and fields == ["location.line.impact"]
    assert "equals the origin" in msg
    r.location.line.impact.latitude += 0.01  # about 1.1 km to the north
    assert running.client.submit(signed(r, parties.arm_monitor)).receipt.index == 1


@pytest.mark.parametrize(
    ("start", "end", "field"), [(2, 1, "end"), (10**6, 0, "start")], ids=["backwards", "beyond"]
)
def test_an_entry_range_out_of_order_names_its_field_in_either_call(
    running: RunningLedger, start: int, end: int, field: str
) -> None:
    """GetEntryBatches holds the range GetEntries takes in its field `range`: a refusal
    names the field as the request that was sent has it."""
    running.client.submit(signed(report("ARM"), running.parties.arm_monitor))
    stub = api_grpc.LedgerServiceStub(running.client.channel)
    asked = api.GetEntriesRequest(start=start, end=end)
    for call, prefix in (
        (lambda: stub.GetEntries(asked), ""),
        (lambda: stub.GetEntryBatches(api.GetEntryBatchesRequest(range=asked)), "range."),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            list(call())
        assert field_violations(refused.value) == [prefix + field]
