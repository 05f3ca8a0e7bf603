"""The one place where domain errors become gRPC status codes.

Each error carries a google.rpc.Status with details: BadRequest naming the field for
INVALID_ARGUMENT, RetryInfo for UNAVAILABLE. Unexpected exceptions become INTERNAL with a
generic message; their stack trace goes to the server log, never to the client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger import errors

log = logging.getLogger(__name__)

CODES: dict[type[errors.LedgerError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.OutOfRange: code_pb2.OUT_OF_RANGE,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Overloaded: code_pb2.UNAVAILABLE,
    errors.Corrupt: code_pb2.DATA_LOSS,
}


def to_status(error: errors.LedgerError) -> grpc.Status:
    code = next(c for cls, c in CODES.items() if isinstance(error, cls))
    status = status_pb2.Status(code=code, message=str(error))
    if error.field:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
        status.details.append(detail)
    if isinstance(error, errors.Overloaded):
        detail = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(error.retry_after_s * 1000))
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return rpc_status.to_status(status)


F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, e: BaseException, method: str) -> None:
    if isinstance(e, errors.LedgerError):
        context.abort_with_status(to_status(e))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


def unary(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as e:
            _abort(context, e, fn.__name__)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except Exception as e:
            _abort(context, e, fn.__name__)

    return wrapper  # type: ignore[return-value]
