"""Client processes for benchmarks/scale.py (multiprocessing, spawn): each has its own gRPC
channel, as a user's process would.

- `window`: measured ingest. Each process signs its reports first, connects, says it is
  ready and waits; the coordinator starts the clock and lets them all go at once. Unary
  (one Submit at a time) or batch (SubmitBatch calls of 64-256 envelopes, cut to fit the
  server's message size). Each process reports when it finished (time.perf_counter is
  CLOCK_MONOTONIC, shared by the processes of one machine), its per-call latencies and
  any refusal by status code.
- `seed`: grows the ledger between measurement points as fast as it goes (signing as it
  goes, not measured), through SubmitBatch or unary calls from a few threads per process.
- `probe`: proof and timeline latencies from a client process.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any, cast

import grpc
from nacl.signing import SigningKey

from benchmarks.scale_reports import Spec, sign_spec
from clients import client as client_module
from clients.client import LedgerClient

SPAWN: SpawnContext = mp.get_context("spawn")
CALL_TIMEOUT_S = 120.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
BATCH_BYTES = 60_000  # under the server's 64,096-byte message, when the client has no splitter

BatchCall = Callable[[Sequence[bytes]], Sequence[object]]


def has_batch() -> bool:
    return callable(getattr(LedgerClient, "submit_batch", None))


def batch_call(client: LedgerClient) -> BatchCall:
    return cast(BatchCall, client.submit_batch)  # type: ignore[attr-defined,unused-ignore]


def split(envelopes: Sequence[bytes], count: int) -> list[list[bytes]]:
    """SubmitBatch calls of at most `count` envelopes that fit the server's message size
    (the client's own `batches` when it has one)."""
    splitter = getattr(client_module, "batches", None)
    if callable(splitter):
        return [list(b) for b in splitter(envelopes, count)]
    out: list[list[bytes]] = []
    batch: list[bytes] = []
    size = 0
    for e in envelopes:
        if batch and (len(batch) == count or size + len(e) + 4 > BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append(e)
        size += len(e) + 4
    if batch:
        out.append(batch)
    return out


@dataclass
class Outcome:
    """What one client process did."""

    sent: int = 0
    accepted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    calls: int = 0
    finished: float = 0.0  # time.perf_counter() when its last call returned

    def merge(self, other: Outcome) -> None:
        self.sent += other.sent
        self.accepted += other.accepted
        self.errors.update(other.errors)
        self.retries += other.retries
        self.latencies_ms.extend(other.latencies_ms)
        self.calls += other.calls
        self.finished = max(self.finished, other.finished)


def _keys(seeds: dict[str, bytes]) -> dict[str, SigningKey]:
    return {party: SigningKey(seed) for party, seed in seeds.items()}


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    return error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN


def _submit_one(client: LedgerClient, envelope: bytes, out: Outcome) -> None:
    """One Submit, retried after UNAVAILABLE (queue full) as a client should."""
    out.sent += 1
    for attempt in range(20):
        t0 = time.perf_counter()
        try:
            client.submit(envelope)
        except grpc.RpcError as e:
            code = _code(e)
            if code in RETRYABLE and attempt < 19:
                out.retries += 1
                time.sleep(0.2 * (attempt + 1))
                continue
            out.errors[code.name] += 1
            return
        finally:
            out.calls += 1
        out.latencies_ms.append((time.perf_counter() - t0) * 1000)
        out.accepted += 1
        return


def _submit_batch(call: BatchCall, batch: Sequence[bytes], out: Outcome) -> None:
    out.sent += len(batch)
    for attempt in range(20):
        t0 = time.perf_counter()
        try:
            results = list(call(batch))
        except grpc.RpcError as e:
            code = _code(e)
            if code in RETRYABLE and attempt < 19:
                out.retries += 1
                time.sleep(0.2 * (attempt + 1))
                continue
            out.errors[code.name] += len(batch)
            return
        finally:
            out.calls += 1
        out.latencies_ms.append((time.perf_counter() - t0) * 1000)
        for r in results:
            if hasattr(r, "receipt"):
                out.accepted += 1
            else:
                refused = getattr(r, "code", None)
                out.errors[getattr(refused, "name", type(r).__name__)] += 1
        return


@dataclass(frozen=True)
class WindowJob:
    address: str
    specs: list[Spec]
    seeds: dict[str, bytes]
    batch: bool = False
    batch_range: tuple[int, int] = (64, 256)
    seed: int = 0


def window(job: WindowJob, messages: Queue[Any], go: Event, worker: int) -> None:
    """Sign everything, connect, report ready, wait for `go`, submit, report the outcome."""
    try:
        keys = _keys(job.seeds)
        envelopes = [sign_spec(s, keys) for s in job.specs]
        rng = random.Random(job.seed)
        calls: list[list[bytes]] = []
        if job.batch:
            rest = envelopes
            while rest:
                n = rng.randint(*job.batch_range)
                calls.extend(split(rest[:n], n))
                rest = rest[n:]
        client = LedgerClient(job.address, timeout_s=CALL_TIMEOUT_S)
        client.wait_ready(timeout_s=60)
        client.checkpoint()  # the channel is up and a call has been made
        out = Outcome()
        messages.put(("ready", worker, None))
        go.wait()
        if job.batch:
            call = batch_call(client)
            for b in calls:
                _submit_batch(call, b, out)
        else:
            for e in envelopes:
                _submit_one(client, e, out)
        out.finished = time.perf_counter()
        client.close()
        messages.put(("done", worker, out))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the coordinator has it
        return
    except BaseException as e:  # the coordinator must hear, whatever went wrong
        messages.put(("failed", worker, f"{type(e).__name__}: {e}"))
        raise


@dataclass(frozen=True)
class SeedJob:
    address: str
    specs: list[Spec]
    seeds: dict[str, bytes]
    batch: bool
    threads: int = 4
    chunk: int = 256


def seed(job: SeedJob, messages: Queue[Any], done: Synchronized[int], worker: int) -> None:
    """Submit every spec (signed a chunk at a time, just before sending), counting accepted
    entries into `done`."""
    try:
        keys = _keys(job.seeds)
        client = LedgerClient(job.address, timeout_s=CALL_TIMEOUT_S)
        client.wait_ready(timeout_s=60)
        out = Outcome()
        with ThreadPoolExecutor(job.threads) as pool:
            for start in range(0, len(job.specs), job.chunk):
                envelopes = [sign_spec(s, keys) for s in job.specs[start : start + job.chunk]]
                parts: list[Outcome] = []
                if job.batch:
                    call = batch_call(client)
                    batches = split(envelopes, 256)

                    def one_batch(b: list[bytes], call: BatchCall = call) -> Outcome:
                        o = Outcome()
                        _submit_batch(call, b, o)
                        with done.get_lock():
                            done.value += o.accepted
                        return o

                    parts = list(pool.map(one_batch, batches))
                else:

                    def one(e: bytes) -> Outcome:
                        o = Outcome()
                        _submit_one(client, e, o)
                        with done.get_lock():
                            done.value += o.accepted
                        return o

                    parts = list(pool.map(one, envelopes))
                for p in parts:
                    p.latencies_ms.clear()
                    out.merge(p)
        out.finished = time.perf_counter()
        client.close()
        messages.put(("done", worker, out))
    except KeyboardInterrupt:
        return
    except BaseException as e:
        messages.put(("failed", worker, f"{type(e).__name__}: {e}"))
        raise


@dataclass(frozen=True)
class ProbeJob:
    address: str
    proofs: int
    timeline_since_us: int
    timeline_until_us: int
    timeline_limit: int
    timeline_calls: int
    seed: int = 0


@dataclass
class ProbeResult:
    tree_size: int = 0
    inclusion_ms: list[float] = field(default_factory=list)
    consistency_ms: list[float] = field(default_factory=list)
    timeline_ms: list[float] = field(default_factory=list)
    timeline_returned: int = 0


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def probe(job: ProbeJob, messages: Queue[Any], worker: int) -> None:
    """Random inclusion and consistency proofs against the current tree, then Timeline
    calls for one day (each drained to its last incident)."""
    try:
        rng = random.Random(job.seed)
        client = LedgerClient(job.address, timeout_s=CALL_TIMEOUT_S)
        client.wait_ready(timeout_s=60)
        r = ProbeResult(tree_size=client.checkpoint().tree_size)
        n = r.tree_size
        for _ in range(5):  # warm the channel and the server's code paths
            client.inclusion_proof(rng.randrange(n), n)
            client.consistency_proof(rng.randrange(1, n), n)
        for _ in range(job.proofs):
            i, old = rng.randrange(n), rng.randrange(1, n)
            t0 = time.perf_counter()
            client.inclusion_proof(i, n)
            t1 = time.perf_counter()
            client.consistency_proof(old, n)
            t2 = time.perf_counter()
            r.inclusion_ms.append((t1 - t0) * 1000)
            r.consistency_ms.append((t2 - t1) * 1000)
        returned: list[int] = []

        def timeline() -> None:
            got = list(
                client.timeline(
                    since_us=job.timeline_since_us,
                    until_us=job.timeline_until_us,
                    limit=job.timeline_limit,
                )
            )
            returned.append(len(got))

        timeline()  # warm
        r.timeline_ms = [_timed(timeline) for _ in range(job.timeline_calls)]
        r.timeline_returned = returned[-1]
        client.close()
        messages.put(("done", worker, r))
    except KeyboardInterrupt:
        return
    except BaseException as e:
        messages.put(("failed", worker, f"{type(e).__name__}: {e}"))
        raise


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
