"""Servers and databases for benchmarks/scale.py: a ledger founded as tests/conftest.py's
Parties found it, `ceasefire serve` run as the command line runs it (a process of its own),
PostgreSQL databases made for the run and dropped after it, and what the servers cost
(their memory, the database connections they open).

Everything started here is registered for cleanup: `cleanup()` stops every server and
drops every database still there, and runs at exit (atexit) if the caller did not.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from geo.borders import BorderDataset
from ledger import keys
from ledger.formats.log_entry import parse_entry
from ledger.log_key import LogKey
from ledger.service import initialize
from ledger.storage import LedgerStore, normalize_url
from tests.conftest import ORIGIN, Parties

ROOT = Path(__file__).resolve().parent.parent
SERVE_START_S = 120.0

_servers: list[Server] = []
_databases: list[PgDatabase] = []
_lock = threading.Lock()


def cleanup() -> None:
    """Stop every server started here and drop every database made here (idempotent)."""
    with _lock:
        servers, databases = list(_servers), list(_databases)
    for s in servers:
        s.stop()
    for d in databases:
        d.drop()


atexit.register(cleanup)


def found_ledger(db_url: str, home: Path, parties: Parties, borders: BorderDataset) -> str:
    """Write entry 0 (the trust root, signed by both authorities) and the log key file;
    return the trust root's SHA-256, which auditors pin."""
    home.mkdir(parents=True, exist_ok=True)
    store = LedgerStore.open(db_url)
    try:
        entry = initialize(
            store, parties.founding_envelope(borders), LogKey(ORIGIN, parties.log), borders
        )
    finally:
        store.close()
    keys.write_private(home / "log.key", parties.log)
    return hashlib.sha256(parse_entry(entry.entry).envelope).hexdigest()


def dead_servers() -> list[Server]:
    """Servers started here (and not stopped here) whose process has exited."""
    with _lock:
        return [s for s in _servers if s.proc is not None and s.proc.poll() is not None]


def log_errors(log_file: Path) -> Counter[str]:
    """The exceptions a server logged (the last line of each traceback), counted."""
    found: Counter[str] = Counter()
    if log_file.exists():
        for line in log_file.read_text(errors="replace").splitlines():
            m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.*)$", line)
            if m:
                found[f"{m.group(1)}: {m.group(2)[:160]}"] += 1
    return found


def ceasefire(*args: str) -> list[str]:
    """The `ceasefire` command as the venv runs it."""
    return [sys.executable, "-m", "clients.cli", *args]


def serve_help() -> str:
    out = subprocess.run(
        ceasefire("serve", "--help"), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return out.stdout


def serve_options(help_text: str) -> set[str]:
    """The long options `serve --help` lists in its usage line."""
    return set(re.findall(r"\[(--[a-z][a-z0-9-]*[a-z0-9])[\] ]", help_text))


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found


class Server:
    """`ceasefire serve` in a process of its own, on a free loopback port; stderr goes to
    `log_file` (kept with the run's files when asked to)."""

    def __init__(self, db_url: str, home: Path, name: str, extra: list[str]) -> None:
        self.db_url, self.home, self.name, self.extra = db_url, home, name, extra
        self.log_file = home / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        data_dir = self.home / f"{self.name}.data"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("a") as log:
            self.proc = subprocess.Popen(
                ceasefire(
                    "serve", "--db", self.db_url, "--log-key", str(self.home / "log.key"),
                    "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), *self.extra,
                ),
                cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        with _lock:
            _servers.append(self)
        found: list[str] = []
        seen: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:  # read to the end: the pipe must never fill
                seen.append(line)
                m = re.search(r"^serving .* on (\S+:\d+);", line)
                if m and not found:
                    found.append(m.group(1))

        threading.Thread(target=read, daemon=True, name=f"{self.name}-stdout").start()
        deadline = time.monotonic() + SERVE_START_S
        while not found:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"`ceasefire serve` ({self.name}) did not start: {''.join(seen)!r}\n"
                    f"its log ({self.log_file}) ends:\n{tail}"
                )
            time.sleep(0.05)
        self.address = found[0]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (it finishes in-flight work), SIGKILL after 30 s."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        with _lock:
            if self in _servers:
                _servers.remove(self)


class PostgresUnavailable(RuntimeError):
    pass


def admin_engine(admin_url: str) -> Engine:
    return create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")


def postgres_version(admin_url: str) -> tuple[int, str]:
    """(server_version_num, version()) or PostgresUnavailable with the reason."""
    try:
        engine = admin_engine(admin_url)
        with engine.connect() as conn:
            num = int(conn.execute(text("SHOW server_version_num")).scalar_one())
            full = str(conn.execute(text("SELECT version()")).scalar_one())
        engine.dispose()
    except Exception as e:
        raise PostgresUnavailable(f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    return num, full


@dataclass
class PgDatabase:
    """A database made for one run (cfl_bench_<random>), dropped by `drop()`."""

    admin_url: str
    name: str = field(default_factory=lambda: f"cfl_bench_{uuid.uuid4().hex[:12]}")
    dropped: bool = False

    def __post_init__(self) -> None:
        self.engine = admin_engine(self.admin_url)
        with self.engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        with _lock:
            _databases.append(self)

    @property
    def url(self) -> str:
        return (
            make_url(normalize_url(self.admin_url))
            .set(database=self.name)
            .render_as_string(hide_password=False)
        )

    def drop(self) -> None:
        if self.dropped:
            return
        with self.engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.engine.dispose()
        self.dropped = True
        with _lock:
            if self in _databases:
                _databases.remove(self)


class ConnectionCount:
    """Connections opened to one database while a block runs. PostgreSQL 14+: the
    `sessions` counter of pg_stat_database (read after a pause, as backends report their
    statistics when they go idle); before 14: pg_stat_activity sampled every 20 ms (a
    connection opened and closed between two samples is missed, so it is a lower bound)."""

    SETTLE_S = 1.5

    def __init__(self, db: PgDatabase, version_num: int) -> None:
        self.db = db
        self.method = (
            "pg_stat_database.sessions"
            if version_num >= 140000
            else "pg_stat_activity sampled every 20 ms (a lower bound)"
        )
        self.use_sessions = version_num >= 140000
        self.opened = 0
        self.peak_open = 0

    def _sessions(self) -> int:
        with self.db.engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            value = conn.execute(
                text("SELECT sessions FROM pg_stat_database WHERE datname = :d"),
                {"d": self.db.name},
            ).scalar_one()
        return int(value)

    def _backends(self, conn: Any) -> set[tuple[int, Any]]:
        rows = conn.execute(
            text(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE datname = :d "
                "AND pid <> pg_backend_pid()"
            ),
            {"d": self.db.name},
        ).all()
        return {(int(r[0]), r[1]) for r in rows}

    @contextlib.contextmanager
    def during(self) -> Iterator[None]:
        time.sleep(self.SETTLE_S)
        before = self._sessions() if self.use_sessions else 0
        stop = threading.Event()
        seen: set[tuple[int, Any]] = set()
        initial: set[tuple[int, Any]] = set()

        def sample() -> None:
            with self.db.engine.connect() as conn:
                initial.update(self._backends(conn))
                while not stop.wait(0.02):
                    now = self._backends(conn)
                    self.peak_open = max(self.peak_open, len(now))
                    seen.update(now)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join(timeout=10)
            if self.use_sessions:
                time.sleep(self.SETTLE_S)
                self.opened = self._sessions() - before
            else:
                self.opened = len(seen - initial)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
