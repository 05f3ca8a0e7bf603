"""`ceasefire sync` and `ceasefire outbox list | show | check | resign`: the statements
kept on this machine (clients/outbox.py), sent when the link is up, their receipts
checked later against the log's newer checkpoints. See docs/field.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import grpc

from clients import exit_codes, outbox, signing
from clients.client import connect
from ledger import keys
from ledger.clock import to_iso
from ledger.formats import dsse

SYNC_HELP = (
    "exit codes: 0 every pending statement logged, 1 some refused (kept with the reason: "
    "`ceasefire outbox list --state refused`), 4 the log could not be reached (what was "
    "not sent stays pending: run sync again)"
)
CHECK_HELP = (
    "exit codes: 0 every kept receipt checked, 1 another error, 3 evidence: a receipt "
    "the log signed whose entry is not in its checkpoint, checkpoints that are not one "
    "history, or a kept receipt altered; 4 the log could not be reached"
)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _open(args: argparse.Namespace) -> outbox.Outbox:
    return outbox.Outbox.open(outbox.path_for(args.outbox))


def cmd_sync(args: argparse.Namespace) -> int:
    from clients.progress import Progress

    if args.batch_size is not None and not 1 <= args.batch_size <= 256:
        raise ValueError("--batch-size: from 1 to 256")
    with _open(args) as box:
        pending = box.rows(outbox.PENDING)
        progress = Progress(sys.stderr, quiet=args.json or not pending)
        progress.start(len(pending), "sent")
        try:
            with connect(args) as client:
                result = outbox.sync(
                    box, client, pending, progress=progress, max_batch=args.batch_size
                )
        finally:
            progress.close()
        if pending:
            progress.finish()
        counts = box.counts()
    if args.json:
        _print_json(
            {
                "sent": [r.to_json() for r in result.sent],
                "logged": len(result.logged),
                "refused": len(result.refused),
                "still_pending": counts[outbox.PENDING],
                "stopped": result.stopped,
                "link_down": result.link_down,
                "outbox": str(box.path),
            }
        )
    else:
        for row in result.sent:
            print(_line(row))
        if not pending:
            print(f"nothing to send: the outbox {box.path} has no pending statement")
        else:
            print(
                f"{len(result.logged)} logged, {len(result.refused)} refused, "
                f"{counts[outbox.PENDING]} still pending"
            )
    if result.stopped is not None:
        print(
            f"error: stopped: {result.stopped}; {counts[outbox.PENDING]} statement(s) kept "
            "pending: run `ceasefire sync` again"
            + (" when the link is up" if result.link_down else ""),
            file=sys.stderr,
        )
        return exit_codes.UNREACHABLE if result.link_down else exit_codes.FAILED
    return exit_codes.FAILED if result.refused else exit_codes.OK


def _line(row: outbox.Row) -> str:
    """One kept statement, for a person."""
    head = f"#{row.id:<4} {row.state:<8} {row.kind:<20}"
    if row.state == outbox.LOGGED:
        again = " (logged before)" if row.duplicate else ""
        said = f"entry {row.receipt_index}{again}: {row.summary}"
    elif row.state == outbox.REFUSED:
        said = f"{row.summary}: {row.last_error}"
    else:
        said = row.summary + (f" ({row.attempts} tries: {row.last_error})" if row.attempts else "")
    hint = row.hint() if row.state != outbox.PENDING else ""
    replaced = f" [signed again as #{row.replaced_by}]" if row.replaced_by else ""
    return f"{head} {said}{replaced}" + (f"\n      {hint}" if hint else "")


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as box:
        rows = box.rows(args.state)
        counts = box.counts()
    if args.json:
        _print_json([r.to_json() for r in rows])
        return 0
    if not rows:
        print(f"no {args.state or 'kept'} statements in {box.path}")
        return 0
    for row in rows:
        print(_line(row))
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args) as box:
        row = box.get(args.id)
    if args.envelope:
        sys.stdout.write(row.envelope.decode() + "\n")
        return 0
    doc = row.to_json()
    envelope = dsse.Envelope.from_json(row.envelope)
    doc["signers"] = [s.keyid for s in envelope.signatures]
    doc["statement"] = _statement(envelope)
    if args.json:
        _print_json(doc)
        return 0
    print(_line(row))
    print(f"  envelope sha256  {row.envelope_sha256}")
    print(f"  signed at        {doc['signed_at'] or '-'} by {', '.join(doc['signers'])}")
    print(f"  kept at          {doc['queued_at']} (for {row.server or '-'})")
    if row.replaces:
        print(f"  replaces         #{row.replaces}")
    if doc["files"]:
        print(f"  files            {', '.join(doc['files'])}")
    if row.receipt is not None:
        r = doc["receipt"]
        print(f"  receipt          entry {r['index']} at {r['integrated_time']}")
        print(f"  leaf hash        {r['leaf_hash']}")
    if row.checked_size is not None:
        print(
            f"  checked          in the checkpoint of size {row.checked_size}, {doc['checked_at']}"
        )
    print("  statement        " + json.dumps(doc["statement"], ensure_ascii=False))
    return 0


def _statement(envelope: dsse.Envelope) -> Any:
    from google.protobuf import json_format

    from ledger import statements
    from ledger.errors import LedgerError

    try:
        message = statements.decode(envelope.payload_type, envelope.payload)
    except LedgerError:
        return None
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def cmd_check(args: argparse.Namespace) -> int:
    from clients.checkpoints import key_state, trusted_checkpoint

    with _open(args) as box:
        rows = box.rows(outbox.LOGGED)
        if not rows:
            print(f"no logged statements in {box.path} to check")
            return 0
        try:
            with connect(args) as client:
                # The trust root (pinned if asked), or with --monitor-state the witness
                # keys in force as a monitor replayed them.
                trust = key_state(
                    client,
                    pinned_trust_root=args.trust_root,
                    monitor_state=args.monitor_state,
                    require_witnesses=args.require_witnesses,
                )
                trusted = trusted_checkpoint(
                    client, trust, require_witnesses=args.require_witnesses
                )
                cp = trusted.checkpoint
                results = outbox.check_receipts(box, client, trust, cp.size, cp.root_hash, rows)
        except grpc.RpcError as e:
            from clients.client import describe_error

            print(f"error: {describe_error(e)}", file=sys.stderr)
            return exit_codes.for_rpc_error(e)
    failed = [c for c in results if not c.ok]
    if args.json:
        _print_json(
            {
                "ok": not failed,
                "tree_size": cp.size,
                "root_hash": cp.root_hash.hex(),
                "checked": [
                    {"id": c.row.id, "index": c.index, "ok": c.ok, "message": c.message}
                    for c in results
                ],
            }
        )
    else:
        for c in results:
            print(f"#{c.row.id:<4} {'ok    ' if c.ok else 'FAILED'} {c.message}")
        print(
            f"{len(results) - len(failed)} of {len(results)} kept receipts check out against "
            f"the checkpoint of size {cp.size}"
        )
    if failed:
        print(
            f"VERIFICATION FAILED: {len(failed)} kept receipt(s): {failed[0].message}",
            file=sys.stderr,
        )
        return exit_codes.EVIDENCE
    return exit_codes.OK


def cmd_resign(args: argparse.Namespace) -> int:
    signing_keys = [keys.read_private(k) for k in args.key]
    with _open(args) as box:
        row = box.get(args.id)
        if row.state == outbox.LOGGED:
            raise outbox.OutboxError(f"#{row.id} is logged (entry {row.receipt_index}): no need")
        if row.state == outbox.REFUSED and not row.too_old and not args.force:
            raise outbox.OutboxError(
                f"#{row.id} was refused for another reason than its age ({row.last_error}); "
                "signing it again will not help (--force to do it all the same)"
            )
        new = outbox.resign(box, row, signing_keys)
    if args.json:
        _print_json(new.to_json())
        return 0
    print(
        f"#{new.id}: #{row.id} signed again at {to_iso(new.signed_at_us or 0)} (the same "
        f"statement otherwise), pending: `ceasefire sync` sends it"
    )
    return 0


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    sp = sub.add_parser(
        "sync",
        help="send the statements kept in the outbox (pending), oldest first",
        description="Send the outbox's pending statements in order, in SubmitBatch calls "
        "(a statement with files alone), keeping each answer before the next call: cut off, "
        "it resumes where it stopped, and the log holds each statement once.",
    )
    sp.epilog = SYNC_HELP
    signing.add_outbox_path_option(sp)
    sp.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="at most N statements per call (default and most 256): smaller calls on a poor link",
    )
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_sync)

    op = sub.add_parser(
        "outbox", help="the statements kept on this machine: pending, logged, refused"
    )
    osub = op.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = osub.add_parser("list", help="the kept statements, oldest first")
    sp.add_argument("--state", choices=outbox.STATES)
    signing.add_outbox_path_option(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_list)

    sp = osub.add_parser("show", help="one kept statement: the statement, its receipt")
    sp.add_argument("id", type=int)
    sp.add_argument("--envelope", action="store_true", help="print only the envelope, verbatim")
    signing.add_outbox_path_option(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_show)

    sp = osub.add_parser(
        "check",
        help="check every kept receipt against the log's newest checkpoint: the entry "
        "included, and that checkpoint consistent with the one checked before",
    )
    sp.epilog = CHECK_HELP
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256 (hex)")
    sp.add_argument(
        "--require-witnesses",
        action="store_true",
        help="check against the newest checkpoint cosigned as the witness policy requires",
    )
    sp.add_argument(
        "--monitor-state",
        type=Path,
        metavar="DIR",
        help="count the witness keys in force as `ceasefire monitor --state-dir DIR` "
        "replayed them at its last run (default: those the trust root, entry 0, names)",
    )
    signing.add_outbox_path_option(sp)
    server_opt(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_check)

    sp = osub.add_parser(
        "resign",
        help="sign a statement again that was refused as too old (the same statement, a new "
        "signing time) and keep it pending",
    )
    sp.add_argument("id", type=int)
    sp.add_argument("--key", type=Path, action="append", required=True, help="a key that signed it")
    sp.add_argument(
        "--force", action="store_true", help="even if it was refused for another reason"
    )
    signing.add_outbox_path_option(sp)
    json_opt(sp)
    sp.set_defaults(func=cmd_resign)
