"""What a client may trust of the log's checkpoints: the log's signature, the witnesses'
cosignatures judged by the trust root's policy, and a receipt's entry included in one.

Verification policy (whether the witnesses must have cosigned) is the caller's choice;
the mechanics are ledger/formats/: note.py, cosignature.py and merkle.py.

Whose cosignatures count is the given TrustState's: the witness keys it holds in force.
The trust root (entry 0) alone knows only the witnesses it names: a witness revoked since
would still count, one added since would not. `key_state` gives `proof` and `outbox
check` the key state a monitor replayed instead (`--monitor-state DIR`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from ceasefire.v1 import ledger_service_pb2 as api

from clients.client import LedgerClient
from clients.verified_state import StateError
from ledger.formats import merkle
from ledger.formats.note import Checkpoint
from ledger.trust import TrustState
from ledger.verifier import Replay, VerificationError, open_checkpoint
from ledger.witnesses import QuorumError, Witnessing, witnessing

ENTRY_0_WITNESSES_WARNING = (
    "warning: the witnesses counted are those the trust root (entry 0) names: a witness "
    "added or revoked since is not known; give --monitor-state DIR (the key state of "
    "`ceasefire monitor --state-dir DIR`) or run a full `ceasefire verify --require-witnesses`"
)


@dataclass(frozen=True)
class TrustedCheckpoint:
    checkpoint: Checkpoint
    signed_note: str  # the log's signature and the cosignatures, as served
    witnessing: Witnessing


def key_state(
    client: LedgerClient,
    *,
    pinned_trust_root: str | None = None,
    monitor_state: Path | None = None,
    require_witnesses: bool = False,
    err: TextIO | None = None,
) -> TrustState:
    """The key state a command judges the log's checkpoints with: the trust root (entry 0,
    checked against `pinned_trust_root` if given) or, with `monitor_state`, the key state
    that `ceasefire monitor --state-dir DIR` replayed as of its last run (refused with a
    StateError if DIR holds none, or one of another trust root than this log's). Without
    it and with `require_witnesses`, one warning line on `err` (default stderr): entry 0
    knows no witness added or revoked since."""
    root = Replay(pinned_trust_root=pinned_trust_root)
    root.add(0, client.entry(0).entry)
    assert root.trust is not None
    if monitor_state is None:
        if require_witnesses:
            print(ENTRY_0_WITNESSES_WARNING, file=err or sys.stderr, flush=True)
        return root.trust
    from clients.monitor import MonitorStateError, trust_state

    try:
        return trust_state(monitor_state, trust_root=root.trust_root_digest)
    except MonitorStateError as e:
        raise StateError(f"--monitor-state: {e}") from None


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
