"""`ceasefire witness`: make a witness key, run a C2SP tlog-witness, show what it follows.

A witness is run by a party (or anyone) apart from the log: it cosigns a log's checkpoints
only if each is consistent with the last it cosigned, so a log cannot show two histories.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger import keys
from ledger.clock import to_iso
from ledger.formats.cosignature import CosignatureSigner, CosignatureVerifier
from ledger.formats.note import NoteError, NoteVerifier, parse_vkey, valid_name
from ledger.witness.server import Witness, serve
from ledger.witness.state import REFUSALS_KEPT, StateError, WitnessState

NAME_FIELD = "witness_name"  # the witness's name, kept in its key file: the key hash needs it


class WitnessCliError(ValueError):
    """A user error: printed as one line by clients.cli.main."""


def _iso(seconds: int) -> str:
    return to_iso(seconds * 1_000_000)


RETIRE = (
    "a witness whose state is lost must be retired (a new key in the trust root), never "
    "restarted from size 0 under the same key"
)


def open_state(path: Path, *, new: bool) -> WitnessState:
    """The witness state at `path`. The witness's promises live in this file: a witness
    started on a missing one (a lost disk, a mistyped path) would start again from size 0
    and cosign any history. So a new state file is made only when asked, never found
    missing and silently created."""
    if new and path.exists():
        raise WitnessCliError(f"{path} exists: a new witness starts from a new state file")
    if not new and not path.exists():
        raise WitnessCliError(
            f"{path}: no witness state file; {RETIRE}; to start a new witness, "
            "give --new-state (or create it with `witness init --state`)"
        )
    try:
        return WitnessState(path, create=new)
    except StateError as e:
        raise WitnessCliError(str(e)) from None


def cmd_init(args: argparse.Namespace) -> int:
    if not valid_name(args.name):
        raise WitnessCliError(f"--name {args.name!r}: no spaces, no '+', e.g. witness.example/w1")
    if args.state is not None and args.state.exists():  # before the key is written
        raise WitnessCliError(f"{args.state} exists: a new witness starts from a new state file")
    key = keys.generate()
    try:
        keys.write_private(args.key, key, **{NAME_FIELD: args.name})
    except FileExistsError:
        raise WitnessCliError(f"{args.key} exists; refusing to overwrite a key") from None
    except OSError as e:
        raise WitnessCliError(f"{args.key}: {e.strerror}") from None
    if args.state is not None:
        open_state(args.state, new=True).close()
    verifier = CosignatureVerifier(args.name, keys.public_bytes(key))
    if args.json:
        doc = {
            "key": str(args.key),
            "name": args.name,
            "vkey": verifier.vkey,
            "public_key_hex": verifier.public_key.hex(),
            "state": None if args.state is None else str(args.state),
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"wrote {args.key} (keep secret)")
        if args.state is not None:
            print(f"wrote {args.state} (the witness state: back it up; {RETIRE})")
        print(f"cosigner vkey  {verifier.vkey}")
        print(f"public key     {verifier.public_key.hex()}")
    return 0


def load_signer(path: Path, name: str | None = None) -> CosignatureSigner:
    """The witness key from its file; its name from the file, else `name`."""
    key = keys.read_private(path)
    try:
        stored = json.loads(path.read_text()).get(NAME_FIELD)
    except (OSError, ValueError, AttributeError):
        stored = None
    if stored is not None and name is not None and stored != name:
        raise WitnessCliError(f"{path} is the key of witness {stored!r}, not {name!r}")
    chosen = stored if stored is not None else name
    if not isinstance(chosen, str):
        raise WitnessCliError(f"{path} holds no witness name: give --name")
    try:
        return CosignatureSigner(chosen, key)
    except NoteError as e:
        raise WitnessCliError(f"{path}: {e}") from None


def parse_logs(vkeys: list[str]) -> dict[str, list[NoteVerifier]]:
    """--log values: a log's note verifier key; its name is the log's origin."""
    logs: dict[str, list[NoteVerifier]] = {}
    for vkey in vkeys:
        try:
            verifier = parse_vkey(vkey)
        except NoteError as e:
            raise WitnessCliError(f"--log {vkey!r}: {e}") from None
        logs.setdefault(verifier.name, []).append(verifier)
    return logs


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise WitnessCliError(f"--listen {value!r}: want HOST:PORT")
    return host, int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    signer = load_signer(args.key, args.name)
    logs = parse_logs(args.log)
    host, port = _listen(args.listen)
    state = open_state(args.state, new=args.new_state)
    try:
        server = serve(Witness(signer, logs, state), host, port, prefix=args.prefix)
    except OSError as e:
        state.close()
        print(f"ceasefire witness serve: cannot listen on {args.listen}: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    print(
        f"witness {signer.name} serving {len(logs)} log(s) on {server.url}; Ctrl-C stops",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        server.stop()
        state.close()
    print("witness stopped", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        state = WitnessState(args.state, create=False)
    except StateError as e:
        raise WitnessCliError(str(e)) from None
    try:
        logs = state.logs()
        refusals = state.refusals(args.refusals)
    finally:
        state.close()
    if args.json:
        doc = {
            "logs": [
                {
                    "origin": s.origin,
                    "size": s.size,
                    "root_hash": base64.b64encode(s.root_hash).decode(),
                    "cosigned_at": _iso(s.cosigned_at),
                    "checkpoint": s.checkpoint,
                }
                for s in logs
            ],
            "refusals": [
                {
                    "origin": r.origin,
                    "received_at": _iso(r.received_at),
                    "status": r.status,
                    "reason": r.reason,
                }
                for r in refusals
            ],
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if not logs:
        print("no checkpoint cosigned yet")
    for s in logs:
        print(
            f"{s.origin}  size {s.size}  root {base64.b64encode(s.root_hash).decode()}  "
            f"cosigned {_iso(s.cosigned_at)}"
        )
    if refusals:
        print(f"refused as inconsistent (latest {len(refusals)}):")
        for r in refusals:
            print(f"  {_iso(r.received_at)} {r.origin} {r.status}: {r.reason}")
    return 0


def add_parsers(sub: Any, json_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    what = "run a C2SP transparency-log witness: cosign checkpoints consistent with the last"
    wp = sub.add_parser("witness", help=what, description=what)
    ws = wp.add_subparsers(dest="action", required=True, metavar="ACTION")

    sp = ws.add_parser("init", help="create a witness key file (0600) and print its vkey")
    sp.add_argument("--name", required=True, help="the witness's name, e.g. witness.example/w1")
    sp.add_argument("--key", type=Path, required=True, help="the key file to create")
    sp.add_argument(
        "--state", type=Path, help="also create the witness's state file (SQLite) for `serve`"
    )
    json_opt(sp)
    sp.set_defaults(func=cmd_init)

    sp = ws.add_parser("serve", help="serve add-checkpoint and the monitoring checkpoints")
    sp.add_argument("--key", type=Path, required=True, help="the witness key file (from init)")
    sp.add_argument("--name", help="the witness's name, if the key file holds none")
    sp.add_argument(
        "--state",
        type=Path,
        required=True,
        help="SQLite file of what it cosigned (from `init --state`); must exist",
    )
    sp.add_argument(
        "--new-state",
        action="store_true",
        help="create --state, which must not exist: a new witness. Never for a witness "
        "whose state was lost: retire that one (a new key in the trust root)",
    )
    sp.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="VKEY",
        help="a log's note verifier key, NAME+HASH+KEY, as `ceasefire init` prints it "
        "('log verifier key'); its name is the log's origin; repeatable",
    )
    sp.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (port 0: any)")
    sp.add_argument("--prefix", default="", help="URL path prefix, e.g. /witness")
    sp.set_defaults(func=cmd_serve)

    sp = ws.add_parser("show", help="the logs a witness follows: size, root, when cosigned")
    sp.add_argument("--state", type=Path, required=True)
    sp.add_argument(
        "--refusals",
        type=int,
        default=10,
        help=f"latest refusals to list (at most {REFUSALS_KEPT})",
    )
    json_opt(sp)
    sp.set_defaults(func=cmd_show)
