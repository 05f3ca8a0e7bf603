"""What a client may trust of the log's checkpoints: the log's signature, the witnesses'
cosignatures judged by the trust root's policy, and a receipt's entry included in one.

Verification policy (whether the witnesses must have cosigned) is the caller's choice;
the mechanics are ledger/formats/: note.py, cosignature.py and merkle.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from ceasefire.v1 import ledger_service_pb2 as api

from clients.client import LedgerClient
from ledger.formats import merkle
from ledger.formats.note import Checkpoint
from ledger.trust import TrustState
from ledger.verifier import VerificationError, open_checkpoint
from ledger.witnesses import QuorumError, Witnessing, witnessing


@dataclass(frozen=True)
class TrustedCheckpoint:
    checkpoint: Checkpoint
    signed_note: str  # the log's signature and the cosignatures, as served
    witnessing: Witnessing


def trusted_checkpoint(
    client: LedgerClient, trust: TrustState, *, require_witnesses: bool = False
) -> TrustedCheckpoint:
    """The newest checkpoint signed by the log key; with `require_witnesses`, the newest
    whose cosignatures meet the witness policy (QuorumError if the log has none)."""
    served = served_checkpoint(client, require_witnesses=require_witnesses)
    return check(served.signed_note, trust, require_witnesses=require_witnesses)


def served_checkpoint(
    client: LedgerClient, *, require_witnesses: bool
) -> api.GetCheckpointResponse:
    """The checkpoint as served, unverified: the newest, or with `require_witnesses` the
    newest the log finds witnessed (QuorumError when it has none)."""
    try:
        return client.checkpoint(witnessed=require_witnesses)
    except grpc.RpcError as e:
        if require_witnesses and e.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise QuorumError(e.details() or "no witnessed checkpoint") from None
        raise


def check(signed_note: str, trust: TrustState, *, require_witnesses: bool) -> TrustedCheckpoint:
    """A served note: the log's signature (VerificationError), the cosignatures that verify
    (a bad one by a known witness: VerificationError), and the policy if required."""
    checkpoint = open_checkpoint(signed_note, trust)
    try:
        witnessed = witnessing(signed_note, trust)
    except ValueError as e:  # NoteError: a known witness's line that does not verify
        raise VerificationError(f"checkpoint cosignature: {e}") from e
    if require_witnesses:
        witnessed.require()
    return TrustedCheckpoint(checkpoint, signed_note, witnessed)


def await_inclusion(
    client: LedgerClient,
    index: int,
    leaf_hash: bytes,
    trust: TrustState,
    *,
    require_witnesses: bool = False,
    timeout_s: float = 30.0,
    poll_s: float = 0.2,
) -> tuple[TrustedCheckpoint, list[bytes]]:
    """A receipt made a proof: wait until a checkpoint (cosigned as the policy requires,
    with `require_witnesses`) covers entry `index`, then check the entry's inclusion in it.
    Returns the checkpoint and the inclusion proof, checkable offline later."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            trusted = trusted_checkpoint(client, trust, require_witnesses=require_witnesses)
            if trusted.checkpoint.size > index:
                break
            waiting = f"the newest checkpoint covers {trusted.checkpoint.size} entries"
        except QuorumError as e:
            waiting = str(e)
        if time.monotonic() >= deadline:
            raise QuorumError(f"no checkpoint covering entry {index} in {timeout_s:g} s: {waiting}")
        time.sleep(poll_s)
    cp = trusted.checkpoint
    proof = list(client.inclusion_proof(index, cp.size).hashes)
    try:
        merkle.verify_inclusion(leaf_hash, index, cp.size, proof, cp.root_hash)
    except merkle.ProofError as e:
        raise VerificationError(
            f"entry {index} is not included in the signed checkpoint of size {cp.size}: {e}",
            index=index,
        ) from e
    return trusted, proof
