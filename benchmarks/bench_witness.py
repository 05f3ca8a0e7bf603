"""Witnesses and the monitor, against baselines measured in the same run.

    .venv/bin/python benchmarks/bench_witness.py [--entries 2000] [--new 20]

1. A witness's add-checkpoint over HTTP on loopback (a checkpoint, its consistency proof,
   the log's signature checked, the state updated under BEGIN IMMEDIATE, a cosignature),
   as requests per second beside the one-core Ed25519 sign+verify rate (the ceiling: each
   request verifies one signature and makes one).
2. How long after a commit the log serves a checkpoint the policy "one witness of each
   party" accepts (two witnesses; the feed is woken by each commit), p50 and p90.
3. `ceasefire monitor` on a ledger of --entries entries: the first run (every entry), then
   a run after --new more (only those), as a ratio of the first.

The ledger is SQLite, served on loopback by a child process (the clients apart from the
server, as users load it); the witnesses run in this process's threads.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nacl.signing

from clients.client import LedgerClient
from clients.monitor import Monitor, Options
from clients.progress import Progress
from geo.borders import load_default
from ledger import statements
from ledger.formats import dsse
from ledger.formats.cosignature import CosignatureSigner
from ledger.formats.merkle import LeafTree, consistency_proof
from ledger.formats.note import Checkpoint, NoteSigner, sign_note
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from ledger.witness import client as witness_client
from ledger.witness.server import Witness, serve
from ledger.witness.state import WitnessState
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed
from tests.test_witnessed import ARM_WITNESS, AZE_WITNESS, POLICY, _trust_root


def ed25519_rate(seconds: float = 1.0) -> float:
    """Sign and verify of a checkpoint-sized message, per second, on one core."""
    key = nacl.signing.SigningKey.generate()
    message = b"x" * 200
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        key.verify_key.verify(message, key.sign(message).signature)
        n += 1
    return n / (time.perf_counter() - start)


def witness_rate(tmp: Path, requests: int) -> float:
    """add-checkpoint requests per second, each one leaf more than the last."""
    log = NoteSigner("bench.example/log", nacl.signing.SigningKey.generate())
    witness = Witness(
        CosignatureSigner("bench.example/w", nacl.signing.SigningKey.generate()),
        {log.name: [log.verifier]},
        WitnessState(tmp / "rate.db"),
    )
    server = serve(witness, "127.0.0.1", 0)
    server.start()
    leaves = [bytes([i % 256]) * 32 for i in range(requests + 1)]
    tree = LeafTree(leaves)
    notes = [
        sign_note(Checkpoint(log.name, n, tree.root(n)).to_text(), [log])
        for n in range(1, requests + 1)
    ]
    start = time.perf_counter()
    for n in range(1, requests + 1):
        old = n - 1
        proof = consistency_proof(tree.get, old, n) if old else []
        result = witness_client.add_checkpoint(server.url, old, proof, notes[n - 1])
        assert result.accepted, result
    rate = requests / (time.perf_counter() - start)
    server.stop()
    return rate


def serve_ledger(db: str, urls: list[str], conn: Connection) -> None:
    """The child: a ledger whose trust root names both witnesses, served on loopback."""
    parties = Parties(**conn.recv())
    borders = load_default()
    log_key = LogKey(ORIGIN, parties.log)
    store = LedgerStore.open(db)
    ledger = Ledger(store, log_key, borders)
    server, port = build_server(ledger, "127.0.0.1:0", witnesses=urls)
    server.start()
    conn.send(port)
    conn.recv()  # told to stop
    server.stop(grace=None).wait()
    ledger.close()
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ceiling = ed25519_rate()
        rate = witness_rate(tmp, args.requests)
        print(f"one-core Ed25519 sign+verify        {ceiling:9.0f} /s (the ceiling)")
        print(f"witness add-checkpoint over HTTP    {rate:9.0f} /s  {rate / ceiling:6.1%}")

        # A ledger whose trust root names one witness per party.
        parties = Parties()
        borders = load_default()
        keys = {ARM_WITNESS: nacl.signing.SigningKey.generate(),
                AZE_WITNESS: nacl.signing.SigningKey.generate()}  # fmt: skip
        root = _trust_root(parties, borders, keys, POLICY)
        envelope = dsse.sign(
            statements.TRUST_ROOT,
            root.SerializeToString(),
            [parties.arm_authority, parties.aze_authority],
        )
        log_key = LogKey(ORIGIN, parties.log)
        db = f"sqlite:///{tmp / 'ledger.db'}"
        store = LedgerStore.open(db)
        initialize(store, envelope, log_key, borders)
        store.close()
        witnesses = []
        for n, key in keys.items():
            witness = Witness(CosignatureSigner(n, key), {ORIGIN: [log_key.verifier]},
                              WitnessState(tmp / f"{n.split('.')[1]}.db"))  # fmt: skip
            witnesses.append(serve(witness, "127.0.0.1", 0))
            witnesses[-1].start()
        ours, theirs = mp.Pipe()
        child = mp.get_context("spawn").Process(
            target=serve_ledger, args=(db, [w.url for w in witnesses], theirs)
        )
        child.start()
        ours.send({f: getattr(parties, f) for f in parties.__dataclass_fields__})
        client = LedgerClient(f"127.0.0.1:{ours.recv()}")
        client.wait_ready()

        def submit(n: int, start: int) -> None:
            for i in range(start, start + n):
                lat = 40.85 + (i % 400) * 1e-4
                key = parties.arm_monitor if i % 2 else parties.aze_monitor
                r = report("ARM" if i % 2 else "AZE", lat=lat, narrative=f"bench {i}")
                client.submit(signed(r, key))

        # 2. Commit to a witnessed checkpoint.
        delays = []
        for i in range(20):
            submit(1, 100_000 + i)
            size = client.checkpoint().tree_size
            start = time.perf_counter()
            while client.checkpoint(witnessed=True).tree_size < size:
                time.sleep(0.005)
            delays.append(time.perf_counter() - start)
        delays.sort()
        print(
            f"commit to a witnessed checkpoint    p50 {statistics.median(delays) * 1000:6.0f} ms"
            f"  p90 {delays[int(len(delays) * 0.9) - 1] * 1000:6.0f} ms  (20 commits; the feed is "
            "woken by each commit, and polls every 250 ms for other replicas' commits)"
        )

        # 3. The monitor: a first run, then one over what is new.
        submit(args.entries - client.checkpoint().tree_size, 0)
        state = tmp / "monitor"

        def run() -> float:
            start = time.perf_counter()
            result = Monitor(
                client, Options(state, borders=(borders,)), out=io.StringIO(),
                err=io.StringIO(), progress=Progress(quiet=True),
            ).run_once()  # fmt: skip
            assert result.code == 0, result.error
            return time.perf_counter() - start

        first = run()
        submit(args.new, 50_000)
        second = run()
        size = client.checkpoint().tree_size
        print(f"monitor, first run ({size - args.new} entries)  {first:8.2f} s")
        print(
            f"monitor, +{args.new} entries               {second:8.2f} s  "
            f"{second / first:6.1%} of the first"
        )
        client.close()
        ours.send("stop")
        child.join()
        for server in witnesses:
            server.stop()


if __name__ == "__main__":
    main()
