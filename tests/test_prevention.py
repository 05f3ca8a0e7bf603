"""Prevention through gRPC: advance notices shown beside the incident reports they preceded,
hotline messages with replies, and acknowledgements by the addressed parties only."""

from __future__ import annotations

import grpc
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats.log_entry import parse_entry
from ledger.messages import MessageInfo
from ledger.verifier import replay
from tests.conftest import RunningLedger
from tests.reports import HOUR_US, report, signed
from tests.test_findings import refused, submit

BERD = (40.8811, 45.3875)
GUSHCHU = (41.0933, 45.3661)


def now() -> Timestamp:
    return to_timestamp(now_us())


def notice(
    party: str = "AZE",
    *,
    place: tuple[float, float] = BERD,
    radius_m: float = 1500,
    starts_in_h: float = -8,
    hours: float = 48,
) -> pb.AdvanceNotice:
    start = now_us() + int(starts_in_h * HOUR_US)
    return pb.AdvanceNotice(
        created_time=now(), party=party, activity=pb.ACTIVITY_KIND_DEMINING,
        window=pb.TimeWindow(
            start=to_timestamp(start), end=to_timestamp(start + int(hours * HOUR_US)),
            precision=pb.TIME_PRECISION_HOUR,
        ),
        location=pb.Location(
            point=pb.GeoPoint(latitude=place[0], longitude=place[1]), uncertainty_m=radius_m,
            precision=pb.LOCATION_PRECISION_NEAR,
        ),
        description="Mechanical demining; controlled detonations 10:00-16:00.",
        description_language="en",
    )  # fmt: skip


def hotline(party: str, to: str, text: str, reply_to: int = 0) -> pb.HotlineMessage:
    return pb.HotlineMessage(
        created_time=now(), party=party, to_party=to, urgency=pb.HOTLINE_URGENCY_URGENT,
        text=text, text_language="en", in_reply_to=reply_to,
    )  # fmt: skip


def ack(index: int, party: str) -> pb.Acknowledgement:
    return pb.Acknowledgement(entry_index=index, created_time=now(), party=party)


def relations(running: RunningLedger, incident: int) -> list[tuple[int, str]]:
    return [(e.index, e.relation) for e in running.client.dossier(incident).entries]


def test_incident_read_beside_the_notice_that_preceded_it(running: RunningLedger) -> None:
    p = running.parties
    demining, _ = submit(running, statements.NOTICE, notice(), p.aze_authority)
    # Explosions heard near the notified area five hours ago: the notice shows beside it.
    near = running.client.submit(signed(report("ARM", hours_ago=5), p.arm_monitor)).receipt.index
    assert relations(running, near) == [(demining, "preceding_notice"), (near, "report")]
    # Far from the notified area, or before it was notified, nothing is shown.
    far = running.client.submit(
        signed(report("ARM", lat=GUSHCHU[0], lon=GUSHCHU[1], hours_ago=5), p.arm_monitor)
    ).receipt.index
    assert relations(running, far) == [(far, "report")]
    earlier = running.client.submit(
        signed(report("ARM", lat=BERD[0] + 0.002, hours_ago=4), p.arm_monitor)
    ).receipt.index
    later_notice, _ = submit(
        running, statements.NOTICE, notice(place=(GUSHCHU[0], GUSHCHU[1])), p.aze_authority
    )
    assert (later_notice, "preceding_notice") not in relations(running, far)
    assert (demining, "preceding_notice") in relations(running, earlier)
    # Long before the notified window: not shown.
    old = running.client.submit(signed(report("ARM", hours_ago=30), p.arm_monitor)).receipt.index
    assert relations(running, old)[0] == (old, "report")
    # The notice's place was validated and recorded like an incident's.
    geo = parse_entry(running.client.entry(demining).entry).validation.geo
    assert geo.territory == "ARM" and geo.dataset_sha256 == running.ledger.borders.sha256


def test_notice_refusals(running: RunningLedger) -> None:
    p = running.parties
    code, msg = refused(running, statements.NOTICE, notice(), p.aze_monitor)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "monitor key may not sign" in msg
    code, msg = refused(running, statements.NOTICE, notice(starts_in_h=-50), p.aze_authority)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "window.end" in msg
    ancient = notice()
    ancient.window.start.FromSeconds(631_152_000)  # 1990
    code, msg = refused(running, statements.NOTICE, ancient, p.aze_authority)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "window.start: is before 2000" in msg
    line = notice()
    line.location.line.origin.latitude, line.location.line.origin.longitude = BERD
    line.location.line.impact.latitude, line.location.line.impact.longitude = GUSHCHU
    code, msg = refused(running, statements.NOTICE, line, p.aze_authority)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "a point with its radius" in msg
    code, msg = refused(
        running, statements.NOTICE, notice(place=(48.85, 2.35)), p.aze_authority
    )  # Paris is not on this border
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "location" in msg


def test_hotline_and_acknowledgements(running: RunningLedger) -> None:
    p, client = running.parties, running.client
    demining, _ = submit(running, statements.NOTICE, notice(), p.aze_authority)
    message, _ = submit(
        running, statements.HOTLINE,
        hotline("ARM", "AZE", "Fire reported at the Berd post; please confirm your units hold."),
        p.arm_monitor,
    )  # fmt: skip
    pending = [m.index for m in client.messages(to_party="AZE", unacknowledged_only=True)]
    assert pending == [message]  # the notice is AZE's own
    assert [m.index for m in client.messages(to_party="ARM", unacknowledged_only=True)] == [
        demining
    ]
    reply, _ = submit(
        running, statements.HOTLINE,
        hotline("AZE", "ARM", "Our units hold; the detonations are the notified demining.",
                reply_to=message),
        p.aze_authority,
    )  # fmt: skip
    acked, _ = submit(running, statements.ACKNOWLEDGEMENT, ack(message, "AZE"), p.aze_monitor)
    submit(running, statements.ACKNOWLEDGEMENT, ack(demining, "ARM"), p.arm_monitor)
    assert list(client.messages(to_party="AZE", unacknowledged_only=True)) == []
    assert [m.index for m in client.messages(to_party="ARM", unacknowledged_only=True)] == [reply]
    listed = {m.index: m for m in client.messages()}
    assert dict(listed[message].acknowledged_by) == {"AZE": acked}
    assert list(listed[message].replies) == [reply]

    cases = [
        (ack(message, "ARM"), p.arm_monitor, grpc.StatusCode.PERMISSION_DENIED, "not addressed"),
        (ack(demining, "AZE"), p.aze_monitor, grpc.StatusCode.PERMISSION_DENIED, "not addressed"),
        (ack(message, "AZE"), p.aze_authority, grpc.StatusCode.INVALID_ARGUMENT, "acknowledged it"),
        (ack(0, "AZE"), p.aze_monitor, grpc.StatusCode.INVALID_ARGUMENT, "not a notice or"),
    ]  # fmt: skip
    for statement, key, code, text in cases:
        got, msg = refused(running, statements.ACKNOWLEDGEMENT, statement, key)
        assert (got, text in msg) == (code, True), msg
    to_self = hotline("ARM", "ARM", "note to self")
    code, msg = refused(running, statements.HOTLINE, to_self, p.arm_monitor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "to_party" in msg
    nowhere = hotline("ARM", "AZE", "re: nothing", reply_to=999)
    code, msg = refused(running, statements.HOTLINE, nowhere, p.arm_monitor)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "in_reply_to" in msg

    # The verifier, from the entries alone, knows who acknowledged what.
    audit = replay((e.index, e.entry) for e in client.entries(0, 0))
    seen = audit.subjects[message]
    assert isinstance(seen, MessageInfo) and seen.acknowledged == {"AZE": acked}
