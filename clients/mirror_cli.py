"""`ceasefire mirror`: a read-only mirror of a log, seeded from its offline bundles.

`init` verifies a bundle exactly as `ceasefire verify --bundle` does, then loads it into a
fresh database; `update` verifies a newer bundle of the same log and appends what it adds,
if the mirror's tree is its prefix. `ceasefire serve --db DB` serves a mirror read-only:
the log's signed checkpoint byte for byte, its entries, proofs and derived views;
submissions are refused. A bundle that does not verify, or that shows another history of
the log, is refused with nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clients import exit_codes
from clients.progress import Progress
from geo.defaults import DEFAULT_DATASET_DIR
from ledger.errors import LedgerError

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

    from geo.borders import BorderDataset
    from ledger import mirror
    from ledger.storage import LedgerStore


class _Refused(Exception):
    def __init__(self, reason: str, code: int = exit_codes.FAILED) -> None:
        super().__init__(reason)
        self.code = code


def add_parsers(sub: Any, json_opt: Callable[[argparse.ArgumentParser], None]) -> None:
    mp = sub.add_parser(
        "mirror",
        help="a read-only mirror from offline bundles: init, update "
        "(serve it with `ceasefire serve --db DB`)",
    )
    ms = mp.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, fn, what in (
        ("init", cmd_init, "verify a bundle and load it into a fresh database as a mirror"),
        ("update", cmd_update, "verify a newer bundle of the mirrored log and append its entries"),
    ):
        sp = ms.add_parser(name, help=what, description=what)
        sp.set_defaults(func=fn)
        sp.add_argument("--bundle", type=Path, required=True, help="from `ceasefire export`")
        sp.add_argument(
            "--db", required=True, help="the mirror's SQLite path or database URL (postgresql://)"
        )
        sp.add_argument(
            "--trust-root",
            help="pin the trust root's envelope SHA-256 (hex); update pins the mirror's own",
        )
        sp.add_argument(
            "--border-data",
            type=Path,
            action="append",
            default=[DEFAULT_DATASET_DIR],
            help="border data sets to recompute geo facts with (the bundle's are used too)",
        )
        sp.add_argument(
            "--workers", type=int, help="processes checking signatures ahead of the replay"
        )
        json_opt(sp)


def cmd_init(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ledger import mirror
    from ledger.storage import LedgerStore

    progress = Progress(sys.stderr, quiet=args.json)
    try:
        _check_bundle(args)
        found = _existing(args.db)
        if found is not None:
            raise _Refused(found)
        verified = _verify(args, args.trust_root, progress)
        store = LedgerStore.open(args.db)  # created only now: a refused bundle writes nothing
        try:
            progress.start(verified.checkpoint.size, "imported")
            try:
                size = mirror.load(store, verified, progress=progress)
            except LedgerError as e:  # nothing of the import was committed
                raise _Refused(e.message) from e
            progress.finish()
        finally:
            store.close()
    except _Refused as e:
        return _refused(progress, "init", e)
    except SQLAlchemyError as e:
        return _refused(progress, "init", _database(e))
    finally:
        progress.close()
    cp = verified.checkpoint
    doc = {
        "ok": True,
        "origin": cp.origin,
        "tree_size": size,
        "root_hash": cp.root_hash.hex(),
        "trust_root_sha256": verified.replay.trust_root_digest,
        "db": _shown_db(args.db),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"mirror of {cp.origin} initialised in {doc['db']}: {size} entries")
        print(f"  root {cp.root_hash.hex()}, the log's signed checkpoint kept verbatim")
        print(f"  serve it read-only: ceasefire serve --db {doc['db']}")
    return exit_codes.OK


def cmd_update(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from ledger import mirror
    from ledger.storage import migrate

    progress = Progress(sys.stderr, quiet=args.json)
    try:
        _check_bundle(args)
        store = _open_mirror(args.db)
        try:
            info = mirror.mirror_info(store)
            assert info is not None
            if args.trust_root and args.trust_root != info.trust_root_sha256:
                raise _Refused(
                    f"--trust-root {args.trust_root[:16]}... is not the mirror's "
                    f"{info.trust_root_sha256[:16]}..."
                )
            verified = _verify(args, args.trust_root or info.trust_root_sha256, progress)
            migrate(store.engine)  # a newer schema, only for a bundle that verified
            size = verified.checkpoint.size
            progress.start(size, "imported")
            try:
                result = mirror.extend(store, verified, progress=progress)
            except mirror.NotAnExtension as e:
                raise _Refused(e.message, exit_codes.EVIDENCE) from e
            except LedgerError as e:
                raise _Refused(e.message) from e
            if result.appended:
                progress.finish()
        finally:
            store.close()
    except _Refused as e:
        return _refused(progress, "update", e)
    except SQLAlchemyError as e:
        return _refused(progress, "update", _database(e))
    finally:
        progress.close()
    doc = {
        "ok": True,
        "origin": info.origin,
        "old_size": result.old_size,
        "tree_size": result.new_size,
        "appended": result.appended,
        "bundle_size": size,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    elif result.appended:
        print(
            f"mirror of {info.origin} updated: {result.old_size} -> {result.new_size} entries "
            "(the mirror's tree is the bundle's prefix); serving the log's newer checkpoint"
        )
    else:
        print(
            f"nothing to do: the mirror of {info.origin} holds {result.old_size} entries, the "
            f"bundle {size} of the same history"
        )
    return exit_codes.OK


def _check_bundle(args: argparse.Namespace) -> None:
    if not args.bundle.is_file():
        raise _Refused(f"{args.bundle}: no such file", exit_codes.USAGE)
    if args.workers is not None and args.workers < 0:
        raise _Refused("--workers: 0 or more", exit_codes.USAGE)


def verify(
    path: Path,
    *,
    pinned_trust_root: str | None,
    borders: list[BorderDataset],
    progress: Progress | None = None,
    workers: int | None = None,
) -> mirror.Verified:
    """The bundle checked exactly as `verify --bundle` checks it (VerificationError if it
    does not verify), with what an import reads from it again."""
    from clients import bundle
    from ledger import mirror

    replay, checkpoint, _ = bundle.verify_bundle(
        path,
        pinned_trust_root=pinned_trust_root,
        borders=borders,
        progress=progress,
        workers=workers,
    )
    header, entries = bundle.read_entries(path)
    files = bundle.read_files(path)
    return mirror.Verified(replay, checkpoint, str(header.get("checkpoint", "")), entries, files)


def _verify(args: argparse.Namespace, pinned: str | None, progress: Progress) -> mirror.Verified:
    from geo.borders import BorderDataset
    from ledger.verifier import VerificationError

    borders = [BorderDataset.load(d) for d in args.border_data]
    try:
        return verify(
            args.bundle,
            pinned_trust_root=pinned,
            borders=borders,
            progress=progress,
            workers=args.workers,
        )
    except VerificationError as e:
        raise _Refused(f"the bundle does not verify: {e}", exit_codes.EVIDENCE) from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _Refused(f"{args.bundle}: not a readable bundle ({e})", exit_codes.EVIDENCE) from e


def _existing(db: str) -> str | None:
    """Why `db` cannot become a mirror (it holds something), without creating it."""
    from sqlalchemy import inspect

    from ledger import mirror
    from ledger.storage import LedgerStore

    if _sqlite_missing(db):
        return None
    store = LedgerStore.open(db, create=False)
    try:
        info = mirror.mirror_info(store)
        if info is not None:
            return f"{_shown_db(db)} is a mirror of {info.origin} already: use `mirror update`"
        if inspect(store.engine).has_table("tree_state") and store.tree_size():
            return f"{_shown_db(db)} holds a ledger of {store.tree_size()} entries"
        return None
    finally:
        store.close()


def _open_mirror(db: str) -> LedgerStore:
    from ledger import mirror
    from ledger.storage import LedgerStore

    if _sqlite_missing(db):
        raise _Refused(f"{_shown_db(db)}: no such database; start with `ceasefire mirror init`")
    store = LedgerStore.open(db, create=False)
    if mirror.mirror_info(store) is None:
        store.close()
        raise _Refused(f"{_shown_db(db)} is not a mirror; start one with `ceasefire mirror init`")
    return store


def _sqlite_missing(db: str) -> bool:
    from sqlalchemy.engine import make_url

    from ledger.storage import normalize_url

    url = make_url(normalize_url(db))
    return url.get_backend_name() == "sqlite" and not Path(url.database or "").exists()


def _shown_db(db: str) -> str:
    """The database as messages name it: a path as given, a URL without its password."""
    from sqlalchemy.engine import make_url

    if "://" not in db:
        return db
    return make_url(db).render_as_string(hide_password=True)


def _database(e: SQLAlchemyError) -> _Refused:
    cause = str(getattr(e, "orig", None) or e).strip() or type(e).__name__
    return _Refused(f"the database: {cause.splitlines()[0]}")


def _refused(progress: Progress, action: str, e: _Refused) -> int:
    progress.close()
    print(f"ceasefire mirror {action}: refused: {' '.join(str(e).split())}", file=sys.stderr)
    return e.code
