"""`ceasefire tail` (follow the log as it grows) and `ceasefire stats` (incident counts per
day or week, and who takes part: who answers investigation requests, acknowledges hotline
messages, and how fast)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from clients.client import connect
from clients.describe import describe_entry, summary
from clients.query_args import TIME_HELP, parse_time
from ledger import statements
from ledger.clock import now_us, to_iso, to_us
from ledger.errors import LedgerError
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry

Adder = Callable[[argparse.ArgumentParser], None]

SUMMARY_CHARS = 100


def add_parsers(sub: argparse._SubParsersAction, server_opt: Adder, json_opt: Adder) -> None:  # type: ignore[type-arg]
    help = "print each log entry from an index on, then each new one as it is logged (Ctrl-C)"
    sp = sub.add_parser("tail", help=help, description=help)
    sp.set_defaults(func=cmd_tail)
    server_opt(sp)
    sp.add_argument(
        "--from",
        dest="start",
        type=_index,
        default=None,
        metavar="N",
        help="the first index to print (default: only entries logged from now on)",
    )
    sp.add_argument("--json", action="store_true", help="one JSON document per line")

    help = "count incident reports per day or week, and each party's participation"
    sp = sub.add_parser(
        "stats",
        help=help,
        description=help + f". Times: {TIME_HELP}.",
    )
    sp.set_defaults(func=cmd_stats)
    server_opt(sp)
    sp.add_argument("--since", required=True, help="start of the period, e.g. 30d or 2026-11-01")
    sp.add_argument("--until", default=None, help="end of the period (default: now)")
    sp.add_argument("--by", choices=("day", "week"), default="day", help="bucket (default day)")
    json_opt(sp)


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a log index")
    return int(text)


# -- tail ------------------------------------------------------------------------------------


def kind_name(payload_type: str) -> str:
    """application/vnd.ceasefire.v1.IncidentReport+protobuf is IncidentReport."""
    return payload_type.removeprefix("application/vnd.ceasefire.v1.").removesuffix("+protobuf")


def entry_line(index: int, data: bytes) -> str:
    """index, log time, kind, party and what it says, on one line."""
    entry = parse_entry(data)
    kind = "?"
    try:
        envelope = dsse.Envelope.from_json(entry.envelope)
        kind = kind_name(envelope.payload_type)
        stmt = statements.decode(envelope.payload_type, envelope.payload)
        said = " ".join((summary(stmt) or _fallback(stmt)).split())
    except (LedgerError, ValueError) as e:
        said = f"(undecodable: {e})"
    if len(said) > SUMMARY_CHARS:
        said = said[: SUMMARY_CHARS - 1] + "…"
    when = to_iso(to_us(entry.integrated_time))[:19]
    party = entry.validation.party or "-"
    return f"#{index:<6} {when}  {kind:<24} {party:<4} {said}".rstrip()


def _fallback(stmt: object) -> str:
    """What describe.summary leaves empty, said briefly for a tail's line."""
    if isinstance(stmt, pb.Acknowledgement):
        return f"acknowledges entry {stmt.entry_index}"
    if isinstance(stmt, pb.TrustRoot):
        return f"trust root of {stmt.origin}: " + ", ".join(p.code for p in stmt.parties)
    return ""


def cmd_tail(args: argparse.Namespace) -> int:
    with connect(args) as client, _ctrl_c_ends_at_once():
        start = args.start if args.start is not None else client.checkpoint().tree_size
        entries = client.tail(start)
        try:
            return _print_all(entries, args.json, sys.stdout)
        except KeyboardInterrupt:
            return 130
        finally:
            with contextlib.suppress(Exception):
                entries.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _ctrl_c_ends_at_once() -> Iterator[None]:
    """Ctrl-C ends a tail there and then (exit 130), every line printed so far flushed.
    A KeyboardInterrupt raised inside gRPC's wait for the next message can leave the
    channel unable to close, and the command hanging instead of ending."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(_signum: int, _frame: object) -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(130)  # nothing is half-written: the server drops the cancelled stream

    before = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _print_all(entries: Iterator[api.TailResponse], as_json: bool, out: TextIO) -> int:
    try:
        for e in entries:
            if as_json:
                line = json.dumps(describe_entry(e.entry), ensure_ascii=False)
            else:
                line = entry_line(e.index, e.entry)
            out.write(line + "\n")
            out.flush()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, with nothing more to flush.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    return 0


# -- stats -----------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    now = now_us()
    since = parse_time(args.since, now, "--since")
    until = parse_time(args.until, now, "--until") if args.until else None
    bucket = api.STATS_BUCKET_WEEK if args.by == "week" else api.STATS_BUCKET_DAY
    with connect(args) as client:
        got = client.stats(since, until, bucket)
    doc = stats_doc(got)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    for line in stats_lines(doc):
        print(line)
    return 0


def _iso(ts: Timestamp) -> str:
    return to_iso(to_us(ts))


def _counts(c: api.IncidentCounts) -> dict[str, Any]:
    return {
        "reports": c.reports,
        "by_party": dict(sorted(c.by_party.items())),
        "by_category": dict(sorted(c.by_category.items())),
        "by_segment": dict(sorted(c.by_segment.items())),
        "by_status": dict(sorted(c.by_status.items())),
        "by_party_status": dict(sorted(c.by_party_status.items())),
    }


PARTICIPATION_FIGURES = (
    ("requests_made", "investigation requests made"),
    ("requests_received", "requests received"),
    ("accepted", "  accepted"),
    ("declined", "  declined"),
    ("unanswered", "  left unanswered (deadline passed)"),
    ("awaiting", "  awaiting an answer (deadline ahead)"),
    ("median_answer_s", "  median time to answer"),
    ("findings_attested", "findings attested"),
    ("findings_dissented", "findings dissented"),
    ("notices_given", "advance notices given"),
    ("notices_acknowledged", "others' notices acknowledged"),
    ("hotline_sent", "hotline messages sent"),
    ("hotline_sent_acknowledged", "  acknowledged by the addressee"),
    ("hotline_received", "hotline messages received"),
    ("hotline_acknowledged", "  acknowledged"),
    ("median_acknowledge_s", "  median time to acknowledge"),
)


def stats_doc(got: api.StatsResponse) -> dict[str, Any]:
    """The response as `stats --json` prints it."""
    participation = []
    for row in got.participation:
        doc: dict[str, Any] = {"party": row.party}
        for name, _ in PARTICIPATION_FIGURES:
            optional = name.startswith("median")
            doc[name] = getattr(row, name) if not optional or row.HasField(name) else None  # type: ignore[arg-type]
        participation.append(doc)
    return {
        "since": _iso(got.since),
        "until": _iso(got.until),
        "bucket": "week" if got.bucket == api.STATS_BUCKET_WEEK else "day",
        "tree_size": got.tree_size,
        "as_of": _iso(got.as_of),
        "buckets": [
            {"start": _iso(b.start), "label": b.label, **_counts(b.counts)} for b in got.buckets
        ],
        "totals": _counts(got.totals),
        "participation": participation,
    }


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """Left-aligned first column, right-aligned others."""
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return [
        "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
        ).rstrip()
        for r in cells
    ]


def stats_lines(doc: dict[str, Any]) -> list[str]:
    totals = doc["totals"]
    parties = sorted({p["party"] for p in doc["participation"]} | set(totals["by_party"]))
    out = [
        f"incident reports by incident time (window start, as first logged), "
        f"{doc['since'][:16]} to {doc['until'][:16]} UTC, per {doc['bucket']}",
        f"as the log stood at {doc['tree_size']} entries, log clock {doc['as_of'][:19]}",
        "",
    ]
    out += table(
        [doc["bucket"], "reports", *parties],
        [[b["label"], b["reports"], *(b["by_party"].get(p, 0) for p in parties)]
         for b in doc["buckets"]]
        + [["total", totals["reports"], *(totals["by_party"].get(p, 0) for p in parties)]],
    )  # fmt: skip
    statuses = sorted(totals["by_status"])
    for title, key in (("category", "by_category"), ("border segment", "by_segment")):
        out += [
            "",
            *table([title, "reports"], [[k or "(none)", v] for k, v in totals[key].items()]),
        ]
    out += [""]
    out += table(
        ["status now", "reports", *parties],
        [[s, totals["by_status"][s],
          *(totals["by_party_status"].get(f"{p}/{s}", 0) for p in parties)] for s in statuses],
    )  # fmt: skip
    rows: list[list[object]] = []
    by_party = {p["party"]: p for p in doc["participation"]}
    for name, label in PARTICIPATION_FIGURES:
        values = [by_party.get(p, {}).get(name) for p in parties]
        if name.startswith("median"):
            rows.append([label, *(duration(v) for v in values)])
        else:
            rows.append([label, *(v or 0 for v in values)])
    out += ["", "participation (statements logged in the period, as they stand now):"]
    out += table(["", *parties], rows)
    return out
