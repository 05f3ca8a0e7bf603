"""Wiring for a running service: open the store, load keys and borders, serve until told."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from geo.borders import DEFAULT_DATASET_DIR, BorderDataset
from ledger import keys
from ledger.grpc_server import build_server
from ledger.log_key import LogKey
from ledger.service import Ledger, read_trust_root
from ledger.storage import LedgerStore

log = logging.getLogger(__name__)


def open_ledger(
    db_url: str,
    log_key_file: Path,
    border_dir: Path = DEFAULT_DATASET_DIR,
    *,
    max_batch: int = 256,
    linger_s: float = 0.0,
) -> Ledger:
    store = LedgerStore.open(db_url)
    try:
        trust, _ = read_trust_root(store)
        log_key = LogKey(trust.origin, keys.read_private(log_key_file))
        borders = BorderDataset.load(border_dir)
        return Ledger(store, log_key, borders, max_batch=max_batch, linger_s=linger_s)
    except BaseException:
        store.close()
        raise


def serve_forever(
    ledger: Ledger, address: str, *, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and queued commits."""
    server, port = build_server(ledger, address)
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if on_ready is not None:
        on_ready(port)
    stop.wait()
    log.info("stopping: finishing in-flight requests")
    server.stop(grace=10).wait()
    ledger.close()
    ledger.store.close()
