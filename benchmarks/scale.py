"""A benchmark users would believe: the ledger as it is run (`ceasefire serve` in a process
of its own, clients in processes of their own, each with its own gRPC channel), fed
realistic reports, at ledger sizes growing by orders of magnitude; every figure beside the
one-core Ed25519 verify ceiling measured in the same run.

    benchmarks/run [--quick] [--sizes 1k,10k,100k] [--long] [--no-postgres] [--out FILE]

Measured (see README.md, "Development"):
- ceiling: PyNaCl VerifyKey.verify on a 1 KiB message, one core, ~1 s, best of 3;
- ingest (pre-signed reports, signing not timed) in windows at each size, unary Submit from
  16 client processes; at the first size also from 1 and 4, and SubmitBatch (64-256
  envelopes a call, cut further to fit the server's 64 KiB message) from 4 when the client
  has it, and unary from 16 over two `ceasefire serve` on the same SQLite file; the ledger
  grows between sizes through the faster of unary and batch at the first size;
- PostgreSQL: two `ceasefire serve` on one database, 16 client processes split across
  them, unary, and the connections the servers open during the window;
- the audit at the largest size: `ceasefire verify` against the server, `ceasefire
  export`, and `ceasefire verify --bundle`, each timed as a whole process;
- proofs (GetInclusionProof, GetConsistencyProof p50/p99), a Timeline call for the busiest
  day (1,000 incidents), and the server's current and peak RSS, at each size.

Prints a table (figure, value, against the ceiling, against the baseline, the issue's
target, pass/fail) and writes it, with the raw figures, as JSON (--out). Progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl.signing import SigningKey

from benchmarks import scale_clients as sc
from benchmarks.scale_reports import ReportPlan, Spec, shares
from clients.client import LedgerClient

# Client processes (spawn) import this module again: what only the coordinator needs (the
# border data set, SQL, the server's modules, pytest's conftest) is imported where used.
if TYPE_CHECKING:
    from benchmarks.scale_servers import Server
    from geo.borders import BorderDataset
    from tests.conftest import Parties

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_PG = os.environ.get("CEASEFIRE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MiB = 1024 * 1024
T0 = time.perf_counter()

# The targets.
INGEST_KEEP = 0.9  # ingest at the largest size / at the smallest
UNARY_SHARE = 0.10  # unary, 16 client processes, SQLite, of the ceiling
BATCH_SHARE = 0.25
PG_SHARE = 0.75  # PostgreSQL (two servers) of SQLite unary
PG_CONNECTIONS_PER_1000 = 1.0  # "no connection opened per entry": fewer than 1 per 1,000
ONLINE_AUDIT_SHARE = 0.15
BUNDLE_AUDIT_SHARE = 0.25
PROOF_P99_MS = 5.0
TIMELINE_MS = 100.0
RSS_GROWTH = 1.2
TARGET_SIZE = 100_000  # the size the proof, timeline and memory targets name


def progress(message: str) -> None:
    elapsed = int(time.perf_counter() - T0)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


def size_text(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def masked(url: str) -> str:
    """A database URL with its password (if any) hidden."""
    return re.sub(r"(//[^:/@]*):[^@/]*@", r"\1:***@", url)


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", part)
        if not m:
            raise argparse.ArgumentTypeError(f"not a size: {part!r} (e.g. 1k,10k,100k)")
        scale = {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()]
        sizes.append(int(float(m.group(1)) * scale))
    if sorted(set(sizes)) != sizes or sizes[0] < 100:
        raise argparse.ArgumentTypeError("sizes must grow, from at least 100")
    return sizes


# -- the ceiling -----------------------------------------------------------------------


def verify_ceiling(seconds: float = 1.0, rounds: int = 3) -> float:
    """Ed25519 verifications a second on one core (PyNaCl, a 1 KiB message): best of
    `rounds` tight loops of about `seconds`."""
    key = SigningKey.generate()
    signed = key.sign(os.urandom(1024))
    vk, message, signature = key.verify_key, signed.message, signed.signature
    best = 0.0
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while True:
            for _ in range(200):
                vk.verify(message, signature)
            n += 200
            took = time.perf_counter() - start
            if took >= seconds:
                break
        best = max(best, n / took)
    return best


# -- running client processes -------------------------------------------------------------


class ClientFailed(RuntimeError):
    pass


def collect(
    procs: list[Any], messages: Any, want: str, count: int, timeout_s: float
) -> dict[int, Any]:
    """Wait for `count` messages of kind `want` (one per worker); raise if a worker fails
    or dies without a word."""
    got: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        try:
            kind, worker, payload = messages.get(timeout=1.0)
        except queue.Empty:
            from benchmarks.scale_servers import dead_servers

            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise ClientFailed(f"a client process exited with {dead[0].exitcode}") from None
            for server in dead_servers():
                raise ClientFailed(
                    f"{server.name} exited with {server.proc and server.proc.returncode}; "
                    f"see {server.log_file} (--keep keeps it)"
                ) from None
            if time.monotonic() > deadline:
                raise ClientFailed(f"client processes took over {timeout_s:.0f} s") from None
            continue
        if kind == "failed":
            raise ClientFailed(f"client process {worker}: {payload}")
        if kind == want:
            got[worker] = payload
    return got


def start_all(procs: Sequence[Any]) -> None:
    """Start client processes that ignore SIGINT (they inherit it across exec): a Ctrl-C
    reaches the whole process group, and the coordinator, which has it, stops them."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            p.start()
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_all(procs: Sequence[Any], *, now: bool = False) -> None:
    """Wait for client processes to end (they end once they have reported), or with `now`
    (the run is interrupted or failed) terminate them first."""
    started = [p for p in procs if p.pid is not None]
    for p in started:
        if now and p.is_alive():
            p.terminate()
    for p in started:
        p.join(timeout=10 if now else 30)
        if p.is_alive():
            p.kill()
            p.join(timeout=10)


def chunks(specs: list[Spec], n: int) -> list[list[Spec]]:
    size = math.ceil(len(specs) / n)
    return [specs[i * size : (i + 1) * size] for i in range(n)]


def tree_size(address: str) -> int:
    with LedgerClient(address, timeout_s=60) as c:
        return c.checkpoint().tree_size


@dataclass
class Window:
    label: str
    clients: int
    batch: bool
    entries: int = 0
    elapsed_s: float = 0.0
    outcome: sc.Outcome = field(default_factory=sc.Outcome)
    size_before: int = 0

    @property
    def rate(self) -> float:
        return self.entries / self.elapsed_s if self.elapsed_s else 0.0

    def record(self) -> dict[str, Any]:
        lat = self.outcome.latencies_ms
        return {
            "label": self.label,
            "client_processes": self.clients,
            "batch": self.batch,
            "ledger_size_before": self.size_before,
            "entries": self.entries,
            "elapsed_s": round(self.elapsed_s, 3),
            "entries_per_s": round(self.rate, 1),
            "calls": self.outcome.calls,
            "call_latency_ms_p50": round(sc.median(lat), 2) if lat else None,
            "call_latency_ms_p99": round(sc.percentile(lat, 99), 2) if lat else None,
            "refused": dict(self.outcome.errors),
            "retries_after_unavailable": self.outcome.retries,
        }


def run_window(
    label: str,
    addresses: list[str],
    specs: list[Spec],
    clients: int,
    seeds: dict[str, bytes],
    *,
    batch: bool = False,
    seed: int = 0,
) -> Window:
    """`clients` processes (spread over `addresses`) submit `specs`, signed beforehand;
    the clock runs from the go signal to the last process's last answer."""
    w = Window(label, clients, batch)
    w.size_before = tree_size(addresses[0])
    messages = sc.SPAWN.Queue()
    go = sc.SPAWN.Event()
    procs = []
    for i, part in enumerate(chunks(specs, clients)):
        job = sc.WindowJob(addresses[i % len(addresses)], part, seeds, batch=batch, seed=seed + i)
        procs.append(sc.SPAWN.Process(target=sc.window, args=(job, messages, go, i), daemon=True))
    progress(f"{label}: starting {clients} client processes, signing {len(specs):,} reports")
    try:
        start_all(procs)
        collect(procs, messages, "ready", clients, timeout_s=600)
        start = time.perf_counter()
        go.set()
        done = collect(procs, messages, "done", clients, timeout_s=3600)
    except BaseException:
        stop_all(procs, now=True)
        raise
    stop_all(procs)
    for out in done.values():
        w.outcome.merge(out)
    w.elapsed_s = w.outcome.finished - start
    w.entries = tree_size(addresses[0]) - w.size_before
    refused = sum(w.outcome.errors.values())
    progress(
        f"{label}: {w.entries:,} entries in {w.elapsed_s:.2f} s = {w.rate:,.0f}/s"
        + (f"; refused {dict(w.outcome.errors)}" if refused else "")
    )
    return w


def seed_ledger(
    addresses: list[str],
    plan: ReportPlan,
    target: int,
    seeds: dict[str, bytes],
    *,
    batch: bool,
    notes: list[str],
) -> float:
    """Grow the ledger to `target` entries as fast as it goes (refused reports are
    replaced by new ones, three rounds at most); returns the seconds it took."""
    start = time.perf_counter()
    refused: Counter[str] = Counter()
    for _ in range(3):
        have = tree_size(addresses[0])
        if have >= target:
            break
        refused.update(_seed_round(addresses, plan.take(target - have), have, target, seeds,
                                   batch))  # fmt: skip
    have = tree_size(addresses[0])
    if refused:
        notes.append(f"seeding to {size_text(target)}: refused {dict(refused)}")
    if have < target:
        notes.append(f"seeding reached {have:,} entries, not {target:,}")
    return time.perf_counter() - start


def _seed_round(
    addresses: list[str],
    specs: list[Spec],
    have: int,
    target: int,
    seeds: dict[str, bytes],
    batch: bool,
) -> Counter[str]:
    processes = 2 * len(addresses) if batch else 4
    how = "SubmitBatch" if batch else "unary Submit, 4 threads each"
    progress(
        f"seeding {have:,} -> {target:,} entries ({how}, {processes} client processes over "
        f"{len(addresses)} server(s))"
    )
    messages = sc.SPAWN.Queue()
    done = sc.SPAWN.Value("q", 0)
    procs = [
        sc.SPAWN.Process(
            target=sc.seed,
            args=(sc.SeedJob(addresses[i % len(addresses)], part, seeds, batch), messages, done, i),
            daemon=True,
        )
        for i, part in enumerate(chunks(specs, processes))
    ]
    start = last = time.perf_counter()
    total = sc.Outcome()
    finished = 0
    try:
        start_all(procs)
        while finished < len(procs):
            try:
                kind, worker, payload = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise ClientFailed(
                        f"a seeding process exited with {dead[0].exitcode}"
                    ) from None
            else:
                if kind == "failed":
                    raise ClientFailed(f"seeding process {worker}: {payload}")
                total.merge(payload)
                finished += 1
            now = time.perf_counter()
            if now - last >= 15:
                last = now
                got = done.value
                rate = got / (now - start)
                eta = (len(specs) - got) / rate if rate else float("inf")
                progress(
                    f"  seeding: {have + got:,}/{target:,} entries, {rate:,.0f}/s, about "
                    f"{eta:,.0f} s left"
                )
    except BaseException:
        stop_all(procs, now=True)
        raise
    stop_all(procs)
    took = time.perf_counter() - start
    progress(f"  seeded {done.value:,} entries in {took:.0f} s ({done.value / took:,.0f}/s)")
    return total.errors


# -- measurements at a size -----------------------------------------------------------------


def probe(address: str, plan: ReportPlan, proofs: int, timeline_calls: int) -> dict[str, Any]:
    since, until, overlapping = plan.busiest_day()
    messages = sc.SPAWN.Queue()
    job = sc.ProbeJob(address, proofs, since, until, 1000, timeline_calls)
    p = sc.SPAWN.Process(target=sc.probe, args=(job, messages, 0), daemon=True)
    try:
        start_all([p])
        r: sc.ProbeResult = collect([p], messages, "done", 1, timeout_s=1800)[0]
    except BaseException:
        stop_all([p], now=True)
        raise
    stop_all([p])
    day = dt.datetime.fromtimestamp(since / 1e6, dt.UTC).date().isoformat()
    return {
        "tree_size": r.tree_size,
        "proof_calls": len(r.inclusion_ms),
        "inclusion_ms_p50": sc.median(r.inclusion_ms),
        "inclusion_ms_p99": sc.percentile(r.inclusion_ms, 99),
        "consistency_ms_p50": sc.median(r.consistency_ms),
        "consistency_ms_p99": sc.percentile(r.consistency_ms, 99),
        "timeline_day": day,
        "timeline_day_reports": overlapping,
        "timeline_returned": r.timeline_returned,
        "timeline_calls": len(r.timeline_ms),
        "timeline_ms_median": sc.median(r.timeline_ms),
        "timeline_ms_max": max(r.timeline_ms) if r.timeline_ms else float("nan"),
    }


def timed_command(args: list[str], label: str, timeout_s: float) -> tuple[float, str]:
    """Run a `ceasefire` command as a process of its own; (seconds, stdout). Its progress
    lines (stderr) are relayed every 15 s or so."""
    progress(f"{label}: ceasefire {' '.join(args[3:])}")
    with tempfile.TemporaryFile("w+") as stdout:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        tail: list[str] = []
        last = start
        try:
            for line in proc.stderr:
                tail = [*tail[-20:], line]
                now = time.perf_counter()
                if now - last >= 15:
                    last = now
                    progress(f"  {label}: {line.strip()}")
                if now - start > timeout_s:
                    raise TimeoutError(f"{label} took over {timeout_s:.0f} s")
            code = proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        took = time.perf_counter() - start
        stdout.seek(0)
        out = stdout.read()
    if code != 0:
        raise RuntimeError(f"{label} failed ({code}):\n{out}{''.join(tail)}")
    return took, out


# -- the report -------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    vs_ceiling: str = ""
    vs_baseline: str = ""
    target: str = ""
    result: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def verdict(ok: bool | None, note: str = "") -> str:
    if ok is None:
        return "n/a"
    return ("pass" if ok else "FAIL") + (f" ({note})" if note else "")


def share(rate: float, ceiling: float) -> str:
    return f"{rate / ceiling:.1%}" if rate else ""


def verifies(ms: float, ceiling: float) -> str:
    """A latency as the verifications one core does meanwhile."""
    return f"= {ms / 1000 * ceiling:,.0f} verifies" if math.isfinite(ms) else ""


def rate_text(rate: float) -> str:
    return f"{rate:,.0f} entries/s"


def table(rows: Sequence[Row]) -> str:
    head = Row("figure", "value", "vs ceiling", "vs baseline", "target", "result")
    cols = ("figure", "value", "vs_ceiling", "vs_baseline", "target", "result")
    widths = [max(len(getattr(r, c)) for r in [head, *rows]) for c in cols]
    lines = []
    for i, r in enumerate([head, *rows]):
        cells = [getattr(r, c).ljust(w) for c, w in zip(cols, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Settings:
    sizes: list[int]
    window: int
    window_small: int
    proofs: int
    timeline_calls: int
    postgres: bool
    pg_url: str
    workers: int | None
    seed: int


@dataclass
class Run:
    settings: Settings
    ceiling: float
    home: Path
    batch: bool
    serve_extra: list[str]
    notes: list[str] = field(default_factory=list)
    windows: dict[str, Window] = field(default_factory=dict)
    probes: dict[int, dict[str, Any]] = field(default_factory=dict)
    rss: dict[int, dict[str, int]] = field(default_factory=dict)
    seeding_s: dict[int, float] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    drawn: dict[str, float] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)
    error: str = ""
    seed_batch: bool = False  # seed through SubmitBatch (else unary calls)

    def __post_init__(self) -> None:
        self.seed_batch = self.batch


def party_seeds(parties: Parties) -> dict[str, bytes]:
    return {"ARM": bytes(parties.arm_monitor), "AZE": bytes(parties.aze_monitor)}


def sqlite_phase(run: Run, parties: Parties, borders: BorderDataset) -> None:
    from benchmarks import scale_servers as ss

    s = run.settings
    home = run.home / "sqlite"
    db_url = f"sqlite:///{home / 'ledger.db'}"
    digest = ss.found_ledger(db_url, home, parties, borders)
    server = ss.Server(db_url, home, "serve-sqlite", run.serve_extra)
    run.logs.append(server.log_file)
    server.start()
    progress(f"SQLite: ceasefire serve (pid {server.pid}) on {server.address}")
    seeds = party_seeds(parties)
    plan = ReportPlan(borders, s.seed)
    address = [server.address]
    try:
        for k, size in enumerate(s.sizes):
            label = size_text(size)
            run.seeding_s[size] = seed_ledger(
                address, plan, size, seeds, batch=run.seed_batch, notes=run.notes
            )
            run.windows[f"unary16@{label}"] = run_window(
                f"SQLite unary, 16 clients, at {label}", address, plan.take(s.window), 16, seeds
            )
            if k == 0:
                run.windows["unary4"] = run_window(
                    f"SQLite unary, 4 clients, at {label}", address,
                    plan.take(s.window_small), 4, seeds,
                )  # fmt: skip
                run.windows["unary1"] = run_window(
                    f"SQLite unary, 1 client, at {label}", address,
                    plan.take(max(s.window_small // 2, 100)), 1, seeds,
                )  # fmt: skip
                if run.batch:
                    try:
                        run.windows["batch4"] = run_window(
                            f"SQLite SubmitBatch, 4 clients, at {label}", address,
                            plan.take(s.window), 4, seeds, batch=True,
                        )  # fmt: skip
                    except ClientFailed as e:
                        run.notes.append(f"batch window failed: {e}")
                run.windows["unary16x2"] = two_servers_window(run, server, home, plan, seeds)
                # Seed the rest through whichever path was faster here.
                batch4, unary16 = run.windows.get("batch4"), run.windows[f"unary16@{label}"]
                run.seed_batch = batch4 is not None and batch4.rate > unary16.rate
                progress(f"seeding from here on: {'SubmitBatch' if run.seed_batch else 'unary'}")
            progress(f"at {label}: proofs and timeline")
            run.probes[size] = probe(server.address, plan, s.proofs, s.timeline_calls)
            run.rss[size] = ss.memory(server.pid)
            p = run.probes[size]
            progress(
                f"at {label} (tree {p['tree_size']:,}): inclusion p99 "
                f"{p['inclusion_ms_p99']:.2f} ms, consistency p99 {p['consistency_ms_p99']:.2f} "
                f"ms, timeline {p['timeline_ms_median']:.1f} ms for {p['timeline_returned']} "
                f"incidents; server RSS {run.rss[size]['VmRSS'] / MiB:.0f} MiB "
                f"(peak {run.rss[size]['VmHWM'] / MiB:.0f} MiB)"
            )
        run.drawn = shares(plan.drawn)
        run.drawn["reports_drawn"] = len(plan.drawn)
        audit_phase(run, server, digest)
    finally:
        server.stop()


def two_servers_window(
    run: Run, server: Server, home: Path, plan: ReportPlan, seeds: dict[str, bytes]
) -> Window:
    """16 clients over `server` and a second `ceasefire serve` on the same SQLite file:
    replicas sequence in turn through the database's write lock, but each checks the
    submissions it takes (signatures, rules, geo facts) in its own process, on its own
    core."""
    from benchmarks import scale_servers as ss

    second = ss.Server(server.db_url, home, "serve-sqlite-b", run.serve_extra)
    run.logs.append(second.log_file)
    second.start()
    try:
        label = size_text(run.settings.sizes[0])
        return run_window(
            f"SQLite unary, 16 clients over 2 servers on one file, at {label}",
            [server.address, second.address], plan.take(run.settings.window), 16, seeds,
        )  # fmt: skip
    finally:
        second.stop()


def audit_phase(run: Run, server: Server, digest: str) -> None:
    from benchmarks import scale_servers as ss

    size = tree_size(server.address)
    bundle = run.home / "ledger.bundle"
    hours = 6 * 3600.0
    online_s, out = timed_command(
        ss.ceasefire("verify", "--server", server.address, "--trust-root", digest),
        "online audit",
        hours,
    )
    if f"OK: {size} entries" not in out:
        run.notes.append(f"online audit said: {out.strip()[:200]}")
    export_s, _ = timed_command(
        ss.ceasefire("export", "--server", server.address, "--out", str(bundle)), "export", hours
    )
    bundle_s, out = timed_command(
        ss.ceasefire("verify", "--bundle", str(bundle), "--trust-root", digest),
        "bundle audit",
        hours,
    )
    if f"OK: {size} entries" not in out:
        run.notes.append(f"bundle audit said: {out.strip()[:200]}")
    run.audit = {
        "entries": size,
        "online_s": online_s,
        "export_s": export_s,
        "bundle_s": bundle_s,
        "bundle_bytes": bundle.stat().st_size,
    }
    bundle.unlink()
    progress(
        f"audit of {size:,} entries: online {online_s:.1f} s ({size / online_s:,.0f}/s), "
        f"export {export_s:.1f} s, bundle {bundle_s:.1f} s ({size / bundle_s:,.0f}/s)"
    )


def postgres_phase(run: Run, borders: BorderDataset, version_num: int) -> None:
    from benchmarks import scale_servers as ss
    from tests.conftest import Parties

    s = run.settings
    size = s.sizes[0]
    db = ss.PgDatabase(s.pg_url)
    servers: list[Server] = []
    try:
        home = run.home / "postgres"
        parties = Parties()
        digest = ss.found_ledger(db.url, home, parties, borders)
        for name in ("serve-pg-a", "serve-pg-b"):
            server = ss.Server(db.url, home, name, run.serve_extra)
            run.logs.append(server.log_file)
            server.start()
            servers.append(server)
        addresses = [x.address for x in servers]
        progress(
            f"PostgreSQL: database {db.name}, two ceasefire serve (pids "
            f"{', '.join(str(x.pid) for x in servers)}) on {', '.join(addresses)}"
        )
        seeds = party_seeds(parties)
        plan = ReportPlan(borders, s.seed + 1)
        seed_ledger(addresses, plan, size, seeds, batch=run.seed_batch, notes=run.notes)
        counter = ss.ConnectionCount(db, version_num)
        with counter.during():
            w = run_window(
                f"PostgreSQL unary, 16 clients over 2 servers, at {size_text(size)}",
                addresses, plan.take(s.window), 16, seeds,
            )  # fmt: skip
        run.windows["pg16"] = w
        run.postgres = {
            "database": db.name,
            "connections_opened": counter.opened,
            "connections_method": counter.method,
            "connections_open_peak": counter.peak_open,
            "trust_root": digest,
            "rss": {x.name: ss.memory(x.pid) for x in servers},
        }
        progress(
            f"PostgreSQL: {counter.opened} connections opened during the window "
            f"({counter.method}); at most {counter.peak_open} open"
        )
    finally:
        for x in servers:
            x.stop()
        db.drop()


def build_rows(run: Run) -> list[Row]:
    s, c = run.settings, run.ceiling
    rows = [Row("Ed25519 verify ceiling, one core (PyNaCl, 1 KiB)", f"{c:,.0f}/s", "100%")]
    first, last = s.sizes[0], s.sizes[-1]
    f, la = size_text(first), size_text(last)
    base16 = run.windows.get(f"unary16@{f}")

    def ingest(w: Window | None, figure: str, target: str = "", ok: bool | None = None) -> None:
        if w is None:
            return
        rows.append(Row(figure, rate_text(w.rate), share(w.rate, c), "", target,
                        verdict(ok) if target else "", w.record()))  # fmt: skip

    ingest(run.windows.get("unary1"), f"SQLite unary, 1 client process, at {f}")
    ingest(run.windows.get("unary4"), f"SQLite unary, 4 client processes, at {f}")
    if base16 is not None:
        ok = base16.rate >= UNARY_SHARE * c
        ingest(base16, f"SQLite unary, 16 client processes, at {f}",
               f">= {UNARY_SHARE:.0%} of ceiling", ok)  # fmt: skip
    two = run.windows.get("unary16x2")
    if two is not None and base16 is not None:
        ratio = two.rate / base16.rate if base16.rate else 0.0
        rows.append(Row(f"SQLite unary, 2 servers on one file, 16 processes, at {f}",
                        rate_text(two.rate), share(two.rate, c), f"{ratio:.2f}x 1 server",
                        "", "", two.record()))  # fmt: skip
    batch = run.windows.get("batch4")
    if batch is not None:
        per_call = batch.outcome.sent / batch.outcome.calls if batch.outcome.calls else 0
        ingest(batch, f"SQLite SubmitBatch ({per_call:.0f} a call), 4 processes, at {f}",
               f">= {BATCH_SHARE:.0%} of ceiling", batch.rate >= BATCH_SHARE * c)  # fmt: skip
    else:
        why = "the batch window failed (see notes)" if run.batch else "no batch RPC"
        rows.append(Row(f"SQLite SubmitBatch, 4 processes, at {f}", f"n/a ({why})", "", "",
                        f">= {BATCH_SHARE:.0%} of ceiling", "n/a"))  # fmt: skip
    for size in s.sizes[1:]:
        w = run.windows.get(f"unary16@{size_text(size)}")
        if w is None or base16 is None:
            continue
        ratio = w.rate / base16.rate if base16.rate else 0.0
        last_one = size == last
        target = f">= {INGEST_KEEP}x the rate at {f}" if last_one else ""
        rows.append(Row(
            f"SQLite unary, 16 processes, at {size_text(size)}", rate_text(w.rate),
            share(w.rate, c), f"{ratio:.2f}x at {f}", target,
            verdict(ratio >= INGEST_KEEP, "" if last == TARGET_SIZE else f"{la}, not 100k")
            if last_one else "",
            w.record(),
        ))  # fmt: skip
    pg = run.windows.get("pg16")
    if pg is not None and base16 is not None:
        ratio = pg.rate / base16.rate if base16.rate else 0.0
        rows.append(Row(f"PostgreSQL unary, 2 servers, 16 processes, at {f}", rate_text(pg.rate),
                        share(pg.rate, c), f"{ratio:.2f}x SQLite",
                        f">= {PG_SHARE}x SQLite unary", verdict(ratio >= PG_SHARE),
                        pg.record()))  # fmt: skip
        opened = run.postgres["connections_opened"]
        per = opened / pg.entries * 1000 if pg.entries else float("nan")
        rows.append(Row("PostgreSQL connections opened per 1,000 entries",
                        f"{per:.1f} ({opened} in the window)", "", "",
                        f"< {PG_CONNECTIONS_PER_1000:g} (none per entry)",
                        verdict(per < PG_CONNECTIONS_PER_1000), dict(run.postgres)))  # fmt: skip
    elif not s.postgres:
        rows.append(Row("PostgreSQL unary, 2 servers", "skipped (--no-postgres)", "", "",
                        f">= {PG_SHARE}x SQLite unary", "n/a"))  # fmt: skip
    if run.audit:
        a = run.audit
        n = a["entries"]
        online, bundle = n / a["online_s"], n / a["bundle_s"]
        rows.append(Row(f"online audit (ceasefire verify), {size_text(n)} entries",
                        f"{rate_text(online)} ({a['online_s']:.1f} s)", share(online, c), "",
                        f">= {ONLINE_AUDIT_SHARE:.0%} of ceiling",
                        verdict(online >= ONLINE_AUDIT_SHARE * c), a))  # fmt: skip
        rows.append(Row(f"export (ceasefire export), {size_text(n)} entries",
                        f"{rate_text(n / a['export_s'])} ({a['export_s']:.1f} s)",
                        share(n / a["export_s"], c)))  # fmt: skip
        rows.append(Row(f"bundle audit (verify --bundle), {size_text(n)} entries",
                        f"{rate_text(bundle)} ({a['bundle_s']:.1f} s)", share(bundle, c), "",
                        f">= {BUNDLE_AUDIT_SHARE:.0%} of ceiling",
                        verdict(bundle >= BUNDLE_AUDIT_SHARE * c)))  # fmt: skip
    note = "" if last == TARGET_SIZE else f"{la}, not 100k"
    base = run.probes.get(first)
    for size in s.sizes:
        p = run.probes.get(size)
        if p is None or base is None:
            continue
        at = f"at {size_text(size)}"
        for kind, name in (
            ("inclusion", "GetInclusionProof"),
            ("consistency", "GetConsistencyProof"),
        ):
            p50, p99 = p[f"{kind}_ms_p50"], p[f"{kind}_ms_p99"]
            last_one = size == last
            rows.append(Row(
                f"{name} p50/p99, {at}", f"{p50:.2f} / {p99:.2f} ms", verifies(p99, c),
                f"p99 {p99 / base[f'{kind}_ms_p99']:.2f}x at {f}" if size != first else "",
                f"p99 <= {PROOF_P99_MS:g} ms at 100k" if last_one else "",
                verdict(p99 <= PROOF_P99_MS, note) if last_one else "",
                p,
            ))  # fmt: skip
        ms = p["timeline_ms_median"]
        last_one = size == last
        rows.append(Row(
            f"Timeline, one day ({p['timeline_returned']:,} incidents), {at}",
            f"{ms:.1f} ms", verifies(ms, c),
            f"{ms / base['timeline_ms_median']:.2f}x at {f}" if size != first else "",
            f"1,000 incidents <= {TIMELINE_MS:g} ms at 100k" if last_one else "",
            verdict(ms <= TIMELINE_MS,
                    ", ".join(x for x in (note, "" if p["timeline_returned"] >= 1000
                                          else f"{p['timeline_returned']} incidents") if x))
            if last_one else "",
        ))  # fmt: skip
    for k, size in enumerate(s.sizes):
        m = run.rss.get(size)
        if m is None:
            continue
        prev = run.rss.get(s.sizes[k - 1]) if k else None
        last_one = size == last and prev is not None
        ratio = m["VmHWM"] / prev["VmHWM"] if prev else float("nan")
        rows.append(Row(
            f"server RSS now / peak, at {size_text(size)}",
            f"{m['VmRSS'] / MiB:.0f} / {m['VmHWM'] / MiB:.0f} MiB", "",
            f"peak {ratio:.2f}x at {size_text(s.sizes[k - 1])}" if prev else "",
            f"peak <= {RSS_GROWTH}x at 10k (at 100k)" if last_one else "",
            verdict(ratio <= RSS_GROWTH,
                    "" if (last, s.sizes[k - 1]) == (TARGET_SIZE, 10_000)
                    else f"{la} vs {size_text(s.sizes[k - 1])}") if last_one else "",
            m,
        ))  # fmt: skip
    return rows


def features() -> tuple[bool, set[str]]:
    from benchmarks import scale_servers as ss

    return sc.has_batch(), ss.serve_options(ss.serve_help())


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import scale_servers as ss
    from geo.borders import load_default
    from tests.conftest import Parties

    ap = argparse.ArgumentParser(
        prog="benchmarks/run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--sizes", type=parse_sizes, help="ledger sizes (default 1k,10k,100k)")
    ap.add_argument("--long", action="store_true", help="add 1M to the sizes (hours)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: sizes 1k,5k, small windows")
    ap.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL phase")
    ap.add_argument(
        "--pg",
        default=DEFAULT_PG,
        help=f"PostgreSQL admin URL (default {DEFAULT_PG}"
        ", env CEASEFIRE_TEST_PG); a database cfl_bench_<random> is made and dropped",
    )
    ap.add_argument("--window", type=int, help="entries in each 16-client window (default 2000)")
    ap.add_argument("--proofs", type=int, help="proof calls of each kind at each size (300)")
    ap.add_argument(
        "--workers",
        type=int,
        help="passed to `ceasefire serve --workers` if serve has it (default: "
        "serve's own default, as users run it)",
    )
    ap.add_argument("--seed", type=int, default=7, help="seed for the reports drawn")
    ap.add_argument(
        "--out", type=Path, help="JSON results (default benchmarks/results/scale-<timestamp>.json)"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        help="where the ledgers go (default: a temporary folder, removed at the end)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the ledgers and server logs")
    args = ap.parse_args(argv)  # fmt: skip

    sizes = args.sizes or ([1000, 5000] if args.quick else [1000, 10_000, 100_000])
    if args.long and 1_000_000 not in sizes:
        sizes = sorted({*sizes, 1_000_000})
    window = args.window or (500 if args.quick else 2000)
    settings = Settings(
        sizes=sizes,
        window=window,
        window_small=max(window // 2, 200) if args.quick else 1000,
        proofs=args.proofs or (100 if args.quick else 300),
        timeline_calls=3 if args.quick else 7,
        postgres=not args.no_postgres,
        pg_url=args.pg,
        workers=args.workers,
        seed=args.seed,
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path: Path = args.out or ROOT / "benchmarks" / "results" / f"scale-{stamp}.json"

    pg_version: tuple[int, str] | None = None
    if settings.postgres:
        try:
            pg_version = ss.postgres_version(settings.pg_url)
        except ss.PostgresUnavailable as e:
            print(
                f"benchmarks/run: PostgreSQL is not reachable at {masked(settings.pg_url)}: {e}\n"
                "Start it, point --pg (or CEASEFIRE_TEST_PG) at it, or skip that phase with "
                "--no-postgres.",
                file=sys.stderr,
            )
            return 2

    # SIGTERM/SIGHUP end the run like Ctrl-C: through the finally blocks and atexit.
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)

    load_start = os.getloadavg()
    progress("measuring the one-core Ed25519 verify ceiling (3 x 1 s)")
    ceiling = verify_ceiling()
    progress(f"ceiling: {ceiling:,.0f} verifies/s on one core; load average {load_start[0]:.1f}")
    batch, options = features()
    serve_extra: list[str] = []
    if settings.workers is not None:
        if "--workers" in options:
            serve_extra += ["--workers", str(settings.workers)]
        else:
            print("benchmarks/run: this `ceasefire serve` has no --workers", file=sys.stderr)
            return 2
    progress(
        f"batch RPC: {'LedgerClient.submit_batch' if batch else 'none (n/a)'}; serve options "
        f"beyond the baseline: {', '.join(sorted(options - BASE_SERVE_OPTIONS)) or 'none'}"
    )

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="cfl-scale-", dir=args.workdir))
    run = Run(settings, ceiling, home, batch, serve_extra)
    borders = load_default()
    started = time.perf_counter()
    try:
        sqlite_phase(run, Parties(), borders)
        if settings.postgres:
            assert pg_version is not None
            postgres_phase(run, borders, pg_version[0])
    except KeyboardInterrupt:
        ss.cleanup()
        print("benchmarks/run: interrupted; servers stopped, databases dropped", file=sys.stderr)
        return 130
    except (ClientFailed, RuntimeError, TimeoutError, OSError) as e:
        run.error = f"{type(e).__name__}: {e}"
        print(f"benchmarks/run: stopped early: {run.error}", file=sys.stderr)
    finally:
        ss.cleanup()
        for log in run.logs:
            for line, n in ss.log_errors(log).most_common(5):
                run.notes.append(f"{log.stem} logged {n} x {line}")
        if args.keep:
            progress(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    total = time.perf_counter() - started
    ceiling_end = verify_ceiling()
    load_end = os.getloadavg()
    cpus = os.cpu_count() or 1
    if abs(ceiling_end - ceiling) > 0.15 * ceiling:
        run.notes.append(
            f"the ceiling measured again at the end: {ceiling_end:,.0f}/s "
            f"({ceiling_end / ceiling - 1:+.0%}): the machine's speed varied during the run"
        )
    if max(load_start[0], load_end[0]) > cpus / 2:
        run.notes.append(
            f"the machine was busy with other work: load average {load_start[0]:.1f} at the "
            f"start, {load_end[0]:.1f} at the end, on {cpus} CPUs; figures are lower than on "
            "an idle machine"
        )
    for w in run.windows.values():
        if w.outcome.errors:
            run.notes.append(f"{w.label}: refused {dict(w.outcome.errors)}")
    rows = build_rows(run)
    print(table(rows))
    for note in run.notes:
        print(f"note: {note}")
    if run.error:
        print(f"stopped early: {run.error}")
    print(f"total {total / 60:.1f} min; ceiling measured in this run; JSON: {out_path}")
    doc = {
        "benchmark": "benchmarks/scale.py",
        "started_utc": stamp,
        "total_s": round(total, 1),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "postgres": pg_version[1] if pg_version else None,
        },
        "settings": {**settings.__dict__, "pg_url": masked(args.pg)},
        "features": {
            "batch_rpc": batch,
            "seeded_through_batch_after_first_size": run.seed_batch,
            "serve_options": sorted(options),
            "serve_extra": serve_extra,
        },
        "ceiling_verifies_per_s": round(ceiling, 1),
        "ceiling_at_end_verifies_per_s": round(ceiling_end, 1),
        "load_average": {"start": load_start, "end": load_end},
        "reports": run.drawn,
        "seeding_s": {size_text(k): round(v, 1) for k, v in run.seeding_s.items()},
        "rows": [r.__dict__ for r in rows],
        "notes": run.notes,
        "error": run.error or None,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_finite(doc), indent=2, default=_json_default) + "\n")
    return 1 if run.error else 0


def _json_default(value: object) -> object:
    if isinstance(value, Counter):
        return dict(value)
    return str(value)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be taken is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# `ceasefire serve`'s options before issue 12, to name what is new.
BASE_SERVE_OPTIONS = {
    "--help", "--data-dir", "--db", "--log-key", "--listen", "--border-data", "--linger-ms",
    "--bootstrap", "--tls-cert", "--tls-key", "--tls-client-ca", "--writes-need-client-cert",
    "--listen-writers",
}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
