"""A typed client for the LedgerService, and readable descriptions of its errors.

The library's surface (docs/client-library.md): `LedgerClient` (connect, with `ClientTls`;
submit, submit_many, query, prove, follow), `sign_statement`, `RetryPolicy`, and the typed
errors of clients/errors.py. It imports no server dependency (no database, no geo library):
`audit` and `prove_inclusion` import what they need when called.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from ceasefire.v1 import log_pb2
from ceasefire.v1 import statements_pb2 as pb
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from nacl.signing import SigningKey

from clients import errors, retrying
from clients.retrying import OnRetry, RetryEvent, RetryPolicy
from ledger import statements
from ledger.clock import to_timestamp
from ledger.formats import dsse
from ledger.tls import TlsFileError, read_certificates, read_key_pair
from ledger.trust import TrustState

if TYPE_CHECKING:
    from clients.audit import AuditResult
    from clients.checkpoints import TrustedCheckpoint

__all__ = [
    "ClientTls",
    "LedgerClient",
    "Proof",
    "Refused",
    "RetryEvent",
    "RetryPolicy",
    "batches",
    "sign_statement",
]

T = TypeVar("T")
B = TypeVar("B")  # a message packing many items

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK_BYTES = 60_000
# SubmitBatch's bounds, as the API states them: envelopes in one call, and the bytes of the
# request (the server's largest message; ledger.serving.grpc_server.MAX_MESSAGE_BYTES).
MAX_BATCH = 256
MAX_BATCH_REQUEST_BYTES = 64_096
# The kinds that change the key state (ledger.kinds.KEY_EVENTS, which a test holds this to),
# named here so that the client needs none of the server's rules to pack its calls.
KEY_EVENT_TYPES = frozenset(
    {
        statements.TRUST_ROOT,
        statements.KEY_CHANGE,
        statements.PARTY_ADMISSION,
        statements.BORDER_DATASET,
    }
)


@dataclass(frozen=True)
class ClientTls:
    """TLS to the server: the CA certificates to trust for the server's certificate, and
    optionally a client certificate and key to present (for writes to a server that needs
    one). PEM bytes as read."""

    ca: bytes
    cert_chain: bytes | None = None
    private_key: bytes | None = None

    @classmethod
    def from_files(cls, ca: Path, cert: Path | None = None, key: Path | None = None) -> ClientTls:
        """Read and check the files: readable, PEM, not expired, the key the certificate's."""
        if (cert is None) != (key is None):
            raise TlsFileError("a client certificate needs its key: give --tls-cert and --tls-key")
        ca_pem = read_certificates(ca, "the CA to trust")[0]
        if cert is None or key is None:
            return cls(ca_pem)
        chain, key_pem = read_key_pair(cert, key, "the client certificate")
        return cls(ca_pem, chain, key_pem)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.private_key,
            certificate_chain=self.cert_chain,
        )


class LedgerClient:
    """A connection to one ledger server. Every call that fails raises a typed
    clients.errors.ClientError (also a grpc.RpcError), after the retries `retry` allows:
    UNAVAILABLE and RESOURCE_EXHAUSTED for every call (writes included: Submit,
    SubmitBatch and SubmitWithBlobs are idempotent, the same envelope getting its first
    receipt, so a write whose answer was lost is safely sent again), DEADLINE_EXCEEDED for
    reads only; streams only until their first response."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: ClientTls | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        """A plaintext channel to `target`, or with `tls` a TLS one. `timeout_s` bounds one
        attempt of a call (streams get a multiple of it); `retry` (default: RetryPolicy(),
        5 attempts within 60 s) the attempts; `on_retry` hears of each wait before one."""
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        self.on_retry = on_retry
        self.channel = (
            grpc.insecure_channel(target)
            if tls is None
            else grpc.secure_channel(target, tls.credentials())
        )
        self.stub = api_grpc.LedgerServiceStub(self.channel)

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the server answers its health check as SERVING."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        status = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
        )
        if status.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"{self.target} is not serving")

    def _call(self, method: str, attempt: Callable[[], T], *, read: bool = True) -> T:
        return retrying.call(self.retry, method, attempt, read=read, on_retry=self.on_retry)

    def _stream(
        self,
        method: str,
        rpc: grpc.UnaryStreamMultiCallable[Any, T],
        request: Message,
        timeout_s: float,
    ) -> Iterator[T]:
        def start() -> Iterator[T]:
            return iter(rpc(request, timeout=timeout_s))

        return retrying.stream(self.retry, method, start, on_retry=self.on_retry)

    def submit(self, envelope: bytes) -> api.SubmitResponse:
        """Log one signed statement (DSSE JSON): its receipt. The same envelope again
        gets the first receipt with `duplicate` set, which makes retries safe."""
        request = api.SubmitRequest(envelope=envelope)
        return self._call(
            "Submit", lambda: self.stub.Submit(request, timeout=self.timeout_s), read=False
        )

    def submit_batch(self, envelopes: Sequence[bytes]) -> list[api.SubmitResponse | Refused]:
        """One SubmitBatch call (see `batches` to split many envelopes into calls): for
        each envelope, in order, its receipt or its refusal. A refusal of the whole call
        (no envelope, too many, a writers' port needing a certificate) raises RpcError."""
        request = api.SubmitBatchRequest(envelopes=list(envelopes))
        response = self._call(
            "SubmitBatch",
            lambda: self.stub.SubmitBatch(request, timeout=self.timeout_s * 2),
            read=False,
        )
        if len(response.results) != len(envelopes):
            raise ValueError(
                f"the server answered {len(response.results)} results for "
                f"{len(envelopes)} envelopes"
            )
        return [_batch_result(r) for r in response.results]

    def submit_many(self, envelopes: Sequence[bytes]) -> list[api.SubmitResponse | Refused]:
        """Log many statements in as few SubmitBatch calls as `batches` allows: for each,
        in order, its receipt or its refusal. An item the server refused for the moment
        (busy: UNAVAILABLE or RESOURCE_EXHAUSTED) is sent again, as `retry` allows, and
        left a Refused only if it stays so."""
        results: list[api.SubmitResponse | Refused] = []
        for batch in batches(envelopes):
            results.extend(self._submit_batch_retrying_items(batch))
        return results

    def _submit_batch_retrying_items(
        self, envelopes: Sequence[bytes]
    ) -> list[api.SubmitResponse | Refused]:
        results = self.submit_batch(envelopes)
        attempts = retrying.Attempts(self.retry, "SubmitBatch", read=False, on_retry=None)
        attempts.next()
        while True:
            again = [i for i, r in enumerate(results) if isinstance(r, Refused) and r.transient]
            if not again:
                return results
            first = results[again[0]]
            assert isinstance(first, Refused)
            try:
                attempts.failed(first.error())  # waits, or raises when the policy is spent
            except errors.ClientError:
                return results
            attempts.next()
            for i, result in zip(
                again, self.submit_batch([envelopes[i] for i in again]), strict=True
            ):
                results[i] = result

    def entry(self, index: int) -> api.GetEntryResponse:
        return self._get_entry(api.GetEntryRequest(index=index))

    def entry_by_envelope(self, digest: bytes) -> api.GetEntryResponse:
        return self._get_entry(api.GetEntryRequest(envelope_sha256=digest))

    def entry_by_statement(self, digest: bytes) -> api.GetEntryResponse:
        """The entry logging the statement whose identity (SHA-256 of its PAE) is `digest`."""
        return self._get_entry(api.GetEntryRequest(statement_sha256=digest))

    def _get_entry(self, request: api.GetEntryRequest) -> api.GetEntryResponse:
        return self._call("GetEntry", lambda: self.stub.GetEntry(request, timeout=self.timeout_s))

    def entries(self, start: int, end: int) -> Iterator[api.GetEntriesResponse]:
        """Entries [start, end) (end 0: the current size), paging past the per-call cap."""
        if end == 0:
            end = self.checkpoint().tree_size
        page = 10_000
        while start < end:
            stop = min(end, start + page)
            got = 0
            for entry in self._entry_call(api.GetEntriesRequest(start=start, end=stop)):
                got += 1
                yield entry
            if got == 0:
                return
            start += got

    def _entry_call(self, request: api.GetEntriesRequest) -> Iterator[api.GetEntriesResponse]:
        return self._unpacked(
            self._stream(
                "GetEntryBatches", self.stub.GetEntryBatches,
                api.GetEntryBatchesRequest(range=request), self.timeout_s * 10,
            ),
            lambda batch: batch.entries,
            lambda: self._stream("GetEntries", self.stub.GetEntries, request, self.timeout_s * 10),
        )  # fmt: skip

    def checkpoint(self, witnessed: bool = False) -> api.GetCheckpointResponse:
        """The newest signed checkpoint with the cosignatures gathered for it; `witnessed`:
        the newest whose cosignatures meet the trust root's witness policy. Nothing here
        is verified: see clients/checkpoints.py."""
        request = api.GetCheckpointRequest(witnessed=witnessed)
        return self._call(
            "GetCheckpoint", lambda: self.stub.GetCheckpoint(request, timeout=self.timeout_s)
        )

    def inclusion_proof(self, index: int, tree_size: int = 0) -> api.GetInclusionProofResponse:
        request = api.GetInclusionProofRequest(index=index, tree_size=tree_size)
        return self._call(
            "GetInclusionProof",
            lambda: self.stub.GetInclusionProof(request, timeout=self.timeout_s),
        )

    def consistency_proof(
        self, old_size: int, new_size: int = 0
    ) -> api.GetConsistencyProofResponse:
        request = api.GetConsistencyProofRequest(old_size=old_size, new_size=new_size)
        return self._call(
            "GetConsistencyProof",
            lambda: self.stub.GetConsistencyProof(request, timeout=self.timeout_s),
        )

    def timeline(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        parties: Sequence[str] = (),
        limit: int = 0,
        as_of_index: int = 0,
    ) -> Iterator[api.TimelineResponse]:
        """Incidents by incident time; as the log stood before `as_of_index` (0: now)."""
        request = api.TimelineRequest(parties=list(parties), limit=limit, as_of_index=as_of_index)
        if since_us is not None:
            request.since.CopyFrom(to_timestamp(since_us))
        if until_us is not None:
            request.until.CopyFrom(to_timestamp(until_us))
        yield from self.timeline_page(request)

    def timeline_page(self, request: api.TimelineRequest) -> Iterator[api.TimelineResponse]:
        """One page of a Timeline query (clients/query_args.py builds one from the command
        line): each response's next_page_token continues after it, and the last one's
        `more` tells whether another page has more."""
        yield from self._unpacked(
            self._stream(
                "TimelineBatches", self.stub.TimelineBatches,
                api.TimelineBatchesRequest(query=request), self.timeout_s * 10,
            ),
            lambda batch: batch.incidents,
            lambda: self._stream("Timeline", self.stub.Timeline, request, self.timeout_s * 10),
        )  # fmt: skip

    @staticmethod
    def _unpacked(
        batches: Iterator[B],
        items: Callable[[B], Iterable[T]],
        one_by_one: Callable[[], Iterator[T]],
    ) -> Iterator[T]:
        """The items of a stream that packs them many to a message; from a server older than
        that stream (UNIMPLEMENTED before any message), the stream of one item a message."""
        try:
            first = next(batches, None)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            yield from one_by_one()
            return
        if first is not None:
            yield from items(first)
            for batch in batches:
                yield from items(batch)

    def timeline_all(self, request: api.TimelineRequest) -> Iterator[api.TimelineResponse]:
        """Every incident a Timeline query matches, page after page (each of at most its
        `limit`), all judged on the snapshot of its first page."""
        page = api.TimelineRequest()
        page.CopyFrom(request)
        while True:
            last = None
            for last in self.timeline_page(page):
                yield last
            if last is None or not last.more:
                return
            page.page_token = last.next_page_token

    def submit_with_blobs(
        self, envelope: bytes, files: Mapping[str, bytes]
    ) -> api.SubmitWithBlobsResponse:
        def parts() -> Iterator[api.SubmitWithBlobsRequest]:
            yield api.SubmitWithBlobsRequest(envelope=envelope)
            for name, data in files.items():
                for start in range(0, max(len(data), 1), CHUNK_BYTES):
                    chunk = api.BlobChunk(name=name, data=data[start : start + CHUNK_BYTES])
                    yield api.SubmitWithBlobsRequest(chunk=chunk)

        # Each attempt sends the envelope and the files afresh (parts() starts over).
        return self._call(
            "SubmitWithBlobs",
            lambda: self.stub.SubmitWithBlobs(parts(), timeout=self.timeout_s * 4),
            read=False,
        )

    def blob(self, sha256: str) -> bytes:
        """A stored file by its digest, checked against it."""
        request = api.GetBlobRequest(sha256=sha256)
        data = b"".join(
            r.data for r in self._stream("GetBlob", self.stub.GetBlob, request, self.timeout_s)
        )
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"the server sent bytes that are not {sha256}")
        return data

    def dossier(self, incident_index: int, as_of_index: int = 0) -> api.GetDossierResponse:
        """One incident and its linked entries; as the log stood before `as_of_index`
        (0: now)."""
        request = api.GetDossierRequest(incident_index=incident_index, as_of_index=as_of_index)
        return self._call(
            "GetDossier", lambda: self.stub.GetDossier(request, timeout=self.timeout_s)
        )

    def investigation(self, investigation_index: int) -> api.GetInvestigationResponse:
        request = api.GetInvestigationRequest(investigation_index=investigation_index)
        return self._call(
            "GetInvestigation",
            lambda: self.stub.GetInvestigation(request, timeout=self.timeout_s),
        )

    def messages(
        self,
        *,
        start: int = 0,
        to_party: str = "",
        unacknowledged_only: bool = False,
        limit: int = 0,
    ) -> Iterator[api.ListMessagesResponse]:
        """Advance notices and hotline messages, with who acknowledged them."""
        request = api.ListMessagesRequest(
            start=start, to_party=to_party, unacknowledged_only=unacknowledged_only, limit=limit
        )
        yield from self._stream("ListMessages", self.stub.ListMessages, request, self.timeout_s)

    def tail(self, start: int = 0) -> Iterator[api.TailResponse]:
        """Entries from index `start` on, then each new one as it is committed, without end
        (close the iterator to stop: its call is cancelled). The server ends each Tail call
        within its stream time limit; this asks again from the next index, so an entry is
        neither missed nor repeated (a server that skips or repeats one: ValueError).

        A dropped link is followed again from the next index too, as `retry` allows
        (counted afresh once an entry arrives): a field monitor's tail outlives a link."""
        following = start
        attempts = retrying.Attempts(self.retry, "Tail", read=True, on_retry=self.on_retry)
        while True:
            attempts.next()
            call = self.stub.Tail(api.TailRequest(start_index=following))
            got = 0
            try:
                for response in call:
                    if response.index != following:
                        raise ValueError(
                            f"the server sent entry {response.index} where {following} was due"
                        )
                    following += 1
                    got += 1
                    yield response
                attempts.reset()
            except grpc.RpcError as e:
                if got:
                    attempts.reset()
                    # Cut off while sending history faster than it is read: go on from here.
                    if isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue
                    attempts.next()  # the call that failed, first of a new run
                attempts.failed(e)  # waits before asking again, or raises typed
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    def stats(
        self,
        since_us: int,
        until_us: int | None = None,
        bucket: api.StatsBucket.ValueType = api.STATS_BUCKET_DAY,
    ) -> api.StatsResponse:
        """Incident counts per day or ISO week over [since, until) (until None: the log's
        clock now) and each party's participation."""
        request = api.StatsRequest(since=to_timestamp(since_us), bucket=bucket)
        if until_us is not None:
            request.until.CopyFrom(to_timestamp(until_us))
        return self._call("Stats", lambda: self.stub.Stats(request, timeout=self.timeout_s * 2))

    def revalidate(
        self,
        dataset_sha256: str,
        *,
        changed_only: bool = False,
        parties: Sequence[str] = (),
        limit: int = 0,
    ) -> Iterator[api.RevalidateResponse]:
        request = api.RevalidateRequest(
            dataset_sha256=dataset_sha256,
            changed_only=changed_only,
            parties=list(parties),
            limit=limit,
        )
        yield from self._stream("Revalidate", self.stub.Revalidate, request, self.timeout_s * 10)

    # -- proofs ------------------------------------------------------------------------

    def trust_state(self, pinned_trust_root: str | None = None) -> TrustState:
        """The ledger's trust root (entry 0) as a TrustState: its log key, parties and
        policies. With `pinned_trust_root` (the SHA-256 hex of entry 0's envelope, as
        `ceasefire verify --trust-root` takes it) a different one raises
        VerificationError; without, entry 0 is trusted on first use. Either way the log
        key it names must have signed it. (The keys' later changes need the replay that
        `audit` does.)"""
        logged = log_pb2.LogEntry.FromString(self.entry(0).entry)
        if pinned_trust_root is not None:
            digest = hashlib.sha256(logged.envelope).hexdigest()
            if digest != pinned_trust_root.lower():
                raise _verification_error(
                    f"trust root {digest} is not the pinned one {pinned_trust_root}"
                )
        envelope = dsse.Envelope.from_json(logged.envelope)
        if envelope.payload_type != statements.TRUST_ROOT:
            raise _verification_error("entry 0 is not a trust root")
        trust = TrustState.from_trust_root(pb.TrustRoot.FromString(envelope.payload))
        log_kid = dsse.key_id(trust.log_public_key)
        if not any(
            s.keyid == log_kid and dsse.verify_signature(envelope, s, trust.log_public_key)
            for s in envelope.signatures
        ):
            raise _verification_error("entry 0 is not signed by the log key it names")
        return trust

    def prove_inclusion(
        self,
        index: int,
        *,
        trust: TrustState | None = None,
        require_witnesses: bool = False,
        timeout_s: float = 30.0,
    ) -> Proof:
        """Proof that entry `index`, as served, is in the log: a checkpoint signed by the
        log key (cosigned as the witness policy requires, with `require_witnesses`; waited
        for up to `timeout_s` until one covers the entry) and the inclusion proof checked
        against its root. `trust`: from `trust_state` (by default, entry 0 unpinned),
        whose witnesses are those entry 0 names; with `require_witnesses`, give
        `clients.monitor.trust_state(DIR)` instead (the witness keys in force as a monitor
        replayed them: a witness revoked since does not count, one added since does).
        Raises VerificationError when the proof fails: evidence against the log."""
        from ledger.formats import merkle

        served = self.entry(index)
        leaf = merkle.leaf_hash(served.entry)
        if served.leaf_hash and served.leaf_hash != leaf:
            raise _verification_error(f"entry {index}: the leaf hash served is not its own")
        return self._proof(index, leaf, trust, require_witnesses, timeout_s)

    def verify_receipt(
        self,
        response: api.SubmitResponse,
        *,
        trust: TrustState | None = None,
        require_witnesses: bool = False,
        timeout_s: float = 30.0,
    ) -> Proof:
        """A kept receipt checked: signed by the log key, and its entry included in a
        checkpoint that covers it (as `prove_inclusion`, and `trust` as there: entry 0's
        witnesses, or those in force with `clients.monitor.trust_state(DIR)`).
        VerificationError if not."""
        trust = trust or self.trust_state()
        receipt = receipt_of(response.signed_receipt, trust)
        return self._proof(receipt.index, receipt.leaf_hash, trust, require_witnesses, timeout_s)

    def _proof(
        self,
        index: int,
        leaf: bytes,
        trust: TrustState | None,
        require_witnesses: bool,
        timeout_s: float,
    ) -> Proof:
        from clients.checkpoints import await_inclusion

        trusted, hashes = await_inclusion(
            self,
            index,
            leaf,
            trust or self.trust_state(),
            require_witnesses=require_witnesses,
            timeout_s=timeout_s,
        )
        return Proof(index, leaf, trusted, hashes)

    def audit(self, *, pinned_trust_root: str | None = None) -> AuditResult:
        """The full audit `ceasefire verify` does: every entry replayed and judged here,
        the root rebuilt. Needs the server's dependencies (the geo libraries): install
        `ceasefire-ledger[server]`."""
        try:
            from clients.audit import audit
        except ImportError as e:
            raise ImportError(
                f"the full audit needs the server's dependencies ({e.name} is missing): "
                "pip install 'ceasefire-ledger[server]'"
            ) from e
        return audit(self, pinned_trust_root=pinned_trust_root)


@dataclass(frozen=True)
class Proof:
    """An entry proved in the log: its leaf hash, the trusted checkpoint (`.checkpoint`:
    size and root; `.signed_note`: the note as the log signed it, to keep) and the
    inclusion proof's hashes, all checkable offline later."""

    index: int
    leaf_hash: bytes
    trusted: TrustedCheckpoint
    hashes: list[bytes]

    @property
    def tree_size(self) -> int:
        return self.trusted.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.trusted.checkpoint.root_hash


def _verification_error(message: str) -> Exception:
    from ledger.verifier import VerificationError

    return VerificationError(message)


def receipt_of(signed_receipt: bytes, trust: TrustState) -> log_pb2.Receipt:
    """A signed receipt (SubmitResponse.signed_receipt) opened: the log key's signature
    checked, the payload a Receipt for this log. VerificationError if not."""
    try:
        envelope = dsse.Envelope.from_json(signed_receipt)
    except dsse.EnvelopeError as e:
        raise _verification_error(f"the receipt is not a DSSE envelope: {e}") from e
    log_kid = dsse.key_id(trust.log_public_key)
    if envelope.payload_type != statements.RECEIPT or not any(
        s.keyid == log_kid and dsse.verify_signature(envelope, s, trust.log_public_key)
        for s in envelope.signatures
    ):
        raise _verification_error("the receipt is not signed by the log key")
    receipt = log_pb2.Receipt.FromString(envelope.payload)
    if receipt.origin != trust.origin:
        raise _verification_error(f"the receipt is for {receipt.origin!r}, not this log")
    return receipt


def sign_statement(statement: Message, signing_keys: Sequence[SigningKey]) -> bytes:
    """`statement` (a message of ceasefire.v1.statements: IncidentReport, Attestation, ...)
    signed by each key, as the DSSE JSON envelope `LedgerClient.submit` takes. Its payload
    type follows from its message type."""
    payload_type = statements.payload_type(type(statement))
    if payload_type not in statements.SUBMITTABLE:
        raise ValueError(f"a {type(statement).__name__} is not a statement one submits")
    return dsse.sign(payload_type, statement.SerializeToString(), signing_keys).to_json()


@dataclass(frozen=True)
class Refused:
    """A statement the server refused: a SubmitBatch item's google.rpc.Status (RpcStatus
    is that message, field for field), or a failed call's, as `from_error` reads it."""

    status: status_pb2.Status

    @classmethod
    def from_error(cls, error: grpc.RpcError) -> Refused:
        """A failed call's status; its rich details (BadRequest, RetryInfo) if it has them."""
        if not isinstance(error, grpc.Call):
            return cls(status_pb2.Status(code=grpc.StatusCode.UNKNOWN.value[0], message=str(error)))
        rich = rpc_status.from_call(error)
        status = status_pb2.Status(code=error.code().value[0], message=error.details() or "")
        if rich is not None:
            status.details.extend(rich.details)
        return cls(status)

    @property
    def code(self) -> grpc.StatusCode:
        return next(
            (c for c in grpc.StatusCode if c.value[0] == self.status.code),
            grpc.StatusCode.UNKNOWN,
        )

    def describe(self) -> str:
        """`CODE: message`, as `describe_error` says it of a failed call."""
        return f"{self.code.name}: {self.status.message}{_retry_hint(self.status)}"

    def fields(self) -> list[str]:
        """The fields its BadRequest detail names."""
        return _violations(self.status)

    @property
    def transient(self) -> bool:
        """Refused for the moment (the server busy), not for what the statement says."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)

    def error(self) -> errors.ClientError:
        """The refusal as the typed exception a failed Submit of it would raise."""
        return errors.from_status(self.status)


def _batch_result(result: api.SubmitBatchResult) -> api.SubmitResponse | Refused:
    which = result.WhichOneof("result")
    if which == "accepted":
        return result.accepted
    if which == "error":
        # RpcStatus is google.rpc.Status field for field: its bytes parse as one.
        return Refused(status_pb2.Status.FromString(result.error.SerializeToString()))
    raise ValueError("the server answered an item with neither a receipt nor an error")


def batches(
    envelopes: Sequence[bytes],
    max_count: int = MAX_BATCH,
    max_bytes: int = MAX_BATCH_REQUEST_BYTES,
) -> Iterator[list[bytes]]:
    """`envelopes` in order, cut into SubmitBatch calls of at most `max_count` envelopes
    and `max_bytes` of request. One envelope too large for any call travels alone and is
    refused as its call is. A statement that changes the key state ends its call: the
    server judges a call's statements on the key state before it, so a report signed by a
    key that a rotation before it adds goes in the next call."""
    batch: list[bytes] = []
    size = 0
    for envelope in envelopes:
        # A repeated bytes field: a tag byte, the length as a varint, the bytes.
        cost = 1 + _varint_size(len(envelope)) + len(envelope)
        if batch and (len(batch) == max_count or size + cost > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(envelope)
        size += cost
        if _changes_key_state(envelope):
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _changes_key_state(envelope: bytes) -> bool:
    try:
        kind = json.loads(envelope).get("payloadType")
    except (ValueError, AttributeError):
        return False  # the server refuses it, whatever call it is in
    return kind in KEY_EVENT_TYPES


def _varint_size(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def client_tls_from_args(args: argparse.Namespace) -> ClientTls | None:
    """TLS from a command's --tls-ca, --tls-cert, --tls-key (defaults: CEASEFIRE_TLS_CA,
    _CERT, _KEY); None (plaintext) when none is given."""
    ca: Path | None = getattr(args, "tls_ca", None)
    cert: Path | None = getattr(args, "tls_cert", None)
    key: Path | None = getattr(args, "tls_key", None)
    if ca is None:
        if cert is not None or key is not None:
            raise TlsFileError(
                "--tls-cert and --tls-key need --tls-ca: the CA that signed the server's "
                "certificate (or CEASEFIRE_TLS_CA)"
            )
        return None
    return ClientTls.from_files(ca, cert, key)


def connect(args: argparse.Namespace) -> LedgerClient:
    """The client every command uses: --server, over TLS if --tls-ca (or its variable) is
    given, presenting --tls-cert/--tls-key if given; retrying as RetryPolicy() does, or
    with N attempts in all from --retries N (where a command has it) or CEASEFIRE_RETRIES
    (1: fail at once, for a script with its own plan); each wait told on stderr."""
    import os

    attempts: int | None = getattr(args, "retries", None)
    if attempts is None and os.environ.get("CEASEFIRE_RETRIES", "").strip():
        try:
            attempts = int(os.environ["CEASEFIRE_RETRIES"])
        except ValueError:
            raise ValueError("CEASEFIRE_RETRIES must be a whole number of attempts") from None
    policy = RetryPolicy() if attempts is None else RetryPolicy(max_attempts=max(1, attempts))
    return LedgerClient(
        args.server, tls=client_tls_from_args(args), retry=policy, on_retry=tell_retry
    )


def tell_retry(event: RetryEvent) -> None:
    """One line on stderr for a wait before another attempt (the CLI's `on_retry`)."""
    import sys

    print(
        f"{event.error.code().name}: {event.error.message}; trying again in "
        f"{event.delay_s:.1f} s (attempt {event.attempt + 1})",
        file=sys.stderr,
        flush=True,
    )


def describe_error(error: grpc.RpcError) -> str:
    """`CODE: message [field]` from a gRPC error, using the rich status details if present."""
    code = error.code() if isinstance(error, grpc.Call) else None
    message = error.details() if isinstance(error, grpc.Call) else str(error)
    name = code.name if code is not None else "ERROR"
    text = f"{name}: {message}"
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    return text + (_retry_hint(status) if status is not None else "")


def _retry_hint(status: status_pb2.Status) -> str:
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return f" (retry in {retry.retry_delay.ToMilliseconds() / 1000:.1f} s)"
    return ""


def field_violations(error: grpc.RpcError) -> list[str]:
    """The fields a BadRequest detail names."""
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    return _violations(status) if status is not None else []


def _violations(status: status_pb2.Status) -> list[str]:
    fields: list[str] = []
    detail: any_pb2.Any
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields
