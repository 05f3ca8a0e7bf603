"""Wiring for a running service: open the store, load keys and borders, serve until told."""

from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from geo.borders import DEFAULT_DATASET_DIR, BorderDataset
from ledger import keys, mirror
from ledger.defaults import WORKERS
from ledger.log_key import LogKey
from ledger.service import Ledger, read_trust_root
from ledger.serving.grpc_server import build_server
from ledger.storage import LedgerStore
from ledger.tls import TlsConfig

log = logging.getLogger(__name__)


def pool_size(workers: int) -> int:
    """Database connections a server with `workers` threads keeps open: one per worker,
    and two for the sequencer (its writer's connection, and the reads it makes while
    holding it, e.g. catching up with entries another replica wrote). A PostgreSQL server
    must allow replicas x (this + storage.POOL_OVERFLOW) connections."""
    return workers + 2


def open_ledger(
    db_url: str,
    log_key_file: Path,
    border_dir: Path = DEFAULT_DATASET_DIR,
    *,
    workers: int = WORKERS,
    max_batch: int = 256,
    linger_s: float = 0.0,
) -> Ledger:
    """The ledger a server with `workers` threads serves, its database pool sized to them
    (see pool_size). A mirror's database is served read-only, with no log key."""
    store = LedgerStore.open(db_url, pool_size=pool_size(workers))
    try:
        if mirror.mirror_info(store) is not None:
            return mirror.MirrorLedger(store, BorderDataset.load(border_dir))
        trust, _ = read_trust_root(store)
        log_key = LogKey(trust.origin, keys.read_private(log_key_file))
        borders = BorderDataset.load(border_dir)
        return Ledger(store, log_key, borders, max_batch=max_batch, linger_s=linger_s)
    except BaseException:
        store.close()
        raise


# glibc's mallopt parameter, and the size from which it maps buffers of their own.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1024 * 1024


def give_back_large_buffers() -> None:
    """Have glibc map each buffer of 1 MiB or more on its own, so that freeing it returns
    the memory at once. By default the threshold grows to the largest buffer freed (up to
    32 MiB), after which an upload's 16 MiB buffers stay in the heap once freed: the
    server's resident memory would keep its peak instead of the bytes in flight."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)  # glibc only
    except OSError:
        return
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def serve_forever(
    ledger: Ledger,
    address: str,
    *,
    on_ready: Callable[[int], None] | None = None,
    tls: TlsConfig | None = None,
    spool_dir: Path | None = None,
    workers: int = WORKERS,
    witnesses: Sequence[str] = (),
) -> None:
    """Serve until SIGINT or SIGTERM, then finish in-flight requests and queued commits.
    With `tls`, over TLS (and its writers' port, if any); else plaintext. Uploads are
    spooled in `spool_dir` (see build_server). Raises AddressInUse or ListenError, having
    closed the ledger, when it cannot listen. `workers` threads do the blocking work: give
    open_ledger the same number, so that each has a pooled connection. `witnesses`: URL
    prefixes of the C2SP witnesses asked to cosign each new checkpoint."""
    give_back_large_buffers()
    # A native crash (an abort in a C extension) leaves every thread's Python stack on
    # stderr, the server's log: what it was doing when it died.
    faulthandler.enable()
    try:
        server, port = build_server(
            ledger,
            address,
            max_workers=workers,
            tls=tls,
            spool_dir=spool_dir,
            witnesses=witnesses,
        )
    except BaseException:
        ledger.close()
        ledger.store.close()
        raise
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
