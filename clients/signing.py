"""Signing a statement and delivering it: one path for every signed command.

Each command signs with every --key given. Without --out it submits the envelope at once;
with --out it writes the envelope to that file instead, for the party's other keys to add
their signatures on their own machines (`ceasefire cosign FILE --key KEY`), and the last
sends it (`ceasefire submit FILE`, or the command that sends it with its files). This is
how a party whose threshold is 2 of 3 speaks when its keys are on separate machines.

A statement that is sent is first kept in the outbox (clients/outbox.py, docs/field.md):
pending until the log answers, then logged with its receipt or refused with the reason.
When the log cannot be reached the command still succeeds (exit 0, "kept in the outbox
(pending)"): the statement is safe, and `ceasefire sync` sends it when the link is up.
--queue keeps it without trying; --no-outbox sends it directly, as before the outbox.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from clients import envelope_files, outbox
from clients.client import connect
from ledger import keys
from ledger.errors import LedgerError
from ledger.formats import dsse


class StatementRefused(LedgerError):
    """The log refused the statement (kept in the outbox as refused, with the reason)."""


def add_options(sp: argparse.ArgumentParser, server_opt: Any, *, key_help: str = "") -> None:
    """--key (repeatable, required), --out, and --server with its --tls-* options, the same
    on every signed command."""
    sp.add_argument(
        "--key",
        type=Path,
        action="append",
        required=True,
        help=key_help or "key file to sign with (repeatable)",
    )
    sp.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the signed envelope to this file instead of submitting it, for other "
        "keys to add theirs (`ceasefire cosign FILE`) before it is sent",
    )
    add_outbox_options(sp)
    if "--json" not in sp._option_string_actions:  # a command may define its own
        sp.add_argument("--json", action="store_true", help="machine-readable output")
    server_opt(sp)


def add_outbox_options(sp: argparse.ArgumentParser) -> None:
    """--queue, --outbox FILE, --no-outbox: where a sent statement is kept (docs/field.md)."""
    sp.add_argument(
        "--queue",
        action="store_true",
        help="sign now and keep it in the outbox without sending it; `ceasefire sync` sends it",
    )
    add_outbox_path_option(sp)
    sp.add_argument(
        "--no-outbox",
        action="store_true",
        help="send it directly, keeping nothing: a statement the log does not receive is lost",
    )


def add_outbox_path_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--outbox",
        type=Path,
        metavar="FILE",
        help=f"the outbox file (default: env {outbox.ENV_PATH}, else "
        "$XDG_DATA_HOME/ceasefire/outbox.db)",
    )


def sign(kind: str, statement: Message, key_files: Sequence[Path]) -> dsse.Envelope:
    """The statement serialized once and signed by every key file given."""
    signing_keys = [keys.read_private(k) for k in key_files]
    return dsse.sign(kind, statement.SerializeToString(), signing_keys)


def kind_name(envelope: dsse.Envelope) -> str:
    """`application/vnd.ceasefire.v1.KeyChange+protobuf` -> `KeyChange`."""
    return envelope.payload_type.rsplit(".", 1)[-1].split("+")[0]


def write_for_cosigning(
    path: Path, envelope: dsse.Envelope, then: str, *, as_json: bool = False
) -> None:
    """Write the envelope and tell the user how it goes on: cosign, then `then`."""
    envelope_files.write(path, envelope)
    if as_json:
        doc = {
            "state": "written",
            "file": str(path),
            "kind": kind_name(envelope),
            "signatures": len(envelope.signatures),
            "envelope_sha256": hashlib.sha256(envelope.to_json()).hexdigest(),
            "then": then,
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    print(
        f"wrote {path} with {len(envelope.signatures)} signature(s) ({kind_name(envelope)}); "
        f"others add theirs with `ceasefire cosign {path} --key KEY`, then `{then}`"
    )


def open_outbox(args: argparse.Namespace) -> outbox.Outbox | None:
    """The command's outbox (--outbox, CEASEFIRE_OUTBOX, the default path); None with
    --no-outbox."""
    if getattr(args, "no_outbox", False):
        if getattr(args, "queue", False):
            raise ValueError("--queue keeps the statement in the outbox: not with --no-outbox")
        return None
    return outbox.Outbox.open(outbox.path_for(getattr(args, "outbox", None)))


def deliver(
    args: argparse.Namespace,
    envelope: dsse.Envelope,
    what: str,
    *,
    then: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> int:
    """Write the envelope to args.out for co-signing; or keep it in the outbox and submit it
    (with `files`, if any) and print `entry N: what` (with --json, a JSON object). Kept but
    not sent (--queue, or the log not reached): exit 0 all the same, the statement is safe.
    `then` is how a written file is sent, if not by submit."""
    as_json = bool(getattr(args, "json", False))
    out: Path | None = getattr(args, "out", None)
    if out is not None:
        write_for_cosigning(out, envelope, then or f"ceasefire submit {out}", as_json=as_json)
        return 0
    box = open_outbox(args)
    response: Any = None
    row: outbox.Row | None = None
    if box is None:
        response = _send_directly(args, envelope, files)
    else:
        with box:
            server = getattr(args, "server", "")
            row = box.add(envelope.to_json(), what, files=files, server=server)
            if not getattr(args, "queue", False):
                row = _send_kept(args, box, row)
    if as_json:
        print(json.dumps(_delivered_json(envelope, what, row, response), indent=2))
    if row is None:
        if not as_json:
            print(f"entry {response.receipt.index}: {what}")
        return 0
    if row.state == outbox.REFUSED:
        raise StatementRefused(_refusal(row))
    if not as_json:
        print(_said(row, what))
    return 0


def _delivered_json(
    envelope: dsse.Envelope, what: str, row: outbox.Row | None, response: Any
) -> dict[str, Any]:
    """`{"state", "index", "kind", "what", "envelope_sha256", "receipt", ...}`."""
    sent = row.to_json() if row is not None else _response_json(response)
    return {
        "state": row.state if row is not None else outbox.LOGGED,
        "index": sent["index"],
        "kind": kind_name(envelope),
        "what": what,
        "envelope_sha256": hashlib.sha256(envelope.to_json()).hexdigest(),
        "receipt": sent["receipt"],
        "outbox_id": row.id if row is not None else None,
        "error": row.last_error if row is not None else None,
        "hint": (row.hint() or None) if row is not None else None,
    }


def _said(row: outbox.Row, what: str) -> str:
    """The human line for a kept statement, by its state."""
    if row.state == outbox.LOGGED:
        again = " (logged before: its first receipt)" if row.duplicate else ""
        return f"entry {row.receipt_index}: {what}{again}"
    if row.attempts == 0:
        return f"queued in the outbox (#{row.id}): {what}; `ceasefire sync` sends it"
    return (
        f"kept in the outbox (#{row.id}, pending): {what}; the log could not be reached "
        f"({row.last_error}); `ceasefire sync` sends it when the link is up"
    )


def _refusal(row: outbox.Row) -> str:
    hint = row.hint()
    return f"{row.last_error} (kept in the outbox as #{row.id}, refused)" + (
        f"; {hint}" if hint else ""
    )


def _send_kept(args: argparse.Namespace, box: outbox.Outbox, row: outbox.Row) -> outbox.Row:
    """Send a kept statement; the link down leaves it pending (returned), any other failure
    that is no judgment of it (a missing client certificate) is raised."""
    try:
        with connect(args) as client:
            return outbox.send_one(box, client, row)
    except grpc.RpcError as e:
        if outbox.link_down(e):
            return box.get(row.id)
        print(
            f"kept in the outbox (#{row.id}, pending): `ceasefire sync` sends it once this is "
            "put right",
            file=sys.stderr,
        )
        raise


def _send_directly(
    args: argparse.Namespace, envelope: dsse.Envelope, files: Mapping[str, bytes] | None
) -> Any:
    with connect(args) as client:
        if files:
            return client.submit_with_blobs(envelope.to_json(), files)
        return client.submit(envelope.to_json())


def _response_json(response: Any) -> dict[str, Any]:
    from ledger.clock import to_iso, to_us

    r = response.receipt
    return {
        "index": r.index,
        "receipt": {
            "index": r.index,
            "leaf_hash": r.leaf_hash.hex(),
            "integrated_time": to_iso(to_us(r.integrated_time)),
            "duplicate": response.duplicate,
            "signed_receipt": json.loads(response.signed_receipt),
        },
    }


def submit(
    args: argparse.Namespace, envelope: dsse.Envelope, files: Mapping[str, bytes] | None = None
) -> int:
    """Submit the envelope to the command's --server (over TLS with its --tls-* options),
    with the files it names (evidence blob, border data) if any; the index it was logged at.
    It is kept in the outbox first (unless --no-outbox): refused, StatementRefused; the log
    not reached, the error is raised, the statement kept pending for `ceasefire sync`."""
    box = open_outbox(args)
    if box is None:
        return int(_send_directly(args, envelope, files).receipt.index)
    with box:
        row = box.add(
            envelope.to_json(), kind_name(envelope), files=files, server=getattr(args, "server", "")
        )
        try:
            with connect(args) as client:
                row = outbox.send_one(box, client, row)
        except grpc.RpcError:
            print(
                f"kept in the outbox (#{row.id}, pending): `ceasefire sync` sends it when the "
                "link is up",
                file=sys.stderr,
            )
            raise
    if row.state == outbox.REFUSED:
        raise StatementRefused(_refusal(row))
    assert row.receipt_index is not None
    return row.receipt_index


def sign_and_deliver(args: argparse.Namespace, kind: str, statement: Message, what: str) -> int:
    """Sign with every --key; write the envelope to --out, or submit it."""
    return deliver(args, sign(kind, statement, args.key), what)
