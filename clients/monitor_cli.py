"""`ceasefire monitor` and `ceasefire monitor check-split`: the command line of
clients/monitor.py and clients/split_evidence.py."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ceasefire.v1 import statements_pb2 as pb
from google.protobuf.message import DecodeError

from clients import exit_codes, split_evidence
from clients.client import connect
from clients.progress import Progress
from geo.defaults import DEFAULT_DATASET_DIR
from ledger import statements
from ledger.formats import dsse
from ledger.formats.note import NoteError, NoteVerifier, parse_vkey

if TYPE_CHECKING:
    from clients.monitor import RunResult

Adder = Callable[[argparse.ArgumentParser], None]

DESCRIPTION = """\
Follow a log over time: each run takes the log's newest signed checkpoint, demands a
consistency proof from the last one accepted, verifies only the entries that are new (the
auditor's full replay, resumed from DIR), and checks the root rebuilt from all leaves.
Alerts are JSON lines on stdout (and each is given to --hook on its stdin): "signed" (a key
of a --watch party signed an entry), "trust" (an entry that changes who may sign), "split"
(two signed checkpoints that cannot both be true: evidence in DIR/split-<time>.json) and
"tampered" (an entry or root that fails the audit). "signed" and "trust" alerts are news,
not failures: a run that verifies exits 0 with them."""

EPILOG = (
    exit_codes.HELP + ". A failing --hook makes it 1 at least. With --interval, the worst "
    "code of all runs, at SIGINT or SIGTERM."
)


class UsageError(ValueError):
    pass


def add_parsers(sub: argparse._SubParsersAction, server_opt: Adder, json_opt: Adder) -> None:  # type: ignore[type-arg]
    sp = sub.add_parser(
        "monitor",
        help="follow a log: verify what is new, alert on watched keys, key changes, splits",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.set_defaults(func=cmd_monitor)
    server_opt(sp)
    sp.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the monitor's memory (created, mode 0700): checkpoints.jsonl, monitor.state, "
        "split evidence",
    )
    sp.add_argument("--trust-root", metavar="SHA256", help="pin the trust root's envelope SHA-256")
    sp.add_argument(
        "--watch",
        action="extend",
        nargs="+",
        default=[],
        metavar="PARTY",
        help="alert when a key of this party signs an entry",
    )
    sp.add_argument(
        "--hook", metavar="CMD", help="shell command run for each alert (JSON on stdin)"
    )
    when = sp.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one run, then exit (the default)")
    when.add_argument(
        "--interval", type=float, metavar="SECONDS", help="run again every SECONDS until stopped"
    )
    sp.add_argument(
        "--border-data",
        type=Path,
        action="append",
        default=[DEFAULT_DATASET_DIR],
        help="border data sets to recompute geo facts with",
    )
    sp.add_argument("--workers", type=int, help="processes checking signatures ahead (see verify)")
    sp.add_argument(
        "--require-witnesses",
        action="store_true",
        help="follow only checkpoints cosigned as the trust root's witness policy requires "
        "(see docs/witnesses.md); without it, whose cosignatures a checkpoint carries is "
        "reported all the same",
    )
    json_opt(sp)
    more = sp.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND")
    cs = more.add_parser(
        "check-split",
        help="re-check split evidence offline, with the log's key alone",
        description="Re-check a split-<time>.json the monitor wrote: both notes signed by "
        "the log key for one origin, and a conflict between them that needs nothing else "
        "(two roots for one size, a consistency proof from the newer tree's own prefix "
        "root, or one entry proven to be two leaves). Exits 3 when it shows a split, 0 when "
        "it does not, 1 when the file is not evidence.",
    )
    cs.set_defaults(func=cmd_check_split)
    cs.add_argument("file", type=Path)
    key = cs.add_mutually_exclusive_group(required=True)
    key.add_argument("--log-key", metavar="VKEY", help="the log's note verifier key")
    key.add_argument(
        "--trust-root-file",
        type=Path,
        metavar="FILE",
        help="the log's signed trust root (DSSE envelope JSON): its origin and log key",
    )
    json_opt(cs)


def cmd_monitor(args: argparse.Namespace) -> int:
    from clients.monitor import Monitor, Options
    from geo.borders import BorderDataset

    if args.state_dir is None:
        raise UsageError("monitor: --state-dir DIR is required")
    if args.interval is not None and args.interval <= 0:
        raise UsageError("--interval: a number of seconds above 0")
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers: 0 or more")
    options = Options(
        state_dir=args.state_dir,
        pinned_trust_root=args.trust_root,
        watch=frozenset(args.watch),
        hook=args.hook,
        borders=tuple(BorderDataset.load(d) for d in args.border_data),
        workers=args.workers,
        require_witnesses=args.require_witnesses,
    )
    stop = threading.Event()
    worst = exit_codes.OK
    with _stopping_on_signals(stop):
        while True:
            with connect(args) as client:
                result = Monitor(
                    client, options, stop=stop, progress=Progress(sys.stderr)
                ).run_once()
            _report(result, as_json=args.json)
            if result.stopped:
                return worst if args.interval is not None else 130
            worst = exit_codes.worst(worst, result.code)
            if args.interval is None or stop.wait(args.interval):
                return worst


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop`: a run stops between two entries, saved, and the loop
    ends (the main thread only: signals cannot be caught elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    before = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def _report(result: RunResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"run": result.doc()}, ensure_ascii=False), flush=True)
    if result.error is not None:
        label = "VERIFICATION FAILED" if result.code == exit_codes.EVIDENCE else "error"
        print(f"monitor: {label}: {result.error}", file=sys.stderr, flush=True)
        return
    if result.stopped:
        print("monitor: stopped; the state is saved", file=sys.stderr, flush=True)
        return
    said = {
        "first": "verified from entry 0",
        "advance": "consistent with the last accepted, new entries verified",
        "same": "the one accepted before: nothing new",
        "older": "older than the one accepted (a lagging server), and a prefix of it",
    }.get(result.verdict or "", result.verdict or "")
    print(
        f"monitor: {result.server}: checkpoint {result.tree_size}: {said}; "
        f"{result.fetched} entries fetched, {result.alerts} alerts",
        file=sys.stderr,
        flush=True,
    )
    if result.witnesses:
        print(f"monitor: {result.witnesses}", file=sys.stderr, flush=True)


def cmd_check_split(args: argparse.Namespace) -> int:
    verifier = _log_key(args)
    try:
        doc = json.loads(args.file.read_text(encoding="utf-8"))
        verdict = split_evidence.check(doc, verifier)
    except (OSError, ValueError) as e:  # unreadable, not JSON, not evidence
        print(f"error: {args.file}: {e}", file=sys.stderr)
        return exit_codes.FAILED
    code = exit_codes.EVIDENCE if verdict.split else exit_codes.OK
    if args.json:
        print(json.dumps({"split": verdict.split, "exit": code, "findings": verdict.findings}))
    else:
        for line in verdict.findings:
            print(line)
    return code


def _log_key(args: argparse.Namespace) -> NoteVerifier:
    if args.log_key is not None:
        try:
            return parse_vkey(args.log_key)
        except NoteError as e:
            raise UsageError(f"--log-key: {e}") from e
    path: Path = args.trust_root_file
    try:
        envelope = dsse.Envelope.from_json(path.read_bytes())
        if envelope.payload_type != statements.TRUST_ROOT:
            raise UsageError(f"{path}: not a trust root ({envelope.payload_type})")
        root = pb.TrustRoot.FromString(envelope.payload)
        return NoteVerifier(root.origin, bytes(root.log_public_key))
    except (OSError, dsse.EnvelopeError, DecodeError, NoteError) as e:
        raise UsageError(f"--trust-root-file {path}: {e}") from e
