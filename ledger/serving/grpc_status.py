"""The one place where domain errors become gRPC status codes.

Each error carries a google.rpc.Status with details: BadRequest naming the field for
INVALID_ARGUMENT, RetryInfo for UNAVAILABLE. Unexpected exceptions become INTERNAL with a
generic message; their stack trace goes to the server log, never to the client.

The message and the BadRequest travel in the response trailers, whose size gRPC limits (8
KiB by default, above which a client gets RESOURCE_EXHAUSTED instead of the error): each
text is cut to MAX_TEXT_CHARS characters and MAX_TEXT_BYTES bytes of UTF-8, marked "…",
and nothing that looks like a server filesystem path goes out.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger import errors

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 400
MAX_TEXT_BYTES = 1000  # non-ASCII is percent-encoded in grpc-message: 3 bytes a byte
MAX_FIELD_CHARS = 120
# An absolute path (or one under ~), however it got into a message.
_PATH = re.compile(r"(?<![\w.:/~-])~?/(?:[^\s/'\"()<>:;,]+/)+[^\s/'\"()<>:;,]*")


def bounded(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as it may leave the server: no filesystem paths, valid UTF-8 (a lone surrogate
    from JSON escapes is shown escaped), at most `limit` characters and MAX_TEXT_BYTES
    bytes, with "…" where it was cut."""
    text = _PATH.sub("<path>", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    data = text.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        text = data[: MAX_TEXT_BYTES - 3].decode("utf-8", "ignore") + "…"
    return text


CODES: dict[type[errors.LedgerError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.OutOfRange: code_pb2.OUT_OF_RANGE,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Overloaded: code_pb2.UNAVAILABLE,
    errors.DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
    errors.Corrupt: code_pb2.DATA_LOSS,
}


def status_message(error: errors.LedgerError) -> status_pb2.Status:
    """The google.rpc.Status for `error`: what a call ends with (`to_status`), and what
    SubmitBatch gives an item it refuses, so both say the same."""
    code = next(c for cls, c in CODES.items() if isinstance(error, cls))
    field = bounded(error.field, MAX_FIELD_CHARS) if error.field else ""
    message = bounded(error.message)
    status = status_pb2.Status(code=code, message=f"{field}: {message}" if field else message)
    if field:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
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
    return status


def to_status(error: errors.LedgerError) -> grpc.Status:
    return rpc_status.to_status(status_message(error))


F = TypeVar("F", bound=Callable[..., Any])


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], e: BaseException, method: str
) -> NoReturn:
    """End the call with the status for `e`: a LedgerError's own, anything else INTERNAL
    with a generic message (its trace goes to the server log)."""
    if isinstance(e, errors.LedgerError):
        status = to_status(e)
        await context.abort(status.code, status.details, status.trailing_metadata)
    log.error("%s failed", method, exc_info=e)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")


def unary(fn: F) -> F:
    """For an async handler that returns its response."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise  # the call has its status already
        except Exception as e:
            await abort(context, e, fn.__name__)

    return wrapper  # type: ignore[return-value]


def streaming(fn: F) -> F:
    """For an async generator handler that yields its responses."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await abort(context, e, fn.__name__)

    return wrapper  # type: ignore[return-value]
