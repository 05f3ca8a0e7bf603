"""The `ceasefire` command. `ceasefire --help` lists the subcommands; each has --help."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb
from nacl.signing import SigningKey

from clients import (
    border_cli,
    certs_cli,
    checkpoints,
    envelope_files,
    exit_codes,
    exports_cli,
    incident_view,
    incidents_cli,
    investigations_cli,
    keys_cli,
    mirror_cli,
    monitor_cli,
    outbox,
    outbox_cli,
    query_args,
    reports,
    signing,
    stats_cli,
    trust_root_file,
    user_files,
    verified_state,
    witness_cli,
)
from clients.client import (
    DEFAULT_TARGET,
    LedgerClient,
    Refused,
    batches,
    connect,
    describe_error,
)
from clients.describe import describe_entry
from clients.extras import loaded
from geo.defaults import DEFAULT_DATASET_DIR
from ledger import keys, statements
from ledger.clock import to_iso, to_us
from ledger.errors import LedgerError
from ledger.formats import dsse, merkle
from ledger.formats.log_entry import parse_entry
from ledger.formats.note import NoteError
from ledger.log_key import LogKey
from ledger.witnesses import QuorumError, Witnessing

if TYPE_CHECKING:
    # The server's modules (SQLAlchemy, geometry) are imported inside the commands that run a
    # ledger: the client starts without them, and installs without the server extra.
    from ledger.tls import TlsConfig

EXIT_FAILED = exit_codes.FAILED
EXIT_USAGE = exit_codes.USAGE
BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell shows for a writer whose reader went away


class UsageError(Exception):
    pass


# Every client command's TLS options: (flag, environment variable, what the file holds).
TLS_CLIENT_OPTIONS = (
    ("--tls-ca", "CEASEFIRE_TLS_CA", "connect over TLS, trusting the CA certificates (PEM) here"),
    ("--tls-cert", "CEASEFIRE_TLS_CERT", "client certificate (PEM) to present, for writes"),
    ("--tls-key", "CEASEFIRE_TLS_KEY", "the client certificate's private key (PEM)"),
)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _server(args: argparse.Namespace) -> LedgerClient:
    return connect(args)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- keys, init, serve -------------------------------------------------------------------


KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def cmd_keygen(args: argparse.Namespace) -> int:
    if not KEY_NAME.match(args.name):
        raise UsageError("a key name is 1-64 letters, digits, '.', '_' or '-'")
    out: Path = args.dir
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / f"{args.name}.key", out / f"{args.name}.pub"
    if private.exists():
        raise UsageError(f"{private} exists; refusing to overwrite a key")
    party = keys.check_party(args.party.upper() if args.party else None)
    role = keys.check_role(args.role)
    # Asked before the key exists: a refused passphrase leaves no file behind.
    passphrase = None if args.no_passphrase else keys.new_passphrase(str(private))
    key = keys.generate()
    keys.write_private(private, key, passphrase=passphrase, party=party, role=role)
    keys.write_public(public, keys.public_bytes(key), party=party, role=role)
    kid = dsse.key_id(keys.public_bytes(key))
    if args.json:
        _print_json(
            {
                "private": str(private),
                "public": str(public),
                "key_id": kid,
                "party": party,
                "role": role,
                "encrypted": passphrase is not None,
            }
        )
        return 0
    held = "encrypted with your passphrase" if passphrase else "NOT encrypted"
    print(f"wrote {private} (keep secret; {held}) and {public}\nkey id {kid}")
    if party or role:
        print(f"party {party or '-'}, role {role or '-'}")
    return 0


def _draft_trust_root(path: Path, log_public_key: bytes, border_data: Path) -> pb.TrustRoot:
    from geo.borders import BorderDataset
    from ledger.service import dataset_files

    borders = BorderDataset.load(border_data)
    root = trust_root_file.load_trust_root(
        path,
        log_public_key=log_public_key,
        border_dataset_sha256=borders.sha256,
        border_dataset_files=dataset_files(borders),
    )
    codes = [p.code for p in root.parties]
    if not set(borders.parties) <= set(codes):
        raise trust_root_file.TrustRootFileError(
            f"{path}: the border data set {borders.name} is between "
            f"{' and '.join(borders.parties)}, but the trust root's parties are "
            f"{', '.join(codes)}; give --border-data for their border"
        )
    return root


def cmd_trust_root(args: argparse.Namespace) -> int:
    """Draft a trust root from YAML and sign it: the first founding authority's step."""
    root = _draft_trust_root(args.file, keys.read_public(args.log_public_key), args.border_data)
    signing_keys = [keys.read_private(k) for k in args.key]
    envelope = dsse.sign(statements.TRUST_ROOT, root.SerializeToString(), signing_keys)
    # Each founding party's authorities add theirs; then the operator writes entry 0.
    signing.write_for_cosigning(
        args.out,
        envelope,
        f"ceasefire init --trust-root {args.out} --log-key LOG.key",
        as_json=args.json,
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from geo.borders import BorderDataset
    from ledger.service import initialize
    from ledger.storage import LedgerStore

    args.trust_root.stat()  # missing: named as such, not taken for an unsigned YAML root
    log_signing_key = keys.read_private(args.log_key)
    if envelope_files.is_envelope_file(args.trust_root):
        envelope = envelope_files.read(args.trust_root)
    else:
        if not args.sign_with:
            raise UsageError(
                "a YAML trust root needs the founding authorities' signatures: give "
                "--sign-with KEY for each, or sign it first with `ceasefire trust-root`"
            )
        root = _draft_trust_root(
            args.trust_root, keys.public_bytes(log_signing_key), args.border_data
        )
        envelope = dsse.sign(
            statements.TRUST_ROOT,
            root.SerializeToString(),
            [keys.read_private(k) for k in args.sign_with],
        )
    origin = statements.decode(envelope.payload_type, envelope.payload).origin  # type: ignore[attr-defined]
    log_key = LogKey(origin, log_signing_key)
    store = LedgerStore.open(args.db)
    try:
        entry = initialize(store, envelope, log_key, BorderDataset.load(args.border_data))
    finally:
        store.close()
    digest = hashlib.sha256(parse_entry(entry.entry).envelope).hexdigest()
    vkey = log_key.verifier.vkey
    if args.json:
        _print_json({"trust_root_sha256": digest, "origin": origin, "log_vkey": vkey})
    else:
        print(f"ledger {origin} initialised in {args.db}")
        print(f"trust root sha256 {digest}  (auditors pin this: verify --trust-root {digest})")
        print(f"log verifier key  {vkey}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ledger.mirror import MirrorLedger
    from ledger.serving.grpc_server import AddressInUse, ListenError, check_free, default_spool_dir
    from ledger.serving.runtime import open_ledger, serve_forever

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    tls = tls_from_args(args)  # its files are checked before anything is opened
    if args.workers < 1:
        raise UsageError("--workers: at least 1")
    try:
        # A busy port is refused before anything is created or opened (and again at bind).
        for address in (args.listen, tls.writers_address if tls else None):
            if address:
                check_free(address)
        args.db = args.db or str(args.data_dir / "ledger.db")
        args.log_key = args.log_key or args.data_dir / "keys" / "log.key"
        if args.bootstrap:
            _bootstrap(args)
        ledger = open_ledger(
            args.db,
            args.log_key,
            args.border_data,
            workers=args.workers,
            linger_s=args.linger_ms / 1000,
        )
        cp = ledger.checkpoint()
        if args.witness and isinstance(ledger, MirrorLedger):
            ledger.close()
            ledger.store.close()
            raise UsageError(
                "--witness: a mirror asks no witnesses; it serves the log's checkpoint with "
                "the cosignatures it came with"
            )
        asks_none = not args.witness and not isinstance(ledger, MirrorLedger)
        if ledger.trust.witness_policy_text and asks_none:
            # No witness is asked: no new checkpoint can meet the policy clients may require.
            logging.getLogger("ceasefire.serve").warning(
                "the trust root's witness policy %s asks for cosignatures, but no --witness "
                "is given: new checkpoints will not meet it",
                ledger.trust.witness_policy_text,
            )

        def ready(port: int) -> None:
            host = args.listen.rsplit(":", 1)[0]
            print(
                f"serving ledger {ledger.trust.origin} ({cp.size} entries) on {host}:{port}; "
                f"border data {ledger.borders.sha256[:12]}; Ctrl-C stops",
                flush=True,
            )

        # Uploads are spooled beside a SQLite database, else in DATA_DIR/uploads.
        spool_dir = default_spool_dir(ledger) or args.data_dir / "uploads"
        serve_forever(
            ledger,
            args.listen,
            on_ready=ready,
            tls=tls,
            spool_dir=spool_dir,
            workers=args.workers,
            witnesses=args.witness,
        )
    except AddressInUse as e:
        address = str(e).split(" ", 1)[0]
        flag = "--listen-writers" if tls and address == tls.writers_address else "--listen"
        print(
            f"error: {address} is in use (another ceasefire serve?): choose {flag} HOST:PORT",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except ListenError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def tls_from_args(args: argparse.Namespace) -> TlsConfig | None:
    """The server's TLS from serve's --tls-* options; None (plaintext) without --tls-cert."""
    from ledger.tls import TlsConfig

    if args.tls_cert is None and args.tls_key is None:
        given = [
            flag
            for flag, value in (
                ("--tls-client-ca", args.tls_client_ca),
                ("--writes-need-client-cert", args.writes_need_client_cert),
                ("--listen-writers", args.listen_writers),
            )
            if value
        ]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    return TlsConfig.from_files(
        args.tls_cert,
        args.tls_key,
        args.tls_client_ca,
        args.writes_need_client_cert,
        writers_address=args.listen_writers,
    )


def _bootstrap(args: argparse.Namespace) -> None:
    """A local ledger for trying things out: the log key, and an authority, a monitor and an
    investigator key for each of ARM and AZE, and the finding policy "joint" (both
    authorities); the trust root is signed by both authorities."""
    from ledger.storage import LedgerStore

    home: Path = args.data_dir
    store = LedgerStore.open(args.db)
    try:
        if store.tree_size() > 0:
            return
    finally:
        store.close()
    keydir = home / "keys"
    keydir.mkdir(parents=True, exist_ok=True)
    # A trial ledger: its keys are unencrypted (0600) but say whose they are; the log key
    # belongs to no party and has no trust-root role.
    wanted: list[tuple[Path, str | None, str | None]] = [
        (keydir / f"{party}-{role}.key", party.upper(), role)
        for party in ("arm", "aze")
        for role in ("monitor", "authority", "investigator")
    ]
    for private, party, role in [(Path(args.log_key), None, None), *wanted]:
        if not private.exists():
            private.parent.mkdir(parents=True, exist_ok=True)
            key = keys.generate()
            keys.write_private(private, key, party=party, role=role)
            keys.write_public(
                private.with_suffix(".pub"), keys.public_bytes(key), party=party, role=role
            )
    if not (home / "trust-root.yaml").exists():
        (home / "trust-root.yaml").write_text(
            "origin: local.ceasefire-ledger/arm-aze\n"
            "parties:\n"
            "  - code: ARM\n    name: Armenia\n    authority_threshold: 1\n    keys:\n"
            "      - {role: monitor, public_key_file: keys/arm-monitor.pub}\n"
            "      - {role: authority, public_key_file: keys/arm-authority.pub}\n"
            "      - {role: investigator, public_key_file: keys/arm-investigator.pub}\n"
            "  - code: AZE\n    name: Azerbaijan\n    authority_threshold: 1\n    keys:\n"
            "      - {role: monitor, public_key_file: keys/aze-monitor.pub}\n"
            "      - {role: authority, public_key_file: keys/aze-authority.pub}\n"
            "      - {role: investigator, public_key_file: keys/aze-investigator.pub}\n"
            "finding_policies:\n"
            '  - {name: joint, expression: "AND(ARM.authority, AZE.authority)"}\n'
        )
    ns = argparse.Namespace(
        log_key=Path(args.log_key),
        border_data=args.border_data,
        trust_root=home / "trust-root.yaml",
        sign_with=[keydir / "arm-authority.key", keydir / "aze-authority.key"],
        db=args.db,
        json=False,
    )
    cmd_init(ns)
    print(
        f"bootstrapped a local ledger in {home}; submit with, e.g.:\n"
        f"  ceasefire submit --key {keydir}/arm-monitor.key docs/examples/incident-arm.yaml",
        flush=True,
    )


# -- submitting and reading ------------------------------------------------------------


def _envelopes(path: Path, signing_keys: Callable[[], list[SigningKey]]) -> list[bytes]:
    """A signed statement file as it is, or the reports of a JSON/YAML file, signed."""
    path.stat()  # a missing file is named as such (FileNotFoundError), not taken for a report
    if envelope_files.is_envelope_file(path):
        return [path.read_bytes().strip()]
    found = reports.load_reports(path)
    if not signing_keys():
        raise UsageError(f"{path}: reports need --key to sign them with")
    return [reports.sign_report(r, signing_keys()) for r in found]


def cmd_submit(args: argparse.Namespace) -> int:
    opened: list[SigningKey] = []

    def signing_keys() -> list[SigningKey]:
        # Opened when a report needs them (and once): signed files need no passphrase.
        if not opened:
            opened.extend(keys.read_private(k) for k in args.key or [])
        return opened

    # Every file is read (and its reports checked and signed) before anything is sent.
    loaded = [(path, _envelopes(path, signing_keys)) for path in args.files]
    items = [(path, i) for path, envelopes in loaded for i in range(len(envelopes))]
    envelopes = [envelope for _, found in loaded for envelope in found]
    results: list[dict[str, Any]] = []
    failed = 0
    # Kept in the outbox before anything is sent: a dropped link loses nothing.
    box = signing.open_outbox(args)
    rows = [
        box.add(envelope, f"{path}[{i}]", server=args.server)
        for (path, i), envelope in zip(items, envelopes, strict=True)
        if box is not None
    ]
    try:
        if args.queue:
            for (path, i), row in zip(items, rows, strict=True):
                results.append({"file": str(path), "item": i, **row.to_json()})
                if not args.json:
                    print(
                        f"{path}[{i}]: queued in the outbox (#{row.id}); `ceasefire sync` sends it"
                    )
            if args.json:
                _print_json(results)
            return 0
        with _server(args) as client:
            outcomes = _submitted(client, envelopes, batched=len(args.files) > 1)
            for k, ((path, i), outcome) in enumerate(zip(items, outcomes, strict=True)):
                kept = box.record(rows[k].id, outcome) if box is not None else None
                if isinstance(outcome, Refused) and kept is not None and outbox.link_down(outcome):
                    results.append({"file": str(path), "item": i, **kept.to_json()})
                    if not args.json:
                        print(
                            f"{path}[{i}]: kept in the outbox (#{kept.id}, pending): the log could "
                            f"not be reached ({outcome.describe()}); `ceasefire sync` sends it",
                            file=sys.stderr,
                        )
                    continue
                if isinstance(outcome, Refused):
                    failed += 1
                    print(f"{path}[{i}]: refused: {outcome.describe()}", file=sys.stderr)
                    error = {"code": outcome.code.name, "message": outcome.status.message}
                    results.append({"file": str(path), "item": i, "error": error})
                    continue
                r = outcome.receipt
                results.append(
                    {
                        "file": str(path),
                        "item": i,
                        "index": r.index,
                        "leaf_hash": r.leaf_hash.hex(),
                        "integrated_time": to_iso(to_us(r.integrated_time)),
                        "duplicate": outcome.duplicate,
                        "signed_receipt": json.loads(outcome.signed_receipt),
                    }
                )
                if not args.json:
                    dup = " (already logged: first receipt)" if outcome.duplicate else ""
                    print(f"{path}[{i}]: entry {r.index} leaf {r.leaf_hash.hex()[:16]}{dup}")
    finally:
        if box is not None:
            box.close()
    if args.json:
        _print_json(results)
    return EXIT_FAILED if failed else 0


def _submitted(
    client: LedgerClient, envelopes: Sequence[bytes], *, batched: bool
) -> Iterator[api.SubmitResponse | Refused]:
    """Each envelope's receipt or refusal, in order, as each call answers. Batched: in
    SubmitBatch calls (at most 256 envelopes and the server's message size each), whose
    statements are judged on the log as it stood before the call; else one Submit each,
    each judged after the one before it is logged."""
    if not batched:
        for envelope in envelopes:
            try:
                yield client.submit(envelope)
            except grpc.RpcError as e:
                yield Refused.from_error(e)
        return
    for batch in batches(envelopes):
        try:
            yield from client.submit_batch(batch)
        except grpc.RpcError as e:
            if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.UNIMPLEMENTED:
                yield from _submitted(client, batch, batched=False)  # a server before batches
            else:  # the call failed whole: each of its statements with its error
                yield from [Refused.from_error(e)] * len(batch)


def log_category(value: pb.IncidentCategory.ValueType) -> str:
    return pb.IncidentCategory.Name(value).removeprefix("INCIDENT_CATEGORY_").lower()


def cmd_timeline(args: argparse.Namespace) -> int:
    request = query_args.query_from_args(args)
    with _server(args) as client:
        found = list(client.timeline_page(request))
    rows = []
    for t in found:
        doc = incident_view.incident_doc(
            t.index, t.status, t.report, t.geo, t.current, entry=t.entry
        )
        doc["next_page_token"] = t.next_page_token
        rows.append(doc)
    more = bool(found) and found[-1].more
    if more:
        # On stderr, so that --json stays one document: how to ask for the next page.
        print(
            f"more incidents match: add --page-token {found[-1].next_page_token}",
            file=sys.stderr,
        )
    if args.json:
        _print_json(rows)
        return 0
    if args.as_of_index:
        print(f"as the log stood before entry {args.as_of_index}:")
    if not rows:
        print("no incidents match")
    for r in rows:
        for line in incident_view.timeline_lines(r):
            print(line)
    return 0


def cmd_entry(args: argparse.Namespace) -> int:
    with _server(args) as client:
        if args.envelope_sha256:
            response = client.entry_by_envelope(bytes.fromhex(args.envelope_sha256))
        elif args.index is not None:
            response = client.entry(args.index)
        else:
            raise UsageError("give an INDEX or --envelope-sha256")
    if args.envelope:
        # The DSSE envelope exactly as signed: any DSSE tool can verify this file.
        sys.stdout.write(parse_entry(response.entry).envelope.decode() + "\n")
        return 0
    doc = describe_entry(response.entry)
    if args.json:
        _print_json(doc)
    else:
        print(f"entry {doc['index']}  integrated {doc['integrated_time']}")
        print(f"  leaf hash     {doc['leaf_hash']}\n  chained to    {doc['previous_leaf_hash']}")
        print(f"  envelope      {doc['envelope_sha256']}  ({doc['payload_type']})")
        for s in doc["signatures"]:
            print(f"  signed by key {s['keyid']}")
        print("  validation    " + json.dumps(doc["validation"], ensure_ascii=False))
        print("  statement     " + json.dumps(doc.get("statement"), ensure_ascii=False))
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with _server(args) as client:
        cp = client.checkpoint(witnessed=args.witnessed)
    if args.json:
        _print_json(
            {
                "tree_size": cp.tree_size,
                "root_hash": cp.root_hash.hex(),
                "signed_note": cp.signed_note,
                # As the log reports them, unverified: `proof` and `verify` check them.
                "witnesses": [
                    {"url": w.url, "cosigned_size": w.cosigned_size, "error": w.error}
                    for w in cp.witnesses
                ],
            }
        )
    else:
        sys.stdout.write(cp.signed_note)
    return 0


def _witnessing_json(w: Witnessing) -> dict[str, Any]:
    """Whose cosignatures were checked on a checkpoint, and what they amount to."""
    return {
        "cosigned_by": [
            {"party": c.party, "name": c.name, "key_id": c.key_id, "time": c.timestamp}
            for c in w.cosigned
        ],
        "policy": w.policy,
        "policy_met": w.met,
        "summary": w.describe(),
    }


def require_witnesses_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--require-witnesses",
        action="store_true",
        help="trust only a checkpoint whose witness cosignatures meet the trust root's "
        "witness policy (the newest such one)",
    )


def cmd_proof(args: argparse.Namespace) -> int:
    from ledger.verifier import open_checkpoint

    with _server(args) as client:
        # Whose cosignatures count: entry 0's witnesses, or with --monitor-state those in
        # force as a monitor replayed them (a witness revoked since no more).
        trust = checkpoints.key_state(
            client,
            monitor_state=args.monitor_state,
            require_witnesses=args.require_witnesses,
        )
        served = client.checkpoint(witnessed=args.require_witnesses)
        trusted = checkpoints.check(
            served.signed_note, trust, require_witnesses=args.require_witnesses
        )
        cp = trusted.checkpoint
        doc: dict[str, Any] = {"kind": args.kind, "witnesses": _witnessing_json(trusted.witnessing)}
        if args.kind == "inclusion":
            p = client.inclusion_proof(args.index, args.size or cp.size)
            doc |= {
                "index": p.index,
                "tree_size": p.tree_size,
                "leaf_hash": p.leaf_hash.hex(),
                "hashes": [h.hex() for h in p.hashes],
            }
            if p.tree_size == cp.size:
                merkle.verify_inclusion(
                    p.leaf_hash, p.index, p.tree_size, list(p.hashes), cp.root_hash
                )
                doc["verified"] = True
        else:
            old = None
            if args.old_checkpoint:
                old = open_checkpoint(args.old_checkpoint.read_text(encoding="utf-8"), trust)
                args.old = old.size
            if args.old is None:
                raise UsageError("give --old SIZE or --old-checkpoint FILE")
            c = client.consistency_proof(args.old, args.new or cp.size)
            doc |= {
                "old_size": c.old_size,
                "new_size": c.new_size,
                "hashes": [h.hex() for h in c.hashes],
            }
            if old is not None and c.new_size == cp.size:
                merkle.verify_consistency(
                    old.size, cp.size, old.root_hash, cp.root_hash, list(c.hashes)
                )
                doc["old_root_hash"] = old.root_hash.hex()
                doc["verified"] = True
    if doc.get("tree_size", doc.get("new_size")) == cp.size:
        doc["root_hash"] = cp.root_hash.hex()
        doc["checkpoint"] = served.signed_note
    doc.setdefault("verified", False)
    _print_json(doc)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from clients import bundle
    from clients.audit import AuditResult, audit
    from clients.progress import for_command
    from geo.borders import BorderDataset

    borders = [BorderDataset.load(d) for d in args.border_data]
    # One progress line for both audits, on stderr: on a terminal, or with --progress.
    progress = for_command(args)
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers: 0 or more")
    try:
        if args.bundle:
            state, cp, consistent_from = bundle.verify_bundle(
                args.bundle,
                pinned_trust_root=args.trust_root,
                borders=borders,
                state_file=args.state,
                progress=progress,
                workers=args.workers,
                require_witnesses=args.require_witnesses,
            )
            assert state.trust is not None
            witnessed = checkpoints.check(
                bundle.checkpoint_note(args.bundle), state.trust, require_witnesses=False
            ).witnessing
            result = AuditResult(
                cp.size, cp.root_hash, state.trust_root_digest, cp.origin,
                state.geo_rechecked, consistent_from, state.summary(), witnessed,
            )  # fmt: skip
        else:
            with _server(args) as client:
                result = audit(
                    client,
                    pinned_trust_root=args.trust_root,
                    borders=borders,
                    state_file=args.state,
                    progress=progress,
                    workers=args.workers,
                    require_witnesses=args.require_witnesses,
                )
    finally:
        progress.close()  # an error is printed on a line of its own
    doc = {
        "ok": True,
        "origin": result.origin,
        "tree_size": result.tree_size,
        "root_hash": result.root_hash.hex(),
        "trust_root_sha256": result.trust_root_digest,
        "trust_root_pinned": bool(args.trust_root),
        "geo_facts_recomputed": result.geo_rechecked,
        "consistent_with_size": result.consistent_from,
        "statuses": result.summary,
        "witnesses": _witnessing_json(result.witnessing) if result.witnessing else None,
    }
    if args.json:
        _print_json(doc)
        return 0
    print(f"OK: {result.tree_size} entries of {result.origin} verified")
    if args.bundle:
        print("  offline: every signature, the hash chain, the signed root rebuilt from all leaves")
    else:
        print(
            "  every signature, the hash chain, the signed root rebuilt from all leaves "
            "(so every entry is in the signed checkpoint)"
        )
    print(f"  root {result.root_hash.hex()}")
    if result.witnessing is not None:
        print(f"  checkpoint {result.witnessing.describe()}")
    print(
        f"  geo facts recomputed for {result.geo_rechecked} places (reports, amendments, notices)"
    )
    for group, counts in result.summary.items():
        if counts:
            said = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in counts.items())
            print(f"  {group}, by the entries alone: {said}")
    if result.consistent_from is not None:
        print(f"  consistent with the checkpoint of size {result.consistent_from} verified before")
    if not args.trust_root:
        print(f"  note: trust root {result.trust_root_digest} was not pinned (use --trust-root)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clients import bundle, progress

    if not args.out.parent.is_dir():  # before anything is read from the log
        raise UsageError(f"--out {args.out}: no such folder {args.out.parent}")
    shown = progress.for_command(args)

    class Counted:
        """The client, its entry stream moving the progress line: export_bundle reads the
        checkpoint, then every entry, then the data set files."""

        def __init__(self, client: LedgerClient) -> None:
            self.client = client

        def checkpoint(self, witnessed: bool = False) -> Any:
            cp = self.client.checkpoint(witnessed=witnessed)
            shown.start(cp.tree_size, "exported")
            return cp

        def entries(self, start: int, end: int) -> Iterator[Any]:
            for e in self.client.entries(start, end):
                yield e
                shown(e.index + 1)

        def blob(self, sha256: str) -> bytes:
            return self.client.blob(sha256)

    try:
        with _server(args) as client:
            counted: Any = Counted(client)
            size = bundle.export_bundle(counted, args.out, witnessed=args.witnessed)
        shown.finish()
    finally:
        shown.close()
    if args.json:
        note = bundle.checkpoint_note(args.out)
        _print_json({"out": str(args.out), "tree_size": size, "checkpoint": note})
    else:
        what = "the witnessed checkpoint" if args.witnessed else "the checkpoint"
        print(f"wrote {args.out}: {size} entries and {what} that signs them")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clients.demo import run_demo

    return run_demo(keep=args.keep)


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from clients import profiles, progress  # (in here: cli.py's import block is kept light)

    db_default = os.environ.get("CEASEFIRE_DB", "var/ledger/ledger.db")
    p = argparse.ArgumentParser(
        prog="ceasefire",
        description="Ceasefire Ledger: signed, append-only, verifiable border incident records.",
    )
    p.add_argument(
        "--profile",
        metavar="NAME",
        help="the profile of config.toml to use (default: env CEASEFIRE_PROFILE, else the "
        "file's default_profile; see docs/cli.md)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        return sp

    def server_opt(sp: argparse.ArgumentParser) -> None:
        # Defaults from the environment; what is still None after parsing, main fills from
        # the profile, else the built-in default (clients/profiles.py).
        sp.add_argument(
            "--server",
            default=os.environ.get("CEASEFIRE_SERVER") or None,
            help=f"host:port (default: env CEASEFIRE_SERVER, else the profile's, else "
            f"{DEFAULT_TARGET})",
        )
        tls = sp.add_argument_group("TLS (plaintext unless --tls-ca is given)")
        for name, env, what in TLS_CLIENT_OPTIONS:
            tls.add_argument(
                name,
                type=Path,
                metavar="FILE",
                default=_env_path(env),
                help=f"{what} (env {env}, else the profile's)",
            )
        profile_opt(sp)
        sp.set_defaults(client_options=True)
        # A signed command's --key (clients.signing) may come from CEASEFIRE_KEY or the
        # profile: required only once those are looked at (main).
        key = sp._option_string_actions.get("--key")
        if key is not None and key.required:
            key.required = False
            key.help = f"{key.help} (default: env CEASEFIRE_KEY, else the profile's key)"
            sp.set_defaults(key_required=True)
        if key is not None and not isinstance(key, argparse._AppendAction):
            sp.set_defaults(key_single=True)  # one key file (evidence open), not a list

    def server_opt_again(sp: argparse.ArgumentParser) -> None:
        # A subcommand's own --server and --tls-* (`proof inclusion --server X`): SUPPRESS,
        # so that the value given before the subcommand, or its default, stays when not given.
        sp.add_argument("--server", default=argparse.SUPPRESS, help="as before the subcommand")
        for name, _, what in TLS_CLIENT_OPTIONS:
            sp.add_argument(name, type=Path, metavar="FILE", default=argparse.SUPPRESS, help=what)

    def profile_opt(sp: argparse.ArgumentParser) -> None:
        # SUPPRESS: not given on the command, the global --profile (before it) stays.
        sp.add_argument(
            "--profile",
            metavar="NAME",
            default=argparse.SUPPRESS,
            help="the profile of config.toml to use (default: env CEASEFIRE_PROFILE, else "
            "default_profile)",
        )

    def json_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    def proof_json_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="accepted: a proof is always JSON")

    sp = add("keygen", cmd_keygen, "create an Ed25519 key pair: NAME.key (secret) and NAME.pub")
    sp.add_argument("name")
    sp.add_argument("--dir", type=Path, default=Path("keys"))
    sp.add_argument("--party", help="the party the key belongs to (e.g. ARM), kept in the files")
    sp.add_argument("--role", help="its role in the trust root (e.g. monitor), kept in the files")
    sp.add_argument(
        "--no-passphrase",
        action="store_true",
        help="write the private key unencrypted (a trial ledger, or a key on an encrypted disk)",
    )
    json_opt(sp)

    sp = add("init", cmd_init, "start a ledger: write its trust root as entry 0")
    sp.add_argument(
        "--db", default=db_default, help="SQLite path or database URL (postgresql://...)"
    )
    sp.add_argument(
        "--trust-root",
        type=Path,
        required=True,
        help="a signed trust root (from `ceasefire trust-root` + `cosign`), or its YAML",
    )
    sp.add_argument(
        "--sign-with",
        type=Path,
        action="append",
        help="with a YAML trust root: founding authority key files to sign it with",
    )
    sp.add_argument("--log-key", type=Path, required=True, help="the log's private key file")
    sp.add_argument("--border-data", type=Path, default=DEFAULT_DATASET_DIR)
    json_opt(sp)

    sp = add("trust-root", cmd_trust_root, "draft a trust root from YAML and sign it")
    sp.add_argument("file", type=Path, help="trust root YAML")
    sp.add_argument("--log-public-key", type=Path, required=True, help="the log's .pub file")
    sp.add_argument("--key", type=Path, action="append", required=True, help="authority key")
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument("--border-data", type=Path, default=DEFAULT_DATASET_DIR)
    json_opt(sp)

    sp = add("serve", cmd_serve, "run the gRPC service")
    sp.add_argument(
        "--data-dir", type=Path, default=Path("var/ledger"), help="default home of --db, --log-key"
    )
    sp.add_argument("--db", help="SQLite path or database URL (default DATA_DIR/ledger.db)")
    sp.add_argument("--log-key", type=Path, help="default DATA_DIR/keys/log.key")
    sp.add_argument("--listen", default="127.0.0.1:50051")
    sp.add_argument("--border-data", type=Path, default=DEFAULT_DATASET_DIR)
    sp.add_argument("--linger-ms", type=float, default=0.0, help="max wait to fill a commit batch")
    sp.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="URL",
        help="a C2SP tlog-witness URL prefix asked to cosign each new checkpoint "
        "(repeatable; see docs/witnesses.md)",
    )
    from ledger.defaults import POOL_OVERFLOW, WORKERS  # serve's, without the server's modules

    sp.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"threads doing the ledger's blocking work (default {WORKERS}); a PostgreSQL "
        f"server keeps WORKERS + 2 connections open, and opens at most {POOL_OVERFLOW} more",
    )
    sp.add_argument(
        "--bootstrap",
        action="store_true",
        help="first run: create a local ledger in DATA_DIR: a log key; a monitor, an "
        "authority and an investigator key for each of ARM and AZE; the trust root signed by "
        "both authorities, with the finding policy 'joint'",
    )
    tls = sp.add_argument_group("TLS (plaintext unless --tls-cert is given)")
    tls.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="the server's certificate chain (PEM)"
    )
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key (PEM)")
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="CA certificates (PEM) that sign the parties' client certificates: every call "
        "needs one, unless --writes-need-client-cert",
    )
    tls.add_argument(
        "--writes-need-client-cert",
        action="store_true",
        help="reads stay public on --listen; writes need a client certificate and go to "
        "--listen-writers",
    )
    tls.add_argument(
        "--listen-writers",
        metavar="HOST:PORT",
        help="with --writes-need-client-cert: the port where the handshake requires a client "
        "certificate from --tls-client-ca",
    )

    sp = add(
        "submit",
        cmd_submit,
        "sign incident reports (JSON or YAML files) and submit them; "
        "signed statement files (DSSE JSON) are submitted as they are; several files go "
        "in batches (SubmitBatch), each statement with its own result",
    )
    server_opt(sp)
    sp.add_argument(
        "--key", type=Path, action="append", help="signing key file for reports (repeatable)"
    )
    sp.add_argument("files", type=Path, nargs="+")
    signing.add_outbox_options(sp)
    json_opt(sp)

    sp = add(
        "timeline",
        cmd_timeline,
        "list incidents by incident time (or log index), filtered, a page at a time",
    )
    sp.epilog = (
        "Filters apply to each report as first logged. A page ends with a page token on "
        "stderr when more match; pages of one query share its snapshot of the log."
    )
    server_opt(sp)
    query_args.add_query_options(sp)
    json_opt(sp)

    sp = add("entry", cmd_entry, "show one log entry")
    server_opt(sp)
    sp.add_argument("index", type=int, nargs="?")
    sp.add_argument("--envelope-sha256", help="look up by envelope digest instead")
    sp.add_argument(
        "--envelope", action="store_true", help="print only the DSSE envelope JSON, verbatim"
    )
    json_opt(sp)

    sp = add(
        "checkpoint",
        cmd_checkpoint,
        "print the latest signed checkpoint as served, with the witnesses' cosignatures",
    )
    sp.epilog = exit_codes.HELP
    server_opt(sp)
    json_opt(sp)
    sp.add_argument(
        "--witnessed",
        action="store_true",
        help="the newest checkpoint cosigned as the trust root's witness policy requires",
    )

    def proof_opts_again(sp: argparse.ArgumentParser) -> None:
        # After the subcommand too, as docs/witnesses.md writes them; SUPPRESS keeps the
        # value given before the subcommand when not given here.
        server_opt_again(sp)
        again: dict[str, Any] = {"default": argparse.SUPPRESS, "help": "as before the subcommand"}
        sp.add_argument("--require-witnesses", action="store_true", **again)
        sp.add_argument("--monitor-state", type=Path, metavar="DIR", **again)

    sp = add("proof", cmd_proof, "print an inclusion or consistency proof as JSON")
    sp.epilog = exit_codes.HELP
    server_opt(sp)
    require_witnesses_opt(sp)
    monitor_state_help = (
        "count the witness keys in force as `ceasefire monitor --state-dir DIR` replayed "
        "them at its last run (default: those the trust root, entry 0, names)"
    )
    sp.add_argument("--monitor-state", type=Path, metavar="DIR", help=monitor_state_help)
    proof_sub = sp.add_subparsers(dest="kind", required=True)
    inc = proof_sub.add_parser("inclusion")
    inc.add_argument("--index", type=int, required=True)
    inc.add_argument("--size", type=int, default=0, help="tree size (default: latest checkpoint)")
    proof_json_opt(inc)
    proof_opts_again(inc)
    con = proof_sub.add_parser("consistency")
    con.add_argument("--old", type=int, help="the older tree size")
    con.add_argument(
        "--old-checkpoint",
        type=Path,
        help="a signed checkpoint saved earlier (ceasefire checkpoint > FILE): "
        "its signature is checked and the proof verified against its root",
    )
    con.add_argument("--new", type=int, default=0, help="default: latest checkpoint")
    proof_json_opt(con)
    proof_opts_again(con)

    sp = add("export", cmd_export, "write an offline audit bundle: all entries and the checkpoint")
    server_opt(sp)
    sp.add_argument("--out", type=Path, required=True)
    sp.add_argument(
        "--witnessed",
        action="store_true",
        help="the newest checkpoint cosigned as the trust root's witness policy requires, "
        "and the entries it covers (for `verify --bundle --require-witnesses`)",
    )
    progress.add_option(sp)
    json_opt(sp)

    sp = add("verify", cmd_verify, "audit the whole ledger: signatures, chain, proofs, checkpoint")
    sp.epilog = exit_codes.HELP + "; with --json a failure is a JSON document on stdout too"
    server_opt(sp)
    sp.add_argument("--bundle", type=Path, help="audit an exported bundle offline instead")
    sp.add_argument("--trust-root", help="pin the trust root's envelope SHA-256 (hex)")
    sp.add_argument(
        "--state",
        type=Path,
        help="file keeping the newest verified checkpoint (and FILE.leaves, its leaf hashes); "
        "every advance must come with a consistency proof, an older checkpoint (an older "
        "bundle, a lagging server) must be a prefix of the one kept",
    )
    sp.add_argument(
        "--border-data",
        type=Path,
        action="append",
        default=[DEFAULT_DATASET_DIR],
        help="border data sets to recompute geo facts with",
    )
    sp.add_argument(
        "--workers",
        type=int,
        help="processes checking signatures and geo facts ahead of the replay "
        "(default: one per core beside the replay's, at most 3, for 2,000 entries or more; "
        "0: none)",
    )
    require_witnesses_opt(sp)
    progress.add_option(sp)
    json_opt(sp)

    profiles.add_parsers(sub, json_opt)  # profile list|show|add
    keys_cli.add_parsers(sub, server_opt, json_opt)
    certs_cli.add_parsers(sub)
    witness_cli.add_parsers(sub, json_opt)
    monitor_cli.add_parsers(sub, server_opt, json_opt)
    border_cli.add_parsers(sub, server_opt, json_opt)
    # An incident's life: answered, investigated, evidenced, found, then read as a whole.
    incidents_cli.add_parsers(sub, server_opt, json_opt)
    investigations_cli.add_parsers(sub, server_opt, json_opt)
    incidents_cli.add_evidence_parsers(sub, server_opt, json_opt)
    incidents_cli.add_finding_parsers(sub, server_opt)
    incidents_cli.add_dossier_parser(sub, server_opt, json_opt)
    investigations_cli.add_prevention_parsers(sub, server_opt, json_opt)
    mirror_cli.add_parsers(sub, json_opt)
    stats_cli.add_parsers(sub, server_opt, json_opt)
    exports_cli.add_parsers(sub, server_opt, json_opt)  # export-incidents, map, chart
    outbox_cli.add_parsers(sub, server_opt, json_opt)  # sync, outbox list|show|check|resign

    sp = add(
        "demo", cmd_demo, "a throwaway ledger, a server on loopback, signed reports, a full audit"
    )
    sp.add_argument("--keep", action="store_true", help="keep the temporary folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs a command; its error is one line on stderr and an exit code (clients/exit_codes:
    3 evidence against the log, 4 the log not reached, ...), never a traceback (unless
    CEASEFIRE_DEBUG=1). `verify --json` and `monitor --json` print a JSON document on stdout
    for a failure too; verify's VERIFICATION FAILED is its result, on stdout. A reader that
    goes away (`| head`) ends the command quietly with 141, as a shell shows SIGPIPE."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            _settings(parser, args)
            code = int(args.func(args))
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return code
        except BrokenPipeError:
            raise
        except KeyboardInterrupt:
            return 130
        except Exception as e:
            code, message = _failure(args.command, e)
            as_json = args.command in ("verify", "monitor") and getattr(args, "json", False)
            result = args.command == "verify" and code == exit_codes.EVIDENCE and not as_json
            print(message, file=sys.stdout if result else sys.stderr)
            if as_json:
                index = getattr(e, "index", None)
                _print_json({"ok": False, "exit": code, "error": str(e), "index": index})
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The options left unset, from the environment, else the profile, else the defaults
    (clients/profiles.py); a signed command's --key must come from one of them."""
    from clients import profiles

    client = getattr(args, "client_options", False)
    if not client and not hasattr(args, "outbox"):
        return  # serve, init, keygen ...: no profile is read (a broken one cannot stop them)
    profiles.apply(args, profiles.select(args.profile))
    if client and args.server is None:
        args.server = DEFAULT_TARGET
    if getattr(args, "key_required", False) and not args.key:
        raise UsageError(
            "give --key KEY (or set CEASEFIRE_KEY, or a key in your profile: docs/cli.md)"
        )


def _quiet_stdout() -> None:
    """After a closed pipe: stdout to /dev/null, so that the exit's flush fails no more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (in-process tests): nothing to flush
        pass


def _failure(command: str, e: Exception) -> tuple[int, str]:
    """The exit code and the line to print for an error; an unexpected one is an internal
    error in one line (its traceback too with CEASEFIRE_DEBUG=1)."""
    if isinstance(e, grpc.RpcError):
        audit_command = command in exit_codes.AUDIT_COMMANDS
        code = exit_codes.for_rpc_error(e) if audit_command else exit_codes.FAILED
        return code, f"error: {describe_error(e)}"
    if isinstance(
        e, (*loaded("ledger.verifier", "VerificationError"), merkle.ProofError, NoteError)
    ):
        return exit_codes.EVIDENCE, f"VERIFICATION FAILED: {e}"
    if isinstance(
        e,
        LedgerError
        | user_files.UserFileError
        | envelope_files.EnvelopeFileError
        | verified_state.StateError
        | QuorumError,
    ):
        # Refused: by the ledger, a file's content (a report, trust root, party file), a
        # state that cannot answer, a checkpoint without its witnesses.
        return exit_codes.FAILED, f"error: {e}"
    if isinstance(e, UsageError | keys.KeyFileError | ValueError):  # geo's DatasetError too
        return exit_codes.USAGE, f"error: {e}"
    if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        # A file named on the command line (or in a file it names) cannot be opened.
        where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
        return exit_codes.USAGE, f"error: {where}{e.strerror or e}"
    from clients.extras import missing_extra  # (in here: cli.py's imports are kept light)

    missing = missing_extra(command, e)
    if missing is not None:
        return exit_codes.FAILED, missing
    if os.environ.get("CEASEFIRE_DEBUG"):
        import traceback

        traceback.print_exception(e)
    return exit_codes.FAILED, (
        f"error: internal error: {type(e).__name__}: {e} "
        "(run with CEASEFIRE_DEBUG=1 for the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
