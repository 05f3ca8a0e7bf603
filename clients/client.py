"""A typed client for the LedgerService, and readable descriptions of its errors."""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from ledger import kinds
from ledger.clock import to_timestamp
from ledger.tls import TlsFileError, read_certificates, read_key_pair

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK_BYTES = 60_000
# SubmitBatch's bounds, as the API states them: envelopes in one call, and the bytes of the
# request (the server's largest message; ledger.grpc_server.MAX_MESSAGE_BYTES).
MAX_BATCH = 256
MAX_BATCH_REQUEST_BYTES = 64_096


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
    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: ClientTls | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """A plaintext channel to `target`, or with `tls` a TLS one."""
        self.target = target
        self.timeout_s = timeout_s
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

    def submit(self, envelope: bytes) -> api.SubmitResponse:
        return self.stub.Submit(api.SubmitRequest(envelope=envelope), timeout=self.timeout_s)

    def submit_batch(self, envelopes: Sequence[bytes]) -> list[api.SubmitResponse | Refused]:
        """One SubmitBatch call (see `batches` to split many envelopes into calls): for
        each envelope, in order, its receipt or its refusal. A refusal of the whole call
        (no envelope, too many, a writers' port needing a certificate) raises RpcError."""
        response = self.stub.SubmitBatch(
            api.SubmitBatchRequest(envelopes=list(envelopes)), timeout=self.timeout_s * 2
        )
        if len(response.results) != len(envelopes):
            raise ValueError(
                f"the server answered {len(response.results)} results for "
                f"{len(envelopes)} envelopes"
            )
        return [_batch_result(r) for r in response.results]

    def entry(self, index: int) -> api.GetEntryResponse:
        return self.stub.GetEntry(api.GetEntryRequest(index=index), timeout=self.timeout_s)

    def entry_by_envelope(self, digest: bytes) -> api.GetEntryResponse:
        return self.stub.GetEntry(
            api.GetEntryRequest(envelope_sha256=digest), timeout=self.timeout_s
        )

    def entry_by_statement(self, digest: bytes) -> api.GetEntryResponse:
        """The entry logging the statement whose identity (SHA-256 of its PAE) is `digest`."""
        return self.stub.GetEntry(
            api.GetEntryRequest(statement_sha256=digest), timeout=self.timeout_s
        )

    def entries(self, start: int, end: int) -> Iterator[api.GetEntriesResponse]:
        """Entries [start, end) (end 0: the current size), paging past the per-call cap."""
        if end == 0:
            end = self.checkpoint().tree_size
        page = 10_000
        while start < end:
            stop = min(end, start + page)
            got = 0
            for e in self.stub.GetEntries(
                api.GetEntriesRequest(start=start, end=stop), timeout=self.timeout_s * 10
            ):
                got += 1
                yield e
            if got == 0:
                return
            start += got

    def checkpoint(self, witnessed: bool = False) -> api.GetCheckpointResponse:
        """The newest signed checkpoint with the cosignatures gathered for it; `witnessed`:
        the newest whose cosignatures meet the trust root's witness policy. Nothing here
        is verified: see clients/checkpoints.py."""
        return self.stub.GetCheckpoint(
            api.GetCheckpointRequest(witnessed=witnessed), timeout=self.timeout_s
        )

    def inclusion_proof(self, index: int, tree_size: int = 0) -> api.GetInclusionProofResponse:
        return self.stub.GetInclusionProof(
            api.GetInclusionProofRequest(index=index, tree_size=tree_size),
            timeout=self.timeout_s,
        )

    def consistency_proof(
        self, old_size: int, new_size: int = 0
    ) -> api.GetConsistencyProofResponse:
        return self.stub.GetConsistencyProof(
            api.GetConsistencyProofRequest(old_size=old_size, new_size=new_size),
            timeout=self.timeout_s,
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
        yield from self.stub.Timeline(request, timeout=self.timeout_s * 10)

    def timeline_page(self, request: api.TimelineRequest) -> Iterator[api.TimelineResponse]:
        """One page of a Timeline query (clients/query_args.py builds one from the command
        line): each response's next_page_token continues after it, and the last one's
        `more` tells whether another page has more."""
        yield from self.stub.Timeline(request, timeout=self.timeout_s * 10)

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

        return self.stub.SubmitWithBlobs(parts(), timeout=self.timeout_s * 4)

    def blob(self, sha256: str) -> bytes:
        """A stored file by its digest, checked against it."""
        data = b"".join(
            r.data
            for r in self.stub.GetBlob(api.GetBlobRequest(sha256=sha256), timeout=self.timeout_s)
        )
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"the server sent bytes that are not {sha256}")
        return data

    def dossier(self, incident_index: int, as_of_index: int = 0) -> api.GetDossierResponse:
        """One incident and its linked entries; as the log stood before `as_of_index`
        (0: now)."""
        return self.stub.GetDossier(
            api.GetDossierRequest(incident_index=incident_index, as_of_index=as_of_index),
            timeout=self.timeout_s,
        )

    def investigation(self, investigation_index: int) -> api.GetInvestigationResponse:
        return self.stub.GetInvestigation(
            api.GetInvestigationRequest(investigation_index=investigation_index),
            timeout=self.timeout_s,
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
        yield from self.stub.ListMessages(request, timeout=self.timeout_s)

    def tail(self, start: int = 0) -> Iterator[api.TailResponse]:
        """Entries from index `start` on, then each new one as it is committed, without end
        (close the iterator to stop: its call is cancelled). The server ends each Tail call
        within its stream time limit; this asks again from the next index, so an entry is
        neither missed nor repeated (a server that skips or repeats one: ValueError)."""
        following = start
        while True:
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
            except grpc.RpcError as e:
                # Cut off while sending history faster than it is read: go on from here.
                if not (isinstance(e, grpc.Call) and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if got == 0:
                    raise
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
        return self.stub.Stats(request, timeout=self.timeout_s * 2)

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
        yield from self.stub.Revalidate(request, timeout=self.timeout_s * 10)


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
    return kind in kinds.KEY_EVENTS


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
    given, presenting --tls-cert/--tls-key if given."""
    return LedgerClient(args.server, tls=client_tls_from_args(args))


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
