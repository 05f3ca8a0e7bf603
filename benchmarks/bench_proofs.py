"""Proof and checkpoint cost as the tree grows: stored subtree hashes keep it O(log n).

    python benchmarks/bench_proofs.py [--small 1024] [--large 131072]

Builds two ledgers on SQLite through the real store (synthetic leaves, appended in batches
of 1,000), then times inclusion and consistency proofs against each. The baseline is the
small tree, measured in the same run; for scale, it also times what storing no inner nodes
would cost: rehashing every leaf to get the large tree's root.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.formats import merkle
from ledger.storage import Built, LedgerStore, NewEntry

BATCH = 1000


def build(url: str, size: int) -> LedgerStore:
    store = LedgerStore.open(url)
    for start in range(0, size, BATCH):
        batch = [
            NewEntry(
                statement_sha256=i.to_bytes(32, "big"),
                envelope_sha256=i.to_bytes(32, "big"),
                kind="bench",
                pending=None,
            )
            for i in range(start, min(size, start + BATCH))
        ]
        store.append(
            batch,
            build=lambda item, index, prev, t: Built(b"leaf %d %b" % (index, prev), ()),
            clock_us=lambda: 0,
            sign_checkpoint=lambda s, r: f"{s}",
        )
        if start % (BATCH * 32) == 0:
            print(f"  {start + len(batch):>7}/{size} entries", file=sys.stderr, flush=True)
    return store


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", type=int, default=1024)
    ap.add_argument("--large", type=int, default=131_072)
    ap.add_argument("--proofs", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(7)
    figures: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.small, args.large):
            print(f"building a tree of {size} entries", file=sys.stderr, flush=True)
            store = build(f"sqlite:///{Path(tmp) / f'{size}.db'}", size)

            def inclusion(s: LedgerStore = store, n: int = size) -> object:
                return s.inclusion_proof(rng.randrange(n), n)

            def consistency(s: LedgerStore = store, n: int = size) -> object:
                return s.consistency_proof(rng.randrange(1, n), n)

            inc = per_call_us(inclusion, args.proofs)
            con = per_call_us(consistency, args.proofs)
            figures[size] = (inc, con)
            print(f"size {size:>7}: inclusion {inc:7.0f} us/proof, consistency {con:7.0f} us/proof")
            if size == args.large:
                leaves = [e.leaf_hash for e in store.iter_entries(0, size)]
                t0 = time.perf_counter()
                root = merkle.root_from_leaf_hashes(leaves)
                rehash_us = (time.perf_counter() - t0) * 1e6
                assert root == store.root_at(size)
                print(f"size {size:>7}: rehashing all leaves for the root: {rehash_us:9.0f} us")
            store.close()
    (si, sc), (li, lc) = figures[args.small], figures[args.large]
    growth = args.large / args.small
    print(
        f"tree {growth:.0f}x larger -> inclusion {li / si:.2f}x, consistency {lc / sc:.2f}x "
        f"the cost (O(n) would be {growth:.0f}x); a full rehash costs {rehash_us / li:.0f}x "
        "one stored-node inclusion proof"
    )


if __name__ == "__main__":
    main()
