"""`ceasefire keys`: list the key state, and draft key changes and party admissions.

A change is signed by the keys given with --key. With --out it is written to a file for
other authorities to `ceasefire cosign`; without, it is submitted at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import Message

from clients import envelope_files, trust_root_file
from clients.client import LedgerClient
from ledger import dsse, keys, statements
from ledger.clock import now_us, to_timestamp
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
    with LedgerClient(args.server) as client:
        state, size = key_state(client, args.trust_root)
    rows = [
        {
            "party": k.party,
            "role": k.role_name,
            "key_id": k.key_id,
            "added_at": k.added_at,
            "revoked_at": k.revoked_at,
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


def _key(path: Path, role: str, label: str) -> pb.PartyKey:
    return trust_root_file.key_from_dict(
        {"public_key_file": str(path.resolve()), "role": role, "label": label}, Path("."), "key"
    )


def _change(args: argparse.Namespace) -> pb.KeyChange:
    change = pb.KeyChange(party=args.party, reason=args.reason or "")
    change.created_time.CopyFrom(to_timestamp(now_us()))
    if args.action in ("add", "rotate"):
        change.add.append(_key(args.public_key, args.role, args.label or ""))
    if args.action == "rotate":
        change.revoke_key_ids.append(args.old_key_id)
    if args.action == "revoke":
        change.revoke_key_ids.extend(args.key_id)
    if args.action == "threshold":
        change.authority_threshold = args.threshold
    return change


def _admission(args: argparse.Namespace) -> pb.PartyAdmission:
    try:
        doc = yaml.safe_load(args.party_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise trust_root_file.TrustRootFileError(f"{args.party_file}: cannot read ({e})") from e
    party = trust_root_file.party_from_dict(doc, args.party_file.parent, "party")
    admission = pb.PartyAdmission(party=party, reason=args.reason or "")
    admission.created_time.CopyFrom(to_timestamp(now_us()))
    return admission


def sign_and_deliver(args: argparse.Namespace, kind: str, statement: Message) -> int:
    signing_keys = [keys.read_private(k) for k in args.key]
    envelope = dsse.sign(kind, statement.SerializeToString(), signing_keys)
    return deliver(args, envelope)


def deliver(args: argparse.Namespace, envelope: dsse.Envelope) -> int:
    if args.out:
        envelope_files.write(args.out, envelope)
        print(
            f"wrote {args.out} with {len(envelope.signatures)} signature(s); "
            f"others add theirs with `ceasefire cosign {args.out} --key KEY`, "
            f"the last submits it with `ceasefire submit {args.out}`"
        )
        return 0
    with LedgerClient(args.server) as client:
        r = client.submit(envelope.to_json())
    print(f"entry {r.receipt.index}: logged")
    return 0


def cmd_change(args: argparse.Namespace) -> int:
    return sign_and_deliver(args, statements.KEY_CHANGE, _change(args))


def cmd_add_party(args: argparse.Namespace) -> int:
    return sign_and_deliver(args, statements.PARTY_ADMISSION, _admission(args))


def cmd_cosign(args: argparse.Namespace) -> int:
    envelope = envelope_files.read(args.file)
    if not args.quiet:
        print(envelope_files.describe(envelope), file=sys.stderr)
    envelope = envelope_files.cosign(envelope, [keys.read_private(k) for k in args.key])
    envelope_files.write(args.file, envelope)
    print(f"{args.file}: now {len(envelope.signatures)} signature(s)")
    return 0


def add_parsers(sub: Any, server_opt: Any, json_opt: Any) -> None:
    kp = sub.add_parser("keys", help="list keys; add, rotate, revoke keys; admit a party")
    ks = kp.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = ks.add_parser("list", help="the key state, replayed and verified from the ledger")
    server_opt(sp)
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256")
    json_opt(sp)
    sp.set_defaults(func=cmd_list)

    def signing(sp: argparse.ArgumentParser) -> None:
        server_opt(sp)
        sp.add_argument(
            "--key",
            type=Path,
            action="append",
            required=True,
            help="authority key file to sign with (repeatable)",
        )
        sp.add_argument(
            "--out",
            type=Path,
            help="write the signed envelope here to collect "
            "more signatures, instead of submitting it",
        )
        sp.add_argument("--reason", help="why, for the record")

    sp = ks.add_parser("add", help="add a key to a party")
    sp.add_argument("--party", required=True)
    sp.add_argument("--role", required=True)
    sp.add_argument("--public-key", type=Path, required=True, help="the new key's .pub file")
    sp.add_argument("--label")
    signing(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("rotate", help="replace a key by a new one in one entry")
    sp.add_argument("--party", required=True)
    sp.add_argument("--old-key-id", required=True)
    sp.add_argument("--role", required=True, help="the new key's role")
    sp.add_argument("--public-key", type=Path, required=True, help="the new key's .pub file")
    sp.add_argument("--label")
    signing(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("revoke", help="revoke keys from the next index on")
    sp.add_argument("--party", required=True)
    sp.add_argument("--key-id", action="append", required=True)
    signing(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("threshold", help="change how many authority keys a key change needs")
    sp.add_argument("--party", required=True)
    sp.add_argument("--threshold", type=int, required=True)
    signing(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("add-party", help="admit a new party (needs the trust root's consent)")
    sp.add_argument(
        "--party-file",
        type=Path,
        required=True,
        help="YAML: code, name, authority_threshold, keys (as in a trust root)",
    )
    signing(sp)
    sp.set_defaults(func=cmd_add_party)

    sp = sub.add_parser("cosign", help="add your signature to a signed statement file")
    sp.add_argument("file", type=Path)
    sp.add_argument("--key", type=Path, action="append", required=True)
    sp.add_argument("--quiet", action="store_true", help="do not print what is signed")
    sp.set_defaults(func=cmd_cosign)
