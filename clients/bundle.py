"""Offline audit bundles: the signed checkpoint and every entry it covers, in one file.

`ceasefire export --out ledger.bundle` writes it from a server; `ceasefire verify --bundle
ledger.bundle` checks it with no network and no trust in whoever handed it over: the
trust root (pinned by digest), every entry's signatures and authorization replayed, the
hash chain, and the root rebuilt from all leaves against the log's signature.

Format (JSON lines, UTF-8): a header {"format": "ceasefire-bundle/v1", "tree_size": N,
"checkpoint": <signed note>}, then N lines {"index": i, "entry": <base64 of the LogEntry
bytes>} in index order, then one line {"blob": <sha256>, "data": <base64>} per file of
every border data set the ledger names, so geo facts can be recomputed offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ceasefire.v1 import statements_pb2 as pb

from clients import checkpoints, verified_state
from clients.audit import load_dataset
from clients.client import LedgerClient
from clients.progress import Progress
from geo.borders import BorderDataset
from ledger import statements
from ledger.errors import LedgerError
from ledger.formats import dsse
from ledger.formats.log_entry import parse_entry
from ledger.formats.note import Checkpoint
from ledger.trust import DatasetInfo
from ledger.verifier import (
    Replay,
    VerificationError,
    check_root,
    default_workers,
    open_checkpoint,
)

FORMAT = "ceasefire-bundle/v1"


def export_bundle(
    client: LedgerClient,
    path: Path,
    progress: Callable[[str], None] = lambda _m: None,
    *,
    witnessed: bool = False,
) -> int:
    """Write the bundle of the newest checkpoint, or with `witnessed` of the newest one the
    log finds cosigned as the witness policy requires (QuorumError if none), and of the
    entries it covers: newer entries, not yet cosigned, are left out, so that the bundle
    passes `verify --bundle --require-witnesses`. Returns the checkpoint's size."""
    cp = checkpoints.served_checkpoint(client, require_witnesses=witnessed)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        header = {"format": FORMAT, "tree_size": cp.tree_size, "checkpoint": cp.signed_note}
        out.write(json.dumps(header) + "\n")
        files: set[str] = set()
        for e in client.entries(0, cp.tree_size):
            out.write(json.dumps({"index": e.index, "entry": base64.b64encode(e.entry).decode()}))
            out.write("\n")
            files |= _dataset_files(e.entry)
            if (e.index + 1) % 1000 == 0:
                progress(f"exported {e.index + 1}/{cp.tree_size} entries")
        for digest in sorted(files):
            data = client.blob(digest)
            out.write(json.dumps({"blob": digest, "data": base64.b64encode(data).decode()}))
            out.write("\n")
    os.replace(tmp, path)  # never a half-written bundle under the final name
    return cp.tree_size


def _dataset_files(entry: bytes) -> set[str]:
    """Digests of the data set files an entry names (trust root or registration)."""
    try:
        envelope = dsse.Envelope.from_json(parse_entry(entry).envelope)
        statement = statements.decode(envelope.payload_type, envelope.payload)
    except (dsse.EnvelopeError, LedgerError, ValueError):
        return set()  # not ours to judge here: the audit will say what is wrong
    if isinstance(statement, pb.TrustRoot):
        return {f.sha256 for f in statement.border_dataset_files}
    if isinstance(statement, pb.BorderDatasetRegistration):
        return {f.sha256 for f in statement.files}
    return set()


def read_files(path: Path) -> dict[str, bytes]:
    """The files in a bundle, each checked against its digest."""
    found: dict[str, bytes] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.startswith('{"blob"'):
                continue
            doc = json.loads(line)
            data = base64.b64decode(doc["data"], validate=True)
            if hashlib.sha256(data).hexdigest() != doc["blob"]:
                raise VerificationError(f"{path}: file {doc['blob']} does not match its digest")
            found[doc["blob"]] = data
    return found


def checkpoint_note(path: Path) -> str:
    """The signed checkpoint a bundle carries (with the cosignatures it was served with),
    unverified: verify_bundle checks it."""
    with path.open(encoding="utf-8") as f:
        return str(_header(f.readline(), path).get("checkpoint", ""))


def _header(line: str, path: Path) -> dict[str, object]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError as e:
        raise VerificationError(f"{path}: not a bundle ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise VerificationError(f"{path}: not a {FORMAT} file")
    return header


def read_entries(path: Path) -> tuple[dict[str, object], Iterator[tuple[int, bytes]]]:
    """A bundle's header, and its entries as (index, bytes), read as they are iterated;
    nothing here is verified: verify_bundle does that."""
    f = path.open(encoding="utf-8")
    try:
        header = _header(f.readline(), path)
    except VerificationError:
        f.close()
        raise

    def entries() -> Iterator[tuple[int, bytes]]:
        with f:
            for n, line in enumerate(f, start=2):
                if line.startswith('{"blob"'):
                    return
                try:
                    doc = json.loads(line)
                    yield int(doc["index"]), base64.b64decode(doc["entry"], validate=True)
                except (json.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as e:
                    raise VerificationError(f"{path}: line {n} is not an entry ({e})") from e

    return header, entries()


def verify_bundle(
    path: Path,
    *,
    pinned_trust_root: str | None,
    borders: list[BorderDataset],
    state_file: Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    require_witnesses: bool = False,
) -> tuple[Replay, Checkpoint, int | None]:
    """`workers`: processes checking signatures and geo facts ahead of the replay (None:
    `default_workers` for the bundle's size). The checkpoint's witness cosignatures are
    checked against the key state at its end; with `require_witnesses` they must meet the
    witness policy (QuorumError), before any --state is updated."""
    progress = progress or Progress(quiet=True)
    blobs = read_files(path)

    def load(info: DatasetInfo) -> BorderDataset | None:
        if not all(digest in blobs for _, digest in info.files):
            return None
        contents = {name: blobs[digest] for name, digest in info.files}
        return load_dataset(info, contents)

    header, entries = read_entries(path)
    state = Replay(pinned_trust_root, {b.sha256: b for b in borders}, load_dataset=load)
    first = next(entries, None)
    if first is None:
        raise VerificationError(f"{path}: holds no entries")
    state.add(*first)
    assert state.trust is not None
    # Entry 0 names the log key: the checkpoint is checked before the rest is replayed.
    checkpoint = open_checkpoint(str(header.get("checkpoint", "")), state.trust)
    size = header.get("tree_size")
    total = size if isinstance(size, int) else checkpoint.size
    progress.start(total)
    state.add_all(
        entries,
        workers=default_workers(total) if workers is None else workers,
        progress=progress,
    )
    progress.finish()
    if checkpoint.size != state.size:
        raise VerificationError(
            f"{path}: the checkpoint covers {checkpoint.size} entries, "
            f"the bundle holds {state.size}"
        )
    check_root(state, checkpoint)
    checkpoints.check(str(header["checkpoint"]), state.trust, require_witnesses=require_witnesses)
    consistent_from = None
    if state_file is not None:
        # The kept checkpoint may be newer (an older bundle after a newer one): checked
        # against the leaves kept with it.
        consistent_from = verified_state.reconcile(
            state_file, str(header["checkpoint"]), checkpoint, state.leaf_hashes, state.trust
        )
    return state, checkpoint, consistent_from
