"""The outbox: every signed statement kept on this machine until the log has it.

A field team signs when it observes, whether or not the link is up. Each statement is
written here (pending) before it is sent; the log's answer is kept with it: logged with
its signed receipt, or refused with the reason. `ceasefire sync` sends what is pending
when the link is up, and `ceasefire outbox check` checks the kept receipts against the
log's newest checkpoint. See docs/field.md.

One SQLite file (stdlib sqlite3, WAL), its schema versioned with PRAGMA user_version:
`statements`, a row per envelope (unique by the SHA-256 of its bytes: the same envelope
kept twice is one row), and `files`, the files a statement brings (an evidence blob, a
border data set's files), so that it can be sent later with them.

Sending again is harmless: Submit is idempotent (a statement already logged is answered
with its first receipt), so a sync cut off before its answers were written sends those
statements again and the log still holds each once.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from ceasefire.v1 import log_pb2
from nacl.signing import SigningKey

from clients.client import LedgerClient, Refused, batches
from clients.user_files import UserFileError
from ledger import statements
from ledger.clock import now_us, to_timestamp, to_us
from ledger.errors import LedgerError
from ledger.formats import dsse, merkle

if TYPE_CHECKING:
    from ceasefire.v1 import ledger_service_pb2 as api

    from ledger.trust import TrustState

SCHEMA_VERSION = 1
ENV_PATH = "CEASEFIRE_OUTBOX"
PENDING, LOGGED, REFUSED = "pending", "logged", "refused"
STATES = (PENDING, LOGGED, REFUSED)

# The log did not answer (or asks to be asked later): the statement stays pending.
LINK_DOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
# The log judged the statement and said no: kept as refused, with the reason. Any other
# status (UNAUTHENTICATED: no client certificate; INTERNAL; ...) says nothing of the
# statement: it stays pending, and the command fails with the error.
JUDGED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
_TOO_OLD = re.compile(r"created_time: is older than")

_SCHEMA = """
CREATE TABLE statements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope BLOB NOT NULL,                   -- the DSSE JSON envelope, verbatim
    envelope_sha256 TEXT NOT NULL UNIQUE,     -- of those bytes (hex)
    kind TEXT NOT NULL,                       -- e.g. IncidentReport
    summary TEXT NOT NULL,
    signed_at_us INTEGER,                     -- the statement's created_time
    queued_at_us INTEGER NOT NULL,
    server TEXT NOT NULL DEFAULT '',          -- where it was first meant to go
    state TEXT NOT NULL CHECK (state IN ('pending', 'logged', 'refused')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    replaces INTEGER REFERENCES statements (id),  -- `outbox resign`: the row signed again
    receipt_index INTEGER,
    receipt BLOB,                             -- the signed receipt, as the log gave it
    leaf_hash BLOB,
    integrated_us INTEGER,
    duplicate INTEGER,                        -- logged before: the first receipt
    checked_size INTEGER,                     -- the largest checkpoint it was checked in
    checked_root BLOB,
    checked_at_us INTEGER
);
CREATE INDEX statements_state ON statements (state, id);
CREATE TABLE files (
    statement_id INTEGER NOT NULL REFERENCES statements (id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (statement_id, name)
);
"""


class OutboxError(UserFileError):
    """The outbox cannot be used as asked (unreadable, newer schema, no such row)."""


def default_path() -> Path:
    """`$XDG_DATA_HOME/ceasefire/outbox.db` (default ~/.local/share/ceasefire/outbox.db)."""
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "ceasefire" / "outbox.db"


def path_for(given: Path | None) -> Path:
    """--outbox FILE, else CEASEFIRE_OUTBOX, else the default path."""
    if given is not None:
        return given
    env = os.environ.get(ENV_PATH)
    return Path(env) if env else default_path()


def kind_name(payload_type: str) -> str:
    """`application/vnd.ceasefire.v1.KeyChange+protobuf` -> `KeyChange`."""
    return payload_type.rsplit(".", 1)[-1].split("+")[0]


def signed_at_us(envelope: dsse.Envelope) -> int | None:
    """The statement's created_time (when it was signed), if it has one."""
    try:
        statement = statements.decode(envelope.payload_type, envelope.payload)
    except LedgerError:  # a kind this client does not know: kept as it is
        return None
    if "created_time" not in statement.DESCRIPTOR.fields_by_name:
        return None
    if not statement.HasField("created_time"):
        return None
    return to_us(statement.created_time)  # type: ignore[attr-defined]


def too_old(error: str | None) -> bool:
    """A refusal because the statement was signed longer ago than the trust root allows."""
    return bool(error and _TOO_OLD.search(error))


@dataclass(frozen=True)
class Row:
    id: int
    envelope: bytes
    envelope_sha256: str
    kind: str
    summary: str
    signed_at_us: int | None
    queued_at_us: int
    server: str
    state: str
    attempts: int
    last_error: str | None
    replaces: int | None
    receipt_index: int | None
    receipt: bytes | None
    leaf_hash: bytes | None
    integrated_us: int | None
    duplicate: bool
    checked_size: int | None
    checked_root: bytes | None
    checked_at_us: int | None
    file_names: tuple[str, ...] = ()
    replaced_by: int | None = None

    @property
    def too_old(self) -> bool:
        return self.state == REFUSED and too_old(self.last_error)

    def hint(self) -> str:
        """What to do next with it, for a person."""
        if self.state == PENDING:
            return "`ceasefire sync` sends it when the link is up"
        if self.too_old and self.replaced_by is None:
            return f"signed too long ago: `ceasefire outbox resign {self.id} --key KEY`"
        return ""

    def to_json(self) -> dict[str, Any]:
        from ledger.clock import to_iso

        def iso(us: int | None) -> str | None:
            return to_iso(us) if us is not None else None

        doc: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "kind": self.kind,
            "what": self.summary,
            "envelope_sha256": self.envelope_sha256,
            "signed_at": iso(self.signed_at_us),
            "queued_at": iso(self.queued_at_us),
            "server": self.server or None,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "files": list(self.file_names),
            "replaces": self.replaces,
            "replaced_by": self.replaced_by,
            "receipt": None,
            "checked_size": self.checked_size,
            "checked_root": self.checked_root.hex() if self.checked_root else None,
            "checked_at": iso(self.checked_at_us),
            "hint": self.hint() or None,
        }
        if self.state == LOGGED and self.receipt is not None:
            doc["index"] = self.receipt_index
            doc["receipt"] = receipt_json(self)
        else:
            doc["index"] = None
        return doc


def receipt_json(row: Row) -> dict[str, Any]:
    """The kept receipt as `submit --json` shows one."""
    import json

    from ledger.clock import to_iso

    assert row.receipt is not None and row.leaf_hash is not None
    return {
        "index": row.receipt_index,
        "leaf_hash": row.leaf_hash.hex(),
        "integrated_time": to_iso(row.integrated_us) if row.integrated_us is not None else None,
        "duplicate": row.duplicate,
        "signed_receipt": json.loads(row.receipt),
    }


_COLUMNS = (
    "id, envelope, envelope_sha256, kind, summary, signed_at_us, queued_at_us, server, state, "
    "attempts, last_error, replaces, receipt_index, receipt, leaf_hash, integrated_us, "
    "duplicate, checked_size, checked_root, checked_at_us"
)


class Outbox:
    """The outbox file, open. Every change is committed at once: what a crash leaves is
    what was written before it."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self.db = db

    @classmethod
    def open(cls, path: Path) -> Outbox:
        """Open (or create: the folder 0700, the file 0600) the outbox at `path`."""
        try:
            if not path.exists():
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise OutboxError(f"outbox {path}: cannot open ({e})") from e
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")  # two first commands at once create it once
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            finally:
                db.execute("COMMIT")
            if version > SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox {path}: written by a newer version (schema {version}); "
                    "upgrade ceasefire to use it"
                )
        except sqlite3.DatabaseError as e:
            db.close()
            raise OutboxError(f"outbox {path}: not an outbox ({e})") from e
        except OutboxError:
            db.close()
            raise
        return cls(path, db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    def add(
        self,
        envelope: bytes,
        summary: str,
        *,
        files: Mapping[str, bytes] | None = None,
        server: str = "",
        replaces: int | None = None,
    ) -> Row:
        """Keep an envelope (pending), with its files; the row it already has if the same
        envelope was kept before (its state unchanged)."""
        digest = hashlib.sha256(envelope).hexdigest()
        parsed = dsse.Envelope.from_json(envelope)
        with self._transaction():
            found = self.db.execute(
                "SELECT id FROM statements WHERE envelope_sha256 = ?", (digest,)
            ).fetchone()
            if found is None:
                cur = self.db.execute(
                    "INSERT INTO statements (envelope, envelope_sha256, kind, summary, "
                    "signed_at_us, queued_at_us, server, state, replaces) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        envelope,
                        digest,
                        kind_name(parsed.payload_type),
                        summary,
                        signed_at_us(parsed),
                        now_us(),
                        server,
                        PENDING,
                        replaces,
                    ),
                )
                row_id = int(cur.lastrowid or 0)
                for name, data in (files or {}).items():
                    self.db.execute(
                        "INSERT INTO files (statement_id, name, data) VALUES (?, ?, ?)",
                        (row_id, name, data),
                    )
            else:
                row_id = int(found[0])
        return self.get(row_id)

    def logged(
        self, row_id: int, response: api.SubmitResponse | api.SubmitWithBlobsResponse
    ) -> Row:
        """The log's receipt for it."""
        r = response.receipt
        with self._transaction():
            self.db.execute(
                "UPDATE statements SET state = ?, attempts = attempts + 1, last_error = NULL, "
                "receipt_index = ?, receipt = ?, leaf_hash = ?, integrated_us = ?, duplicate = ? "
                "WHERE id = ?",
                (
                    LOGGED,
                    r.index,
                    response.signed_receipt,
                    r.leaf_hash,
                    to_us(r.integrated_time),
                    int(response.duplicate),
                    row_id,
                ),
            )
        return self.get(row_id)

    def record(self, row_id: int, outcome: api.SubmitResponse | Refused) -> Row:
        """What a Submit or SubmitBatch call answered for it: logged; refused, when the log
        judged it; else (the link went down) a try noted, the statement still pending."""
        if not isinstance(outcome, Refused):
            return self.logged(row_id, outcome)
        if outcome.code in JUDGED:
            return self.refused(row_id, outcome.describe())
        return self.failed(row_id, outcome.describe())

    def refused(self, row_id: int, reason: str) -> Row:
        """The log's refusal of it, with the reason."""
        with self._transaction():
            self.db.execute(
                "UPDATE statements SET state = ?, attempts = attempts + 1, last_error = ? "
                "WHERE id = ? AND state != ?",
                (REFUSED, reason, row_id, LOGGED),
            )
        return self.get(row_id)

    def failed(self, row_id: int, error: str) -> Row:
        """A try that got no judgment (the link was down): it stays pending."""
        with self._transaction():
            self.db.execute(
                "UPDATE statements SET attempts = attempts + 1, last_error = ? "
                "WHERE id = ? AND state = ?",
                (error, row_id, PENDING),
            )
        return self.get(row_id)

    def checked(self, row_ids: Sequence[int], size: int, root: bytes) -> None:
        """The receipts were found included in the checkpoint of `size` and `root`."""
        with self._transaction():
            self.db.executemany(
                "UPDATE statements SET checked_size = ?, checked_root = ?, checked_at_us = ? "
                "WHERE id = ?",
                [(size, root, now_us(), i) for i in row_ids],
            )

    # -- reading -------------------------------------------------------------------------

    def get(self, row_id: int) -> Row:
        found = self.db.execute(
            f"SELECT {_COLUMNS} FROM statements WHERE id = ?", (row_id,)
        ).fetchone()
        if found is None:
            raise OutboxError(f"outbox {self.path}: no statement #{row_id}")
        return self._row(found)

    def rows(self, state: str | None = None) -> list[Row]:
        """Oldest first (the order they were kept, which is the order they are sent)."""
        where, params = ("WHERE state = ?", (state,)) if state else ("", ())
        return [
            self._row(r)
            for r in self.db.execute(
                f"SELECT {_COLUMNS} FROM statements {where} ORDER BY id", params
            ).fetchall()
        ]

    def files(self, row_id: int) -> dict[str, bytes]:
        return {
            name: bytes(data)
            for name, data in self.db.execute(
                "SELECT name, data FROM files WHERE statement_id = ? ORDER BY name", (row_id,)
            )
        }

    def counts(self) -> dict[str, int]:
        got = dict(self.db.execute("SELECT state, count(*) FROM statements GROUP BY state"))
        return {s: int(got.get(s, 0)) for s in STATES}

    def _row(self, r: tuple[Any, ...]) -> Row:
        row_id = int(r[0])
        names = tuple(
            n for (n,) in self.db.execute(
                "SELECT name FROM files WHERE statement_id = ? ORDER BY name", (row_id,)
            )
        )  # fmt: skip
        later = self.db.execute(
            "SELECT max(id) FROM statements WHERE replaces = ?", (row_id,)
        ).fetchone()[0]
        return Row(
            row_id, bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
            r[12], None if r[13] is None else bytes(r[13]), None if r[14] is None else bytes(r[14]),
            r[15], bool(r[16]), r[17], None if r[18] is None else bytes(r[18]), r[19],
            names, later,
        )  # fmt: skip

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, t: type[BaseException] | None, *rest: object) -> None:
            self.db.execute("COMMIT" if t is None else "ROLLBACK")

    def _transaction(self) -> Outbox._Tx:
        return Outbox._Tx(self.db)


# -- sending ---------------------------------------------------------------------------


def judged(error: grpc.RpcError | Refused) -> bool:
    """The log answered about the statement itself (a refusal to keep)."""
    refused = error if isinstance(error, Refused) else Refused.from_error(error)
    return refused.code in JUDGED


def link_down(error: grpc.RpcError | Refused) -> bool:
    refused = error if isinstance(error, Refused) else Refused.from_error(error)
    return refused.code in LINK_DOWN


def send_one(box: Outbox, client: LedgerClient, row: Row) -> Row:
    """Submit one kept statement (with its files, if any) and keep the answer. A failure
    that is no judgment of the statement is raised (as grpc.RpcError) after the try is
    noted: the statement stays pending."""
    files = box.files(row.id)
    try:
        response: api.SubmitResponse | api.SubmitWithBlobsResponse = (
            client.submit_with_blobs(row.envelope, files) if files else client.submit(row.envelope)
        )
    except grpc.RpcError as e:
        refused = Refused.from_error(e)
        if refused.code in JUDGED:
            return box.refused(row.id, refused.describe())
        box.failed(row.id, refused.describe())
        raise
    return box.logged(row.id, response)


@dataclass
class SyncResult:
    sent: list[Row] = field(default_factory=list)  # the rows answered, as now kept
    stopped: str | None = None  # why it stopped with statements still pending
    link_down: bool = False  # ... because the log could not be reached

    @property
    def logged(self) -> list[Row]:
        return [r for r in self.sent if r.state == LOGGED]

    @property
    def refused(self) -> list[Row]:
        return [r for r in self.sent if r.state == REFUSED]


def sync(
    box: Outbox,
    client: LedgerClient,
    rows: Sequence[Row],
    *,
    progress: Callable[[int], None] = lambda done: None,
    max_batch: int | None = None,
) -> SyncResult:
    """Send `rows` (pending, oldest first) in order: runs of statements without files in
    SubmitBatch calls (`clients.client.batches`, which ends a call after a key change), a
    statement with files alone by SubmitWithBlobs. Each call's answers are committed
    before the next call, so a sync cut off anywhere resumes where it stopped. Stops at
    the first call that gets no judgment (the link is down, a certificate is missing)."""
    result = SyncResult()
    done = 0
    for group in _groups(box, rows, max_batch):
        try:
            if len(group) == 1 and box.files(group[0].id):
                result.sent.append(send_one(box, client, group[0]))
            else:
                result.sent.extend(_send_batch(box, client, group))
        except grpc.RpcError as e:
            refused = Refused.from_error(e)
            result.stopped = refused.describe()
            result.link_down = refused.code in LINK_DOWN
            return result
        done += len(group)
        progress(done)
    return result


def _groups(box: Outbox, rows: Sequence[Row], max_batch: int | None) -> Iterator[list[Row]]:
    """The calls to make, in order: each statement with files alone, the runs between in
    batches."""
    run: list[Row] = []

    def cut(run: list[Row]) -> Iterator[list[Row]]:
        at = 0
        limit = {"max_count": max_batch} if max_batch else {}
        for batch in batches([r.envelope for r in run], **limit):
            yield run[at : at + len(batch)]
            at += len(batch)

    for row in rows:
        if row.file_names:
            yield from cut(run)
            run = []
            yield [row]
        else:
            run.append(row)
    yield from cut(run)


def _send_batch(box: Outbox, client: LedgerClient, group: list[Row]) -> list[Row]:
    try:
        answers = client.submit_batch([r.envelope for r in group])
    except grpc.RpcError as e:
        if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return [send_one(box, client, r) for r in group]  # a server before batches
        refused = Refused.from_error(e)
        for r in group:
            box.failed(r.id, refused.describe())
        raise
    # One transaction per call would be faster; a row at a time is as safe (each answer
    # kept is final) and a batch is at most 256 rows.
    return [box.record(row.id, answer) for row, answer in zip(group, answers, strict=True)]


# -- signing again ---------------------------------------------------------------------


def resign(box: Outbox, row: Row, signing_keys: Sequence[SigningKey]) -> Row:
    """The statement of `row` signed again now: the same statement but for its created_time
    (the time observed, the place, everything else unchanged), kept pending as a new row
    that records the one it replaces. Only keys that signed the original may sign it."""
    old = dsse.Envelope.from_json(row.envelope)
    statement = statements.decode(old.payload_type, old.payload)
    if "created_time" not in statement.DESCRIPTOR.fields_by_name:
        raise OutboxError(f"#{row.id}: a {row.kind} has no signing time to renew")
    signers = old.signer_key_ids()
    strangers = [
        dsse.key_id(bytes(k.verify_key))
        for k in signing_keys
        if dsse.key_id(bytes(k.verify_key)) not in signers
    ]
    if strangers:
        raise OutboxError(
            f"#{row.id}: key {strangers[0]} did not sign it; sign it again with the keys that "
            f"did: {', '.join(sorted(signers))}"
        )
    statement.created_time.CopyFrom(to_timestamp(now_us()))  # type: ignore[attr-defined]
    envelope = dsse.sign(old.payload_type, statement.SerializeToString(), list(signing_keys))
    return box.add(
        envelope.to_json(),
        row.summary,
        files=box.files(row.id),
        server=row.server,
        replaces=row.id,
    )


# -- checking kept receipts ------------------------------------------------------------


class ReceiptError(Exception):
    """A kept receipt fails a check: evidence against the log, or an altered outbox."""


def open_receipt(row: Row, trust: TrustState) -> log_pb2.Receipt:
    """The row's signed receipt: signed by the log key, naming this log, this statement
    and the entry the row records (ReceiptError if not)."""
    assert row.receipt is not None
    try:
        signed = dsse.Envelope.from_json(row.receipt)
    except ValueError as e:
        raise ReceiptError(f"#{row.id}: the kept receipt is not a DSSE envelope ({e})") from e
    if signed.payload_type != statements.RECEIPT or not any(
        dsse.verify_signature(signed, s, trust.log_public_key) for s in signed.signatures
    ):
        raise ReceiptError(f"#{row.id}: the kept receipt is not signed by the log key")
    receipt = log_pb2.Receipt.FromString(signed.payload)
    envelope = dsse.Envelope.from_json(row.envelope)
    problems = []
    if receipt.origin != trust.origin:
        problems.append(f"it is for the log {receipt.origin!r}, not {trust.origin!r}")
    if receipt.statement_sha256 != envelope.statement_sha256():
        problems.append("it names another statement")
    if receipt.index != row.receipt_index or receipt.leaf_hash != row.leaf_hash:
        problems.append(
            f"it says entry {receipt.index}, the outbox says entry {row.receipt_index}"
            if receipt.index != row.receipt_index
            else "its leaf hash is not the one the outbox keeps"
        )
    if problems:
        raise ReceiptError(f"#{row.id}: the kept receipt " + "; ".join(problems))
    return receipt


@dataclass(frozen=True)
class Checked:
    row: Row
    ok: bool
    message: str
    index: int | None = None


def check_receipts(
    box: Outbox,
    client: LedgerClient,
    trust: TrustState,
    size: int,
    root: bytes,
    rows: Sequence[Row],
) -> list[Checked]:
    """Each logged row's receipt against the verified checkpoint (`size`, `root`): the
    receipt's signature and what it names, its entry's inclusion (the receipt's leaf hash
    at its index), and the consistency of the checkpoint it was last checked against
    with this one. Rows that pass record this checkpoint (checked_size, checked_root)."""
    results: list[Checked] = []
    consistent: dict[tuple[int, bytes], str | None] = {}  # per earlier checkpoint
    passed: list[int] = []
    for row in rows:
        try:
            receipt = open_receipt(row, trust)
        except ReceiptError as e:
            results.append(Checked(row, False, str(e), row.receipt_index))
            continue
        index = receipt.index
        if index >= size:
            results.append(
                Checked(
                    row, True, f"entry {index}: not yet in the checkpoint of size {size}", index
                )
            )
            continue
        try:
            proof = list(client.inclusion_proof(index, size).hashes)
            merkle.verify_inclusion(receipt.leaf_hash, index, size, proof, root)
        except merkle.ProofError as e:
            results.append(
                Checked(
                    row,
                    False,
                    f"entry {index} is not included in the signed checkpoint of size {size} "
                    f"although the log signed a receipt for it: {e}",
                    index,
                )
            )
            continue
        said = f"entry {index} included in the checkpoint of size {size}"
        if row.checked_size is not None and row.checked_root is not None:
            earlier = (row.checked_size, row.checked_root)
            if earlier not in consistent:
                consistent[earlier] = _consistency(client, earlier, size, root)
            problem = consistent[earlier]
            if problem is not None:
                results.append(Checked(row, False, f"entry {index}: {problem}", index))
                continue
            if row.checked_size > size:
                said += f" (older than the checkpoint of size {row.checked_size} checked before)"
                results.append(Checked(row, True, said, index))
                continue
            if row.checked_size < size:
                said += f", consistent with the one of size {row.checked_size} checked before"
        results.append(Checked(row, True, said, index))
        passed.append(row.id)
    if passed:
        box.checked(passed, size, root)
    return results


def _consistency(
    client: LedgerClient, earlier: tuple[int, bytes], size: int, root: bytes
) -> str | None:
    """None when the checkpoint checked before (`earlier`) and this one are one history;
    else what is wrong."""
    old_size, old_root = earlier
    if old_size == size:
        return None if old_root == root else (
            f"the checkpoint of size {size} has another root than the one checked before: "
            "two histories"
        )  # fmt: skip
    small, big = (old_size, size) if old_size < size else (size, old_size)
    small_root, big_root = (old_root, root) if old_size < size else (root, old_root)
    try:
        proof = list(client.consistency_proof(small, big).hashes)
    except grpc.RpcError as e:
        if old_size > size and isinstance(e, grpc.Call):
            return None  # the log (a lagging replica) has no tree that large: not checked
        raise
    try:
        merkle.verify_consistency(small, big, small_root, big_root, proof)
    except merkle.ProofError as e:
        return (
            f"the checkpoint of size {big} is not consistent with the one of size {small} "
            f"checked before: {e}"
        )
    return None
