"""Signing a statement and delivering it: one path for every signed command.

Each command signs with every --key given. Without --out it submits the envelope at once;
with --out it writes the envelope to that file instead, for the party's other keys to add
their signatures on their own machines (`ceasefire cosign FILE --key KEY`), and the last
sends it (`ceasefire submit FILE`, or the command that sends it with its files). This is
how a party whose threshold is 2 of 3 speaks when its keys are on separate machines.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from clients import envelope_files
from clients.client import connect
from ledger import dsse, keys


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
    server_opt(sp)


def sign(kind: str, statement: Message, key_files: Sequence[Path]) -> dsse.Envelope:
    """The statement serialized once and signed by every key file given."""
    signing_keys = [keys.read_private(k) for k in key_files]
    return dsse.sign(kind, statement.SerializeToString(), signing_keys)


def kind_name(envelope: dsse.Envelope) -> str:
    """`application/vnd.ceasefire.v1.KeyChange+protobuf` -> `KeyChange`."""
    return envelope.payload_type.rsplit(".", 1)[-1].split("+")[0]


def write_for_cosigning(path: Path, envelope: dsse.Envelope, then: str) -> None:
    """Write the envelope and tell the user how it goes on: cosign, then `then`."""
    envelope_files.write(path, envelope)
    print(
        f"wrote {path} with {len(envelope.signatures)} signature(s) ({kind_name(envelope)}); "
        f"others add theirs with `ceasefire cosign {path} --key KEY`, then `{then}`"
    )


def deliver(
    args: argparse.Namespace,
    envelope: dsse.Envelope,
    what: str,
    *,
    then: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> int:
    """Write the envelope to args.out for co-signing, or submit it (with `files`, if any)
    and print `entry N: what`. `then` is how a written file is sent, if not by submit."""
    out: Path | None = getattr(args, "out", None)
    if out is not None:
        write_for_cosigning(out, envelope, then or f"ceasefire submit {out}")
        return 0
    print(f"entry {submit(args, envelope, files)}: {what}")
    return 0


def submit(
    args: argparse.Namespace, envelope: dsse.Envelope, files: Mapping[str, bytes] | None = None
) -> int:
    """Submit the envelope to the command's --server (over TLS with its --tls-* options),
    with the files it names (evidence blob, border data) if any; the index it was logged at."""
    with connect(args) as client:
        if files:
            return client.submit_with_blobs(envelope.to_json(), files).receipt.index
        return client.submit(envelope.to_json()).receipt.index


def sign_and_deliver(args: argparse.Namespace, kind: str, statement: Message, what: str) -> int:
    """Sign with every --key; write the envelope to --out, or submit it."""
    return deliver(args, sign(kind, statement, args.key), what)
