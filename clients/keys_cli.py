"""`ceasefire keys`: list the key state, and draft key changes and party admissions.

A change is signed by the keys given with --key. With --out it is written to a file for
other authorities to `ceasefire cosign`; without, it is submitted at once (clients.signing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceasefire.v1 import statements_pb2 as pb

from clients import envelope_files, signing, trust_root_file
from clients.client import LedgerClient, connect
from clients.party_option import add_party_option, party_of
from ledger import keys, statements
from ledger.clock import now_us, to_timestamp
from ledger.formats.cosignature import parse_cosigner_vkey
from ledger.formats.note import NoteError
from ledger.trust import TrustState

if TYPE_CHECKING:
    from ledger.verifier import Replay


def replayed(client: LedgerClient, pinned: str | None = None) -> Replay:
    """The ledger replayed (and so verified: every signature, every rule) here."""
    from ledger.verifier import Replay

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
    change = pb.KeyChange(party=party_of(args), reason=args.reason or "")
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
    what = f"{CHANGES[args.action]} {party_of(args)}"
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
    if args.json:
        doc = {
            "file": str(out),
            "signatures": len(envelope.signatures),
            "key_ids": [s.keyid for s in envelope.signatures],
            "envelope_sha256": hashlib.sha256(envelope.to_json()).hexdigest(),
        }
        print(json.dumps(doc, indent=2))
        return 0
    kept = f" ({args.file} is unchanged)" if args.out else ""
    print(f"{out}: now {len(envelope.signatures)} signature(s){kept}")
    return 0


# -- key files at rest (ledger/keys.py, docs/keys.md) ------------------------------------


def _file_json(info: keys.KeyInfo) -> dict[str, Any]:
    return {
        "file": str(info.path),
        "private": info.private,
        "key_id": info.key_id,
        "party": info.party,
        "role": info.role,
        "encrypted": info.encrypted,
        "mode": f"{info.mode:04o}",
    }


def cmd_show(args: argparse.Namespace) -> int:
    """What a key file says, without its passphrase."""
    info = keys.read_key_info(args.file)
    if args.json:
        print(json.dumps(_file_json(info), indent=2))
        return 0
    kind = "private" if info.private else "public"
    held = ", encrypted" if info.encrypted else (", NOT encrypted" if info.private else "")
    print(f"{info.path}: {kind} key{held}, mode {info.mode:04o}")
    print(f"key id {info.key_id}\nparty {info.party or '-'}, role {info.role or '-'}")
    if info.private and info.mode & 0o077:
        print(f"warning: readable by others; it will be refused: chmod 600 {info.path}")
    return 0


def _rewritten(args: argparse.Namespace, what: str) -> int:
    info = keys.read_key_info(args.file)
    if args.json:
        print(json.dumps({**_file_json(info), "done": what}, indent=2))
    else:
        print(f"{args.file}: {what}; key id {info.key_id} unchanged")
    return 0


def cmd_protect(args: argparse.Namespace) -> int:
    """Encrypt an unencrypted private key file in place."""
    if keys.read_key_info(args.file).encrypted:
        raise keys.KeyFileError(
            f"{args.file} is already encrypted; change its passphrase with "
            "`ceasefire keys passphrase`"
        )
    key_file = keys.read_key_file(args.file)
    keys.reseal(key_file, keys.new_passphrase(str(args.file)))
    return _rewritten(args, "encrypted with the new passphrase")


def cmd_passphrase(args: argparse.Namespace) -> int:
    """Change an encrypted private key file's passphrase."""
    if not keys.read_key_info(args.file).encrypted:
        raise keys.KeyFileError(
            f"{args.file} is not encrypted; encrypt it with `ceasefire keys protect`"
        )
    key_file = keys.read_key_file(args.file)  # the old passphrase, from the usual sources
    keys.reseal(key_file, keys.new_passphrase(str(args.file), env_sources=False))
    return _rewritten(args, "passphrase changed")


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
    add_party_option(sp, "the party whose keys change")
    sp.add_argument("--role", required=True)
    new_key(sp)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("rotate", help="replace a key by a new one in one entry")
    add_party_option(sp, "the party whose keys change")
    sp.add_argument("--old-key-id", required=True)
    sp.add_argument("--role", required=True, help="the new key's role")
    new_key(sp)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("revoke", help="revoke keys from the next index on")
    add_party_option(sp, "the party whose keys change")
    sp.add_argument("--key-id", action="append", required=True)
    signed(sp)
    sp.set_defaults(func=cmd_change)

    sp = ks.add_parser("threshold", help="change how many authority keys a key change needs")
    add_party_option(sp, "the party whose keys change")
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

    sp = ks.add_parser("show", help="what a key file says (key id, party, role, encrypted)")
    sp.add_argument("file", type=Path, help="a .key or .pub file")
    json_opt(sp)
    sp.set_defaults(func=cmd_show)

    sp = ks.add_parser(
        "protect",
        help="encrypt an unencrypted private key file with a passphrase, in place",
        description="Encrypt FILE in place. The passphrase: CEASEFIRE_NEW_PASSPHRASE, "
        "CEASEFIRE_PASSPHRASE, CEASEFIRE_PASSPHRASE_FILE, CEASEFIRE_PASSPHRASE_FD, "
        "else typed twice at the terminal.",
    )
    sp.add_argument("file", type=Path, help="a private key file (.key)")
    json_opt(sp)
    sp.set_defaults(func=cmd_protect)

    sp = ks.add_parser(
        "passphrase",
        help="change an encrypted private key file's passphrase",
        description="The old passphrase as for any use of the key (CEASEFIRE_PASSPHRASE, "
        "CEASEFIRE_PASSPHRASE_FILE, CEASEFIRE_PASSPHRASE_FD, else the terminal); the new "
        "one from CEASEFIRE_NEW_PASSPHRASE, else typed twice at the terminal.",
    )
    sp.add_argument("file", type=Path, help="a private key file (.key)")
    json_opt(sp)
    sp.set_defaults(func=cmd_passphrase)

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
    json_opt(sp)
    sp.set_defaults(func=cmd_cosign)
