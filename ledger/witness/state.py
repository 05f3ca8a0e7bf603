"""What a witness remembers, per log origin: the latest checkpoint it cosigned (size, root
hash, and the signed note with the log's signatures and its own cosignature). And, as evidence
of misbehaviour, the last validly signed checkpoints it refused as inconsistent.

SQLite in WAL mode, synchronous=FULL: a cosignature is returned only after the state it
vouches for is on disk. Checking a request against the stored checkpoint and storing the new
one happen in one BEGIN IMMEDIATE transaction (the write lock is taken before the read), so
two requests can never both pass the check against the same stored size, and the stored size
can never go back (the race tlog-witness describes).
"""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REFUSALS_KEPT", "LogState", "Refusal", "StateError", "Transaction", "WitnessState"]

REFUSALS_KEPT = 1000
_BUSY_TIMEOUT_S = 30.0
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root_hash BLOB NOT NULL CHECK (length(root_hash) = 32),
    checkpoint TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
"""


class StateError(RuntimeError):
    """The state file cannot be used, or a write would break the witness's promises."""


@dataclass(frozen=True)
class LogState:
    origin: str
    size: int
    root_hash: bytes
    # The signed note: checkpoint text, the log signatures verified, the witness cosignature.
    checkpoint: str
    cosigned_at: int  # POSIX seconds: the cosignature's timestamp


@dataclass(frozen=True)
class Refusal:
    id: int
    origin: str
    received_at: int  # POSIX seconds
    status: int
    reason: str
    body: bytes  # the request as received: the log's signed checkpoint and the proof


class Transaction:
    """One origin's check-and-update, holding the database's write lock."""

    def __init__(self, conn: sqlite3.Connection, origin: str) -> None:
        self._conn = conn
        self.origin = origin
        self.current = _get(conn, origin)

    def store(self, new: LogState) -> None:
        if new.origin != self.origin:
            raise StateError(f"transaction is for {self.origin!r}, not {new.origin!r}")
        # Backstop for the rules in server.py: the stored size never goes back.
        if self.current is not None and new.size < self.current.size:
            raise StateError(f"{new.origin}: size {new.size} below stored {self.current.size}")
        self._conn.execute(
            "INSERT INTO logs (origin, size, root_hash, checkpoint, cosigned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
            "root_hash = excluded.root_hash, checkpoint = excluded.checkpoint, "
            "cosigned_at = excluded.cosigned_at",
            (new.origin, new.size, new.root_hash, new.checkpoint, new.cosigned_at),
        )
        self.current = new

    def refuse(self, received_at: int, status: int, reason: str, body: bytes) -> None:
        """Keep a refused, validly signed request; only the last REFUSALS_KEPT are kept."""
        cur = self._conn.execute(
            "INSERT INTO refusals (origin, received_at, status, reason, body) "
            "VALUES (?, ?, ?, ?, ?)",
            (self.origin, received_at, status, reason, body),
        )
        assert cur.lastrowid is not None
        self._conn.execute("DELETE FROM refusals WHERE id <= ?", (cur.lastrowid - REFUSALS_KEPT,))


def _log_state(row: tuple[str, int, bytes, str, int]) -> LogState:
    return LogState(row[0], row[1], bytes(row[2]), row[3], row[4])


def _get(conn: sqlite3.Connection, origin: str) -> LogState | None:
    row = conn.execute(
        "SELECT origin, size, root_hash, checkpoint, cosigned_at FROM logs WHERE origin = ?",
        (origin,),
    ).fetchone()
    return None if row is None else _log_state(row)


class WitnessState:
    """The state file. Safe to share between threads: each operation borrows a connection."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StateError(f"{self.path}: no witness state file")
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._closed = False
        with self._connection() as conn:
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            except sqlite3.DatabaseError as e:
                raise StateError(f"{self.path}: not a witness state file ({e})") from None
            if version not in (0, _SCHEMA_VERSION):
                raise StateError(f"{self.path}: witness state version {version} is not known")
            if version == 0:
                if not create or tables:  # never write into some other database
                    raise StateError(f"{self.path}: not a witness state file")
                conn.execute("PRAGMA journal_mode = WAL")  # kept in the file from now on
                conn.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;"
                )

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # autocommit: transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # borrowed by one thread at a time from the pool
            )
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:
            raise StateError(f"{self.path}: cannot open the witness state ({e})") from e
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StateError("witness state is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # its state is unknown: do not reuse it
            raise
        if self._closed:
            conn.close()
        else:
            self._idle.put(conn)

    @contextmanager
    def transaction(self, origin: str) -> Iterator[Transaction]:
        """Check and update one origin atomically: committed if the block returns, rolled
        back if it raises."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn, origin)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def get(self, origin: str) -> LogState | None:
        with self._connection() as conn:
            return _get(conn, origin)

    def logs(self) -> list[LogState]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT origin, size, root_hash, checkpoint, cosigned_at FROM logs ORDER BY origin"
            ).fetchall()
        return [_log_state(r) for r in rows]

    def refusals(self, limit: int = REFUSALS_KEPT) -> list[Refusal]:
        """The latest refused requests, newest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, origin, received_at, status, reason, body FROM refusals "
                "ORDER BY id DESC LIMIT ?",
                (max(0, min(limit, REFUSALS_KEPT)),),
            ).fetchall()
        return [Refusal(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows]

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
