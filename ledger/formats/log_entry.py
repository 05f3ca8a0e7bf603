"""Log entries: the Merkle leaves. Pure format code (no gRPC, no SQL)."""

from __future__ import annotations

from collections.abc import Callable

from ceasefire.v1 import log_pb2

from ledger.clock import to_timestamp

# What entry 0 chains to.
GENESIS_PREVIOUS_HASH = bytes(32)


def parse_entry(data: bytes) -> log_pb2.LogEntry:
    entry = log_pb2.LogEntry()
    entry.ParseFromString(data)
    return entry


def leaf_builder(
    envelope: bytes, validation: log_pb2.Validation
) -> Callable[[int, bytes, int], bytes]:
    """The entry's bytes once the sequencer knows its index, chain link and time."""

    def build(index: int, previous_leaf_hash: bytes, integrated_us: int) -> bytes:
        return log_pb2.LogEntry(
            index=index,
            integrated_time=to_timestamp(integrated_us),
            previous_leaf_hash=previous_leaf_hash,
            envelope=envelope,
            validation=validation,
        ).SerializeToString()

    return build
