"""Thin gRPC layer: decode requests, call the Ledger, encode responses.

The serving model (see docs/architecture.md, "Serving"): a `grpc.aio` server on an event
loop of its own. Ledger work (SQL, the sequencer, geometry) is blocking, so it runs in a
bounded thread pool, never on the event loop; a call waiting for anything else (its
commit, a client's next chunk, a reader's flow-control window) waits on the event loop
and holds no thread. So idle or slow streams cannot take the workers that health checks
and other clients need, and every call is bounded in time (`Limits`).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import itertools
import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import _async as health_aio  # health.aio, which the stubs lack
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ledger import geofacts
from ledger.clock import to_timestamp, to_us
from ledger.defaults import WORKERS
from ledger.errors import Corrupt, DeadlineExceeded, InvalidArgument, LedgerError, NotFound
from ledger.service import (
    MAX_ENVELOPE_BYTES,
    SUBMIT_TIMEOUT_S,
    Accepted,
    Ledger,
    Queued,
    ShownIncident,
    in_tree,
    not_committed,
)
from ledger.serving.grpc_status import abort, status_message, streaming, unary
from ledger.serving.tailing import SizeWatch
from ledger.serving.witness_feed import WitnessFeed
from ledger.storage import StoredEntry
from ledger.tls import TlsConfig
from ledger.uploads import DEFAULT_BUDGET_BYTES, Budget, Receiver, spool_folder

log = logging.getLogger(__name__)

SERVICE_NAME = api.DESCRIPTOR.services_by_name["LedgerService"].full_name
# Requests are small: a bounded envelope (or a chunk of 60,000 bytes) plus framing.
# Refuse anything larger up front.
MAX_MESSAGE_BYTES = MAX_ENVELOPE_BYTES + 4096
BLOB_CHUNK_BYTES = 60_000
# GetBlob reads a stored file a window at a time: what an unread stream holds in memory.
BLOB_WINDOW_BYTES = 1024 * 1024
# Items a server stream takes from the ledger per trip to the thread pool.
STREAM_BATCH = 128
# What one message of GetEntryBatches or TimelineBatches holds at most (an item larger
# than this goes alone): a quarter of what a message may be sent.
PACKED_BYTES = 1024 * 1024
# Entries a Tail stream reads from the database at a time: with the reader's flow-control
# window, all it holds for a slow reader.
TAIL_PAGE = 64
# How often waiting Tail streams (all of them together) look for entries that another
# replica committed on the same database.
TAIL_POLL_S = 0.5
# Calls left unbounded in time: a health watch is meant to stay open (it holds no thread).
UNBOUNDED = frozenset({"/grpc.health.v1.Health/Watch"})

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """What the server allows a client. Time bounds end a call with DEADLINE_EXCEEDED."""

    # A unary call (Submit included: its commit is awaited for at most 30 s), start to end.
    call_s: float = 60.0
    # A server stream (GetEntries, Timeline, GetBlob, ...), start to end.
    stream_s: float = 600.0
    # A server stream whose reader takes nothing (flow control stays shut) this long.
    write_idle_s: float = 60.0
    # An upload (SubmitWithBlobs), from its first message to its answer ...
    upload_s: float = 600.0
    # ... sending a message (the envelope, then a chunk) at least this often.
    message_idle_s: float = 30.0
    # Bytes of files being received (or awaiting their commit) at once, across uploads.
    upload_budget_bytes: int = DEFAULT_BUDGET_BYTES
    # Calls in progress at once, across all connections; beyond: RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 1000
    # Streams at once on one connection; a client's further calls wait for a free one.
    max_streams_per_connection: int = 64
    # A connection with no call for this long is closed (GOAWAY).
    max_connection_idle_s: float = 300.0
    # The server pings a quiet connection this often and drops it if no answer comes in
    # keepalive_timeout_s: dead peers do not keep their streams.
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    # Clients may ping at most this often, and never without a call in progress.
    min_client_ping_interval_s: float = 30.0

    @property
    def tail_s(self) -> float:
        """How long a Tail stream runs before it ends itself with OK (the client asks
        again from the next index): within `stream_s`, so no tail ends in an error."""
        return max(self.stream_s - 10.0, self.stream_s * 0.8)

    def options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # A busy port fails to bind instead of sharing it with another server.
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            ("grpc.max_connection_idle_ms", int(self.max_connection_idle_s * 1000)),
            ("grpc.keepalive_time_ms", int(self.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 0),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
            ("grpc.http2.max_ping_strikes", 2),
            # The server's own keepalive pings go on while streams are quiet.
            ("grpc.http2.max_pings_without_data", 0),
        ]


class AddressInUse(OSError):
    """Another process listens on the address (one line, for the command to print)."""


class ListenError(OSError):
    """The address cannot be listened on for another reason."""


# -- the service ---------------------------------------------------------------------------


class LedgerServicer(api_grpc.LedgerServiceServicer):
    def __init__(
        self,
        ledger: Ledger,
        pool: ThreadPoolExecutor,
        *,
        budget: Budget,
        spool: Path,
        tls: TlsConfig | None = None,
        tail_s: float = Limits().tail_s,
    ) -> None:
        self.ledger = ledger
        self.budget = budget
        self.spool = spool
        self._pool = pool
        self._tls = tls
        self.witness_feed: WitnessFeed | None = None
        self.tail_s = tail_s
        # Made on the event loop by the first Tail; fed by this replica's commits.
        self.size_watch: SizeWatch | None = None
        self._unwatch: Callable[[], None] | None = None
        # Entries read from the database for Tail streams, in all (for tests and metrics).
        self.tail_reads = 0

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Blocking ledger work, in the bounded pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _drain(self, items: Iterator[T], batch: int = STREAM_BATCH) -> AsyncIterator[T]:
        """A blocking iterator (SQL pages, geometry) taken `batch` items per trip to the
        pool; between trips the caller's stream yields, waiting on its reader."""
        while True:
            got = await self._run(_take, items, batch)
            for item in got:
                yield item
            if len(got) < batch:
                return

    def _check_writer(self, context: aio.ServicerContext[Any, Any]) -> None:
        if self._tls is not None:
            self._tls.check_writer({k: list(v) for k, v in context.auth_context().items()})

    async def _committed(self, queued: Queued) -> Accepted:
        """Wait on the event loop (holding no thread) for the sequencer to commit."""
        waiting = asyncio.wrap_future(queued.future)
        waiting.add_done_callback(_retrieved)
        done, _ = await asyncio.wait([waiting], timeout=SUBMIT_TIMEOUT_S)
        if not done:
            raise not_committed()
        if self.witness_feed is not None:
            self.witness_feed.wake()  # a new checkpoint: to the witnesses now, not at a poll
        if queued.unpacked is None:
            # Committed: the receipt is a signature over what is at hand (no read, no file
            # to remove), made here rather than on a trip to the pool and back.
            return self.ledger.committed(queued, 0.0)
        return await self._run(self.ledger.committed, queued, 0.0)

    @unary
    async def Submit(
        self, request: api.SubmitRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.SubmitResponse:
        self._check_writer(context)
        # Checked and queued in one trip to the pool: each trip costs the event loop and
        # the pool's thread a hand-over of the GIL.
        checked = await self._run(self.ledger.queue, request.envelope, {})
        if isinstance(checked, Queued):
            checked = await self._committed(checked)
        return api.SubmitResponse(
            signed_receipt=checked.signed_receipt,
            receipt=checked.receipt,
            duplicate=checked.duplicate,
        )

    @unary
    async def SubmitBatch(
        self, request: api.SubmitBatchRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.SubmitBatchResponse:
        """Each envelope checked and queued (one trip to the pool, so they share a commit),
        the commits awaited on the event loop, each item answered with its receipt or the
        status Submit would have given it; only an empty or oversized batch fails whole."""
        self._check_writer(context)
        queued = await self._run(self.ledger.queue_batch, list(request.envelopes))
        waiting = [asyncio.wrap_future(q.future) for q in queued if isinstance(q, Queued)]
        for w in waiting:
            w.add_done_callback(_retrieved)
        if waiting:
            await asyncio.wait(waiting, timeout=SUBMIT_TIMEOUT_S)
        # Those not committed by now are answered UNAVAILABLE (retry: never logged twice).
        results = await self._run(self.ledger.committed_batch, queued, 0.0)
        if self.witness_feed is not None:
            self.witness_feed.wake()
        return api.SubmitBatchResponse(results=[_batch_result(r) for r in results])

    @unary
    async def SubmitWithBlobs(
        self,
        requests: AsyncIterator[api.SubmitWithBlobsRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> api.SubmitWithBlobsResponse:
        """The envelope (first message) is judged before any chunk is read; then each
        chunk is checked against the files it lists, hashed and spooled (ledger.uploads)."""
        self._check_writer(context)
        parts = aiter(requests)
        first = await anext(parts, None)
        if first is None or first.WhichOneof("part") != "envelope":
            raise InvalidArgument("the first message must hold the envelope", field="envelope")
        checked = await self._run(self.ledger.check, first.envelope)
        if isinstance(checked, Accepted):  # logged before: its receipt; the files are stored
            return _with_blobs(checked)
        size = checked.files_size
        self.budget.reserve(size)
        try:
            receiver = Receiver(checked.files, checked.unlisted, self.spool)
            try:
                async for part in parts:
                    if part.WhichOneof("part") != "chunk":
                        raise InvalidArgument(
                            "only the first message holds the envelope", field="envelope"
                        )
                    await self._run(receiver.add, part.chunk.name, part.chunk.data)
                files = await self._run(receiver.finish)
            finally:
                receiver.discard()
            queued = await self._run(self.ledger.enqueue, checked, files)
            del files
            accepted = await self._committed(queued)
        finally:
            self.budget.release(size)
        return _with_blobs(accepted)

    @unary
    async def GetEntry(
        self, request: api.GetEntryRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetEntryResponse:
        return await self._run(self._get_entry, request)

    def _get_entry(self, request: api.GetEntryRequest) -> api.GetEntryResponse:
        key = request.WhichOneof("key")
        if key in ("envelope_sha256", "statement_sha256"):
            e = self.ledger.entry_by_digest(key, getattr(request, key))
        else:
            e = self.ledger.entry(request.index, "index")
        return api.GetEntryResponse(index=e.index, entry=e.entry, leaf_hash=e.leaf_hash)

    @streaming
    async def GetEntries(
        self, request: api.GetEntriesRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.GetEntriesResponse]:
        async for response in self._entries(request):
            yield response

    @streaming
    async def GetEntryBatches(
        self, request: api.GetEntryBatchesRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.GetEntryBatchesResponse]:
        async for packed in _packed(self._entries(request.range, within="range.")):
            yield api.GetEntryBatchesResponse(entries=packed)

    async def _entries(
        self, request: api.GetEntriesRequest, within: str = ""
    ) -> AsyncIterator[api.GetEntriesResponse]:
        entries = await self._run(self.ledger.entries, request.start, request.end, within=within)
        async for e in self._drain(entries):
            yield api.GetEntriesResponse(index=e.index, entry=e.entry, leaf_hash=e.leaf_hash)

    def _watch(self) -> SizeWatch:
        if self.size_watch is None:
            watch = SizeWatch(lambda: self._run(self.ledger.store.tree_size), TAIL_POLL_S)
            self._unwatch = self.ledger.watch_commits(watch.committed)
            self.size_watch = watch
        return self.size_watch

    def close(self) -> None:
        """Stop hearing of commits (the server is stopping)."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    @streaming
    async def Tail(
        self, request: api.TailRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.TailResponse]:
        """Entries from start_index, then each new one as it is committed. A page of
        TAIL_PAGE entries is read only once the last one was written to the reader (whose
        flow control holds back a slow one), so a stream holds one page at most. Waiting
        for new entries holds no thread and writes nothing, so it is not an idle reader;
        the stream ends itself with OK after `tail_s` (within Limits.stream_s)."""
        watch = self._watch()
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.tail_s
        size = await self._run(self.ledger.store.tree_size)
        watch.seen(size)
        following = in_tree(request.start_index, "start_index", size, end=True)
        while loop.time() < ends:
            if following >= size:
                size = await watch.wait_beyond(following, ends - loop.time())
                continue
            stop = min(size, following + TAIL_PAGE)
            page = await self._run(_entries, self.ledger, following, stop)
            self.tail_reads += len(page)
            if [e.index for e in page] != list(range(following, stop)):
                raise Corrupt(f"entries {following} to {stop - 1} are not all stored")
            for e in page:
                yield api.TailResponse(index=e.index, entry=e.entry, leaf_hash=e.leaf_hash)
            following = stop

    @unary
    async def Stats(
        self, request: api.StatsRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.StatsResponse:
        since = to_us(request.since) if request.HasField("since") else None
        until = to_us(request.until) if request.HasField("until") else None
        return await self._run(self.ledger.stats, since, until, request.bucket)

    @unary
    async def GetCheckpoint(
        self, request: api.GetCheckpointRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetCheckpointResponse:
        cp = await self._run(self.ledger.cosigned_checkpoint, request.witnessed)
        shown = self.witness_feed.statuses() if self.witness_feed is not None else []
        return api.GetCheckpointResponse(
            signed_note=cp.note,
            tree_size=cp.size,
            root_hash=cp.root,
            witnesses=[
                api.WitnessStatus(url=w.url, cosigned_size=w.cosigned_size, error=w.error)
                for w in shown
            ],
        )

    @unary
    async def GetInclusionProof(
        self, request: api.GetInclusionProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetInclusionProofResponse:
        size, proof, leaf_hash = await self._run(
            self.ledger.inclusion_proof, request.index, request.tree_size
        )
        return api.GetInclusionProofResponse(
            index=request.index, tree_size=size, hashes=proof, leaf_hash=leaf_hash
        )

    @unary
    async def GetConsistencyProof(
        self, request: api.GetConsistencyProofRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetConsistencyProofResponse:
        size, proof = await self._run(
            self.ledger.consistency_proof, request.old_size, request.new_size
        )
        return api.GetConsistencyProofResponse(
            old_size=request.old_size, new_size=size, hashes=proof
        )

    @streaming
    async def Timeline(
        self, request: api.TimelineRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.TimelineResponse]:
        async for response in self._timeline(request):
            yield response

    @streaming
    async def TimelineBatches(
        self, request: api.TimelineBatchesRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.TimelineBatchesResponse]:
        async for packed in _packed(self._timeline(request.query)):
            yield api.TimelineBatchesResponse(incidents=packed)

    async def _timeline(self, request: api.TimelineRequest) -> AsyncIterator[api.TimelineResponse]:
        page = await self._run(self.ledger.timeline, request)
        last = len(page.items) - 1
        for n, (s, token) in enumerate(zip(page.items, page.tokens, strict=True)):
            response = api.TimelineResponse(
                status=s.status,
                current=s.current,
                next_page_token=token,
                more=n < last or page.more,
                as_of_index=page.as_of_index,
            )
            if isinstance(s, ShownIncident):
                response.index, response.entry = s.stored.index, s.stored.entry
                response.report.CopyFrom(s.report)
                response.geo.CopyFrom(s.geo)
            else:  # the status view
                response.index = s.index
            yield response

    @unary
    async def GetDossier(
        self, request: api.GetDossierRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetDossierResponse:
        dossier = await self._run(self.ledger.dossier, request.incident_index, request.as_of_index)
        return api.GetDossierResponse(
            status=dossier.status,
            entries=_dossier(dossier.entries),
            current=dossier.current,
        )

    @unary
    async def GetInvestigation(
        self, request: api.GetInvestigationRequest, context: aio.ServicerContext[Any, Any]
    ) -> api.GetInvestigationResponse:
        info, status, as_of, entries = await self._run(
            self.ledger.investigation, request.investigation_index
        )
        return api.GetInvestigationResponse(
            status=status,
            as_of=to_timestamp(as_of),
            answer_by=to_timestamp(info.answer_by_us),
            awaiting=info.awaiting,
            terms_index=info.terms.index if info.terms else 0,
            member_key_ids=sorted(info.terms.members) if info.terms else [],
            entries=_dossier(entries),
        )

    @streaming
    async def ListMessages(
        self, request: api.ListMessagesRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.ListMessagesResponse]:
        found = self.ledger.messages(
            request.start, request.to_party, request.unacknowledged_only, request.limit
        )
        async for stored, info, replies in self._drain(found):
            yield api.ListMessagesResponse(
                index=stored.index,
                entry=stored.entry,
                acknowledged_by=info.acknowledged,
                replies=replies,
            )

    @streaming
    async def GetBlob(
        self, request: api.GetBlobRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.GetBlobResponse]:
        store = self.ledger.store
        size = await self._run(store.blob_size, request.sha256)
        if size is None:
            raise NotFound(f"no file with SHA-256 {request.sha256[:64]}", field="sha256")
        # One window in memory at a time; an unread stream waits at a chunk, on flow control.
        for offset in range(0, size, BLOB_WINDOW_BYTES):
            window = await self._run(store.read_blob, request.sha256, offset, BLOB_WINDOW_BYTES)
            for start in range(0, len(window), BLOB_CHUNK_BYTES):
                yield api.GetBlobResponse(data=window[start : start + BLOB_CHUNK_BYTES])

    @streaming
    async def Revalidate(
        self, request: api.RevalidateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[api.RevalidateResponse]:
        since = to_us(request.since) if request.HasField("since") else None
        until = to_us(request.until) if request.HasField("until") else None
        found = self.ledger.revalidate(
            request.dataset_sha256, since, until, list(request.parties), request.limit
        )
        async for index, recorded, other, error in self._drain(found, batch=32):
            changed = other is None or geofacts.side(other) != geofacts.side(recorded)
            if request.changed_only and not changed:
                continue
            response = api.RevalidateResponse(
                index=index, recorded=recorded, side_changed=changed, error=error
            )
            if other is not None:
                response.revalidated.CopyFrom(other)
            yield response


def _entries(ledger: Ledger, start: int, end: int) -> list[StoredEntry]:
    return list(ledger.store.iter_entries(start, end, page=TAIL_PAGE))


def _take(items: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(items, n))


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (`Ledger.committed` raises it to the caller)."""
    if not future.cancelled():
        future.exception()


def _batch_result(result: Accepted | LedgerError) -> api.SubmitBatchResult:
    if isinstance(result, LedgerError):
        status = status_message(result)
        error = api.RpcStatus(code=status.code, message=status.message, details=status.details)
        return api.SubmitBatchResult(error=error)
    return api.SubmitBatchResult(
        accepted=api.SubmitResponse(
            signed_receipt=result.signed_receipt,
            receipt=result.receipt,
            duplicate=result.duplicate,
        )
    )


def _with_blobs(accepted: Accepted) -> api.SubmitWithBlobsResponse:
    return api.SubmitWithBlobsResponse(
        signed_receipt=accepted.signed_receipt,
        receipt=accepted.receipt,
        duplicate=accepted.duplicate,
    )


def _dossier(entries: list[tuple[StoredEntry, str]]) -> list[api.DossierEntry]:
    return [api.DossierEntry(index=e.index, entry=e.entry, relation=r) for e, r in entries]


# -- every call, on every service: decodable and bounded in time ---------------------------


@dataclass(frozen=True)
class _Undecodable:
    """Request bytes that do not parse as the method's request message."""

    message_type: str


def _decoder(deserialize: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    """The method's own deserializer, answering `_Undecodable` instead of raising (gRPC
    would answer an exception here with INTERNAL or UNKNOWN, not INVALID_ARGUMENT)."""
    if deserialize is None:
        return lambda data: data
    name = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    message_type = name.full_name if name is not None else method

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return _Undecodable(message_type)

    return decode


async def _decoded(request: Any, context: aio.ServicerContext[Any, Any], method: str) -> None:
    if isinstance(request, _Undecodable):
        await abort(
            context,
            InvalidArgument(f"the request bytes are not a {request.message_type} message"),
            method,
        )


M = TypeVar("M", bound=Message)


async def _packed(responses: AsyncIterator[M]) -> AsyncIterator[list[M]]:
    """`responses` in groups of at most PACKED_BYTES (or one larger response), each to be
    sent as one message."""
    group: list[M] = []
    held = 0
    async for response in responses:
        size = response.ByteSize()
        if group and held + size > PACKED_BYTES:
            yield group
            group, held = [], 0
        group.append(response)
        held += size
    if group:
        yield group


async def _within(
    seconds: float,
    work: Awaitable[T],
    context: aio.ServicerContext[Any, Any],
    method: str,
    what: str,
) -> T:
    """`work`, or DEADLINE_EXCEEDED once it has run `seconds`."""
    bound = asyncio.timeout(seconds)
    try:
        async with bound:
            return await work
    except TimeoutError:
        if not bound.expired():
            raise
        await abort(context, DeadlineExceeded(f"{what} must finish within {seconds:g} s"), method)


async def _send(
    context: aio.ServicerContext[Any, Any], message: Any, idle_s: float, method: str
) -> None:
    """Write one message; a reader that takes nothing for `idle_s` ends the call."""
    bound = asyncio.timeout(idle_s)  # no task of its own, unlike wait_for
    try:
        async with bound:
            await context.write(message)
    except TimeoutError:
        if not bound.expired():
            raise
        await abort(
            context,
            DeadlineExceeded(f"the reader took nothing for {idle_s:g} s; read what you ask for"),
            method,
        )


async def _requests(
    requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any], method: str, idle_s: float
) -> AsyncIterator[Any]:
    """A client stream's messages, each decodable and each within `idle_s` of the last."""
    iterator = aiter(requests)
    while True:
        bound = asyncio.timeout(idle_s)
        try:
            async with bound:
                message = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            if not bound.expired():
                raise
            await abort(
                context,
                DeadlineExceeded(
                    f"nothing sent for {idle_s:g} s; an upload sends a message at least "
                    f"every {idle_s:g} s"
                ),
                method,
            )
        await _decoded(message, context, method)
        yield message


def _guarded(handler: grpc.RpcMethodHandler[Any, Any], method: str, limits: Limits) -> Any:
    """The same handler, with undecodable requests answered INVALID_ARGUMENT and its
    time bounded (see `Limits`)."""
    decode = _decoder(handler.request_deserializer, method)
    encode = handler.response_serializer
    unbounded = method in UNBOUNDED

    async def respond(responses: Any, context: aio.ServicerContext[Any, Any]) -> None:
        if inspect.isasyncgen(responses):
            async for message in responses:
                await _send(context, message, limits.write_idle_s, method)
        else:
            await responses

    if handler.unary_unary is not None:
        inner_uu: Callable[..., Any] = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await _decoded(request, context, method)
            return await _within(
                limits.call_s, inner_uu(request, context), context, method, "a call"
            )

        return grpc.unary_unary_rpc_method_handler(unary_unary, decode, encode)

    if handler.unary_stream is not None:
        inner_us: Callable[..., Any] = handler.unary_stream

        async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> None:
            await _decoded(request, context, method)
            work = respond(inner_us(request, context), context)
            if unbounded:
                return await work
            await _within(limits.stream_s, work, context, method, "a stream")

        return grpc.unary_stream_rpc_method_handler(unary_stream, decode, encode)

    if handler.stream_unary is not None:
        inner_su: Callable[..., Any] = handler.stream_unary

        async def stream_unary(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            bounded = _requests(requests, context, method, limits.message_idle_s)
            work = inner_su(bounded, context)
            return await _within(limits.upload_s, work, context, method, "an upload")

        return grpc.stream_unary_rpc_method_handler(stream_unary, decode, encode)

    inner_ss: Callable[..., Any] | None = handler.stream_stream
    assert inner_ss is not None

    async def stream_stream(requests: Any, context: aio.ServicerContext[Any, Any]) -> None:
        bounded = _requests(requests, context, method, limits.message_idle_s)
        work = respond(inner_ss(bounded, context), context)
        await _within(limits.stream_s, work, context, method, "a stream")

    return grpc.stream_stream_rpc_method_handler(stream_stream, decode, encode)


class _Guard(aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _guarded(handler, handler_call_details.method, self.limits)


# -- the server, on an event loop of its own ------------------------------------------------


def check_free(address: str) -> None:
    """Refuse at once, in one line, an address another process listens on (gRPC would fail
    too, as so_reuseport is off, but with a log line of its own)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ListenError(f"{address} is not HOST:PORT") from None
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as e:
        raise ListenError(f"cannot listen on {address}: {e.strerror or e}") from None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise AddressInUse(
                        f"{address} is in use (is another server running?)"
                    ) from None
                if e.errno != errno.EADDRNOTAVAIL:  # e.g. no IPv6 here: gRPC skips it too
                    raise ListenError(f"cannot listen on {address}: {e.strerror}") from None


def default_spool_dir(ledger: Ledger) -> Path | None:
    """Where uploads are spooled when none is given: beside a SQLite database file
    (ledger.db -> ledger.db.uploads/); None (a private temporary folder) otherwise."""
    url = ledger.store.engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    db = Path(url.database).resolve()
    return db.with_name(db.name + ".uploads")


class LedgerServer:
    """The gRPC server, run on an event loop in a thread of its own, driven from ordinary
    (blocking) code: start(), stop(grace).wait(), wait_for_termination(); `port` (and
    `writers_port` when TLS has a writers' port) are bound at construction."""

    def __init__(
        self,
        ledger: Ledger,
        address: str,
        *,
        max_workers: int,
        limits: Limits,
        tls: TlsConfig | None,
        spool_dir: Path | None,
        witnesses: Sequence[str] = (),
    ) -> None:
        self.limits = limits
        check_free(address)
        if tls is not None and tls.writers_address:
            check_free(tls.writers_address)
        given = spool_dir or default_spool_dir(ledger)
        self._own_spool = given is None
        self.spool = spool_folder(given or Path(tempfile.mkdtemp(prefix="ceasefire-uploads-")))
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ledger")
        self.servicer = LedgerServicer(
            ledger,
            self._pool,
            budget=Budget(limits.upload_budget_bytes),
            spool=self.spool,
            tls=tls,
            tail_s=limits.tail_s,
        )
        if witnesses:
            self.servicer.witness_feed = WitnessFeed(ledger, witnesses)
        self._loop = asyncio.new_event_loop()
        self._stopped = threading.Event()
        self._stopping = False
        self._health: Any = None  # the aio HealthServicer, once built
        self._thread = threading.Thread(target=self._serve_loop, name="grpc-aio", daemon=True)
        self._thread.start()
        try:
            self._server, self.port, self.writers_port = self._call(self._build(address, tls))
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._stopped.wait()
            raise

    def _serve_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            # Blocking work still running finishes before the ledger may be closed.
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self._own_spool:
                shutil.rmtree(self.spool, ignore_errors=True)
            self._stopped.set()

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def _build(
        self, address: str, tls: TlsConfig | None
    ) -> tuple[aio.Server, int, int | None]:
        server = aio.server(
            interceptors=[_Guard(self.limits)],
            options=self.limits.options(),
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
        )
        api_grpc.add_LedgerServiceServicer_to_server(self.servicer, server)
        health_servicer = self._health = health_aio.HealthServicer()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        writers = None
        try:
            if tls is None:
                port = server.add_insecure_port(address)
            else:
                port, writers = tls.bind(server, address)
        except RuntimeError:  # gRPC's "Failed to bind": taken meanwhile, or not ours to use
            for where in (address, tls.writers_address if tls else None):
                if where:
                    check_free(where)
            raise ListenError(f"cannot listen on {address}") from None
        if port == 0:
            raise ListenError(f"cannot listen on {address}")
        return server, port, writers

    def start(self) -> None:
        self._call(self._server.start())
        if self.servicer.witness_feed is not None:
            self.servicer.witness_feed.start()

    def stop(self, grace: float | None = None) -> threading.Event:
        """Refuse new calls; end those in progress after `grace` seconds (None: now);
        then stop the loop and the pool. The event is set once all is stopped."""
        if not self._stopping:
            self._stopping = True
            self.servicer.close()
            if self.servicer.witness_feed is not None:
                self.servicer.witness_feed.close()

            async def shutdown() -> None:
                try:
                    if self._health is not None:  # watchers hear NOT_SERVING
                        await self._health.enter_graceful_shutdown()
                    await self._server.stop(grace)
                    if self.servicer.size_watch is not None:
                        await self.servicer.size_watch.close()
                finally:
                    asyncio.get_running_loop().stop()

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        return self._stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until stopped (True), or for at most `timeout` seconds (False)."""
        return self._stopped.wait(timeout)


def build_server(
    ledger: Ledger,
    address: str,
    *,
    max_workers: int = WORKERS,
    tls: TlsConfig | None = None,
    limits: Limits | None = None,
    spool_dir: Path | None = None,
    witnesses: Sequence[str] = (),
) -> tuple[LedgerServer, int]:
    """A server bound to `address` (call .start()) and the port it bound. `max_workers`
    threads do the blocking ledger work; uploads are spooled in `spool_dir` (mode 0700;
    by default beside a SQLite database, else a private temporary folder). Raises
    AddressInUse or ListenError when it cannot listen. `witnesses`: the C2SP tlog-witness
    URL prefixes asked to cosign each new checkpoint (see ledger/serving/witness_feed.py)."""
    server = LedgerServer(
        ledger,
        address,
        max_workers=max_workers,
        limits=limits or Limits(),
        tls=tls,
        spool_dir=spool_dir,
        witnesses=witnesses,
    )
    return server, server.port
