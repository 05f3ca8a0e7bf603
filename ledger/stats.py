"""Statistics over a period: incident reports per day or ISO week by party, category, border
segment and derived status, and each party's participation (who answers investigation
requests, attests findings, gives notice and acknowledges hotline messages, and how fast).

Nothing here decides anew what the ledger decides elsewhere: an incident's status and its
current form come from the timeline's code (`Ledger.shown_incidents`, over
`incidents.derive_status`), an investigation's answers and deadline from
`ledger/investigations.py` (`InvestigationInfo.answered`, `past_deadline`), a message's
acknowledgements from `ledger/messages.py` (`MessageInfo.addressed_to`, `acknowledged`),
each subject as `Ledger.lookup` rebuilds it from its stored links. Everything is counted as
the log stood with the tree size read first; the deadline is judged by the log's clock.

Bounded work: a period of at most MAX_PERIOD_DAYS, at most MAX_BUCKETS buckets, at most
MAX_INCIDENTS incident reports and MAX_STATEMENTS participation statements in it (counted
by index before any is read; beyond: INVALID_ARGUMENT naming the field to narrow).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from ledger import incidents
from ledger import statements as kinds_of
from ledger.clock import MAX_US, MIN_US, to_timestamp
from ledger.errors import Corrupt, InvalidArgument
from ledger.formats.log_entry import parse_entry
from ledger.investigations import InvestigationInfo
from ledger.messages import HOTLINE, MessageInfo

if TYPE_CHECKING:
    from ledger.service import Ledger

DAY_US = 86_400 * 1_000_000
WEEK_US = 7 * DAY_US
MAX_PERIOD_DAYS = 731
MAX_BUCKETS = 400
MAX_INCIDENTS = 20_000
MAX_STATEMENTS = 10_000
# Incident reports read (and their links) per round trip.
PAGE = 500

DAY = api.STATS_BUCKET_DAY
WEEK = api.STATS_BUCKET_WEEK
# The participation statements, found by the kind index.
PARTICIPATION_KINDS = (
    kinds_of.INVESTIGATION_REQUEST,
    kinds_of.ATTESTATION,
    kinds_of.DISSENT,
    kinds_of.NOTICE,
    kinds_of.HOTLINE,
)


def bucket_start(us: int, bucket: api.StatsBucket.ValueType) -> int:
    """The first instant of the day (00:00 UTC) or ISO week (Monday 00:00 UTC) holding
    `us`. The Unix epoch was a Thursday: weeks are counted from Monday 1969-12-29."""
    if bucket == WEEK:
        monday = -3 * DAY_US
        return us - (us - monday) % WEEK_US
    return us - us % DAY_US


def bucket_label(start_us: int, bucket: api.StatsBucket.ValueType) -> str:
    """ "2026-11-30" for a day, "2026-W49" for an ISO week."""
    day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=start_us)
    if bucket == WEEK:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return day.date().isoformat()


@dataclass(frozen=True)
class Period:
    since_us: int
    until_us: int
    bucket: api.StatsBucket.ValueType

    @property
    def starts(self) -> list[int]:
        """The first instant of every bucket the period touches, in order."""
        step = WEEK_US if self.bucket == WEEK else DAY_US
        first, last = bucket_start(self.since_us, self.bucket), self.until_us - 1
        return list(range(first, bucket_start(last, self.bucket) + 1, step))


def period(since_us: int | None, until_us: int, bucket: api.StatsBucket.ValueType) -> Period:
    """The period [since, until) checked: INVALID_ARGUMENT naming the field."""
    if since_us is None:
        raise InvalidArgument("a period needs its start", field="since")
    for name, us in (("since", since_us), ("until", until_us)):
        if not MIN_US <= us <= MAX_US:
            raise InvalidArgument("must be from year 1 to 9999 (UTC)", field=name)
    if bucket not in (DAY, WEEK):
        if bucket != api.STATS_BUCKET_UNSPECIFIED:
            raise InvalidArgument(f"unknown bucket {bucket}", field="bucket")
        bucket = DAY
    if until_us <= since_us:
        raise InvalidArgument("must be before until", field="since")
    if until_us - since_us > MAX_PERIOD_DAYS * DAY_US:
        raise InvalidArgument(
            f"the period is longer than {MAX_PERIOD_DAYS} days; ask for a shorter one",
            field="since",
        )
    found = Period(since_us, until_us, bucket)
    if len(found.starts) > MAX_BUCKETS:
        raise InvalidArgument(
            f"{len(found.starts)} buckets; at most {MAX_BUCKETS}: count by week, or ask for "
            "a shorter period",
            field="bucket",
        )
    return found


@dataclass
class Counts:
    """Incident reports counted: in all, by party, category, segment, status."""

    reports: int = 0
    by_party: Counter[str] = field(default_factory=Counter)
    by_category: Counter[str] = field(default_factory=Counter)
    by_segment: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_party_status: Counter[str] = field(default_factory=Counter)

    def add(self, party: str, category: str, segment: str, status: str) -> None:
        self.reports += 1
        self.by_party[party] += 1
        self.by_category[category] += 1
        self.by_segment[segment] += 1
        self.by_status[status] += 1
        self.by_party_status[f"{party}/{status}"] += 1

    def message(self) -> api.IncidentCounts:
        return api.IncidentCounts(
            reports=self.reports,
            by_party=self.by_party,
            by_category=self.by_category,
            by_segment=self.by_segment,
            by_status=self.by_status,
            by_party_status=self.by_party_status,
        )


def category_name(category: int) -> str:
    """e.g. "small_arms_fire"; an unknown value as its number."""
    try:
        return str(pb.IncidentCategory.Name(category)).removeprefix("INCIDENT_CATEGORY_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(category)


@dataclass
class Participation:
    """One party's row: see PartyParticipation in the API for what each figure means."""

    requests_made: int = 0
    requests_received: int = 0
    accepted: int = 0
    declined: int = 0
    unanswered: int = 0
    awaiting: int = 0
    answer_delays_us: list[int] = field(default_factory=list)
    findings_attested: int = 0
    findings_dissented: int = 0
    notices_given: int = 0
    notices_acknowledged: int = 0
    hotline_sent: int = 0
    hotline_sent_acknowledged: int = 0
    hotline_received: int = 0
    hotline_acknowledged: int = 0
    ack_delays_us: list[int] = field(default_factory=list)

    def message(self, party: str) -> api.PartyParticipation:
        row = api.PartyParticipation(
            party=party,
            requests_made=self.requests_made,
            requests_received=self.requests_received,
            accepted=self.accepted,
            declined=self.declined,
            unanswered=self.unanswered,
            awaiting=self.awaiting,
            findings_attested=self.findings_attested,
            findings_dissented=self.findings_dissented,
            notices_given=self.notices_given,
            notices_acknowledged=self.notices_acknowledged,
            hotline_sent=self.hotline_sent,
            hotline_sent_acknowledged=self.hotline_sent_acknowledged,
            hotline_received=self.hotline_received,
            hotline_acknowledged=self.hotline_acknowledged,
        )
        if self.answer_delays_us:
            row.median_answer_s = statistics.median(self.answer_delays_us) / 1e6
        if self.ack_delays_us:
            row.median_acknowledge_s = statistics.median(self.ack_delays_us) / 1e6
        return row


def _investigation(
    rows: defaultdict[str, Participation],
    info: InvestigationInfo,
    times: dict[int, int],
    size: int,
    as_of_us: int,
) -> None:
    rows[info.party].requests_made += 1
    for party in info.respondents:
        row = rows[party]
        row.requests_received += 1
        answer = info.answered(party)
        if answer is not None and answer < size:
            if party in info.accepted:
                row.accepted += 1
            else:
                row.declined += 1
            row.answer_delays_us.append(times[answer] - times[info.index])
        elif info.past_deadline(as_of_us):
            row.unanswered += 1
        else:
            row.awaiting += 1


def _message(
    rows: defaultdict[str, Participation],
    info: MessageInfo,
    parties: Iterable[str],
    times: dict[int, int],
    size: int,
) -> None:
    acks = {p: i for p, i in info.acknowledged.items() if i < size}
    if info.kind == HOTLINE:
        rows[info.party].hotline_sent += 1
        to = rows[info.to_party]
        to.hotline_received += 1
        if info.to_party in acks:
            rows[info.party].hotline_sent_acknowledged += 1
            to.hotline_acknowledged += 1
            to.ack_delays_us.append(times[acks[info.to_party]] - times[info.index])
        return
    rows[info.party].notices_given += 1
    for party in parties:
        if info.addressed_to(party) and party in acks:
            rows[party].notices_acknowledged += 1


def compute(
    ledger: Ledger,
    since_us: int | None,
    until_us: int | None,
    bucket: api.StatsBucket.ValueType,
) -> api.StatsResponse:
    store = ledger.store
    size = store.tree_size()
    as_of = max(ledger.clock_us(), store.last_time_us())
    span = period(since_us, as_of if until_us is None else until_us, bucket)
    parties = sorted(ledger.trust.parties)

    # Incident reports, by the start of their window as first logged.
    found = store.incidents_starting(span.since_us, span.until_us, size, MAX_INCIDENTS + 1)
    if len(found) > MAX_INCIDENTS:
        raise InvalidArgument(
            f"more than {MAX_INCIDENTS} incident reports in the period; ask for a shorter one",
            field="since",
        )
    buckets = {start: Counts() for start in span.starts}
    totals = Counts()
    for first in range(0, len(found), PAGE):
        reports = store.get_entries(found[first : first + PAGE])
        for shown in ledger.shown_incidents(reports, before=size):
            current = shown.current
            facts = (
                shown.report.reporting_party,
                category_name(current.report.category),
                current.geo.nearest_segment,
                incidents.status_name(shown.status),
            )
            starts = shown.report.window.start
            start_us = starts.seconds * 1_000_000 + starts.nanos // 1000
            buckets[bucket_start(start_us, span.bucket)].add(*facts)
            totals.add(*facts)

    # Participation, by the log time of the request, notice, message, attestation or dissent.
    lo = store.first_index_at(span.since_us, size)
    hi = store.first_index_at(span.until_us, size)
    if store.count_kinds(PARTICIPATION_KINDS, lo, hi) > MAX_STATEMENTS:
        raise InvalidArgument(
            f"more than {MAX_STATEMENTS} requests, findings' answers, notices and messages in "
            "the period; ask for a shorter one",
            field="since",
        )
    rows: defaultdict[str, Participation] = defaultdict(Participation)
    for party in parties:
        rows[party] = Participation()
    lookup = ledger.lookup(size)
    requests: list[InvestigationInfo] = []
    said: list[MessageInfo] = []
    times: dict[int, int] = {}
    for stored in store.iter_kinds(PARTICIPATION_KINDS, lo, hi):
        times[stored.index] = stored.integrated_time_us
        if stored.kind in (kinds_of.ATTESTATION, kinds_of.DISSENT):
            party = parse_entry(stored.entry).validation.party
            if stored.kind == kinds_of.ATTESTATION:
                rows[party].findings_attested += 1
            else:
                rows[party].findings_dissented += 1
            continue
        subject = lookup(stored.index)
        if isinstance(subject, InvestigationInfo):
            requests.append(subject)
        elif isinstance(subject, MessageInfo):
            said.append(subject)
        else:
            raise Corrupt(f"entry {stored.index} ({stored.kind}) does not rebuild as one")
    answers = [
        i for info in requests for p in info.respondents if (i := info.answered(p)) is not None
    ]
    acks = [i for info in said for i in info.acknowledged.values()]
    times.update(store.times_of([i for i in [*answers, *acks] if i < size]))
    for info in requests:
        _investigation(rows, info, times, size, as_of)
    for message in said:
        _message(rows, message, parties, times, size)

    return api.StatsResponse(
        since=to_timestamp(span.since_us),
        until=to_timestamp(span.until_us),
        bucket=span.bucket,
        tree_size=size,
        as_of=to_timestamp(as_of),
        buckets=[
            api.IncidentBucket(
                start=to_timestamp(start),
                label=bucket_label(start, span.bucket),
                counts=counts.message(),
            )
            for start, counts in buckets.items()
        ],
        totals=totals.message(),
        participation=[rows[p].message(p) for p in sorted(rows)],
    )
