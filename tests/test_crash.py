"""Crash consistency: the server is SIGKILLed again and again while clients submit from
several threads. Every acknowledged statement must be in the log at the index its receipt
names, the log must be a valid extension of every checkpoint it served, and the audit must
pass. CI kills it a few times on each database; CEASEFIRE_CRASH_LONG=1 kills it 100 times
on each (several minutes).

The server is a real `ceasefire serve` process (tests.test_cli.Server): it is SIGKILLed."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import grpc

from clients.cli import main
from clients.client import LedgerClient
from clients.retrying import RetryPolicy
from ledger import keys
from ledger.formats import merkle
from ledger.verifier import open_checkpoint, replay
from tests.reports import report, signed
from tests.test_cli import Server, initialised, workdir  # noqa: F401 (fixtures)

KILLS = int(os.environ.get("CEASEFIRE_CRASH_KILLS") or 0) or (
    100 if os.environ.get("CEASEFIRE_CRASH_LONG") == "1" else 3
)
SUBMITTERS = 4
PLACES = {"ARM": (40.8811, 45.3875), "AZE": (41.0933, 45.3661)}


class Load:
    """Client threads submitting distinct reports to whatever address the server has now;
    they keep each receipt the server acknowledged."""

    def __init__(self, wd: Path) -> None:
        self.keys = {
            "ARM": keys.read_private(wd / "keys/arm-monitor.key"),
            "AZE": keys.read_private(wd / "keys/aze-monitor.key"),
        }
        self.address = ""
        self.acked: dict[bytes, int] = {}  # statement identity -> index in its receipt
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = 0

    def run(self, n: int) -> None:
        rng = random.Random(n)
        while not self.stop.is_set():
            party = rng.choice(["ARM", "AZE"])
            lat, lon = PLACES[party]
            with self.lock:
                self.sent += 1
                k = self.sent
            data = signed(
                report(party, lat=lat + rng.uniform(-0.01, 0.01), lon=lon, hours_ago=k % 48,
                       narrative=f"crash soak report {n}-{k}"),
                self.keys[party],
            )  # fmt: skip
            try:
                # No retries of its own: the old address is gone after a kill, and the loop
                # here sends the next report to the new one.
                with LedgerClient(self.address, timeout_s=5, retry=RetryPolicy.none()) as client:
                    r = client.submit(data).receipt
            except grpc.RpcError:
                time.sleep(0.05)  # the server is down or restarting: not acknowledged
                continue
            with self.lock:
                self.acked[r.statement_sha256] = r.index


def test_acknowledged_entries_survive_sigkills(
    initialised: tuple[Path, Server, str],  # noqa: F811
) -> None:
    wd, server, digest = initialised
    load = Load(wd)
    load.address = server.address
    notes: list[str] = []
    threads = [threading.Thread(target=load.run, args=(n,)) for n in range(SUBMITTERS)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.0))
            with LedgerClient(server.address, timeout_s=5) as client:
                notes.append(client.checkpoint().signed_note)
            server.stop(signal.SIGKILL)
            server.start()
            load.address = server.address
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=30)
    assert load.acked, "no submission was acknowledged"

    with LedgerClient(server.address) as client:
        final_note = client.checkpoint().signed_note
        entries = [(e.index, e.entry) for e in client.entries(0, 0)]
        state = replay(iter(entries))
        assert state.trust is not None
        final = open_checkpoint(final_note, state.trust)
        # Every acknowledged statement, once, at the index its receipt names.
        logged = state.statements
        lost = {d: i for d, i in load.acked.items() if logged.get(d) != i}
        assert not lost, f"{len(lost)} acknowledged entries lost or moved"
        # The log extends every checkpoint it served.
        for note in notes:
            old = open_checkpoint(note, state.trust)
            if old.size == final.size:
                assert old.root_hash == final.root_hash
                continue
            proof = client.consistency_proof(old.size, final.size)
            merkle.verify_consistency(
                old.size, final.size, old.root_hash, final.root_hash, list(proof.hashes)
            )
    assert main(["verify", "--server", server.address, "--trust-root", digest]) == 0
    print(
        f"{KILLS} SIGKILLs, {load.sent} submissions, {len(load.acked)} acknowledged, "
        f"0 lost; {len(notes)} checkpoints served, each extended by the final one "
        f"(size {final.size})"
    )


def test_a_native_crash_leaves_the_python_stacks_in_the_log(
    initialised: tuple[Path, Server, str],  # noqa: F811
) -> None:
    """An abort in a C extension (as glibc aborts on a corrupted heap) kills the server at
    once; faulthandler first writes every thread's Python stack to its log."""
    wd, server, _ = initialised
    assert server.stop(signal.SIGABRT) == -signal.SIGABRT
    log = (wd / "serve.log").read_text()
    assert "Fatal Python error: Aborted" in log
    assert "serve_forever" in log and "sequencer.py" in log, log[-2000:]
