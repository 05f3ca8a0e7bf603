"""`ceasefire amend | retract | answer | dossier`: an incident's life after its report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from clients import reports
from clients.client import LedgerClient, describe_error
from clients.describe import describe_entry
from ledger import dsse, keys, statements
from ledger.clock import now_us, to_timestamp


def _send(args: argparse.Namespace, kind: str, statement: Message) -> int:
    envelope = dsse.sign(
        kind, statement.SerializeToString(), [keys.read_private(k) for k in args.key]
    )
    with LedgerClient(args.server) as client:
        try:
            r = client.submit(envelope.to_json())
        except grpc.RpcError as e:
            print(f"refused: {describe_error(e)}", file=sys.stderr)
            return 1
    name = kind.removeprefix("application/vnd.ceasefire.v1.").split("+")[0]
    print(f"entry {r.receipt.index}: {name} about entry {args.index}")
    return 0


def cmd_amend(args: argparse.Namespace) -> int:
    (corrected,) = reports.load_reports(args.file)
    amendment = pb.IncidentAmendment(
        incident_index=args.index,
        created_time=to_timestamp(now_us()),
        party=corrected.reporting_party,
        corrected=corrected,
        reason=args.reason or "",
    )
    return _send(args, statements.AMENDMENT, amendment)


def cmd_retract(args: argparse.Namespace) -> int:
    retraction = pb.IncidentRetraction(
        incident_index=args.index,
        created_time=to_timestamp(now_us()),
        party=args.party,
        reason=args.reason or "",
    )
    return _send(args, statements.RETRACTION, retraction)


def cmd_answer(args: argparse.Namespace) -> int:
    answer = pb.CounterClaim(
        incident_index=args.index,
        created_time=to_timestamp(now_us()),
        party=args.party,
        kind=pb.ResponseKind.Value("RESPONSE_KIND_" + args.kind.upper()),
        narrative=args.narrative or "",
        narrative_language=args.language if args.narrative else "",
        evidence_sha256=args.evidence or [],
    )
    return _send(args, statements.COUNTER_CLAIM, answer)


def cmd_dossier(args: argparse.Namespace) -> int:
    with LedgerClient(args.server) as client:
        got = client.dossier(args.index)
    status = api.IncidentStatus.Name(got.status).removeprefix("INCIDENT_STATUS_").lower()
    entries: list[dict[str, Any]] = [
        {"relation": e.relation, **describe_entry(e.entry)} for e in got.entries
    ]
    if args.json:
        print(json.dumps({"incident": args.index, "status": status, "entries": entries}, indent=2))
        return 0
    print(f"incident {args.index}: {status}")
    for e in entries:
        stmt = e.get("statement", {})
        said = stmt.get("narrative") or stmt.get("reason") or stmt.get("kind", "")
        who = e["validation"].get("party", "")
        print(
            f"  #{e['index']:<5} {e['integrated_time'][:16]}  {e['relation']:<16} {who:<4} {said}"
        )
    return 0


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    def signed_by(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--key", type=Path, action="append", required=True)
        server_opt(sp)

    sp = sub.add_parser(
        "amend", help="correct your party's report: a new entry, the original stays"
    )
    sp.add_argument("index", type=int, help="the report's log index")
    sp.add_argument("file", type=Path, help="the report as it should read (JSON or YAML)")
    sp.add_argument("--reason")
    signed_by(sp)
    sp.set_defaults(func=cmd_amend)

    sp = sub.add_parser("retract", help="withdraw your party's report (it stays, marked)")
    sp.add_argument("index", type=int)
    sp.add_argument("--party", required=True)
    sp.add_argument("--reason")
    signed_by(sp)
    sp.set_defaults(func=cmd_retract)

    sp = sub.add_parser("answer", help="counter-claim or respond to another party's report")
    sp.add_argument("index", type=int)
    sp.add_argument("--party", required=True, help="the answering party")
    sp.add_argument(
        "--kind",
        required=True,
        choices=[
            "denial",
            "alternative_account",
            "counter_allegation",
            "acknowledgement",
            "under_review",
        ],
    )
    sp.add_argument("--narrative")
    sp.add_argument("--language", default="en")
    sp.add_argument("--evidence", action="append", help="SHA-256 of evidence (repeatable)")
    signed_by(sp)
    sp.set_defaults(func=cmd_answer)

    sp = sub.add_parser("dossier", help="one incident, every entry linked to it, its status")
    sp.add_argument("index", type=int)
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_dossier)
