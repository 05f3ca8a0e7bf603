"""Retries for a link that drops and a server that is busy: exponential backoff with
jitter, the server's RetryInfo honoured, the whole bounded in attempts and in time.

What is retried (`retryable`):
- UNAVAILABLE: no link, the server restarting, or the server busy (its RetryInfo says when
  to come back). Not a TLS handshake the server refused: trying again changes nothing.
- RESOURCE_EXHAUSTED: a limit of the moment; not a message over the size limit.
- DEADLINE_EXCEEDED: only for reads (a write that timed out may be committing; the
  caller's own retry of the same envelope is safe, and gets the first receipt).

gRPC's own service-config retryPolicy could retry UNAVAILABLE inside the channel, but it
does not read RetryInfo and cannot tell the server's "busy" from a dead link; one small
loop here does both, and tells the caller about each wait (`on_retry`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import grpc

from clients import errors

T = TypeVar("T")

# gRPC's texts for a TLS handshake that failed: a configuration to fix, not a link to wait for.
_HANDSHAKE_TEXTS = ("handshake", "ssl", "certificate", "tls")
_TOO_LARGE_TEXT = "larger than max"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is tried again.

    `max_attempts` calls in all (1: no retry); the n-th wait is `initial_backoff_s *
    multiplier**(n-1)`, at most `max_backoff_s`, with jitter (between half of it and all of
    it), or the server's RetryInfo delay when it sent one (never less: that is the wait the
    server asked for). No wait is begun that would end more than `deadline_s` after the
    first attempt started; the last error is raised instead."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    multiplier: float = 2.0
    deadline_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.initial_backoff_s, self.max_backoff_s, self.deadline_s) < 0:
            raise ValueError("backoffs and the deadline cannot be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt: every failure is raised at once."""
        return cls(max_attempts=1)

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first), before jitter."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))


@dataclass(frozen=True)
class RetryEvent:
    """A failed attempt that will be tried again after `delay_s`: for progress lines
    ("link down; trying again in 2.0 s") and for tests."""

    method: str
    attempt: int  # the attempt that failed, from 1
    delay_s: float
    error: errors.ClientError


OnRetry = Callable[[RetryEvent], None]


def retryable(error: errors.ClientError, *, read: bool) -> bool:
    """Whether another attempt of the same call may succeed (see the module's docstring)."""
    code = error.code()
    text = error.message.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return error.retry_after is not None or not any(t in text for t in _HANDSHAKE_TEXTS)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _TOO_LARGE_TEXT not in text
    return read and code == grpc.StatusCode.DEADLINE_EXCEEDED


class Attempts:
    """The attempts of one call: `failed(error)` either returns after the wait before the
    next attempt, or raises the typed error (not retryable, or the policy spent)."""

    def __init__(
        self, policy: RetryPolicy, method: str, *, read: bool, on_retry: OnRetry | None
    ) -> None:
        self.policy = policy
        self.method = method
        self.read = read
        self.on_retry = on_retry
        self.started = time.monotonic()
        self.attempt = 0

    def next(self) -> int:
        self.attempt += 1
        return self.attempt

    def failed(self, error: grpc.RpcError) -> None:
        typed = errors.from_rpc_error(error, attempts=self.attempt)
        typed.attempts = self.attempt
        if self.attempt >= self.policy.max_attempts or not retryable(typed, read=self.read):
            raise typed from None
        delay = self.delay_s(typed)
        if time.monotonic() + delay - self.started > self.policy.deadline_s:
            raise typed from None
        if self.on_retry is not None:
            self.on_retry(RetryEvent(self.method, self.attempt, delay, typed))
        time.sleep(delay)

    def delay_s(self, error: errors.ClientError) -> float:
        if error.retry_after is not None:
            # The server's wait, plus up to a tenth more so that the clients it turned away
            # together do not all come back in the same instant.
            return error.retry_after * (1 + random.uniform(0, 0.1))
        backoff = self.policy.backoff_s(self.attempt)
        return random.uniform(backoff / 2, backoff)

    def reset(self) -> None:
        """A response arrived: the failures so far are over (a stream resumed)."""
        self.started = time.monotonic()
        self.attempt = 0


def call(
    policy: RetryPolicy,
    method: str,
    attempt: Callable[[], T],
    *,
    read: bool,
    on_retry: OnRetry | None = None,
) -> T:
    """`attempt()` until it returns, as `policy` allows; a failure raised typed."""
    attempts = Attempts(policy, method, read=read, on_retry=on_retry)
    while True:
        attempts.next()
        try:
            return attempt()
        except grpc.RpcError as e:
            attempts.failed(e)


def stream(
    policy: RetryPolicy,
    method: str,
    start: Callable[[], Iterator[T]],
    *,
    on_retry: OnRetry | None = None,
) -> Iterator[T]:
    """The responses of a server-streaming read, started again only while none has
    arrived (after one, a failure is raised typed: the caller knows where it stood)."""
    attempts = Attempts(policy, method, read=True, on_retry=on_retry)
    while True:
        attempts.next()
        responses = start()
        got = False
        try:
            for response in responses:
                got = True
                yield response
            return
        except grpc.RpcError as e:
            if got:
                raise errors.from_rpc_error(e, attempts=attempts.attempt) from None
            attempts.failed(e)
        finally:
            cancel = getattr(responses, "cancel", None)
            if cancel is not None:
                cancel()
