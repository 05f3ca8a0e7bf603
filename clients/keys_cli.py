"""`ceasefire keys`: list the key state, and draft key changes and party admissions.

A change is signed by the keys given with --key. With --out it is written to a file for
other authorities to `ceasefire cosign`; without, it is submitted at once (clients.signing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ceasefire.v1 import statements_pb2 as pb

from clients import envelope_files, signing, trust_root_file
from clients.client import LedgerClient, connect
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.cosignature import parse_cosigner_vkey
from ledger.note import NoteError
from ledger.trust import TrustState
from ledger.verifier import Replay


def replayed(client: LedgerClient, pinned: str | None = None) -> Replay:
    """The ledger replayed (and so verified: every signature, every rule) here."""
    replay = Replay(pinned_trust_root=pinned)
    for e in client.entries(0, client.checkpoint().tree_size):
        replay.add(e.index, e.entry)
    assert replay.trust is not None
    return replay


def key_state(client: LedgerClient, pinned: str | None = None) -> tuple[TrustState, int]:
    """The key state, computed here by replaying (and so verifying) the whole ledger."""
    replay = replayed(client, pinned)
    assert replay.trust is not None
    return replay.trust, replay.size


def cmd_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        state, size = key_state(client, args.trust_root)
    rows = [
        {
            "party": k.party,
            "role": k.role_name,
            "key_id": k.key_id,
            "added_at": k.added_at,
            "revoked_at": k.revoked_at,
            **({"witness_name": k.witness_name} if k.witness_name else {}),
        }
        for k in sorted(state.keys.values(), key=lambda k: (k.party, k.role, k.added_at))
    ]
    if args.json:
        parties = {
            code: {"name": p.name, "authority_threshold": p.authority_threshold}
            for code, p in state.parties.items()
        }
        print(json.dumps({"tree_size": size, "parties": parties, "keys": rows}, indent=2))
        return 0
    print(f"key state after {size} entries (replayed and verified here)")
    for code, p in state.parties.items():
        print(f"{code} {p.name}: {p.authority_threshold} authority signature(s) change its keys")
    for r in rows:
        status = f"revoked at {r['revoked_at']}" if r["revoked_at"] is not None else "active"
        print(
            f"  {r['party']:<5} {r['role']:<12} {r['key_id']}  added at {r['added_at']}, {status}"
        )
    return 0


def _key(args: argparse.Namespace) -> pb.PartyKey:
    """The new key: its .pub file, or for a witness its C2SP cosigner key (what
    `ceasefire witness init` prints), which gives both its key and its name."""
    try:
        role_value = trust_root_file.role(args.role)
    except ValueError as e:
        raise ValueError(f"--role: {e}") from None
    key = pb.PartyKey(role=role_value, label=args.label or "")
    if args.witness_vkey is not None:
        if role_value != pb.ROLE_WITNESS or args.public_key is not None:
            raise ValueError("--witness-vkey: for --role witness, instead of --public-key")
        try:
            cosigner = parse_cosigner_vkey(args.witness_vkey)
        except NoteError as e:
            raise ValueError(f"--witness-vkey: {e}") from None
        key.public_key, key.witness_name = cosigner.public_key, cosigner.name
        return key
    if args.public_key is None:
        raise ValueError("--public-key: the new key's .pub file (a witness: --witness-vkey)")
    key.public_key = keys.read_public(args.public_key)
    return key


def _change(args: argparse.Namespace) -> pb.KeyChange:
    change = pb.KeyChange(party=args.party, reason=args.reason or "")
    change.created_time.CopyFrom(to_timestamp(now_us()))
    if args.action in ("add", "rotate"):
        change.add.append(_key(args))
    if args.action == "rotate":
        change.revoke_key_ids.append(args.old_key_id)
    if args.action == "revoke":
        change.revoke_key_ids.extend(args.key_id)
    if args.action == "threshold":
        change.authority_threshold = args.threshold
    return change


def _admission(args: argparse.Namespace) -> pb.PartyAdmission:
    party = trust_root_file.load_party(args.party_file)
    admission = pb.PartyAdmission(party=party, reason=args.reason or "")
    admission.created_time.CopyFrom(to_timestamp(now_us()))
    return admission


CHANGES = {
    "add": "key added to",
    "rotate": "key rotated for",
    "revoke": "keys revoked for",
    "threshold": "authority threshold changed for",
}


def cmd_change(args: argparse.Namespace) -> int:
    what = f"{CHANGES[args.action]} {args.party}"
    return signing.sign_and_deliver(args, statements.KEY_CHANGE, _change(args), what)


def cmd_add_party(args: argparse.Namespace) -> int:
    admission = _admission(args)
    return signing.sign_and_deliver(
        args, statements.PARTY_ADMISSION, admission, f"party {admission.party.code} admitted"
    )


def cmd_cosign(args: argparse.Namespace) -> int:
    envelope = envelope_files.read(args.file)
    if not args.quiet:
        print(envelope_files.describe(envelope), file=sys.stderr)
    envelope = envelope_files.cosign(envelope, [keys.read_private(k) for k in args.key])
    out: Path = args.out or args.file
    envelope_files.write(out, envelope)
    kept = f" ({args.file} is unchanged)" if args.out else ""
    print(f"{out}: now {len(envelope.signatures)} signature(s){kept}")
    return 0


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    kp = sub.add_parser("keys", help="list keys; add, rotate, revoke keys; admit a party")
    ks = kp.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = ks.add_parser("list", help="the key state, replayed and verified from the ledger")
    server_opt(sp)
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256")
    json_opt(sp)
    sp.set_defaults(func=cmd_list)

    def signed(sp: argparse.ArgumentParser) -> None:
        signing.add_options(sp, server_opt, key_help="authority key file to sign with (repeatable)")
        sp.add_argument("--reason", help="why, for the record")

    def new_key(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--public-key", type=Path, help="the new key's .pub file")
        sp.add_argument(
            "--witness-vkey",
            metavar="VKEY",
            help="a witness's C2SP cosigner key, as `ceasefire witness init` prints it "
            "(its name and key), instead of --public-key",
        )
        sp.add_argument("--label")

    sp = ks.add_parser("add", help="add a key to a party")
    sp.add_argument("--party", required=True)
    sp.add_argument("--role", required=True)
    new_key(sp)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("rotate", help="replace a key by a new one in one entry")
    sp.add_argument("--party", required=True)
    sp.add_argument("--old-key-id", required=True)
    sp.add_argument("--role", required=True, help="the new key's role")
    new_key(sp)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("revoke", help="revoke keys from the next index on")
    sp.add_argument("--party", required=True)
    sp.add_argument("--key-id", action="append", required=True)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("threshold", help="change how many authority keys a key change needs")
    sp.add_argument("--party", required=True)
    sp.add_argument("--threshold", type=int, required=True)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("add-party", help="admit a new party (needs the trust root's consent)")
    sp.add_argument(
        "--party-file",
        type=Path,
        required=True,
        help="YAML: code, name, authority_threshold, keys (as in a trust root)",
    )
    signed(sp)
    sp.set_defaults(func=cmd_add_party)

    sp = sub.add_parser("cosign", help="add your signature to a signed statement file")
    sp.add_argument("file", type=Path, help="a signed statement (DSSE JSON), e.g. from --out")
    sp.add_argument("--key", type=Path, action="append", required=True)
    sp.add_argument(
        "--out",
        type=Path,
        metavar="OTHER",
        help="write the co-signed envelope to this file, leaving FILE as it was",
    )
    sp.add_argument("--quiet", action="store_true", help="do not print what is signed")
    sp.set_defaults(func=cmd_cosign)
