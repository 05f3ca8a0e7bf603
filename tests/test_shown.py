"""What is shown is what was logged: the timeline and the dossier place every geometry kind
where it is, show an incident as last amended (and that it was), mark likely duplicates and
retractions, carry casualties and precision in --json, list attestations and dissents with
their signers, and can be asked as of an earlier log index. Through the real gRPC server and
the `ceasefire` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey
from pyproj import Geod

from clients.cli import main
from ledger import statements
from ledger.clock import now_us, to_timestamp
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from tests.conftest import RunningLedger
from tests.reports import report, signed
from tests.test_findings import attestation, draft, submit
from tests.test_investigations import finding, under_way

BERD = (40.8811, 45.3875)  # ARM, 8.5 km from the border
GAZAKH = (41.0933, 45.3661)  # AZE
NEAR_BORDER = (40.92, 45.44)  # ARM, about 3 km from the border
ACROSS = (40.92, 45.5243)  # AZE, 7.1 km east of NEAR_BORDER
POLYGON = [(40.95, 45.30), (40.95, 45.55), (41.10, 45.55), (41.10, 45.30)]


def kid(key: SigningKey) -> str:
    return dsse.key_id(bytes(key.verify_key))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(cli(capsys, *args, "--json"))


def timeline(running: RunningLedger, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    rows = cli_json(capsys, "timeline", "--server", running.address, *args)
    return {r["index"]: r for r in rows}


def dossier(running: RunningLedger, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return cli_json(capsys, "dossier", "--server", running.address, *args)


def point(lat: float, lon: float) -> pb.GeoPoint:
    return pb.GeoPoint(latitude=lat, longitude=lon)


def observation() -> pb.IncidentReport:
    r = report("ARM")
    r.location.observation.CopyFrom(
        pb.Observation(
            observer=point(*BERD), bearing_from_deg=60, bearing_to_deg=120,
            distance_min_m=1000, distance_max_m=12000,
        )
    )  # fmt: skip
    return r


def line() -> pb.IncidentReport:
    r = report("AZE")
    r.location.line.CopyFrom(pb.GeoLine(origin=point(*GAZAKH), impact=point(*BERD)))
    return r


def polygon() -> pb.IncidentReport:
    r = report("ARM")
    r.location.polygon.CopyFrom(pb.GeoPolygon(points=[point(*p) for p in POLYGON]))
    return r


def send(running: RunningLedger, r: pb.IncidentReport) -> int:
    p = running.parties
    key = p.arm_monitor if r.reporting_party == "ARM" else p.aze_monitor
    return running.client.submit(signed(r, key)).receipt.index


def amend(running: RunningLedger, index: int, corrected: pb.IncidentReport) -> int:
    amendment = pb.IncidentAmendment(
        incident_index=index, created_time=to_timestamp(now_us()), party="ARM",
        corrected=corrected, reason="the place was misread from the map",
    )  # fmt: skip
    return submit(running, statements.AMENDMENT, amendment, running.parties.arm_monitor)[0]


def test_every_geometry_kind_is_placed_where_it_is(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    at = {
        "point": send(running, report("ARM", lat=BERD[0], lon=BERD[1])),
        "observation": send(running, observation()),
        "line": send(running, line()),
        "polygon": send(running, polygon()),
    }
    anchors = {"point": BERD, "observation": BERD, "line": GAZAKH, "polygon": POLYGON[0]}
    geojson = {"point": "Point", "observation": "Point", "line": "LineString", "polygon": "Polygon"}
    rows = timeline(running, capsys)
    for kind, index in at.items():
        row = rows[index]
        assert row["geometry"] == kind
        assert (row["latitude"], row["longitude"]) == anchors[kind]
        assert row["geojson"]["type"] == geojson[kind]
        assert row["geo"]["dataset_sha256"]
        shown = dossier(running, capsys, str(index))["current"]
        assert (shown["geometry"], shown["latitude"], shown["longitude"]) == (
            kind, *anchors[kind],
        )  # fmt: skip
    assert rows[at["line"]]["geojson"]["coordinates"] == [
        [GAZAKH[1], GAZAKH[0]],
        [BERD[1], BERD[0]],
    ]
    ring = rows[at["polygon"]]["geojson"]["coordinates"][0]
    assert ring[0] == ring[-1] == [POLYGON[0][1], POLYGON[0][0]] and len(ring) == 5
    # The polygon straddles the border: its side comes from its area shares.
    assert {s["territory"] for s in rows[at["polygon"]]["geo"]["shares"]} >= {"ARM", "AZE"}

    text = cli(capsys, "timeline", "--server", running.address)
    assert "0.0000,0.0000" not in text
    assert "point 40.8811,45.3875 ±500 m (near): in ARM, 8.5 km from border" in text
    assert "sector seen from 40.8811,45.3875, bearing 60-120°, 1.0-12.0 km" in text
    assert "line from 41.0933,45.3661 to 40.8811,45.3875 (23." in text
    assert "AZE to ARM, crosses the border" in text
    assert "polygon of 4 points from 40.9500,45.3000" in text
    for index in at.values():
        said = cli(capsys, "dossier", str(index), "--server", running.address)
        assert "0.0000,0.0000" not in said and "  where  " in said


def test_an_amendment_that_moves_an_incident_is_shown(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    original = report("ARM", lat=NEAR_BORDER[0], lon=NEAR_BORDER[1])
    incident = send(running, original)
    moved = pb.IncidentReport()
    moved.CopyFrom(original)
    moved.location.point.CopyFrom(point(*ACROSS))
    amended = amend(running, incident, moved)
    _, _, metres = Geod(ellps="WGS84").inv(NEAR_BORDER[1], NEAR_BORDER[0], ACROSS[1], ACROSS[0])
    assert 7000 < metres < 7200

    # Through gRPC: the report as first logged, and as it stands now.
    (row,) = running.client.timeline()
    amendment_entry = parse_entry(running.client.entry(amended).entry)
    assert row.report.location.point.latitude == NEAR_BORDER[0]
    assert row.geo.territory == "ARM"
    assert row.current.report == moved
    assert row.current.geo == amendment_entry.validation.geo
    assert row.current.geo.territory == "AZE"
    assert row.current.amended_at_index == amended and row.current.amendments == 1
    assert row.current.amended_at_time == amendment_entry.integrated_time
    got = running.client.dossier(incident)
    assert got.current == row.current

    # Through the command: the new place, and that (and how far) it moved.
    shown = timeline(running, capsys)[incident]
    assert (shown["latitude"], shown["longitude"]) == ACROSS
    assert shown["side"] == "AZE" and shown["territory"] == "AZE"
    assert shown["amended_at"] == amended and shown["amendments"] == 1
    assert shown["moved_m"] == pytest.approx(metres, abs=1)
    assert shown["changed"] == ["location"]
    assert (shown["original"]["latitude"], shown["original"]["side"]) == (NEAR_BORDER[0], "ARM")
    text = cli(capsys, "timeline", "--server", running.address)
    assert f"point {ACROSS[0]:.4f},{ACROSS[1]:.4f}" in text
    assert f"amended at entry {amended} (" in text
    assert "moved 7.1 km; side ARM to AZE; changed location" in text
    said = cli(capsys, "dossier", str(incident), "--server", running.address)
    assert f"  note   amended at entry {amended}" in said and "moved 7.1 km" in said
    assert dossier(running, capsys, str(incident))["current"]["amended_at"] == amended

    # As of the amendment's index, the incident is shown as first reported.
    before = timeline(running, capsys, "--as-of-index", str(amended))[incident]
    assert (before["latitude"], before["amended_at"], before["side"]) == (
        NEAR_BORDER[0], None, "ARM",
    )  # fmt: skip


def test_likely_duplicates_and_retractions_are_marked(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    p = running.parties
    first = send(running, report("ARM", blames="AZE"))
    other_side = send(running, report("AZE", lat=BERD[0] + 0.005, lon=BERD[1]))
    elsewhere = send(running, report("ARM", lat=GAZAKH[0], lon=GAZAKH[1], hours_ago=40))
    retraction = pb.IncidentRetraction(
        incident_index=elsewhere, created_time=to_timestamp(now_us()), party="ARM",
        reason="double-counted",
    )  # fmt: skip
    retracted, _ = submit(running, statements.RETRACTION, retraction, p.arm_monitor)

    rows = {t.index: t for t in running.client.timeline()}
    assert [d.index for d in rows[other_side].current.likely_duplicate_of] == [first]
    assert list(rows[first].current.likely_duplicated_by) == [other_side]
    assert rows[elsewhere].current.retracted_at_index == retracted
    assert rows[elsewhere].status == api.INCIDENT_STATUS_RETRACTED

    shown = timeline(running, capsys)
    assert shown[other_side]["likely_duplicate_of"] == [
        {"index": first, "reasons": ["time and place"]}
    ]
    assert shown[first]["likely_duplicated_by"] == [other_side]
    assert shown[elsewhere]["retracted"] and shown[elsewhere]["retracted_at"] == retracted
    assert not shown[first]["retracted"] and shown[first]["retracted_at"] is None
    text = cli(capsys, "timeline", "--server", running.address)
    assert f"likely duplicate of {first} (time and place)" in text
    assert f"likely duplicated by {other_side}" in text
    assert f"RETRACTED at entry {retracted}" in text and "[retracted]" in text
    said = cli(capsys, "dossier", str(elsewhere), "--server", running.address)
    assert f"incident {elsewhere}: retracted" in said
    assert f"RETRACTED at entry {retracted}" in said


def test_json_carries_casualties_uncertainty_and_precision(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    r = report("ARM", blames="AZE", category=pb.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY)
    r.casualties.civilians_injured.CopyFrom(pb.CountRange(low=1, best=2, high=4))
    r.casualties.military_killed.CopyFrom(pb.CountRange(low=1, best=1, high=1))
    r.weapons.append("82 mm mortar")
    r.location.uncertainty_m = 750
    r.location.precision = pb.LOCATION_PRECISION_EXACT
    r.window.precision = pb.TIME_PRECISION_MINUTE
    index = send(running, r)
    row = timeline(running, capsys)[index]
    assert row["casualties"]["civilians_injured"] == {"low": 1, "best": 2, "high": 4}
    assert row["casualties"]["military_killed"] == {"low": 1, "best": 1, "high": 1}
    assert row["casualties"]["civilians_killed"] == {"low": 0, "best": 0, "high": 0}
    assert row["uncertainty_m"] == 750 and row["location_precision"] == "exact"
    assert row["time_precision"] == "minute" and row["category"] == "mortar_or_artillery"
    assert row["alleged_responsible_party"] == "AZE" and row["weapons"] == ["82 mm mortar"]
    assert row["observation"] == "heard" and row["status"] == "reported"
    assert row["location"]["point"] == {"latitude": BERD[0], "longitude": BERD[1]}
    assert row["geo"]["territory"] == "ARM" and row["geo"]["distance_to_border_m"] > 8000
    current = dossier(running, capsys, str(index))["current"]
    assert current["casualties"] == row["casualties"]
    said = cli(capsys, "dossier", str(index), "--server", running.address)
    assert "civilians injured 2 (1-4), military killed 1" in said
    assert "±750 m (exact)" in said and "(minute)" in said


def test_attestations_and_dissents_are_listed_with_their_signers(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    p = running.parties
    incident = send(running, report("ARM", blames="AZE"))
    first, payload = submit(
        running, statements.FINDING, draft([incident], pb.FINDING_OUTCOME_CONFIRMED),
        p.arm_authority,
    )  # fmt: skip
    arm, _ = submit(
        running, statements.ATTESTATION, attestation(first, payload, "ARM"), p.arm_authority
    )
    aze, _ = submit(
        running, statements.ATTESTATION, attestation(first, payload, "AZE"), p.aze_authority
    )
    second, payload2 = submit(
        running, statements.FINDING, draft([incident], pb.FINDING_OUTCOME_INCONCLUSIVE),
        p.arm_authority,
    )  # fmt: skip
    arm2, _ = submit(
        running, statements.ATTESTATION, attestation(second, payload2, "ARM"), p.arm_authority
    )
    dissent = pb.Dissent(
        finding_index=second, draft_sha256=hashlib.sha256(payload2).hexdigest(), party="AZE",
        created_time=to_timestamp(now_us()), reasons="Our log shows no fire.",
        reasons_language="en",
    )  # fmt: skip
    dissented, _ = submit(running, statements.DISSENT, dissent, p.aze_authority)

    got = running.client.dossier(incident)
    assert [(e.index, e.relation) for e in got.entries] == [
        (incident, "report"), (first, "finding"), (arm, "attestation"), (aze, "joint_finding"),
        (second, "finding"), (arm2, "attestation"), (dissented, "dissent"),
    ]  # fmt: skip
    doc = dossier(running, capsys, str(incident))
    answers = {e["index"]: e for e in doc["entries"] if "signer_key_ids" in e}
    assert answers[arm]["signer_key_ids"] == [kid(p.arm_authority)]
    assert answers[aze]["signer_key_ids"] == [kid(p.aze_authority)]
    assert answers[dissented]["signer_key_ids"] == [kid(p.aze_authority)]
    assert [i for i, e in answers.items() if e["met_policy"]] == [aze]
    assert (answers[arm2]["finding"], answers[dissented]["finding"]) == (second, second)
    said = cli(capsys, "dossier", str(incident), "--server", running.address)
    assert f"attests finding {first}; signed by {kid(p.arm_authority)[:16]}\n" in said
    assert f"attests finding {first}; signed by {kid(p.aze_authority)[:16]}; met the policy" in said
    assert f"dissents from finding {second}: Our log shows no fire.; signed by " in said

    # As of the AZE attestation, the finding was not yet jointly attested.
    early = running.client.dossier(incident, as_of_index=aze)
    assert early.status == api.INCIDENT_STATUS_UNDER_INVESTIGATION
    assert [e.index for e in early.entries] == [incident, first, arm]


def test_investigation_show_lists_attestations_and_dissents(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    p = running.parties
    arm, aze, inv, _ = under_way(running)
    first, draft1 = submit(
        running, statements.FINDING,
        finding(inv, "ARM", [arm], pb.FINDING_OUTCOME_CONFIRMED), p.arm_investigator,
    )  # fmt: skip
    attested, _ = submit(
        running, statements.ATTESTATION, attestation(first, draft1, "ARM"), p.arm_authority
    )
    met, _ = submit(
        running, statements.ATTESTATION, attestation(first, draft1, "AZE"), p.aze_authority
    )
    second, draft2 = submit(
        running, statements.FINDING,
        finding(inv, "AZE", [aze], pb.FINDING_OUTCOME_NOT_CONFIRMED), p.aze_investigator,
    )  # fmt: skip
    dissent = pb.Dissent(
        finding_index=second, draft_sha256=hashlib.sha256(draft2).hexdigest(), party="ARM",
        created_time=to_timestamp(now_us()), reasons="Signed under protest.",
        reasons_language="en",
    )  # fmt: skip
    dissented, _ = submit(running, statements.DISSENT, dissent, p.arm_authority)

    got = running.client.investigation(inv)
    relations = {e.index: e.relation for e in got.entries}
    assert (relations[attested], relations[met], relations[dissented]) == (
        "attestation", "joint_finding", "dissent",
    )  # fmt: skip
    said = cli(capsys, "investigation", "show", str(inv), "--server", running.address)
    assert f"attests finding {first}; signed by {kid(p.arm_authority)[:16]}\n" in said
    assert f"signed by {kid(p.aze_authority)[:16]}; met the policy" in said
    assert f"dissents from finding {second}: Signed under protest.; signed by " in said
    doc = cli_json(capsys, "investigation", "show", str(inv), "--server", running.address)
    shown = {e["index"]: e for e in doc["entries"]}
    assert shown[met]["met_policy"] and not shown[attested]["met_policy"]
    assert shown[dissented]["signer_key_ids"] == [kid(p.arm_authority)]


def test_statuses_as_of_an_earlier_index(
    running: RunningLedger, capsys: pytest.CaptureFixture[str]
) -> None:
    p = running.parties
    incident = send(running, report("ARM", blames="AZE"))
    denial = pb.CounterClaim(
        incident_index=incident, created_time=to_timestamp(now_us()), party="AZE",
        kind=pb.RESPONSE_KIND_DENIAL,
    )  # fmt: skip
    denied, _ = submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    later = send(running, report("AZE", lat=GAZAKH[0], lon=GAZAKH[1], hours_ago=50))
    retraction = pb.IncidentRetraction(
        incident_index=incident, created_time=to_timestamp(now_us()), party="ARM"
    )
    retracted, _ = submit(running, statements.RETRACTION, retraction, p.arm_monitor)
    size = running.client.checkpoint().tree_size

    def statuses(as_of: int) -> dict[int, int]:
        return {t.index: t.status for t in running.client.timeline(as_of_index=as_of)}

    assert statuses(0) == {
        incident: api.INCIDENT_STATUS_RETRACTED,
        later: api.INCIDENT_STATUS_REPORTED,
    }
    assert statuses(size) == statuses(0)
    assert statuses(retracted) == {
        incident: api.INCIDENT_STATUS_DISPUTED,
        later: api.INCIDENT_STATUS_REPORTED,
    }
    assert statuses(later) == {incident: api.INCIDENT_STATUS_DISPUTED}  # not logged yet
    assert statuses(denied) == {incident: api.INCIDENT_STATUS_REPORTED}
    got = running.client.dossier(incident, as_of_index=retracted)
    assert got.status == api.INCIDENT_STATUS_DISPUTED
    assert [e.index for e in got.entries] == [incident, denied]
    assert got.current.retracted_at_index == 0

    # The command line.
    shown = timeline(running, capsys, "--as-of-index", str(retracted))
    assert shown[incident]["status"] == "disputed" and not shown[incident]["retracted"]
    text = cli(capsys, "timeline", "--server", running.address, "--as-of-index", str(denied))
    assert f"before entry {denied}" in text and "[reported]" in text and "[disputed]" not in text
    doc = dossier(running, capsys, str(incident), "--as-of-index", str(retracted))
    assert (doc["status"], doc["as_of_index"]) == ("disputed", retracted)
    assert [e["index"] for e in doc["entries"]] == [incident, denied]

    # Beyond the tree, or before the incident was logged: refused, with the field named.
    for call in (
        lambda: list(running.client.timeline(as_of_index=size + 1)),
        lambda: running.client.dossier(incident, as_of_index=size + 1),
        lambda: list(running.client.timeline(as_of_index=2**64 - 1)),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert isinstance(info.value, grpc.Call)
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "as_of_index" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        running.client.dossier(later, as_of_index=later)
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert main(["timeline", "--server", running.address, "--as-of-index", str(size + 1)]) == 1
    assert "OUT_OF_RANGE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dossier", str(incident), "--server", running.address, "--as-of-index", "-1"])


def test_the_status_view_gives_what_the_links_give_without_the_entries(
    running: RunningLedger,
) -> None:
    """TIMELINE_VIEW_STATUS (what an audit compares with its replay) holds each incident's
    status and its links' markers, as the full view has them, and nothing read from the
    entries: no entry, report or geo facts."""
    p = running.parties
    first = send(running, report("ARM", blames="AZE"))
    send(running, report("AZE", lat=BERD[0] + 0.005, lon=BERD[1]))  # likely duplicate
    original = report("ARM", lat=NEAR_BORDER[0], lon=NEAR_BORDER[1], hours_ago=30)
    moved = pb.IncidentReport()
    moved.CopyFrom(original)
    moved.location.point.CopyFrom(point(*ACROSS))
    amend(running, send(running, original), moved)
    elsewhere = send(running, report("ARM", lat=GAZAKH[0], lon=GAZAKH[1], hours_ago=40))
    retraction = pb.IncidentRetraction(
        incident_index=elsewhere, created_time=to_timestamp(now_us()), party="ARM",
        reason="double-counted",
    )  # fmt: skip
    submit(running, statements.RETRACTION, retraction, p.arm_monitor)

    full = list(running.client.timeline_page(api.TimelineRequest()))
    status = running.client.timeline_page(api.TimelineRequest(view=api.TIMELINE_VIEW_STATUS))
    marked = list(status)
    assert [r.index for r in marked] == [r.index for r in full] and len(full) == 4
    markers = ("amended_at_index", "amended_at_time", "amendments", "retracted_at_index")
    for got, want in zip(marked, full, strict=True):
        assert not got.entry and not got.HasField("report") and not got.HasField("geo")
        assert not got.current.HasField("report") and not got.current.likely_duplicate_of
        assert got.status == want.status
        assert list(got.current.likely_duplicated_by) == list(want.current.likely_duplicated_by)
        for name in markers:
            assert getattr(got.current, name) == getattr(want.current, name), name
        assert (got.next_page_token, got.more, got.as_of_index) == (
            want.next_page_token, want.more, want.as_of_index,
        )  # fmt: skip
    by_index = {r.index: r for r in marked}
    assert list(by_index[first].current.likely_duplicated_by) != []
    assert by_index[elsewhere].status == api.INCIDENT_STATUS_RETRACTED
    assert sum(r.current.amended_at_index > 0 for r in marked) == 1
