"""`ceasefire investigation | notice | hotline`: joint investigations of incidents, advance
notices of sensitive activity, and the hotline between the parties.

The terms of an investigation need the authority threshold of every party to it: one party
drafts and signs them with --out, the others add theirs (`ceasefire cosign FILE`), the last
sends the file (`ceasefire submit FILE`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from clients import signing
from clients.client import connect
from clients.describe import (
    answer_facts,
    describe_entry,
    entry_line,
    enum_name,
    statement_of,
)
from ledger import dsse, investigations, keys, statements
from ledger.clock import now_us, parse_iso, to_iso, to_timestamp, to_us
from ledger.trust import SHA256_HEX

HOUR_US = 3600 * 1_000_000
OUTCOMES = ("confirmed", "not_confirmed", "inconclusive")
PUBLICATION = {
    "sealed-until-finding": pb.PUBLICATION_RULE_SEALED_UNTIL_FINDING,
    "open": pb.PUBLICATION_RULE_OPEN,
}
VISIT_OUTCOMES = {
    "completed": pb.VISIT_OUTCOME_COMPLETED,
    "partial": pb.VISIT_OUTCOME_PARTIAL,
    "access-denied": pb.VISIT_OUTCOME_ACCESS_DENIED,
    "postponed": pb.VISIT_OUTCOME_POSTPONED,
}
ACTIVITIES = {
    "exercise": pb.ACTIVITY_KIND_MILITARY_EXERCISE,
    "engineering-works": pb.ACTIVITY_KIND_ENGINEERING_WORKS,
    "demining": pb.ACTIVITY_KIND_DEMINING,
    "harvest": pb.ACTIVITY_KIND_HARVEST,
    "other": pb.ACTIVITY_KIND_OTHER,
}
ACTIVITY_NAMES = {v: k for k, v in ACTIVITIES.items()}
TIME_PRECISIONS = ("minute", "hour", "day", "week", "month")
LOCATION_PRECISIONS = ("exact", "near", "region")


def _key_id(value: str) -> str:
    """A key id given as hex, or the id of the key in a public or private key file."""
    if SHA256_HEX.match(value) and not Path(value).exists():
        return value
    return dsse.key_id(keys.read_public(Path(value)))


def _point(text: str) -> pb.GeoPoint:
    try:
        lat, lon = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON in degrees") from None
    return pb.GeoPoint(latitude=lat, longitude=lon)


def _site(text: str) -> pb.InvestigationSite:
    # The name may hold '=' itself: the coordinates follow the last one.
    name, _, where = text.rpartition("=")
    parts = where.split(",")
    try:
        if not name or len(parts) != 3:
            raise ValueError
        center = pb.GeoPoint(latitude=float(parts[0]), longitude=float(parts[1]))
        return pb.InvestigationSite(name=name, center=center, radius_m=float(parts[2]))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not NAME=LAT,LON,RADIUS_M (e.g. Berd=40.8811,45.3875,500)"
        ) from None


def _text(value: str | None, language: str) -> tuple[str, str]:
    """A free text and its language tag; no tag without a text."""
    return (value, language) if value else ("", "")


# -- investigations ----------------------------------------------------------------------


def cmd_request(args: argparse.Namespace) -> int:
    if args.answer_by:
        answer_by = parse_iso(args.answer_by)
    else:
        answer_by = now_us() + round(args.answer_within * HOUR_US)
    scope, scope_language = _text(args.scope, args.language)
    request = pb.InvestigationRequest(
        created_time=to_timestamp(now_us()),
        party=args.party,
        incident_indexes=args.incident,
        respondents=args.respondent,
        answer_by=to_timestamp(answer_by),
        scope=scope,
        scope_language=scope_language,
    )
    incidents = ", ".join(str(i) for i in args.incident)
    return signing.sign_and_deliver(
        args,
        statements.INVESTIGATION_REQUEST,
        request,
        f"investigation of incidents {incidents} requested by {args.party}, "
        f"answers by {to_iso(answer_by)}",
    )


def cmd_answer(args: argparse.Namespace) -> int:
    response = pb.InvestigationResponse(
        investigation_index=args.index,
        created_time=to_timestamp(now_us()),
        party=args.party,
        decision=args.decision,
        reason=args.reason or "",
    )
    said = "accepts" if args.decision == pb.INVESTIGATION_DECISION_ACCEPT else "declines"
    return signing.sign_and_deliver(
        args,
        statements.INVESTIGATION_RESPONSE,
        response,
        f"{args.party} {said} investigation {args.index}",
    )


def cmd_terms(args: argparse.Namespace) -> int:
    procedure, procedure_language = _text(args.procedure, args.language)
    terms = pb.InvestigationTerms(
        investigation_index=args.index,
        created_time=to_timestamp(now_us()),
        supersedes_index=args.supersedes,
        member_key_ids=[_key_id(m) for m in args.member],
        sites=args.site,
        visit_procedure=procedure,
        visit_procedure_language=procedure_language,
        outcome_vocabulary=[
            pb.FindingOutcome.Value("FINDING_OUTCOME_" + o.upper()) for o in args.outcome
        ],
        publication_rule=PUBLICATION[args.publication],
    )
    return signing.sign_and_deliver(
        args, statements.INVESTIGATION_TERMS, terms, f"terms of investigation {args.index}"
    )


def cmd_visit(args: argparse.Namespace) -> int:
    notes, notes_language = _text(args.notes, args.language)
    visit = pb.VisitRecord(
        investigation_index=args.index,
        created_time=to_timestamp(now_us()),
        party=args.party,
        site=args.site,
        started=to_timestamp(parse_iso(args.started)),
        ended=to_timestamp(parse_iso(args.ended)),
        outcome=VISIT_OUTCOMES[args.outcome],
        denied_by=args.denied_by or "",
        members_present=[_key_id(m) for m in args.present or []],
        notes=notes,
        notes_language=notes_language,
        evidence_sha256=args.evidence or [],
    )
    return signing.sign_and_deliver(
        args,
        statements.VISIT,
        visit,
        f"visit to {args.site} ({args.outcome}) in investigation {args.index}",
    )


def cmd_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        got = client.investigation(args.index)
    entries: list[dict[str, Any]] = [
        {"relation": e.relation, **describe_entry(e.entry), **answer_facts(e.relation, e.entry)}
        for e in got.entries
    ]
    doc = {
        "investigation": args.index,
        "status": investigations.status_name(got.status),
        "as_of": to_iso(to_us(got.as_of)),
        "answer_by": to_iso(to_us(got.answer_by)),
        "awaiting": list(got.awaiting),
        # Index 0 is the trust root, never terms: the API's 0 means none agreed.
        "terms_index": got.terms_index or None,
        "members": list(got.member_key_ids),
        "entries": entries,
    }
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    print(f"investigation {args.index}: {doc['status']}  (log clock {doc['as_of']})")
    print(f"  answers by {doc['answer_by']}; awaiting {', '.join(doc['awaiting']) or 'nobody'}")
    if doc["terms_index"] is None:
        print("  terms      none agreed")
    else:
        print(f"  terms      entry {doc['terms_index']}; members:")
        for kid in doc["members"]:
            print(f"    {kid}")
    width = max([9, *(len(e.relation) for e in got.entries)])
    for e in got.entries:
        print(entry_line(e.index, e.relation, e.entry, width))
    return 0


# -- notices and the hotline -------------------------------------------------------------


def _polygon(path: Path) -> pb.GeoPolygon:
    """Vertices from a file of LAT,LON lines; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e
    polygon = pb.GeoPolygon()
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            polygon.points.append(_point(line))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    return polygon


def cmd_notice(args: argparse.Namespace) -> int:
    location = pb.Location(
        uncertainty_m=args.radius_m or 0.0,
        precision=pb.LocationPrecision.Value(
            "LOCATION_PRECISION_" + args.location_precision.upper()
        ),
    )
    if args.point is not None:
        if args.radius_m is None:
            raise ValueError("--point needs --radius-m: the area is a circle around it")
        location.point.CopyFrom(args.point)
    else:
        location.polygon.CopyFrom(_polygon(args.polygon))
    description, description_language = _text(args.description, args.language)
    notice = pb.AdvanceNotice(
        created_time=to_timestamp(now_us()),
        party=args.party,
        activity=ACTIVITIES[args.activity],
        window=pb.TimeWindow(
            start=to_timestamp(parse_iso(args.start)),
            end=to_timestamp(parse_iso(args.end)),
            precision=pb.TimePrecision.Value("TIME_PRECISION_" + args.time_precision.upper()),
        ),
        location=location,
        description=description,
        description_language=description_language,
    )
    return signing.sign_and_deliver(
        args, statements.NOTICE, notice, f"{args.activity} notice by {args.party}"
    )


def cmd_send(args: argparse.Namespace) -> int:
    message = pb.HotlineMessage(
        created_time=to_timestamp(now_us()),
        party=args.party,
        to_party=args.to,
        urgency=pb.HOTLINE_URGENCY_URGENT if args.urgent else pb.HOTLINE_URGENCY_ROUTINE,
        text=args.text,
        text_language=args.language,
        in_reply_to=args.reply_to,
    )
    urgent = "urgent " if args.urgent else ""
    return signing.sign_and_deliver(
        args, statements.HOTLINE, message, f"{urgent}message from {args.party} to {args.to}"
    )


def cmd_ack(args: argparse.Namespace) -> int:
    ack = pb.Acknowledgement(
        entry_index=args.index, created_time=to_timestamp(now_us()), party=args.party
    )
    return signing.sign_and_deliver(
        args, statements.ACKNOWLEDGEMENT, ack, f"{args.party} acknowledges entry {args.index}"
    )


def _message_row(m: api.ListMessagesResponse) -> dict[str, Any]:
    integrated, stmt = statement_of(m.entry)
    row: dict[str, Any] = {"index": m.index, "integrated_time": to_iso(integrated)}
    if isinstance(stmt, pb.AdvanceNotice):
        row |= {
            "kind": "notice",
            "party": stmt.party,
            "to_party": None,  # every other party
            "activity": ACTIVITY_NAMES.get(stmt.activity, "other"),
            "start": to_iso(to_us(stmt.window.start)),
            "end": to_iso(to_us(stmt.window.end)),
            "text": stmt.description,
        }
    else:
        assert isinstance(stmt, pb.HotlineMessage)
        row |= {
            "kind": "hotline",
            "party": stmt.party,
            "to_party": stmt.to_party,
            "urgency": enum_name(pb.HotlineUrgency, stmt.urgency, "HOTLINE_URGENCY_"),
            "in_reply_to": stmt.in_reply_to or None,
            "text": stmt.text,
        }
    row["acknowledged_by"] = dict(sorted(m.acknowledged_by.items()))
    row["replies"] = list(m.replies)
    return row


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = [
            _message_row(m)
            for m in client.messages(
                start=args.start,
                to_party=args.to or "",
                unacknowledged_only=args.unacknowledged,
                limit=args.limit,
            )
        ]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no notices or messages match")
    for r in rows:
        if r["kind"] == "notice":
            what = f"{r['activity']} {r['start'][:16]} to {r['end'][:16]}"
        else:
            what = r["urgency"] + (f", re #{r['in_reply_to']}" if r["in_reply_to"] else "")
        acks = ", ".join(f"{p} (#{i})" for p, i in r["acknowledged_by"].items())
        print(
            f"#{r['index']:<5} {r['integrated_time'][:16]}  {r['kind']:<7} "
            f"{r['party']} to {r['to_party'] or 'all'}: {what}"
        )
        if r["text"]:
            print(f"       {r['text']}")
        print(f"       acknowledged by {acks or 'nobody yet'}")
        if r["replies"]:
            print(f"       replies {', '.join(f'#{i}' for i in r['replies'])}")
    return 0


# -- parsers -----------------------------------------------------------------------------


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    ip = sub.add_parser(
        "investigation", help="joint investigations: request, answer, terms, visits, status"
    )
    isub = ip.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = isub.add_parser("request", help="ask other parties to investigate incidents jointly")
    sp.add_argument("--party", required=True, help="the requesting party")
    sp.add_argument(
        "--incident", type=int, action="append", required=True, help="report's log index"
    )
    sp.add_argument(
        "--respondent", action="append", required=True, help="a party asked to take part"
    )
    deadline = sp.add_mutually_exclusive_group(required=True)
    deadline.add_argument(
        "--answer-within",
        type=float,
        metavar="HOURS",
        help="deadline for answers from now: over 1 hour, at most 90 days (log's clock)",
    )
    deadline.add_argument("--answer-by", metavar="ISO", help="deadline for answers, ISO 8601")
    sp.add_argument("--scope", help="what is to be looked into")
    sp.add_argument("--language", default="en", help="the scope's BCP 47 tag")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_request)

    sp = isub.add_parser("answer", help="accept or decline a request, as a respondent")
    sp.add_argument("index", type=int, help="the request's log index")
    sp.add_argument("--party", required=True, help="the answering party")
    decision = sp.add_mutually_exclusive_group(required=True)
    decision.add_argument(
        "--accept",
        dest="decision",
        action="store_const",
        const=pb.INVESTIGATION_DECISION_ACCEPT,
    )
    decision.add_argument(
        "--decline",
        dest="decision",
        action="store_const",
        const=pb.INVESTIGATION_DECISION_DECLINE,
    )
    sp.add_argument("--reason")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_answer)

    sp = isub.add_parser(
        "terms",
        help="draft the terms (members, sites, outcomes); every party's authorities co-sign",
    )
    sp.add_argument("index", type=int, help="the request's log index")
    sp.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="KEY",
        help="a member's key id (hex) or key file (repeatable)",
    )
    sp.add_argument(
        "--site",
        type=_site,
        action="append",
        required=True,
        metavar="NAME=LAT,LON,RADIUS_M",
        help="a place the investigation may visit (repeatable)",
    )
    sp.add_argument("--procedure", help="how visits are conducted and recorded")
    sp.add_argument("--language", default="en", help="the procedure's BCP 47 tag")
    sp.add_argument(
        "--outcome",
        action="append",
        required=True,
        choices=OUTCOMES,
        help="an outcome its findings may state (repeatable)",
    )
    sp.add_argument("--publication", required=True, choices=list(PUBLICATION))
    sp.add_argument(
        "--supersedes", type=int, default=0, help="the log index of the terms these replace"
    )
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_terms)

    sp = isub.add_parser("visit", help="log a site visit, signed by member keys")
    sp.add_argument("index", type=int, help="the request's log index")
    sp.add_argument("--party", required=True, help="the logging members' party")
    sp.add_argument("--site", required=True, help="a site name from the terms in force")
    sp.add_argument("--started", required=True, metavar="ISO")
    sp.add_argument("--ended", required=True, metavar="ISO")
    sp.add_argument("--outcome", required=True, choices=list(VISIT_OUTCOMES))
    sp.add_argument("--denied-by", help="the party that refused access (access-denied, partial)")
    sp.add_argument(
        "--present", action="append", metavar="KEY", help="a member present: key id or key file"
    )
    sp.add_argument("--notes")
    sp.add_argument("--language", default="en", help="the notes' BCP 47 tag")
    sp.add_argument("--evidence", action="append", help="SHA-256 of evidence (repeatable)")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_visit)

    sp = isub.add_parser("show", help="status, deadline, terms and every linked entry")
    sp.add_argument("index", type=int, help="the request's log index")
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_show)


def add_prevention_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    sp = sub.add_parser("notice", help="announce sensitive activity near the border in advance")
    sp.add_argument("--party", required=True, help="the notifying party")
    sp.add_argument("--activity", required=True, choices=list(ACTIVITIES))
    sp.add_argument("--start", required=True, metavar="ISO")
    sp.add_argument("--end", required=True, metavar="ISO", help="must not have passed")
    sp.add_argument("--time-precision", choices=TIME_PRECISIONS, default="minute")
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--point", type=_point, metavar="LAT,LON")
    where.add_argument("--polygon", type=Path, metavar="FILE", help="LAT,LON lines")
    sp.add_argument(
        "--radius-m", type=float, help="the area's radius around --point (margin for --polygon)"
    )
    sp.add_argument("--location-precision", choices=LOCATION_PRECISIONS, default="exact")
    sp.add_argument("--description")
    sp.add_argument("--language", default="en", help="the description's BCP 47 tag")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_notice)

    hp = sub.add_parser("hotline", help="messages between the parties, acknowledgements")
    hsub = hp.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = hsub.add_parser("send", help="send a message to another party")
    sp.add_argument("--party", required=True, help="the sending party")
    sp.add_argument("--to", required=True, help="the addressed party")
    sp.add_argument("--urgent", action="store_true")
    sp.add_argument("--text", required=True)
    sp.add_argument("--language", default="en", help="the text's BCP 47 tag")
    sp.add_argument(
        "--reply-to", type=int, default=0, help="the message, notice or report it answers"
    )
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_send)

    sp = hsub.add_parser("ack", help="acknowledge receipt of a message or notice")
    sp.add_argument("index", type=int, help="the message's or notice's log index")
    sp.add_argument("--party", required=True, help="the acknowledging party")
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_ack)

    sp = hsub.add_parser("list", help="notices and messages, with who acknowledged them")
    sp.add_argument("--to", help="only those addressed to this party (notices: by others)")
    sp.add_argument("--unacknowledged", action="store_true", help="only those not acknowledged yet")
    sp.add_argument("--start", type=int, default=0, help="from this log index on")
    sp.add_argument("--limit", type=int, default=0, help="at most this many (cap 1,000)")
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_list)
