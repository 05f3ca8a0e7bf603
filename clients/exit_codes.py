"""The exit codes of `ceasefire`, in one place, so that a script can tell evidence against
the log from a log it could not reach.

verify, proof, checkpoint and monitor use all five; the other commands 0, 1 and 2.
"""

from __future__ import annotations

import grpc

OK = 0
FAILED = 1  # refused, or another error (as before these codes were split)
USAGE = 2
EVIDENCE = 3  # tampering or a split: a check on what the log signed failed
UNREACHABLE = 4  # the log could not be reached: nothing was checked

# The commands whose gRPC errors are told apart (UNREACHABLE); the others keep FAILED.
AUDIT_COMMANDS = frozenset({"verify", "proof", "checkpoint", "monitor"})

# gRPC statuses that mean "the log did not answer", not "the log answered no".
_UNREACHABLE_STATUSES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# Worst first: what a long-running monitor ends with after several runs.
_SEVERITY = (EVIDENCE, FAILED, UNREACHABLE, USAGE, OK)

HELP = (
    "exit codes: 0 verified, 1 failed or refused, 2 usage, "
    "3 evidence of tampering or of a split, 4 the log could not be reached"
)


def for_rpc_error(error: grpc.RpcError) -> int:
    code = error.code() if isinstance(error, grpc.Call) else None
    return UNREACHABLE if code in _UNREACHABLE_STATUSES else FAILED


def worst(*codes: int) -> int:
    """The most serious of the codes (EVIDENCE over FAILED over UNREACHABLE ... over OK)."""
    known = [c for c in codes if c in _SEVERITY]
    return min(known, key=_SEVERITY.index, default=OK)
