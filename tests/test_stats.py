"""Statistics on a real server, checked against counts made by hand over a known scenario:
reports of both parties on different days, categories and border segments (one retracted,
one disputed, two under investigation, one out of the period); an investigation accepted,
one declined, one left unanswered past its deadline (the log's clock moved on); a finding
attested by one party and dissented by the other; notices; hotline messages, one
acknowledged ten minutes after it was sent. And the bounds, and the command line."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from clients.cli import main
from clients.client import field_violations
from ledger import statements
from ledger.clock import now_us, to_timestamp, to_us
from tests.conftest import LogClock, RunningLedger
from tests.reports import HOUR_US, report, signed
from tests.test_findings import attestation, draft, submit
from tests.test_investigations import answer, request
from tests.test_prevention import ack, hotline, notice

DAY_US = 24 * HOUR_US
ARM_MAIN = (40.8811, 45.3875)
AZE_MAIN = (41.0933, 45.3661)
ARM_NAKHCHIVAN = (39.77, 44.80)
AZE_NAKHCHIVAN = (39.45, 45.60)


@dataclass(frozen=True)
class Logged:
    index: int
    party: str
    category: str
    segment: str
    start_us: int


@dataclass
class Scenario:
    since_us: int
    reports: list[Logged]
    status: dict[int, str]
    times: dict[int, int]
    # Log indexes of the entries the participation figures come from.
    accepted_by_arm: tuple[int, int]  # (request, answer)
    declined_by_aze: tuple[int, int]
    acknowledged_by_aze: tuple[int, int]


def _time(running: RunningLedger, index: int) -> int:
    from ledger.formats.log_entry import parse_entry

    return to_us(parse_entry(running.client.entry(index).entry).integrated_time)


def build(running: RunningLedger, log_clock: LogClock) -> Scenario:
    p, client = running.parties, running.client
    since = now_us() - 10 * DAY_US
    plan = [
        ("ARM", ARM_MAIN, 5, pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE, "main", p.arm_monitor),
        ("ARM", ARM_NAKHCHIVAN, 30, pb.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY, "nakhchivan",
         p.arm_monitor),
        ("AZE", AZE_MAIN, 54, pb.INCIDENT_CATEGORY_SNIPER, "main", p.aze_monitor),
        ("AZE", AZE_NAKHCHIVAN, 200, pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE, "nakhchivan",
         p.aze_monitor),
        ("ARM", ARM_MAIN, 3, pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE, "main", p.arm_monitor),
        # Twelve and a half days ago: before the period.
        ("ARM", ARM_MAIN, 300, pb.INCIDENT_CATEGORY_DRONE_STRIKE, "main", p.arm_monitor),
    ]  # fmt: skip
    logged = []
    for party, (lat, lon), hours, category, segment, key in plan:
        r = report(party, lat=lat, lon=lon, hours_ago=hours, category=category)
        index = client.submit(signed(r, key)).receipt.index
        name = pb.IncidentCategory.Name(category).removeprefix("INCIDENT_CATEGORY_").lower()
        logged.append(Logged(index, party, name, segment, to_us(r.window.start)))
    disputed, retracted, investigated, found, plain, old = (x.index for x in logged)
    now = to_timestamp(now_us())

    denial = pb.CounterClaim(
        incident_index=disputed, created_time=now, party="AZE", kind=pb.RESPONSE_KIND_DENIAL
    )
    submit(running, statements.COUNTER_CLAIM, denial, p.aze_authority)
    retraction = pb.IncidentRetraction(
        incident_index=retracted, created_time=now, party="ARM", reason="double-counted"
    )
    submit(running, statements.RETRACTION, retraction, p.arm_authority)

    # AZE asks, ARM accepts; ARM asks, AZE declines.
    i1, _ = submit(
        running,
        statements.INVESTIGATION_REQUEST,
        request([investigated], party="AZE"),
        p.aze_authority,
    )
    a1, _ = submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(i1, pb.INVESTIGATION_DECISION_ACCEPT, party="ARM"),
        p.arm_authority,
    )
    i2, _ = submit(running, statements.INVESTIGATION_REQUEST, request([disputed]), p.arm_authority)
    a2, _ = submit(
        running,
        statements.INVESTIGATION_RESPONSE,
        answer(i2, pb.INVESTIGATION_DECISION_DECLINE),
        p.aze_authority,
    )
    # A finding about AZE's Nakhchivan report: AZE attests, ARM dissents.
    finding, payload = submit(
        running, statements.FINDING, draft([found], pb.FINDING_OUTCOME_CONFIRMED), p.arm_authority
    )
    submit(running, statements.ATTESTATION, attestation(finding, payload, "AZE"), p.aze_authority)
    dissent = pb.Dissent(
        finding_index=finding, draft_sha256=attestation(finding, payload, "ARM").draft_sha256,
        party="ARM", created_time=to_timestamp(now_us()), reasons="The bearing is wrong.",
        reasons_language="en",
    )  # fmt: skip
    submit(running, statements.DISSENT, dissent, p.arm_authority)
    # Notices: AZE's, acknowledged by ARM; ARM's, acknowledged by nobody.
    aze_notice, _ = submit(running, statements.NOTICE, notice("AZE"), p.aze_authority)
    submit(running, statements.ACKNOWLEDGEMENT, ack(aze_notice, "ARM"), p.arm_monitor)
    submit(running, statements.NOTICE, notice("ARM", place=ARM_MAIN), p.arm_authority)
    # Hotline: ARM's message acknowledged by AZE ten minutes later (by the log's clock);
    # AZE's message never acknowledged by ARM.
    m1, _ = submit(
        running, statements.HOTLINE, hotline("ARM", "AZE", "Fire at Berd?"), p.arm_monitor
    )
    log_clock.ahead_us = 600 * 1_000_000
    k1, _ = submit(running, statements.ACKNOWLEDGEMENT, ack(m1, "AZE"), p.aze_monitor)
    submit(running, statements.HOTLINE, hotline("AZE", "ARM", "Hold fire."), p.aze_authority)
    # ARM asks about its latest report; AZE lets the deadline pass.
    submit(running, statements.INVESTIGATION_REQUEST, request([plain], hours=1.5), p.arm_authority)
    log_clock.ahead_us = 3 * HOUR_US

    status = {
        disputed: "disputed",
        retracted: "retracted",
        investigated: "under_investigation",
        found: "under_investigation",
        plain: "reported",
        old: "reported",
    }
    times = {i: _time(running, i) for i in (i1, a1, i2, a2, m1, k1)}
    return Scenario(
        since, [x for x in logged if x.index != old], status, times, (i1, a1), (i2, a2), (m1, k1)
    )


def day_label(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).date().isoformat()


def week_label(us: int) -> str:
    year, week, _ = datetime.fromtimestamp(us / 1e6, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def counts_of(message: api.IncidentCounts) -> dict[str, object]:
    return {
        "reports": message.reports,
        "by_party": dict(message.by_party),
        "by_category": dict(message.by_category),
        "by_segment": dict(message.by_segment),
        "by_status": dict(message.by_status),
        "by_party_status": dict(message.by_party_status),
    }


def by_hand(s: Scenario, reports: list[Logged]) -> dict[str, object]:
    return {
        "reports": len(reports),
        "by_party": dict(Counter(r.party for r in reports)),
        "by_category": dict(Counter(r.category for r in reports)),
        "by_segment": dict(Counter(r.segment for r in reports)),
        "by_status": dict(Counter(s.status[r.index] for r in reports)),
        "by_party_status": dict(Counter(f"{r.party}/{s.status[r.index]}" for r in reports)),
    }


def test_statistics_match_counts_made_by_hand(running: RunningLedger, log_clock: LogClock) -> None:
    s = build(running, log_clock)
    for bucket, label in ((api.STATS_BUCKET_DAY, day_label), (api.STATS_BUCKET_WEEK, week_label)):
        got = running.client.stats(s.since_us, bucket=bucket)
        assert got.tree_size == running.client.checkpoint().tree_size
        assert counts_of(got.totals) == by_hand(s, s.reports)
        assert counts_of(got.totals)["by_segment"] == {"main": 3, "nakhchivan": 2}
        # Every bucket of the period, in order, the empty ones too; each report in its own.
        labels = [b.label for b in got.buckets]
        first, last = label(s.since_us), label(to_us(got.until) - 1)
        assert labels[0] == first and labels[-1] == last and labels == sorted(set(labels))
        if bucket == api.STATS_BUCKET_DAY:
            first_day = datetime.fromtimestamp(s.since_us / 1e6, UTC).date()
            last_day = datetime.fromtimestamp((to_us(got.until) - 1) / 1e6, UTC).date()
            assert len(labels) == (last_day - first_day).days + 1
        for b in got.buckets:
            mine = [r for r in s.reports if label(r.start_us) == b.label]
            assert counts_of(b.counts) == (
                by_hand(s, mine) if mine else counts_of(api.IncidentCounts())
            )
        assert sum(b.counts.reports for b in got.buckets) == 5

    rows = {r.party: r for r in got.participation}
    assert sorted(rows) == ["ARM", "AZE"]
    arm, aze = rows["ARM"], rows["AZE"]
    (i1, a1), (i2, a2), (m1, k1) = s.accepted_by_arm, s.declined_by_aze, s.acknowledged_by_aze
    t = s.times
    assert (arm.requests_made, arm.requests_received) == (2, 1)
    assert (arm.accepted, arm.declined, arm.unanswered, arm.awaiting) == (1, 0, 0, 0)
    assert arm.median_answer_s == pytest.approx((t[a1] - t[i1]) / 1e6)
    assert (aze.requests_made, aze.requests_received) == (1, 2)
    assert (aze.accepted, aze.declined, aze.unanswered, aze.awaiting) == (0, 1, 1, 0)
    assert aze.median_answer_s == pytest.approx((t[a2] - t[i2]) / 1e6)
    assert (arm.findings_attested, arm.findings_dissented) == (0, 1)
    assert (aze.findings_attested, aze.findings_dissented) == (1, 0)
    assert (arm.notices_given, arm.notices_acknowledged) == (1, 1)
    assert (aze.notices_given, aze.notices_acknowledged) == (1, 0)
    assert (arm.hotline_sent, arm.hotline_sent_acknowledged) == (1, 1)
    assert (arm.hotline_received, arm.hotline_acknowledged) == (1, 0)
    assert not arm.HasField("median_acknowledge_s")
    assert (aze.hotline_sent, aze.hotline_sent_acknowledged) == (1, 0)
    assert (aze.hotline_received, aze.hotline_acknowledged) == (1, 1)
    assert aze.median_acknowledge_s == pytest.approx((t[k1] - t[m1]) / 1e6)
    assert 600 <= aze.median_acknowledge_s < 700

    # Before the deadline passed, the same request was awaiting AZE's answer, not unanswered.
    log_clock.ahead_us = 600 * 1_000_000
    earlier = {r.party: r for r in running.client.stats(s.since_us).participation}
    assert (earlier["AZE"].unanswered, earlier["AZE"].awaiting) == (0, 1)

    # A period that ends before everything: nothing counted, every party listed.
    empty = running.client.stats(s.since_us - 20 * DAY_US, s.since_us - 15 * DAY_US)
    day0 = datetime.fromtimestamp((s.since_us - 20 * DAY_US) / 1e6, UTC).date()
    day1 = datetime.fromtimestamp((s.since_us - 15 * DAY_US - 1) / 1e6, UTC).date()
    assert empty.totals.reports == 0 and len(empty.buckets) == (day1 - day0).days + 1
    assert all(r.requests_made == r.hotline_sent == 0 for r in empty.participation)


def _refused(running: RunningLedger, since: int, until: int, bucket: int) -> tuple[str, list[str]]:
    with pytest.raises(grpc.RpcError) as info:
        running.client.stats(since, until, bucket)  # type: ignore[arg-type]
    assert isinstance(info.value, grpc.Call)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.details() or "", field_violations(info.value)


def test_the_bounds_are_refused_naming_the_field(running: RunningLedger) -> None:
    now = now_us()
    details, fields = _refused(running, now - 800 * DAY_US, now, api.STATS_BUCKET_WEEK)
    assert "731 days" in details and any(f.startswith("since") for f in fields)
    details, fields = _refused(running, now - 500 * DAY_US, now, api.STATS_BUCKET_DAY)
    assert "count by week" in details and any(f.startswith("bucket") for f in fields)
    details, fields = _refused(running, now, now - DAY_US, api.STATS_BUCKET_DAY)
    assert any(f.startswith("since") for f in fields)
    details, fields = _refused(running, now - DAY_US, now, 7)
    assert any(f.startswith("bucket") for f in fields)
    # 500 days by week is fine.
    assert len(running.client.stats(now - 500 * DAY_US, now, api.STATS_BUCKET_WEEK).buckets) >= 72


def test_cli_stats_tables_and_json(
    running: RunningLedger, log_clock: LogClock, capsys: pytest.CaptureFixture[str]
) -> None:
    s = build(running, log_clock)
    server = ["--server", running.address]
    assert main(["stats", *server, "--since", "10d", "--by", "week", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["bucket"] == "week" and doc["totals"]["reports"] == 5
    assert doc["totals"]["by_status"] == dict(
        sorted(Counter(s.status[r.index] for r in s.reports).items())
    )
    participation = {r["party"]: r for r in doc["participation"]}
    assert participation["AZE"]["unanswered"] == 1 and participation["ARM"]["accepted"] == 1
    assert participation["ARM"]["median_acknowledge_s"] is None
    assert sum(b["reports"] for b in doc["buckets"]) == 5

    assert main(["stats", *server, "--since", "10d"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split() == ["total", "5", "3", "2"] for line in lines), out
    assert any(line.split()[:3] == ["retracted", "1", "1"] for line in lines), out
    unanswered = next(line for line in lines if "left unanswered" in line)
    assert unanswered.split()[-2:] == ["0", "1"]
    assert any(line.split()[:2] == ["nakhchivan", "2"] for line in lines), out

    assert main(["stats", *server, "--since", "yesterday"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since 'yesterday'" in err
    assert main(["stats", *server, "--since", "900d"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "731 days" in err and "Traceback" not in err


def test_amendments_joint_findings_and_several_answers_counted_by_hand(
    running: RunningLedger, log_clock: LogClock
) -> None:
    """The rules docs/following-and-stats.md gives, on a harder scenario: an amended report
    is counted once, under its reporting party and in the bucket of its start as first
    logged, with the category and border segment of its last amendment; the jointly_*
    and inconclusive statuses; medians over several answers."""
    p, client = running.parties, running.client
    since = now_us() - 10 * DAY_US

    logged: dict[int, pb.IncidentReport] = {}

    def log(
        party: str,
        place: tuple[float, float],
        hours: float,
        category: pb.IncidentCategory.ValueType,
    ) -> int:
        r = report(party, lat=place[0], lon=place[1], hours_ago=hours, category=category)
        key = p.arm_monitor if party == "ARM" else p.aze_monitor
        index = client.submit(signed(r, key)).receipt.index
        logged[index] = r
        return index

    small, sniper = pb.INCIDENT_CATEGORY_SMALL_ARMS_FIRE, pb.INCIDENT_CATEGORY_SNIPER
    amended = log("ARM", ARM_MAIN, 20, small)
    confirmed = log("AZE", AZE_MAIN, 44, sniper)
    not_confirmed = log("ARM", ARM_MAIN, 68, pb.INCIDENT_CATEGORY_ROCKET)
    inconclusive = log("AZE", AZE_NAKHCHIVAN, 92, sniper)
    acknowledged = log("ARM", ARM_MAIN, 150, small)

    # ARM corrects its report: artillery, at Nakhchivan, four days earlier.
    corrected = pb.IncidentReport()
    corrected.CopyFrom(logged[amended])
    corrected.category = pb.INCIDENT_CATEGORY_MORTAR_OR_ARTILLERY
    corrected.location.point.latitude, corrected.location.point.longitude = ARM_NAKHCHIVAN
    corrected.window.start.seconds -= 4 * 86_400
    corrected.window.end.seconds -= 4 * 86_400
    amendment = pb.IncidentAmendment(
        incident_index=amended, created_time=to_timestamp(now_us()), party="ARM",
        corrected=corrected, reason="wrong post",
    )  # fmt: skip
    submit(running, statements.AMENDMENT, amendment, p.arm_monitor)
    ack_claim = pb.CounterClaim(
        incident_index=acknowledged, created_time=to_timestamp(now_us()), party="AZE",
        kind=pb.RESPONSE_KIND_ACKNOWLEDGEMENT,
    )  # fmt: skip
    submit(running, statements.COUNTER_CLAIM, ack_claim, p.aze_authority)
    # Three findings, each attested by both parties.
    for incidents, outcome in (
        ([confirmed], pb.FINDING_OUTCOME_CONFIRMED),
        ([not_confirmed], pb.FINDING_OUTCOME_NOT_CONFIRMED),
        ([inconclusive], pb.FINDING_OUTCOME_INCONCLUSIVE),
    ):
        finding, payload = submit(running, statements.FINDING, draft(incidents, outcome),
                                  p.arm_authority)  # fmt: skip
        for party, key in (("ARM", p.arm_authority), ("AZE", p.aze_authority)):
            submit(running, statements.ATTESTATION, attestation(finding, payload, party), key)

    # ARM asks three times and AZE answers each, after 1, 5 and 2 minutes of log time; AZE
    # asks twice and ARM answers after 3 and 7 minutes. Each request about an incident a
    # joint finding settled, so the statuses above stand.
    ahead = 0
    delays: dict[str, list[int]] = {"ARM": [], "AZE": []}
    plan = [
        ("ARM", [confirmed], 1, pb.INVESTIGATION_DECISION_ACCEPT),
        ("ARM", [inconclusive], 5, pb.INVESTIGATION_DECISION_DECLINE),
        ("ARM", [confirmed, inconclusive], 2, pb.INVESTIGATION_DECISION_ACCEPT),
        ("AZE", [not_confirmed], 3, pb.INVESTIGATION_DECISION_ACCEPT),
        ("AZE", [not_confirmed], 7, pb.INVESTIGATION_DECISION_DECLINE),
    ]
    for asker, about, minutes, decision in plan:
        answerer = "AZE" if asker == "ARM" else "ARM"
        keys = {"ARM": p.arm_authority, "AZE": p.aze_authority}
        asked, _ = submit(running, statements.INVESTIGATION_REQUEST,
                          request(about, party=asker, hours=48), keys[asker])  # fmt: skip
        ahead += minutes * 60 * 1_000_000
        log_clock.ahead_us = ahead
        answered, _ = submit(running, statements.INVESTIGATION_RESPONSE,
                             answer(asked, decision, party=answerer), keys[answerer])  # fmt: skip
        delays[answerer].append(_time(running, answered) - _time(running, asked))

    status = {
        amended: "reported",
        confirmed: "jointly_confirmed",
        not_confirmed: "jointly_not_confirmed",
        inconclusive: "inconclusive",
        acknowledged: "acknowledged",
    }
    for index, name in status.items():  # as the dossier derives it
        assert api.IncidentStatus.Name(client.dossier(index).status).endswith(name.upper())
    first_logged = {i: to_us(logged[i].window.start) for i in status}
    segment_of = {amended: "nakhchivan", confirmed: "main", not_confirmed: "main",
               inconclusive: "nakhchivan", acknowledged: "main"}  # fmt: skip
    category_of = {amended: "mortar_or_artillery", confirmed: "sniper", not_confirmed: "rocket",
                inconclusive: "sniper", acknowledged: "small_arms_fire"}  # fmt: skip
    reporter = {amended: "ARM", confirmed: "AZE", not_confirmed: "ARM", inconclusive: "AZE",
             acknowledged: "ARM"}  # fmt: skip
    reports = [
        Logged(i, reporter[i], category_of[i], segment_of[i], first_logged[i]) for i in status
    ]
    s = Scenario(since, reports, status, {}, (0, 0), (0, 0), (0, 0))

    got = client.stats(since, bucket=api.STATS_BUCKET_DAY)
    assert counts_of(got.totals) == by_hand(s, reports)
    assert counts_of(got.totals)["by_category"] == {
        "mortar_or_artillery": 1, "sniper": 2, "rocket": 1, "small_arms_fire": 1,
    }  # fmt: skip
    for b in got.buckets:  # the amended report in its first-logged start's day only
        mine = [r for r in reports if day_label(r.start_us) == b.label]
        assert counts_of(b.counts) == (
            by_hand(s, mine) if mine else counts_of(api.IncidentCounts())
        )
    moved_to = day_label(first_logged[amended] - 4 * DAY_US)
    assert next(b for b in got.buckets if b.label == moved_to).counts.by_party["ARM"] == 0

    rows = {r.party: r for r in got.participation}
    arm, aze = rows["ARM"], rows["AZE"]
    assert (arm.requests_made, aze.requests_received, aze.accepted, aze.declined) == (3, 3, 2, 1)
    assert (aze.requests_made, arm.requests_received, arm.accepted, arm.declined) == (2, 2, 1, 1)
    assert arm.unanswered == aze.unanswered == arm.awaiting == aze.awaiting == 0
    # By hand: the middle one of AZE's three delays, the mean of ARM's two.
    assert aze.median_answer_s == pytest.approx(sorted(delays["AZE"])[1] / 1e6)
    assert arm.median_answer_s == pytest.approx(sum(delays["ARM"]) / 2 / 1e6)
    assert 120 <= aze.median_answer_s < 180 and 300 <= arm.median_answer_s < 360
    assert (arm.findings_attested, aze.findings_attested) == (3, 3)
