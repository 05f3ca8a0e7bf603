"""`ceasefire amend | retract | answer | dossier`: an incident's life after its report; and
`evidence`, `finding draft`, `attest`, `dissent`.

Every signing command signs with each --key and submits, or with --out writes the envelope
for more signatures (clients.signing). Evidence with a blob so written is sent with it by
`ceasefire evidence send FILE BLOB`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from clients import envelope_files, incident_view, keys_cli, reports, signing
from clients.client import LedgerClient, connect
from clients.describe import answer_facts, describe_entry, entry_line, statement_of
from clients.party_option import add_party_option, party_of
from ledger import incidents, keys, sealing, statements
from ledger.clock import now_us, parse_iso, to_timestamp
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.investigations import InvestigationInfo
from ledger.trust import SHA256_HEX


def _send(args: argparse.Namespace, kind: str, statement: Message) -> int:
    """Sign with every --key; submit, or write to --out for more signatures."""
    name = kind.removeprefix("application/vnd.ceasefire.v1.").split("+")[0]
    return signing.sign_and_deliver(args, kind, statement, f"{name} about entry {args.index}")


def cmd_amend(args: argparse.Namespace) -> int:
    found = reports.load_reports(args.file)
    if len(found) != 1:
        raise reports.ReportFileError(
            f"{args.file}: holds {len(found)} reports; an amendment is one corrected report"
        )
    (corrected,) = found
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
        party=party_of(args),
        reason=args.reason or "",
    )
    return _send(args, statements.RETRACTION, retraction)


def cmd_answer(args: argparse.Namespace) -> int:
    answer = pb.CounterClaim(
        incident_index=args.index,
        created_time=to_timestamp(now_us()),
        party=party_of(args),
        kind=pb.ResponseKind.Value("RESPONSE_KIND_" + args.kind.upper()),
        narrative=args.narrative or "",
        narrative_language=args.language if args.narrative else "",
        evidence_sha256=args.evidence or [],
    )
    return _send(args, statements.COUNTER_CLAIM, answer)


def cmd_dossier(args: argparse.Namespace) -> int:
    with connect(args) as client:
        got = client.dossier(args.index, args.as_of_index)
    status = incidents.status_name(got.status)
    (first,) = [e for e in got.entries if e.relation == incidents.REPORT]
    _, original = statement_of(first.entry)
    assert isinstance(original, pb.IncidentReport)
    original_geo = parse_entry(first.entry).validation.geo
    current = incident_view.incident_doc(
        args.index, got.status, original, original_geo, got.current, entry=first.entry
    )
    entries: list[dict[str, Any]] = [
        {"relation": e.relation, **describe_entry(e.entry), **answer_facts(e.relation, e.entry)}
        for e in got.entries
    ]
    if args.json:
        doc = {
            "incident": args.index,
            "status": status,
            "as_of_index": args.as_of_index or None,
            "current": current,
            "entries": entries,
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    as_of = f"  (as the log stood before entry {args.as_of_index})" if args.as_of_index else ""
    print(f"incident {args.index}: {status}{as_of}")
    for line in incident_view.dossier_lines(current):
        print(line)
    for e in got.entries:
        print(entry_line(e.index, e.relation, e.entry, 22))
    return 0


def log_index(text: str) -> int:
    """A log index on the command line: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log index") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log index (0 or more)")
    return value


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    def signed_by(sp: argparse.ArgumentParser) -> None:
        signing.add_options(sp, server_opt)

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
    add_party_option(sp, "the retracting party")
    sp.add_argument("--reason")
    signed_by(sp)
    sp.set_defaults(func=cmd_retract)

    sp = sub.add_parser("answer", help="counter-claim or respond to another party's report")
    sp.add_argument("index", type=int)
    add_party_option(sp, "the answering party")
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


def add_dossier_parser(sub: Any, server_opt: Any, json_opt: Any) -> None:
    sp = sub.add_parser("dossier", help="one incident, every entry linked to it, its status")
    sp.add_argument("index", type=int)
    sp.add_argument(
        "--as-of-index",
        type=log_index,
        default=0,
        metavar="N",
        help="as the log stood before entry N: later entries are left out (default: now)",
    )
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_dossier)


def cmd_evidence_add(args: argparse.Namespace) -> int:
    content = args.file.read_bytes()
    record = pb.EvidenceRecord(
        created_time=to_timestamp(now_us()),
        party=party_of(args),
        incident_index=args.incident,
        sha256=hashlib.sha256(content).hexdigest(),
        media_type=args.media_type
        or mimetypes.guess_type(args.file.name)[0]
        or "application/octet-stream",
        size=len(content),
        description=args.description or "",
        blob=pb.BlobKind.Value("BLOB_KIND_" + args.blob.upper()),
        investigation_index=args.investigation,
    )
    if args.capture_time:
        record.capture_time.CopyFrom(to_timestamp(parse_iso(args.capture_time)))
    stored = content
    if args.blob == "sealed":
        # Recipients' keys (and an investigation's members) come from the entries as
        # replayed and verified here, never from what the server says.
        with connect(args) as client:
            replay = keys_cli.replayed(client)
        state = replay.trust
        assert state is not None
        investigation = replay.subjects.get(args.investigation)
        terms = investigation.terms if isinstance(investigation, InvestigationInfo) else None
        if not args.seal_to and terms is not None:
            args.seal_to = sorted(terms.members)
        if not args.seal_to:
            print("error: --seal-to KEY_ID is needed for sealed evidence", file=sys.stderr)
            return 2
        unknown = [k for k in args.seal_to if k not in state.keys]
        if unknown:
            print(f"error: not keys on this ledger: {unknown}", file=sys.stderr)
            return 2
        stored = sealing.seal(content, {k: state.keys[k].public_key for k in args.seal_to})
        record.sealed_to_key_ids.extend(sorted(args.seal_to))
    files: dict[str, bytes] = {}
    if args.blob != "none":
        record.blob_sha256 = hashlib.sha256(stored).hexdigest()
        record.blob_size = len(stored)
        files = {"blob": stored}
    envelope = signing.sign(statements.EVIDENCE, record, args.key)
    then = None
    if args.out is not None and files:
        # The blob stays beside the envelope and travels with it: `evidence send`.
        blob_file: Path = args.file
        if args.blob == "sealed":
            blob_file = args.out.with_name(args.out.name + ".sealed")
            blob_file.write_bytes(stored)
            print(f"wrote {blob_file}: the sealed bytes the record names ({len(stored)} bytes)")
        then = f"ceasefire evidence send {args.out} {blob_file}"
    return signing.deliver(
        args, envelope, f"evidence {record.sha256} ({args.blob})", then=then, files=files
    )


def cmd_evidence_send(args: argparse.Namespace) -> int:
    """Submit an evidence record written with --out (and co-signed), with its blob."""
    envelope = envelope_files.read(args.file)
    record = statements.decode(envelope.payload_type, envelope.payload)
    if not isinstance(record, pb.EvidenceRecord):
        raise envelope_files.EnvelopeFileError(f"{args.file}: not an evidence record")
    files: dict[str, bytes] = {}
    if record.blob == pb.BLOB_KIND_NONE:
        if args.blob is not None:
            raise envelope_files.EnvelopeFileError(f"{args.file}: the record names no blob")
    else:
        if args.blob is None:
            raise envelope_files.EnvelopeFileError(
                f"{args.file}: the record names a blob ({record.blob_sha256}); give its file"
            )
        data = args.blob.read_bytes()
        if hashlib.sha256(data).hexdigest() != record.blob_sha256:
            raise envelope_files.EnvelopeFileError(
                f"{args.blob}: not the blob {args.file} names (SHA-256 {record.blob_sha256})"
            )
        files = {"blob": data}
    index = signing.submit(args, envelope, files)
    kind = pb.BlobKind.Name(record.blob).removeprefix("BLOB_KIND_").lower()
    what = f"evidence {record.sha256} ({kind})"
    if args.json:
        digest = hashlib.sha256(envelope.to_json()).hexdigest()
        doc = {"index": index, "kind": "EvidenceRecord", "what": what, "envelope_sha256": digest}
        print(json.dumps(doc, indent=2))
    else:
        print(f"entry {index}: {what}")
    return 0


def cmd_evidence_open(args: argparse.Namespace) -> int:
    with connect(args) as client:
        envelope = dsse.Envelope.from_json(parse_entry(client.entry(args.index).entry).envelope)
        record = statements.decode(envelope.payload_type, envelope.payload)
        if not isinstance(record, pb.EvidenceRecord) or record.blob == pb.BLOB_KIND_NONE:
            print(f"error: entry {args.index} holds no evidence blob", file=sys.stderr)
            return 1
        stored = client.blob(record.blob_sha256)
    if record.blob == pb.BLOB_KIND_SEALED and args.key is None:
        print("error: sealed evidence opens only with --key YOUR.key", file=sys.stderr)
        return 2
    try:
        content = (
            sealing.open_sealed(stored, keys.read_private(args.key))
            if record.blob == pb.BLOB_KIND_SEALED
            else stored
        )
    except sealing.SealingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if hashlib.sha256(content).hexdigest() != record.sha256:
        print("error: the content does not match the recorded SHA-256", file=sys.stderr)
        return 1
    args.out.write_bytes(content)
    if args.json:
        doc = {"file": str(args.out), "size": len(content), "sha256": record.sha256}
        print(json.dumps(doc, indent=2))
    else:
        print(f"wrote {args.out}: {len(content)} bytes, SHA-256 {record.sha256} as recorded")
    return 0


def add_evidence_parsers(sub: Any, server_opt: Any, json_opt: Any = None) -> None:
    ep = sub.add_parser("evidence", help="record evidence (hash, optionally its bytes, sealed)")
    es = ep.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = es.add_parser("add", help="record a file as evidence")
    sp.add_argument("file", type=Path)
    add_party_option(sp, "the recording party")
    sp.add_argument("--incident", type=int, default=0, help="the report's log index")
    sp.add_argument("--media-type")
    sp.add_argument("--capture-time", help="ISO 8601")
    sp.add_argument("--description")
    sp.add_argument("--blob", choices=["none", "plain", "sealed"], default="none")
    sp.add_argument(
        "--seal-to",
        action="append",
        help="key id to seal to (repeatable); in an investigation, default: the members of "
        "its terms in force, as the entries verified here give them",
    )
    sp.add_argument(
        "--investigation", type=int, default=0, help="the investigation request's log index"
    )
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_evidence_add)
    sp = es.add_parser(
        "send", help="submit an evidence record written with --out, with its blob if it has one"
    )
    sp.add_argument("file", type=Path, help="the signed evidence record (DSSE JSON)")
    sp.add_argument(
        "blob", type=Path, nargs="?", help="the file evidence add named (.sealed when sealed)"
    )
    server_opt(sp)
    _json_opt(sp, json_opt)
    sp.set_defaults(func=cmd_evidence_send)
    sp = es.add_parser("open", help="fetch an evidence blob, unseal it, check its hash")
    sp.add_argument("index", type=int, help="the evidence record's log index")
    sp.add_argument("--key", type=Path, help="your key, for sealed evidence")
    sp.add_argument("--out", type=Path, required=True)
    server_opt(sp)
    _json_opt(sp, json_opt)
    sp.set_defaults(func=cmd_evidence_open)


def _json_opt(sp: argparse.ArgumentParser, json_opt: Any) -> None:
    if json_opt is not None:
        json_opt(sp)
    else:
        sp.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_finding_draft(args: argparse.Namespace) -> int:
    draft = pb.FindingDraft(
        created_time=to_timestamp(now_us()),
        party=party_of(args),
        incident_indexes=args.incident,
        policy=args.policy,
        outcome=pb.FindingOutcome.Value("FINDING_OUTCOME_" + args.outcome.upper()),
        attribution=args.attribution or "",
        reasoning=args.reasoning or "",
        reasoning_language=args.language if args.reasoning else "",
        evidence_sha256=args.evidence or [],
        investigation_index=args.investigation,
    )
    args.index = ",".join(str(i) for i in args.incident)
    return _send(args, statements.FINDING, draft)


def _draft_of(client: LedgerClient, index: int) -> tuple[pb.FindingDraft, str]:
    envelope = dsse.Envelope.from_json(parse_entry(client.entry(index).entry).envelope)
    draft = statements.decode(envelope.payload_type, envelope.payload)
    if not isinstance(draft, pb.FindingDraft):
        raise ValueError(f"entry {index} is not a finding draft")
    return draft, hashlib.sha256(envelope.payload).hexdigest()


def _digest(text: str) -> str:
    if not SHA256_HEX.match(text.lower()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 in hex (64 characters)")
    return text.lower()


def cmd_attest_or_dissent(args: argparse.Namespace) -> int:
    party = party_of(args)  # before anything is fetched: a usage error stops at once
    with connect(args) as client:
        draft, digest = _draft_of(client, args.index)
    # Show exactly what is signed: the draft as logged, and its digest.
    outcome = pb.FindingOutcome.Name(draft.outcome).removeprefix("FINDING_OUTCOME_").lower()
    print(
        f"finding {args.index} ({digest}): {outcome} on incidents "
        f"{list(draft.incident_indexes)}, policy {draft.policy!r}\n  {draft.reasoning}",
        file=sys.stderr,
    )
    if args.digest is not None and args.digest != digest:
        # Pinned: what the server serves as entry N is not the draft the signer read.
        print(
            f"error: finding {args.index} has SHA-256 {digest}, not {args.digest} "
            f"(--digest); nothing signed",
            file=sys.stderr,
        )
        return 1
    common = {
        "finding_index": args.index,
        "draft_sha256": digest,
        "party": party,
        "created_time": to_timestamp(now_us()),
    }
    if args.command == "attest":
        return _send(args, statements.ATTESTATION, pb.Attestation(**common))
    dissent = pb.Dissent(
        **common, reasons=args.reasons or "", reasons_language=args.language if args.reasons else ""
    )
    return _send(args, statements.DISSENT, dissent)


def add_finding_parsers(sub: Any, server_opt: Any) -> None:
    fp = sub.add_parser("finding", help="draft a finding of a joint investigation")
    fs = fp.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = fs.add_parser("draft", help="draft a finding about incidents, under a trust-root policy")
    sp.add_argument("--incident", type=int, action="append", required=True)
    add_party_option(sp, "the drafting party")
    sp.add_argument("--policy", required=True, help="a finding policy named in the trust root")
    sp.add_argument(
        "--outcome", required=True, choices=["confirmed", "not_confirmed", "inconclusive"]
    )
    sp.add_argument("--attribution", help="the party held responsible, if any")
    sp.add_argument("--reasoning")
    sp.add_argument("--language", default="en")
    sp.add_argument("--evidence", action="append", help="SHA-256 of evidence considered")
    sp.add_argument(
        "--investigation",
        type=int,
        default=0,
        help="the investigation request's log index (then signed by its members)",
    )
    signing.add_options(sp, server_opt)
    sp.set_defaults(func=cmd_finding_draft)
    for name, help in (("attest", "attest a finding draft, by its exact digest"),
                       ("dissent", "dissent from a finding draft")):  # fmt: skip
        sp = sub.add_parser(name, help=help)
        sp.add_argument("index", type=int, help="the finding draft's log index")
        add_party_option(sp, f"the {'attesting' if name == 'attest' else 'dissenting'} party")
        if name == "dissent":
            sp.add_argument("--reasons")
            sp.add_argument("--language", default="en")
        sp.add_argument(
            "--digest",
            type=_digest,
            metavar="SHA256",
            help="the draft's SHA-256 as you read it: refuse to sign if the server's differs",
        )
        signing.add_options(sp, server_opt)
        sp.set_defaults(func=cmd_attest_or_dissent)
