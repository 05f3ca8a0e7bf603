"""Typed errors of the client library: what a failed call means, as an exception to catch.

Every error LedgerClient raises for a call the server (or the link) refused is a
`ClientError`, and a `ClientError` is a `grpc.RpcError` and a `grpc.Call`: code written
against gRPC (`except grpc.RpcError as e: e.code(), e.details()`, `describe_error`,
`field_violations`, `rpc_status.from_call`) keeps working unchanged.

The server maps its domain errors to status codes in one place (ledger/serving/grpc_status.py);
`from_status` maps them back, in one place, to the classes below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

# The metadata key gRPC's rich status travels under (grpc_status.rpc_status reads it).
_DETAILS_KEY = "grpc-status-details-bin"


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode with this number (UNKNOWN for a number gRPC does not define)."""
    return next((c for c in grpc.StatusCode if c.value[0] == number), grpc.StatusCode.UNKNOWN)


def fields_of(status: status_pb2.Status) -> list[str]:
    """The fields a status's BadRequest detail names, as the docs spell them."""
    fields: list[str] = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.extend(v.field for v in bad.field_violations)
    return fields


def retry_after_of(status: status_pb2.Status) -> float | None:
    """The wait a status's RetryInfo detail asks for, in seconds (None: it has none)."""
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToMilliseconds()) / 1000
    return None


class ClientError(grpc.RpcError, grpc.Call):
    """A call that failed: `code()` (grpc.StatusCode), `message` (the server's text),
    `fields` (the fields a BadRequest detail names), `retry_after` (seconds a RetryInfo
    detail asks to wait, or None), `attempts` (calls made, retries included).

    It is also a finished grpc.Call, so `code()`, `details()` and `trailing_metadata()`
    answer as gRPC's own error does (the rich status details included); `status` is the
    whole google.rpc.Status."""

    def __init__(
        self,
        status: status_pb2.Status,
        *,
        attempts: int = 1,
        trailing: Sequence[tuple[str, str | bytes]] | None = None,
    ) -> None:
        self.status = status
        self.status_code = status_code(status.code)
        self.message: str = status.message
        self.fields = fields_of(status)
        self.retry_after = retry_after_of(status)
        self.attempts = attempts
        self._trailing = (
            tuple(trailing)
            if trailing is not None
            else ((_DETAILS_KEY, status.SerializeToString()),)
            if status.details
            else ()
        )
        super().__init__(f"{self.status_code.name}: {self.message}")

    def code(self) -> grpc.StatusCode:
        return self.status_code

    def details(self) -> str:
        return self.message

    # (key, value) pairs at run time, as gRPC gives them; its stubs name another type.
    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self) -> Any:
        return ()

    # A finished call: the RpcContext half of grpc.Call.
    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def __str__(self) -> str:
        text = f"{self.status_code.name}: {self.message}"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text


class Transient(ClientError):
    """The log did not take the call now; the same call may succeed later (the client
    retried it already, as its RetryPolicy allows)."""


class Unreachable(Transient):
    """UNAVAILABLE without a RetryInfo (no link, the server down or restarting, a TLS
    handshake refused), or DEADLINE_EXCEEDED: nothing was decided."""


class Busy(Transient):
    """The server answered that it is overloaded (UNAVAILABLE with RetryInfo: its write
    queue or upload budget is full) or RESOURCE_EXHAUSTED; `retry_after` says when to
    come back."""


class InvalidStatement(ClientError):
    """INVALID_ARGUMENT: the statement or request is malformed or impossible; `fields`
    names what to fix. Sending it again will not help."""


class NotAuthenticated(ClientError):
    """UNAUTHENTICATED: a signature does not verify, or the writers' port needs a client
    certificate."""


class NotPermitted(ClientError):
    """PERMISSION_DENIED: a valid signature by a key that may not say this (unknown or
    revoked key, another party's, the wrong role)."""


class NotFound(ClientError):
    """NOT_FOUND: no such entry, file or statement."""


class AlreadyExists(ClientError):
    """ALREADY_EXISTS: the statement is in the log already, signed by other keys. (The
    same envelope again is no error: it gets its first receipt, `duplicate` set.)"""


class OutOfRange(ClientError):
    """OUT_OF_RANGE: an index or tree size beyond the current tree."""


class FailedPrecondition(ClientError):
    """FAILED_PRECONDITION: the log is not in a state that allows this now (the entry a
    statement names does not stand as it must, no witnessed checkpoint yet, ...)."""


class DataLoss(ClientError):
    """DATA_LOSS: stored data failed an integrity check on the server; its operator must
    look."""


class ServerError(ClientError):
    """Any other status (INTERNAL, UNKNOWN, UNIMPLEMENTED, CANCELLED, ...)."""


_CLASSES: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: Unreachable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Busy,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidStatement,
    grpc.StatusCode.UNAUTHENTICATED: NotAuthenticated,
    grpc.StatusCode.PERMISSION_DENIED: NotPermitted,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}


def class_for(status: status_pb2.Status) -> type[ClientError]:
    """The exception class for a status: the one place codes map back to types."""
    code = status_code(status.code)
    if code == grpc.StatusCode.UNAVAILABLE:
        # The server's own "busy" carries RetryInfo; a dead link or a refused handshake not.
        return Busy if retry_after_of(status) is not None else Unreachable
    return _CLASSES.get(code, ServerError)


def from_status(
    status: status_pb2.Status,
    *,
    attempts: int = 1,
    trailing: Sequence[tuple[str, str | bytes]] | None = None,
) -> ClientError:
    """The typed error for a google.rpc.Status (a failed call's, or a SubmitBatch item's)."""
    return class_for(status)(status, attempts=attempts, trailing=trailing)


def from_rpc_error(error: grpc.RpcError, *, attempts: int = 1) -> ClientError:
    """The typed error for a failed gRPC call (itself if it is one already)."""
    if isinstance(error, ClientError):
        return error
    if not isinstance(error, grpc.Call):
        return ServerError(
            status_pb2.Status(code=grpc.StatusCode.UNKNOWN.value[0], message=str(error)),
            attempts=attempts,
        )
    return from_status(
        status_of(error), attempts=attempts, trailing=tuple(error.trailing_metadata() or ())
    )


def status_of(call: grpc.Call) -> status_pb2.Status:
    """A failed call's google.rpc.Status: its code, message and rich details, if any."""
    code = call.code()
    status = status_pb2.Status(code=code.value[0], message=call.details() or "")
    for key, value in call.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            rich = status_pb2.Status.FromString(value)
            # gRPC checks that the rich status agrees with the call's; so does this.
            if rich.code == status.code:
                status.details.extend(rich.details)
    return status
