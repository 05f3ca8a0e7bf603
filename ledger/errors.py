"""Domain errors. The gRPC layer maps each class to one status code (ledger.serving.grpc_status)."""

from __future__ import annotations

# How much of a value an error message echoes (see `shown`).
SHOWN_CHARS = 64


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message echoes it: its repr, cut to `limit` characters with a
    "…" marker and its length when longer. Input is never echoed unbounded: a status
    message travels in the response trailers, whose size gRPC limits."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


class LedgerError(Exception):
    """Base of every error a caller is meant to see; never carries a stack trace to clients."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class InvalidArgument(LedgerError):
    """Malformed or impossible input; `field` names the offending field."""


class Unauthenticated(LedgerError):
    """A signature does not verify."""


class PermissionDenied(LedgerError):
    """A valid signature by a key that may not say this (unknown key, wrong party or role)."""


class NotFound(LedgerError):
    """No such entry."""


class AlreadyExists(LedgerError):
    """The statement is in the log already, in a form this one is not (other signatures)."""


class OutOfRange(LedgerError):
    """An index or tree size beyond the current tree."""


class FailedPrecondition(LedgerError):
    """The ledger is not in a state that allows this (e.g. not initialised)."""


class Overloaded(LedgerError):
    """The sequencer queue is full; the client should retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(LedgerError):
    """A call ran past one of the server's time bounds (an upload that sends too slowly,
    a reader that stops reading); see docs/architecture.md, "Serving"."""


class Corrupt(LedgerError):
    """Stored data fails an integrity check; the operator must look."""
