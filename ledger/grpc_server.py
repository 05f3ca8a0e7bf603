"""Thin gRPC layer: decode requests, call the Ledger, encode responses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import ledger_service_pb2_grpc as api_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ledger import geofacts
from ledger.clock import to_timestamp, to_us
from ledger.errors import InvalidArgument, NotFound
from ledger.grpc_status import streaming, unary
from ledger.service import MAX_ENVELOPE_BYTES, Ledger
from ledger.statements import MAX_DATASET_BYTES, MAX_DATASET_FILES
from ledger.storage import StoredEntry

log = logging.getLogger(__name__)

SERVICE_NAME = api.DESCRIPTOR.services_by_name["LedgerService"].full_name
# Requests are small: a bounded envelope plus framing. Refuse anything larger up front.
MAX_MESSAGE_BYTES = MAX_ENVELOPE_BYTES + 4096
BLOB_CHUNK_BYTES = 60_000


class LedgerServicer(api_grpc.LedgerServiceServicer):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @unary
    def Submit(
        self, request: api.SubmitRequest, context: grpc.ServicerContext
    ) -> api.SubmitResponse:
        accepted = self.ledger.submit(request.envelope)
        return api.SubmitResponse(
            signed_receipt=accepted.signed_receipt,
            receipt=accepted.receipt,
            duplicate=accepted.duplicate,
        )

    @unary
    def GetEntry(
        self, request: api.GetEntryRequest, context: grpc.ServicerContext
    ) -> api.GetEntryResponse:
        key = request.WhichOneof("key")
        if key in ("envelope_sha256", "statement_sha256"):
            e = self.ledger.entry_by_digest(key, getattr(request, key))
        else:
            e = self.ledger.entry(request.index)
        return api.GetEntryResponse(index=e.index, entry=e.entry, leaf_hash=e.leaf_hash)

    @streaming
    def GetEntries(
        self, request: api.GetEntriesRequest, context: grpc.ServicerContext
    ) -> Iterator[api.GetEntriesResponse]:
        for e in self.ledger.entries(request.start, request.end):
            yield api.GetEntriesResponse(index=e.index, entry=e.entry, leaf_hash=e.leaf_hash)

    @unary
    def GetCheckpoint(
        self, request: api.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> api.GetCheckpointResponse:
        cp = self.ledger.checkpoint()
        return api.GetCheckpointResponse(signed_note=cp.note, tree_size=cp.size, root_hash=cp.root)

    @unary
    def GetInclusionProof(
        self, request: api.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> api.GetInclusionProofResponse:
        size, proof, leaf_hash = self.ledger.inclusion_proof(request.index, request.tree_size)
        return api.GetInclusionProofResponse(
            index=request.index, tree_size=size, hashes=proof, leaf_hash=leaf_hash
        )

    @unary
    def GetConsistencyProof(
        self, request: api.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> api.GetConsistencyProofResponse:
        size, proof = self.ledger.consistency_proof(request.old_size, request.new_size)
        return api.GetConsistencyProofResponse(
            old_size=request.old_size, new_size=size, hashes=proof
        )

    @streaming
    def Timeline(
        self, request: api.TimelineRequest, context: grpc.ServicerContext
    ) -> Iterator[api.TimelineResponse]:
        since = to_us(request.since) if request.HasField("since") else None
        until = to_us(request.until) if request.HasField("until") else None
        shown = self.ledger.timeline(
            since, until, list(request.parties), request.limit, request.as_of_index
        )
        for s in shown:
            yield api.TimelineResponse(
                index=s.stored.index,
                entry=s.stored.entry,
                report=s.report,
                geo=s.geo,
                status=s.status,
                current=s.current,
            )

    @unary
    def GetDossier(
        self, request: api.GetDossierRequest, context: grpc.ServicerContext
    ) -> api.GetDossierResponse:
        dossier = self.ledger.dossier(request.incident_index, request.as_of_index)
        return api.GetDossierResponse(
            status=dossier.status,
            entries=_dossier(dossier.entries),
            current=dossier.current,
        )

    @unary
    def GetInvestigation(
        self, request: api.GetInvestigationRequest, context: grpc.ServicerContext
    ) -> api.GetInvestigationResponse:
        info, status, as_of, entries = self.ledger.investigation(request.investigation_index)
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
    def ListMessages(
        self, request: api.ListMessagesRequest, context: grpc.ServicerContext
    ) -> Iterator[api.ListMessagesResponse]:
        for stored, info, replies in self.ledger.messages(
            request.start, request.to_party, request.unacknowledged_only, request.limit
        ):
            yield api.ListMessagesResponse(
                index=stored.index,
                entry=stored.entry,
                acknowledged_by=info.acknowledged,
                replies=replies,
            )

    @unary
    def SubmitWithBlobs(
        self, requests: Iterator[api.SubmitWithBlobsRequest], context: grpc.ServicerContext
    ) -> api.SubmitWithBlobsResponse:
        envelope = b""
        files: dict[str, bytearray] = {}
        total = 0
        for i, part in enumerate(requests):
            kind = part.WhichOneof("part")
            if i == 0:
                if kind != "envelope":
                    raise InvalidArgument(
                        "the first message must hold the envelope", field="envelope"
                    )
                envelope = part.envelope
                continue
            if kind != "chunk":
                raise InvalidArgument("only the first message holds the envelope", field="envelope")
            total += len(part.chunk.data)
            if total > MAX_DATASET_BYTES:
                raise InvalidArgument("at most 16 MiB of files", field="chunk")
            if part.chunk.name not in files and len(files) >= MAX_DATASET_FILES:
                raise InvalidArgument("too many files", field="chunk.name")
            files.setdefault(part.chunk.name, bytearray()).extend(part.chunk.data)
        accepted = self.ledger.submit(envelope, {n: bytes(d) for n, d in files.items()})
        return api.SubmitWithBlobsResponse(
            signed_receipt=accepted.signed_receipt,
            receipt=accepted.receipt,
            duplicate=accepted.duplicate,
        )

    @streaming
    def GetBlob(
        self, request: api.GetBlobRequest, context: grpc.ServicerContext
    ) -> Iterator[api.GetBlobResponse]:
        data = self.ledger.store.get_blob(request.sha256)
        if data is None:
            raise NotFound(f"no file with SHA-256 {request.sha256[:64]}")
        for start in range(0, len(data), BLOB_CHUNK_BYTES):
            yield api.GetBlobResponse(data=data[start : start + BLOB_CHUNK_BYTES])

    @streaming
    def Revalidate(
        self, request: api.RevalidateRequest, context: grpc.ServicerContext
    ) -> Iterator[api.RevalidateResponse]:
        since = to_us(request.since) if request.HasField("since") else None
        until = to_us(request.until) if request.HasField("until") else None
        for index, recorded, other, error in self.ledger.revalidate(
            request.dataset_sha256, since, until, list(request.parties), request.limit
        ):
            changed = other is None or geofacts.side(other) != geofacts.side(recorded)
            if request.changed_only and not changed:
                continue
            response = api.RevalidateResponse(
                index=index, recorded=recorded, side_changed=changed, error=error
            )
            if other is not None:
                response.revalidated.CopyFrom(other)
            yield response


def _dossier(entries: list[tuple[StoredEntry, str]]) -> list[api.DossierEntry]:
    return [api.DossierEntry(index=e.index, entry=e.entry, relation=r) for e, r in entries]


def build_server(ledger: Ledger, address: str, *, max_workers: int = 16) -> tuple[grpc.Server, int]:
    """A started-ready server (call .start()) and the port it bound."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
        maximum_concurrent_rpcs=max_workers * 8,
    )
    api_grpc.add_LedgerServiceServicer_to_server(LedgerServicer(ledger), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return server, port
