"""The server's sizing defaults, kept apart from the modules that use them
(ledger.serving.grpc_server, ledger.storage) so that `ceasefire serve --help` can state
them without importing SQLAlchemy or the gRPC server."""

from __future__ import annotations

# Threads doing the blocking ledger work (SQL, the sequencer's queue, geometry). The
# database pool keeps one connection for each, plus two (see runtime.pool_size).
WORKERS = 8

# Connections a PostgreSQL pool opens beyond its size for a burst (closed when returned).
POOL_OVERFLOW = 4
