"""The full incident report: casualties, direction of fire, evidence; likely duplicates
flagged and linked (never merged), the same by the server and by the verifier."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from ceasefire.v1 import statements_pb2 as pb

from clients.cli import main
from clients.client import field_violations
from ledger.duplicates import MAX_LINKED
from ledger.formats.log_entry import parse_entry
from tests.conftest import RunningLedger
from tests.reports import report, signed
from tests.test_sequencer import wait_for, writer_lock

EVIDENCE = hashlib.sha256(b"video of the strike, 21:40").hexdigest()


def duplicates_of(running: RunningLedger, index: int) -> list[tuple[int, list[str]]]:
    validation = parse_entry(running.client.entry(index).entry).validation
    return [(d.index, list(d.reasons)) for d in validation.likely_duplicates]


def full_report(party: str, lat: float, lon: float, hours_ago: float = 5) -> pb.IncidentReport:
    r = report(party, lat=lat, lon=lon, hours_ago=hours_ago)
    r.casualties.civilians_injured.CopyFrom(pb.CountRange(low=1, best=2, high=3))
    r.casualties.military_killed.CopyFrom(pb.CountRange(low=0, best=0, high=1))
    r.fire_from_bearing_deg = 95.0
    return r


def test_both_sides_reporting_one_event_are_linked_not_merged(running: RunningLedger) -> None:
    p = running.parties
    arm = full_report("ARM", 41.0100, 45.3900)
    aze = full_report("AZE", 41.0190, 45.3900)  # 1 km north, same hour: the same event?
    far = full_report("AZE", 41.0933, 45.3661)  # Gazakh, 9 km away
    first = running.client.submit(signed(arm, p.arm_monitor)).receipt.index
    second = running.client.submit(signed(aze, p.aze_monitor)).receipt.index
    third = running.client.submit(signed(far, p.aze_monitor)).receipt.index
    assert duplicates_of(running, first) == []
    assert duplicates_of(running, second) == [(first, ["time and place"])]
    assert duplicates_of(running, third) == []
    # Days later, a report naming the same evidence is linked too.
    later = report("ARM", hours_ago=1)
    later.evidence_sha256.append(EVIDENCE)
    earlier = report("ARM", lat=40.1811, lon=44.5136, hours_ago=60)
    earlier.evidence_sha256.append(EVIDENCE)
    a = running.client.submit(signed(earlier, p.arm_monitor)).receipt.index
    b = running.client.submit(signed(later, p.arm_monitor)).receipt.index
    assert duplicates_of(running, b) == [(a, ["evidence"])]
    # Both accounts stay on the record, and the fields as sent.
    entry = running.client.entry(first)
    assert entry.index == first
    assert main(["verify", "--server", running.address]) == 0


def test_duplicates_within_one_commit_batch_are_linked(running: RunningLedger) -> None:
    p = running.parties
    envelopes = [
        signed(full_report("ARM", 41.0100, 45.3900), p.arm_monitor),
        signed(full_report("AZE", 41.0150, 45.3950), p.aze_monitor),
    ]
    sequencer = running.ledger.sequencer
    with ThreadPoolExecutor(3) as pool:
        with writer_lock(running.ledger.store):
            blocker = pool.submit(
                running.client.submit, signed(report("ARM", hours_ago=40), p.arm_monitor)
            )
            wait_for(lambda: sequencer.in_flight == 1)
            futures = [pool.submit(running.client.submit, e) for e in envelopes]
            wait_for(lambda: sequencer.pending == 2)
        blocker.result()
        first, second = sorted(f.result().receipt.index for f in futures)  # either may be first
    assert sequencer.stats.largest_batch == 2  # both in one commit
    assert duplicates_of(running, second) == [(first, ["time and place"])]
    assert main(["verify", "--server", running.address]) == 0


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.casualties.civilians_killed.CopyFrom(pb.CountRange(low=3, best=2, high=4)),
         "casualties.civilians_killed"),
        (lambda r: setattr(r, "fire_from_bearing_deg", 360.0), "fire_from_bearing_deg"),
        (lambda r: r.evidence_sha256.append("not-a-digest"), "evidence_sha256[0]"),
        (lambda r: r.evidence_sha256.extend([EVIDENCE, EVIDENCE]), "evidence_sha256"),
    ],
)  # fmt: skip
def test_report_fields_are_checked(running: RunningLedger, mutate: object, field: str) -> None:
    r = report("ARM")
    mutate(r)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as info:
        running.client.submit(signed(r, running.parties.arm_monitor))
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value) == [field]


def test_a_flood_of_reports_links_only_the_most_recent(running: RunningLedger) -> None:
    """Twenty reports of one place and hour: each links at most the 16 most recent."""
    p = running.parties
    indexes = [
        running.client.submit(
            signed(full_report("ARM", 41.0100, 45.3900), p.arm_monitor)
        ).receipt.index
        for _ in range(MAX_LINKED + 4)
    ]
    last = duplicates_of(running, indexes[-1])
    assert [i for i, _ in last] == indexes[-1 - MAX_LINKED : -1]
    assert main(["verify", "--server", running.address]) == 0
