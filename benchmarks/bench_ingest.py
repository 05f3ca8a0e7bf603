"""Ingest throughput through the real gRPC server on SQLite: group commit vs one commit per
entry (max_batch=1, the baseline), measured in the same run.

    python benchmarks/bench_ingest.py [--entries 2000] [--clients 16]

Prints entries/s for each, the number of commits (disk flushes) and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nacl.signing import SigningKey

from clients.client import LedgerClient
from geo.borders import load_default
from ledger.log_key import LogKey
from ledger.service import Ledger, initialize
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from tests.conftest import ORIGIN, Parties
from tests.reports import report, signed


def run(
    db_url: str, envelopes: list[bytes], parties: Parties, clients: int, max_batch: int
) -> tuple[float, int]:
    borders = load_default()
    store = LedgerStore.open(db_url)
    log_key = LogKey(ORIGIN, parties.log)
    initialize(store, parties.founding_envelope(borders), log_key, borders)
    ledger = Ledger(store, log_key, borders, max_batch=max_batch, max_queue=len(envelopes) + 1)
    server, port = build_server(ledger, "127.0.0.1:0", max_workers=clients * 2)
    server.start()
    client = LedgerClient(f"127.0.0.1:{port}")
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            receipts = list(pool.map(client.submit, envelopes))
        elapsed = time.perf_counter() - start
        assert len({r.receipt.index for r in receipts}) == len(envelopes)
        return len(envelopes) / elapsed, ledger.sequencer.stats.batches
    finally:
        client.close()
        server.stop(grace=None).wait()
        ledger.close()
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    args = ap.parse_args()
    parties = Parties(log=SigningKey.generate())
    print(f"signing {args.entries} reports ...", flush=True)
    envelopes = [
        signed(report("ARM", hours_ago=1 + i / 1000), parties.arm_monitor)
        for i in range(args.entries)
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in (
            ("one commit per entry (baseline)", 1),
            ("group commit (max 256)", 256),
        ):
            url = f"sqlite:///{Path(tmp) / f'b{batch}.db'}"
            rate, commits = run(url, envelopes, parties, args.clients, batch)
            results[batch] = rate
            print(
                f"{name:<34} {rate:8.0f} entries/s  "
                f"{commits:5d} commits for {args.entries} entries",
                flush=True,
            )
    print(f"group commit / baseline: {results[256] / results[1]:.2f}x throughput")


if __name__ == "__main__":
    main()
