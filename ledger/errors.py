"""Domain errors. The gRPC layer maps each class to one status code (ledger.grpc_status)."""

from __future__ import annotations


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


class Corrupt(LedgerError):
    """Stored data fails an integrity check; the operator must look."""
